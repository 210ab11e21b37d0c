//! Relay benchmark: 200 concurrent WebSocket clients on loopback against the real server
//! binary, for SQLite and PostgreSQL.
//!
//! ```sh
//! cargo bench -p nexus-sync-server --bench relay
//! # knobs: BENCH_CLIENTS=200 BENCH_GROUP=4 BENCH_SECS=10 BENCH_RATE=10 BENCH_WINDOW=4
//! #        BENCH_BACKENDS=sqlite,postgres
//! #        BENCH_TLS=1 (the server with --tls-cert/--tls-key, the clients over wss://)
//! ```
//!
//! Clients form spaces of `BENCH_GROUP` devices (four people typing in one document, as in
//! automerge-repo issue 207). Two phases per backend:
//! 1. **paced**: every client pushes `BENCH_RATE` changes per second (typing) for
//!    `BENCH_SECS`; relay latency = time from a client sending a push to each *other* device
//!    of its space receiving the entry (same process, one clock).
//! 2. **saturated**: every client keeps `BENCH_WINDOW` pushes in flight for `BENCH_SECS`;
//!    throughput = acknowledged writes per second.
//!
//! After each phase every client must have received every entry of its document, in order,
//! without gaps, and every acknowledged push must be there (zero lost writes), else the
//! benchmark fails. Memory per client = server RSS delta after connecting the clients / clients.
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
    name: &'static str,
    acked: u64,
    secs: f64,
    delivered: usize,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
    cpu_pct: f64,
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
    name: &'static str,
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
            delivered += st.received.len();
            latencies.extend_from_slice(&st.latencies_us);
        }
    }
    assert_eq!(errors, 0, "pushes failed");
    latencies.sort_unstable();
    let result = PhaseResult {
        name,
        acked,
        secs,
        delivered,
        p50: pct(&latencies, 0.50),
        p95: pct(&latencies, 0.95),
        p99: pct(&latencies, 0.99),
        max: pct(&latencies, 1.0),
        cpu_pct,
    };
    (clients, result)
}

async fn run_backend(backend: &str) {
    let n = env("BENCH_CLIENTS", 200) as usize;
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
                return;
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
    let (clients, paced) = phase("paced", clients, &set, Some(rate), window).await;
    let (clients, saturated) = phase("saturated", clients, &set, None, window).await;
    let rss2 = rss_kib(pid);
    println!(
        "\n### {backend}{}: {n} clients in {} spaces of {group}, {secs} s per phase",
        if tls { " over TLS (wss://)" } else { "" },
        set.spaces.len()
    );
    println!(
        "server RSS: {:.1} MiB idle, {:.1} MiB with {n} clients connected \
         ({:.1} KiB per client), {:.1} MiB after the load",
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        (rss1.saturating_sub(rss0)) as f64 / n as f64,
        rss2 as f64 / 1024.0
    );
    println!(
        "\n| phase | offered | acked writes/s | entries delivered/s | relay p50 | p95 | p99 | max | server CPU | lost writes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (r, offered) in [
        (&paced, format!("{rate}/s per client")),
        (&saturated, format!("{window} in flight per client")),
    ] {
        println!(
            "| {} | {offered} | {:.0} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.0}% | 0 |",
            r.name,
            r.acked as f64 / r.secs,
            r.delivered as f64 / r.secs,
            r.p50,
            r.p95,
            r.p99,
            r.max,
            r.cpu_pct
        );
    }
    drop(clients);
    drop(server);
    drop(cluster);
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
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    for b in backends.split(',') {
        rt.block_on(run_backend(b.trim()));
    }
}
