//! PostgreSQL storage, to scale out: several server processes share one database.
//!
//! * Sequence numbers come from the document's row (`INSERT .. ON CONFLICT DO UPDATE SET
//!   head = head + 1 RETURNING head`), which PostgreSQL locks until the transaction ends, so
//!   concurrent appends to one document from any number of processes get distinct,
//!   gap-free numbers, and entry N is committed before N+1 is.
//! * Every write sends `NOTIFY nexus_sync` **inside** its transaction: PostgreSQL delivers it
//!   only after the commit. The payload names the origin process, the space, the document
//!   and the sequence number (never a blob); each process LISTENs on its own connection and
//!   its sessions fetch the entries. A process ignores its own notifications (it already
//!   fanned those out with the entry in memory). When the listening connection drops, the
//!   listener reconnects and asks every session to resync (notifications may be lost).
//! * A small fixed set of connections (`--pg-connections`), each behind a mutex, reconnecting
//!   when broken; no TLS (run it next to the database or through a TLS tunnel).
//! * **Deleting.** A deleted document keeps its `sync_docs` row as a tombstone (`deleted`):
//!   the row lock orders a deletion against concurrent appends, which then find the tombstone
//!   and write nothing. Documents reference their space (a foreign key, checked only when a
//!   document row is created), so an append racing with the deletion of its space fails
//!   instead of leaving rows behind. PostgreSQL keeps deleted rows as dead tuples until
//!   (auto)vacuum reuses their space, and in its WAL, base backups and replicas as long as the
//!   operator keeps those: the blobs are ciphertext whose key never reaches the server, but an
//!   operator who must also erase the ciphertext physically runs `VACUUM` and rotates backups.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use nexus_sync_protocol::{DocId, SpaceId};
use tokio::sync::{Mutex, MutexGuard, mpsc, oneshot};
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::sqlite::{PageBuilder, check_snapshot, join_docs};
use crate::storage::{
    Created, NewGrant, Page, Principal, RemoteEvent, Result, Storage, StorageError, access_str,
    parse_access, parse_docs,
};

/// The notification channel.
pub const CHANNEL: &str = "nexus_sync";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sync_spaces (
    space TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sync_grants (
    space TEXT NOT NULL REFERENCES sync_spaces (space),
    id TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    access TEXT NOT NULL,
    docs TEXT NOT NULL,
    PRIMARY KEY (space, id),
    UNIQUE (space, token_hash)
);
CREATE TABLE IF NOT EXISTS sync_docs (
    space TEXT NOT NULL,
    doc TEXT NOT NULL,
    head BIGINT NOT NULL,
    snap_covers BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (space, doc)
);
CREATE TABLE IF NOT EXISTS sync_entries (
    space TEXT NOT NULL,
    doc TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind SMALLINT NOT NULL,
    covers BIGINT,
    blob BYTEA NOT NULL,
    PRIMARY KEY (space, doc, seq)
);
ALTER TABLE sync_docs ADD COLUMN IF NOT EXISTS deleted BOOLEAN NOT NULL DEFAULT false;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'sync_docs_space_fkey') THEN
        ALTER TABLE sync_docs ADD CONSTRAINT sync_docs_space_fkey
            FOREIGN KEY (space) REFERENCES sync_spaces (space) NOT VALID;
    END IF;
END $$;
";

fn unavailable(e: impl std::fmt::Display) -> StorageError {
    StorageError::Unavailable(e.to_string())
}

fn pg(e: tokio_postgres::Error) -> StorageError {
    unavailable(e)
}

/// PostgreSQL storage.
#[derive(Debug)]
pub struct PgStorage {
    url: String,
    conns: Vec<Mutex<Option<Client>>>,
    next: AtomicUsize,
    appends: mpsc::Sender<AppendReq>,
    /// Random id of this process in notification payloads.
    origin: String,
    events: StdMutex<Option<mpsc::UnboundedReceiver<RemoteEvent>>>,
}

async fn connect(url: &str) -> Result<Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.map_err(pg)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// One append waiting for a writer.
struct AppendReq {
    space: String,
    doc: String,
    blob: Vec<u8>,
    reply: oneshot::Sender<Result<u64>>,
}

