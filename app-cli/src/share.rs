//! `nexus companion share | shares | unshare | join-share | leave-share`: sharing one companion
//! with another person through the owner's sync server, end-to-end encrypted (docs/SYNC.md,
//! "Sharing a companion").

use nexus_app::{Companion, Nexus};
use nexus_common::Timestamp;
use nexus_sync::net::NetError;
use nexus_sync::share::Access;
use nexus_sync::share::net::{share_companion, sync_share, unshare};
use nexus_sync::{ReceivedShare, ShareClient, ShareCode, ShareInfo, ShareStatus, SyncClient};
use serde::Serialize;

use crate::error::CliError;
use crate::sync::{ROUND_TIMEOUT, print_qr};

fn access_text(access: Access) -> &'static str {
    match access {
        Access::Read => "read-only",
        Access::ReadWrite => "read and write",
    }
}

/// A share id as shown: its last 8 characters (its first ones are a timestamp, the same for
/// shares made together). Commands accept any end of it of 4 characters or more.
fn short_id(id: &str) -> &str {
    &id[id.len().saturating_sub(8)..]
}

fn owner_client(store: &dyn nexus_app::Store) -> Result<SyncClient, CliError> {
    SyncClient::open(store)?.ok_or_else(|| {
        CliError::Usage(
            "sharing goes through your sync server: turn sync on first with `nexus sync enable --server URL`"
                .into(),
        )
    })
}

/// The active share received by this device for companion `c`, if any.
fn received_for(
    store: &dyn nexus_app::Store,
    c: &Companion,
) -> Result<Option<ReceivedShare>, CliError> {
    let id = c.id.to_string();
    Ok(ShareClient::received(store)?
        .into_iter()
        .find(|s| s.companion_id == id && s.ended_at.is_none()))
}

/// What an edit command may not do to a companion someone shares with this device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Edit its profile, lock or unlock a trait.
    Edit,
    /// Delete it.
    Delete,
}

/// Refuses changes that would not reach the owner of a shared companion: any edit of a
/// read-only share, and deleting any share (its owner keeps it; leaving the share is the way).
/// Chatting (memories, persona evolution) and memory commands stay allowed: they stay on this
/// device for a read-only share, and reach the owner for a read-write one.
pub fn check_change(
    store: &dyn nexus_app::Store,
    c: &Companion,
    change: Change,
) -> Result<(), CliError> {
    let Some(share) = received_for(store, c)? else {
        return Ok(());
    };
    match (change, share.access) {
        (Change::Delete, _) => Err(CliError::Usage(format!(
            "{} is shared with you by its owner; `nexus companion leave-share {} --delete` removes it from this device",
            c.name, c.name
        ))),
        (Change::Edit, Access::Read) => Err(CliError::Usage(format!(
            "{} is shared with you read-only: changes would not reach its owner. `nexus companion leave-share {}` makes this copy your own",
            c.name, c.name
        ))),
        (Change::Edit, Access::ReadWrite) => Ok(()),
    }
}

/// `nexus companion share NAME [--write] [--json]`.
pub fn share(app: &Nexus, name: &str, write: bool, json: bool) -> Result<(), CliError> {
    let store = app.store();
    let c = app.find_companion(name)?;
    if received_for(store, &c)?.is_some() {
        return Err(CliError::Usage(format!(
            "{} is shared with you by someone else: only its owner can share it",
            c.name
        )));
    }
    let mut client = owner_client(store)?;
    let access = if write {
        Access::ReadWrite
    } else {
        Access::Read
    };
    let (code, id) = share_companion(&mut client, store, c.id, &c.name, access, ROUND_TIMEOUT)?;
    if json {
        println!("{}", serde_json::json!({ "code": code.to_text() }));
        return Ok(());
    }
    println!(
        "Share code for {} ({}; your conversations stay private). Whoever has it can {} {}, so send it privately:\n",
        c.name,
        access_text(access),
        if write { "read and change" } else { "read" },
        c.name
    );
    println!("  {}\n", code.to_text());
    print_qr(&code.to_uri());
    println!("On their device: nexus companion join-share <code>");
    println!(
        "Stop sharing: nexus companion unshare {} (or the share id {})",
        c.name,
        short_id(&id)
    );
    Ok(())
}

