//! `nexus memory`, `/why`, persona traits, and the privacy commands (`export`,
//! `import-archive`, `forget-me`), run as a user would with the real models.

mod support;

use std::path::Path;

use support::{code, contains, files, json, ok, run, run_with_input, stderr, stdout};

fn chat_json(data: &Path, message: &str) -> serde_json::Value {
    json(run(
        data,
        &[
            "chat",
            "--message",
            message,
            "--json",
            "--temperature",
            "0",
            "--max-tokens",
            "24",
        ],
    ))
}

fn short(id: &serde_json::Value) -> String {
    let id = id.as_str().expect("id");
    id[id.len() - 8..].to_owned()
}

#[test]
fn memories_are_learned_used_explained_and_controlled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let first = chat_json(d, "My sister Anna loves orchids.");
    assert_eq!(first["memories_used"], serde_json::json!([]));

    let list = json(run(d, &["memory", "list", "--json"]));
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(list[0]["text"].as_str().expect("text").contains("Anna"));
    assert_eq!(list[0]["kind"], "person");

    let second = chat_json(d, "What flowers should I buy for my sister?");
    let used = second["memories_used"].as_array().expect("memories_used");
    assert!(
        used.iter()
            .any(|m| m["text"].as_str().is_some_and(|t| t.contains("Anna"))),
        "{second}"
    );

    // `/why` in the interactive chat explains the last reply.
    let out = ok(run_with_input(d, &["chat"], "/why\n/quit\n"));
    assert!(out.contains("informed by") && out.contains("Anna"), "{out}");

    let hits = json(run(
        d,
        &["memory", "search", "flowers for my sister", "--json"],
    ));
    assert!(
        hits[0]["text"].as_str().expect("text").contains("Anna"),
        "{hits}"
    );
    let id = short(&hits[0]["id"]);

    let out = ok(run(d, &["memory", "pin", &id]));
    assert!(out.starts_with("Pinned"), "{out}");
    ok(run(
        d,
        &[
            "memory",
            "edit",
            &id,
            "The user's sister Anna loves tulips.",
        ],
    ));
    let out = ok(run(d, &["memory", "list"]));
    assert!(out.contains("tulips") && out.contains("pinned"), "{out}");

    let missing = run(d, &["memory", "forget", "zzzzzzzz"]);
    assert_eq!(code(&missing), 3, "{}", stderr(&missing));
    assert!(stderr(&missing).contains("memory list"), "a hint");

    let gone = json(run(
        d,
        &["memory", "forget", "--about", "my sister", "--json"],
    ));
    assert_eq!(gone.as_array().map(Vec::len), Some(1), "{gone}");
    let out = ok(run(d, &["memory", "list"]));
    assert!(out.contains("doesn't remember anything"), "{out}");
    let usage = run(d, &["memory", "forget"]);
    assert_eq!(code(&usage), 2, "{}", stderr(&usage));
}

#[test]
fn companion_show_displays_traits_and_the_user_can_lock_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    ok(run(
        d,
        &[
            "companion",
            "create",
            "Mira",
            "--personality",
            "curious, lively",
        ],
    ));
    let out = ok(run(d, &["companion", "show", "Mira"]));
    for word in ["openness", "extraversion", "familiarity", "trust"] {
        assert!(out.contains(word), "{word}: {out}");
    }
    ok(run(d, &["companion", "lock", "Mira", "extraversion"]));
    let v = json(run(d, &["companion", "show", "Mira", "--json"]));
    assert_eq!(v["persona"]["locked"], serde_json::json!(["extraversion"]));
    assert!(
        v["persona"]["traits"]["openness"]
            .as_f64()
            .expect("openness")
            > 0.5
    );
    assert!(ok(run(d, &["companion", "show", "Mira"])).contains("(locked)"));
    let bad = run(d, &["companion", "lock", "Mira", "charisma"]);
    assert_eq!(code(&bad), 2);
    assert!(stderr(&bad).contains("openness"), "lists the traits");
    let history = ok(run(d, &["companion", "evolution", "Mira"]));
    assert!(history.contains("lock:extraversion"), "{history}");
    ok(run(d, &["companion", "unlock", "Mira", "extraversion"]));
    let v = json(run(d, &["companion", "show", "Mira", "--json"]));
    assert_eq!(v["persona"]["locked"], serde_json::json!([]));
}

#[test]
fn export_restore_and_forget_me_leave_no_user_text_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let d = data.as_path();
    let secret = "Quetzalcoatl";
    chat_json(d, &format!("My best friend {secret} lives in Reykjavik."));
    chat_json(d, "I'm allergic to cashews.");
    assert!(
        files(d).iter().any(|(_, b)| contains(b, secret)),
        "the data directory holds the conversation"
    );

    let archive = dir.path().join("me.json");
    let a = archive.to_str().expect("path");
    let out = ok(run(d, &["export", "-o", a]));
    assert!(out.contains("not encrypted"), "{out}");
    let again = run(d, &["export", "-o", a]);
    assert_eq!(code(&again), 2, "no silent overwrite");
    let text = std::fs::read_to_string(&archive).expect("archive");
    for expected in [
        secret,
        "cashews",
        "\"format\": \"nexus-archive\"",
        "persona",
    ] {
        assert!(text.contains(expected), "{expected} in the archive");
    }

    let refused = run(d, &["forget-me"]);
    assert_eq!(code(&refused), 2, "needs --yes: {}", stderr(&refused));
    assert!(files(d).iter().any(|(_, b)| contains(b, secret)));

    ok(run(d, &["forget-me", "--yes"]));
    let left: Vec<_> = files(d)
        .into_iter()
        .filter(|(_, b)| {
            ["Reykjavik", secret, "cashews"]
                .iter()
                .any(|s| contains(b, s))
        })
        .map(|(p, _)| p)
        .collect();
    assert!(left.is_empty(), "user text left in {left:?}");

    // Restoring brings everything back, memories included.
    let out = ok(run(d, &["import-archive", a]));
    assert!(out.contains("Restored 1 companion"), "{out}");
    let history = ok(run(d, &["history"]));
    assert!(history.contains(secret), "{history}");
    let memories = ok(run(d, &["memory", "list"]));
    assert!(memories.contains("cashews"), "{memories}");
    let skipped = ok(run(d, &["import-archive", a]));
    assert!(skipped.contains("Skipped"), "{skipped}");

    for bad in [
        &b"not json"[..],
        b"{\"format\":\"nexus-archive\",\"version\":99}",
    ] {
        let f = dir.path().join("bad.json");
        std::fs::write(&f, bad).expect("write");
        let o = run(d, &["import-archive", f.to_str().expect("path")]);
        assert_eq!(code(&o), 2, "{}", stdout(&o));
        assert!(!stderr(&o).is_empty());
    }

    ok(run(d, &["forget-me", "--yes"]));
    assert!(
        files(d)
            .iter()
            .all(|(_, b)| !contains(b, secret) && !contains(b, "cashews")),
        "nothing left after the second forget-me"
    );
}
