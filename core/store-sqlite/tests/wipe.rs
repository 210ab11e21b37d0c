//! `wipe` leaves no user text in the store's files: the main database, its write-ahead log
//! (`-wal`) and the log's index (`-shm`) are read byte by byte after wiping and must not contain
//! any of the distinctive strings written before, with the store still open, with a second
//! connection open, and after closing.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use nexus_common::{CompanionId, ConversationId, JournalId, MemoryId, MessageId, Timestamp};
use nexus_store::{
    Companion, CompanionAsset, Conversation, ConversationSummary, EmotionSource, JournalEntry,
    MemoryItem, MemoryKind, Message, PersonaChange, PersonaState, Role, Store, StoreError,
};
use nexus_store_sqlite::SqliteStore;

/// One distinctive string per place user text can be stored.
const MARKERS: &[&str] = &[
    "zqxv-companion-name",
    "zqxv-description",
    "zqxv-personality",
    "zqxv-greeting",
    "zqxv-card-scenario",
    "zqxv-card-unknown-extension",
    "zqxv-conversation-title",
    "zqxv-user-message",
    "zqxv-assistant-message",
    "zqxv-memory-text",
    "zqxv-memory-subject",
    "zqxv-old-memory-version",
    "zqxv-forgotten-before-wipe",
    "zqxv-persona-trait",
    "zqxv-persona-reason",
    "zqxv-summary",
    "zqxv-asset-name",
    "zqxv-asset-media-type",
    "zqxv-asset-bytes",
    "zqxv-setting-key",
    "zqxv-setting-value",
    "zqxv-journal-label",
    "zqxv-journal-details",
];

fn marker(name: &str) -> &'static str {
    MARKERS
        .iter()
        .find(|m| m.ends_with(name))
        .expect("a known marker")
}

/// Writes every marker into `store`, enough data to span many pages and checkpoints.
fn write_markers(store: &dyn Store, name_suffix: &str) {
    let companion = Companion {
        id: CompanionId::new(),
        name: format!("{} {name_suffix}", marker("companion-name")),
        description: marker("description").repeat(50),
        personality: marker("personality").to_owned(),
        speaking_style: "plain".to_owned(),
        greeting: marker("greeting").to_owned(),
        card: Some(serde_json::json!({
            "scenario": marker("card-scenario"),
            "extensions": {"some_tool": {"note": marker("card-unknown-extension")}},
        })),
        created_at: Timestamp(1),
        updated_at: Timestamp(1),
    };
    store.create_companion(&companion).expect("companion");
    let conversation = Conversation {
        id: ConversationId::new(),
        companion_id: companion.id,
        title: Some(marker("conversation-title").to_owned()),
        created_at: Timestamp(1),
        updated_at: Timestamp(1),
    };
    store
        .create_conversation(&conversation)
        .expect("conversation");
    // About 2 MB of messages: well past the 1,000-page automatic checkpoint, so the markers
    // are in the main file, in the log, and in log frames that a later checkpoint left behind.
    let mut reply = None;
    for n in 0..400_i64 {
        let message = |role, text: &str| Message {
            id: MessageId::new(),
            conversation_id: conversation.id,
            role,
            text: format!("{n}: {}", text.repeat(120)),
            created_at: Timestamp(10 + n),
            token_count: 1,
        };
        let pair = [
            message(Role::User, marker("user-message")),
            message(Role::Assistant, marker("assistant-message")),
        ];
        store.append_messages(&pair).expect("exchange");
        reply = Some(pair[1].id);
    }
    let reply = reply.expect("a reply");

    let memory = |text: &str| MemoryItem {
        id: MemoryId::new(),
        companion_id: companion.id,
        text: text.to_owned(),
        kind: MemoryKind::Fact,
        subject: marker("memory-subject").to_owned(),
        importance: 0.5,
        pinned: false,
        embedding: vec![0.1; 384],
        source_message_ids: vec![reply],
        created_at: Timestamp(5),
        updated_at: Timestamp(5),
        last_used_at: None,
        superseded_by: None,
    };
    let old = memory(marker("old-memory-version"));
    store.insert_memory(&old).expect("memory");
    let current = memory(marker("memory-text"));
    store.supersede_memory(old.id, &current).expect("supersede");
    let forgotten = memory(marker("forgotten-before-wipe"));
    store.insert_memory(&forgotten).expect("memory");
    store
        .record_memories_used(reply, &[current.id, forgotten.id], Timestamp(6))
        .expect("record");
    store.delete_memories(&[forgotten.id]).expect("forget one");

    let state = PersonaState {
        companion_id: companion.id,
        traits: [(marker("persona-trait").to_owned(), 0.5)].into(),
        locked: [marker("persona-trait").to_owned()].into(),
        familiarity: 0.2,
        trust: 0.3,
        exchanges: 400,
        updated_at: Timestamp(7),
    };
    let change = PersonaChange {
        companion_id: companion.id,
        field: marker("persona-trait").to_owned(),
        old: 0.4,
        new: 0.5,
        reason: marker("persona-reason").to_owned(),
        at: Timestamp(7),
    };
    store
        .save_persona_state(&state, &[change])
        .expect("persona");
    store
        .save_summary(&ConversationSummary {
            conversation_id: conversation.id,
            text: marker("summary").repeat(20),
            covered_messages: 100,
            token_count: 50,
            created_at: Timestamp(8),
        })
        .expect("summary");
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    for _ in 0..2_000 {
        bytes.extend_from_slice(marker("asset-bytes").as_bytes());
        bytes.extend_from_slice(&[0, 1, 2, 255]);
    }
    store
        .put_asset(&CompanionAsset {
            companion_id: companion.id,
            name: format!("assets/{}.png", marker("asset-name")),
            media_type: marker("asset-media-type").to_owned(),
            bytes,
        })
        .expect("asset");
    store
        .set_setting(
            &format!("{} {name_suffix}", marker("setting-key")),
            marker("setting-value"),
        )
        .expect("setting");
    // Readings of every source and fused states, enough to span pages.
    let entries: Vec<JournalEntry> = (0..200_i64)
        .map(|n| JournalEntry {
            id: JournalId::new(),
            at: Timestamp(20 + n),
            source: EmotionSource::ALL[n as usize % EmotionSource::ALL.len()],
            labels: vec![(marker("journal-label").to_owned(), 0.5)],
            valence: -0.25,
            arousal: 0.75,
            confidence: 0.5,
            conversation_id: Some(conversation.id),
            message_id: Some(reply),
            details: serde_json::json!({"note": marker("journal-details").repeat(10)}),
        })
        .collect();
    store.add_journal_entries(&entries).expect("journal");
}

