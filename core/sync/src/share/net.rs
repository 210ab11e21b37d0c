//! Sharing over the network (feature `native`): the owner creates and deletes grants over
//! HTTP; the recipient syncs each share over the server's WebSocket with the grant token.

use std::time::Duration;

use nexus_common::CompanionId;
use nexus_store::Store;
use nexus_sync_protocol::{Access, ServerMessage, http, routes};

use super::{ShareClient, ShareCode, ShareStatus};
use crate::net::{NetError, Peer, Report, exchange, http_request, refused, sync_once};
use crate::{SyncClient, SyncError};

impl Peer for ShareClient {
    fn server(&self) -> String {
        ShareClient::server(self).to_owned()
    }
    /// A share code carries no CA: a recipient on a server with a private CA trusts it through
    /// `NEXUS_SYNC_CA`.
    fn tls_ca(&self) -> Option<String> {
        None
    }
    fn connected(&mut self) {
        ShareClient::connected(self);
    }
    fn outgoing(&mut self) -> Vec<nexus_sync_protocol::ClientMessage> {
        ShareClient::outgoing(self)
    }
    fn caught_up(&self) -> bool {
        ShareClient::caught_up(self)
    }
    fn needs_resync(&self) -> bool {
        ShareClient::needs_resync(self)
    }
    fn handle(&mut self, store: &dyn Store, message: ServerMessage) -> Result<(), SyncError> {
        ShareClient::handle(self, store, message)
    }
}

/// Shares companion `companion` (called `label`) of the owner's space with `access`:
///
/// 1. syncs, so the companion's document is on the server and the list of shares is current;
/// 2. uploads a snapshot of the document under the current key epoch (the recipient has only
///    that epoch's key: the server hands a new reader the latest snapshot and what follows);
/// 3. registers a grant (`POST /v1/spaces/{space}/grants` with the space token) for that
///    document alone, with a fresh token;
/// 4. lists the share in the space document and syncs it to the owner's other devices.
///
/// Returns the share code (it holds the document's key and the grant token: whoever has it
/// can read the companion) and the share's id.
pub fn share_companion(
    client: &mut SyncClient,
    store: &dyn Store,
    companion: CompanionId,
    label: &str,
    access: Access,
    timeout: Duration,
) -> Result<(ShareCode, String), NetError> {
    sync_once(client, store, timeout)?;
    let code = client.plan_share(companion, label, access)?;
    client.session.force_snapshot(&code.doc);
    sync_once(client, store, timeout)?;
    let config = client.config().clone();
    let body = serde_json::to_string(&http::CreateGrant {
        token: code.token.clone(),
        docs: vec![code.doc.clone()],
        access,
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
    if status != 201 {
        return Err(refused(status, &text));
    }
    let created: http::GrantCreated = serde_json::from_str(&text)
        .map_err(|e| NetError::Refused(format!("malformed answer: {e}")))?;
    client.record_share(&code, &created.id)?;
    client.save(store)?;
    // The grant works already; telling the owner's other devices can wait for a later round.
    if let Err(e) = sync_once(client, store, timeout) {
        tracing::warn!("sync: the new share is listed on this device only for now: {e}");
    }
    Ok((code, created.id))
}

/// Ends share `id`: deletes its grant on the server (the recipient's next sync is refused,
/// and live sessions are closed), marks it ended in the space document and syncs. A grant the
/// server no longer has (a key rotation deleted it) only gets marked.
pub fn unshare(
    client: &mut SyncClient,
    store: &dyn Store,
    id: &str,
    timeout: Duration,
) -> Result<(), NetError> {
    let share = client
        .shares()
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| SyncError::Schema(format!("no share {id} in this space")))?;
    if share.status == ShareStatus::Active {
        let config = client.config().clone();
        let path = format!("{}/{id}", routes::grants(client.keys().space()));
        let (status, text) = http_request(
            &config.server,
            config.tls_ca.as_deref(),
            "DELETE",
            &path,
            client.keys().token(),
            None,
            timeout,
        )?;
        match status {
            200 | 204 | 404 => {}
            _ => return Err(refused(status, &text)),
        }
    }
    if share.ended_at.is_none() {
        client.end_share(id)?;
        client.save(store)?;
    }
    sync_once(client, store, timeout).map(|_| ())
}

/// One sync round of a share: captures the recipient's edits (read-write shares only),
/// connects with the grant token, exchanges messages until caught up, saves. A refused grant
/// ends the share ([`NetError::NoLongerShared`]); what the recipient has stays.
pub fn sync_share(
    share: &mut ShareClient,
    store: &dyn Store,
    timeout: Duration,
) -> Result<Report, NetError> {
    if share.ended() {
        return Err(NetError::NoLongerShared(share.label().to_owned()));
    }
    let mut report = Report {
        local_changes: share.sync_local(store)?,
        ..Report::default()
    };
    share.save(store)?;
    let result = exchange(share, store, timeout, &mut report);
    share.disconnected();
    let result = match result {
        Err(NetError::Unauthorized) => {
            share.end();
            Err(NetError::NoLongerShared(share.label().to_owned()))
        }
        // The shared document is gone from the server (see `ShareClient::handle`).
        Ok(()) if share.ended() => Err(NetError::NoLongerShared(share.label().to_owned())),
        other => other,
    };
    share.save(store)?;
    report.pending = share.pending();
    report.errors.extend(share.take_errors());
    result.map(|()| report)
}
