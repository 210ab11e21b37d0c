//! An in-memory relay with the sync server's semantics, for tests without sockets: spaces with
//! a token hash, per-document logs with sequence numbers from 1, acknowledgements, fan-out of
//! new entries to the space's other connections, the Hello backlog (entries after the cursor,
//! or the latest snapshot and what follows it), compaction by snapshots, and deletion:
//! a deleted document leaves a tombstone (writes to it are `gone`), a deleted space ends its
//! connections.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use nexus_sync_protocol::{
    BlobKind, ClientMessage, DocId, Entry, ErrorCode, MAX_ENTRIES_PER_MESSAGE, PROTOCOL_VERSION,
    ServerMessage, SpaceId, Token, token_hash,
};

/// A connection to the relay.
pub type ConnId = u64;

#[derive(Debug, Default)]
struct Space {
    token_hash: String,
    docs: BTreeMap<DocId, Vec<Entry>>,
    heads: BTreeMap<DocId, u64>,
    /// Deleted documents (tombstones).
    deleted: BTreeSet<DocId>,
}

#[derive(Debug, Default)]
struct Conn {
    space: Option<SpaceId>,
    outbox: VecDeque<ServerMessage>,
}

/// The relay. See the module documentation.
#[derive(Debug, Default)]
pub struct Relay {
    spaces: BTreeMap<SpaceId, Space>,
    conns: BTreeMap<ConnId, Conn>,
    next: ConnId,
    /// Whether a device's own pushes are sent back to it as entries too.
    pub echo: bool,
}

impl Relay {
    /// An empty relay.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a space with its token (`POST /v1/spaces`); false if it exists with another.
    pub fn create_space(&mut self, space: &SpaceId, token: &Token) -> bool {
        let hash = token_hash(token);
        let entry = self.spaces.entry(space.clone()).or_insert_with(|| Space {
            token_hash: hash.clone(),
            ..Space::default()
        });
        entry.token_hash == hash
    }

    /// A new connection.
    pub fn connect(&mut self) -> ConnId {
        self.next += 1;
        self.conns.insert(self.next, Conn::default());
        self.next
    }

    /// Closes a connection.
    pub fn disconnect(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
    }

    /// Messages for a connection, in order.
    pub fn take(&mut self, conn: ConnId) -> Vec<ServerMessage> {
        self.conns
            .get_mut(&conn)
            .map(|c| c.outbox.drain(..).collect())
            .unwrap_or_default()
    }

    /// Stored entries of a document (for tests of compaction).
    pub fn entries(&self, space: &SpaceId, doc: &DocId) -> Vec<Entry> {
        self.spaces
            .get(space)
            .and_then(|s| s.docs.get(doc))
            .cloned()
            .unwrap_or_default()
    }

