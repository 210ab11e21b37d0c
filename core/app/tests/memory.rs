//! The memory, persona and privacy API of `Nexus` with the real embedder and a scripted model.

use std::sync::Arc;

use nexus_app::{AppError, Flow, Nexus};
use nexus_inference::BertEmbedder;
use nexus_store::MemoryStore;
use nexus_testing::{FakeLlm, FixedClock};

fn app() -> (Nexus, Arc<FixedClock>) {
    let clock = Arc::new(FixedClock::at(1_763_683_200_000));
    let mut app = Nexus::new(Arc::new(MemoryStore::new()), clock.clone());
    app.set_language_model(Box::new(FakeLlm::new(&[])));
    app.set_embedder(Box::new(
        BertEmbedder::from_dir(&nexus_testing::models::embedding_dir()).expect("embedder"),
    ));
    (app, clock)
}

#[test]
fn memories_are_learned_recalled_explained_and_controlled_by_the_user() {
    let (mut app, clock) = app();
    let c = app.companion_or_default(None).expect("companion");
    let conv = app.current_conversation(&c).expect("conversation");
    for text in [
        "My dog Biscuit is a golden retriever.",
        "I'm learning to play the cello.",
        "I live in Lyon.",
    ] {
        clock.advance(60_000);
        app.send(conv.id, text, None, &mut |_| Flow::Continue)
            .expect("send");
    }
    let all = app.memories(&c, false).expect("list");
    assert_eq!(all.len(), 3, "{all:#?}");

    clock.advance(7 * 86_400_000);
    let r = app
        .send(
            conv.id,
            "Should I take my dog to the beach?",
            None,
            &mut |_| Flow::Continue,
        )
        .expect("send");
    assert!(
        r.memories_used[0].memory.text.contains("Biscuit"),
        "{:#?}",
        r.memories_used
    );
    let last = app.last_reply(conv.id).expect("last").expect("a reply");
    let why = app.why(&last).expect("why");
    assert_eq!(why.memories[0].0, r.memories_used[0].memory.id);

    // Search, find by a short id, edit, pin.
    let hits = app.search_memories(&c, "music lessons", 1).expect("search");
    assert!(hits[0].0.text.contains("cello"), "{hits:#?}");
    let cello = &hits[0].0;
    let short = &cello.id.to_string()[28..];
    assert_eq!(app.find_memory(&c, short).expect("by suffix").id, cello.id);
    assert!(matches!(
        app.find_memory(&c, "zzzzzzzz"),
        Err(AppError::UnknownMemory(_))
    ));
    assert!(matches!(
        app.find_memory(&c, "ab"),
        Err(AppError::Invalid(_))
    ));
    let edited = app
        .edit_memory(cello, "The user plays the viola.")
        .expect("edit");
    assert_eq!(
        app.search_memories(&c, "viola", 1).expect("search")[0].0.id,
        edited.id
    );
    let pinned = app.pin_memory(&edited, true).expect("pin");
    assert!(pinned.pinned);

    // Forget one, then everything about a subject.
    let lyon = app.search_memories(&c, "Lyon", 1).expect("search")[0]
        .0
        .clone();
    assert_eq!(app.forget_memory(&lyon).expect("forget"), 1);
    let gone = app.forget_about(&c, "my dog").expect("forget about");
    assert!(gone.iter().any(|m| m.text.contains("Biscuit")), "{gone:#?}");
    let left: Vec<String> = app
        .memories(&c, true)
        .expect("list")
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(left, vec!["The user plays the viola.".to_owned()]);
    // Forgetting leaves no trace: the old reply no longer names the memory.
    let why = app.why(&last).expect("why");
    assert!(why.memories.is_empty(), "{why:#?}");
}

#[test]
fn traits_can_be_locked_and_everything_exports_restores_and_wipes() {
    let (mut app, clock) = app();
    let c = app.companion_or_default(None).expect("companion");
    let conv = app.current_conversation(&c).expect("conversation");
    let state = app.lock_trait(&c, "Extraversion", true).expect("lock");
    assert!(state.locked.contains("extraversion"));
    assert!(matches!(
        app.lock_trait(&c, "charisma", true),
        Err(AppError::Invalid(_))
    ));
    let before = state.traits["extraversion"];
    for i in 0..20 {
        clock.advance(60_000);
        app.send(
            conv.id,
            &format!("Wow!! This is amazing, I can't wait, let's go party number {i} tonight!!"),
            None,
            &mut |_| Flow::Continue,
        )
        .expect("send");
    }
    let after = app.persona_state(&c).expect("state");
    assert_eq!(
        after.traits["extraversion"], before,
        "locked traits never move"
    );
    assert_eq!(after.exchanges, 20);
    assert!(
        app.persona_history(&c, None)
            .expect("history")
            .iter()
            .any(|ch| ch.field == "lock:extraversion")
    );

    let bytes = app.export_archive().expect("export");
    let text = String::from_utf8(bytes.clone()).expect("UTF-8");
    assert!(text.contains("party number 19"));
    app.forget_everything().expect("wipe");
    assert!(app.companions().expect("list").is_empty());
    let report = app.import_archive(&bytes).expect("restore");
    assert_eq!(report.companions, 1);
    assert_eq!(report.messages, 41, "greeting + 20 exchanges");
    let restored = app.persona_state(&c).expect("state");
    assert_eq!(restored, after);
    assert!(matches!(
        app.import_archive(b"{\"format\":\"something else\"}"),
        Err(AppError::Store(_))
    ));
}