/// The append statement: one implicit transaction when run alone, one of a batch otherwise.
/// The row lock on sync_docs orders concurrent appends to a document, and the NOTIFY goes out
/// with the commit.
/// A deleted document (a tombstone row) returns no row: nothing is written.
const APPEND: &str = "WITH d AS (
        INSERT INTO sync_docs (space, doc, head) VALUES ($1, $2, 1)
        ON CONFLICT (space, doc) DO UPDATE SET head = sync_docs.head + 1
        WHERE NOT sync_docs.deleted
        RETURNING head
    ), e AS (
        INSERT INTO sync_entries (space, doc, seq, kind, covers, blob)
        SELECT $1, $2, head, 0, NULL, $3 FROM d
        RETURNING seq
    )
    SELECT seq, pg_notify($5, $4 || seq::text)::text FROM e";

/// Most appends committed together.
const MAX_BATCH: usize = 256;

/// A writer connection: takes every waiting append (up to [`MAX_BATCH`]), sorts them by
/// document (so concurrent batches lock rows in one order and cannot deadlock), runs them
/// pipelined in one transaction and commits once: group commit, one WAL flush per batch.
async fn append_writer(url: String, origin: String, rx: Arc<Mutex<mpsc::Receiver<AppendReq>>>) {
    let mut conn: Option<(Client, tokio_postgres::Statement)> = None;
    loop {
        let mut batch = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            batch
        };
        if conn.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            conn = match connect(&url).await {
                Ok(c) => match c.prepare(APPEND).await {
                    Ok(stmt) => Some((c, stmt)),
                    Err(e) => {
                        tracing::warn!(error = %e, "preparing the append statement failed");
                        None
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "append writer cannot connect");
                    None
                }
            };
            if conn.is_none() {
                fail_all(batch, unavailable("cannot connect to PostgreSQL"));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        batch.sort_by(|a, b| (&a.space, &a.doc).cmp(&(&b.space, &b.doc)));
        continue_with(&mut conn, &origin, batch).await;
    }
}

fn fail_all(batch: Vec<AppendReq>, e: StorageError) {
    for r in batch {
        let _ = r.reply.send(Err(e.clone()));
    }
}

async fn continue_with(
    conn: &mut Option<(Client, tokio_postgres::Statement)>,
    origin: &str,
    batch: Vec<AppendReq>,
) {
    if batch.is_empty() {
        return;
    }
    let Some((client, stmt)) = conn.as_mut() else {
        return fail_all(batch, unavailable("no PostgreSQL connection"));
    };
    let result = async {
        let tx = client.transaction().await.map_err(pg)?;
        let prefixes: Vec<String> = batch
            .iter()
            .map(|r| format!("{origin} e {} {} ", r.space, r.doc))
            .collect();
        let (txr, stmt) = (&tx, &*stmt);
        let rows = futures_util::future::try_join_all(batch.iter().zip(&prefixes).map(
            |(r, prefix)| async move {
                let blob: &[u8] = &r.blob;
                txr.query_opt(stmt, &[&r.space, &r.doc, &blob, prefix, &CHANNEL])
                    .await
            },
        ))
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok::<_, StorageError>(rows)
    }
    .await;
    match result {
        Ok(rows) => {
            for (r, row) in batch.into_iter().zip(rows) {
                let _ = r.reply.send(
                    row.map(|row| row.get::<_, i64>(0) as u64)
                        .ok_or(StorageError::Gone),
                );
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "append batch failed");
            fail_all(batch, e);
        }
    }
}

