//! The text emotion API on the real weights: bad input, sanity of the readings, and our encoder
//! against the project's reference BERT (`nexus_inference::BertEmbedder`).

use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use nexus_emotion::text::bert::BertConfig;
use nexus_emotion::text::model::Lower;
use nexus_emotion::text::{GoEmotion, NUM_GO, TextEmotion};
use nexus_inference::BertEmbedder;

fn model() -> &'static TextEmotion {
    static M: OnceLock<TextEmotion> = OnceLock::new();
    M.get_or_init(|| {
        TextEmotion::from_dir(&nexus_testing::models::embedding_dir())
            .expect("the shipped text emotion model loads")
    })
}

#[test]
fn empty_input_gives_empty_output() {
    assert!(model().analyze(&[]).expect("analyze").is_empty());
}

#[test]
fn empty_and_whitespace_texts_are_flagged_with_zero_confidence() {
    let r = model()
        .analyze(&["", "   \n\t ", "I am so happy for you!"])
        .expect("analyze");
    assert_eq!(r.len(), 3);
    for e in &r[..2] {
        assert!(e.flags.empty);
        assert_eq!(e.confidence, 0.0);
        assert!(e.active.is_empty());
        assert_eq!(e.labels.len(), NUM_GO);
    }
    assert!(!r[2].flags.empty);
    assert!(r[2].confidence > 0.3);
}

#[test]
fn readings_make_sense() {
    let r = model()
        .analyze(&[
            "Thank you so much, I really appreciate your help!",
            "I love you so much",
            "This is disgusting, I hate it.",
            "I'm so scared, I don't know what to do.",
            "My dog died this morning. I miss him so much.",
            "The meeting is at 3pm in room 204.",
        ])
        .expect("analyze");
    assert_eq!(r[0].top(), GoEmotion::Gratitude);
    assert_eq!(r[1].top(), GoEmotion::Love);
    assert!(r[2].valence < -0.3, "{:?}", r[2]);
    assert!(
        r[3].active.contains(&GoEmotion::Fear) || r[3].active.contains(&GoEmotion::Nervousness)
    );
    assert!(r[3].arousal > 0.5);
    assert!(
        r[4].active.contains(&GoEmotion::Sadness),
        "{:?}",
        r[4].active
    );
    assert!(r[4].valence < -0.3);
    assert_eq!(r[5].top(), GoEmotion::Neutral);
    assert!(r[0].valence > 0.5 && r[1].valence > 0.5);
    for x in &r {
        assert!((-1.0..=1.0).contains(&x.valence) && (0.0..=1.0).contains(&x.arousal));
        assert!((0.0..=1.0).contains(&x.confidence));
        assert!(x.labels.iter().all(|(_, p)| (0.0..=1.0).contains(p)));
        assert!(!x.flags.maybe_not_english && !x.flags.truncated && !x.flags.empty);
    }
}

#[test]
fn batching_does_not_change_results_and_keeps_order() {
    let texts = [
        "ugh, mondays",
        "Congratulations on the new job!!! So proud of you",
        "",
        "Why would anyone do that? I don't get it.",
    ];
    let together = model().analyze(&texts).expect("analyze");
    for (i, t) in texts.iter().enumerate() {
        let alone = model().analyze(&[t]).expect("analyze");
        for ((la, pa), (lb, pb)) in alone[0].labels.iter().zip(&together[i].labels) {
            assert_eq!(la, lb);
            assert!((pa - pb).abs() < 1e-3, "{t}: {pa} vs {pb}");
        }
    }
}

#[test]
fn other_languages_are_flagged_with_low_confidence() {
    let r = model()
        .analyze(&[
            "Estoy muy contento de verte hoy, mi amigo",
            "Ich freue mich sehr, dich heute zu sehen",
            "Я очень рад тебя видеть сегодня",
            "今天我很高兴见到你",
            "I am very happy to see you today, my friend",
        ])
        .expect("analyze");
    for x in &r[..4] {
        assert!(x.flags.maybe_not_english, "{x:?}");
        assert!(x.confidence <= 0.25);
    }
    assert!(!r[4].flags.maybe_not_english);
}

#[test]
fn long_text_is_truncated_not_rejected() {
    let long = "I can't believe how wonderful this day has been. ".repeat(100);
    let r = model().analyze(&[long.as_str()]).expect("analyze");
    assert!(r[0].flags.truncated);
    assert!(r[0].confidence > 0.0);
    let short = model().analyze(&["short and sweet"]).expect("analyze");
    assert!(!short[0].flags.truncated);
}

