//! `nexus export`, `nexus import-archive` and `nexus forget-me`: everything you own, out, back
//! in, or gone.

use std::fs;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;

use clap::Args;
use nexus_app::native::{self, NativeConfig};

use crate::error::CliError;

/// Largest archive `import-archive` reads.
const MAX_ARCHIVE_BYTES: u64 = 2 << 30;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Where to write the archive (JSON; `-` for standard output).
    #[arg(long, short, value_name = "FILE")]
    output: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// An archive written by `nexus export`.
    file: PathBuf,
}

#[derive(Debug, Args)]
pub struct ForgetMeArgs {
    /// Confirm: delete every companion, conversation, memory and setting for good.
    #[arg(long)]
    yes: bool,
}

pub fn export(config: &NativeConfig, args: ExportArgs) -> Result<(), CliError> {
    let app = native::open(config)?;
    let bytes = app.export_archive()?;
    if args.output.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(&bytes)?;
        writeln!(out)?;
        return Ok(());
    }
    if args.output.exists() && !args.force {
        return Err(CliError::Usage(format!(
            "{} exists; add --force to replace it",
            args.output.display()
        )));
    }
    // Written next to the target and renamed: an interrupted export never leaves half a file
    // under the final name.
    let tmp = args.output.with_extension("partial");
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &args.output)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        CliError::Usage(format!("cannot write {}: {e}", args.output.display()))
    })?;
    println!(
        "Wrote everything you own to {} ({:.1} kB). It is not encrypted: keep it safe.",
        args.output.display(),
        bytes.len() as f64 / 1e3
    );
    Ok(())
}

pub fn import(config: &NativeConfig, args: ImportArgs) -> Result<(), CliError> {
    let cannot =
        |e: std::io::Error| CliError::Usage(format!("cannot read {}: {e}", args.file.display()));
    let file = fs::File::open(&args.file).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(MAX_ARCHIVE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_ARCHIVE_BYTES {
        return Err(CliError::Usage(format!(
            "{} is larger than {} GB: not an archive this build can read",
            args.file.display(),
            MAX_ARCHIVE_BYTES >> 30
        )));
    }
    let app = native::open(config)?;
    let report = app.import_archive(&bytes)?;
    println!(
        "Restored {} companion(s), {} message(s), {} memory item(s).",
        report.companions, report.messages, report.memories
    );
    if !report.skipped.is_empty() {
        println!("Skipped (already here): {}", report.skipped.join(", "));
    }
    Ok(())
}

pub fn forget_me(config: &NativeConfig, args: ForgetMeArgs) -> Result<(), CliError> {
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::Usage(
                "this deletes everything you own for good; add --yes to confirm".into(),
            ));
        }
        eprint!(
            "Delete every companion, conversation, memory and setting for good? Type 'delete' to confirm: "
        );
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "delete" {
            println!("Nothing was deleted.");
            return Ok(());
        }
    }
    // The server's copy first: wiping the device also wipes the key to it.
    let remote_left = crate::sync::delete_space_before_forgetting(&config.data_dir)?;
    native::forget_everything(&config.data_dir)?;
    println!(
        "Everything is deleted: the database was overwritten and removed from {}.",
        config.data_dir.display()
    );
    if let Some((target, why)) = remote_left {
        // Only what the deletion needs is kept (the server, the space id and its token; no
        // data and no key to it), so that `nexus sync delete-remote` can finish it.
        let store = native::open_store(&config.data_dir)?;
        target.keep(&store)?;
        return Err(CliError::Sync(format!(
            "the sync server's (encrypted) copy of your space could not be deleted: {why}. \
             This device kept only what deleting it needs (the server address, the space id and \
             its access token; none of your data). Run `nexus sync delete-remote` when the \
             server is reachable."
        )));
    }
    Ok(())
}
