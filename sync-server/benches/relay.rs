//! Relay benchmark: our server (the real binary, SQLite and PostgreSQL) side by side with the
//! reference users would otherwise pick, automerge-repo's sync server (node), in one run and one
//! table: 4, 40 and 200 concurrent WebSocket clients on loopback.
//!
//! ```sh
//! npm ci --prefix sync-server/benches/automerge-repo   # once: the reference (needs node)
//! cargo bench -p nexus-sync-server --bench relay
//! # knobs: BENCH_LOADS=4,40,200 BENCH_GROUP=4 BENCH_SECS=10 BENCH_RATE=10 BENCH_WINDOW=4
//! #        BENCH_BACKENDS=sqlite,postgres,automerge-repo,automerge-repo-sync-server
//! #        BENCH_NODE_PROCS=2 BENCH_DRAIN=60
//! #        BENCH_TLS=1 (our server with --tls-cert/--tls-key, its clients over wss://)
//! ```
//!
//! Clients form groups of `BENCH_GROUP` devices sharing one document (four people typing in one
//! document, as in automerge-repo issue 207), for each client count of `BENCH_LOADS`:
//! 1. **paced** (every backend): every client makes `BENCH_RATE` changes per second (typing)
//!    for `BENCH_SECS`; relay latency = time from a client making a change to each *other*
//!    device of its group receiving it (sender and receiver in one process, one clock).
//! 2. **saturated** (our server, largest load only): every client keeps `BENCH_WINDOW` pushes
//!    in flight for `BENCH_SECS`; throughput = acknowledged writes per second.
//!
//! Our server: a change is a 200-byte blob (a small encrypted change). After each phase every
//! client must have received every entry of its document, in order, without gaps, and every
//! acknowledged push must be there (zero lost writes), else the benchmark fails.
//!
//! automerge-repo (`benches/automerge-repo`, see driver.mjs): `automerge-repo` is the server of
//! `@automerge/automerge-repo-sync-server` with the current automerge-repo 2.x libraries
//! (server.mjs), `automerge-repo-sync-server` that package as published (automerge-repo 1.x).
//! Each client is an automerge-repo `Repo` with its own WebSocket, in `BENCH_NODE_PROCS` node
//! processes (a group never spans two); a change appends `{n, t, s: 150 characters}` to the
//! client's list in its group's document. Lost writes = changes that did not reach every other
//! device of their group within `BENCH_DRAIN` seconds after the phase (reported, not fatal).
//! Skipped with a message when node or the npm packages are missing.
//!
//! Reported per run: server CPU (the server process only) and server CPU per write, the clients'
//! CPU (this process, or the node drivers), how long the server's busiest thread waited for a
//! CPU (the machine's other load), memory per client = server RSS delta after connecting the clients /
//! clients.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    PgCluster, Proc, TestCerts, certificates, doc, http, https, space, tls_connect, tls_connector,
    token,
};
use futures_util::{SinkExt, StreamExt};
use nexus_sync_protocol::{
    Blob, ClientMessage, PROTOCOL_VERSION, ServerMessage, SpaceId, Token, http as proto_http,
    routes,
};
use tokio_tungstenite::tungstenite::Message;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15; after the ")" they are at index 11 and 12.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// Per thread of a process: (thread id, (CPU time, time runnable but waiting for a CPU)), in
/// nanoseconds, from /proc/PID/task/TID/schedstat.
fn sched(pid: u32) -> BTreeMap<String, (u64, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return BTreeMap::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            let mut f = s.split_whitespace().map(|v| v.parse::<u64>().ok());
            let (cpu, wait) = (f.next()??, f.next()??);
            Some((t.file_name().to_string_lossy().into_owned(), (cpu, wait)))
        })
        .collect()
}

