//! Utterance-level statistics over frame features.
//!
//! Rules:
//! - **Speech level** = 95th percentile of frame energy. Below −55 dBFS the input is silent.
//!   Frames within 30 dB of the speech level (and above −55 dBFS) are *active* (speech or
//!   breath); the others are silence.
//! - **F0** over voiced active frames, median-filtered (5 frames) within each voiced run to
//!   remove isolated octave errors; needs 5 voiced frames. Mean is the geometric mean (mean in
//!   semitones), spread is the standard deviation in semitones, range is the 5th–95th percentile
//!   distance in semitones; relative to a [`SpeakerBaseline`] when one is given:
//!   `12 · log2(median / baseline)`.
//! - **Energy** mean and standard deviation (dB) over active frames; relative to the baseline's
//!   energy when given (so microphone gain cancels out).
//! - **Voiced fraction** = voiced active frames / active frames.
//! - **Speaking rate**: syllable nuclei per second of the speech span (first to last active
//!   frame), after De Jong & Wempe (2009), "Praat script to detect syllable nuclei and measure
//!   speech rate automatically", Behavior Research Methods 41(2):385–390: peaks of the energy
//!   contour (smoothed over 5 frames) that are voiced, at most 25 dB below the speech level, and
//!   separated from the previous nucleus by a dip of at least 2 dB.
//! - **Pause ratio**: silent runs of at least 200 ms inside the speech span / span.
//! - **Jitter-like**: mean absolute difference of the pitch periods of consecutive voiced frames
//!   over the mean period; **shimmer-like**: mean absolute energy difference (dB) of consecutive
//!   voiced frames. Frame-level (10 ms) proxies of Praat's cycle-to-cycle jitter (local) and
//!   shimmer (local, dB), not the same numbers; pairs whose pitch jumps more than 20 % are
//!   skipped as tracking errors.

use serde::{Deserialize, Serialize};

use super::frame::{FrameFeatures, HOP_LEN, SAMPLE_RATE};

const SILENCE_FLOOR_DB: f32 = -55.0;
const ACTIVE_RANGE_DB: f32 = 30.0;
const NUCLEUS_RANGE_DB: f32 = 25.0;
const NUCLEUS_MIN_DIP_DB: f32 = 2.0;
const SMOOTHING_FRAMES: usize = 5;
const MEDIAN_FRAMES: usize = 5;
const MIN_VOICED_FRAMES: usize = 5;
const MIN_PAUSE_FRAMES: usize = 20;
const MAX_PERIOD_JUMP: f32 = 0.2;
const FRAMES_PER_SECOND: f32 = SAMPLE_RATE as f32 / HOP_LEN as f32;

/// A speaker's usual voice, to express an utterance relative to it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpeakerBaseline {
    /// Usual (median) F0, Hz.
    pub f0_hz: f32,
    /// Usual mean energy of active speech, dBFS, with the same microphone.
    pub energy_db: f32,
}

impl SpeakerBaseline {
    /// The median F0 and energy over earlier utterances of the same speaker (label-free);
    /// `None` when none of them had a pitch.
    pub fn from_summaries<'a>(
        summaries: impl IntoIterator<Item = &'a ProsodySummary>,
    ) -> Option<Self> {
        let (mut f0, mut energy): (Vec<f32>, Vec<f32>) = summaries
            .into_iter()
            .filter_map(|s| Some((s.f0.as_ref()?.median_hz, s.energy_mean_db?)))
            .unzip();
        Some(Self {
            f0_hz: median(&mut f0)?,
            energy_db: median(&mut energy)?,
        })
    }
}

/// Pitch statistics of an utterance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct F0Stats {
    /// Geometric mean F0, Hz.
    pub mean_hz: f32,
    /// Median F0, Hz.
    pub median_hz: f32,
    /// Standard deviation, semitones.
    pub std_st: f32,
    /// 5th to 95th percentile range, semitones.
    pub range_st: f32,
    /// Median relative to the speaker baseline, semitones (positive = higher than usual).
    pub re_baseline_st: Option<f32>,
}

/// Problems of the raw samples (all repaired before analysis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SignalQuality {
    /// Samples received.
    pub samples: u64,
    /// NaN or infinite samples, replaced by 0.
    pub nonfinite_samples: u64,
    /// Finite samples outside −1..1, clamped.
    pub out_of_range_samples: u64,
    /// Samples at full scale (|x| ≥ 0.999 after clamping): clipping.
    pub clipped_samples: u64,
}

