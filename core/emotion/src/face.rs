//! Facial expression from ARKit-style blend-shape coefficients.
//!
//! # Input
//! The 52 `ARFaceAnchor.BlendShapeLocation` coefficients ([`BlendShape`]), 0 (neutral) to 1
//! (maximum movement), as a map ([`FaceInput::from_pairs`]) or JSON
//! ([`parse_blend_shapes_json`]) in any of these shapes:
//! - flat: `{"mouthSmileLeft": 0.8, "jawOpen": 0.1, ...}`;
//! - ARKit-style wrapper: `{"blendShapes": {...}, "timestamp": ...}` (also `blendshapes`);
//! - MediaPipe face landmarker categories: `[{"categoryName": "mouthSmileLeft", "score": 0.8}]`,
//!   bare or under `blendShapes`; `name`/`value` work as the keys too.
//!
//! Names are the Swift constant names or ARKit's raw values (`mouthSmile_L`), any ASCII case.
//!
//! # Bad input (never a panic)
//! - Unknown names are ignored and listed in [`FaceIssues::unknown`].
//! - Values outside 0..1: within 0.01 of the range they are float noise and clamped silently;
//!   further out (say 1.7 or −0.2) they are clamped **and** reported in
//!   [`FaceIssues::out_of_range`]; non-finite values (NaN, ±inf from a map) are dropped (treated
//!   as absent) and reported there too. Each reported value lowers the confidence by 10 %.
//! - Values that are not numbers (JSON strings, null, ...) are dropped and listed in
//!   [`FaceIssues::invalid`] (also −10 % each).
//! - Malformed JSON, or JSON that is neither an object nor an array, is an error.
//! - Missing shapes count as 0 (not moved) and lower the confidence: confidence is
//!   `coverage × quality`, where coverage is the share of the 26 shapes the rules read that
//!   were given. With fewer than 6 of them [`FaceReading::low_coverage`] is set.
//!
//! # Rules
//! Blend shapes map to FACS action units (Ekman & Friesen 1978, Facial Action Coding System;
//! Ekman, Friesen & Hager 2002), a bilateral AU being the mean of the sides given:
//!
//! | AU | name | ARKit shapes |
//! |---|---|---|
//! | 1 | inner brow raiser | browInnerUp |
//! | 2 | outer brow raiser | browOuterUpLeft/Right |
//! | 4 | brow lowerer | browDownLeft/Right |
//! | 5 | upper lid raiser | eyeWideLeft/Right |
//! | 6 | cheek raiser | cheekSquintLeft/Right |
//! | 7 | lid tightener | eyeSquintLeft/Right |
//! | 9 | nose wrinkler | noseSneerLeft/Right |
//! | 10 | upper lip raiser | mouthUpperUpLeft/Right |
//! | 12 | lip corner puller | mouthSmileLeft/Right |
//! | 15 | lip corner depressor | mouthFrownLeft/Right |
//! | 16 | lower lip depressor | mouthLowerDownLeft/Right |
//! | 20 | lip stretcher | mouthStretchLeft/Right |
//! | 23 | lip tightener | mouthPressLeft/Right |
//! | 26 | jaw drop | jawOpen |
//!
//! The emotion prototypes are those of EMFACS (Friesen & Ekman 1983), as tabulated for the
//! Extended Cohn-Kanade set (Lucey et al. 2010):
//!
//! | emotion | prototype AUs | contradicting AUs |
//! |---|---|---|
//! | happy | 6 + 12 | 15 |
//! | sad | 1 + 4 + 15 | 12 |
//! | surprised | 1 + 2 + 5 + 26 | 4 |
//! | fearful | 1 + 2 + 4 + 5 + 20 + 26 | 12 |
//! | angry | 4 + 5 + 7 + 23 | 2, 12 |
//! | disgusted | max(9, 10) + 15 + 16 | 12 |
//!
//! Evidence of an emotion = mean intensity of its prototype AUs × (1 − strongest contradicting
//! AU). Neutral evidence = `max(0, 1 − m / 0.4)` with `m` the strongest emotion evidence (a face
//! whose best prototype is under 40 % active is mostly neutral). The distribution is the
//! evidence cubed and normalised (sharpening, because the prototypes share AUs: a surprised face
//! is partly a fearful one). Valence and arousal are the probability-weighted positions of the
//! labels on Russell's circumplex (Russell 1980), approximately: happy (+0.8, 0.6),
//! surprised (+0.2, 0.85), neutral (0, 0.3), sad (−0.7, 0.2), angry (−0.7, 0.85),
//! fearful (−0.75, 0.8), disgusted (−0.65, 0.5) as (valence −1..1, arousal 0..1).
//!
//! Limits: speech moves the jaw and lips (AU 26, 16) without emotion; posed prototypes are
//! clearer than everyday expressions, so this is one signal for fusion, not a verdict.

