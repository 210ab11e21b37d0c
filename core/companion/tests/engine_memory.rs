//! The conversation engine with long-term memory, persona evolution and rolling summaries,
//! driven through many exchanges in simulated time with the real embedder and a scripted model.

use nexus_common::Timestamp;
use nexus_companion::engine::{MEMORY_HEADING, MemoryAccess};
use nexus_companion::memory::{Memories, MemorySettings};
use nexus_companion::persona::{CompanionDraft, create};
use nexus_companion::{ChatSettings, ConversationEngine, Reply};
use nexus_inference::{BertEmbedder, Flow};
use nexus_store::{MemoryStore, Store};
use nexus_testing::{FakeLlm, FixedClock};

const DAY: i64 = 86_400_000;

fn embedder() -> BertEmbedder {
    BertEmbedder::from_dir(&nexus_testing::models::embedding_dir()).expect("embedder")
}

/// A store with the default companion and one conversation, the real embedder and a scripted
/// model.
struct World {
    store: MemoryStore,
    clock: FixedClock,
    embedder: BertEmbedder,
    companion: nexus_store::Companion,
    conv: nexus_common::ConversationId,
    llm: FakeLlm,
}

impl World {
    fn new() -> Self {
        let store = MemoryStore::new();
        let clock = FixedClock::at(1_763_683_200_000);
        let companion =
            create(&store, &clock, &CompanionDraft::default_companion()).expect("companion");
        let conv = ConversationEngine::new(&store, &clock, ChatSettings::default())
            .start_conversation(&companion)
            .expect("conversation")
            .id;
        Self {
            store,
            clock,
            embedder: embedder(),
            companion,
            conv,
            llm: FakeLlm::new(&[]),
        }
    }

    fn engine(&self) -> ConversationEngine<'_> {
        ConversationEngine::new(&self.store, &self.clock, ChatSettings::default())
    }

    /// One exchange with memory in `conversation`, the snapshot rebuilt from the store as the
    /// app does.
    fn say_in(&mut self, conversation: nexus_common::ConversationId, text: &str) -> Reply {
        let settings = MemorySettings::default();
        let snapshot = Memories::new(&self.store, &self.embedder, &self.clock, settings.clone())
            .snapshot(self.companion.id)
            .expect("snapshot");
        ConversationEngine::new(&self.store, &self.clock, ChatSettings::default())
            .with_memory(MemoryAccess {
                embedder: &self.embedder,
                snapshot: &snapshot,
                settings: &settings,
            })
            .reply(&mut self.llm, conversation, text, None, &mut |_| {
                Flow::Continue
            })
            .expect("reply")
    }

    fn say(&mut self, text: &str) -> Reply {
        self.say_in(self.conv, text)
    }
}

#[test]
fn a_fact_told_weeks_ago_informs_the_reply_and_is_recorded() {
    let mut w = World::new();
    // Week 1: facts among small talk.
    for text in [
        "Hi Nova, how was your day?",
        "My sister Anna loves orchids and old jazz records.",
        "I work as a nurse at the children's hospital.",
        "The weather is grey again today.",
        "I'm allergic to peanuts.",
    ] {
        w.clock.advance(3_600_000);
        w.say(text);
    }
    let learned = w
        .store
        .list_memories(w.companion.id, false)
        .expect("memories");
    assert!(
        learned.iter().any(|m| m.text.contains("Anna")),
        "learned: {learned:#?}"
    );

    // Three weeks later, in a new conversation.
    w.clock.advance(21 * DAY);
    let later = w
        .engine()
        .start_conversation(&w.companion)
        .expect("conversation");
    let reply = w.say_in(later.id, "What could I give my sister for her birthday?");
    let top = reply.memories_used.first().expect("a memory was recalled");
    assert!(
        top.memory.text.contains("Anna"),
        "{:#?}",
        reply.memories_used
    );

    // It was in the prompt, right before the question, and it is recorded for /why.
    let prompt = w.llm.recorded().pop().expect("request");
    let n = prompt.messages.len();
    assert_eq!(prompt.messages[n - 2].role, "system");
    assert!(prompt.messages[n - 2].content.starts_with(MEMORY_HEADING));
    assert!(prompt.messages[n - 2].content.contains("Anna"));
    let reply_id = reply.reply_message.expect("reply").id;
    let used = w.store.memories_used(reply_id).expect("used");
    assert_eq!(used.first(), Some(&top.memory.id));
    let used_at = w.store.memory(top.memory.id).expect("memory").last_used_at;
    assert!(
        used_at >= Some(clock_now(&w.clock)),
        "recall refreshes the memory: {used_at:?}"
    );
}

