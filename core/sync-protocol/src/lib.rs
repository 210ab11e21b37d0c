//! # nexus-sync-protocol
//!
//! The wire protocol between Nexus devices and the sync server. It is everything the server
//! ever sees: random space ids, opaque document ids, sequence numbers and encrypted blobs. What
//! is inside a blob (an encrypted Automerge change or snapshot) is defined by `nexus-sync` on
//! the devices; the server never needs it, which is why this crate is separate and tiny: the
//! server depends on it and on nothing that can read user data.
//!
//! ## Model
//! * A **space** is one user's set of devices. Its id is 16 random bytes in lowercase hex.
//! * A **document** inside a space has an id of the same shape, which devices derive with a
//!   keyed hash from the document's name, so the server cannot tell a journal from a companion.
//! * Each document is an append-only log of **entries** with per-document sequence numbers
//!   starting at 1. An entry holds a blob that is either one encrypted **change** or an
//!   encrypted **snapshot** that covers every change up to `covers`; once a snapshot is stored
//!   the server may drop the entries it covers (compaction).
//! * The server acknowledges a write ([`ServerMessage::Ack`]) only after it is durable.
//!
//! ## Authentication
//! Every request carries a bearer [`Token`]. Devices derive the space token from the space
//! secret; the server stores only [`token_hash`]. The space token may read and write every
//! document and manage grants; a **grant** token gives read or read-write access to listed
//! documents only (sharing one companion with another person). Revoking is deleting the grant
//! or rotating the space token (devices also rotate the key, which the server never sees).
//!
//! ## Transport
//! WebSocket at [`routes::WS`] carrying one JSON [`ClientMessage`] / [`ServerMessage`] per text
//! frame, the first client frame being [`ClientMessage::Hello`] (browsers cannot set headers
//! on WebSockets). The same operations exist over HTTP (see [`routes`]) for simple clients.
//!
//! ## Deleting
//! Forgetting must reach the server too, so the space token (never a grant token: `forbidden`)
//! may delete:
//! * **a document**: [`ClientMessage::Delete`] on the WebSocket (answered by
//!   [`ServerMessage::Deleted`] once committed; devices send it in the same ordered queue as
//!   their pushes, so "upload the new generation, then delete the old one" needs no second
//!   channel), or `DELETE` [`routes::doc`] over HTTP (204). Every entry and snapshot of the
//!   document is deleted. The id stays behind as a tombstone without content: a later push or
//!   snapshot to it is refused with [`ErrorCode::Gone`] (HTTP 410), so a device that was
//!   offline cannot bring the document back, and it no longer appears in the heads. Deleting
//!   is idempotent: deleting a deleted or unknown document succeeds (and tombstones it).
//! * **the whole space**: `DELETE` [`routes::space`] over HTTP (204): its documents, entries,
//!   tombstones, grants and the space itself. Sessions of the space are closed with
//!   [`ErrorCode::NotFound`]; afterwards its token is `unauthorized` like any unknown one.
//!   (HTTP only: it ends every session of the space, the caller's included.)

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of this protocol, sent in [`ClientMessage::Hello`] and [`ServerMessage::Welcome`].
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest blob of a change, in bytes (before base64).
pub const MAX_CHANGE_BYTES: usize = 1 << 20;
/// Largest blob of a snapshot, in bytes (before base64).
pub const MAX_SNAPSHOT_BYTES: usize = 32 << 20;
/// Most entries in one [`ServerMessage::Entries`] or HTTP page.
pub const MAX_ENTRIES_PER_MESSAGE: usize = 512;
/// Largest text frame a server accepts: a maximal snapshot in base64 plus the envelope.
pub const MAX_FRAME_BYTES: usize = MAX_SNAPSHOT_BYTES / 3 * 4 + 64 * 1024;

/// Bad protocol values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// An id is not 32 lowercase hex digits.
    #[error("{kind} must be 32 lowercase hex digits, got {len} characters")]
    BadId {
        /// Which id.
        kind: &'static str,
        /// Length of what was given.
        len: usize,
    },
    /// A token is not 43 base64url characters (32 bytes).
    #[error("a token must be 43 base64url characters (32 bytes)")]
    BadToken,
    /// A blob is larger than allowed.
    #[error("{kind} of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// Change or snapshot.
        kind: BlobKind,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A message is not valid JSON of the protocol.
    #[error("malformed message: {0}")]
    Malformed(String),
}