/// The beginning every marker shares.
const PREFIX: &str = "zqxv";

type Encode = fn(&str) -> Vec<u8>;

/// The encodings searched: text is stored as UTF-8 (checked below), UTF-16 is searched anyway.
const ENCODINGS: &[(&str, Encode)] = &[
    ("UTF-8", |s| s.as_bytes().to_vec()),
    ("UTF-16LE", |s| {
        s.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }),
    ("UTF-16BE", |s| {
        s.encode_utf16().flat_map(u16::to_be_bytes).collect()
    }),
];

/// What the files of `dir` contain: for every occurrence of [`PREFIX`] (in any encoding), the
/// file, the encoding and the whole marker found there (or `fragment` if the text after the
/// prefix is not a whole marker: a piece of user text all the same).
fn markers_in_files(dir: &Path) -> Vec<String> {
    let mut found = BTreeSet::new();
    for entry in fs::read_dir(dir).expect("list the folder") {
        let path = entry.expect("entry").path();
        let bytes = fs::read(&path).expect("read a file");
        let file = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        for (encoding, encode) in ENCODINGS {
            let prefix = encode(PREFIX);
            let markers: Vec<(&str, Vec<u8>)> = MARKERS.iter().map(|m| (*m, encode(m))).collect();
            // One pass over the file per encoding: every place the prefix starts.
            for at in (0..bytes.len()).filter(|&i| bytes[i..].starts_with(&prefix)) {
                let whole = markers
                    .iter()
                    .filter(|(_, needle)| bytes[at..].starts_with(needle))
                    .map(|(marker, _)| *marker)
                    .max_by_key(|marker| marker.len())
                    .unwrap_or("fragment");
                found.insert(format!("{file}: {whole} ({encoding})"));
            }
        }
    }
    found.into_iter().collect()
}

/// The files of `dir` with their sizes, for the test output.
fn listing(dir: &Path) -> String {
    let mut files: Vec<String> = fs::read_dir(dir)
        .expect("list")
        .map(|e| {
            let e = e.expect("entry");
            let size = e.metadata().expect("metadata").len();
            format!("{} ({size} bytes)", e.file_name().to_string_lossy())
        })
        .collect();
    files.sort();
    files.join(", ")
}

/// Before wiping, every marker is in the files: the search works.
#[track_caller]
fn assert_all_markers_present(dir: &Path) {
    let found = markers_in_files(dir);
    for marker in MARKERS {
        if *marker == marker_of_forgotten() {
            continue; // forgotten already: may or may not be in the log, it does not matter here
        }
        assert!(
            found
                .iter()
                .any(|f| f.contains(&format!(" {marker} (UTF-8)"))),
            "{marker} was written, so it must be found before the wipe; found {found:?}"
        );
    }
}

fn marker_of_forgotten() -> &'static str {
    marker("forgotten-before-wipe")
}

#[track_caller]
fn assert_no_markers(dir: &Path, when: &str) {
    let found = markers_in_files(dir);
    eprintln!("{when}: {} -> {} markers found", listing(dir), found.len());
    assert!(
        found.is_empty(),
        "{when}: user text left in the files: {found:#?}"
    );
}

fn encoding(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).expect("raw open");
    conn.pragma_query_value(None, "encoding", |row| row.get(0))
        .expect("encoding")
}

