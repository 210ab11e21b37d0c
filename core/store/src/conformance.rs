//! The conformance suite: the behaviour every [`Store`] implementation must have.
//!
//! Each `pub fn` here is the body of one test and gets a fresh, empty store; it panics when the
//! store misbehaves. [`conformance_tests!`](crate::conformance_tests) turns the whole suite into
//! `#[test]` functions for one implementation:
//!
//! ```
//! // tests/memory.rs
//! nexus_store::conformance_tests!(nexus_store::MemoryStore::new);
//! # fn main() {}
//! ```
//!
//! The expression is called once per test. It returns a [`Fixture`]: the store itself, or a
//! `(store, guard)` pair whose guard (a temporary directory, say) lives until the test ends.

use std::fmt::Debug;

use std::collections::{BTreeMap, BTreeSet};

use nexus_common::{CompanionId, ConversationId, JournalId, MemoryId, MessageId, Timestamp};

use crate::{
    Companion, CompanionAsset, Conversation, ConversationSummary, EmotionSource, JournalEntry,
    MemoryItem, MemoryKind, Message, PersonaChange, PersonaState, Result, Role, Store, StoreError,
};

/// What the expression given to [`conformance_tests!`](crate::conformance_tests) returns.
pub trait Fixture {
    /// The store under test.
    fn store(&self) -> &dyn Store;
}

impl<S: Store> Fixture for S {
    fn store(&self) -> &dyn Store {
        self
    }
}

/// A store and a guard that must outlive it (dropped after the store).
impl<S: Store, G> Fixture for (S, G) {
    fn store(&self) -> &dyn Store {
        &self.0
    }
}

/// Expands to one `#[test]` per function of [`conformance`](crate::conformance); each test calls
/// `$make()` for a fresh [`Fixture`](crate::conformance::Fixture).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@tests $make;
            companion_crud,
            companion_names_are_unique_ignoring_case,
            renaming_to_a_taken_name_conflicts,
            invalid_companions_are_rejected,
            companions_are_listed_oldest_first,
            duplicate_ids_conflict,
            missing_ids_are_not_found,
            conversation_crud,
            deleting_a_companion_deletes_its_conversations_and_messages,
            deleting_a_conversation_deletes_its_messages,
            append_bumps_conversation_updated_at,
            append_is_all_or_nothing,
            messages_are_chronological_and_limit_keeps_the_last,
            text_round_trips_exactly,
            message_fields_round_trip,
            settings_set_overwrite_delete_list,
            companion_card_round_trips,
            messages_range_is_a_chronological_slice,
            memory_crud,
            memory_fields_round_trip,
            memories_are_listed_oldest_first,
            superseded_memories_stay_in_the_history,
            superseding_checks_its_rules_and_writes_nothing_on_failure,
            duplicate_memory_ids_conflict,
            invalid_memories_are_rejected,
            forgetting_a_current_memory_forgets_its_history,
            forgetting_an_old_version_relinks_the_history,
            memory_use_records_replace_and_stamp_last_used_at,
            memory_use_records_check_their_memories,
            persona_state_round_trips_and_is_replaced,
            persona_history_is_chronological_and_limit_keeps_the_newest,
            invalid_persona_states_are_rejected,
            latest_summary_is_the_newest_saved,
            assets_are_replaced_by_name_and_sorted_by_name,
            invalid_assets_are_rejected,
            missing_parents_of_memories_personas_summaries_assets_are_not_found,
            deleting_a_companion_deletes_everything_it_owns,
            deleting_a_conversation_deletes_its_summaries_and_memory_records,
            wipe_leaves_an_empty_usable_store,
            journal_entries_round_trip_in_chronological_order,
            journal_entries_check_their_rules_and_writes_are_all_or_nothing,
            journal_links_are_kept_after_their_conversation_is_deleted,
            put_memories_writes_every_field_and_links_within_the_batch,
            put_memories_checks_its_rules_and_writes_nothing_on_failure,
            put_journal_entries_inserts_and_replaces_by_id,
            sync_values_set_delete_list_and_are_wiped,
        );
    };
    (@tests $make:expr; $($test:ident),+ $(,)?) => {
        $(
            #[test]
            fn $test() {
                let fixture = ($make)();
                $crate::conformance::$test($crate::conformance::Fixture::store(&fixture));
            }
        )+
    };
}

// --- helpers ---

fn new_companion(name: &str, at: i64) -> Companion {
    Companion {
        id: CompanionId::new(),
        name: name.to_owned(),
        description: format!("{name} is a companion of the conformance suite."),
        personality: "curious, patient".to_owned(),
        speaking_style: "short sentences".to_owned(),
        greeting: format!("Hi, I am {name}."),
        card: None,
        created_at: Timestamp(at),
        updated_at: Timestamp(at),
    }
}

fn add_companion(store: &dyn Store, name: &str, at: i64) -> Companion {
    let companion = new_companion(name, at);
    store
        .create_companion(&companion)
        .expect("create companion");
    companion
}

fn new_conversation(companion: CompanionId, at: i64) -> Conversation {
    Conversation {
        id: ConversationId::new(),
        companion_id: companion,
        title: None,
        created_at: Timestamp(at),
        updated_at: Timestamp(at),
    }
}

fn add_conversation(store: &dyn Store, companion: CompanionId, at: i64) -> Conversation {
    let conversation = new_conversation(companion, at);
    store
        .create_conversation(&conversation)
        .expect("create conversation");
    conversation
}

fn new_message(conversation: ConversationId, role: Role, text: &str, at: i64) -> Message {
    Message {
        id: MessageId::new(),
        conversation_id: conversation,
        role,
        text: text.to_owned(),
        created_at: Timestamp(at),
        token_count: 0,
    }
}

/// A user message and the reply, `at` and one second later.
fn exchange(conversation: ConversationId, at: i64) -> [Message; 2] {
    [
        new_message(conversation, Role::User, &format!("question at {at}"), at),
        new_message(
            conversation,
            Role::Assistant,
            &format!("answer at {at}"),
            at + 1000,
        ),
    ]
}

fn id(s: &str) -> CompanionId {
    s.parse().expect("valid test id")
}

#[track_caller]
fn assert_not_found<T: Debug>(result: Result<T>, expected_entity: &str) {
    match result {
        Err(StoreError::NotFound { entity, .. }) if entity == expected_entity => {}
        other => panic!("expected NotFound for a {expected_entity}, got {other:?}"),
    }
}

#[track_caller]
fn assert_conflict<T: Debug>(result: Result<T>) {
    match result {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }
}

