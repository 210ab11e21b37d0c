//! `nexus sync`, `nexus device`, `nexus wearable`: two data directories ("devices") syncing
//! through a real sync server on 127.0.0.1, run as a user would.

mod support;

use std::path::Path;

use nexus_sync_server::{App, Limits, SqliteStorage, serve};
use serde_json::Value;
use support::{contains, files, ok, run_without_models as run};

/// A server running until the test process ends; returns its URL.
fn start_server(dir: &Path) -> String {
    let (addr, stop, _handle) = start_stoppable(dir, "127.0.0.1:0".parse().expect("address"));
    // Never sent nor dropped: the server lives as long as the test process.
    std::mem::forget(stop);
    format!("http://{addr}")
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

/// An HTTPS/WSS server with a fresh CA's certificate for 127.0.0.1; returns its URL and the
/// CA's PEM file.
fn start_tls_server(dir: &Path) -> (String, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    std::fs::create_dir_all(dir).expect("dir");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.distinguished_name
        .push(DnType::CommonName, "Nexus test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("key");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.self_signed(&ca_key).expect("CA").pem()).expect("write");
    let issuer = Issuer::new(ca, ca_key);
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &issuer).expect("certificate");
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).expect("write");
    std::fs::write(&key_file, key.serialize_pem()).expect("write");
    let tls = nexus_sync_server::tls::load(&cert_file, &key_file).expect("certificate and key");
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
            nexus_sync_server::serve_tls(app, listener, tls, std::future::pending())
                .await
                .expect("serve");
        });
    });
    (
        format!("https://{}", rx.recv().expect("server address")),
        ca_file,
    )
}

/// `run` with `NEXUS_SYNC_CA` set.
fn run_trusting(data: &Path, ca: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_nexus"))
        .env("NEXUS_DATA_DIR", data)
        .env("NEXUS_MODELS_DIR", data.join("no-models"))
        .env("NEXUS_SYNC_CA", ca)
        .stdin(std::process::Stdio::null())
        .args(args)
        .output()
        .expect("run nexus")
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

    // The wearable role: B (a watch) pushes heart rate; its readings reach A's journal.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    // A minute of samples, every 2 s, with RR intervals, ending a few minutes ago.
    let mut log = String::from("# watch export\n");
    for i in 0..30 {
        let at = now_ms - 240_000 + i * 2_000;
        let bpm = 80 + i % 7;
        let rr = 60_000 / bpm;
        log.push_str(&format!("{at} {bpm} {rr} {}\n", rr + 5));
    }
    log.push_str("74\n"); // a bare sample: now
    let samples = tmp.path().join("hr.txt");
    std::fs::write(&samples, log).expect("write");
    let pushed = ok(run(&b, &["wearable", "push-hr", "--bpm", "72"]));
    assert!(pushed.contains("Synced"), "{pushed}");
    ok(run(
        &b,
        &[
            "wearable",
            "push-hr",
            "--file",
            samples.to_str().expect("utf-8"),
            "--source",
            "watch",
        ],
    ));
    let b_journal = json(&ok(run(&b, &["journal", "--week", "--json"])));
    let heart = b_journal["counts"]["heart"]
        .as_u64()
        .expect("heart readings");
    assert!(heart >= 2, "one per push and window: {b_journal}");
    assert!(
        b_journal["counts"]["fused"].as_u64() >= Some(heart),
        "{b_journal}"
    );
    ok(run(&b, &["sync", "now"]));
    ok(run(&a, &["sync", "now"]));
    let a_journal = json(&ok(run(&a, &["journal", "--week", "--json"])));
    assert_eq!(a_journal["counts"], b_journal["counts"], "{a_journal}");
    assert_eq!(a_journal["buckets"], b_journal["buckets"], "{a_journal}");
    let status = json(&ok(run(&a, &["sync", "status", "--json"])));
    assert_eq!(
        status["heart_rate_samples"], 32,
        "the raw samples too: {status}"
    );
    assert_eq!(
        status["journal_readings"].as_u64(),
        Some(
            b_journal["counts"]
                .as_object()
                .expect("counts")
                .values()
                .map(|n| n.as_u64().expect("count"))
                .sum::<u64>()
        ),
        "{status}"
    );
    assert_eq!(status["pending"], 0, "{status}");

    // A reading recorded on A travels the other way.
    let face = tmp.path().join("face.json");
    std::fs::write(
        &face,
        r#"{"mouthSmileLeft": 0.8, "mouthSmileRight": 0.8, "cheekSquintLeft": 0.5,
            "cheekSquintRight": 0.5, "eyeSquintLeft": 0.3, "eyeSquintRight": 0.3}"#,
    )
    .expect("write");
    ok(run(
        &a,
        &["emotion", "face", face.to_str().expect("utf-8"), "--record"],
    ));
    ok(run(&a, &["sync", "now"]));
    ok(run(&b, &["sync", "now"]));
    let b_journal = json(&ok(run(&b, &["journal", "--week", "--json"])));
    assert_eq!(b_journal["counts"]["face"], 1, "{b_journal}");

    // Forgetting everything on a synced device leaves no user data in its directory: the
    // documents of the sync state (journal included) go with the rest.
    let secret = "Quetzalcoatl";
    ok(run(
        &a,
        &["companion", "edit", "Mira", "--description", secret],
    ));
    ok(run(&a, &["sync", "now"]));
    assert!(files(&a).iter().any(|(_, bytes)| contains(bytes, secret)));
    ok(run(&a, &["forget-me", "--yes"]));
    let left: Vec<_> = files(&a)
        .into_iter()
        .filter(|(_, bytes)| contains(bytes, secret) || contains(bytes, "Mira"))
        .map(|(path, _)| path)
        .collect();
    assert!(left.is_empty(), "user data left in {left:?}");
    let out = run(&a, &["sync", "status"]);
    assert_eq!(out.status.code(), Some(2), "sync is off after forget-me");
    let a_journal = json(&ok(run(&a, &["journal", "--json"])));
    assert_eq!(a_journal["counts"], serde_json::json!({}), "{a_journal}");
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