fn check_hex_id(kind: &'static str, s: &str) -> Result<(), ProtocolError> {
    if s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(ProtocolError::BadId {
            kind,
            len: s.chars().count(),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

macro_rules! hex_id {
    ($name:ident, $kind:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// From 16 bytes.
            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(hex(&bytes))
            }

            /// The 32 hex digits.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = ProtocolError;
            fn from_str(s: &str) -> Result<Self, ProtocolError> {
                check_hex_id($kind, s)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = ProtocolError;
            fn try_from(s: String) -> Result<Self, ProtocolError> {
                check_hex_id($kind, &s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

hex_id!(
    SpaceId,
    "a space id",
    "A space: one user's devices. 16 random bytes as hex."
);
hex_id!(
    DocId,
    "a document id",
    "A document in a space, opaque to the server (devices derive it with a keyed hash)."
);

/// A bearer secret: 32 bytes as unpadded base64url (43 characters). `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Token(String);

impl Token {
    /// From 32 secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The secret text (for an `Authorization: Bearer` header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Token {
    type Err = ProtocolError;
    fn from_str(s: &str) -> Result<Self, ProtocolError> {
        Self::try_from(s.to_owned())
    }
}

impl TryFrom<String> for Token {
    type Error = ProtocolError;
    fn try_from(s: String) -> Result<Self, ProtocolError> {
        match URL_SAFE_NO_PAD.decode(s.as_bytes()) {
            Ok(b) if b.len() == 32 && s.len() == 43 => Ok(Self(s)),
            _ => Err(ProtocolError::BadToken),
        }
    }
}

impl From<Token> for String {
    fn from(t: Token) -> String {
        t.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// What the server stores instead of a token: SHA-256 of its text, as hex. Tokens carry 256
/// bits of entropy, so a fast hash is enough (no password stretching needed).
pub fn token_hash(token: &Token) -> String {
    hex(&Sha256::digest(token.0.as_bytes()))
}

/// Encrypted bytes; base64 (standard, padded) in JSON.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.len() > MAX_FRAME_BYTES {
            return Err(serde::de::Error::custom("blob too large"));
        }
        STANDARD
            .decode(s.as_bytes())
            .map(Blob)
            .map_err(|e| serde::de::Error::custom(format!("blob is not base64: {e}")))
    }
}

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobKind {
    /// One encrypted change.
    Change,
    /// An encrypted snapshot of the whole document.
    Snapshot,
}

impl BlobKind {
    /// Largest blob of this kind.
    pub fn max_bytes(self) -> usize {
        match self {
            BlobKind::Change => MAX_CHANGE_BYTES,
            BlobKind::Snapshot => MAX_SNAPSHOT_BYTES,
        }
    }

    /// Fails if `blob` is larger than allowed for this kind.
    pub fn check(self, blob: &Blob) -> Result<(), ProtocolError> {
        let max = self.max_bytes();
        if blob.0.len() > max {
            return Err(ProtocolError::TooLarge {
                kind: self,
                len: blob.0.len(),
                max,
            });
        }
        Ok(())
    }
}

impl fmt::Display for BlobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlobKind::Change => "a change",
            BlobKind::Snapshot => "a snapshot",
        })
    }
}

/// One stored entry of a document's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Sequence number in the document, from 1, strictly increasing.
    pub seq: u64,
    /// Change or snapshot.
    pub kind: BlobKind,
    /// For snapshots: the highest sequence number it includes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covers: Option<u64>,
    /// The encrypted payload.
    pub blob: Blob,
}

/// What a token may do with a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Read entries only.
    Read,
    /// Read entries and push changes and snapshots.
    ReadWrite,
}