#[track_caller]
fn assert_invalid<T: Debug>(result: Result<T>) {
    match result {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[track_caller]
fn count(store: &dyn Store, conversation: ConversationId) -> usize {
    store.message_count(conversation).expect("message count")
}

#[track_caller]
fn all_messages(store: &dyn Store, conversation: ConversationId) -> Vec<Message> {
    store.messages(conversation, None).expect("messages")
}

// --- companions ---

/// Create, read (by id, by name ignoring case, in the list), update and delete a companion.
pub fn companion_crud(store: &dyn Store) {
    assert!(
        store.list_companions().expect("list").is_empty(),
        "a new store is empty"
    );

    let mira = add_companion(store, "Mira", 1_000);
    assert_eq!(store.companion(mira.id).expect("get"), mira);
    assert_eq!(
        store.companion_by_name("Mira").expect("by name"),
        Some(mira.clone())
    );
    assert_eq!(
        store.companion_by_name("mIRA").expect("by name"),
        Some(mira.clone())
    );
    assert_eq!(store.companion_by_name("Nova").expect("by name"), None);
    assert_eq!(store.list_companions().expect("list"), vec![mira.clone()]);

    let changed = Companion {
        name: "Mira the Wise".to_owned(),
        description: "An owl.".to_owned(),
        personality: "wise".to_owned(),
        speaking_style: "riddles".to_owned(),
        greeting: "Hoo?".to_owned(),
        created_at: Timestamp(9_999), // ignored: the creation time is kept
        updated_at: Timestamp(2_000),
        ..mira.clone()
    };
    store.update_companion(&changed).expect("update");
    let expected = Companion {
        created_at: mira.created_at,
        ..changed
    };
    assert_eq!(store.companion(mira.id).expect("get"), expected);
    assert_eq!(
        store.companion_by_name("Mira").expect("by name"),
        None,
        "old name is gone"
    );
    assert_eq!(
        store.companion_by_name("mira the wise").expect("by name"),
        Some(expected.clone())
    );
    assert_eq!(store.list_companions().expect("list"), vec![expected]);

    store.delete_companion(mira.id).expect("delete");
    assert_not_found(store.companion(mira.id), "companion");
    assert_eq!(
        store.companion_by_name("Mira the Wise").expect("by name"),
        None
    );
    assert!(store.list_companions().expect("list").is_empty());
}

/// Two companions cannot have names that differ only in case (Unicode case too).
pub fn companion_names_are_unique_ignoring_case(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    assert_conflict(store.create_companion(&new_companion("Mira", 2_000)));
    assert_conflict(store.create_companion(&new_companion("mira", 2_000)));
    assert_conflict(store.create_companion(&new_companion("MIRA", 2_000)));

    let elodie = add_companion(store, "Élodie", 3_000);
    assert_conflict(store.create_companion(&new_companion("éLODIE", 4_000)));
    assert_conflict(store.create_companion(&new_companion("ÉLODIE", 4_000)));
    assert_eq!(
        store.companion_by_name("ÉLODIE").expect("by name"),
        Some(elodie.clone())
    );

    // Other names are fine, including ones that only contain a taken name.
    let mirabel = add_companion(store, "Mirabel", 5_000);
    assert_eq!(
        store.list_companions().expect("list"),
        vec![mira, elodie, mirabel]
    );
}

/// Renaming a companion to another companion's name (ignoring case) fails and changes nothing;
/// changing the case of its own name is fine.
pub fn renaming_to_a_taken_name_conflicts(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let nova = add_companion(store, "Nova", 2_000);

    let clash = Companion {
        name: "MIRA".to_owned(),
        greeting: "changed".to_owned(),
        ..nova.clone()
    };
    assert_conflict(store.update_companion(&clash));
    assert_eq!(
        store.companion(nova.id).expect("get"),
        nova,
        "a failed update changes nothing"
    );

    let recased = Companion {
        name: "MIRA".to_owned(),
        ..mira.clone()
    };
    store
        .update_companion(&recased)
        .expect("changing the case of one's own name");
    assert_eq!(store.companion(mira.id).expect("get").name, "MIRA");
    let same = Companion {
        greeting: "Hello again".to_owned(),
        ..recased
    };
    store
        .update_companion(&same)
        .expect("keeping one's own name");
    assert_eq!(store.companion(mira.id).expect("get"), same);
}

/// [`Companion::validate`] runs on create and on update; rejected data is not stored.
pub fn invalid_companions_are_rejected(store: &dyn Store) {
    let too_long = "x".repeat(101);
    for bad in [
        "",
        "   ",
        "\t\n",
        too_long.as_str(),
        "bad\nname",
        "bell\u{7}",
    ] {
        assert_invalid(store.create_companion(&new_companion(bad, 1_000)));
    }
    assert!(
        store.list_companions().expect("list").is_empty(),
        "nothing invalid was stored"
    );

    let longest = "é".repeat(100); // 100 characters (200 bytes) is allowed
    let ok = add_companion(store, &longest, 1_000);
    for bad in ["", too_long.as_str(), "new\nline"] {
        let changed = Companion {
            name: bad.to_owned(),
            ..ok.clone()
        };
        assert_invalid(store.update_companion(&changed));
    }
    assert_eq!(store.companion(ok.id).expect("get"), ok);
}

/// `list_companions` is ordered by creation time, then id; not by name or insertion order.
pub fn companions_are_listed_oldest_first(store: &dyn Store) {
    let mut late = new_companion("Late", 3_000);
    let mut tie_b = new_companion("Tie B", 2_000);
    let mut tie_a = new_companion("Tie A", 2_000);
    let mut early = new_companion("Early", 1_000);
    tie_a.id = id("01890000-0000-7000-8000-00000000000a");
    tie_b.id = id("01890000-0000-7000-8000-00000000000b");
    late.id = id("01890000-0000-7000-8000-000000000001");
    early.id = id("01890000-0000-7000-8000-0000000000ff");
    for companion in [&late, &tie_b, &tie_a, &early] {
        store.create_companion(companion).expect("create");
    }
    assert_eq!(
        store.list_companions().expect("list"),
        vec![early, tie_a, tie_b, late]
    );
}

/// Creating an entity with an id that exists fails, and so does a message id used twice.
pub fn duplicate_ids_conflict(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let twin = Companion {
        id: mira.id,
        ..new_companion("Other name", 2_000)
    };
    assert_conflict(store.create_companion(&twin));
    assert_eq!(store.companion(mira.id).expect("get"), mira);

    let conversation = add_conversation(store, mira.id, 1_000);
    let again = Conversation {
        title: Some("again".to_owned()),
        ..conversation.clone()
    };
    assert_conflict(store.create_conversation(&again));
    assert_eq!(
        store.conversation(conversation.id).expect("get"),
        conversation
    );

    let [question, answer] = exchange(conversation.id, 2_000);
    store
        .append_messages(std::slice::from_ref(&question))
        .expect("append");
    let reused = Message {
        text: "same id".to_owned(),
        ..question.clone()
    };
    assert_conflict(store.append_messages(&[reused]));
    // A repeated id inside one batch: nothing of the batch is written.
    assert_conflict(store.append_messages(&[answer.clone(), answer]));
    assert_eq!(all_messages(store, conversation.id), vec![question]);
}

/// Every method given a missing id fails with `NotFound` for the right entity.
pub fn missing_ids_are_not_found(store: &dyn Store) {
    let ghost = new_companion("Ghost", 1_000);
    let orphan = new_conversation(ghost.id, 1_000);

    assert_not_found(store.companion(ghost.id), "companion");
    assert_not_found(store.update_companion(&ghost), "companion");
    assert_not_found(store.delete_companion(ghost.id), "companion");
    assert_not_found(store.list_conversations(ghost.id), "companion");
    assert_not_found(store.create_conversation(&orphan), "companion");
    assert_not_found(store.conversation(orphan.id), "conversation");
    assert_not_found(store.delete_conversation(orphan.id), "conversation");
    assert_not_found(store.messages(orphan.id, None), "conversation");
    assert_not_found(store.messages(orphan.id, Some(5)), "conversation");
    assert_not_found(store.message_count(orphan.id), "conversation");
    assert_not_found(
        store.append_messages(&exchange(orphan.id, 2_000)),
        "conversation",
    );
    assert!(
        store.list_companions().expect("list").is_empty(),
        "failed calls wrote nothing"
    );
}

// --- conversations ---

/// Create, read, list (per companion, oldest first) and delete conversations.
pub fn conversation_crud(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let nova = add_companion(store, "Nova", 1_000);
    assert!(store.list_conversations(mira.id).expect("list").is_empty());

    let mut later = new_conversation(mira.id, 5_000);
    later.title = Some("Plans for the 🌙 trip\nday two".to_owned());
    let earlier = new_conversation(mira.id, 2_000);
    let mut tie_b = new_conversation(mira.id, 3_000);
    let mut tie_a = new_conversation(mira.id, 3_000);
    tie_a.id = ConversationId(id("01890000-0000-7000-8000-00000000000a").0);
    tie_b.id = ConversationId(id("01890000-0000-7000-8000-00000000000b").0);
    let novas = new_conversation(nova.id, 1_000);
    for conversation in [&later, &tie_b, &earlier, &novas, &tie_a] {
        store.create_conversation(conversation).expect("create");
    }

    assert_eq!(
        store.conversation(later.id).expect("get"),
        later,
        "title round-trips"
    );
    assert_eq!(
        store.conversation(earlier.id).expect("get"),
        earlier,
        "no title round-trips"
    );
    assert_eq!(
        store.list_conversations(mira.id).expect("list"),
        vec![earlier.clone(), tie_a.clone(), tie_b.clone(), later.clone()]
    );
    assert_eq!(
        store.list_conversations(nova.id).expect("list"),
        vec![novas.clone()]
    );

    store.delete_conversation(tie_a.id).expect("delete");
    assert_not_found(store.conversation(tie_a.id), "conversation");
    assert_eq!(
        store.list_conversations(mira.id).expect("list"),
        vec![earlier, tie_b, later]
    );
    assert_eq!(
        store.list_conversations(nova.id).expect("list"),
        vec![novas]
    );
}

/// Deleting a companion deletes its conversations and their messages, and nothing else.
pub fn deleting_a_companion_deletes_its_conversations_and_messages(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let nova = add_companion(store, "Nova", 2_000);
    let first = add_conversation(store, mira.id, 1_000);
    let second = add_conversation(store, mira.id, 2_000);
    let kept = add_conversation(store, nova.id, 3_000);
    let doomed = exchange(first.id, 4_000);
    store.append_messages(&doomed).expect("append");
    store
        .append_messages(&exchange(second.id, 5_000))
        .expect("append");
    store
        .append_messages(&exchange(kept.id, 6_000))
        .expect("append");
    let kept = store.conversation(kept.id).expect("get");
    let kept_messages = all_messages(store, kept.id);

    store.delete_companion(mira.id).expect("delete");

    assert_not_found(store.companion(mira.id), "companion");
    assert_not_found(store.list_conversations(mira.id), "companion");
    for conversation in [first.id, second.id] {
        assert_not_found(store.conversation(conversation), "conversation");
        assert_not_found(store.messages(conversation, None), "conversation");
        assert_not_found(store.message_count(conversation), "conversation");
    }
    assert_eq!(store.list_companions().expect("list"), vec![nova.clone()]);
    assert_eq!(
        store.list_conversations(nova.id).expect("list"),
        vec![kept.clone()]
    );
    assert_eq!(all_messages(store, kept.id), kept_messages);

    // The name and the ids of the deleted data are free again.
    let mira_again = add_companion(store, "mira", 7_000);
    let conversation = add_conversation(store, mira_again.id, 7_000);
    let reused: Vec<Message> = doomed
        .into_iter()
        .map(|m| Message {
            conversation_id: conversation.id,
            ..m
        })
        .collect();
    store
        .append_messages(&reused)
        .expect("ids of deleted messages can be used again");
    assert_eq!(all_messages(store, conversation.id), reused);
}

/// Deleting a conversation deletes its messages and leaves its siblings alone.
pub fn deleting_a_conversation_deletes_its_messages(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let doomed = add_conversation(store, mira.id, 1_000);
    let sibling = add_conversation(store, mira.id, 2_000);
    store
        .append_messages(&exchange(doomed.id, 3_000))
        .expect("append");
    store
        .append_messages(&exchange(sibling.id, 4_000))
        .expect("append");

    store.delete_conversation(doomed.id).expect("delete");
    assert_not_found(store.messages(doomed.id, None), "conversation");
    assert_not_found(store.delete_conversation(doomed.id), "conversation");
    assert_eq!(count(store, sibling.id), 2);
    assert_eq!(store.companion(mira.id).expect("companion stays"), mira);
}

// --- messages ---

/// Appending bumps `updated_at` of each conversation to its newest appended message, never
/// backwards; `created_at` does not change.
pub fn append_bumps_conversation_updated_at(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let first = add_conversation(store, mira.id, 1_000);
    let second = add_conversation(store, mira.id, 1_500);

    store.append_messages(&[]).expect("an empty batch is fine");
    assert_eq!(store.conversation(first.id).expect("get"), first);

    store
        .append_messages(&exchange(first.id, 2_000))
        .expect("append");
    let got = store.conversation(first.id).expect("get");
    assert_eq!(
        (got.created_at, got.updated_at),
        (Timestamp(1_000), Timestamp(3_000))
    );

    // A late message with an older time (clock skew) does not move `updated_at` back.
    store
        .append_messages(&[new_message(first.id, Role::User, "old", 1_200)])
        .expect("append");
    assert_eq!(
        store.conversation(first.id).expect("get").updated_at,
        Timestamp(3_000)
    );

    // One batch for two conversations bumps each to its own newest message.
    store
        .append_messages(&[
            new_message(first.id, Role::User, "a", 7_000),
            new_message(second.id, Role::User, "b", 9_000),
            new_message(first.id, Role::Assistant, "c", 8_000),
            new_message(second.id, Role::Assistant, "d", 8_500),
        ])
        .expect("append");
    assert_eq!(
        store.conversation(first.id).expect("get").updated_at,
        Timestamp(8_000)
    );
    assert_eq!(
        store.conversation(second.id).expect("get").updated_at,
        Timestamp(9_000)
    );
    assert_eq!(
        store.conversation(second.id).expect("get").created_at,
        Timestamp(1_500)
    );
}

/// A batch with one bad message writes nothing, not even its valid messages.
pub fn append_is_all_or_nothing(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let conversation = add_conversation(store, mira.id, 1_000);
    let missing = ConversationId::new();

    let [question, _] = exchange(conversation.id, 2_000);
    let stray = new_message(missing, Role::Assistant, "to nowhere", 3_000);
    assert_not_found(
        store.append_messages(&[question.clone(), stray.clone()]),
        "conversation",
    );
    assert_not_found(
        store.append_messages(&[stray, question.clone()]),
        "conversation",
    );
    assert_eq!(
        count(store, conversation.id),
        0,
        "the valid message was not written"
    );
    assert_eq!(
        store.conversation(conversation.id).expect("get"),
        conversation,
        "no bump"
    );

    let first = exchange(conversation.id, 4_000);
    store.append_messages(&first).expect("append");
    let after_first = store.conversation(conversation.id).expect("get");
    let fresh = new_message(conversation.id, Role::User, "fresh", 9_000);
    let duplicate = Message {
        created_at: Timestamp(9_500),
        ..first[1].clone()
    };
    assert_conflict(store.append_messages(&[fresh.clone(), duplicate]));
    assert_eq!(all_messages(store, conversation.id), first.to_vec());
    assert_eq!(
        store.conversation(conversation.id).expect("get"),
        after_first,
        "no bump"
    );

    // The same message is fine once the batch is good.
    store.append_messages(&[fresh]).expect("append");
    assert_eq!(count(store, conversation.id), 3);
}

/// Messages come back ordered by `created_at`, equal times in append order, whatever order
/// they were appended in; a limit returns the last messages, still in chronological order.
pub fn messages_are_chronological_and_limit_keeps_the_last(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let conversation = add_conversation(store, mira.id, 1_000);
    let other = add_conversation(store, mira.id, 1_000);

    // 300 messages, three per timestamp, appended in batches of 1 to 4; every seventh batch
    // is appended in reverse time order, and the times jump back now and then.
    let mut appended = Vec::new();
    let mut i = 0_i64;
    let mut batch_no = 0_i64;
    while i < 300 {
        let size = (batch_no % 4 + 1).min(300 - i);
        let mut batch: Vec<Message> = (i..i + size)
            .map(|n| {
                let at = 10_000 + (n / 3) * 100 - if n % 50 == 49 { 5_000 } else { 0 };
                let role = if n % 2 == 0 {
                    Role::User
                } else {
                    Role::Assistant
                };
                new_message(conversation.id, role, &format!("message {n}"), at)
            })
            .collect();
        if batch_no % 7 == 0 {
            batch.reverse();
        }
        store.append_messages(&batch).expect("append");
        store
            .append_messages(&exchange(other.id, 10_000 + i))
            .expect("append to the other");
        appended.extend(batch);
        i += size;
        batch_no += 1;
    }
    let mut expected = appended;
    expected.sort_by_key(|m| m.created_at); // stable: equal times keep append order

    assert_eq!(count(store, conversation.id), 300);
    assert_eq!(all_messages(store, conversation.id), expected);
    for limit in [0, 1, 2, 7, 150, 299, 300, 301, 10_000] {
        let last = &expected[expected.len().saturating_sub(limit)..];
        assert_eq!(
            store
                .messages(conversation.id, Some(limit))
                .expect("messages"),
            last,
            "limit {limit}"
        );
    }
    assert_eq!(
        store
            .messages(conversation.id, Some(usize::MAX))
            .expect("messages"),
        expected
    );
    assert_eq!(
        count(store, other.id),
        2 * usize::try_from(batch_no).expect("small")
    );
}

/// Text of every kind comes back byte for byte: Unicode, emoji, control characters, SQL-like
/// text, blank text and 1 MiB of text.
pub fn text_round_trips_exactly(store: &dyn Store) {
    let mut big = String::with_capacity(1 << 20);
    while big.len() < (1 << 20) - 16 {
        big.push_str("Zeile ä€𝄞 👩‍👩‍👧‍👦\n\t");
    }
    let texts = [
        "",
        " ",
        "  leading and trailing spaces  ",
        "Héllo wörld — ünïcödé ✓ ß ﬁ İ",
        "👩‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👍🏽 thumbs, 🇫🇷",
        "日本語のテキスト、中文, العربية, עברית, ελληνικά, кириллица",
        "line one\nline two\r\nline three\rline four\n\n",
        "tabs\tquotes \" ' ` and \\ backslashes; DROP TABLE messages; --",
        "control \u{1}\u{7f} and a nul \u{0} inside",
        "combining e\u{301} vs é, zero\u{200b}width, rtl \u{202e}abc",
        big.as_str(),
    ];

    let mut companion = new_companion("Zoë 🦊", 1_000);
    companion.description = big.clone();
    companion.personality = "warm\nfunny 😄\r\n".to_owned();
    companion.speaking_style = texts[7].to_owned();
    companion.greeting = texts[4].to_owned();
    store.create_companion(&companion).expect("create");
    assert_eq!(store.companion(companion.id).expect("get"), companion);
    assert_eq!(
        store.companion_by_name("ZOË 🦊").expect("by name"),
        Some(companion.clone())
    );

    let mut conversation = new_conversation(companion.id, 1_000);
    conversation.title = Some(texts[6].to_owned());
    store.create_conversation(&conversation).expect("create");
    assert_eq!(
        store.conversation(conversation.id).expect("get"),
        conversation
    );

    let messages: Vec<Message> = texts
        .iter()
        .zip(2_000..)
        .map(|(text, at)| new_message(conversation.id, Role::User, text, at))
        .collect();
    for pair in messages.chunks(2) {
        store.append_messages(pair).expect("append");
    }
    let stored = all_messages(store, conversation.id);
    assert_eq!(stored.len(), texts.len());
    for (got, want) in stored.iter().zip(&messages) {
        assert!(
            got == want,
            "message {:?}… did not round-trip",
            want.text.get(..40)
        );
    }
}

/// Roles, token counts, extreme timestamps and ids come back unchanged.
pub fn message_fields_round_trip(store: &dyn Store) {
    let mira = add_companion(store, "Mira", i64::MIN);
    let conversation = add_conversation(store, mira.id, -1);
    let mut messages = vec![
        new_message(conversation.id, Role::System, "system", i64::MIN),
        new_message(conversation.id, Role::User, "user", -1),
        new_message(conversation.id, Role::Assistant, "assistant", 0),
        new_message(conversation.id, Role::Assistant, "max", i64::MAX),
    ];
    messages[1].token_count = 1;
    messages[2].token_count = 4_096;
    messages[3].token_count = u32::MAX;
    messages[0].id = MessageId(id("00000000-0000-0000-0000-000000000000").0);
    store.append_messages(&messages).expect("append");

    assert_eq!(all_messages(store, conversation.id), messages);
    assert_eq!(
        store.companion(mira.id).expect("get").created_at,
        Timestamp(i64::MIN)
    );
    assert_eq!(
        store.conversation(conversation.id).expect("get").updated_at,
        Timestamp(i64::MAX)
    );
}

// --- settings ---

/// Settings: missing is `None`; set, overwrite, delete (also a missing key), list by key.
pub fn settings_set_overwrite_delete_list(store: &dyn Store) {
    assert_eq!(store.setting("model").expect("get"), None);
    assert!(store.settings().expect("list").is_empty());

    store.set_setting("zeta", "last").expect("set");
    store.set_setting("model", "tiny").expect("set");
    store.set_setting("Beta", "").expect("set an empty value");
    store.set_setting("émoji 🎉", "multi\nline ✓").expect("set");
    store.set_setting("model", "small").expect("overwrite");

    assert_eq!(
        store.setting("model").expect("get"),
        Some("small".to_owned())
    );
    assert_eq!(store.setting("Beta").expect("get"), Some(String::new()));
    assert_eq!(
        store.setting("beta").expect("get"),
        None,
        "keys are case-sensitive"
    );
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    assert_eq!(
        store.settings().expect("list"),
        pairs(&[
            ("Beta", ""),
            ("model", "small"),
            ("zeta", "last"),
            ("émoji 🎉", "multi\nline ✓")
        ]),
        "sorted by key (byte order)"
    );

    store.delete_setting("model").expect("delete");
    store
        .delete_setting("model")
        .expect("deleting a missing key is fine");
    store
        .delete_setting("never set")
        .expect("deleting a missing key is fine");
    assert_eq!(store.setting("model").expect("get"), None);
    assert_eq!(
        store.settings().expect("list"),
        pairs(&[
            ("Beta", ""),
            ("zeta", "last"),
            ("émoji 🎉", "multi\nline ✓")
        ])
    );
}

// --- schema version 2: helpers ---

fn new_memory(companion: CompanionId, text: &str, at: i64) -> MemoryItem {
    MemoryItem {
        id: MemoryId::new(),
        companion_id: companion,
        text: text.to_owned(),
        kind: MemoryKind::Fact,
        subject: String::new(),
        importance: 0.5,
        pinned: false,
        embedding: vec![0.6, 0.8],
        source_message_ids: Vec::new(),
        created_at: Timestamp(at),
        updated_at: Timestamp(at),
        last_used_at: None,
        superseded_by: None,
    }
}

fn add_memory(store: &dyn Store, companion: CompanionId, text: &str, at: i64) -> MemoryItem {
    let memory = new_memory(companion, text, at);
    store.insert_memory(&memory).expect("insert memory");
    memory
}

/// Supersedes `old` by a new memory with this text; returns the new memory.
fn add_version(store: &dyn Store, old: &MemoryItem, text: &str, at: i64) -> MemoryItem {
    let new = new_memory(old.companion_id, text, at);
    store.supersede_memory(old.id, &new).expect("supersede");
    new
}

#[track_caller]
fn memories(
    store: &dyn Store,
    companion: CompanionId,
    include_superseded: bool,
) -> Vec<MemoryItem> {
    store
        .list_memories(companion, include_superseded)
        .expect("list memories")
}

#[track_caller]
fn texts(memories: &[MemoryItem]) -> Vec<&str> {
    memories.iter().map(|m| m.text.as_str()).collect()
}

#[track_caller]
fn get_memory(store: &dyn Store, id: MemoryId) -> MemoryItem {
    store.memory(id).expect("get memory")
}

fn memory_id(s: &str) -> MemoryId {
    s.parse().expect("valid test id")
}

/// A reply (assistant message) in `conversation`, appended.
fn add_reply(store: &dyn Store, conversation: ConversationId, at: i64) -> Message {
    let reply = new_message(conversation, Role::Assistant, "a reply", at);
    store
        .append_messages(std::slice::from_ref(&reply))
        .expect("append reply");
    reply
}

fn new_persona(companion: CompanionId, at: i64) -> PersonaState {
    PersonaState {
        companion_id: companion,
        traits: BTreeMap::from([
            ("openness".to_owned(), 0.7),
            ("conscientiousness".to_owned(), 0.4),
            ("extraversion".to_owned(), 0.55),
            ("agreeableness".to_owned(), 0.9),
            ("neuroticism".to_owned(), 0.2),
        ]),
        locked: BTreeSet::from(["agreeableness".to_owned()]),
        familiarity: 0.1,
        trust: 0.3,
        exchanges: 12,
        updated_at: Timestamp(at),
    }
}

fn new_change(companion: CompanionId, field: &str, at: i64) -> PersonaChange {
    PersonaChange {
        companion_id: companion,
        field: field.to_owned(),
        old: 0.25,
        new: 0.5,
        reason: format!("{field} changed at {at}"),
        at: Timestamp(at),
    }
}

#[track_caller]
fn history_fields(store: &dyn Store, companion: CompanionId, limit: Option<usize>) -> Vec<String> {
    store
        .persona_history(companion, limit)
        .expect("persona history")
        .into_iter()
        .map(|c| c.field)
        .collect()
}

fn new_summary(conversation: ConversationId, text: &str, at: i64) -> ConversationSummary {
    ConversationSummary {
        conversation_id: conversation,
        text: text.to_owned(),
        covered_messages: 10,
        token_count: 42,
        created_at: Timestamp(at),
    }
}

fn new_asset(companion: CompanionId, name: &str, bytes: &[u8]) -> CompanionAsset {
    CompanionAsset {
        companion_id: companion,
        name: name.to_owned(),
        media_type: "image/png".to_owned(),
        bytes: bytes.to_vec(),
    }
}

#[track_caller]
fn asset_names(store: &dyn Store, companion: CompanionId) -> Vec<String> {
    store
        .assets(companion)
        .expect("assets")
        .into_iter()
        .map(|a| a.name)
        .collect()
}

// --- character cards ---

/// A companion's card JSON comes back exactly (nested unknown fields, Unicode, escapes, big
/// and odd numbers as `serde_json` holds them), through create, update and clearing.
pub fn companion_card_round_trips(store: &dyn Store) {
    let beyond_u64: serde_json::Value =
        serde_json::from_str("123456789012345678901234567890").expect("a JSON number");
    let card = serde_json::json!({
        "name": "Zoë 🦊",
        "scenario": "A quiet café in 東京.\nRain outside.",
        "mes_example": "<START>\n{{user}}: hi\n{{char}}: *waves*",
        "tags": ["fox", "🦊", ""],
        "character_book": {
            "entries": [{"keys": ["tea", "Tee"], "content": "likes \"green\" tea", "order": 3}],
            "extensions": {}
        },
        "extensions": {
            "unknown_tool": {"nested": [1, {"deep": null}, [true, false]], "flag": true},
            "depth_prompt": {"prompt": "…", "depth": 4}
        },
        "numbers": {
            "u64_max": u64::MAX,
            "i64_min": i64::MIN,
            "tenth": 0.1,
            "huge": 1e300,
            "tiny": 5e-324,
            "negative_zero": -0.0,
            "beyond_u64": beyond_u64
        },
        "escapes": "quote \" backslash \\ nul \u{0} bell \u{7} separator \u{2028} rtl \u{202e}",
        "": "an empty key",
        "emoji key 🎉": [],
    });
    let mut zoe = new_companion("Zoë", 1_000);
    zoe.card = Some(card.clone());
    store.create_companion(&zoe).expect("create");
    assert_eq!(store.companion(zoe.id).expect("get"), zoe);
    assert_eq!(store.companion(zoe.id).expect("get").card, Some(card));
    assert_eq!(
        store.companion_by_name("zoë").expect("by name"),
        Some(zoe.clone())
    );
    assert_eq!(store.list_companions().expect("list"), vec![zoe.clone()]);

    let plain = add_companion(store, "Plain", 2_000);
    assert_eq!(store.companion(plain.id).expect("get").card, None);

    let changed = Companion {
        card: Some(serde_json::json!({"name": "Zoë", "description": "changed", "v": [3]})),
        updated_at: Timestamp(3_000),
        ..zoe.clone()
    };
    store.update_companion(&changed).expect("update the card");
    assert_eq!(store.companion(zoe.id).expect("get"), changed);

    let cleared = Companion {
        card: None,
        ..changed
    };
    store.update_companion(&cleared).expect("clear the card");
    assert_eq!(store.companion(zoe.id).expect("get"), cleared);

    let carded = Companion {
        card: Some(serde_json::json!({"spec": "chara_card_v3"})),
        ..plain
    };
    store.update_companion(&carded).expect("give a card");
    assert_eq!(store.companion(carded.id).expect("get"), carded);
}

// --- message ranges ---

/// `messages_range` is a window on the order of `messages` (time, then append order).
pub fn messages_range_is_a_chronological_slice(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let conversation = add_conversation(store, mira.id, 1_000);
    let other = add_conversation(store, mira.id, 1_000);
    assert!(
        store
            .messages_range(conversation.id, 0, 10)
            .expect("range")
            .is_empty()
    );
    // Appended out of time order, with ties, and another conversation interleaved.
    for n in 0..40_i64 {
        let at = 5_000 + (n % 7) * 100 + (n / 7);
        let batch = [
            new_message(conversation.id, Role::User, &format!("m{n}"), at),
            new_message(other.id, Role::User, &format!("o{n}"), at),
        ];
        store.append_messages(&batch).expect("append");
    }
    let all = all_messages(store, conversation.id);
    assert_eq!(all.len(), 40);
    for (start, limit) in [
        (0, 0),
        (0, 1),
        (0, 40),
        (0, 41),
        (3, 5),
        (10, 30),
        (39, 1),
        (39, 5),
        (40, 1),
        (41, 3),
        (0, usize::MAX),
        (usize::MAX, usize::MAX),
        (usize::MAX, 1),
    ] {
        let from = start.min(all.len());
        let to = from.saturating_add(limit).min(all.len());
        assert_eq!(
            store
                .messages_range(conversation.id, start, limit)
                .expect("range"),
            &all[from..to],
            "start {start}, limit {limit}"
        );
    }
}

// --- memories ---

/// Insert, read, list, update (keeping what the store manages) and the rule against moving a
/// memory to another companion.
pub fn memory_crud(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let nova = add_companion(store, "Nova", 1_000);
    assert!(memories(store, mira.id, true).is_empty());

    let sister = add_memory(store, mira.id, "The user's sister is called Anna.", 2_000);
    let coffee = add_memory(store, mira.id, "The user likes coffee.", 3_000);
    let novas = add_memory(store, nova.id, "The user plays chess.", 1_500);
    assert_eq!(get_memory(store, sister.id), sister);
    assert_eq!(
        memories(store, mira.id, false),
        vec![sister.clone(), coffee.clone()]
    );
    assert_eq!(memories(store, nova.id, true), vec![novas.clone()]);

    // The store keeps created_at, last_used_at and superseded_by; the rest is the user's edit.
    let reply = add_reply(store, add_conversation(store, mira.id, 1_000).id, 4_000);
    store
        .record_memories_used(reply.id, &[sister.id], Timestamp(5_000))
        .expect("record");
    let edited = MemoryItem {
        text: "The user's sister is called Anne.".to_owned(),
        kind: MemoryKind::Person,
        subject: "sister.name".to_owned(),
        importance: 0.9,
        pinned: true,
        embedding: vec![1.0, 0.0, 0.0],
        source_message_ids: vec![reply.id],
        updated_at: Timestamp(6_000),
        created_at: Timestamp(9_999),   // ignored
        last_used_at: None,             // ignored
        superseded_by: Some(coffee.id), // ignored
        ..sister.clone()
    };
    store.update_memory(&edited).expect("update");
    let expected = MemoryItem {
        created_at: sister.created_at,
        last_used_at: Some(Timestamp(5_000)),
        superseded_by: None,
        ..edited.clone()
    };
    assert_eq!(get_memory(store, sister.id), expected);
    assert_eq!(
        memories(store, mira.id, false),
        vec![expected.clone(), coffee.clone()]
    );

    let moved = MemoryItem {
        companion_id: nova.id,
        ..expected.clone()
    };
    assert_invalid(store.update_memory(&moved));
    assert_eq!(get_memory(store, sister.id), expected, "nothing changed");
    assert_eq!(memories(store, nova.id, true), vec![novas]);

    assert_not_found(
        store.update_memory(&new_memory(mira.id, "never inserted", 1)),
        "memory",
    );
    assert_eq!(store.delete_memories(&[coffee.id]).expect("delete"), 1);
    assert_not_found(store.memory(coffee.id), "memory");
    assert_eq!(memories(store, mira.id, true), vec![expected]);
}

/// Every field of a memory comes back exactly, embeddings bit for bit (384 dimensions, odd
/// values, empty), through insert, update and supersede.
pub fn memory_fields_round_trip(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let conversation = add_conversation(store, mira.id, 1_000);
    let [question, answer] = exchange(conversation.id, 2_000);
    store
        .append_messages(&[question.clone(), answer.clone()])
        .expect("append");

    let odd = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        f32::MIN_POSITIVE,
        f32::from_bits(1), // the smallest subnormal
        -f32::from_bits(0x007f_ffff),
        f32::MAX,
        f32::MIN,
        f32::EPSILON,
        1.0 / 3.0,
        std::f32::consts::PI,
    ];
    let big: Vec<f32> = (0..384_u16)
        .map(|i| {
            let x = f32::from(i);
            odd.get(usize::from(i))
                .copied()
                .unwrap_or((x * 0.37).sin() / 19.6)
        })
        .collect();
    let mut stored = Vec::new();
    for (n, kind) in MemoryKind::ALL.into_iter().enumerate() {
        let n_i64 = i64::try_from(n).expect("small");
        let mut memory = new_memory(
            mira.id,
            &format!("memory {n}: Zoë 🦊 \"quoted\"\nline"),
            n_i64,
        );
        memory.kind = kind;
        memory.subject = format!("subject/{}:ü", kind.as_str());
        memory.importance = [
            0.0,
            1.0,
            0.1,
            1.0 / 3.0,
            f32::MIN_POSITIVE,
            0.999_999_9,
            0.5,
        ][n];
        memory.pinned = n % 2 == 0;
        memory.embedding = match n {
            0 => Vec::new(),
            1 => big.clone(),
            2 => vec![f32::from_bits(1)],
            _ => big[n..n * 10].to_vec(),
        };
        memory.source_message_ids = match n {
            0 => Vec::new(),
            1 => vec![question.id, answer.id],
            _ => vec![answer.id, MessageId::new()], // sources may be missing messages
        };
        memory.created_at = Timestamp(
            [
                i64::MIN,
                -1,
                0,
                1,
                1_700_000_000_000,
                i64::MAX - 1,
                i64::MAX,
            ][n],
        );
        memory.updated_at = Timestamp(i64::MAX - n_i64);
        store.insert_memory(&memory).expect("insert");
        stored.push(memory);
    }
    store
        .record_memories_used(answer.id, &[stored[3].id], Timestamp(i64::MIN))
        .expect("record");
    stored[3].last_used_at = Some(Timestamp(i64::MIN));

    let bits = |m: &MemoryItem| m.embedding.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for want in &stored {
        let got = get_memory(store, want.id);
        assert_eq!(got, *want);
        assert_eq!(
            bits(&got),
            bits(want),
            "embedding of {:?} bit for bit",
            want.text
        );
    }
    assert_eq!(get_memory(store, stored[1].id).embedding.len(), 384);
    assert_eq!(
        memories(store, mira.id, true),
        stored,
        "sorted by created_at"
    );

    // Through update and supersede too.
    let updated = MemoryItem {
        embedding: big.iter().rev().copied().collect(),
        ..stored[0].clone()
    };
    store.update_memory(&updated).expect("update");
    assert_eq!(bits(&get_memory(store, updated.id)), bits(&updated));
    let mut newer = new_memory(mira.id, "newer", 5);
    newer.embedding = big.clone();
    store
        .supersede_memory(stored[2].id, &newer)
        .expect("supersede");
    assert_eq!(bits(&get_memory(store, newer.id)), bits(&newer));
}

/// `list_memories` is ordered by creation time, then id, whatever the insertion order.
pub fn memories_are_listed_oldest_first(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let nova = add_companion(store, "Nova", 1_000);
    let mut late = new_memory(mira.id, "late", 3_000);
    let mut tie_b = new_memory(mira.id, "tie b", 2_000);
    let mut tie_a = new_memory(mira.id, "tie a", 2_000);
    let mut early = new_memory(mira.id, "early", 1_000);
    tie_a.id = memory_id("01890000-0000-7000-8000-00000000000a");
    tie_b.id = memory_id("01890000-0000-7000-8000-00000000000b");
    late.id = memory_id("01890000-0000-7000-8000-000000000001");
    early.id = memory_id("01890000-0000-7000-8000-0000000000ff");
    for memory in [&late, &tie_b, &tie_a, &early] {
        store.insert_memory(memory).expect("insert");
        add_memory(store, nova.id, "someone else's", 1_500);
    }
    let expected = vec![early, tie_a, tie_b, late];
    assert_eq!(memories(store, mira.id, false), expected);
    assert_eq!(memories(store, mira.id, true), expected);
    assert_eq!(memories(store, nova.id, true).len(), 4);
}

/// Superseded versions leave the current list but stay in the history, linked to their
/// successors and otherwise unchanged.
pub fn superseded_memories_stay_in_the_history(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let first = add_memory(store, mira.id, "Lives in Lyon.", 1_000);
    let other = add_memory(store, mira.id, "Has a cat.", 1_500);
    let second = add_version(store, &first, "Lives in Paris.", 2_000);
    let third = add_version(store, &second, "Lives in Berlin.", 3_000);

    assert_eq!(
        texts(&memories(store, mira.id, false)),
        ["Has a cat.", "Lives in Berlin."]
    );
    assert_eq!(
        texts(&memories(store, mira.id, true)),
        [
            "Lives in Lyon.",
            "Has a cat.",
            "Lives in Paris.",
            "Lives in Berlin."
        ]
    );
    let superseded = |m: &MemoryItem, by: &MemoryItem| MemoryItem {
        superseded_by: Some(by.id),
        ..m.clone()
    };
    assert_eq!(get_memory(store, first.id), superseded(&first, &second));
    assert_eq!(get_memory(store, second.id), superseded(&second, &third));
    assert_eq!(get_memory(store, third.id), third);
    assert_eq!(get_memory(store, other.id), other);

    // A user's edit of an old version keeps it superseded.
    let edited = MemoryItem {
        text: "Lived in Lyon.".to_owned(),
        ..first.clone()
    };
    store.update_memory(&edited).expect("edit an old version");
    assert_eq!(get_memory(store, first.id), superseded(&edited, &second));
    assert_eq!(memories(store, mira.id, false).len(), 2);
}

/// `supersede_memory` refuses a missing, foreign or already superseded `old`, an invalid or
/// taken `new`, and then writes nothing: neither the new memory nor the link.
pub fn superseding_checks_its_rules_and_writes_nothing_on_failure(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let nova = add_companion(store, "Nova", 1_000);
    let old = add_memory(store, mira.id, "old", 1_000);
    let novas = add_memory(store, nova.id, "Nova's", 1_000);

    let candidate = new_memory(mira.id, "new", 2_000);
    assert_not_found(
        store.supersede_memory(MemoryId::new(), &candidate),
        "memory",
    );
    assert_invalid(store.supersede_memory(novas.id, &candidate));
    let blank = MemoryItem {
        text: " ".to_owned(),
        ..candidate.clone()
    };
    assert_invalid(store.supersede_memory(old.id, &blank));
    let pre_superseded = MemoryItem {
        superseded_by: Some(novas.id),
        ..candidate.clone()
    };
    assert_invalid(store.supersede_memory(old.id, &pre_superseded));
    let taken = MemoryItem {
        id: novas.id,
        ..candidate.clone()
    };
    assert_conflict(store.supersede_memory(old.id, &taken));
    let itself = MemoryItem {
        id: old.id,
        ..candidate.clone()
    };
    assert_conflict(store.supersede_memory(old.id, &itself));
    assert_not_found(store.memory(candidate.id), "memory");
    assert_eq!(memories(store, mira.id, true), vec![old.clone()]);
    assert_eq!(memories(store, nova.id, true), vec![novas]);

    store
        .supersede_memory(old.id, &candidate)
        .expect("supersede");
    // The versions of a fact form one chain: an old version cannot be superseded again.
    let fork = new_memory(mira.id, "fork", 3_000);
    assert_conflict(store.supersede_memory(old.id, &fork));
    assert_not_found(store.memory(fork.id), "memory");
    assert_eq!(get_memory(store, old.id).superseded_by, Some(candidate.id));
    assert_eq!(memories(store, mira.id, false), vec![candidate]);
}

/// Inserting a memory with an id that exists fails and changes nothing.
pub fn duplicate_memory_ids_conflict(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let nova = add_companion(store, "Nova", 1_000);
    let memory = add_memory(store, mira.id, "original", 1_000);
    let twin = MemoryItem {
        text: "twin".to_owned(),
        ..memory.clone()
    };
    assert_conflict(store.insert_memory(&twin));
    let elsewhere = MemoryItem {
        companion_id: nova.id,
        ..twin
    };
    assert_conflict(store.insert_memory(&elsewhere));
    assert_eq!(memories(store, mira.id, true), vec![memory]);
    assert!(memories(store, nova.id, true).is_empty());
}

/// [`MemoryItem::validate`] runs on insert, update and supersede; rejected data is not stored.
pub fn invalid_memories_are_rejected(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let too_long = "x".repeat(MemoryItem::MAX_TEXT_CHARS + 1);
    let longest = "é".repeat(MemoryItem::MAX_TEXT_CHARS); // 2,000 characters, 4,000 bytes
    let base = new_memory(mira.id, "fine", 1_000);
    let mut bad = Vec::new();
    for text in ["", "   ", "\n\t", too_long.as_str()] {
        bad.push(MemoryItem {
            text: text.to_owned(),
            ..base.clone()
        });
    }
    for importance in [
        -0.01,
        1.01,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -1.0,
        2.0,
    ] {
        bad.push(MemoryItem {
            importance,
            ..base.clone()
        });
    }
    for value in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut embedding = vec![0.1; 384];
        embedding[200] = value;
        bad.push(MemoryItem {
            embedding,
            ..base.clone()
        });
    }
    for memory in &bad {
        assert_invalid(store.insert_memory(memory));
    }
    let already_superseded = MemoryItem {
        superseded_by: Some(MemoryId::new()),
        ..base.clone()
    };
    assert_invalid(store.insert_memory(&already_superseded));
    assert!(
        memories(store, mira.id, true).is_empty(),
        "nothing invalid was stored"
    );

    let ok = MemoryItem {
        text: longest,
        importance: 1.0,
        ..base.clone()
    };
    store
        .insert_memory(&ok)
        .expect("the limits themselves are fine");
    let zero = MemoryItem {
        id: MemoryId::new(),
        importance: 0.0,
        ..base
    };
    store.insert_memory(&zero).expect("importance 0 is fine");
    for memory in &bad {
        let changed = MemoryItem {
            id: ok.id,
            ..memory.clone()
        };
        assert_invalid(store.update_memory(&changed));
        let fresh = MemoryItem {
            id: MemoryId::new(),
            ..memory.clone()
        };
        assert_invalid(store.supersede_memory(zero.id, &fresh));
    }
    assert_eq!(memories(store, mira.id, true), vec![ok, zero]);
}

