//! Sentence-embedding latency and throughput of [`BertEmbedder`] (all-MiniLM-L6-v2), optionally
//! side by side with the Python stack most users would otherwise pick (sentence-transformers on
//! PyTorch), in the same run.
//!
//! ```text
//! cargo bench -p nexus-inference --bench embed
//! NEXUS_PY_REFERENCE=$(core/inference/benches/reference/setup.sh | tail -n1) \
//!     cargo bench -p nexus-inference --bench embed
//! ```
//!
//! It measures, on the verified model files (`nexus_testing::models::embedding_dir()`):
//!
//! * **one sentence**: `embed(&["I had a lovely walk in the park today."])`, warm, every one of
//!   `NEXUS_BENCH_RUNS` (default 300) runs timed; reported as p50 / p95 (and min / max),
//! * **a batch of 32**: `embed(&batch)` on 32 varied real sentences, `NEXUS_BENCH_BATCH_RUNS`
//!   (default 20) runs; reported as sentences/s at the median run (and the slowest / fastest),
//! * where the time of one sentence goes: tokenization, the encoder, pooling.
//!
//! The 32 sentences are Reddit comments from the GoEmotions training set when the shared data
//! folder is next to the repository (`../shared/data/goemotions/original/train.tsv`, or the file
//! `NEXUS_BENCH_SENTENCES`: one text per line, the text before the first tab), picked at a fixed
//! stride so that lengths vary; otherwise a built-in list. Nothing is copied into the repository.
//!
//! Threads: `NEXUS_BENCH_THREADS` (default 2). The encoder's worker pool (candle's) sizes itself
//! from `RAYON_NUM_THREADS` when the process starts, so unless `RAYON_NUM_THREADS` is already set
//! the bench re-runs itself with it set; the Python reference gets `torch.set_num_threads` with
//! the same number. (Inputs of up to 32 tokens run on the calling thread whatever the pool size;
//! see `SERIAL_ROWS` in `src/embed.rs`.)
//!
//! Python reference: when `NEXUS_PY_REFERENCE` names a Python interpreter that has
//! sentence-transformers (`benches/reference/setup.sh` creates one outside the repository), the
//! bench runs `benches/reference/embed_reference.py` with it on the same model folder and the
//! same sentences, prints both engines in one markdown table, and checks that the two produce
//! the same embeddings (cosine similarity of every pair above 0.9999; the bench fails
//! otherwise).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use nexus_inference::embed::{cosine, mean_pool_normalize};
use nexus_inference::{BertEmbedder, Embedder};
use serde::Deserialize;

/// The one-sentence latency input.
const SENTENCE: &str = "I had a lovely walk in the park today.";
/// Sentences in the throughput batch.
const BATCH: usize = 32;
/// Lowest cosine similarity accepted between our embedding of a text and the reference's.
const MIN_COSINE: f32 = 0.9999;
/// Latency goal for one sentence on 2 cores (the issue's target), in milliseconds.
const GOAL_MS: f64 = 5.0;

