//! A blocking transport for native shells (feature `native`): registers and deletes a space
//! over HTTP and runs sync rounds over the server's WebSocket with `tungstenite` (deleting old
//! document generations happens inside a round, on the WebSocket). Plain `http://` / `ws://`
//! only for now (TLS is a follow-up; put the server behind a TLS proxy and use a VPN or
//! loopback meanwhile).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use nexus_store::Store;
use nexus_sync_protocol::{ServerMessage, SpaceId, Token, routes};
use tungstenite::{Message, WebSocket};

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
    /// The round did not finish in time.
    #[error("sync did not finish within {0:?}")]
    Timeout(Duration),
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

/// One HTTP/1.1 request to the server; returns the status and the body.
fn http_request(
    server: &str,
    method: &str,
    path: &str,
    token: &Token,
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
        token.expose(),
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
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Ok((status, body))
}

/// Registers the client's space with its server (`POST /v1/spaces`); fine if it exists with
/// the same token.
pub fn register_space(client: &SyncClient, timeout: Duration) -> Result<(), NetError> {
    let body = serde_json::to_string(&nexus_sync_protocol::http::CreateSpace {
        space: client.keys().space().clone(),
    })
    .expect("serializes");
    let (status, body) = http_request(
        &client.config().server,
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
        _ => Err(NetError::Refused(format!("HTTP {status}: {body}"))),
    }
}

/// Deletes a space with everything the server keeps of it (`DELETE /v1/spaces/{space}`).
/// Returns `false` when the server has no such space for this token (deleted already, by
/// another device or an earlier attempt).
pub fn delete_space(
    server: &str,
    space: &SpaceId,
    token: &Token,
    timeout: Duration,
) -> Result<bool, NetError> {
    let (status, body) = http_request(
        server,
        "DELETE",
        &routes::space(space),
        token,
        None,
        timeout,
    )?;
    match status {
        204 | 200 => Ok(true),
        401 | 404 => Ok(false),
        _ => Err(NetError::Refused(format!("HTTP {status}: {body}"))),
    }
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
    let result = exchange(client, store, timeout, &mut report);
    client.disconnected();
    client.save(store)?;
    report.pending = client.pending();
    report.errors.extend(client.take_errors());
    result.map(|()| report)
}

fn exchange(
    client: &mut SyncClient,
    store: &dyn Store,
    timeout: Duration,
    report: &mut Report,
) -> Result<(), NetError> {
    let server = client.config().server.clone();
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
