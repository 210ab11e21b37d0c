//! # nexus-emotion
//!
//! How the user feels, from every signal Nexus has: heart rate from wearables ([`biometrics`]),
//! facial expression values sent by AR shells ([`face`]) and voice prosody ([`prosody`]).
//! Text emotion and the fusion of all signals into one state come next.
//!
//! Sans-IO: every function works on values (samples, PCM frames, coefficients) that shells hand
//! in; parsing helpers take bytes or strings, never paths. Builds for `wasm32-unknown-unknown`.
//! Must not depend on: storage, models on disk, audio devices.

pub mod biometrics;
pub mod face;
pub mod fusion;
pub mod prosody;
pub mod text;

use serde::{Deserialize, Serialize};

/// What can go wrong when reading a signal.
#[derive(Debug, thiserror::Error)]
pub enum EmotionError {
    /// The input cannot be parsed or is physically impossible.
    #[error("{0}")]
    InvalidInput(String),
}

/// Result alias of this crate.
pub type Result<T, E = EmotionError> = std::result::Result<T, E>;

/// A reading of affect on the circumplex model, with how sure the source is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Affect {
    /// Unpleasant (-1) to pleasant (+1).
    pub valence: f32,
    /// Calm (0) to excited/agitated (1).
    pub arousal: f32,
    /// 0 (no information) to 1 (reliable).
    pub confidence: f32,
}
