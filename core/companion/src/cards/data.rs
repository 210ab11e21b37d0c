//! The card JSON: recognizing V1, V2 and V3 cards, normalizing them to the V3-shaped `data`
//! object that is stored in [`Companion::card`], and building the V2 and V3 objects written on
//! export.
//!
//! What is kept: the `data` object exactly as imported (unknown fields and every `extensions`
//! object included). Top-level fields other than `spec`, `spec_version`, `data` and the V1
//! mirror fields (which exporters such as SillyTavern copy from `data`) are kept under the
//! internal key [`TOP_LEVEL_KEY`] of the stored object and put back at the top level on export.
//! V3's required fields are only filled in (with empty defaults) when exporting.

use nexus_store::Companion;
use serde_json::{Map, Value, json};

use crate::cards::{CardError, CardSpec};

/// Key of the stored `data` object that keeps the card's unknown top-level fields. Never
/// exported inside `data`.
pub const TOP_LEVEL_KEY: &str = "_nexus_top_level";

/// Our namespace inside `data.extensions`.
pub const EXTENSION: &str = "nexus";

/// The V1 fields, which V2/V3 exporters often mirror at the top level.
const V1_FIELDS: [&str; 6] = [
    "name",
    "description",
    "personality",
    "scenario",
    "first_mes",
    "mes_example",
];

/// A parsed card: its version, its `data` object, and notes for the user.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedJson {
    /// Which specification it follows.
    pub spec: CardSpec,
    /// The V3-shaped `data` object (with [`TOP_LEVEL_KEY`] when there were unknown top-level
    /// fields).
    pub data: Map<String, Value>,
    /// Things the user should know (newer spec version, ...).
    pub warnings: Vec<String>,
}

/// Parses card JSON (UTF-8, an optional byte order mark) of any version.
pub fn parse(bytes: &[u8]) -> Result<ParsedJson, CardError> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| CardError::Json(format!("the card is not valid JSON: {e}")))?;
    from_value(value)
}

/// Normalizes a card's JSON value.
pub fn from_value(value: Value) -> Result<ParsedJson, CardError> {
    let Value::Object(mut top) = value else {
        return Err(CardError::NotACard(
            "the JSON is not an object, so it is not a character card".into(),
        ));
    };
    let mut warnings = Vec::new();
    let (spec, mut data) = match top.remove("spec") {
        Some(Value::String(s)) if s == "chara_card_v3" || s == "chara_card_v2" => {
            let spec = if s == "chara_card_v3" {
                CardSpec::V3
            } else {
                CardSpec::V2
            };
            let version = top.remove("spec_version");
            if spec == CardSpec::V3
                && let Some(v) = version_number(version.as_ref())
                && v > 3.0
            {
                warnings.push(format!(
                    "the card was made with a newer version ({v}) of the card format; \
                     fields this version does not know are kept but not used"
                ));
            }
            let data = match top.remove("data") {
                Some(Value::Object(d)) => d,
                Some(_) => {
                    return Err(CardError::InvalidField(
                        "the card's `data` is not an object".into(),
                    ));
                }
                None => {
                    return Err(CardError::InvalidField(format!(
                        "a {} card needs a `data` object",
                        spec.as_str()
                    )));
                }
            };
            for field in V1_FIELDS {
                top.remove(field);
            }
            (spec, data)
        }
        Some(other) => {
            let shown = match &other {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            return Err(CardError::UnsupportedSpec(shown));
        }
        None if matches!(top.get("name"), Some(Value::String(_))) => {
            let mut data = Map::new();
            for field in V1_FIELDS {
                if let Some(v) = top.remove(field) {
                    data.insert(field.to_owned(), v);
                }
            }
            (CardSpec::V1, data)
        }
        None => {
            return Err(CardError::NotACard(
                "the JSON has neither a `spec` nor a `name`, so it is not a character card".into(),
            ));
        }
    };
    // Whatever is left at the top level is kept, except what the export writes itself.
    top.remove("spec_version");
    top.remove("data");
    if top.is_empty() {
        data.remove(TOP_LEVEL_KEY);
    } else {
        data.insert(TOP_LEVEL_KEY.to_owned(), Value::Object(top));
    }
    validate(&data)?;
    Ok(ParsedJson {
        spec,
        data,
        warnings,
    })
}

fn version_number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// The fields the companion takes over must have the right types; everything else is kept as
/// it is and read leniently.
fn validate(data: &Map<String, Value>) -> Result<(), CardError> {
    match data.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(CardError::InvalidField("the card has no name".into()));
        }
        Some(_) => {
            return Err(CardError::InvalidField(
                "the card's `name` is not a string".into(),
            ));
        }
    }
    for field in ["description", "personality", "first_mes"] {
        match data.get(field) {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(_) => {
                return Err(CardError::InvalidField(format!(
                    "the card's `{field}` is not a string"
                )));
            }
        }
    }
    if let Some(book) = data.get("character_book")
        && !book.is_null()
        && !book.is_object()
    {
        return Err(CardError::InvalidField(
            "the card's `character_book` is not an object".into(),
        ));
    }
    Ok(())
}