    /// The documents of a space that have entries (deleted ones are not among them).
    pub fn docs(&self, space: &SpaceId) -> Vec<DocId> {
        self.spaces
            .get(space)
            .map(|s| s.docs.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether a space is registered.
    pub fn has_space(&self, space: &SpaceId) -> bool {
        self.spaces.contains_key(space)
    }

    /// Deletes a space with everything in it (`DELETE /v1/spaces/{space}`); its connections get
    /// a `not_found` error and are closed. False if there was no such space.
    pub fn delete_space(&mut self, space: &SpaceId) -> bool {
        if self.spaces.remove(space).is_none() {
            return false;
        }
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.space.as_ref() == Some(space))
            .map(|(id, _)| *id)
            .collect();
        for conn in conns {
            self.fail(conn, None, ErrorCode::NotFound, "the space was deleted");
        }
        true
    }

    /// Stored entries of every document of a space.
    pub fn entry_count(&self, space: &SpaceId) -> usize {
        self.spaces
            .get(space)
            .map_or(0, |s| s.docs.values().map(Vec::len).sum())
    }

    fn send(&mut self, conn: ConnId, message: ServerMessage) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.outbox.push_back(message);
        }
    }

    fn fail(&mut self, conn: ConnId, id: Option<u64>, code: ErrorCode, message: &str) {
        self.send(
            conn,
            ServerMessage::Error {
                id,
                code,
                message: message.to_owned(),
            },
        );
        if id.is_none()
            && let Some(c) = self.conns.get_mut(&conn)
        {
            c.space = None;
        }
    }

    fn backlog(space: &Space, doc: &DocId, cursor: u64) -> Vec<Entry> {
        let log = space.docs.get(doc).map(Vec::as_slice).unwrap_or_default();
        let snapshot = log
            .iter()
            .rev()
            .find(|e| e.kind == BlobKind::Snapshot)
            .filter(|s| s.covers.unwrap_or(0) > cursor);
        match snapshot {
            Some(s) => {
                let covers = s.covers.unwrap_or(0);
                let mut out = vec![s.clone()];
                out.extend(
                    log.iter()
                        .filter(|e| e.seq > covers && e.seq != s.seq)
                        .cloned(),
                );
                out
            }
            None => log.iter().filter(|e| e.seq > cursor).cloned().collect(),
        }
    }

    fn append(&mut self, conn: ConnId, doc: &DocId, mut entry: Entry) -> u64 {
        let Some(space_id) = self.conns.get(&conn).and_then(|c| c.space.clone()) else {
            return 0;
        };
        let Some(space) = self.spaces.get_mut(&space_id) else {
            return 0;
        };
        let head = space.heads.entry(doc.clone()).or_default();
        *head += 1;
        entry.seq = *head;
        let log = space.docs.entry(doc.clone()).or_default();
        if let Some(covers) = entry.covers {
            // Compaction: the snapshot replaces what it covers. An older snapshot above
            // `covers` stays: dropping it would leave a hole in the sequence numbers.
            log.retain(|e| e.seq > covers);
        }
        log.push(entry.clone());
        let seq = entry.seq;
        let others: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(id, c)| (self.echo || **id != conn) && c.space.as_ref() == Some(&space_id))
            .map(|(id, _)| *id)
            .collect();
        for other in others {
            self.send(
                other,
                ServerMessage::Entries {
                    doc: doc.clone(),
                    entries: vec![entry.clone()],
                },
            );
        }
        seq
    }

    fn is_deleted(&self, space: Option<&SpaceId>, doc: &DocId) -> bool {
        space
            .and_then(|s| self.spaces.get(s))
            .is_some_and(|s| s.deleted.contains(doc))
    }

    /// Handles one message of a connection.
    pub fn handle(&mut self, conn: ConnId, message: ClientMessage) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        let live = self.conns.get(&conn).and_then(|c| c.space.clone());
        match message {
            ClientMessage::Hello {
                protocol,
                space,
                token,
                cursors,
            } => {
                if protocol != PROTOCOL_VERSION {
                    return self.fail(conn, None, ErrorCode::BadRequest, "unsupported protocol");
                }
                let Some(s) = self.spaces.get(&space) else {
                    return self.fail(conn, None, ErrorCode::Unauthorized, "unknown space");
                };
                if s.token_hash != token_hash(&token) {
                    return self.fail(conn, None, ErrorCode::Unauthorized, "wrong token");
                }
                let heads: BTreeMap<DocId, u64> = s
                    .heads
                    .iter()
                    .filter(|(d, _)| !s.deleted.contains(*d))
                    .map(|(d, h)| (d.clone(), *h))
                    .collect();
                let mut backlog = Vec::new();
                for doc in s.docs.keys() {
                    let cursor = cursors.get(doc).copied().unwrap_or(0);
                    let entries = Self::backlog(s, doc, cursor);
                    for chunk in entries.chunks(MAX_ENTRIES_PER_MESSAGE) {
                        backlog.push(ServerMessage::Entries {
                            doc: doc.clone(),
                            entries: chunk.to_vec(),
                        });
                    }
                }
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.space = Some(space);
                }
                self.send(
                    conn,
                    ServerMessage::Welcome {
                        protocol: PROTOCOL_VERSION,
                        heads,
                        grants: None,
                    },
                );
                for m in backlog {
                    self.send(conn, m);
                }
            }
            _ if live.is_none() => {
                self.fail(conn, None, ErrorCode::Unauthorized, "say hello first");
            }
            ClientMessage::Push { id, doc, .. } | ClientMessage::Snapshot { id, doc, .. }
                if self.is_deleted(live.as_ref(), &doc) =>
            {
                self.fail(conn, Some(id), ErrorCode::Gone, "the document was deleted");
            }
            ClientMessage::Delete { id, doc } => {
                if let Some(s) = live.as_ref().and_then(|s| self.spaces.get_mut(s)) {
                    s.docs.remove(&doc);
                    s.deleted.insert(doc.clone());
                }
                self.send(conn, ServerMessage::Deleted { id, doc });
            }
            ClientMessage::Push { id, doc, blob } => {
                if BlobKind::Change.check(&blob).is_err() {
                    return self.fail(conn, Some(id), ErrorCode::TooLarge, "change too large");
                }
                let entry = Entry {
                    seq: 0,
                    kind: BlobKind::Change,
                    covers: None,
                    blob,
                };
                let seq = self.append(conn, &doc, entry);
                self.send(conn, ServerMessage::Ack { id, doc, seq });
            }
            ClientMessage::Snapshot {
                id,
                doc,
                covers,
                blob,
            } => {
                let head = live
                    .as_ref()
                    .and_then(|s| self.spaces.get(s))
                    .and_then(|s| s.heads.get(&doc).copied())
                    .unwrap_or(0);
                if covers > head {
                    return self.fail(conn, Some(id), ErrorCode::BadRequest, "covers > head");
                }
                // Like the server: a snapshot never goes behind the stored one (it would drop
                // the newer snapshot and with it what only that one holds).
                let stored = live
                    .as_ref()
                    .and_then(|s| self.spaces.get(s))
                    .and_then(|s| s.docs.get(&doc))
                    .and_then(|log| log.iter().filter_map(|e| e.covers).max())
                    .unwrap_or(0);
                if covers < stored {
                    return self.fail(
                        conn,
                        Some(id),
                        ErrorCode::Conflict,
                        "a stored snapshot already covers more",
                    );
                }
                let entry = Entry {
                    seq: 0,
                    kind: BlobKind::Snapshot,
                    covers: Some(covers),
                    blob,
                };
                let seq = self.append(conn, &doc, entry);
                self.send(conn, ServerMessage::Ack { id, doc, seq });
            }
            ClientMessage::Ping { id } => self.send(conn, ServerMessage::Pong { id }),
        }
    }
}
