//! Unit tests of the label, threshold, metric and bad-input logic (no model weights needed).

use super::labels::{self, Ekman, GoEmotion, NUM_EKMAN, NUM_GO, VA_TABLE};
use super::metrics;
use super::{EkmanSource, ModelCard, TextFlags, TextReading, decide, lang, validate_card};

fn card(source: EkmanSource) -> ModelCard {
    ModelCard {
        format: 1,
        base_model: "all-minilm-l6-v2".into(),
        first_trained_layer: 5,
        weights_dtype: "f16".into(),
        labels: GoEmotion::ALL.iter().map(|l| l.name().into()).collect(),
        thresholds: vec![0.5; NUM_GO],
        ekman_labels: Ekman::ALL.iter().map(|g| g.name().into()).collect(),
        ekman_source: source,
        ekman_thresholds: vec![0.5; NUM_EKMAN],
        va_table: Vec::new(),
        va_source: String::new(),
        training: serde_json::Value::Null,
        dev_metrics: serde_json::Value::Null,
    }
}

fn one_hot(label: GoEmotion, p: f32) -> Vec<f32> {
    let mut v = vec![0.0; NUM_GO];
    v[label.index()] = p;
    v
}

#[test]
fn label_indices_names_and_order_match_the_dataset() {
    let names = "admiration amusement anger annoyance approval caring confusion curiosity desire \
                 disappointment disapproval disgust embarrassment excitement fear gratitude grief \
                 joy love nervousness optimism pride realization relief remorse sadness surprise \
                 neutral";
    for (i, name) in names.split_whitespace().enumerate() {
        let l = GoEmotion::from_index(i).expect("index in range");
        assert_eq!(l.name(), name);
        assert_eq!(l.index(), i);
    }
    assert_eq!(GoEmotion::from_index(NUM_GO), None);
    for (i, name) in [
        "anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise",
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(Ekman::from_index(i).map(Ekman::name), Some(*name));
    }
    // Serialized as the dataset names.
    assert_eq!(
        serde_json::to_string(&GoEmotion::Nervousness).expect("serializes"),
        "\"nervousness\""
    );
}

#[test]
fn ekman_mapping_is_the_goemotions_one() {
    let count = |g: Ekman| GoEmotion::ALL.iter().filter(|l| l.ekman() == g).count();
    assert_eq!(count(Ekman::Joy), 12);
    assert_eq!(count(Ekman::Sadness), 5);
    assert_eq!(count(Ekman::Surprise), 4);
    assert_eq!(count(Ekman::Anger), 3);
    assert_eq!(count(Ekman::Fear), 2);
    assert_eq!(count(Ekman::Disgust), 1);
    assert_eq!(count(Ekman::Neutral), 1);
    assert_eq!(GoEmotion::Nervousness.ekman(), Ekman::Fear);
    assert_eq!(GoEmotion::Disapproval.ekman(), Ekman::Anger);
    assert_eq!(GoEmotion::Curiosity.ekman(), Ekman::Surprise);
}

#[test]
fn valence_arousal_table_is_in_range_and_sensible() {
    for (v, a) in VA_TABLE {
        assert!((-1.0..=1.0).contains(&v) && (0.0..=1.0).contains(&a));
    }
    // VADER's rating of "joy" is 2.8 on -4..4.
    let (joy_v, joy_a) = GoEmotion::Joy.valence_arousal();
    assert!((joy_v - 0.7).abs() < 1e-6 && (joy_a - 0.65).abs() < 1e-6);
    assert!(GoEmotion::Grief.valence_arousal().0 < -0.5);
    assert_eq!(GoEmotion::Neutral.valence_arousal().0, 0.0);
    assert!(GoEmotion::Nervousness.valence_arousal().1 > GoEmotion::Sadness.valence_arousal().1);
    // Every pleasant label above every unpleasant one.
    let pleasant = [
        GoEmotion::Admiration,
        GoEmotion::Amusement,
        GoEmotion::Gratitude,
        GoEmotion::Joy,
        GoEmotion::Love,
        GoEmotion::Optimism,
        GoEmotion::Relief,
        GoEmotion::Pride,
    ];
    let unpleasant = [
        GoEmotion::Anger,
        GoEmotion::Disgust,
        GoEmotion::Fear,
        GoEmotion::Grief,
        GoEmotion::Sadness,
        GoEmotion::Remorse,
        GoEmotion::Disappointment,
    ];
    for good in pleasant {
        for bad in unpleasant {
            assert!(
                good.valence_arousal().0 > bad.valence_arousal().0,
                "{good:?} {bad:?}"
            );
        }
    }
}