/// A string field of `data` (empty if missing or not a string).
pub fn str_field<'a>(data: &'a Map<String, Value>, field: &str) -> &'a str {
    data.get(field).and_then(Value::as_str).unwrap_or("")
}

/// `data.extensions.nexus.speaking_style`, where our own exports keep the speaking style.
pub fn speaking_style(data: &Map<String, Value>) -> Option<&str> {
    data.get("extensions")?
        .get(EXTENSION)?
        .get("speaking_style")?
        .as_str()
}

/// The `data` object of `companion` as exported: the stored card (if any) with the companion's
/// authoritative fields written over it and the speaking style in our extension. Without V3
/// defaults and without [`TOP_LEVEL_KEY`].
fn current_data(companion: &Companion) -> (Map<String, Value>, Map<String, Value>) {
    let mut data = match &companion.card {
        Some(Value::Object(d)) => d.clone(),
        _ => Map::new(),
    };
    let top = match data.remove(TOP_LEVEL_KEY) {
        Some(Value::Object(t)) => t,
        _ => Map::new(),
    };
    for (field, value) in [
        ("name", &companion.name),
        ("description", &companion.description),
        ("personality", &companion.personality),
        ("first_mes", &companion.greeting),
    ] {
        data.insert(field.to_owned(), Value::String(value.clone()));
    }
    let has_style = speaking_style(&data).is_some();
    if has_style || !companion.speaking_style.is_empty() {
        with_object(&mut data, "extensions", |extensions| {
            with_object(extensions, EXTENSION, |ours| {
                ours.insert(
                    "speaking_style".to_owned(),
                    Value::String(companion.speaking_style.clone()),
                );
            });
        });
    }
    (data, top)
}

/// Runs `f` on `map[key]` as an object (created, or replacing a value that is not an object).
fn with_object(map: &mut Map<String, Value>, key: &str, f: impl FnOnce(&mut Map<String, Value>)) {
    let mut object = match map.remove(key) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    f(&mut object);
    map.insert(key.to_owned(), Value::Object(object));
}

/// Inserts `value` under `key` unless the key exists (with any value but null).
fn default_field(map: &mut Map<String, Value>, key: &str, value: Value) {
    match map.get(key) {
        Some(v) if !v.is_null() => {}
        _ => {
            map.insert(key.to_owned(), value);
        }
    }
}