impl SignalQuality {
    /// Share of damaged samples (non-finite, out of range or clipped).
    pub fn damaged_fraction(&self) -> f32 {
        let damaged = self.nonfinite_samples + self.out_of_range_samples + self.clipped_samples;
        if self.samples == 0 {
            0.0
        } else {
            (damaged as f64 / self.samples as f64) as f32
        }
    }

    /// Whether more than 0.1 % of the samples were damaged.
    pub fn is_flagged(&self) -> bool {
        self.damaged_fraction() > 0.001
    }

    pub(crate) fn record(&mut self, raw: f32) -> f32 {
        self.samples += 1;
        let x = if raw.is_finite() {
            if raw.abs() > 1.0 {
                self.out_of_range_samples += 1;
            }
            raw.clamp(-1.0, 1.0)
        } else {
            self.nonfinite_samples += 1;
            0.0
        };
        if x.abs() >= 0.999 {
            self.clipped_samples += 1;
        }
        x
    }
}

/// Prosodic description of an utterance (or of everything pushed so far).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProsodySummary {
    /// Audio duration, seconds.
    pub duration_s: f32,
    /// Frames analysed (10 ms hop).
    pub frames: usize,
    /// Less than one 25 ms frame of audio: nothing could be measured.
    pub too_short: bool,
    /// No speech-level energy (speech level under −55 dBFS).
    pub silent: bool,
    /// Frames of speech or breath (within 30 dB of the speech level).
    pub active_frames: usize,
    /// Active frames with a pitch.
    pub voiced_frames: usize,
    /// 95th percentile of frame energy, dBFS.
    pub speech_level_db: f32,
    /// Pitch statistics (`None` with fewer than 5 voiced frames).
    pub f0: Option<F0Stats>,
    /// Mean energy of active frames, dBFS.
    pub energy_mean_db: Option<f32>,
    /// Standard deviation of the energy of active frames, dB.
    pub energy_std_db: Option<f32>,
    /// Mean energy relative to the speaker baseline, dB.
    pub energy_re_baseline_db: Option<f32>,
    /// Voiced active frames / active frames.
    pub voiced_fraction: f32,
    /// Syllable nuclei found.
    pub syllable_nuclei: usize,
    /// Syllable nuclei per second of the speech span.
    pub speaking_rate: f32,
    /// Silent share of the speech span (pauses of 200 ms or more).
    pub pause_ratio: f32,
    /// Relative pitch-period change between consecutive voiced frames.
    pub jitter: Option<f32>,
    /// Energy change between consecutive voiced frames, dB.
    pub shimmer_db: Option<f32>,
    /// Mean zero-crossing rate of active frames.
    pub zcr_mean: f32,
    /// Problems of the raw samples.
    pub quality: SignalQuality,
}

impl ProsodySummary {
    /// The same summary with its relative values recomputed against `baseline` (removed for
    /// `None`), e.g. once a baseline has been learned from later utterances.
    pub fn with_baseline(mut self, baseline: Option<&SpeakerBaseline>) -> Self {
        if let Some(f0) = self.f0.as_mut() {
            f0.re_baseline_st = relative_f0(f0.median_hz, baseline);
        }
        self.energy_re_baseline_db = self
            .energy_mean_db
            .zip(baseline)
            .map(|(e, b)| e - b.energy_db);
        self
    }
}

fn relative_f0(median_hz: f32, baseline: Option<&SpeakerBaseline>) -> Option<f32> {
    baseline
        .filter(|b| b.f0_hz.is_finite() && b.f0_hz > 0.0)
        .map(|b| hz_to_semitones(median_hz) - hz_to_semitones(b.f0_hz))
}