#[test]
fn the_model_card_lists_the_valence_arousal_table_of_the_code() {
    let card: ModelCard = serde_json::from_slice(super::BUNDLED_CARD).expect("card");
    assert_eq!(card.va_table.len(), NUM_GO);
    for (entry, label) in card.va_table.iter().zip(GoEmotion::ALL) {
        let (v, a) = label.valence_arousal();
        assert_eq!(entry.label, label.name());
        assert!(
            (entry.valence - v).abs() < 1e-4 && (entry.arousal - a).abs() < 1e-4,
            "{label:?}"
        );
    }
    assert!(card.va_source.contains("VADER"), "{}", card.va_source);
}

#[test]
fn valence_arousal_is_the_probability_weighted_mean() {
    let (v, a) = labels::valence_arousal(&one_hot(GoEmotion::Anger, 0.8));
    assert!((v - -0.675).abs() < 1e-5 && (a - 0.8).abs() < 1e-5);
    let mut p = one_hot(GoEmotion::Joy, 0.5);
    p[GoEmotion::Sadness.index()] = 0.5;
    let (v, a) = labels::valence_arousal(&p);
    assert!((v - (0.7 - 0.475) / 2.0).abs() < 1e-5);
    assert!((a - (0.65 + 0.2) / 2.0).abs() < 1e-5);
    // No mass, or garbage: the neutral point, never NaN.
    assert_eq!(labels::valence_arousal(&[0.0; NUM_GO]), (0.0, 0.0));
    let (v, a) = labels::valence_arousal(&[f32::NAN; NUM_GO]);
    assert!(v.is_finite() && a.is_finite());
}

#[test]
fn derived_ekman_is_a_noisy_or_per_group() {
    let mut p = vec![0.0; NUM_GO];
    p[GoEmotion::Joy.index()] = 0.5;
    p[GoEmotion::Love.index()] = 0.5;
    p[GoEmotion::Fear.index()] = 0.9;
    let e = labels::ekman_from_go(&p);
    assert!((e[Ekman::Joy.index()] - 0.75).abs() < 1e-6);
    assert!((e[Ekman::Fear.index()] - 0.9).abs() < 1e-6);
    assert_eq!(e[Ekman::Anger.index()], 0.0);
}

#[test]
fn f1_thresholds_and_macro_average() {
    // Label 0: positives score high; label 1 never occurs.
    let scores = vec![
        vec![0.9, 0.1],
        vec![0.8, 0.2],
        vec![0.3, 0.1],
        vec![0.2, 0.4],
    ];
    let gold = vec![
        vec![true, false],
        vec![true, false],
        vec![false, false],
        vec![false, false],
    ];
    assert_eq!(metrics::f1_at(&scores, &gold, 0, 0.5), 1.0);
    // Threshold 0.25 adds one false positive: F1 = 2*2 / (2*2 + 1) = 0.8.
    assert!((metrics::f1_at(&scores, &gold, 0, 0.25) - 0.8).abs() < 1e-6);
    assert_eq!(metrics::f1_at(&scores, &gold, 1, 0.5), 0.0);
    let t = metrics::tune_thresholds(&scores, &gold, 2);
    assert!(t[0] > 0.3 && t[0] <= 0.8, "{t:?}");
    assert!((metrics::macro_f1(&scores, &gold, &t) - 0.5).abs() < 1e-6);
    assert_eq!(metrics::per_label_f1(&scores, &gold, &t)[0], 1.0);
    assert_eq!(metrics::micro_f1(&scores, &gold, &[0.5, 0.5]), 1.0);
}

