//! # nexus-sync-server
//!
//! The thin relay between a user's devices. It stores and forwards what
//! [`nexus_sync_protocol`] defines — random space ids, opaque document ids, per-document
//! sequence numbers and encrypted blobs — and nothing else: it depends on the protocol crate
//! only, never on a crate that can decrypt or interpret user data, so it *cannot* read what
//! it relays.
//!
//! ## What it owns
//! * [`storage`]: the storage port ([`Storage`]) with [`SqliteStorage`] (the default, one
//!   file) and [`PgStorage`] (several server processes on one PostgreSQL, fanning out each
//!   other's writes with LISTEN/NOTIFY), checked by one [`conformance_tests!`] suite.
//! * [`server`]: the HTTP routes, health (`/health` checks storage) and metrics
//!   (`/metrics`, Prometheus text format); [`session`]: the WebSocket sessions.
//! * [`hub`]: fan-out of committed entries to the sessions of a space.
//! * [`limits`]: token-bucket rate limits per connection and per token.
//! * [`tls`]: HTTPS and WSS (`--tls-cert`, `--tls-key`): certificate loading and a listener
//!   completing TLS handshakes (rustls, `ring`).
//!
//! ## Guarantees
//! * An `Ack` (or HTTP answer) is sent only after the write's transaction committed
//!   (SQLite: WAL with `synchronous=FULL`; PostgreSQL: a committed transaction).
//! * Per document a session receives every entry of its readable documents in order, without
//!   gaps or duplicates: the backlog after its cursor, then live entries (its own pushes
//!   included).
//! * Unknown spaces and wrong tokens get the same `unauthorized` answer. Tokens are stored as
//!   [`nexus_sync_protocol::token_hash`] and never logged; blobs are never logged.
//! * Deleting a grant or rotating the space token closes the sessions that used it, on every
//!   server process sharing the database.
//! * Deleting (space token only): a document's entries go and its id stays as a tombstone, so
//!   a device that was offline cannot write it back (`gone`); a deleted space takes everything
//!   of it along and its sessions end, on every process. With SQLite the deleted bytes leave
//!   the files too (`secure_delete`, then a truncating checkpoint before the answer).

pub mod conformance;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod postgres;
pub mod server;
pub mod session;
pub mod sqlite;
pub mod storage;
pub mod tls;

pub use limits::Limits;
pub use postgres::PgStorage;
pub use server::{App, router, serve, serve_tls};
pub use sqlite::SqliteStorage;
pub use storage::{Storage, StorageError};
