//! `nexus sync`, `nexus device`, `nexus wearable`: two data directories ("devices") syncing
//! through a real sync server on 127.0.0.1, run as a user would.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use nexus_sync_server::{App, Limits, SqliteStorage, serve};
use serde_json::Value;

fn start_server(dir: &Path) -> String {
    let storage = SqliteStorage::open(dir).expect("server storage");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            let app = App::new(storage, Limits::default());
            serve(app, listener, std::future::pending())
                .await
                .expect("serve");
        });
    });
    format!("http://{}", rx.recv().expect("server address"))
}

/// A server on `addr` until the returned sender fires; join the handle to wait for its end.
fn start_stoppable(
    dir: &Path,
    addr: std::net::SocketAddr,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let storage = SqliteStorage::open(dir).expect("server storage");
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            let app = App::new(storage, Limits::default());
            serve(app, listener, async move {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
        });
    });
    (rx.recv().expect("server address"), stop, handle)
}

fn run(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nexus"))
        .env("NEXUS_DATA_DIR", data)
        .env("NEXUS_MODELS_DIR", data.join("no-models"))
        .stdin(Stdio::null())
        .args(args)
        .output()
        .expect("run nexus")
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "failed: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn two_devices_pair_and_sync_through_the_server() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = start_server(&tmp.path().join("server"));
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");

    ok(run(
        &a,
        &["companion", "create", "Mira", "--personality", "warm"],
    ));
    ok(run(&a, &["sync", "enable", "--server", &url]));

    // `device pair --json` prints exactly {"code": ...}.
    let pair = json(&ok(run(&a, &["device", "pair", "--json"])));
    let object = pair.as_object().expect("an object");
    assert_eq!(object.len(), 1, "{pair}");
    let code = pair["code"].as_str().expect("code").to_owned();
    let human = ok(run(&a, &["device", "pair"]));
    assert!(human.contains(&code), "{human}");
    assert!(
        human.contains('█') || human.contains('▀'),
        "a QR code: {human}"
    );

    ok(run(&b, &["device", "join", &code]));
    let list = json(&ok(run(&b, &["companion", "list", "--json"])));
    assert_eq!(list[0]["name"], "Mira", "{list}");

    // An edit on B reaches A.
    ok(run(
        &b,
        &["companion", "edit", "Mira", "--personality", "bold"],
    ));
    let report = json(&ok(run(&b, &["sync", "now", "--json"])));
    assert_eq!(report["pending"], 0, "{report}");
    ok(run(&a, &["sync", "now"]));
    let mira = json(&ok(run(&a, &["companion", "show", "Mira", "--json"])));
    assert_eq!(mira["personality"], "bold", "{mira}");

    // The wearable role: heart-rate samples travel in the journal.
    let samples = tmp.path().join("hr.txt");
    std::fs::write(&samples, "1700000000000 61\n1700000060000 64\n").expect("write");
    ok(run(&b, &["wearable", "push-hr", "--bpm", "72"]));
    ok(run(
        &b,
        &[
            "wearable",
            "push-hr",
            "--file",
            samples.to_str().expect("utf-8"),
        ],
    ));
    ok(run(&a, &["sync", "now"]));
    let status = json(&ok(run(&a, &["sync", "status", "--json"])));
    assert_eq!(status["heart_rate_samples"], 3, "{status}");
    assert_eq!(status["pending"], 0, "{status}");
}

#[test]
fn bad_codes_and_missing_setup_are_clear_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = tmp.path().join("a");
    let out = run(
        &a,
        &[
            "device",
            "join",
            "ABCDE-FGHJK-MNPQR-STVWX-YZ012-34567-89ABC",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pairing code"), "{err}");
    let out = run(&a, &["sync", "now"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not enabled"));
    let out = run(&a, &["wearable", "push-hr", "--bpm", "900"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn edits_made_while_the_server_is_down_sync_later() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server_dir = tmp.path().join("server");
    let (addr, stop, handle) = start_stoppable(&server_dir, "127.0.0.1:0".parse().expect("addr"));
    let url = format!("http://{addr}");
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    ok(run(&a, &["sync", "enable", "--server", &url]));
    let code = json(&ok(run(&a, &["device", "pair", "--json"])))["code"]
        .as_str()
        .expect("code")
        .to_owned();

    stop.send(()).expect("stop");
    handle.join().expect("server thread");
    ok(run(&a, &["companion", "create", "Nova"]));
    let out = run(&a, &["sync", "now"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kept on this device"), "{err}");
    let status = json(&ok(run(&a, &["sync", "status", "--json"])));
    assert!(status["pending"].as_u64().expect("pending") > 0, "{status}");

    let (_addr, _stop, _handle) = start_stoppable(&server_dir, addr);
    let report = json(&ok(run(&a, &["sync", "now", "--json"])));
    assert_eq!(report["pending"], 0, "{report}");
    ok(run(&b, &["device", "join", &code]));
    let list = json(&ok(run(&b, &["companion", "list", "--json"])));
    assert_eq!(list[0]["name"], "Nova", "{list}");
}