/// Fills in what the V3 specification requires and the stored card lacks (never changing a
/// value that is there).
fn with_v3_defaults(data: &mut Map<String, Value>) {
    for key in [
        "name",
        "description",
        "tags",
        "creator",
        "character_version",
        "mes_example",
        "system_prompt",
        "post_history_instructions",
        "first_mes",
        "personality",
        "scenario",
        "creator_notes",
    ] {
        let empty = if key == "tags" { json!([]) } else { json!("") };
        default_field(data, key, empty);
    }
    default_field(data, "extensions", json!({}));
    default_field(data, "alternate_greetings", json!([]));
    default_field(data, "group_only_greetings", json!([]));
    if let Some(Value::Object(book)) = data.get_mut("character_book") {
        default_field(book, "extensions", json!({}));
        default_field(book, "entries", json!([]));
        if let Some(Value::Array(entries)) = book.get_mut("entries") {
            for entry in entries.iter_mut() {
                if let Value::Object(e) = entry {
                    default_field(e, "keys", json!([]));
                    default_field(e, "content", json!(""));
                    default_field(e, "extensions", json!({}));
                    default_field(e, "enabled", json!(true));
                    default_field(e, "insertion_order", json!(0));
                    default_field(e, "use_regex", json!(false));
                }
            }
        }
    }
}

fn card_object(
    spec: &str,
    version: &str,
    data: Map<String, Value>,
    top: &Map<String, Value>,
) -> Value {
    let mut card = top.clone();
    card.insert("spec".into(), json!(spec));
    card.insert("spec_version".into(), json!(version));
    card.insert("data".into(), Value::Object(data));
    Value::Object(card)
}

/// The V3 card (`chara_card_v3`, `3.0`) of a companion. `assets`, when given, replaces
/// `data.assets` (the CHARX and PNG exports point it at the files they contain).
pub fn v3_card(companion: &Companion, assets: Option<Vec<Value>>) -> Value {
    let (mut data, top) = current_data(companion);
    if let Some(assets) = assets {
        data.insert("assets".into(), Value::Array(assets));
    }
    with_v3_defaults(&mut data);
    card_object("chara_card_v3", "3.0", data, &top)
}

/// The V2 card (`chara_card_v2`, `2.0`) of a companion, for the `chara` chunk that older
/// applications read. Same `data` as V3 (V2 readers ignore the V3-only fields).
pub fn v2_card(companion: &Companion) -> Value {
    let (mut data, top) = current_data(companion);
    with_v3_defaults(&mut data);
    card_object("chara_card_v2", "2.0", data, &top)
}

/// The asset list a card declares (`data.assets`), or the V3 default (the card's own image as
/// the main icon) when it declares none.
pub fn assets(data: &Map<String, Value>) -> Vec<Value> {
    match data.get("assets") {
        Some(Value::Array(a)) => a.clone(),
        _ => vec![json!({"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"})],
    }
}

/// The path inside a CHARX archive an asset URI points at (`embeded://path`; the
/// specification's spelling, with the common `embedded://` misspelling-fix also accepted).
pub fn embedded_path(uri: &str) -> Option<&str> {
    uri.strip_prefix("embeded://")
        .or_else(|| uri.strip_prefix("embedded://"))
}

#[cfg(test)]
mod tests {
    use nexus_common::{CompanionId, Timestamp};

    use super::*;

    fn parse_str(s: &str) -> Result<ParsedJson, CardError> {
        parse(s.as_bytes())
    }