mod blend_shapes;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use blend_shapes::{BlendShape, BlendShapes};

use crate::{Affect, EmotionError, Result};
use BlendShape as B;

/// Values this far outside 0..1 are clamped silently (float noise).
const RANGE_TOLERANCE: f64 = 0.01;
/// Confidence lost per reported bad value.
const PENALTY_PER_ISSUE: f32 = 0.1;
/// Emotion evidence at which a face stops being neutral.
const NEUTRAL_THRESHOLD: f32 = 0.4;
/// Exponent sharpening the evidence into a distribution.
const SHARPENING: i32 = 3;
/// Below this many relevant shapes the reading is flagged as low coverage.
const MIN_RELEVANT_SHAPES: usize = 6;

/// The blend shapes the rules read (26).
const RELEVANT: [BlendShape; 26] = [
    B::BrowInnerUp,
    B::BrowOuterUpLeft,
    B::BrowOuterUpRight,
    B::BrowDownLeft,
    B::BrowDownRight,
    B::EyeWideLeft,
    B::EyeWideRight,
    B::CheekSquintLeft,
    B::CheekSquintRight,
    B::EyeSquintLeft,
    B::EyeSquintRight,
    B::NoseSneerLeft,
    B::NoseSneerRight,
    B::MouthUpperUpLeft,
    B::MouthUpperUpRight,
    B::MouthSmileLeft,
    B::MouthSmileRight,
    B::MouthFrownLeft,
    B::MouthFrownRight,
    B::MouthLowerDownLeft,
    B::MouthLowerDownRight,
    B::MouthStretchLeft,
    B::MouthStretchRight,
    B::MouthPressLeft,
    B::MouthPressRight,
    B::JawOpen,
];

/// Ekman's basic emotions plus neutral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Emotion {
    /// Happiness.
    Happy,
    /// Sadness.
    Sad,
    /// Anger.
    Angry,
    /// Surprise.
    Surprised,
    /// Fear.
    Fearful,
    /// Disgust.
    Disgusted,
    /// No expression.
    Neutral,
}

impl Emotion {
    /// All labels.
    pub const ALL: [Emotion; 7] = [
        Emotion::Happy,
        Emotion::Sad,
        Emotion::Angry,
        Emotion::Surprised,
        Emotion::Fearful,
        Emotion::Disgusted,
        Emotion::Neutral,
    ];

    /// Approximate circumplex position: (valence −1..1, arousal 0..1), after Russell 1980.
    pub fn circumplex(self) -> (f32, f32) {
        match self {
            Emotion::Happy => (0.8, 0.6),
            Emotion::Sad => (-0.7, 0.2),
            Emotion::Angry => (-0.7, 0.85),
            Emotion::Surprised => (0.2, 0.85),
            Emotion::Fearful => (-0.75, 0.8),
            Emotion::Disgusted => (-0.65, 0.5),
            Emotion::Neutral => (0.0, 0.3),
        }
    }
}

