//! [`SyncClient`]: one device in one space. It joins the pieces (keys, documents, session)
//! and keeps them in the store's sync state; a transport (WebSocket, the in-memory relay of the
//! tests) only carries its messages.

use std::collections::BTreeMap;
use std::fmt;

use automerge::ActorId;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nexus_store::Store;
use nexus_sync_protocol::{
    Blob, BlobKind, ClientMessage, DocId, Entry, MAX_CHANGE_BYTES, MAX_SNAPSHOT_BYTES,
    ServerMessage, SpaceId, Token,
};
use serde::{Deserialize, Serialize};

use crate::crypto::{SpaceKeys, SpaceSecret, random_bytes};
use crate::device::{DeviceId, DeviceKey, RotationRecord};
use crate::doc::{DocName, Field, Record};
use crate::pairing::PairingCode;
use crate::replica::{Action, Replica};
use crate::session::{Event, Phase, Session, SessionState};
use crate::{Result, SyncError};

/// Sync state key of the configuration.
const CONFIG_KEY: &str = "config";
/// Sync state key of the session state.
const SESSION_KEY: &str = "session";
/// Default number of entries of a document between two snapshots.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 200;
/// Name of the document holding key rotation records (not an Automerge document: each entry
/// is one [`RotationRecord`], readable by device grants).
pub const KEYRING: &str = "keyring";
/// Collection of the space document listing the devices.
const DEVICES: &str = "devices";
/// Collection of the space document holding the key epochs' secrets.
const EPOCHS: &str = "epochs";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64<const N: usize>(s: &str) -> Option<[u8; N]> {
    URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|b| <[u8; N]>::try_from(b).ok())
}

/// This device's identity in its space (see [`crate::device`]).
#[derive(Clone, Serialize, Deserialize)]
struct DeviceConfig {
    /// Device id, hex.
    id: String,
    /// The seed of its key pair, base64url.
    seed: String,
    /// The token of its device grant, base64url.
    token: String,
    /// Its name for people.
    name: String,
    /// The grant's id on the server, once registered.
    #[serde(default)]
    grant: Option<String>,
}

impl DeviceConfig {
    fn generate() -> Result<Self> {
        let id = DeviceId::generate()?;
        let name = format!("device-{}", &id.to_string()[..6]);
        Ok(Self {
            id: id.to_string(),
            seed: b64(DeviceKey::generate()?.seed()),
            token: b64(&random_bytes::<32>()?),
            name,
            grant: None,
        })
    }

    fn id(&self) -> Result<DeviceId> {
        DeviceId::parse(&self.id)
            .ok_or_else(|| SyncError::Schema("the stored device id is damaged".into()))
    }

    fn key(&self) -> Result<DeviceKey> {
        unb64(&self.seed)
            .map(DeviceKey::from_seed)
            .ok_or_else(|| SyncError::Schema("the stored device key is damaged".into()))
    }

    fn token(&self) -> Result<Token> {
        unb64(&self.token)
            .map(Token::from_bytes)
            .ok_or_else(|| SyncError::Schema("the stored device token is damaged".into()))
    }
}

/// A device of the space, as listed in the space document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// Its id (32 hex digits).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Whether it is this device.
    pub this_device: bool,
    /// When it joined (ms since the epoch), if known.
    pub joined_at: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
    /// Whether its device grant is registered with the server.
    pub registered: bool,
    #[serde(skip)]
    public_key: Option<[u8; 32]>,
    #[serde(skip)]
    grant: Option<String>,
}

/// A key rotation prepared by [`SyncClient::plan_rotation`]: what the transport sends (the
/// record to the keyring, then the new token with the grants to keep) before
/// [`SyncClient::commit_rotation`].
#[derive(Debug)]
pub struct Rotation {
    /// The new key epoch.
    pub epoch: u32,
    secret: SpaceSecret,
    /// The keyring document.
    pub keyring: DocId,
    /// The rotation record (push it to the keyring as a change).
    pub record: Blob,
    /// The new space token.
    pub token: Token,
    /// Grants of the remaining devices.
    pub keep_grants: Vec<String>,
    /// The devices revoked.
    pub revoked: Vec<DeviceId>,
}

