//! Heart rate from wearables: parsing, validation, HRV and arousal/stress indicators.
//!
//! # Inputs (all over bytes or strings, never paths)
//! - Bluetooth Heart Rate Measurement notifications (characteristic 0x2A37):
//!   [`parse_heart_rate_measurement`], see [`gatt`] for the exact layout.
//! - Apple Health `export.xml`, streamed with a pull parser: [`import_apple_health`]
//!   (`HKQuantityTypeIdentifierHeartRate` and `HKQuantityTypeIdentifierHeartRateVariabilitySDNN`
//!   records; dates keep their UTC offset).
//! - A line-based text log for the CLI and tests: [`parse_hr_log`], format in [`hr_log`].
//!
//! # Validation
//! Every sample goes through [`HrSeries`], which never panics and never silently drops data:
//! - `bpm` must satisfy `20 < bpm < 250` (and be finite). Outside that range it is not a human
//!   heart rate at rest or at work (straps send 0 without contact; 250+ is beyond the maximal
//!   heart rate of adults, about `208 − 0.7 × age`, Tanaka et al. 2001): the sample is
//!   excluded and recorded in [`HrSeries::excluded`] with [`ExclusionReason::ImpossibleBpm`].
//! - A 0x2A37 sample whose sensor reports "no skin contact" is excluded
//!   ([`ExclusionReason::NoSensorContact`]).
//! - RR-intervals must lie in `250..=3000` ms (240 to 20 bpm); others are dropped from the sample
//!   and counted ([`HrSeries::rr_out_of_range`]).
//!
//! # Derivation per window (see [`analysis`])
//! [`analyze_window`] / [`analyze_windows`] summarise a window (5 minutes by default, the
//! short-term recording length of the HRV standards): mean/min/max bpm, RMSSD, and
//! - **arousal** from heart-rate elevation above the resting baseline:
//!   `clamp((mean_bpm / resting_bpm − 1) / 0.4, 0, 1)`: resting → 0, 40 % above resting → 1;
//! - **stress** from RMSSD below the person's own RMSSD baseline:
//!   `clamp(log2(baseline_rmssd / rmssd), 0, 1)`: at or above baseline → 0, half of it → 1;
//! - an [`Affect`](crate::Affect) whose arousal is `0.75 × arousal + 0.25 × stress` (arousal
//!   alone without RR data), valence 0 (cardiac signals tell arousal, not valence: Kreibig 2010),
//!   and a confidence from the sample count, the share of excluded samples and the baseline's
//!   origin.
//!
//! RMSSD follows the Task Force of the European Society of Cardiology and the North American
//! Society of Pacing and Electrophysiology (1996), "Heart rate variability: standards of
//! measurement, physiological interpretation and clinical use", Circulation 93:1043–1065:
//! the square root of the mean of the squared differences of successive normal RR intervals.
//! Artifacts are removed with the 20 % rule (an interval differing by more than 20 % from the
//! previous one is not normal-to-normal; Malik et al. 1989). Lower vagally mediated HRV under
//! stress: Kim et al. 2018, "Stress and heart rate variability: a meta-analysis and review of
//! the literature", Psychiatry Investig 15(3):235–245. Population defaults when no history
//! exists: resting 70 bpm, RMSSD 42 ms (Nunan et al. 2010, short-term norms of healthy adults).
//!
//! Limits: exercise raises heart rate without emotion; these indicators cannot tell the two
//! apart without motion data, so they are inputs for fusion, not verdicts.

pub mod analysis;
pub mod apple_health;
mod datetime;
pub mod gatt;
pub mod hr_log;

use serde::{Deserialize, Serialize};

pub use analysis::{
    Baseline, BaselineSource, DEFAULT_WINDOW_MS, HrReading, RmssdResult, WindowStats,
    analyze_window, analyze_windows, rmssd,
};
pub use apple_health::{HealthImport, SdnnRecord, import_apple_health, import_apple_health_str};
pub use gatt::{
    HEART_RATE_MEASUREMENT_UUID, HeartRateMeasurement, SensorContact, parse_heart_rate_measurement,
};
pub use hr_log::{HrLog, LineError, parse_hr_log, parse_hr_log_str};

/// Lowest plausible heart rate (exclusive), bpm.
pub const MIN_BPM: f32 = 20.0;
/// Highest plausible heart rate (exclusive), bpm.
pub const MAX_BPM: f32 = 250.0;
/// Shortest plausible RR-interval (inclusive), ms.
pub const MIN_RR_MS: f32 = 250.0;
/// Longest plausible RR-interval (inclusive), ms.
pub const MAX_RR_MS: f32 = 3000.0;

/// One heart-rate reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HrSample {
    /// When it was taken, ms since the Unix epoch (UTC).
    pub at_ms: i64,
    /// Heart rate in beats per minute.
    pub bpm: f32,
    /// RR-intervals (time between successive beats) in ms, oldest first; may be empty.
    pub rr_ms: Vec<f32>,
}

/// Whether a heart rate is physiologically plausible (`20 < bpm < 250`, finite).
pub fn is_plausible_bpm(bpm: f32) -> bool {
    bpm.is_finite() && bpm > MIN_BPM && bpm < MAX_BPM
}

/// Whether an RR-interval is physiologically plausible (`250..=3000` ms, finite).
pub fn is_plausible_rr(rr_ms: f32) -> bool {
    rr_ms.is_finite() && (MIN_RR_MS..=MAX_RR_MS).contains(&rr_ms)
}

/// Why a sample was left out of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExclusionReason {
    /// `bpm` was not finite or outside `20 < bpm < 250`.
    ImpossibleBpm,
    /// The sensor reported no skin contact.
    NoSensorContact,
}

