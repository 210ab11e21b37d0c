//! HTTPS and WSS: the server's certificate and key ([`load`]) and a listener that completes
//! TLS handshakes ([`TlsListener`], used by [`crate::server::serve_tls`]).
//!
//! rustls with the `ring` provider, TLS 1.2 and 1.3. Handshakes run in their own tasks, so a
//! slow or silent client never holds up the others, and give up after
//! [`HANDSHAKE_TIMEOUT`] ([`MAX_HANDSHAKES`] at once). Failed handshakes (a client that does not trust the certificate, a
//! plain-HTTP request on the TLS port) are counted in `/metrics` and logged at debug level.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes done but not yet taken by the HTTP server.
const QUEUE: usize = 128;

/// Handshakes in progress at once; past it, new connections wait in the kernel's backlog.
pub const MAX_HANDSHAKES: usize = 1024;

/// A certificate or key that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("cannot read {what} {path}: {why}")]
    Read {
        /// "certificate" or "private key".
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// The file holds no usable PEM of the expected kind.
    #[error("{path} holds no {what} in PEM format ({why})")]
    Pem {
        /// "certificate" or "private key".
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// rustls refused the certificate and key (e.g. the key does not match).
    #[error("the certificate {cert} and the key {key} cannot be used together: {why}")]
    Config {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// Why.
        why: String,
    },
}

/// Reads a PEM certificate chain (the server's certificate first, then intermediates) and its
/// PEM private key (PKCS#8, PKCS#1 or SEC1) into a server configuration offering HTTP/1.1.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_name = cert.display().to_string();
    let key_name = key.display().to_string();
    let cert_pem = std::fs::read(cert).map_err(|e| TlsError::Read {
        what: "certificate",
        path: cert_name.clone(),
        why: e.to_string(),
    })?;
    let key_pem = std::fs::read(key).map_err(|e| TlsError::Read {
        what: "private key",
        path: key_name.clone(),
        why: e.to_string(),
    })?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: "certificate",
            path: cert_name.clone(),
            why: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            what: "certificate",
            path: cert_name,
            why: "no BEGIN CERTIFICATE block".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        what: "private key",
        path: key_name.clone(),
        why: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no BEGIN PRIVATE KEY block".into(),
            e => e.to_string(),
        },
    })?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key_der))
            .map_err(|e| TlsError::Config {
                cert: cert_name,
                key: key_name,
                why: e.to_string(),
            })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener whose connections have completed the TLS handshake: accepts TCP connections
/// (with `TCP_NODELAY`), runs each handshake in its own task and hands over the finished
/// ones. Dropping it stops accepting.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener`; `failed` is called for every failed handshake.
    pub fn new(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        failed: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(QUEUE);
        let acceptor = TlsAcceptor::from(config);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // As axum does: out of file descriptors and the like pass; wait a
                        // little instead of spinning.
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Small frames must not wait for delayed ACKs (Nagle).
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
                let (acceptor, tx, failed) = (acceptor.clone(), tx.clone(), failed.clone());
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                    let done = handshake.await;
                    drop(slot);
                    match done {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            failed();
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            failed();
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(Self {
            ready,
            local,
            accept_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task ended (only when aborted, i.e. never while `self` lives).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
