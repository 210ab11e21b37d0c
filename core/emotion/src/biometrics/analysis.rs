//! Per-window heart-rate statistics, RMSSD, baselines and the arousal/stress mapping.
//!
//! Rules (sources in the [`biometrics`](super) module docs):
//! - Windows are half-open `[start, end)` in ms; [`analyze_windows`] tiles time into windows
//!   aligned to multiples of the window length and returns those that hold any data.
//! - RMSSD: RR-intervals of the window's samples in order; a chain of successive beats breaks
//!   where two samples are more than 5 s apart (lost notifications). An interval that differs by
//!   more than 20 % from the interval before it is an artifact; a successive difference is used
//!   only when both of its intervals are normal. At least 20 differences are needed.
//! - Resting baseline from history ([`Baseline::from_history`]): the 10th percentile of all
//!   accepted bpm (needs 20 samples) and the median of the 5-minute RMSSD values.
//! - `arousal = clamp((mean_bpm / resting_bpm − 1) / 0.4, 0, 1)`.
//! - `stress = clamp(log2(baseline_rmssd / rmssd), 0, 1)`.
//! - Affect: arousal `0.75 × arousal + 0.25 × stress` (arousal alone without RMSSD), valence 0,
//!   confidence `(1 − e^(−n/10)) × n/(n + excluded) × baseline weight`, where `n` is the number
//!   of accepted samples in the window and the baseline weight is 1 for a caller-given baseline
//!   or one from at least 100 samples, 0.75 from 20–99 samples, 0.5 for population defaults.

use serde::{Deserialize, Serialize};

use super::{HrSample, HrSeries};
use crate::Affect;

/// The default window: 5 minutes, the short-term recording length of the HRV standards.
pub const DEFAULT_WINDOW_MS: i64 = 5 * 60 * 1000;

/// Elevation above resting heart rate that maps to full arousal (40 %).
const FULL_AROUSAL_ELEVATION: f32 = 0.4;
/// Intervals differing more than this fraction from the previous one are artifacts.
const ARTIFACT_FRACTION: f32 = 0.2;
/// Fewer successive differences than this give no RMSSD.
const MIN_RR_DIFFERENCES: usize = 20;
/// Samples further apart than this break the chain of successive beats.
const MAX_RR_GAP_MS: i64 = 5000;
/// Percentile of history bpm taken as resting heart rate.
const RESTING_PERCENTILE: f32 = 0.10;
/// History samples needed for a resting baseline, and for full trust in it.
const MIN_HISTORY_SAMPLES: usize = 20;
const FULL_HISTORY_SAMPLES: usize = 100;
/// Population defaults (healthy adults): resting heart rate and short-term RMSSD
/// (Nunan et al. 2010: RMSSD 42 ± 15 ms).
const DEFAULT_RESTING_BPM: f32 = 70.0;
const DEFAULT_RMSSD_MS: f32 = 42.0;
/// Samples at which the count factor of the confidence reaches 1 − 1/e.
const CONFIDENCE_SAMPLE_SCALE: f32 = 10.0;
/// Weight of stress in the affect's arousal when RMSSD is known.
const STRESS_WEIGHT: f32 = 0.25;

/// Where a baseline comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum BaselineSource {
    /// Given by the caller (for example measured at rest by the user).
    Caller,
    /// Estimated from this many history samples.
    History {
        /// Accepted samples the estimate used.
        samples: usize,
    },
    /// Population averages: nothing is known about this person yet.
    PopulationDefault,
}

/// A person's resting values against which windows are judged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Resting heart rate, bpm.
    pub resting_bpm: f32,
    /// Usual RMSSD, ms, when known.
    pub rmssd_ms: Option<f32>,
    /// Where the values come from.
    pub source: BaselineSource,
}

