//! Chat start-up: time to first token, whole-command time, decode speed and peak memory of
//! `nexus chat --message "Hi, how are you?" --json --max-tokens 32 --temperature 0`, run as a
//! fresh process each time, as a script or a shell would.
//!
//! ```text
//! cargo bench -p nexus-cli --bench startup
//! LLAMA_CPP_BIN_DIR=~/.cache/nexus-bench/llama-cpp-python-0.3.36/vendor/llama.cpp/build/bin \
//!     cargo bench -p nexus-cli --bench startup
//! ```
//!
//! For each engine (`NEXUS_BENCH_ENGINES`, comma-separated, default `native,candle`) and each
//! data directory state it runs the release `nexus` binary (`CARGO_BIN_EXE_nexus`) once to warm
//! the page cache, then `NEXUS_BENCH_RUNS` (default 10) timed times:
//!
//! * **fresh**: a new, empty data directory every run (first start: the database is created and
//!   migrated, the default companion is made),
//! * **warm**: a copy, every run, of a data directory that already holds a conversation of 20
//!   messages (10 earlier exchanges), so the prompt carries that history.
//!
//! Models come from the verified cache (`nexus_testing::models::chat_gguf()`, fetched once if
//! missing), passed with `--models-dir`. Per run it records
//!
//! * `ms_to_first_token` from the JSON reply: from the start of `main` to the first streamed
//!   piece of the answer (model loading, database, prompt assembly and prefill included),
//! * the wall time from spawning the process to its exit,
//! * `tokens_per_s` from the JSON reply (decode speed of the answer),
//! * the peak resident memory of the process (`ru_maxrss` from `wait4`),
//! * `model_load_ms` from the JSON reply (opening and preparing the GGUF),
//!
//! and prints the median and the 90th percentile (nearest rank) of each as markdown rows.
//!
//! llama.cpp reference: when `LLAMA_CPP_BIN_DIR` names a llama.cpp build directory holding
//! `llama-completion` (`core/inference/benches/build-llama-bench.sh` builds it), the same GGUF
//! runs through `llama-completion -no-cnv --no-display-prompt -n 32 --temp 0 -t THREADS` with a
//! ChatML prompt of a system message and "Hi, how are you?", and the bench records the time
//! from spawning it to the first byte of its answer on stdout, its wall time and its peak
//! memory. Threads: `NEXUS_BENCH_THREADS` (default 2) for both.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use serde::Deserialize;

/// The message of every timed run.
const MESSAGE: &str = "Hi, how are you?";
/// Longest reply.
const MAX_TOKENS: &str = "32";
/// Time-to-first-token goal from process start, in milliseconds.
const GOAL_MS: f64 = 1500.0;
/// The user turns that fill the warm data directory (two stored messages each).
const HISTORY: [&str; 10] = [
    "Hello! I just got home from work.",
    "It was a long day, lots of meetings.",
    "Do you have any tips for relaxing in the evening?",
    "I like reading, but I fall asleep quickly.",
    "Maybe I should try a short walk instead.",
    "The park near my house is nice at sunset.",
    "My friend Anna usually joins me on weekends.",
    "She is training for a half marathon.",
    "I might sign up for a 10k myself.",
    "Thanks for listening, that helped.",
];

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
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

/// What one process run measured.
#[derive(Debug, Clone, Copy)]
struct Sample {
    first_token_ms: f64,
    wall_ms: f64,
    tokens_per_s: f64,
    peak_mb: f64,
    prompt_tokens: usize,
    tokens: usize,
    /// Loading the chat model (nexus's `model_load_ms`; NaN where unknown).
    load_ms: f64,
}

/// The fields of `nexus chat --json` that the bench reads.
#[derive(Deserialize)]
struct Reply {
    tokens: usize,
    ms_to_first_token: f64,
    tokens_per_s: f64,
    prompt_tokens: usize,
    model_load_ms: f64,
}

struct Setup {
    nexus: PathBuf,
    models_dir: PathBuf,
    gguf: PathBuf,
    threads: usize,
}

