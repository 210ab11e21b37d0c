//! Prosody on synthetic signals: tones, speech-like syllables, silence, noise, damage, tiny input.

mod support;

use std::f32::consts::PI;

use nexus_emotion::prosody::{
    ProsodyAnalyzer, SAMPLE_RATE, SpeakerBaseline, analyze, pcm_from_i16, resample,
};
use support::Lcg;

fn tone(hz: f32, seconds: f32, amplitude: f32) -> Vec<f32> {
    let n = (SAMPLE_RATE as f32 * seconds) as usize;
    (0..n)
        .map(|i| amplitude * (2.0 * PI * hz * i as f32 / SAMPLE_RATE as f32).sin())
        .collect()
}

/// Voiced "syllables": a harmonic-rich 150 Hz buzz, 120 ms on with a raised-cosine envelope,
/// then `gap_ms` of silence, `count` times.
fn syllables(count: usize, gap_ms: usize) -> Vec<f32> {
    let on = SAMPLE_RATE as usize * 120 / 1000;
    let off = SAMPLE_RATE as usize * gap_ms / 1000;
    let mut out = Vec::new();
    for _ in 0..count {
        for i in 0..on {
            let t = i as f32 / SAMPLE_RATE as f32;
            let envelope = 0.5 - 0.5 * (2.0 * PI * i as f32 / on as f32).cos();
            let buzz: f32 = (1..=5)
                .map(|k| (2.0 * PI * 150.0 * k as f32 * t).sin() / k as f32)
                .sum();
            out.push(0.2 * envelope * buzz);
        }
        out.extend(std::iter::repeat_n(0.0, off));
    }
    out
}

fn white_noise(seconds: f32, amplitude: f32) -> Vec<f32> {
    let mut rng = Lcg::new(11);
    let n = (SAMPLE_RATE as f32 * seconds) as usize;
    (0..n)
        .map(|_| amplitude * (2.0 * rng.next_f32() - 1.0))
        .collect()
}

#[test]
fn a_200_hz_tone_has_f0_200() {
    let reading = analyze(&tone(200.0, 1.0, 0.5), None);
    let summary = &reading.summary;
    let f0 = summary.f0.unwrap_or_else(|| panic!("no pitch"));
    assert!((f0.median_hz - 200.0).abs() < 1.0, "{}", f0.median_hz);
    assert!((f0.mean_hz - 200.0).abs() < 1.0);
    assert!(f0.std_st < 0.05 && f0.range_st < 0.1);
    assert!(summary.voiced_fraction > 0.95);
    assert!(!summary.silent && !summary.quality.is_flagged());
    assert!(reading.arousal_probability.is_some());
    assert!(reading.affect.confidence > 0.3);
}

#[test]
fn f0_through_48_khz_resampling() {
    let at_48k: Vec<f32> = (0..48_000)
        .map(|i| 0.4 * (2.0 * PI * 123.0 * i as f32 / 48_000.0).sin())
        .collect();
    let pcm = resample(&at_48k, 48_000, SAMPLE_RATE).unwrap_or_default();
    let f0 = analyze(&pcm, None)
        .summary
        .f0
        .unwrap_or_else(|| panic!("no pitch"));
    assert!((f0.median_hz - 123.0).abs() < 1.0, "{}", f0.median_hz);
}

#[test]
fn silence_is_flagged_with_no_confidence() {
    for pcm in [vec![0.0; 16_000], vec![1e-5; 16_000]] {
        let reading = analyze(&pcm, None);
        assert!(reading.summary.silent);
        assert_eq!(reading.summary.voiced_frames, 0);
        assert!(reading.summary.f0.is_none());
        assert_eq!(reading.arousal_probability, None);
        assert_eq!(reading.affect.confidence, 0.0);
    }
}

#[test]
fn white_noise_is_unvoiced() {
    let reading = analyze(&white_noise(1.0, 0.3), None);
    let summary = &reading.summary;
    assert!(!summary.silent);
    assert!(
        summary.voiced_fraction < 0.05,
        "{}",
        summary.voiced_fraction
    );
    assert!(summary.f0.is_none());
    assert!(summary.zcr_mean > 0.4, "{}", summary.zcr_mean);
}