/// Messages from a device to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// First message of a WebSocket session: authenticates and subscribes to every readable
    /// document (also ones created later). The server answers [`ServerMessage::Welcome`], then
    /// sends what the device misses: for a document in `cursors`, the entries after that
    /// sequence number; for any other, its latest snapshot and the changes after it.
    Hello {
        /// [`PROTOCOL_VERSION`].
        protocol: u32,
        /// The space.
        space: SpaceId,
        /// The space token or a grant token.
        token: Token,
        /// Highest sequence number the device has applied, per document.
        #[serde(default)]
        cursors: BTreeMap<DocId, u64>,
    },
    /// Appends a change; answered by [`ServerMessage::Ack`] once durable.
    Push {
        /// Chosen by the device, echoed in the ack or error.
        id: u64,
        /// The document.
        doc: DocId,
        /// The encrypted change.
        blob: Blob,
    },
    /// Stores a snapshot covering entries up to `covers`; the server may then drop them. The
    /// snapshot is an entry with the next sequence number. `covers` above the document's head
    /// is `bad_request`; below the `covers` of the stored snapshot it is `conflict`.
    Snapshot {
        /// Chosen by the device, echoed in the ack or error.
        id: u64,
        /// The document.
        doc: DocId,
        /// Highest sequence number the snapshot includes.
        covers: u64,
        /// The encrypted snapshot.
        blob: Blob,
    },
    /// Deletes a document with all its entries (space token only); answered by
    /// [`ServerMessage::Deleted`] once committed. Later writes to it are [`ErrorCode::Gone`].
    Delete {
        /// Chosen by the device, echoed in the answer or error.
        id: u64,
        /// The document.
        doc: DocId,
    },
    /// Keep-alive; answered by [`ServerMessage::Pong`].
    Ping {
        /// Echoed.
        id: u64,
    },
}

/// Messages from the server to a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The session is authenticated.
    Welcome {
        /// [`PROTOCOL_VERSION`].
        protocol: u32,
        /// Readable documents and their highest sequence numbers.
        heads: BTreeMap<DocId, u64>,
        /// What the token may do: `None` for the space token (everything), else per document.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grants: Option<BTreeMap<DocId, Access>>,
    },
    /// Entries of one document, in sequence order: the backlog after Hello, then live ones.
    /// A session receives every entry of its readable documents, its own pushes included, so
    /// per document the stream has no gaps and the last `seq` received is the cursor.
    Entries {
        /// The document.
        doc: DocId,
        /// At most [`MAX_ENTRIES_PER_MESSAGE`].
        entries: Vec<Entry>,
    },
    /// A push or snapshot is durable under `seq`.
    Ack {
        /// The device's request id.
        id: u64,
        /// The document.
        doc: DocId,
        /// Its sequence number.
        seq: u64,
    },
    /// A [`ClientMessage::Delete`] is committed: the document and its entries are gone.
    Deleted {
        /// The device's request id.
        id: u64,
        /// The document.
        doc: DocId,
    },
    /// A request failed (`id` set) or the session ends (`id` empty, the server then closes).
    Error {
        /// The failed request, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Machine-readable kind.
        code: ErrorCode,
        /// For people.
        message: String,
    },
    /// Answer to [`ClientMessage::Ping`].
    Pong {
        /// Echoed.
        id: u64,
    },
}

/// Kinds of failure, shared by WebSocket errors and HTTP error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Unknown or revoked token (HTTP 401).
    Unauthorized,
    /// The token may not do this (HTTP 403).
    Forbidden,
    /// No such space or document (HTTP 404).
    NotFound,
    /// The space exists with another token, a token is already in use, or a snapshot is
    /// older than the stored one (HTTP 409).
    Conflict,
    /// Over a size limit (HTTP 413).
    TooLarge,
    /// Over a rate limit; retry later (HTTP 429).
    RateLimited,
    /// Malformed request or unsupported protocol version (HTTP 400).
    BadRequest,
    /// The document was deleted; it cannot be written again (HTTP 410).
    Gone,
    /// Storage is unavailable; nothing was written (HTTP 503).
    Unavailable,
    /// A bug (HTTP 500).
    Internal,
}

impl ErrorCode {
    /// The matching HTTP status code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::BadRequest => 400,
            ErrorCode::Gone => 410,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

/// HTTP error body: `{"code": .., "message": ..}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable kind.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
}

/// HTTP bodies.
pub mod http {
    use super::*;

