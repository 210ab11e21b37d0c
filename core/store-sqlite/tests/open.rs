//! Opening store files: reopening, schema versions, and files that are not Nexus stores.

use std::fs;
use std::path::{Path, PathBuf};

use nexus_common::{CompanionId, ConversationId, MessageId, Timestamp};
use nexus_store::{Companion, Conversation, Message, Role, Store, StoreError};
use nexus_store_sqlite::SqliteStore;
use tempfile::TempDir;

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
    assert_eq!(user_version(&path), 1);

    for _ in 0..2 {
        // Migration 001 creates tables: running it again would fail.
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
    assert_eq!(user_version(&path), 1);
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
                supported: 1,
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