impl Baseline {
    /// A caller-given baseline; `None` if the values are not plausible.
    pub fn new(resting_bpm: f32, rmssd_ms: Option<f32>) -> Option<Self> {
        let rmssd_ok = rmssd_ms.is_none_or(|r| r.is_finite() && r > 0.0 && r < 1000.0);
        (super::is_plausible_bpm(resting_bpm) && rmssd_ok).then_some(Self {
            resting_bpm,
            rmssd_ms,
            source: BaselineSource::Caller,
        })
    }

    /// Population averages for a person without history (resting 70 bpm, RMSSD 42 ms).
    pub fn population_default() -> Self {
        Self {
            resting_bpm: DEFAULT_RESTING_BPM,
            rmssd_ms: Some(DEFAULT_RMSSD_MS),
            source: BaselineSource::PopulationDefault,
        }
    }

    /// Estimates a baseline from a longer history (days, ideally including sleep and rest):
    /// the 10th percentile of bpm and the median RMSSD of its 5-minute windows. `None` with
    /// fewer than 20 samples.
    pub fn from_history(history: &HrSeries) -> Option<Self> {
        let mut bpm: Vec<f32> = history.samples().iter().map(|s| s.bpm).collect();
        if bpm.len() < MIN_HISTORY_SAMPLES {
            return None;
        }
        let resting_bpm = percentile(&mut bpm, RESTING_PERCENTILE)?;
        let mut window_rmssd: Vec<f32> = windows_of(history, DEFAULT_WINDOW_MS)
            .filter_map(|(start, end)| rmssd(samples_in(history.samples(), start, end)).value_ms)
            .collect();
        Some(Self {
            resting_bpm,
            rmssd_ms: percentile(&mut window_rmssd, 0.5),
            source: BaselineSource::History { samples: bpm.len() },
        })
    }

    fn weight(&self) -> f32 {
        match self.source {
            BaselineSource::Caller => 1.0,
            BaselineSource::History { samples } if samples >= FULL_HISTORY_SAMPLES => 1.0,
            BaselineSource::History { .. } => 0.75,
            BaselineSource::PopulationDefault => 0.5,
        }
    }
}

/// RMSSD of a run of samples, with what went into it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RmssdResult {
    /// RMSSD in ms; `None` with fewer than 20 usable successive differences.
    pub value_ms: Option<f32>,
    /// Successive differences used.
    pub differences: usize,
    /// RR-intervals rejected as artifacts by the 20 % rule.
    pub artifacts: usize,
}

/// Statistics of one window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WindowStats {
    /// Window start, ms since the epoch (inclusive).
    pub start_ms: i64,
    /// Window end, ms since the epoch (exclusive).
    pub end_ms: i64,
    /// Accepted samples in the window.
    pub samples: usize,
    /// Samples excluded in the window (impossible bpm, no sensor contact).
    pub excluded: usize,
    /// Mean bpm of the accepted samples.
    pub mean_bpm: Option<f32>,
    /// Lowest accepted bpm.
    pub min_bpm: Option<f32>,
    /// Highest accepted bpm.
    pub max_bpm: Option<f32>,
    /// HRV of the window's RR-intervals.
    pub rmssd: RmssdResult,
}

/// A window's statistics and what they indicate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HrReading {
    /// The window's statistics.
    pub stats: WindowStats,
    /// Heart-rate elevation mapped to 0..1; `None` without samples.
    pub arousal: Option<f32>,
    /// Low RMSSD relative to the baseline mapped to 0..1; `None` without RMSSD on both sides.
    pub stress: Option<f32>,
    /// The reading as affect (valence 0: heart rate does not tell it).
    pub affect: Affect,
    /// The baseline used.
    pub baseline: Baseline,
}