/// Used when the GoEmotions data is not next to the repository: short chat-like texts of
/// varied length, as a companion would embed them.
const FALLBACK: [&str; BATCH] = [
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

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env_usize(name: &str, default: usize) -> Result<usize, BoxError> {
    match std::env::var(name) {
        Ok(v) => Ok(v.trim().parse().map_err(|e| format!("{name}={v:?}: {e}"))?),
        Err(_) => Ok(default),
    }
}

fn run() -> Result<ExitCode, BoxError> {
    let threads = env_usize("NEXUS_BENCH_THREADS", 2)?.max(1);
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // candle reads the thread count from the environment; set it for a child process rather
        // than mutating this process's environment.
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
    let (batch, source) = sentences()?;
    let batch_refs: Vec<&str> = batch.iter().map(String::as_str).collect();
    // The file pads to 128 tokens; BertEmbedder pads a batch to its longest text instead.
    let mut tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))?;
    tokenizer.with_padding(None);
    let token_counts: Vec<usize> = batch_refs
        .iter()
        .map(|t| tokenizer.encode(*t, true).map(|e| e.len()))
        .collect::<Result<_, _>>()?;
    let single_tokens = tokenizer.encode(SENTENCE, true)?.len();

    println!(
        "# Embedding benchmark: all-MiniLM-L6-v2 ({})",
        dir.display()
    );
    println!(
        "threads {threads}; one sentence {SENTENCE:?} ({single_tokens} tokens), {runs} runs; \
         batch of {} sentences from {source} ({}..{} tokens, {} in all, padded to {}), \
         {batch_runs} runs",
        batch.len(),
        token_counts.iter().min().unwrap_or(&0),
        token_counts.iter().max().unwrap_or(&0),
        token_counts.iter().sum::<usize>(),
        token_counts.iter().max().unwrap_or(&0),
    );

    let started = Instant::now();
    let embedder = BertEmbedder::from_dir(&dir)?;
    let load_ms = ms_since(started);

    // Warm up: page in the weights, grow the allocator's pools, start the worker threads.
    for _ in 0..20 {
        embedder.embed(&[SENTENCE])?;
    }
    let mut single_ms = Vec::with_capacity(runs);
    let mut ours_single = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        ours_single = embedder.embed(&[SENTENCE])?;
        single_ms.push(ms_since(t));
    }
    embedder.embed(&batch_refs)?;
    let mut batch_ms = Vec::with_capacity(batch_runs);
    let mut ours_batch = Vec::new();
    for _ in 0..batch_runs {
        let t = Instant::now();
        ours_batch = embedder.embed(&batch_refs)?;
        batch_ms.push(ms_since(t));
    }
    let breakdown = breakdown(&embedder, &tokenizer, runs)?;

    let ours = Measured {
        engine: "nexus BertEmbedder".into(),
        threads,
        load_ms,
        single: Summary::of(&single_ms),
        batch: Summary::of(&batch_ms),
    };
    let reference = match std::env::var_os("NEXUS_PY_REFERENCE") {
        Some(python) => Some(python_reference(
            Path::new(&python),
            &dir,
            threads,
            &batch,
            runs,
            batch_runs,
        )?),
        None => None,
    };

    println!();
    println!(
        "one sentence, where the time goes (medians): tokenize {:.3} ms, encoder {:.3} ms, \
         pool + normalize {:.3} ms",
        breakdown.tokenize, breakdown.encoder, breakdown.pool
    );
    println!();
    println!(
        "| engine | threads | load ms | 1 sentence p50 ms | p95 ms | min–max ms \
         | batch-32 sentences/s | slowest–fastest | speed vs reference |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let ref_row = reference.as_ref().map(|(m, _)| m);
    print_row(&ours, ref_row);
    if let Some(r) = ref_row {
        print_row(r, Some(r));
    }
    println!();
    let goal = if ours.single.p50 < GOAL_MS {
        "met"
    } else {
        "MISSED"
    };
    println!(
        "goal: one sentence under {GOAL_MS} ms on {threads} threads: {goal} (p50 {:.2} ms, \
         p95 {:.2} ms)",
        ours.single.p50, ours.single.p95
    );

    let Some((_, vectors)) = reference else {
        println!(
            "(no Python reference: set NEXUS_PY_REFERENCE to the python that \
             core/inference/benches/reference/setup.sh prints)"
        );
        return Ok(ExitCode::SUCCESS);
    };
    let mut cosines = vec![cosine(&ours_single[0], &vectors.single_embedding)];
    if vectors.batch_embeddings.len() != ours_batch.len() {
        return Err("the reference returned a different number of embeddings".into());
    }
    cosines.extend(
        ours_batch
            .iter()
            .zip(&vectors.batch_embeddings)
            .map(|(a, b)| cosine(a, b)),
    );
    let max_abs = ours_batch
        .iter()
        .zip(&vectors.batch_embeddings)
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0.0_f32, f32::max);
    let min_cos = cosines.iter().copied().fold(f32::INFINITY, f32::min);
    let ok = min_cos > MIN_COSINE;
    println!(
        "same embeddings as the reference: {} ({} texts, lowest cosine {min_cos:.7}, largest \
         component difference {max_abs:.2e}; required: cosine > {MIN_COSINE})",
        if ok { "yes" } else { "NO" },
        cosines.len()
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// The batch sentences and where they came from.
fn sentences() -> Result<(Vec<String>, String), BoxError> {
    let path = match std::env::var_os("NEXUS_BENCH_SENTENCES") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            // core/inference -> the repository -> its parent, where shared/ sits.
            let default = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/data/goemotions/original/train.tsv");
            default.is_file().then_some(default)
        }
    };
    let Some(path) = path else {
        return Ok((
            FALLBACK.iter().map(|s| (*s).to_owned()).collect(),
            "the built-in list".into(),
        ));
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.split('\t').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .collect();
    if lines.len() < BATCH {
        return Err(format!("{}: fewer than {BATCH} texts", path.display()).into());
    }
    // A fixed stride through the first few thousand lines: varied lengths and topics, and the
    // same sentences on every run.
    let stride = (lines.len().min(BATCH * 101) / BATCH).max(1);
    let picked = (0..BATCH).map(|i| lines[i * stride].to_owned()).collect();
    let name = path.canonicalize().unwrap_or(path);
    Ok((picked, format!("{}", name.display())))
}

