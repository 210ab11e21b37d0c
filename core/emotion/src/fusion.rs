//! Fusion: the readings of every signal into one time-stamped emotional state.
//!
//! # Inputs
//! A [`SourceReading`] per observation: its [`Source`] (text, voice, heart, face), when it was
//! observed, its [`Affect`] (valence, arousal, confidence) and, for the sources that give one,
//! an Ekman label distribution. The constructors [`SourceReading::from_text`],
//! [`from_prosody`](SourceReading::from_prosody), [`from_heart`](SourceReading::from_heart) and
//! [`from_face`](SourceReading::from_face) turn the readings of this crate into one.
//!
//! # Rules ([`fuse`])
//! - **Usable readings**: finite numbers, confidence above 0, observed at most
//!   [`FusionConfig::max_age_ms`] before `now` (readings up to
//!   [`FusionConfig::future_tolerance_ms`] in the future count as "now", clocks differ; later
//!   ones are ignored). Values are clamped to their ranges.
//! - **Weight** of a reading = `prior(source) × confidence × decay × recency`, where
//!   `decay = 0.5^(age / half_life(source))`: older readings count less (time decay). Text keeps
//!   its meaning longest (a message describes the last minutes), heart rate and voice less, a
//!   face the shortest (expressions change in seconds). `recency = 0.5^k` for a reading with `k`
//!   newer readings of the same source: the latest message says more about now than the one
//!   before it, however close in time. The priors say how much a source is trusted relative to
//!   the others at equal confidence.
//! - **What a source can tell**: heart rate and voice prosody carry arousal only (their valence
//!   is not estimated: Kreibig 2010, Scherer 2003), so they take no part in valence or labels;
//!   text and face inform all three. Each dimension is the weighted mean over the sources that
//!   inform it; the weights of each dimension are normalised to sum to 1 and reported per
//!   reading ([`Contribution`]).
//! - **Labels**: the 7 Ekman groups (the face's happy/sad/... map to joy/sadness/...), each
//!   source's scores normalised to sum to 1 and mixed with the label weights. Without a labelling
//!   source the distribution is empty.
//! - **Confidence**: the evidence `1 − Π(1 − confidence × decay × recency)` (independent sources add up,
//!   none exceeds 1), lowered when sources disagree: `× (1 − 0.6 × disagreement)`, where
//!   disagreement is the larger of the weighted standard deviation of valence (0..1 on the
//!   −1..1 scale) and twice that of arousal (0..1 on the 0..1 scale).
//! - **Status**: no usable reading gives [`FusedStatus::NoSignal`] (valence 0, arousal 0,
//!   confidence 0, no labels); a confidence under [`FusionConfig::low_confidence`] gives
//!   [`FusedStatus::LowConfidence`] (callers should not act on it, e.g. no tone change).
//!
//! Pure functions over values: no clock, no storage.

use serde::{Deserialize, Serialize};

use crate::Affect;
use crate::biometrics::HrReading;
use crate::face::{Emotion, FaceReading};
use crate::prosody::ProsodyReading;
use crate::text::{Ekman, NUM_EKMAN, TextReading};

/// A signal Nexus reads emotion from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// What the user wrote.
    Text,
    /// How the user sounded (prosody).
    Voice,
    /// Heart rate from a wearable.
    Heart,
    /// Facial expression.
    Face,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 4] = [Source::Text, Source::Voice, Source::Heart, Source::Face];

    /// Lower-case name (`text`, `voice`, `heart`, `face`).
    pub fn name(self) -> &'static str {
        match self {
            Source::Text => "text",
            Source::Voice => "voice",
            Source::Heart => "heart",
            Source::Face => "face",
        }
    }

    /// Whether the source tells valence and labels (text, face) or arousal only (voice, heart).
    pub fn tells_valence(self) -> bool {
        matches!(self, Source::Text | Source::Face)
    }
}

/// One observation of one signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceReading {
    /// The signal.
    pub source: Source,
    /// When it was observed (ms since the epoch).
    pub at_ms: i64,
    /// Valence, arousal, confidence.
    pub affect: Affect,
    /// Ekman scores in [`Ekman::ALL`] order (any non-negative scale; normalised by fusion), for
    /// the sources that give labels.
    pub ekman: Option<[f32; NUM_EKMAN]>,
}