/// Statistics of `frames` (rules in the module docs).
pub(crate) fn summarize(
    frames: &[FrameFeatures],
    quality: SignalQuality,
    baseline: Option<&SpeakerBaseline>,
) -> ProsodySummary {
    let duration_s = quality.samples as f32 / SAMPLE_RATE as f32;
    let mut energies: Vec<f32> = frames.iter().map(|f| f.energy_db).collect();
    let speech_level_db = percentile(&mut energies, 0.95).unwrap_or(super::frame::SILENCE_DB);
    let threshold = (speech_level_db - ACTIVE_RANGE_DB).max(SILENCE_FLOOR_DB);
    let silent = frames.is_empty() || speech_level_db < SILENCE_FLOOR_DB;
    let active: Vec<bool> = frames
        .iter()
        .map(|f| !silent && f.energy_db >= threshold)
        .collect();
    let voiced: Vec<bool> = frames
        .iter()
        .zip(&active)
        .map(|(f, &a)| a && f.f0_hz.is_some())
        .collect();
    let active_frames = active.iter().filter(|&&a| a).count();
    let voiced_frames = voiced.iter().filter(|&&v| v).count();
    let active_energy: Vec<f32> = frames
        .iter()
        .zip(&active)
        .filter_map(|(f, &a)| a.then_some(f.energy_db))
        .collect();
    let (energy_mean_db, energy_std_db) = mean_std(&active_energy).unzip();
    let span = speech_span(&active);
    let syllable_nuclei = syllable_nuclei(frames, &voiced, speech_level_db);
    let span_s = span.map_or(0.0, |(first, last)| {
        (last - first + 1) as f32 / FRAMES_PER_SECOND
    });
    let (jitter, shimmer_db) = perturbation(frames, &voiced);
    ProsodySummary {
        duration_s,
        frames: frames.len(),
        too_short: frames.is_empty(),
        silent,
        active_frames,
        voiced_frames,
        speech_level_db,
        f0: f0_stats(frames, &voiced, baseline),
        energy_mean_db,
        energy_std_db,
        energy_re_baseline_db: energy_mean_db.zip(baseline).map(|(e, b)| e - b.energy_db),
        voiced_fraction: ratio(voiced_frames, active_frames),
        syllable_nuclei,
        speaking_rate: if span_s > 0.0 {
            syllable_nuclei as f32 / span_s
        } else {
            0.0
        },
        pause_ratio: span.map_or(0.0, |s| pause_ratio(&active, s)),
        jitter,
        shimmer_db,
        zcr_mean: mean_of(
            frames
                .iter()
                .zip(&active)
                .filter(|(_, a)| **a)
                .map(|(f, _)| f.zcr),
        ),
        quality,
    }
}

fn f0_stats(
    frames: &[FrameFeatures],
    voiced: &[bool],
    baseline: Option<&SpeakerBaseline>,
) -> Option<F0Stats> {
    let mut semitones: Vec<f32> = voiced_runs(voiced)
        .flat_map(|(start, end)| {
            let run: Vec<f32> = frames[start..end].iter().filter_map(|f| f.f0_hz).collect();
            median_filter(&run, MEDIAN_FRAMES)
        })
        .map(hz_to_semitones)
        .collect();
    if semitones.len() < MIN_VOICED_FRAMES {
        return None;
    }
    let (mean_st, std_st) = mean_std(&semitones)?;
    let p05 = percentile(&mut semitones, 0.05)?;
    let p95 = percentile(&mut semitones, 0.95)?;
    let median_hz = semitones_to_hz(percentile(&mut semitones, 0.5)?);
    Some(F0Stats {
        mean_hz: semitones_to_hz(mean_st),
        median_hz,
        std_st,
        range_st: p95 - p05,
        re_baseline_st: relative_f0(median_hz, baseline),
    })
}

/// Syllable nuclei (module docs).
fn syllable_nuclei(frames: &[FrameFeatures], voiced: &[bool], speech_level_db: f32) -> usize {
    let smooth = moving_average(
        &frames.iter().map(|f| f.energy_db).collect::<Vec<_>>(),
        SMOOTHING_FRAMES,
    );
    let floor = (speech_level_db - NUCLEUS_RANGE_DB).max(SILENCE_FLOOR_DB);
    let mut nuclei: Vec<usize> = Vec::new();
    for i in 1..smooth.len().saturating_sub(1) {
        let is_peak = smooth[i] > smooth[i - 1] && smooth[i] >= smooth[i + 1];
        if !is_peak || smooth[i] < floor || !voiced[i] {
            continue;
        }
        match nuclei.last().copied() {
            Some(previous) => {
                let dip = smooth[previous..=i]
                    .iter()
                    .copied()
                    .fold(f32::INFINITY, f32::min);
                if smooth[i] - dip >= NUCLEUS_MIN_DIP_DB
                    && smooth[previous] - dip >= NUCLEUS_MIN_DIP_DB
                {
                    nuclei.push(i);
                } else if smooth[i] > smooth[previous]
                    && let Some(last) = nuclei.last_mut()
                {
                    *last = i;
                }
            }
            None => nuclei.push(i),
        }
    }
    nuclei.len()
}

