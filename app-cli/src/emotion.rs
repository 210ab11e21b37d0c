//! `nexus emotion text|audio|hr|face` and `nexus journal`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use nexus_app::Nexus;
use nexus_app::emotion::{JournalPeriod, JournalSummary, Signal};
use nexus_app::native::{self, NativeConfig};
use nexus_common::Timestamp;
use nexus_emotion::biometrics::{
    self, Baseline, DEFAULT_WINDOW_MS, HrReading, HrSeries, analyze_windows,
};
use nexus_emotion::face::{FaceReading, analyze_blend_shapes_json};
use nexus_emotion::fusion::{FusedState, FusionConfig};
use nexus_emotion::prosody::{self, ProsodyReading, SAMPLE_RATE};
use nexus_emotion::text::TextReading;
use serde::Serialize;
use serde_json::json;

use crate::error::CliError;

/// Readings under this confidence are flagged `low_confidence` (the fusion threshold).
fn low_confidence(confidence: f32) -> bool {
    confidence < FusionConfig::default().low_confidence
}

#[derive(Debug, Subcommand)]
pub enum EmotionCmd {
    /// How a text feels: 28 emotions, Ekman groups, valence and arousal.
    Text {
        /// The text (or --stdin).
        #[arg(required_unless_present = "stdin", conflicts_with = "stdin")]
        text: Option<String>,
        /// Read one text per line from standard input, print one result per line.
        #[arg(long)]
        stdin: bool,
        /// Print JSON (one object per text).
        #[arg(long)]
        json: bool,
        /// Also record the readings in the emotion journal.
        #[arg(long)]
        record: bool,
    },
    /// How a voice sounds (WAV, any sample rate and channels): pitch, energy, rate, arousal.
    Audio {
        /// The WAV file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Also record the reading in the emotion journal.
        #[arg(long)]
        record: bool,
    },
    /// Arousal and stress from heart rate: a text log (BPM samples, RR intervals, 0x2A37
    /// payloads in hex) or an Apple Health export.xml.
    Hr {
        /// The file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Also record the windows in the emotion journal (at their end times).
        #[arg(long)]
        record: bool,
        /// Window length in seconds.
        #[arg(long, default_value_t = DEFAULT_WINDOW_MS / 1000)]
        window: i64,
        /// Your resting heart rate (else estimated from the file, or 70).
        #[arg(long)]
        resting_bpm: Option<f32>,
    },
    /// Facial expression from ARKit blend shapes (JSON).
    Face {
        /// The JSON file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Also record the reading in the emotion journal.
        #[arg(long)]
        record: bool,
    },
}

#[derive(Debug, Args)]
pub struct JournalArgs {
    /// The last 7 days instead of today.
    #[arg(long)]
    week: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn emotion(config: &NativeConfig, cmd: EmotionCmd) -> Result<(), CliError> {
    match cmd {
        EmotionCmd::Text {
            text,
            stdin,
            json,
            record,
        } => text_cmd(config, text, stdin, json, record),
        EmotionCmd::Audio { file, json, record } => audio_cmd(config, &file, json, record),
        EmotionCmd::Hr {
            file,
            json,
            record,
            window,
            resting_bpm,
        } => hr_cmd(config, &file, json, record, window, resting_bpm),
        EmotionCmd::Face { file, json, record } => face_cmd(config, &file, json, record),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))
}

fn print_json(value: &impl Serialize) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

fn now() -> Timestamp {
    use nexus_common::Clock;
    nexus_common::SystemClock.now()
}

pub(crate) fn recorded_note(fused: &FusedState) -> String {
    format!(
        "recorded in the journal (fused state: valence {:+.2}, arousal {:.2}, confidence {:.2}{})",
        fused.valence,
        fused.arousal,
        fused.confidence,
        if fused.is_confident() {
            ""
        } else {
            ", low confidence"
        }
    )
}

// ---- text ----

#[derive(Serialize)]
struct Scored {
    label: &'static str,
    score: f32,
}

