//! Voice prosody: pitch, energy, rhythm, and the arousal they suggest.
//!
//! # Input
//! 16 kHz mono PCM as `f32` in −1..1 ([`pcm_from_i16`] converts 16-bit samples; [`resample`]
//! converts other rates). [`ProsodyAnalyzer`] takes it chunk by chunk as the voice loop
//! receives it ([`ProsodyAnalyzer::push`]) and summarises on demand
//! ([`ProsodyAnalyzer::summary`], [`ProsodyAnalyzer::reading`]); [`analyze`] does it in one go.
//!
//! Damaged input never panics and is never silently used as is ([`SignalQuality`]): NaN and
//! infinities become 0, values beyond ±1 are clamped, full-scale samples count as clipping, and
//! each lowers the confidence. Less than one frame (25 ms) gives a summary flagged `too_short`;
//! no speech-level energy gives one flagged `silent`; both have confidence 0.
//!
//! # Features
//! Frames of 25 ms every 10 ms ([`frame`]): RMS energy in dBFS, zero-crossing rate, and F0 by
//! YIN between 60 and 500 Hz. Utterance statistics ([`summary`]): F0 mean/median, spread and
//! range in semitones (relative to a [`SpeakerBaseline`] when known), energy mean/spread,
//! voiced fraction, speaking rate from syllable nuclei, pause ratio, jitter- and shimmer-like
//! variability.
//!
//! # Arousal
//! High arousal in speech raises and widens pitch, loudness and its variation, and tempo
//! (Scherer 2003, "Vocal communication of emotion: a review of research paradigms", Speech
//! Communication 40:227–256; Juslin & Laukka 2003, Psychological Bulletin 129(5):770–814).
//! [`model`] is a logistic regression on those features, calibrated on RAVDESS (Livingstone &
//! Russo 2018): high = angry, happy, fearful, surprised; low = neutral, calm, sad; disgust is
//! left out (its arousal is placed in the middle of the circumplex and RAVDESS actors portray
//! it both ways). Cross-validated accuracy is reported by the calibration example and guarded
//! by a test: 23/26 (88.5 %) leave-one-actor-out, 25/26 (96.2 %) leave-one-clip-out. It was
//! fitted on 26 acted clips of two actors saying one sentence, so treat it as a weak signal.
//! The model leans on pitch and loudness relative to the speaker's usual voice
//! ([`SpeakerBaseline`]); without one those features are neutral and it falls back on energy
//! variation, voicing and rate.
//!
//! Confidence = `0.6 × (1 − e^(−voiced seconds / 0.5)) × quality × (1 with a speaker baseline,
//! else 0.8)`, where quality = `1 − min(1, 20 × damaged share of samples)` (5 % damaged samples leave nothing); 0.6 caps what a
//! model validated on so little data may claim.
//!
//! **Valence** is not estimated: prosody separates valence poorly (Scherer 2003). On RAVDESS
//! the same features and fitting tell happy/surprised from angry/fearful at chance level
//! (9/16 leave-one-actor-out, 10/16 leave-one-clip-out; printed by the calibration example),
//! so valence is reported as 0 and the confidence refers to arousal only.

pub mod frame;
pub mod model;
mod resample;
pub mod summary;

use serde::{Deserialize, Serialize};

pub use frame::{FRAME_LEN, FrameFeatures, HOP_LEN, MAX_F0_HZ, MIN_F0_HZ, SAMPLE_RATE};
pub use model::{ArousalModel, FEATURE_NAMES, Features};
pub use resample::resample;
pub use summary::{F0Stats, ProsodySummary, SignalQuality, SpeakerBaseline};

use crate::Affect;
use frame::{PITCH_WINDOW, analyze_frame};

/// The most a prosody reading claims (see the module docs).
const MAX_CONFIDENCE: f32 = 0.6;
/// Confidence factor without a speaker baseline.
const NO_BASELINE_FACTOR: f32 = 0.8;
/// Voiced speech (seconds) at which the amount factor reaches 1 − 1/e.
const VOICED_SECONDS_SCALE: f32 = 0.5;
/// Damaged-sample share at which quality reaches 0 is `1 / DAMAGE_WEIGHT`.
const DAMAGE_WEIGHT: f32 = 20.0;

/// Converts 16-bit PCM to `f32` in −1..1.
pub fn pcm_from_i16(samples: &[i16]) -> Vec<f32> {
    samples.iter().map(|&s| f32::from(s) / 32_768.0).collect()
}

/// Prosody of an utterance and the affect it suggests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProsodyReading {
    /// The measurements.
    pub summary: ProsodySummary,
    /// Model output `P(high arousal)`; `None` when nothing voiced was heard.
    pub arousal_probability: Option<f32>,
    /// Arousal = that probability (0.5 when unknown), valence 0 (not estimated).
    pub affect: Affect,
}

/// Incremental prosody analysis of one speaker's audio.
///
/// Frames are computed as soon as their samples arrive; only their features are kept (16 bytes
/// per 10 ms), so call [`reset`](Self::reset) between utterances in a long-running loop.
#[derive(Debug, Clone)]
pub struct ProsodyAnalyzer {
    baseline: Option<SpeakerBaseline>,
    model: ArousalModel,
    pending: Vec<f32>,
    frames: Vec<FrameFeatures>,
    quality: SignalQuality,
}