/// How long the busiest thread of the process (most CPU time since `before`) waited for a
/// CPU, in % of `secs`: the machine's other load shows here.
fn busiest_wait_pct(pid: u32, before: &BTreeMap<String, (u64, u64)>, secs: f64) -> f64 {
    sched(pid)
        .into_iter()
        .map(|(tid, (cpu, wait))| {
            let (cpu0, wait0) = before.get(&tid).copied().unwrap_or((0, 0));
            (cpu.saturating_sub(cpu0), wait.saturating_sub(wait0))
        })
        .max()
        .map_or(0.0, |(_, wait)| wait as f64 / 1e7 / secs)
}

/// What one client observed.
#[derive(Default)]
struct Stats {
    latencies_us: Vec<u64>,
    acked: u64,
    errors: u64,
    /// Entries received per seq, to check order and completeness.
    received: Vec<u64>,
    /// Acked push ids -> seq.
    acks: BTreeMap<u64, u64>,
    /// (seq -> (client, push id)) from received blobs.
    seen: BTreeMap<u64, (u32, u64)>,
}

/// The sending half of a client's WebSocket, plain or TLS.
type WsSink = std::pin::Pin<
    Box<dyn futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Send>,
>;

/// The server's address, and a TLS client trusting its certificate with BENCH_TLS=1.
#[derive(Clone)]
struct Target {
    addr: std::net::SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Target {
    /// An HTTP(S) request: status and body.
    async fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&Token>,
        body: Option<String>,
    ) -> (u16, String) {
        match &self.tls {
            Some(tls) => https(tls, self.addr, method, path, token, body.as_deref()).await,
            None => http(self.addr, method, path, token, body).await,
        }
    }
}

struct Client {
    tx: WsSink,
    stats: Arc<Mutex<Stats>>,
    in_flight: Arc<AtomicU64>,
    next_id: u64,
}

fn blob(client: u32, id: u64, t0: Instant) -> Vec<u8> {
    let mut b = Vec::with_capacity(200);
    b.extend_from_slice(&client.to_le_bytes());
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&(t0.elapsed().as_micros() as u64).to_le_bytes());
    b.resize(200, 0x5a); // a typical small encrypted change
    b
}