impl SourceReading {
    /// A text reading (its Ekman scores).
    pub fn from_text(reading: &TextReading, at_ms: i64) -> Self {
        let mut ekman = [0.0; NUM_EKMAN];
        for &(group, score) in &reading.ekman {
            ekman[group.index()] = score;
        }
        Self {
            source: Source::Text,
            at_ms,
            affect: reading.affect(),
            ekman: (!reading.flags.empty).then_some(ekman),
        }
    }

    /// A voice prosody reading (arousal only).
    pub fn from_prosody(reading: &ProsodyReading, at_ms: i64) -> Self {
        Self {
            source: Source::Voice,
            at_ms,
            affect: reading.affect,
            ekman: None,
        }
    }

    /// A heart-rate window (arousal only), observed at the window's end.
    pub fn from_heart(reading: &HrReading) -> Self {
        Self {
            source: Source::Heart,
            at_ms: reading.stats.end_ms,
            affect: reading.affect,
            ekman: None,
        }
    }

    /// A face reading (its emotion distribution as Ekman groups).
    pub fn from_face(reading: &FaceReading, at_ms: i64) -> Self {
        let mut ekman = [0.0; NUM_EKMAN];
        for emotion in Emotion::ALL {
            ekman[face_to_ekman(emotion).index()] = reading.emotions.get(emotion);
        }
        Self {
            source: Source::Face,
            at_ms,
            affect: reading.affect,
            ekman: Some(ekman),
        }
    }
}

/// The Ekman group of a face label.
pub fn face_to_ekman(emotion: Emotion) -> Ekman {
    match emotion {
        Emotion::Happy => Ekman::Joy,
        Emotion::Sad => Ekman::Sadness,
        Emotion::Angry => Ekman::Anger,
        Emotion::Surprised => Ekman::Surprise,
        Emotion::Fearful => Ekman::Fear,
        Emotion::Disgusted => Ekman::Disgust,
        Emotion::Neutral => Ekman::Neutral,
    }
}

/// The knobs of [`fuse`] (defaults documented on each field).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FusionConfig {
    /// Readings older than this are ignored (default 1 hour).
    pub max_age_ms: i64,
    /// Readings up to this far in the future count as "now" (default 1 minute).
    pub future_tolerance_ms: i64,
    /// Below this confidence the state is [`FusedStatus::LowConfidence`] (default 0.35).
    pub low_confidence: f32,
    /// How much disagreement lowers confidence (default 0.6).
    pub disagreement_penalty: f32,
}

impl Default for FusionConfig {
    fn default() -> Self {
        Self {
            max_age_ms: 60 * 60 * 1000,
            future_tolerance_ms: 60 * 1000,
            low_confidence: 0.35,
            disagreement_penalty: 0.6,
        }
    }
}

impl FusionConfig {
    /// Half-life of a source's weight in ms: text 15 min, voice 5 min, heart 5 min, face 1 min.
    pub fn half_life_ms(&self, source: Source) -> f32 {
        match source {
            Source::Text => 15.0 * 60_000.0,
            Source::Voice | Source::Heart => 5.0 * 60_000.0,
            Source::Face => 60_000.0,
        }
    }

    /// Trust in a source at equal confidence: text 1, face 0.8, voice 0.7, heart 0.6.
    pub fn prior(&self, source: Source) -> f32 {
        match source {
            Source::Text => 1.0,
            Source::Face => 0.8,
            Source::Voice => 0.7,
            Source::Heart => 0.6,
        }
    }
}

/// How much one reading counted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// The signal.
    pub source: Source,
    /// When it was observed.
    pub at_ms: i64,
    /// Its age at fusion time (ms, 0 for readings from the future within tolerance).
    pub age_ms: i64,
    /// Its time-decay factor (1 for a fresh reading, 0.5 after one half-life).
    pub decay: f32,
    /// `0.5^k` with `k` newer readings of the same source among the ones used.
    pub recency: f32,
    /// Its confidence.
    pub confidence: f32,
    /// Share of the valence (0 for arousal-only sources); the shares sum to 1 or are all 0.
    pub valence_weight: f32,
    /// Share of the arousal; the shares sum to 1.
    pub arousal_weight: f32,
    /// Share of the label distribution; the shares sum to 1 or are all 0.
    pub label_weight: f32,
}

/// Whether a state can be acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FusedStatus {
    /// No usable reading: nothing is known.
    NoSignal,
    /// Something is known, but too little to act on.
    LowConfidence,
    /// Confident enough to act on.
    Confident,
}