#[test]
fn odd_input_never_panics() {
    let weird = [
        "😂😂😂",
        "!!!???...",
        "\u{0}\u{1}\u{7f}",
        "a",
        "12345",
        "https://example.com/some/path?q=1",
        "\u{202e}reversed text",
    ];
    let r = model().analyze(&weird).expect("analyze");
    assert_eq!(r.len(), weird.len());
    for x in &r {
        assert!(x.valence.is_finite() && x.arousal.is_finite() && x.confidence.is_finite());
    }
    // Emoji only: the tokenizer does not know them; nothing readable, no confidence.
    assert!(r[0].confidence < 0.05, "{:?}", r[0]);
}

#[test]
fn parameters_fit_the_budget() {
    let n = model().parameter_count();
    assert!(n > 20_000_000 && n <= 25_000_000, "{n}");
}

#[test]
fn our_encoder_matches_the_reference_bert() {
    let dir = nexus_testing::models::embedding_dir();
    let read = |f: &str| std::fs::read(dir.join(f)).expect("model file");
    let cfg: BertConfig = serde_json::from_slice(&read("config.json")).expect("config");
    let dev = Device::Cpu;
    let vb = VarBuilder::from_buffered_safetensors(read("model.safetensors"), DType::F32, &dev)
        .expect("weights");
    let ours = Lower::load(&vb, &cfg, cfg.num_hidden_layers).expect("all layers load");
    let reference = BertEmbedder::from_dir(&dir).expect("reference loads");
    let texts = ["I had a lovely walk in the park today.", "ok"];
    let (hidden, mask) = reference.hidden_states(&texts).expect("reference runs");
    let ids = {
        let mut tok = tokenizers::Tokenizer::from_bytes(read("tokenizer.json")).expect("tokenizer");
        tok.with_padding(None); // the file pads to 128; the reference pads to the longest text
        let enc = tok.encode_batch(texts.to_vec(), true).expect("encode");
        let len = hidden.dim(1).expect("dims");
        let mut v = vec![0u32; texts.len() * len];
        for (r, e) in enc.iter().enumerate() {
            v[r * len..r * len + e.len()].copy_from_slice(e.get_ids());
        }
        Tensor::from_vec(v, (texts.len(), len), &dev).expect("ids")
    };
    let got = ours.forward(&ids, &mask).expect("ours runs");
    let m = mask
        .to_dtype(DType::F32)
        .expect("mask")
        .unsqueeze(2)
        .expect("mask");
    let diff = ((got - &hidden)
        .expect("sub")
        .abs()
        .expect("abs")
        .broadcast_mul(&m))
    .expect("mul")
    .max_all()
    .expect("max")
    .to_scalar::<f32>()
    .expect("scalar");
    assert!(diff < 1e-3, "max difference {diff}");
}

/// Built on the sentence embedder's encoder (one copy of the base weights in memory), the
/// model reads exactly as with its own copy: same labels, probabilities within float noise,
/// batches with padding included.
#[test]
fn sharing_the_embedders_weights_changes_no_reading() {
    let dir = nexus_testing::models::embedding_dir();
    let read = |name: &str| std::fs::read(dir.join(name)).expect("model file");
    let embedder = std::sync::Arc::new(BertEmbedder::from_dir(&dir).expect("embedder loads"));
    let shared =
        TextEmotion::with_embedder(embedder, &read("config.json"), &read("tokenizer.json"))
            .expect("shared model loads");
    assert_eq!(shared.parameter_count(), model().parameter_count());
    let texts = [
        "I can't believe you did that, thank you so much!",
        "This is the worst day of my life.",
        "ok",
        "",
        "Why would anyone think that's a good idea? I'm honestly confused and a bit annoyed.",
        "I miss my grandmother so much, she passed away last spring.",
        "lol that's hilarious 😂",
        "Wow. Just wow.",
    ];
    let own = model().analyze(&texts).expect("own");
    let mine = shared.analyze(&texts).expect("shared");
    for ((a, b), text) in own.iter().zip(&mine).zip(texts) {
        assert_eq!(a.active, b.active, "{text}");
        assert_eq!(a.ekman_active, b.ekman_active, "{text}");
        for ((la, pa), (lb, pb)) in a.labels.iter().zip(&b.labels) {
            assert_eq!(la, lb);
            assert!((pa - pb).abs() < 1e-4, "{text}: {la:?} {pa} vs {pb}");
        }
        assert!((a.valence - b.valence).abs() < 1e-4, "{text}");
        assert!((a.arousal - b.arousal).abs() < 1e-4, "{text}");
    }
}
