//! The server binary with `--tls-cert`/`--tls-key`: it speaks HTTPS and WSS to a real TLS
//! client (rustls) trusting a throwaway CA made at test time, refuses plain HTTP on that port,
//! and bad certificate or key files stop it at startup with a clear message.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::*;
use futures_util::{SinkExt, StreamExt};
use nexus_sync_protocol::{ClientMessage, PROTOCOL_VERSION, ServerMessage, http, routes};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_https_and_wss() {
    let dir = tempfile::tempdir().unwrap();
    let TestCerts {
        ca_pem: ca,
        cert,
        key,
    } = certificates(dir.path());
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nexus-sync-server"))
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("NEXUS_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let proc = Proc {
        child,
        addr: line
            .trim()
            .strip_prefix("nexus-sync-server listening on https://")
            .unwrap_or_else(|| panic!("{line:?}"))
            .parse()
            .unwrap(),
    };
    let addr = proc.addr;
    let tls = tls_connector(&ca);

    let (status, text) = https(&tls, addr, "GET", "/health", None, None).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#"{"status":"ok"}"#), "{text}");

    // A space over HTTPS, then a push over WSS acknowledged and relayed.
    let (space, token, doc) = (space(1), token(1), doc(1));
    let body = serde_json::to_string(&http::CreateSpace {
        space: space.clone(),
    })
    .unwrap();
    let (status, text) = https(
        &tls,
        addr,
        "POST",
        routes::SPACES,
        Some(&token),
        Some(&body),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    let stream = tls_connect(&tls, addr).await;
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("wss://{addr}{}", routes::WS), stream)
            .await
            .unwrap();
    let mut send = async |m: ClientMessage| ws.send(Message::text(m.to_frame())).await.unwrap();
    send(ClientMessage::Hello {
        protocol: PROTOCOL_VERSION,
        space: space.clone(),
        token: token.clone(),
        cursors: BTreeMap::new(),
    })
    .await;
    send(ClientMessage::Push {
        id: 7,
        doc: doc.clone(),
        blob: nexus_sync_protocol::Blob(b"sealed".to_vec()),
    })
    .await;
    let (mut welcomed, mut acked, mut relayed) = (false, false, false);
    while !(welcomed && acked && relayed) {
        let m = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("an answer in time")
            .expect("open")
            .unwrap();
        let Message::Text(t) = m else { continue };
        match ServerMessage::parse(t.as_str()).unwrap() {
            ServerMessage::Welcome { .. } => welcomed = true,
            ServerMessage::Ack { id: 7, seq: 1, .. } => acked = true,
            ServerMessage::Entries { doc: d, entries } if d == doc => {
                assert_eq!(entries[0].blob.0, b"sealed");
                relayed = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    // Plain HTTP on the TLS port gets no HTTP answer, and counts as a failed handshake.
    let plain = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    })
    .await
    .unwrap();
    assert!(!plain.starts_with(b"HTTP/"), "{plain:?}");
    let (_, metrics) = https(&tls, addr, "GET", "/metrics", None, None).await;
    assert!(
        metrics.contains("nexus_sync_tls_handshake_failures_total 1\n"),
        "{metrics}"
    );

    // SIGTERM stops it gracefully, the WSS session still open.
    let mut proc = proc;
    let ok = Command::new("kill")
        .args(["-TERM", &proc.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(status) = proc.child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(ws);
}

/// Runs the binary with `args` (it should refuse to start); returns its stderr.
fn refused(args: &[&std::ffi::OsStr]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nexus-sync-server"))
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "it started: {args:?}");
    assert!(
        out.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_certificate_or_key_files_stop_the_server_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let TestCerts { cert, key, .. } = certificates(dir.path());
    let other = tempfile::tempdir().unwrap();
    let other_key = certificates(other.path()).key;
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let flag = |s: &str| std::ffi::OsString::from(s);
    let cases: [(Vec<std::ffi::OsString>, &str); 6] = [
        (
            vec![
                flag("--tls-cert"),
                missing.clone().into(),
                flag("--tls-key"),
                key.clone().into(),
            ],
            "cannot read certificate",
        ),
        (
            vec![
                flag("--tls-cert"),
                cert.clone().into(),
                flag("--tls-key"),
                missing.into(),
            ],
            "cannot read private key",
        ),
        (
            vec![
                flag("--tls-cert"),
                garbage.clone().into(),
                flag("--tls-key"),
                key.clone().into(),
            ],
            "holds no certificate in PEM format",
        ),
        (
            // The certificate where the key should be.
            vec![
                flag("--tls-cert"),
                cert.clone().into(),
                flag("--tls-key"),
                cert.clone().into(),
            ],
            "holds no private key in PEM format",
        ),
        (
            vec![
                flag("--tls-cert"),
                cert.clone().into(),
                flag("--tls-key"),
                other_key.into(),
            ],
            "cannot be used together",
        ),
        (vec![flag("--tls-cert"), cert.into()], "--tls-key"),
    ];
    for (args, why) in cases {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let err = refused(&args);
        assert!(err.contains(why), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
