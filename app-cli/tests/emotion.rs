//! `nexus emotion …` and `nexus journal`, run as a user would, with the real models (the text
//! emotion model needs the MiniLM files of the verified cache). Bad input of every kind must
//! give a clear error (exit 2) or a result flagged as low confidence, never a crash.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde_json::Value;
use support::{json, nexus, ok, run};

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Fails with exit code 2 and a message containing every one of `words`.
fn usage_error(o: Output, words: &[&str]) {
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "stdout: {out}\nstderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for w in words {
        assert!(err.contains(w), "{w:?} in {err}");
    }
}

fn file(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write");
    path
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

// ---- text ----

#[test]
fn emotion_text_reads_the_feeling_in_the_documented_json_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v = json(run(
        dir.path(),
        &[
            "emotion",
            "text",
            "I'm terrified, I think someone is in the house",
            "--json",
        ],
    ));
    let labels = v["labels"].as_array().expect("labels");
    assert_eq!(labels.len(), 28);
    assert_eq!(labels[0]["label"], "fear", "{v}");
    assert!(labels[0]["score"].as_f64().expect("score") > 0.5);
    let ekman = v["ekman"].as_array().expect("ekman");
    assert_eq!(ekman.len(), 7);
    assert_eq!(ekman[0]["label"], "fear");
    assert!(v["valence"].as_f64().expect("valence") < 0.0);
    assert!(v["arousal"].as_f64().expect("arousal") > 0.5);
    assert_eq!(v["low_confidence"], false);
    // The issue's field order comes first.
    let out = ok(run(
        dir.path(),
        &["emotion", "text", "Thank you!", "--json"],
    ));
    let keys: Vec<usize> = ["\"labels\"", "\"ekman\"", "\"valence\"", "\"arousal\""]
        .iter()
        .map(|k| out.find(k).expect("key"))
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{out}");
    // Human output.
    let out = ok(run(dir.path(), &["emotion", "text", "Thank you so much!"]));
    assert!(out.contains("gratitude"), "{out}");
    assert!(out.contains("valence +"), "{out}");
}

#[test]
fn emotion_text_stdin_prints_one_json_object_per_line_and_flags_bad_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = nexus(dir.path())
        .args(["emotion", "text", "--stdin", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(
            "I love this so much\n\n   \nJe suis très content de te voir aujourd'hui\n\
             我今天很难过\nThis is disgusting and I am furious\n"
                .as_bytes(),
        )
        .expect("write");
    let o = child.wait_with_output().expect("wait");
    let out = ok(o);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert_eq!(lines[0]["labels"][0]["label"], "love");
    for empty in &lines[1..3] {
        assert_eq!(empty["flags"]["empty"], true);
        assert_eq!(empty["confidence"], 0.0);
        assert_eq!(empty["low_confidence"], true);
    }
    for foreign in &lines[3..5] {
        assert_eq!(foreign["flags"]["maybe_not_english"], true, "{foreign}");
        assert_eq!(foreign["low_confidence"], true, "{foreign}");
    }
    assert!(lines[5]["valence"].as_f64().expect("valence") < 0.0);
}

#[test]
fn emotion_text_without_text_or_with_empty_text_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    usage_error(run(dir.path(), &["emotion", "text", ""]), &["empty"]);
    usage_error(run(dir.path(), &["emotion", "text", "   \n "]), &["empty"]);
    usage_error(run(dir.path(), &["emotion", "text"]), &["<TEXT>"]);
}

// ---- audio ----

/// Writes a WAV of `samples` (-1..1, interleaved) as 16-bit or 24-bit integers.
fn wav(path: &Path, rate: u32, channels: u16, bits: u16, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create wav");
    let scale = 2f32.powi(i32::from(bits) - 1) - 1.0;
    for &x in samples {
        w.write_sample((x.clamp(-1.0, 1.0) * scale) as i32)
            .expect("sample");
    }
    w.finalize().expect("finalize");
}

