//! The protocol state machine of one device in one space, without any I/O: it turns local
//! changes into [`ClientMessage`]s and [`ServerMessage`]s into decisions (which entries to
//! apply, which pushes are durable), and keeps the cursors.
//!
//! * **Cursors**: per document, every entry with a sequence number up to the cursor is in the
//!   device's document. Entries above a gap are applied (Automerge is idempotent and queues
//!   changes whose dependencies are missing) and remembered, and the cursor moves over them
//!   once the gap is filled; a gap that stays means messages were lost, and [`Session::needs_resync`]
//!   asks the driver to reconnect (the server then resends from the cursors).
//! * **Pushes** stay queued until acknowledged; after a reconnect every unacknowledged push is
//!   sent again in order (a duplicate is harmless: applying a change twice changes nothing).
//! * **Snapshots**: after `snapshot_every` entries of a document the device uploads a snapshot
//!   covering its cursor, and the server may drop what it covers.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use nexus_sync_protocol::{
    Blob, ClientMessage, DocId, Entry, ErrorCode, PROTOCOL_VERSION, ServerMessage, SpaceId, Token,
};
use serde::{Deserialize, Serialize};

/// Connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// No connection.
    Offline,
    /// Hello sent, waiting for Welcome.
    Connecting,
    /// Welcome received.
    Live,
}

/// A change waiting for its acknowledgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// The document.
    pub doc: DocId,
    /// The encrypted change.
    pub blob: Blob,
    /// The request id it was last sent with (none while not sent on this connection).
    #[serde(skip)]
    pub sent_as: Option<u64>,
}

/// What the session keeps across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionState {
    /// Highest contiguous sequence number in the device's document, per document.
    pub cursors: BTreeMap<DocId, u64>,
    /// Unacknowledged pushes, oldest first.
    pub pending: VecDeque<Pending>,
    /// Entries since the last snapshot, per document.
    pub since_snapshot: BTreeMap<DocId, u64>,
}

/// What to do with a server message.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The session is live.
    Welcome,
    /// Decrypt and apply this entry to document `doc`, then call [`Session::applied`].
    Apply {
        /// The document.
        doc: DocId,
        /// The entry.
        entry: Entry,
    },
    /// A push is durable.
    Acked {
        /// The document.
        doc: DocId,
        /// Its sequence number.
        seq: u64,
    },
    /// The server reported an error (for a request, or ending the session).
    Failed {
        /// Machine-readable kind.
        code: ErrorCode,
        /// For people.
        message: String,
        /// Whether the session ended.
        fatal: bool,
    },
}

/// Serde for `Blob` in the persisted state comes from the protocol crate.
impl Pending {
    fn new(doc: DocId, blob: Blob) -> Self {
        Self {
            doc,
            blob,
            sent_as: None,
        }
    }
}

/// The state machine. See the module documentation.
#[derive(Debug)]
pub struct Session {
    space: SpaceId,
    token: Token,
    state: SessionState,
    phase: Phase,
    next_id: u64,
    /// Sequence numbers applied above each cursor (not contiguous yet).
    above: BTreeMap<DocId, BTreeSet<u64>>,
    /// Highest sequence number the server reported, per document.
    heads: BTreeMap<DocId, u64>,
    /// Snapshot requests in flight: request id to (doc, covers).
    snapshots: BTreeMap<u64, DocId>,
    outbox: VecDeque<ClientMessage>,
    snapshot_every: u64,
    last_error: Option<String>,
}

impl Session {
    /// A session for `space` with `token`, restoring `state`.
    pub fn new(space: SpaceId, token: Token, state: SessionState, snapshot_every: u64) -> Self {
        Self {
            space,
            token,
            state,
            phase: Phase::Offline,
            next_id: 1,
            above: BTreeMap::new(),
            heads: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            outbox: VecDeque::new(),
            snapshot_every: snapshot_every.max(1),
            last_error: None,
        }
    }

    /// The state to save.
    pub fn state(&self) -> &SessionState {
        &self.state
    }

    /// The connection phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The last error the server reported, if any.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Records an error of the device (e.g. a blob that could not be decrypted).
    pub fn set_error(&mut self, error: String) {
        self.last_error = Some(error);
    }

