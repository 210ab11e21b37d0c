//! Simulated devices around the in-memory relay.
#![allow(dead_code, clippy::unwrap_used)]

pub mod server;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use nexus_common::{CompanionId, ConversationId, JournalId, MemoryId, MessageId, Timestamp};
use nexus_store::{
    Companion, Conversation, EmotionSource, JournalEntry, MemoryItem, MemoryKind, MemoryStore,
    Message, PersonaChange, PersonaState, Role, Store,
};
use nexus_sync::relay::{ConnId, Relay};
use nexus_sync::{PairingCode, SyncClient};
use nexus_sync_protocol::{ClientMessage, ServerMessage};

pub struct Device {
    pub store: MemoryStore,
    pub client: SyncClient,
    pub conn: Option<ConnId>,
}

impl Device {
    /// The first device: creates the space and registers it with the relay.
    pub fn first(relay: &mut Relay) -> Self {
        let store = MemoryStore::new();
        let client = SyncClient::create_space(&store, "mem://relay").expect("create space");
        assert!(relay.create_space(client.keys().space(), client.keys().token()));
        Self {
            store,
            client,
            conn: None,
        }
    }

    /// A new device that joins with a pairing code.
    pub fn join(code: &str) -> Self {
        let store = MemoryStore::new();
        let code = PairingCode::parse(code).expect("code");
        let client = SyncClient::join(&store, &code).expect("join");
        Self {
            store,
            client,
            conn: None,
        }
    }

    pub fn code(&self) -> String {
        self.client.pairing_code().expect("code").to_text()
    }

    pub fn go_offline(&mut self, relay: &mut Relay) {
        if let Some(conn) = self.conn.take() {
            relay.disconnect(conn);
        }
        self.client.disconnected();
    }

    /// Restarts the app: the client is read back from the store.
    pub fn restart(&mut self, relay: &mut Relay) {
        self.go_offline(relay);
        self.client.save(&self.store).expect("save");
        self.client = SyncClient::open(&self.store)
            .expect("open")
            .expect("enabled");
    }

    fn ensure_connected(&mut self, relay: &mut Relay) -> ConnId {
        match self.conn {
            Some(conn) => conn,
            None => {
                let conn = relay.connect();
                self.conn = Some(conn);
                self.client.connected();
                conn
            }
        }
    }

    /// Captures local edits and exchanges messages with the relay until nothing moves, with
    /// each message passing through `net` (which may drop, duplicate or reorder). Returns how
    /// many messages moved.
    pub fn pump_with(
        &mut self,
        relay: &mut Relay,
        net: &mut dyn FnMut(usize) -> Vec<usize>,
    ) -> usize {
        self.client.sync_local(&self.store).expect("sync local");
        let conn = self.ensure_connected(relay);
        let mut moved = 0;
        for _ in 0..50 {
            let out: Vec<ClientMessage> = self.client.outgoing();
            moved += out.len();
            let order = net(out.len());
            for i in &order {
                relay.handle(conn, out[*i].clone());
            }
            let incoming: Vec<ServerMessage> = relay.take(conn);
            moved += incoming.len();
            let order2 = net(incoming.len());
            for i in &order2 {
                self.client
                    .handle(&self.store, incoming[*i].clone())
                    .expect("handle");
            }
            if out.is_empty() && incoming.is_empty() {
                break;
            }
        }
        self.client.save(&self.store).expect("save");
        moved
    }

    /// [`Device::pump_with`] on a reliable network.
    pub fn pump(&mut self, relay: &mut Relay) -> usize {
        self.pump_with(relay, &mut |n| (0..n).collect())
    }
}

/// Reliable delivery until every device is caught up and a whole pass moves nothing (a
/// message received may lead to new ones: merging generations pushes changes).
pub fn settle(devices: &mut [Device], relay: &mut Relay) {
    for _ in 0..30 {
        let mut moved = 0;
        for d in devices.iter_mut() {
            if d.client.needs_resync() {
                d.go_offline(relay);
            }
            moved += d.pump(relay);
        }
        if moved == 0
            && devices.iter().all(|d| {
                d.client.caught_up() && !d.client.needs_resync() && d.client.pending() == 0
            })
        {
            return;
        }
    }
}