async fn connect(
    target: &Target,
    sp: &SpaceId,
    tk: &Token,
    me: u32,
    t0: Instant,
    cursor: u64,
) -> Client {
    let addr = target.addr;
    let (mut tx, mut rx): (WsSink, _) = match &target.tls {
        Some(tls) => {
            let stream = tls_connect(tls, addr).await;
            let (ws, _) =
                tokio_tungstenite::client_async(format!("wss://{addr}{}", routes::WS), stream)
                    .await
                    .unwrap();
            let (tx, rx) = ws.split();
            (Box::pin(tx), rx.boxed())
        }
        None => {
            let (ws, _) = tokio_tungstenite::connect_async_with_config(
                format!("ws://{addr}{}", routes::WS),
                None,
                true,
            )
            .await
            .unwrap();
            let (tx, rx) = ws.split();
            (Box::pin(tx), rx.boxed())
        }
    };
    let hello = ClientMessage::Hello {
        protocol: PROTOCOL_VERSION,
        space: sp.clone(),
        token: tk.clone(),
        cursors: BTreeMap::from([(doc(1), cursor)]),
    };
    tx.send(Message::text(hello.to_frame())).await.unwrap();
    match rx.next().await {
        Some(Ok(Message::Text(t))) => {
            assert!(matches!(
                ServerMessage::parse(t.as_str()).unwrap(),
                ServerMessage::Welcome { .. }
            ));
        }
        other => panic!("{other:?}"),
    }
    let stats = Arc::new(Mutex::new(Stats::default()));
    let in_flight = Arc::new(AtomicU64::new(0));
    let (s, f) = (stats.clone(), in_flight.clone());
    tokio::spawn(async move {
        while let Some(Ok(m)) = rx.next().await {
            let Message::Text(t) = m else { continue };
            let now = t0.elapsed().as_micros() as u64;
            let msg = ServerMessage::parse(t.as_str()).unwrap();
            let mut st = s.lock().unwrap();
            match msg {
                ServerMessage::Entries { entries, .. } => {
                    for e in entries {
                        let b = &e.blob.0;
                        let from = u32::from_le_bytes(b[0..4].try_into().unwrap());
                        let id = u64::from_le_bytes(b[4..12].try_into().unwrap());
                        let sent = u64::from_le_bytes(b[12..20].try_into().unwrap());
                        if from != me {
                            st.latencies_us.push(now.saturating_sub(sent));
                        }
                        st.received.push(e.seq);
                        st.seen.insert(e.seq, (from, id));
                    }
                }
                ServerMessage::Ack { id, seq, .. } => {
                    st.acked += 1;
                    st.acks.insert(id, seq);
                    f.fetch_sub(1, Ordering::Relaxed);
                }
                ServerMessage::Error { .. } => {
                    st.errors += 1;
                    f.fetch_sub(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    });
    Client {
        tx,
        stats,
        in_flight,
        next_id: 0,
    }
}

impl Client {
    async fn push(&mut self, me: u32, t0: Instant) {
        self.next_id += 1;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let msg = ClientMessage::Push {
            id: self.next_id,
            doc: doc(1),
            blob: Blob(blob(me, self.next_id, t0)),
        };
        self.tx.send(Message::text(msg.to_frame())).await.unwrap();
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

struct PhaseResult {
    acked: u64,
    secs: f64,
    delivered: usize,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
    cpu_pct: f64,
    clients_cpu_pct: f64,
    /// The server's time waiting for a CPU, in % of the phase.
    wait_pct: f64,
}

struct Setup {
    target: Target,
    spaces: Vec<(SpaceId, Token)>,
    group: usize,
    pid: u32,
    t0: Instant,
    secs: u64,
}

async fn phase(
    clients: Vec<Client>,
    set: &Setup,
    rate: Option<u64>,
    window: u64,
) -> (Vec<Client>, PhaseResult) {
    for c in &clients {
        *c.stats.lock().unwrap() = Stats::default();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ticks0 = cpu_ticks(set.pid);
    let own0 = cpu_ticks(std::process::id());
    let sched0 = sched(set.pid);
    let start = Instant::now();
    let t0 = set.t0;
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let me = i as u32;
            match rate {
                Some(rate) => {
                    let period = Duration::from_micros(1_000_000 / rate.max(1));
                    // Spread the clients' ticks over one period.
                    tokio::time::sleep(period.mul_f64(i as f64 / 200.0 % 1.0)).await;
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        c.push(me, t0).await;
                    }
                }
                None => {
                    while !stop.load(Ordering::Relaxed) {
                        if c.in_flight.load(Ordering::Relaxed) < window {
                            c.push(me, t0).await;
                        } else {
                            tokio::time::sleep(Duration::from_micros(200)).await;
                        }
                    }
                }
            }
            c
        }));
    }
    tokio::time::sleep(Duration::from_secs(set.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu_pct = (cpu_ticks(set.pid) - ticks0) as f64 / 100.0 / secs * 100.0;
    let clients_cpu_pct = (cpu_ticks(std::process::id()) - own0) as f64 / 100.0 / secs * 100.0;
    let wait_pct = busiest_wait_pct(set.pid, &sched0, secs);
    // Drain: wait for every ack, then for every client to hold its document's head.
    let deadline = Instant::now() + Duration::from_secs(120);
    while clients
        .iter()
        .any(|c| c.in_flight.load(Ordering::Relaxed) > 0)
    {
        assert!(Instant::now() < deadline, "acks missing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut heads = Vec::new();
    for (sp, tk) in &set.spaces {
        let (_, body) = set
            .target
            .http("GET", &routes::docs(sp), Some(tk), None)
            .await;
        let list: proto_http::DocList = serde_json::from_str(&body).unwrap();
        heads.push(list.heads.get(&doc(1)).copied().unwrap_or(0));
    }
    loop {
        let done = clients.iter().enumerate().all(|(i, c)| {
            c.stats
                .lock()
                .unwrap()
                .received
                .last()
                .copied()
                .unwrap_or(0)
                >= heads[i / set.group]
        });
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "entries missing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Zero lost writes: per space, every client received the same gap-free run of entries,
    // and every acknowledged push is among them under its acknowledged sequence number.
    let mut latencies = Vec::new();
    let (mut acked, mut errors, mut delivered) = (0, 0, 0);
    for (g, members) in clients.chunks(set.group).enumerate() {
        let (first_seen, base) = {
            let first = members[0].stats.lock().unwrap();
            (
                first.seen.clone(),
                first.received.first().copied().unwrap_or(1),
            )
        };
        for (k, c) in members.iter().enumerate() {
            let st = c.stats.lock().unwrap();
            assert!(
                st.received.windows(2).all(|w| w[1] == w[0] + 1),
                "space {g}: gap or duplicate"
            );
            assert_eq!(st.received.last().copied().unwrap_or(0), heads[g]);
            assert_eq!(st.received.first().copied().unwrap_or(1), base);
            for (id, seq) in &st.acks {
                let me = (g * set.group + k) as u32;
                assert_eq!(
                    first_seen.get(seq),
                    Some(&(me, *id)),
                    "acknowledged push lost"
                );
            }
            acked += st.acked;
            errors += st.errors;
            // Deliveries to the *other* devices (not the echo of a client's own push).
            delivered += st.latencies_us.len();
            latencies.extend_from_slice(&st.latencies_us);
        }
    }
    assert_eq!(errors, 0, "pushes failed");
    latencies.sort_unstable();
    let result = PhaseResult {
        acked,
        secs,
        delivered,
        p50: pct(&latencies, 0.50),
        p95: pct(&latencies, 0.95),
        p99: pct(&latencies, 0.99),
        max: pct(&latencies, 1.0),
        cpu_pct,
        clients_cpu_pct,
        wait_pct,
    };
    (clients, result)
}

/// One line of the side-by-side table.
struct Row {
    backend: String,
    clients: usize,
    phase: String,
    /// Changes made (ours: acknowledged writes) per second.
    writes_per_s: f64,
    delivered_per_s: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
    server_cpu: f64,
    kib_per_client: f64,
    /// Changes that did not reach every other device of their group.
    lost: u64,
    clients_cpu: f64,
    /// The server's time waiting for a CPU, in % of the phase.
    server_wait: f64,
}

/// Our server with `n` clients: the paced phase, then (if `saturated`) the saturated one.
async fn run_backend(backend: &str, n: usize, saturated: bool) -> Vec<Row> {
    let group = env("BENCH_GROUP", 4) as usize;
    let secs = env("BENCH_SECS", 10);
    let rate = env("BENCH_RATE", 10);
    let window = env("BENCH_WINDOW", 4);
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = None;
    let url;
    let data = dir.path().to_str().unwrap().to_owned();
    let mut args = vec![
        "--conn-rate",
        "1000000",
        "--conn-burst",
        "1000000",
        "--token-rate",
        "1000000",
        "--token-burst",
        "1000000",
    ];
    match backend {
        "postgres" => {
            let Some(c) = PgCluster::start() else {
                println!("postgres: skipped (not installed)");
                return Vec::new();
            };
            url = c.url();
            cluster = Some(c);
            args.extend(["--postgres", url.as_str()]);
        }
        _ => args.extend(["--data", data.as_str()]),
    }
    let tls = env("BENCH_TLS", 0) == 1;
    let certs: Option<TestCerts> = tls.then(|| certificates(dir.path()));
    let (cert, key);
    if let Some(c) = &certs {
        (cert, key) = (
            c.cert.to_str().unwrap().to_owned(),
            c.key.to_str().unwrap().to_owned(),
        );
        args.extend(["--tls-cert", cert.as_str(), "--tls-key", key.as_str()]);
    }
    let server = Proc::spawn(&args);
    let target = Target {
        addr: server.addr,
        tls: certs.as_ref().map(|c| tls_connector(&c.ca_pem)),
    };
    let pid = server.child.id();
    let t0 = Instant::now();
    let spaces: Vec<(SpaceId, Token)> = (0..n.div_ceil(group))
        .map(|g| (space(g as u8 + 1), token(g as u8 + 1)))
        .collect();
    assert!(
        spaces.len() <= 250,
        "at most 250 spaces (ids from one byte)"
    );
    for (sp, tk) in &spaces {
        let body = serde_json::to_string(&proto_http::CreateSpace { space: sp.clone() }).unwrap();
        let (status, body) = target
            .http("POST", routes::SPACES, Some(tk), Some(body))
            .await;
        assert!(status == 201 || status == 200, "{status} {body}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0 = rss_kib(pid);
    let mut clients = Vec::new();
    for i in 0..n {
        let (sp, tk) = &spaces[i / group];
        clients.push(connect(&target, sp, tk, i as u32, t0, 0).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss1 = rss_kib(pid);
    let set = Setup {
        target,
        spaces,
        group,
        pid,
        t0,
        secs,
    };
    let mut results = Vec::new();
    let (mut clients, paced) = phase(clients, &set, Some(rate), window).await;
    results.push((paced, format!("paced ({rate}/s per client)")));
    if saturated {
        let (c, r) = phase(clients, &set, None, window).await;
        clients = c;
        results.push((r, format!("saturated ({window} in flight)")));
    }
    let rss2 = rss_kib(pid);
    let kib_per_client = rss1.saturating_sub(rss0) as f64 / n as f64;
    println!(
        "{backend}{}, {n} clients: server RSS {:.1} MiB idle, {:.1} MiB with the clients \
         connected ({kib_per_client:.1} KiB per client), {:.1} MiB after the load",
        if tls { " over TLS" } else { "" },
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        rss2 as f64 / 1024.0
    );
    drop(clients);
    drop(server);
    drop(cluster);
    results
        .into_iter()
        .map(|(r, phase)| Row {
            backend: if tls {
                format!("{backend} (TLS)")
            } else {
                backend.to_owned()
            },
            clients: n,
            phase,
            writes_per_s: r.acked as f64 / r.secs,
            delivered_per_s: r.delivered as f64 / r.secs,
            p50: r.p50,
            p95: r.p95,
            p99: r.p99,
            max: r.max,
            server_cpu: r.cpu_pct,
            kib_per_client,
            lost: 0, // checked above: a lost write fails the benchmark
            clients_cpu: r.clients_cpu_pct,
            server_wait: r.wait_pct,
        })
        .collect()
}

/// The reference: automerge-repo's sync server and clients (node), in
/// `sync-server/benches/automerge-repo` (`npm ci` there first).
mod automerge_repo {
    use std::io::{BufRead, BufReader, Write};
    use std::path::PathBuf;
    use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
    use std::time::Instant;

    use super::{Row, busiest_wait_pct, cpu_ticks, env, pct, rss_kib, sched};

    /// Kills the child on drop.
    struct Kill(Child);

    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/automerge-repo")
    }

    /// Why the reference cannot run here, if it cannot.
    pub fn missing() -> Option<String> {
        let node = Command::new("node")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !node.is_ok_and(|s| s.success()) {
            return Some("node is not installed".into());
        }
        let installed = dir().join("node_modules/@automerge/automerge-repo-sync-server");
        if !installed.exists() {
            return Some(format!(
                "its npm packages are not installed: run `npm ci --prefix {}`",
                dir().display()
            ));
        }
        None
    }

    /// The server process, listening on `port`: `automerge-repo` is the package's server with
    /// the current 2.x libraries (server.mjs), `automerge-repo-sync-server` the published
    /// package as it is (1.x libraries).
    fn server(variant: &str, port: u16, data: &std::path::Path) -> Result<Kill, String> {
        let script = match variant {
            "automerge-repo" => "server.mjs",
            _ => "node_modules/@automerge/automerge-repo-sync-server/src/index.js",
        };
        let mut child = Command::new("node")
            .arg(script)
            .current_dir(dir())
            .env("PORT", port.to_string())
            .env("DATA_DIR", data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start node: {e}"))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if !line.contains("Listening on port") {
            let _ = child.kill();
            return Err(format!("the server did not start: {line:?}"));
        }
        Ok(Kill(child))
    }

    struct Driver {
        child: Kill,
        stdin: ChildStdin,
        lines: std::io::Lines<BufReader<ChildStdout>>,
    }

    impl Driver {
        /// Reads lines until the JSON event `event`.
        fn wait(&mut self, event: &str) -> Result<serde_json::Value, String> {
            for line in self.lines.by_ref() {
                let line = line.map_err(|e| e.to_string())?;
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["event"] == event
                {
                    return Ok(v);
                }
            }
            Err(format!("the client driver exited before {event:?}"))
        }
    }

    /// `n` clients in groups, paced, against a fresh server; the clients run in
    /// `BENCH_NODE_PROCS` node processes (a group never spans two).
    pub fn run(variant: &str, n: usize) -> Result<Row, String> {
        let group = env("BENCH_GROUP", 4) as usize;
        let secs = env("BENCH_SECS", 10);
        let rate = env("BENCH_RATE", 10);
        let drain = env("BENCH_DRAIN", 60);
        let groups = n / group;
        if groups == 0 || !n.is_multiple_of(group) {
            return Err(format!("{n} clients are not groups of {group}"));
        }
        let procs = (env("BENCH_NODE_PROCS", 2) as usize).clamp(1, groups);
        let data = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let srv = server(variant, port, data.path())?;
        let pid = srv.0.id();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let rss0 = rss_kib(pid);
        let lib = if variant == "automerge-repo" {
            "v2"
        } else {
            "v1"
        };
        let mut drivers = Vec::new();
        for p in 0..procs {
            let mine = (groups * (p + 1) / procs - groups * p / procs) * group;
            let mut child = Command::new("node")
                .arg("driver.mjs")
                .args(["--url", &format!("ws://127.0.0.1:{port}"), "--lib", lib])
                .args([
                    "--clients",
                    &mine.to_string(),
                    "--group",
                    &group.to_string(),
                ])
                .args(["--secs", &secs.to_string(), "--rate", &rate.to_string()])
                .args(["--drain", &drain.to_string()])
                .current_dir(dir())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("cannot start node: {e}"))?;
            let stdin = child.stdin.take().unwrap();
            let lines = BufReader::new(child.stdout.take().unwrap()).lines();
            drivers.push(Driver {
                child: Kill(child),
                stdin,
                lines,
            });
        }
        for d in &mut drivers {
            d.wait("ready")?;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
        let rss1 = rss_kib(pid);
        let ticks0 = cpu_ticks(pid);
        let driver_ticks =
            |ds: &[Driver]| -> u64 { ds.iter().map(|d| cpu_ticks(d.child.0.id())).sum() };
        let own0 = driver_ticks(&drivers);
        let sched0 = sched(pid);
        let start = Instant::now();
        for d in &mut drivers {
            writeln!(d.stdin, "go").map_err(|e| e.to_string())?;
        }
        for d in &mut drivers {
            d.wait("sent")?;
        }
        let secs_run = start.elapsed().as_secs_f64();
        let server_cpu = (cpu_ticks(pid) - ticks0) as f64 / secs_run;
        let clients_cpu = (driver_ticks(&drivers) - own0) as f64 / secs_run;
        let server_wait = busiest_wait_pct(pid, &sched0, secs_run);
        let (mut changes, mut delivered, mut lost, mut errors) = (0u64, 0u64, 0u64, 0u64);
        let mut lag = 0f64;
        let mut latencies_us: Vec<u64> = Vec::new();
        for d in &mut drivers {
            let r = d.wait("result")?;
            changes += r["changes"].as_u64().unwrap_or(0);
            delivered += r["delivered"].as_u64().unwrap_or(0);
            lost += r["lost"].as_u64().unwrap_or(0);
            errors += r["errors"].as_u64().unwrap_or(0);
            lag = lag.max(r["loop_delay_p99_ms"].as_f64().unwrap_or(0.0));
            latencies_us.extend(
                r["latencies_ms"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_f64())
                    .map(|ms| (ms * 1000.0) as u64),
            );
        }
        latencies_us.sort_unstable();
        let kib_per_client = rss1.saturating_sub(rss0) as f64 / n as f64;
        println!(
            "{variant}, {n} clients: server RSS {:.1} MiB idle, {:.1} MiB with the clients \
             connected ({kib_per_client:.1} KiB per client); clients in {procs} node \
             processes, their event loop delay p99 {lag:.0} ms, {errors} exceptions in the \
             automerge-repo libraries",
            rss0 as f64 / 1024.0,
            rss1 as f64 / 1024.0,
        );
        Ok(Row {
            backend: variant.to_owned(),
            clients: n,
            phase: format!("paced ({rate}/s per client)"),
            writes_per_s: changes as f64 / secs_run,
            delivered_per_s: delivered as f64 / secs_run,
            p50: pct(&latencies_us, 0.50),
            p95: pct(&latencies_us, 0.95),
            p99: pct(&latencies_us, 0.99),
            max: pct(&latencies_us, 1.0),
            server_cpu,
            kib_per_client,
            lost,
            clients_cpu,
            server_wait,
        })
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would run this too: skip there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("relay benchmark: run with `cargo bench -p nexus-sync-server --bench relay`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let backends = std::env::var("BENCH_BACKENDS")
        .unwrap_or_else(|_| "sqlite,postgres,automerge-repo,automerge-repo-sync-server".into());
    let loads: Vec<usize> = std::env::var("BENCH_LOADS")
        .unwrap_or_else(|_| "4,40,200".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let largest = loads.iter().copied().max().unwrap_or(0);
    let load_avg = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average before: {}", load_avg().trim());
    let mut rows = Vec::new();
    for b in backends.split(',').map(str::trim) {
        if b.starts_with("automerge-repo") {
            if let Some(why) = automerge_repo::missing() {
                println!("{b}: skipped ({why})");
                continue;
            }
            for &n in &loads {
                match automerge_repo::run(b, n) {
                    Ok(row) => rows.push(row),
                    Err(e) => println!("{b}, {n} clients: failed: {e}"),
                }
            }
        } else if b == "sqlite" || b == "postgres" {
            for &n in &loads {
                rows.extend(rt.block_on(run_backend(b, n, n == largest)));
            }
        } else {
            println!(
                "{b}: unknown backend (sqlite, postgres, automerge-repo, automerge-repo-sync-server)"
            );
        }
    }
    println!("load average after: {}", load_avg().trim());
    println!(
        "\n| backend | clients | phase | writes/s | deliveries/s | relay p50 | p95 | p99 | max | server CPU | server CPU per write | server KiB/client | lost writes | clients' CPU | server's busiest thread waited for a CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.0}% | {:.0} µs | {:.0} | {} | {:.0}% | {:.0}% |",
            r.backend,
            r.clients,
            r.phase,
            r.writes_per_s,
            r.delivered_per_s,
            r.p50,
            r.p95,
            r.p99,
            r.max,
            r.server_cpu,
            r.server_cpu * 1e4 / r.writes_per_s.max(1e-9),
            r.kib_per_client,
            r.lost,
            r.clients_cpu,
            r.server_wait
        );
    }
}
