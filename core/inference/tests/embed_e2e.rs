//! all-MiniLM-L6-v2 with the real weights.

use nexus_inference::embed::cosine;
use nexus_inference::{BertEmbedder, Embedder};

fn embedder() -> BertEmbedder {
    BertEmbedder::from_dir(&nexus_testing::models::embedding_dir()).expect("load the embedder")
}

#[test]
fn paraphrases_are_closer_than_unrelated_sentences() {
    let e = embedder();
    assert_eq!(e.dimension(), 384);
    let pairs = [
        (
            "I adopted a puppy last week.",
            "Last week I got a new dog.",
            "The stock market fell sharply today.",
        ),
        (
            "I feel really anxious about my exam.",
            "My upcoming test makes me nervous.",
            "Bananas are rich in potassium.",
        ),
        (
            "My sister lives in Berlin.",
            "Berlin is where my sister has her home.",
            "How do I reset my router?",
        ),
    ];
    for (a, b, c) in pairs {
        let v = e.embed(&[a, b, c]).expect("embed");
        let (ab, ac) = (cosine(&v[0], &v[1]), cosine(&v[0], &v[2]));
        assert!(
            ab > ac + 0.2,
            "{a:?}~{b:?} = {ab} should exceed {a:?}~{c:?} = {ac}"
        );
    }
}

#[test]
fn vectors_are_unit_length_and_batching_changes_nothing() {
    let e = embedder();
    let texts = [
        "short",
        "a much longer sentence with quite a few more words in it than the first",
        "",
    ];
    let batch = e.embed(&texts).expect("batch");
    for (t, v) in texts.iter().zip(&batch) {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{t:?}: norm {norm}");
        let single = &e.embed(&[t]).expect("single")[0];
        assert!(
            cosine(v, single) > 0.9999,
            "padding in a batch must not change {t:?}"
        );
    }
    assert!(e.embed(&[]).expect("empty").is_empty());
}

#[test]
fn matches_an_independent_reference_implementation() {
    // First components of all-MiniLM-L6-v2("This is a test."), computed by an independent
    // numpy implementation of BERT + mean pooling + L2 norm on the same weights:
    // `python3 tests/reference/minilm_numpy.py MODEL_DIR "This is a test."`
    let v = &embedder().embed(&["This is a test."]).expect("embed")[0];
    let reference = [0.03359_f32, 0.01051, -0.0175, 0.02935, -0.00942, -0.03702];
    for (i, r) in reference.iter().enumerate() {
        assert!((v[i] - r).abs() < 1e-3, "component {i}: {} vs {r}", v[i]);
    }
}

#[test]
fn very_long_input_is_truncated_not_rejected() {
    let e = embedder();
    let long = "word ".repeat(5000);
    let v = e.embed(&[&long]).expect("long input");
    assert_eq!(v[0].len(), 384);
}