#[derive(Serialize)]
struct Received<'a> {
    #[serde(flatten)]
    share: &'a ReceivedShare,
    status: ShareStatus,
}

/// `nexus companion shares [NAME] [--all] [--json]`.
pub fn shares(app: &Nexus, name: Option<&str>, all: bool, json: bool) -> Result<(), CliError> {
    let store = app.store();
    let companion = name.map(|n| app.find_companion(n)).transpose()?;
    let wanted = |id: &str| companion.as_ref().is_none_or(|c| c.id.to_string() == id);
    let mine: Vec<ShareInfo> = SyncClient::open(store)?
        .map(|c| c.shares())
        .unwrap_or_default()
        .into_iter()
        .filter(|s| wanted(&s.companion_id) && (all || s.status == ShareStatus::Active))
        .collect();
    let received: Vec<ReceivedShare> = ShareClient::received(store)?
        .into_iter()
        .filter(|s| wanted(&s.companion_id) && (all || s.ended_at.is_none()))
        .collect();
    if json {
        let received: Vec<Received<'_>> = received
            .iter()
            .map(|share| Received {
                share,
                status: if share.ended_at.is_some() {
                    ShareStatus::Unshared
                } else {
                    ShareStatus::Active
                },
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "shared_by_me": mine, "shared_with_me": received })
        );
        return Ok(());
    }
    // The companion's current name on this device, else its name when shared.
    let current = |id: &str, label: &str| -> String {
        id.parse()
            .ok()
            .and_then(|id| store.companion(id).ok())
            .map_or_else(|| label.to_owned(), |c| c.name)
    };
    if mine.is_empty() && received.is_empty() {
        println!(
            "No shares{}. `nexus companion share NAME` shares a companion with someone.",
            if all { "" } else { " in use" }
        );
    }
    if !mine.is_empty() {
        println!("Shared by you (as of the last sync):");
        for s in &mine {
            let state = match s.status {
                ShareStatus::Active => "active".to_owned(),
                ShareStatus::Unshared => format!(
                    "ended {}",
                    s.ended_at
                        .map(|t| Timestamp(t).to_string())
                        .unwrap_or_default()
                ),
                ShareStatus::Rotated => "ended by a key change (share again)".to_owned(),
                ShareStatus::StartedOver => {
                    "ended: forgetting started the companion over (share again)".to_owned()
                }
            };
            println!(
                "  {}  {:<20} {:<15} since {}  {state}",
                short_id(&s.id),
                current(&s.companion_id, &s.companion),
                access_text(s.access),
                s.created_at
                    .map(|t| Timestamp(t).to_string())
                    .unwrap_or_default(),
            );
        }
    }
    if !received.is_empty() {
        println!("Shared with you:");
        for s in &received {
            let state = if s.ended_at.is_some() {
                "no longer shared"
            } else {
                "active"
            };
            println!(
                "  {:<20} {:<15} from {}  {state}",
                current(&s.companion_id, &s.companion),
                access_text(s.access),
                s.server
            );
        }
    }
    Ok(())
}

/// `nexus companion unshare NAME|SHARE-ID`: every active share of that companion, or one.
pub fn unshare_cmd(app: &Nexus, target: &str) -> Result<(), CliError> {
    let store = app.store();
    let mut client = owner_client(store)?;
    // Sync first, so shares made on the other devices are known.
    if let Err(e) = nexus_sync::net::sync_once(&mut client, store, ROUND_TIMEOUT) {
        return Err(e.into());
    }
    let active: Vec<ShareInfo> = client
        .shares()
        .into_iter()
        .filter(|s| s.status != ShareStatus::Unshared)
        .collect();
    let q = target.trim().to_lowercase();
    let by_companion: Vec<&ShareInfo> = match app.find_companion(target) {
        Ok(c) => active
            .iter()
            .filter(|s| s.companion_id == c.id.to_string())
            .collect(),
        Err(_) => active
            .iter()
            .filter(|s| s.companion.to_lowercase() == q)
            .collect(),
    };
    let chosen: Vec<&ShareInfo> = if by_companion.is_empty() && q.len() >= 4 {
        active.iter().filter(|s| s.id.ends_with(&q)).collect()
    } else {
        by_companion
    };
    if chosen.is_empty() {
        return Err(CliError::Usage(format!(
            "no share of {target:?}; `nexus companion shares` lists them"
        )));
    }
    for s in chosen {
        unshare(&mut client, store, &s.id, ROUND_TIMEOUT)?;
        println!(
            "Stopped sharing {} ({}, share {}): its recipient receives nothing new and keeps what they had.",
            s.companion,
            access_text(s.access),
            short_id(&s.id)
        );
    }
    Ok(())
}

