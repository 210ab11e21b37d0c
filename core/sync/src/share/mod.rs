//! Sharing one companion with another person.
//!
//! **Owner.** [`SyncClient::plan_share`] builds a [`ShareCode`] for a companion's document:
//! the document's id and name, its key of the current epoch (a [`DocKeys`]: it opens that
//! document and nothing else), and a fresh grant token. The transport registers the grant with
//! the server (read or read-write access to that one document, see `nexus-sync-protocol`),
//! then [`SyncClient::record_share`] lists it in the space document's `shares` collection, so
//! every device of the owner sees it and can end it ([`SyncClient::end_share`], after the
//! grant is deleted). Conversations are never shared: they are other documents.
//!
//! **Key rotation ends shares.** Revoking a device replaces the space token keeping only the
//! remaining devices' grants, so share grants are deleted, and the new epoch's key is never
//! sent to recipients. That is deliberate: a revoked device knew the space document (the
//! shares, their documents) and could have kept a share's token and key; a share that
//! survived the rotation would go on feeding it the shared companion. [`ShareInfo::status`]
//! shows such shares as [`ShareStatus::Rotated`]; the owner shares again if they wish.
//!
//! **Recipient.** A [`ShareClient`] is one share on the recipient's device: the grant token,
//! the document keys, the one document (a [`Replica`] of its own) and a [`Session`], all kept
//! in the store's sync state under `share/<space>/<doc>/`, apart from the device's own space
//! (which may or may not exist). Received changes are applied to the store by the same
//! mapping as the owner's own devices use, so the companion, its persona and memories appear
//! in the recipient's store. A read-only share never pushes anything (the recipient's local
//! edits stay on their device); a read-write share captures the companion from the store and
//! pushes the recipient's edits to the owner's document (a companion's name that the
//! recipient's store changed to settle a clash with one of their own companions is not sent
//! back). When the server refuses the grant (unshared, or the owner's key was rotated) the
//! share is marked ended and the recipient keeps what they had.

mod code;
#[cfg(feature = "native")]
pub mod net;

use std::collections::BTreeMap;

use automerge::ActorId;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nexus_common::CompanionId;
use nexus_store::{Store, StoreError};
use nexus_sync_protocol::{
    BlobKind, ClientMessage, DocId, MAX_CHANGE_BYTES, MAX_SNAPSHOT_BYTES, ServerMessage, SpaceId,
    Token,
};
use serde::{Deserialize, Serialize};

pub use code::{
    MAX_LABEL_BYTES, SHARE_MARK, SHARE_URI_PREFIX, SHARE_VERSION, ShareCode, ShareError,
};
/// Read, or read and write (the protocol's grant access).
pub use nexus_sync_protocol::Access;

use crate::client::DEFAULT_SNAPSHOT_EVERY;
use crate::crypto::{DocKeys, random_bytes};
use crate::doc::{DocName, Field, Record};
use crate::replica::Replica;
use crate::session::{Event, Session, SessionState};
use crate::{Result, SyncClient, SyncError};

/// Prefix of every sync state key of shares received by this device.
pub const SHARE_STATE_PREFIX: &str = "share/";
/// Collection of the space document listing the shares.
const SHARES: &str = "shares";

fn now_ms() -> i64 {
    use nexus_common::Clock as _;
    nexus_common::SystemClock.now().0
}

fn access_str(access: Access) -> &'static str {
    match access {
        Access::Read => "read",
        Access::ReadWrite => "read_write",
    }
}

/// Whether a share still works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareStatus {
    /// The recipient receives changes (and may send them, with write access).
    Active,
    /// Ended by `unshare`.
    Unshared,
    /// Ended by a key rotation (a device of the space was revoked).
    Rotated,
    /// Ended because forgetting started the companion's document over under a new id (the
    /// shared document was deleted on the server).
    StartedOver,
}

/// A share of one of the owner's companions, as listed in the space document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShareInfo {
    /// The grant's id on the server (also the share's id).
    pub id: String,
    /// The companion's id.
    pub companion_id: String,
    /// The companion's name when it was shared.
    pub companion: String,
    /// Read, or read and write.
    pub access: Access,
    /// The key epoch it was made in.
    pub epoch: u32,
    /// When it was made (ms since the Unix epoch).
    pub created_at: Option<i64>,
    /// The device that made it.
    pub created_by: Option<String>,
    /// When it was ended by `unshare`.
    pub ended_at: Option<i64>,
    /// Whether it still works.
    pub status: ShareStatus,
}

