//! Arousal from prosody: L2-regularised logistic regression on standardised features.
//!
//! `P(high arousal) = σ(b + Σ w_i · (x_i − μ_i) / s_i)`. A feature that cannot be measured (no
//! pitch, no speaker baseline) enters at its training mean, i.e. contributes nothing. The
//! shipped coefficients ([`ArousalModel::shipped`]) come from
//! `cargo run -p nexus-emotion --example calibrate_prosody --release -- <ravdess-dev>`, which
//! also reports their cross-validated accuracy; [`ArousalModel::fit`] is the same fitting code,
//! usable to personalise the model on a user's own labelled utterances.

use serde::{Deserialize, Serialize};

use super::summary::ProsodySummary;

/// Number of features.
pub const FEATURE_COUNT: usize = 8;

/// Feature names, in model order.
pub const FEATURE_NAMES: [&str; FEATURE_COUNT] = [
    "f0_std_st",
    "f0_range_st",
    "f0_re_baseline_st",
    "energy_std_db",
    "energy_re_baseline_db",
    "voiced_fraction",
    "speaking_rate",
    "shimmer_db",
];

/// A feature vector; `None` where a feature could not be measured.
pub type Features = [Option<f32>; FEATURE_COUNT];

/// The model's features of a summary (names in [`FEATURE_NAMES`]).
pub fn features(summary: &ProsodySummary) -> Features {
    let f0 = summary.f0.as_ref();
    let voiced = summary.voiced_frames > 0;
    [
        f0.map(|f| f.std_st),
        f0.map(|f| f.range_st),
        f0.and_then(|f| f.re_baseline_st),
        summary.energy_std_db,
        summary.energy_re_baseline_db,
        voiced.then_some(summary.voiced_fraction),
        voiced.then_some(summary.speaking_rate),
        summary.shimmer_db,
    ]
}

/// Logistic regression over standardised features.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ArousalModel {
    /// Training means μ.
    pub mean: [f32; FEATURE_COUNT],
    /// Training standard deviations s (never 0).
    pub scale: [f32; FEATURE_COUNT],
    /// Weights w.
    pub weights: [f32; FEATURE_COUNT],
    /// Bias b.
    pub bias: f32,
}

// Fitted by examples/calibrate_prosody.rs on RAVDESS (actors 01 and 02, speech, statement 01,
// 26 clips: 16 high arousal, 10 low; disgust excluded; L2 = 0.1). Its output, pasted; a test
// checks that a refit reproduces these numbers. Cross-validated high/low accuracy:
// leave-one-actor-out 23/26 (88.5 %), leave-one-clip-out 25/26 (96.2 %).
const SHIPPED_MEAN: [f32; FEATURE_COUNT] = [
    3.2073429, 9.518362, 1.265464, 6.5831294, 0.5530562, 0.54317385, 3.8012064, 1.1127751,
];
const SHIPPED_SCALE: [f32; FEATURE_COUNT] = [
    1.3906668, 4.6040673, 4.8047404, 1.6043639, 5.6578646, 0.15137663, 0.6733987, 0.32366878,
];
const SHIPPED_WEIGHTS: [f32; FEATURE_COUNT] = [
    0.09678134,
    -0.049247194,
    0.6166245,
    0.7239037,
    0.75507367,
    -0.5103533,
    -0.4461592,
    0.053957127,
];
const SHIPPED_BIAS: f32 = 1.0608894;

/// Gradient-descent settings of [`ArousalModel::fit`].
const FIT_ITERATIONS: usize = 5000;
const FIT_STEP: f64 = 0.1;

impl ArousalModel {
    /// The calibrated model shipped with the crate.
    pub const fn shipped() -> Self {
        Self {
            mean: SHIPPED_MEAN,
            scale: SHIPPED_SCALE,
            weights: SHIPPED_WEIGHTS,
            bias: SHIPPED_BIAS,
        }
    }

    /// `P(high arousal)` of a feature vector.
    pub fn probability(&self, features: &Features) -> f32 {
        let z = self
            .standardize(features)
            .iter()
            .zip(&self.weights)
            .map(|(x, w)| x * w)
            .sum::<f32>();
        sigmoid(self.bias + z)
    }

