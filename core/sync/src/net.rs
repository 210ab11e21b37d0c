//! A blocking transport for native shells (feature `native`): registers and deletes a space
//! over HTTP and runs sync rounds over the server's WebSocket with `tungstenite` (deleting old
//! document generations happens inside a round, on the WebSocket).
//!
//! ## Server addresses and TLS
//! `http://` and `ws://` connect in the clear (loopback, a VPN). `https://` and `wss://` use TLS
//! (rustls with the `ring` provider, TLS 1.2 and 1.3; port 443 unless given). The server's
//! certificate must be valid for the host of the address (a name or an IP address) and chain
//! to a trusted root:
//!
//! * the Mozilla root store (`webpki-roots`), for servers with a public certificate;
//! * the PEM certificates stored with the configuration ([`SyncConfig::tls_ca`], set by
//!   `nexus sync enable --ca FILE` or `nexus device join CODE --ca FILE`): a private CA, or
//!   the server's own self-signed certificate (also one marked `CA:TRUE`, as `openssl req
//!   -x509` makes them: accepted when the server presents exactly that certificate and it
//!   names the host);
//! * the PEM file named by [`CA_ENV`] (`NEXUS_SYNC_CA=/path/ca.pem`), read at every
//!   connection.
//!
//! The handshake completes before anything is written, so a server whose certificate is
//! refused ([`NetError::Untrusted`]) receives neither the token nor any blob. A pairing code
//! carries only the server's URL: a device joining a server with a private CA needs the CA
//! too (`--ca` or `NEXUS_SYNC_CA`).
//!
//! [`SyncConfig::tls_ca`]: crate::SyncConfig::tls_ca

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_store::Store;
use nexus_sync_protocol::{
    Access, ErrorCode, MAX_ENTRIES_PER_MESSAGE, ServerMessage, SpaceId, Token, http, routes,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_name};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
    SignatureScheme, StreamOwned,
};
use tungstenite::{Message, WebSocket};

use crate::device::DeviceId;
use crate::{SyncClient, SyncError};

/// The environment variable naming a PEM file of certificates to trust besides the public
/// roots (a private CA or a self-signed server certificate).
pub const CA_ENV: &str = "NEXUS_SYNC_CA";

/// What went wrong on the network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The server address cannot be used.
    #[error("bad server address {0:?}: {1}")]
    Address(String, String),
    /// Could not reach the server or the connection broke.
    #[error("cannot reach the sync server {0}: {1}")]
    Unreachable(String, String),
    /// The server's TLS certificate was refused; nothing was sent to it.
    #[error("the server's certificate is not trusted: {0}")]
    Untrusted(String),
    /// A certificate to trust (`--ca`, [`CA_ENV`]) cannot be used.
    #[error("{0}")]
    TrustedCa(String),
    /// The server refused.
    #[error("the sync server refused: {0}")]
    Refused(String),
    /// The server refused the space token (handled inside [`sync_once`]).
    #[error("the sync server refused this space's token")]
    Unauthorized,
    /// The round did not finish in time.
    #[error("sync did not finish within {0:?}")]
    Timeout(Duration),
    /// The server no longer accepts this device: it was revoked from another device (or the
    /// space was reset), and no key rotation for it was found.
    #[error(
        "the sync server refused this device: it was removed from the space on another device, or the space was deleted there (forget-me). Run `nexus sync disable`; pair it again if that was a mistake"
    )]
    Revoked,
    /// The owner of a shared companion no longer shares it (the server refuses the grant:
    /// they unshared it, or replaced their key after removing a device).
    #[error(
        "{0} is no longer shared with you: its owner stopped sharing it (or replaced their keys, or forgot something in it, which starts it over). You keep what you had; `nexus companion leave-share {0}` removes the share from this device"
    )]
    NoLongerShared(String),
    /// Sync itself failed.
    #[error(transparent)]
    Sync(#[from] SyncError),
}

/// Where a server address points.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    /// Host name or IP address (without the brackets of an IPv6 address).
    host: String,
    port: u16,
    tls: bool,
}