/// One line of `nexus emotion text --json` (the issue's field order first).
#[derive(Serialize)]
struct TextJson<'a> {
    labels: Vec<Scored>,
    ekman: Vec<Scored>,
    valence: f32,
    arousal: f32,
    active: Vec<&'static str>,
    ekman_active: Vec<&'static str>,
    confidence: f32,
    low_confidence: bool,
    flags: &'a nexus_emotion::text::TextFlags,
}

fn text_json(r: &TextReading) -> TextJson<'_> {
    let scored = |label: &'static str, score: f32| Scored { label, score };
    TextJson {
        labels: r.labels.iter().map(|&(l, s)| scored(l.name(), s)).collect(),
        ekman: r.ekman.iter().map(|&(g, s)| scored(g.name(), s)).collect(),
        valence: r.valence,
        arousal: r.arousal,
        active: r.active.iter().map(|l| l.name()).collect(),
        ekman_active: r.ekman_active.iter().map(|g| g.name()).collect(),
        confidence: r.confidence,
        low_confidence: low_confidence(r.confidence),
        flags: &r.flags,
    }
}

fn print_text(r: &TextReading) {
    let top: Vec<String> = r
        .labels
        .iter()
        .take(5)
        .map(|(l, s)| {
            let active = if r.active.contains(l) { "*" } else { "" };
            format!("{}{active} {s:.2}", l.name())
        })
        .collect();
    let ekman: Vec<String> = r
        .ekman
        .iter()
        .take(3)
        .map(|(g, s)| format!("{} {s:.2}", g.name()))
        .collect();
    println!("emotions:  {}", top.join(", "));
    println!("ekman:     {}", ekman.join(", "));
    println!(
        "valence {:+.2}  arousal {:.2}  confidence {:.2}",
        r.valence, r.arousal, r.confidence
    );
    if r.flags.maybe_not_english {
        println!("low confidence: the text is probably not English");
    } else if low_confidence(r.confidence) {
        println!("low confidence: no emotion stands out");
    }
    if r.flags.truncated {
        println!("note: only the beginning of the text was read");
    }
}

fn text_model(config: &NativeConfig) -> Result<Nexus, CliError> {
    let mut app = native::open(config)?;
    app.set_text_emotion(native::load_text_emotion(config)?);
    Ok(app)
}

fn text_cmd(
    config: &NativeConfig,
    text: Option<String>,
    stdin: bool,
    json: bool,
    record: bool,
) -> Result<(), CliError> {
    if let Some(text) = text {
        if text.trim().is_empty() {
            return Err(CliError::Usage(
                "the text is empty: there is nothing to read an emotion from".into(),
            ));
        }
        let app = text_model(config)?;
        let reading = app
            .analyze_texts(&[&text])?
            .pop()
            .ok_or_else(|| CliError::Usage("no reading".into()))?;
        if json {
            print_json(&text_json(&reading))?;
        } else {
            print_text(&reading);
        }
        if record {
            let fused = app.record_reading(Signal::Text(&reading), now(), None)?;
            eprintln!("{}", recorded_note(&fused));
        }
        return Ok(());
    }
    if !stdin {
        return Err(CliError::Usage("give a text or --stdin".into()));
    }
    let app = text_model(config)?;
    let mut out = std::io::stdout().lock();
    // A reader thread hands lines over as they arrive. The model runs on everything that is
    // waiting (up to a batch): a pipe gets batched throughput, a person typing lines gets each
    // answer at once.
    let (lines_tx, lines_rx) = std::sync::mpsc::sync_channel::<std::io::Result<String>>(1024);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let failed = line.is_err();
            if lines_tx.send(line).is_err() || failed {
                break;
            }
        }
    });
    let mut batch: Vec<String> = Vec::new();
    let flush = |batch: &mut Vec<String>, out: &mut std::io::StdoutLock<'_>| {
        let texts: Vec<&str> = batch.iter().map(String::as_str).collect();
        let readings = app.analyze_texts(&texts)?;
        for r in &readings {
            if json {
                serde_json::to_writer(&mut *out, &text_json(r)).map_err(std::io::Error::from)?;
                writeln!(out)?;
            } else {
                let top = r.labels.first().map_or("neutral", |(l, _)| l.name());
                writeln!(
                    out,
                    "{top}\tvalence {:+.2}\tarousal {:.2}\tconfidence {:.2}{}",
                    r.valence,
                    r.arousal,
                    r.confidence,
                    if r.flags.empty {
                        "\tempty"
                    } else if r.flags.maybe_not_english {
                        "\tlow confidence (not English?)"
                    } else if low_confidence(r.confidence) {
                        "\tlow confidence"
                    } else {
                        ""
                    }
                )?;
            }
            if record && !r.flags.empty {
                app.record_reading(Signal::Text(r), now(), None)?;
            }
        }
        out.flush()?;
        batch.clear();
        Ok::<(), CliError>(())
    };
    let read = |line: std::io::Result<String>| {
        line.map_err(|e| CliError::Usage(format!("standard input: {e}")))
    };
    // Blocks for the first line of a batch, then takes what is already waiting.
    while let Ok(first) = lines_rx.recv() {
        batch.push(read(first)?);
        while batch.len() < STDIN_BATCH {
            match lines_rx.try_recv() {
                Ok(line) => batch.push(read(line)?),
                Err(_) => break,
            }
        }
        flush(&mut batch, &mut out)?;
    }
    Ok(())
}