/// The user's emotional state at one time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FusedState {
    /// The time it describes (ms since the epoch).
    pub at_ms: i64,
    /// Ekman groups with their probability (summing to 1), highest first; empty without a
    /// labelling source.
    pub ekman: Vec<(Ekman, f32)>,
    /// Unpleasant (-1) to pleasant (+1); 0 when no source tells valence.
    pub valence: f32,
    /// Calm (0) to excited (1).
    pub arousal: f32,
    /// 0 (nothing known) to 1.
    pub confidence: f32,
    /// How much the sources disagree, 0 (one source, or agreement) to 1.
    pub disagreement: f32,
    /// Whether it can be acted on.
    pub status: FusedStatus,
    /// The readings used, in input order.
    pub contributions: Vec<Contribution>,
}

impl FusedState {
    /// The state without any signal.
    pub fn no_signal(at_ms: i64) -> Self {
        Self {
            at_ms,
            ekman: Vec::new(),
            valence: 0.0,
            arousal: 0.0,
            confidence: 0.0,
            disagreement: 0.0,
            status: FusedStatus::NoSignal,
            contributions: Vec::new(),
        }
    }

    /// The most probable Ekman group, if any source gave labels.
    pub fn dominant(&self) -> Option<(Ekman, f32)> {
        self.ekman.first().copied()
    }

    /// The most probable group other than neutral, with its probability.
    pub fn dominant_emotion(&self) -> Option<(Ekman, f32)> {
        self.ekman
            .iter()
            .copied()
            .find(|(g, _)| *g != Ekman::Neutral)
    }

    /// Whether the state is confident enough to act on.
    pub fn is_confident(&self) -> bool {
        self.status == FusedStatus::Confident
    }

    /// Valence, arousal and confidence.
    pub fn affect(&self) -> Affect {
        Affect {
            valence: self.valence,
            arousal: self.arousal,
            confidence: self.confidence,
        }
    }
}

fn finite_or(x: f32, default: f32) -> f32 {
    if x.is_finite() { x } else { default }
}

