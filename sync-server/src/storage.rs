//! The storage port: everything the server keeps, behind one trait that SQLite
//! ([`crate::sqlite::SqliteStorage`]) and PostgreSQL ([`crate::postgres::PgStorage`]) implement
//! and one conformance suite ([`crate::conformance_tests!`]) checks.
//!
//! Every write method returns only after its transaction committed: the server acknowledges
//! what these methods return, so "returned" must mean "durable".

use std::collections::BTreeMap;
use std::future::Future;

use nexus_sync_protocol::{Access, DocId, Entry, SpaceId};
use tokio::sync::mpsc;

/// Storage results.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// No such space, document or grant.
    #[error("not found")]
    NotFound,
    /// The operation contradicts what is stored (a space with another token, a token already
    /// in use, a snapshot older than the stored one).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request is invalid (a snapshot covering entries that do not exist).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The document was deleted: it cannot be written again.
    #[error("the document was deleted")]
    Gone,
    /// The database failed or is unreachable; nothing was written.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// Who a token is, once checked against a space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The space token: reads and writes everything, manages grants.
    Owner,
    /// A grant token: only the listed documents.
    Grant {
        /// The grant's id.
        id: String,
        /// Documents and access.
        docs: BTreeMap<DocId, Access>,
    },
}

impl Principal {
    /// May read `doc`.
    pub fn can_read(&self, doc: &DocId) -> bool {
        match self {
            Principal::Owner => true,
            Principal::Grant { docs, .. } => docs.contains_key(doc),
        }
    }

    /// May push to `doc`.
    pub fn can_write(&self, doc: &DocId) -> bool {
        match self {
            Principal::Owner => true,
            Principal::Grant { docs, .. } => docs.get(doc) == Some(&Access::ReadWrite),
        }
    }

    /// What [`nexus_sync_protocol::ServerMessage::Welcome`] reports.
    pub fn grants(&self) -> Option<BTreeMap<DocId, Access>> {
        match self {
            Principal::Owner => None,
            Principal::Grant { docs, .. } => Some(docs.clone()),
        }
    }
}

/// Outcome of [`Storage::create_space`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// A new space.
    Created,
    /// It already existed with the same token.
    Existed,
}

/// A page of a document's log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// In sequence order.
    pub entries: Vec<Entry>,
    /// More entries follow.
    pub more: bool,
}

/// A grant to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGrant {
    /// Its id (chosen by the server).
    pub id: String,
    /// Hash of its token ([`nexus_sync_protocol::token_hash`]).
    pub token_hash: String,
    /// Documents it may access.
    pub docs: Vec<DocId>,
    /// How.
    pub access: Access,
}

/// Something another server process wrote (PostgreSQL LISTEN/NOTIFY).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteEvent {
    /// A new entry is committed.
    Entry {
        /// Space.
        space: SpaceId,
        /// Document.
        doc: DocId,
        /// Its sequence number.
        seq: u64,
    },
    /// Tokens or grants of the space changed: sessions must re-check their token.
    AuthChanged {
        /// Space.
        space: SpaceId,
    },
    /// The space was deleted: its sessions end.
    SpaceDeleted {
        /// Space.
        space: SpaceId,
    },
    /// Notifications may have been missed (the listener reconnected): every session
    /// re-reads its heads.
    Resync,
}