impl PgStorage {
    /// Connects `pool` connections for reads and transactions and `pool / 2` (at least 1)
    /// writer connections for appends, creates the tables if needed and starts listening for
    /// other processes' writes.
    pub async fn connect(url: &str, pool: usize) -> Result<Self> {
        let mut conns = Vec::new();
        for _ in 0..pool.max(1) {
            conns.push(Mutex::new(Some(connect(url).await?)));
        }
        let origin = uuid::Uuid::now_v7().simple().to_string();
        let (appends, rx) = mpsc::channel(4096);
        let rx = Arc::new(Mutex::new(rx));
        let storage = Self {
            url: url.to_owned(),
            conns,
            next: AtomicUsize::new(0),
            appends,
            origin: origin.clone(),
            events: StdMutex::new(None),
        };
        {
            let mut g = storage.conn().await?;
            let tx = client(&mut g)?.transaction().await.map_err(pg)?;
            // Two processes starting together must not race on CREATE TABLE.
            tx.execute("SELECT pg_advisory_xact_lock(7230500617)", &[])
                .await
                .map_err(pg)?;
            tx.batch_execute(SCHEMA).await.map_err(pg)?;
            tx.commit().await.map_err(pg)?;
        }
        let appends_rx = rx;
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(listen(
            storage.url.clone(),
            storage.origin.clone(),
            tx,
            ready_tx,
        ));
        // Start serving only once LISTEN is active, so no write of another process is missed.
        let _ = tokio::time::timeout(Duration::from_secs(10), ready_rx).await;
        *storage.events.lock().unwrap_or_else(|e| e.into_inner()) = Some(rx);
        for _ in 0..(pool / 2).max(1) {
            tokio::spawn(append_writer(
                storage.url.clone(),
                origin.clone(),
                appends_rx.clone(),
            ));
        }
        Ok(storage)
    }

    /// A connection of the pool (round robin), reconnected if it broke.
    async fn conn(&self) -> Result<MutexGuard<'_, Option<Client>>> {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // Prefer a free connection; else wait for the round-robin one.
        let mut guard = None;
        for i in 0..n {
            if let Ok(g) = self.conns[(start + i) % n].try_lock() {
                guard = Some(g);
                break;
            }
        }
        let mut guard = match guard {
            Some(g) => g,
            None => self.conns[start % n].lock().await,
        };
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            *guard = Some(connect(&self.url).await?);
        }
        Ok(guard)
    }

    fn notify_entry(&self, space: &str, doc: &str) -> String {
        // Same shape as the append writers' payloads.
        format!("{} e {space} {doc} ", self.origin)
    }
}

/// Gets the client out of a pool guard.
fn client<'a>(g: &'a mut MutexGuard<'_, Option<Client>>) -> Result<&'a mut Client> {
    g.as_mut()
        .ok_or_else(|| unavailable("no PostgreSQL connection"))
}

