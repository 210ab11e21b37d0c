//! Test harness: in-process servers on 127.0.0.1:0, the real binary, WebSocket and HTTP
//! clients, and throwaway PostgreSQL clusters.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use nexus_sync_protocol::{
    Blob, ClientMessage, DocId, PROTOCOL_VERSION, ServerMessage, SpaceId, Token, http, routes,
};
use nexus_sync_server::{App, Limits, SqliteStorage, Storage};
use tokio_tungstenite::tungstenite::Message;

pub const TIMEOUT: Duration = Duration::from_secs(15);

pub fn space(n: u8) -> SpaceId {
    SpaceId::from_bytes([n; 16])
}

pub fn doc(n: u8) -> DocId {
    DocId::from_bytes([n; 16])
}

pub fn token(n: u8) -> Token {
    Token::from_bytes([n; 32])
}

/// Limits high enough not to interfere.
pub fn generous() -> Limits {
    Limits {
        conn_rate: 1e6,
        conn_burst: 1e6,
        token_rate: 1e6,
        token_burst: 1e6,
        ..Limits::default()
    }
}

/// A server running in this process.
pub struct Server<S: Storage> {
    pub addr: SocketAddr,
    pub app: Arc<App<S>>,
    _task: tokio::task::JoinHandle<()>,
}

pub async fn start<S: Storage>(storage: S, limits: Limits) -> Server<S> {
    let app = App::new(storage, limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let a = app.clone();
    let task = tokio::spawn(async move {
        nexus_sync_server::serve(a, listener, std::future::pending())
            .await
            .unwrap();
    });
    Server {
        addr,
        app,
        _task: task,
    }
}

pub async fn start_sqlite(limits: Limits) -> (Server<SqliteStorage>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let storage = SqliteStorage::open(dir.path()).unwrap();
    (start(storage, limits).await, dir)
}

/// A blocking HTTP/1.1 request; returns status and body.
pub fn http_blocking(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&Token>,
    body: Option<&str>,
) -> (u16, String) {
    let req = request(addr, method, path, token, body.unwrap_or(""));
    http_raw(addr, &req)
}

/// Sends a raw request; returns status and body.
pub fn http_raw(addr: SocketAddr, req: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let _ = s.write_all(req.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse_response(&out)
}

/// Status and body of an HTTP/1.1 response.
fn parse_response(out: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(out).into_owned();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response {text:?}"));
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    (status, body)
}

/// A request as [`http_blocking`] writes it.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&Token>,
    body: &str,
) -> String {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {}\r\n", t.expose()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    req
}

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it.
pub struct TestCerts {
    /// The CA's certificate, PEM.
    pub ca_pem: String,
    /// The server's certificate (PEM file, for `--tls-cert`).
    pub cert: PathBuf,
    /// Its key (PEM file, for `--tls-key`).
    pub key: PathBuf,
}

/// Makes a CA and a server certificate for 127.0.0.1, written to PEM files in `dir`.
pub fn certificates(dir: &Path) -> TestCerts {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "Nexus test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "nexus sync test server");
    let key = KeyPair::generate().unwrap();
    let cert = server.signed_by(&key, &issuer).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    TestCerts {
        ca_pem,
        cert: cert_file,
        key: key_file,
    }
}

/// A TLS client (rustls, ring) trusting only the certificates of `ca_pem`.
pub fn tls_connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A TLS connection to `addr` (a certificate for 127.0.0.1).
pub async fn tls_connect(
    tls: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tls.connect(name, tcp).await.unwrap()
}

/// An HTTPS request (as [`http`]); returns status and body.
pub async fn https(
    tls: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&Token>,
    body: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tls_connect(tls, addr).await;
    let req = request(addr, method, path, token, body.unwrap_or(""));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut out)).await;
    parse_response(&out)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&Token>,
    body: Option<String>,
) -> (u16, String) {
    let (method, path, token) = (method.to_owned(), path.to_owned(), token.cloned());
    tokio::task::spawn_blocking(move || {
        http_blocking(addr, &method, &path, token.as_ref(), body.as_deref())
    })
    .await
    .unwrap()
}

pub async fn create_space(addr: SocketAddr, space: &SpaceId, token: &Token) {
    let body = serde_json::to_string(&http::CreateSpace {
        space: space.clone(),
    })
    .unwrap();
    let (status, body) = http(addr, "POST", routes::SPACES, Some(token), Some(body)).await;
    assert!(status == 201 || status == 200, "{status} {body}");
}

/// A WebSocket client.
pub struct Ws {
    stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    /// Highest sequence number received, per document.
    pub cursors: BTreeMap<DocId, u64>,
}

impl Ws {
    pub async fn raw(addr: SocketAddr) -> Self {
        let (stream, _) = tokio_tungstenite::connect_async_with_config(
            format!("ws://{addr}{}", routes::WS),
            None,
            true,
        )
        .await
        .unwrap();
        Self {
            stream,
            cursors: BTreeMap::new(),
        }
    }

    /// Connects and says hello; returns the client and the Welcome (or the error).
    pub async fn hello(
        addr: SocketAddr,
        space: &SpaceId,
        token: &Token,
        cursors: BTreeMap<DocId, u64>,
    ) -> (Self, ServerMessage) {
        let mut ws = Self::raw(addr).await;
        ws.cursors = cursors.clone();
        ws.send(&ClientMessage::Hello {
            protocol: PROTOCOL_VERSION,
            space: space.clone(),
            token: token.clone(),
            cursors,
        })
        .await;
        let first = ws.recv().await.expect("an answer to hello");
        (ws, first)
    }

