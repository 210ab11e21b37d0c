//! SQLite storage, the default: one file, one command.
//!
//! * **Durability.** WAL with `synchronous=FULL`: a commit returns after the WAL is fsynced,
//!   so an acknowledged write survives a killed process *and* a power cut. (`NORMAL` would
//!   survive a killed process too, but may lose the last commits on an OS crash; a server
//!   that tells devices "durable" should not.)
//! * **Group commit.** One writer thread owns the write connection. It takes every write
//!   that is waiting (up to [`MAX_BATCH`]), runs each in its own savepoint inside one
//!   transaction, commits once (one fsync for the batch), then answers all of them. A write
//!   that fails rolls back its savepoint only. Under load this turns N fsyncs into one.
//! * **Reads** run on `spawn_blocking` with pooled read connections (WAL readers never block
//!   the writer), so no SQLite call ever runs on the async runtime's threads.
//! * **Deleting leaves nothing behind.** `secure_delete` is on, so deleted rows and freed pages
//!   are overwritten with zeros (this also covers the entries a snapshot compacts away), and
//!   after a batch that deleted a document or a space the writer runs
//!   `wal_checkpoint(TRUNCATE)`: the log, which still holds the old pages, is copied into the
//!   main file and truncated to zero bytes. Only the ids of deleted documents stay, as
//!   tombstones without content.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};

use nexus_sync_protocol::{Blob, BlobKind, DocId, Entry, SpaceId};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use crate::storage::{
    Created, NewGrant, Page, Principal, Result, Storage, StorageError, access_str, parse_access,
    parse_docs,
};

/// Most writes committed together.
pub const MAX_BATCH: usize = 256;