    /// A transport connected: sends Hello with the cursors.
    pub fn connected(&mut self) {
        self.phase = Phase::Connecting;
        self.above.clear();
        self.snapshots.clear();
        for p in &mut self.state.pending {
            p.sent_as = None;
        }
        self.outbox.clear();
        self.outbox.push_back(ClientMessage::Hello {
            protocol: PROTOCOL_VERSION,
            space: self.space.clone(),
            token: self.token.clone(),
            cursors: self.state.cursors.clone(),
        });
    }

    /// The transport is gone: nothing in flight counts any more.
    pub fn disconnected(&mut self) {
        self.phase = Phase::Offline;
        self.above.clear();
        self.snapshots.clear();
        self.outbox.clear();
        for p in &mut self.state.pending {
            p.sent_as = None;
        }
    }

    fn send_pending(&mut self) {
        if self.phase != Phase::Live {
            return;
        }
        for p in &mut self.state.pending {
            if p.sent_as.is_none() {
                let id = self.next_id;
                self.next_id += 1;
                p.sent_as = Some(id);
                self.outbox.push_back(ClientMessage::Push {
                    id,
                    doc: p.doc.clone(),
                    blob: p.blob.clone(),
                });
            }
        }
    }

    /// Queues an encrypted change of `doc` (sent now if live, else after the next Welcome).
    pub fn push(&mut self, doc: DocId, blob: Blob) {
        self.state.pending.push_back(Pending::new(doc, blob));
        self.send_pending();
    }

    /// Messages to send, in order.
    pub fn outgoing(&mut self) -> Vec<ClientMessage> {
        self.outbox.drain(..).collect()
    }

    fn cursor(&self, doc: &DocId) -> u64 {
        self.state.cursors.get(doc).copied().unwrap_or(0)
    }

    /// Whether the device already has entry `seq` of `doc`.
    pub fn has(&self, doc: &DocId, seq: u64) -> bool {
        seq <= self.cursor(doc) || self.above.get(doc).is_some_and(|s| s.contains(&seq))
    }

    fn mark(&mut self, doc: &DocId, seq: u64, covers: Option<u64>) {
        let mut cursor = self.cursor(doc);
        if let Some(covers) = covers {
            cursor = cursor.max(covers);
        }
        let above = self.above.entry(doc.clone()).or_default();
        above.insert(seq);
        while above.remove(&(cursor + 1)) {
            cursor += 1;
        }
        above.retain(|&s| s > cursor);
        self.state.cursors.insert(doc.clone(), cursor);
        let head = self.heads.entry(doc.clone()).or_default();
        *head = (*head).max(seq);
        *self.state.since_snapshot.entry(doc.clone()).or_default() += 1;
    }

    /// Entry `seq` of `doc` is in the device's document now.
    pub fn applied(&mut self, doc: &DocId, entry: &Entry) {
        self.mark(doc, entry.seq, entry.covers);
    }

