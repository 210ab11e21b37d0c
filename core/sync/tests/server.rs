//! Two devices (two SQLite data directories) syncing through a real `nexus-sync-server` on
//! 127.0.0.1 over real sockets.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::server::{server_entries, server_entries_by_doc, start_server, start_stoppable};
use common::{
    add_memory, append, companion, conversation, device_docs_holding, dump, history_strings,
};
use nexus_store::Store;
use nexus_store_sqlite::SqliteStore;
use nexus_sync::net::{register_space, sync_once};
use nexus_sync::{PairingCode, SyncClient};

const T: Duration = Duration::from_secs(20);

#[test]
fn two_data_dirs_sync_through_a_real_server() {
    let dirs = tempfile::tempdir().unwrap();
    let url = start_server(&dirs.path().join("server"));
    let a = SqliteStore::open(&dirs.path().join("a.db")).unwrap();
    let b = SqliteStore::open(&dirs.path().join("b.db")).unwrap();

    let mira = companion(&a, "Mira", 1_000);
    add_memory(&a, mira.id, "The user has a cat.", 1_100);
    let conv = conversation(&a, mira.id, 1_200);
    append(&a, conv.id, "hello", 1_300);

    let mut ca = SyncClient::create_space(&a, &url).unwrap();
    register_space(&ca, T).unwrap();
    let report = sync_once(&mut ca, &a, T).unwrap();
    assert_eq!(report.pending, 0, "{report:?}");

    let code = PairingCode::parse(&ca.pairing_code().unwrap().to_text()).unwrap();
    let mut cb = SyncClient::join(&b, &code).unwrap();
    sync_once(&mut cb, &b, T).unwrap();
    assert_eq!(dump(&a), dump(&b));

    // Concurrent edits on both, then each syncs (twice, to receive the other's).
    add_memory(&a, mira.id, "A: likes tea.", 2_000);
    append(&b, conv.id, "from B", 2_100);
    add_memory(&b, mira.id, "B: plays chess.", 2_200);
    for _ in 0..2 {
        sync_once(&mut ca, &a, T).unwrap();
        sync_once(&mut cb, &b, T).unwrap();
    }
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(a.list_memories(mira.id, true).unwrap().len(), 3);
    assert_eq!(a.messages(conv.id, None).unwrap().len(), 2);

    // Reopened clients (a restart) carry on from their cursors.
    let mut ca = SyncClient::open(&a).unwrap().unwrap();
    a.set_setting("theme", "dark").unwrap();
    sync_once(&mut ca, &a, T).unwrap();
    let mut cb = SyncClient::open(&b).unwrap().unwrap();
    let report = sync_once(&mut cb, &b, T).unwrap();
    assert!(report.received > 0);
    assert_eq!(b.setting("theme").unwrap().as_deref(), Some("dark"));
}

#[test]
fn changes_made_while_the_server_is_down_go_out_when_it_is_back() {
    let dirs = tempfile::tempdir().unwrap();
    let server_dir = dirs.path().join("server");
    let (addr, stop, handle) = start_stoppable(&server_dir, "127.0.0.1:0".parse().unwrap());
    let url = format!("http://{addr}");
    let a = SqliteStore::open(&dirs.path().join("a.db")).unwrap();
    let b = SqliteStore::open(&dirs.path().join("b.db")).unwrap();
    let mira = companion(&a, "Mira", 1_000);
    let mut ca = SyncClient::create_space(&a, &url).unwrap();
    register_space(&ca, T).unwrap();
    sync_once(&mut ca, &a, T).unwrap();
    let code = ca.pairing_code().unwrap();
    let mut cb = SyncClient::join(&b, &code).unwrap();
    sync_once(&mut cb, &b, T).unwrap();

    // The server goes away; A keeps working offline.
    stop.send(()).unwrap();
    handle.join().unwrap();
    add_memory(&a, mira.id, "Written while the server was down.", 2_000);
    assert!(sync_once(&mut ca, &a, Duration::from_secs(2)).is_err());
    assert!(ca.pending() > 0);

    // Back on the same address and data: what it acknowledged before is still there, and A's
    // queued change goes out.
    let (_addr, _stop, _handle) = start_stoppable(&server_dir, addr);
    let report = sync_once(&mut ca, &a, T).unwrap();
    assert_eq!(report.pending, 0);
    sync_once(&mut cb, &b, T).unwrap();
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(b.list_memories(mira.id, true).unwrap().len(), 1);
}