const APPLICATION_ID: i64 = 0x4e58_5353; // "NXSS"
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE spaces (
    space TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE grants (
    space TEXT NOT NULL,
    id TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    access TEXT NOT NULL,
    docs TEXT NOT NULL,
    PRIMARY KEY (space, id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX grants_by_token ON grants (space, token_hash);
CREATE TABLE docs (
    space TEXT NOT NULL,
    doc TEXT NOT NULL,
    head INTEGER NOT NULL,
    snap_covers INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (space, doc)
) WITHOUT ROWID;
CREATE TABLE entries (
    space TEXT NOT NULL,
    doc TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    covers INTEGER,
    blob BLOB NOT NULL,
    PRIMARY KEY (space, doc, seq)
);
";

/// From schema 1: documents can be deleted (tombstones).
const MIGRATE_1_TO_2: &str = "ALTER TABLE docs ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;";

fn unavailable(e: impl std::fmt::Display) -> StorageError {
    StorageError::Unavailable(e.to_string())
}

type Job = Box<dyn FnOnce(&Connection) -> Result<Box<dyn Any + Send>> + Send>;
type Reply = oneshot::Sender<Result<Box<dyn Any + Send>>>;

/// SQLite storage in a directory (`sync.db` and its WAL).
#[derive(Debug)]
pub struct SqliteStorage {
    writer: std_mpsc::Sender<(Job, Reply)>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: std::path::PathBuf,
    /// Set by a deletion: the writer truncates the log after the batch commits.
    scrub: Arc<AtomicBool>,
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Deleted content (forgotten documents, compacted entries) is overwritten with zeros
    // instead of lingering in free pages.
    conn.pragma_update(None, "secure_delete", true)?;
    Ok(())
}

impl SqliteStorage {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(unavailable)?;
        let path = dir.join("sync.db");
        let mut conn = Connection::open(&path).map_err(unavailable)?;
        configure(&conn).map_err(unavailable)?;
        migrate(&mut conn)?;
        let (tx, rx) = std_mpsc::channel::<(Job, Reply)>();
        let scrub = Arc::new(AtomicBool::new(false));
        let flag = scrub.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, &flag))
            .map_err(unavailable)?;
        Ok(Self {
            writer: tx,
            readers: Arc::new(Mutex::new(Vec::new())),
            path,
            scrub,
        })
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |c| f(c).map(|t| Box::new(t) as Box<dyn Any + Send>));
        self.writer
            .send((job, reply))
            .map_err(|_| unavailable("the writer thread stopped"))?;
        let any = rx
            .await
            .map_err(|_| unavailable("the writer thread stopped"))??;
        any.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| StorageError::Unavailable("writer returned the wrong type".into()))
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().map_err(unavailable)?.pop();
            let conn = match pooled {
                Some(c) => c,
                None => {
                    let c = Connection::open_with_flags(
                        &path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )
                    .map_err(unavailable)?;
                    c.busy_timeout(std::time::Duration::from_secs(10))
                        .map_err(unavailable)?;
                    c
                }
            };
            let out = f(&conn);
            if let Ok(mut pool) = readers.lock()
                && pool.len() < 8
            {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(unavailable)?
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let app: i64 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(unavailable)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(unavailable)?;
    if app == APPLICATION_ID && version == SCHEMA_VERSION {
        return Ok(());
    }
    if app == APPLICATION_ID && version > SCHEMA_VERSION {
        return Err(unavailable(format!(
            "database schema {version} is newer than this server ({SCHEMA_VERSION})"
        )));
    }
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(unavailable)?;
    if app != APPLICATION_ID && tables > 0 {
        return Err(unavailable("the file is not a nexus-sync-server database"));
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    if app == APPLICATION_ID && version == 1 {
        tx.execute_batch(MIGRATE_1_TO_2).map_err(unavailable)?;
    } else {
        tx.execute_batch(SCHEMA).map_err(unavailable)?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(unavailable)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(unavailable)?;
    tx.commit().map_err(unavailable)
}

fn writer_loop(mut conn: Connection, rx: std_mpsc::Receiver<(Job, Reply)>, scrub: &AtomicBool) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut replies = Vec::with_capacity(batch.len());
        let mut results = Vec::with_capacity(batch.len());
        let committed = (|| -> rusqlite::Result<()> {
            let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for (job, reply) in batch.drain(..) {
                let sp = tx.savepoint()?;
                let out = job(&sp);
                if out.is_ok() {
                    sp.commit()?;
                } // else: dropping the savepoint rolls it back
                results.push(out);
                replies.push(reply);
            }
            tx.commit()
        })();
        match committed {
            Ok(()) => {
                if scrub.swap(false, Ordering::Relaxed) {
                    truncate_log(&conn);
                }
                for (reply, out) in replies.into_iter().zip(results) {
                    let _ = reply.send(out);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "sqlite commit failed");
                // Nothing of this batch is durable: every write fails, including jobs
                // dropped before running.
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(unavailable(&e)));
                }
                for reply in replies {
                    let _ = reply.send(Err(unavailable(&e)));
                }
            }
        }
    }
}

/// After a deletion: copies the log into the main file and truncates it, so the pages it
/// still holds (the deleted blobs as they were written) leave the disk. Deletions are
/// answered after this, so "deleted" means gone from the files too.
fn truncate_log(conn: &Connection) {
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(0) => {}
        Ok(_) => tracing::warn!(
            "a reader kept the log busy: deleted data stays in it until the next checkpoint"
        ),
        Err(e) => tracing::warn!(error = %e, "checkpoint after a deletion failed"),
    }
}

/// Head, covers of the stored snapshot and whether the document was deleted.
fn head_and_snap(c: &Connection, space: &str, doc: &str) -> rusqlite::Result<(u64, u64, bool)> {
    Ok(c.query_row(
        "SELECT head, snap_covers, deleted FROM docs WHERE space = ?1 AND doc = ?2",
        params![space, doc],
        |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, bool>(2)?,
            ))
        },
    )
    .optional()?
    .unwrap_or((0, 0, false)))
}

fn space_token(c: &Connection, space: &str) -> rusqlite::Result<Option<String>> {
    c.query_row(
        "SELECT token_hash FROM spaces WHERE space = ?1",
        [space],
        |r| r.get(0),
    )
    .optional()
}

fn grant_token_exists(c: &Connection, space: &str, hash: &str) -> rusqlite::Result<bool> {
    Ok(c.query_row(
        "SELECT 1 FROM grants WHERE space = ?1 AND token_hash = ?2",
        params![space, hash],
        |_| Ok(()),
    )
    .optional()?
    .is_some())
}