impl Default for ProsodyAnalyzer {
    fn default() -> Self {
        Self::new()
    }
}

impl ProsodyAnalyzer {
    /// An analyzer with the shipped model and no speaker baseline.
    pub fn new() -> Self {
        Self {
            baseline: None,
            model: ArousalModel::shipped(),
            pending: Vec::new(),
            frames: Vec::new(),
            quality: SignalQuality::default(),
        }
    }

    /// Uses `baseline` for relative pitch and energy.
    pub fn with_baseline(mut self, baseline: SpeakerBaseline) -> Self {
        self.baseline = Some(baseline);
        self
    }

    /// Uses another arousal model (for example one personalised with [`ArousalModel::fit`]).
    pub fn with_model(mut self, model: ArousalModel) -> Self {
        self.model = model;
        self
    }

    /// Replaces the speaker baseline.
    pub fn set_baseline(&mut self, baseline: Option<SpeakerBaseline>) {
        self.baseline = baseline;
    }

    /// Appends 16 kHz mono samples (see the module docs for damaged values).
    pub fn push(&mut self, pcm: &[f32]) {
        let quality = &mut self.quality;
        self.pending.extend(pcm.iter().map(|&x| quality.record(x)));
        let mut start = 0;
        while start + PITCH_WINDOW <= self.pending.len() {
            self.frames
                .push(analyze_frame(&self.pending[start..start + PITCH_WINDOW]));
            start += HOP_LEN;
        }
        self.pending.drain(..start);
    }

    /// Appends 16-bit samples.
    pub fn push_i16(&mut self, pcm: &[i16]) {
        self.push(&pcm_from_i16(pcm));
    }

    /// Frames completed so far (the last ~42 ms wait for the pitch window to fill).
    pub fn frames(&self) -> &[FrameFeatures] {
        &self.frames
    }

    /// Statistics of everything pushed so far, the trailing frames included.
    pub fn summary(&self) -> ProsodySummary {
        let mut frames = self.frames.clone();
        let mut start = 0;
        while start + FRAME_LEN <= self.pending.len() {
            let end = (start + PITCH_WINDOW).min(self.pending.len());
            frames.push(analyze_frame(&self.pending[start..end]));
            start += HOP_LEN;
        }
        summary::summarize(&frames, self.quality, self.baseline.as_ref())
    }

    /// The summary and the affect it suggests.
    pub fn reading(&self) -> ProsodyReading {
        ProsodyReading::from_summary(self.summary(), &self.model)
    }

    /// Forgets the audio, keeping the baseline and model.
    pub fn reset(&mut self) {
        self.pending.clear();
        self.frames.clear();
        self.quality = SignalQuality::default();
    }
}

/// One-shot analysis of a whole utterance.
pub fn analyze(pcm: &[f32], baseline: Option<&SpeakerBaseline>) -> ProsodyReading {
    let mut analyzer = ProsodyAnalyzer::new();
    analyzer.set_baseline(baseline.copied());
    analyzer.push(pcm);
    analyzer.reading()
}

impl ProsodyReading {
    /// Applies `model` to a summary (rules in the module docs).
    pub fn from_summary(summary: ProsodySummary, model: &ArousalModel) -> Self {
        let measurable = !summary.silent && !summary.too_short && summary.voiced_frames > 0;
        let probability = measurable.then(|| model.probability(&model::features(&summary)));
        let confidence = if measurable {
            confidence(&summary)
        } else {
            0.0
        };
        Self {
            arousal_probability: probability,
            affect: Affect {
                valence: 0.0,
                arousal: probability.unwrap_or(0.5),
                confidence,
            },
            summary,
        }
    }
}

fn confidence(summary: &ProsodySummary) -> f32 {
    let voiced_s = summary.voiced_frames as f32 * HOP_LEN as f32 / SAMPLE_RATE as f32;
    let amount = 1.0 - (-voiced_s / VOICED_SECONDS_SCALE).exp();
    let quality = 1.0 - (DAMAGE_WEIGHT * summary.quality.damaged_fraction()).min(1.0);
    let has_baseline = summary
        .f0
        .as_ref()
        .is_some_and(|f| f.re_baseline_st.is_some());
    let baseline = if has_baseline {
        1.0
    } else {
        NO_BASELINE_FACTOR
    };
    MAX_CONFIDENCE * amount * quality * baseline
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i16_conversion() {
        assert_eq!(
            pcm_from_i16(&[0, 16_384, -32_768, 32_767]),
            vec![0.0, 0.5, -1.0, 32_767.0 / 32_768.0]
        );
    }

    #[test]
    fn chunking_does_not_change_the_result() {
        let pcm: Vec<f32> = (0..16_000)
            .map(|i| {
                let t = i as f32 / 16_000.0;
                let f0 = 150.0 + 30.0 * (2.0 * std::f32::consts::PI * 2.0 * t).sin();
                0.3 * (2.0 * std::f32::consts::PI * f0 * t).sin() * (0.5 + 0.5 * (9.0 * t).sin())
            })
            .collect();
        let whole = analyze(&pcm, None);
        let mut analyzer = ProsodyAnalyzer::new();
        for chunk in pcm.chunks(333) {
            analyzer.push(chunk);
        }
        assert_eq!(analyzer.reading(), whole);
    }
}