/// A voice-like signal: harmonics of a gliding F0 in syllable-like bursts.
fn voice(rate: u32, seconds: f32, f0: f32, loud: f32) -> Vec<f32> {
    let n = (rate as f32 * seconds) as usize;
    let mut phase = 0.0f32;
    (0..n)
        .map(|i| {
            let t = i as f32 / rate as f32;
            let f = f0 * (1.0 + 0.15 * (2.0 * std::f32::consts::PI * 1.5 * t).sin());
            phase += 2.0 * std::f32::consts::PI * f / rate as f32;
            let syllables = (0.5 + 0.5 * (2.0 * std::f32::consts::PI * 4.0 * t).sin()).powi(2);
            let tone: f32 = (1..=5).map(|h| (phase * h as f32).sin() / h as f32).sum();
            loud * syllables * tone / 2.3
        })
        .collect()
}

#[test]
fn emotion_audio_reads_any_rate_and_channel_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 44.1 kHz stereo, 24 bit.
    let mono = voice(44_100, 2.0, 140.0, 0.5);
    let stereo: Vec<f32> = mono.iter().flat_map(|&x| [x, x]).collect();
    let path = dir.path().join("voice.wav");
    wav(&path, 44_100, 2, 24, &stereo);
    let v = json(run(dir.path(), &["emotion", "audio", s(&path), "--json"]));
    assert_eq!(v["input"]["sample_rate"], 44_100);
    assert_eq!(v["input"]["channels"], 2);
    let f0 = v["summary"]["f0"]["mean_hz"].as_f64().expect("pitch found");
    assert!((110.0..=180.0).contains(&f0), "F0 {f0}: {v}");
    assert!(v["confidence"].as_f64().expect("confidence") > 0.0);
    assert!(v["arousal"].as_f64().is_some());
    assert_eq!(v["valence"], Value::Null, "not estimated from voice");
    // 8 kHz mono, 16 bit, human output.
    let path = dir.path().join("phone.wav");
    wav(&path, 8_000, 1, 16, &voice(8_000, 2.0, 200.0, 0.4));
    let out = ok(run(dir.path(), &["emotion", "audio", s(&path)]));
    assert!(out.contains("pitch:") && out.contains("arousal"), "{out}");
}

#[test]
fn emotion_audio_on_ravdess_tells_angry_from_calm_speech() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/ravdess-dev/wav");
    // Actor 1, statement 1, strong intensity: 05 angry, 02 calm.
    let (angry, calm) = (
        data.join("03-01-05-02-01-01-01.wav"),
        data.join("03-01-02-02-01-01-01.wav"),
    );
    if !angry.exists() || !calm.exists() {
        eprintln!("skipped: RAVDESS dev clips not found at {}", data.display());
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let arousal = |p: &Path| {
        json(run(dir.path(), &["emotion", "audio", s(p), "--json"]))["arousal"]
            .as_f64()
            .expect("arousal")
    };
    let (a, c) = (arousal(&angry), arousal(&calm));
    assert!(a > c, "angry {a} vs calm {c}");
}