/// Most lines of `--stdin` run through the model together.
const STDIN_BATCH: usize = 256;

// ---- audio ----

/// Reads a WAV file as 16 kHz mono `f32` (channels averaged, resampled).
fn read_wav(path: &Path) -> Result<(Vec<f32>, hound::WavSpec), CliError> {
    let bad = |e: String| {
        CliError::Usage(format!(
            "{} is not a readable WAV file: {e}",
            path.display()
        ))
    };
    let bytes = read_file(path)?;
    let reader =
        hound::WavReader::new(std::io::Cursor::new(bytes)).map_err(|e| bad(e.to_string()))?;
    let spec = reader.spec();
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(bad("no channels or a sample rate of 0".into()));
    }
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => reader
            .into_samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?,
        (hound::SampleFormat::Int, bits @ 1..=32) => {
            let scale = 2f32.powi(i32::from(bits) - 1);
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|s| s as f32 / scale))
                .collect::<Result<_, _>>()
                .map_err(|e| bad(e.to_string()))?
        }
        (format, bits) => {
            return Err(bad(format!(
                "unsupported sample format {format:?} with {bits} bits"
            )));
        }
    };
    let channels = usize::from(spec.channels);
    let mono: Vec<f32> = interleaved
        .chunks(channels)
        .map(|frame| frame.iter().sum::<f32>() / frame.len() as f32)
        .collect();
    let pcm =
        prosody::resample(&mono, spec.sample_rate, SAMPLE_RATE).map_err(|e| bad(e.to_string()))?;
    Ok((pcm, spec))
}

fn audio_cmd(config: &NativeConfig, path: &Path, json: bool, record: bool) -> Result<(), CliError> {
    let (pcm, spec) = read_wav(path)?;
    let reading = prosody::analyze(&pcm, None);
    let s = &reading.summary;
    let problem = if s.too_short {
        Some("too short: less than 25 ms of audio")
    } else if s.silent {
        Some("silent: no speech-level sound")
    } else if s.voiced_frames == 0 {
        Some("no voiced speech found")
    } else {
        None
    };
    let low = low_confidence(reading.affect.confidence);
    if json {
        print_json(&json!({
            "arousal": reading.affect.arousal,
            "arousal_probability": reading.arousal_probability,
            "valence": null,
            "confidence": reading.affect.confidence,
            "low_confidence": low,
            "problem": problem,
            "input": {"sample_rate": spec.sample_rate, "channels": spec.channels,
                      "bits": spec.bits_per_sample, "seconds": s.duration_s},
            "summary": s,
        }))?;
    } else {
        print_audio(&reading, problem, low, &spec);
    }
    if record {
        let app = native::open(config)?;
        let fused = app.record_reading(Signal::Voice(&reading), now(), None)?;
        eprintln!("{}", recorded_note(&fused));
    }
    Ok(())
}