/// The storage port.
///
/// Sequence numbers are per document, start at 1 and are assigned atomically by
/// [`append`](Storage::append) and [`snapshot`](Storage::snapshot). A snapshot is an entry too
/// (it gets the next sequence number); storing it deletes the entries it covers and older
/// snapshots, so "the entries after `since`" is always complete: when `since` is older than
/// the snapshot, the snapshot stands in for the deleted entries.
///
/// Deleting ([`delete_doc`](Storage::delete_doc), [`delete_space`](Storage::delete_space)) is
/// forgetting: what is deleted must not survive in the database's files where the backend can
/// prevent it (SQLite: `secure_delete` and a truncating checkpoint; see each backend).
pub trait Storage: Send + Sync + 'static {
    /// Registers a space with the hash of its token.
    fn create_space(
        &self,
        space: &SpaceId,
        token_hash: &str,
    ) -> impl Future<Output = Result<Created>> + Send;

    /// Checks a token: `None` when the space does not exist or the token is not its space
    /// token or one of its grants (the two cases are not told apart).
    fn authenticate(
        &self,
        space: &SpaceId,
        token_hash: &str,
    ) -> impl Future<Output = Result<Option<Principal>>> + Send;

    /// Appends a change; returns its sequence number once committed. `Gone` when the document
    /// was deleted.
    fn append(
        &self,
        space: &SpaceId,
        doc: &DocId,
        blob: &[u8],
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Stores a snapshot covering sequence numbers up to `covers` and drops what it covers
    /// (compaction). `Invalid` when `covers` is beyond the head, `Conflict` when a stored
    /// snapshot covers more, `Gone` when the document was deleted.
    fn snapshot(
        &self,
        space: &SpaceId,
        doc: &DocId,
        covers: u64,
        blob: &[u8],
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Deletes every entry of a document and leaves its id as a tombstone: later appends and
    /// snapshots fail with [`StorageError::Gone`] and it is no longer in the
    /// [`heads`](Storage::heads). Idempotent: returns whether the document had any entry (an
    /// unknown id is tombstoned too).
    fn delete_doc(&self, space: &SpaceId, doc: &DocId)
    -> impl Future<Output = Result<bool>> + Send;

    /// Deletes a space with everything in it: entries, documents and their tombstones, grants
    /// and the space itself (its token then authenticates nothing). `NotFound` when there is no
    /// such space.
    fn delete_space(&self, space: &SpaceId) -> impl Future<Output = Result<()>> + Send;

    /// Entries after `since`, at most `limit` of them and, beyond the first, at most about
    /// `max_bytes` of blobs.
    fn entries(
        &self,
        space: &SpaceId,
        doc: &DocId,
        since: u64,
        limit: usize,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Page>> + Send;

    /// Every document of the space with its highest sequence number.
    fn heads(&self, space: &SpaceId) -> impl Future<Output = Result<BTreeMap<DocId, u64>>> + Send;

    /// Stores a grant. `Conflict` when its token is already the space token or another grant's.
    fn create_grant(
        &self,
        space: &SpaceId,
        grant: &NewGrant,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Deletes a grant; `NotFound` when there is none with that id.
    fn delete_grant(&self, space: &SpaceId, id: &str) -> impl Future<Output = Result<()>> + Send;

    /// Replaces the space token. `Conflict` when the new token is a grant's. With
    /// `keep_grants`, every other grant of the space is deleted in the same transaction (a
    /// device revocation: only the remaining devices' grants survive).
    fn rotate_token(
        &self,
        space: &SpaceId,
        new_hash: &str,
        keep_grants: Option<&[String]>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Fails when the database cannot serve requests.
    fn health(&self) -> impl Future<Output = Result<()>> + Send;

    /// Writes of other server processes on the same database, if the backend can have any.
    /// Called once at start.
    fn remote_events(&self) -> Option<mpsc::UnboundedReceiver<RemoteEvent>> {
        None
    }
}

/// Parses the comma-separated document list the backends store for a grant.
pub(crate) fn parse_docs(docs: &str, access: Access) -> Result<BTreeMap<DocId, Access>> {
    docs.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<DocId>()
                .map(|d| (d, access))
                .map_err(|e| StorageError::Unavailable(format!("corrupt grant row: {e}")))
        })
        .collect()
}

/// The stored form of [`Access`].
pub(crate) fn access_str(access: Access) -> &'static str {
    match access {
        Access::Read => "read",
        Access::ReadWrite => "read_write",
    }
}

/// Parses [`access_str`].
pub(crate) fn parse_access(s: &str) -> Result<Access> {
    match s {
        "read" => Ok(Access::Read),
        "read_write" => Ok(Access::ReadWrite),
        other => Err(StorageError::Unavailable(format!(
            "corrupt grant access {other:?}"
        ))),
    }
}
