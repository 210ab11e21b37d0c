//! `nexus card import FILE` and `nexus card export NAME`: SillyTavern-compatible character
//! cards (PNG, JSON, CHARX; V1, V2 and V3).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::Subcommand;
use nexus_app::native::{self, NativeConfig};
use nexus_app::{AppError, CardFormat, CardSpec, ImportSummary, MAX_CARD_BYTES, too_large_file};
use serde::Serialize;

use crate::error::CliError;

#[derive(Debug, Subcommand)]
pub enum CardCmd {
    /// Import a character card (PNG, JSON or CHARX) as a new companion.
    Import {
        /// The card file.
        file: PathBuf,
        /// Name of the new companion (default: the card's name).
        #[arg(long, value_name = "NEW")]
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export a companion as a character card.
    Export {
        /// Name or id of the companion.
        name: String,
        /// png (V2 and V3 inside the image), json (V3) or charx (V3 with assets). Default: from
        /// the output file's extension, else png.
        #[arg(long, short)]
        format: Option<CardFormat>,
        /// Output file (default: NAME.png, NAME.json or NAME.charx here).
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace the output file if it exists.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Serialize)]
struct ImportView<'a> {
    id: String,
    name: &'a str,
    format: String,
    spec: &'static str,
    lorebook_entries: usize,
    assets: usize,
    warnings: &'a [String],
}

/// Reads at most [`MAX_CARD_BYTES`] of a file (a larger file is an error, not a huge allocation).
fn read_card_file(path: &Path) -> Result<Vec<u8>, CliError> {
    let cannot =
        |e: std::io::Error| CliError::Usage(format!("cannot read {}: {e}", path.display()));
    let file = fs::File::open(path).map_err(cannot)?;
    let declared = file.metadata().map_err(cannot)?.len();
    if declared > MAX_CARD_BYTES as u64 {
        return Err(AppError::from(too_large_file(declared)).into());
    }
    let mut bytes = Vec::with_capacity(declared as usize);
    file.take(MAX_CARD_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() > MAX_CARD_BYTES {
        return Err(AppError::from(too_large_file(bytes.len() as u64)).into());
    }
    Ok(bytes)
}

/// A file name from a companion name: letters, digits, `-`, `_`, `.` and spaces kept.
fn file_stem(name: &str) -> String {
    let stem: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | ' ' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let stem = stem.trim().trim_start_matches('.').to_owned();
    if stem.is_empty() {
        "companion".into()
    } else {
        stem
    }
}

pub fn card(config: &NativeConfig, cmd: CardCmd) -> Result<(), CliError> {
    match cmd {
        CardCmd::Import { file, name, json } => {
            let bytes = read_card_file(&file)?;
            let app = native::open(config)?;
            let (c, summary) = app.import_card(&bytes, name.as_deref())?;
            for w in &summary.warnings {
                eprintln!("warning: {w}");
            }
            if json {
                return print_json(&ImportView {
                    id: c.id.to_string(),
                    name: &c.name,
                    format: summary.format.to_string(),
                    spec: summary.spec.as_str(),
                    lorebook_entries: summary.lorebook_entries,
                    assets: summary.assets,
                    warnings: &summary.warnings,
                });
            }
            println!(
                "Imported {} ({}) from {}.",
                c.name,
                c.id,
                describe(&summary)
            );
        }
        CardCmd::Export {
            name,
            format,
            output,
            force,
        } => {
            let format = format
                .or_else(|| {
                    output
                        .as_ref()
                        .and_then(|o| o.extension())
                        .and_then(|e| e.to_str())
                        .and_then(|e| e.parse().ok())
                })
                .unwrap_or(CardFormat::Png);
            let app = native::open(config)?;
            let (c, bytes) = app.export_card(&name, format)?;
            let output = output.unwrap_or_else(|| {
                PathBuf::from(format!("{}.{}", file_stem(&c.name), format.extension()))
            });
            if output.exists() && !force {
                return Err(CliError::Usage(format!(
                    "{} exists; add --force to replace it",
                    output.display()
                )));
            }
            fs::write(&output, &bytes)
                .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", output.display())))?;
            println!(
                "Exported {} as a {} card to {} ({} bytes).",
                c.name,
                format.extension().to_uppercase(),
                output.display(),
                bytes.len()
            );
        }
    }
    Ok(())
}

fn print_json(value: &impl Serialize) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(std::io::Error::other)?;
    writeln!(out)?;
    Ok(())
}

fn describe(s: &ImportSummary) -> String {
    let spec = match s.spec {
        CardSpec::V1 => "V1",
        CardSpec::V2 => "V2",
        CardSpec::V3 => "V3",
    };
    let mut text = format!("a {spec} {} card", s.format.extension().to_uppercase());
    if s.lorebook_entries > 0 {
        text.push_str(&format!(", {} lorebook entries", s.lorebook_entries));
    }
    if s.assets > 0 {
        text.push_str(&format!(", {} asset(s) kept", s.assets));
    }
    text
}