fn print_audio(r: &ProsodyReading, problem: Option<&str>, low: bool, spec: &hound::WavSpec) {
    let s = &r.summary;
    println!(
        "audio:     {:.2} s, {} Hz, {} channel(s), {} bit",
        s.duration_s, spec.sample_rate, spec.channels, spec.bits_per_sample
    );
    if let Some(f0) = &s.f0 {
        println!(
            "pitch:     mean {:.0} Hz, spread {:.1} semitones, range {:.1} semitones",
            f0.mean_hz, f0.std_st, f0.range_st
        );
    }
    if let Some(e) = s.energy_mean_db {
        println!(
            "energy:    {e:.1} dBFS (spread {:.1} dB)",
            s.energy_std_db.unwrap_or(0.0)
        );
    }
    println!(
        "rhythm:    {:.1} syllables/s, pauses {:.0} %, voiced {:.0} %",
        s.speaking_rate,
        100.0 * s.pause_ratio,
        100.0 * s.voiced_fraction
    );
    match r.arousal_probability {
        Some(p) => println!(
            "arousal {:.2} (P(high) {p:.2})  confidence {:.2}  valence: not estimated from voice",
            r.affect.arousal, r.affect.confidence
        ),
        None => println!("arousal: unknown  confidence 0.00"),
    }
    if let Some(problem) = problem {
        println!("low confidence: {problem}");
    } else if low {
        println!("low confidence: little voiced speech");
    }
}

// ---- heart rate ----

#[derive(Serialize)]
struct HrOutput<'a> {
    windows: Vec<serde_json::Value>,
    samples: usize,
    excluded: &'a [biometrics::Excluded],
    rr_out_of_range: usize,
    line_errors: Vec<String>,
    invalid_records: usize,
    baseline: Baseline,
}

fn hr_cmd(
    config: &NativeConfig,
    path: &Path,
    json: bool,
    record: bool,
    window_s: i64,
    resting_bpm: Option<f32>,
) -> Result<(), CliError> {
    let bytes = read_file(path)?;
    let looks_like_xml = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'<');
    let (series, line_errors, invalid_records): (HrSeries, Vec<String>, usize) = if looks_like_xml {
        let import = biometrics::import_apple_health(&bytes[..]).map_err(|e| {
            CliError::Usage(format!(
                "{} is not a readable Apple Health export: {e}",
                path.display()
            ))
        })?;
        let mut errors = Vec::new();
        if let Some(why) = &import.stopped_early {
            errors.push(format!("the export is damaged; read up to: {why}"));
        }
        (import.heart_rate, errors, import.invalid_records)
    } else {
        let log = biometrics::parse_hr_log(&bytes);
        let mut errors: Vec<String> = log
            .errors
            .iter()
            .map(|e| format!("line {}: {}", e.line, e.message))
            .collect();
        if log.error_count > log.errors.len() {
            errors.push(format!(
                "… {} lines could not be read in all",
                log.error_count
            ));
        }
        (log.series, errors, 0)
    };
    if series.is_empty() {
        let mut why = format!("no plausible heart-rate samples in {}", path.display());
        if !series.excluded().is_empty() {
            let values: Vec<String> = series
                .excluded()
                .iter()
                .take(5)
                .map(|e| format!("{}", e.bpm))
                .collect();
            why.push_str(&format!(
                ": {} sample(s) excluded as impossible or without sensor contact (bpm {}{}; a \
                 human heart rate is between 20 and 250)",
                series.excluded().len(),
                values.join(", "),
                if series.excluded().len() > 5 {
                    ", …"
                } else {
                    ""
                }
            ));
        }
        if let Some(first) = line_errors.first() {
            why.push_str(&format!("; {first}"));
        }
        return Err(CliError::Usage(why));
    }
    let (baseline, windows) = hr_windows(&series, window_s, resting_bpm)?;
    let output = HrOutput {
        windows: windows.iter().map(hr_window_json).collect(),
        samples: series.len(),
        excluded: series.excluded(),
        rr_out_of_range: series.rr_out_of_range(),
        line_errors,
        invalid_records,
        baseline,
    };
    if json {
        print_json(&output)?;
    } else {
        print_hr(&windows, &output);
    }
    if record {
        let app = native::open(config)?;
        if let (_, Some(fused)) = record_hr_windows(&app, &windows)? {
            eprintln!("{}", recorded_note(&fused));
        }
    }
    Ok(())
}

