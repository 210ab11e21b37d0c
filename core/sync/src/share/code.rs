//! Share codes: what the owner of a companion hands to the person they share it with.
//!
//! ```text
//! payload = mark "S" (0x53) | version (1) | access (1: 0 read, 1 read-write)
//!         | space id (16) | document id (16) | key epoch (u32 BE) | document key (32)
//!         | grant token (32) | document kind (1: 1 companion, 2 a later generation of one)
//!         | companion id (16) | [kind 2: generation (u32 BE) | its random part (8)]
//!         | label length (1) | label (UTF-8: the companion's name when shared)
//!         | server URL (UTF-8, the rest)
//! code    = payload | first 4 bytes of SHA-256(payload)
//! text    = Crockford base32 of code, in groups of 5 joined by "-"
//! QR      = nexus://share/<text>
//! ```
//!
//! Reading is as lenient as for pairing codes (case, spaces, dashes, `O`/`I`/`L`); a typo or a
//! missing group fails the checksum. The mark tells a share code from a pairing code (whose
//! first byte is its version, 1 or 2), so pasting one where the other belongs is a clear error.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nexus_common::CompanionId;
use nexus_sync_protocol::{Access, DocId, SpaceId, Token};

use crate::crypto::DocKeys;
use crate::doc::{DocName, GenName};
use crate::pairing::{PAIRING_URI_PREFIX, from_code_text, strip_prefix, to_code_text};

/// First byte of a share code's payload (a pairing code starts with its version, 1 or 2).
pub const SHARE_MARK: u8 = b'S';
/// Version of the share code layout.
pub const SHARE_VERSION: u8 = 1;
/// Scheme and path of the QR payload.
pub const SHARE_URI_PREFIX: &str = "nexus://share/";
/// Longest label, in bytes (longer names are cut at a character boundary).
pub const MAX_LABEL_BYTES: usize = 64;
/// Document kind byte of a companion document.
const KIND_COMPANION: u8 = 1;
/// A companion's document after forgetting started it over (see docs/SYNC.md "Forgetting").
const KIND_COMPANION_GENERATION: u8 = 2;
/// Bytes before the label.
const FIXED: usize = 2 + 1 + 16 + 16 + 4 + 32 + 32 + 1 + 16;

/// Why a share code could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    /// A character outside the code's alphabet.
    #[error("the share code contains {0:?}, which is not part of a code (check for typos)")]
    BadCharacter(char),
    /// The checksum does not match: a typo or a missing part.
    #[error("the share code is mistyped or incomplete (its checksum does not match)")]
    Checksum,
    /// A pairing code (for the user's own devices).
    #[error(
        "this is a pairing code for your own devices (`nexus device join CODE`), not a share code"
    )]
    PairingCode,
    /// Made by a newer Nexus.
    #[error("the share code has version {0}; update Nexus on this device")]
    Version(u8),
    /// The checksum matches but the content does not follow the layout.
    #[error("the share code holds a malformed {0}")]
    Malformed(&'static str),
}

/// What a share code carries: where the document is, its key, and the grant that lets the
/// recipient read it (or write it).
#[derive(Clone, PartialEq, Eq)]
pub struct ShareCode {
    /// The owner's sync server.
    pub server: String,
    /// The owner's space.
    pub space: SpaceId,
    /// The shared document's id.
    pub doc: DocId,
    /// The shared document (a companion).
    pub name: DocName,
    /// Which generation of it (forgetting starts a document over under a new id): the number
    /// and its 16 hex digits, none for the first.
    pub generation: Option<(u32, String)>,
    /// The companion's name when it was shared (for people; the document has the real one).
    pub label: String,
    /// The key epoch of `key`.
    pub epoch: u32,
    /// The document's key of that epoch.
    pub key: [u8; 32],
    /// The grant's token.
    pub token: Token,
    /// Read, or read and write.
    pub access: Access,
}

impl fmt::Debug for ShareCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareCode")
            .field("server", &self.server)
            .field("space", &self.space)
            .field("doc", &self.doc)
            .field("name", &self.name)
            .field("label", &self.label)
            .field("epoch", &self.epoch)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

fn hex_bytes(hex: &str) -> [u8; 16] {
    hex_bytes_n(hex)
}

