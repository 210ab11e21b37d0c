//! # Character cards
//!
//! Import and export of the character cards of SillyTavern and compatible applications, so a
//! companion can come from (and go to) the wider ecosystem:
//! - **V1**: a flat JSON object (`name`, `description`, `personality`, `scenario`, `first_mes`,
//!   `mes_example`).
//! - **V2** (`spec: "chara_card_v2"`): the fields inside `data`, plus `system_prompt`,
//!   `post_history_instructions`, `alternate_greetings`, `character_book` (the lorebook),
//!   `tags`, `creator`, `creator_notes`, `character_version` and `extensions`.
//! - **V3** (`spec: "chara_card_v3"`): V2 plus `assets`, `nickname`, `group_only_greetings`, ...
//! - Containers: plain JSON; PNG with the card as base64 JSON in a `tEXt` chunk (`ccv3` for V3,
//!   preferred, `chara` for V2); CHARX, a zip with `card.json` and asset files.
//!
//! On import the card becomes a new companion: `name`, `description`, `personality` and
//! `first_mes` (the greeting) fill the companion's own fields, which are authoritative from then
//! on, and the whole `data` object is kept in [`Companion::card`] as imported, so unknown fields
//! and every `extensions` object survive import and export unchanged ([`data`]). The speaking
//! style, which cards do not have, travels in `data.extensions.nexus.speaking_style`. A PNG's
//! image (without the card chunks) is kept as the asset [`AVATAR`]; CHARX files are kept as
//! assets under their paths in the archive.
//!
//! On export: JSON is the V3 card; PNG is the avatar (or a generated placeholder) with both a
//! `chara` (V2) and a `ccv3` (V3) chunk, as SillyTavern writes them, the image data copied chunk
//! by chunk ([`png`]); CHARX is `card.json` plus the stored assets ([`charx`]).
//!
//! Untrusted input never panics or allocates from a declared size: files are limited to
//! [`MAX_CARD_BYTES`], PNG chunk lengths and CRCs are checked, CHARX archives are bounded in
//! entries, sizes and compression ratio and their paths must be plain relative paths. Every
//! problem is a [`CardError`]. `fuzz/` at the repository root fuzzes [`parse`] and the PNG
//! reader.
//!
//! The prompt side (the card's system prompt, scenario, examples, lorebook and post-history
//! instructions) is in [`prompt`] and [`lorebook`].

pub mod charx;
pub mod data;
pub mod lorebook;
pub mod png;
pub mod prompt;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use nexus_common::{Clock, CompanionId, Timestamp};
use nexus_store::{Companion, CompanionAsset, Store, StoreError};
use serde_json::{Map, Value, json};

pub use lorebook::{LoreEntry, Lorebook, Position};

use crate::cards::data::{ParsedJson, embedded_path, str_field};

/// Largest card file accepted (and largest total of a CHARX archive, uncompressed).
pub const MAX_CARD_BYTES: usize = 50 << 20;
/// Largest single asset kept (the store's limit).
pub const MAX_ASSET_BYTES: usize = CompanionAsset::MAX_BYTES;
/// Name of the asset holding the companion's picture (a PNG without card chunks).
pub const AVATAR: &str = "avatar.png";
/// Where the CHARX export puts the avatar when the card does not say.
const CHARX_ICON_PATH: &str = "assets/icon/images/main.png";

/// What can go wrong with a character card. None of these is a bug: they describe the input.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    /// The file (or something inside it) is over a size limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The file is not a character card at all.
    #[error("not a character card: {0}")]
    NotACard(String),
    /// The PNG image is malformed (truncated, CRC mismatch, impossible chunk length, ...).
    #[error("the PNG image is damaged: {0}")]
    Png(String),
    /// The card text in a PNG is not valid base64.
    #[error("the card inside the PNG is not valid base64: {0}")]
    Base64(String),
    /// The card is not valid JSON.
    #[error("{0}")]
    Json(String),
    /// The card declares a specification we do not read.
    #[error("unsupported card format {0:?} (expected chara_card_v2 or chara_card_v3)")]
    UnsupportedSpec(String),
    /// A field has the wrong type, or a required one is missing.
    #[error("invalid card: {0}")]
    InvalidField(String),
    /// The CHARX archive is malformed.
    #[error("the CHARX archive is damaged: {0}")]
    Charx(String),
    /// A CHARX entry has a name that could escape its folder (or is otherwise not a plain path).
    #[error("the CHARX archive contains an unsafe file name {0:?}")]
    UnsafePath(String),
    /// Importing would create a second companion with this name.
    #[error("a companion named \"{0}\" already exists")]
    NameTaken(String),
    /// Encoding the exported file failed.
    #[error("cannot write the card: {0}")]
    Write(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The container of a card file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CardFormat {
    /// A PNG image with the card in `tEXt` chunks.
    Png,
    /// A JSON file.
    Json,
    /// A CHARX (zip) archive.
    Charx,
}

impl CardFormat {
    /// Every format.
    pub const ALL: [CardFormat; 3] = [CardFormat::Png, CardFormat::Json, CardFormat::Charx];

    /// The file extension (and the name used on the command line).
    pub fn extension(self) -> &'static str {
        match self {
            CardFormat::Png => "png",
            CardFormat::Json => "json",
            CardFormat::Charx => "charx",
        }
    }

    /// The media type of the file.
    pub fn media_type(self) -> &'static str {
        match self {
            CardFormat::Png => "image/png",
            CardFormat::Json => "application/json",
            CardFormat::Charx => "application/zip",
        }
    }
}