fn run() -> Result<(), BoxError> {
    let runs = env_usize("NEXUS_BENCH_RUNS", 10)?.max(1);
    let threads = env_usize("NEXUS_BENCH_THREADS", 2)?.max(1);
    let engines = std::env::var("NEXUS_BENCH_ENGINES").unwrap_or_else(|_| "native,candle".into());
    let gguf = nexus_testing::models::chat_gguf();
    // <cache>/<model id>/<file>.gguf
    let models_dir = gguf
        .parent()
        .and_then(Path::parent)
        .ok_or("the chat model is not inside a models directory")?
        .to_path_buf();
    let setup = Setup {
        nexus: PathBuf::from(env!("CARGO_BIN_EXE_nexus")),
        models_dir,
        gguf,
        threads,
    };
    println!("# Chat start-up benchmark");
    println!(
        "`nexus chat --message {MESSAGE:?} --json --max-tokens {MAX_TOKENS} --temperature 0`, \
         {threads} threads, {runs} runs per row after one untimed run; model {}",
        setup.gguf.display()
    );

    let scratch = tempfile::tempdir()?;
    let warm_template = scratch.path().join("warm-template");
    std::fs::create_dir_all(&warm_template)?;
    eprintln!("preparing a data directory with a 20-message conversation");
    for text in HISTORY {
        run_nexus(&setup, "native", &warm_template, text)?;
    }

    let mut rows = Vec::new();
    for engine in engines.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        for state in ["fresh", "warm"] {
            let mut samples = Vec::with_capacity(runs);
            for i in 0..=runs {
                let dir = tempfile::tempdir_in(scratch.path())?;
                if state == "warm" {
                    copy_dir(&warm_template, dir.path())?;
                }
                let s = run_nexus(&setup, engine, dir.path(), MESSAGE)?;
                if i > 0 {
                    samples.push(s);
                }
            }
            eprintln!("{engine}/{state}: done");
            rows.push((format!("nexus --engine {engine}"), state, samples));
        }
    }
    if let Some(dir) = std::env::var_os("LLAMA_CPP_BIN_DIR") {
        let bin = Path::new(&dir).join("llama-completion");
        if bin.is_file() {
            let mut samples = Vec::with_capacity(runs);
            for i in 0..=runs {
                let s = run_llama(&setup, &bin)?;
                if i > 0 {
                    samples.push(s);
                }
            }
            rows.push(("llama.cpp llama-completion".into(), "–", samples));
        } else {
            eprintln!(
                "LLAMA_CPP_BIN_DIR has no llama-completion ({}): skipping llama.cpp",
                bin.display()
            );
        }
    }

    println!();
    println!(
        "| engine | data dir | prompt tokens | model load ms p50 | first token ms p50 | p90 \
         | wall ms p50 | p90 | reply tokens | decode tokens/s p50 | peak RSS MB p50 | p90 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (engine, state, samples) in &rows {
        let col = |f: fn(&Sample) -> f64| Percentiles::of(samples.iter().map(f).collect());
        let (load, ttft, wall, tps, rss) = (
            col(|s| s.load_ms),
            col(|s| s.first_token_ms),
            col(|s| s.wall_ms),
            col(|s| s.tokens_per_s),
            col(|s| s.peak_mb),
        );
        let load = if load.p50.is_nan() {
            "–".to_owned()
        } else {
            format!("{:.0}", load.p50)
        };
        println!(
            "| {engine} | {state} | {} | {load} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {:.0} \
             | {:.0} |",
            samples[0].prompt_tokens,
            ttft.p50,
            ttft.p90,
            wall.p50,
            wall.p90,
            samples[0].tokens,
            tps.p50,
            rss.p50,
            rss.p90,
        );
    }
    println!();
    for (engine, state, samples) in rows.iter().filter(|r| r.0.starts_with("nexus")) {
        let p = Percentiles::of(samples.iter().map(|s| s.first_token_ms).collect());
        println!(
            "goal: first token under {GOAL_MS:.0} ms in 9 runs of 10 ({engine}, {state}): {} \
             (p50 {:.0} ms, p90 {:.0} ms)",
            if p.p90 < GOAL_MS { "met" } else { "MISSED" },
            p.p50,
            p.p90
        );
    }
    Ok(())
}

/// Median and 90th percentile (nearest rank).
struct Percentiles {
    p50: f64,
    p90: f64,
}