/// Forgetting the current version of a fact deletes its older versions too (nothing comes back
/// as current) and the reply records of all of them; other memories stay.
pub fn forgetting_a_current_memory_forgets_its_history(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let nova = add_companion(store, "Nova", 1_000);
    let first = add_memory(store, mira.id, "Lives in Lyon.", 1_000);
    let second = add_version(store, &first, "Lives in Paris.", 2_000);
    let third = add_version(store, &second, "Lives in Berlin.", 3_000);
    let cat = add_memory(store, mira.id, "Has a cat.", 1_500);
    let novas = add_memory(store, nova.id, "Plays chess.", 1_000);
    let reply = add_reply(store, add_conversation(store, mira.id, 1_000).id, 4_000);
    store
        .record_memories_used(reply.id, &[third.id, cat.id, first.id], Timestamp(5_000))
        .expect("record");

    assert_eq!(store.delete_memories(&[]).expect("nothing"), 0);
    assert_eq!(
        store.delete_memories(&[MemoryId::new()]).expect("missing"),
        0
    );
    assert_eq!(
        store
            .delete_memories(&[third.id, MemoryId::new(), third.id])
            .expect("forget"),
        3,
        "the current version and its two older versions"
    );
    for gone in [&first, &second, &third] {
        assert_not_found(store.memory(gone.id), "memory");
    }
    assert_eq!(texts(&memories(store, mira.id, true)), ["Has a cat."]);
    assert_eq!(store.memories_used(reply.id).expect("used"), vec![cat.id]);
    assert_eq!(memories(store, nova.id, true), vec![novas]);

    // Forgetting a memory and one of its older versions in one call counts each once.
    let a = add_memory(store, mira.id, "a", 6_000);
    let b = add_version(store, &a, "b", 7_000);
    assert_eq!(store.delete_memories(&[a.id, b.id]).expect("forget"), 2);
    assert_eq!(store.delete_memories(&[a.id, b.id]).expect("again"), 0);
    assert_eq!(texts(&memories(store, mira.id, true)), ["Has a cat."]);

    // The ids of forgotten memories are free again.
    store.insert_memory(&first).expect("reuse a forgotten id");
}

