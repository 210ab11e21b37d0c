//! Two devices (two SQLite data directories) syncing through a real `nexus-sync-server` on
//! 127.0.0.1 over real sockets.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{add_memory, append, companion, conversation, dump};
use nexus_store::Store;
use nexus_store_sqlite::SqliteStore;
use nexus_sync::net::{register_space, sync_once};
use nexus_sync::{PairingCode, SyncClient};
use nexus_sync_server::{App, Limits, SqliteStorage, serve};

const T: Duration = Duration::from_secs(20);

/// Starts a server in a background runtime; returns its URL. It runs until the test ends.
fn start_server(dir: &std::path::Path) -> String {
    let storage = SqliteStorage::open(dir).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = App::new(storage, Limits::default());
            serve(app, listener, std::future::pending()).await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

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

/// Starts a server on `addr` that stops when the returned sender is dropped or sent to; the
/// returned handle ends once it has stopped.
fn start_stoppable(
    dir: &std::path::Path,
    addr: std::net::SocketAddr,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let storage = SqliteStorage::open(dir).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = App::new(storage, Limits::default());
            serve(app, listener, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
    });
    (rx.recv().unwrap(), stop, handle)
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
