//! End to end over real sockets (127.0.0.1:0) with a real SQLite file: WebSocket and HTTP.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use nexus_sync_protocol::{
    Access, Blob, BlobKind, ClientMessage, ErrorBody, ErrorCode, MAX_CHANGE_BYTES, ServerMessage,
    http, routes,
};
use nexus_sync_server::Limits;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_is_acked_and_relayed_to_the_other_device() {
    let (srv, _dir) = start_sqlite(generous()).await;
    let (sp, tk, d) = (space(1), token(1), doc(1));
    create_space(srv.addr, &sp, &tk).await;
    let mut a = Ws::connect(srv.addr, &sp, &tk).await;
    let mut b = Ws::connect(srv.addr, &sp, &tk).await;
    assert_eq!(a.push_acked(7, &d, b"hello").await, 1);
    assert_eq!(b.entries_until(&d, 1).await, vec![(1, b"hello".to_vec())]);
    // The pusher receives its own entry too: its cursor stays gap-free.
    assert_eq!(a.entries_until(&d, 1).await, vec![(1, b"hello".to_vec())]);
    assert_eq!(b.push_acked(1, &d, b"world").await, 2);
    assert_eq!(a.entries_until(&d, 2).await, vec![(2, b"world".to_vec())]);
    // Blobs too large to ride along in the fan-out event are read from storage.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(a.push_acked(8, &d, &big).await, 3);
    let got = b.entries_until(&d, 3).await; // b's own seq 2 may come first
    assert!(
        got.last() == Some(&(3, big.clone())),
        "the large blob arrives intact"
    );
    // Ping.
    a.send(&ClientMessage::Ping { id: 42 }).await;
    loop {
        if let ServerMessage::Pong { id } = a.recv().await.unwrap() {
            assert_eq!(id, 42);
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_cursors_gets_exactly_the_backlog() {
    let (srv, _dir) = start_sqlite(generous()).await;
    let (sp, tk) = (space(1), token(1));
    create_space(srv.addr, &sp, &tk).await;
    let mut a = Ws::connect(srv.addr, &sp, &tk).await;
    for i in 0..5u64 {
        a.push_acked(i, &doc(1), &[i as u8]).await;
    }
    for i in 0..3u64 {
        a.push_acked(10 + i, &doc(2), &[i as u8]).await;
    }
    let (mut b, welcome) = Ws::hello(
        srv.addr,
        &sp,
        &tk,
        BTreeMap::from([(doc(1), 3), (doc(2), 3)]),
    )
    .await;
    let ServerMessage::Welcome { heads, grants, .. } = welcome else {
        panic!("{welcome:?}")
    };
    assert_eq!(heads, BTreeMap::from([(doc(1), 5), (doc(2), 3)]));
    assert_eq!(grants, None);
    assert_eq!(
        b.entries_until(&doc(1), 5).await,
        vec![(4, vec![3]), (5, vec![4])]
    );
    assert_eq!(b.quiet(200).await, None, "doc 2 was up to date");
    // A new device without cursors gets everything; then live entries follow.
    let (mut c, _) = Ws::hello(srv.addr, &sp, &tk, BTreeMap::new()).await;
    assert_eq!(c.entries_until(&doc(1), 5).await.len(), 5);
    assert_eq!(c.entries_until(&doc(2), 3).await.len(), 3);
    a.push_acked(99, &doc(1), b"live").await;
    assert_eq!(
        c.entries_until(&doc(1), 6).await,
        vec![(6, b"live".to_vec())]
    );
    // Many entries arrive in several messages, in order.
    for i in 0..600u64 {
        a.push(1000 + i, &doc(3), b"x").await;
    }
    let got = c.entries_until(&doc(3), 600).await;
    assert_eq!(
        got.iter().map(|e| e.0).collect::<Vec<_>>(),
        (1..=600).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_compact_and_new_devices_start_from_them() {
    let (srv, _dir) = start_sqlite(generous()).await;
    let (sp, tk, d) = (space(1), token(1), doc(1));
    create_space(srv.addr, &sp, &tk).await;
    let mut a = Ws::connect(srv.addr, &sp, &tk).await;
    for i in 0..4u64 {
        a.push_acked(i, &d, b"c").await;
    }
    a.send(&ClientMessage::Snapshot {
        id: 50,
        doc: d.clone(),
        covers: 4,
        blob: Blob(b"snapshot".to_vec()),
    })
    .await;
    loop {
        match a.recv().await.unwrap() {
            ServerMessage::Ack { id: 50, seq, .. } => {
                assert_eq!(seq, 5);
                break;
            }
            ServerMessage::Error { id: Some(50), .. } => panic!("snapshot refused"),
            _ => {}
        }
    }
    a.push_acked(60, &d, b"after").await;
    let (mut b, _) = Ws::hello(srv.addr, &sp, &tk, BTreeMap::new()).await;
    let mut entries = Vec::new();
    while b.cursors.get(&d).copied().unwrap_or(0) < 6 {
        if let ServerMessage::Entries { entries: e, .. } = b.recv().await.unwrap() {
            entries.extend(e);
        }
    }
    assert_eq!(entries.len(), 2, "the covered changes are gone");
    assert_eq!(entries[0].kind, BlobKind::Snapshot);
    assert_eq!(entries[0].covers, Some(4));
    assert_eq!(entries[0].blob.0, b"snapshot");
    assert_eq!(entries[1].blob.0, b"after");
    // Over HTTP too, and a stale snapshot is a conflict.
    let (status, body) = http(
        srv.addr,
        "GET",
        &format!("{}?since=2", routes::entries(&sp, &d)),
        Some(&tk),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let page: http::EntriesPage = serde_json::from_str(&body).unwrap();
    assert_eq!(
        page.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![5, 6]
    );
    let stale = serde_json::to_string(&http::PushSnapshot {
        covers: 3,
        blob: Blob(vec![1]),
    })
    .unwrap();
    let (status, body) = http(
        srv.addr,
        "POST",
        &routes::snapshots(&sp, &d),
        Some(&tk),
        Some(stale),
    )
    .await;
    assert_eq!(status, 409, "{body}");
}

async fn grant(
    addr: std::net::SocketAddr,
    sp: &nexus_sync_protocol::SpaceId,
    owner: &nexus_sync_protocol::Token,
    tk: &nexus_sync_protocol::Token,
    docs: Vec<nexus_sync_protocol::DocId>,
    access: Access,
) -> String {
    let body = serde_json::to_string(&http::CreateGrant {
        token: tk.clone(),
        docs,
        access,
    })
    .unwrap();
    let (status, body) = http(addr, "POST", &routes::grants(sp), Some(owner), Some(body)).await;
    assert_eq!(status, 201, "{body}");
    serde_json::from_str::<http::GrantCreated>(&body)
        .unwrap()
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_limit_access_to_their_documents() {
    let (srv, _dir) = start_sqlite(generous()).await;
    let (sp, owner) = (space(1), token(1));
    create_space(srv.addr, &sp, &owner).await;
    let mut o = Ws::connect(srv.addr, &sp, &owner).await;
    o.push_acked(1, &doc(1), b"shared").await;
    o.push_acked(2, &doc(2), b"private").await;
    let reader = token(20);
    let writer = token(21);
    grant(srv.addr, &sp, &owner, &reader, vec![doc(1)], Access::Read).await;
    grant(
        srv.addr,
        &sp,
        &owner,
        &writer,
        vec![doc(1)],
        Access::ReadWrite,
    )
    .await;

    let (mut r, welcome) = Ws::hello(srv.addr, &sp, &reader, BTreeMap::new()).await;
    let ServerMessage::Welcome { heads, grants, .. } = welcome else {
        panic!("{welcome:?}")
    };
    assert_eq!(heads, BTreeMap::from([(doc(1), 1)]), "doc 2 is invisible");
    assert_eq!(grants, Some(BTreeMap::from([(doc(1), Access::Read)])));
    assert_eq!(r.entries_until(&doc(1), 1).await.len(), 1);
    r.push(5, &doc(1), b"nope").await;
    match r.recv().await.unwrap() {
        ServerMessage::Error { id, code, .. } => {
            assert_eq!((id, code), (Some(5), ErrorCode::Forbidden))
        }
        other => panic!("{other:?}"),
    }
    // Live entries of other documents never reach the grant.
    o.push_acked(3, &doc(2), b"private 2").await;
    o.push_acked(4, &doc(1), b"shared 2").await;
    match r.recv().await.unwrap() {
        ServerMessage::Entries { doc: d, entries } => {
            assert_eq!(d, doc(1));
            assert_eq!(entries[0].blob.0, b"shared 2");
        }
        other => panic!("{other:?}"),
    }
    // The read-write grant may push to its document only.
    let mut w = Ws::connect(srv.addr, &sp, &writer).await;
    assert_eq!(w.push_acked(1, &doc(1), b"from friend").await, 3);
    w.push(2, &doc(2), b"nope").await;
    loop {
        match w.recv().await.unwrap() {
            ServerMessage::Error { id, code, .. } => {
                assert_eq!((id, code), (Some(2), ErrorCode::Forbidden));
                break;
            }
            ServerMessage::Entries { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    // HTTP: list, read, push, grant management.
    let (status, body) = http(srv.addr, "GET", &routes::docs(&sp), Some(&reader), None).await;
    assert_eq!(status, 200);
    let list: http::DocList = serde_json::from_str(&body).unwrap();
    assert_eq!(list.heads.keys().cloned().collect::<Vec<_>>(), vec![doc(1)]);
    let (status, _) = http(
        srv.addr,
        "GET",
        &routes::entries(&sp, &doc(2)),
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(status, 403);
    let push = serde_json::to_string(&http::PushChange {
        blob: Blob(vec![1]),
    })
    .unwrap();
    let (status, _) = http(
        srv.addr,
        "POST",
        &routes::changes(&sp, &doc(1)),
        Some(&reader),
        Some(push),
    )
    .await;
    assert_eq!(status, 403);
    let body = serde_json::to_string(&http::CreateGrant {
        token: token(30),
        docs: vec![doc(2)],
        access: Access::Read,
    })
    .unwrap();
    let (status, _) = http(
        srv.addr,
        "POST",
        &routes::grants(&sp),
        Some(&writer),
        Some(body),
    )
    .await;
    assert_eq!(status, 403, "only the space token manages grants");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_grant_or_rotating_the_token_closes_sessions() {
    let (srv, _dir) = start_sqlite(generous()).await;
    let (sp, owner) = (space(1), token(1));
    create_space(srv.addr, &sp, &owner).await;
    let friend = token(20);
    let id = grant(srv.addr, &sp, &owner, &friend, vec![doc(1)], Access::Read).await;
    let mut f = Ws::connect(srv.addr, &sp, &friend).await;
    let mut old = Ws::connect(srv.addr, &sp, &owner).await;

    let (status, _) = http(
        srv.addr,
        "DELETE",
        &format!("{}/{id}", routes::grants(&sp)),
        Some(&owner),
        None,
    )
    .await;
    assert_eq!(status, 204);
    match f.recv().await {
        Some(ServerMessage::Error { id, code, .. }) => {
            assert_eq!((id, code), (None, ErrorCode::Unauthorized))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f.recv().await, None, "closed");
    let (_, welcome) = Ws::hello(srv.addr, &sp, &friend, BTreeMap::new()).await;
    assert!(matches!(
        welcome,
        ServerMessage::Error {
            code: ErrorCode::Unauthorized,
            ..
        }
    ));
    // The owner's session survived the grant's revocation.
    assert_eq!(old.push_acked(1, &doc(1), b"x").await, 1);

    let new = token(2);
    let body = serde_json::to_string(&http::RotateToken {
        token: new.clone(),
        keep_grants: None,
    })
    .unwrap();
    let (status, _) = http(
        srv.addr,
        "POST",
        &routes::token(&sp),
        Some(&owner),
        Some(body),
    )
    .await;
    assert_eq!(status, 204);
    loop {
        match old.recv().await {
            Some(ServerMessage::Error { id: None, code, .. }) => {
                assert_eq!(code, ErrorCode::Unauthorized);
                break;
            }
            Some(ServerMessage::Entries { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    let (status, _) = http(srv.addr, "GET", &routes::docs(&sp), Some(&owner), None).await;
    assert_eq!(status, 401);
    let mut n = Ws::connect(srv.addr, &sp, &new).await;
    assert_eq!(n.entries_until(&doc(1), 1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_read_nothing_and_look_like_unknown_spaces() {
    let (srv, _dir) = start_sqlite(generous()).await;
    let (sp, tk) = (space(1), token(1));
    create_space(srv.addr, &sp, &tk).await;
    let mut a = Ws::connect(srv.addr, &sp, &tk).await;
    a.push_acked(1, &doc(1), b"secret").await;

    let (mut w, answer) = Ws::hello(srv.addr, &sp, &token(9), BTreeMap::new()).await;
    let (_, unknown) = Ws::hello(srv.addr, &space(2), &tk, BTreeMap::new()).await;
    let strip = |m: ServerMessage| match m {
        ServerMessage::Error { id, code, message } => (id, code, message),
        other => panic!("{other:?}"),
    };
    let wrong = strip(answer);
    assert_eq!(wrong.1, ErrorCode::Unauthorized);
    assert_eq!(wrong, strip(unknown), "no difference between the two");
    assert_eq!(w.recv().await, None);

    let (s1, b1) = http(srv.addr, "GET", &routes::docs(&sp), Some(&token(9)), None).await;
    let (s2, b2) = http(srv.addr, "GET", &routes::docs(&space(2)), Some(&tk), None).await;
    let (s3, _) = http(srv.addr, "GET", &routes::docs(&sp), None, None).await;
    assert_eq!((s1, s2, s3), (401, 401, 401));
    assert_eq!(b1, b2);
    let e: ErrorBody = serde_json::from_str(&b1).unwrap();
    assert_eq!(e.code, ErrorCode::Unauthorized);
    let (s, _) = http(
        srv.addr,
        "GET",
        &routes::entries(&sp, &doc(1)),
        Some(&token(9)),
        None,
    )
    .await;
    assert_eq!(s, 401);
    // Registering a taken space with another token is a conflict.
    let body = serde_json::to_string(&http::CreateSpace { space: sp.clone() }).unwrap();
    let (s, _) = http(
        srv.addr,
        "POST",
        routes::SPACES,
        Some(&token(9)),
        Some(body),
    )
    .await;
    assert_eq!(s, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_and_rate_limits_answer_clearly_and_the_session_goes_on() {
    let limits = Limits {
        conn_rate: 1e6,
        conn_burst: 1e6,
        token_rate: 0.5,
        token_burst: 5.0,
        ..Limits::default()
    };
    let (srv, _dir) = start_sqlite(limits).await;
    let (sp, tk, d) = (space(1), token(1), doc(1));
    create_space(srv.addr, &sp, &tk).await;
    let mut a = Ws::connect(srv.addr, &sp, &tk).await;
    a.push(1, &d, &vec![0; MAX_CHANGE_BYTES + 1]).await;
    match a.recv().await.unwrap() {
        ServerMessage::Error { id, code, .. } => {
            assert_eq!((id, code), (Some(1), ErrorCode::TooLarge))
        }
        other => panic!("{other:?}"),
    }
    let mut acked = 0;
    let mut limited = 0;
    for i in 0..10 {
        a.push(100 + i, &d, b"x").await;
    }
    while acked + limited < 10 {
        match a.recv().await.unwrap() {
            ServerMessage::Ack { .. } => acked += 1,
            ServerMessage::Error {
                code: ErrorCode::RateLimited,
                id: Some(_),
                ..
            } => limited += 1,
            ServerMessage::Entries { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((acked, limited), (5, 5));
    // Per token: HTTP shares the bucket.
    let push = serde_json::to_string(&http::PushChange {
        blob: Blob(vec![1]),
    })
    .unwrap();
    let (status, body) = http(
        srv.addr,
        "POST",
        &routes::changes(&sp, &d),
        Some(&tk),
        Some(push),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    // Still alive.
    a.send(&ClientMessage::Ping { id: 9 }).await;
    loop {
        if let ServerMessage::Pong { id: 9 } = a.recv().await.unwrap() {
            break;
        }
    }
    // Per connection.
    let limits = Limits {
        conn_rate: 0.5,
        conn_burst: 3.0,
        ..generous()
    };
    let (srv, _dir2) = start_sqlite(limits).await;
    create_space(srv.addr, &sp, &tk).await;
    let mut a = Ws::connect(srv.addr, &sp, &tk).await;
    for i in 0..5 {
        a.send(&ClientMessage::Ping { id: i }).await;
    }
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(match a.recv().await.unwrap() {
            ServerMessage::Pong { .. } => None,
            ServerMessage::Error { code, .. } => Some(code),
            other => panic!("{other:?}"),
        });
    }
    assert_eq!(
        codes,
        vec![
            None,
            None,
            None,
            Some(ErrorCode::RateLimited),
            Some(ErrorCode::RateLimited)
        ]
    );
    // A too large HTTP body is refused from its Content-Length.
    let (status, body) = tokio::task::spawn_blocking(move || {
        let req = format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{{",
            routes::changes(&sp, &d),
            tk.expose(),
            nexus_sync_protocol::MAX_FRAME_BYTES + 10
        );
        http_raw(srv.addr, &req)
    })
    .await
    .unwrap();
    assert_eq!(status, 413, "{body}");
    let e: ErrorBody = serde_json::from_str(&body).unwrap();
    assert_eq!(e.code, ErrorCode::TooLarge);
    let metrics = http(srv.addr, "GET", routes::METRICS, None, None).await.1;
    assert!(
        metrics.contains("nexus_sync_errors_total{code=\"rate_limited\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_end_the_session_with_bad_request() {
    let (srv, _dir) = start_sqlite(generous()).await;
    let (sp, tk) = (space(1), token(1));
    create_space(srv.addr, &sp, &tk).await;
    let bad_frames = [
        Message::text("not json"),
        Message::text(r#"{"type":"push","id":1}"#),
        Message::text(r#"{"type":"teleport","id":1}"#),
        Message::binary(vec![1u8, 2, 3]),
        Message::text(
            ClientMessage::Hello {
                protocol: 1,
                space: sp.clone(),
                token: tk.clone(),
                cursors: BTreeMap::new(),
            }
            .to_frame(),
        ),
    ];
    for frame in bad_frames {
        let mut a = Ws::connect(srv.addr, &sp, &tk).await;
        a.send_raw(frame.clone()).await;
        match a.recv().await {
            Some(ServerMessage::Error { id, code, .. }) => {
                assert_eq!((id, code), (None, ErrorCode::BadRequest), "{frame:?}")
            }
            other => panic!("{frame:?}: {other:?}"),
        }
        assert_eq!(a.recv().await, None, "closed after {frame:?}");
    }
    // Before hello: garbage, a push, an unsupported protocol version.
    for frame in [
        "garbage".to_owned(),
        ClientMessage::Ping { id: 1 }.to_frame(),
        format!(
            r#"{{"type":"hello","protocol":99,"space":"{sp}","token":"{}"}}"#,
            tk.expose()
        ),
    ] {
        let mut a = Ws::raw(srv.addr).await;
        a.send_raw(Message::text(frame.clone())).await;
        match a.recv().await {
            Some(ServerMessage::Error { id, code, .. }) => {
                assert_eq!((id, code), (None, ErrorCode::BadRequest), "{frame}")
            }
            other => panic!("{frame}: {other:?}"),
        }
    }
    // HTTP: bad ids, bad JSON.
    let (s, _) = http(srv.addr, "GET", "/v1/spaces/xyz/docs", Some(&tk), None).await;
    assert_eq!(s, 400);
    let (s, _) = http(
        srv.addr,
        "POST",
        &routes::changes(&sp, &doc(1)),
        Some(&tk),
        Some("{".into()),
    )
    .await;
    assert_eq!(s, 400);
    // The server is fine.
    let mut a = Ws::connect(srv.addr, &sp, &tk).await;
    assert_eq!(a.push_acked(1, &doc(1), b"ok").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_push_and_pull_reach_websocket_clients_and_health_and_metrics_work() {
    let (srv, _dir) = start_sqlite(generous()).await;
    let (sp, tk, d) = (space(1), token(1), doc(1));
    let body = serde_json::to_string(&http::CreateSpace { space: sp.clone() }).unwrap();
    let (s, _) = http(
        srv.addr,
        "POST",
        routes::SPACES,
        Some(&tk),
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _) = http(srv.addr, "POST", routes::SPACES, Some(&tk), Some(body)).await;
    assert_eq!(s, 200);
    let mut ws = Ws::connect(srv.addr, &sp, &tk).await;
    for i in 1..=3u8 {
        let push = serde_json::to_string(&http::PushChange {
            blob: Blob(vec![i; 3]),
        })
        .unwrap();
        let (s, body) = http(
            srv.addr,
            "POST",
            &routes::changes(&sp, &d),
            Some(&tk),
            Some(push),
        )
        .await;
        assert_eq!(s, 200, "{body}");
        let pushed: http::Pushed = serde_json::from_str(&body).unwrap();
        assert_eq!(pushed.seq, u64::from(i));
    }
    assert_eq!(ws.entries_until(&d, 3).await.len(), 3);
    let (s, body) = http(
        srv.addr,
        "GET",
        &format!("{}?since=1&limit=1", routes::entries(&sp, &d)),
        Some(&tk),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let page: http::EntriesPage = serde_json::from_str(&body).unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].seq, 2);
    assert!(page.more);
    let (s, body) = http(srv.addr, "GET", &routes::docs(&sp), Some(&tk), None).await;
    assert_eq!(s, 200);
    let list: http::DocList = serde_json::from_str(&body).unwrap();
    assert_eq!(list.heads, BTreeMap::from([(d.clone(), 3)]));

    let (s, body) = http(srv.addr, "GET", routes::HEALTH, None, None).await;
    assert_eq!((s, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (s, m) = http(srv.addr, "GET", routes::METRICS, None, None).await;
    assert_eq!(s, 200);
    for needle in [
        "nexus_sync_connections 1\n",
        "nexus_sync_pushes_total 3\n",
        "nexus_sync_acks_total 3\n",
        "nexus_sync_received_bytes_total 9\n",
        "nexus_sync_relay_latency_seconds_count 3\n",
        "# TYPE nexus_sync_relay_latency_seconds histogram",
    ] {
        assert!(m.contains(needle), "{needle} in {m}");
    }
    assert!(!m.contains(tk.expose()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused() {
    let limits = Limits {
        max_connections: 2,
        ..generous()
    };
    let (srv, _dir) = start_sqlite(limits).await;
    let (sp, tk) = (space(1), token(1));
    create_space(srv.addr, &sp, &tk).await;
    let _a = Ws::connect(srv.addr, &sp, &tk).await;
    let _b = Ws::connect(srv.addr, &sp, &tk).await;
    let url = format!("ws://{}{}", srv.addr, routes::WS);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("{other:?}"),
    }
    drop(_a);
    // The slot frees up once the session ends.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let url = format!("ws://{}{}", srv.addr, routes::WS);
        if tokio_tungstenite::connect_async(url).await.is_ok() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The next answer to request `id` (entries in between are skipped).
async fn answer(ws: &mut Ws, id: u64) -> ServerMessage {
    loop {
        match ws.recv().await.expect("open") {
            m @ (ServerMessage::Ack { id: got, .. }
            | ServerMessage::Deleted { id: got, .. }
            | ServerMessage::Error { id: Some(got), .. })
                if got == id =>
            {
                return m;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_documents_are_gone_for_everyone_and_cannot_come_back() {
    let (srv, _dir) = start_sqlite(generous()).await;
    let (sp, tk, d, other) = (space(1), token(1), doc(1), doc(2));
    create_space(srv.addr, &sp, &tk).await;
    let mut a = Ws::connect(srv.addr, &sp, &tk).await;
    let mut b = Ws::connect(srv.addr, &sp, &tk).await;
    a.push_acked(1, &d, b"old generation").await;
    a.push_acked(2, &other, b"another document").await;
    b.entries_until(&d, 1).await;

    // A grant token may not delete.
    let friend = token(20);
    grant(
        srv.addr,
        &sp,
        &tk,
        &friend,
        vec![d.clone()],
        Access::ReadWrite,
    )
    .await;
    let (s, body) = http(
        srv.addr,
        "DELETE",
        &routes::doc(&sp, &d),
        Some(&friend),
        None,
    )
    .await;
    assert_eq!(s, 403, "{body}");
    let mut f = Ws::connect(srv.addr, &sp, &friend).await;
    f.send(&ClientMessage::Delete {
        id: 5,
        doc: d.clone(),
    })
    .await;
    match answer(&mut f, 5).await {
        ServerMessage::Error { code, .. } => assert_eq!(code, ErrorCode::Forbidden),
        other => panic!("{other:?}"),
    }

    // Over the WebSocket: answered once committed.
    a.send(&ClientMessage::Delete {
        id: 3,
        doc: d.clone(),
    })
    .await;
    assert_eq!(
        answer(&mut a, 3).await,
        ServerMessage::Deleted {
            id: 3,
            doc: d.clone()
        }
    );
    // A device that missed it (offline, with an unsent change) cannot write it back.
    b.push(9, &d, b"late change").await;
    match answer(&mut b, 9).await {
        ServerMessage::Error { code, .. } => assert_eq!(code, ErrorCode::Gone),
        other => panic!("{other:?}"),
    }
    b.send(&ClientMessage::Snapshot {
        id: 10,
        doc: d.clone(),
        covers: 0,
        blob: Blob(b"late snapshot".to_vec()),
    })
    .await;
    match answer(&mut b, 10).await {
        ServerMessage::Error { code, .. } => assert_eq!(code, ErrorCode::Gone),
        other => panic!("{other:?}"),
    }
    let (s, body) = http(
        srv.addr,
        "POST",
        &routes::changes(&sp, &d),
        Some(&tk),
        Some(
            serde_json::to_string(&http::PushChange {
                blob: Blob(b"x".to_vec()),
            })
            .unwrap(),
        ),
    )
    .await;
    assert_eq!(s, 410, "{body}");
    assert_eq!(
        serde_json::from_str::<ErrorBody>(&body).unwrap().code,
        ErrorCode::Gone
    );
    // Nothing of it is listed or served, to old cursors or new devices.
    let (s, body) = http(srv.addr, "GET", &routes::docs(&sp), Some(&tk), None).await;
    assert_eq!(s, 200);
    let list: http::DocList = serde_json::from_str(&body).unwrap();
    assert_eq!(list.heads.keys().collect::<Vec<_>>(), vec![&other]);
    let (s, body) = http(srv.addr, "GET", &routes::entries(&sp, &d), Some(&tk), None).await;
    assert_eq!(s, 200);
    assert!(
        serde_json::from_str::<http::EntriesPage>(&body)
            .unwrap()
            .entries
            .is_empty()
    );
    let (mut c, welcome) = Ws::hello(srv.addr, &sp, &tk, BTreeMap::from([(d.clone(), 0)])).await;
    let ServerMessage::Welcome { heads, .. } = welcome else {
        panic!("{welcome:?}")
    };
    assert!(!heads.contains_key(&d));
    c.entries_until(&other, 1).await;
    assert_eq!(c.quiet(300).await, None, "nothing of the deleted document");

    // Over HTTP: idempotent, 204.
    let (s, _) = http(srv.addr, "DELETE", &routes::doc(&sp, &d), Some(&tk), None).await;
    assert_eq!(s, 204);
    let (s, _) = http(
        srv.addr,
        "DELETE",
        &routes::doc(&sp, &other),
        Some(&tk),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (s, body) = http(
        srv.addr,
        "DELETE",
        &routes::doc(&sp, &other),
        Some(&token(9)),
        None,
    )
    .await;
    assert_eq!(s, 401, "{body}");
    let (_, metrics) = http(srv.addr, "GET", routes::METRICS, None, None).await;
    assert!(
        metrics.contains("nexus_sync_docs_deleted_total 3\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nexus_sync_errors_total{code=\"gone\"} 3\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_space_closes_its_sessions_and_forgets_its_token() {
    let (srv, _dir) = start_sqlite(generous()).await;
    let (sp, tk, d) = (space(1), token(1), doc(1));
    create_space(srv.addr, &sp, &tk).await;
    create_space(srv.addr, &space(2), &token(2)).await;
    let mut a = Ws::connect(srv.addr, &sp, &tk).await;
    let mut neighbour = Ws::connect(srv.addr, &space(2), &token(2)).await;
    a.push_acked(1, &d, b"secret").await;
    neighbour.push_acked(1, &d, b"kept").await;
    let friend = token(20);
    grant(srv.addr, &sp, &tk, &friend, vec![d.clone()], Access::Read).await;
    let (s, body) = http(srv.addr, "DELETE", &routes::space(&sp), Some(&friend), None).await;
    assert_eq!(s, 403, "a grant may not: {body}");

    let (s, body) = http(srv.addr, "DELETE", &routes::space(&sp), Some(&tk), None).await;
    assert_eq!(s, 204, "{body}");
    loop {
        match a.recv().await {
            Some(ServerMessage::Error {
                id: None,
                code,
                message,
            }) => {
                assert_eq!(code, ErrorCode::NotFound);
                assert!(message.contains("deleted"), "{message}");
                break;
            }
            Some(ServerMessage::Entries { .. } | ServerMessage::Ack { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(a.recv().await.is_none(), "closed");
    for t in [&tk, &friend] {
        let (s, _) = http(srv.addr, "GET", &routes::docs(&sp), Some(t), None).await;
        assert_eq!(s, 401);
        let (_, welcome) = Ws::hello(srv.addr, &sp, t, BTreeMap::new()).await;
        assert!(
            matches!(
                welcome,
                ServerMessage::Error {
                    code: ErrorCode::Unauthorized,
                    ..
                }
            ),
            "{welcome:?}"
        );
    }
    let (s, _) = http(srv.addr, "DELETE", &routes::space(&sp), Some(&tk), None).await;
    assert_eq!(s, 401, "already gone");
    // Other spaces carry on.
    assert_eq!(neighbour.push_acked(2, &d, b"more").await, 2);
    let (_, metrics) = http(srv.addr, "GET", routes::METRICS, None, None).await;
    assert!(
        metrics.contains("nexus_sync_spaces_deleted_total 1\n"),
        "{metrics}"
    );
}
