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

use nexus_common::{CompanionId, ConversationId, MessageId, Timestamp};

use crate::{Companion, Conversation, Message, Result, Role, Store, StoreError};

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