/// Uniform white noise in -0.5..0.5 (xorshift, deterministic).
fn white_noise(n: usize) -> Vec<f32> {
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

#[test]
fn bad_audio_is_an_error_or_flagged_low_confidence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // Not a WAV file at all.
    let garbage: Vec<u8> = (0..5_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let path = file(d, "garbage.wav", &garbage);
    usage_error(
        run(d, &["emotion", "audio", s(&path)]),
        &["not a readable WAV"],
    );
    // A RIFF header and then nonsense.
    let mut broken = b"RIFF\x24\x00\x00\x00WAVEfmt ".to_vec();
    broken.extend_from_slice(&[0xff; 40]);
    let path = file(d, "broken.wav", &broken);
    usage_error(
        run(d, &["emotion", "audio", s(&path)]),
        &["not a readable WAV"],
    );
    usage_error(
        run(d, &["emotion", "audio", s(&d.join("missing.wav"))]),
        &["cannot read"],
    );
    // Silence, no samples, noise, full-scale clipping: results flagged as low confidence.
    let cases: Vec<(&str, Vec<f32>, &str)> = vec![
        ("silent.wav", vec![0.0; 32_000], "silent"),
        ("empty.wav", Vec::new(), "too short"),
        ("noise.wav", white_noise(32_000), ""),
        ("clipped.wav", vec![1.0; 32_000], ""),
    ];
    for (name, samples, problem) in cases {
        let path = d.join(name);
        wav(&path, 16_000, 1, 16, &samples);
        let v = json(run(d, &["emotion", "audio", s(&path), "--json"]));
        assert_eq!(v["low_confidence"], true, "{name}: {v}");
        if !problem.is_empty() {
            assert!(
                v["problem"].as_str().is_some_and(|p| p.contains(problem)),
                "{name}: {v}"
            );
            assert_eq!(v["confidence"], 0.0, "{name}: {v}");
        }
        let out = ok(run(d, &["emotion", "audio", s(&path)]));
        assert!(out.contains("low confidence"), "{name}: {out}");
    }
}

// ---- heart rate ----

fn hr_log(start_ms: i64, bpm: impl Fn(usize) -> u32, n: usize) -> String {
    (0..n)
        .map(|i| format!("{} {}\n", start_ms + i as i64 * 1000, bpm(i)))
        .collect()
}

#[test]
fn emotion_hr_reads_logs_gatt_payloads_and_apple_health_exports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // Calm, then 40 % above resting: arousal rises.
    let log = hr_log(1_704_179_700_000, |i| if i < 300 { 65 } else { 95 }, 600);
    let path = file(d, "hr.txt", log.as_bytes());
    let v = json(run(d, &["emotion", "hr", s(&path), "--json"]));
    let windows = v["windows"].as_array().expect("windows");
    assert_eq!(windows.len(), 2, "{v}");
    let arousal = |w: &Value| w["arousal"].as_f64().expect("arousal");
    assert!(arousal(&windows[1]) > arousal(&windows[0]) + 0.2, "{v}");
    assert_eq!(v["samples"], 600);
    // 0x2A37 payloads (flags 0x16: 8-bit bpm, contact detected, RR present).
    let gatt = "16 48 02 03\n16 4a 00 03\n0x164c0003\n";
    let path = file(d, "gatt.txt", gatt.as_bytes());
    let v = json(run(d, &["emotion", "hr", s(&path), "--json"]));
    assert_eq!(v["samples"], 3, "{v}");
    assert_eq!(v["windows"][0]["mean_bpm"], 74.0, "{v}");
    // An Apple Health export.
    let mut xml = String::from("<?xml version=\"1.0\"?>\n<HealthData locale=\"en_US\">\n");
    for minute in 0..30 {
        xml.push_str(&format!(
            "<Record type=\"HKQuantityTypeIdentifierHeartRate\" unit=\"count/min\" value=\"{}\" \
             startDate=\"2024-03-10 09:{minute:02}:00 +0100\" endDate=\"2024-03-10 09:{minute:02}:00 +0100\"/>\n",
            70 + minute % 3
        ));
    }
    xml.push_str("</HealthData>\n");
    let path = file(d, "export.xml", xml.as_bytes());
    let v = json(run(d, &["emotion", "hr", s(&path), "--json"]));
    assert_eq!(v["samples"], 30, "{v}");
    assert_eq!(v["windows"].as_array().expect("windows").len(), 6);
    let out = ok(run(d, &["emotion", "hr", s(&path)]));
    assert!(out.contains("30 samples"), "{out}");
}