/// RMSSD of the RR-intervals of `samples` (in time order), with the 20 % artifact rule.
pub fn rmssd(samples: &[HrSample]) -> RmssdResult {
    let mut sum_sq = 0.0f64;
    let mut differences = 0;
    let mut artifacts = 0;
    let mut previous: Option<(f32, bool)> = None; // (interval, was it normal)
    let mut last_at: Option<i64> = None;
    for sample in samples {
        if last_at.is_some_and(|t| sample.at_ms.saturating_sub(t) > MAX_RR_GAP_MS) {
            previous = None;
        }
        last_at = Some(sample.at_ms);
        for &rr in &sample.rr_ms {
            let normal =
                previous.is_none_or(|(prev, _)| (rr - prev).abs() <= ARTIFACT_FRACTION * prev);
            if !normal {
                artifacts += 1;
            }
            if let Some((prev, prev_normal)) = previous
                && normal
                && prev_normal
            {
                sum_sq += f64::from(rr - prev).powi(2);
                differences += 1;
            }
            previous = Some((rr, normal));
        }
    }
    let value_ms =
        (differences >= MIN_RR_DIFFERENCES).then(|| (sum_sq / differences as f64).sqrt() as f32);
    RmssdResult {
        value_ms,
        differences,
        artifacts,
    }
}

/// Statistics and indicators of the window `[start_ms, end_ms)`.
pub fn analyze_window(
    series: &HrSeries,
    start_ms: i64,
    end_ms: i64,
    baseline: &Baseline,
) -> HrReading {
    let stats = window_stats(series, start_ms, end_ms);
    let arousal = stats
        .mean_bpm
        .map(|mean| clamp01((mean / baseline.resting_bpm - 1.0) / FULL_AROUSAL_ELEVATION));
    let stress = match (stats.rmssd.value_ms, baseline.rmssd_ms) {
        (Some(now), Some(usual)) if now > 0.0 && usual > 0.0 => Some(clamp01((usual / now).log2())),
        _ => None,
    };
    let affect = Affect {
        valence: 0.0,
        arousal: combined_arousal(arousal, stress),
        confidence: confidence(&stats, baseline),
    };
    HrReading {
        stats,
        arousal,
        stress,
        affect,
        baseline: *baseline,
    }
}

/// [`analyze_window`] over the windows of `window_ms` (aligned to multiples of it) that hold
/// accepted or excluded samples, oldest first. A `window_ms` below 1 s is raised to 1 s.
pub fn analyze_windows(series: &HrSeries, window_ms: i64, baseline: &Baseline) -> Vec<HrReading> {
    windows_of(series, window_ms.max(1000))
        .map(|(start, end)| analyze_window(series, start, end, baseline))
        .filter(|r| r.stats.samples + r.stats.excluded > 0) // only at i64::MAX, the end of time
        .collect()
}

fn window_stats(series: &HrSeries, start_ms: i64, end_ms: i64) -> WindowStats {
    let samples = samples_in(series.samples(), start_ms, end_ms);
    let excluded = series
        .excluded()
        .iter()
        .filter(|e| (start_ms..end_ms).contains(&e.at_ms))
        .count();
    let bpm = samples.iter().map(|s| s.bpm);
    let mean_bpm = (!samples.is_empty()).then(|| bpm.clone().sum::<f32>() / samples.len() as f32);
    WindowStats {
        start_ms,
        end_ms,
        samples: samples.len(),
        excluded,
        mean_bpm,
        min_bpm: bpm.clone().reduce(f32::min),
        max_bpm: bpm.reduce(f32::max),
        rmssd: rmssd(samples),
    }
}

/// The accepted samples in `[start, end)` (the series is time-ordered).
fn samples_in(samples: &[HrSample], start_ms: i64, end_ms: i64) -> &[HrSample] {
    let from = samples.partition_point(|s| s.at_ms < start_ms);
    let to = samples.partition_point(|s| s.at_ms < end_ms).max(from);
    &samples[from..to]
}

