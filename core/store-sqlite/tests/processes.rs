//! Several writers on one store file: a writer process killed (SIGKILL) in the middle of its
//! transactions, two processes writing at once, and two stores of one process writing at once.
//!
//! The writer process is this test executable run again with [`WRITER_PATH`] set and a filter
//! that selects only the [`writer_process`] test.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nexus_common::{CompanionId, ConversationId, MemoryId, MessageId, Timestamp};
use nexus_store::{Companion, Conversation, MemoryItem, MemoryKind, Message, Role, Store};
use nexus_store_sqlite::SqliteStore;

/// The store file the writer process writes to; unset in normal test runs.
const WRITER_PATH: &str = "NEXUS_STORE_TEST_WRITER_PATH";
/// The name of the writer's companion.
const WRITER_NAME: &str = "NEXUS_STORE_TEST_WRITER_NAME";
/// How many exchanges the writer appends before it exits; unset: until it is killed.
const WRITER_EXCHANGES: &str = "NEXUS_STORE_TEST_WRITER_EXCHANGES";
/// Printed by the writer once its first exchange is committed.
const READY: &str = "nexus-test-writer: first exchange committed";
/// A writer that is never killed (its parent died) stops by itself after this long.
const WRITER_MAX_RUNTIME: Duration = Duration::from_secs(30);

/// New conversations are started every this many exchanges.
const EXCHANGES_PER_CONVERSATION: u64 = 25;

/// The writer: appends user/assistant exchanges (one transaction each, which also bumps the
/// conversation) to conversations of its companion, as fast as it can; after each exchange it
/// supersedes its companion's current memory by a new one (one transaction) and records it as
/// used by the reply (another).
#[test]
#[ignore = "helper process of the other tests in this file, which start it"]
fn writer_process() {
    let Some(path) = std::env::var_os(WRITER_PATH) else {
        return; // run by hand with --ignored: nothing to do
    };
    let name = std::env::var(WRITER_NAME).expect("companion name");
    let limit: Option<u64> = std::env::var(WRITER_EXCHANGES)
        .ok()
        .map(|n| n.parse().expect("exchange count"));
    let store = SqliteStore::open(Path::new(&path)).expect("writer opens the store");
    let companion = ensure_companion(&store, &name);
    // Messages of a few pages each, so a transaction takes a while to write.
    let question = "How was your day? 🌤\n".repeat(200);
    let answer = "Quiet, thank you; I read about owls. 🦉\n".repeat(300);

    let started = Instant::now();
    let mut conversation = ConversationId::new();
    let mut memory = current_memory(&store, companion.id);
    for n in 0.. {
        if limit.is_some_and(|limit| n >= limit) || started.elapsed() > WRITER_MAX_RUNTIME {
            break;
        }
        let at = Timestamp(1_700_000_000_000 + i64::try_from(n).expect("small") * 10);
        if n % EXCHANGES_PER_CONVERSATION == 0 {
            conversation = ConversationId::new();
            store
                .create_conversation(&Conversation {
                    id: conversation,
                    companion_id: companion.id,
                    title: Some(format!("{name} #{n}")),
                    created_at: at,
                    updated_at: at,
                })
                .expect("create conversation");
        }
        let message = |role, text: &str, at| Message {
            id: MessageId::new(),
            conversation_id: conversation,
            role,
            text: text.to_owned(),
            created_at: at,
            token_count: 42,
        };
        let reply = message(Role::Assistant, &answer, at.plus_millis(5));
        store
            .append_messages(&[message(Role::User, &question, at), reply.clone()])
            .expect("append exchange");
        let remembered = remember(&store, companion.id, memory, n, at);
        memory = Some(remembered);
        store
            .record_memories_used(reply.id, &[remembered], at)
            .expect("record the memory used");
        if n == 0 {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{READY}").expect("stdout");
            out.flush().expect("stdout");
        }
    }
}

/// The companion's current memory (a killed writer's successor continues its chain).
fn current_memory(store: &dyn Store, companion: CompanionId) -> Option<MemoryId> {
    let current = store.list_memories(companion, false).expect("memories");
    assert!(current.len() <= 1, "one chain, one current version");
    current.first().map(|m| m.id)
}

