//! `nexus-sync-server --listen ADDR --data DIR` (SQLite) or `--postgres URL`; with
//! `--tls-cert FILE --tls-key FILE` it serves HTTPS and WSS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use nexus_sync_server::{Limits, PgStorage, SqliteStorage, Storage, server};

/// Relays end-to-end encrypted sync entries between Nexus devices.
#[derive(Debug, Parser)]
#[command(name = "nexus-sync-server", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8787", env = "NEXUS_SYNC_LISTEN")]
    listen: SocketAddr,
    /// Directory of the SQLite database (the default storage).
    #[arg(long, default_value = "nexus-sync-data", env = "NEXUS_SYNC_DATA")]
    data: PathBuf,
    /// Use PostgreSQL instead of SQLite, e.g. `postgres://user@host:5432/db`. Several servers
    /// may share one database.
    /// (The URL may hold a password: it is never printed or logged.)
    #[arg(long, env = "NEXUS_SYNC_POSTGRES", hide_env_values = true)]
    postgres: Option<String>,
    /// PostgreSQL connections for reads and transactions per server process (plus half as
    /// many writer connections for appends).
    #[arg(long, default_value_t = 8)]
    pg_connections: usize,
    /// Frames per second per WebSocket connection.
    #[arg(long, default_value_t = Limits::default().conn_rate)]
    conn_rate: f64,
    /// Burst of frames per WebSocket connection.
    #[arg(long, default_value_t = Limits::default().conn_burst)]
    conn_burst: f64,
    /// Writes per second per token.
    #[arg(long, default_value_t = Limits::default().token_rate)]
    token_rate: f64,
    /// Burst of writes per token.
    #[arg(long, default_value_t = Limits::default().token_burst)]
    token_burst: f64,
    /// Blob bytes per second per token.
    #[arg(long, default_value_t = Limits::default().token_bytes_rate)]
    token_bytes_rate: f64,
    /// Open WebSocket sessions per process; more are refused (HTTP 503).
    #[arg(long, default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Serve HTTPS and WSS with this PEM certificate chain (the server's certificate first,
    /// then any intermediates). Needs --tls-key.
    #[arg(long, env = "NEXUS_SYNC_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "NEXUS_SYNC_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Logs as JSON lines (default: human-readable with fields).
    #[arg(long)]
    log_json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("NEXUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_json {
        fmt.json().init();
    } else {
        fmt.init();
    }
    let limits = Limits {
        conn_rate: args.conn_rate,
        conn_burst: args.conn_burst,
        token_rate: args.token_rate,
        token_burst: args.token_burst,
        token_bytes_rate: args.token_bytes_rate,
        max_connections: args.max_connections,
        ..Limits::default()
    };
    // Bad certificate or key files stop the server before it opens anything.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(nexus_sync_server::tls::load(cert, key)?),
        _ => None,
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            match &args.postgres {
                Some(url) => {
                    let storage = PgStorage::connect(url, args.pg_connections)
                        .await
                        .context("connecting to PostgreSQL")?;
                    tracing::info!("storage: PostgreSQL");
                    run(storage, &args, limits, tls).await
                }
                None => {
                    let storage = SqliteStorage::open(&args.data)
                        .with_context(|| format!("opening {}", args.data.display()))?;
                    tracing::info!(data = %args.data.display(), "storage: SQLite");
                    run(storage, &args, limits, tls).await
                }
            }
        })
}

async fn run<S: Storage>(
    storage: S,
    args: &Args,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Scripts and tests read this line to find the port.
    println!("nexus-sync-server listening on {scheme}://{addr}");
    tracing::info!(%addr, tls = tls.is_some(), "listening");
    let app = nexus_sync_server::App::new(storage, limits);
    match tls {
        Some(tls) => server::serve_tls(app, listener, tls, shutdown()).await?,
        None => server::serve(app, listener, shutdown()).await?,
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
