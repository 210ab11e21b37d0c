//! # nexus-companion
//!
//! The companion itself: who it is ([`persona`]), what it remembers of the conversation and how
//! that becomes a prompt ([`prompt`]), and the [`ConversationEngine`] that streams a reply from a
//! [`LanguageModel`](nexus_inference::LanguageModel) and persists both turns.
//!
//! Sans-IO: it talks to storage and models only through the `Store` and `LanguageModel` ports,
//! and to time through `Clock`. Must not depend on: SQLite, model files, the terminal, threads.

pub mod cards;
pub mod engine;
pub mod evolve;
pub mod memory;
pub mod mood;
pub mod persona;
pub mod prompt;
pub mod summary;

pub use engine::{ChatSettings, ConversationEngine, Reply};
pub use persona::{CompanionDraft, CompanionPatch};

/// What can go wrong in companion logic.
#[derive(Debug, thiserror::Error)]
pub enum CompanionError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] nexus_store::StoreError),
    /// The language model failed.
    #[error("the language model failed: {0}")]
    Model(#[from] nexus_inference::InferenceError),
    /// The input is not acceptable.
    #[error("{0}")]
    Invalid(String),
}

/// Result alias of this crate.
pub type Result<T, E = CompanionError> = std::result::Result<T, E>;