    fn standardize(&self, features: &Features) -> [f32; FEATURE_COUNT] {
        let mut out = [0.0; FEATURE_COUNT];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = features[i].map_or(0.0, |x| (x - self.mean[i]) / self.scale[i]);
        }
        out
    }

    /// Fits the model to labelled examples (`true` = high arousal) with an L2 penalty
    /// `l2 / 2 · |w|²` (the bias is not penalised), by full-batch gradient descent on the mean
    /// log-loss (convex, so the result does not depend on a seed). `None` without examples.
    pub fn fit(examples: &[(Features, bool)], l2: f32) -> Option<Self> {
        let (mean, scale) = feature_moments(examples)?;
        let mut model = Self {
            mean,
            scale,
            weights: [0.0; FEATURE_COUNT],
            bias: 0.0,
        };
        let rows: Vec<([f32; FEATURE_COUNT], f64)> = examples
            .iter()
            .map(|(f, high)| (model.standardize(f), if *high { 1.0 } else { 0.0 }))
            .collect();
        let n = rows.len() as f64;
        let mut w = [0.0f64; FEATURE_COUNT];
        let mut b = 0.0f64;
        for _ in 0..FIT_ITERATIONS {
            let mut grad_w = [0.0f64; FEATURE_COUNT];
            let mut grad_b = 0.0f64;
            for (x, y) in &rows {
                let z = b + x
                    .iter()
                    .zip(&w)
                    .map(|(xi, wi)| f64::from(*xi) * wi)
                    .sum::<f64>();
                let error = 1.0 / (1.0 + (-z).exp()) - y;
                grad_b += error / n;
                for (g, xi) in grad_w.iter_mut().zip(x) {
                    *g += error * f64::from(*xi) / n;
                }
            }
            for (wi, g) in w.iter_mut().zip(grad_w) {
                *wi -= FIT_STEP * (g + f64::from(l2) * *wi);
            }
            b -= FIT_STEP * grad_b;
        }
        model.weights = w.map(|v| v as f32);
        model.bias = b as f32;
        Some(model)
    }
}

/// Means and standard deviations of the measured values of each feature.
fn feature_moments(
    examples: &[(Features, bool)],
) -> Option<([f32; FEATURE_COUNT], [f32; FEATURE_COUNT])> {
    if examples.is_empty() {
        return None;
    }
    let mut mean = [0.0; FEATURE_COUNT];
    let mut scale = [1.0; FEATURE_COUNT];
    for i in 0..FEATURE_COUNT {
        let values: Vec<f64> = examples
            .iter()
            .filter_map(|(f, _)| f[i])
            .map(f64::from)
            .collect();
        if values.is_empty() {
            continue;
        }
        let m = values.iter().sum::<f64>() / values.len() as f64;
        let var = values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / values.len() as f64;
        mean[i] = m as f32;
        scale[i] = if var.sqrt() > 1e-6 {
            var.sqrt() as f32
        } else {
            1.0
        };
    }
    Some((mean, scale))
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(x: f32, high: bool) -> (Features, bool) {
        let mut f: Features = [None; FEATURE_COUNT];
        f[0] = Some(x);
        (f, high)
    }

    #[test]
    fn fit_separates_a_separable_feature() {
        let examples: Vec<(Features, bool)> = (0..20).map(|i| example(i as f32, i >= 10)).collect();
        let model = ArousalModel::fit(&examples, 0.01).unwrap_or_else(ArousalModel::shipped);
        assert!(model.weights[0] > 1.0);
        for (f, high) in &examples {
            assert_eq!(model.probability(f) > 0.5, *high);
        }
        // Unmeasured features contribute nothing.
        let unknown: Features = [None; FEATURE_COUNT];
        assert!((model.probability(&unknown) - sigmoid(model.bias)).abs() < 1e-6);
        assert!(ArousalModel::fit(&[], 1.0).is_none());
    }

    #[test]
    fn shipped_model_is_finite() {
        let m = ArousalModel::shipped();
        assert!(m.scale.iter().all(|s| *s > 0.0 && s.is_finite()));
        assert!(m.weights.iter().chain(&m.mean).all(|v| v.is_finite()) && m.bias.is_finite());
    }
}