impl fmt::Display for CardFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

impl FromStr for CardFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|f| f.extension().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown card format {s:?} (png, json or charx)"))
    }
}

/// The specification a card follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CardSpec {
    /// Flat V1 card.
    V1,
    /// `chara_card_v2`.
    V2,
    /// `chara_card_v3`.
    V3,
}

impl CardSpec {
    /// `V1`, `chara_card_v2` or `chara_card_v3`.
    pub fn as_str(self) -> &'static str {
        match self {
            CardSpec::V1 => "V1",
            CardSpec::V2 => "chara_card_v2",
            CardSpec::V3 => "chara_card_v3",
        }
    }
}

/// A file that comes with a card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardAsset {
    /// [`AVATAR`], or the file's path inside a CHARX archive.
    pub name: String,
    /// Media type from the extension.
    pub media_type: String,
    /// Contents.
    pub bytes: Vec<u8>,
}

/// A card read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedCard {
    /// The container it came in.
    pub format: CardFormat,
    /// The specification it follows.
    pub spec: CardSpec,
    /// The V3-shaped `data` object, as imported (see [`data`]).
    pub data: Map<String, Value>,
    /// The avatar and CHARX files.
    pub assets: Vec<CardAsset>,
    /// Things the user should know (fallbacks, skipped files, ...).
    pub warnings: Vec<String>,
}

impl ImportedCard {
    /// The character's name, trimmed.
    pub fn name(&self) -> &str {
        str_field(&self.data, "name").trim()
    }

    /// The card's lorebook, if it has one.
    pub fn lorebook(&self) -> Option<Lorebook> {
        Lorebook::from_data(&self.data)
    }

    /// A new companion from this card (named `name` if given, else after the card), created at
    /// `now`. Not stored.
    pub fn to_companion(&self, name: Option<&str>, now: Timestamp) -> Companion {
        let field = |f: &str| str_field(&self.data, f).to_owned();
        Companion {
            id: CompanionId::new(),
            name: name.map_or_else(|| self.name(), str::trim).to_owned(),
            description: field("description"),
            personality: field("personality"),
            speaking_style: data::speaking_style(&self.data)
                .unwrap_or_default()
                .to_owned(),
            greeting: field("first_mes"),
            card: Some(Value::Object(self.data.clone())),
            created_at: now,
            updated_at: now,
        }
    }
}

/// Reads a card file of any supported kind, recognized by its first bytes.
pub fn parse(bytes: &[u8]) -> Result<ImportedCard, CardError> {
    if bytes.len() > MAX_CARD_BYTES {
        return Err(too_large_file(bytes.len() as u64));
    }
    if bytes.starts_with(&png::SIGNATURE) {
        return parse_png(bytes);
    }
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return parse_charx(bytes);
    }
    let text = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {
            let parsed = data::parse(bytes)?;
            Ok(imported(CardFormat::Json, parsed, Vec::new()))
        }
        None => Err(CardError::NotACard("the file is empty".into())),
        Some(_) => Err(CardError::NotACard(
            "expected a PNG image, a JSON file or a CHARX (zip) archive".into(),
        )),
    }
}

/// The error for a file over [`MAX_CARD_BYTES`].
pub fn too_large_file(size: u64) -> CardError {
    CardError::TooLarge(format!(
        "the file is {size} bytes, a card file may have at most {MAX_CARD_BYTES}"
    ))
}