/// Forgetting an older version removes only it: the version before it is now superseded by the
/// one after it, and the current version stays current.
pub fn forgetting_an_old_version_relinks_the_history(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let v1 = add_memory(store, mira.id, "v1", 1_000);
    let v2 = add_version(store, &v1, "v2", 2_000);
    let v3 = add_version(store, &v2, "v3", 3_000);
    let v4 = add_version(store, &v3, "v4", 4_000);
    let v5 = add_version(store, &v4, "v5", 5_000);

    assert_eq!(store.delete_memories(&[v2.id]).expect("forget v2"), 1);
    assert_eq!(get_memory(store, v1.id).superseded_by, Some(v3.id));
    assert_eq!(
        texts(&memories(store, mira.id, true)),
        ["v1", "v3", "v4", "v5"]
    );
    assert_eq!(texts(&memories(store, mira.id, false)), ["v5"]);

    // Two neighbours at once: v3 and v4 go, v1 now points to v5.
    assert_eq!(store.delete_memories(&[v4.id, v3.id]).expect("forget"), 2);
    assert_eq!(get_memory(store, v1.id).superseded_by, Some(v5.id));
    assert_eq!(get_memory(store, v5.id).superseded_by, None);

    // The oldest version: nothing to relink.
    assert_eq!(store.delete_memories(&[v1.id]).expect("forget v1"), 1);
    assert_eq!(
        memories(store, mira.id, true),
        vec![get_memory(store, v5.id)]
    );
    let v6 = add_version(store, &v5, "v6", 6_000);
    assert_eq!(texts(&memories(store, mira.id, false)), [v6.text.as_str()]);
}

