//! The label sets of the text emotion model: the 28 GoEmotions labels, the 7 Ekman groups, the
//! mapping between them, and the valence/arousal coordinates of every label.

use serde::{Deserialize, Serialize};

/// One of the 27 GoEmotions emotions or `neutral` (Demszky et al., ACL 2020), in the dataset's
/// index order (`labels.txt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum GoEmotion {
    Admiration,
    Amusement,
    Anger,
    Annoyance,
    Approval,
    Caring,
    Confusion,
    Curiosity,
    Desire,
    Disappointment,
    Disapproval,
    Disgust,
    Embarrassment,
    Excitement,
    Fear,
    Gratitude,
    Grief,
    Joy,
    Love,
    Nervousness,
    Optimism,
    Pride,
    Realization,
    Relief,
    Remorse,
    Sadness,
    Surprise,
    Neutral,
}

/// Number of GoEmotions labels.
pub const NUM_GO: usize = 28;
/// Number of Ekman groups.
pub const NUM_EKMAN: usize = 7;

impl GoEmotion {
    /// Every label, in dataset index order.
    pub const ALL: [GoEmotion; NUM_GO] = [
        GoEmotion::Admiration,
        GoEmotion::Amusement,
        GoEmotion::Anger,
        GoEmotion::Annoyance,
        GoEmotion::Approval,
        GoEmotion::Caring,
        GoEmotion::Confusion,
        GoEmotion::Curiosity,
        GoEmotion::Desire,
        GoEmotion::Disappointment,
        GoEmotion::Disapproval,
        GoEmotion::Disgust,
        GoEmotion::Embarrassment,
        GoEmotion::Excitement,
        GoEmotion::Fear,
        GoEmotion::Gratitude,
        GoEmotion::Grief,
        GoEmotion::Joy,
        GoEmotion::Love,
        GoEmotion::Nervousness,
        GoEmotion::Optimism,
        GoEmotion::Pride,
        GoEmotion::Realization,
        GoEmotion::Relief,
        GoEmotion::Remorse,
        GoEmotion::Sadness,
        GoEmotion::Surprise,
        GoEmotion::Neutral,
    ];

    /// Index in the dataset (and in the model's output).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The label at a dataset index.
    pub fn from_index(i: usize) -> Option<Self> {
        Self::ALL.get(i).copied()
    }

    /// The dataset's name of the label (`labels.txt`).
    pub fn name(self) -> &'static str {
        GO_NAMES[self.index()]
    }

    /// The Ekman group the GoEmotions authors map this label to.
    pub fn ekman(self) -> Ekman {
        use GoEmotion::*;
        match self {
            Anger | Annoyance | Disapproval => Ekman::Anger,
            Disgust => Ekman::Disgust,
            Fear | Nervousness => Ekman::Fear,
            Admiration | Amusement | Approval | Caring | Desire | Excitement | Gratitude | Joy
            | Love | Optimism | Pride | Relief => Ekman::Joy,
            Neutral => Ekman::Neutral,
            Disappointment | Embarrassment | Grief | Remorse | Sadness => Ekman::Sadness,
            Confusion | Curiosity | Realization | Surprise => Ekman::Surprise,
        }
    }

    /// Valence (-1 unpleasant .. +1 pleasant) and arousal (0 calm .. 1 excited) of the label,
    /// from [`VA_TABLE`].
    pub fn valence_arousal(self) -> (f32, f32) {
        VA_TABLE[self.index()]
    }
}

const GO_NAMES: [&str; NUM_GO] = [
    "admiration",
    "amusement",
    "anger",
    "annoyance",
    "approval",
    "caring",
    "confusion",
    "curiosity",
    "desire",
    "disappointment",
    "disapproval",
    "disgust",
    "embarrassment",
    "excitement",
    "fear",
    "gratitude",
    "grief",
    "joy",
    "love",
    "nervousness",
    "optimism",
    "pride",
    "realization",
    "relief",
    "remorse",
    "sadness",
    "surprise",
    "neutral",
];

/// One of Ekman's six basic emotions or `neutral`, in the order of GoEmotions' `ekman/labels.txt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Ekman {
    Anger,
    Disgust,
    Fear,
    Joy,
    Neutral,
    Sadness,
    Surprise,
}

impl Ekman {
    /// Every group, in dataset index order.
    pub const ALL: [Ekman; NUM_EKMAN] = [
        Ekman::Anger,
        Ekman::Disgust,
        Ekman::Fear,
        Ekman::Joy,
        Ekman::Neutral,
        Ekman::Sadness,
        Ekman::Surprise,
    ];

    /// Index in `ekman/labels.txt` (and in the model's output).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The group at a dataset index.
    pub fn from_index(i: usize) -> Option<Self> {
        Self::ALL.get(i).copied()
    }

    /// The dataset's name of the group.
    pub fn name(self) -> &'static str {
        [
            "anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise",
        ][self.index()]
    }
}