impl Storage for SqliteStorage {
    async fn create_space(&self, space: &SpaceId, token_hash: &str) -> Result<Created> {
        let (space, hash) = (space.to_string(), token_hash.to_owned());
        self.write(
            move |c| match space_token(c, &space).map_err(unavailable)? {
                Some(h) if h == hash => Ok(Created::Existed),
                Some(_) => Err(StorageError::Conflict(
                    "the space exists with another token".into(),
                )),
                None => {
                    c.execute(
                        "INSERT INTO spaces (space, token_hash) VALUES (?1, ?2)",
                        params![space, hash],
                    )
                    .map_err(unavailable)?;
                    Ok(Created::Created)
                }
            },
        )
        .await
    }

    async fn authenticate(&self, space: &SpaceId, token_hash: &str) -> Result<Option<Principal>> {
        let (space, hash) = (space.to_string(), token_hash.to_owned());
        self.read(move |c| {
            match space_token(c, &space).map_err(unavailable)? {
                None => return Ok(None),
                Some(h) if h == hash => return Ok(Some(Principal::Owner)),
                Some(_) => {}
            }
            let grant = c
                .query_row(
                    "SELECT id, access, docs FROM grants WHERE space = ?1 AND token_hash = ?2",
                    params![space, hash],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                        ))
                    },
                )
                .optional()
                .map_err(unavailable)?;
            match grant {
                None => Ok(None),
                Some((id, access, docs)) => Ok(Some(Principal::Grant {
                    id,
                    docs: parse_docs(&docs, parse_access(&access)?)?,
                })),
            }
        })
        .await
    }

    async fn append(&self, space: &SpaceId, doc: &DocId, blob: &[u8]) -> Result<u64> {
        let (space, doc, blob) = (space.to_string(), doc.to_string(), blob.to_vec());
        self.write(move |c| {
            // Only into a space that exists (a session may outlive its deleted space by a
            // moment), and never into a deleted document.
            let seq: i64 = c
                .query_row(
                    "INSERT INTO docs (space, doc, head)
                     SELECT ?1, ?2, 1 WHERE EXISTS (SELECT 1 FROM spaces WHERE space = ?1)
                     ON CONFLICT (space, doc) DO UPDATE SET head = head + 1 WHERE deleted = 0
                     RETURNING head",
                    params![space, doc],
                    |r| r.get(0),
                )
                .optional()
                .map_err(unavailable)?
                .ok_or(StorageError::Gone)?;
            c.execute(
                "INSERT INTO entries (space, doc, seq, kind, covers, blob)
                 VALUES (?1, ?2, ?3, 0, NULL, ?4)",
                params![space, doc, seq, blob],
            )
            .map_err(unavailable)?;
            Ok(seq as u64)
        })
        .await
    }

    async fn snapshot(
        &self,
        space: &SpaceId,
        doc: &DocId,
        covers: u64,
        blob: &[u8],
    ) -> Result<u64> {
        let (space, doc, blob) = (space.to_string(), doc.to_string(), blob.to_vec());
        self.write(move |c| {
            let (head, snap, deleted) = head_and_snap(c, &space, &doc).map_err(unavailable)?;
            if deleted || space_token(c, &space).map_err(unavailable)?.is_none() {
                return Err(StorageError::Gone);
            }
            check_snapshot(covers, head, snap)?;
            let seq = head + 1;
            c.execute(
                "INSERT INTO docs (space, doc, head, snap_covers) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (space, doc) DO UPDATE SET head = ?3, snap_covers = ?4",
                params![space, doc, seq as i64, covers as i64],
            )
            .map_err(unavailable)?;
            c.execute(
                "INSERT INTO entries (space, doc, seq, kind, covers, blob)
                 VALUES (?1, ?2, ?3, 1, ?4, ?5)",
                params![space, doc, seq as i64, covers as i64, blob],
            )
            .map_err(unavailable)?;
            c.execute(
                "DELETE FROM entries WHERE space = ?1 AND doc = ?2
                 AND seq <= ?3",
                params![space, doc, covers as i64],
            )
            .map_err(unavailable)?;
            Ok(seq)
        })
        .await
    }

    async fn delete_doc(&self, space: &SpaceId, doc: &DocId) -> Result<bool> {
        let (space, doc) = (space.to_string(), doc.to_string());
        let scrub = self.scrub.clone();
        self.write(move |c| {
            if space_token(c, &space).map_err(unavailable)?.is_none() {
                return Err(StorageError::NotFound);
            }
            let n = c
                .execute(
                    "DELETE FROM entries WHERE space = ?1 AND doc = ?2",
                    params![space, doc],
                )
                .map_err(unavailable)?;
            c.execute(
                "INSERT INTO docs (space, doc, head, deleted) VALUES (?1, ?2, 0, 1)
                 ON CONFLICT (space, doc) DO UPDATE SET deleted = 1",
                params![space, doc],
            )
            .map_err(unavailable)?;
            if n > 0 {
                scrub.store(true, Ordering::Relaxed);
            }
            Ok(n > 0)
        })
        .await
    }

    async fn delete_space(&self, space: &SpaceId) -> Result<()> {
        let space = space.to_string();
        let scrub = self.scrub.clone();
        self.write(move |c| {
            if space_token(c, &space).map_err(unavailable)?.is_none() {
                return Err(StorageError::NotFound);
            }
            for table in ["entries", "docs", "grants", "spaces"] {
                c.execute(&format!("DELETE FROM {table} WHERE space = ?1"), [&space])
                    .map_err(unavailable)?;
            }
            scrub.store(true, Ordering::Relaxed);
            Ok(())
        })
        .await
    }

    async fn entries(
        &self,
        space: &SpaceId,
        doc: &DocId,
        since: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Page> {
        let (space, doc) = (space.to_string(), doc.to_string());
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT seq, kind, covers, blob FROM entries
                     WHERE space = ?1 AND doc = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
                )
                .map_err(unavailable)?;
            let mut rows = stmt
                .query(params![
                    space,
                    doc,
                    since.min(i64::MAX as u64) as i64,
                    limit.saturating_add(1).min(i64::MAX as usize) as i64
                ])
                .map_err(unavailable)?;
            let mut page = PageBuilder::new(limit, max_bytes);
            while let Some(r) = rows.next().map_err(unavailable)? {
                let seq: i64 = r.get(0).map_err(unavailable)?;
                let kind: i64 = r.get(1).map_err(unavailable)?;
                let covers: Option<i64> = r.get(2).map_err(unavailable)?;
                let blob: Vec<u8> = r.get(3).map_err(unavailable)?;
                if !page.push(seq, kind, covers, blob) {
                    break;
                }
            }
            Ok(page.finish())
        })
        .await
    }

    async fn heads(&self, space: &SpaceId) -> Result<BTreeMap<DocId, u64>> {
        let space = space.to_string();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached("SELECT doc, head FROM docs WHERE space = ?1 AND deleted = 0")
                .map_err(unavailable)?;
            let rows = stmt
                .query_map([space], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(unavailable)?;
            let mut out = BTreeMap::new();
            for row in rows {
                let (doc, head) = row.map_err(unavailable)?;
                out.insert(doc.parse().map_err(unavailable)?, head as u64);
            }
            Ok(out)
        })
        .await
    }

    async fn create_grant(&self, space: &SpaceId, grant: &NewGrant) -> Result<()> {
        let space = space.to_string();
        let grant = grant.clone();
        self.write(move |c| {
            match space_token(c, &space).map_err(unavailable)? {
                None => return Err(StorageError::NotFound),
                Some(h) if h == grant.token_hash => {
                    return Err(StorageError::Conflict(
                        "the grant token is the space token".into(),
                    ));
                }
                Some(_) => {}
            }
            if grant_token_exists(c, &space, &grant.token_hash).map_err(unavailable)? {
                return Err(StorageError::Conflict(
                    "the token is already another grant's".into(),
                ));
            }
            c.execute(
                "INSERT INTO grants (space, id, token_hash, access, docs) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    space,
                    grant.id,
                    grant.token_hash,
                    access_str(grant.access),
                    join_docs(&grant.docs)
                ],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    StorageError::Conflict("a grant with this id exists".into())
                }
                e => unavailable(e),
            })?;
            Ok(())
        })
        .await
    }

    async fn delete_grant(&self, space: &SpaceId, id: &str) -> Result<()> {
        let (space, id) = (space.to_string(), id.to_owned());
        self.write(move |c| {
            let n = c
                .execute(
                    "DELETE FROM grants WHERE space = ?1 AND id = ?2",
                    params![space, id],
                )
                .map_err(unavailable)?;
            if n == 0 {
                Err(StorageError::NotFound)
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn rotate_token(
        &self,
        space: &SpaceId,
        new_hash: &str,
        keep_grants: Option<&[String]>,
    ) -> Result<()> {
        let (space, hash) = (space.to_string(), new_hash.to_owned());
        let keep = keep_grants.map(<[String]>::to_vec);
        self.write(move |c| {
            if space_token(c, &space).map_err(unavailable)?.is_none() {
                return Err(StorageError::NotFound);
            }
            if grant_token_exists(c, &space, &hash).map_err(unavailable)? {
                return Err(StorageError::Conflict(
                    "the new token is already a grant's".into(),
                ));
            }
            c.execute(
                "UPDATE spaces SET token_hash = ?2 WHERE space = ?1",
                params![space, hash],
            )
            .map_err(unavailable)?;
            if let Some(keep) = keep {
                let ids: Vec<String> = {
                    let mut q = c
                        .prepare_cached("SELECT id FROM grants WHERE space = ?1")
                        .map_err(unavailable)?;
                    q.query_map(params![space], |r| r.get(0))
                        .map_err(unavailable)?
                        .collect::<rusqlite::Result<_>>()
                        .map_err(unavailable)?
                };
                for id in ids.iter().filter(|id| !keep.contains(id)) {
                    c.execute(
                        "DELETE FROM grants WHERE space = ?1 AND id = ?2",
                        params![space, id],
                    )
                    .map_err(unavailable)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn health(&self) -> Result<()> {
        self.read(|c| {
            c.query_row("SELECT count(*) FROM spaces", [], |r| r.get::<_, i64>(0))
                .map_err(unavailable)?;
            Ok(())
        })
        .await?;
        // The writer thread must be alive too.
        self.write(|_| Ok(())).await
    }
}

/// Validates a snapshot against the document's head and its stored snapshot.
pub(crate) fn check_snapshot(covers: u64, head: u64, snap_covers: u64) -> Result<()> {
    if covers > head {
        return Err(StorageError::Invalid(format!(
            "the snapshot covers {covers} but the document's head is {head}"
        )));
    }
    if covers < snap_covers {
        return Err(StorageError::Conflict(format!(
            "a stored snapshot already covers {snap_covers} (this one covers {covers})"
        )));
    }
    Ok(())
}

pub(crate) fn join_docs(docs: &[DocId]) -> String {
    docs.iter()
        .map(|d| d.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Collects a page under an entry and byte budget (the first entry always fits).
pub(crate) struct PageBuilder {
    limit: usize,
    max_bytes: usize,
    bytes: usize,
    page: Page,
}

impl PageBuilder {
    pub(crate) fn new(limit: usize, max_bytes: usize) -> Self {
        Self {
            limit: limit.max(1),
            max_bytes,
            bytes: 0,
            page: Page::default(),
        }
    }

    /// Adds a row; `false` when the page is full (and `more` is set).
    pub(crate) fn push(&mut self, seq: i64, kind: i64, covers: Option<i64>, blob: Vec<u8>) -> bool {
        if self.page.entries.len() >= self.limit
            || (!self.page.entries.is_empty() && self.bytes + blob.len() > self.max_bytes)
        {
            self.page.more = true;
            return false;
        }
        self.bytes += blob.len();
        self.page.entries.push(Entry {
            seq: seq as u64,
            kind: if kind == 1 {
                BlobKind::Snapshot
            } else {
                BlobKind::Change
            },
            covers: covers.map(|c| c as u64),
            blob: Blob(blob),
        });
        true
    }

    pub(crate) fn finish(self) -> Page {
        self.page
    }
}