    #[test]
    fn v1_v2_and_v3_are_recognized() {
        let v1 = parse_str(r#"{"name":"Ada","description":"d","first_mes":"hi","chat":"x"}"#)
            .expect("v1");
        assert_eq!(v1.spec, CardSpec::V1);
        assert_eq!(str_field(&v1.data, "first_mes"), "hi");
        assert_eq!(v1.data[TOP_LEVEL_KEY], json!({"chat": "x"}));

        let v2 = parse_str(
            r#"{"spec":"chara_card_v2","spec_version":"2.0","name":"old","data":{"name":"Ada"}}"#,
        )
        .expect("v2");
        assert_eq!(v2.spec, CardSpec::V2);
        assert_eq!(
            Value::Object(v2.data),
            json!({"name": "Ada"}),
            "mirrors dropped"
        );

        let v3 = parse_str(
            "\u{feff}{\"spec\":\"chara_card_v3\",\"spec_version\":\"3.5\",\"data\":{\"name\":\"Ada\"}}",
        )
        .expect("v3 with a BOM");
        assert_eq!(v3.spec, CardSpec::V3);
        assert_eq!(v3.warnings.len(), 1, "newer version noted");
    }

    #[test]
    fn numbers_survive_a_round_trip_exactly() {
        // Found by fuzzing: without serde_json's `float_roundtrip`, a long number was parsed
        // to a neighbouring float and changed on the next import.
        let text = r#"{"name":"Tom","x":44444444444444444444444444444444444444444444444,"y":0.1}"#;
        let first = parse_str(text).expect("v1");
        let mut c = companion(Some(Value::Object(first.data.clone())));
        c.name = "Tom".into();
        let again = from_value(v3_card(&c, None)).expect("reimport");
        assert_eq!(again.data[TOP_LEVEL_KEY], first.data[TOP_LEVEL_KEY]);
    }

    #[test]
    fn wrong_or_broken_cards_are_clear_errors() {
        for (input, needle) in [
            ("{", "not valid JSON"),
            ("[1,2]", "not an object"),
            (r#"{"spec":"lorebook_v3","data":{}}"#, "lorebook_v3"),
            (r#"{"spec":3,"data":{}}"#, "3"),
            (r#"{"foo":1}"#, "neither"),
            (r#"{"spec":"chara_card_v2","data":[]}"#, "not an object"),
            (r#"{"spec":"chara_card_v3"}"#, "needs a `data`"),
            (
                r#"{"spec":"chara_card_v2","data":{"name":"  "}}"#,
                "no name",
            ),
            (
                r#"{"spec":"chara_card_v2","data":{"name":5}}"#,
                "not a string",
            ),
            (
                r#"{"spec":"chara_card_v2","data":{"name":"A","description":[]}}"#,
                "description",
            ),
            (
                r#"{"spec":"chara_card_v2","data":{"name":"A","character_book":"x"}}"#,
                "character_book",
            ),
        ] {
            let err = parse_str(input).expect_err(input);
            assert!(err.to_string().contains(needle), "{input}: {err}");
        }
    }

    fn companion(card: Option<Value>) -> Companion {
        Companion {
            id: CompanionId::new(),
            name: "Ada".into(),
            description: "desc".into(),
            personality: "calm".into(),
            speaking_style: String::new(),
            greeting: "Hello".into(),
            card,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        }
    }

    #[test]
    fn export_fills_v3_defaults_without_touching_existing_values() {
        let card = json!({
            "name": "Old", "tags": ["x"], "extensions": {"other": {"k": 1}},
            "character_book": {"entries": [{"keys": ["a"], "content": "c", "use_regex": true}]},
            "weird": [1, 2],
            TOP_LEVEL_KEY: {"fav": true},
        });
        let v3 = v3_card(&companion(Some(card)), None);
        assert_eq!(v3["spec"], "chara_card_v3");
        assert_eq!(v3["fav"], true, "top-level unknowns restored");
        let data = &v3["data"];
        assert_eq!(data["name"], "Ada", "companion fields are authoritative");
        assert_eq!(data["tags"], json!(["x"]));
        assert_eq!(data["weird"], json!([1, 2]));
        assert_eq!(data["group_only_greetings"], json!([]));
        assert_eq!(
            data["extensions"],
            json!({"other": {"k": 1}}),
            "no empty style added"
        );
        assert!(data.get(TOP_LEVEL_KEY).is_none());
        let entry = &data["character_book"]["entries"][0];
        assert_eq!(entry["use_regex"], true);
        assert_eq!(entry["enabled"], true);
        assert_eq!(entry["extensions"], json!({}));
        let v2 = v2_card(&companion(None));
        assert_eq!(v2["spec"], "chara_card_v2");
        assert_eq!(v2["spec_version"], "2.0");
    }

    #[test]
    fn the_speaking_style_travels_in_our_extension() {
        let mut c = companion(None);
        c.speaking_style = "short".into();
        let v3 = v3_card(&c, None);
        assert_eq!(v3["data"]["extensions"]["nexus"]["speaking_style"], "short");
        let parsed = from_value(v3).expect("reimport");
        assert_eq!(speaking_style(&parsed.data), Some("short"));
    }
}