impl Endpoint {
    fn parse(server: &str) -> Result<Self, NetError> {
        let bad = |why: &str| NetError::Address(server.to_owned(), why.to_owned());
        let (scheme, rest) = server.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => false,
            "https" | "wss" => true,
            _ => return Err(bad("the scheme must be http://, https://, ws:// or wss://")),
        };
        let host_port = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host_port.contains('@') {
            return Err(bad("user names or passwords do not belong in the address"));
        }
        let (host, port) = match host_port.strip_prefix('[') {
            // [v6] or [v6]:port
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
                let port = match after {
                    "" => None,
                    p => Some(p.strip_prefix(':').ok_or_else(|| bad("bad port"))?),
                };
                (host, port)
            }
            None => match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            },
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None if tls => 443,
            None => 80,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            tls,
        })
    }

    /// The `Host` header value.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Reads the certificates of a PEM file or text (`source` names it in errors); at least one.
pub fn read_ca(pem: &[u8], source: &str) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NetError::TrustedCa(format!("{source} is not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(NetError::TrustedCa(format!(
            "{source} holds no certificate (no BEGIN CERTIFICATE block)"
        )));
    }
    let mut roots = RootCertStore::empty();
    for cert in &certs {
        roots.add(cert.clone()).map_err(|e| {
            NetError::TrustedCa(format!(
                "{source} holds a certificate that cannot be used: {e}"
            ))
        })?;
    }
    Ok(certs)
}