fn imported(format: CardFormat, parsed: ParsedJson, assets: Vec<CardAsset>) -> ImportedCard {
    ImportedCard {
        format,
        spec: parsed.spec,
        data: parsed.data,
        assets,
        warnings: parsed.warnings,
    }
}

/// Base64 as written by card tools: standard alphabet, padding optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes the text of a `chara`/`ccv3` chunk: base64 (whitespace ignored) of the JSON card.
fn decode_chunk(keyword: &str, text: &[u8]) -> Result<ParsedJson, CardError> {
    let compact: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let json = BASE64
        .decode(&compact)
        .map_err(|e| CardError::Base64(format!("chunk {keyword}: {e}")))?;
    data::parse(&json)
}

fn parse_png(bytes: &[u8]) -> Result<ImportedCard, CardError> {
    let texts = png::card_texts(bytes)?;
    let find = |k: &str| texts.iter().find(|(key, _)| *key == k).map(|(_, t)| *t);
    let mut warnings = Vec::new();
    let parsed = match (find("ccv3"), find("chara")) {
        (Some(v3), chara) => match (decode_chunk("ccv3", v3), chara) {
            (Ok(p), _) => p,
            (Err(e), Some(v2)) => {
                warnings.push(format!(
                    "the V3 card (ccv3 chunk) is unreadable ({e}); the V2 card (chara chunk) was used"
                ));
                decode_chunk("chara", v2)?
            }
            (Err(e), None) => return Err(e),
        },
        (None, Some(v2)) => decode_chunk("chara", v2)?,
        (None, None) => {
            return Err(CardError::NotACard(
                "the PNG image has no character card in it (no `chara` or `ccv3` text chunk)"
                    .into(),
            ));
        }
    };
    let avatar = png::without_card(bytes)?;
    let mut assets = Vec::new();
    if avatar.len() <= MAX_ASSET_BYTES {
        assets.push(CardAsset {
            name: AVATAR.into(),
            media_type: "image/png".into(),
            bytes: avatar,
        });
    } else {
        warnings.push(format!(
            "the image is larger than {MAX_ASSET_BYTES} bytes and was not kept"
        ));
    }
    let mut card = imported(CardFormat::Png, parsed, assets);
    card.warnings.splice(0..0, warnings);
    Ok(card)
}

fn parse_charx(bytes: &[u8]) -> Result<ImportedCard, CardError> {
    let contents = charx::read(bytes)?;
    let parsed = data::parse(&contents.card_json)?;
    let mut card = imported(CardFormat::Charx, parsed, Vec::new());
    if card.spec != CardSpec::V3 {
        card.warnings.push(format!(
            "card.json is a {} card, not V3 as CHARX requires; imported anyway",
            card.spec.as_str()
        ));
    }
    let names: BTreeSet<&str> = contents.files.iter().map(|(n, _)| n.as_str()).collect();
    for asset in data::assets(&card.data) {
        if let Some(path) = asset
            .get("uri")
            .and_then(Value::as_str)
            .and_then(embedded_path)
            && !names.contains(path)
        {
            card.warnings
                .push(format!("asset {path} is referenced but not in the archive"));
        }
    }
    card.assets = contents
        .files
        .into_iter()
        .map(|(name, bytes)| CardAsset {
            media_type: charx::media_type(&name).into(),
            name,
            bytes,
        })
        .collect();
    Ok(card)
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    /// The container of the file.
    pub format: CardFormat,
    /// The specification of the card.
    pub spec: CardSpec,
    /// Entries of its lorebook (0 without one).
    pub lorebook_entries: usize,
    /// Assets stored with the companion (avatar and CHARX files).
    pub assets: usize,
    /// Things the user should know.
    pub warnings: Vec<String>,
}

/// Imports a card file as a new companion (named `name`, or after the card) with its assets.
/// Fails with [`CardError::NameTaken`] if a companion has that name already (ignoring case);
/// nothing is stored when anything fails.
pub fn import(
    store: &dyn Store,
    clock: &dyn Clock,
    bytes: &[u8],
    name: Option<&str>,
) -> Result<(Companion, ImportSummary), CardError> {
    let card = parse(bytes)?;
    let companion = card.to_companion(name, clock.now());
    if store.companion_by_name(&companion.name)?.is_some() {
        return Err(CardError::NameTaken(companion.name));
    }
    store.create_companion(&companion).map_err(|e| match e {
        StoreError::Conflict(_) => CardError::NameTaken(companion.name.clone()),
        other => other.into(),
    })?;
    for asset in &card.assets {
        let stored = store.put_asset(&CompanionAsset {
            companion_id: companion.id,
            name: asset.name.clone(),
            media_type: asset.media_type.clone(),
            bytes: asset.bytes.clone(),
        });
        if let Err(e) = stored {
            // Best effort: do not leave a half-imported companion behind.
            let _ = store.delete_companion(companion.id);
            return Err(e.into());
        }
    }
    let summary = ImportSummary {
        format: card.format,
        spec: card.spec,
        lorebook_entries: card.lorebook().map_or(0, |b| b.entries.len()),
        assets: card.assets.len(),
        warnings: card.warnings,
    };
    Ok((companion, summary))
}

