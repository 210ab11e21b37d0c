//! One WebSocket session: Hello, Welcome, the backlog, then live entries, pushes and acks.
//!
//! Per document the session keeps `delivered`, the highest sequence number it has sent. It
//! subscribes to the space's events *before* reading the heads, so nothing committed in
//! between is missed, and it sends an entry only when it directly follows `delivered`
//! (otherwise it reads the gap from storage). Every subscriber gets every entry of its
//! readable documents, its own pushes included, so per document the `Entries` stream is
//! gap-free and in order and a device's cursor is simply the last sequence number received.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use futures_util::SinkExt as _;
use nexus_sync_protocol::{
    ClientMessage, DocId, Entry, ErrorCode, MAX_ENTRIES_PER_MESSAGE, PROTOCOL_VERSION,
    ServerMessage, SpaceId, token_hash,
};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::hub::Event;
use crate::limits::Bucket;
use crate::server::{ApiError, App, PAGE_BYTES};
use crate::storage::{Principal, Storage};

/// How long a client may take to send Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that does not take a frame for this long is dropped.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Most hub events handled before flushing to the socket.
const MAX_EVENTS_PER_WAKE: usize = 256;

/// Live entries waiting to be sent, per document (already counted in `delivered`).
#[derive(Default)]
struct Pending {
    entries: Vec<Entry>,
    bytes: usize,
    received_at: Vec<Instant>,
}

struct ConnGuard<S: Storage>(Arc<App<S>>);

impl<S: Storage> Drop for ConnGuard<S> {
    fn drop(&mut self) {
        self.0.metrics.connections.fetch_sub(1, Relaxed);
    }
}

/// Why a session ends.
struct Closed;

struct Session<S: Storage> {
    app: Arc<App<S>>,
    socket: WebSocket,
    space: SpaceId,
    hash: String,
    principal: Principal,
    delivered: HashMap<DocId, u64>,
    pending: HashMap<DocId, Pending>,
    frames: Bucket,
}

/// Runs a session to its end.
pub async fn run<S: Storage>(app: Arc<App<S>>, mut socket: WebSocket) {
    app.metrics.connections.fetch_add(1, Relaxed);
    app.metrics.connections_total.fetch_add(1, Relaxed);
    let _guard = ConnGuard(app.clone());

    let first = match tokio::time::timeout(HELLO_TIMEOUT, socket.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => t,
        Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return,
        Ok(Some(Ok(_))) => {
            let e = ApiError::new(
                ErrorCode::BadRequest,
                "the first frame must be a text hello",
            );
            return fail(&app, socket, e).await;
        }
        Err(_) => {
            let e = ApiError::new(ErrorCode::BadRequest, "no hello in time");
            return fail(&app, socket, e).await;
        }
    };
    let (space, token, cursors) = match ClientMessage::parse(first.as_str()) {
        Ok(ClientMessage::Hello {
            protocol,
            space,
            token,
            cursors,
        }) => {
            if protocol != PROTOCOL_VERSION {
                let e = ApiError::new(
                    ErrorCode::BadRequest,
                    format!("protocol {protocol} is not supported (server: {PROTOCOL_VERSION})"),
                );
                return fail(&app, socket, e).await;
            }
            (space, token, cursors)
        }
        Ok(_) => {
            let e = ApiError::new(ErrorCode::BadRequest, "the first frame must be hello");
            return fail(&app, socket, e).await;
        }
        Err(e) => {
            return fail(
                &app,
                socket,
                ApiError::new(ErrorCode::BadRequest, e.to_string()),
            )
            .await;
        }
    };
    let hash = token_hash(&token);
    drop(token);
    let principal = match app.storage.authenticate(&space, &hash).await {
        Ok(Some(p)) => p,
        Ok(None) => return fail(&app, socket, ApiError::unauthorized()).await,
        Err(e) => return fail(&app, socket, e.into()).await,
    };
    // Subscribe before reading heads: whatever commits from now on arrives as an event.
    let mut events = app.hub.subscribe(&space);
    let mut heads = match app.storage.heads(&space).await {
        Ok(h) => h,
        Err(e) => return fail(&app, socket, e.into()).await,
    };
    heads.retain(|d, _| principal.can_read(d));
    tracing::info!(%space, grant = matches!(principal, Principal::Grant { .. }), docs = heads.len(), "session started");
    let frames = Bucket::full(app.limits.conn_burst);
    let mut s = Session {
        app,
        socket,
        space,
        hash,
        principal,
        delivered: HashMap::new(),
        pending: HashMap::new(),
        frames,
    };
    let welcome = ServerMessage::Welcome {
        protocol: PROTOCOL_VERSION,
        heads: heads.clone(),
        grants: s.principal.grants(),
    };
    if s.send(&welcome).await.is_err() {
        return;
    }
    for (doc, head) in heads {
        let since = cursors.get(&doc).copied().unwrap_or(0).min(head);
        s.delivered.insert(doc.clone(), since);
        if head > since && s.catch_up(&doc, None).await.is_err() {
            return;
        }
    }
    let _ = s.run_loop(&mut events).await;
    drop(events);
    s.app.hub.release(&s.space);
    tracing::info!(space = %s.space, "session ended");
}

