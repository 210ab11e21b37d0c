//! Sync over TLS: a `nexus-sync-server` serving HTTPS/WSS on 127.0.0.1 with certificates made
//! at test time (a throwaway CA), loaded from PEM files exactly as `--tls-cert`/`--tls-key`
//! load them, and two SQLite devices.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use common::{add_memory, companion, dump};
use nexus_store::Store;
use nexus_store_sqlite::SqliteStore;
use nexus_sync::net::{NetError, register_space, sync_once};
use nexus_sync::{PairingCode, SyncClient};
use nexus_sync_server::{App, Limits, SqliteStorage};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

const T: Duration = Duration::from_secs(20);

/// A throwaway certificate authority.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "Nexus test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A server certificate for `names` (PEM certificate, PEM key), valid from `from` to
    /// `until` (years).
    fn server(&self, names: &[&str], from: i32, until: i32) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "nexus sync test server");
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(until, 1, 1);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A self-signed server certificate for `names` (marked as a CA certificate if `ca`, as
/// `openssl req -x509` does by default).
fn self_signed(names: &[&str], ca: bool) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    params
        .distinguished_name
        .push(DnType::CommonName, "nexus sync self-signed");
    let key = KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

/// Starts an HTTPS/WSS server with the certificate and key (written to PEM files and read back
/// by `tls::load`, as the binary does); returns its address and app (for its metrics).
fn start_tls(dir: &Path, (cert, key): &(String, String)) -> (SocketAddr, Arc<App<SqliteStorage>>) {
    std::fs::create_dir_all(dir).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let tls = nexus_sync_server::tls::load(&cert_file, &key_file).unwrap();
    let app = App::new(SqliteStorage::open(dir).unwrap(), Limits::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let served = app.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            nexus_sync_server::serve_tls(served, listener, tls, std::future::pending())
                .await
                .unwrap();
        });
    });
    (rx.recv().unwrap(), app)
}

/// A device (SQLite file) with sync enabled on `url`, trusting `ca` if given.
fn device(dir: &Path, name: &str, url: &str, ca: Option<&str>) -> (SqliteStore, SyncClient) {
    let store = SqliteStore::open(&dir.join(format!("{name}.db"))).unwrap();
    let mut client = SyncClient::create_space(&store, url).unwrap();
    client.set_tls_ca(ca.map(str::to_owned));
    client.save(&store).unwrap();
    (store, client)
}

