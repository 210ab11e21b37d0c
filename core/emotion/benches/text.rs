//! Text emotion model: latency, throughput, size, and the valence correlation with human ratings
//! side by side with VADER.
//!
//! ```text
//! cargo bench -p nexus-emotion --bench text
//! NEXUS_PY_REFERENCE=~/.cache/nexus-bench/vader-venv/bin/python cargo bench -p nexus-emotion --bench text
//! ```
//!
//! * **one sentence**: `analyze(&["I had a lovely walk in the park today."])`, warm, every one of
//!   `NEXUS_BENCH_RUNS` (default 300) runs timed; p50 / p95,
//! * **a batch of 32** varied chat-like sentences, `NEXUS_BENCH_BATCH_RUNS` (default 20) runs;
//!   sentences/s at the median run,
//! * **parameters** used at inference, and the size of the shipped trained weights,
//! * **valence vs human ratings**: Pearson correlation of our valence with the mean human rating
//!   of VADER's ground-truth sets (`../shared/data/vader/{tweets,movieReviewSnippets}_GroundTruth.txt`
//!   beside the repository, or `NEXUS_VADER_DIR`); skipped when the files are absent. When
//!   `NEXUS_PY_REFERENCE` names a Python interpreter with the `vaderSentiment` package (a venv
//!   outside the repository: `python3 -m venv ~/.cache/nexus-bench/vader-venv &&
//!   ~/.cache/nexus-bench/vader-venv/bin/pip install vaderSentiment`), the bench runs
//!   `benches/vader_reference.py` on the same files and prints VADER's correlation next to ours.
//!   VADER's lexicon was built with these ratings, so its tweets figure is an in-sample one.
//!
//! Threads: `NEXUS_BENCH_THREADS` (default 2); candle sizes its thread pools from
//! `RAYON_NUM_THREADS` at start-up, so the bench re-runs itself with it set.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use nexus_emotion::text::metrics::pearson;
use nexus_emotion::text::{BUNDLED_WEIGHTS, TextEmotion};

const SENTENCE: &str = "I had a lovely walk in the park today.";
/// Latency goal for one sentence on 2 cores, in milliseconds.
const GOAL_MS: f64 = 10.0;

const BATCH: [&str; 32] = [
    "I had a lovely walk in the park today.",
    "Can you remind me what we talked about yesterday?",
    "My sister is moving to Berlin next month and I'm going to miss her a lot.",
    "ugh, mondays",
    "I finally finished the book you recommended, the ending made me cry.",
    "What's a good recipe for a quick vegetarian dinner?",
    "I feel anxious about the job interview on Thursday.",
    "Thanks, that really helped!",
    "The cat knocked my coffee off the table again this morning.",
    "Do you think it's weird that I talk to my plants?",
    "We watched the sunset from the hill behind the old church.",
    "I'm not sure whether I should take the new position or stay where I am.",
    "lol that's hilarious",
    "My grandmother used to make the best apple pie in the whole village.",
    "How do I stop procrastinating when a deadline is close?",
    "It rained all day so I stayed in and played the piano.",
    "I got the tickets for the concert in June!",
    "Sometimes I feel like nobody really listens to me.",
    "The train was delayed for two hours and I missed my connection.",
    "Tell me something that will cheer me up.",
    "I started running again after my knee surgery and it feels great.",
    "Why do people say that time heals everything?",
    "My best friend forgot my birthday and I'm a bit hurt.",
    "We adopted a puppy from the shelter; her name is Pepper.",
    "I can't sleep, my mind keeps racing about tomorrow.",
    "Good morning!",
    "The new neighbours are very loud but they seem nice.",
    "I burned the rice again, I'm hopeless in the kitchen.",
    "Could you help me plan a surprise party for my partner?",
    "I passed my driving test on the third try!",
    "The museum had an exhibition about the history of maps, it was fascinating.",
    "I miss the way things were before everyone moved away.",
];