/// Valence (-1..1) and arousal (0..1) of the 28 labels.
///
/// **Valence** is the label word's mean valence rating in the **VADER sentiment lexicon**
/// (Hutto & Gilbert, "VADER: A Parsimonious Rule-based Model for Sentiment Analysis of Social
/// Media Text", ICWSM 2014; `vader_lexicon.txt`, MIT licence, Copyright (c) 2016 C.J. Hutto)
/// divided by 4 (the lexicon's -4..4 scale to -1..1). Two label words are not in the lexicon and
/// take the rating of the closest word that is: curiosity → "curious", disapproval ("having or
/// expressing an unfavorable opinion", GoEmotions' definition) → "dislike"; realization and
/// neutral, which carry no sentiment, are 0.
///
/// **Arousal** is ours (part of this project, same licence): five levels placed by each label's
/// position on the activation axis of the affective circumplex (Russell 1980, "A circumplex model
/// of affect", J. Pers. Soc. Psychol. 39(6)): 0.8 activated (anger, fear, nervousness,
/// excitement, surprise), 0.65 (amusement, joy, annoyance, disgust, desire, embarrassment,
/// curiosity), 0.5 (admiration, pride, love, optimism, disapproval, confusion), 0.35 (gratitude,
/// approval, caring, realization, disappointment, remorse, grief), 0.2 deactivated (sadness,
/// relief, neutral).
///
/// GoEmotions has no valence/arousal labels: the model derives them as the probability-weighted
/// mean of these coordinates. This table replaced one from the NRC VAD lexicon (non-commercial
/// research licence); valence correlates with human ratings at least as well with it (see
/// `docs/BENCHMARKS.md`).
pub const VA_TABLE: [(f32, f32); NUM_GO] = [
    (0.625, 0.50),  // admiration: VADER 2.5
    (0.375, 0.65),  // amusement: VADER 1.5
    (-0.675, 0.80), // anger: VADER -2.7
    (-0.325, 0.65), // annoyance: VADER -1.3
    (0.525, 0.35),  // approval: VADER 2.1
    (0.550, 0.35),  // caring: VADER 2.2
    (-0.300, 0.50), // confusion: VADER -1.2
    (0.325, 0.65),  // curiosity: VADER "curious" 1.3
    (0.425, 0.65),  // desire: VADER 1.7
    (-0.575, 0.35), // disappointment: VADER -2.3
    (-0.400, 0.50), // disapproval: VADER "dislike" -1.6
    (-0.725, 0.65), // disgust: VADER -2.9
    (-0.475, 0.65), // embarrassment: VADER -1.9
    (0.550, 0.80),  // excitement: VADER 2.2
    (-0.550, 0.80), // fear: VADER -2.2
    (0.575, 0.35),  // gratitude: VADER 2.3
    (-0.550, 0.35), // grief: VADER -2.2
    (0.700, 0.65),  // joy: VADER 2.8
    (0.800, 0.50),  // love: VADER 3.2
    (-0.300, 0.80), // nervousness: VADER -1.2
    (0.625, 0.50),  // optimism: VADER 2.5
    (0.350, 0.50),  // pride: VADER 1.4
    (0.000, 0.35),  // realization: not in VADER, 0
    (0.525, 0.20),  // relief: VADER 2.1
    (-0.275, 0.35), // remorse: VADER -1.1
    (-0.475, 0.20), // sadness: VADER -1.9
    (0.275, 0.80),  // surprise: VADER 1.1
    (0.000, 0.20),  // neutral: not in VADER, 0
];

/// Valence (-1..1) and arousal (0..1) as the mean of the labels' coordinates weighted by their
/// probabilities. With no probability mass at all it is the neutral point (0, 0).
pub fn valence_arousal(probs: &[f32]) -> (f32, f32) {
    let mut total = 0.0f32;
    let (mut v, mut a) = (0.0f32, 0.0f32);
    for (label, &p) in GoEmotion::ALL.iter().zip(probs) {
        let p = if p.is_finite() { p.max(0.0) } else { 0.0 };
        let (lv, la) = label.valence_arousal();
        v += p * lv;
        a += p * la;
        total += p;
    }
    if total <= f32::EPSILON {
        return (0.0, 0.0);
    }
    ((v / total).clamp(-1.0, 1.0), (a / total).clamp(0.0, 1.0))
}

/// Ekman scores derived from the 28 label probabilities: for each group, the probability that at
/// least one of its labels applies if they were independent (noisy-or, `1 - prod(1 - p)`).
pub fn ekman_from_go(probs: &[f32]) -> [f32; NUM_EKMAN] {
    let mut none = [1.0f32; NUM_EKMAN];
    for (label, &p) in GoEmotion::ALL.iter().zip(probs) {
        none[label.ekman().index()] *= 1.0 - p.clamp(0.0, 1.0);
    }
    none.map(|n| 1.0 - n)
}
