//! Sharing one companion with another person through a real `nexus-sync-server` on 127.0.0.1:
//! the owner's device and the recipient's device are two SQLite data directories.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::server::{server_entries, start_server};
use common::{add_memory, append, companion, conversation, set_trust};
use nexus_store::Store;
use nexus_store_sqlite::SqliteStore;
use nexus_sync::net::{NetError, register_space, revoke_devices, sync_once};
use nexus_sync::share::net::{share_companion, sync_share, unshare};
use nexus_sync::{DocName, ShareClient, ShareCode, ShareStatus, SyncClient};
use nexus_sync_protocol::{Access, BlobKind, Token};

const T: Duration = Duration::from_secs(20);

/// A raw HTTP request with a bearer token: the status code.
fn http_status(url: &str, method: &str, path: &str, token: &Token, body: &str) -> u16 {
    let host = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        token.expose(),
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn memories(store: &SqliteStore, id: nexus_common::CompanionId) -> Vec<String> {
    let mut texts: Vec<String> = store
        .list_memories(id, true)
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    texts.sort();
    texts
}

/// The owner's first device: a space with Mira (shared later) and Nova (never shared).
struct Owner {
    store: SqliteStore,
    client: SyncClient,
    mira: nexus_store::Companion,
    nova: nexus_store::Companion,
}

fn owner(dir: &std::path::Path, url: &str) -> Owner {
    let store = SqliteStore::open(&dir.join("owner.db")).unwrap();
    let mira = companion(&store, "Mira", 1_000);
    add_memory(&store, mira.id, "The owner has a cat named Tofu.", 1_100);
    let conv = conversation(&store, mira.id, 1_200);
    append(&store, conv.id, "A private conversation with Mira.", 1_300);
    let nova = companion(&store, "Nova", 1_400);
    add_memory(
        &store,
        nova.id,
        "Nova knows the owner's secret plan.",
        1_500,
    );
    let mut client = SyncClient::create_space(&store, url).unwrap();
    register_space(&client, T).unwrap();
    sync_once(&mut client, &store, T).unwrap();
    Owner {
        store,
        client,
        mira,
        nova,
    }
}

#[test]
fn a_read_only_share_gives_one_companion_and_nothing_else() {
    let dirs = tempfile::tempdir().unwrap();
    let server_dir = dirs.path().join("server");
    let url = start_server(&server_dir);
    let mut o = owner(dirs.path(), &url);
    let (code, id) =
        share_companion(&mut o.client, &o.store, o.mira.id, "Mira", Access::Read, T).unwrap();
    let shares = o.client.shares();
    assert_eq!(shares.len(), 1, "{shares:?}");
    assert_eq!(shares[0].id, id);
    assert_eq!(shares[0].status, ShareStatus::Active);
    assert_eq!(shares[0].access, Access::Read);
    assert_eq!(shares[0].companion, "Mira");

    // The recipient has no sync of their own; the code travels as text.
    let code = ShareCode::parse(&code.to_text()).unwrap();
    assert_eq!(code.name, DocName::Companion(o.mira.id));
    let r = SqliteStore::open(&dirs.path().join("recipient.db")).unwrap();
    let mut share = ShareClient::join(&r, &code).unwrap();
    let report = sync_share(&mut share, &r, T).unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    let got = r.companion(o.mira.id).unwrap();
    assert_eq!(got.name, "Mira");
    assert_eq!(got.personality, o.mira.personality);
    assert_eq!(memories(&r, o.mira.id), ["The owner has a cat named Tofu."]);
    // Conversations stay private, and so does every other companion.
    assert!(r.list_conversations(o.mira.id).unwrap().is_empty());
    assert_eq!(r.list_companions().unwrap().len(), 1);
    assert!(r.companion(o.nova.id).is_err());

    // Later memories and persona changes of the owner arrive.
    add_memory(&o.store, o.mira.id, "The owner started painting.", 2_000);
    set_trust(&o.store, o.mira.id, 0.7, 2_100);
    sync_once(&mut o.client, &o.store, T).unwrap();
    sync_share(&mut share, &r, T).unwrap();
    assert_eq!(
        memories(&r, o.mira.id),
        [
            "The owner has a cat named Tofu.",
            "The owner started painting."
        ]
    );
    assert_eq!(r.persona_state(o.mira.id).unwrap().unwrap().trust, 0.7);

    // The recipient edits locally: a read-only share does not even try to push.
    let mut edited = r.companion(o.mira.id).unwrap();
    edited.personality = "grumpy".into();
    r.update_companion(&edited).unwrap();
    add_memory(&r, o.mira.id, "Written by the recipient.", 2_200);
    let report = sync_share(&mut share, &r, T).unwrap();
    assert_eq!((report.local_changes, report.pending), (0, 0), "{report:?}");
    sync_once(&mut o.client, &o.store, T).unwrap();
    assert_eq!(o.store.companion(o.mira.id).unwrap().personality, "curious");
    assert_eq!(memories(&o.store, o.mira.id).len(), 2);
    // The local edit stays on the recipient's device.
    assert_eq!(r.companion(o.mira.id).unwrap().personality, "grumpy");

    // The server forbids writing with the grant, and reading anything but the shared document.
    let space = o.client.keys().space().clone();
    let nova_doc = o
        .client
        .keys()
        .doc_id(&DocName::Companion(o.nova.id).to_string());
    let push = r#"{"blob":"AAAA"}"#;
    let status = |method, path: String, body| http_status(&url, method, &path, &code.token, body);
    assert_eq!(
        status(
            "POST",
            format!("/v1/spaces/{space}/docs/{}/changes", code.doc),
            push
        ),
        403
    );
    assert_eq!(
        status(
            "GET",
            format!("/v1/spaces/{space}/docs/{nova_doc}/entries"),
            ""
        ),
        403
    );
    assert_eq!(
        status(
            "GET",
            format!("/v1/spaces/{space}/docs/{}/entries", code.doc),
            ""
        ),
        200
    );
    assert_eq!(
        status("POST", format!("/v1/spaces/{space}/grants"), "{}"),
        403,
        "a grant cannot make grants"
    );

    // Even with a copy of the server's database, the recipient's key opens the shared
    // document's blobs only.
    let entries = server_entries(&server_dir, &space);
    let (mut shared, mut others) = (0, 0);
    for (doc, e) in &entries {
        if *doc == code.doc {
            shared += 1;
            share.keys().open(doc, e.kind, &e.blob).unwrap();
        } else {
            others += 1;
            assert!(share.keys().open(doc, e.kind, &e.blob).is_err());
            assert!(share.keys().open(&code.doc, e.kind, &e.blob).is_err());
            if *doc != o.client.keyring() {
                o.client.keys().open(doc, e.kind, &e.blob).unwrap();
            }
        }
    }
    assert!(shared >= 1 && others >= 4, "{shared} {others}");
    // The document was snapshotted when shared: the server gives a new reader the snapshot.
    assert!(
        entries
            .iter()
            .any(|(d, e)| *d == code.doc && e.kind == BlobKind::Snapshot)
    );

    // After a restart the share carries on from its cursor.
    let mut reopened = ShareClient::open_all(&r).unwrap();
    assert_eq!(reopened.len(), 1);
    add_memory(&o.store, o.mira.id, "After the restart.", 3_000);
    sync_once(&mut o.client, &o.store, T).unwrap();
    let report = sync_share(&mut reopened[0], &r, T).unwrap();
    assert!(report.received >= 2, "{report:?}");
    assert_eq!(memories(&r, o.mira.id).len(), 4);
}

#[test]
fn a_read_write_share_carries_the_recipients_edits_back() {
    let dirs = tempfile::tempdir().unwrap();
    let url = start_server(&dirs.path().join("server"));
    // The recipient has a Mira of their own (older: its id is smaller, so it keeps the name)
    // and syncs with their own devices too.
    let r = SqliteStore::open(&dirs.path().join("recipient.db")).unwrap();
    let own_mira = companion(&r, "Mira", 500);
    let mut o = owner(dirs.path(), &url);
    let (code, _) = share_companion(
        &mut o.client,
        &o.store,
        o.mira.id,
        "Mira",
        Access::ReadWrite,
        T,
    )
    .unwrap();
    let mut own = SyncClient::create_space(&r, &url).unwrap();
    register_space(&own, T).unwrap();
    sync_once(&mut own, &r, T).unwrap();
    let mut share = ShareClient::join(&r, &ShareCode::parse(&code.to_uri()).unwrap()).unwrap();
    sync_share(&mut share, &r, T).unwrap();
    // The two Miras: the younger (larger id) gets a suffix on the recipient's device.
    let shared_name = r.companion(o.mira.id).unwrap().name;
    assert_eq!(r.companion(own_mira.id).unwrap().name, "Mira");
    assert!(shared_name.starts_with("Mira ("), "{shared_name}");

    // The recipient's persona edit and a new memory reach the owner; the clash name does not.
    let mut edited = r.companion(o.mira.id).unwrap();
    edited.personality = "playful".into();
    r.update_companion(&edited).unwrap();
    add_memory(&r, o.mira.id, "The recipient likes jazz.", 2_000);
    let report = sync_share(&mut share, &r, T).unwrap();
    assert_eq!((report.local_changes, report.pending), (1, 0), "{report:?}");
    sync_once(&mut o.client, &o.store, T).unwrap();
    let at_owner = o.store.companion(o.mira.id).unwrap();
    assert_eq!(at_owner.personality, "playful");
    assert_eq!(at_owner.name, "Mira");
    assert!(memories(&o.store, o.mira.id).contains(&"The recipient likes jazz.".to_owned()));
    // Nothing changed: nothing more is sent.
    let report = sync_share(&mut share, &r, T).unwrap();
    assert_eq!(report.local_changes, 0, "{report:?}");

    // And the owner's edits keep arriving.
    add_memory(&o.store, o.mira.id, "The owner replied.", 3_000);
    sync_once(&mut o.client, &o.store, T).unwrap();
    sync_share(&mut share, &r, T).unwrap();
    assert!(memories(&r, o.mira.id).contains(&"The owner replied.".to_owned()));

    // The recipient's own sync is unaffected, and turning it off (or joining another space)
    // keeps the share.
    sync_once(&mut own, &r, T).unwrap();
    SyncClient::disable(&r).unwrap();
    assert_eq!(ShareClient::open_all(&r).unwrap().len(), 1);
    let other = SyncClient::create_space(&r, &url).unwrap();
    drop(other);
    let mut shares = ShareClient::open_all(&r).unwrap();
    assert_eq!(shares.len(), 1);
    sync_share(&mut shares[0], &r, T).unwrap();

    // Leaving drops the share, not the companion.
    ShareClient::join(&r, &code).unwrap_err();
    shares.pop().unwrap().leave(&r).unwrap();
    assert!(ShareClient::open_all(&r).unwrap().is_empty());
    assert!(r.companion(o.mira.id).is_ok());
    assert!(r.sync_keys("share/").unwrap().is_empty());
}

#[test]
fn unsharing_or_a_key_rotation_ends_the_share_and_the_recipient_keeps_what_it_had() {
    let dirs = tempfile::tempdir().unwrap();
    let url = start_server(&dirs.path().join("server"));
    let mut o = owner(dirs.path(), &url);
    let (code_mira, id_mira) =
        share_companion(&mut o.client, &o.store, o.mira.id, "Mira", Access::Read, T).unwrap();
    let (code_nova, _) =
        share_companion(&mut o.client, &o.store, o.nova.id, "Nova", Access::Read, T).unwrap();
    let r = SqliteStore::open(&dirs.path().join("recipient.db")).unwrap();
    let mut mira = ShareClient::join(&r, &code_mira).unwrap();
    let mut nova = ShareClient::join(&r, &code_nova).unwrap();
    sync_share(&mut mira, &r, T).unwrap();
    sync_share(&mut nova, &r, T).unwrap();
    assert_eq!(r.list_companions().unwrap().len(), 2);

    // A second device of the owner sees the shares and ends one.
    let phone = SqliteStore::open(&dirs.path().join("phone.db")).unwrap();
    let mut cp = SyncClient::join(&phone, &o.client.pairing_code().unwrap()).unwrap();
    sync_once(&mut cp, &phone, T).unwrap();
    assert_eq!(cp.shares().len(), 2);
    unshare(&mut cp, &phone, &id_mira, T).unwrap();
    add_memory(&o.store, o.mira.id, "Written after unsharing.", 2_000);
    sync_once(&mut o.client, &o.store, T).unwrap();
    let status: Vec<ShareStatus> = o.client.shares().iter().map(|s| s.status).collect();
    assert_eq!(status, [ShareStatus::Unshared, ShareStatus::Active]);

    let err = sync_share(&mut mira, &r, T).unwrap_err();
    assert!(matches!(err, NetError::NoLongerShared(_)), "{err}");
    assert!(
        err.to_string().contains("Mira is no longer shared"),
        "{err}"
    );
    assert!(mira.ended());
    assert_eq!(memories(&r, o.mira.id), ["The owner has a cat named Tofu."]);
    // It stays ended (no more connections), also after a restart.
    let reopened = ShareClient::open_all(&r).unwrap();
    let ended: Vec<bool> = reopened.iter().map(ShareClient::ended).collect();
    assert_eq!(ended.iter().filter(|e| **e).count(), 1, "{ended:?}");
    sync_share(&mut nova, &r, T).unwrap();

    // Revoking the phone rotates the key: every share ends.
    let phone_id = cp.device_id().unwrap();
    sync_once(&mut o.client, &o.store, T).unwrap();
    revoke_devices(&mut o.client, &o.store, &[phone_id], T).unwrap();
    let status: Vec<ShareStatus> = o.client.shares().iter().map(|s| s.status).collect();
    assert_eq!(status, [ShareStatus::Unshared, ShareStatus::Rotated]);
    add_memory(&o.store, o.nova.id, "Written after the rotation.", 3_000);
    sync_once(&mut o.client, &o.store, T).unwrap();
    let err = sync_share(&mut nova, &r, T).unwrap_err();
    assert!(
        err.to_string().contains("Nova is no longer shared"),
        "{err}"
    );
    assert_eq!(
        memories(&r, o.nova.id),
        ["Nova knows the owner's secret plan."]
    );
    // Ending a share that a rotation already ended only marks it.
    let id_nova = o.client.shares()[1].id.clone();
    unshare(&mut o.client, &o.store, &id_nova, T).unwrap();
    assert_eq!(o.client.shares()[1].status, ShareStatus::Unshared);

    // Sharing again after the rotation works with the new key.
    let (again, _) =
        share_companion(&mut o.client, &o.store, o.nova.id, "Nova", Access::Read, T).unwrap();
    assert_eq!(again.epoch, 1);
    nova.leave(&r).unwrap();
    let mut nova = ShareClient::join(&r, &again).unwrap();
    sync_share(&mut nova, &r, T).unwrap();
    assert!(memories(&r, o.nova.id).contains(&"Written after the rotation.".to_owned()));
}

/// Forgetting starts a companion's document over under a new id (a new generation): a share
/// made afterwards names that generation, and the recipient receives it without the forgotten
/// memory.
#[test]
fn a_companion_shared_after_forgetting_one_of_its_memories() {
    let dirs = tempfile::tempdir().unwrap();
    let url = start_server(&dirs.path().join("server"));
    let mut o = owner(dirs.path(), &url);
    let secret = add_memory(&o.store, o.mira.id, "Forget this: the old password.", 1_600);
    sync_once(&mut o.client, &o.store, T).unwrap();
    o.store.delete_memories(&[secret.id]).unwrap();
    sync_once(&mut o.client, &o.store, T).unwrap();
    let (code, _) =
        share_companion(&mut o.client, &o.store, o.mira.id, "Mira", Access::Read, T).unwrap();
    assert!(
        code.generation.is_some(),
        "the current generation is shared"
    );
    let code = ShareCode::parse(&code.to_text()).unwrap();

    let r = SqliteStore::open(&dirs.path().join("recipient.db")).unwrap();
    let mut share = ShareClient::join(&r, &code).unwrap();
    let report = sync_share(&mut share, &r, T).unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(
        memories(&r, o.mira.id),
        vec!["The owner has a cat named Tofu.".to_owned()]
    );
    assert_eq!(o.client.shares()[0].status, ShareStatus::Active);

    // Forgetting again starts the document over once more: the owner's list says the share
    // ended (the recipient's grant names the deleted generation); sharing again works.
    let second = add_memory(&o.store, o.mira.id, "Also forget this.", 1_700);
    sync_once(&mut o.client, &o.store, T).unwrap();
    o.store.delete_memories(&[second.id]).unwrap();
    sync_once(&mut o.client, &o.store, T).unwrap();
    assert_eq!(o.client.shares()[0].status, ShareStatus::StartedOver);
    // The recipient is told the share ended, and keeps what it had.
    let err = sync_share(&mut share, &r, T).unwrap_err();
    assert!(matches!(err, NetError::NoLongerShared(_)), "{err}");
    assert_eq!(
        memories(&r, o.mira.id),
        vec!["The owner has a cat named Tofu.".to_owned()]
    );
    let (again, _) =
        share_companion(&mut o.client, &o.store, o.mira.id, "Mira", Access::Read, T).unwrap();
    let r2 = SqliteStore::open(&dirs.path().join("recipient2.db")).unwrap();
    let mut share = ShareClient::join(&r2, &ShareCode::parse(&again.to_text()).unwrap()).unwrap();
    sync_share(&mut share, &r2, T).unwrap();
    assert_eq!(
        memories(&r2, o.mira.id),
        vec!["The owner has a cat named Tofu.".to_owned()]
    );
}