#[test]
fn impossible_heart_rates_are_excluded_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // Only impossible values: a clear error naming them.
    let path = file(d, "bad.txt", b"1704179700000 0\n1704179701000 400\n");
    usage_error(
        run(d, &["emotion", "hr", s(&path)]),
        &["no plausible heart-rate samples", "0, 400"],
    );
    // Mixed in with real ones: excluded, counted, shown.
    let mut log = hr_log(1_704_179_700_000, |_| 70, 30);
    log.push_str("1704179731000 0\n1704179732000 400\nnot a line\n");
    let path = file(d, "mixed.txt", log.as_bytes());
    let v = json(run(d, &["emotion", "hr", s(&path), "--json"]));
    assert_eq!(v["samples"], 30);
    let excluded = v["excluded"].as_array().expect("excluded");
    assert_eq!(excluded.len(), 2, "{v}");
    assert!(excluded.iter().all(|e| e["reason"] == "impossible_bpm"));
    assert_eq!(v["line_errors"].as_array().expect("errors").len(), 1);
    let out = ok(run(d, &["emotion", "hr", s(&path)]));
    assert!(out.contains("excluded: 2 impossible"), "{out}");
    // Nothing readable; a damaged export; an implausible resting rate.
    let path = file(d, "junk.txt", b"hello\nworld\n");
    usage_error(run(d, &["emotion", "hr", s(&path)]), &["no plausible"]);
    let path = file(d, "damaged.xml", b"<HealthData><Record type=");
    let o = run(d, &["emotion", "hr", s(&path)]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    let path = file(d, "ok.txt", hr_log(0, |_| 70, 5).as_bytes());
    usage_error(
        run(d, &["emotion", "hr", s(&path), "--resting-bpm", "400"]),
        &["--resting-bpm"],
    );
}

// ---- face ----

const HAPPY_FACE: &str = r#"{"blendShapes": {"mouthSmileLeft": 0.9, "mouthSmileRight": 0.85,
    "cheekSquintLeft": 0.7, "cheekSquintRight": 0.7, "browInnerUp": 0.05, "jawOpen": 0.2,
    "eyeWideLeft": 0, "eyeWideRight": 0, "browDownLeft": 0, "browDownRight": 0,
    "mouthFrownLeft": 0, "mouthFrownRight": 0, "noseSneerLeft": 0, "noseSneerRight": 0,
    "mouthPressLeft": 0, "mouthPressRight": 0, "eyeSquintLeft": 0.3, "eyeSquintRight": 0.3},
    "timestamp": 12.5}"#;

#[test]
fn emotion_face_reads_blend_shapes_and_flags_bad_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let path = file(d, "happy.json", HAPPY_FACE.as_bytes());
    let v = json(run(d, &["emotion", "face", s(&path), "--json"]));
    assert_eq!(v["top"], "happy", "{v}");
    assert!(v["valence"].as_f64().expect("valence") > 0.5);
    assert_eq!(v["low_confidence"], false, "{v}");
    let out = ok(run(d, &["emotion", "face", s(&path)]));
    assert!(out.contains("happy"), "{out}");
    // Out of range, not numbers, unknown names: used clamped or ignored, reported, low confidence.
    let path = file(
        d,
        "bad.json",
        br#"{"mouthSmileLeft": 3.5, "jawOpen": -2, "browInnerUp": "x", "tongueOut": 0.2, "wings": 1}"#,
    );
    let v = json(run(d, &["emotion", "face", s(&path), "--json"]));
    assert_eq!(v["low_confidence"], true, "{v}");
    assert_eq!(
        v["issues"]["out_of_range"].as_array().expect("list").len(),
        2
    );
    assert_eq!(v["issues"]["invalid"].as_array().expect("list").len(), 1);
    let out = ok(run(d, &["emotion", "face", s(&path)]));
    assert!(
        out.contains("out of range") && out.contains("low confidence"),
        "{out}"
    );
    // Not JSON, JSON of the wrong kind, a missing file.
    for (name, content) in [("broken.json", &b"{not json"[..]), ("number.json", b"42")] {
        let path = file(d, name, content);
        usage_error(
            run(d, &["emotion", "face", s(&path)]),
            &["blend-shape JSON"],
        );
    }
    usage_error(
        run(d, &["emotion", "face", s(&d.join("missing.json"))]),
        &["cannot read"],
    );
}

