//! Precision and recall of memory learning on hand-written scripted conversations
//! (`fixtures/memory_conversations.json`), with the real embedder and the real pipeline
//! (rules, embedding deduplication, superseding). Prints the figures; fails if they drop below
//! what the pipeline reaches today (docs/BENCHMARKS.md records them).

use std::sync::Arc;

use nexus_common::{CompanionId, ConversationId, MessageId, Timestamp};
use nexus_companion::memory::{Memories, MemorySettings};
use nexus_inference::BertEmbedder;
use nexus_store::{Companion, Conversation, MemoryKind, MemoryStore, Message, Role, Store};
use nexus_testing::SteppingClock;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    conversations: Vec<Conv>,
}
#[derive(Deserialize)]
struct Conv {
    id: String,
    turns: Vec<Turn>,
}
#[derive(Deserialize)]
struct Turn {
    user: String,
    facts: Vec<Fact>,
}
#[derive(Deserialize)]
struct Fact {
    kind: String,
    keywords: Vec<String>,
}

fn matches(fact: &Fact, kind: MemoryKind, text: &str) -> bool {
    let text = text.to_lowercase();
    fact.kind == kind.as_str()
        && fact
            .keywords
            .iter()
            .all(|k| text.contains(&k.to_lowercase()))
}

/// Precision and recall of the whole learning pipeline on one fixture.
fn evaluate(name: &str, json: &str) -> (f64, f64) {
    let fixture: Fixture = serde_json::from_str(json).expect("fixture");
    let embedder =
        BertEmbedder::from_dir(&nexus_testing::models::embedding_dir()).expect("embedder");
    let clock = SteppingClock::new(1_700_000_000_000, 60_000);
    let (mut extracted, mut correct, mut facts, mut found) = (0usize, 0usize, 0usize, 0usize);
    let mut misses = Vec::new();
    let mut false_positives = Vec::new();
    // One companion and store for all conversations: like one user over weeks.
    let store = Arc::new(MemoryStore::new());
    let companion = Companion {
        id: CompanionId::new(),
        name: "Nova".into(),
        description: String::new(),
        personality: String::new(),
        speaking_style: String::new(),
        greeting: String::new(),
        card: None,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
    };
    store.create_companion(&companion).expect("companion");
    let memories = Memories::new(&*store, &embedder, &clock, MemorySettings::default());
    for conv in &fixture.conversations {
        let conversation = Conversation {
            id: ConversationId::new(),
            companion_id: companion.id,
            title: Some(conv.id.clone()),
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        };
        store
            .create_conversation(&conversation)
            .expect("conversation");
        for turn in &conv.turns {
            let message = Message {
                id: MessageId::new(),
                conversation_id: conversation.id,
                role: Role::User,
                text: turn.user.clone(),
                created_at: Timestamp(0),
                token_count: 0,
            };
            store
                .append_messages(std::slice::from_ref(&message))
                .expect("append");
            let learned = memories.learn(companion.id, &message).expect("learn");
            extracted += learned.added.len();
            for m in &learned.added {
                if turn.facts.iter().any(|f| matches(f, m.kind, &m.text)) {
                    correct += 1;
                } else {
                    false_positives.push(format!(
                        "{}: {:?} -> [{}] {}",
                        conv.id,
                        turn.user,
                        m.kind.as_str(),
                        m.text
                    ));
                }
            }
            for f in &turn.facts {
                facts += 1;
                if learned.added.iter().any(|m| matches(f, m.kind, &m.text)) {
                    found += 1;
                } else {
                    misses.push(format!(
                        "{}: {:?} missed {} {:?}",
                        conv.id, turn.user, f.kind, f.keywords
                    ));
                }
            }
        }
    }
    let precision = correct as f64 / extracted.max(1) as f64;
    let recall = found as f64 / facts.max(1) as f64;
    eprintln!(
        "memory extraction: {extracted} extracted, {correct} correct, {facts} facts, {found} found"
    );
    eprintln!("precision {precision:.3}  recall {recall:.3}");
    for m in &misses {
        eprintln!("  miss: {m}");
    }
    for fp in &false_positives {
        eprintln!("  false positive: {fp}");
    }
    eprintln!("[{name}] precision {precision:.3} recall {recall:.3}");
    (precision, recall)
}

#[test]
fn memory_learning_precision_and_recall() {
    // The development set: the rules were written and tuned while looking at it.
    let (p, r) = evaluate("dev", include_str!("fixtures/memory_conversations.json"));
    assert!(p >= 0.95 && r >= 0.95, "dev precision {p:.3} recall {r:.3}");
    // The held-out set was written afterwards and never used for tuning: the honest figure.
    let (p, r) = evaluate(
        "held-out",
        include_str!("fixtures/memory_conversations_heldout.json"),
    );
    assert!(
        p >= 0.95 && r >= 0.80,
        "held-out precision {p:.3} recall {r:.3}"
    );
}