/// The heart-rate windows of `series` (`window_s` seconds long) judged against a baseline: the
/// given resting heart rate, else one estimated from the series (20 samples or more), else the
/// population default. One sample makes a window too, with a low confidence.
pub(crate) fn hr_windows(
    series: &HrSeries,
    window_s: i64,
    resting_bpm: Option<f32>,
) -> Result<(Baseline, Vec<HrReading>), CliError> {
    if window_s < 1 {
        return Err(CliError::Usage("--window must be at least 1 second".into()));
    }
    let baseline = match resting_bpm {
        Some(bpm) => Baseline::new(bpm, None).ok_or_else(|| {
            CliError::Usage(format!(
                "--resting-bpm {bpm} is not a plausible resting heart rate"
            ))
        })?,
        None => Baseline::from_history(series).unwrap_or_else(Baseline::population_default),
    };
    let windows = analyze_windows(series, window_s.saturating_mul(1000), &baseline);
    Ok((baseline, windows))
}

/// Records the windows that hold samples in the journal (heart readings at their end times,
/// each with the fused state it leads to). Returns how many readings were recorded and the
/// last fused state.
pub(crate) fn record_hr_windows(
    app: &Nexus,
    windows: &[HrReading],
) -> Result<(usize, Option<FusedState>), CliError> {
    let mut recorded = 0;
    let mut last = None;
    for w in windows.iter().filter(|w| w.stats.samples > 0) {
        last = Some(app.record_reading(Signal::Heart(w), now(), None)?);
        recorded += 1;
    }
    Ok((recorded, last))
}

fn hr_window_json(w: &HrReading) -> serde_json::Value {
    json!({
        "start": Timestamp(w.stats.start_ms).to_string(),
        "start_ms": w.stats.start_ms,
        "end_ms": w.stats.end_ms,
        "samples": w.stats.samples,
        "excluded": w.stats.excluded,
        "mean_bpm": w.stats.mean_bpm,
        "min_bpm": w.stats.min_bpm,
        "max_bpm": w.stats.max_bpm,
        "rmssd_ms": w.stats.rmssd.value_ms,
        "arousal": w.arousal,
        "stress": w.stress,
        "confidence": w.affect.confidence,
        "low_confidence": low_confidence(w.affect.confidence),
    })
}

fn opt(x: Option<f32>, digits: usize) -> String {
    x.map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
}

