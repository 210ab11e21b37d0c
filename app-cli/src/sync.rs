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
use nexus_sync::{PairingCode, RemoteDeletion, ShareClient, SyncClient, SyncError};
use serde::Serialize;

use crate::error::CliError;

/// How long one sync round may take.
pub(crate) const ROUND_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between background rounds while chatting.
const BACKGROUND_EVERY: Duration = Duration::from_secs(15);
/// How long the round after forgetting something may take.
const FORGET_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Subcommand)]
pub enum SyncCmd {
    /// Turn on sync with a server: creates this device's space (end-to-end encrypted).
    Enable {
        /// The sync server, e.g. https://sync.example.org or http://127.0.0.1:8787.
        #[arg(long)]
        server: String,
        /// Trust this PEM certificate for the server's TLS (a private CA, or the server's
        /// self-signed certificate), besides the public roots; kept with the sync settings.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// This device's name in `nexus device list` (default: the host name).
        #[arg(long)]
        name: Option<String>,
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
        /// Trust this PEM certificate for the server's TLS (as `nexus sync enable --ca`; the
        /// code carries the server's address, not its CA).
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// This device's name in `nexus device list` (default: the host name).
        #[arg(long)]
        name: Option<String>,
    },
    /// List the devices of this space (as of the last sync).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rename this device.
    Rename {
        /// The new name.
        name: String,
    },
    /// Remove a device from the space (a lost or sold phone): the key is replaced, the other
    /// devices receive the new one, and the removed device can read nothing written afterwards.
    Revoke {
        /// The device: its name, or the start of its id (4 characters or more).
        device: String,
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
}

/// Prints `payload` as a QR code (Unicode half blocks).
pub(crate) fn print_qr(payload: &str) {
    match qrcode::QrCode::new(payload.as_bytes()) {
        Ok(qr) => {
            let image = qr
                .render::<qrcode::render::unicode::Dense1x2>()
                .quiet_zone(true)
                .build();
            println!("{image}");
        }
        Err(e) => eprintln!("warning: no QR code: {e}"),
    }
}

/// The host name, the default name of a device.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "this device".to_owned())
}