impl Percentiles {
    fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Self {
            p50: rank(0.5),
            p90: rank(0.9),
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// One `nexus chat --message` process.
fn run_nexus(
    setup: &Setup,
    engine: &str,
    data_dir: &Path,
    message: &str,
) -> Result<Sample, BoxError> {
    let mut cmd = Command::new(&setup.nexus);
    cmd.arg("--data-dir")
        .arg(data_dir)
        .arg("--models-dir")
        .arg(&setup.models_dir)
        .args(["--engine", engine, "--threads", &setup.threads.to_string()])
        .args([
            "chat",
            "--message",
            message,
            "--json",
            "--max-tokens",
            MAX_TOKENS,
        ])
        .args(["--temperature", "0"])
        .env_remove("NEXUS_LOG");
    let run = spawn_measured(cmd, data_dir)?;
    let reply: Reply = serde_json::from_slice(&run.stdout).map_err(|e| {
        format!(
            "nexus printed no JSON reply ({e}): {}",
            String::from_utf8_lossy(&run.stdout)
        )
    })?;
    Ok(Sample {
        first_token_ms: reply.ms_to_first_token,
        wall_ms: run.wall_ms,
        tokens_per_s: reply.tokens_per_s,
        peak_mb: run.peak_mb,
        prompt_tokens: reply.prompt_tokens,
        tokens: reply.tokens,
        load_ms: reply.model_load_ms,
    })
}

/// A system prompt of the size nexus's default companion gets, in ChatML (SmolLM2's template).
const LLAMA_PROMPT: &str = "<|im_start|>system\nYou are Nova, a warm and curious companion who \
    talks with the user as a friend. Personality: kind, attentive, playful. Speaking style: \
    short, natural sentences. Remember what the user tells you and ask about it later. \
    Never claim to be human.<|im_end|>\n<|im_start|>user\nHi, how are you?<|im_end|>\n\
    <|im_start|>assistant\n";

/// One `llama-completion` process on the same GGUF.
fn run_llama(setup: &Setup, bin: &Path) -> Result<Sample, BoxError> {
    let scratch = tempfile::tempdir()?;
    let mut cmd = Command::new(bin);
    cmd.arg("-m")
        .arg(&setup.gguf)
        .args([
            "-p",
            LLAMA_PROMPT,
            "-n",
            MAX_TOKENS,
            "--temp",
            "0",
            "--seed",
            "1",
        ])
        .args(["-t", &setup.threads.to_string(), "-c", "2048"])
        .args(["-no-cnv", "--no-display-prompt", "--no-warmup"]);
    let run = spawn_measured(cmd, scratch.path())?;
    let log = std::fs::read_to_string(scratch.path().join("stderr.log")).unwrap_or_default();
    // common_perf_print: prompt eval time =  12.3 ms /  57 tokens (...)
    // common_perf_print:        eval time =  45.6 ms /  31 runs   (... 680.1 tokens per second)
    let prompt = perf_line(&log, true);
    let eval = perf_line(&log, false);
    Ok(Sample {
        first_token_ms: run
            .first_byte_ms
            .ok_or("llama-completion printed nothing")?,
        wall_ms: run.wall_ms,
        tokens_per_s: eval
            .and_then(|l| number_before(l, "tokens per second"))
            .unwrap_or(0.0),
        peak_mb: run.peak_mb,
        prompt_tokens: prompt
            .and_then(|l| number_before(l, "tokens"))
            .unwrap_or(0.0) as usize,
        // The first token comes from the prompt pass, the others from `eval` runs.
        tokens: eval.and_then(|l| number_before(l, "runs")).unwrap_or(0.0) as usize + 1,
        // llama.cpp's own "load time" line ends with its first prompt pass (with --no-warmup),
        // so it is not the model load: not reported.
        load_ms: f64::NAN,
    })
}

/// llama.cpp's performance line of the prompt pass (`prompt`) or of the single-token steps.
fn perf_line(log: &str, prompt: bool) -> Option<&str> {
    log.lines().find(|l| {
        l.contains("_perf_") && l.contains("eval time") && l.contains("prompt eval") == prompt
    })
}

/// The number just before `unit` in `line` ("... / 57 tokens" -> 57).
fn number_before(line: &str, unit: &str) -> Option<f64> {
    let before = &line[..line.find(unit)?];
    before.split_whitespace().last()?.parse().ok()
}

/// What a measured child process did.
struct Run {
    stdout: Vec<u8>,
    /// From spawning to the first byte on stdout.
    first_byte_ms: Option<f64>,
    /// From spawning to exit.
    wall_ms: f64,
    /// Peak resident memory.
    peak_mb: f64,
}

/// Spawns `cmd` with stdout piped and stderr in `scratch/stderr.log`, reads stdout to the end,
/// reaps the process with `wait4` to get its peak memory, and fails unless it exited with 0.
fn spawn_measured(mut cmd: Command, scratch: &Path) -> Result<Run, BoxError> {
    let log_path = scratch.join("stderr.log");
    let log = File::create(&log_path)?;
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()?;
    let mut stdout = Vec::new();
    let mut first_byte_ms = None;
    let mut pipe = child.stdout.take().ok_or("no stdout")?;
    let mut buf = [0_u8; 4096];
    loop {
        let n = pipe.read(&mut buf)?;
        if n == 0 {
            break;
        }
        first_byte_ms.get_or_insert_with(|| started.elapsed().as_secs_f64() * 1e3);
        stdout.extend_from_slice(&buf[..n]);
    }
    let (code, peak_kb) = wait_peak_rss(child.id())?;
    let wall_ms = started.elapsed().as_secs_f64() * 1e3;
    if code != Some(0) {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        return Err(format!("{cmd:?} failed ({code:?}):\n{log}").into());
    }
    Ok(Run {
        stdout,
        first_byte_ms,
        wall_ms,
        peak_mb: peak_kb as f64 / 1024.0,
    })
}

/// Reaps the child `pid` and returns its exit code (`None` if a signal ended it) and its peak
/// resident set size in KiB.
///
/// `std::process::Child` has no access to the child's resource usage, hence `wait4`. The
/// `Child` handle is never waited on afterwards (and dropping it does not wait), so the pid is
/// reaped exactly once.
#[allow(unsafe_code)]
fn wait_peak_rss(pid: u32) -> std::io::Result<(Option<i32>, u64)> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is a plain C struct of integers, for which all-zero bytes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers refer to live, writable locals of the right types for the
        // duration of the call; `pid` is our own unreaped child.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    // Linux reports ru_maxrss in KiB.
    Ok((code, u64::try_from(usage.ru_maxrss).unwrap_or(0)))
}