/// A reply's record lists its memories in the given order (repeats once), a new record
/// replaces the old one, and the recorded memories get `last_used_at`.
pub fn memory_use_records_replace_and_stamp_last_used_at(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let conversation = add_conversation(store, mira.id, 1_000);
    let reply = add_reply(store, conversation.id, 2_000);
    let other_reply = add_reply(store, conversation.id, 3_000);
    let m1 = add_memory(store, mira.id, "one", 1_000);
    let m2 = add_memory(store, mira.id, "two", 1_000);
    let m3 = add_memory(store, mira.id, "three", 1_000);
    let old = add_memory(store, mira.id, "old", 500);
    add_version(store, &old, "new", 600);

    assert!(store.memories_used(reply.id).expect("used").is_empty());
    store
        .record_memories_used(reply.id, &[m2.id, m1.id, m2.id, old.id], Timestamp(5_000))
        .expect("record");
    assert_eq!(
        store.memories_used(reply.id).expect("used"),
        vec![m2.id, m1.id, old.id],
        "in the given order, repeats once, superseded memories allowed"
    );
    for used in [&m1, &m2, &old] {
        assert_eq!(
            get_memory(store, used.id).last_used_at,
            Some(Timestamp(5_000))
        );
    }
    assert_eq!(get_memory(store, m3.id).last_used_at, None);

    store
        .record_memories_used(other_reply.id, &[m1.id], Timestamp(6_000))
        .expect("record");
    store
        .record_memories_used(reply.id, &[m3.id], Timestamp(7_000))
        .expect("re-record");
    assert_eq!(store.memories_used(reply.id).expect("used"), vec![m3.id]);
    assert_eq!(
        store.memories_used(other_reply.id).expect("used"),
        vec![m1.id]
    );
    assert_eq!(
        get_memory(store, m1.id).last_used_at,
        Some(Timestamp(6_000))
    );
    assert_eq!(
        get_memory(store, m2.id).last_used_at,
        Some(Timestamp(5_000)),
        "kept"
    );
    assert_eq!(
        get_memory(store, m3.id).last_used_at,
        Some(Timestamp(7_000))
    );

    // `at` is taken as given, also when it is older (the store does not second-guess clocks).
    store
        .record_memories_used(other_reply.id, &[m1.id], Timestamp(10))
        .expect("record");
    assert_eq!(get_memory(store, m1.id).last_used_at, Some(Timestamp(10)));

    store
        .record_memories_used(reply.id, &[], Timestamp(8_000))
        .expect("clear");
    assert!(store.memories_used(reply.id).expect("used").is_empty());
    assert_eq!(
        get_memory(store, m3.id).last_used_at,
        Some(Timestamp(7_000))
    );
}