#[test]
fn offline_edits_wait_for_the_server() {
    let dirs = tempfile::tempdir().unwrap();
    let a = SqliteStore::open(&dirs.path().join("a.db")).unwrap();
    // A server that is not there (a closed port).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut ca = SyncClient::create_space(&a, &format!("http://127.0.0.1:{port}")).unwrap();
    companion(&a, "Mira", 1_000);
    assert!(sync_once(&mut ca, &a, Duration::from_secs(2)).is_err());
    let reopened = SyncClient::open(&a).unwrap().unwrap();
    assert!(reopened.pending() > 0, "queued for later");
}

#[test]
fn a_wrong_token_is_refused_by_the_server() {
    let dirs = tempfile::tempdir().unwrap();
    let url = start_server(&dirs.path().join("server"));
    let a = SqliteStore::open(&dirs.path().join("a.db")).unwrap();
    let ca = SyncClient::create_space(&a, &url).unwrap();
    register_space(&ca, T).unwrap();
    let mut code = ca.pairing_code().unwrap();
    code.secret = nexus_sync::SpaceSecret::from_bytes([1; 32]);
    let b = SqliteStore::open(&dirs.path().join("b.db")).unwrap();
    let mut cb = SyncClient::join(&b, &code).unwrap();
    let err = sync_once(&mut cb, &b, T).unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(b.list_companions().unwrap().is_empty());
}

#[test]
fn a_revoked_device_is_locked_out_and_the_others_carry_on() {
    let dirs = tempfile::tempdir().unwrap();
    let server_dir = dirs.path().join("server");
    let url = start_server(&server_dir);
    let a = SqliteStore::open(&dirs.path().join("a.db")).unwrap();
    let b = SqliteStore::open(&dirs.path().join("b.db")).unwrap();
    let c = SqliteStore::open(&dirs.path().join("c.db")).unwrap();
    let mira = companion(&a, "Mira", 1_000);
    add_memory(&a, mira.id, "Written before the revocation.", 1_100);

    let mut ca = SyncClient::create_space(&a, &url).unwrap();
    ca.rename_device("laptop").unwrap();
    register_space(&ca, T).unwrap();
    sync_once(&mut ca, &a, T).unwrap();
    let code = ca.pairing_code().unwrap();
    let mut cb = SyncClient::join(&b, &code).unwrap();
    cb.rename_device("phone").unwrap();
    let mut cc = SyncClient::join(&c, &code).unwrap();
    cc.rename_device("lost tablet").unwrap();
    for _ in 0..2 {
        sync_once(&mut cb, &b, T).unwrap();
        sync_once(&mut cc, &c, T).unwrap();
        sync_once(&mut ca, &a, T).unwrap();
    }
    let names = |c: &SyncClient| {
        c.devices()
            .into_iter()
            .map(|d| (d.name, d.registered, d.revoked_at.is_some()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&ca),
        vec![
            ("laptop".into(), true, false),
            ("lost tablet".into(), true, false),
            ("phone".into(), true, false)
        ]
    );
    assert_eq!(dump(&a), dump(&c));

    // B has an edit queued offline when A revokes C.
    add_memory(&b, mira.id, "B wrote this offline.", 1_500);
    cb.sync_local(&b).unwrap();
    cb.save(&b).unwrap();

    let tablet = cc.device_id().unwrap();
    let old_token = cc.keys().token().clone();
    nexus_sync::net::revoke_devices(&mut ca, &a, &[tablet], T).unwrap();
    assert_eq!(ca.keys().epoch(), 1);
    assert_ne!(ca.keys().token(), &old_token);
    add_memory(&a, mira.id, "Written after the revocation.", 2_000);
    sync_once(&mut ca, &a, T).unwrap();

    // B's token no longer works: it reads the keyring with its device grant, opens the new
    // epoch secret, re-encrypts its queued edit and carries on.
    let report = sync_once(&mut cb, &b, T);
    let report = report.unwrap_or_else(|e| panic!("{e}: {:?} {:?}", cb.status(), cb.take_errors()));
    assert_eq!(report.pending, 0, "{report:?}");
    assert_eq!(cb.keys().epoch(), 1);
    assert_eq!(cb.keys().token(), ca.keys().token());
    sync_once(&mut ca, &a, T).unwrap();
    assert_eq!(dump(&a), dump(&b));
    let texts = |s: &SqliteStore| -> Vec<String> {
        s.list_memories(mira.id, true)
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect()
    };
    assert!(texts(&a).contains(&"B wrote this offline.".to_owned()));
    assert!(texts(&b).contains(&"Written after the revocation.".to_owned()));
    let on_b = names(&cb);
    assert!(
        on_b.contains(&("lost tablet".into(), true, true)),
        "{on_b:?}"
    );

    // C is out: its token and its device grant are refused, and it learns nothing new.
    let err = sync_once(&mut cc, &c, T).unwrap_err();
    assert!(matches!(err, nexus_sync::net::NetError::Revoked), "{err}");
    assert!(err.to_string().contains("removed from the space"), "{err}");
    assert!(!texts(&c).contains(&"Written after the revocation.".to_owned()));

    // Even with a copy of the server's database, C's keys open nothing written since: every
    // entry after the rotation is under epoch 1 (snapshots included), which C cannot derive.
    let entries = server_entries(&server_dir, ca.keys().space());
    let keyring = ca.keyring();
    let mut new_epoch = 0;
    for (doc, e) in &entries {
        if *doc == keyring {
            continue;
        }
        let epoch = u32::from_be_bytes(e.blob.0[1..5].try_into().unwrap());
        if epoch == 1 {
            new_epoch += 1;
            assert!(cc.keys().open(doc, e.kind, &e.blob).is_err());
            assert!(ca.keys().open(doc, e.kind, &e.blob).is_ok());
        }
    }
    assert!(
        new_epoch >= 3,
        "snapshots and changes under the new key: {new_epoch}"
    );
    // The old token's own derivation from the space secret does not give the new epoch either.
    let guessed = nexus_sync::SpaceKeys::derive(ca.keys().space(), &code.secret, 1);
    assert_ne!(guessed.token(), ca.keys().token());

    // A device paired after the rotation gets everything, old and new.
    let d = SqliteStore::open(&dirs.path().join("d.db")).unwrap();
    let code = PairingCode::parse(&ca.pairing_code().unwrap().to_text()).unwrap();
    assert_eq!(code.epoch, 1);
    let mut cd = SyncClient::join(&d, &code).unwrap();
    let report = sync_once(&mut cd, &d, T);
    let report = report.unwrap_or_else(|e| panic!("{e}: {:?} {:?}", cd.status(), cd.take_errors()));
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(dump(&a), dump(&d));
    assert!(texts(&d).contains(&"Written before the revocation.".to_owned()));

    // Revoking yourself is refused with a clear message.
    let me = ca.device_id().unwrap();
    let err = nexus_sync::net::revoke_devices(&mut ca, &a, &[me], T).unwrap_err();
    assert!(err.to_string().contains("cannot revoke itself"), "{err}");
}

/// The documents on the server whose entries, decrypted and taken together, ever held
/// `needle` (or cannot be read completely).
fn server_docs_holding(
    dir: &std::path::Path,
    keys: &nexus_sync::SpaceKeys,
    needle: &str,
) -> Vec<String> {
    server_entries_by_doc(dir, keys.space())
        .into_iter()
        .filter(|(doc, entries)| {
            let mut all = Vec::new();
            for e in entries {
                all.extend(keys.open(doc, e.kind, &e.blob).unwrap());
            }
            history_strings(&all).is_none_or(|h| h.iter().any(|s| s.contains(needle)))
        })
        .map(|(doc, _)| doc.to_string())
        .collect()
}

/// Every file under `dir` (recursively), read whole.
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((p, bytes));
        }
    }
    out
}