const VADER_SETS: [&str; 2] = [
    "tweets_GroundTruth.txt",
    "movieReviewSnippets_GroundTruth.txt",
];

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn env_usize(name: &str, default: usize) -> Result<usize, BoxError> {
    match std::env::var(name) {
        Ok(v) => Ok(v.trim().parse().map_err(|e| format!("{name}={v:?}: {e}"))?),
        Err(_) => Ok(default),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn run() -> Result<ExitCode, BoxError> {
    let threads = env_usize("NEXUS_BENCH_THREADS", 2)?.max(1);
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let status = Command::new(std::env::current_exe()?)
            .args(std::env::args_os().skip(1))
            .env("RAYON_NUM_THREADS", threads.to_string())
            .status()?;
        return Ok(if status.success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let threads = candle_core::utils::get_num_threads();
    let runs = env_usize("NEXUS_BENCH_RUNS", 300)?.max(1);
    let batch_runs = env_usize("NEXUS_BENCH_BATCH_RUNS", 20)?.max(1);

    let dir = nexus_testing::models::embedding_dir();
    let t0 = Instant::now();
    let model = TextEmotion::from_dir(&dir)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let card = model.card();
    println!("# Text emotion benchmark ({threads} threads)");
    println!();
    println!(
        "model: all-MiniLM-L6-v2 embeddings and layers 0..{} frozen, layers {}.. and heads \
         trained ({}), Ekman scores: {:?}",
        card.first_trained_layer, card.first_trained_layer, card.weights_dtype, card.ekman_source
    );
    println!(
        "parameters: {:.2} M; trained weights file {:.2} MB; load {load_ms:.0} ms",
        model.parameter_count() as f64 / 1e6,
        BUNDLED_WEIGHTS.len() as f64 / 1e6
    );
    let m = &card.dev_metrics;
    println!(
        "dev (model card): macro-F1 {} (thresholds tuned on dev; cross-fitted {}), micro-F1 {}, \
         Ekman macro-F1 {} (cross-fitted {})",
        m["macro_f1"],
        m["macro_f1_cross_fitted"],
        m["micro_f1"],
        m["ekman_macro_f1"],
        m["ekman_macro_f1_cross_fitted"]
    );
    println!();

    // Warm-up, then one sentence at a time.
    for _ in 0..5 {
        model.analyze(&[SENTENCE])?;
    }
    let mut single = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let r = model.analyze(&[SENTENCE])?;
        single.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(r);
    }
    single.sort_by(f64::total_cmp);
    let p50 = percentile(&single, 0.5);
    let p95 = percentile(&single, 0.95);

    let mut batch = Vec::with_capacity(batch_runs);
    model.analyze(&BATCH)?;
    for _ in 0..batch_runs {
        let t = Instant::now();
        let r = model.analyze(&BATCH)?;
        batch.push(t.elapsed().as_secs_f64());
        std::hint::black_box(r);
    }
    batch.sort_by(f64::total_cmp);
    let per_s = |secs: f64| BATCH.len() as f64 / secs;

    println!("| measurement | value |");
    println!("|---|---|");
    println!(
        "| one sentence, p50 / p95 ({runs} runs) | {p50:.2} / {p95:.2} ms (min {:.2}, max {:.2}); goal < {GOAL_MS} ms |",
        single[0],
        single[single.len() - 1]
    );
    println!(
        "| batch of 32, median ({batch_runs} runs) | {:.0} sentences/s (slowest {:.0}, fastest {:.0}) |",
        per_s(percentile(&batch, 0.5)),
        per_s(batch[batch.len() - 1]),
        per_s(batch[0])
    );
    println!();

    let vader_dir = std::env::var_os("NEXUS_VADER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/vader")
        });
    let files: Vec<PathBuf> = VADER_SETS.iter().map(|f| vader_dir.join(f)).collect();
    if files.iter().any(|f| !f.exists()) {
        println!(
            "valence correlation: SKIPPED (no VADER ground truth in {})",
            vader_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let reference = vader_reference(&files)?;
    println!(
        "| set | n | Pearson r, ours (valence) | Pearson r, VADER (compound) | ours, sentences/s |"
    );
    println!("|---|---|---|---|---|");
    for (name, path) in VADER_SETS.iter().zip(&files) {
        let rows = read_ground_truth(path)?;
        let texts: Vec<&str> = rows.iter().map(|(_, t)| t.as_str()).collect();
        let t = Instant::now();
        let readings = model.analyze(&texts)?;
        let rate = texts.len() as f64 / t.elapsed().as_secs_f64();
        let ours: Vec<f64> = readings.iter().map(|r| f64::from(r.valence)).collect();
        let gold: Vec<f64> = rows.iter().map(|(g, _)| *g).collect();
        let r = pearson(&ours, &gold);
        let vader = reference
            .as_ref()
            .and_then(|v| v["sets"][*name]["pearson"].as_f64())
            .map_or("(set NEXUS_PY_REFERENCE)".to_string(), |x| {
                format!("{x:.3}")
            });
        println!("| {name} | {} | {r:.3} | {vader} | {rate:.0} |", rows.len());
    }
    if let Some(v) = &reference {
        println!();
        println!("VADER: vaderSentiment {}", v["vader_version"]);
    }
    Ok(ExitCode::SUCCESS)
}

/// `(mean rating, text)` rows of a VADER ground-truth file.
fn read_ground_truth(path: &Path) -> Result<Vec<(f64, String)>, BoxError> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut rows = Vec::new();
    for line in text.lines() {
        let mut f = line.splitn(3, '\t');
        let (Some(_), Some(rating), Some(t)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        rows.push((rating.trim().parse::<f64>()?, t.to_string()));
    }
    Ok(rows)
}

/// VADER's correlations from `vader_reference.py`, when `NEXUS_PY_REFERENCE` is set.
fn vader_reference(files: &[PathBuf]) -> Result<Option<serde_json::Value>, BoxError> {
    let Some(python) = std::env::var_os("NEXUS_PY_REFERENCE") else {
        return Ok(None);
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/vader_reference.py");
    let out = Command::new(python).arg(script).args(files).output()?;
    if !out.status.success() {
        return Err(format!(
            "vader_reference.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(Some(serde_json::from_slice(&out.stdout)?))
}