/// The TLS configuration: the public roots, the stored certificates `ca` (PEM) and those of
/// [`CA_ENV`] (see [`Verifier`]).
fn tls_config(ca: Option<&str>) -> Result<Arc<ClientConfig>, NetError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut trusted = Vec::new();
    if let Some(pem) = ca {
        trusted.extend(read_ca(pem.as_bytes(), "the stored trusted certificate")?);
    }
    if let Some(path) = std::env::var_os(CA_ENV).filter(|p| !p.is_empty()) {
        let source = format!("{CA_ENV}={}", path.to_string_lossy());
        let pem = std::fs::read(&path)
            .map_err(|e| NetError::TrustedCa(format!("cannot read {source}: {e}")))?;
        trusted.extend(read_ca(&pem, &source)?);
    }
    for cert in &trusted {
        // read_ca checked that each one is accepted.
        let _ = roots.add(cert.clone());
    }
    let setup = |e: String| NetError::TrustedCa(format!("TLS setup failed: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| setup(e.to_string()))?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { webpki, trusted }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Whether a certificate error is webpki's `CaUsedAsEndEntity` (opaque through rustls).
fn is_ca_used_as_end_entity(e: &CertificateError) -> bool {
    matches!(e, CertificateError::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity"))
}

/// rustls' standard verification (webpki: chain to a trusted root, validity period, host
/// name), with one addition: a certificate the user trusted (`--ca`, [`CA_ENV`]) that the
/// server presents as its own certificate is accepted although it is marked as a CA (as the
/// self-signed certificates of `openssl req -x509` are by default), if it names the host. Its
/// validity period is not checked then: trusting that exact certificate is the decision.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    trusted: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(e))
                if is_ca_used_as_end_entity(&e)
                    && self
                        .trusted
                        .iter()
                        .any(|t| t.as_ref() == end_entity.as_ref()) =>
            {
                let parsed = ParsedCertificate::try_from(end_entity)?;
                verify_server_name(&parsed, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A connection to the server, in the clear or over TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

/// What a certificate error means, for people.
fn describe(e: &CertificateError, host: &str) -> String {
    let date = |secs: u64| nexus_common::Timestamp((secs as i64).saturating_mul(1000));
    match e {
        CertificateError::UnknownIssuer => format!(
            "it is not signed by a known certificate authority (a private CA or a self-signed \
             certificate? trust it with --ca FILE or {CA_ENV}=FILE)"
        ),
        CertificateError::ExpiredContext { not_after, .. } => {
            format!("it expired on {}", date(not_after.as_secs()))
        }
        CertificateError::Expired => "it has expired".into(),
        CertificateError::NotValidYetContext { not_before, .. } => format!(
            "it is not valid before {} (is this device's clock right?)",
            date(not_before.as_secs())
        ),
        CertificateError::NotValidYet => "it is not valid yet".into(),
        CertificateError::NotValidForNameContext { presented, .. } => format!(
            "it is not valid for {host:?} (it is for {})",
            if presented.is_empty() {
                "no name".to_owned()
            } else {
                presented
                    .iter()
                    .map(|n| plain_name(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        CertificateError::NotValidForName => format!("it is not valid for {host:?}"),
        CertificateError::Revoked => "it was revoked".into(),
        CertificateError::BadSignature => "its signature is wrong".into(),
        e if is_ca_used_as_end_entity(e) => format!(
            "it is a CA certificate used as the server's own certificate, and not one this \
             device trusts (a self-signed certificate? trust it with --ca FILE or {CA_ENV}=FILE)"
        ),
        other => other.to_string(),
    }
}

/// `DnsName("a.example")` (how webpki presents a certificate's names) as `a.example`.
fn plain_name(presented: &str) -> &str {
    presented
        .split_once('(')
        .and_then(|(_, inner)| inner.strip_suffix(')'))
        .map_or(presented, |inner| inner.trim_matches('"'))
}

/// The error of a failed TLS handshake.
fn handshake_error(server: &str, host: &str, e: &std::io::Error) -> NetError {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(cert)) => NetError::Untrusted(describe(cert, host)),
        Some(rustls::Error::InvalidMessage(_)) => NetError::Unreachable(
            server.to_owned(),
            format!("the TLS handshake failed ({e}): is it an http:// server?"),
        ),
        Some(other) => NetError::Unreachable(
            server.to_owned(),
            format!("the TLS handshake failed: {other}"),
        ),
        None => NetError::Unreachable(server.to_owned(), format!("the TLS handshake failed: {e}")),
    }
}

/// Connects to `server` (TCP, then TLS for https/wss, trusting `ca` besides the public roots:
/// the handshake is complete when this returns, before anything else is sent).
fn connect(
    server: &str,
    ca: Option<&str>,
    timeout: Duration,
) -> Result<(Stream, Endpoint), NetError> {
    let endpoint = Endpoint::parse(server)?;
    // Bad trusted certificates are reported before any connection.
    let tls = endpoint.tls.then(|| tls_config(ca)).transpose()?;
    let unreachable = |e: std::io::Error| NetError::Unreachable(server.to_owned(), e.to_string());
    let addr = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .map_err(unreachable)?
        .next()
        .ok_or_else(|| NetError::Unreachable(server.to_owned(), "no address".into()))?;
    let mut tcp = TcpStream::connect_timeout(&addr, timeout).map_err(unreachable)?;
    tcp.set_nodelay(true).map_err(unreachable)?;
    // Handshakes (TLS, WebSocket) and requests must not wait forever on a silent server.
    tcp.set_read_timeout(Some(timeout)).map_err(unreachable)?;
    tcp.set_write_timeout(Some(timeout)).map_err(unreachable)?;
    let Some(tls) = tls else {
        return Ok((Stream::Plain(tcp), endpoint));
    };
    let name = ServerName::try_from(endpoint.host.clone())
        .map_err(|e| NetError::Address(server.to_owned(), e.to_string()))?;
    let mut conn = ClientConnection::new(tls, name)
        .map_err(|e| NetError::Unreachable(server.to_owned(), e.to_string()))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(|e| handshake_error(server, &endpoint.host, &e))?;
    }
    Ok((Stream::Tls(Box::new(StreamOwned::new(conn, tcp))), endpoint))
}

/// The server refused the space token of a device that never got in.
const UNKNOWN_KEY: &str = "the sync server refused this space's key: the pairing code is wrong or outdated, or this device was removed from the space";

/// One HTTP request with a bearer token and an optional JSON body: status and body. `ca`:
/// certificates to trust besides the public roots (see [`connect`]).
pub(crate) fn http_request(
    server: &str,
    ca: Option<&str>,
    method: &str,
    path: &str,
    bearer: &Token,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), NetError> {
    let (mut stream, endpoint) = connect(server, ca, timeout)?;
    let host = endpoint.authority();
    let io = |e: std::io::Error| NetError::Unreachable(server.to_owned(), e.to_string());
    let body = body.unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        bearer.expose(),
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) => {}
        // A TLS server that closes without a close_notify, after its answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(io(e)),
    }
    if !response.starts_with(b"HTTP/") {
        // E.g. a TLS alert, or nothing: http:// to an https:// server.
        return Err(NetError::Unreachable(
            server.to_owned(),
            format!(
                "the server did not answer in HTTP{}",
                if endpoint.tls {
                    ""
                } else {
                    " (is it an https:// server?)"
                }
            ),
        ));
    }
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // The server answers small bodies; chunked encoding is not used for them, but be safe.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

/// The body of a chunked HTTP/1.1 response.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub(crate) fn refused(status: u16, body: &str) -> NetError {
    NetError::Refused(format!("HTTP {status}: {body}"))
}

/// Registers the client's space with its server (`POST /v1/spaces`); fine if it exists with
/// the same token. (The device's own grant is registered by the first [`sync_once`].)
pub fn register_space(client: &SyncClient, timeout: Duration) -> Result<(), NetError> {
    let config = client.config().clone();
    let body = serde_json::to_string(&http::CreateSpace {
        space: client.keys().space().clone(),
    })
    .expect("serializes");
    let (status, text) = http_request(
        &config.server,
        config.tls_ca.as_deref(),
        "POST",
        routes::SPACES,
        client.keys().token(),
        Some(&body),
        timeout,
    )?;
    match status {
        200 | 201 => Ok(()),
        409 => Err(NetError::Refused(
            "this space already exists on the server with another key".into(),
        )),
        _ => Err(refused(status, &text)),
    }
}

/// Deletes a space with everything the server keeps of it (`DELETE /v1/spaces/{space}`).
/// Returns `false` when the server has no such space for this token (deleted already, by
/// another device or an earlier attempt).
pub fn delete_space(
    server: &str,
    ca: Option<&str>,
    space: &SpaceId,
    token: &Token,
    timeout: Duration,
) -> Result<bool, NetError> {
    let (status, body) = http_request(
        server,
        ca,
        "DELETE",
        &routes::space(space),
        token,
        None,
        timeout,
    )?;
    match status {
        204 | 200 => Ok(true),
        401 | 404 => Ok(false),
        _ => Err(refused(status, &body)),
    }
}

/// Registers this device's grant with the server (a token of its own that may read the
/// keyring: how it learns a new key after a rotation), once.
pub fn register_device(client: &mut SyncClient, timeout: Duration) -> Result<(), NetError> {
    if client.device_grant().is_some() {
        return Ok(());
    }
    let config = client.config().clone();
    let body = serde_json::to_string(&http::CreateGrant {
        token: client.device_token()?,
        docs: vec![client.keyring()],
        access: Access::Read,
    })
    .expect("serializes");
    let (status, text) = http_request(
        &config.server,
        config.tls_ca.as_deref(),
        "POST",
        &routes::grants(client.keys().space()),
        client.keys().token(),
        Some(&body),
        timeout,
    )?;
    match status {
        401 => Err(NetError::Refused(UNKNOWN_KEY.into())),
        201 => {
            let created: http::GrantCreated = serde_json::from_str(&text)
                .map_err(|e| NetError::Refused(format!("malformed answer: {e}")))?;
            client.set_device_grant(created.id)?;
            Ok(())
        }
        _ => Err(refused(status, &text)),
    }
}

/// Revokes devices: syncs, rotates the key (a new epoch secret sealed to every other device,
/// pushed to the keyring), replaces the space token keeping only the remaining devices'
/// grants, then syncs again under the new key (queued changes re-encrypted, every document
/// snapshotted). The revoked devices can read nothing written afterwards.
pub fn revoke_devices(
    client: &mut SyncClient,
    store: &dyn Store,
    devices: &[DeviceId],
    timeout: Duration,
) -> Result<Report, NetError> {
    register_device(client, timeout)?;
    sync_once(client, store, timeout)?;
    let rotation = client.plan_rotation(devices)?;
    let config = client.config().clone();
    let space = client.keys().space().clone();
    let body = serde_json::to_string(&http::PushChange {
        blob: rotation.record.clone(),
    })
    .expect("serializes");
    let (status, text) = http_request(
        &config.server,
        config.tls_ca.as_deref(),
        "POST",
        &routes::changes(&space, &rotation.keyring),
        client.keys().token(),
        Some(&body),
        timeout,
    )?;
    if status != 201 && status != 200 {
        return Err(refused(status, &text));
    }
    let body = serde_json::to_string(&http::RotateToken {
        token: rotation.token.clone(),
        keep_grants: Some(rotation.keep_grants.clone()),
    })
    .expect("serializes");
    let (status, text) = http_request(
        &config.server,
        config.tls_ca.as_deref(),
        "POST",
        &routes::token(&space),
        client.keys().token(),
        Some(&body),
        timeout,
    )?;
    if status != 204 && status != 200 {
        // The record is in the keyring but the token did not change: no device adopts it
        // (they do only when their token is refused), so nothing is half done.
        return Err(refused(status, &text));
    }
    client.commit_rotation(rotation)?;
    client.save(store)?;
    sync_once(client, store, timeout)
}

/// Reads the keyring with this device's grant and moves to the newest key epoch sealed to
/// it. `Ok(false)` when there is none.
fn recover_rotation(client: &mut SyncClient, timeout: Duration) -> Result<bool, NetError> {
    let config = client.config().clone();
    let space = client.keys().space().clone();
    let token = client.device_token()?;
    let mut entries = Vec::new();
    let mut since = 0;
    loop {
        let path = format!(
            "{}?since={since}&limit={MAX_ENTRIES_PER_MESSAGE}",
            routes::entries(&space, &client.keyring())
        );
        let (status, text) = http_request(
            &config.server,
            config.tls_ca.as_deref(),
            "GET",
            &path,
            &token,
            None,
            timeout,
        )?;
        match status {
            200 => {}
            401 | 403 => return Err(NetError::Revoked),
            404 => break,
            _ => return Err(refused(status, &text)),
        }
        let page: http::EntriesPage = serde_json::from_str(&text)
            .map_err(|e| NetError::Refused(format!("malformed answer: {e}")))?;
        since = page.entries.last().map_or(since, |e| e.seq);
        entries.extend(page.entries);
        if !page.more {
            break;
        }
    }
    Ok(client.adopt_rotations(&entries)?.is_some())
}

/// What a sync round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Documents with local changes captured.
    pub local_changes: usize,
    /// Server messages handled.
    pub received: usize,
    /// Changes still waiting for an acknowledgement.
    pub pending: usize,
    /// Problems with single entries (undecryptable, foreign documents).
    pub errors: Vec<String>,
}

fn ws_url(server: &str) -> String {
    let base = server.trim_end_matches('/');
    let base = match base.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => format!("ws://{rest}"),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => format!("wss://{rest}"),
        _ => base.to_owned(),
    };
    format!("{base}{}", routes::WS)
}

/// One sync round: captures local changes, connects, exchanges messages until the device is
/// caught up (every change acknowledged, every document at the server's head), saves, closes.
/// Offline edits stay queued (and saved) when the server cannot be reached.
pub fn sync_once(
    client: &mut SyncClient,
    store: &dyn Store,
    timeout: Duration,
) -> Result<Report, NetError> {
    let mut report = Report {
        local_changes: client.sync_local(store)?,
        ..Report::default()
    };
    client.save(store)?;
    if client.device_grant().is_none() {
        // Devices from before device grants (or whose registration failed) register now.
        match register_device(client, timeout) {
            Ok(()) => client.save(store)?,
            // Connection failures would only repeat in the exchange.
            Err(
                e @ (NetError::Revoked
                | NetError::Unreachable(..)
                | NetError::Untrusted(_)
                | NetError::TrustedCa(_)
                | NetError::Address(..)),
            ) => return Err(e),
            Err(e) => tracing::warn!("sync: registering this device: {e}"),
        }
    }
    let mut result = exchange(client, store, timeout, &mut report);
    if matches!(result, Err(NetError::Unauthorized)) && client.device_grant().is_none() {
        result = Err(NetError::Refused(UNKNOWN_KEY.into()));
    } else if matches!(result, Err(NetError::Unauthorized)) {
        // The space token was replaced: a device was revoked. Learn the new key, if this
        // device is still a member, and go again.
        client.disconnected();
        result = match recover_rotation(client, timeout) {
            Ok(true) => {
                client.save(store)?;
                exchange(client, store, timeout, &mut report).map_err(|e| {
                    if matches!(e, NetError::Unauthorized) {
                        NetError::Revoked
                    } else {
                        e
                    }
                })
            }
            Ok(false) => Err(NetError::Revoked),
            Err(e) => Err(e),
        };
    }
    client.disconnected();
    client.save(store)?;
    report.pending = client.pending();
    report.errors.extend(client.take_errors());
    result.map(|()| report)
}

/// What a WebSocket round drives: the device's own [`SyncClient`], or a
/// [`crate::ShareClient`] (a companion shared with this device).
pub(crate) trait Peer {
    /// The server.
    fn server(&self) -> String;
    /// Certificates to trust for the server's TLS besides the public roots (PEM).
    fn tls_ca(&self) -> Option<String>;
    /// See [`SyncClient::connected`].
    fn connected(&mut self);
    /// See [`SyncClient::outgoing`].
    fn outgoing(&mut self) -> Vec<nexus_sync_protocol::ClientMessage>;
    /// See [`SyncClient::caught_up`].
    fn caught_up(&self) -> bool;
    /// See [`SyncClient::needs_resync`].
    fn needs_resync(&self) -> bool;
    /// See [`SyncClient::handle`].
    fn handle(&mut self, store: &dyn Store, message: ServerMessage) -> Result<(), SyncError>;
}

impl Peer for SyncClient {
    fn server(&self) -> String {
        self.config().server.clone()
    }
    fn tls_ca(&self) -> Option<String> {
        self.config().tls_ca.clone()
    }
    fn connected(&mut self) {
        SyncClient::connected(self);
    }
    fn outgoing(&mut self) -> Vec<nexus_sync_protocol::ClientMessage> {
        SyncClient::outgoing(self)
    }
    fn caught_up(&self) -> bool {
        SyncClient::caught_up(self)
    }
    fn needs_resync(&self) -> bool {
        SyncClient::needs_resync(self)
    }
    fn handle(&mut self, store: &dyn Store, message: ServerMessage) -> Result<(), SyncError> {
        SyncClient::handle(self, store, message)
    }
}

/// One WebSocket session: Hello, then messages until `client` is caught up. A refused token
/// before Welcome is [`NetError::Unauthorized`].
pub(crate) fn exchange(
    client: &mut impl Peer,
    store: &dyn Store,
    timeout: Duration,
    report: &mut Report,
) -> Result<(), NetError> {
    let server = client.server();
    let deadline = Instant::now() + timeout;
    let (stream, endpoint) = connect(&server, client.tls_ca().as_deref(), timeout)?;
    let broken = |e: tungstenite::Error| NetError::Unreachable(server.clone(), e.to_string());
    let (mut ws, _): (WebSocket<Stream>, _) = tungstenite::client(ws_url(&server), stream)
        .map_err(|e| {
            // An answer that is not HTTP: TLS alerts from an https:// server.
            let hint = match &e {
                tungstenite::HandshakeError::Failure(tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::HttparseError(_),
                )) if !endpoint.tls => " (is it an https:// server?)",
                _ => "",
            };
            NetError::Unreachable(server.clone(), format!("{e}{hint}"))
        })?;
    ws.get_ref()
        .tcp()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| NetError::Unreachable(server.clone(), e.to_string()))?;
    client.connected();
    let mut welcomed = false;
    loop {
        for m in client.outgoing() {
            ws.send(Message::Text(m.to_frame().into()))
                .map_err(broken)?;
        }
        if welcomed && client.caught_up() {
            let _ = ws.close(None);
            let _ = ws.flush();
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(NetError::Timeout(timeout));
        }
        match ws.read() {
            Ok(Message::Text(text)) => {
                let message = ServerMessage::parse(text.as_str())
                    .map_err(|e| NetError::Refused(format!("malformed message: {e}")))?;
                report.received += 1;
                let fatal = match &message {
                    ServerMessage::Error {
                        id: None,
                        code: ErrorCode::Unauthorized,
                        ..
                    } if !welcomed => return Err(NetError::Unauthorized),
                    ServerMessage::Error {
                        id: None,
                        code,
                        message,
                    } => Some(format!("{message} ({code:?})")),
                    _ => None,
                };
                welcomed |= matches!(message, ServerMessage::Welcome { .. });
                client.handle(store, message)?;
                if let Some(why) = fatal {
                    return Err(NetError::Refused(why));
                }
            }
            Ok(Message::Close(_)) => {
                return Err(NetError::Unreachable(server, "the server closed".into()));
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if client.needs_resync() {
                    // Messages went missing: start over from the cursors.
                    return Err(NetError::Unreachable(server, "lost messages; retry".into()));
                }
            }
            Err(e) => return Err(broken(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(server: &str) -> (String, u16, bool) {
        let e = Endpoint::parse(server).expect("a good address");
        (e.host, e.port, e.tls)
    }

    #[test]
    fn addresses() {
        assert_eq!(
            endpoint("http://127.0.0.1:8787"),
            ("127.0.0.1".into(), 8787, false)
        );
        assert_eq!(
            endpoint("ws://example.org/x"),
            ("example.org".into(), 80, false)
        );
        assert_eq!(
            endpoint("https://example.org"),
            ("example.org".into(), 443, true)
        );
        assert_eq!(
            endpoint("WSS://example.org:8443/"),
            ("example.org".into(), 8443, true)
        );
        assert_eq!(endpoint("https://[::1]:9/"), ("::1".into(), 9, true));
        assert_eq!(endpoint("http://[::1]"), ("::1".into(), 80, false));
        assert_eq!(
            Endpoint::parse("https://[::1]:9").expect("ok").authority(),
            "[::1]:9"
        );
        for bad in [
            "example.org",
            "ftp://example.org",
            "https://",
            "https://:443",
            "https://h:port",
            "https://[::1",
            "https://u:p@h",
        ] {
            let e = Endpoint::parse(bad).expect_err(bad);
            assert!(e.to_string().starts_with("bad server address"), "{e}");
        }
        assert_eq!(ws_url("http://h:1/"), "ws://h:1/v1/ws");
        assert_eq!(ws_url("ws://h:1"), "ws://h:1/v1/ws");
        assert_eq!(ws_url("https://h:1/"), "wss://h:1/v1/ws");
        assert_eq!(ws_url("wss://h"), "wss://h/v1/ws");
    }

    #[test]
    fn certificate_names_read_plainly() {
        assert_eq!(plain_name("DnsName(\"a.example\")"), "a.example");
        assert_eq!(plain_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(plain_name("a.example"), "a.example");
    }

    #[test]
    fn trusted_certificates_must_be_pem_certificates() {
        for (pem, why) in [
            ("", "holds no certificate"),
            ("hello", "holds no certificate"),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "holds no certificate",
            ),
            (
                "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
                "is not a PEM certificate",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "cannot be used",
            ),
        ] {
            let e = read_ca(pem.as_bytes(), "ca.pem").expect_err(pem);
            assert!(matches!(e, NetError::TrustedCa(_)), "{e:?}");
            assert!(e.to_string().contains(why), "{pem:?}: {e}");
            assert!(e.to_string().contains("ca.pem"), "{e}");
        }
    }
}
