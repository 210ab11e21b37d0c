//! The server binary is killed with SIGKILL while a client streams pushes: after a restart on
//! the same data directory every acknowledged write is there, byte for byte, sequence numbers
//! have no gaps, and clients resume from their cursors.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use nexus_sync_protocol::{
    Blob, ClientMessage, DocId, PROTOCOL_VERSION, ServerMessage, SpaceId, Token, http, routes,
};
use tokio_tungstenite::tungstenite::Message;

const FLAGS: [&str; 8] = [
    "--conn-rate",
    "1000000",
    "--conn-burst",
    "1000000",
    "--token-rate",
    "1000000",
    "--token-burst",
    "1000000",
];

fn blob_for(id: u64) -> Vec<u8> {
    format!(
        "change number {id} with some padding {}",
        "x".repeat((id % 97) as usize)
    )
    .into_bytes()
}

/// Streams pushes until the connection breaks; returns the acks (seq -> push id).
async fn stream_pushes(
    addr: std::net::SocketAddr,
    space: &SpaceId,
    token: &Token,
    doc: &DocId,
    first_id: u64,
    acked: Arc<Mutex<BTreeMap<u64, u64>>>,
) {
    let (ws, _) = tokio_tungstenite::connect_async_with_config(
        format!("ws://{addr}{}", routes::WS),
        None,
        true,
    )
    .await
    .unwrap();
    let (mut tx, mut rx) = ws.split();
    let hello = ClientMessage::Hello {
        protocol: PROTOCOL_VERSION,
        space: space.clone(),
        token: token.clone(),
        cursors: BTreeMap::new(),
    };
    tx.send(Message::text(hello.to_frame())).await.unwrap();
    let doc2 = doc.clone();
    let writer = tokio::spawn(async move {
        let mut id = first_id;
        loop {
            let push = ClientMessage::Push {
                id,
                doc: doc2.clone(),
                blob: Blob(blob_for(id)),
            };
            if tx.send(Message::text(push.to_frame())).await.is_err() {
                return;
            }
            id += 1;
            tokio::time::sleep(Duration::from_micros(300)).await;
        }
    });
    while let Some(Ok(m)) = rx.next().await {
        if let Message::Text(t) = m
            && let Ok(ServerMessage::Ack { id, seq, .. }) = ServerMessage::parse(t.as_str())
        {
            acked.lock().unwrap().insert(seq, id);
        }
    }
    writer.abort();
}

async fn all_entries(
    addr: std::net::SocketAddr,
    space: &SpaceId,
    token: &Token,
    doc: &DocId,
) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut since = 0;
    loop {
        let (s, body) = http(
            addr,
            "GET",
            &format!("{}?since={since}", routes::entries(space, doc)),
            Some(token),
            None,
        )
        .await;
        assert_eq!(s, 200, "{body}");
        let page: http::EntriesPage = serde_json::from_str(&body).unwrap();
        for e in page.entries {
            since = e.seq;
            out.push((e.seq, e.blob.0));
        }
        if !page.more {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let (sp, tk, d) = (space(1), token(1), doc(1));
    let mut args = vec!["--data", data.as_str()];
    args.extend(FLAGS);
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let mut reader_cursor = 0u64;
    let mut total_acked = 0;
    for round in 0..3u64 {
        let mut server = Proc::spawn(&args);
        if round == 0 {
            create_space(server.addr, &sp, &tk).await;
        }
        // A reader resumes from its cursor: it gets exactly what follows, no gap, no repeat.
        let (mut reader, welcome) = Ws::hello(
            server.addr,
            &sp,
            &tk,
            BTreeMap::from([(d.clone(), reader_cursor)]),
        )
        .await;
        let ServerMessage::Welcome { heads, .. } = welcome else {
            panic!("{welcome:?}")
        };
        let head = heads.get(&d).copied().unwrap_or(0);
        let got = reader.entries_until(&d, head).await;
        assert_eq!(
            got.iter().map(|e| e.0).collect::<Vec<_>>(),
            ((reader_cursor + 1)..=head).collect::<Vec<_>>(),
            "round {round}: the reader resumes exactly after its cursor"
        );
        reader_cursor = head;

        // Stream pushes and kill the server once enough were acknowledged.
        let before = acked.lock().unwrap().len();
        let pusher = tokio::spawn({
            let (sp, tk, d, acked) = (sp.clone(), tk.clone(), d.clone(), acked.clone());
            let addr = server.addr;
            async move { stream_pushes(addr, &sp, &tk, &d, round * 1_000_000, acked).await }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while acked.lock().unwrap().len() < before + 150 {
            assert!(tokio::time::Instant::now() < deadline, "too few acks");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.kill9();
        tokio::time::timeout(Duration::from_secs(10), pusher)
            .await
            .unwrap()
            .unwrap();
        total_acked = acked.lock().unwrap().len();

        // Restart on the same directory and check every acknowledged write.
        let server = Proc::spawn(&args);
        let stored = all_entries(server.addr, &sp, &tk, &d).await;
        let seqs: Vec<u64> = stored.iter().map(|e| e.0).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "no gaps");
        let stored: BTreeMap<u64, Vec<u8>> = stored.into_iter().collect();
        for (seq, id) in acked.lock().unwrap().iter() {
            assert_eq!(
                stored.get(seq),
                Some(&blob_for(*id)),
                "round {round}: acknowledged seq {seq} (push {id}) is stored"
            );
        }
        drop(server);
    }
    assert!(total_acked >= 450);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_even_with_open_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Proc::spawn(&["--data", dir.path().to_str().unwrap()]);
    let (sp, tk) = (space(1), token(1));
    create_space(server.addr, &sp, &tk).await;
    let mut ws = Ws::connect(server.addr, &sp, &tk).await;
    ws.push_acked(1, &doc(1), b"x").await;
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