/// A probability for each [`Emotion`]; they sum to 1.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct EmotionDistribution {
    /// P(happy).
    pub happy: f32,
    /// P(sad).
    pub sad: f32,
    /// P(angry).
    pub angry: f32,
    /// P(surprised).
    pub surprised: f32,
    /// P(fearful).
    pub fearful: f32,
    /// P(disgusted).
    pub disgusted: f32,
    /// P(neutral).
    pub neutral: f32,
}

impl EmotionDistribution {
    /// The probability of `emotion`.
    pub fn get(&self, emotion: Emotion) -> f32 {
        match emotion {
            Emotion::Happy => self.happy,
            Emotion::Sad => self.sad,
            Emotion::Angry => self.angry,
            Emotion::Surprised => self.surprised,
            Emotion::Fearful => self.fearful,
            Emotion::Disgusted => self.disgusted,
            Emotion::Neutral => self.neutral,
        }
    }

    fn set(&mut self, emotion: Emotion, p: f32) {
        let slot = match emotion {
            Emotion::Happy => &mut self.happy,
            Emotion::Sad => &mut self.sad,
            Emotion::Angry => &mut self.angry,
            Emotion::Surprised => &mut self.surprised,
            Emotion::Fearful => &mut self.fearful,
            Emotion::Disgusted => &mut self.disgusted,
            Emotion::Neutral => &mut self.neutral,
        };
        *slot = p;
    }

    /// The most probable label; on ties neutral, else the first in [`Emotion::ALL`] order.
    pub fn top(&self) -> Emotion {
        Emotion::ALL.into_iter().fold(Emotion::Neutral, |best, e| {
            if self.get(e) > self.get(best) {
                e
            } else {
                best
            }
        })
    }
}

/// A value that was out of 0..1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutOfRange {
    /// The shape.
    pub shape: BlendShape,
    /// The value as given (`None` in JSON for NaN and infinities).
    pub given: f64,
    /// The value used: the clamped value, or `None` when non-finite and dropped.
    pub used: Option<f32>,
}

/// Problems found in the input; none of them stops the analysis.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FaceIssues {
    /// Names that are not ARKit blend shapes (ignored).
    pub unknown: Vec<String>,
    /// Values outside 0..1, clamped or dropped.
    pub out_of_range: Vec<OutOfRange>,
    /// Names whose value is not a number (dropped).
    pub invalid: Vec<String>,
}

impl FaceIssues {
    fn penalised(&self) -> usize {
        self.out_of_range.len() + self.invalid.len()
    }
}

/// Checked blend-shape coefficients and what was wrong with the input.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaceInput {
    /// The usable coefficients, all in 0..1.
    pub shapes: BlendShapes,
    /// What was ignored, clamped or dropped.
    pub issues: FaceIssues,
}

impl FaceInput {
    /// Checks `(name, value)` pairs, e.g. a `HashMap<String, f32>`.
    pub fn from_pairs<K: AsRef<str>>(pairs: impl IntoIterator<Item = (K, f32)>) -> Self {
        let mut input = Self::default();
        for (name, value) in pairs {
            input.add(name.as_ref(), f64::from(value));
        }
        input
    }

    fn add(&mut self, name: &str, value: f64) {
        let Some(shape) = BlendShape::from_name(name) else {
            self.issues.unknown.push(name.to_owned());
            return;
        };
        if !value.is_finite() {
            self.issues.out_of_range.push(OutOfRange {
                shape,
                given: value,
                used: None,
            });
            return;
        }
        let clamped = value.clamp(0.0, 1.0);
        if (value - clamped).abs() > RANGE_TOLERANCE {
            self.issues.out_of_range.push(OutOfRange {
                shape,
                given: value,
                used: Some(clamped as f32),
            });
        }
        self.shapes.set(shape, clamped as f32);
    }

    fn add_json(&mut self, name: &str, value: &Value) {
        match value.as_f64() {
            Some(v) => self.add(name, v),
            None => self.issues.invalid.push(name.to_owned()),
        }
    }
}