/// What a device remembers about its space (in the store's sync state; the secret is in it,
/// as in the database of any end-to-end encrypted messenger).
#[derive(Clone, Serialize, Deserialize)]
pub struct SyncConfig {
    /// The server.
    pub server: String,
    /// The space.
    pub space: SpaceId,
    /// The space secret, base64url.
    secret: String,
    /// The current key epoch.
    pub epoch: u32,
    /// The Automerge actor id of this device's first session, hex (later sessions use fresh
    /// ones, see [`SyncClient::open`]).
    actor: String,
    /// Entries between snapshots.
    pub snapshot_every: u64,
    /// PEM certificates to trust for the server's TLS besides the public roots (a private CA
    /// or a self-signed server certificate), see [`SyncClient::set_tls_ca`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<String>,
    /// This device's identity (devices from before device identities get one on open).
    #[serde(default)]
    device: Option<DeviceConfig>,
    /// Secrets of the key epochs after 0 (epoch 0 derives from the space secret), base64url.
    #[serde(default)]
    epoch_secrets: BTreeMap<u32, String>,
}

impl fmt::Debug for SyncConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncConfig")
            .field("server", &self.server)
            .field("space", &self.space)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl SyncConfig {
    fn secret(&self) -> Result<SpaceSecret> {
        let bytes = URL_SAFE_NO_PAD
            .decode(&self.secret)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| SyncError::Schema("the stored space secret is damaged".into()))?;
        Ok(SpaceSecret::from_bytes(bytes))
    }

    fn actor(&self) -> Result<ActorId> {
        ActorId::try_from(self.actor.as_str())
            .map_err(|_| SyncError::Schema("the stored device id is damaged".into()))
    }
}

/// A summary for `nexus sync status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The server.
    pub server: String,
    /// The space.
    pub space: String,
    /// Connection phase.
    pub connected: bool,
    /// Changes waiting for the server's acknowledgement.
    pub pending: usize,
    /// Documents on this device.
    pub documents: usize,
    /// Documents received but waiting for another one (e.g. a conversation for its companion).
    pub waiting: usize,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Heart-rate samples in the journal document.
    pub heart_rate_samples: usize,
    /// Emotion journal entries in the journal document.
    pub journal_readings: usize,
}

/// An entry and its decrypted content.
type Decrypted = (Entry, Vec<u8>);

/// One device in one space. See the crate documentation for the cycle.
#[derive(Debug)]
pub struct SyncClient {
    config: SyncConfig,
    pub(crate) keys: SpaceKeys,
    pub(crate) replica: Replica,
    pub(crate) session: Session,
    errors: Vec<String>,
}

impl SyncClient {
    fn build(mut config: SyncConfig, replica: Replica, state: SessionState) -> Result<Self> {
        let mut keys = SpaceKeys::derive(&config.space, &config.secret()?, 0);
        for (epoch, secret) in &config.epoch_secrets {
            let secret = unb64(secret).map(SpaceSecret::from_bytes).ok_or_else(|| {
                SyncError::Schema(format!("the stored secret of key epoch {epoch} is damaged"))
            })?;
            keys.rotate(&secret, *epoch);
        }
        config.epoch = keys.epoch();
        if config.device.is_none() {
            config.device = Some(DeviceConfig::generate()?);
        }
        let session = Session::new(
            config.space.clone(),
            keys.token().clone(),
            state,
            config.snapshot_every,
        );
        Ok(Self {
            config,
            keys,
            replica,
            session,
            errors: Vec::new(),
        })
    }

    fn fresh(store: &dyn Store, config: SyncConfig) -> Result<Self> {
        let replica = Replica::new(config.actor()?);
        let mut client = Self::build(config, replica, SessionState::default())?;
        client.publish_device()?;
        // A new space or a new membership: forget documents of an earlier one (companions
        // shared with this device by other people stay: they are not this space's; so does a
        // deletion of an earlier space's server copy that is still to be done).
        let old: Vec<(String, Option<Vec<u8>>)> = store
            .sync_keys("")?
            .into_iter()
            .filter(|k| !k.starts_with(crate::share::SHARE_STATE_PREFIX))
            .filter(|k| k != crate::remote::KEY)
            .map(|k| (k, None))
            .collect();
        store.set_sync_values(&old)?;
        client.save(store)?;
        Ok(client)
    }