/// Exports a stored companion (with its stored assets) in `format`.
pub fn export(
    store: &dyn Store,
    companion: &Companion,
    format: CardFormat,
) -> Result<Vec<u8>, CardError> {
    let assets = store.assets(companion.id)?;
    match format {
        CardFormat::Json => export_json(companion),
        CardFormat::Png => export_png(companion, &assets),
        CardFormat::Charx => export_charx(companion, &assets),
    }
}

fn to_json(value: &Value, pretty: bool) -> Result<Vec<u8>, CardError> {
    let out = if pretty {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    };
    out.map_err(|e| CardError::Write(e.to_string()))
}

/// The V3 card of a companion as pretty-printed JSON.
pub fn export_json(companion: &Companion) -> Result<Vec<u8>, CardError> {
    let mut out = to_json(&data::v3_card(companion, None), true)?;
    out.push(b'\n');
    Ok(out)
}

/// The card of a companion as a PNG: its avatar (or a placeholder) with a `chara` (V2) and a
/// `ccv3` (V3) chunk.
pub fn export_png(companion: &Companion, assets: &[CompanionAsset]) -> Result<Vec<u8>, CardError> {
    let v2 = BASE64_OUT.encode(to_json(&data::v2_card(companion), false)?);
    let v3 = BASE64_OUT.encode(to_json(&data::v3_card(companion, None), false)?);
    let texts: [(&str, &[u8]); 2] = [("chara", v2.as_bytes()), ("ccv3", v3.as_bytes())];
    if let Some(image) = avatar_png(companion, assets)
        && let Ok(out) = png::with_texts(image, &texts)
    {
        return Ok(out);
    }
    // No avatar, or one that is not a readable PNG: a generated picture.
    png::with_texts(&png::placeholder(&companion.name)?, &texts)
}

/// Standard base64 with padding, as SillyTavern writes it.
const BASE64_OUT: GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn asset_bytes<'a>(assets: &'a [CompanionAsset], name: &str) -> Option<&'a [u8]> {
    assets
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.bytes.as_slice())
}

fn is_icon(asset: &Value) -> bool {
    asset.get("type").and_then(Value::as_str) == Some("icon")
}

/// The companion's picture as PNG bytes: the [`AVATAR`] asset, else the card's main icon when it
/// is a PNG stored with the companion (CHARX imports).
fn avatar_png<'a>(companion: &Companion, assets: &'a [CompanionAsset]) -> Option<&'a [u8]> {
    let is_png = |b: &&[u8]| b.starts_with(&png::SIGNATURE);
    if let Some(avatar) = asset_bytes(assets, AVATAR).filter(is_png) {
        return Some(avatar);
    }
    let Some(Value::Object(data)) = &companion.card else {
        return None;
    };
    let declared = data::assets(data);
    let mut icons: Vec<&Value> = declared.iter().filter(|a| is_icon(a)).collect();
    icons.sort_by_key(|a| a.get("name").and_then(Value::as_str) != Some("main"));
    icons.into_iter().find_map(|icon| {
        let path = embedded_path(icon.get("uri")?.as_str()?)?;
        asset_bytes(assets, path).filter(is_png)
    })
}

