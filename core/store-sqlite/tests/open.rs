//! Opening store files: reopening, schema versions, and files that are not Nexus stores.

use std::fs;
use std::path::{Path, PathBuf};

use nexus_common::{CompanionId, ConversationId, MemoryId, MessageId, Timestamp};
use nexus_store::{
    Companion, Conversation, MemoryItem, MemoryKind, Message, PersonaState, Role, Store, StoreError,
};
use nexus_store_sqlite::SqliteStore;
use tempfile::TempDir;

/// The schema version of this build (the number of migrations).
// 001, 002, 003_journal and 004_sync.
const CURRENT_VERSION: i64 = 4;

fn temp_file(name: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    (dir, path)
}

fn companion(name: &str) -> Companion {
    Companion {
        id: CompanionId::new(),
        name: name.to_owned(),
        description: "d".to_owned(),
        personality: "p".to_owned(),
        speaking_style: "s".to_owned(),
        greeting: "g".to_owned(),
        card: None,
        created_at: Timestamp(1),
        updated_at: Timestamp(1),
    }
}

fn user_version(path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(path).expect("raw open");
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("user_version")
}

/// Opening must fail with `Corrupt`, naming the file, and leave the file byte for byte as it was
/// (no journal mode switch, no migration, no extra files).
#[track_caller]
fn assert_refused_untouched(path: &Path) {
    let before = fs::read(path).expect("read file");
    match SqliteStore::open(path) {
        Err(error @ StoreError::Corrupt(_)) => {
            let message = error.to_string();
            assert!(
                message.contains(&path.display().to_string()),
                "names the file: {message}"
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(
        fs::read(path).expect("read file"),
        before,
        "the file is unchanged"
    );
    let dir = path.parent().expect("parent");
    let files: Vec<_> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(
        files,
        vec![path.to_path_buf()],
        "no -wal or -shm file was left beside it"
    );
}

#[test]
fn reopening_keeps_the_data_and_does_not_migrate_again() {
    let (_dir, path) = temp_file("nexus.db");
    let mira = companion("Mira");
    let conversation = Conversation {
        id: ConversationId::new(),
        companion_id: mira.id,
        title: Some("first".to_owned()),
        created_at: Timestamp(2),
        updated_at: Timestamp(2),
    };
    let message = Message {
        id: MessageId::new(),
        conversation_id: conversation.id,
        role: Role::User,
        text: "hello".to_owned(),
        created_at: Timestamp(3),
        token_count: 2,
    };
    {
        let store = SqliteStore::open(&path).expect("create");
        store.create_companion(&mira).expect("companion");
        store
            .create_conversation(&conversation)
            .expect("conversation");
        store
            .append_messages(std::slice::from_ref(&message))
            .expect("message");
        store.set_setting("theme", "dark").expect("setting");
    }
    assert_eq!(user_version(&path), CURRENT_VERSION);

    for _ in 0..2 {
        // The migrations create tables: running them again would fail.
        let store = SqliteStore::open(&path).expect("reopen");
        assert_eq!(store.list_companions().expect("list"), vec![mira.clone()]);
        assert_eq!(
            store.messages(conversation.id, None).expect("messages"),
            vec![message.clone()]
        );
        assert_eq!(
            store.setting("theme").expect("setting"),
            Some("dark".to_owned())
        );
    }
    assert_eq!(user_version(&path), CURRENT_VERSION);
}

#[test]
fn an_empty_file_becomes_a_store() {
    let (_dir, path) = temp_file("empty.db");
    fs::write(&path, b"").expect("write");
    let store = SqliteStore::open(&path).expect("an empty file is an empty database");
    store.create_companion(&companion("Mira")).expect("usable");
}

#[test]
fn a_newer_schema_is_refused() {
    let (_dir, path) = temp_file("nexus.db");
    drop(SqliteStore::open(&path).expect("create"));
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.pragma_update(None, "user_version", 7)
        .expect("pretend a newer Nexus wrote it");
    drop(conn);

    match SqliteStore::open(&path) {
        Err(
            error @ StoreError::TooNew {
                found: 7,
                supported: CURRENT_VERSION,
            },
        ) => {
            assert!(error.to_string().contains("update Nexus"), "{error}");
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
    assert_eq!(user_version(&path), 7, "left as it was");
}

#[test]
fn random_bytes_are_refused_and_left_alone() {
    let (_dir, path) = temp_file("random.bin");
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let bytes: Vec<u8> = (0..20_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    fs::write(&path, bytes).expect("write");
    assert_refused_untouched(&path);
}

#[test]
fn a_text_file_is_refused_and_left_alone() {
    let (_dir, path) = temp_file("notes.txt");
    fs::write(&path, "Shopping list:\n- milk\n- bread\n").expect("write");
    assert_refused_untouched(&path);

    let (_dir, path) = temp_file("tiny.txt");
    fs::write(&path, "hi").expect("write");
    assert_refused_untouched(&path);
}

#[test]
fn another_programs_database_is_refused_and_left_alone() {
    let (_dir, path) = temp_file("other.db");
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.execute_batch("CREATE TABLE recipes (name TEXT); INSERT INTO recipes VALUES ('soup');")
        .expect("another program's data");
    drop(conn);
    assert_refused_untouched(&path);
}

#[test]
fn damaged_pages_are_reported_as_corrupt() {
    let (_dir, path) = temp_file("nexus.db");
    {
        let store = SqliteStore::open(&path).expect("create");
        for i in 0..50 {
            store
                .create_companion(&companion(&format!("Companion {i}")))
                .expect("companion");
        }
    }
    // Keep the header page, overwrite every page after it.
    let mut bytes = fs::read(&path).expect("read");
    assert!(bytes.len() > 8192, "the data spans several pages");
    for (i, b) in bytes.iter_mut().enumerate().skip(4096) {
        *b = (i % 251) as u8;
    }
    fs::write(&path, &bytes).expect("damage");

    let result = SqliteStore::open(&path).and_then(|store| store.list_companions());
    assert!(
        matches!(result, Err(StoreError::Corrupt(_))),
        "expected Corrupt, got {result:?}"
    );
}

#[test]
fn a_missing_folder_is_a_clear_error() {
    let (dir, _) = temp_file("unused");
    let path = dir.path().join("no such folder").join("nexus.db");
    match SqliteStore::open(&path) {
        Err(error @ StoreError::Backend(_)) => {
            assert!(
                error.to_string().contains("no such folder"),
                "names the path: {error}"
            );
        }
        other => panic!("expected Backend, got {other:?}"),
    }
    assert!(!path.exists());
}

/// A store written by the first release (schema version 1: migration 001 only, applied the way
/// that release did) with data in it.
fn version_1_store(path: &Path) {
    let conn = rusqlite::Connection::open(path).expect("raw open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("journal mode");
    conn.execute_batch(include_str!("../migrations/001_initial.sql"))
        .expect("schema version 1");
    conn.pragma_update(None, "application_id", 0x4E58_5553)
        .expect("application id");
    conn.pragma_update(None, "user_version", 1)
        .expect("user version");
    conn.execute_batch(
        "INSERT INTO companions VALUES ('01890000-0000-7000-8000-000000000001', 'Mira', 'mira',
             'An owl.', 'wise', 'riddles', 'Hoo?', 1000, 2000);
         INSERT INTO conversations VALUES ('01890000-0000-7000-8000-000000000002',
             '01890000-0000-7000-8000-000000000001', 'First', 3000, 5000);
         INSERT INTO messages (id, conversation_id, role, text, created_at, token_count) VALUES
             ('01890000-0000-7000-8000-000000000003', '01890000-0000-7000-8000-000000000002',
              'user', 'Hello 🦉', 4000, 3),
             ('01890000-0000-7000-8000-000000000004', '01890000-0000-7000-8000-000000000002',
              'assistant', 'Hoo!', 5000, 2);
         INSERT INTO settings VALUES ('theme', 'dark');",
    )
    .expect("version 1 data");
}

#[test]
fn a_version_1_store_is_migrated_and_keeps_its_data() {
    let (_dir, path) = temp_file("nexus.db");
    version_1_store(&path);
    assert_eq!(user_version(&path), 1);

    let store = SqliteStore::open(&path).expect("open a version 1 store");
    assert_eq!(user_version(&path), CURRENT_VERSION);
    let mira = store
        .companion_by_name("mira")
        .expect("by name")
        .expect("the companion is kept");
    assert_eq!(
        mira,
        Companion {
            id: "01890000-0000-7000-8000-000000000001".parse().expect("id"),
            name: "Mira".to_owned(),
            description: "An owl.".to_owned(),
            personality: "wise".to_owned(),
            speaking_style: "riddles".to_owned(),
            greeting: "Hoo?".to_owned(),
            card: None,
            created_at: Timestamp(1000),
            updated_at: Timestamp(2000),
        }
    );
    let conversation: ConversationId = "01890000-0000-7000-8000-000000000002".parse().expect("id");
    let messages = store.messages(conversation, None).expect("messages");
    let texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["Hello 🦉", "Hoo!"]);
    assert_eq!(
        store.setting("theme").expect("setting"),
        Some("dark".to_owned())
    );
    assert!(
        store
            .list_memories(mira.id, true)
            .expect("memories")
            .is_empty()
    );
    assert_eq!(store.persona_state(mira.id).expect("persona"), None);

    // The new tables work with the old data.
    let memory = MemoryItem {
        id: MemoryId::new(),
        companion_id: mira.id,
        text: "The user says hello with an owl.".to_owned(),
        kind: MemoryKind::Preference,
        subject: "greeting".to_owned(),
        importance: 0.4,
        pinned: false,
        embedding: vec![0.25; 384],
        source_message_ids: messages.iter().map(|m| m.id).collect(),
        created_at: Timestamp(6000),
        updated_at: Timestamp(6000),
        last_used_at: None,
        superseded_by: None,
    };
    store.insert_memory(&memory).expect("insert a memory");
    let reply = messages[1].id;
    store
        .record_memories_used(reply, &[memory.id], Timestamp(7000))
        .expect("record");
    assert_eq!(store.memories_used(reply).expect("used"), vec![memory.id]);
    let state = PersonaState {
        companion_id: mira.id,
        traits: [("openness".to_owned(), 0.5)].into(),
        locked: Default::default(),
        familiarity: 0.1,
        trust: 0.2,
        exchanges: 1,
        updated_at: Timestamp(7000),
    };
    store.save_persona_state(&state, &[]).expect("persona");
    let carded = Companion {
        card: Some(serde_json::json!({"name": "Mira", "tags": ["owl"]})),
        ..mira
    };
    store.update_companion(&carded).expect("give it a card");
    drop(store);

    let store = SqliteStore::open(&path).expect("reopen");
    assert_eq!(user_version(&path), CURRENT_VERSION);
    assert_eq!(store.companion(carded.id).expect("companion"), carded);
    let stored = MemoryItem {
        last_used_at: Some(Timestamp(7000)),
        ..memory
    };
    assert_eq!(
        store.list_memories(carded.id, false).expect("memories"),
        vec![stored]
    );
    assert_eq!(
        store.persona_state(carded.id).expect("persona"),
        Some(state)
    );
}
