//! `nexus`: talk to your companion in the terminal.
//!
//! A thin shell over `nexus-app`: argument parsing, terminal input and output, exit codes.

mod cards;
mod chat;
mod commands;
mod emotion;
mod error;
mod memory;
mod privacy;
mod share;
mod sync;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use nexus_app::native::{EngineChoice, NativeConfig, default_data_dir, default_models_dir};

use crate::error::CliError;

/// Nexus: a private AI companion that runs on your own device.
#[derive(Debug, Parser)]
#[command(name = "nexus", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// Where your companions and conversations are stored.
    #[arg(long, global = true, env = "NEXUS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Where verified model files are cached.
    #[arg(long, global = true, env = "NEXUS_MODELS_DIR", value_name = "DIR")]
    models_dir: Option<PathBuf>,
    /// Chat engine: auto, native or candle.
    #[arg(long, global = true, env = "NEXUS_ENGINE", default_value = "auto")]
    engine: EngineChoice,
    /// Threads for the model (0: one per core).
    #[arg(long, global = true, env = "NEXUS_THREADS", default_value_t = 0)]
    threads: usize,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Chat with a companion (interactive, or one reply with --message).
    Chat(chat::ChatArgs),
    /// Create, list, show, edit and delete companions.
    #[command(subcommand)]
    Companion(commands::CompanionCmd),
    /// Show the messages of a conversation.
    History(commands::HistoryArgs),
    /// Import and export character cards (PNG, JSON, CHARX).
    #[command(subcommand)]
    Card(cards::CardCmd),
    /// See, search, edit, pin and forget what your companion remembers about you.
    #[command(subcommand)]
    Memory(memory::MemoryCmd),
    /// Write everything you own (companions, conversations, memories, settings) to a JSON archive.
    Export(privacy::ExportArgs),
    /// Restore an archive written by `nexus export`.
    ImportArchive(privacy::ImportArgs),
    /// Delete everything you own, for good.
    ForgetMe(privacy::ForgetMeArgs),
    /// Fetch, verify and list the model files.
    #[command(subcommand)]
    Models(commands::ModelsCmd),
    /// Read emotion from a text, a voice recording, heart rate or a face.
    #[command(subcommand)]
    Emotion(emotion::EmotionCmd),
    /// Your emotion journal: today, or the last 7 days with --week.
    Journal(emotion::JournalArgs),
    /// Sync your companions between devices (end-to-end encrypted).
    #[command(subcommand)]
    Sync(sync::SyncCmd),
    /// Pair another device with this one, or join another device's space.
    #[command(subcommand)]
    Device(sync::DeviceCmd),
    /// A wearable's role: push samples into the journal through sync.
    #[command(subcommand)]
    Wearable(sync::WearableCmd),
}

fn main() -> ExitCode {
    let started = Instant::now();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NEXUS_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let config = NativeConfig {
        threads: cli.global.threads,
        engine: cli.global.engine,
        ..NativeConfig::new(
            cli.global.data_dir.unwrap_or_else(default_data_dir),
            cli.global.models_dir.unwrap_or_else(default_models_dir),
        )
    };
    let result: Result<(), CliError> = match cli.command {
        Command::Chat(args) => chat::run(&config, args, started),
        Command::Companion(cmd) => commands::companion(&config, cmd),
        Command::History(args) => commands::history(&config, args),
        Command::Card(cmd) => cards::card(&config, cmd),
        Command::Memory(cmd) => memory::run(&config, cmd),
        Command::Export(args) => privacy::export(&config, args),
        Command::ImportArchive(args) => privacy::import(&config, args),
        Command::ForgetMe(args) => privacy::forget_me(&config, args),
        Command::Models(cmd) => commands::models(&config, cmd),
        Command::Emotion(cmd) => emotion::emotion(&config, cmd),
        Command::Journal(args) => emotion::journal(&config, args),
        Command::Sync(cmd) => sync::sync(&config, cmd),
        Command::Device(cmd) => sync::device(&config, cmd),
        Command::Wearable(cmd) => sync::wearable(&config, cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(hint) = e.hint() {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