/// The device named `query` (case-insensitive) or whose id starts with it.
fn find_device(client: &SyncClient, query: &str) -> Result<nexus_sync::DeviceInfo, CliError> {
    let q = query.trim().to_lowercase();
    let devices = client.devices();
    let by_name: Vec<_> = devices
        .iter()
        .filter(|d| d.name.to_lowercase() == q)
        .collect();
    let matches = if by_name.is_empty() && q.len() >= 4 {
        devices.iter().filter(|d| d.id.starts_with(&q)).collect()
    } else {
        by_name
    };
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(CliError::Usage(format!(
            "no device {query:?} in this space; `nexus device list` shows them (sync first to see new ones)"
        ))),
        many => Err(CliError::Usage(format!(
            "{} devices match {query:?}; use more of the id: {}",
            many.len(),
            many.iter()
                .map(|d| format!("{} ({})", d.name, &d.id[..8]))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
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
            NetError::Address(..) | NetError::TrustedCa(_) => CliError::Usage(e.to_string()),
            other => CliError::Sync(other.to_string()),
        }
    }
}

/// Reads and checks the PEM certificate(s) of `--ca FILE`.
fn read_ca(path: Option<&Path>) -> Result<Option<String>, CliError> {
    let Some(path) = path else { return Ok(None) };
    let pem = std::fs::read(path)
        .map_err(|e| CliError::Usage(format!("cannot read the CA file {}: {e}", path.display())))?;
    net::read_ca(&pem, &path.display().to_string())?;
    String::from_utf8(pem)
        .map(Some)
        .map_err(|_| CliError::Usage(format!("{} is not a PEM text file", path.display())))
}

fn open_client(store: &dyn nexus_app::Store) -> Result<SyncClient, CliError> {
    SyncClient::open(store)?.ok_or_else(|| {
        CliError::Usage(
            "sync is not enabled on this device: run `nexus sync enable --server URL` on your \
             first device, or `nexus device join CODE` with a code from `nexus device pair` \
             (a companion someone shares with you: `nexus companion join-share CODE`)"
                .into(),
        )
    })
}

fn print_report(report: &Report, json: bool) -> Result<(), CliError> {
    print_reports(Some(report), &[], json)
}

/// The result of one share's round, for `nexus sync now`.
type ShareRound = (String, Result<Report, NetError>);

/// Prints the device's own round (if sync is enabled) and the rounds of the companions shared
/// with it.
fn print_reports(own: Option<&Report>, shares: &[ShareRound], json: bool) -> Result<(), CliError> {
    if json {
        #[derive(Serialize)]
        struct Shared<'a> {
            companion: &'a str,
            received: usize,
            local_changes: usize,
            pending: usize,
            error: Option<String>,
        }
        #[derive(Serialize)]
        struct Out<'a> {
            local_changes: usize,
            received: usize,
            pending: usize,
            errors: &'a [String],
            #[serde(skip_serializing_if = "Vec::is_empty")]
            shares: Vec<Shared<'a>>,
        }
        let none = Report::default();
        let report = own.unwrap_or(&none);
        let shares = shares
            .iter()
            .map(|(name, r)| {
                let ok = r.as_ref().ok();
                Shared {
                    companion: name,
                    received: ok.map_or(0, |r| r.received),
                    local_changes: ok.map_or(0, |r| r.local_changes),
                    pending: ok.map_or(0, |r| r.pending),
                    error: r.as_ref().err().map(ToString::to_string),
                }
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string(&Out {
                local_changes: report.local_changes,
                received: report.received,
                pending: report.pending,
                errors: &report.errors,
                shares,
            })
            .expect("serializes")
        );
        return Ok(());
    }
    if let Some(report) = own {
        println!(
            "Synced: {} document(s) with local changes sent, {} message(s) received, {} waiting.",
            report.local_changes, report.received, report.pending
        );
        for e in &report.errors {
            eprintln!("warning: {e}");
        }
    }
    for (name, result) in shares {
        match result {
            Ok(r) => {
                println!(
                    "Shared with you, {name}: {} message(s) received{}.",
                    r.received,
                    if r.local_changes > 0 {
                        ", your changes sent"
                    } else {
                        ""
                    }
                );
                for e in &r.errors {
                    eprintln!("warning: {name}: {e}");
                }
            }
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    Ok(())
}

/// A sync round that keeps the changes queued when the server cannot be reached.
fn round(client: &mut SyncClient, store: &dyn nexus_app::Store) -> Result<Report, CliError> {
    match net::sync_once(client, store, ROUND_TIMEOUT) {
        Ok(report) => Ok(report),
        Err(e @ (NetError::Unreachable(..) | NetError::Timeout(_) | NetError::Untrusted(_))) => {
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
        SyncCmd::Enable { server, ca, name } => {
            let ca = read_ca(ca.as_deref())?;
            if let Some(client) = SyncClient::open(&store)? {
                return Err(CliError::Usage(format!(
                    "sync is already enabled with {} (space {}); `nexus sync disable` first",
                    client.config().server,
                    client.config().space
                )));
            }
            let mut client = SyncClient::create_space(&store, &server)?;
            client.set_tls_ca(ca);
            client.rename_device(&name.unwrap_or_else(host_name))?;
            client.save(&store)?;
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
            let mut shares = ShareClient::open_all(&store)?;
            shares.retain(|s| !s.ended());
            let own = match SyncClient::open(&store)? {
                Some(mut client) => Some(round(&mut client, &store)?),
                None if shares.is_empty() => return open_client(&store).map(|_| ()),
                None => None,
            };
            let rounds = crate::share::sync_all(&store, &mut shares);
            print_reports(own.as_ref(), &rounds, json)?;
            // A share that ended is reported, not a failure; an unreachable server is one.
            match rounds.into_iter().find_map(|(_, r)| match r {
                Err(e @ (NetError::Unreachable(..) | NetError::Timeout(_))) => Some(e),
                _ => None,
            }) {
                Some(e) => Err(CliError::Sync(format!(
                    "{e}; changes of shared companions sync later"
                ))),
                None => Ok(()),
            }
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
                if client.config().tls_ca.is_some() {
                    println!("trusting:  the certificate given with --ca (and the public roots)");
                }
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
    let existed = net::delete_space(
        &target.server,
        target.tls_ca.as_deref(),
        &target.space,
        target.token(),
        ROUND_TIMEOUT,
    )
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
    match net::delete_space(
        &target.server,
        target.tls_ca.as_deref(),
        &target.space,
        target.token(),
        ROUND_TIMEOUT,
    ) {
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
            print_qr(&code.to_uri());
            println!("On the new device: nexus device join <code>");
            Ok(())
        }
        DeviceCmd::Join { code, ca, name } => {
            let code = PairingCode::parse(&code).map_err(|e| CliError::Usage(e.to_string()))?;
            let ca = read_ca(ca.as_deref())?;
            if let Some(mut client) = SyncClient::open(&store)? {
                if client.config().space == code.space {
                    if ca.is_none() {
                        println!("This device is already in that space.");
                        return Ok(());
                    }
                    // Joined before without the server's CA: trust it now and sync.
                    client.set_tls_ca(ca);
                    client.save(&store)?;
                    let report = round(&mut client, &store)?;
                    println!("This device is in that space; it now trusts the given CA.");
                    return print_report(&report, false);
                }
                return Err(CliError::Usage(format!(
                    "this device syncs with another space ({}); `nexus sync disable` first",
                    client.config().space
                )));
            }
            let mut client = SyncClient::join(&store, &code)?;
            client.set_tls_ca(ca);
            client.rename_device(&name.unwrap_or_else(host_name))?;
            client.save(&store)?;
            let report = round(&mut client, &store)?;
            println!(
                "Joined space {} on {}. Your companions now follow you.",
                code.space, code.server
            );
            print_report(&report, false)
        }
        DeviceCmd::List { json } => {
            let client = open_client(&store)?;
            let devices = client.devices();
            if json {
                println!("{}", serde_json::to_string(&devices).expect("serializes"));
                return Ok(());
            }
            if devices.is_empty() {
                println!("No devices listed yet: run `nexus sync now`.");
            }
            for d in &devices {
                let state = match (d.this_device, d.revoked_at) {
                    (_, Some(_)) => "revoked",
                    (true, None) => "this device",
                    (false, None) => "",
                };
                println!("{}  {:<24} {state}", &d.id[..8], d.name);
            }
            Ok(())
        }
        DeviceCmd::Rename { name } => {
            let mut client = open_client(&store)?;
            client
                .rename_device(&name)
                .map_err(|e| CliError::Usage(e.to_string()))?;
            client.save(&store)?;
            let report = round(&mut client, &store)?;
            println!("This device is now called {:?}.", name.trim());
            print_report(&report, false)
        }
        DeviceCmd::Revoke { device, yes } => {
            let mut client = open_client(&store)?;
            // Sync first, so the list of devices is current.
            round(&mut client, &store)?;
            let target = find_device(&client, &device)?;
            if target.this_device {
                return Err(CliError::Usage(
                    "this is the device you are on: revoke it from another device, or run `nexus sync disable` here".into(),
                ));
            }
            if target.revoked_at.is_some() {
                println!("{} is already revoked.", target.name);
                return Ok(());
            }
            if !yes {
                return Err(CliError::Usage(format!(
                    "this removes {:?} from your space for good (it keeps what it already has, but can read nothing new); add --yes to confirm",
                    target.name
                )));
            }
            let id = nexus_sync::device::DeviceId::parse(&target.id).ok_or_else(|| {
                CliError::Sync("a device id in the space document is damaged".into())
            })?;
            let report = net::revoke_devices(&mut client, &store, &[id], ROUND_TIMEOUT)?;
            println!(
                "Revoked {:?}: the key of your space is replaced (epoch {}); your other devices pick up the new key on their next sync.",
                target.name,
                client.keys().epoch()
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
        let own = SyncClient::open(&store).ok().flatten().is_some();
        let shared = ShareClient::received(&store)
            .ok()
            .is_some_and(|s| s.iter().any(|s| s.ended_at.is_none()));
        if !own && !shared {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("nexus-sync".into())
            .spawn(move || {
                // One client for the whole chat (its documents stay loaded between rounds),
                // and one per companion shared with this device.
                let mut client = match SyncClient::open(&store) {
                    Ok(client) => client,
                    Err(e) => {
                        tracing::warn!("background sync: {e}");
                        None
                    }
                };
                let mut shares = ShareClient::open_all(&store).unwrap_or_else(|e| {
                    tracing::warn!("background sync of shared companions: {e}");
                    Vec::new()
                });
                while !flag.load(Ordering::Relaxed) {
                    if let Some(client) = client.as_mut()
                        && let Err(e) = net::sync_once(client, &store, ROUND_TIMEOUT)
                    {
                        tracing::debug!("background sync: {e}");
                    }
                    for (name, result) in crate::share::sync_all(&store, &mut shares) {
                        if let Err(e) = result {
                            tracing::debug!("background sync of {name}: {e}");
                        }
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
