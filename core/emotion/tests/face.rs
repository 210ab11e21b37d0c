//! Face expression end to end: ARKit-style JSON to emotions, and bad input.

mod support;

use std::collections::HashMap;

use nexus_emotion::face::{
    BlendShape, Emotion, FaceInput, analyze_blend_shapes_json, analyze_face,
    parse_blend_shapes_json,
};
use support::Lcg;

/// A full ARKit frame: all 52 shapes near rest, with the given overrides, as ARKit raw values.
fn arkit_frame(overrides: &[(&str, f32)]) -> String {
    let mut shapes: HashMap<String, f32> = BlendShape::ALL
        .iter()
        .map(|s| (s.arkit_raw_value().to_owned(), 0.02))
        .collect();
    for (name, value) in overrides {
        let shape = BlendShape::from_name(name).unwrap_or_else(|| panic!("{name}"));
        shapes.insert(shape.arkit_raw_value().to_owned(), *value);
    }
    serde_json::json!({ "timestamp": 1234.5, "blendShapes": shapes }).to_string()
}

#[test]
fn a_full_arkit_frame_per_emotion() {
    let cases: [(Emotion, &[(&str, f32)]); 7] = [
        (Emotion::Neutral, &[]),
        (
            Emotion::Happy,
            &[
                ("cheekSquintLeft", 0.5),
                ("cheekSquintRight", 0.5),
                ("mouthSmileLeft", 0.7),
                ("mouthSmileRight", 0.7),
            ],
        ),
        (
            Emotion::Sad,
            &[
                ("browInnerUp", 0.6),
                ("browDownLeft", 0.4),
                ("browDownRight", 0.4),
                ("mouthFrownLeft", 0.6),
                ("mouthFrownRight", 0.6),
            ],
        ),
        (
            Emotion::Surprised,
            &[
                ("browInnerUp", 0.7),
                ("browOuterUpLeft", 0.7),
                ("browOuterUpRight", 0.7),
                ("eyeWideLeft", 0.6),
                ("eyeWideRight", 0.6),
                ("jawOpen", 0.7),
            ],
        ),
        (
            Emotion::Fearful,
            &[
                ("browInnerUp", 0.7),
                ("browOuterUpLeft", 0.5),
                ("browOuterUpRight", 0.5),
                ("browDownLeft", 0.5),
                ("browDownRight", 0.5),
                ("eyeWideLeft", 0.7),
                ("eyeWideRight", 0.7),
                ("mouthStretchLeft", 0.6),
                ("mouthStretchRight", 0.6),
                ("jawOpen", 0.4),
            ],
        ),
        (
            Emotion::Angry,
            &[
                ("browDownLeft", 0.8),
                ("browDownRight", 0.8),
                ("eyeWideLeft", 0.3),
                ("eyeWideRight", 0.3),
                ("eyeSquintLeft", 0.5),
                ("eyeSquintRight", 0.5),
                ("mouthPressLeft", 0.6),
                ("mouthPressRight", 0.6),
            ],
        ),
        (
            Emotion::Disgusted,
            &[
                ("noseSneerLeft", 0.7),
                ("noseSneerRight", 0.7),
                ("mouthFrownLeft", 0.5),
                ("mouthFrownRight", 0.5),
                ("mouthLowerDownLeft", 0.5),
                ("mouthLowerDownRight", 0.5),
            ],
        ),
    ];
    for (expected, overrides) in cases {
        let reading =
            analyze_blend_shapes_json(arkit_frame(overrides)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reading.top, expected, "{:?}", reading.emotions);
        assert!(reading.issues.unknown.is_empty());
        assert_eq!(reading.coverage, 1.0);
        assert!((reading.affect.confidence - 1.0).abs() < 1e-6);
        let valence = reading.affect.valence;
        match expected {
            Emotion::Happy => assert!(valence > 0.5),
            Emotion::Sad | Emotion::Angry | Emotion::Fearful | Emotion::Disgusted => {
                assert!(valence < -0.3)
            }
            _ => assert!(valence.abs() < 0.3),
        }
    }
}

#[test]
fn a_map_works_like_json() {
    let map: HashMap<String, f32> = [
        ("mouthSmileLeft", 0.9),
        ("mouthSmileRight", 0.9),
        ("cheekSquintLeft", 0.6),
        ("cheekSquintRight", 0.6),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let from_map = analyze_face(&FaceInput::from_pairs(map.clone()));
    let from_json = analyze_blend_shapes_json(serde_json::to_string(&map).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(from_map.emotions, from_json.emotions);
    assert_eq!(from_map.top, Emotion::Happy);
    // 4 of the 26 relevant shapes: flagged, low confidence.
    assert!(from_map.low_coverage);
    assert!(from_map.affect.confidence < 0.2);
}

#[test]
fn out_of_range_and_unknown_values_are_reported() {
    let reading = analyze_blend_shapes_json(
        r#"{"mouthSmileLeft": 1.7, "mouthSmileRight": -0.2, "cheekPuff": 0.3, "smileyness": 1, "jawOpen": "a lot"}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let given: Vec<f64> = reading
        .issues
        .out_of_range
        .iter()
        .map(|o| o.given)
        .collect();
    assert_eq!(given, vec![1.7, -0.2]);
    assert_eq!(reading.issues.unknown, vec!["smileyness".to_owned()]);
    assert_eq!(reading.issues.invalid, vec!["jawOpen".to_owned()]);
    // Clamped to 1 and 0: the smile AU is their mean.
    assert!((reading.action_units.au12 - 0.5).abs() < 1e-6);
    // Serialises for the shells (non-finite values would be null).
    assert!(serde_json::to_string(&reading).is_ok());
    let nan = analyze_face(&FaceInput::from_pairs([
        ("jawOpen", f32::NAN),
        ("eyeWideLeft", f32::INFINITY),
    ]));
    assert_eq!(nan.issues.out_of_range.len(), 2);
    assert_eq!(nan.top, Emotion::Neutral);
    assert_eq!(nan.affect.confidence, 0.0);
}

#[test]
fn bad_json_is_an_error_not_a_panic() {
    for bad in [
        &b""[..],
        b"null",
        b"true",
        b"{\"blendShapes\": 3}",
        b"[{\"name\": 1}]",
        b"\xff{}",
        b"{\"a\":",
    ] {
        assert!(
            parse_blend_shapes_json(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let mut rng = Lcg::new(3);
    let alphabet = b"{}[]\":,0123456789.-e mouthSmileLeftjawOpen_LRblendShapesscorecategoryName";
    for _ in 0..3000 {
        let len = rng.below(80);
        let text: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        if let Ok(input) = parse_blend_shapes_json(&text) {
            let reading = analyze_face(&input);
            assert!(reading.affect.confidence.is_finite());
        }
    }
}