#[test]
fn a_lost_device_is_revoked_and_the_others_carry_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = start_server(&tmp.path().join("server"));
    let (laptop, phone, tablet) = (
        tmp.path().join("laptop"),
        tmp.path().join("phone"),
        tmp.path().join("tablet"),
    );
    ok(run(
        &laptop,
        &["companion", "create", "Mira", "--personality", "warm"],
    ));
    ok(run(
        &laptop,
        &["sync", "enable", "--server", &url, "--name", "laptop"],
    ));
    let code = json(&ok(run(&laptop, &["device", "pair", "--json"])))["code"]
        .as_str()
        .expect("code")
        .to_owned();
    ok(run(&phone, &["device", "join", &code, "--name", "phone"]));
    ok(run(
        &tablet,
        &["device", "join", &code, "--name", "old tablet"],
    ));
    ok(run(&laptop, &["sync", "now"]));

    let list = json(&ok(run(&laptop, &["device", "list", "--json"])));
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|d| d["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["laptop", "old tablet", "phone"], "{list}");
    assert_eq!(list[0]["this_device"], true, "{list}");
    let human = ok(run(&laptop, &["device", "list"]));
    assert!(
        human.contains("this device") && human.contains("old tablet"),
        "{human}"
    );

    // Without --yes nothing happens; unknown names and this device are clear errors.
    let out = run(&laptop, &["device", "revoke", "old tablet"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--yes"),
        "{out:?}"
    );
    let out = run(&laptop, &["device", "revoke", "toaster", "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = run(&laptop, &["device", "revoke", "laptop", "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another device"),
        "{out:?}"
    );

    let done = ok(run(&laptop, &["device", "revoke", "old tablet", "--yes"]));
    assert!(done.contains("Revoked"), "{done}");

    // The phone picks up the new key by itself and keeps syncing both ways.
    ok(run(
        &laptop,
        &["companion", "edit", "Mira", "--personality", "bold"],
    ));
    ok(run(&laptop, &["sync", "now"]));
    ok(run(&phone, &["sync", "now"]));
    let mira = json(&ok(run(&phone, &["companion", "show", "Mira", "--json"])));
    assert_eq!(mira["personality"], "bold", "{mira}");
    ok(run(
        &phone,
        &["companion", "edit", "Mira", "--personality", "calm"],
    ));
    ok(run(&phone, &["sync", "now"]));
    ok(run(&laptop, &["sync", "now"]));
    let mira = json(&ok(run(&laptop, &["companion", "show", "Mira", "--json"])));
    assert_eq!(mira["personality"], "calm", "{mira}");
    let on_phone = json(&ok(run(&phone, &["device", "list", "--json"])));
    let tablet_entry = on_phone
        .as_array()
        .expect("array")
        .iter()
        .find(|d| d["name"] == "old tablet")
        .expect("listed")
        .clone();
    assert!(tablet_entry["revoked_at"].is_i64(), "{on_phone}");

    // The tablet is out, with a clear message, and keeps only what it had.
    let out = run(&tablet, &["sync", "now"]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("removed from the space"), "{err}");
    let mira = json(&ok(run(&tablet, &["companion", "show", "Mira", "--json"])));
    assert_eq!(mira["personality"], "warm", "{mira}");
}

#[test]
fn sharing_a_companion_with_another_person() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = start_server(&tmp.path().join("server"));
    let (owner, reader, writer) = (
        tmp.path().join("owner"),
        tmp.path().join("reader"),
        tmp.path().join("writer"),
    );
    ok(run(
        &owner,
        &["companion", "create", "Mira", "--personality", "warm"],
    ));
    ok(run(&owner, &["companion", "create", "Nova"]));
    // Sharing needs sync.
    let out = run(&owner, &["companion", "share", "Mira"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("sync enable"));
    ok(run(&owner, &["sync", "enable", "--server", &url]));

    // A read-only share: the code as JSON, and for people with a QR code.
    let shared = json(&ok(run(&owner, &["companion", "share", "Mira", "--json"])));
    assert_eq!(shared.as_object().expect("object").len(), 1, "{shared}");
    let code = shared["code"].as_str().expect("code").to_owned();
    let human = ok(run(&owner, &["companion", "share", "Nova"]));
    assert!(
        human.contains("read-only") && human.contains("join-share"),
        "{human}"
    );
    assert!(human.contains('█') || human.contains('▀'), "{human}");

    // Garbled codes and the wrong kind of code are clear errors.
    let mut garbled: Vec<char> = code.chars().collect();
    let i = garbled.len() / 2;
    garbled[i] = if garbled[i] == 'A' { 'B' } else { 'A' };
    let garbled: String = garbled.into_iter().collect();
    let out = run(&reader, &["companion", "join-share", &garbled]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("share code is mistyped"),
        "{out:?}"
    );
    let pairing = json(&ok(run(&owner, &["device", "pair", "--json"])))["code"]
        .as_str()
        .expect("code")
        .to_owned();
    let out = run(&reader, &["companion", "join-share", &pairing]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("pairing code"));
    let out = run(&reader, &["device", "join", &code]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("join-share"));

    // The reader (no sync of their own) gets Mira, and nothing else of the owner's.
    let joined = ok(run(&reader, &["companion", "join-share", &code]));
    assert!(joined.contains("Mira is now shared with you"), "{joined}");
    let list = json(&ok(run(&reader, &["companion", "list", "--json"])));
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["Mira"], "{list}");
    let again = ok(run(&reader, &["companion", "join-share", &code]));
    assert!(again.contains("already shared"), "{again}");

    // The owner's later edits arrive with `sync now`.
    ok(run(
        &owner,
        &[
            "companion",
            "edit",
            "Mira",
            "--description",
            "Loves rainy days.",
        ],
    ));
    ok(run(&owner, &["sync", "now"]));
    let report = json(&ok(run(&reader, &["sync", "now", "--json"])));
    assert_eq!(report["shares"][0]["companion"], "Mira", "{report}");
    assert!(report["shares"][0]["error"].is_null(), "{report}");
    let mira = json(&ok(run(&reader, &["companion", "show", "Mira", "--json"])));
    assert_eq!(mira["description"], "Loves rainy days.", "{mira}");

    // Read-only: edits and deletion are refused with the way out.
    let out = run(
        &reader,
        &["companion", "edit", "Mira", "--personality", "cold"],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("read-only"));
    let out = run(&reader, &["companion", "delete", "Mira", "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("leave-share"));

    // Both sides list the share.
    let on_owner = json(&ok(run(&owner, &["companion", "shares", "Mira", "--json"])));
    assert_eq!(on_owner["shared_by_me"][0]["access"], "read", "{on_owner}");
    assert_eq!(
        on_owner["shared_by_me"][0]["status"], "active",
        "{on_owner}"
    );
    let on_reader = json(&ok(run(&reader, &["companion", "shares", "--json"])));
    assert_eq!(
        on_reader["shared_with_me"][0]["companion"], "Mira",
        "{on_reader}"
    );
    let human = ok(run(&reader, &["companion", "shares"]));
    assert!(
        human.contains("Shared with you") && human.contains("Mira"),
        "{human}"
    );

    // A read-write share with someone who syncs their own devices too: their edit reaches
    // the owner.
    ok(run(&writer, &["sync", "enable", "--server", &url]));
    let code_rw = json(&ok(run(
        &owner,
        &["companion", "share", "Mira", "--write", "--json"],
    )))["code"]
        .as_str()
        .expect("code")
        .to_owned();
    ok(run(&writer, &["companion", "join-share", &code_rw]));
    ok(run(
        &writer,
        &["companion", "edit", "Mira", "--personality", "playful"],
    ));
    let report = json(&ok(run(&writer, &["sync", "now", "--json"])));
    assert_eq!(report["shares"][0]["local_changes"], 1, "{report}");
    ok(run(&owner, &["sync", "now"]));
    let mira = json(&ok(run(&owner, &["companion", "show", "Mira", "--json"])));
    assert_eq!(mira["personality"], "playful", "{mira}");

    // Unsharing Mira ends both of its shares; the reader is told and keeps what it had.
    let done = ok(run(&owner, &["companion", "unshare", "Mira"]));
    assert_eq!(done.matches("Stopped sharing Mira").count(), 2, "{done}");
    ok(run(
        &owner,
        &[
            "companion",
            "edit",
            "Mira",
            "--description",
            "Changed after.",
        ],
    ));
    ok(run(&owner, &["sync", "now"]));
    let out = run(&reader, &["sync", "now"]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Mira is no longer shared with you"), "{err}");
    let mira = json(&ok(run(&reader, &["companion", "show", "Mira", "--json"])));
    assert_eq!(mira["description"], "Loves rainy days.", "{mira}");
    let on_owner = json(&ok(run(
        &owner,
        &["companion", "shares", "--all", "--json"],
    )));
    let states: Vec<&str> = on_owner["shared_by_me"]
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["status"].as_str().expect("status"))
        .collect();
    assert_eq!(states, ["unshared", "active", "unshared"], "{on_owner}");
    let active = json(&ok(run(&reader, &["companion", "shares", "--json"])));
    assert_eq!(active["shared_with_me"], serde_json::json!([]), "{active}");

    // One share ends by its id too (as shown: the last 8 characters).
    let nova_id = on_owner["shared_by_me"][1]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let listed = ok(run(&owner, &["companion", "shares"]));
    let short = &nova_id[nova_id.len() - 8..];
    assert!(listed.contains(short), "{listed}");
    let done = ok(run(&owner, &["companion", "unshare", short]));
    assert!(done.contains("Stopped sharing Nova"), "{done}");
    let out = run(&owner, &["companion", "unshare", "Nova"]);
    assert_eq!(out.status.code(), Some(2), "nothing left to end: {out:?}");

    // Leaving the share makes the copy the reader's own.
    ok(run(&reader, &["companion", "leave-share", "Mira"]));
    ok(run(
        &reader,
        &["companion", "edit", "Mira", "--personality", "mine now"],
    ));
    let out = run(&reader, &["sync", "now"]);
    assert_eq!(out.status.code(), Some(2), "nothing to sync: {out:?}");
}

#[test]
fn a_chat_syncs_shared_companions_in_the_background() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = start_server(&tmp.path().join("server"));
    let (owner, reader) = (tmp.path().join("owner"), tmp.path().join("reader"));
    ok(run(&owner, &["companion", "create", "Mira"]));
    ok(run(&owner, &["sync", "enable", "--server", &url]));
    let code = json(&ok(run(&owner, &["companion", "share", "Mira", "--json"])))["code"]
        .as_str()
        .expect("code")
        .to_owned();
    ok(run(&reader, &["companion", "join-share", &code]));
    ok(run(
        &owner,
        &[
            "companion",
            "edit",
            "Mira",
            "--greeting",
            "Hello from the owner!",
        ],
    ));
    ok(run(&owner, &["sync", "now"]));
    // The reader has no sync of their own: the chat syncs the share by itself while it runs.
    let mut chat = support::nexus(&reader)
        .args(["chat", "--companion", "Mira"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn nexus chat");
    let started = std::time::Instant::now();
    let greeting = loop {
        let mira = json(&ok(run(&reader, &["companion", "show", "Mira", "--json"])));
        if mira["greeting"] == "Hello from the owner!"
            || started.elapsed() > std::time::Duration::from_secs(60)
        {
            break mira["greeting"].clone();
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    {
        use std::io::Write as _;
        let mut stdin = chat.stdin.take().expect("stdin");
        stdin.write_all(b"/quit\n").expect("write");
    }
    ok(chat.wait_with_output().expect("chat ends"));
    assert_eq!(greeting, "Hello from the owner!");
}

#[test]
fn two_devices_sync_over_https_with_a_private_ca() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (url, ca) = start_tls_server(&tmp.path().join("server"));
    let ca = ca.to_str().expect("utf-8");
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    ok(run(&a, &["companion", "create", "Mira"]));

    // Without the CA: a clear refusal, and sync stays off.
    let out = run(&a, &["sync", "enable", "--server", &url]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the server's certificate is not trusted")
            && err.contains("--ca FILE or NEXUS_SYNC_CA"),
        "{err}"
    );
    assert_eq!(run(&a, &["sync", "status"]).status.code(), Some(2));
    // A --ca file that is no certificate is bad input.
    let out = run(&a, &["sync", "enable", "--server", &url, "--ca", &url]);
    assert_eq!(out.status.code(), Some(2));

    let enabled = ok(run(&a, &["sync", "enable", "--server", &url, "--ca", ca]));
    assert!(enabled.contains("Sync enabled with https://"), "{enabled}");
    assert!(ok(run(&a, &["sync", "status"])).contains("trusting:"));
    let code = json(&ok(run(&a, &["device", "pair", "--json"])))["code"]
        .as_str()
        .expect("code")
        .to_owned();

    // The other device trusts the CA through NEXUS_SYNC_CA.
    ok(run_trusting(&b, Path::new(ca), &["device", "join", &code]));
    let list = json(&ok(run(&b, &["companion", "list", "--json"])));
    assert_eq!(list[0]["name"], "Mira", "{list}");
    ok(run(
        &b,
        &["companion", "edit", "Mira", "--personality", "bold"],
    ));
    ok(run_trusting(&b, Path::new(ca), &["sync", "now"]));
    ok(run(&a, &["sync", "now"]));
    let mira = json(&ok(run(&a, &["companion", "show", "Mira", "--json"])));
    assert_eq!(mira["personality"], "bold", "{mira}");
    // Without the variable B does not trust the server; its changes wait.
    let out = run(&b, &["sync", "now"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not trusted") && err.contains("kept on this device"),
        "{err}"
    );
}

/// An archive holding Mira with two memories, one of them naming `secret`, made with the
/// CLI itself (no models needed): a companion exported from a scratch directory, with the
/// memories added to its JSON.
fn archive_with_memories(tmp: &Path, secret: &str) -> std::path::PathBuf {
    let scratch = tmp.join("scratch");
    ok(run(
        &scratch,
        &["companion", "create", "Mira", "--personality", "warm"],
    ));
    let file = tmp.join("archive.json");
    let path = file.to_str().expect("utf-8");
    ok(run(&scratch, &["export", "-o", path]));
    let mut archive: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("json");
    let companion = &mut archive["companions"][0];
    let id = companion["companion"]["id"].clone();
    let memory = |n: u8, text: &str| {
        serde_json::json!({
            "id": format!("01900000-0000-7000-8000-0000000000{n:02}"),
            "companion_id": id, "text": text, "kind": "fact", "subject": "user",
            "importance": 0.7, "pinned": false, "embedding": [0.1, -0.2, 0.3],
            "source_message_ids": [], "created_at": 1_700_000_000_000_i64 + i64::from(n),
            "updated_at": 1_700_000_000_000_i64 + i64::from(n), "last_used_at": null,
            "superseded_by": null
        })
    };
    companion["memories"] = serde_json::json!([
        memory(1, &format!("The user's {secret} plan.")),
        memory(2, "The user has a cat."),
    ]);
    std::fs::write(&file, serde_json::to_vec(&archive).expect("json")).expect("write");
    file
}

/// Everything the sync server keeps of the space of `code` (read from its database), each
/// entry decrypted with the key of the code: (document, history strings or `None` if they
/// cannot be read completely, raw blobs).
type Kept = (String, Option<Vec<String>>, Vec<Vec<u8>>);

fn server_keeps(dir: &Path, code: &str) -> Vec<Kept> {
    use nexus_sync_server::Storage as _;
    let code = nexus_sync::PairingCode::parse(code).expect("code");
    let keys = nexus_sync::SpaceKeys::derive(&code.space, &code.secret, code.epoch);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let storage = SqliteStorage::open(dir).expect("server storage");
    rt.block_on(async {
        let mut out = Vec::new();
        for doc in storage.heads(&code.space).await.expect("heads").into_keys() {
            let page = storage
                .entries(&code.space, &doc, 0, 100_000, usize::MAX)
                .await
                .expect("entries");
            let mut plain = Vec::new();
            for e in &page.entries {
                plain.extend(keys.open(&doc, e.kind, &e.blob).expect("decrypt"));
            }
            let history = nexus_sync::doc::history_strings(&plain).ok();
            out.push((
                doc.to_string(),
                history,
                page.entries.into_iter().map(|e| e.blob.0).collect(),
            ));
        }
        out
    })
}

/// What a data directory's sync state keeps, every document's whole history.
fn device_keeps(dir: &Path) -> Vec<Option<Vec<String>>> {
    let store = nexus_app::native::open_store(dir).expect("store");
    nexus_sync::replica::Replica::kept(&store)
        .expect("sync state")
        .into_iter()
        .map(|(_, _, bytes)| nexus_sync::doc::history_strings(&bytes).ok())
        .collect()
}

fn holds(history: &Option<Vec<String>>, needle: &str) -> bool {
    history
        .as_ref()
        .is_none_or(|h| h.iter().any(|s| s.contains(needle)))
}

/// 32-byte pieces of a blob, one every 997 bytes (its random nonce makes each unique).
fn pieces(blob: &[u8]) -> Vec<Vec<u8>> {
    (0..blob.len().saturating_sub(32).max(1))
        .step_by(997)
        .map(|i| blob[i..(i + 32).min(blob.len())].to_vec())
        .collect()
}

fn on_disk(dir: &Path, piece: &[u8]) -> bool {
    files(dir)
        .iter()
        .any(|(_, bytes)| bytes.windows(piece.len()).any(|w| w == piece))
}

#[test]
fn forgetting_reaches_every_copy_and_forget_me_deletes_the_space() {
    const SECRET: &str = "Zanzibarite";
    let tmp = tempfile::tempdir().expect("tempdir");
    let server_dir = tmp.path().join("server");
    let url = start_server(&server_dir);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let archive = archive_with_memories(tmp.path(), SECRET);
    ok(run(
        &a,
        &["import-archive", archive.to_str().expect("utf-8")],
    ));
    std::fs::remove_file(&archive).expect("remove the archive");
    ok(run(&a, &["sync", "enable", "--server", &url]));
    let code = json(&ok(run(&a, &["device", "pair", "--json"])))["code"]
        .as_str()
        .expect("code")
        .to_owned();
    ok(run(&b, &["device", "join", &code]));
    let list = json(&ok(run(&b, &["memory", "list", "--json"])));
    assert_eq!(list.as_array().expect("list").len(), 2, "{list}");
    // Before: in both data directories, both devices' documents and on the server.
    for dir in [&a, &b] {
        assert!(files(dir).iter().any(|(_, f)| contains(f, SECRET)));
        assert!(device_keeps(dir).iter().any(|h| holds(h, SECRET)));
    }
    let before = server_keeps(&server_dir, &code);
    assert!(before.iter().any(|(_, h, _)| holds(h, SECRET)));

    // Forgotten on A: the command itself starts the companion's document over and syncs.
    let id = list
        .as_array()
        .expect("list")
        .iter()
        .find(|m| m["text"].as_str().is_some_and(|t| t.contains(SECRET)))
        .expect("the secret memory")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let out = run(&a, &["memory", "forget", &id[id.len() - 8..]]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(ok(out).contains("Forgot"));
    assert!(err.contains("sync server"), "{err}");
    ok(run(&b, &["sync", "now"]));
    ok(run(&a, &["sync", "now"]));
    let list = json(&ok(run(&b, &["memory", "list", "--all", "--json"])));
    assert_eq!(list.as_array().expect("list").len(), 1, "{list}");

    // After: in no file of either data directory (databases and logs), in no document
    // generation kept on either device or on the server (decrypted, history included), and
    // the server's files hold none of the blobs that held it.
    for dir in [&a, &b] {
        let left: Vec<_> = files(dir)
            .into_iter()
            .filter(|(_, f)| contains(f, SECRET))
            .map(|(p, _)| p)
            .collect();
        assert!(left.is_empty(), "the forgotten word is in {left:?}");
        assert!(!device_keeps(dir).iter().any(|h| holds(h, SECRET)));
    }
    let after = server_keeps(&server_dir, &code);
    assert!(!after.iter().any(|(_, h, _)| holds(h, SECRET)));
    for (doc, history, blobs) in &before {
        if holds(history, SECRET) {
            assert!(
                after.iter().all(|(d, _, _)| d != doc),
                "the old generation is deleted"
            );
            for blob in blobs {
                for piece in pieces(blob) {
                    assert!(
                        !on_disk(&server_dir, &piece),
                        "an old blob is on the server's disk"
                    );
                }
            }
        }
    }

    // Forget-me on A deletes the space on the server first.
    let all_blobs: Vec<Vec<u8>> = after.into_iter().flat_map(|(_, _, b)| b).collect();
    assert!(!all_blobs.is_empty());
    let out = ok(run(&a, &["forget-me", "--yes"]));
    assert!(out.contains("sync server's copy"), "{out}");
    assert!(server_keeps(&server_dir, &code).is_empty());
    for blob in &all_blobs {
        for piece in pieces(blob) {
            assert!(
                !on_disk(&server_dir, &piece),
                "a blob of the deleted space is on disk"
            );
        }
    }
    let addr = url.trim_start_matches("http://");
    let (status, _) = raw_http(
        addr,
        "GET",
        &format!("/v1/spaces/{}/docs", space_of(&code)),
        &code,
    );
    assert_eq!(status, 401);
    // B keeps its data but can no longer sync with the deleted space, and is told why.
    let out = run(&b, &["sync", "now"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nexus sync disable"), "{err}");
    let list = json(&ok(run(&b, &["companion", "list", "--json"])));
    assert_eq!(list[0]["name"], "Mira");
}

fn space_of(code: &str) -> String {
    nexus_sync::PairingCode::parse(code)
        .expect("code")
        .space
        .to_string()
}

/// A request with the space token of `code`; returns the status and body.
fn raw_http(addr: &str, method: &str, path: &str, code: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let code = nexus_sync::PairingCode::parse(code).expect("code");
    let keys = nexus_sync::SpaceKeys::derive(&code.space, &code.secret, code.epoch);
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
        keys.token().expose()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, out)
}

#[test]
fn forget_me_without_the_server_keeps_only_what_deleting_its_copy_needs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server_dir = tmp.path().join("server");
    let (addr, stop, handle) = start_stoppable(&server_dir, "127.0.0.1:0".parse().expect("addr"));
    let url = format!("http://{addr}");
    let a = tmp.path().join("a");
    ok(run(
        &a,
        &[
            "companion",
            "create",
            "Mira",
            "--description",
            "Quetzalcoatl",
        ],
    ));
    ok(run(&a, &["sync", "enable", "--server", &url]));
    let code = json(&ok(run(&a, &["device", "pair", "--json"])))["code"]
        .as_str()
        .expect("code")
        .to_owned();
    assert!(!server_keeps(&server_dir, &code).is_empty());

    stop.send(()).expect("stop");
    handle.join().expect("server thread");
    let out = run(&a, &["forget-me", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "the server copy is not deleted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nexus sync delete-remote"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Everything is deleted"));
    // Nothing of the user's is left, and no key to the server's copy.
    let left: Vec<_> = files(&a)
        .into_iter()
        .filter(|(_, f)| contains(f, "Quetzalcoatl") || contains(f, "Mira"))
        .map(|(p, _)| p)
        .collect();
    assert!(left.is_empty(), "user data left in {left:?}");
    let status = json(&ok(run(&a, &["sync", "status", "--json"])));
    assert_eq!(status["enabled"], false, "{status}");
    assert_eq!(status["remote_deletion_pending"]["space"], space_of(&code));
    let out = run(&a, &["sync", "delete-remote"]);
    assert_eq!(out.status.code(), Some(1), "still unreachable");

    let (_addr, _stop, _handle) = start_stoppable(&server_dir, addr);
    let out = ok(run(&a, &["sync", "delete-remote"]));
    assert!(out.contains("Deleted space"), "{out}");
    assert!(server_keeps(&server_dir, &code).is_empty());
    let out = run(&a, &["sync", "delete-remote"]);
    assert_eq!(out.status.code(), Some(2), "nothing left to delete");
}

#[test]
fn sync_disable_can_delete_the_server_copy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server_dir = tmp.path().join("server");
    let url = start_server(&server_dir);
    let a = tmp.path().join("a");
    ok(run(&a, &["companion", "create", "Mira"]));
    ok(run(&a, &["sync", "enable", "--server", &url]));
    let code = json(&ok(run(&a, &["device", "pair", "--json"])))["code"]
        .as_str()
        .expect("code")
        .to_owned();
    assert!(!server_keeps(&server_dir, &code).is_empty());
    let out = ok(run(&a, &["sync", "disable", "--delete-remote"]));
    assert!(
        out.contains("Deleted space") && out.contains("Sync is off"),
        "{out}"
    );
    assert!(server_keeps(&server_dir, &code).is_empty());
    let list = json(&ok(run(&a, &["companion", "list", "--json"])));
    assert_eq!(list[0]["name"], "Mira", "the data stays on the device");
    let out = run(&a, &["sync", "status"]);
    assert_eq!(out.status.code(), Some(2), "sync is off");
}