// ---- journal ----

#[test]
fn recorded_readings_and_chat_fill_the_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let empty = ok(run(d, &["journal"]));
    assert!(empty.contains("Nothing recorded yet"), "{empty}");
    // Readings recorded from the sensors' commands.
    let face = file(d, "happy.json", HAPPY_FACE.as_bytes());
    ok(run(d, &["emotion", "face", s(&face), "--record"]));
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_millis(),
    )
    .expect("ms");
    let hr = file(
        d,
        "hr.txt",
        hr_log(now_ms - 120_000, |_| 90, 100).as_bytes(),
    );
    let o = run(d, &["emotion", "hr", s(&hr), "--record"]);
    let (_, err) = text(&o);
    assert!(err.contains("recorded in the journal"), "{err}");
    // A chat message is scored and journalled with a link to the message.
    ok(run(
        d,
        &[
            "chat",
            "--message",
            "I'm really scared about my surgery tomorrow",
            "--max-tokens",
            "8",
            "--temperature",
            "0",
        ],
    ));
    let v = json(run(d, &["journal", "--json"]));
    assert_eq!(v["period"], "day");
    assert_eq!(v["counts"]["face"], 1, "{v}");
    assert_eq!(v["counts"]["text"], 1, "{v}");
    assert!(v["counts"]["heart"].as_u64().expect("heart") >= 1, "{v}");
    assert!(v["counts"]["fused"].as_u64().expect("fused") >= 3, "{v}");
    assert_eq!(v["buckets"].as_array().expect("hours").len(), 24);
    let moments = v["moments"].as_array().expect("moments");
    let surgery = moments
        .iter()
        .find(|m| m["excerpt"].as_str().is_some_and(|e| e.contains("surgery")))
        .unwrap_or_else(|| panic!("a moment for the message: {v}"));
    assert_eq!(surgery["label"], "fear", "{surgery}");
    let topics: Vec<&str> = surgery["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(topics.contains(&"surgery"), "{topics:?}");
    // The terminal views: a sparkline, the dominant emotion, the moments.
    let day = ok(run(d, &["journal"]));
    assert!(day.contains("valence by hour"), "{day}");
    assert!(day.contains("dominant:"), "{day}");
    assert!(day.contains("surgery"), "{day}");
    let week = ok(run(d, &["journal", "--week"]));
    assert!(week.contains("valence by day"), "{week}");
    assert_eq!(
        week.lines()
            .filter(|l| l.len() > 10 && l.as_bytes()[4] == b'-' && l.as_bytes()[7] == b'-')
            .count(),
        7,
        "one row per day: {week}"
    );
    let v = json(run(d, &["journal", "--week", "--json"]));
    assert_eq!(v["buckets"].as_array().expect("days").len(), 7);
}

#[test]
fn the_journal_travels_in_the_export_archive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).expect("dir");
    std::fs::create_dir_all(&b).expect("dir");
    let face = file(dir.path(), "happy.json", HAPPY_FACE.as_bytes());
    ok(run(&a, &["emotion", "face", s(&face), "--record"]));
    let archive = dir.path().join("archive.json");
    ok(run(&a, &["export", "-o", s(&archive)]));
    let v: Value =
        serde_json::from_slice(&std::fs::read(&archive).expect("read")).expect("archive JSON");
    let journal = v["journal"].as_array().expect("journal in the archive");
    assert_eq!(
        journal.len(),
        2,
        "the reading and its fused state: {journal:?}"
    );
    ok(run(&b, &["import-archive", s(&archive)]));
    ok(run(&b, &["import-archive", s(&archive)]));
    let restored = json(run(&b, &["journal", "--json"]));
    assert_eq!(restored["counts"]["face"], 1, "{restored}");
    assert_eq!(restored["counts"]["fused"], 1, "restored once: {restored}");
}