#[test]
fn pearson_correlation() {
    let x = [1.0, 2.0, 3.0, 4.0];
    assert!((metrics::pearson(&x, &[2.0, 4.0, 6.0, 8.0]) - 1.0).abs() < 1e-12);
    assert!((metrics::pearson(&x, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
    assert_eq!(metrics::pearson(&x, &[1.0; 4]), 0.0);
    assert_eq!(metrics::pearson(&[], &[]), 0.0);
}

#[test]
fn decisions_use_per_label_thresholds() {
    let mut c = card(EkmanSource::Derived);
    c.thresholds[GoEmotion::Grief.index()] = 0.1;
    let mut p = vec![0.02; NUM_GO];
    p[GoEmotion::Sadness.index()] = 0.6;
    p[GoEmotion::Grief.index()] = 0.2;
    p[GoEmotion::Joy.index()] = 0.4;
    let r = decide(&c, &p, &[0.0; NUM_EKMAN], TextFlags::default(), 1.0);
    assert_eq!(r.active, vec![GoEmotion::Sadness, GoEmotion::Grief]);
    assert_eq!(r.top(), GoEmotion::Sadness);
    assert_eq!(r.labels.len(), NUM_GO);
    assert!(r.labels.windows(2).all(|w| w[0].1 >= w[1].1));
    assert!((r.score(GoEmotion::Joy) - 0.4).abs() < 1e-6);
    // Derived Ekman: sadness group = 1 - 0.4*0.8*0.98^3.
    assert_eq!(r.ekman_active, vec![Ekman::Sadness, Ekman::Joy]);
    assert!((r.confidence - 0.6).abs() < 1e-6);
    assert!(r.valence < 0.0);
}

#[test]
fn ekman_head_source_uses_the_head_scores() {
    let c = card(EkmanSource::Head);
    let mut head = [0.1f32; NUM_EKMAN];
    head[Ekman::Surprise.index()] = 0.7;
    let r = decide(
        &c,
        &one_hot(GoEmotion::Joy, 0.9),
        &head,
        TextFlags::default(),
        1.0,
    );
    assert_eq!(r.ekman_active, vec![Ekman::Surprise]);
    assert!((r.ekman_score(Ekman::Surprise) - 0.7).abs() < 1e-6);
}

#[test]
fn not_english_and_unreadable_text_lower_the_confidence() {
    let c = card(EkmanSource::Derived);
    let p = one_hot(GoEmotion::Joy, 0.8);
    let flags = TextFlags {
        maybe_not_english: true,
        ..TextFlags::default()
    };
    let r = decide(&c, &p, &[0.0; NUM_EKMAN], flags, 1.0);
    assert!((r.confidence - 0.2).abs() < 1e-6);
    assert!(r.flags.maybe_not_english);
    let r = decide(&c, &p, &[0.0; NUM_EKMAN], TextFlags::default(), 0.0);
    assert_eq!(r.confidence, 0.0);
}

#[test]
fn empty_reading_has_zero_confidence_and_every_label() {
    let r = TextReading::empty();
    assert!(r.flags.empty);
    assert_eq!(r.confidence, 0.0);
    assert!(r.active.is_empty() && r.ekman_active.is_empty());
    assert_eq!(r.labels.len(), NUM_GO);
    assert_eq!(r.ekman.len(), NUM_EKMAN);
    assert_eq!(r.top(), GoEmotion::Neutral);
    let a = r.affect();
    assert_eq!((a.valence, a.arousal, a.confidence), (0.0, 0.0, 0.0));
}

#[test]
fn model_card_validation() {
    assert!(validate_card(&card(EkmanSource::Head)).is_ok());
    let mut bad = card(EkmanSource::Head);
    bad.labels.swap(0, 1);
    assert!(validate_card(&bad).is_err());
    let mut bad = card(EkmanSource::Head);
    bad.thresholds.pop();
    assert!(validate_card(&bad).is_err());
    let mut bad = card(EkmanSource::Head);
    bad.ekman_thresholds[0] = f32::NAN;
    assert!(validate_card(&bad).is_err());
    let mut bad = card(EkmanSource::Head);
    bad.format = 2;
    assert!(validate_card(&bad).is_err());
}

/// Word pieces per word are about 1.2 for English; the checks take them as given here.
fn pieces(text: &str, per_word: f32) -> usize {
    (text.split_whitespace().count() as f32 * per_word).round() as usize
}

#[test]
fn english_is_not_flagged() {
    for text in [
        "ok",
        "lol",
        "omg yes!!!",
        "Thanks so much, this made my day.",
        "WHY THE FUCK IS BAYLESS ISOING",
        "My favourite food is anything I didn't have to cook myself.",
        "Café au lait with my grandma was the best part of the trip.",
        "Awesome game tonight, absolutely brilliant performance",
    ] {
        let c = lang::check(text, pieces(text, 1.3), 0);
        assert!(!c.maybe_not_english, "{text}");
        assert_eq!(c.readable, 1.0);
    }
}

#[test]
fn other_languages_are_flagged() {
    for (text, per_word) in [
        ("Я очень рад тебя видеть сегодня", 2.5),
        ("今天我很高兴见到你", 1.0),
        ("Estoy muy contento de verte hoy, mi amigo", 1.8),
        ("Ich freue mich sehr, dich heute zu sehen", 1.8),
        ("Je suis très heureux de te voir aujourd'hui", 1.8),
        ("Saya sangat senang bertemu denganmu hari ini", 2.0),
    ] {
        let c = lang::check(text, pieces(text, per_word).max(1), 0);
        assert!(c.maybe_not_english, "{text}");
    }
}

#[test]
fn unreadable_text_is_measured() {
    let c = lang::check("😂😂😂", 3, 3);
    assert!(!c.maybe_not_english);
    assert_eq!(c.readable, 0.0);
    assert_eq!(lang::check("", 0, 0).readable, 0.0);
}