/// `(jitter, shimmer_db)` over consecutive voiced frames.
fn perturbation(frames: &[FrameFeatures], voiced: &[bool]) -> (Option<f32>, Option<f32>) {
    let mut period_diffs = Vec::new();
    let mut periods = Vec::new();
    let mut energy_diffs = Vec::new();
    for i in 1..frames.len() {
        if !(voiced[i - 1] && voiced[i]) {
            continue;
        }
        let (Some(a), Some(b)) = (frames[i - 1].f0_hz, frames[i].f0_hz) else {
            continue;
        };
        let (ta, tb) = (1.0 / a, 1.0 / b);
        if (ta - tb).abs() > MAX_PERIOD_JUMP * ta.min(tb) {
            continue;
        }
        period_diffs.push((ta - tb).abs());
        periods.push(ta);
        energy_diffs.push((frames[i].energy_db - frames[i - 1].energy_db).abs());
    }
    if period_diffs.len() < MIN_VOICED_FRAMES {
        return (None, None);
    }
    let jitter = mean_of(period_diffs.iter().copied()) / mean_of(periods.iter().copied());
    (Some(jitter), Some(mean_of(energy_diffs.iter().copied())))
}

fn pause_ratio(active: &[bool], (first, last): (usize, usize)) -> f32 {
    let mut paused = 0;
    let mut run = 0;
    for &a in &active[first..=last] {
        if a {
            if run >= MIN_PAUSE_FRAMES {
                paused += run;
            }
            run = 0;
        } else {
            run += 1;
        }
    }
    ratio(paused, last - first + 1)
}

/// First and last active frame.
fn speech_span(active: &[bool]) -> Option<(usize, usize)> {
    let first = active.iter().position(|&a| a)?;
    let last = active.iter().rposition(|&a| a)?;
    Some((first, last))
}

/// `[start, end)` of each run of `true`.
fn voiced_runs(voiced: &[bool]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < voiced.len() && !voiced[i] {
            i += 1;
        }
        let start = i;
        while i < voiced.len() && voiced[i] {
            i += 1;
        }
        (start < i).then_some((start, i))
    })
}

fn median_filter(values: &[f32], width: usize) -> Vec<f32> {
    let half = width / 2;
    (0..values.len())
        .map(|i| {
            let from = i.saturating_sub(half);
            let to = (i + half + 1).min(values.len());
            let mut window = values[from..to].to_vec();
            median(&mut window).unwrap_or(values[i])
        })
        .collect()
}

fn moving_average(values: &[f32], width: usize) -> Vec<f32> {
    let half = width / 2;
    (0..values.len())
        .map(|i| {
            let from = i.saturating_sub(half);
            let to = (i + half + 1).min(values.len());
            mean_of(values[from..to].iter().copied())
        })
        .collect()
}

pub(crate) fn hz_to_semitones(hz: f32) -> f32 {
    12.0 * hz.max(1e-3).log2()
}

fn semitones_to_hz(st: f32) -> f32 {
    (st / 12.0).exp2()
}

fn mean_of(values: impl Iterator<Item = f32>) -> f32 {
    let (sum, n) = values.fold((0.0f64, 0usize), |(s, n), v| (s + f64::from(v), n + 1));
    if n == 0 { 0.0 } else { (sum / n as f64) as f32 }
}

fn mean_std(values: &[f32]) -> Option<(f32, f32)> {
    if values.is_empty() {
        return None;
    }
    let mean = mean_of(values.iter().copied());
    let variance = mean_of(values.iter().map(|v| (v - mean).powi(2)));
    Some((mean, variance.sqrt()))
}

fn ratio(part: usize, whole: usize) -> f32 {
    if whole == 0 {
        0.0
    } else {
        part as f32 / whole as f32
    }
}

