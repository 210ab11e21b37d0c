//! A blocking transport for native shells (feature `native`): registers a space over HTTP and
//! runs sync rounds over the server's WebSocket with `tungstenite`. Plain `http://` / `ws://`
//! only for now (TLS is a follow-up; put the server behind a TLS proxy and use a VPN or
//! loopback meanwhile).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use nexus_store::Store;
use nexus_sync_protocol::{
    Access, ErrorCode, MAX_ENTRIES_PER_MESSAGE, ServerMessage, Token, http, routes,
};
use tungstenite::{Message, WebSocket};

use crate::device::DeviceId;
use crate::{SyncClient, SyncError};

/// What went wrong on the network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The server address cannot be used.
    #[error("bad server address {0:?}: {1}")]
    Address(String, String),
    /// Could not reach the server or the connection broke.
    #[error("cannot reach the sync server {0}: {1}")]
    Unreachable(String, String),
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
        "the sync server no longer accepts this device: it was removed from the space on another device. Run `nexus sync disable`, then pair it again if that was a mistake"
    )]
    Revoked,
    /// The owner of a shared companion no longer shares it (the server refuses the grant:
    /// they unshared it, or replaced their key after removing a device).
    #[error(
        "{0} is no longer shared with you: its owner stopped sharing it (or replaced their keys). You keep what you had; `nexus companion leave-share {0}` removes the share from this device"
    )]
    NoLongerShared(String),
    /// Sync itself failed.
    #[error(transparent)]
    Sync(#[from] SyncError),
}

/// Host, port and whether the address used TLS.
fn authority(server: &str) -> Result<(String, u16), NetError> {
    let bad = |why: &str| NetError::Address(server.to_owned(), why.to_owned());
    let (scheme, rest) = server.split_once("://").ok_or_else(|| bad("no scheme"))?;
    match scheme {
        "http" | "ws" => {}
        "https" | "wss" => {
            return Err(bad(
                "TLS is not supported by this build yet: use http:// (loopback, VPN or a TLS proxy)",
            ));
        }
        _ => return Err(bad("the scheme must be http:// or ws://")),
    }
    let host_port = rest.split('/').next().unwrap_or_default();
    if host_port.is_empty() {
        return Err(bad("no host"));
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host_port.starts_with('[') => {
            let port = port.parse().map_err(|_| bad("bad port"))?;
            Ok((host.to_owned(), port))
        }
        _ => Ok((host_port.to_owned(), 80)),
    }
}

fn connect_tcp(server: &str, timeout: Duration) -> Result<(TcpStream, String), NetError> {
    let (host, port) = authority(server)?;
    let unreachable = |e: std::io::Error| NetError::Unreachable(server.to_owned(), e.to_string());
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(unreachable)?
        .next()
        .ok_or_else(|| NetError::Unreachable(server.to_owned(), "no address".into()))?;
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(unreachable)?;
    stream.set_nodelay(true).map_err(unreachable)?;
    Ok((stream, format!("{host}:{port}")))
}

/// The server refused the space token of a device that never got in.
const UNKNOWN_KEY: &str = "the sync server refused this space's key: the pairing code is wrong or outdated, or this device was removed from the space";

/// One HTTP request with a bearer token and an optional JSON body: status and body.
pub(crate) fn http_request(
    server: &str,
    method: &str,
    path: &str,
    bearer: &Token,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), NetError> {
    let (mut stream, host) = connect_tcp(server, timeout)?;
    let io = |e: std::io::Error| NetError::Unreachable(server.to_owned(), e.to_string());
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    let body = body.unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        bearer.expose(),
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(io)?;
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
    let server = client.config().server.clone();
    let body = serde_json::to_string(&http::CreateSpace {
        space: client.keys().space().clone(),
    })
    .expect("serializes");
    let (status, text) = http_request(
        &server,
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

/// Registers this device's grant with the server (a token of its own that may read the
/// keyring: how it learns a new key after a rotation), once.
pub fn register_device(client: &mut SyncClient, timeout: Duration) -> Result<(), NetError> {
    if client.device_grant().is_some() {
        return Ok(());
    }
    let server = client.config().server.clone();
    let body = serde_json::to_string(&http::CreateGrant {
        token: client.device_token()?,
        docs: vec![client.keyring()],
        access: Access::Read,
    })
    .expect("serializes");
    let (status, text) = http_request(
        &server,
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
    let server = client.config().server.clone();
    let space = client.keys().space().clone();
    let body = serde_json::to_string(&http::PushChange {
        blob: rotation.record.clone(),
    })
    .expect("serializes");
    let (status, text) = http_request(
        &server,
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
        &server,
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
    let server = client.config().server.clone();
    let space = client.keys().space().clone();
    let token = client.device_token()?;
    let mut entries = Vec::new();
    let mut since = 0;
    loop {
        let path = format!(
            "{}?since={since}&limit={MAX_ENTRIES_PER_MESSAGE}",
            routes::entries(&space, &client.keyring())
        );
        let (status, text) = http_request(&server, "GET", &path, &token, None, timeout)?;
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
    let base = base
        .strip_prefix("http://")
        .map_or_else(|| base.to_owned(), |rest| format!("ws://{rest}"));
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
            Err(e @ (NetError::Revoked | NetError::Unreachable(..))) => return Err(e),
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
    let (stream, _) = connect_tcp(&server, timeout)?;
    let broken = |e: tungstenite::Error| NetError::Unreachable(server.clone(), e.to_string());
    let (mut ws, _): (WebSocket<TcpStream>, _) = tungstenite::client(ws_url(&server), stream)
        .map_err(|e| NetError::Unreachable(server.clone(), e.to_string()))?;
    ws.get_mut()
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

    #[test]
    fn addresses() {
        assert_eq!(
            authority("http://127.0.0.1:8787").expect("ok"),
            ("127.0.0.1".into(), 8787)
        );
        assert_eq!(
            authority("ws://example.org/x").expect("ok"),
            ("example.org".into(), 80)
        );
        assert!(authority("https://example.org").is_err());
        assert!(authority("example.org").is_err());
        assert_eq!(ws_url("http://h:1/"), "ws://h:1/v1/ws");
        assert_eq!(ws_url("ws://h:1"), "ws://h:1/v1/ws");
    }
}