/// Parses blend shapes from JSON (see the module docs for the accepted shapes).
pub fn parse_blend_shapes_json(json: impl AsRef<[u8]>) -> Result<FaceInput> {
    let value: Value = serde_json::from_slice(json.as_ref())
        .map_err(|e| EmotionError::InvalidInput(format!("blend shapes: invalid JSON: {e}")))?;
    let mut input = FaceInput::default();
    let shapes = match &value {
        Value::Object(map) => map
            .get("blendShapes")
            .or_else(|| map.get("blendshapes"))
            .unwrap_or(&value),
        _ => &value,
    };
    match shapes {
        Value::Object(map) => map.iter().for_each(|(k, v)| input.add_json(k, v)),
        Value::Array(items) => items
            .iter()
            .try_for_each(|item| add_category(&mut input, item))?,
        _ => {
            return Err(EmotionError::InvalidInput(
                "blend shapes: expected a JSON object of name: value or a list of categories"
                    .to_owned(),
            ));
        }
    }
    Ok(input)
}

/// One `{"categoryName": ..., "score": ...}` (or `name`/`value`) item.
fn add_category(input: &mut FaceInput, item: &Value) -> Result<()> {
    let field = |keys: [&str; 2]| keys.iter().find_map(|k| item.get(k));
    let name = field(["categoryName", "name"])
        .and_then(Value::as_str)
        .ok_or_else(|| {
            EmotionError::InvalidInput(
                "blend shapes: list items need a \"categoryName\" (or \"name\") string".to_owned(),
            )
        })?;
    match field(["score", "value"]) {
        Some(value) => input.add_json(name, value),
        None => input.issues.invalid.push(name.to_owned()),
    }
    Ok(())
}

/// FACS action-unit intensities (0..1) derived from the blend shapes.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ActionUnits {
    /// AU1 inner brow raiser.
    pub au1: f32,
    /// AU2 outer brow raiser.
    pub au2: f32,
    /// AU4 brow lowerer.
    pub au4: f32,
    /// AU5 upper lid raiser.
    pub au5: f32,
    /// AU6 cheek raiser.
    pub au6: f32,
    /// AU7 lid tightener.
    pub au7: f32,
    /// AU9 nose wrinkler.
    pub au9: f32,
    /// AU10 upper lip raiser.
    pub au10: f32,
    /// AU12 lip corner puller.
    pub au12: f32,
    /// AU15 lip corner depressor.
    pub au15: f32,
    /// AU16 lower lip depressor.
    pub au16: f32,
    /// AU20 lip stretcher.
    pub au20: f32,
    /// AU23 lip tightener.
    pub au23: f32,
    /// AU26 jaw drop.
    pub au26: f32,
}

impl ActionUnits {
    /// Action units of `shapes` (table in the module docs); absent shapes count as 0.
    pub fn from_blend_shapes(shapes: &BlendShapes) -> Self {
        let one = |shape| shapes.get(shape).unwrap_or(0.0);
        let both = |left, right| match (shapes.get(left), shapes.get(right)) {
            (Some(l), Some(r)) => (l + r) / 2.0,
            (Some(v), None) | (None, Some(v)) => v,
            (None, None) => 0.0,
        };
        Self {
            au1: one(B::BrowInnerUp),
            au2: both(B::BrowOuterUpLeft, B::BrowOuterUpRight),
            au4: both(B::BrowDownLeft, B::BrowDownRight),
            au5: both(B::EyeWideLeft, B::EyeWideRight),
            au6: both(B::CheekSquintLeft, B::CheekSquintRight),
            au7: both(B::EyeSquintLeft, B::EyeSquintRight),
            au9: both(B::NoseSneerLeft, B::NoseSneerRight),
            au10: both(B::MouthUpperUpLeft, B::MouthUpperUpRight),
            au12: both(B::MouthSmileLeft, B::MouthSmileRight),
            au15: both(B::MouthFrownLeft, B::MouthFrownRight),
            au16: both(B::MouthLowerDownLeft, B::MouthLowerDownRight),
            au20: both(B::MouthStretchLeft, B::MouthStretchRight),
            au23: both(B::MouthPressLeft, B::MouthPressRight),
            au26: one(B::JawOpen),
        }
    }