/// The aligned windows `[k·w, (k+1)·w)` that hold at least one sample or exclusion, in time
/// order (empty stretches cost nothing, however long).
fn windows_of(series: &HrSeries, window_ms: i64) -> impl Iterator<Item = (i64, i64)> {
    let mut indices: Vec<i64> = series
        .samples()
        .iter()
        .map(|s| s.at_ms)
        .chain(series.excluded().iter().map(|e| e.at_ms))
        .map(|t| t.div_euclid(window_ms))
        .collect();
    indices.sort_unstable();
    indices.dedup();
    indices.into_iter().map(move |k| {
        let start = k.saturating_mul(window_ms);
        (start, start.saturating_add(window_ms))
    })
}

fn combined_arousal(arousal: Option<f32>, stress: Option<f32>) -> f32 {
    match (arousal, stress) {
        (Some(a), Some(s)) => (1.0 - STRESS_WEIGHT) * a + STRESS_WEIGHT * s,
        (Some(a), None) => a,
        (None, Some(s)) => s,
        (None, None) => 0.0,
    }
}

fn confidence(stats: &WindowStats, baseline: &Baseline) -> f32 {
    if stats.samples == 0 {
        return 0.0;
    }
    let n = stats.samples as f32;
    let count_factor = 1.0 - (-n / CONFIDENCE_SAMPLE_SCALE).exp();
    let quality = n / (n + stats.excluded as f32);
    clamp01(count_factor * quality * baseline.weight())
}

/// The `q`-quantile (nearest rank) of `values`, which it sorts; `None` when empty.
fn percentile(values: &mut [f32], q: f32) -> Option<f32> {
    values.sort_by(f32::total_cmp);
    let last = values.len().checked_sub(1)?;
    let rank = ((last as f32) * q).round() as usize;
    values.get(rank.min(last)).copied()
}