fn hex_bytes_n<const N: usize>(hex: &str) -> [u8; N] {
    let mut out = [0; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = hex
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
    }
    out
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `label` cut to at most [`MAX_LABEL_BYTES`] at a character boundary.
fn cut(label: &str) -> &str {
    let mut end = label.len().min(MAX_LABEL_BYTES);
    while !label.is_char_boundary(end) {
        end -= 1;
    }
    &label[..end]
}

impl ShareCode {
    /// The name the shared document declares (with its generation, if any).
    pub fn document_name(&self) -> String {
        GenName {
            name: self.name,
            number: self.generation.as_ref().map_or(0, |g| g.0),
            nonce: self.generation.as_ref().map(|g| g.1.clone()),
        }
        .to_string()
    }

    /// The keys the code carries (one document, one epoch).
    pub fn doc_keys(&self) -> DocKeys {
        DocKeys::new(
            self.space.clone(),
            self.doc.clone(),
            &self.document_name(),
            self.epoch,
            self.key,
        )
    }

    fn payload(&self) -> Vec<u8> {
        let label = cut(&self.label);
        let mut bytes = Vec::with_capacity(FIXED + 1 + label.len() + self.server.len());
        bytes.extend_from_slice(&[SHARE_MARK, SHARE_VERSION]);
        bytes.push(match self.access {
            Access::Read => 0,
            Access::ReadWrite => 1,
        });
        bytes.extend_from_slice(&hex_bytes(self.space.as_str()));
        bytes.extend_from_slice(&hex_bytes(self.doc.as_str()));
        bytes.extend_from_slice(&self.epoch.to_be_bytes());
        bytes.extend_from_slice(&self.key);
        let token = URL_SAFE_NO_PAD
            .decode(self.token.expose())
            .expect("a token is 32 bytes of base64url");
        bytes.extend_from_slice(&token);
        match self.name {
            DocName::Companion(id) => match &self.generation {
                None => {
                    bytes.push(KIND_COMPANION);
                    bytes.extend_from_slice(id.0.as_bytes());
                }
                Some((number, nonce)) => {
                    bytes.push(KIND_COMPANION_GENERATION);
                    bytes.extend_from_slice(id.0.as_bytes());
                    bytes.extend_from_slice(&number.to_be_bytes());
                    let nonce = hex_bytes_n::<8>(nonce);
                    bytes.extend_from_slice(&nonce);
                }
            },
            // Only companions are shared; anything else cannot be built by `plan_share`.
            _ => unreachable!("only companion documents are shared"),
        }
        bytes.push(u8::try_from(label.len()).expect("cut to 64 bytes"));
        bytes.extend_from_slice(label.as_bytes());
        bytes.extend_from_slice(self.server.as_bytes());
        bytes
    }

    /// The code as text: groups of five characters joined by `-`.
    pub fn to_text(&self) -> String {
        to_code_text(&self.payload())
    }

    /// The QR payload: `nexus://share/<text>`.
    pub fn to_uri(&self) -> String {
        format!("{SHARE_URI_PREFIX}{}", self.to_text())
    }

    /// Reads a code as text or as the QR URI.
    pub fn parse(input: &str) -> Result<Self, ShareError> {
        let input = input.trim();
        if strip_prefix(input, PAIRING_URI_PREFIX).is_some() {
            return Err(ShareError::PairingCode);
        }
        let text = strip_prefix(input, SHARE_URI_PREFIX).unwrap_or(input);
        let body = from_code_text(text)
            .map_err(ShareError::BadCharacter)?
            .ok_or(ShareError::Checksum)?;
        match body.first() {
            Some(&SHARE_MARK) => {}
            Some(1 | 2) => return Err(ShareError::PairingCode),
            _ => return Err(ShareError::Malformed("header")),
        }
        match body.get(1) {
            Some(&SHARE_VERSION) => {}
            Some(&v) => return Err(ShareError::Version(v)),
            None => return Err(ShareError::Malformed("header")),
        }
        if body.len() < FIXED + 1 {
            return Err(ShareError::Malformed("header"));
        }
        let access = match body[2] {
            0 => Access::Read,
            1 => Access::ReadWrite,
            _ => return Err(ShareError::Malformed("access")),
        };
        let array16 = |at: usize| -> [u8; 16] { body[at..at + 16].try_into().expect("16 bytes") };
        let array32 = |at: usize| -> [u8; 32] { body[at..at + 32].try_into().expect("32 bytes") };
        let space = SpaceId::from_bytes(array16(3));
        let doc = DocId::from_bytes(array16(19));
        let epoch = u32::from_be_bytes(body[35..39].try_into().expect("4 bytes"));
        let key = array32(39);
        let token = Token::from_bytes(array32(71));
        let kind = body[103];
        let name = match kind {
            KIND_COMPANION | KIND_COMPANION_GENERATION => DocName::Companion(
                to_hex(&array16(104))
                    .parse::<CompanionId>()
                    .map_err(|_| ShareError::Malformed("companion id"))?,
            ),
            _ => return Err(ShareError::Malformed("document kind")),
        };
        let (generation, at) = if kind == KIND_COMPANION_GENERATION {
            let extra = body
                .get(FIXED..FIXED + 12)
                .ok_or(ShareError::Malformed("generation"))?;
            let number = u32::from_be_bytes(extra[..4].try_into().expect("4 bytes"));
            (Some((number, to_hex(&extra[4..]))), FIXED + 12)
        } else {
            (None, FIXED)
        };
        let label_len = usize::from(*body.get(at).ok_or(ShareError::Malformed("label"))?);
        let rest = &body[at + 1..];
        if rest.len() < label_len {
            return Err(ShareError::Malformed("label"));
        }
        let (label, server) = rest.split_at(label_len);
        let label = std::str::from_utf8(label)
            .map_err(|_| ShareError::Malformed("label"))?
            .to_owned();
        let server = std::str::from_utf8(server)
            .map_err(|_| ShareError::Malformed("server address"))?
            .to_owned();
        if server.is_empty() {
            return Err(ShareError::Malformed("server address"));
        }
        Ok(Self {
            server,
            space,
            doc,
            name,
            generation,
            label,
            epoch,
            key,
            token,
            access,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code() -> ShareCode {
        ShareCode {
            server: "http://127.0.0.1:8787".into(),
            space: SpaceId::from_bytes([0xab; 16]),
            doc: DocId::from_bytes([0xcd; 16]),
            name: DocName::Companion(CompanionId::new()),
            generation: None,
            label: "Mira".into(),
            epoch: 3,
            key: [7; 32],
            token: Token::from_bytes([9; 32]),
            access: Access::Read,
        }
    }

    #[test]
    fn codes_of_a_later_generation_round_trip() {
        let later = ShareCode {
            generation: Some((3, "0123456789abcdef".into())),
            ..code()
        };
        let parsed = ShareCode::parse(&later.to_text()).expect("parse");
        assert_eq!(parsed, later);
        assert_eq!(
            parsed.document_name(),
            format!("{}#3-0123456789abcdef", later.name)
        );
        let first = code();
        assert_eq!(first.document_name(), first.name.to_string());
    }

    #[test]
    fn codes_round_trip_as_text_and_uri() {
        let c = code();
        let text = c.to_text();
        assert!(text.split('-').all(|g| !g.is_empty() && g.len() <= 5));
        assert_eq!(ShareCode::parse(&text).expect("text"), c);
        assert_eq!(ShareCode::parse(&c.to_uri()).expect("uri"), c);
        let sloppy = text.to_lowercase().replace('-', " ").replace('0', "o");
        assert_eq!(ShareCode::parse(&sloppy).expect("sloppy"), c);
        let rw = ShareCode {
            access: Access::ReadWrite,
            label: "Ñandú 🐦".into(),
            ..code()
        };
        assert_eq!(ShareCode::parse(&rw.to_text()).expect("rw"), rw);
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("key:") && !debug.contains("token"),
            "{debug}"
        );
        assert_eq!(c.doc_keys().doc(), &c.doc);
        assert_eq!(c.doc_keys().key(3), Some(&[7; 32]));
    }

    #[test]
    fn long_labels_are_cut_at_a_character_boundary() {
        let c = ShareCode {
            label: "é".repeat(40),
            ..code()
        };
        let back = ShareCode::parse(&c.to_text()).expect("parse");
        assert_eq!(back.label, "é".repeat(32));
    }

    #[test]
    fn garbled_codes_and_pairing_codes_are_clear_errors() {
        let text = code().to_text();
        let mut chars: Vec<char> = text.chars().collect();
        let i = chars.iter().rposition(|c| *c != '-').expect("char");
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(ShareCode::parse(&typo), Err(ShareError::Checksum));
        let short = text.split_once('-').map(|x| x.1).expect("rest");
        assert_eq!(ShareCode::parse(short), Err(ShareError::Checksum));
        assert_eq!(ShareCode::parse(""), Err(ShareError::Checksum));
        let err = ShareCode::parse("hello!").expect_err("bad char");
        assert!(err.to_string().contains("typos"), "{err}");
        assert!(ShareError::Checksum.to_string().contains("mistyped"));
        // A newer layout.
        let mut payload = code().payload();
        payload[1] = 9;
        assert_eq!(
            ShareCode::parse(&to_code_text(&payload)),
            Err(ShareError::Version(9))
        );
        // A checksummed payload that is cut short or holds nonsense.
        let payload = code().payload();
        assert_eq!(
            ShareCode::parse(&to_code_text(&payload[..50])),
            Err(ShareError::Malformed("header"))
        );
        let mut bad = payload.clone();
        bad[2] = 7;
        assert_eq!(
            ShareCode::parse(&to_code_text(&bad)),
            Err(ShareError::Malformed("access"))
        );
        let mut bad = payload.clone();
        bad[FIXED] = 200;
        assert_eq!(
            ShareCode::parse(&to_code_text(&bad)),
            Err(ShareError::Malformed("label"))
        );
        // Pairing codes and share codes are told apart both ways.
        let pairing = crate::PairingCode {
            server: "http://127.0.0.1:8787".into(),
            space: SpaceId::from_bytes([1; 16]),
            secret: crate::SpaceSecret::from_bytes([2; 32]),
            epoch: 0,
            epoch_secret: None,
        };
        assert_eq!(
            ShareCode::parse(&pairing.to_text()),
            Err(ShareError::PairingCode)
        );
        assert_eq!(
            ShareCode::parse(&pairing.to_uri()),
            Err(ShareError::PairingCode)
        );
        assert_eq!(
            crate::PairingCode::parse(&text),
            Err(crate::PairingError::ShareCode)
        );
        assert_eq!(
            crate::PairingCode::parse(&code().to_uri()),
            Err(crate::PairingError::ShareCode)
        );
    }
}