/// Waits until `f` holds (the server counts failed handshakes in its own tasks).
fn eventually(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < T, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_devices_sync_over_wss_trusting_a_private_ca() {
    let dirs = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (addr, app) = start_tls(
        &dirs.path().join("server"),
        &ca.server(&["127.0.0.1", "localhost"], 2020, 2100),
    );
    let url = format!("wss://127.0.0.1:{}", addr.port());
    let (a, mut ca_client) = device(dirs.path(), "a", &url, Some(&ca.pem));
    let mira = companion(&a, "Mira", 1_000);
    add_memory(&a, mira.id, "The user has a cat.", 1_100);
    register_space(&ca_client, T).unwrap();
    let report = sync_once(&mut ca_client, &a, T).unwrap();
    assert_eq!(report.pending, 0, "{report:?}");

    // The second device joins with the pairing code (which carries the URL, not the CA) and
    // trusts the CA itself; it reaches the server by name this time.
    let code = PairingCode::parse(&ca_client.pairing_code().unwrap().to_text()).unwrap();
    assert_eq!(code.server, url);
    let b = SqliteStore::open(&dirs.path().join("b.db")).unwrap();
    let mut cb = SyncClient::join(&b, &code).unwrap();
    cb.set_tls_ca(Some(ca.pem.clone()));
    cb.save(&b).unwrap();
    sync_once(&mut cb, &b, T).unwrap();
    assert_eq!(dump(&a), dump(&b));

    // Both ways, and after a restart the trust is still there (saved with the config).
    add_memory(&b, mira.id, "B: plays chess.", 2_000);
    sync_once(&mut cb, &b, T).unwrap();
    let mut ca_client = SyncClient::open(&a).unwrap().unwrap();
    assert_eq!(ca_client.config().tls_ca.as_deref(), Some(ca.pem.as_str()));
    sync_once(&mut ca_client, &a, T).unwrap();
    assert_eq!(a.list_memories(mira.id, true).unwrap().len(), 2);
    assert_eq!(dump(&a), dump(&b));
    assert!(app.metrics.connections_total.load(Relaxed) >= 4);
    assert_eq!(app.metrics.tls_failures.load(Relaxed), 0);

    // The same server under its name, https:// this time.
    let store = SqliteStore::open(&dirs.path().join("c.db")).unwrap();
    let by_name = format!("https://localhost:{}", addr.port());
    let mut cc = SyncClient::join(
        &store,
        &PairingCode {
            server: by_name,
            ..code
        },
    )
    .unwrap();
    cc.set_tls_ca(Some(ca.pem.clone()));
    sync_once(&mut cc, &store, T).unwrap();
    assert_eq!(store.list_memories(mira.id, true).unwrap().len(), 2);
}

#[test]
fn a_self_signed_server_certificate_can_be_trusted_directly() {
    let dirs = tempfile::tempdir().unwrap();
    let cert = self_signed(&["127.0.0.1"], false);
    let (addr, _app) = start_tls(&dirs.path().join("server"), &cert);
    let url = format!("https://127.0.0.1:{}", addr.port());
    let (a, mut client) = device(dirs.path(), "a", &url, Some(&cert.0));
    companion(&a, "Mira", 1_000);
    register_space(&client, T).unwrap();
    assert_eq!(sync_once(&mut client, &a, T).unwrap().pending, 0);

    // One marked as a CA (as `openssl req -x509` makes them): trusted when given, with its
    // name checked; refused with a clear message when not given.
    let cert = self_signed(&["127.0.0.1"], true);
    let (addr, _app) = start_tls(&dirs.path().join("server-ca"), &cert);
    let url = format!("https://127.0.0.1:{}", addr.port());
    let (b, mut client) = device(dirs.path(), "b", &url, Some(&cert.0));
    companion(&b, "Nova", 1_000);
    register_space(&client, T).unwrap();
    assert_eq!(sync_once(&mut client, &b, T).unwrap().pending, 0);
    client.set_tls_ca(None);
    let err = sync_once(&mut client, &b, T).unwrap_err();
    assert!(matches!(err, NetError::Untrusted(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("CA certificate used as the server's own certificate")
            && err.to_string().contains("--ca FILE"),
        "{err}"
    );
    let by_name = format!("https://localhost:{}", addr.port());
    let (_c, client) = device(dirs.path(), "c", &by_name, Some(&cert.0));
    let err = register_space(&client, T).unwrap_err();
    assert!(
        err.to_string()
            .contains("it is not valid for \"localhost\""),
        "{err}"
    );
}

#[test]
fn a_device_not_trusting_the_ca_is_refused_and_sends_nothing() {
    let dirs = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (addr, app) = start_tls(
        &dirs.path().join("server"),
        &ca.server(&["127.0.0.1"], 2020, 2100),
    );
    let url = format!("https://127.0.0.1:{}", addr.port());
    let (a, mut client) = device(dirs.path(), "a", &url, None);
    companion(&a, "Mira", 1_000);

    let err = register_space(&client, T).unwrap_err();
    assert!(matches!(err, NetError::Untrusted(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("the server's certificate is not trusted: ")
            && text.contains("not signed by a known certificate authority")
            && text.contains("--ca"),
        "{text}"
    );
    let err = sync_once(&mut client, &a, T).unwrap_err();
    assert!(matches!(err, NetError::Untrusted(_)), "{err:?}");
    assert!(client.pending() > 0, "the changes wait on the device");

    // The server saw two refused handshakes and not one request: no token, no blob.
    eventually("two failed handshakes", || {
        app.metrics.tls_failures.load(Relaxed) == 2
    });
    assert_eq!(app.metrics.http_requests.load(Relaxed), 0);
    assert_eq!(app.metrics.connections_total.load(Relaxed), 0);

    // Another CA's certificate is no better.
    client.set_tls_ca(Some(Ca::new().pem));
    let err = sync_once(&mut client, &a, T).unwrap_err();
    assert!(matches!(err, NetError::Untrusted(_)), "{err:?}");

    // Trusting the CA (here through the configuration) fixes it; the queued changes go out.
    client.set_tls_ca(Some(ca.pem.clone()));
    register_space(&client, T).unwrap();
    assert_eq!(sync_once(&mut client, &a, T).unwrap().pending, 0);
}

#[test]
fn expired_and_wrong_host_certificates_are_refused() {
    let dirs = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let cases = [
        (
            "expired",
            ca.server(&["127.0.0.1"], 2019, 2021),
            "it expired on 2021-01-01",
        ),
        (
            "not yet valid",
            ca.server(&["127.0.0.1"], 2090, 2100),
            "it is not valid before 2090-01-01",
        ),
        (
            "wrong host",
            ca.server(&["sync.example.org"], 2020, 2100),
            "it is not valid for \"127.0.0.1\" (it is for sync.example.org)",
        ),
    ];
    for (what, cert, why) in cases {
        let (addr, app) = start_tls(&dirs.path().join(what), &cert);
        let url = format!("https://127.0.0.1:{}", addr.port());
        let (a, mut client) = device(dirs.path(), what, &url, Some(&ca.pem));
        companion(&a, "Mira", 1_000);
        let err = register_space(&client, T).unwrap_err();
        assert!(matches!(err, NetError::Untrusted(_)), "{what}: {err:?}");
        assert!(err.to_string().contains(why), "{what}: {err}");
        let err = sync_once(&mut client, &a, T).unwrap_err();
        assert!(err.to_string().contains(why), "{what}: {err}");
        eventually("refused handshakes", || {
            app.metrics.tls_failures.load(Relaxed) == 2
        });
        assert_eq!(app.metrics.http_requests.load(Relaxed), 0, "{what}");
    }
}

#[test]
fn scheme_mismatches_and_bad_trusted_certificates_are_clear_errors() {
    let dirs = tempfile::tempdir().unwrap();
    // A plain HTTP server addressed with https://.
    let storage = SqliteStorage::open(&dirs.path().join("plain")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = App::new(storage, Limits::default());
            nexus_sync_server::serve(app, listener, std::future::pending())
                .await
                .unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    let (a, client) = device(
        dirs.path(),
        "a",
        &format!("https://127.0.0.1:{}", addr.port()),
        None,
    );
    let err = register_space(&client, T).unwrap_err();
    assert!(
        matches!(err, NetError::Unreachable(..)) && err.to_string().contains("http:// server"),
        "{err}"
    );
    // And http:// to an HTTPS server.
    let ca = Ca::new();
    let (addr, _app) = start_tls(
        &dirs.path().join("tls"),
        &ca.server(&["127.0.0.1"], 2020, 2100),
    );
    let (_b, plain) = device(
        dirs.path(),
        "b",
        &format!("http://127.0.0.1:{}", addr.port()),
        None,
    );
    let err = register_space(&plain, T).unwrap_err();
    assert!(
        err.to_string().contains("is it an https:// server?"),
        "{err}"
    );
    let (b, mut plain) = (_b, plain);
    let err = sync_once(&mut plain, &b, T).unwrap_err();
    assert!(
        err.to_string().contains("is it an https:// server?"),
        "{err}"
    );
    // A stored certificate that is not one: said before connecting.
    let mut client = client;
    client.set_tls_ca(Some("not a certificate".into()));
    let err = register_space(&client, T).unwrap_err();
    assert!(matches!(err, NetError::TrustedCa(_)), "{err:?}");
    assert!(err.to_string().contains("holds no certificate"), "{err}");
    drop(a);
}