fn clamp01(x: f32) -> f32 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady(start_ms: i64, seconds: i64, bpm: f32, rr: impl Fn(i64) -> f32) -> Vec<HrSample> {
        (0..seconds)
            .map(|i| HrSample {
                at_ms: start_ms + i * 1000,
                bpm,
                rr_ms: vec![rr(i)],
            })
            .collect()
    }

    #[test]
    fn rmssd_of_alternating_intervals() {
        // 800, 840, 800, ... : every successive difference is 40 ms.
        let samples = steady(0, 60, 73.0, |i| if i % 2 == 0 { 800.0 } else { 840.0 });
        let r = rmssd(&samples);
        assert_eq!(r.differences, 59);
        assert_eq!(r.artifacts, 0);
        assert!((r.value_ms.unwrap_or(0.0) - 40.0).abs() < 1e-3);
    }

    #[test]
    fn rmssd_drops_artifacts_by_the_20_percent_rule() {
        // A missed beat (1600 ms) in steady 800 ms intervals.
        let samples = steady(0, 40, 75.0, |i| if i == 20 { 1600.0 } else { 800.0 });
        let r = rmssd(&samples);
        // 1600 differs from 800 (artifact); the next 800 differs from 1600 (artifact too).
        assert_eq!(r.artifacts, 2);
        assert_eq!(r.value_ms, Some(0.0));
        assert_eq!(r.differences, 39 - 3);
    }

    #[test]
    fn rmssd_needs_enough_beats_and_breaks_at_gaps() {
        let few = steady(0, 10, 75.0, |_| 800.0);
        assert_eq!(rmssd(&few).value_ms, None);
        let mut gapped = steady(0, 15, 75.0, |_| 800.0);
        gapped.extend(steady(60_000, 15, 75.0, |_| 900.0));
        let r = rmssd(&gapped);
        assert_eq!(r.differences, 28);
        assert_eq!(r.artifacts, 0);
    }

    #[test]
    fn arousal_and_stress_follow_the_documented_mapping() {
        let baseline = Baseline::new(60.0, Some(40.0)).unwrap_or_else(Baseline::population_default);
        // 72 bpm = 20 % over resting -> arousal 0.5; RMSSD 20 = half of 40 -> stress 1.
        let series =
            HrSeries::from_samples(steady(
                0,
                300,
                72.0,
                |i| if i % 2 == 0 { 820.0 } else { 840.0 },
            ));
        let reading = analyze_window(&series, 0, DEFAULT_WINDOW_MS, &baseline);
        assert_eq!(reading.stats.samples, 300);
        assert!((reading.arousal.unwrap_or(0.0) - 0.5).abs() < 1e-4);
        assert!((reading.stress.unwrap_or(0.0) - 1.0).abs() < 1e-4);
        assert!((reading.affect.arousal - (0.75 * 0.5 + 0.25)).abs() < 1e-4);
        assert_eq!(reading.affect.valence, 0.0);
        assert!(reading.affect.confidence > 0.99);
    }

    #[test]
    fn resting_heart_rate_gives_no_arousal() {
        let baseline = Baseline::new(60.0, None).unwrap_or_else(Baseline::population_default);
        let series = HrSeries::from_samples(steady(0, 100, 55.0, |_| 1090.0));
        let reading = analyze_window(&series, 0, DEFAULT_WINDOW_MS, &baseline);
        assert_eq!(reading.arousal, Some(0.0));
        assert_eq!(reading.stress, None);
    }

    #[test]
    fn confidence_grows_with_samples_and_drops_with_exclusions() {
        let baseline = Baseline::population_default();
        let one = HrSeries::from_samples(steady(0, 1, 80.0, |_| 750.0));
        let c1 = analyze_window(&one, 0, DEFAULT_WINDOW_MS, &baseline)
            .affect
            .confidence;
        let many = HrSeries::from_samples(steady(0, 50, 80.0, |_| 750.0));
        let c50 = analyze_window(&many, 0, DEFAULT_WINDOW_MS, &baseline)
            .affect
            .confidence;
        let mut noisy = many.clone();
        for i in 0..50 {
            noisy.push(HrSample {
                at_ms: i * 1000 + 500,
                bpm: 0.0,
                rr_ms: vec![],
            });
        }
        let cn = analyze_window(&noisy, 0, DEFAULT_WINDOW_MS, &baseline)
            .affect
            .confidence;
        assert!(c1 < 0.1 && c50 > 0.45 && cn < c50 * 0.6, "{c1} {c50} {cn}");
        let empty = analyze_window(&HrSeries::new(), 0, 1000, &baseline);
        assert_eq!((empty.arousal, empty.affect.confidence), (None, 0.0));
    }

    #[test]
    fn baseline_from_history() {
        let mut samples = steady(0, 600, 58.0, |i| if i % 2 == 0 { 1000.0 } else { 1050.0 });
        samples.extend(steady(600_000, 600, 90.0, |_| 666.0));
        let baseline = Baseline::from_history(&HrSeries::from_samples(samples));
        let baseline = baseline.unwrap_or_else(Baseline::population_default);
        assert_eq!(baseline.resting_bpm, 58.0);
        assert_eq!(baseline.source, BaselineSource::History { samples: 1200 });
        assert!(baseline.rmssd_ms.is_some());
        assert!(Baseline::from_history(&HrSeries::new()).is_none());
        assert!(Baseline::new(0.0, None).is_none());
        assert!(Baseline::new(60.0, Some(f32::NAN)).is_none());
    }

    #[test]
    fn windows_tile_the_series() {
        let series = HrSeries::from_samples(steady(250_000, 200, 70.0, |_| 857.0));
        let readings = analyze_windows(&series, DEFAULT_WINDOW_MS, &Baseline::population_default());
        let bounds: Vec<(i64, i64, usize)> = readings
            .iter()
            .map(|r| (r.stats.start_ms, r.stats.end_ms, r.stats.samples))
            .collect();
        assert_eq!(bounds, vec![(0, 300_000, 50), (300_000, 600_000, 150)]);
        assert!(analyze_windows(&HrSeries::new(), 0, &Baseline::population_default()).is_empty());
    }
}