/// `nexus companion join-share CODE`.
pub fn join(app: &Nexus, code: &str) -> Result<(), CliError> {
    let code = ShareCode::parse(code).map_err(|e| CliError::Usage(e.to_string()))?;
    let store = app.store();
    if let Some(own) = SyncClient::open(store)?
        && own.config().space == code.space
    {
        return Err(CliError::Usage(format!(
            "{} is in your own space already: this device syncs it",
            code.label
        )));
    }
    let doc = code.doc.clone();
    if ShareClient::open_all(store)?
        .iter()
        .any(|s| s.keys().doc() == &doc && s.keys().space() == &code.space && !s.ended())
    {
        println!("{} is already shared with this device.", code.label);
        return Ok(());
    }
    // A share that ended earlier (the same companion shared again) starts over.
    for old in ShareClient::open_all(store)? {
        if old.keys().doc() == &doc && old.keys().space() == &code.space {
            old.leave(store)?;
        }
    }
    let mut share = ShareClient::join(store, &code)?;
    match sync_share(&mut share, store, ROUND_TIMEOUT) {
        Ok(report) => {
            let name = store
                .companion(share.companion_id())
                .map_or_else(|_| code.label.clone(), |c| c.name);
            println!(
                "{name} is now shared with you ({}). `nexus companion show {name}`; `nexus sync now` fetches its changes (`nexus chat` does it by itself).",
                access_text(code.access)
            );
            for e in &report.errors {
                eprintln!("warning: {e}");
            }
            Ok(())
        }
        Err(e @ NetError::NoLongerShared(_)) => {
            share.leave(store)?;
            Err(CliError::Usage(format!(
                "this share has ended: {e}. Ask its owner for a new code"
            )))
        }
        Err(e @ (NetError::Unreachable(..) | NetError::Timeout(_))) => Err(CliError::Sync(
            format!("{e}; the share is kept and syncs later (`nexus sync now`)"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// `nexus companion leave-share NAME [--delete]`.
pub fn leave(app: &Nexus, name: &str, delete: bool) -> Result<(), CliError> {
    let store = app.store();
    let found = app.find_companion(name).ok();
    let q = name.trim().to_lowercase();
    let mut matching: Vec<ShareClient> = ShareClient::open_all(store)?
        .into_iter()
        .filter(|s| match &found {
            Some(c) => s.companion_id() == c.id,
            None => s.label().to_lowercase() == q,
        })
        .collect();
    let Some(share) = matching.pop() else {
        return Err(CliError::Usage(format!(
            "{name:?} is not shared with you; `nexus companion shares` lists what is"
        )));
    };
    let id = share.companion_id();
    let label = share.label().to_owned();
    share.leave(store)?;
    for other in matching {
        other.leave(store)?;
    }
    match store.companion(id) {
        Ok(c) if delete => {
            app.delete_companion(&c.id.to_string())?;
            println!(
                "Left the share of {} and deleted it from this device.",
                c.name
            );
        }
        Ok(c) => println!(
            "Left the share of {}: it no longer changes with its owner's, and stays here as your own copy (`nexus companion delete {}` removes it).",
            c.name, c.name
        ),
        Err(_) => println!("Left the share of {label}."),
    }
    Ok(())
}

/// Syncs every active share (`nexus sync now`, the chat's background sync): per share, its
/// name and the round's result.
pub fn sync_all(
    store: &dyn nexus_app::Store,
    shares: &mut [ShareClient],
) -> Vec<(String, Result<nexus_sync::net::Report, NetError>)> {
    shares
        .iter_mut()
        .filter(|s| !s.ended())
        .map(|s| {
            let result = sync_share(s, store, ROUND_TIMEOUT);
            let name = store
                .companion(s.companion_id())
                .map_or_else(|_| s.label().to_owned(), |c| c.name);
            (name, result)
        })
        .collect()
}
