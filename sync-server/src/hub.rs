//! Fan-out: one broadcast channel per space with live sessions.
//!
//! Events only say *that* something changed; sessions keep a per-document cursor of what they
//! delivered and fetch from storage whatever lies between, so a missed, duplicated or
//! reordered event can never create a gap or a duplicate on the wire. Local events carry the
//! committed entry so the common case (the next entry after the cursor) needs no read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nexus_sync_protocol::{DocId, Entry, SpaceId};
use tokio::sync::broadcast;

/// Events of one space.
#[derive(Debug, Clone)]
pub enum Event {
    /// An entry is committed.
    Entry {
        /// Document.
        doc: DocId,
        /// Its sequence number.
        seq: u64,
        /// The entry when it was written by this process.
        entry: Option<Arc<Entry>>,
        /// When this process received the write (relay latency).
        at: Option<Instant>,
    },
    /// Tokens or grants changed: re-check the session's token.
    AuthChanged,
    /// The space was deleted: its sessions end.
    SpaceDeleted,
    /// Events may have been lost: re-read heads.
    Resync,
}

/// Capacity of a space's channel; a session that falls further behind resyncs from storage.
const CAPACITY: usize = 512;

/// Largest blob carried inside an event. A broadcast channel keeps its last [`CAPACITY`]
/// values until they are overwritten, so large blobs (snapshots) are not kept there: sessions
/// read them from storage.
pub const INLINE_MAX_BYTES: usize = 16 * 1024;

/// Broadcast channels per space.
#[derive(Debug, Default)]
pub struct Hub {
    spaces: Mutex<HashMap<SpaceId, broadcast::Sender<Event>>>,
}

impl Hub {
    /// Subscribes to a space's events.
    pub fn subscribe(&self, space: &SpaceId) -> broadcast::Receiver<Event> {
        let mut spaces = self.spaces.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = spaces.get(space) {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(CAPACITY);
        spaces.insert(space.clone(), tx);
        rx
    }

    /// Sends an event to the sessions of a space (none listening: nothing to do).
    pub fn publish(&self, space: &SpaceId, event: Event) {
        let mut spaces = self.spaces.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = spaces.get(space)
            && tx.send(event).is_err()
        {
            // Every receiver is gone: forget the space.
            spaces.remove(space);
        }
    }

    /// Forgets a space's channel (and the entries it holds) once no session listens.
    pub fn release(&self, space: &SpaceId) {
        let mut spaces = self.spaces.lock().unwrap_or_else(|e| e.into_inner());
        if spaces.get(space).is_some_and(|tx| tx.receiver_count() == 0) {
            spaces.remove(space);
        }
    }

    /// Sends an event to every space.
    pub fn publish_all(&self, event: Event) {
        let spaces = self.spaces.lock().unwrap_or_else(|e| e.into_inner());
        for tx in spaces.values() {
            let _ = tx.send(event.clone());
        }
    }
}
