//! Sync benchmarks (docs/BENCHMARKS.md): applying 10,000 changes to a document, and loading
//! the documents of a simulated year of daily use.
//!
//! cargo bench -p nexus-sync --bench sync
#![allow(clippy::unwrap_used, clippy::cast_precision_loss)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use automerge::{ActorId, AutoCommit};
use nexus_common::{CompanionId, ConversationId, JournalId, MemoryId, MessageId, Timestamp};
use nexus_store::{
    Companion, Conversation, EmotionSource, JournalEntry, MemoryItem, MemoryKind, MemoryStore,
    Message, PersonaState, Role, Store,
};
use nexus_sync::doc::{DocName, Field, Record, Writer, new_document};
use nexus_sync::relay::Relay;
use nexus_sync::{PairingCode, SyncClient};
use nexus_sync_protocol::{BlobKind, Entry, MAX_ENTRIES_PER_MESSAGE, ServerMessage};

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn message_record(i: usize) -> Record {
    [
        ("role".to_owned(), Field::Str("user".into())),
        (
            "text".to_owned(),
            Field::Str(format!(
                "message number {i}: a sentence of ordinary length for a chat"
            )),
        ),
        (
            "created_at".to_owned(),
            Field::Int(1_700_000_000_000 + i as i64),
        ),
        ("token_count".to_owned(), Field::Int(14)),
    ]
    .into_iter()
    .collect()
}

/// 10,000 changes, each adding one message to a conversation document.
fn ten_thousand_changes(conv: ConversationId, companion: CompanionId) -> Vec<Vec<u8>> {
    let name = DocName::Conversation(conv);
    let mut doc = new_document(&name, &ActorId::random());
    let record: Record = [
        ("companion_id".to_owned(), Field::Str(companion.to_string())),
        ("title".to_owned(), Field::Null),
        ("created_at".to_owned(), Field::Int(0)),
        ("deleted".to_owned(), Field::Bool(false)),
    ]
    .into_iter()
    .collect();
    Writer::new(&mut doc)
        .update_record("conversation", &record)
        .unwrap();
    doc.commit();
    let changes = doc.get_changes(&[]);
    let mut changes: Vec<Vec<u8>> = changes.iter().map(|c| c.raw_bytes().to_vec()).collect();
    for i in 0..10_000 {
        let before = doc.get_heads();
        Writer::new(&mut doc)
            .put_entity(
                "messages",
                &MessageId::new().to_string(),
                &message_record(i),
            )
            .unwrap();
        doc.commit();
        for c in doc.get_changes(&before) {
            changes.push(c.raw_bytes().to_vec());
        }
    }
    changes
}

