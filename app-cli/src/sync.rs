//! `nexus sync …`, `nexus device …`, `nexus wearable …`: end-to-end encrypted sync between
//! devices through a `nexus-sync-server`, and the background sync of `nexus chat`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use clap::{Args, Subcommand};
use nexus_app::native::{self, NativeConfig};
use nexus_emotion::biometrics::{self, DEFAULT_WINDOW_MS, HrSample, HrSeries};
use nexus_sync::net::{self, NetError, Report};
use nexus_sync::{PairingCode, RemoteDeletion, SyncClient, SyncError};
use serde::Serialize;

use crate::error::CliError;

/// How long one sync round may take.
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between background rounds while chatting.
const BACKGROUND_EVERY: Duration = Duration::from_secs(15);
/// How long the round after forgetting something may take.
const FORGET_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Subcommand)]
pub enum SyncCmd {
    /// Turn on sync with a server: creates this device's space (end-to-end encrypted).
    Enable {
        /// The sync server, e.g. http://127.0.0.1:8787.
        #[arg(long)]
        server: String,
    },
    /// Sync now: send this device's changes, receive the others'.
    Now {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the sync state (no network).
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Turn sync off on this device (your data stays).
    Disable {
        /// Also delete the server's (encrypted) copy of your space; your other devices then
        /// stop syncing, and keep their data.
        #[arg(long)]
        delete_remote: bool,
    },
    /// Delete the server's (encrypted) copy of your space and turn sync off here, or finish a
    /// deletion that `nexus forget-me` could not do because the server was unreachable.
    DeleteRemote,
}

#[derive(Debug, Subcommand)]
pub enum DeviceCmd {
    /// Print the pairing code (and a QR code) that lets another device join.
    Pair {
        /// Print exactly {"code": ...}.
        #[arg(long)]
        json: bool,
    },
    /// Join the space of another device with its pairing code.
    Join {
        /// The code printed by `nexus device pair` (or its nexus://pair/ URI).
        code: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum WearableCmd {
    /// Push heart-rate samples into the journal (through sync).
    PushHr(PushHrArgs),
}

#[derive(Debug, Args)]
pub struct PushHrArgs {
    /// One sample now, in beats per minute.
    #[arg(long, conflicts_with = "file")]
    bpm: Option<f64>,
    /// A file of samples, one per line: `BPM` (now; several such lines are 1 s apart), or any
    /// line of a heart-rate log as `nexus emotion hr` reads it (`UNIX_MS BPM [RR_MS ...]`,
    /// `UNIX_MS,BPM`, ISO 8601 times, 0x2A37 payloads).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Name of the wearable.
    #[arg(long, default_value = "wearable")]
    source: String,
    /// Window length in seconds (as in `nexus emotion hr`).
    #[arg(long, default_value_t = DEFAULT_WINDOW_MS / 1000)]
    window: i64,
    /// Your resting heart rate (else estimated from the samples, or 70).
    #[arg(long)]
    resting_bpm: Option<f32>,
}

impl From<SyncError> for CliError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Store(e) => e.into(),
            SyncError::Pairing(e) => CliError::Usage(e.to_string()),
            other => CliError::Sync(other.to_string()),
        }
    }
}

impl From<NetError> for CliError {
    fn from(e: NetError) -> Self {
        match e {
            NetError::Sync(e) => e.into(),
            NetError::Address(..) => CliError::Usage(e.to_string()),
            other => CliError::Sync(other.to_string()),
        }
    }
}

fn open_client(store: &dyn nexus_app::Store) -> Result<SyncClient, CliError> {
    SyncClient::open(store)?.ok_or_else(|| {
        CliError::Usage(
            "sync is not enabled on this device: run `nexus sync enable --server URL` on your \
             first device, or `nexus device join CODE` with a code from `nexus device pair`"
                .into(),
        )
    })
}

