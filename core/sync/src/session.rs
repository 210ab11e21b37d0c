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
//! * **Generations and deletions** (forgetting, see docs/SYNC.md): the first upload of a new
//!   generation of a document is a snapshot covering nothing, and deleting a retired
//!   generation on the server is a [`ClientMessage::Delete`]. Both wait in the same ordered
//!   queue as the pushes: nothing queued after an upload is sent before it is acknowledged,
//!   and a deletion is sent only once everything before it (other deletions aside) is
//!   acknowledged, so the new generation is on the server before the old one is deleted. A
//!   retired document's cursor and queued changes are dropped and its entries ignored from
//!   then on.

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

/// What a queued request does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingKind {
    /// Push a change.
    #[default]
    Change,
    /// Upload the first snapshot of a new generation of a document (covering nothing).
    Generation,
    /// Delete a retired document on the server.
    Delete,
}

impl PendingKind {
    fn is_change(&self) -> bool {
        *self == PendingKind::Change
    }
}

/// A request waiting for its acknowledgement: a change, a generation's first snapshot or a
/// deletion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// The document.
    pub doc: DocId,
    /// What to do with it.
    #[serde(default, skip_serializing_if = "PendingKind::is_change")]
    pub kind: PendingKind,
    /// The encrypted change or snapshot (empty for a deletion).
    #[serde(default)]
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
    /// Documents this device retired (older generations): their entries are ignored and they
    /// never get a cursor again.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub retired: BTreeSet<DocId>,
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
    /// A push, upload or deletion is durable.
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
    fn new(doc: DocId, kind: PendingKind, blob: Blob) -> Self {
        Self {
            doc,
            kind,
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
        // Nothing but deletions before this item (acknowledged ones have left the queue).
        let mut clear = true;
        for p in &mut self.state.pending {
            if p.kind == PendingKind::Delete && !clear {
                break; // only once everything before it is acknowledged
            }
            if p.sent_as.is_none() {
                let id = self.next_id;
                self.next_id += 1;
                p.sent_as = Some(id);
                let doc = p.doc.clone();
                self.outbox.push_back(match p.kind {
                    PendingKind::Change => ClientMessage::Push {
                        id,
                        doc,
                        blob: p.blob.clone(),
                    },
                    PendingKind::Generation => ClientMessage::Snapshot {
                        id,
                        doc,
                        covers: 0,
                        blob: p.blob.clone(),
                    },
                    PendingKind::Delete => ClientMessage::Delete { id, doc },
                });
            }
            match p.kind {
                // What follows waits for its acknowledgement.
                PendingKind::Generation => break,
                PendingKind::Change => clear = false,
                PendingKind::Delete => {}
            }
        }
    }

    /// Queues an encrypted change of `doc` (sent now if live, else after the next Welcome).
    pub fn push(&mut self, doc: DocId, blob: Blob) {
        self.enqueue(Pending::new(doc, PendingKind::Change, blob));
    }

    fn enqueue(&mut self, p: Pending) {
        self.state.pending.push_back(p);
        self.send_pending();
    }

    /// Queues the first snapshot of a new generation `doc` (the whole document, covering
    /// nothing): kept until acknowledged, like a push.
    pub fn upload(&mut self, doc: DocId, blob: Blob) {
        self.state.retired.remove(&doc);
        self.enqueue(Pending::new(doc, PendingKind::Generation, blob));
    }

    /// Retires `doc` (an older generation): drops its cursor and queued changes, ignores its
    /// entries from now on, and queues its deletion on the server (sent once everything queued
    /// before it is acknowledged). Retiring twice does nothing.
    pub fn retire(&mut self, doc: &DocId) {
        if !self.state.retired.insert(doc.clone()) {
            return;
        }
        self.state.cursors.remove(doc);
        self.state.since_snapshot.remove(doc);
        self.above.remove(doc);
        self.heads.remove(doc);
        self.snapshots.retain(|_, d| d != doc);
        self.state.pending.retain(|p| &p.doc != doc);
        self.enqueue(Pending::new(
            doc.clone(),
            PendingKind::Delete,
            Blob::default(),
        ));
    }

    /// Whether `doc` was retired on this device.
    pub fn is_retired(&self, doc: &DocId) -> bool {
        self.state.retired.contains(doc)
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
        if self.state.retired.contains(doc) {
            return;
        }
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
            ServerMessage::Welcome { mut heads, .. } => {
                self.phase = Phase::Live;
                heads.retain(|d, _| !self.state.retired.contains(d));
                // A generation's first snapshot whose document has entries was stored before
                // its acknowledgement got lost (nothing else can write it before it: only
                // this device knows its id until it is there, and nothing of ours is sent
                // after it before its acknowledgement).
                self.state
                    .pending
                    .retain(|p| p.kind != PendingKind::Generation || !heads.contains_key(&p.doc));
                self.heads = heads;
                self.last_error = None;
                self.send_pending();
                vec![Event::Welcome]
            }
            ServerMessage::Entries { doc, .. } if self.state.retired.contains(&doc) => Vec::new(),
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
                self.send_pending();
                vec![Event::Acked { doc, seq }]
            }
            ServerMessage::Deleted { id, doc } => {
                if let Some(pos) = self
                    .state
                    .pending
                    .iter()
                    .position(|p| p.sent_as == Some(id))
                {
                    self.state.pending.remove(pos);
                    self.send_pending();
                }
                vec![Event::Acked { doc, seq: 0 }]
            }
            ServerMessage::Error { id: Some(id), .. } if self.snapshots.remove(&id).is_some() => {
                // A refused snapshot (another device's covers more, or over a limit) is only a
                // missed compaction: the entries stay, a later snapshot tries again.
                Vec::new()
            }
            ServerMessage::Error {
                id: Some(id), code, ..
            } if self.expected_refusal(id, code) => {
                // A change to a document a newer generation replaced (its content is
                // re-captured into the new one), or deleting what is already gone: done.
                self.state.pending.retain(|p| p.sent_as != Some(id));
                self.send_pending();
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
                            let drop = match code {
                                // Never accepted as it is: drop it (the data stays in the
                                // device's documents and travels in its next snapshot).
                                ErrorCode::TooLarge | ErrorCode::BadRequest => true,
                                // Forbidden (a read-only grant): keep it local.
                                ErrorCode::Forbidden => true,
                                // Retried after the next reconnect.
                                _ => false,
                            };
                            if drop {
                                self.state.pending.remove(pos);
                                self.send_pending();
                            } else {
                                self.state.pending[pos].sent_as = None;
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

    /// A refusal that only means "already done": a write to a deleted document (also one this
    /// device retired meanwhile), or deleting one that is already gone.
    fn expected_refusal(&self, id: u64, code: ErrorCode) -> bool {
        let Some(p) = self.state.pending.iter().find(|p| p.sent_as == Some(id)) else {
            return code == ErrorCode::Gone;
        };
        code == ErrorCode::Gone || (code == ErrorCode::NotFound && p.kind == PendingKind::Delete)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(n: u8) -> DocId {
        DocId::from_bytes([n; 16])
    }

    fn live(state: SessionState, heads: BTreeMap<DocId, u64>) -> Session {
        let mut s = Session::new(
            SpaceId::from_bytes([1; 16]),
            Token::from_bytes([2; 32]),
            state,
            100,
        );
        s.connected();
        assert!(matches!(
            s.outgoing().as_slice(),
            [ClientMessage::Hello { .. }]
        ));
        s.receive(ServerMessage::Welcome {
            protocol: PROTOCOL_VERSION,
            heads,
            grants: None,
        });
        s
    }

    fn ids(out: &[ClientMessage]) -> Vec<(&'static str, u64, DocId)> {
        out.iter()
            .map(|m| match m {
                ClientMessage::Push { id, doc, .. } => ("push", *id, doc.clone()),
                ClientMessage::Snapshot { id, doc, .. } => ("snapshot", *id, doc.clone()),
                ClientMessage::Delete { id, doc } => ("delete", *id, doc.clone()),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn ack(s: &mut Session, id: u64, doc: DocId, seq: u64) {
        s.receive(ServerMessage::Ack { id, doc, seq });
    }

    #[test]
    fn uploads_and_deletions_are_barriers_in_the_queue() {
        let (old, new, other) = (doc(1), doc(2), doc(3));
        let mut s = live(SessionState::default(), BTreeMap::from([(old.clone(), 5)]));
        s.push(other.clone(), Blob(vec![1]));
        s.upload(new.clone(), Blob(vec![2]));
        s.retire(&old);
        s.push(new.clone(), Blob(vec![3]));
        assert_eq!(
            s.state().cursors.get(&old),
            None,
            "a retired cursor is dropped"
        );
        // The upload goes with the push before it; nothing after it yet.
        let out = s.outgoing();
        assert_eq!(
            ids(&out),
            vec![("push", 1, other.clone()), ("snapshot", 2, new.clone())]
        );
        assert!(matches!(out[1], ClientMessage::Snapshot { covers: 0, .. }));
        // The deletion waits for everything before it, the upload included.
        ack(&mut s, 2, new.clone(), 1);
        assert!(s.outgoing().is_empty());
        ack(&mut s, 1, other.clone(), 1);
        // Then it goes, and what follows it does not wait for it.
        assert_eq!(
            ids(&s.outgoing()),
            vec![("delete", 3, old.clone()), ("push", 4, new.clone())]
        );
        ack(&mut s, 4, new.clone(), 2);
        assert_eq!(s.pending(), 1);
        s.receive(ServerMessage::Deleted {
            id: 3,
            doc: old.clone(),
        });
        assert_eq!(s.pending(), 0);
        assert!(s.caught_up(), "the retired document's head does not count");
        // Its entries are ignored from now on.
        let late = ServerMessage::Entries {
            doc: old.clone(),
            entries: vec![Entry {
                seq: 6,
                kind: nexus_sync_protocol::BlobKind::Change,
                covers: None,
                blob: Blob(vec![9]),
            }],
        };
        assert!(s.receive(late).is_empty());
        assert!(s.is_retired(&old) && !s.is_retired(&new));
    }

    #[test]
    fn an_upload_whose_ack_was_lost_is_not_sent_again_and_refusals_of_the_gone_are_quiet() {
        let (old, new) = (doc(1), doc(2));
        let mut state = SessionState::default();
        {
            let mut s = live(state.clone(), BTreeMap::new());
            s.upload(new.clone(), Blob(vec![2]));
            s.retire(&old);
            state = s.state().clone();
        }
        // Reconnected: the server has the new generation (the ack was lost).
        let mut s = live(state, BTreeMap::from([(new.clone(), 1)]));
        assert_eq!(ids(&s.outgoing()), vec![("delete", 1, old.clone())]);
        // Already deleted by another device: done, and no error.
        let events = s.receive(ServerMessage::Error {
            id: Some(1),
            code: ErrorCode::NotFound,
            message: "gone".into(),
        });
        assert!(events.is_empty() && s.last_error().is_none());
        assert_eq!(s.pending(), 0);
        // A change to a document that was deleted meanwhile: dropped quietly.
        s.push(old.clone(), Blob(vec![7]));
        let out = s.outgoing();
        let (_, id, _) = ids(&out)[0].clone();
        let events = s.receive(ServerMessage::Error {
            id: Some(id),
            code: ErrorCode::Gone,
            message: "the document was deleted".into(),
        });
        assert!(events.is_empty() && s.last_error().is_none());
        assert_eq!(s.pending(), 0);
    }
}
