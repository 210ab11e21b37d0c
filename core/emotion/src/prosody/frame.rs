//! Frame-level features: energy, zero-crossing rate, and pitch by YIN.
//!
//! YIN (de Cheveigné & Kawahara 2002, "YIN, a fundamental frequency estimator for speech and
//! music", JASA 111(4):1917–1930), steps 1–5:
//! 1. difference function `d(τ) = Σ_{j<W} (x_j − x_{j+τ})²` over the frame's `W` = 400 samples,
//!    for lags up to `τ_max` = 267 (60 Hz at 16 kHz): the pitch window is 667 samples (41.7 ms)
//!    starting at the frame start;
//! 2. cumulative mean normalised difference `d'(τ) = d(τ) · τ / Σ_{k=1..τ} d(k)`, `d'(0) = 1`;
//! 3. absolute threshold: the first `τ ≥ τ_min` (32, 500 Hz) where `d' < 0.2`, then down to
//!    the bottom of that dip; no such dip, or one still falling at the last lag (the end of a
//!    stream, where fewer lags are available), means unvoiced (no fallback to the global
//!    minimum);
//! 4. parabolic interpolation of `d'` around the chosen lag;
//! 5. (best local estimate: not used; the utterance statistics median-filter the track instead).
//!
//! A frame below −60 dBFS is never voiced. The crate `pitch-detection` was considered: it offers
//! McLeod and autocorrelation detectors but not YIN, and brings an FFT dependency for windows
//! this short; YIN is a few dozen lines.

use serde::{Deserialize, Serialize};

/// Sample rate of the analysis, Hz.
pub const SAMPLE_RATE: u32 = 16_000;
/// Frame length: 25 ms.
pub const FRAME_LEN: usize = 400;
/// Hop between frames: 10 ms.
pub const HOP_LEN: usize = 160;
/// Lowest detectable F0, Hz.
pub const MIN_F0_HZ: f32 = 60.0;
/// Highest detectable F0, Hz.
pub const MAX_F0_HZ: f32 = 500.0;
/// Longest lag YIN examines (60 Hz).
pub(crate) const MAX_LAG: usize = 267;
/// Shortest lag YIN accepts (500 Hz).
const MIN_LAG: usize = 32;
/// Samples needed for a frame with the full lag range.
pub(crate) const PITCH_WINDOW: usize = FRAME_LEN + MAX_LAG;
/// YIN's absolute threshold on `d'`.
const YIN_THRESHOLD: f32 = 0.2;
/// Frames quieter than this are never voiced, dBFS.
const VOICING_FLOOR_DB: f32 = -60.0;
/// Energy reported for digital silence, dBFS.
pub(crate) const SILENCE_DB: f32 = -100.0;

/// Features of one 25 ms frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrameFeatures {
    /// RMS energy in dB relative to full scale (a full-scale sine is −3 dBFS), ≥ −100.
    pub energy_db: f32,
    /// Zero crossings per sample (0..1).
    pub zcr: f32,
    /// Fundamental frequency in Hz when the frame is voiced.
    pub f0_hz: Option<f32>,
    /// YIN's `d'` at the chosen lag (0 perfectly periodic, ~1 noise); 1 when not computed.
    pub aperiodicity: f32,
}

/// Features of the frame starting at `window[0]`; `window` holds at least [`FRAME_LEN`]
/// samples and up to [`PITCH_WINDOW`] (fewer lags are searched when it is shorter).
pub(crate) fn analyze_frame(window: &[f32]) -> FrameFeatures {
    let frame = &window[..FRAME_LEN.min(window.len())];
    let mean = frame.iter().sum::<f32>() / frame.len().max(1) as f32;
    let energy_db = rms_db(frame, mean);
    let zcr = zero_crossing_rate(frame, mean);
    let (f0_hz, aperiodicity) = if energy_db < VOICING_FLOOR_DB {
        (None, 1.0)
    } else {
        yin(window, mean)
    };
    FrameFeatures {
        energy_db,
        zcr,
        f0_hz,
        aperiodicity,
    }
}

fn rms_db(frame: &[f32], mean: f32) -> f32 {
    let power = frame.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / frame.len().max(1) as f32;
    if power <= 1e-10 {
        SILENCE_DB
    } else {
        (10.0 * power.log10()).max(SILENCE_DB)
    }
}

fn zero_crossing_rate(frame: &[f32], mean: f32) -> f32 {
    let crossings = frame
        .windows(2)
        .filter(|pair| ((pair[0] - mean) >= 0.0) != ((pair[1] - mean) >= 0.0))
        .count();
    crossings as f32 / frame.len().saturating_sub(1).max(1) as f32
}