fn print_report(report: &Report, json: bool) -> Result<(), CliError> {
    if json {
        #[derive(Serialize)]
        struct Out<'a> {
            local_changes: usize,
            received: usize,
            pending: usize,
            errors: &'a [String],
        }
        println!(
            "{}",
            serde_json::to_string(&Out {
                local_changes: report.local_changes,
                received: report.received,
                pending: report.pending,
                errors: &report.errors,
            })
            .expect("serializes")
        );
    } else {
        println!(
            "Synced: {} document(s) with local changes sent, {} message(s) received, {} waiting.",
            report.local_changes, report.received, report.pending
        );
        for e in &report.errors {
            eprintln!("warning: {e}");
        }
    }
    Ok(())
}

/// A sync round that keeps the changes queued when the server cannot be reached.
fn round(client: &mut SyncClient, store: &dyn nexus_app::Store) -> Result<Report, CliError> {
    match net::sync_once(client, store, ROUND_TIMEOUT) {
        Ok(report) => Ok(report),
        Err(e @ (NetError::Unreachable(..) | NetError::Timeout(_))) => {
            Err(CliError::Sync(format!(
                "{e}; your changes are kept on this device and sync later ({} waiting)",
                client.pending()
            )))
        }
        Err(NetError::Refused(why)) if why.contains("Unauthorized") || why.contains("NotFound") => {
            Err(CliError::Sync(format!(
                "the sync server refused: {why}. If your space was deleted there (`nexus \
                 forget-me` or `nexus sync delete-remote` on another device), `nexus sync \
                 disable` stops syncing here; your data stays on this device"
            )))
        }
        Err(e) => Err(e.into()),
    }
}

pub fn sync(config: &NativeConfig, cmd: SyncCmd) -> Result<(), CliError> {
    let store = native::open_store(&config.data_dir)?;
    match cmd {
        SyncCmd::Enable { server } => {
            if let Some(client) = SyncClient::open(&store)? {
                return Err(CliError::Usage(format!(
                    "sync is already enabled with {} (space {}); `nexus sync disable` first",
                    client.config().server,
                    client.config().space
                )));
            }
            let mut client = SyncClient::create_space(&store, &server)?;
            if let Err(e) = net::register_space(&client, ROUND_TIMEOUT) {
                SyncClient::disable(&store)?;
                return Err(e.into());
            }
            let report = round(&mut client, &store)?;
            println!(
                "Sync enabled with {server} (space {}). Add a device with `nexus device pair`.",
                client.config().space
            );
            print_report(&report, false)
        }
        SyncCmd::Now { json } => {
            let mut client = open_client(&store)?;
            let report = round(&mut client, &store)?;
            print_report(&report, json)
        }
        SyncCmd::Status { json } => {
            if SyncClient::open(&store)?.is_none()
                && let Some(pending) = RemoteDeletion::pending(&store)?
            {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"enabled": false, "remote_deletion_pending": {
                            "server": pending.server, "space": pending.space.to_string()}})
                    );
                } else {
                    println!(
                        "Sync is off. The server's copy of space {} on {} is not deleted yet: \
                         run `nexus sync delete-remote`.",
                        pending.space, pending.server
                    );
                }
                return Ok(());
            }
            let client = open_client(&store)?;
            let status = client.status();
            if json {
                println!("{}", serde_json::to_string(&status).expect("serializes"));
            } else {
                println!("server:    {}", status.server);
                println!("space:     {}", status.space);
                println!("documents: {}", status.documents);
                println!(
                    "waiting:   {} change(s) not yet acknowledged",
                    status.pending
                );
                if status.waiting > 0 {
                    println!(
                        "           {} document(s) waiting for others",
                        status.waiting
                    );
                }
                if let Some(e) = &status.last_error {
                    println!("last error: {e}");
                }
            }
            Ok(())
        }
        SyncCmd::Disable {
            delete_remote: false,
        } => {
            SyncClient::disable(&store)?;
            println!("Sync is off on this device; your data stays here.");
            Ok(())
        }
        SyncCmd::Disable {
            delete_remote: true,
        } => {
            open_client(&store)?;
            delete_remote(&store)
        }
        SyncCmd::DeleteRemote => delete_remote(&store),
    }
}