/// A record needs an existing reply and existing memories of the reply's companion; a refused
/// record changes nothing.
pub fn memory_use_records_check_their_memories(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let nova = add_companion(store, "Nova", 1_000);
    let reply = add_reply(store, add_conversation(store, mira.id, 1_000).id, 2_000);
    let mine = add_memory(store, mira.id, "mine", 1_000);
    let novas = add_memory(store, nova.id, "Nova's", 1_000);
    store
        .record_memories_used(reply.id, &[mine.id], Timestamp(3_000))
        .expect("record");

    assert_not_found(
        store.record_memories_used(MessageId::new(), &[mine.id], Timestamp(4_000)),
        "message",
    );
    assert_not_found(
        store.record_memories_used(reply.id, &[mine.id, MemoryId::new()], Timestamp(4_000)),
        "memory",
    );
    assert_invalid(store.record_memories_used(reply.id, &[mine.id, novas.id], Timestamp(4_000)));
    assert_not_found(store.memories_used(MessageId::new()), "message");

    assert_eq!(store.memories_used(reply.id).expect("used"), vec![mine.id]);
    assert_eq!(
        get_memory(store, mine.id).last_used_at,
        Some(Timestamp(3_000))
    );
    assert_eq!(get_memory(store, novas.id).last_used_at, None);
}

// --- persona ---

/// The persona state is `None` until saved, round-trips exactly and is replaced by the next
/// save; each companion has its own.
pub fn persona_state_round_trips_and_is_replaced(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let nova = add_companion(store, "Nova", 1_000);
    assert_eq!(store.persona_state(mira.id).expect("state"), None);

    let mut state = new_persona(mira.id, 2_000);
    state.traits.insert("humour 😄".to_owned(), 1.0 / 3.0);
    state.traits.insert("zero".to_owned(), 0.0);
    state.traits.insert("one".to_owned(), 1.0);
    state.locked.insert("humour 😄".to_owned());
    state.exchanges = u64::try_from(i64::MAX).expect("fits");
    store.save_persona_state(&state, &[]).expect("save");
    assert_eq!(
        store.persona_state(mira.id).expect("state"),
        Some(state.clone())
    );
    assert_eq!(store.persona_state(nova.id).expect("state"), None);

    let next = PersonaState {
        traits: BTreeMap::from([("openness".to_owned(), f32::MIN_POSITIVE)]),
        locked: BTreeSet::new(),
        familiarity: 1.0,
        trust: 0.0,
        exchanges: 0,
        updated_at: Timestamp(3_000),
        ..state
    };
    store.save_persona_state(&next, &[]).expect("save again");
    assert_eq!(store.persona_state(mira.id).expect("state"), Some(next));
    assert!(
        store
            .persona_history(mira.id, None)
            .expect("history")
            .is_empty()
    );
}

/// The history lists changes by time, equal times in the order saved; a limit keeps the newest;
/// each companion has its own.
pub fn persona_history_is_chronological_and_limit_keeps_the_newest(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let nova = add_companion(store, "Nova", 1_000);
    let state = new_persona(mira.id, 2_000);
    let change = |field: &str, at| new_change(mira.id, field, at);
    store
        .save_persona_state(
            &state,
            &[change("a", 2_000), change("b", 1_000), change("c", 2_000)],
        )
        .expect("save");
    store
        .save_persona_state(
            &new_persona(nova.id, 1),
            &[new_change(nova.id, "nova", 1_500)],
        )
        .expect("save");
    store
        .save_persona_state(
            &state,
            &[change("d", 1_500), change("e", 2_000), change("f", 9_000)],
        )
        .expect("save");
    // Changes from before the clock was set.
    store
        .save_persona_state(&state, &[change("g", -5)])
        .expect("save");

    assert_eq!(
        history_fields(store, mira.id, None),
        ["g", "b", "d", "a", "c", "e", "f"]
    );
    assert_eq!(history_fields(store, mira.id, Some(3)), ["c", "e", "f"]);
    assert_eq!(history_fields(store, mira.id, Some(1)), ["f"]);
    assert!(history_fields(store, mira.id, Some(0)).is_empty());
    assert_eq!(history_fields(store, mira.id, Some(7)).len(), 7);
    assert_eq!(history_fields(store, mira.id, Some(usize::MAX)).len(), 7);
    assert_eq!(history_fields(store, nova.id, None), ["nova"]);

    let full = PersonaChange {
        old: -0.5,
        new: 1e30,
        reason: "user shared something personal 🙂\nline two".to_owned(),
        ..new_change(mira.id, "lock:openness", 10_000)
    };
    store
        .save_persona_state(&state, std::slice::from_ref(&full))
        .expect("save");
    assert_eq!(
        store.persona_history(mira.id, Some(1)).expect("history"),
        vec![full],
        "every field round-trips"
    );
}

/// [`PersonaState::validate`] and [`PersonaChange::validate`] run on save; a refused save
/// stores neither the state nor any change.
pub fn invalid_persona_states_are_rejected(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let nova = add_companion(store, "Nova", 1_000);
    let good = new_persona(mira.id, 2_000);
    let ok_change = new_change(mira.id, "openness", 2_000);
    let mut bad_states = Vec::new();
    for score in [-0.01, 1.01, f32::NAN, f32::INFINITY] {
        let mut state = good.clone();
        state.traits.insert("openness".to_owned(), score);
        bad_states.push(state);
        bad_states.push(PersonaState {
            familiarity: score,
            ..good.clone()
        });
        bad_states.push(PersonaState {
            trust: score,
            ..good.clone()
        });
    }
    let mut blank_trait = good.clone();
    blank_trait.traits.insert(" ".to_owned(), 0.5);
    bad_states.push(blank_trait);
    bad_states.push(PersonaState {
        exchanges: u64::MAX,
        ..good.clone()
    });
    for state in &bad_states {
        assert_invalid(store.save_persona_state(state, std::slice::from_ref(&ok_change)));
    }
    let bad_changes = [
        PersonaChange {
            old: f32::NAN,
            ..ok_change.clone()
        },
        PersonaChange {
            new: f32::INFINITY,
            ..ok_change.clone()
        },
        PersonaChange {
            field: String::new(),
            ..ok_change.clone()
        },
        PersonaChange {
            companion_id: nova.id,
            ..ok_change.clone()
        },
    ];
    for change in &bad_changes {
        assert_invalid(store.save_persona_state(&good, &[ok_change.clone(), change.clone()]));
    }
    assert_eq!(store.persona_state(mira.id).expect("state"), None);
    assert!(
        store
            .persona_history(mira.id, None)
            .expect("history")
            .is_empty()
    );
    assert!(
        store
            .persona_history(nova.id, None)
            .expect("history")
            .is_empty()
    );
}

// --- summaries ---

/// The latest summary is the one with the greatest `created_at`, of equal times the one saved
/// last; each conversation has its own.
pub fn latest_summary_is_the_newest_saved(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let conversation = add_conversation(store, mira.id, 1_000);
    let other = add_conversation(store, mira.id, 1_000);
    assert_eq!(store.latest_summary(conversation.id).expect("latest"), None);

    let first = ConversationSummary {
        covered_messages: 0,
        token_count: u32::MAX,
        ..new_summary(
            conversation.id,
            "Zoë and the user met. 🦊\n\"Quotes\"",
            1_000,
        )
    };
    store.save_summary(&first).expect("save");
    assert_eq!(
        store.latest_summary(conversation.id).expect("latest"),
        Some(first)
    );
    let newest = new_summary(conversation.id, "newest", 3_000);
    store.save_summary(&newest).expect("save");
    store
        .save_summary(&new_summary(conversation.id, "older, saved later", 2_000))
        .expect("save");
    assert_eq!(
        store.latest_summary(conversation.id).expect("latest"),
        Some(newest)
    );

    let tie = ConversationSummary {
        covered_messages: 40,
        ..new_summary(conversation.id, "same time, saved last", 3_000)
    };
    store.save_summary(&tie).expect("save");
    assert_eq!(
        store.latest_summary(conversation.id).expect("latest"),
        Some(tie)
    );
    assert_eq!(store.latest_summary(other.id).expect("latest"), None);

    if u64::try_from(usize::MAX).is_ok_and(|max| max > i64::MAX.unsigned_abs()) {
        let too_many = ConversationSummary {
            covered_messages: usize::MAX,
            ..new_summary(other.id, "covers too much", 1)
        };
        assert_invalid(store.save_summary(&too_many));
        assert_eq!(store.latest_summary(other.id).expect("latest"), None);
    }
}

// --- assets ---

/// `put_asset` replaces the asset with the same name (case-sensitive); assets are listed by
/// name; bytes of any kind round-trip; deleting a missing asset is fine.
pub fn assets_are_replaced_by_name_and_sorted_by_name(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let nova = add_companion(store, "Nova", 1_000);
    assert!(store.assets(mira.id).expect("assets").is_empty());

    let all_bytes: Vec<u8> = (0..=255_u8).cycle().take(1 << 20).collect();
    for name in [
        "b.png",
        "avatar.png",
        "assets/icon/main.png",
        "Z.png",
        "é.png",
        "a.PNG",
    ] {
        store
            .put_asset(&new_asset(mira.id, name, name.as_bytes()))
            .expect("put");
    }
    let novas = new_asset(nova.id, "avatar.png", b"nova's avatar");
    store.put_asset(&novas).expect("put");
    assert_eq!(
        asset_names(store, mira.id),
        [
            "Z.png",
            "a.PNG",
            "assets/icon/main.png",
            "avatar.png",
            "b.png",
            "é.png"
        ],
        "byte order"
    );

    let replaced = CompanionAsset {
        media_type: "image/webp".to_owned(),
        bytes: all_bytes,
        ..new_asset(mira.id, "avatar.png", b"")
    };
    store.put_asset(&replaced).expect("replace");
    let empty = new_asset(mira.id, "empty", b"");
    store.put_asset(&empty).expect("an empty asset");
    let listed = store.assets(mira.id).expect("assets");
    assert_eq!(listed.len(), 7);
    assert!(listed.contains(&replaced), "the replacement, byte for byte");
    assert!(listed.contains(&empty));
    assert_eq!(store.assets(nova.id).expect("assets"), vec![novas.clone()]);

    store.delete_asset(mira.id, "avatar.png").expect("delete");
    store
        .delete_asset(mira.id, "avatar.png")
        .expect("again: fine");
    store
        .delete_asset(mira.id, "AVATAR.PNG")
        .expect("missing: fine");
    assert_eq!(
        asset_names(store, mira.id),
        [
            "Z.png",
            "a.PNG",
            "assets/icon/main.png",
            "b.png",
            "empty",
            "é.png"
        ]
    );
    assert_eq!(store.assets(nova.id).expect("assets"), vec![novas]);
}

/// [`CompanionAsset::validate`] runs on put: names stay inside the companion's folder, and an
/// asset has at most [`CompanionAsset::MAX_BYTES`] bytes. Nothing invalid is stored.
pub fn invalid_assets_are_rejected(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let too_long = "n".repeat(CompanionAsset::MAX_NAME_CHARS + 1);
    for name in [
        "",
        "  ",
        "/etc/passwd",
        "\\\\server\\share",
        "..",
        "../escape.png",
        "assets/../../escape.png",
        "assets\\..\\escape.png",
        "a/..",
        "new\nline.png",
        "nul\u{0}.png",
        too_long.as_str(),
    ] {
        assert_invalid(store.put_asset(&new_asset(mira.id, name, b"x")));
    }
    let oversized = vec![7_u8; CompanionAsset::MAX_BYTES + 1];
    assert_invalid(store.put_asset(&new_asset(mira.id, "big.bin", &oversized)));
    assert!(store.assets(mira.id).expect("assets").is_empty());

    let longest = "é".repeat(CompanionAsset::MAX_NAME_CHARS);
    for name in ["..hidden", "a..b/c.png", "./here.png", longest.as_str()] {
        store
            .put_asset(&new_asset(mira.id, name, b"x"))
            .expect("a fine name");
    }
    let largest = new_asset(mira.id, "largest.bin", &oversized[1..]);
    store.put_asset(&largest).expect("the largest asset");
    let stored = store.assets(mira.id).expect("assets");
    assert_eq!(stored.len(), 5);
    assert!(stored.contains(&largest));
}