    /// Creates a new space on this device (the first device): a random space id and secret.
    pub fn create_space(store: &dyn Store, server: &str) -> Result<Self> {
        let secret = SpaceSecret::generate()?;
        let space = SpaceId::from_bytes(random_bytes()?);
        Self::fresh(
            store,
            SyncConfig {
                server: server.to_owned(),
                space,
                secret: URL_SAFE_NO_PAD.encode(secret.expose()),
                epoch: 0,
                actor: ActorId::from(random_bytes::<16>()?).to_hex_string(),
                snapshot_every: DEFAULT_SNAPSHOT_EVERY,
                tls_ca: None,
                device: None,
                epoch_secrets: BTreeMap::new(),
            },
        )
    }

    /// Joins the space of a pairing code (a new device). Local data stays and is merged in.
    pub fn join(store: &dyn Store, code: &PairingCode) -> Result<Self> {
        Self::fresh(
            store,
            SyncConfig {
                server: code.server.clone(),
                space: code.space.clone(),
                secret: URL_SAFE_NO_PAD.encode(code.secret.expose()),
                epoch: code.epoch,
                actor: ActorId::from(random_bytes::<16>()?).to_hex_string(),
                snapshot_every: DEFAULT_SNAPSHOT_EVERY,
                tls_ca: None,
                device: None,
                epoch_secrets: code
                    .epoch_secret
                    .as_ref()
                    .map(|s| BTreeMap::from([(code.epoch, b64(s.expose()))]))
                    .unwrap_or_default(),
            },
        )
    }

    /// The client saved in the store, if sync is enabled.
    pub fn open(store: &dyn Store) -> Result<Option<Self>> {
        let Some(config) = store.sync_value(CONFIG_KEY)? else {
            return Ok(None);
        };
        let config: SyncConfig = serde_json::from_slice(&config)
            .map_err(|e| SyncError::Schema(format!("the stored sync settings: {e}")))?;
        let state = match store.sync_value(SESSION_KEY)? {
            Some(state) => serde_json::from_slice(&state)
                .map_err(|e| SyncError::Schema(format!("the stored sync session: {e}")))?,
            None => SessionState::default(),
        };
        // A fresh Automerge actor for every session: two processes of one device (the chat's
        // background sync and `nexus sync now`) must never write changes as the same actor.
        let replica = Replica::load(store, ActorId::from(random_bytes::<16>()?))?;
        Self::build(config, replica, state).map(Some)
    }

    /// Turns sync off on this device: deletes the configuration and the documents (the store's
    /// data stays, and so do companions other people share with this device and a
    /// [`crate::RemoteDeletion`] still to be done).
    pub fn disable(store: &dyn Store) -> Result<()> {
        let all: Vec<(String, Option<Vec<u8>>)> = store
            .sync_keys("")?
            .into_iter()
            .filter(|k| !k.starts_with(crate::share::SHARE_STATE_PREFIX))
            .filter(|k| k != crate::remote::KEY)
            .map(|k| (k, None))
            .collect();
        Ok(store.set_sync_values(&all)?)
    }

    /// Trusts these PEM certificates for the server's TLS (kept with the configuration by the
    /// next [`save`](Self::save); `net::read_ca` checks them).
    pub fn set_tls_ca(&mut self, pem: Option<String>) {
        self.config.tls_ca = pem;
    }

    /// Changes how many entries of a document pass between two snapshots.
    pub fn set_snapshot_every(&mut self, n: u64) {
        self.config.snapshot_every = n;
        let state = self.session.state().clone();
        self.session = Session::new(
            self.config.space.clone(),
            self.keys.token().clone(),
            state,
            n,
        );
    }

    /// Saves everything that changed (documents, cursors, queued pushes) in one transaction.
    pub fn save(&mut self, store: &dyn Store) -> Result<()> {
        let mut values = self.replica.dirty_values();
        values.push((
            CONFIG_KEY.to_owned(),
            Some(serde_json::to_vec(&self.config).expect("config serializes")),
        ));
        values.push((
            SESSION_KEY.to_owned(),
            Some(serde_json::to_vec(self.session.state()).expect("state serializes")),
        ));
        Ok(store.set_sync_values(&values)?)
    }

