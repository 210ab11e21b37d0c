//! A document exported by Nexus opens in the JavaScript Automerge library (npm
//! `@automerge/automerge`) with the documented schema, and a change made there merges back.
//!
//! Runs `node interop/interop.mjs`; installs the package with npm into `interop/node_modules`
//! (gitignored) when it is missing. Without node the test says so loudly and passes, except in
//! CI (`CI` set), where it fails: the CI entry installs node and npm.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{add_memory, append, companion, conversation, set_trust};
use nexus_common::{MemoryId, MessageId, Timestamp};
use nexus_store::{MemoryStore, Store};
use nexus_sync::{DocName, SyncClient};
use serde_json::Value;

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// Whether node and the package are there (installing the package if npm is).
fn ready() -> bool {
    let ci = std::env::var_os("CI").is_some();
    if Command::new("node").arg("--version").output().is_err() {
        assert!(
            !ci,
            "node is missing in CI: the CI entry must install nodejs and npm"
        );
        eprintln!(
            "\n*** SKIPPED interop test: node is not installed (apt-get install nodejs npm) ***\n"
        );
        return false;
    }
    let dir = interop_dir();
    if !dir
        .join("node_modules/@automerge/automerge/package.json")
        .exists()
    {
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "npm install of @automerge/automerge in {} failed",
            dir.display()
        );
    }
    true
}

#[test]
fn documents_open_in_javascript_automerge_and_changes_merge_back() {
    if !ready() {
        return;
    }
    let store = MemoryStore::new();
    let mut client = SyncClient::create_space(&store, "http://127.0.0.1:1").unwrap();
    let mira = companion(&store, "Mira", 1_000);
    add_memory(&store, mira.id, "The user has a cat.", 1_100);
    set_trust(&store, mira.id, 0.25, 1_150);
    let conv = conversation(&store, mira.id, 1_200);
    append(&store, conv.id, "hello", 1_300);
    client.sync_local(&store).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let path = |n: &str| tmp.path().join(n);
    let companion_doc = DocName::Companion(mira.id);
    let conversation_doc = DocName::Conversation(conv.id);
    std::fs::write(
        path("c.am"),
        client.export_document(&companion_doc).unwrap(),
    )
    .unwrap();
    std::fs::write(
        path("v.am"),
        client.export_document(&conversation_doc).unwrap(),
    )
    .unwrap();

    // Meanwhile Nexus edits too: both sides must survive the merge.
    let mut edited = store.companion(mira.id).unwrap();
    edited.description = "edited in Rust".to_owned();
    edited.updated_at = Timestamp(4_000);
    store.update_companion(&edited).unwrap();
    client.sync_local(&store).unwrap();

    let memory_id = MemoryId::new();
    let message_id = MessageId::new();
    let out = Command::new("node")
        .arg(interop_dir().join("interop.mjs"))
        .args([path("c.am"), path("v.am"), path("c2.am"), path("v2.am")])
        .args([memory_id.to_string(), message_id.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &seen["companion"];
    assert_eq!(c["name"], format!("companion/{}", mira.id));
    assert_eq!(c["schema"], 1);
    assert_eq!(c["profile_name"], "Mira");
    assert_eq!(c["deleted"], false);
    assert_eq!(c["trust"], 0.25);
    assert_eq!(c["memories"], serde_json::json!(["The user has a cat."]));
    assert_eq!(c["embedding_bytes"], serde_json::json!([12]));
    let v = &seen["conversation"];
    assert_eq!(v["companion_id"], mira.id.to_string());
    assert_eq!(v["messages"], serde_json::json!(["user: hello"]));

    let pending = client.pending();
    client
        .import_document(
            &store,
            &companion_doc,
            &std::fs::read(path("c2.am")).unwrap(),
        )
        .unwrap();
    client
        .import_document(
            &store,
            &conversation_doc,
            &std::fs::read(path("v2.am")).unwrap(),
        )
        .unwrap();
    let merged = store.companion(mira.id).unwrap();
    assert_eq!(merged.personality, "edited in JavaScript");
    assert_eq!(merged.description, "edited in Rust");
    let js_memory = store.memory(memory_id).unwrap();
    assert_eq!(js_memory.text, "Added in JavaScript.");
    assert!((js_memory.importance - 0.75).abs() < 1e-6);
    let texts: Vec<String> = store
        .messages(conv.id, None)
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["hello", "Hello from JavaScript"]);
    assert!(
        client.pending() > pending,
        "the JavaScript changes go to the other devices"
    );
    // Nothing new to capture: the store already matches the merged documents.
    assert_eq!(client.sync_local(&store).unwrap(), 0);
}