/// The files under `dir` that hold `needle`.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    files(dir)
        .into_iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
        .map(|(p, _)| p)
        .collect()
}

/// 32-byte pieces of a blob (one every 997 bytes): its random nonce makes each unique.
fn pieces(blob: &[u8]) -> Vec<Vec<u8>> {
    (0..blob.len().saturating_sub(32).max(1))
        .step_by(997)
        .map(|i| blob[i..(i + 32).min(blob.len())].to_vec())
        .collect()
}

#[test]
fn a_forgotten_memory_is_erased_from_both_devices_and_the_server() {
    const SECRET: &str = "Zanzibarite";
    let dirs = tempfile::tempdir().unwrap();
    let server_dir = dirs.path().join("server");
    let url = start_server(&server_dir);
    let (dir_a, dir_b) = (dirs.path().join("a"), dirs.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let a = SqliteStore::open(&dir_a.join("nexus.db")).unwrap();
    let b = SqliteStore::open(&dir_b.join("nexus.db")).unwrap();
    let mira = companion(&a, "Mira", 1_000);
    let secret = add_memory(&a, mira.id, &format!("The user's {SECRET} plan."), 1_100);
    add_memory(&a, mira.id, "The user has a cat.", 1_200);
    let mut ca = SyncClient::create_space(&a, &url).unwrap();
    register_space(&ca, T).unwrap();
    sync_once(&mut ca, &a, T).unwrap();
    let mut cb = SyncClient::join(&b, &ca.pairing_code().unwrap()).unwrap();
    sync_once(&mut cb, &b, T).unwrap();
    assert_eq!(b.list_memories(mira.id, true).unwrap().len(), 2);
    let keys = ca.keys().clone();
    // Before: everywhere.
    assert!(!device_docs_holding(&a, SECRET).is_empty());
    assert!(!device_docs_holding(&b, SECRET).is_empty());
    assert!(!server_docs_holding(&server_dir, &keys, SECRET).is_empty());
    let old_doc = keys.doc_id(&nexus_sync::DocName::Companion(mira.id).to_string());
    let old_blobs: Vec<Vec<u8>> = server_entries_by_doc(&server_dir, keys.space())
        .into_iter()
        .filter(|(doc, _)| *doc == old_doc)
        .flat_map(|(_, entries)| entries.into_iter().map(|e| e.blob.0))
        .collect();
    assert!(!old_blobs.is_empty());
    assert!(!files_holding(&dir_a, SECRET.as_bytes()).is_empty());
    for blob in &old_blobs {
        assert!(
            !files_holding(&server_dir, &pieces(blob)[0]).is_empty(),
            "on disk before"
        );
    }

    a.delete_memories(&[secret.id]).unwrap();
    for _ in 0..2 {
        sync_once(&mut ca, &a, T).unwrap();
        sync_once(&mut cb, &b, T).unwrap();
    }
    assert_eq!(dump(&a), dump(&b));
    assert_eq!(b.list_memories(mira.id, true).unwrap().len(), 1);
    assert_eq!(ca.pending() + cb.pending(), 0);
    // After: nowhere, history included, and the old generation is gone from the server.
    assert_eq!(device_docs_holding(&a, SECRET), Vec::<String>::new());
    assert_eq!(device_docs_holding(&b, SECRET), Vec::<String>::new());
    assert_eq!(
        server_docs_holding(&server_dir, &keys, SECRET),
        Vec::<String>::new()
    );
    let server_docs: Vec<_> = server_entries_by_doc(&server_dir, keys.space())
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    assert!(!server_docs.contains(&old_doc));
    // Not in any file either: the devices' databases (log included, once closed) and the
    // server's files, which hold none of the old generation's blobs.
    drop((ca, cb, a, b));
    assert_eq!(
        files_holding(&dir_a, SECRET.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(
        files_holding(&dir_b, SECRET.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );
    for blob in &old_blobs {
        for piece in pieces(blob) {
            let held = files_holding(&server_dir, &piece);
            assert!(held.is_empty(), "an old blob is still in {held:?}");
        }
    }
}

#[test]
fn deleting_the_space_leaves_nothing_on_the_server() {
    let dirs = tempfile::tempdir().unwrap();
    let server_dir = dirs.path().join("server");
    let url = start_server(&server_dir);
    let a = SqliteStore::open(&dirs.path().join("a.db")).unwrap();
    let b = SqliteStore::open(&dirs.path().join("b.db")).unwrap();
    let mira = companion(&a, "Mira", 1_000);
    add_memory(&a, mira.id, "The user has a cat.", 1_100);
    let mut ca = SyncClient::create_space(&a, &url).unwrap();
    register_space(&ca, T).unwrap();
    sync_once(&mut ca, &a, T).unwrap();
    let mut cb = SyncClient::join(&b, &ca.pairing_code().unwrap()).unwrap();
    sync_once(&mut cb, &b, T).unwrap();
    let keys = ca.keys().clone();
    let blobs: Vec<Vec<u8>> = server_entries_by_doc(&server_dir, keys.space())
        .into_iter()
        .flat_map(|(_, entries)| entries.into_iter().map(|e| e.blob.0))
        .collect();
    assert!(blobs.len() >= 3);
    for blob in &blobs {
        assert!(
            !files_holding(&server_dir, &pieces(blob)[0]).is_empty(),
            "on disk before"
        );
    }

    let deletion = nexus_sync::RemoteDeletion::of(&ca);
    assert!(
        nexus_sync::net::delete_space(&url, None, &deletion.space, deletion.token(), T).unwrap()
    );
    assert!(
        !nexus_sync::net::delete_space(&url, None, &deletion.space, deletion.token(), T).unwrap(),
        "nothing left to delete"
    );
    assert!(server_entries_by_doc(&server_dir, keys.space()).is_empty());
    for blob in &blobs {
        for piece in pieces(blob) {
            let held = files_holding(&server_dir, &piece);
            assert!(
                held.is_empty(),
                "a blob of the deleted space is in {held:?}"
            );
        }
    }
    // The other device is told the space is gone; registering it again needs `sync enable`.
    let err = sync_once(&mut cb, &b, T).unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
}