async fn listen(
    url: String,
    origin: String,
    tx: mpsc::UnboundedSender<RemoteEvent>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    loop {
        match tokio_postgres::connect(&url, NoTls).await {
            Ok((client, mut conn)) => {
                let (ntx, mut nrx) = mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                            Some(Ok(AsyncMessage::Notification(n))) => {
                                if ntx.send(n.payload().to_owned()).is_err() {
                                    return;
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "PostgreSQL listener failed");
                                return;
                            }
                            None => return,
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        tracing::info!("listening for other servers' writes");
                        match ready.take() {
                            Some(r) => {
                                let _ = r.send(());
                            }
                            // A reconnect: notifications may have been lost meanwhile.
                            None => {
                                if tx.send(RemoteEvent::Resync).is_err() {
                                    return;
                                }
                            }
                        }
                        while let Some(payload) = nrx.recv().await {
                            if let Some(ev) = parse_payload(&payload, &origin)
                                && tx.send(ev).is_err()
                            {
                                return;
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "LISTEN failed"),
                }
                driver.abort();
                drop(client);
            }
            Err(e) => tracing::warn!(error = %e, "PostgreSQL listener cannot connect"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `"{origin} e {space} {doc} {seq}"`, `"{origin} a {space}"` (tokens or grants changed) or
/// `"{origin} d {space}"` (space deleted); own notifications are skipped.
fn parse_payload(payload: &str, origin: &str) -> Option<RemoteEvent> {
    let mut parts = payload.split(' ');
    if parts.next()? == origin {
        return None;
    }
    match parts.next()? {
        "e" => Some(RemoteEvent::Entry {
            space: parts.next()?.parse().ok()?,
            doc: parts.next()?.parse().ok()?,
            seq: parts.next()?.parse().ok()?,
        }),
        "a" => Some(RemoteEvent::AuthChanged {
            space: parts.next()?.parse().ok()?,
        }),
        "d" => Some(RemoteEvent::SpaceDeleted {
            space: parts.next()?.parse().ok()?,
        }),
        _ => None,
    }
}

impl Storage for PgStorage {
    async fn create_space(&self, space: &SpaceId, token_hash: &str) -> Result<Created> {
        let mut g = self.conn().await?;
        let c = client(&mut g)?;
        let n = c
            .execute(
                "INSERT INTO sync_spaces (space, token_hash) VALUES ($1, $2)
                 ON CONFLICT (space) DO NOTHING",
                &[&space.as_str(), &token_hash],
            )
            .await
            .map_err(pg)?;
        if n == 1 {
            return Ok(Created::Created);
        }
        let row = c
            .query_one(
                "SELECT token_hash FROM sync_spaces WHERE space = $1",
                &[&space.as_str()],
            )
            .await
            .map_err(pg)?;
        if row.get::<_, &str>(0) == token_hash {
            Ok(Created::Existed)
        } else {
            Err(StorageError::Conflict(
                "the space exists with another token".into(),
            ))
        }
    }

    async fn authenticate(&self, space: &SpaceId, token_hash: &str) -> Result<Option<Principal>> {
        let mut g = self.conn().await?;
        let c = client(&mut g)?;
        let rows = c
            .query(
                "SELECT 'owner', '', '', '' FROM sync_spaces WHERE space = $1 AND token_hash = $2
                 UNION ALL
                 SELECT 'grant', id, access, docs FROM sync_grants
                 WHERE space = $1 AND token_hash = $2",
                &[&space.as_str(), &token_hash],
            )
            .await
            .map_err(pg)?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        if row.get::<_, &str>(0) == "owner" {
            return Ok(Some(Principal::Owner));
        }
        Ok(Some(Principal::Grant {
            id: row.get::<_, String>(1),
            docs: parse_docs(row.get(3), parse_access(row.get(2))?)?,
        }))
    }

    async fn append(&self, space: &SpaceId, doc: &DocId, blob: &[u8]) -> Result<u64> {
        let (reply, rx) = oneshot::channel();
        let req = AppendReq {
            space: space.to_string(),
            doc: doc.to_string(),
            blob: blob.to_vec(),
            reply,
        };
        self.appends
            .send(req)
            .await
            .map_err(|_| unavailable("the append writers stopped"))?;
        rx.await
            .map_err(|_| unavailable("the append writers stopped"))?
    }

    async fn snapshot(
        &self,
        space: &SpaceId,
        doc: &DocId,
        covers: u64,
        blob: &[u8],
    ) -> Result<u64> {
        let mut g = self.conn().await?;
        let c = client(&mut g)?;
        let tx = c.transaction().await.map_err(pg)?;
        let (s, d) = (space.as_str(), doc.as_str());
        tx.execute(
            "INSERT INTO sync_docs (space, doc, head) VALUES ($1, $2, 0)
             ON CONFLICT (space, doc) DO NOTHING",
            &[&s, &d],
        )
        .await
        .map_err(pg)?;
        let row = tx
            .query_one(
                "SELECT head, snap_covers, deleted FROM sync_docs
                 WHERE space = $1 AND doc = $2 FOR UPDATE",
                &[&s, &d],
            )
            .await
            .map_err(pg)?;
        let (head, snap) = (row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64);
        if row.get::<_, bool>(2) {
            return Err(StorageError::Gone);
        }
        check_snapshot(covers, head, snap)?;
        let seq = (head + 1) as i64;
        let covers = covers as i64;
        tx.execute(
            "UPDATE sync_docs SET head = $3, snap_covers = $4 WHERE space = $1 AND doc = $2",
            &[&s, &d, &seq, &covers],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "INSERT INTO sync_entries (space, doc, seq, kind, covers, blob)
             VALUES ($1, $2, $3, 1, $4, $5)",
            &[&s, &d, &seq, &covers, &blob],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "DELETE FROM sync_entries WHERE space = $1 AND doc = $2
             AND seq <= $3",
            &[&s, &d, &covers],
        )
        .await
        .map_err(pg)?;
        let payload = format!("{}{seq}", self.notify_entry(s, d));
        tx.execute("SELECT pg_notify($1, $2)::text", &[&CHANNEL, &payload])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(seq as u64)
    }

    async fn delete_doc(&self, space: &SpaceId, doc: &DocId) -> Result<bool> {
        let mut g = self.conn().await?;
        let c = client(&mut g)?;
        let tx = c.transaction().await.map_err(pg)?;
        let (s, d) = (space.as_str(), doc.as_str());
        tx.query_opt("SELECT 1 FROM sync_spaces WHERE space = $1", &[&s])
            .await
            .map_err(pg)?
            .ok_or(StorageError::NotFound)?;
        // The tombstone first: its row lock makes concurrent appends wait, and then find it.
        tx.execute(
            "INSERT INTO sync_docs (space, doc, head, deleted) VALUES ($1, $2, 0, true)
             ON CONFLICT (space, doc) DO UPDATE SET deleted = true",
            &[&s, &d],
        )
        .await
        .map_err(pg)?;
        let n = tx
            .execute(
                "DELETE FROM sync_entries WHERE space = $1 AND doc = $2",
                &[&s, &d],
            )
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(n > 0)
    }

    async fn delete_space(&self, space: &SpaceId) -> Result<()> {
        let mut g = self.conn().await?;
        let c = client(&mut g)?;
        let tx = c.transaction().await.map_err(pg)?;
        let s = space.as_str();
        tx.query_opt(
            "SELECT 1 FROM sync_spaces WHERE space = $1 FOR UPDATE",
            &[&s],
        )
        .await
        .map_err(pg)?
        .ok_or(StorageError::NotFound)?;
        for table in ["sync_entries", "sync_docs", "sync_grants", "sync_spaces"] {
            tx.execute(&format!("DELETE FROM {table} WHERE space = $1"), &[&s])
                .await
                .map_err(pg)?;
        }
        let payload = format!("{} d {space}", self.origin);
        tx.execute("SELECT pg_notify($1, $2)::text", &[&CHANNEL, &payload])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn entries(
        &self,
        space: &SpaceId,
        doc: &DocId,
        since: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Page> {
        use futures_util::TryStreamExt as _;
        let mut g = self.conn().await?;
        let c = client(&mut g)?;
        let since = since.min(i64::MAX as u64) as i64;
        let lim = limit.saturating_add(1).min(i64::MAX as usize) as i64;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&space.as_str(), &doc.as_str(), &since, &lim];
        let rows = c
            .query_raw(
                "SELECT seq, kind::BIGINT, covers, blob FROM sync_entries
                 WHERE space = $1 AND doc = $2 AND seq > $3 ORDER BY seq LIMIT $4",
                params,
            )
            .await
            .map_err(pg)?;
        let mut rows = std::pin::pin!(rows);
        let mut page = PageBuilder::new(limit, max_bytes);
        while let Some(r) = rows.try_next().await.map_err(pg)? {
            if !page.push(r.get(0), r.get(1), r.get(2), r.get(3)) {
                break;
            }
        }
        Ok(page.finish())
    }

    async fn heads(&self, space: &SpaceId) -> Result<BTreeMap<DocId, u64>> {
        let mut g = self.conn().await?;
        let c = client(&mut g)?;
        let rows = c
            .query(
                "SELECT doc, head FROM sync_docs WHERE space = $1 AND head > 0 AND NOT deleted",
                &[&space.as_str()],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.get::<_, &str>(0).parse().map_err(unavailable)?,
                    r.get::<_, i64>(1) as u64,
                ))
            })
            .collect()
    }

    async fn create_grant(&self, space: &SpaceId, grant: &NewGrant) -> Result<()> {
        let mut g = self.conn().await?;
        let c = client(&mut g)?;
        let tx = c.transaction().await.map_err(pg)?;
        let s = space.as_str();
        let owner = tx
            .query_opt(
                "SELECT token_hash FROM sync_spaces WHERE space = $1 FOR UPDATE",
                &[&s],
            )
            .await
            .map_err(pg)?
            .ok_or(StorageError::NotFound)?;
        if owner.get::<_, &str>(0) == grant.token_hash {
            return Err(StorageError::Conflict(
                "the grant token is the space token".into(),
            ));
        }
        let n = tx
            .execute(
                "INSERT INTO sync_grants (space, id, token_hash, access, docs)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[
                    &s,
                    &grant.id,
                    &grant.token_hash,
                    &access_str(grant.access),
                    &join_docs(&grant.docs),
                ],
            )
            .await
            .map_err(pg)?;
        if n == 0 {
            return Err(StorageError::Conflict(
                "the token or id is already another grant's".into(),
            ));
        }
        tx.commit().await.map_err(pg)
    }

    async fn delete_grant(&self, space: &SpaceId, id: &str) -> Result<()> {
        let mut g = self.conn().await?;
        let c = client(&mut g)?;
        let tx = c.transaction().await.map_err(pg)?;
        let n = tx
            .execute(
                "DELETE FROM sync_grants WHERE space = $1 AND id = $2",
                &[&space.as_str(), &id],
            )
            .await
            .map_err(pg)?;
        if n == 0 {
            return Err(StorageError::NotFound);
        }
        let payload = format!("{} a {space}", self.origin);
        tx.execute("SELECT pg_notify($1, $2)::text", &[&CHANNEL, &payload])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn rotate_token(
        &self,
        space: &SpaceId,
        new_hash: &str,
        keep_grants: Option<&[String]>,
    ) -> Result<()> {
        let mut g = self.conn().await?;
        let c = client(&mut g)?;
        let tx = c.transaction().await.map_err(pg)?;
        let s = space.as_str();
        tx.query_opt(
            "SELECT 1 FROM sync_spaces WHERE space = $1 FOR UPDATE",
            &[&s],
        )
        .await
        .map_err(pg)?
        .ok_or(StorageError::NotFound)?;
        let taken = tx
            .query_opt(
                "SELECT 1 FROM sync_grants WHERE space = $1 AND token_hash = $2",
                &[&s, &new_hash],
            )
            .await
            .map_err(pg)?;
        if taken.is_some() {
            return Err(StorageError::Conflict(
                "the new token is already a grant's".into(),
            ));
        }
        tx.execute(
            "UPDATE sync_spaces SET token_hash = $2 WHERE space = $1",
            &[&s, &new_hash],
        )
        .await
        .map_err(pg)?;
        if let Some(keep) = keep_grants {
            tx.execute(
                "DELETE FROM sync_grants WHERE space = $1 AND NOT (id = ANY($2))",
                &[&s, &keep],
            )
            .await
            .map_err(pg)?;
        }
        let payload = format!("{} a {space}", self.origin);
        tx.execute("SELECT pg_notify($1, $2)::text", &[&CHANNEL, &payload])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn health(&self) -> Result<()> {
        let mut g = self.conn().await?;
        let c = client(&mut g)?;
        c.query_one("SELECT count(*) FROM sync_spaces", &[])
            .await
            .map_err(pg)?;
        Ok(())
    }

    fn remote_events(&self) -> Option<mpsc::UnboundedReceiver<RemoteEvent>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_own_ones_are_skipped() {
        let space = SpaceId::from_bytes([1; 16]);
        let doc = DocId::from_bytes([2; 16]);
        let p = format!("other e {space} {doc} 42");
        assert_eq!(
            parse_payload(&p, "me"),
            Some(RemoteEvent::Entry {
                space: space.clone(),
                doc,
                seq: 42
            })
        );
        assert_eq!(parse_payload(&p, "other"), None);
        assert_eq!(
            parse_payload(&format!("x a {space}"), "me"),
            Some(RemoteEvent::AuthChanged {
                space: space.clone()
            })
        );
        assert_eq!(
            parse_payload(&format!("x d {space}"), "me"),
            Some(RemoteEvent::SpaceDeleted {
                space: space.clone()
            })
        );
        assert_eq!(parse_payload("x e nonsense", "me"), None);
    }
}
