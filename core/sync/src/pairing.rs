//! Pairing codes: how a new device gets the server URL, the space id and the space secret.
//!
//! Binary payload (docs/SYNC.md): version `1` | space id (16 bytes) | secret (32 bytes) | key
//! epoch (u32, big-endian) | server URL (UTF-8, the rest) | checksum (first 4 bytes of the
//! SHA-256 of everything before it). After a key rotation (epoch above 0) the version is `2`
//! and the epoch's own secret (32 bytes) follows the epoch. As text it is Crockford base32 in groups of five
//! characters joined by `-` (case-insensitive; `O` reads as `0`, `I` and `L` as `1`; spaces and
//! dashes are ignored), as a QR payload the URI `nexus://pair/<text>`.

use std::fmt;
use std::str::FromStr;

use nexus_sync_protocol::SpaceId;
use sha2::{Digest, Sha256};

use crate::crypto::SpaceSecret;

/// Version byte of the pairing payload (epoch 0).
pub const PAIRING_VERSION: u8 = 1;
/// Version byte of a payload that carries an epoch secret (after a key rotation).
pub const PAIRING_VERSION_ROTATED: u8 = 2;
/// Scheme and path of the QR payload.
pub const PAIRING_URI_PREFIX: &str = "nexus://pair/";
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const GROUP: usize = 5;
const FIXED: usize = 1 + 16 + 32 + 4;
const CHECKSUM: usize = 4;

/// Why a pairing code could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairingError {
    /// A character outside the code's alphabet.
    #[error("the pairing code contains {0:?}, which is not part of a code (check for typos)")]
    BadCharacter(char),
    /// Too short to be a code.
    #[error("the pairing code is incomplete")]
    TooShort,
    /// The checksum does not match: a typo or a missing part.
    #[error("the pairing code is mistyped or incomplete (its checksum does not match)")]
    Checksum,
    /// Made by a newer Nexus.
    #[error("the pairing code has version {0}; update Nexus on this device")]
    Version(u8),
    /// The server address inside is not text.
    #[error("the pairing code holds a malformed server address")]
    BadUrl,
    /// A share code (for a companion someone shares with you), not a pairing code.
    #[error(
        "this is a share code (a companion someone shares with you), not a pairing code: use `nexus companion join-share CODE`"
    )]
    ShareCode,
}

/// What a pairing code carries.
#[derive(Clone, PartialEq, Eq)]
pub struct PairingCode {
    /// The sync server, e.g. `ws://127.0.0.1:8787` or `https://sync.example`.
    pub server: String,
    /// The space.
    pub space: SpaceId,
    /// The space secret.
    pub secret: SpaceSecret,
    /// The current key epoch.
    pub epoch: u32,
    /// The current epoch's own secret, after a key rotation.
    pub epoch_secret: Option<SpaceSecret>,
}

impl fmt::Debug for PairingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairingCode")
            .field("server", &self.server)
            .field("space", &self.space)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

fn space_bytes(space: &SpaceId) -> [u8; 16] {
    let hex = space.as_str().as_bytes();
    let mut out = [0; 16];
    for (i, b) in out.iter_mut().enumerate() {
        let digit = |c: u8| match c {
            b'0'..=b'9' => c - b'0',
            _ => c - b'a' + 10,
        };
        *b = digit(hex[2 * i]) << 4 | digit(hex[2 * i + 1]);
    }
    out
}

impl PairingCode {
    fn payload(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(FIXED + self.server.len() + CHECKSUM);
        bytes.push(if self.epoch_secret.is_some() {
            PAIRING_VERSION_ROTATED
        } else {
            PAIRING_VERSION
        });
        bytes.extend_from_slice(&space_bytes(&self.space));
        bytes.extend_from_slice(self.secret.expose());
        bytes.extend_from_slice(&self.epoch.to_be_bytes());
        if let Some(s) = &self.epoch_secret {
            bytes.extend_from_slice(s.expose());
        }
        bytes.extend_from_slice(self.server.as_bytes());
        let sum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&sum[..CHECKSUM]);
        bytes
    }

    /// The code as text: groups of five characters joined by `-`.
    pub fn to_text(&self) -> String {
        let chars = encode(&self.payload());
        let groups: Vec<&str> = chars
            .as_bytes()
            .chunks(GROUP)
            .map(|g| std::str::from_utf8(g).expect("the alphabet is ASCII"))
            .collect();
        groups.join("-")
    }

    /// The QR payload: `nexus://pair/<text>`.
    pub fn to_uri(&self) -> String {
        format!("{PAIRING_URI_PREFIX}{}", self.to_text())
    }

    /// Reads a code as text or as the QR URI.
    pub fn parse(input: &str) -> Result<Self, PairingError> {
        let input = input.trim();
        if strip_prefix(input, crate::share::SHARE_URI_PREFIX).is_some() {
            return Err(PairingError::ShareCode);
        }
        let text = strip_prefix(input, PAIRING_URI_PREFIX).unwrap_or(input);
        let bytes = decode(text)?;
        if bytes.len() < FIXED + CHECKSUM {
            return Err(PairingError::TooShort);
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM);
        if Sha256::digest(body)[..CHECKSUM] != *sum {
            return Err(PairingError::Checksum);
        }
        let rotated = match body[0] {
            PAIRING_VERSION => false,
            PAIRING_VERSION_ROTATED => true,
            crate::share::SHARE_MARK => return Err(PairingError::ShareCode),
            v => return Err(PairingError::Version(v)),
        };
        let mut space = [0; 16];
        space.copy_from_slice(&body[1..17]);
        let mut secret = [0; 32];
        secret.copy_from_slice(&body[17..49]);
        let epoch = u32::from_be_bytes([body[49], body[50], body[51], body[52]]);
        let (epoch_secret, rest) = if rotated {
            let s: [u8; 32] = body
                .get(FIXED..FIXED + 32)
                .and_then(|s| s.try_into().ok())
                .ok_or(PairingError::TooShort)?;
            (Some(SpaceSecret::from_bytes(s)), &body[FIXED + 32..])
        } else {
            (None, &body[FIXED..])
        };
        let server = std::str::from_utf8(rest)
            .map_err(|_| PairingError::BadUrl)?
            .to_owned();
        Ok(Self {
            server,
            space: SpaceId::from_bytes(space),
            secret: SpaceSecret::from_bytes(secret),
            epoch,
            epoch_secret,
        })
    }
}

