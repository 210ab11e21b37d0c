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

    /// Valence (-1 unpleasant .. +1 pleasant) and arousal (0 calm .. 1 excited) of the label word,
    /// from [`VA_TABLE`].
    pub fn valence_arousal(self) -> (f32, f32) {
        let (v, a) = VA_TABLE[self.index()];
        (2.0 * v - 1.0, a)
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

/// Valence and arousal, both on the lexicon's 0..1 scale, of the 28 label words, from the
/// **NRC Valence, Arousal, and Dominance Lexicon** v1.0 (Saif M. Mohammad, "Obtaining Reliable
/// Human Ratings of Valence, Arousal, and Dominance for 20,000 English Words", ACL 2018; columns
/// Valence and Arousal of `NRC-VAD-Lexicon.txt` for the exact word, e.g.
/// `admiration 0.969 0.583 0.726`). GoEmotions has no valence/arousal labels: the model derives
/// them as the probability-weighted mean of these coordinates; valence is mapped to -1..1 by
/// `2v - 1`. The lexicon's terms ask for attribution (above) and restrict it to non-commercial
/// research use without a licence from the NRC; only these 56 numbers are used.
pub const VA_TABLE: [(f32, f32); NUM_GO] = [
    (0.969, 0.583), // admiration
    (0.929, 0.837), // amusement
    (0.167, 0.865), // anger
    (0.167, 0.718), // annoyance
    (0.854, 0.460), // approval
    (0.635, 0.469), // caring
    (0.255, 0.667), // confusion
    (0.750, 0.755), // curiosity
    (0.896, 0.692), // desire
    (0.115, 0.490), // disappointment
    (0.085, 0.551), // disapproval
    (0.052, 0.775), // disgust
    (0.143, 0.685), // embarrassment
    (0.896, 0.684), // excitement
    (0.073, 0.840), // fear
    (0.885, 0.441), // gratitude
    (0.070, 0.640), // grief
    (0.980, 0.824), // joy
    (1.000, 0.519), // love
    (0.163, 0.915), // nervousness
    (0.949, 0.565), // optimism
    (0.729, 0.634), // pride
    (0.554, 0.510), // realization
    (0.844, 0.278), // relief
    (0.103, 0.673), // remorse
    (0.052, 0.288), // sadness
    (0.875, 0.875), // surprise
    (0.469, 0.184), // neutral
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