/// Everything a store holds that sync carries, in a canonical order.
pub fn dump(store: &dyn Store) -> String {
    let mut out = String::new();
    for c in store.list_companions().unwrap() {
        writeln!(out, "{c:?}").unwrap();
        writeln!(out, "  persona {:?}", store.persona_state(c.id).unwrap()).unwrap();
        let mut history: Vec<String> = store
            .persona_history(c.id, None)
            .unwrap()
            .iter()
            .map(|h| format!("{h:?}"))
            .collect();
        history.sort();
        for h in history {
            writeln!(out, "  history {h}").unwrap();
        }
        for m in store.list_memories(c.id, true).unwrap() {
            writeln!(out, "  memory {m:?}").unwrap();
        }
        for conv in store.list_conversations(c.id).unwrap() {
            writeln!(
                out,
                "  conversation {} {:?} {:?}",
                conv.id, conv.title, conv.created_at
            )
            .unwrap();
            let mut messages = store.messages(conv.id, None).unwrap();
            messages.sort_by_key(|m| (m.created_at, m.id));
            for m in messages {
                writeln!(out, "    {m:?}").unwrap();
            }
        }
    }
    for (k, v) in store.settings().unwrap() {
        writeln!(out, "setting {k}={v}").unwrap();
    }
    // Equal times may be stored in another order on each device (the order they arrived).
    let mut journal = store
        .journal(Timestamp(i64::MIN), Timestamp(i64::MAX))
        .unwrap();
    journal.sort_by_key(|e| (e.at, e.id));
    for e in journal {
        writeln!(out, "journal {e:?}").unwrap();
    }
    out
}

#[track_caller]
pub fn assert_converged(devices: &[Device]) {
    let first = dump(&devices[0].store);
    for (i, d) in devices.iter().enumerate().skip(1) {
        let other = dump(&d.store);
        assert_eq!(first, other, "device 0 and device {i} differ");
    }
}

// --- editing helpers -------------------------------------------------------------------------

pub fn companion(store: &dyn Store, name: &str, at: i64) -> Companion {
    let c = Companion {
        id: CompanionId::new(),
        name: name.to_owned(),
        description: format!("{name} is a test companion."),
        personality: "curious".to_owned(),
        speaking_style: "short".to_owned(),
        greeting: "Hi!".to_owned(),
        card: None,
        created_at: Timestamp(at),
        updated_at: Timestamp(at),
    };
    store.create_companion(&c).unwrap();
    c
}

pub fn conversation(store: &dyn Store, companion: CompanionId, at: i64) -> Conversation {
    let c = Conversation {
        id: ConversationId::new(),
        companion_id: companion,
        title: Some("Chat".to_owned()),
        created_at: Timestamp(at),
        updated_at: Timestamp(at),
    };
    store.create_conversation(&c).unwrap();
    c
}

pub fn memory(companion: CompanionId, text: &str, at: i64) -> MemoryItem {
    MemoryItem {
        id: MemoryId::new(),
        companion_id: companion,
        text: text.to_owned(),
        kind: MemoryKind::Fact,
        subject: "subject".to_owned(),
        importance: 0.5,
        pinned: false,
        embedding: vec![0.25, -0.5, 1.0e-3],
        source_message_ids: vec![],
        created_at: Timestamp(at),
        updated_at: Timestamp(at),
        last_used_at: None,
        superseded_by: None,
    }
}

pub fn add_memory(store: &dyn Store, companion: CompanionId, text: &str, at: i64) -> MemoryItem {
    let m = memory(companion, text, at);
    store.insert_memory(&m).unwrap();
    m
}

pub fn append(store: &dyn Store, conversation: ConversationId, text: &str, at: i64) -> Message {
    let m = Message {
        id: MessageId::new(),
        conversation_id: conversation,
        role: Role::User,
        text: text.to_owned(),
        created_at: Timestamp(at),
        token_count: 3,
    };
    store.append_messages(std::slice::from_ref(&m)).unwrap();
    m
}

pub fn set_trust(store: &dyn Store, companion: CompanionId, trust: f32, at: i64) {
    let old = store.persona_state(companion).unwrap();
    let state = PersonaState {
        companion_id: companion,
        traits: BTreeMap::from([("openness".to_owned(), 0.6)]),
        locked: Default::default(),
        familiarity: 0.2,
        trust,
        exchanges: 4,
        updated_at: Timestamp(at),
    };
    let change = PersonaChange {
        companion_id: companion,
        field: "trust".to_owned(),
        old: old.map_or(0.0, |o| o.trust),
        new: trust,
        reason: "test".to_owned(),
        at: Timestamp(at),
    };
    store.save_persona_state(&state, &[change]).unwrap();
}