/// Deletes the server's copy of this device's space and turns sync off, or finishes a
/// deletion that could not be done before.
fn delete_remote(store: &dyn nexus_app::Store) -> Result<(), CliError> {
    let (target, enabled) = match SyncClient::open(store)? {
        Some(client) => (RemoteDeletion::of(&client), true),
        None => match RemoteDeletion::pending(store)? {
            Some(pending) => (pending, false),
            None => {
                return Err(CliError::Usage(
                    "nothing to delete: sync is not enabled on this device and no deletion of \
                     a server copy is pending"
                        .into(),
                ));
            }
        },
    };
    let existed = net::delete_space(&target.server, &target.space, target.token(), ROUND_TIMEOUT)
        .map_err(|e| {
        CliError::Sync(format!(
            "{e}; the server's copy of space {} is not deleted (nothing changed here): try \
                 again when the server is reachable",
            target.space
        ))
    })?;
    if enabled {
        SyncClient::disable(store)?;
    }
    RemoteDeletion::done(store)?;
    if existed {
        println!(
            "Deleted space {} with everything in it from {}.",
            target.space, target.server
        );
    } else {
        println!(
            "{} keeps nothing of space {} (it was deleted already).",
            target.server, target.space
        );
    }
    if enabled {
        println!(
            "Sync is off on this device; your data stays here. Your other devices can no longer \
             sync with that space (their data stays on them)."
        );
    }
    Ok(())
}

/// Deletes the server's copy of the space before `nexus forget-me` wipes the device. Returns
/// what could not be deleted (the server unreachable or refusing), to keep and retry; `None`
/// when sync was off or the deletion worked.
pub fn delete_space_before_forgetting(
    data_dir: &Path,
) -> Result<Option<(RemoteDeletion, String)>, CliError> {
    if !data_dir.join(native::DATABASE_FILE).exists() {
        return Ok(None);
    }
    let store = native::open_store(data_dir)?;
    let target = match SyncClient::open(&store) {
        Ok(Some(client)) => RemoteDeletion::of(&client),
        Ok(None) => match RemoteDeletion::pending(&store) {
            Ok(Some(pending)) => pending,
            Ok(None) => return Ok(None),
            Err(e) => {
                eprintln!("warning: {e}");
                return Ok(None);
            }
        },
        Err(e) => {
            eprintln!(
                "warning: the sync settings cannot be read ({e}); the server copy is not deleted"
            );
            return Ok(None);
        }
    };
    match net::delete_space(&target.server, &target.space, target.token(), ROUND_TIMEOUT) {
        Ok(true) => {
            println!(
                "Deleted the sync server's copy of your space ({}).",
                target.server
            );
            Ok(None)
        }
        Ok(false) => {
            println!(
                "The sync server ({}) keeps nothing of your space (it was deleted already).",
                target.server
            );
            Ok(None)
        }
        Err(e) => Ok(Some((target, e.to_string()))),
    }
}

/// After something was forgotten (a memory, a companion): if sync is on, the documents that
/// held it start over right away, so this device keeps no history of it, and a short round
/// tells the server (which deletes its copy) and the other devices. Notes go to stderr.
pub fn after_forgetting(data_dir: &Path) {
    let Ok(store) = native::open_store(data_dir) else {
        return;
    };
    let Ok(Some(mut client)) = SyncClient::open(&store) else {
        return;
    };
    if let Err(e) = client.sync_local(&store).and_then(|_| client.save(&store)) {
        eprintln!("warning: sync: {e}");
        return;
    }
    match net::sync_once(&mut client, &store, FORGET_TIMEOUT) {
        Ok(_) => eprintln!("Forgotten on the sync server and for your other devices too."),
        Err(e) => eprintln!(
            "note: the sync server was not reached ({e}); its copy is erased at the next sync"
        ),
    }
}

