//! A real `nexus-sync-server` on 127.0.0.1 for the tests that cross the network, and a
//! direct look into its database.

use nexus_sync_protocol::{DocId, Entry, SpaceId};
use nexus_sync_server::{App, Limits, SqliteStorage, serve};

/// Starts a server in a background runtime; returns its URL. It runs until the test ends.
pub fn start_server(dir: &std::path::Path) -> String {
    let (addr, stop, _handle) = start_stoppable(dir, "127.0.0.1:0".parse().unwrap());
    // Never sent nor dropped: the server lives as long as the test process.
    std::mem::forget(stop);
    format!("http://{addr}")
}

/// Starts a server on `addr` that stops when the returned sender is dropped or sent to; the
/// returned handle ends once it has stopped.
pub fn start_stoppable(
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

/// Everything the server keeps for a space, read from its database (a second handle on the
/// file the running server uses): per document, its entries.
pub fn server_entries_by_doc(dir: &std::path::Path, space: &SpaceId) -> Vec<(DocId, Vec<Entry>)> {
    use nexus_sync_server::Storage as _;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let storage = SqliteStorage::open(dir).unwrap();
    rt.block_on(async {
        let mut out = Vec::new();
        for doc in storage.heads(space).await.unwrap().into_keys() {
            let page = storage
                .entries(space, &doc, 0, 100_000, usize::MAX)
                .await
                .unwrap();
            out.push((doc, page.entries));
        }
        out
    })
}

/// Every entry of every document of `space` in the server's database, read directly.
pub fn server_entries(dir: &std::path::Path, space: &SpaceId) -> Vec<(DocId, Entry)> {
    server_entries_by_doc(dir, space)
        .into_iter()
        .flat_map(|(doc, entries)| entries.into_iter().map(move |e| (doc.clone(), e)))
        .collect()
}