impl FromStr for PairingCode {
    type Err = PairingError;
    fn from_str(s: &str) -> Result<Self, PairingError> {
        Self::parse(s)
    }
}

/// `input` without `prefix` (ASCII case-insensitive), if it starts with it.
pub(crate) fn strip_prefix<'a>(input: &'a str, prefix: &str) -> Option<&'a str> {
    input
        .get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(prefix))
        .map(|_| &input[prefix.len()..])
}

/// Checksummed code text: `payload` and the first 4 bytes of its SHA-256, in Crockford base32
/// groups of five joined by `-` (pairing and share codes).
pub(crate) fn to_code_text(payload: &[u8]) -> String {
    let mut bytes = payload.to_vec();
    let sum = Sha256::digest(payload);
    bytes.extend_from_slice(&sum[..CHECKSUM]);
    let chars = encode(&bytes);
    let groups: Vec<&str> = chars
        .as_bytes()
        .chunks(GROUP)
        .map(|g| std::str::from_utf8(g).expect("the alphabet is ASCII"))
        .collect();
    groups.join("-")
}

/// Reads code text back into its payload: `Ok(None)` if the checksum does not match (a typo
/// or a missing part), `Err(c)` for a character that is not part of a code.
pub(crate) fn from_code_text(text: &str) -> Result<Option<Vec<u8>>, char> {
    let bytes = decode(text).map_err(|e| match e {
        PairingError::BadCharacter(c) => c,
        _ => '?',
    })?;
    if bytes.len() < CHECKSUM {
        return Ok(None);
    }
    let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM);
    Ok((Sha256::digest(body)[..CHECKSUM] == *sum).then(|| body.to_vec()))
}

fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buffer, mut bits) = (0_u32, 0_u32);
    for &b in bytes {
        buffer = buffer << 8 | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[(buffer >> bits & 31) as usize] as char);
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(ALPHABET[(buffer << (5 - bits) & 31) as usize] as char);
    }
    out
}

fn decode(text: &str) -> Result<Vec<u8>, PairingError> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0_u32, 0_u32);
    for c in text.chars() {
        if c == '-' || c.is_whitespace() {
            continue;
        }
        let value = match c.to_ascii_uppercase() {
            'O' => 0,
            'I' | 'L' => 1,
            u => ALPHABET
                .iter()
                .position(|&a| a as char == u)
                .ok_or(PairingError::BadCharacter(c))? as u32,
        };
        buffer = buffer << 5 | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits & 0xff) as u8);
        }
        buffer &= (1 << bits) - 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code() -> PairingCode {
        PairingCode {
            server: "ws://127.0.0.1:8787".into(),
            space: SpaceId::from_bytes([0xab; 16]),
            secret: SpaceSecret::from_bytes([7; 32]),
            epoch: 0,
            epoch_secret: None,
        }
    }

    #[test]
    fn codes_after_a_rotation_carry_the_epoch_secret() {
        let rotated = PairingCode {
            epoch: 3,
            epoch_secret: Some(SpaceSecret::from_bytes([9; 32])),
            ..code()
        };
        let text = rotated.to_text();
        assert!(text.len() > code().to_text().len());
        assert_eq!(PairingCode::parse(&text).expect("parse"), rotated);
    }

    #[test]
    fn codes_round_trip_as_text_and_uri() {
        let text = code().to_text();
        assert!(
            text.split('-').all(|g| g.len() <= 5 && !g.is_empty()),
            "{text}"
        );
        assert_eq!(PairingCode::parse(&text).expect("text"), code());
        assert_eq!(PairingCode::parse(&code().to_uri()).expect("uri"), code());
        // Lower case, spaces instead of dashes, O for 0 and l for 1 all read the same.
        let sloppy = text
            .to_lowercase()
            .replace('-', " ")
            .replace('0', "o")
            .replace('1', "l");
        assert_eq!(PairingCode::parse(&sloppy).expect("sloppy"), code());
        assert!(!format!("{:?}", code()).contains("secret: "));
    }

    #[test]
    fn typos_are_clear_errors() {
        let text = code().to_text();
        // Change one character.
        let mut chars: Vec<char> = text.chars().collect();
        let i = chars.iter().position(|c| *c != '-').expect("char");
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(PairingCode::parse(&typo), Err(PairingError::Checksum));
        // Drop a group.
        let short = text.split_once('-').map(|x| x.1).expect("rest");
        assert!(PairingCode::parse(short).is_err());
        assert_eq!(PairingCode::parse("ABC"), Err(PairingError::TooShort));
        let err = PairingCode::parse("hello!").expect_err("bad char");
        assert!(err.to_string().contains("typos"), "{err}");
        assert!(PairingError::Checksum.to_string().contains("mistyped"));
    }
}