fn bench_changes() {
    println!(
        "## Applying 10,000 changes to one document (a conversation, one message per change)\n"
    );
    let store_a = MemoryStore::new();
    let mut relay = Relay::new();
    let mut a = SyncClient::create_space(&store_a, "mem://").unwrap();
    relay.create_space(a.keys().space(), a.keys().token());
    let mira = Companion {
        id: CompanionId::new(),
        name: "Mira".into(),
        description: String::new(),
        personality: String::new(),
        speaking_style: String::new(),
        greeting: String::new(),
        card: None,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
    };
    store_a.create_companion(&mira).unwrap();
    let conv = Conversation {
        id: ConversationId::new(),
        companion_id: mira.id,
        title: None,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
    };
    let changes = ten_thousand_changes(conv.id, mira.id);
    let bytes: usize = changes.iter().map(Vec::len).sum();
    println!("changes: {} ({} bytes in total)\n", changes.len(), bytes);
    println!("| what | time | per change |\n|---|---|---|");
    let row = |what: &str, d: Duration, n: usize| {
        println!(
            "| {what} | {} | {:.1} µs |",
            ms(d),
            d.as_secs_f64() * 1e6 / n as f64
        );
    };

    // Automerge alone, one change at a time (as they arrive live).
    let t = Instant::now();
    let mut doc = AutoCommit::new();
    for c in &changes {
        doc.load_incremental(c).unwrap();
    }
    row(
        "Automerge: load_incremental, one change at a time",
        t.elapsed(),
        changes.len(),
    );
    assert_eq!(doc.get_changes(&[]).len(), changes.len());

    // Automerge alone, all at once (a backlog).
    let all: Vec<u8> = changes.concat();
    let t = Instant::now();
    let mut doc = AutoCommit::new();
    doc.load_incremental(&all).unwrap();
    row(
        "Automerge: load_incremental, all in one call",
        t.elapsed(),
        changes.len(),
    );

    // A device receiving them as encrypted entries (pages of 512, like a backlog), applying
    // each page to the document and the store.
    let doc_id = a.keys().doc_id(&DocName::Conversation(conv.id).to_string());
    let entries: Vec<Entry> = changes
        .iter()
        .enumerate()
        .map(|(i, c)| Entry {
            seq: i as u64 + 1,
            kind: BlobKind::Change,
            covers: None,
            blob: a.keys().seal(&doc_id, BlobKind::Change, c).unwrap(),
        })
        .collect();
    let code = PairingCode::parse(&a.pairing_code().unwrap().to_text()).unwrap();
    // The companion document first (the conversation needs its companion in the store).
    a.sync_local(&store_a).unwrap();
    let store_b = MemoryStore::new();
    let mut b = SyncClient::join(&store_b, &code).unwrap();
    let conn = relay.connect();
    b.connected();
    for m in b.outgoing() {
        relay.handle(conn, m);
    }
    let conn_a = relay.connect();
    a.connected();
    for m in a.outgoing() {
        relay.handle(conn_a, m);
    }
    for m in relay.take(conn_a) {
        a.handle(&store_a, m).unwrap();
    }
    for m in a.outgoing() {
        relay.handle(conn_a, m);
    }
    for m in relay.take(conn) {
        if !matches!(&m, ServerMessage::Entries { doc, .. } if *doc == doc_id) {
            b.handle(&store_b, m).unwrap();
        }
    }
    let t = Instant::now();
    for page in entries.chunks(MAX_ENTRIES_PER_MESSAGE) {
        b.handle(
            &store_b,
            ServerMessage::Entries {
                doc: doc_id.clone(),
                entries: page.to_vec(),
            },
        )
        .unwrap();
    }
    row(
        "device: decrypt + merge + write to the store, pages of 512 entries",
        t.elapsed(),
        entries.len(),
    );
    assert_eq!(store_b.message_count(conv.id).unwrap(), 10_000);

    // Live: one entry per message, into a document that grows to 2,000 messages.
    let store_c = MemoryStore::new();
    let mut c = SyncClient::join(&store_c, &code).unwrap();
    store_c.create_companion(&mira).unwrap();
    let t = Instant::now();
    let live = 2_000;
    for e in &entries[..=live] {
        c.handle(
            &store_c,
            ServerMessage::Entries {
                doc: doc_id.clone(),
                entries: vec![e.clone()],
            },
        )
        .unwrap();
    }
    row(
        "device: live, one entry per message (first 2,000)",
        t.elapsed(),
        live,
    );
    println!();
}