    /// `POST /v1/spaces` (with the space token as bearer): registers a space. 201 when created,
    /// 200 when it exists with this token, 409 when it exists with another one.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CreateSpace {
        /// The new space.
        pub space: SpaceId,
    }

    /// `GET /v1/spaces/{space}/docs`: readable documents and their heads.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DocList {
        /// Document to its highest sequence number.
        pub heads: BTreeMap<DocId, u64>,
    }

    /// `GET /v1/spaces/{space}/docs/{doc}/entries?since=N&limit=M`: entries after `since` (or
    /// the latest snapshot and what follows when `since` is older than it).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct EntriesPage {
        /// In sequence order.
        pub entries: Vec<Entry>,
        /// Whether more entries follow.
        pub more: bool,
    }

    /// `POST /v1/spaces/{space}/docs/{doc}/changes`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct PushChange {
        /// The encrypted change.
        pub blob: Blob,
    }

    /// `POST /v1/spaces/{space}/docs/{doc}/snapshots`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct PushSnapshot {
        /// Highest sequence number included.
        pub covers: u64,
        /// The encrypted snapshot.
        pub blob: Blob,
    }

    /// Answer to a push: durable under `seq`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Pushed {
        /// Sequence number of the new entry.
        pub seq: u64,
    }

    /// `POST /v1/spaces/{space}/grants` (space token only): lets `token` access `docs`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CreateGrant {
        /// The grant's own bearer token (the server stores its hash).
        pub token: Token,
        /// Documents it may access.
        pub docs: Vec<DocId>,
        /// How.
        pub access: Access,
    }

    /// Answer to [`CreateGrant`]; `DELETE /v1/spaces/{space}/grants/{id}` revokes it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct GrantCreated {
        /// The grant's id.
        pub id: String,
    }

    /// `POST /v1/spaces/{space}/token` (space token only): replaces the space token; sessions
    /// using the old one are closed. With `keep_grants`, every other grant is deleted in the
    /// same transaction (revoking a device: its grant goes, and so does any grant it made).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct RotateToken {
        /// The new space token.
        pub token: Token,
        /// Grants to keep (by id); `None` keeps them all.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub keep_grants: Option<Vec<String>>,
    }
}

/// Paths of the server.
pub mod routes {
    /// WebSocket sessions.
    pub const WS: &str = "/v1/ws";
    /// Spaces (POST registers one).
    pub const SPACES: &str = "/v1/spaces";
    /// Liveness and storage health: `{"status":"ok"}`.
    pub const HEALTH: &str = "/health";
    /// Prometheus text format.
    pub const METRICS: &str = "/metrics";

    /// `DELETE` (space token only): deletes the space and everything in it.
    pub fn space(space: &super::SpaceId) -> String {
        format!("/v1/spaces/{space}")
    }

    /// `DELETE` (space token only): deletes a document and its entries.
    pub fn doc(space: &super::SpaceId, doc: &super::DocId) -> String {
        format!("/v1/spaces/{space}/docs/{doc}")
    }

    /// `GET`: [`super::http::DocList`].
    pub fn docs(space: &super::SpaceId) -> String {
        format!("/v1/spaces/{space}/docs")
    }

    /// `GET ?since=&limit=`: [`super::http::EntriesPage`].
    pub fn entries(space: &super::SpaceId, doc: &super::DocId) -> String {
        format!("/v1/spaces/{space}/docs/{doc}/entries")
    }

    /// `POST`: [`super::http::PushChange`].
    pub fn changes(space: &super::SpaceId, doc: &super::DocId) -> String {
        format!("/v1/spaces/{space}/docs/{doc}/changes")
    }

    /// `POST`: [`super::http::PushSnapshot`].
    pub fn snapshots(space: &super::SpaceId, doc: &super::DocId) -> String {
        format!("/v1/spaces/{space}/docs/{doc}/snapshots")
    }

    /// `POST`: [`super::http::CreateGrant`]; `DELETE {grants}/{id}` revokes.
    pub fn grants(space: &super::SpaceId) -> String {
        format!("/v1/spaces/{space}/grants")
    }

    /// `POST`: [`super::http::RotateToken`].
    pub fn token(space: &super::SpaceId) -> String {
        format!("/v1/spaces/{space}/token")
    }
}

impl ClientMessage {
    /// Parses one text frame, enforcing the frame and blob limits.
    pub fn parse(frame: &str) -> Result<Self, ProtocolError> {
        if frame.len() > MAX_FRAME_BYTES {
            return Err(ProtocolError::Malformed(format!(
                "frame of {} bytes is larger than {MAX_FRAME_BYTES}",
                frame.len()
            )));
        }
        let msg: Self =
            serde_json::from_str(frame).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        match &msg {
            ClientMessage::Push { blob, .. } => BlobKind::Change.check(blob)?,
            ClientMessage::Snapshot { blob, .. } => BlobKind::Snapshot.check(blob)?,
            _ => {}
        }
        Ok(msg)
    }

    /// One text frame.
    pub fn to_frame(&self) -> String {
        serde_json::to_string(self).expect("protocol messages always serialize")
    }
}

impl ServerMessage {
    /// Parses one text frame.
    pub fn parse(frame: &str) -> Result<Self, ProtocolError> {
        serde_json::from_str(frame).map_err(|e| ProtocolError::Malformed(e.to_string()))
    }