    /// Interprets a server message.
    pub fn receive(&mut self, message: ServerMessage) -> Vec<Event> {
        match message {
            ServerMessage::Welcome { heads, .. } => {
                self.phase = Phase::Live;
                self.heads = heads;
                self.last_error = None;
                self.send_pending();
                vec![Event::Welcome]
            }
            ServerMessage::Entries { doc, entries } => {
                let mut events = Vec::new();
                for entry in entries {
                    let head = self.heads.entry(doc.clone()).or_default();
                    *head = (*head).max(entry.seq);
                    if !self.has(&doc, entry.seq) {
                        events.push(Event::Apply {
                            doc: doc.clone(),
                            entry,
                        });
                    }
                }
                events
            }
            ServerMessage::Ack { id, doc, seq } => {
                if self.snapshots.remove(&id).is_some() {
                    // A snapshot is in the log under `seq`; the device has everything in it.
                    if !self.has(&doc, seq) {
                        self.mark(&doc, seq, None);
                    }
                    self.state.since_snapshot.insert(doc, 0);
                    return Vec::new();
                }
                let Some(pos) = self
                    .state
                    .pending
                    .iter()
                    .position(|p| p.sent_as == Some(id))
                else {
                    return Vec::new();
                };
                self.state.pending.remove(pos);
                self.mark(&doc, seq, None);
                vec![Event::Acked { doc, seq }]
            }
            ServerMessage::Error { id: Some(id), .. } if self.snapshots.remove(&id).is_some() => {
                // A refused snapshot (another device's covers more, or over a limit) is only a
                // missed compaction: the entries stay, a later snapshot tries again.
                Vec::new()
            }
            ServerMessage::Error { id, code, message } => {
                self.last_error = Some(format!("{message} ({code:?})"));
                match id {
                    None => {
                        self.disconnected();
                        vec![Event::Failed {
                            code,
                            message,
                            fatal: true,
                        }]
                    }
                    Some(id) => {
                        self.snapshots.remove(&id);
                        if let Some(pos) = self
                            .state
                            .pending
                            .iter()
                            .position(|p| p.sent_as == Some(id))
                        {
                            match code {
                                // Never accepted as it is: drop it (the data stays in the
                                // device's documents and travels in its next snapshot).
                                ErrorCode::TooLarge | ErrorCode::BadRequest => {
                                    self.state.pending.remove(pos);
                                }
                                // Forbidden (a read-only grant): keep it local.
                                ErrorCode::Forbidden => {
                                    self.state.pending.remove(pos);
                                }
                                // Retried after the next reconnect.
                                _ => self.state.pending[pos].sent_as = None,
                            }
                        }
                        vec![Event::Failed {
                            code,
                            message,
                            fatal: false,
                        }]
                    }
                }
            }
            ServerMessage::Pong { .. } => Vec::new(),
        }
    }

    /// Documents due for a snapshot: enough entries since the last one, no gap below the
    /// cursor, nothing of theirs in flight.
    pub fn snapshots_due(&self) -> Vec<DocId> {
        if self.phase != Phase::Live {
            return Vec::new();
        }
        self.state
            .since_snapshot
            .iter()
            .filter(|(doc, n)| {
                **n >= self.snapshot_every
                    && self.above.get(*doc).is_none_or(BTreeSet::is_empty)
                    && !self.state.pending.iter().any(|p| &p.doc == *doc)
                    && !self.snapshots.values().any(|d| d == *doc)
            })
            .map(|(doc, _)| doc.clone())
            .collect()
    }

    /// Makes a snapshot of `doc` due (a change too large to push travels in one).
    pub fn force_snapshot(&mut self, doc: &DocId) {
        self.state
            .since_snapshot
            .insert(doc.clone(), self.snapshot_every);
    }

    /// Sends a snapshot of `doc` covering the current cursor.
    pub fn snapshot(&mut self, doc: DocId, blob: Blob) {
        let id = self.next_id;
        self.next_id += 1;
        let covers = self.cursor(&doc);
        self.state.since_snapshot.insert(doc.clone(), 0);
        self.snapshots.insert(id, doc.clone());
        self.outbox.push_back(ClientMessage::Snapshot {
            id,
            doc,
            covers,
            blob,
        });
    }

    /// A gap in some document's entries: messages were lost, reconnect to fetch them again.
    pub fn needs_resync(&self) -> bool {
        self.above.values().any(|s| !s.is_empty())
    }

    /// Live, nothing queued, and every document the server reported is at its head.
    pub fn caught_up(&self) -> bool {
        self.phase == Phase::Live
            && self.state.pending.is_empty()
            && self.snapshots.is_empty()
            && self
                .heads
                .iter()
                .all(|(doc, head)| self.cursor(doc) >= *head)
    }

    /// Uses `token` from now on (a key rotation); the next Hello carries it.
    pub fn set_token(&mut self, token: Token) {
        self.token = token;
    }

    /// Re-encrypts every unacknowledged push with `reseal` (a key rotation: what was queued
    /// under the old key goes out under the new one). A push `reseal` cannot handle is kept.
    pub fn reseal_pending(&mut self, mut reseal: impl FnMut(&DocId, &Blob) -> Option<Blob>) {
        for p in &mut self.state.pending {
            if let Some(blob) = reseal(&p.doc, &p.blob) {
                p.blob = blob;
            }
        }
    }

    /// Unacknowledged pushes.
    pub fn pending(&self) -> usize {
        self.state.pending.len()
    }

    /// Highest sequence numbers the server reported.
    pub fn heads(&self) -> &BTreeMap<DocId, u64> {
        &self.heads
    }
}