/// Nearest-rank percentiles of a set of timings.
#[derive(Clone, Copy)]
struct Summary {
    p50: f64,
    p95: f64,
    min: f64,
    max: f64,
}

impl Summary {
    fn of(samples: &[f64]) -> Self {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let rank = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
        Self {
            p50: rank(0.5),
            p95: rank(0.95),
            min: s[0],
            max: s[s.len() - 1],
        }
    }
}

struct Measured {
    engine: String,
    threads: usize,
    load_ms: f64,
    /// Milliseconds for one sentence.
    single: Summary,
    /// Milliseconds for the whole batch.
    batch: Summary,
}

impl Measured {
    fn sentences_per_s(&self) -> f64 {
        BATCH as f64 / self.batch.p50 * 1e3
    }
}

fn print_row(m: &Measured, reference: Option<&Measured>) {
    let ratio = match reference {
        Some(r) => format!(
            "{:.2}x latency, {:.2}x throughput",
            r.single.p50 / m.single.p50,
            m.sentences_per_s() / r.sentences_per_s()
        ),
        None => "–".into(),
    };
    println!(
        "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2}–{:.2} | {:.0} | {:.0}–{:.0} | {ratio} |",
        m.engine,
        m.threads,
        m.load_ms,
        m.single.p50,
        m.single.p95,
        m.single.min,
        m.single.max,
        m.sentences_per_s(),
        BATCH as f64 / m.batch.max * 1e3,
        BATCH as f64 / m.batch.min * 1e3,
    );
}

/// Medians, in milliseconds, of the stages of one-sentence embedding.
struct Breakdown {
    tokenize: f64,
    encoder: f64,
    pool: f64,
}

fn breakdown(
    embedder: &BertEmbedder,
    tokenizer: &tokenizers::Tokenizer,
    runs: usize,
) -> Result<Breakdown, BoxError> {
    let (mut tok, mut enc, mut pool) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(tokenizer.encode(SENTENCE, true)?);
        tok.push(ms_since(t));
        let t = Instant::now();
        let (hidden, mask) = embedder.hidden_states(&[SENTENCE])?;
        enc.push(ms_since(t));
        let t = Instant::now();
        std::hint::black_box(mean_pool_normalize(&hidden, &mask)?.to_vec2::<f32>()?);
        pool.push(ms_since(t));
    }
    let tokenize = Summary::of(&tok).p50;
    Ok(Breakdown {
        tokenize,
        // hidden_states tokenizes too.
        encoder: (Summary::of(&enc).p50 - tokenize).max(0.0),
        pool: Summary::of(&pool).p50,
    })
}

/// What `embed_reference.py` prints.
#[derive(Deserialize)]
struct Reference {
    engine: String,
    threads: usize,
    load_ms: f64,
    single_ms: Vec<f64>,
    batch_ms: Vec<f64>,
    single_embedding: Vec<f32>,
    batch_embeddings: Vec<Vec<f32>>,
}

/// The reference's embeddings of the single sentence and of the batch.
struct Vectors {
    single_embedding: Vec<f32>,
    batch_embeddings: Vec<Vec<f32>>,
}

fn python_reference(
    python: &Path,
    model_dir: &Path,
    threads: usize,
    batch: &[String],
    runs: usize,
    batch_runs: usize,
) -> Result<(Measured, Vectors), BoxError> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/reference/embed_reference.py");
    eprintln!("running the Python reference ({})", python.display());
    let request = serde_json::json!({
        "model_dir": model_dir,
        "threads": threads,
        "single": SENTENCE,
        "batch": batch,
        "runs": runs,
        "batch_runs": batch_runs,
        "warmup": 20,
    });
    let mut child = Command::new(python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(request.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!("the Python reference failed ({})", out.status).into());
    }
    let r: Reference = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("the Python reference printed no valid JSON: {e}"))?;
    Ok((
        Measured {
            engine: r.engine,
            threads: r.threads,
            load_ms: r.load_ms,
            single: Summary::of(&r.single_ms),
            batch: Summary::of(&r.batch_ms),
        },
        Vectors {
            single_embedding: r.single_embedding,
            batch_embeddings: r.batch_embeddings,
        },
    ))
}