pub fn device(config: &NativeConfig, cmd: DeviceCmd) -> Result<(), CliError> {
    let store = native::open_store(&config.data_dir)?;
    match cmd {
        DeviceCmd::Pair { json } => {
            let client = open_client(&store)?;
            let code = client.pairing_code()?;
            if json {
                println!("{}", serde_json::json!({ "code": code.to_text() }));
                return Ok(());
            }
            println!("Pairing code (keep it secret: it holds the key to your data):\n");
            println!("  {}\n", code.to_text());
            match qrcode::QrCode::new(code.to_uri().as_bytes()) {
                Ok(qr) => {
                    let image = qr
                        .render::<qrcode::render::unicode::Dense1x2>()
                        .quiet_zone(true)
                        .build();
                    println!("{image}");
                }
                Err(e) => eprintln!("warning: no QR code: {e}"),
            }
            println!("On the new device: nexus device join <code>");
            Ok(())
        }
        DeviceCmd::Join { code } => {
            let code = PairingCode::parse(&code).map_err(|e| CliError::Usage(e.to_string()))?;
            if let Some(client) = SyncClient::open(&store)? {
                if client.config().space == code.space {
                    println!("This device is already in that space.");
                    return Ok(());
                }
                return Err(CliError::Usage(format!(
                    "this device syncs with another space ({}); `nexus sync disable` first",
                    client.config().space
                )));
            }
            let mut client = SyncClient::join(&store, &code)?;
            let report = round(&mut client, &store)?;
            println!(
                "Joined space {} on {}. Your companions now follow you.",
                code.space, code.server
            );
            print_report(&report, false)
        }
    }
}

/// Reads a file of samples into a validated series: lines holding only a BPM are samples of
/// now (several of them 1 s apart, the last one now); every other line is read as
/// `nexus emotion hr` reads heart-rate logs. Any unreadable line or impossible heart rate is
/// an error (a wearable's data should be exact).
fn parse_samples(text: &str, now: i64) -> Result<HrSeries, CliError> {
    let bare = |line: &str| line.trim().parse::<f64>().ok();
    let untimed = text.lines().filter(|l| bare(l).is_some()).count();
    let mut next = now - 1000 * i64::try_from(untimed).unwrap_or(0).saturating_sub(1);
    let mut log = String::with_capacity(text.len());
    for line in text.lines() {
        match bare(line) {
            Some(bpm) => {
                log.push_str(&format!("{next} {bpm}\n"));
                next += 1000;
            }
            None => {
                log.push_str(line);
                log.push('\n');
            }
        }
    }
    let parsed = biometrics::parse_hr_log_str(&log);
    if let Some(e) = parsed.errors.first() {
        return Err(CliError::Usage(format!(
            "line {}: {} (expected `BPM` or `UNIX_MS BPM [RR_MS ...]`)",
            e.line, e.message
        )));
    }
    if let Some(e) = parsed.series.excluded().first() {
        check_bpm(f64::from(e.bpm))?;
    }
    if parsed.series.is_empty() {
        return Err(CliError::Usage("no heart-rate samples in the file".into()));
    }
    Ok(parsed.series)
}

fn check_bpm(bpm: f64) -> Result<(), CliError> {
    #[allow(clippy::cast_possible_truncation)]
    if biometrics::is_plausible_bpm(bpm as f32) {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "a heart rate of {bpm} bpm is not plausible (a human heart rate is between 20 and 250)"
        )))
    }
}