/// Fuses readings into the state at `now_ms` (rules in the module docs). Never panics; any input
/// (NaN, infinities, negative confidences, readings from far in the future) gives a state with
/// finite numbers in range.
pub fn fuse(readings: &[SourceReading], now_ms: i64, config: &FusionConfig) -> FusedState {
    struct Used {
        c: Contribution,
        affect: Affect,
        ekman: Option<[f32; NUM_EKMAN]>,
        weight: f32,
    }
    let mut used = Vec::new();
    for r in readings {
        let age = now_ms.saturating_sub(r.at_ms);
        if age > config.max_age_ms || age < -config.future_tolerance_ms.max(0) {
            continue;
        }
        let age = age.max(0);
        let a = r.affect;
        if !(a.valence.is_finite() && a.arousal.is_finite() && a.confidence.is_finite()) {
            continue;
        }
        let confidence = a.confidence.clamp(0.0, 1.0);
        if confidence <= 0.0 {
            continue;
        }
        let half_life = config.half_life_ms(r.source).max(1.0);
        let decay = 0.5f32.powf(age as f32 / half_life);
        let weight = config.prior(r.source).max(0.0) * confidence * decay;
        if weight.is_nan() || weight <= 0.0 {
            continue;
        }
        // Labels: non-negative finite scores with some mass, normalised to sum to 1.
        let ekman = r
            .ekman
            .filter(|_| r.source.tells_valence())
            .map(|scores| scores.map(|s| finite_or(s, 0.0).max(0.0)))
            .and_then(|scores| {
                let total: f32 = scores.iter().sum();
                (total > 0.0 && total.is_finite()).then(|| scores.map(|s| s / total))
            });
        used.push(Used {
            c: Contribution {
                source: r.source,
                at_ms: r.at_ms,
                age_ms: age,
                decay,
                recency: 1.0,
                confidence,
                valence_weight: 0.0,
                arousal_weight: 0.0,
                label_weight: 0.0,
            },
            affect: Affect {
                valence: a.valence.clamp(-1.0, 1.0),
                arousal: a.arousal.clamp(0.0, 1.0),
                confidence,
            },
            ekman,
            weight,
        });
    }
    if used.is_empty() {
        return FusedState::no_signal(now_ms);
    }
    // Newer readings of the same source supersede older ones by half each (input order breaks
    // ties of equal times: the later one is newer).
    let keys: Vec<(Source, i64)> = used.iter().map(|u| (u.c.source, u.c.at_ms)).collect();
    for (i, u) in used.iter_mut().enumerate() {
        let newer = keys
            .iter()
            .enumerate()
            .filter(|&(j, &(source, at))| {
                source == u.c.source && (at > u.c.at_ms || (at == u.c.at_ms && j > i))
            })
            .count();
        u.c.recency = 0.5f32.powi(i32::try_from(newer).unwrap_or(i32::MAX));
        u.weight *= u.c.recency;
    }
    used.retain(|u| u.weight > 0.0);
    if used.is_empty() {
        return FusedState::no_signal(now_ms);
    }

    let total =
        |f: &dyn Fn(&Used) -> bool| -> f32 { used.iter().filter(|u| f(u)).map(|u| u.weight).sum() };
    let arousal_total = total(&|_| true);
    let valence_total = total(&|u| u.c.source.tells_valence());
    let label_total = total(&|u| u.ekman.is_some());
    for u in &mut used {
        u.c.arousal_weight = u.weight / arousal_total;
        if u.c.source.tells_valence() && valence_total > 0.0 {
            u.c.valence_weight = u.weight / valence_total;
        }
        if u.ekman.is_some() && label_total > 0.0 {
            u.c.label_weight = u.weight / label_total;
        }
    }

    let arousal: f32 = used
        .iter()
        .map(|u| u.c.arousal_weight * u.affect.arousal)
        .sum();
    let valence: f32 = used
        .iter()
        .map(|u| u.c.valence_weight * u.affect.valence)
        .sum();
    let mut mix = [0.0f32; NUM_EKMAN];
    for u in &used {
        if let Some(scores) = u.ekman {
            for (m, s) in mix.iter_mut().zip(scores) {
                *m += u.c.label_weight * s;
            }
        }
    }
    let mix_total: f32 = mix.iter().sum();
    let mut ekman: Vec<(Ekman, f32)> = if mix_total > 0.0 {
        Ekman::ALL
            .iter()
            .map(|&g| (g, mix[g.index()] / mix_total))
            .collect()
    } else {
        Vec::new()
    };
    ekman.sort_by(|a, b| b.1.total_cmp(&a.1));

    let spread = |weight: &dyn Fn(&Used) -> f32, value: &dyn Fn(&Used) -> f32, mean: f32| {
        used.iter()
            .map(|u| weight(u) * (value(u) - mean).powi(2))
            .sum::<f32>()
            .sqrt()
    };
    let valence_sd = spread(&|u| u.c.valence_weight, &|u| u.affect.valence, valence);
    let arousal_sd = spread(&|u| u.c.arousal_weight, &|u| u.affect.arousal, arousal);
    let disagreement = finite_or(valence_sd.max(2.0 * arousal_sd), 1.0).clamp(0.0, 1.0);
    let evidence = 1.0
        - used
            .iter()
            .map(|u| 1.0 - u.c.confidence * u.c.decay * u.c.recency)
            .product::<f32>();
    let penalty = config.disagreement_penalty.clamp(0.0, 1.0);
    let confidence = finite_or(evidence * (1.0 - penalty * disagreement), 0.0).clamp(0.0, 1.0);
    let status = if confidence < config.low_confidence {
        FusedStatus::LowConfidence
    } else {
        FusedStatus::Confident
    };
    FusedState {
        at_ms: now_ms,
        ekman,
        valence: finite_or(valence, 0.0).clamp(-1.0, 1.0),
        arousal: finite_or(arousal, 0.0).clamp(0.0, 1.0),
        confidence,
        disagreement,
        status,
        contributions: used.into_iter().map(|u| u.c).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn reading(source: Source, at_ms: i64, v: f32, a: f32, c: f32) -> SourceReading {
        SourceReading {
            source,
            at_ms,
            affect: Affect {
                valence: v,
                arousal: a,
                confidence: c,
            },
            ekman: None,
        }
    }

    fn labelled(source: Source, at_ms: i64, v: f32, a: f32, c: f32, g: Ekman) -> SourceReading {
        let mut scores = [0.05; NUM_EKMAN];
        scores[g.index()] = 0.7;
        SourceReading {
            ekman: Some(scores),
            ..reading(source, at_ms, v, a, c)
        }
    }

    fn cfg() -> FusionConfig {
        FusionConfig::default()
    }

    #[test]
    fn empty_input_is_a_clear_no_signal_state() {
        let s = fuse(&[], 1_000, &cfg());
        assert_eq!(s, FusedState::no_signal(1_000));
        assert_eq!(s.status, FusedStatus::NoSignal);
        assert!(s.dominant().is_none() && !s.is_confident());
        // Only unusable readings: the same.
        let unusable = [
            reading(Source::Text, 0, 0.5, 0.5, 0.0),
            reading(Source::Face, 0, f32::NAN, 0.5, 0.9),
            reading(Source::Voice, -2 * 60 * MIN, 0.0, 0.9, 0.9),
            reading(Source::Heart, 10 * MIN, 0.0, 0.9, 0.9),
        ];
        assert_eq!(fuse(&unusable, 0, &cfg()).status, FusedStatus::NoSignal);
    }

    #[test]
    fn one_confident_text_reading_passes_through() {
        let r = labelled(Source::Text, 0, -0.6, 0.8, 0.9, Ekman::Fear);
        let s = fuse(&[r], 0, &cfg());
        assert_eq!(s.status, FusedStatus::Confident);
        assert!((s.valence + 0.6).abs() < 1e-6 && (s.arousal - 0.8).abs() < 1e-6);
        assert!((s.confidence - 0.9).abs() < 1e-6);
        assert_eq!(s.dominant().map(|d| d.0), Some(Ekman::Fear));
        assert_eq!(s.disagreement, 0.0);
    }

    #[test]
    fn older_readings_count_less() {
        let old = labelled(Source::Text, -30 * MIN, 0.8, 0.5, 0.9, Ekman::Joy);
        let new = labelled(Source::Text, 0, -0.8, 0.5, 0.9, Ekman::Sadness);
        let s = fuse(&[old, new], 0, &cfg());
        let [o, n] = [s.contributions[0], s.contributions[1]];
        assert!((o.decay - 0.25).abs() < 1e-3, "two half-lives: {}", o.decay);
        assert!(n.valence_weight > 3.0 * o.valence_weight);
        assert!(s.valence < -0.4, "{}", s.valence);
        assert_eq!(s.dominant().map(|d| d.0), Some(Ekman::Sadness));
        // The same readings fused later: the older one has decayed away entirely.
        let later = fuse(
            &[labelled(Source::Face, 0, 0.8, 0.5, 0.9, Ekman::Joy)],
            20 * MIN,
            &cfg(),
        );
        assert!(
            later.confidence < 0.9 * 0.5f32.powi(19),
            "{}",
            later.confidence
        );
        assert_eq!(later.status, FusedStatus::LowConfidence);
    }

    #[test]
    fn the_latest_reading_of_a_source_counts_most() {
        let fear = labelled(Source::Text, -10_000, -0.8, 0.9, 0.9, Ekman::Fear);
        let joy = labelled(Source::Text, 0, 0.8, 0.6, 0.9, Ekman::Joy);
        let s = fuse(&[joy, fear], 0, &cfg());
        assert_eq!(s.contributions[0].recency, 1.0);
        assert_eq!(s.contributions[1].recency, 0.5);
        assert_eq!(s.dominant().map(|d| d.0), Some(Ekman::Joy));
        assert!(s.valence > 0.2, "{}", s.valence);
    }

    #[test]
    fn disagreeing_sources_lower_confidence() {
        let calm_text = labelled(Source::Text, 0, 0.6, 0.2, 0.7, Ekman::Joy);
        let agreeing_face = labelled(Source::Face, 0, 0.7, 0.3, 0.7, Ekman::Joy);
        let angry_face = labelled(Source::Face, 0, -0.7, 0.9, 0.7, Ekman::Anger);
        let agree = fuse(&[calm_text.clone(), agreeing_face], 0, &cfg());
        let disagree = fuse(&[calm_text.clone(), angry_face], 0, &cfg());
        let alone = fuse(&[calm_text], 0, &cfg());
        assert!(agree.confidence > alone.confidence, "agreement adds up");
        assert!(disagree.confidence < agree.confidence);
        assert!(disagree.disagreement > 0.5, "{}", disagree.disagreement);
        assert!(disagree.confidence < alone.confidence, "{disagree:?}");
    }

    #[test]
    fn arousal_only_sources_do_not_move_valence_or_labels() {
        let text = labelled(Source::Text, 0, -0.5, 0.4, 0.8, Ekman::Sadness);
        let heart = reading(Source::Heart, 0, 0.0, 1.0, 0.8);
        let s = fuse(&[text, heart], 0, &cfg());
        assert!((s.valence + 0.5).abs() < 1e-6, "{}", s.valence);
        assert!(s.arousal > 0.6, "{}", s.arousal);
        assert_eq!(s.contributions[1].valence_weight, 0.0);
        assert_eq!(s.contributions[1].label_weight, 0.0);
        let heart_only = fuse(&[reading(Source::Heart, 0, 0.3, 0.9, 0.8)], 0, &cfg());
        assert_eq!(heart_only.valence, 0.0);
        assert!(heart_only.ekman.is_empty());
        assert_eq!(heart_only.contributions[0].arousal_weight, 1.0);
    }

    #[test]
    fn low_confidence_states_are_flagged() {
        let weak = labelled(Source::Text, 0, -0.9, 0.9, 0.2, Ekman::Fear);
        let s = fuse(&[weak], 0, &cfg());
        assert_eq!(s.status, FusedStatus::LowConfidence);
        assert!(!s.is_confident());
    }

    /// A small deterministic generator (no dependency): xorshift.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn f(&mut self, lo: f32, hi: f32) -> f32 {
            lo + (hi - lo) * (self.next() % 10_000) as f32 / 10_000.0
        }
        /// Mostly ordinary values, sometimes nasty ones.
        fn wild(&mut self, lo: f32, hi: f32) -> f32 {
            match self.next() % 12 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => -f32::INFINITY,
                3 => self.f(-5.0, 5.0),
                _ => self.f(lo, hi),
            }
        }
    }

    #[test]
    fn property_weights_sum_to_one_and_nothing_is_nan() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let close = |x: f32| (x - 1.0).abs() < 1e-4;
        for case in 0..2_000 {
            let n = (rng.next() % 7) as usize;
            let readings: Vec<SourceReading> = (0..n)
                .map(|_| {
                    let source = Source::ALL[(rng.next() % 4) as usize];
                    let at = -((rng.next() % (80 * MIN as u64)) as i64) + 2 * MIN;
                    let ekman = (!rng.next().is_multiple_of(3)).then(|| {
                        let mut s = [0.0; NUM_EKMAN];
                        for x in &mut s {
                            *x = rng.wild(0.0, 1.0);
                        }
                        s
                    });
                    SourceReading {
                        source,
                        at_ms: at,
                        affect: Affect {
                            valence: rng.wild(-1.0, 1.0),
                            arousal: rng.wild(0.0, 1.0),
                            confidence: rng.wild(0.0, 1.0),
                        },
                        ekman,
                    }
                })
                .collect();
            let s = fuse(&readings, 0, &cfg());
            let ctx = format!("case {case}: {readings:?} -> {s:?}");
            for x in [s.valence, s.arousal, s.confidence, s.disagreement] {
                assert!(x.is_finite(), "{ctx}");
            }
            assert!((-1.0..=1.0).contains(&s.valence), "{ctx}");
            assert!((0.0..=1.0).contains(&s.arousal), "{ctx}");
            assert!((0.0..=1.0).contains(&s.confidence), "{ctx}");
            if s.contributions.is_empty() {
                assert_eq!(s.status, FusedStatus::NoSignal, "{ctx}");
                continue;
            }
            assert!(
                close(s.contributions.iter().map(|c| c.arousal_weight).sum()),
                "{ctx}"
            );
            let v: f32 = s.contributions.iter().map(|c| c.valence_weight).sum();
            assert!(v == 0.0 || close(v), "{ctx}");
            let l: f32 = s.contributions.iter().map(|c| c.label_weight).sum();
            assert!(l == 0.0 || close(l), "{ctx}");
            if !s.ekman.is_empty() {
                assert!(close(s.ekman.iter().map(|e| e.1).sum()), "{ctx}");
                assert!(
                    s.ekman.iter().all(|e| e.1.is_finite() && e.1 >= 0.0),
                    "{ctx}"
                );
                assert!(s.ekman.windows(2).all(|w| w[0].1 >= w[1].1), "{ctx}");
            }
            for c in &s.contributions {
                assert!(c.decay > 0.0 && c.decay <= 1.0, "{ctx}");
                assert!(c.recency > 0.0 && c.recency <= 1.0, "{ctx}");
            }
        }
    }
}