#[test]
fn speech_like_syllables_give_rate_and_pauses() {
    // 8 syllables with 130 ms gaps, a 530 ms pause, 8 more: 16 in a span of about 4.2 s.
    let mut pcm = syllables(8, 130);
    pcm.extend(std::iter::repeat_n(0.0, 6400));
    pcm.extend(syllables(8, 130));
    let summary = analyze(&pcm, None).summary;
    assert_eq!(summary.syllable_nuclei, 16);
    assert!(
        summary.speaking_rate > 3.5 && summary.speaking_rate < 4.2,
        "{}",
        summary.speaking_rate
    );
    assert!(
        summary.pause_ratio > 0.1 && summary.pause_ratio < 0.25,
        "{}",
        summary.pause_ratio
    );
    let f0 = summary.f0.unwrap_or_else(|| panic!("no pitch"));
    assert!((f0.median_hz - 150.0).abs() < 2.0, "{}", f0.median_hz);
    assert!(summary.jitter.is_some_and(|j| j < 0.01));
}

#[test]
fn garbage_samples_are_repaired_and_flagged() {
    let mut pcm = tone(180.0, 1.0, 0.5);
    for i in (0..pcm.len()).step_by(50) {
        pcm[i] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 7.0][i / 50 % 4];
    }
    let clean = analyze(&tone(180.0, 1.0, 0.5), None);
    let reading = analyze(&pcm, None);
    let q = reading.summary.quality;
    assert_eq!(q.samples, 16_000);
    assert_eq!(q.nonfinite_samples, 240);
    assert_eq!(q.out_of_range_samples, 80);
    assert!(q.is_flagged());
    // 2.5 % damaged samples halve the confidence (20 × 2.5 %).
    let ratio = reading.affect.confidence / clean.affect.confidence;
    assert!((ratio - 0.5).abs() < 0.05, "{ratio}");
    assert!(serde_json::to_string(&reading).is_ok());
}

#[test]
fn clipping_is_flagged() {
    let clipped: Vec<f32> = tone(150.0, 1.0, 3.0)
        .iter()
        .map(|x| x.clamp(-1.0, 1.0))
        .collect();
    let reading = analyze(&clipped, None);
    assert!(reading.summary.quality.clipped_samples > 5000);
    assert!(reading.summary.quality.is_flagged());
    assert_eq!(reading.affect.confidence, 0.0);
}

#[test]
fn tiny_inputs() {
    for n in [0, 1, 100, 399] {
        let reading = analyze(&tone(200.0, n as f32 / SAMPLE_RATE as f32, 0.5), None);
        assert!(reading.summary.too_short, "{n}");
        assert_eq!(reading.summary.frames, 0);
        assert_eq!(reading.affect.confidence, 0.0);
    }
    // One frame: measured, too little to be voiced-confident.
    let one = analyze(&tone(200.0, 400.0 / SAMPLE_RATE as f32, 0.5), None);
    assert!(!one.summary.too_short);
    assert_eq!(one.summary.frames, 1);
    assert!(one.affect.confidence < 0.05);
}

#[test]
fn incremental_api_matches_one_shot_and_resets() {
    let mut pcm = syllables(6, 100);
    pcm.extend(white_noise(0.2, 0.01));
    let whole = analyze(&pcm, None);
    let mut analyzer = ProsodyAnalyzer::new();
    let mut rng = Lcg::new(5);
    let mut rest = &pcm[..];
    while !rest.is_empty() {
        let take = (1 + rng.below(700)).min(rest.len());
        analyzer.push(&rest[..take]);
        rest = &rest[take..];
        let _ = analyzer.summary(); // mid-stream summaries must not disturb the stream
    }
    assert_eq!(analyzer.reading(), whole);
    analyzer.reset();
    assert!(analyzer.summary().too_short);
    assert!(analyzer.frames().is_empty());
}

#[test]
fn i16_input_and_speaker_baseline() {
    let samples: Vec<i16> = tone(220.0, 0.5, 0.5)
        .iter()
        .map(|x| (x * 32_767.0) as i16)
        .collect();
    let mut analyzer = ProsodyAnalyzer::new().with_baseline(SpeakerBaseline {
        f0_hz: 110.0,
        energy_db: -20.0,
    });
    analyzer.push_i16(&samples);
    let summary = analyzer.summary();
    let f0 = summary.f0.unwrap_or_else(|| panic!("no pitch"));
    assert!((f0.re_baseline_st.unwrap_or(0.0) - 12.0).abs() < 0.1);
    assert!((summary.energy_re_baseline_db.unwrap_or(0.0) - (-9.03 + 20.0)).abs() < 0.2);
    assert_eq!(pcm_from_i16(&[]), Vec::<f32>::new());
}