/// `nexus wearable push-hr`: the samples become heart readings of the emotion journal (with
/// arousal and stress from `nexus_emotion::biometrics`, exactly as `nexus emotion hr --record`
/// records them), which sync carries to the other devices; the raw samples also go into the
/// journal document.
pub fn wearable(config: &NativeConfig, cmd: WearableCmd) -> Result<(), CliError> {
    let WearableCmd::PushHr(args) = cmd;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let series = match (args.bpm, &args.file) {
        (Some(bpm), None) => {
            check_bpm(bpm)?;
            #[allow(clippy::cast_possible_truncation)]
            HrSeries::from_samples([HrSample {
                at_ms: now,
                bpm: bpm as f32,
                rr_ms: Vec::new(),
            }])
        }
        (None, Some(file)) => parse_samples(&std::fs::read_to_string(file)?, now)?,
        _ => return Err(CliError::Usage("give --bpm N or --file FILE".into())),
    };
    let (_, windows) = crate::emotion::hr_windows(&series, args.window, args.resting_bpm)?;
    let app = native::open(config)?;
    let (recorded, fused) = crate::emotion::record_hr_windows(&app, &windows)?;
    println!(
        "{} heart-rate sample(s): {recorded} reading(s) added to the journal.",
        series.len()
    );
    if let Some(fused) = &fused {
        println!("{}", crate::emotion::recorded_note(fused));
    }
    let store = app.store();
    let Some(mut client) = SyncClient::open(store)? else {
        eprintln!(
            "note: sync is not enabled on this device, so the readings stay here (`nexus device \
             join CODE` to sync them)"
        );
        return Ok(());
    };
    let samples: Vec<(i64, f64)> = series
        .samples()
        .iter()
        .map(|s| (s.at_ms, f64::from(s.bpm)))
        .collect();
    client.record_heart_rate(&samples, &args.source)?;
    client.save(store)?;
    match net::sync_once(&mut client, store, ROUND_TIMEOUT) {
        Ok(_) => println!("Synced."),
        Err(e) => eprintln!("warning: not synced yet ({e}); they are kept and sync later"),
    }
    Ok(())
}

/// Background sync while chatting: a thread that runs a round every few seconds (on its own
/// connection to the store) until dropped. Nothing happens if sync is not enabled.
#[derive(Debug)]
pub struct Background {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    pub fn start(data_dir: &Path) -> Option<Self> {
        let store = native::open_store(data_dir).ok()?;
        SyncClient::open(&store).ok().flatten()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("nexus-sync".into())
            .spawn(move || {
                // One client for the whole chat (its documents stay loaded between rounds).
                let mut client = match SyncClient::open(&store) {
                    Ok(Some(client)) => client,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!("background sync: {e}");
                        return;
                    }
                };
                while !flag.load(Ordering::Relaxed) {
                    if let Err(e) = net::sync_once(&mut client, &store, ROUND_TIMEOUT) {
                        tracing::debug!("background sync: {e}");
                    }
                    let mut waited = Duration::ZERO;
                    while waited < BACKGROUND_EVERY && !flag.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(200));
                        waited += Duration::from_millis(200);
                    }
                }
            })
            .ok()?;
        Some(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_files_parse() {
        let series = parse_samples(
            "# hr\n72\n1700000000000 80.5\n1700000001000,90\n75\n1700000002000 91 800 810\n",
            5_000,
        )
        .expect("ok");
        let got: Vec<(i64, f32, usize)> = series
            .samples()
            .iter()
            .map(|s| (s.at_ms, s.bpm, s.rr_ms.len()))
            .collect();
        assert_eq!(
            got,
            vec![
                (4_000, 72.0, 0),
                (5_000, 75.0, 0),
                (1_700_000_000_000, 80.5, 0),
                (1_700_000_001_000, 90.0, 0),
                (1_700_000_002_000, 91.0, 2),
            ]
        );
        assert!(parse_samples("abc def", 0).is_err());
        assert!(parse_samples("1000", 0).is_err(), "implausible");
        assert!(parse_samples("1700000000000 0", 0).is_err(), "implausible");
        assert!(parse_samples("# nothing\n", 0).is_err(), "empty");
    }
}