/// The `q`-quantile (nearest rank) of `values`, which it sorts.
fn percentile(values: &mut [f32], q: f32) -> Option<f32> {
    values.sort_by(f32::total_cmp);
    let last = values.len().checked_sub(1)?;
    values.get(((last as f32) * q).round() as usize).copied()
}

fn median(values: &mut [f32]) -> Option<f32> {
    percentile(values, 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(energy_db: f32, f0_hz: Option<f32>) -> FrameFeatures {
        FrameFeatures {
            energy_db,
            zcr: 0.05,
            f0_hz,
            aperiodicity: 0.1,
        }
    }

    fn quality(frames: usize) -> SignalQuality {
        SignalQuality {
            samples: (frames * HOP_LEN) as u64,
            ..SignalQuality::default()
        }
    }

    #[test]
    fn syllables_pauses_and_pitch_of_a_synthetic_contour() {
        // Four "syllables" of 150 ms with an energy bump, 300 ms pause after the second.
        let mut frames = Vec::new();
        for syllable in 0..4 {
            for i in 0..15 {
                let bump = 10.0 * (std::f32::consts::PI * i as f32 / 14.0).sin();
                frames.push(frame(-30.0 + bump, Some(100.0 + 10.0 * syllable as f32)));
            }
            let gap = if syllable == 1 { 30 } else { 5 };
            frames.extend(std::iter::repeat_n(frame(-90.0, None), gap));
        }
        let s = summarize(&frames, quality(frames.len()), None);
        assert!(!s.silent);
        assert_eq!(s.syllable_nuclei, 4);
        assert_eq!(s.voiced_frames, 60);
        assert_eq!(s.voiced_fraction, 1.0);
        // Span: 60 voiced + 5 + 30 + 5 gap frames = 100 frames = 1 s.
        assert!((s.speaking_rate - 4.0).abs() < 1e-3, "{}", s.speaking_rate);
        assert!((s.pause_ratio - 0.30).abs() < 1e-3, "{}", s.pause_ratio);
        let f0 = s.f0.unwrap_or_else(|| panic!("pitch expected"));
        assert!((f0.median_hz - 110.0).abs() < 0.5 || (f0.median_hz - 120.0).abs() < 0.5);
        assert!(f0.range_st > 4.0 && f0.range_st < 5.0, "{}", f0.range_st);
    }

    #[test]
    fn baseline_relative_values() {
        let frames = vec![frame(-20.0, Some(220.0)); 50];
        let baseline = SpeakerBaseline {
            f0_hz: 110.0,
            energy_db: -26.0,
        };
        let s = summarize(&frames, quality(50), Some(&baseline));
        let f0 = s.f0.unwrap_or_else(|| panic!("pitch expected"));
        assert!((f0.re_baseline_st.unwrap_or(0.0) - 12.0).abs() < 1e-3);
        assert!((s.energy_re_baseline_db.unwrap_or(0.0) - 6.0).abs() < 1e-3);
        assert_eq!(f0.std_st, 0.0);
        let plain = s.clone().with_baseline(None);
        assert!(plain.energy_re_baseline_db.is_none());
        assert_eq!(plain.with_baseline(Some(&baseline)), s);
        let from = SpeakerBaseline::from_summaries([&s, &s]);
        assert!(from.is_some_and(|b| (b.f0_hz - 220.0).abs() < 0.01));
        assert_eq!(SpeakerBaseline::from_summaries([]), None);
    }

    #[test]
    fn silence_and_nothing() {
        let s = summarize(&vec![frame(-100.0, None); 30], quality(30), None);
        assert!(s.silent && s.f0.is_none() && s.active_frames == 0);
        let empty = summarize(&[], SignalQuality::default(), None);
        assert!(empty.too_short && empty.silent);
    }

    #[test]
    fn quality_records_damage() {
        let mut q = SignalQuality::default();
        let repaired: Vec<f32> = [0.5, f32::NAN, f32::INFINITY, 1.5, -1.0, 0.0]
            .into_iter()
            .map(|x| q.record(x))
            .collect();
        assert_eq!(repaired, vec![0.5, 0.0, 0.0, 1.0, -1.0, 0.0]);
        assert_eq!(
            (
                q.samples,
                q.nonfinite_samples,
                q.out_of_range_samples,
                q.clipped_samples
            ),
            (6, 2, 1, 2)
        );
        assert!(q.is_flagged());
    }
}