fn print_hr(windows: &[HrReading], o: &HrOutput<'_>) {
    println!(
        "{} samples, baseline resting {:.0} bpm ({})",
        o.samples,
        o.baseline.resting_bpm,
        match o.baseline.source {
            biometrics::BaselineSource::Caller => "given".to_owned(),
            biometrics::BaselineSource::History { samples } => format!("from {samples} samples"),
            biometrics::BaselineSource::PopulationDefault => "population default".to_owned(),
        }
    );
    println!("window start              bpm  rmssd  arousal  stress  confidence");
    for w in windows {
        println!(
            "{}  {:>4}  {:>5}  {:>7}  {:>6}  {:.2}{}",
            Timestamp(w.stats.start_ms),
            opt(w.stats.mean_bpm, 0),
            opt(w.stats.rmssd.value_ms, 0),
            opt(w.arousal, 2),
            opt(w.stress, 2),
            w.affect.confidence,
            if low_confidence(w.affect.confidence) {
                "  low confidence"
            } else {
                ""
            }
        );
    }
    if !o.excluded.is_empty() {
        let values: Vec<String> = o
            .excluded
            .iter()
            .take(5)
            .map(|e| format!("{}", e.bpm))
            .collect();
        println!(
            "excluded: {} impossible sample(s) (bpm {}{})",
            o.excluded.len(),
            values.join(", "),
            if o.excluded.len() > 5 { ", …" } else { "" }
        );
    }
    for e in &o.line_errors {
        println!("skipped: {e}");
    }
}

// ---- face ----

fn face_cmd(config: &NativeConfig, path: &Path, json: bool, record: bool) -> Result<(), CliError> {
    let bytes = read_file(path)?;
    let reading = analyze_blend_shapes_json(&bytes).map_err(|e| {
        CliError::Usage(format!(
            "{} is not readable blend-shape JSON: {e}",
            path.display()
        ))
    })?;
    let low = low_confidence(reading.affect.confidence) || reading.low_coverage;
    if json {
        print_json(&json!({
            "top": reading.top,
            "emotions": reading.emotions,
            "valence": reading.affect.valence,
            "arousal": reading.affect.arousal,
            "confidence": reading.affect.confidence,
            "low_confidence": low,
            "coverage": reading.coverage,
            "low_coverage": reading.low_coverage,
            "issues": reading.issues,
            "action_units": reading.action_units,
        }))?;
    } else {
        print_face(&reading, low);
    }
    if record {
        let app = native::open(config)?;
        let fused = app.record_reading(Signal::Face(&reading), now(), None)?;
        eprintln!("{}", recorded_note(&fused));
    }
    Ok(())
}

fn print_face(r: &FaceReading, low: bool) {
    let mut emotions: Vec<(String, f32)> = nexus_emotion::face::Emotion::ALL
        .iter()
        .map(|&e| (format!("{e:?}").to_lowercase(), r.emotions.get(e)))
        .collect();
    emotions.sort_by(|a, b| b.1.total_cmp(&a.1));
    let shown: Vec<String> = emotions
        .iter()
        .take(3)
        .map(|(e, p)| format!("{e} {p:.2}"))
        .collect();
    println!("expression: {}", shown.join(", "));
    println!(
        "valence {:+.2}  arousal {:.2}  confidence {:.2}",
        r.affect.valence, r.affect.arousal, r.affect.confidence
    );
    for o in &r.issues.out_of_range {
        println!(
            "out of range: {:?} = {} (expected 0 to 1){}",
            o.shape,
            o.given,
            o.used
                .map_or_else(|| ", ignored".to_owned(), |u| format!(", used as {u}"))
        );
    }
    if !r.issues.unknown.is_empty() {
        println!("unknown names ignored: {}", r.issues.unknown.join(", "));
    }
    if !r.issues.invalid.is_empty() {
        println!(
            "values that are not numbers ignored: {}",
            r.issues.invalid.join(", ")
        );
    }
    if r.low_coverage {
        println!("low confidence: fewer than 6 of the blend shapes the rules read were given");
    } else if low {
        println!("low confidence: the input had problems");
    }
}

// ---- journal ----

const SPARKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One character for a valence in -1..1 (`·` without data).
fn spark(valence: Option<f32>) -> char {
    match valence {
        Some(v) if v.is_finite() => {
            let i = ((v.clamp(-1.0, 1.0) + 1.0) / 2.0 * 7.0).round() as usize;
            SPARKS[i.min(7)]
        }
        _ => '·',
    }
}