    /// The configuration.
    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// The keys of the space.
    pub fn keys(&self) -> &SpaceKeys {
        &self.keys
    }

    /// The code that lets another device join this space.
    pub fn pairing_code(&self) -> Result<PairingCode> {
        let epoch_secret = match self.config.epoch_secrets.get(&self.config.epoch) {
            Some(s) => Some(unb64(s).map(SpaceSecret::from_bytes).ok_or_else(|| {
                SyncError::Schema("the stored secret of the key epoch is damaged".into())
            })?),
            None => None,
        };
        Ok(PairingCode {
            server: self.config.server.clone(),
            space: self.config.space.clone(),
            secret: self.config.secret()?,
            epoch: self.config.epoch,
            epoch_secret,
        })
    }

    /// A transport is connected: the next [`SyncClient::outgoing`] starts with Hello.
    pub fn connected(&mut self) {
        self.session.connected();
    }

    /// The transport is gone.
    pub fn disconnected(&mut self) {
        self.session.disconnected();
    }

    /// Captures what changed in the store into the documents and queues the changes (sent
    /// when connected). Returns how many documents changed.
    ///
    /// A deletion of something forgotten (a memory, a companion, a conversation) starts a new
    /// generation of its document: the old one, whose history still holds it, is dropped here
    /// and deleted on the server once the new one is there (docs/SYNC.md, "Forgetting").
    pub fn sync_local(&mut self, store: &dyn Store) -> Result<usize> {
        let changes = self.replica.capture(store, &self.keys)?;
        let n = changes.len();
        for (doc, bytes) in changes {
            self.push_change(doc, &bytes)?;
        }
        self.generation_actions()?;
        Ok(n)
    }

    /// Queues what the replica's generation changes need on the server, in order: uploads of
    /// new generations, pushes, and retiring (deleting) the old ones.
    fn generation_actions(&mut self) -> Result<()> {
        for action in self.replica.take_actions() {
            match action {
                Action::Push(doc, bytes) => self.push_change(doc, &bytes)?,
                Action::Upload(doc, bytes) => {
                    if bytes.len() + 64 > MAX_SNAPSHOT_BYTES {
                        self.error(format!(
                            "document {doc} is too large to upload ({} bytes)",
                            bytes.len()
                        ));
                        continue;
                    }
                    let blob = self.keys.seal(&doc, BlobKind::Snapshot, &bytes)?;
                    self.session.upload(doc, blob);
                }
                Action::Retire(doc) => self.session.retire(&doc),
            }
        }
        Ok(())
    }

    pub(crate) fn push_change(&mut self, doc: DocId, bytes: &[u8]) -> Result<()> {
        // Room for the header and tag.
        if bytes.len() + 64 > MAX_CHANGE_BYTES {
            // Too large for one change (a first upload of a long history): it travels in a
            // snapshot of the whole document instead.
            self.session.force_snapshot(&doc);
            return Ok(());
        }
        let blob = self.keys.seal(&doc, BlobKind::Change, bytes)?;
        self.session.push(doc, blob);
        Ok(())
    }