/// A journal reading of `source` at `at`, with every field set.
pub fn journal_entry(source: EmotionSource, at: i64, valence: f32) -> JournalEntry {
    JournalEntry {
        id: JournalId::new(),
        at: Timestamp(at),
        source,
        labels: vec![("joy".to_owned(), 0.75), ("surprise".to_owned(), 0.1 + 0.2)],
        valence,
        arousal: 0.123_456_79,
        confidence: 0.8,
        conversation_id: Some(ConversationId::new()),
        message_id: Some(MessageId::new()),
        details: serde_json::json!({"flags": {"empty": false}, "note": "ünïcödé ✓", "x": 0.1}),
    }
}

/// Adds journal entries to a device's store.
pub fn add_journal(store: &dyn Store, entries: &[JournalEntry]) {
    store.add_journal_entries(entries).unwrap();
}

/// The whole journal of a store, oldest first.
pub fn journal(store: &dyn Store) -> Vec<JournalEntry> {
    store
        .journal(Timestamp(i64::MIN), Timestamp(i64::MAX))
        .unwrap()
}

// --- what a device or the server still knows ---------------------------------------------------

/// Every string an Automerge document or change set ever held (its whole history, not only
/// its current state), and its raw bytes; `None` if the bytes do not load as a complete
/// document (then nothing can be ruled out).
pub fn history_strings(bytes: &[u8]) -> Option<Vec<String>> {
    let mut all = nexus_sync::doc::history_strings(bytes).ok()?;
    all.push(String::from_utf8_lossy(bytes).into_owned());
    Some(all)
}

/// Whether [`history_strings`] of `bytes` hold `needle` (or cannot rule it out).
pub fn history_holds(bytes: &[u8], needle: &str) -> bool {
    history_strings(bytes).is_none_or(|all| all.iter().any(|s| s.contains(needle)))
}

/// What each document a device keeps in its sync state (read back from the store) ever held:
/// its name (or id, if unnamed) and [`history_strings`].
pub fn device_histories(store: &dyn Store) -> Vec<(String, Option<Vec<String>>)> {
    nexus_sync::replica::Replica::kept(store)
        .unwrap()
        .into_iter()
        .map(|(id, name, bytes)| {
            (
                name.map_or(id.to_string(), |(n, g)| format!("{n} gen {g}")),
                history_strings(&bytes),
            )
        })
        .collect()
}

/// What each document the relay keeps for the space ever held, its entries decrypted and
/// taken together: its id and [`history_strings`].
pub fn relay_histories(
    relay: &Relay,
    keys: &nexus_sync::SpaceKeys,
) -> Vec<(String, Option<Vec<String>>)> {
    relay
        .docs(keys.space())
        .into_iter()
        .map(|doc| {
            let mut all = Vec::new();
            for e in relay.entries(keys.space(), &doc) {
                all.extend(keys.open(&doc, e.kind, &e.blob).unwrap());
            }
            (doc.to_string(), history_strings(&all))
        })
        .collect()
}

/// The documents among `histories` that hold `needle` (or cannot rule it out).
pub fn holding(histories: &[(String, Option<Vec<String>>)], needle: &str) -> Vec<String> {
    histories
        .iter()
        .filter(|(_, h)| {
            h.as_ref()
                .is_none_or(|all| all.iter().any(|s| s.contains(needle)))
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// The documents a device keeps whose history holds `needle`.
pub fn device_docs_holding(store: &dyn Store, needle: &str) -> Vec<String> {
    holding(&device_histories(store), needle)
}

/// The documents the relay keeps whose history holds `needle`.
pub fn relay_docs_holding(
    relay: &Relay,
    keys: &nexus_sync::SpaceKeys,
    needle: &str,
) -> Vec<String> {
    holding(&relay_histories(relay, keys), needle)
}

/// How many documents the device keeps.
pub fn device_doc_count(store: &dyn Store) -> usize {
    store.sync_keys("doc/").unwrap().len()
}