pub fn journal(config: &NativeConfig, args: JournalArgs) -> Result<(), CliError> {
    let app = native::open(config)?;
    let period = if args.week {
        JournalPeriod::Week
    } else {
        JournalPeriod::Day
    };
    let summary = app.journal_summary(period)?;
    if args.json {
        return print_json(&summary);
    }
    print_journal(&summary);
    Ok(())
}

fn print_journal(s: &JournalSummary) {
    let day = |t: Timestamp| t.to_string()[..10].to_owned();
    match s.period {
        JournalPeriod::Day => println!("Emotion journal, {} (UTC)", day(s.from)),
        JournalPeriod::Week => println!(
            "Emotion journal, {} to {} (UTC)",
            day(s.from),
            day(s.to.plus_millis(-1))
        ),
    }
    let readings: usize = s
        .counts
        .iter()
        .filter(|(k, _)| k.as_str() != "fused")
        .map(|(_, n)| n)
        .sum();
    if s.counts.is_empty() {
        println!("Nothing recorded yet. Chat with your companion, or record a reading with");
        println!(
            "`nexus emotion hr|face|audio FILE --record` or `nexus emotion text TEXT --record`."
        );
        return;
    }
    let sources: Vec<String> = s
        .counts
        .iter()
        .filter(|(k, _)| k.as_str() != "fused")
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!(
        "{readings} readings ({}), {} fused states",
        sources.join(", "),
        s.counts.get("fused").copied().unwrap_or(0)
    );
    let line: String = s.buckets.iter().map(|b| spark(b.valence)).collect();
    match s.period {
        JournalPeriod::Day => {
            println!();
            println!("valence by hour  {line}");
            println!("                 0     6     12    18   23");
        }
        JournalPeriod::Week => {
            println!();
            println!("day          valence        arousal  dominant");
            for b in &s.buckets {
                println!(
                    "{}   {} {:>6}   {:>7}  {}",
                    b.label,
                    spark(b.valence),
                    b.valence
                        .map_or_else(|| "-".to_owned(), |v| format!("{v:+.2}")),
                    opt(b.arousal, 2),
                    b.dominant.as_deref().unwrap_or("-")
                );
            }
            println!("valence by day  {line}");
        }
    }
    if let (Some(v), Some(a)) = (s.valence, s.arousal) {
        let per = match s.period {
            JournalPeriod::Day => "hour",
            JournalPeriod::Week => "day",
        };
        println!(
            "mean valence {v:+.2}, arousal {a:.2}{}{}",
            match (s.trend.as_deref(), s.valence_trend) {
                (Some(t), Some(x)) => format!("; valence {t} ({x:+.2} per {per})"),
                _ => String::new(),
            },
            s.arousal_trend
                .map_or_else(String::new, |x| format!(", arousal {x:+.2} per {per}"))
        );
    }
    if !s.emotions.is_empty() {
        let top: Vec<String> = s
            .emotions
            .iter()
            .take(4)
            .map(|(l, p)| format!("{l} {:.0} %", 100.0 * p))
            .collect();
        println!(
            "dominant: {} ({})",
            s.dominant.as_deref().unwrap_or("-"),
            top.join(", ")
        );
    }
    if !s.moments.is_empty() {
        println!();
        println!("moments:");
        for m in &s.moments {
            let when = m.at.to_string();
            println!(
                "  {}  {:<9} valence {:+.2}, confidence {:.2}{}{}",
                &when[..16],
                m.label.as_deref().unwrap_or("-"),
                m.valence,
                m.confidence,
                m.excerpt
                    .as_deref()
                    .map_or_else(String::new, |e| format!("  \"{e}\"")),
                if m.topics.is_empty() {
                    String::new()
                } else {
                    format!("  topics: {}", m.topics.join(", "))
                }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparks_cover_the_valence_range() {
        assert_eq!(spark(Some(-1.0)), '▁');
        assert_eq!(spark(Some(1.0)), '█');
        assert_eq!(spark(Some(5.0)), '█');
        assert_eq!(spark(None), '·');
        assert_eq!(spark(Some(f32::NAN)), '·');
    }
}