fn clock_now(clock: &FixedClock) -> Timestamp {
    use nexus_common::Clock;
    clock.now()
}

#[test]
fn a_new_fact_supersedes_the_old_one_through_the_engine() {
    let mut w = World::new();
    w.say("I live in Lyon.");
    w.clock.advance(30 * DAY);
    let r = w.say("I moved to Berlin last week.");
    assert_eq!(r.learned.superseded.len(), 1, "{:#?}", r.learned);
    let active = w
        .store
        .list_memories(w.companion.id, false)
        .expect("active");
    assert!(active.iter().any(|m| m.text.contains("Berlin")));
    assert!(!active.iter().any(|m| m.text.contains("Lyon")));
    assert_eq!(
        w.store
            .list_memories(w.companion.id, true)
            .expect("all")
            .len(),
        active.len() + 1,
        "the old fact is kept in the history"
    );
}

#[test]
fn the_persona_evolves_within_bounds_and_keeps_a_history() {
    let mut w = World::new();
    let before = w.engine().persona_state(&w.companion).expect("state");
    for i in 0..40 {
        w.clock.advance(DAY);
        w.say(&format!(
            "Thank you so much, you're lovely! I'm so excited about our trip number {i}, \
             let's plan the next one together and imagine the places we could see!"
        ));
    }
    let after = w
        .store
        .persona_state(w.companion.id)
        .expect("state")
        .expect("saved");
    assert_eq!(after.exchanges, 40);
    assert!(after.familiarity > before.familiarity);
    for (name, v) in &after.traits {
        let start = before.traits[name];
        assert!(
            (v - start).abs() <= nexus_companion::evolve::MAX_DRIFT + 1e-6,
            "{name} drifted from {start} to {v}"
        );
    }
    assert!(after.traits["agreeableness"] > before.traits["agreeableness"]);
    let history = w
        .store
        .persona_history(w.companion.id, None)
        .expect("history");
    assert!(history.len() >= 40, "{} changes", history.len());
}

#[test]
fn long_conversations_roll_into_a_summary_and_the_prompt_stays_bounded() {
    let store = MemoryStore::new();
    let clock = FixedClock::at(1_763_683_200_000);
    let companion =
        create(&store, &clock, &CompanionDraft::default_companion()).expect("companion");
    let settings = ChatSettings::default();
    let engine = ConversationEngine::new(&store, &clock, settings);
    let conv = engine.start_conversation(&companion).expect("conversation");
    let mut llm = FakeLlm::new(&[]);
    llm.context = 1024;
    let mut sizes = Vec::new();
    let mut rolls = 0;
    for i in 0..300 {
        clock.advance(60_000);
        let text = if i == 3 {
            "My best friend Jonas is getting married in Porto in June.".to_owned()
        } else {
            format!("Here is small talk line {i}, nothing much to say")
        };
        let r = engine
            .reply(&mut llm, conv.id, &text, None, &mut |_| Flow::Continue)
            .expect("reply");
        rolls += usize::from(r.summary.is_some());
        sizes.push(r.plan.estimated_tokens);
    }
    assert!(rolls >= 3, "the summary rolled {rolls} times");
    let max = sizes.iter().max().copied().unwrap_or(0);
    assert!(max <= 1024 - 256, "prompt of {max} tokens");
    let summary = store
        .latest_summary(conv.id)
        .expect("summary")
        .expect("saved");
    assert!(summary.text.contains("Jonas"), "{}", summary.text);
    let last = llm.recorded().pop().expect("request");
    assert!(
        last.messages[0].content.contains("Jonas"),
        "in the system prompt"
    );
    assert!(
        summary.covered_messages > 300,
        "{}",
        summary.covered_messages
    );
}