    /// Evidence for `emotion` (module docs); for neutral, see [`analyze_face`].
    fn evidence(&self, emotion: Emotion) -> f32 {
        let (prototype, contradicting): (&[f32], &[f32]) = match emotion {
            Emotion::Happy => (&[self.au6, self.au12], &[self.au15]),
            Emotion::Sad => (&[self.au1, self.au4, self.au15], &[self.au12]),
            Emotion::Surprised => (&[self.au1, self.au2, self.au5, self.au26], &[self.au4]),
            Emotion::Fearful => (
                &[self.au1, self.au2, self.au4, self.au5, self.au20, self.au26],
                &[self.au12],
            ),
            Emotion::Angry => (
                &[self.au4, self.au5, self.au7, self.au23],
                &[self.au2, self.au12],
            ),
            Emotion::Disgusted => (
                &[self.au9.max(self.au10), self.au15, self.au16],
                &[self.au12],
            ),
            Emotion::Neutral => return 0.0,
        };
        let mean = prototype.iter().sum::<f32>() / prototype.len() as f32;
        let veto = contradicting.iter().copied().fold(0.0, f32::max);
        mean * (1.0 - veto)
    }
}

/// What a face shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceReading {
    /// Probability of each label.
    pub emotions: EmotionDistribution,
    /// The most probable label.
    pub top: Emotion,
    /// Valence/arousal from the distribution; confidence `coverage × quality`.
    pub affect: Affect,
    /// The action units the rules used.
    pub action_units: ActionUnits,
    /// Share of the 26 shapes the rules read that were given (0..1).
    pub coverage: f32,
    /// Fewer than 6 of the shapes the rules read were given.
    pub low_coverage: bool,
    /// What was wrong with the input.
    pub issues: FaceIssues,
}

/// Reads the expression of checked blend shapes (rules in the module docs).
pub fn analyze_face(input: &FaceInput) -> FaceReading {
    let action_units = ActionUnits::from_blend_shapes(&input.shapes);
    let emotions = distribution(&action_units);
    let relevant_given = RELEVANT
        .iter()
        .filter(|s| input.shapes.get(**s).is_some())
        .count();
    let coverage = relevant_given as f32 / RELEVANT.len() as f32;
    let quality = (1.0 - PENALTY_PER_ISSUE * input.issues.penalised() as f32).max(0.0);
    let (valence, arousal) = Emotion::ALL.iter().fold((0.0, 0.0), |(v, a), &e| {
        let (ev, ea) = e.circumplex();
        let p = emotions.get(e);
        (v + p * ev, a + p * ea)
    });
    FaceReading {
        top: emotions.top(),
        emotions,
        affect: Affect {
            valence,
            arousal,
            confidence: coverage * quality,
        },
        action_units,
        coverage,
        low_coverage: relevant_given < MIN_RELEVANT_SHAPES,
        issues: input.issues.clone(),
    }
}

/// [`parse_blend_shapes_json`] then [`analyze_face`].
pub fn analyze_blend_shapes_json(json: impl AsRef<[u8]>) -> Result<FaceReading> {
    parse_blend_shapes_json(json).map(|input| analyze_face(&input))
}