async fn fail<S: Storage>(app: &App<S>, mut socket: WebSocket, e: ApiError) {
    app.metrics.error(e.code);
    let msg = ServerMessage::Error {
        id: None,
        code: e.code,
        message: e.message,
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, async {
        let _ = socket.send(Message::Text(msg.to_frame().into())).await;
        let _ = socket.send(Message::Close(None)).await;
    })
    .await;
}

impl<S: Storage> Session<S> {
    async fn run_loop(
        &mut self,
        events: &mut tokio::sync::broadcast::Receiver<Event>,
    ) -> Result<(), Closed> {
        loop {
            tokio::select! {
                msg = self.socket.recv() => match msg {
                    Some(Ok(Message::Text(t))) => self.on_frame(t.as_str()).await?,
                    Some(Ok(Message::Binary(_))) => {
                        return self.close(ApiError::new(ErrorCode::BadRequest, "binary frames are not part of the protocol")).await;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => return Ok(()),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "websocket error");
                        return Err(Closed);
                    }
                },
                ev = events.recv() => {
                    // Take every event that is already waiting, so a burst goes out as one
                    // Entries message per document and one flush.
                    let mut ev = ev;
                    for _ in 0..MAX_EVENTS_PER_WAKE {
                        match ev {
                            Ok(Event::Entry { doc, seq, entry, at }) => {
                                self.on_entry(doc, seq, entry, at).await?
                            }
                            Ok(Event::AuthChanged) => {
                                self.flush_pending().await?;
                                self.recheck().await?
                            }
                            Ok(Event::SpaceDeleted) => {
                                self.flush_pending().await?;
                                tracing::info!(space = %self.space, "session closed: space deleted");
                                return self
                                    .close(ApiError::new(ErrorCode::NotFound, "the space was deleted"))
                                    .await;
                            }
                            Ok(Event::Resync) | Err(RecvError::Lagged(_)) => {
                                self.flush_pending().await?;
                                self.resync().await?
                            }
                            Err(RecvError::Closed) => return Err(Closed),
                        }
                        ev = match events.try_recv() {
                            Ok(e) => Ok(e),
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                            Err(TryRecvError::Closed) => Err(RecvError::Closed),
                        };
                    }
                    self.flush_pending().await?;
                }
            }
        }
    }

    async fn send(&mut self, msg: &ServerMessage) -> Result<(), Closed> {
        let frame = msg.to_frame();
        let len = frame.len();
        match tokio::time::timeout(SEND_TIMEOUT, self.socket.send(Message::Text(frame.into())))
            .await
        {
            Ok(Ok(())) => {
                self.app.metrics.bytes_out.fetch_add(len as u64, Relaxed);
                Ok(())
            }
            _ => Err(Closed),
        }
    }

    async fn error(&mut self, id: u64, e: ApiError) -> Result<(), Closed> {
        self.app.metrics.error(e.code);
        self.send(&ServerMessage::Error {
            id: Some(id),
            code: e.code,
            message: e.message,
        })
        .await
    }

    /// Sends an id-less error and ends the session.
    async fn close(&mut self, e: ApiError) -> Result<(), Closed> {
        self.app.metrics.error(e.code);
        let _ = self
            .send(&ServerMessage::Error {
                id: None,
                code: e.code,
                message: e.message,
            })
            .await;
        let _ = tokio::time::timeout(SEND_TIMEOUT, self.socket.send(Message::Close(None))).await;
        Err(Closed)
    }

    async fn on_frame(&mut self, frame: &str) -> Result<(), Closed> {
        // Parse without the blob size check, so a too large blob is answered with its id.
        let msg: ClientMessage = match serde_json::from_str(frame) {
            Ok(m) => m,
            Err(e) => {
                return self
                    .close(ApiError::new(
                        ErrorCode::BadRequest,
                        format!("malformed message: {e}"),
                    ))
                    .await;
            }
        };
        let id = match &msg {
            ClientMessage::Push { id, .. }
            | ClientMessage::Snapshot { id, .. }
            | ClientMessage::Delete { id, .. }
            | ClientMessage::Ping { id } => *id,
            ClientMessage::Hello { .. } => {
                return self
                    .close(ApiError::new(
                        ErrorCode::BadRequest,
                        "hello may only be the first frame",
                    ))
                    .await;
            }
        };
        let limits = self.app.limits;
        if !self.frames.take(1.0, limits.conn_rate, limits.conn_burst) {
            return self
                .error(
                    id,
                    ApiError::new(
                        ErrorCode::RateLimited,
                        "too many frames on this connection; retry later",
                    ),
                )
                .await;
        }
        let (doc, covers, blob) = match msg {
            ClientMessage::Ping { id } => return self.send(&ServerMessage::Pong { id }).await,
            ClientMessage::Delete { doc, .. } => {
                let app = self.app.clone();
                return match app
                    .delete_doc(&self.space, &self.principal, &self.hash, &doc)
                    .await
                {
                    Ok(()) => {
                        self.delivered.remove(&doc);
                        self.pending.remove(&doc);
                        self.send(&ServerMessage::Deleted { id, doc }).await
                    }
                    Err(e) => self.error(id, e).await,
                };
            }
            ClientMessage::Push { doc, blob, .. } => (doc, None, blob),
            ClientMessage::Snapshot {
                doc, covers, blob, ..
            } => (doc, Some(covers), blob),
            ClientMessage::Hello { .. } => return Err(Closed),
        };
        let app = self.app.clone();
        match app
            .push(&self.space, &self.principal, &self.hash, &doc, covers, blob)
            .await
        {
            Ok(seq) => self.send(&ServerMessage::Ack { id, doc, seq }).await,
            Err(e) => self.error(id, e).await,
        }
    }

    async fn on_entry(
        &mut self,
        doc: DocId,
        seq: u64,
        entry: Option<Arc<Entry>>,
        at: Option<Instant>,
    ) -> Result<(), Closed> {
        if !self.principal.can_read(&doc) {
            return Ok(());
        }
        let delivered = self.delivered.get(&doc).copied().unwrap_or(0);
        if seq <= delivered {
            return Ok(());
        }
        match entry {
            Some(entry) if seq == delivered + 1 => {
                let full = self.pending.get(&doc).is_some_and(|p| {
                    p.entries.len() >= MAX_ENTRIES_PER_MESSAGE
                        || p.bytes + entry.blob.0.len() > PAGE_BYTES
                });
                if full {
                    self.flush_doc(&doc).await?;
                }
                let p = self.pending.entry(doc.clone()).or_default();
                p.bytes += entry.blob.0.len();
                p.entries.push(Entry::clone(&entry));
                p.received_at.extend(at);
                self.delivered.insert(doc, seq);
                Ok(())
            }
            _ => self.catch_up(&doc, at).await,
        }
    }

    fn pending_message(&mut self, doc: &DocId) -> Option<(ServerMessage, Pending)> {
        let mut p = self.pending.remove(doc)?;
        let entries = std::mem::take(&mut p.entries);
        Some((
            ServerMessage::Entries {
                doc: doc.clone(),
                entries,
            },
            p,
        ))
    }

    fn count_sent(&self, n: usize, p: &Pending) {
        self.app.metrics.entries_out.fetch_add(n as u64, Relaxed);
        for at in &p.received_at {
            self.app.metrics.relay(at.elapsed());
        }
    }

    /// Sends the waiting live entries of one document.
    async fn flush_doc(&mut self, doc: &DocId) -> Result<(), Closed> {
        if let Some((msg, p)) = self.pending_message(doc) {
            let n = match &msg {
                ServerMessage::Entries { entries, .. } => entries.len(),
                _ => 0,
            };
            self.send(&msg).await?;
            self.count_sent(n, &p);
        }
        Ok(())
    }

    /// Sends every waiting live entry, one message per document, with one flush.
    async fn flush_pending(&mut self) -> Result<(), Closed> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let docs: Vec<DocId> = self.pending.keys().cloned().collect();
        let mut sent = Vec::new();
        let mut bytes = 0;
        let mut frames = Vec::new();
        for doc in docs {
            if let Some((msg, p)) = self.pending_message(&doc) {
                let n = match &msg {
                    ServerMessage::Entries { entries, .. } => entries.len(),
                    _ => 0,
                };
                let frame = msg.to_frame();
                bytes += frame.len();
                frames.push(frame);
                sent.push((n, p));
            }
        }
        let socket = &mut self.socket;
        let result = tokio::time::timeout(SEND_TIMEOUT, async {
            for frame in frames {
                socket.feed(Message::Text(frame.into())).await?;
            }
            socket.flush().await
        })
        .await;
        match result {
            Ok(Ok(())) => {
                self.app.metrics.bytes_out.fetch_add(bytes as u64, Relaxed);
                for (n, p) in &sent {
                    self.count_sent(*n, p);
                }
                Ok(())
            }
            _ => Err(Closed),
        }
    }

    /// Sends everything after `delivered` from storage.
    async fn catch_up(&mut self, doc: &DocId, at: Option<Instant>) -> Result<(), Closed> {
        // What is waiting comes first: it precedes `delivered`.
        self.flush_doc(doc).await?;
        loop {
            let since = self.delivered.get(doc).copied().unwrap_or(0);
            let page = match self
                .app
                .storage
                .entries(&self.space, doc, since, MAX_ENTRIES_PER_MESSAGE, PAGE_BYTES)
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    // Keep the session: the next event or resync retries.
                    tracing::warn!(error = %e, "reading entries failed");
                    return Ok(());
                }
            };
            let Some(last) = page.entries.last().map(|e| e.seq) else {
                return Ok(());
            };
            let n = page.entries.len() as u64;
            self.send(&ServerMessage::Entries {
                doc: doc.clone(),
                entries: page.entries,
            })
            .await?;
            self.app.metrics.entries_out.fetch_add(n, Relaxed);
            self.delivered.insert(doc.clone(), last);
            if !page.more {
                if let Some(at) = at {
                    self.app.metrics.relay(at.elapsed());
                }
                return Ok(());
            }
        }
    }

    async fn resync(&mut self) -> Result<(), Closed> {
        let heads = match self.app.storage.heads(&self.space).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "reading heads failed");
                return Ok(());
            }
        };
        for (doc, head) in heads {
            if self.principal.can_read(&doc)
                && head > self.delivered.get(&doc).copied().unwrap_or(0)
            {
                self.catch_up(&doc, None).await?;
            }
        }
        Ok(())
    }

    /// Tokens or grants changed: end the session if its token no longer works.
    async fn recheck(&mut self) -> Result<(), Closed> {
        match self.app.storage.authenticate(&self.space, &self.hash).await {
            Ok(Some(p)) => {
                self.principal = p;
                Ok(())
            }
            Ok(None) => {
                tracing::info!(space = %self.space, "session closed: token revoked");
                self.close(ApiError::new(
                    ErrorCode::Unauthorized,
                    "the token was revoked",
                ))
                .await
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-checking a token failed");
                Ok(())
            }
        }
    }
}