/// YIN pitch over `window` (DC `mean` removed): `(f0, d' at the chosen lag)`.
fn yin(window: &[f32], mean: f32) -> (Option<f32>, f32) {
    let max_lag = window.len().saturating_sub(FRAME_LEN).min(MAX_LAG);
    if max_lag <= MIN_LAG + 1 {
        return (None, 1.0);
    }
    let x: Vec<f32> = window[..FRAME_LEN + max_lag]
        .iter()
        .map(|v| v - mean)
        .collect();
    let cmnd = cumulative_mean_normalized_difference(&x, max_lag);
    let Some(lag) = threshold_dip(&cmnd) else {
        let floor = cmnd
            .get(MIN_LAG..)
            .unwrap_or(&[])
            .iter()
            .copied()
            .fold(1.0, f32::min);
        return (None, floor);
    };
    let refined = parabolic_minimum(&cmnd, lag);
    let f0 = SAMPLE_RATE as f32 / refined;
    let voiced = (MIN_F0_HZ..=MAX_F0_HZ).contains(&f0);
    (voiced.then_some(f0), cmnd[lag])
}

/// Steps 1–2: `d'(τ)` from `τ = 0`, stopping one lag past the bottom of the first dip under
/// the threshold (later lags cannot change the result), else at `max_lag`.
fn cumulative_mean_normalized_difference(x: &[f32], max_lag: usize) -> Vec<f32> {
    let head = &x[..FRAME_LEN];
    let mut cmnd = Vec::with_capacity(max_lag + 1);
    cmnd.push(1.0f32);
    let mut running = 0.0f32;
    let mut in_dip = false;
    for lag in 1..=max_lag {
        let shifted = &x[lag..lag + FRAME_LEN];
        let d: f32 = head
            .iter()
            .zip(shifted)
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        running += d;
        let value = if running > 0.0 {
            d * lag as f32 / running
        } else {
            1.0
        };
        let previous = cmnd[lag - 1];
        cmnd.push(value);
        if in_dip && value >= previous {
            break;
        }
        in_dip = in_dip || (lag >= MIN_LAG && value < YIN_THRESHOLD);
    }
    cmnd
}

/// Step 3: the first lag ≥ `MIN_LAG` under the threshold, followed down to its dip's bottom.
/// A dip still falling at the last lag available has no known bottom: no estimate.
fn threshold_dip(cmnd: &[f32]) -> Option<usize> {
    let start = (MIN_LAG..cmnd.len()).find(|&lag| cmnd[lag] < YIN_THRESHOLD)?;
    let mut lag = start;
    while lag + 1 < cmnd.len() && cmnd[lag + 1] < cmnd[lag] {
        lag += 1;
    }
    (lag + 1 < cmnd.len()).then_some(lag)
}

/// Step 4: the lag of the parabola's minimum through `lag − 1, lag, lag + 1`.
fn parabolic_minimum(cmnd: &[f32], lag: usize) -> f32 {
    let before = lag.checked_sub(1).and_then(|i| cmnd.get(i));
    let (Some(&a), Some(&b), Some(&c)) = (before, cmnd.get(lag), cmnd.get(lag + 1)) else {
        return lag as f32;
    };
    let denominator = a - 2.0 * b + c;
    if denominator.abs() < 1e-12 {
        return lag as f32;
    }
    let shift = (0.5 * (a - c) / denominator).clamp(-0.5, 0.5);
    lag as f32 + shift
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::PI;

    fn tone(hz: f32, n: usize, amplitude: f32) -> Vec<f32> {
        (0..n)
            .map(|i| amplitude * (2.0 * PI * hz * i as f32 / SAMPLE_RATE as f32).sin())
            .collect()
    }

    #[test]
    fn tones_across_the_range() {
        for hz in [65.0, 100.0, 147.3, 200.0, 310.0, 480.0] {
            let f = analyze_frame(&tone(hz, PITCH_WINDOW, 0.3));
            let f0 = f.f0_hz.unwrap_or(0.0);
            assert!((f0 - hz).abs() < hz * 0.005, "{hz} Hz gave {f0}");
            assert!(f.aperiodicity < 0.05);
        }
    }

    #[test]
    fn energy_and_zcr_of_a_sine() {
        let f = analyze_frame(&tone(200.0, PITCH_WINDOW, 1.0));
        assert!((f.energy_db + 3.01).abs() < 0.1, "{}", f.energy_db);
        // 200 Hz crosses zero 400 times a second: 0.025 per sample.
        assert!((f.zcr - 0.025).abs() < 0.003, "{}", f.zcr);
    }

    #[test]
    fn silence_and_short_windows_are_unvoiced() {
        let silent = analyze_frame(&[0.0; PITCH_WINDOW]);
        assert_eq!((silent.energy_db, silent.f0_hz), (SILENCE_DB, None));
        let short = analyze_frame(&tone(200.0, FRAME_LEN, 0.3));
        assert_eq!(short.f0_hz, None);
        // A partial lag range still finds high pitches, and does not invent low ones.
        let partial = analyze_frame(&tone(400.0, FRAME_LEN + 100, 0.3));
        assert!(partial.f0_hz.is_some_and(|f| (f - 400.0).abs() < 3.0));
        let cut = analyze_frame(&tone(200.0, FRAME_LEN + 76, 0.3));
        assert_eq!(cut.f0_hz, None);
    }
}