/// Supersedes `previous` (or starts the chain) by a new memory; returns its id.
fn remember(
    store: &dyn Store,
    companion: CompanionId,
    previous: Option<MemoryId>,
    n: u64,
    at: Timestamp,
) -> MemoryId {
    let memory = MemoryItem {
        id: MemoryId::new(),
        companion_id: companion,
        text: format!("The user has written {n} times. {}", "🦉 ".repeat(200)),
        kind: MemoryKind::Fact,
        subject: "exchanges".to_owned(),
        importance: 0.5,
        pinned: false,
        embedding: vec![0.05; 384],
        source_message_ids: Vec::new(),
        created_at: at,
        updated_at: at,
        last_used_at: None,
        superseded_by: None,
    };
    match previous {
        Some(old) => store.supersede_memory(old, &memory).expect("supersede"),
        None => store.insert_memory(&memory).expect("first memory"),
    }
    memory.id
}

fn ensure_companion(store: &dyn Store, name: &str) -> Companion {
    if let Some(companion) = store.companion_by_name(name).expect("look up companion") {
        return companion;
    }
    let companion = Companion {
        id: CompanionId::new(),
        name: name.to_owned(),
        description: "writes a lot".to_owned(),
        personality: "diligent".to_owned(),
        speaking_style: "verbose".to_owned(),
        greeting: "Hello!".to_owned(),
        card: None,
        created_at: Timestamp(1),
        updated_at: Timestamp(1),
    };
    store
        .create_companion(&companion)
        .expect("create companion");
    companion
}

/// A writer process; killed when dropped, so a failing test leaves no writer behind.
struct Writer(Child);

impl Writer {
    fn start(path: &Path, name: &str, exchanges: Option<u64>) -> Self {
        let exe = std::env::current_exe().expect("path of the test executable");
        let mut command = Command::new(exe);
        command
            .args([
                "writer_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_PATH, path)
            .env(WRITER_NAME, name)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(exchanges) = exchanges {
            command.env(WRITER_EXCHANGES, exchanges.to_string());
        }
        Self(command.spawn().expect("start the writer process"))
    }

    /// Blocks until the writer has committed its first exchange.
    fn wait_until_writing(&mut self) {
        let stdout = self.0.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines.next() {
            if line.expect("writer output").contains(READY) {
                // Keep reading, so the writer's later output never fails on a closed pipe.
                std::thread::spawn(move || lines.for_each(drop));
                return;
            }
        }
        panic!("the writer process ended before it wrote anything (see its output above)");
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Already ended or killed: errors do not matter here.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Checks the file with SQLite's own checks and the store's invariants; returns the number of
/// complete exchanges of the companion `name`.
fn check_consistency(path: &Path, name: &str) -> usize {
    let conn = rusqlite::Connection::open(path).expect("raw open");
    let integrity: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
        .expect("integrity_check");
    assert_eq!(integrity, ["ok"], "integrity_check");
    let broken_references: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| {
            row.get(0)
        })
        .expect("foreign_key_check");
    assert_eq!(broken_references, 0, "foreign_key_check");
    let (dangling, forks): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM memories m WHERE superseded_by IS NOT NULL
                     AND NOT EXISTS (SELECT 1 FROM memories n WHERE n.id = m.superseded_by)),
                    (SELECT count(*) FROM (SELECT superseded_by FROM memories
                     WHERE superseded_by IS NOT NULL GROUP BY superseded_by HAVING count(*) > 1))",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("memory chains");
    assert_eq!(dangling, 0, "a memory superseded by a missing one");
    assert_eq!(forks, 0, "a memory that superseded two");
    drop(conn);

    let store = SqliteStore::open(path).expect("open after the writer died");
    let Some(companion) = store.companion_by_name(name).expect("look up") else {
        return 0;
    };
    let all_memories = store.list_memories(companion.id, true).expect("memories");
    let current = store.list_memories(companion.id, false).expect("memories");
    if !all_memories.is_empty() {
        assert_eq!(
            current.len(),
            1,
            "the chain of versions has exactly one current version"
        );
    }
    let mut exchanges = 0;
    for conversation in store
        .list_conversations(companion.id)
        .expect("conversations")
    {
        let messages = store.messages(conversation.id, None).expect("messages");
        assert_eq!(
            messages.len() % 2,
            0,
            "half an exchange in {:?}",
            conversation.title
        );
        for pair in messages.chunks(2) {
            assert_eq!((pair[0].role, pair[1].role), (Role::User, Role::Assistant));
        }
        let newest = messages
            .last()
            .map_or(conversation.created_at, |m| m.created_at);
        assert_eq!(
            conversation.updated_at, newest,
            "updated_at was bumped with the messages"
        );
        exchanges += messages.len() / 2;
    }
    exchanges
}

fn count_exchanges(store: &dyn Store, name: &str) -> usize {
    let companion = store
        .companion_by_name(name)
        .expect("look up")
        .expect("companion exists");
    let conversations = store
        .list_conversations(companion.id)
        .expect("conversations");
    conversations
        .iter()
        .map(|c| store.message_count(c.id).expect("count"))
        .sum::<usize>()
        / 2
}

#[test]
fn a_writer_killed_mid_write_never_leaves_half_an_exchange() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nexus.db");
    let mut exchanges = 0;
    for delay_ms in [0, 40, 7, 120, 25, 75] {
        let mut writer = Writer::start(&path, "Writer", None);
        writer.wait_until_writing();
        std::thread::sleep(Duration::from_millis(delay_ms));
        writer.0.kill().expect("SIGKILL the writer");
        let status = writer.0.wait().expect("reap the writer");
        assert_eq!(
            status.signal(),
            Some(9),
            "the writer was killed, it did not stop: {status}"
        );

        let now = check_consistency(&path, "Writer");
        assert!(
            now > exchanges,
            "each writer committed something ({exchanges} -> {now})"
        );
        exchanges = now;
    }
    // Each writer remembered after every exchange but maybe its last one.
    let store = SqliteStore::open(&path).expect("open");
    let writer = store
        .companion_by_name("Writer")
        .expect("look up")
        .expect("the writer's companion");
    let versions = store
        .list_memories(writer.id, true)
        .expect("memories")
        .len();
    assert!(
        versions <= exchanges && versions + 6 >= exchanges,
        "{versions} versions of the memory for {exchanges} exchanges"
    );
}

#[test]
fn two_processes_write_to_one_store_at_the_same_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nexus.db");
    const EXCHANGES: u64 = 60;

