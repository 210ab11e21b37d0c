//! Deleting the server's copy of a space ([`RemoteDeletion`]): what `nexus forget-me` and
//! `nexus sync delete-remote` need, and what a device keeps when the server could not be
//! reached, to try again later.

use nexus_store::Store;
use nexus_sync_protocol::{SpaceId, Token};
use serde::{Deserialize, Serialize};

use crate::{Result, SyncClient, SyncError};

/// Sync state key of a deletion still to be done. [`SyncClient`] keeps it when it starts a new
/// space or is disabled.
pub(crate) const KEY: &str = "delete_remote";

/// A space to delete on its server: the server, the space id and its token, nothing else (no
/// user data and no key to it; the token lets whoever holds it delete the space and fetch its
/// ciphertext, never read it). `Debug` does not print the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteDeletion {
    /// The sync server.
    pub server: String,
    /// The space.
    pub space: SpaceId,
    token: Token,
    /// Certificates the server's TLS certificate may chain to (PEM), as in the sync settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<String>,
}

impl RemoteDeletion {
    /// The space of a client.
    pub fn of(client: &SyncClient) -> Self {
        Self {
            server: client.config().server.clone(),
            space: client.config().space.clone(),
            token: client.keys().token().clone(),
            tls_ca: client.config().tls_ca.clone(),
        }
    }

    /// The token (for the `Authorization` header).
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// The deletion kept in the store, if one is still to be done.
    pub fn pending(store: &dyn Store) -> Result<Option<Self>> {
        store
            .sync_value(KEY)?
            .map(|v| {
                serde_json::from_slice(&v).map_err(|e| {
                    SyncError::Schema(format!("the stored server deletion is damaged: {e}"))
                })
            })
            .transpose()
    }

    /// Keeps this deletion in the store, to try again later.
    pub fn keep(&self, store: &dyn Store) -> Result<()> {
        let value = serde_json::to_vec(self).expect("serializes");
        Ok(store.set_sync_values(&[(KEY.to_owned(), Some(value))])?)
    }

    /// The deletion is done: forgets it.
    pub fn done(store: &dyn Store) -> Result<()> {
        Ok(store.set_sync_values(&[(KEY.to_owned(), None)])?)
    }
}