/// A sample left out of a series, kept so windows can report their data quality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Excluded {
    /// When it was taken, ms since the Unix epoch.
    pub at_ms: i64,
    /// The value that was sent.
    pub bpm: f32,
    /// Why it was left out.
    pub reason: ExclusionReason,
}

/// What [`HrSeries::push`] did with a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Kept; `rr_dropped` implausible RR-intervals were removed from it.
    Accepted {
        /// RR-intervals removed as outside `250..=3000` ms.
        rr_dropped: usize,
    },
    /// Left out, and recorded in [`HrSeries::excluded`].
    Excluded(ExclusionReason),
}

/// A validated, time-ordered heart-rate series with a record of what was left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HrSeries {
    samples: Vec<HrSample>,
    excluded: Vec<Excluded>,
    rr_out_of_range: usize,
}

impl HrSeries {
    /// An empty series.
    pub fn new() -> Self {
        Self::default()
    }

    /// A series of `samples`, validated one by one.
    pub fn from_samples(samples: impl IntoIterator<Item = HrSample>) -> Self {
        let mut series = Self::new();
        for sample in samples {
            series.push(sample);
        }
        series
    }

    /// Validates `sample` (see the module docs) and keeps it in time order if plausible.
    pub fn push(&mut self, mut sample: HrSample) -> PushOutcome {
        if !is_plausible_bpm(sample.bpm) {
            return self.exclude(&sample, ExclusionReason::ImpossibleBpm);
        }
        let before = sample.rr_ms.len();
        sample.rr_ms.retain(|&rr| is_plausible_rr(rr));
        let rr_dropped = before - sample.rr_ms.len();
        self.rr_out_of_range += rr_dropped;
        let at = self.samples.partition_point(|s| s.at_ms <= sample.at_ms);
        self.samples.insert(at, sample);
        PushOutcome::Accepted { rr_dropped }
    }

    /// Adds a decoded 0x2A37 notification received at `at_ms`; no skin contact excludes it.
    pub fn push_measurement(
        &mut self,
        at_ms: i64,
        measurement: &HeartRateMeasurement,
    ) -> PushOutcome {
        let sample = measurement.to_sample(at_ms);
        if measurement.contact == SensorContact::NotDetected {
            return self.exclude(&sample, ExclusionReason::NoSensorContact);
        }
        self.push(sample)
    }

    /// The accepted samples, oldest first.
    pub fn samples(&self) -> &[HrSample] {
        &self.samples
    }

    /// The samples left out, in arrival order.
    pub fn excluded(&self) -> &[Excluded] {
        &self.excluded
    }

    /// How many implausible RR-intervals were removed from accepted samples.
    pub fn rr_out_of_range(&self) -> usize {
        self.rr_out_of_range
    }

    /// Whether no sample was accepted.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Number of accepted samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    fn exclude(&mut self, sample: &HrSample, reason: ExclusionReason) -> PushOutcome {
        self.excluded.push(Excluded {
            at_ms: sample.at_ms,
            bpm: sample.bpm,
            reason,
        });
        PushOutcome::Excluded(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: i64, bpm: f32, rr_ms: Vec<f32>) -> HrSample {
        HrSample { at_ms, bpm, rr_ms }
    }

    #[test]
    fn impossible_heart_rates_are_excluded_and_counted() {
        let mut series = HrSeries::new();
        for bpm in [0.0, 400.0, 20.0, 250.0, f32::NAN, f32::INFINITY, -70.0] {
            assert_eq!(
                series.push(sample(0, bpm, vec![])),
                PushOutcome::Excluded(ExclusionReason::ImpossibleBpm)
            );
        }
        assert!(series.is_empty());
        assert_eq!(series.excluded().len(), 7);
        assert_eq!(
            series.push(sample(0, 21.0, vec![])),
            PushOutcome::Accepted { rr_dropped: 0 }
        );
        assert_eq!(
            series.push(sample(0, 249.0, vec![])),
            PushOutcome::Accepted { rr_dropped: 0 }
        );
    }

    #[test]
    fn implausible_rr_are_dropped_and_counted() {
        let mut series = HrSeries::new();
        let outcome = series.push(sample(
            0,
            60.0,
            vec![1000.0, 100.0, 5000.0, f32::NAN, 250.0],
        ));
        assert_eq!(outcome, PushOutcome::Accepted { rr_dropped: 3 });
        assert_eq!(series.samples()[0].rr_ms, vec![1000.0, 250.0]);
        assert_eq!(series.rr_out_of_range(), 3);
    }

    #[test]
    fn samples_are_kept_in_time_order() {
        let series = HrSeries::from_samples([
            sample(3000, 60.0, vec![]),
            sample(1000, 61.0, vec![]),
            sample(2000, 62.0, vec![]),
        ]);
        let times: Vec<i64> = series.samples().iter().map(|s| s.at_ms).collect();
        assert_eq!(times, vec![1000, 2000, 3000]);
    }

    #[test]
    fn no_contact_measurements_are_excluded() {
        let mut series = HrSeries::new();
        let m = HeartRateMeasurement {
            bpm: 80,
            contact: SensorContact::NotDetected,
            energy_expended_kj: None,
            rr_ms: vec![],
        };
        assert_eq!(
            series.push_measurement(5, &m),
            PushOutcome::Excluded(ExclusionReason::NoSensorContact)
        );
        let m = HeartRateMeasurement {
            contact: SensorContact::Detected,
            ..m
        };
        assert_eq!(
            series.push_measurement(6, &m),
            PushOutcome::Accepted { rr_dropped: 0 }
        );
    }
}