fn bench_year() {
    println!("## A year of daily use\n");
    println!(
        "Simulated: one companion; every day 20 messages (a new conversation each week), one \
         memory with a 384-dimension embedding, a persona update, a text reading and a fused \
         state per user message and 24 heart-rate samples in the journal; the device syncs \
         (captures) once a day.\n"
    );
    let store = MemoryStore::new();
    let mut client = SyncClient::create_space(&store, "mem://").unwrap();
    let mira = Companion {
        id: CompanionId::new(),
        name: "Mira".into(),
        description: "A companion for a year.".into(),
        personality: "warm".into(),
        speaking_style: "short".into(),
        greeting: "Hi".into(),
        card: None,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
    };
    store.create_companion(&mira).unwrap();
    let day_ms = 86_400_000_i64;
    let t = Instant::now();
    let mut conv = None;
    for day in 0..365_i64 {
        let at = 1_700_000_000_000 + day * day_ms;
        if day % 7 == 0 {
            let c = Conversation {
                id: ConversationId::new(),
                companion_id: mira.id,
                title: Some(format!("Week {}", day / 7 + 1)),
                created_at: Timestamp(at),
                updated_at: Timestamp(at),
            };
            store.create_conversation(&c).unwrap();
            conv = Some(c.id);
        }
        let conv = conv.unwrap();
        let messages: Vec<Message> = (0..20)
            .map(|i| Message {
                id: MessageId::new(),
                conversation_id: conv,
                role: if i % 2 == 0 {
                    Role::User
                } else {
                    Role::Assistant
                },
                text: format!("Day {day}, message {i}: how was your day? Tell me more about it."),
                created_at: Timestamp(at + i * 60_000),
                token_count: 16,
            })
            .collect();
        store.append_messages(&messages).unwrap();
        store
            .insert_memory(&MemoryItem {
                id: MemoryId::new(),
                companion_id: mira.id,
                text: format!("On day {day} the user mentioned something worth remembering."),
                kind: MemoryKind::Event,
                subject: format!("day.{day}"),
                importance: 0.5,
                pinned: false,
                embedding: (0..384).map(|i| ((i + day) as f32 * 0.01).sin()).collect(),
                source_message_ids: vec![messages[0].id],
                created_at: Timestamp(at),
                updated_at: Timestamp(at),
                last_used_at: None,
                superseded_by: None,
            })
            .unwrap();
        #[allow(clippy::cast_possible_truncation)]
        let trust = (day as f32 / 365.0).min(1.0);
        store
            .save_persona_state(
                &PersonaState {
                    companion_id: mira.id,
                    traits: BTreeMap::from([("openness".into(), 0.6)]),
                    locked: Default::default(),
                    familiarity: trust,
                    trust,
                    exchanges: day as u64 * 10,
                    updated_at: Timestamp(at),
                },
                &[],
            )
            .unwrap();
        // What the chat journals: a text reading and a fused state per user message.
        let journal: Vec<JournalEntry> = messages
            .iter()
            .filter(|m| m.role == Role::User)
            .flat_map(|m| {
                let ekman = serde_json::json!([
                    ["joy", 0.61],
                    ["neutral", 0.2],
                    ["surprise", 0.08],
                    ["sadness", 0.05],
                    ["anger", 0.03],
                    ["fear", 0.02],
                    ["disgust", 0.01]
                ]);
                let entry = |source, details| JournalEntry {
                    id: JournalId::new(),
                    at: m.created_at,
                    source,
                    labels: vec![
                        ("joy".into(), 0.52),
                        ("gratitude".into(), 0.21),
                        ("neutral".into(), 0.12),
                        ("optimism".into(), 0.07),
                    ],
                    valence: 0.43,
                    arousal: 0.38,
                    confidence: 0.71,
                    conversation_id: Some(conv),
                    message_id: Some(m.id),
                    details,
                };
                [
                    entry(
                        EmotionSource::Text,
                        serde_json::json!({"ekman": ekman, "active": ["joy"], "flags":
                            {"empty": false, "maybe_not_english": false, "truncated": false}}),
                    ),
                    entry(
                        EmotionSource::Fused,
                        serde_json::json!({"status": "confident", "disagreement": 0.0,
                            "contributions": [{"source": "text", "weight": 1.0, "age_ms": 0}]}),
                    ),
                ]
            })
            .collect();
        store.add_journal_entries(&journal).unwrap();
        let samples: Vec<(i64, f64)> = (0..24)
            .map(|h| (at + h * 3_600_000, 60.0 + (h % 7) as f64))
            .collect();
        client.record_heart_rate(&samples, "watch").unwrap();
        client.sync_local(&store).unwrap();
    }
    let build = t.elapsed();
    client.save(&store).unwrap();
    let keys = store.sync_keys("doc/").unwrap();
    let sizes: Vec<usize> = keys
        .iter()
        .map(|k| store.sync_value(k).unwrap().unwrap().len())
        .collect();
    let total: usize = sizes.iter().sum();
    let largest = sizes.iter().max().copied().unwrap_or(0);
    println!(
        "documents: {} ({} bytes saved in total, the largest {} bytes); building the year took {}\n",
        keys.len(),
        total,
        largest,
        ms(build)
    );
    println!("| what | time |\n|---|---|");

    let t = Instant::now();
    for k in &keys {
        let v = store.sync_value(k).unwrap().unwrap();
        // The saved slot: a flags byte, 16 more bytes if a conversation's capture marker
        // follows, then the Automerge document (see replica.rs).
        let start = if v[0] & 2 == 2 { 17 } else { 1 };
        AutoCommit::load(&v[start..]).unwrap();
    }
    println!(
        "| Automerge: load every document of the year | {} |",
        ms(t.elapsed())
    );

    let t = Instant::now();
    let reopened = SyncClient::open(&store).unwrap().unwrap();
    println!(
        "| device start: SyncClient::open (load all documents from the store) | {} |",
        ms(t.elapsed())
    );
    drop(reopened);

    // A new device joining: receives one snapshot per document and fills its store.
    let mut relay = Relay::new();
    relay.create_space(client.keys().space(), client.keys().token());
    client.set_snapshot_every(1);
    let conn = relay.connect();
    client.connected();
    for _ in 0..5 {
        for m in client.outgoing() {
            relay.handle(conn, m);
        }
        for m in relay.take(conn) {
            client.handle(&store, m).unwrap();
        }
    }
    let code = PairingCode::parse(&client.pairing_code().unwrap().to_text()).unwrap();
    let store_b = MemoryStore::new();
    let mut b = SyncClient::join(&store_b, &code).unwrap();
    let conn_b = relay.connect();
    let t = Instant::now();
    b.connected();
    for _ in 0..5 {
        for m in b.outgoing() {
            relay.handle(conn_b, m);
        }
        for m in relay.take(conn_b) {
            b.handle(&store_b, m).unwrap();
        }
    }
    println!(
        "| new device: receive the year (snapshots) and write it to its store | {} |",
        ms(t.elapsed())
    );
    assert_eq!(store_b.list_memories(mira.id, true).unwrap().len(), 365);
    assert_eq!(b.heart_rate().len(), 365 * 24);
    assert_eq!(
        store_b
            .journal(Timestamp(i64::MIN), Timestamp(i64::MAX))
            .unwrap()
            .len(),
        365 * 20
    );

    // Forgetting one memory: the companion's document starts over without its history on this
    // device, is uploaded as a new generation, and the other device switches to it.
    let companion_size = |store: &MemoryStore, c: &mut SyncClient| {
        c.save(store).unwrap();
        let id = nexus_sync::replica::Replica::kept(store)
            .unwrap()
            .into_iter()
            .find(|(_, name, _)| matches!(name, Some((DocName::Companion(_), _))))
            .unwrap();
        id.2.len()
    };
    let before = companion_size(&store, &mut client);
    let forgotten = store.list_memories(mira.id, true).unwrap()[100].id;
    store.delete_memories(&[forgotten]).unwrap();
    let t = Instant::now();
    client.sync_local(&store).unwrap();
    println!(
        "| forget one memory: the companion's document starts over (capture, new generation) | {} |",
        ms(t.elapsed())
    );
    let after = companion_size(&store, &mut client);
    for _ in 0..5 {
        for m in client.outgoing() {
            relay.handle(conn, m);
        }
        for m in relay.take(conn) {
            client.handle(&store, m).unwrap();
        }
    }
    assert_eq!(client.pending(), 0);
    let t = Instant::now();
    for _ in 0..5 {
        for m in b.outgoing() {
            relay.handle(conn_b, m);
        }
        for m in relay.take(conn_b) {
            b.handle(&store_b, m).unwrap();
        }
    }
    println!(
        "| other device: switch to the new generation (merge, store, drop the old one) | {} |",
        ms(t.elapsed())
    );
    println!(
        "| the companion's document, saved: with a year of history / the new generation | {} / {} bytes |",
        before, after
    );
    assert_eq!(store_b.list_memories(mira.id, true).unwrap().len(), 364);
    println!();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    bench_changes();
    bench_year();
}