/// The card of a companion as a CHARX archive: `card.json` and the stored assets. A PNG-imported
/// companion's avatar goes in as the main icon (`assets/icon/images/main.png`).
pub fn export_charx(
    companion: &Companion,
    assets: &[CompanionAsset],
) -> Result<Vec<u8>, CardError> {
    let declared = match &companion.card {
        Some(Value::Object(data)) => data::assets(data),
        _ => data::assets(&Map::new()),
    };
    let referenced: BTreeSet<&str> = declared
        .iter()
        .filter_map(|a| embedded_path(a.get("uri")?.as_str()?))
        .collect();
    let stored: BTreeSet<&str> = assets.iter().map(|a| a.name.as_str()).collect();
    let icon_path: String;
    let mut files: Vec<(&str, &[u8])> = assets
        .iter()
        .filter(|a| a.name != AVATAR || referenced.contains(AVATAR))
        .map(|a| (a.name.as_str(), a.bytes.as_slice()))
        .collect();
    let icon_in_archive = declared.iter().any(|a| {
        is_icon(a)
            && a.get("uri")
                .and_then(Value::as_str)
                .and_then(embedded_path)
                .is_some_and(|p| stored.contains(p))
    });
    let mut exported_assets = None;
    if let Some(avatar) = asset_bytes(assets, AVATAR)
        && !referenced.contains(AVATAR)
        && !icon_in_archive
    {
        icon_path = (1..)
            .map(|i| match i {
                1 => CHARX_ICON_PATH.to_owned(),
                i => format!("assets/icon/images/main_{i}.png"),
            })
            .find(|p| !stored.contains(p.as_str()))
            .unwrap_or_else(|| CHARX_ICON_PATH.to_owned());
        files.push((&icon_path, avatar));
        let uri = format!("embeded://{icon_path}");
        let mut list = declared.clone();
        match list
            .iter_mut()
            .find(|a| is_icon(a) && a.get("uri").and_then(Value::as_str) == Some("ccdefault:"))
        {
            Some(Value::Object(icon)) => {
                icon.insert("uri".into(), json!(uri));
                icon.insert("ext".into(), json!("png"));
            }
            _ => list.push(json!({"type": "icon", "uri": uri, "name": "main", "ext": "png"})),
        }
        exported_assets = Some(list);
    }
    let card = to_json(&data::v3_card(companion, exported_assets), true)?;
    charx::write(&card, &files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_from_their_names() {
        assert_eq!("PNG".parse::<CardFormat>(), Ok(CardFormat::Png));
        assert_eq!("charx".parse::<CardFormat>(), Ok(CardFormat::Charx));
        assert!("gif".parse::<CardFormat>().is_err());
    }

    #[test]
    fn files_are_recognized_by_their_first_bytes() {
        assert!(matches!(parse(b""), Err(CardError::NotACard(_))));
        assert!(matches!(parse(b"  \n"), Err(CardError::NotACard(_))));
        assert!(matches!(parse(b"GIF89a"), Err(CardError::NotACard(_))));
        let card = parse(b"\n {\"name\": \"Ada\", \"first_mes\": \"Hi\"}").expect("v1 json");
        assert_eq!((card.format, card.spec), (CardFormat::Json, CardSpec::V1));
        let big = vec![b' '; MAX_CARD_BYTES + 1];
        assert!(matches!(parse(&big), Err(CardError::TooLarge(_))));
    }

    fn png_with(texts: &[(&str, &[u8])]) -> Vec<u8> {
        png::with_texts(&png::placeholder("x").expect("png"), texts).expect("png")
    }

    #[test]
    fn ccv3_is_preferred_and_a_broken_ccv3_falls_back_to_chara() {
        let v2 = BASE64_OUT.encode(r#"{"spec":"chara_card_v2","data":{"name":"Two"}}"#);
        let v3 = BASE64_OUT.encode(r#"{"spec":"chara_card_v3","data":{"name":"Three"}}"#);
        let both = parse(&png_with(&[
            ("chara", v2.as_bytes()),
            ("ccv3", v3.as_bytes()),
        ]))
        .expect("both");
        assert_eq!((both.name(), both.spec), ("Three", CardSpec::V3));
        assert_eq!(both.assets[0].name, AVATAR);
        assert!(
            png::card_texts(&both.assets[0].bytes)
                .expect("avatar")
                .is_empty()
        );

        let broken = parse(&png_with(&[("chara", v2.as_bytes()), ("ccv3", b"@@@")])).expect("fb");
        assert_eq!(broken.name(), "Two");
        assert_eq!(broken.warnings.len(), 1);

        let err = parse(&png_with(&[("chara", b"not base64!")])).expect_err("bad");
        assert!(matches!(err, CardError::Base64(_)), "{err}");
        let err = parse(&png_with(&[(
            "chara",
            BASE64_OUT.encode("{nope").as_bytes(),
        )]))
        .expect_err("bad json");
        assert!(matches!(err, CardError::Json(_)), "{err}");
        let err = parse(&png_with(&[("Comment", b"x")])).expect_err("no card");
        assert!(matches!(err, CardError::NotACard(_)), "{err}");
    }
}