// --- missing parents, cascades, wipe ---

/// Every new method given a missing id fails with `NotFound` for the right entity, and writes
/// nothing.
pub fn missing_parents_of_memories_personas_summaries_assets_are_not_found(store: &dyn Store) {
    let ghost = CompanionId::new();
    let orphan_conversation = ConversationId::new();
    let memory = new_memory(ghost, "orphan", 1_000);

    assert_not_found(
        store.messages_range(orphan_conversation, 0, 10),
        "conversation",
    );
    assert_not_found(store.insert_memory(&memory), "companion");
    assert_not_found(store.update_memory(&memory), "memory");
    assert_not_found(store.supersede_memory(MemoryId::new(), &memory), "memory");
    assert_not_found(store.memory(memory.id), "memory");
    assert_not_found(store.list_memories(ghost, true), "companion");
    assert_not_found(store.list_memories(ghost, false), "companion");
    assert_eq!(store.delete_memories(&[memory.id]).expect("ignored"), 0);
    assert_not_found(
        store.record_memories_used(MessageId::new(), &[], Timestamp(1)),
        "message",
    );
    assert_not_found(store.memories_used(MessageId::new()), "message");
    assert_not_found(store.persona_state(ghost), "companion");
    assert_not_found(
        store.save_persona_state(&new_persona(ghost, 1), &[new_change(ghost, "trust", 1)]),
        "companion",
    );
    assert_not_found(store.persona_history(ghost, None), "companion");
    assert_not_found(store.latest_summary(orphan_conversation), "conversation");
    assert_not_found(
        store.save_summary(&new_summary(orphan_conversation, "x", 1)),
        "conversation",
    );
    assert_not_found(
        store.put_asset(&new_asset(ghost, "a.png", b"x")),
        "companion",
    );
    assert_not_found(store.assets(ghost), "companion");
    assert_not_found(store.delete_asset(ghost, "a.png"), "companion");

    // A companion that exists does not make another's data appear.
    let mira = add_companion(store, "Mira", 1_000);
    let stray = new_memory(mira.id, "stray", 1);
    assert_not_found(store.supersede_memory(MemoryId::new(), &stray), "memory");
    assert!(
        memories(store, mira.id, true).is_empty(),
        "failed calls wrote nothing"
    );
}

/// Everything of one companion, for comparing before and after.
#[derive(Debug, PartialEq)]
struct Owned {
    companion: Companion,
    memories: Vec<MemoryItem>,
    uses: Vec<Vec<MemoryId>>,
    persona: Option<PersonaState>,
    history: Vec<PersonaChange>,
    summaries: Vec<Option<ConversationSummary>>,
    assets: Vec<CompanionAsset>,
    messages: Vec<Vec<Message>>,
}

/// Gives a companion one of everything; returns its conversation and reply.
fn populate(store: &dyn Store, companion: &Companion, at: i64) -> (Conversation, Message) {
    let conversation = add_conversation(store, companion.id, at);
    let reply = add_reply(store, conversation.id, at + 1);
    let old = add_memory(store, companion.id, &format!("{} old", companion.name), at);
    let new = add_version(store, &old, &format!("{} new", companion.name), at + 2);
    let other = add_memory(
        store,
        companion.id,
        &format!("{} other", companion.name),
        at,
    );
    store
        .record_memories_used(reply.id, &[new.id, other.id], Timestamp(at + 3))
        .expect("record");
    store
        .save_persona_state(
            &new_persona(companion.id, at),
            &[new_change(companion.id, "trust", at)],
        )
        .expect("persona");
    store
        .save_summary(&new_summary(
            conversation.id,
            &format!("{} summary", companion.name),
            at,
        ))
        .expect("summary");
    store
        .put_asset(&new_asset(
            companion.id,
            "avatar.png",
            companion.name.as_bytes(),
        ))
        .expect("asset");
    (conversation, reply)
}

fn owned(store: &dyn Store, companion: CompanionId) -> Owned {
    let conversations = store.list_conversations(companion).expect("conversations");
    let mut uses = Vec::new();
    let mut messages = Vec::new();
    let mut summaries = Vec::new();
    for conversation in &conversations {
        let list = all_messages(store, conversation.id);
        for message in &list {
            uses.push(store.memories_used(message.id).expect("used"));
        }
        messages.push(list);
        summaries.push(store.latest_summary(conversation.id).expect("summary"));
    }
    Owned {
        companion: store.companion(companion).expect("companion"),
        memories: memories(store, companion, true),
        uses,
        persona: store.persona_state(companion).expect("persona"),
        history: store.persona_history(companion, None).expect("history"),
        summaries,
        assets: store.assets(companion).expect("assets"),
        messages,
    }
}

/// Deleting a companion deletes its memories (all versions), their reply records, its persona
/// state and history, its summaries and assets; another companion's data stays as it was, and
/// a new companion with the same id starts empty.
pub fn deleting_a_companion_deletes_everything_it_owns(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let nova = add_companion(store, "Nova", 1_000);
    let (conversation, reply) = populate(store, &mira, 2_000);
    populate(store, &nova, 3_000);
    let doomed = memories(store, mira.id, true);
    assert_eq!(doomed.len(), 3);
    let novas = owned(store, nova.id);

    store.delete_companion(mira.id).expect("delete");

    for memory in &doomed {
        assert_not_found(store.memory(memory.id), "memory");
    }
    assert_not_found(store.memories_used(reply.id), "message");
    assert_not_found(store.latest_summary(conversation.id), "conversation");
    assert_not_found(store.persona_state(mira.id), "companion");
    assert_not_found(store.assets(mira.id), "companion");
    assert_eq!(owned(store, nova.id), novas);

    let again = Companion {
        id: mira.id,
        ..new_companion("Mira", 5_000)
    };
    store.create_companion(&again).expect("same id again");
    assert!(memories(store, mira.id, true).is_empty());
    assert_eq!(store.persona_state(mira.id).expect("persona"), None);
    assert!(
        store
            .persona_history(mira.id, None)
            .expect("history")
            .is_empty()
    );
    assert!(store.assets(mira.id).expect("assets").is_empty());
    for memory in &doomed {
        // Reusable ids prove the rows are gone, not hidden.
        let reused = MemoryItem {
            superseded_by: None,
            last_used_at: None,
            ..memory.clone()
        };
        store.insert_memory(&reused).expect("reuse a memory id");
    }
}

/// Deleting a conversation deletes its summaries and the reply records of its messages; the
/// memories themselves stay (with their `last_used_at`).
pub fn deleting_a_conversation_deletes_its_summaries_and_memory_records(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let doomed = add_conversation(store, mira.id, 1_000);
    let kept = add_conversation(store, mira.id, 1_000);
    let doomed_reply = add_reply(store, doomed.id, 2_000);
    let kept_reply = add_reply(store, kept.id, 2_000);
    let memory = add_memory(store, mira.id, "stays", 1_000);
    for reply in [&doomed_reply, &kept_reply] {
        store
            .record_memories_used(reply.id, &[memory.id], Timestamp(3_000))
            .expect("record");
    }
    let kept_summary = new_summary(kept.id, "kept", 4_000);
    store
        .save_summary(&new_summary(doomed.id, "doomed", 4_000))
        .expect("summary");
    store.save_summary(&kept_summary).expect("summary");

    store.delete_conversation(doomed.id).expect("delete");

    assert_not_found(store.latest_summary(doomed.id), "conversation");
    assert_not_found(store.memories_used(doomed_reply.id), "message");
    assert_eq!(
        store.memories_used(kept_reply.id).expect("used"),
        vec![memory.id]
    );
    assert_eq!(
        store.latest_summary(kept.id).expect("summary"),
        Some(kept_summary)
    );
    assert_eq!(
        get_memory(store, memory.id).last_used_at,
        Some(Timestamp(3_000))
    );

    // The message id is free again, and has no record.
    let again = add_conversation(store, mira.id, 5_000);
    let reused = Message {
        conversation_id: again.id,
        ..doomed_reply
    };
    store
        .append_messages(std::slice::from_ref(&reused))
        .expect("reuse the message id");
    assert!(store.memories_used(reused.id).expect("used").is_empty());
}

/// `wipe` deletes every companion with everything it owns and every setting; the store then
/// works like a new one (also the names and ids of the wiped data), and wiping again is fine.
pub fn wipe_leaves_an_empty_usable_store(store: &dyn Store) {
    store.wipe().expect("wiping an empty store");
    let mut mira = new_companion("Mira", 1_000);
    mira.card = Some(serde_json::json!({"name": "Mira", "tags": ["owl"]}));
    store.create_companion(&mira).expect("create");
    let nova = add_companion(store, "Nova", 1_000);
    let (conversation, reply) = populate(store, &mira, 2_000);
    populate(store, &nova, 3_000);
    let memory = memories(store, mira.id, true).remove(0);
    store.set_setting("model", "tiny").expect("setting");
    store.set_setting("theme", "dark").expect("setting");
    let entry = new_journal_entry(EmotionSource::Text, 2_500);
    store
        .add_journal_entries(std::slice::from_ref(&entry))
        .expect("journal");

    store.wipe().expect("wipe");
    assert!(
        store
            .journal(Timestamp(i64::MIN), Timestamp(i64::MAX))
            .expect("journal")
            .is_empty(),
        "the journal is wiped"
    );
    store
        .add_journal_entries(&[entry])
        .expect("the old journal id is free");

    assert!(store.list_companions().expect("list").is_empty());
    assert!(store.settings().expect("settings").is_empty());
    assert_eq!(store.setting("model").expect("setting"), None);
    assert_eq!(store.companion_by_name("Mira").expect("by name"), None);
    assert_not_found(store.companion(mira.id), "companion");
    assert_not_found(store.conversation(conversation.id), "conversation");
    assert_not_found(store.memories_used(reply.id), "message");
    assert_not_found(store.memory(memory.id), "memory");
    assert_not_found(store.persona_history(nova.id, None), "companion");

    // Usable again, with the same names and ids.
    let mira_again = add_companion(store, "Mira", 9_000);
    let (_, reply) = populate(store, &mira_again, 9_000);
    let old_id = Companion {
        name: "Mira again".to_owned(),
        ..mira.clone()
    };
    store.create_companion(&old_id).expect("the old id is free");
    let reused = MemoryItem {
        companion_id: mira.id,
        superseded_by: None,
        last_used_at: None,
        ..memory
    };
    store
        .insert_memory(&reused)
        .expect("the old memory id is free");
    store.set_setting("model", "small").expect("setting");
    assert_eq!(store.list_companions().expect("list").len(), 2);
    assert_eq!(store.memories_used(reply.id).expect("used").len(), 2);
    assert_eq!(owned(store, mira.id).memories, vec![reused]);

    store.wipe().expect("wipe again");
    store.wipe().expect("and again");
    assert!(store.list_companions().expect("list").is_empty());
    assert!(store.settings().expect("settings").is_empty());
}

// --- emotion journal ---

fn new_journal_entry(source: EmotionSource, at: i64) -> JournalEntry {
    JournalEntry {
        id: JournalId::new(),
        at: Timestamp(at),
        source,
        labels: vec![("joy".to_owned(), 0.75), ("surprise".to_owned(), 0.125)],
        valence: 0.5,
        arousal: 0.625,
        confidence: 0.8,
        conversation_id: None,
        message_id: None,
        details: serde_json::json!({"flags": {"empty": false}}),
    }
}

fn whole_journal(store: &dyn Store) -> Vec<JournalEntry> {
    store
        .journal(Timestamp(i64::MIN), Timestamp(i64::MAX))
        .expect("journal")
}