    pub async fn connect(addr: SocketAddr, space: &SpaceId, token: &Token) -> Self {
        let (ws, welcome) = Self::hello(addr, space, token, BTreeMap::new()).await;
        assert!(
            matches!(welcome, ServerMessage::Welcome { .. }),
            "{welcome:?}"
        );
        ws
    }

    pub async fn send(&mut self, msg: &ClientMessage) {
        self.stream
            .send(Message::text(msg.to_frame()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, m: Message) {
        let _ = self.stream.send(m).await;
    }

    /// The next protocol message; `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Option<ServerMessage> {
        loop {
            let m = tokio::time::timeout(TIMEOUT, self.stream.next())
                .await
                .expect("a message in time");
            match m {
                Some(Ok(Message::Text(t))) => {
                    let msg = ServerMessage::parse(t.as_str()).unwrap();
                    if let ServerMessage::Entries { doc, entries } = &msg
                        && let Some(last) = entries.last()
                    {
                        self.cursors.insert(doc.clone(), last.seq);
                    }
                    return Some(msg);
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Waits for nothing to arrive for `ms` milliseconds.
    pub async fn quiet(&mut self, ms: u64) -> Option<ServerMessage> {
        match tokio::time::timeout(Duration::from_millis(ms), self.stream.next()).await {
            Err(_) => None,
            Ok(Some(Ok(Message::Text(t)))) => Some(ServerMessage::parse(t.as_str()).unwrap()),
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }

    pub async fn push(&mut self, id: u64, doc: &DocId, blob: &[u8]) {
        self.send(&ClientMessage::Push {
            id,
            doc: doc.clone(),
            blob: Blob(blob.to_vec()),
        })
        .await;
    }

    /// Pushes and waits for the ack, returning the sequence number (entries received in
    /// between are kept in `cursors`).
    pub async fn push_acked(&mut self, id: u64, doc: &DocId, blob: &[u8]) -> u64 {
        self.push(id, doc, blob).await;
        loop {
            match self.recv().await.expect("open") {
                ServerMessage::Ack { id: got, seq, .. } if got == id => return seq,
                ServerMessage::Error { id: Some(got), .. } if got == id => {
                    panic!("push {id} failed")
                }
                _ => {}
            }
        }
    }

    /// Collects entries of `doc` until `upto` arrived; returns (seq, blob) pairs.
    pub async fn entries_until(&mut self, doc: &DocId, upto: u64) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        while self.cursors.get(doc).copied().unwrap_or(0) < upto {
            match self.recv().await.expect("open") {
                ServerMessage::Entries { doc: d, entries } if &d == doc => {
                    out.extend(entries.into_iter().map(|e| (e.seq, e.blob.0)));
                }
                _ => {}
            }
        }
        out
    }
}

/// The server binary as a child process.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Proc {
    pub fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nexus-sync-server"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env(
                "NEXUS_LOG",
                std::env::var("NEXUS_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        // "... listening on http://ADDR" (or https://).
        let addr = line
            .trim()
            .rsplit("://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Self { child, addr }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A throwaway PostgreSQL cluster (initdb + pg_ctl in a temporary directory, on a free port),
/// stopped on drop.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

fn pg_bin() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("NEXUS_PG_BIN")
        && Path::new(&dir).join("initdb").exists()
    {
        return Some(PathBuf::from(dir));
    }
    let from_path = Command::new("sh")
        .args(["-c", "command -v pg_ctl"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty());
    // Debian keeps the server binaries in /usr/lib/postgresql/<version>/bin.
    let candidates = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"));
    let mut all: Vec<PathBuf> = candidates.filter(|p| p.join("initdb").exists()).collect();
    all.sort();
    if let Some(p) = all.pop() {
        return Some(p);
    }
    from_path
        .map(PathBuf::from)
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .filter(|p| p.join("initdb").exists())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgCluster {
    /// Starts a cluster, or returns `None` (with a loud message) when PostgreSQL is not
    /// installed. Fails the test if it is installed but does not start.
    pub fn start() -> Option<Self> {
        let Some(bin) = pg_bin() else {
            assert!(
                std::env::var_os("NEXUS_REQUIRE_POSTGRES").is_none(),
                "NEXUS_REQUIRE_POSTGRES is set but PostgreSQL is not installed \
                 (apt-get install -y postgresql)"
            );
            eprintln!(
                "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                 !!! SKIPPED: PostgreSQL is not installed (no initdb/pg_ctl found).     !!!\n\
                 !!! apt-get install -y postgresql   (CI installs it: scripts/test)    !!!\n\
                 !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
            );
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("nexus-pg-")
            .tempdir()
            .unwrap();
        let as_postgres = is_root();
        if as_postgres {
            // initdb refuses to run as root: the cluster belongs to the postgres user.
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown of the cluster directory failed");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Self {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = c.dir.path().join("data");
        let out = c
            .cmd("initdb")
            .args([
                "--auth=trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            c.dir.path().display()
        );
        let out = c
            .cmd("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(&data)
            .args(["-l"])
            .arg(c.dir.path().join("log"))
            .args(["-o", &opts, "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start failed: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(c.dir.path().join("log")).unwrap_or_default()
        );
        Some(c)
    }

    fn cmd(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?connect_timeout=10",
            self.port
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .cmd("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