    // Both race to create the file and its schema.
    let mut writer = Writer::start(&path, "Child", Some(EXCHANGES));
    let store = SqliteStore::open(&path).expect("open while another process does");
    let companion = ensure_companion(&store, "Parent");
    let conversation = Conversation {
        id: ConversationId::new(),
        companion_id: companion.id,
        title: None,
        created_at: Timestamp(1),
        updated_at: Timestamp(1),
    };
    store
        .create_conversation(&conversation)
        .expect("conversation");
    writer.wait_until_writing(); // from here on, both processes write
    for n in 0..EXCHANGES {
        let at = Timestamp(10 + i64::try_from(n).expect("small"));
        let message = |role| Message {
            id: MessageId::new(),
            conversation_id: conversation.id,
            role,
            text: format!("parent {n}"),
            created_at: at,
            token_count: 0,
        };
        store
            .append_messages(&[message(Role::User), message(Role::Assistant)])
            .expect("append");
    }
    let status = writer.0.wait().expect("wait for the writer");
    assert!(status.success(), "the other process failed: {status}");

    let expected = usize::try_from(EXCHANGES).expect("small");
    assert_eq!(count_exchanges(&store, "Parent"), expected);
    assert_eq!(
        count_exchanges(&store, "Child"),
        expected,
        "sees the other process's writes"
    );
    drop(store);
    assert_eq!(check_consistency(&path, "Child"), expected);
    assert_eq!(check_consistency(&path, "Parent"), expected);
}

#[test]
fn two_stores_of_one_process_write_at_the_same_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nexus.db");
    let first = SqliteStore::open(&path).expect("first");
    let second = SqliteStore::open(&path).expect("second");
    const EXCHANGES: usize = 100;

    std::thread::scope(|scope| {
        for (store, name) in [(&first, "One"), (&second, "Two")] {
            scope.spawn(move || {
                let companion = ensure_companion(store, name);
                let conversation = Conversation {
                    id: ConversationId::new(),
                    companion_id: companion.id,
                    title: None,
                    created_at: Timestamp(1),
                    updated_at: Timestamp(1),
                };
                store
                    .create_conversation(&conversation)
                    .expect("conversation");
                for n in 0..EXCHANGES {
                    let message = |role| Message {
                        id: MessageId::new(),
                        conversation_id: conversation.id,
                        role,
                        text: format!("{name} {n}"),
                        created_at: Timestamp(2),
                        token_count: 0,
                    };
                    store
                        .append_messages(&[message(Role::User), message(Role::Assistant)])
                        .expect("append");
                    store.set_setting("last writer", name).expect("setting");
                }
            });
        }
    });

    for store in [&first, &second] {
        assert_eq!(count_exchanges(store, "One"), EXCHANGES);
        assert_eq!(count_exchanges(store, "Two"), EXCHANGES);
        assert_eq!(store.list_companions().expect("list").len(), 2);
    }
    let last = first.setting("last writer").expect("setting");
    assert_eq!(last, second.setting("last writer").expect("setting"));
}