/// Every field round-trips exactly (floats included); entries come back by time, equal times in
/// the order added; the range includes `from` and excludes `to`.
pub fn journal_entries_round_trip_in_chronological_order(store: &dyn Store) {
    assert!(whole_journal(store).is_empty());
    let mut late = new_journal_entry(EmotionSource::Fused, 3_000);
    late.labels = vec![
        ("sadness".to_owned(), 0.1 + 0.2),
        ("neutral".to_owned(), f32::MIN_POSITIVE),
    ];
    late.valence = -0.123_456_79;
    late.arousal = 1.0;
    late.confidence = 0.0;
    late.conversation_id = Some(ConversationId::new());
    late.message_id = Some(MessageId::new());
    late.details = serde_json::json!({"contributions": [{"source": "text", "weight": 1.0}],
                                      "note": "ünïcödé ✓"});
    let first_at_2000 = new_journal_entry(EmotionSource::Text, 2_000);
    let mut second_at_2000 = new_journal_entry(EmotionSource::Heart, 2_000);
    second_at_2000.labels.clear();
    let early = new_journal_entry(EmotionSource::Face, 1_000);
    store
        .add_journal_entries(&[late.clone(), first_at_2000.clone()])
        .expect("add");
    store
        .add_journal_entries(&[second_at_2000.clone(), early.clone()])
        .expect("add");
    assert_eq!(
        whole_journal(store),
        vec![
            early.clone(),
            first_at_2000.clone(),
            second_at_2000.clone(),
            late.clone()
        ]
    );
    assert_eq!(
        store
            .journal(Timestamp(2_000), Timestamp(3_000))
            .expect("range"),
        vec![first_at_2000, second_at_2000],
        "from is included, to is excluded"
    );
    assert!(
        store
            .journal(Timestamp(3_001), Timestamp(9_000))
            .expect("after")
            .is_empty()
    );
    assert!(
        store
            .journal(Timestamp(5_000), Timestamp(0))
            .expect("reversed")
            .is_empty()
    );
    store.add_journal_entries(&[]).expect("nothing to add");
    assert_eq!(whole_journal(store).len(), 4);
}

/// Out-of-range numbers (NaN included), bad labels and ids that exist are refused, and a
/// refused batch writes nothing.
pub fn journal_entries_check_their_rules_and_writes_are_all_or_nothing(store: &dyn Store) {
    let good = new_journal_entry(EmotionSource::Voice, 1_000);
    type Breaker = fn(&mut JournalEntry);
    let breakers: &[(&str, Breaker)] = &[
        ("valence > 1", |e| e.valence = 1.5),
        ("valence NaN", |e| e.valence = f32::NAN),
        ("arousal < 0", |e| e.arousal = -0.1),
        ("confidence > 1", |e| e.confidence = 1.01),
        ("confidence NaN", |e| e.confidence = f32::NAN),
        ("score > 1", |e| e.labels[0].1 = 2.0),
        ("blank label", |e| e.labels[0].0 = "  ".into()),
        ("too many labels", |e| {
            e.labels = vec![("x".into(), 0.1); JournalEntry::MAX_LABELS + 1]
        }),
    ];
    for (what, breaker) in breakers {
        let mut bad = new_journal_entry(EmotionSource::Text, 1_000);
        breaker(&mut bad);
        let result = store.add_journal_entries(&[good.clone(), bad]);
        assert!(
            matches!(result, Err(StoreError::Invalid(_))),
            "{what}: {result:?}"
        );
    }
    assert!(whole_journal(store).is_empty(), "nothing written");
    store
        .add_journal_entries(std::slice::from_ref(&good))
        .expect("add");
    let other = new_journal_entry(EmotionSource::Text, 2_000);
    let result = store.add_journal_entries(&[other.clone(), good.clone()]);
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    let twice = store.add_journal_entries(&[other.clone(), other.clone()]);
    assert!(matches!(twice, Err(StoreError::Conflict(_))), "{twice:?}");
    assert_eq!(whole_journal(store), vec![good], "nothing of the batches");
}

/// The journal is the user's, not a companion's: deleting the conversation (or companion) a
/// reading links to keeps the reading and its links.
pub fn journal_links_are_kept_after_their_conversation_is_deleted(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let (conversation, reply) = populate(store, &mira, 2_000);
    let mut entry = new_journal_entry(EmotionSource::Text, 2_001);
    entry.conversation_id = Some(conversation.id);
    entry.message_id = Some(reply.id);
    store.add_journal_entries(&[entry.clone()]).expect("add");
    store.delete_companion(mira.id).expect("delete");
    assert_eq!(whole_journal(store), vec![entry]);
}

// --- replication (nexus-sync) ---

/// `put_journal_entries` inserts new entries and replaces existing ones by id with every field
/// (a replaced entry keeps its place among equal times); writing the same entries again changes
/// nothing; a refused batch writes nothing.
pub fn put_journal_entries_inserts_and_replaces_by_id(store: &dyn Store) {
    let first = new_journal_entry(EmotionSource::Text, 2_000);
    let second = new_journal_entry(EmotionSource::Fused, 2_000);
    store
        .add_journal_entries(&[first.clone(), second.clone()])
        .expect("add");
    let mut replaced = first.clone();
    replaced.labels = vec![("fear".to_owned(), 0.5)];
    replaced.valence = -0.25;
    replaced.arousal = 0.125;
    replaced.confidence = 0.375;
    replaced.conversation_id = Some(ConversationId::new());
    replaced.message_id = Some(MessageId::new());
    replaced.details = serde_json::json!({"replicated": true});
    let mut heart = new_journal_entry(EmotionSource::Heart, 1_000);
    heart.labels.clear();
    store
        .put_journal_entries(&[heart.clone(), replaced.clone()])
        .expect("put");
    let expected = vec![heart.clone(), replaced.clone(), second.clone()];
    assert_eq!(whole_journal(store), expected);
    store
        .put_journal_entries(&[replaced.clone(), heart.clone()])
        .expect("put again");
    store.put_journal_entries(&[]).expect("nothing");
    assert_eq!(whole_journal(store), expected, "idempotent");
    let mut bad = new_journal_entry(EmotionSource::Face, 5_000);
    bad.valence = 2.0;
    let fresh = new_journal_entry(EmotionSource::Voice, 4_000);
    let result = store.put_journal_entries(&[fresh, bad]);
    assert!(matches!(result, Err(StoreError::Invalid(_))), "{result:?}");
    assert_eq!(
        whole_journal(store),
        expected,
        "nothing of the refused batch"
    );
    // The ids stay taken for `add_journal_entries`.
    let again = store.add_journal_entries(&[heart]);
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
}

/// `put_memories` inserts new memories and replaces existing ones with every field as given,
/// including the fields the store otherwise manages; links may point forward in the batch.
pub fn put_memories_writes_every_field_and_links_within_the_batch(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let existing = add_memory(store, mira.id, "The user likes tea.", 2_000);
    let newer = MemoryItem {
        text: "The user likes green tea.".to_owned(),
        ..new_memory(mira.id, "x", 3_000)
    };
    let old = MemoryItem {
        created_at: Timestamp(1_500),
        updated_at: Timestamp(3_000),
        last_used_at: Some(Timestamp(2_500)),
        superseded_by: Some(newer.id),
        pinned: true,
        ..existing.clone()
    };
    store
        .put_memories(&[old.clone(), newer.clone()])
        .expect("put");
    assert_eq!(get_memory(store, old.id), old);
    assert_eq!(get_memory(store, newer.id), newer);
    assert_eq!(memories(store, mira.id, false), vec![newer.clone()]);
    assert_eq!(
        memories(store, mira.id, true),
        vec![old.clone(), newer.clone()]
    );

    // Putting again is idempotent; unlinking brings the old version back as current.
    store
        .put_memories(std::slice::from_ref(&old))
        .expect("again");
    assert_eq!(get_memory(store, old.id), old);
    let unlinked = MemoryItem {
        superseded_by: None,
        ..old
    };
    store
        .put_memories(std::slice::from_ref(&unlinked))
        .expect("unlink");
    assert_eq!(memories(store, mira.id, false), vec![unlinked, newer]);
    store.put_memories(&[]).expect("nothing to put");
}

/// A missing companion or link target, a move to another companion, a link to another
/// companion's memory or to itself, or an invalid memory: nothing of the batch is written.
pub fn put_memories_checks_its_rules_and_writes_nothing_on_failure(store: &dyn Store) {
    let mira = add_companion(store, "Mira", 1_000);
    let nova = add_companion(store, "Nova", 1_000);
    let minas = add_memory(store, mira.id, "The user likes tea.", 2_000);
    let novas = add_memory(store, nova.id, "The user plays chess.", 2_000);
    let fresh = new_memory(mira.id, "The user has a cat.", 3_000);
    let before = (
        memories(store, mira.id, true),
        memories(store, nova.id, true),
    );

    let ghost = new_memory(
        id("00000000-0000-7000-8000-000000000009"),
        "no companion",
        1,
    );
    assert_not_found(store.put_memories(&[fresh.clone(), ghost]), "companion");
    let dangling = MemoryItem {
        superseded_by: Some(memory_id("00000000-0000-7000-8000-00000000000a")),
        ..minas.clone()
    };
    assert_not_found(store.put_memories(&[fresh.clone(), dangling]), "memory");
    let moved = MemoryItem {
        companion_id: nova.id,
        ..minas.clone()
    };
    assert_invalid(store.put_memories(&[fresh.clone(), moved]));
    let crossed = MemoryItem {
        superseded_by: Some(novas.id),
        ..minas.clone()
    };
    assert_invalid(store.put_memories(&[fresh.clone(), crossed]));
    let itself = MemoryItem {
        superseded_by: Some(minas.id),
        ..minas.clone()
    };
    assert_invalid(store.put_memories(&[fresh.clone(), itself]));
    let blank = MemoryItem {
        text: " ".to_owned(),
        ..minas.clone()
    };
    assert_invalid(store.put_memories(&[fresh.clone(), blank]));

    assert_not_found(store.memory(fresh.id), "memory");
    assert_eq!(
        (
            memories(store, mira.id, true),
            memories(store, nova.id, true)
        ),
        before
    );
}

/// Sync state values are set, replaced and deleted in batches, listed by prefix in byte order,
/// and deleted by wipe.
pub fn sync_values_set_delete_list_and_are_wiped(store: &dyn Store) {
    assert_eq!(store.sync_value("config").expect("get"), None);
    assert!(store.sync_keys("").expect("keys").is_empty());
    let set = |key: &str, value: &[u8]| (key.to_owned(), Some(value.to_vec()));
    store
        .set_sync_values(&[
            set("doc/b", b"two"),
            set("doc/a", &[0, 255, 1]),
            set("config", b"{}"),
            set("docs", b"not a doc"),
        ])
        .expect("set");
    assert_eq!(
        store.sync_value("doc/a").expect("get"),
        Some(vec![0, 255, 1])
    );
    assert_eq!(
        store.sync_keys("doc/").expect("keys"),
        vec!["doc/a".to_owned(), "doc/b".to_owned()]
    );
    assert_eq!(store.sync_keys("").expect("keys").len(), 4);
    assert!(store.sync_keys("%").expect("no wildcards").is_empty());
    store
        .set_sync_values(&[set("doc/a", b"new"), ("doc/b".to_owned(), None)])
        .expect("replace and delete");
    assert_eq!(
        store.sync_value("doc/a").expect("get"),
        Some(b"new".to_vec())
    );
    assert_eq!(store.sync_value("doc/b").expect("get"), None);
    store
        .set_sync_values(&[("missing".to_owned(), None)])
        .expect("deleting a missing key is fine");

    store.wipe().expect("wipe");
    assert!(store.sync_keys("").expect("keys").is_empty());
}
