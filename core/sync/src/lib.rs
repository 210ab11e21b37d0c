//! # nexus-sync
//!
//! The device side of Nexus sync. A user's companions, memories, conversations and settings are
//! replicated between their devices as [Automerge](https://automerge.org) documents, end-to-end
//! encrypted, through a server that stores and relays opaque blobs (`nexus-sync-protocol`).
//!
//! * [`doc`]: document names, their layout and the deterministic skeleton that lets two
//!   devices create the same document independently.
//! * [`mapping`]: the store stays the query engine; [`mapping::capture`] writes the store's
//!   content into a document, [`mapping::apply`] writes what a merge changed into the store.
//! * [`crypto`]: the space secret, derived token, keys and document ids, and the blob format
//!   (XChaCha20-Poly1305, with space, document and kind bound as associated data).
//! * [`device`]: device identities (X25519) and key rotation records (HPKE) for revoking a
//!   device.
//! * [`pairing`]: pairing codes (text and QR URI) that hand the secret to a new device.
//! * [`session`]: the protocol state machine (cursors, queued pushes, snapshots), sans-IO.
//! * [`share`]: sharing one companion with another person (share codes, the owner's list of
//!   shares in the space document, [`ShareClient`] on the recipient's device).
//! * [`client`]: [`SyncClient`], all of it for one device, persisted in the store.
//! * `net` (feature `native`): a blocking WebSocket transport and `sync_once`, in the clear
//!   or over TLS (`https://`, `wss://`; rustls, the Mozilla roots and a trusted private CA).
//! * [`relay`]: an in-memory relay with the server's semantics, for tests without sockets.
//! * [`remote`]: deleting the server's copy of a space (and remembering to, when offline).
//!
//! Forgetting reaches every copy: a deletion that forgets something (a memory, a conversation,
//! a companion) starts a new *generation* of its document without the history that still
//! held it, and the old generation is deleted on the server and on every device
//! ([`replica`], docs/SYNC.md "Forgetting").
//!
//! The cycle of a device: [`SyncClient::sync_local`] (store to documents, changes queued),
//! [`SyncClient::connected`] and [`SyncClient::outgoing`] (Hello, pushes), then each
//! [`SyncClient::handle`] of a server message (entries applied to documents and store, acks),
//! and [`SyncClient::save`]. The schema and formats are documented in docs/SYNC.md.
//!
//! Must not depend on: any I/O, sockets or SQLite (the store is the `nexus-store` port).
//! Builds for `wasm32-unknown-unknown`.

pub mod client;
pub mod crypto;
pub mod device;
pub mod doc;
pub mod mapping;
#[cfg(feature = "native")]
pub mod net;
pub mod pairing;
pub mod relay;
pub mod remote;
pub mod replica;
pub mod session;
pub mod share;

pub use client::{DeviceInfo, Rotation, Status, SyncClient, SyncConfig};
pub use crypto::{CryptoError, DocIds, DocKeys, SpaceKeys, SpaceSecret};
pub use doc::DocName;
pub use pairing::{PairingCode, PairingError};
pub use remote::RemoteDeletion;
pub use share::{ReceivedShare, ShareClient, ShareCode, ShareError, ShareInfo, ShareStatus};

/// What can go wrong in sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] nexus_store::StoreError),
    /// Encryption or decryption failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A pairing code could not be read.
    #[error(transparent)]
    Pairing(#[from] PairingError),
    /// A share code could not be read.
    #[error(transparent)]
    Share(#[from] ShareError),
    /// Automerge rejected data.
    #[error("a sync document could not be read: {0}")]
    Automerge(String),
    /// A document does not follow the schema.
    #[error("{0}")]
    Schema(String),
    /// A document cannot be applied yet (its parent has not arrived); retried later.
    #[error("waiting for another document: {0}")]
    Deferred(String),
}

/// Result alias of this crate.
pub type Result<T, E = SyncError> = std::result::Result<T, E>;