#[track_caller]
fn assert_usable_and_empty(store: &dyn Store) {
    assert!(store.list_companions().expect("list").is_empty());
    assert!(store.settings().expect("settings").is_empty());
    let fresh = Companion {
        id: CompanionId::new(),
        name: "After the wipe".to_owned(),
        description: String::new(),
        personality: String::new(),
        speaking_style: String::new(),
        greeting: String::new(),
        card: None,
        created_at: Timestamp(100),
        updated_at: Timestamp(100),
    };
    store
        .create_companion(&fresh)
        .expect("usable after the wipe");
    assert_eq!(store.list_companions().expect("list"), vec![fresh]);
}

#[test]
fn wipe_leaves_no_user_text_in_the_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nexus.db");
    let store = SqliteStore::open(&path).expect("open");
    write_markers(&store, "one");
    // Text is stored as UTF-8, so searching the UTF-8 bytes is the search that matters (the
    // UTF-16 encodings are searched anyway).
    assert_eq!(encoding(&path), "UTF-8");
    eprintln!("before the wipe: {}", listing(dir.path()));
    assert_all_markers_present(dir.path());

    store.wipe().expect("wipe");
    assert_no_markers(dir.path(), "after the wipe, store open");
    assert_usable_and_empty(&store);
    drop(store);
    assert_no_markers(dir.path(), "after closing");

    let store = SqliteStore::open(&path).expect("reopen");
    assert_eq!(store.list_companions().expect("list").len(), 1);
}

#[test]
fn wipe_leaves_no_user_text_while_another_connection_is_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nexus.db");
    // The app and a CLI, say: two connections to one file.
    let app = SqliteStore::open(&path).expect("open");
    let cli = SqliteStore::open(&path).expect("open a second connection");
    write_markers(&app, "app");
    write_markers(&cli, "cli");
    assert_eq!(
        cli.list_companions().expect("list").len(),
        2,
        "both see both"
    );
    assert_all_markers_present(dir.path());

    app.wipe().expect("wipe");
    assert_no_markers(dir.path(), "after the wipe, both open");
    assert!(
        cli.list_companions().expect("list").is_empty(),
        "the other connection sees it"
    );
    assert_usable_and_empty(&cli);
    assert_no_markers(dir.path(), "after the other connection wrote");
    drop(app);
    assert_no_markers(dir.path(), "after closing the wiping connection");
    drop(cli);
    assert_no_markers(dir.path(), "after closing both");
}

#[test]
fn wipe_reports_a_reader_that_keeps_the_log_busy_and_succeeds_once_it_is_gone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nexus.db");
    let store = SqliteStore::open(&path).expect("open");
    write_markers(&store, "one");

    // Another program in the middle of a long read: its snapshot needs the old log frames.
    let mut reader = rusqlite::Connection::open(&path).expect("raw open");
    let read = reader.transaction().expect("read transaction");
    let companions: i64 = read
        .query_row("SELECT count(*) FROM companions", [], |row| row.get(0))
        .expect("read");
    assert_eq!(companions, 1);

    match store.wipe() {
        Err(StoreError::Backend(message)) => {
            assert!(message.contains("wipe again"), "{message}");
        }
        other => panic!("expected a Backend error while the reader is busy, got {other:?}"),
    }
    assert!(
        store.list_companions().expect("list").is_empty(),
        "deleted all the same"
    );

    read.commit().expect("end the read");
    drop(reader);
    store.wipe().expect("wipe again");
    assert_no_markers(dir.path(), "after wiping again");
}

/// `secure_delete` protects ordinary deletions too: a forgotten memory's text is gone from the
/// file once the log is checkpointed (here: when the store closes).
#[test]
fn a_forgotten_memory_leaves_no_text_in_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nexus.db");
    let forgotten = marker("forgotten-before-wipe");
    let store = SqliteStore::open(&path).expect("open");
    let companion = Companion {
        id: CompanionId::new(),
        name: "Mira".to_owned(),
        description: String::new(),
        personality: String::new(),
        speaking_style: String::new(),
        greeting: String::new(),
        card: None,
        created_at: Timestamp(1),
        updated_at: Timestamp(1),
    };
    store.create_companion(&companion).expect("companion");
    let memory = MemoryItem {
        id: MemoryId::new(),
        companion_id: companion.id,
        text: forgotten.to_owned(),
        kind: MemoryKind::Feeling,
        subject: String::new(),
        importance: 0.9,
        pinned: false,
        embedding: Vec::new(),
        source_message_ids: Vec::new(),
        created_at: Timestamp(2),
        updated_at: Timestamp(2),
        last_used_at: None,
        superseded_by: None,
    };
    store.insert_memory(&memory).expect("memory");
    drop(store); // the last connection checkpoints the log into the main file
    let found = markers_in_files(dir.path());
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("nexus.db: ") && f.contains(forgotten)),
        "the memory is in the main file before it is forgotten: {found:?}"
    );

    let store = SqliteStore::open(&path).expect("reopen");
    assert_eq!(store.delete_memories(&[memory.id]).expect("forget"), 1);
    drop(store);
    assert_no_markers(dir.path(), "after forgetting and closing");
}