    /// One text frame.
    pub fn to_frame(&self) -> String {
        serde_json::to_string(self).expect("protocol messages always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> SpaceId {
        SpaceId::from_bytes([7; 16])
    }

    #[test]
    fn ids_are_32_lowercase_hex_digits() {
        assert_eq!(space().as_str(), "07".repeat(16));
        assert!("0".repeat(32).parse::<DocId>().is_ok());
        for bad in ["", "abc", &"A".repeat(32), &"g".repeat(32), &"0".repeat(33)] {
            assert!(bad.parse::<SpaceId>().is_err(), "{bad:?}");
        }
        let json = format!("\"{}\"", "x".repeat(32));
        assert!(serde_json::from_str::<DocId>(&json).is_err());
    }

    #[test]
    fn tokens_are_32_bytes_and_never_printed() {
        let t = Token::from_bytes([1; 32]);
        assert_eq!(t.expose().len(), 43);
        assert_eq!(t.expose().parse::<Token>().expect("parses"), t);
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert!("short".parse::<Token>().is_err());
        let h = token_hash(&t);
        assert_eq!(h.len(), 64);
        assert_ne!(h, token_hash(&Token::from_bytes([2; 32])));
    }

    #[test]
    fn messages_round_trip_as_tagged_json() {
        let hello = ClientMessage::Hello {
            protocol: PROTOCOL_VERSION,
            space: space(),
            token: Token::from_bytes([3; 32]),
            cursors: BTreeMap::from([(DocId::from_bytes([1; 16]), 5)]),
        };
        let frame = hello.to_frame();
        assert!(frame.starts_with(r#"{"type":"hello""#), "{frame}");
        assert_eq!(ClientMessage::parse(&frame).expect("parse"), hello);

        let entries = ServerMessage::Entries {
            doc: DocId::from_bytes([1; 16]),
            entries: vec![
                Entry {
                    seq: 6,
                    kind: BlobKind::Change,
                    covers: None,
                    blob: Blob(vec![0, 1, 2, 255]),
                },
                Entry {
                    seq: 7,
                    kind: BlobKind::Snapshot,
                    covers: Some(6),
                    blob: Blob(vec![9; 10]),
                },
            ],
        };
        let frame = entries.to_frame();
        assert!(frame.contains(r#""blob":"AAEC/w==""#), "{frame}");
        assert_eq!(ServerMessage::parse(&frame).expect("parse"), entries);

        let delete = ClientMessage::Delete {
            id: 9,
            doc: DocId::from_bytes([1; 16]),
        };
        let frame = delete.to_frame();
        assert!(frame.starts_with(r#"{"type":"delete","id":9"#), "{frame}");
        assert_eq!(ClientMessage::parse(&frame).expect("parse"), delete);
        let deleted = ServerMessage::Deleted {
            id: 9,
            doc: DocId::from_bytes([1; 16]),
        };
        assert_eq!(
            ServerMessage::parse(&deleted.to_frame()).expect("parse"),
            deleted
        );
    }

    #[test]
    fn malformed_and_oversized_frames_are_clear_errors() {
        for bad in ["", "{", r#"{"type":"nope"}"#, r#"{"type":"push","id":1}"#] {
            assert!(
                matches!(ClientMessage::parse(bad), Err(ProtocolError::Malformed(_))),
                "{bad:?}"
            );
        }
        let bad_b64 = format!(
            r#"{{"type":"push","id":1,"doc":"{}","blob":"***"}}"#,
            "0".repeat(32)
        );
        let err = ClientMessage::parse(&bad_b64).expect_err("bad base64");
        assert!(err.to_string().contains("base64"), "{err}");
        let big = ClientMessage::Push {
            id: 1,
            doc: DocId::from_bytes([0; 16]),
            blob: Blob(vec![0; MAX_CHANGE_BYTES + 1]),
        };
        assert!(matches!(
            ClientMessage::parse(&big.to_frame()),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn error_codes_map_to_http_statuses() {
        assert_eq!(ErrorCode::Unauthorized.http_status(), 401);
        assert_eq!(ErrorCode::RateLimited.http_status(), 429);
        assert_eq!(ErrorCode::Gone.http_status(), 410);
        let body = serde_json::to_string(&ErrorBody {
            code: ErrorCode::TooLarge,
            message: "x".into(),
        })
        .expect("json");
        assert_eq!(body, r#"{"code":"too_large","message":"x"}"#);
    }
}
