//! Two server processes on one PostgreSQL relay each other's writes (LISTEN/NOTIFY), assign
//! distinct sequence numbers under concurrent pushes, close each other's revoked sessions
//! and respect each other's deletions. Skipped loudly when PostgreSQL is not installed (CI
//! installs it).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use nexus_sync_protocol::{Access, ErrorCode, ServerMessage, http, routes};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_database_relay_each_others_changes() {
    let Some(cluster) = tokio::task::spawn_blocking(PgCluster::start).await.unwrap() else {
        return;
    };
    let url = cluster.url();
    let mut args = vec!["--postgres", url.as_str(), "--pg-connections", "4"];
    args.extend(FLAGS);
    let one = Proc::spawn(&args);
    let two = Proc::spawn(&args);
    let (sp, tk, d) = (space(1), token(1), doc(1));
    create_space(one.addr, &sp, &tk).await;

    let mut a = Ws::connect(one.addr, &sp, &tk).await;
    let mut b = Ws::connect(two.addr, &sp, &tk).await;
    assert_eq!(a.push_acked(1, &d, b"from one").await, 1);
    assert_eq!(
        b.entries_until(&d, 1).await,
        vec![(1, b"from one".to_vec())]
    );
    assert_eq!(b.push_acked(1, &d, b"from two").await, 2);
    assert_eq!(
        a.entries_until(&d, 2).await,
        vec![(1, b"from one".to_vec()), (2, b"from two".to_vec())]
    );

    // Both push concurrently to one document: distinct numbers, and both see all of them in
    // order without gaps.
    for i in 0..100u64 {
        a.push(100 + i, &d, format!("a{i}").as_bytes()).await;
        b.push(100 + i, &d, format!("b{i}").as_bytes()).await;
    }
    let got_a = a.entries_until(&d, 202).await;
    let got_b = b.entries_until(&d, 202).await;
    let contiguous = |v: &[(u64, Vec<u8>)]| v.windows(2).all(|w| w[1].0 == w[0].0 + 1);
    assert!(contiguous(&got_a) && contiguous(&got_b));
    let map_a: BTreeMap<u64, Vec<u8>> = got_a.into_iter().collect();
    let map_b: BTreeMap<u64, Vec<u8>> = got_b.into_iter().collect();
    for seq in 3..=202 {
        assert_eq!(map_a.get(&seq), map_b.get(&seq), "seq {seq}");
        assert!(map_a.contains_key(&seq));
    }

    // A grant revoked through one server closes its session on the other.
    let friend = token(20);
    let body = serde_json::to_string(&http::CreateGrant {
        token: friend.clone(),
        docs: vec![d.clone()],
        access: Access::Read,
    })
    .unwrap();
    let (s, body) = http(
        one.addr,
        "POST",
        &routes::grants(&sp),
        Some(&tk),
        Some(body),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let id = serde_json::from_str::<http::GrantCreated>(&body)
        .unwrap()
        .id;
    let (mut f, welcome) = Ws::hello(two.addr, &sp, &friend, BTreeMap::new()).await;
    assert!(matches!(welcome, ServerMessage::Welcome { .. }));
    let _ = f.entries_until(&d, 202).await;
    let (s, _) = http(
        one.addr,
        "DELETE",
        &format!("{}/{id}", routes::grants(&sp)),
        Some(&tk),
        None,
    )
    .await;
    assert_eq!(s, 204);
    loop {
        match f.recv().await {
            Some(ServerMessage::Error { id: None, code, .. }) => {
                assert_eq!(code, ErrorCode::Unauthorized);
                break;
            }
            Some(ServerMessage::Entries { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    let (s, body) = http(two.addr, "GET", routes::HEALTH, None, None).await;
    assert_eq!((s, body.as_str()), (200, r#"{"status":"ok"}"#));

    // A document deleted through one server cannot be written through the other.
    let (s, _) = http(one.addr, "DELETE", &routes::doc(&sp, &d), Some(&tk), None).await;
    assert_eq!(s, 204);
    b.push(999, &d, b"late").await;
    loop {
        match b.recv().await.unwrap() {
            ServerMessage::Error {
                id: Some(999),
                code,
                ..
            } => {
                assert_eq!(code, ErrorCode::Gone);
                break;
            }
            ServerMessage::Ack { id: 999, .. } => panic!("a deleted document was written"),
            _ => {}
        }
    }
    // Deleting the space through one server closes its sessions on the other.
    let (s, _) = http(one.addr, "DELETE", &routes::space(&sp), Some(&tk), None).await;
    assert_eq!(s, 204);
    for ws in [&mut a, &mut b] {
        loop {
            match ws.recv().await {
                Some(ServerMessage::Error { id: None, code, .. }) => {
                    assert_eq!(code, ErrorCode::NotFound);
                    break;
                }
                Some(ServerMessage::Entries { .. } | ServerMessage::Ack { .. }) => {}
                other => panic!("{other:?}"),
            }
        }
    }
    let (s, _) = http(two.addr, "GET", &routes::docs(&sp), Some(&tk), None).await;
    assert_eq!(s, 401);
    drop((one, two));
    drop(cluster);
}
