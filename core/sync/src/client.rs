//! [`SyncClient`]: one device in one space. It joins the pieces (keys, documents, session)
//! and keeps them in the store's sync state; a transport (WebSocket, the in-memory relay of the
//! tests) only carries its messages.

use std::fmt;

use automerge::ActorId;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nexus_store::Store;
use nexus_sync_protocol::{
    BlobKind, ClientMessage, DocId, Entry, MAX_CHANGE_BYTES, MAX_SNAPSHOT_BYTES, ServerMessage,
    SpaceId,
};
use serde::{Deserialize, Serialize};

use crate::crypto::{SpaceKeys, SpaceSecret, random_bytes};
use crate::doc::DocName;
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
    keys: SpaceKeys,
    replica: Replica,
    session: Session,
    errors: Vec<String>,
}

impl SyncClient {
    fn build(config: SyncConfig, replica: Replica, state: SessionState) -> Result<Self> {
        let keys = SpaceKeys::derive(&config.space, &config.secret()?, config.epoch);
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
        // A new space or a new membership: forget documents of an earlier one (a deletion of
        // an earlier space's server copy that is still to be done stays).
        let old: Vec<(String, Option<Vec<u8>>)> = store
            .sync_keys("")?
            .into_iter()
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
    /// data stays; so does a [`crate::RemoteDeletion`] still to be done).
    pub fn disable(store: &dyn Store) -> Result<()> {
        let all: Vec<(String, Option<Vec<u8>>)> = store
            .sync_keys("")?
            .into_iter()
            .filter(|k| k != crate::remote::KEY)
            .map(|k| (k, None))
            .collect();
        Ok(store.set_sync_values(&all)?)
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
        Ok(PairingCode {
            server: self.config.server.clone(),
            space: self.config.space.clone(),
            secret: self.config.secret()?,
            epoch: self.config.epoch,
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

    fn push_change(&mut self, doc: DocId, bytes: &[u8]) -> Result<()> {
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
        for event in self.session.receive(message) {
            match event {
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
                    ("at".to_owned(), crate::doc::Field::Int(*at)),
                    ("bpm".to_owned(), crate::doc::Field::F64(*bpm)),
                    (
                        "source".to_owned(),
                        crate::doc::Field::Str(source.to_owned()),
                    ),
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