impl SyncClient {
    /// The shares of this space's companions (from the space document as this device knows
    /// it), oldest first.
    pub fn shares(&self) -> Vec<ShareInfo> {
        let epoch = self.keys.epoch();
        let Some(view) = self.replica.view(&self.keys, &DocName::Space) else {
            return Vec::new();
        };
        let mut out: Vec<ShareInfo> = view
            .collection(SHARES)
            .iter()
            .filter_map(|(id, r)| {
                let doc: DocName = r.get("doc").and_then(Field::as_str)?.parse().ok()?;
                let DocName::Companion(companion_id) = doc else {
                    return None;
                };
                let share_epoch = r
                    .get("epoch")
                    .and_then(Field::as_i64)
                    .and_then(|e| u32::try_from(e).ok())?;
                let ended_at = r.get("ended_at").and_then(Field::as_i64);
                let shared_id = r.get("doc_id").and_then(Field::as_str);
                let current_id = self.replica.current_id(&self.keys, &doc);
                let status = match ended_at {
                    Some(_) => ShareStatus::Unshared,
                    None if share_epoch < epoch => ShareStatus::Rotated,
                    None if shared_id.is_some_and(|id| id != current_id.as_str()) => {
                        ShareStatus::StartedOver
                    }
                    None => ShareStatus::Active,
                };
                Some(ShareInfo {
                    id: id.clone(),
                    companion_id: companion_id.to_string(),
                    companion: r
                        .get("companion")
                        .and_then(Field::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    access: match r.get("access").and_then(Field::as_str) {
                        Some("read_write") => Access::ReadWrite,
                        _ => Access::Read,
                    },
                    epoch: share_epoch,
                    created_at: r.get("created_at").and_then(Field::as_i64),
                    created_by: r
                        .get("created_by")
                        .and_then(Field::as_str)
                        .map(str::to_owned),
                    ended_at,
                    status,
                })
            })
            .collect();
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        out
    }

    /// Prepares sharing companion `companion` (called `label`) with `access`: the share code
    /// with a fresh grant token and the document's key of the current epoch. Nothing changes
    /// until the transport has registered the grant and [`SyncClient::record_share`] is called.
    /// The companion's document must be on this device (sync first).
    pub fn plan_share(
        &self,
        companion: CompanionId,
        label: &str,
        access: Access,
    ) -> Result<ShareCode> {
        let name = DocName::Companion(companion);
        let synced = self.replica.view(&self.keys, &name).is_some_and(|v| {
            let profile = v.record("profile");
            !profile.is_empty() && profile.get("deleted") != Some(&Field::Bool(true))
        });
        if !synced {
            return Err(SyncError::Schema(format!(
                "{label} is not in the synced documents yet: sync first"
            )));
        }
        // Forgetting may have started the document over: share its current generation.
        let current = self.replica.current_name(&self.keys, &name);
        let keys = self.keys.doc_keys(&current.to_string());
        let key = *keys
            .key(keys.epoch())
            .expect("doc_keys holds the current epoch");
        Ok(ShareCode {
            server: self.config().server.clone(),
            space: self.keys.space().clone(),
            doc: keys.doc().clone(),
            name,
            generation: current.nonce.clone().map(|n| (current.number, n)),
            label: label.to_owned(),
            epoch: keys.epoch(),
            key,
            token: Token::from_bytes(random_bytes()?),
            access,
        })
    }

    /// Lists a share whose grant the server created (id `grant`) in the space document.
    pub fn record_share(&mut self, code: &ShareCode, grant: &str) -> Result<()> {
        let mut record: Record = [
            ("doc".to_owned(), Field::Str(code.name.to_string())),
            ("doc_id".to_owned(), Field::Str(code.doc.to_string())),
            ("companion".to_owned(), Field::Str(code.label.clone())),
            (
                "access".to_owned(),
                Field::Str(access_str(code.access).to_owned()),
            ),
            ("epoch".to_owned(), Field::Int(i64::from(code.epoch))),
            ("created_at".to_owned(), Field::Int(now_ms())),
        ]
        .into_iter()
        .collect();
        if let Ok(device) = self.device_id() {
            record.insert("created_by".to_owned(), Field::Str(device.to_string()));
        }
        self.edit_space(|w| w.put_entity(SHARES, grant, &record))
    }

    /// Marks share `id` as ended (after its grant was deleted on the server).
    pub fn end_share(&mut self, id: &str) -> Result<()> {
        if !self.shares().iter().any(|s| s.id == id) {
            return Err(SyncError::Schema(format!("no share {id} in this space")));
        }
        let mark: Record = [("ended_at".to_owned(), Field::Int(now_ms()))]
            .into_iter()
            .collect();
        self.edit_space(|w| w.update_entity(SHARES, id, &mark))
    }

    fn edit_space(
        &mut self,
        f: impl FnOnce(&mut crate::doc::Writer<'_>) -> Result<()>,
    ) -> Result<()> {
        let change = self.replica.edit(&self.keys, &DocName::Space, f)?;
        if let Some((doc, bytes)) = change {
            self.push_change(doc, &bytes)?;
        }
        Ok(())
    }
}

/// What the recipient's device remembers about one share (in its sync state).
#[derive(Clone, Serialize, Deserialize)]
struct ShareConfig {
    server: String,
    space: SpaceId,
    doc: DocId,
    /// The document's name (`companion/<uuid>`).
    name: String,
    /// The companion's name when it was shared.
    label: String,
    access: Access,
    /// The grant's token.
    token: Token,
    /// The document's key per epoch, base64url.
    keys: BTreeMap<u32, String>,
    joined_at: i64,
    /// When the server refused the grant (the share ended).
    #[serde(default)]
    ended_at: Option<i64>,
    snapshot_every: u64,
}

/// A share received by this device, for listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceivedShare {
    /// The companion's id.
    pub companion_id: String,
    /// The companion's name when it was shared.
    pub companion: String,
    /// Read, or read and write.
    pub access: Access,
    /// The owner's server.
    pub server: String,
    /// The owner's space.
    pub space: String,
    /// When this device joined it.
    pub joined_at: i64,
    /// When the owner's server stopped accepting it (unshared, or the owner's key changed).
    pub ended_at: Option<i64>,
}

impl From<&ShareConfig> for ReceivedShare {
    fn from(c: &ShareConfig) -> Self {
        Self {
            companion_id: c
                .name
                .strip_prefix("companion/")
                .unwrap_or(&c.name)
                .to_owned(),
            companion: c.label.clone(),
            access: c.access,
            server: c.server.clone(),
            space: c.space.to_string(),
            joined_at: c.joined_at,
            ended_at: c.ended_at,
        }
    }
}

fn state_prefix(space: &SpaceId, doc: &DocId) -> String {
    format!("{SHARE_STATE_PREFIX}{space}/{doc}/")
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// One companion shared with this device by someone else. See the module documentation.
#[derive(Debug)]
pub struct ShareClient {
    config: ShareConfig,
    keys: DocKeys,
    name: DocName,
    companion: CompanionId,
    replica: Replica,
    session: Session,
    errors: Vec<String>,
}

impl std::fmt::Debug for ShareConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareConfig")
            .field("server", &self.server)
            .field("space", &self.space)
            .field("doc", &self.doc)
            .field("name", &self.name)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl ShareClient {
    fn build(config: ShareConfig, replica: Replica, state: SessionState) -> Result<Self> {
        let damaged =
            || SyncError::Schema("the stored keys of a shared companion are damaged".into());
        let name: DocName = config.name.parse::<crate::doc::GenName>()?.name;
        let DocName::Companion(companion) = name else {
            return Err(SyncError::Schema(format!(
                "only companions are shared, not {}",
                config.name
            )));
        };
        let mut keys: Option<DocKeys> = None;
        for (epoch, key) in &config.keys {
            let key: [u8; 32] = URL_SAFE_NO_PAD
                .decode(key)
                .ok()
                .and_then(|k| k.try_into().ok())
                .ok_or_else(damaged)?;
            match keys.as_mut() {
                Some(k) => k.add_epoch(*epoch, key),
                None => {
                    keys = Some(DocKeys::new(
                        config.space.clone(),
                        config.doc.clone(),
                        &config.name,
                        *epoch,
                        key,
                    ));
                }
            }
        }
        let keys = keys.ok_or_else(damaged)?;
        let session = Session::new(
            config.space.clone(),
            config.token.clone(),
            state,
            config.snapshot_every,
        );
        Ok(Self {
            config,
            keys,
            name,
            companion,
            replica,
            session,
            errors: Vec::new(),
        })
    }

    fn prefix(&self) -> String {
        state_prefix(&self.config.space, &self.config.doc)
    }

    /// Joins the share of `code` on this device (saved in the store). Nothing is fetched
    /// until the first sync. Joining a share this device already has fails.
    pub fn join(store: &dyn Store, code: &ShareCode) -> Result<Self> {
        let prefix = state_prefix(&code.space, &code.doc);
        if store.sync_value(&format!("{prefix}config"))?.is_some() {
            return Err(SyncError::Schema(format!(
                "{} is already shared with this device",
                code.label
            )));
        }
        let config = ShareConfig {
            server: code.server.clone(),
            space: code.space.clone(),
            doc: code.doc.clone(),
            name: code.document_name(),
            label: code.label.clone(),
            access: code.access,
            token: code.token.clone(),
            keys: BTreeMap::from([(code.epoch, b64(&code.key))]),
            joined_at: now_ms(),
            ended_at: None,
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
        };
        let replica = Replica::new_under(
            ActorId::from(random_bytes::<16>()?),
            &format!("{prefix}doc/"),
        );
        let mut client = Self::build(config, replica, SessionState::default())?;
        client.save(store)?;
        Ok(client)
    }

    /// The prefixes and configurations of the shares saved on this device.
    fn configs(store: &dyn Store) -> Result<Vec<(String, ShareConfig)>> {
        let mut out = Vec::new();
        for key in store.sync_keys(SHARE_STATE_PREFIX)? {
            // `share/<space>/<doc>/config` only (not a document key ending in "config").
            let Some(prefix) = key.strip_suffix("config") else {
                continue;
            };
            if prefix.matches('/').count() != 3 {
                continue;
            }
            let Some(config) = store.sync_value(&key)? else {
                continue;
            };
            let config: ShareConfig = serde_json::from_slice(&config)
                .map_err(|e| SyncError::Schema(format!("the stored share settings: {e}")))?;
            out.push((prefix.to_owned(), config));
        }
        Ok(out)
    }

    /// The shares saved on this device, without loading their documents.
    pub fn received(store: &dyn Store) -> Result<Vec<ReceivedShare>> {
        Ok(Self::configs(store)?
            .into_iter()
            .map(|(_, c)| ReceivedShare::from(&c))
            .collect())
    }

    /// Every share saved on this device.
    pub fn open_all(store: &dyn Store) -> Result<Vec<Self>> {
        let mut out = Vec::new();
        for (prefix, config) in Self::configs(store)? {
            let state = match store.sync_value(&format!("{prefix}session"))? {
                Some(state) => serde_json::from_slice(&state)
                    .map_err(|e| SyncError::Schema(format!("the stored share session: {e}")))?,
                None => SessionState::default(),
            };
            let replica = Replica::load_under(
                store,
                ActorId::from(random_bytes::<16>()?),
                &format!("{prefix}doc/"),
            )?;
            out.push(Self::build(config, replica, state)?);
        }
        Ok(out)
    }

    /// What is shown about the share.
    pub fn info(&self) -> ReceivedShare {
        ReceivedShare::from(&self.config)
    }

    /// The shared companion.
    pub fn companion_id(&self) -> CompanionId {
        self.companion
    }

    /// The companion's name when it was shared.
    pub fn label(&self) -> &str {
        &self.config.label
    }

    /// Read, or read and write.
    pub fn access(&self) -> Access {
        self.config.access
    }

    /// The owner's server.
    pub fn server(&self) -> &str {
        &self.config.server
    }

    /// The shared document's keys.
    pub fn keys(&self) -> &DocKeys {
        &self.keys
    }

    /// Whether the owner's server stopped accepting the share.
    pub fn ended(&self) -> bool {
        self.config.ended_at.is_some()
    }

    /// Records that the server refused the share: it ended (nothing is deleted).
    pub fn end(&mut self) {
        self.config.ended_at.get_or_insert_with(now_ms);
    }

    /// Drops the share from this device: its keys, state and document (the store keeps the
    /// companion as it is).
    pub fn leave(self, store: &dyn Store) -> Result<()> {
        let gone: Vec<(String, Option<Vec<u8>>)> = store
            .sync_keys(&self.prefix())?
            .into_iter()
            .map(|k| (k, None))
            .collect();
        Ok(store.set_sync_values(&gone)?)
    }

    /// Saves the document, the cursor and queued changes, in one transaction.
    pub fn save(&mut self, store: &dyn Store) -> Result<()> {
        let prefix = self.prefix();
        let mut values = self.replica.dirty_values();
        values.push((
            format!("{prefix}config"),
            Some(serde_json::to_vec(&self.config).expect("config serializes")),
        ));
        values.push((
            format!("{prefix}session"),
            Some(serde_json::to_vec(self.session.state()).expect("state serializes")),
        ));
        Ok(store.set_sync_values(&values)?)
    }

    /// With write access: captures the recipient's edits of the companion from the store into
    /// the document and queues them. Read-only shares never queue anything. Returns how many
    /// documents changed (0 or 1).
    pub fn sync_local(&mut self, store: &dyn Store) -> Result<usize> {
        if self.config.access != Access::ReadWrite || self.ended() {
            return Ok(0);
        }
        // Only once the document is here and in the store: capturing before that would
        // describe the companion as deleted.
        let Some(view) = self.replica.view(&self.keys, &self.name) else {
            return Ok(0);
        };
        if self.replica.waiting() > 0 {
            return Ok(0);
        }
        // A companion deleted on this device is not deleted for the owner.
        match store.companion(self.companion_id()) {
            Ok(_) => {}
            Err(StoreError::NotFound { .. }) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
        let name = self.name;
        let change = self.replica.edit(&self.keys, &name, |w| {
            crate::mapping::capture_shared(store, &name, &view, w)
        })?;
        let Some((doc, bytes)) = change else {
            return Ok(0);
        };
        if bytes.len() + 64 > MAX_CHANGE_BYTES {
            self.session.force_snapshot(&doc);
        } else {
            let blob = self.keys.seal(&doc, BlobKind::Change, &bytes)?;
            self.session.push(doc, blob);
        }
        Ok(1)
    }

    /// A transport is connected: the next [`ShareClient::outgoing`] starts with Hello.
    pub fn connected(&mut self) {
        self.session.connected();
    }

    /// The transport is gone.
    pub fn disconnected(&mut self) {
        self.session.disconnected();
    }

    /// Messages to send now, in order.
    pub fn outgoing(&mut self) -> Vec<ClientMessage> {
        self.session.outgoing()
    }

    /// Live, nothing queued, the document at the server's head.
    pub fn caught_up(&self) -> bool {
        self.session.caught_up()
    }

    /// Whether lost messages left a gap: reconnect to fetch them again.
    pub fn needs_resync(&self) -> bool {
        self.session.needs_resync()
    }

    /// Unacknowledged changes.
    pub fn pending(&self) -> usize {
        self.session.pending()
    }

    fn error(&mut self, message: String) {
        tracing::warn!("sync (shared {}): {message}", self.config.label);
        self.session.set_error(message.clone());
        self.errors.push(message);
    }

    /// Errors since the last call.
    pub fn take_errors(&mut self) -> Vec<String> {
        std::mem::take(&mut self.errors)
    }

    /// Handles one server message: entries of the shared document are decrypted and applied
    /// to the document and the store; with write access, snapshots that are due are queued.
    pub fn handle(&mut self, store: &dyn Store, message: ServerMessage) -> Result<()> {
        if let ServerMessage::Welcome { heads, .. } = &message
            && !heads.contains_key(&self.config.doc)
        {
            // The grant still names the document, but the server no longer has it: the owner
            // forgot something and the companion's document started over under a new id (or
            // the owner deleted it). The share has ended; what this device has stays.
            self.end();
        }
        let mut items = Vec::new();
        for event in self.session.receive(message) {
            match event {
                Event::Apply { doc, entry } if doc != self.config.doc => {
                    // The server sends a grant its documents only; anything else is ignored.
                    self.error(format!(
                        "entry {} of a document that is not shared",
                        entry.seq
                    ));
                    self.session.applied(&doc, &entry);
                }
                Event::Apply { doc, entry } => {
                    match self.keys.open(&doc, entry.kind, &entry.blob) {
                        Ok(bytes) => items.push((entry, bytes)),
                        Err(e) => {
                            self.error(format!("entry {}: {e}", entry.seq));
                            self.session.applied(&doc, &entry);
                        }
                    }
                }
                Event::Failed { message, code, .. } => {
                    self.error(format!("server: {message} ({code:?})"));
                }
                Event::Welcome | Event::Acked { .. } => {}
            }
        }
        if !items.is_empty() {
            let doc = self.config.doc.clone();
            let chunks: Vec<&[u8]> = items.iter().map(|(_, b)| b.as_slice()).collect();
            match self.replica.receive_all(store, &self.keys, &doc, &chunks) {
                Ok(()) => {}
                Err(e @ SyncError::Store(_)) => return Err(e),
                Err(other) => self.error(format!("the shared document: {other}")),
            }
            for (entry, _) in &items {
                self.session.applied(&doc, entry);
            }
        }
        self.replica.retry(store)?;
        if self.config.access == Access::ReadWrite {
            for doc in self.session.snapshots_due() {
                if let Some(bytes) = self.replica.snapshot(&doc)
                    && bytes.len() + 64 <= MAX_SNAPSHOT_BYTES
                {
                    let blob = self.keys.seal(&doc, BlobKind::Snapshot, &bytes)?;
                    self.session.snapshot(doc, blob);
                }
            }
        }
        Ok(())
    }
}
