//! # nexus-emotion
//!
//! How the user feels, from every signal Nexus has:
//!
//! | module | input | output |
//! |---|---|---|
//! | [`text`] | what the user writes | 28 GoEmotions labels, 7 Ekman groups, valence, arousal (our model, fine-tuned MiniLM) |
//! | [`prosody`] | 16 kHz PCM frames (live or whole) | pitch, energy, rate, pauses; arousal (RAVDESS-calibrated) |
//! | [`biometrics`] | BPM/RR samples, 0x2A37 payloads, Apple Health `export.xml` | per-window arousal and stress (baseline, RMSSD) |
//! | [`face`] | 52 ARKit blend shapes | FACS action units, Ekman distribution, valence, arousal |
//! | [`fusion`] | readings of all of the above, with times | one state: Ekman distribution, valence, arousal, confidence, per-source contributions |
//!
//! Every reading carries an [`Affect`] with a confidence; bad input (empty or non-English text,
//! silent or damaged audio, impossible heart rates, out-of-range blend shapes) gives an error or
//! a reading with low confidence and flags, never a panic. [`fusion::fuse`] weighs the readings
//! by confidence, source and age, lowers the confidence when they disagree and flags states that
//! are too unsure to act on ([`fusion::FusedStatus`]).
//!
//! What uses it: `nexus-companion`'s `mood` (the companion's own mood and the tone guidance of
//! its replies), `nexus-app`'s `emotion` (scoring each message, the journal, summaries) and the
//! `nexus emotion …` / `nexus journal` commands.
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