fn distribution(aus: &ActionUnits) -> EmotionDistribution {
    let mut evidence = [0.0f32; 7];
    for (slot, emotion) in evidence.iter_mut().zip(Emotion::ALL) {
        *slot = aus.evidence(emotion);
    }
    let strongest = evidence.iter().copied().fold(0.0, f32::max);
    evidence[6] = (1.0 - strongest / NEUTRAL_THRESHOLD).max(0.0);
    let weights = evidence.map(|e| e.powi(SHARPENING));
    let total: f32 = weights.iter().sum();
    let mut out = EmotionDistribution::default();
    if total <= 0.0 || !total.is_finite() {
        out.neutral = 1.0;
        return out;
    }
    for (emotion, w) in Emotion::ALL.into_iter().zip(weights) {
        out.set(emotion, w / total);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(pairs: &[(&str, f32)]) -> FaceReading {
        analyze_face(&FaceInput::from_pairs(pairs.iter().copied()))
    }

    /// All 52 shapes at 0 except the given ones.
    fn full_face(pairs: &[(&str, f32)]) -> FaceReading {
        let mut all: Vec<(&str, f32)> = BlendShape::ALL.iter().map(|s| (s.name(), 0.0)).collect();
        all.extend_from_slice(pairs);
        face(&all)
    }

    #[test]
    fn neutral_face() {
        let r = full_face(&[]);
        assert_eq!(r.top, Emotion::Neutral);
        assert!((r.emotions.neutral - 1.0).abs() < 1e-6);
        assert_eq!(r.affect.confidence, 1.0);
        assert!(!r.low_coverage);
    }

    #[test]
    fn prototypes_win_their_label() {
        let cases: [(&[(&str, f32)], Emotion); 6] = [
            (
                &[
                    ("cheekSquintLeft", 0.7),
                    ("cheekSquintRight", 0.7),
                    ("mouthSmileLeft", 0.9),
                    ("mouthSmileRight", 0.9),
                ],
                Emotion::Happy,
            ),
            (
                &[
                    ("browInnerUp", 0.8),
                    ("browDownLeft", 0.6),
                    ("browDownRight", 0.6),
                    ("mouthFrownLeft", 0.7),
                    ("mouthFrownRight", 0.7),
                ],
                Emotion::Sad,
            ),
            (
                &[
                    ("browInnerUp", 0.8),
                    ("browOuterUpLeft", 0.8),
                    ("browOuterUpRight", 0.8),
                    ("eyeWideLeft", 0.7),
                    ("eyeWideRight", 0.7),
                    ("jawOpen", 0.8),
                ],
                Emotion::Surprised,
            ),
            (
                &[
                    ("browInnerUp", 0.8),
                    ("browOuterUpLeft", 0.6),
                    ("browOuterUpRight", 0.6),
                    ("browDownLeft", 0.6),
                    ("browDownRight", 0.6),
                    ("eyeWideLeft", 0.8),
                    ("eyeWideRight", 0.8),
                    ("mouthStretchLeft", 0.7),
                    ("mouthStretchRight", 0.7),
                    ("jawOpen", 0.5),
                ],
                Emotion::Fearful,
            ),
            (
                &[
                    ("browDownLeft", 0.9),
                    ("browDownRight", 0.9),
                    ("eyeWideLeft", 0.4),
                    ("eyeWideRight", 0.4),
                    ("eyeSquintLeft", 0.6),
                    ("eyeSquintRight", 0.6),
                    ("mouthPressLeft", 0.7),
                    ("mouthPressRight", 0.7),
                ],
                Emotion::Angry,
            ),
            (
                &[
                    ("noseSneerLeft", 0.8),
                    ("noseSneerRight", 0.8),
                    ("mouthFrownLeft", 0.6),
                    ("mouthFrownRight", 0.6),
                    ("mouthLowerDownLeft", 0.6),
                    ("mouthLowerDownRight", 0.6),
                ],
                Emotion::Disgusted,
            ),
        ];
        for (pairs, expected) in cases {
            let r = full_face(pairs);
            assert_eq!(r.top, expected, "{:?}", r.emotions);
            assert!(
                r.emotions.get(expected) > 0.5,
                "{expected:?}: {:?}",
                r.emotions
            );
            let sum: f32 = Emotion::ALL.iter().map(|e| r.emotions.get(*e)).sum();
            assert!((sum - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn affect_follows_the_labels() {
        let happy = full_face(&[
            ("cheekSquint_L", 0.8),
            ("cheekSquint_R", 0.8),
            ("mouthSmile_L", 1.0),
            ("mouthSmile_R", 1.0),
        ]);
        assert!(happy.affect.valence > 0.6 && happy.affect.arousal > 0.5);
        let sad = full_face(&[
            ("browInnerUp", 0.9),
            ("browDown_L", 0.7),
            ("browDown_R", 0.7),
            ("mouthFrown_L", 0.9),
            ("mouthFrown_R", 0.9),
        ]);
        assert!(sad.affect.valence < -0.5 && sad.affect.arousal < 0.3);
    }

    #[test]
    fn out_of_range_values_are_clamped_and_flagged() {
        let r = full_face(&[
            ("mouthSmileLeft", 1.7),
            ("mouthSmileRight", -0.2),
            ("jawOpen", f32::NAN),
            ("eyeBlinkLeft", 1.005),
        ]);
        let flagged: Vec<(BlendShape, Option<f32>)> = r
            .issues
            .out_of_range
            .iter()
            .map(|o| (o.shape, o.used))
            .collect();
        assert_eq!(
            flagged,
            vec![
                (B::MouthSmileLeft, Some(1.0)),
                (B::MouthSmileRight, Some(0.0)),
                (B::JawOpen, None)
            ]
        );
        assert!((r.action_units.au12 - 0.5).abs() < 1e-6);
        assert!((r.affect.confidence - 0.7).abs() < 1e-5);
    }

    #[test]
    fn unknown_names_are_reported_not_used() {
        let r = full_face(&[("_neutral", 0.9), ("smile", 1.0)]);
        assert_eq!(
            r.issues.unknown,
            vec!["_neutral".to_owned(), "smile".to_owned()]
        );
        assert_eq!(r.top, Emotion::Neutral);
        assert_eq!(r.affect.confidence, 1.0);
    }

    #[test]
    fn few_shapes_give_low_confidence() {
        let r = face(&[("mouthSmileLeft", 0.9), ("mouthSmileRight", 0.9)]);
        assert!(r.low_coverage);
        assert!(r.affect.confidence < 0.1);
        let empty = face(&[]);
        assert_eq!(empty.top, Emotion::Neutral);
        assert_eq!(empty.affect.confidence, 0.0);
    }

    #[test]
    fn json_shapes() {
        let flat = analyze_blend_shapes_json(
            r#"{"mouthSmileLeft": 0.8, "mouthSmileRight": 0.8, "cheekSquintLeft": 0.6, "cheekSquintRight": 0.6}"#,
        );
        let wrapped = analyze_blend_shapes_json(
            r#"{"timestamp": 12.5, "blendShapes": {"mouthSmile_L": 0.8, "mouthSmile_R": 0.8, "cheekSquint_L": 0.6, "cheekSquint_R": 0.6}}"#,
        );
        let listed = analyze_blend_shapes_json(
            r#"[{"categoryName": "_neutral", "score": 0.0}, {"categoryName": "mouthSmileLeft", "score": 0.8}, {"categoryName": "mouthSmileRight", "score": 0.8}, {"categoryName": "cheekSquintLeft", "score": 0.6}, {"categoryName": "cheekSquintRight", "score": 0.6}]"#,
        );
        for r in [flat, wrapped, listed] {
            let r = r.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.top, Emotion::Happy);
            assert!((r.action_units.au12 - 0.8).abs() < 1e-6);
        }
    }

    #[test]
    fn bad_json() {
        for bad in [
            "",
            "{",
            "42",
            "\"mouthSmileLeft\"",
            "[1, 2]",
            "[{\"score\": 1}]",
            "{\"a\": NaN}",
        ] {
            assert!(parse_blend_shapes_json(bad).is_err(), "{bad}");
        }
        assert!(parse_blend_shapes_json(b"\xff\xfe{}").is_err());
        let input =
            parse_blend_shapes_json(r#"{"jawOpen": "wide", "mouthClose": null, "blink": 1}"#);
        let input = input.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            input.issues.invalid,
            vec!["jawOpen".to_owned(), "mouthClose".to_owned()]
        );
        assert_eq!(input.issues.unknown, vec!["blink".to_owned()]);
        assert_eq!(input.shapes.known(), 0);
    }
}