    /// Handles one server message: applies entries to the documents and the store, records
    /// acknowledgements, and queues snapshots that are due.
    pub fn handle(&mut self, store: &dyn Store, message: ServerMessage) -> Result<()> {
        // Entries are applied per document in one go (one read of the document before and
        // after), and counted as applied only once the store has them.
        let mut batches: Vec<(DocId, Vec<Decrypted>)> = Vec::new();
        let keyring = self.keyring();
        let space_doc = self.keys.doc_id(&DocName::Space.to_string());
        for event in self.session.receive(message) {
            match event {
                // Rotation records are read only when this device's token stops working
                // (`adopt_rotations`): a record whose rotation never finished must not count.
                Event::Apply { doc, entry } if doc == keyring => {
                    self.session.applied(&doc, &entry);
                }
                Event::Apply { doc, entry } => {
                    match self.keys.open(&doc, entry.kind, &entry.blob) {
                        Ok(bytes) => match batches.last_mut() {
                            Some((d, items)) if *d == doc => items.push((entry, bytes)),
                            _ => batches.push((doc, vec![(entry, bytes)])),
                        },
                        Err(e) => {
                            self.error(format!("entry {} of document {doc}: {e}", entry.seq));
                            // Unreadable (wrong key or tampered): skipped for good.
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
        let space_changed = batches.iter().any(|(d, _)| *d == space_doc);
        for (doc, items) in batches {
            let chunks: Vec<&[u8]> = items.iter().map(|(_, b)| b.as_slice()).collect();
            match self.replica.receive_all(store, &self.keys, &doc, &chunks) {
                Ok(()) => {}
                Err(e @ SyncError::Store(_)) => return Err(e),
                Err(other) => self.error(format!("document {doc}: {other}")),
            }
            for (entry, _) in &items {
                self.session.applied(&doc, entry);
            }
        }
        if space_changed {
            self.learn_epochs();
        }
        self.replica.retry(store)?;
        self.generation_actions()?;
        for doc in self.session.snapshots_due() {
            if let Some(bytes) = self.replica.snapshot(&doc)
                && bytes.len() + 64 <= MAX_SNAPSHOT_BYTES
            {
                let blob = self.keys.seal(&doc, BlobKind::Snapshot, &bytes)?;
                self.session.snapshot(doc, blob);
            }
        }
        Ok(())
    }

    fn error(&mut self, message: String) {
        tracing::warn!("sync: {message}");
        self.session.set_error(message.clone());
        self.errors.push(message);
    }

    /// Errors since the last call (undecryptable entries, foreign documents, server errors).
    pub fn take_errors(&mut self) -> Vec<String> {
        std::mem::take(&mut self.errors)
    }

    /// Messages to send now, in order.
    pub fn outgoing(&mut self) -> Vec<ClientMessage> {
        self.session.outgoing()
    }

    /// Whether lost messages left a gap: reconnect to fetch them again.
    pub fn needs_resync(&self) -> bool {
        self.session.needs_resync()
    }

    /// Live, nothing queued, every document at the server's head.
    pub fn caught_up(&self) -> bool {
        self.session.caught_up()
    }

    /// Unacknowledged changes.
    pub fn pending(&self) -> usize {
        self.session.pending()
    }

    /// The whole document `name` (Automerge's binary format), if this device has it.
    pub fn export_document(&mut self, name: &DocName) -> Option<Vec<u8>> {
        self.replica
            .document(&self.keys, name)
            .map(automerge::AutoCommit::save)
    }

    /// Merges Automerge data made elsewhere (e.g. by the JavaScript library) into document
    /// `name`, applies it to the store and queues it for the other devices.
    pub fn import_document(
        &mut self,
        store: &dyn Store,
        name: &DocName,
        bytes: &[u8],
    ) -> Result<()> {
        let id = self.replica.current_id(&self.keys, name);
        let before = self
            .replica
            .document(&self.keys, name)
            .map(|d| d.get_heads())
            .unwrap_or_default();
        self.replica.receive(store, &self.keys, &id, bytes)?;
        let changes = self
            .replica
            .document(&self.keys, name)
            .map(|d| d.get_changes(&before))
            .unwrap_or_default();
        if !changes.is_empty() {
            let mut data = Vec::new();
            for c in &changes {
                data.extend_from_slice(c.raw_bytes());
            }
            self.push_change(id, &data)?;
        }
        self.generation_actions()
    }

    /// Records raw heart-rate samples (time in ms, beats per minute) from a wearable into the
    /// journal document's `heart_rate` collection and queues them for the other devices.
    /// Returns how many were new.
    ///
    /// The samples stay in the document (the store keeps the readings derived from them: heart
    /// journal entries, which travel in `readings` like every journal entry; see docs/SYNC.md).
    pub fn record_heart_rate(&mut self, samples: &[(i64, f64)], source: &str) -> Result<usize> {
        let known = self.heart_rate().len();
        let change = self.replica.edit(&self.keys, &DocName::Journal, |w| {
            for (at, bpm) in samples {
                let key = format!("{:015}-{source}", (*at).max(0));
                let record = [
                    ("at".to_owned(), Field::Int(*at)),
                    ("bpm".to_owned(), Field::F64(*bpm)),
                    ("source".to_owned(), Field::Str(source.to_owned())),
                ]
                .into_iter()
                .collect();
                w.put_entity("heart_rate", &key, &record)?;
            }
            Ok(())
        })?;
        if let Some((doc, bytes)) = change {
            self.push_change(doc, &bytes)?;
        }
        Ok(self.heart_rate().len() - known)
    }

    /// The heart-rate samples in the journal document: (time in ms, bpm, source), by time.
    pub fn heart_rate(&self) -> Vec<(i64, f64, String)> {
        let Some(view) = self.replica.view(&self.keys, &DocName::Journal) else {
            return Vec::new();
        };
        let mut samples: Vec<(i64, f64, String)> = view
            .collection("heart_rate")
            .values()
            .filter_map(|r| {
                Some((
                    r.get("at")?.as_i64()?,
                    r.get("bpm")?.as_f64()?,
                    r.get("source")
                        .and_then(|s| s.as_str())
                        .unwrap_or_default()
                        .to_owned(),
                ))
            })
            .collect();
        samples.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.2.cmp(&b.2)));
        samples
    }

    /// The keyring document's id.
    pub fn keyring(&self) -> DocId {
        self.keys.doc_id(KEYRING)
    }

    fn device(&self) -> Result<&DeviceConfig> {
        self.config
            .device
            .as_ref()
            .ok_or_else(|| SyncError::Schema("this device has no identity".into()))
    }

    /// This device's id.
    pub fn device_id(&self) -> Result<DeviceId> {
        self.device()?.id()
    }

    /// The token of this device's grant (it may read the keyring only).
    pub fn device_token(&self) -> Result<Token> {
        self.device()?.token()
    }

    /// The id of this device's grant on the server, once registered.
    pub fn device_grant(&self) -> Option<&str> {
        self.config.device.as_ref()?.grant.as_deref()
    }

    /// Records the id of this device's grant (after registering it with the server) and lists
    /// the device in the space document.
    pub fn set_device_grant(&mut self, grant: String) -> Result<()> {
        if let Some(d) = self.config.device.as_mut() {
            d.grant = Some(grant);
        }
        self.publish_device()
    }

    /// Renames this device (shown by `nexus device list` on every device).
    pub fn rename_device(&mut self, name: &str) -> Result<()> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 {
            return Err(SyncError::Schema(
                "a device name is 1 to 64 characters".into(),
            ));
        }
        if let Some(d) = self.config.device.as_mut() {
            d.name = name.to_owned();
        }
        self.publish_device()
    }

    /// Writes this device's entry of the space document and queues it.
    fn publish_device(&mut self) -> Result<()> {
        let device = self.device()?.clone();
        let public = device.key()?.public();
        let known = self
            .devices()
            .into_iter()
            .find(|d| d.this_device)
            .and_then(|d| d.joined_at);
        let joined_at = known.unwrap_or_else(now_ms);
        let mut record: Record = [
            ("name".to_owned(), Field::Str(device.name.clone())),
            ("public_key".to_owned(), Field::Str(b64(&public))),
            ("joined_at".to_owned(), Field::Int(joined_at)),
        ]
        .into_iter()
        .collect();
        record.insert(
            "grant".to_owned(),
            device.grant.clone().map_or(Field::Null, Field::Str),
        );
        let change = self.replica.edit(&self.keys, &DocName::Space, |w| {
            w.update_entity(DEVICES, &device.id, &record)
        })?;
        if let Some((doc, bytes)) = change {
            self.push_change(doc, &bytes)?;
        }
        Ok(())
    }

    /// The devices of the space (from the space document as this device knows it), this device
    /// first, then by name.
    pub fn devices(&self) -> Vec<DeviceInfo> {
        let me = self.config.device.as_ref().map(|d| d.id.as_str());
        let mut out: Vec<DeviceInfo> = self
            .replica
            .view(&self.keys, &DocName::Space)
            .map(|v| {
                v.collection(DEVICES)
                    .iter()
                    .map(|(id, r)| DeviceInfo {
                        id: id.clone(),
                        name: r
                            .get("name")
                            .and_then(Field::as_str)
                            .unwrap_or("unnamed")
                            .to_owned(),
                        this_device: Some(id.as_str()) == me,
                        joined_at: r.get("joined_at").and_then(Field::as_i64),
                        revoked_at: r.get("revoked_at").and_then(Field::as_i64),
                        registered: r.get("grant").and_then(Field::as_str).is_some(),
                        public_key: r.get("public_key").and_then(Field::as_str).and_then(unb64),
                        grant: r.get("grant").and_then(Field::as_str).map(str::to_owned),
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| b.this_device.cmp(&a.this_device).then(a.name.cmp(&b.name)));
        out
    }

    /// Prepares revoking `revoke`: a new random epoch secret sealed to every other device that
    /// is not revoked, the token it gives, and the grants to keep. Nothing changes until
    /// [`SyncClient::commit_rotation`]; the transport sends the record and the token first.
    pub fn plan_rotation(&self, revoke: &[DeviceId]) -> Result<Rotation> {
        let me = self.device()?;
        let (my_id, my_key) = (me.id()?, me.key()?);
        if revoke.contains(&my_id) {
            return Err(SyncError::Schema(
                "this device cannot revoke itself: run `nexus sync disable` on it, or revoke it from another device".into(),
            ));
        }
        let devices = self.devices();
        for id in revoke {
            if !devices.iter().any(|d| d.id == id.to_string()) {
                return Err(SyncError::Schema(format!("no device {id} in this space")));
            }
        }
        let mut recipients = vec![(my_id, my_key.public())];
        let mut keep_grants: Vec<String> = me.grant.iter().cloned().collect();
        for d in &devices {
            let Some(id) = DeviceId::parse(&d.id) else {
                continue;
            };
            if d.this_device || d.revoked_at.is_some() || revoke.contains(&id) {
                continue;
            }
            if let Some(public) = d.public_key {
                recipients.push((id, public));
            }
            keep_grants.extend(d.grant.clone());
        }
        let epoch = self
            .keys
            .epoch()
            .checked_add(1)
            .ok_or_else(|| SyncError::Schema("this space has used up its key epochs".into()))?;
        let secret = SpaceSecret::generate()?;
        let record = RotationRecord::seal(
            self.keys.space(),
            epoch,
            &secret,
            (&my_id, &my_key),
            &recipients,
        )?;
        let mut next = self.keys.clone();
        next.rotate(&secret, epoch);
        Ok(Rotation {
            epoch,
            secret,
            keyring: self.keyring(),
            record: Blob(record.encode()),
            token: next.token().clone(),
            keep_grants,
            revoked: revoke.to_vec(),
        })
    }

    /// Moves to the rotation's epoch once the server has the record and the new token: marks
    /// the revoked devices in the space document, keeps the epoch secret there for devices
    /// that join later, re-encrypts queued changes and makes every document due for a
    /// snapshot under the new key.
    pub fn commit_rotation(&mut self, rotation: Rotation) -> Result<()> {
        self.enter_epoch(rotation.epoch, &rotation.secret);
        let now = now_ms();
        let secrets: Vec<(u32, String)> = self
            .config
            .epoch_secrets
            .iter()
            .map(|(e, s)| (*e, s.clone()))
            .collect();
        let revoked: Vec<String> = rotation.revoked.iter().map(ToString::to_string).collect();
        let change = self.replica.edit(&self.keys, &DocName::Space, |w| {
            let mark: Record = [("revoked_at".to_owned(), Field::Int(now))]
                .into_iter()
                .collect();
            for id in &revoked {
                w.update_entity(DEVICES, id, &mark)?;
            }
            for (epoch, secret) in &secrets {
                let record: Record = [("secret".to_owned(), Field::Str(secret.clone()))]
                    .into_iter()
                    .collect();
                w.put_entity(EPOCHS, &epoch.to_string(), &record)?;
            }
            Ok(())
        })?;
        if let Some((doc, bytes)) = change {
            self.push_change(doc, &bytes)?;
        }
        Ok(())
    }

    /// Switches to key `epoch` with `secret`: token, key, queued changes and snapshots.
    fn enter_epoch(&mut self, epoch: u32, secret: &SpaceSecret) {
        let old = self.keys.clone();
        self.keys.rotate(secret, epoch);
        self.config.epoch = epoch;
        self.config
            .epoch_secrets
            .insert(epoch, b64(secret.expose()));
        self.session.set_token(self.keys.token().clone());
        let keys = &self.keys;
        self.session.reseal_pending(|doc, blob| {
            let plain = old.open(doc, BlobKind::Change, blob).ok()?;
            keys.seal(doc, BlobKind::Change, &plain).ok()
        });
        // The current generation of every document (retired ones are deleted on the server;
        // the keyring is not a replica document).
        for id in self.replica.current_ids().into_values() {
            self.session.force_snapshot(&id);
        }
    }

    /// After the server refused this device's token: reads the keyring's rotation records
    /// (fetched with the device grant), opens the ones sealed to this device by a device of the
    /// space, and moves to the newest epoch. Returns the new epoch, or `None` if there was no
    /// newer epoch for this device (it was revoked, or the token was revoked otherwise).
    pub fn adopt_rotations(&mut self, entries: &[Entry]) -> Result<Option<u32>> {
        let me = self.device()?;
        let (my_id, my_key) = (me.id()?, me.key()?);
        let devices = self.devices();
        let mut found: BTreeMap<u32, (u64, SpaceSecret)> = BTreeMap::new();
        for entry in entries {
            let Some(record) = RotationRecord::decode(&entry.blob.0) else {
                self.error(format!("keyring entry {} is malformed", entry.seq));
                continue;
            };
            if self.keys.epochs().any(|e| e == record.epoch) {
                continue;
            }
            let sender = record.sender.to_string();
            let Some(public) = devices
                .iter()
                .find(|d| d.id == sender)
                .and_then(|d| d.public_key)
            else {
                self.error(format!(
                    "keyring entry {} comes from an unknown device",
                    entry.seq
                ));
                continue;
            };
            match record.open(self.keys.space(), (&my_id, &my_key), &public) {
                Some(Ok(secret))
                    if found
                        .get(&record.epoch)
                        .is_none_or(|(seq, _)| *seq < entry.seq) =>
                {
                    found.insert(record.epoch, (entry.seq, secret));
                }
                Some(Err(e)) => self.error(format!("keyring entry {}: {e}", entry.seq)),
                Some(Ok(_)) | None => {}
            }
        }
        let Some(newest) = found.keys().next_back().copied() else {
            return Ok(None);
        };
        if newest <= self.keys.epoch() {
            return Ok(None);
        }
        for (epoch, (_, secret)) in found {
            if epoch == newest {
                self.enter_epoch(epoch, &secret);
            } else {
                self.keys.keep_epoch(&secret, epoch);
                self.config
                    .epoch_secrets
                    .insert(epoch, b64(secret.expose()));
            }
        }
        Ok(Some(newest))
    }

    /// Learns older epochs' secrets from the space document (a device that joined after a
    /// rotation reads what was written before it).
    fn learn_epochs(&mut self) {
        let Some(view) = self.replica.view(&self.keys, &DocName::Space) else {
            return;
        };
        let current = self.keys.epoch();
        for (epoch, record) in view.collection(EPOCHS) {
            let (Ok(epoch), Some(secret)) = (
                epoch.parse::<u32>(),
                record.get("secret").and_then(Field::as_str).and_then(unb64),
            ) else {
                continue;
            };
            if epoch < current && !self.config.epoch_secrets.contains_key(&epoch) {
                self.keys
                    .keep_epoch(&SpaceSecret::from_bytes(secret), epoch);
                self.config.epoch_secrets.insert(epoch, b64(&secret));
            }
        }
    }

    /// A summary of the state.
    pub fn status(&self) -> Status {
        let journal_readings = self
            .replica
            .view(&self.keys, &DocName::Journal)
            .map_or(0, |v| v.collection(crate::mapping::READINGS).len());
        Status {
            server: self.config.server.clone(),
            space: self.config.space.to_string(),
            connected: self.session.phase() == Phase::Live,
            pending: self.session.pending(),
            documents: self.replica.names().len(),
            waiting: self.replica.waiting(),
            last_error: self.session.last_error().map(str::to_owned),
            heart_rate_samples: self.heart_rate().len(),
            journal_readings,
        }
    }
}

/// Milliseconds since the Unix epoch, by the device's clock.
fn now_ms() -> i64 {
    use nexus_common::Clock as _;
    nexus_common::SystemClock.now().0
}
