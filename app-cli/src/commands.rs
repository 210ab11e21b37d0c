//! `nexus companion …`, `nexus history`, `nexus models …`.

use std::io::{BufRead, IsTerminal, Write};

use clap::{Args, Subcommand};
use nexus_app::native::{self, NativeConfig};
use nexus_app::{Companion, CompanionDraft, CompanionPatch, Role};
use nexus_models::{FetchOptions, Fetcher, Manifest};
use serde::Serialize;

use crate::error::CliError;

#[derive(Debug, Subcommand)]
pub enum CompanionCmd {
    /// Create a companion.
    Create {
        /// Its name (unique).
        name: String,
        #[command(flatten)]
        fields: Fields,
    },
    /// List your companions.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one companion.
    Show {
        /// Name or id.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a companion's fields.
    Edit {
        /// Name or id.
        name: String,
        /// A new name.
        #[arg(long = "name", value_name = "NEW_NAME")]
        new_name: Option<String>,
        #[command(flatten)]
        fields: Fields,
    },
    /// Delete a companion and all its conversations.
    Delete {
        /// Name or id.
        name: String,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
    /// Make a companion the default for `nexus chat`.
    Use {
        /// Name or id.
        name: String,
    },
    /// Stop a personality trait from evolving (openness, conscientiousness, extraversion,
    /// agreeableness, neuroticism).
    Lock {
        /// Name or id.
        name: String,
        /// The trait.
        #[arg(name = "TRAIT")]
        trait_name: String,
    },
    /// Let a locked trait evolve again.
    Unlock {
        /// Name or id.
        name: String,
        /// The trait.
        #[arg(name = "TRAIT")]
        trait_name: String,
    },
    /// Share a companion with another person: prints a share code (and a QR code) for them.
    /// Read-only unless --write; your conversations with it stay private. Needs sync.
    Share {
        /// Name or id.
        name: String,
        /// Let them change it too (their edits and what it learns with them reach you).
        #[arg(long)]
        write: bool,
        /// Print exactly {"code": ...}.
        #[arg(long)]
        json: bool,
    },
    /// List the companions you share and those shared with you.
    Shares {
        /// Only this companion's shares.
        name: Option<String>,
        /// Ended shares too.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop sharing a companion (every share of it), or one share by its id.
    Unshare {
        /// The companion's name, or a share id as `companion shares` shows it (its last 4
        /// characters or more).
        target: String,
    },
    /// Receive a companion someone shares with you, with their share code.
    JoinShare {
        /// The code printed by `nexus companion share` (or its nexus://share/ URI).
        code: String,
    },
    /// Stop receiving a shared companion (your copy stays unless --delete).
    LeaveShare {
        /// Its name.
        name: String,
        /// Also delete the companion from this device.
        #[arg(long)]
        delete: bool,
    },
    /// How the companion's personality and your relationship changed, and why.
    Evolution {
        /// Name or id.
        name: String,
        /// Show at most this many of the latest changes.
        #[arg(long, short = 'n', default_value_t = 30)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct Fields {
    /// Who the companion is.
    #[arg(long)]
    description: Option<String>,
    /// Its character traits.
    #[arg(long)]
    personality: Option<String>,
    /// How it talks.
    #[arg(long)]
    speaking_style: Option<String>,
    /// The first message of a conversation.
    #[arg(long)]
    greeting: Option<String>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Whose conversation (default: the last companion you used).
    #[arg(long, short)]
    companion: Option<String>,
    /// Show at most this many of the latest messages.
    #[arg(long, short = 'n', default_value_t = 50)]
    limit: usize,
    /// Every conversation, not only the latest.
    #[arg(long)]
    all: bool,
    /// Print JSON (one array of messages).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCmd {
    /// Download and verify the models that are not cached yet.
    Fetch,
    /// Re-hash every cached file and report problems.
    Verify,
    /// List the models of the manifest and whether they are cached.
    List,
    /// Print the cache directory.
    Path,
}

#[derive(Serialize)]
struct CompanionView<'a> {
    id: String,
    name: &'a str,
    description: &'a str,
    personality: &'a str,
    speaking_style: &'a str,
    greeting: &'a str,
    created_at: i64,
    updated_at: i64,
    conversations: usize,
    persona: PersonaView,
}

#[derive(Serialize)]
struct PersonaView {
    traits: std::collections::BTreeMap<String, f32>,
    locked: Vec<String>,
    familiarity: f32,
    trust: f32,
    exchanges: u64,
}

#[derive(Serialize)]
struct ChangeView<'a> {
    field: &'a str,
    old: f32,
    new: f32,
    reason: &'a str,
    at: i64,
}

fn view<'a>(app: &nexus_app::Nexus, c: &'a Companion) -> Result<CompanionView<'a>, CliError> {
    let p = app.persona_state(c)?;
    Ok(CompanionView {
        id: c.id.to_string(),
        name: &c.name,
        description: &c.description,
        personality: &c.personality,
        speaking_style: &c.speaking_style,
        greeting: &c.greeting,
        created_at: c.created_at.0,
        updated_at: c.updated_at.0,
        conversations: app.store().list_conversations(c.id)?.len(),
        persona: PersonaView {
            traits: p.traits,
            locked: p.locked.into_iter().collect(),
            familiarity: p.familiarity,
            trust: p.trust,
            exchanges: p.exchanges,
        },
    })
}

/// A score in [0, 1] as a 10-cell bar.
fn bar(v: f32) -> String {
    let n = (v.clamp(0.0, 1.0) * 10.0).round() as usize;
    format!("{}{}", "█".repeat(n), "·".repeat(10 - n))
}

fn print_json(value: &impl Serialize) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(std::io::Error::other)?;
    writeln!(out)?;
    Ok(())
}

pub fn companion(config: &NativeConfig, cmd: CompanionCmd) -> Result<(), CliError> {
    use crate::share::{self, Change};
    let app = native::open(config)?;
    match cmd {
        CompanionCmd::Share { name, write, json } => share::share(&app, &name, write, json)?,
        CompanionCmd::Shares { name, all, json } => {
            share::shares(&app, name.as_deref(), all, json)?;
        }
        CompanionCmd::Unshare { target } => share::unshare_cmd(&app, &target)?,
        CompanionCmd::JoinShare { code } => share::join(&app, &code)?,
        CompanionCmd::LeaveShare { name, delete } => share::leave(&app, &name, delete)?,
        CompanionCmd::Create { name, fields } => {
            let draft = CompanionDraft {
                greeting: fields
                    .greeting
                    .unwrap_or_else(|| format!("Hi, I'm {}. How are you?", name.trim())),
                name,
                description: fields.description.unwrap_or_default(),
                personality: fields.personality.unwrap_or_default(),
                speaking_style: fields.speaking_style.unwrap_or_default(),
            };
            let c = app.create_companion(&draft)?;
            if app.companions()?.len() == 1 {
                app.set_active_companion(&c)?;
            }
            println!("Created {} ({}).", c.name, c.id);
        }
        CompanionCmd::List { json } => {
            let all = app.companions()?;
            if json {
                let views = all
                    .iter()
                    .map(|c| view(&app, c))
                    .collect::<Result<Vec<_>, _>>()?;
                return print_json(&views);
            }
            if all.is_empty() {
                println!(
                    "No companions yet. `nexus companion create NAME` or `nexus chat` creates one."
                );
            }
            let active = app.store().setting(nexus_app::ACTIVE_COMPANION)?;
            for c in &all {
                let mark = if active.as_deref() == Some(&c.id.to_string()) {
                    "*"
                } else {
                    " "
                };
                println!("{mark} {:<20} {}", c.name, first_line(&c.description, 60));
            }
        }
        CompanionCmd::Show { name, json } => {
            let c = app.find_companion(&name)?;
            if json {
                return print_json(&view(&app, &c)?);
            }
            println!("Name:           {}", c.name);
            println!("Id:             {}", c.id);
            println!("Description:    {}", c.description);
            println!("Personality:    {}", c.personality);
            println!("Speaking style: {}", c.speaking_style);
            println!("Greeting:       {}", c.greeting);
            println!("Created:        {}", c.created_at);
            println!(
                "Conversations:  {}",
                app.store().list_conversations(c.id)?.len()
            );
            let p = app.persona_state(&c)?;
            println!(
                "Personality (evolves slowly as you talk; `nexus companion lock` stops a trait):"
            );
            for name in nexus_app::PERSONA_TRAITS {
                let v = p.traits.get(name).copied().unwrap_or(0.5);
                println!(
                    "  {name:<18} {} {v:.2}{}",
                    bar(v),
                    if p.locked.contains(name) {
                        "  (locked)"
                    } else {
                        ""
                    }
                );
            }
            println!("Relationship:");
            println!(
                "  {:<18} {} {:.2}",
                "familiarity",
                bar(p.familiarity),
                p.familiarity
            );
            println!("  {:<18} {} {:.2}", "trust", bar(p.trust), p.trust);
            println!("  {:<18} {}", "exchanges", p.exchanges);
        }
        CompanionCmd::Lock { name, trait_name } => {
            let c = app.find_companion(&name)?;
            share::check_change(app.store(), &c, Change::Edit)?;
            app.lock_trait(&c, &trait_name, true)?;
            println!(
                "{}'s {} is locked: it will not change.",
                c.name,
                trait_name.to_lowercase()
            );
        }
        CompanionCmd::Unlock { name, trait_name } => {
            let c = app.find_companion(&name)?;
            share::check_change(app.store(), &c, Change::Edit)?;
            app.lock_trait(&c, &trait_name, false)?;
            println!("{}'s {} evolves again.", c.name, trait_name.to_lowercase());
        }
        CompanionCmd::Evolution { name, limit, json } => {
            let c = app.find_companion(&name)?;
            let changes = app.persona_history(&c, Some(limit))?;
            if json {
                let views: Vec<_> = changes
                    .iter()
                    .map(|ch| ChangeView {
                        field: &ch.field,
                        old: ch.old,
                        new: ch.new,
                        reason: &ch.reason,
                        at: ch.at.0,
                    })
                    .collect();
                return print_json(&views);
            }
            if changes.is_empty() {
                println!("{} has not changed yet.", c.name);
            }
            for ch in &changes {
                println!(
                    "[{}] {:<18} {:.3} -> {:.3}  {}",
                    ch.at, ch.field, ch.old, ch.new, ch.reason
                );
            }
        }
        CompanionCmd::Edit {
            name,
            new_name,
            fields,
        } => {
            let patch = CompanionPatch {
                name: new_name,
                description: fields.description,
                personality: fields.personality,
                speaking_style: fields.speaking_style,
                greeting: fields.greeting,
            };
            if patch.is_empty() {
                return Err(CliError::Usage(
                    "nothing to change: give --name, --description, --personality, --speaking-style or --greeting"
                        .into(),
                ));
            }
            share::check_change(app.store(), &app.find_companion(&name)?, Change::Edit)?;
            let c = app.edit_companion(&name, &patch)?;
            println!("Updated {}.", c.name);
        }
        CompanionCmd::Delete { name, yes } => {
            let c = app.find_companion(&name)?;
            share::check_change(app.store(), &c, Change::Delete)?;
            if !yes {
                if !std::io::stdin().is_terminal() {
                    return Err(CliError::Usage(format!(
                        "deleting {} removes all its conversations; add --yes to confirm",
                        c.name
                    )));
                }
                eprint!("Delete {} and all its conversations? [y/N] ", c.name);
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    println!("Kept {}.", c.name);
                    return Ok(());
                }
            }
            let c = app.delete_companion(&c.id.to_string())?;
            println!("Deleted {}.", c.name);
            crate::sync::after_forgetting(&config.data_dir);
        }
        CompanionCmd::Use { name } => {
            let c = app.find_companion(&name)?;
            app.set_active_companion(&c)?;
            println!("{} is now your default companion.", c.name);
        }
    }
    Ok(())
}

fn first_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max - 1).collect::<String>())
    } else {
        line.to_owned()
    }
}

#[derive(Serialize)]
struct MessageView<'a> {
    id: String,
    conversation_id: String,
    role: &'static str,
    text: &'a str,
    created_at: i64,
}

pub fn history(config: &NativeConfig, args: HistoryArgs) -> Result<(), CliError> {
    let app = native::open(config)?;
    let companion = match args.companion.as_deref() {
        Some(name) => app.find_companion(name)?,
        None => app.companion_or_default(None)?,
    };
    let mut conversations = app.store().list_conversations(companion.id)?;
    conversations.sort_by_key(|c| c.updated_at);
    if !args.all {
        conversations = conversations.into_iter().last().into_iter().collect();
    }
    let mut messages = Vec::new();
    for conv in &conversations {
        messages.extend(app.messages(conv.id, None)?);
    }
    let skip = messages.len().saturating_sub(args.limit);
    let messages = &messages[skip..];
    if args.json {
        let views: Vec<MessageView<'_>> = messages
            .iter()
            .map(|m| MessageView {
                id: m.id.to_string(),
                conversation_id: m.conversation_id.to_string(),
                role: m.role.as_str(),
                text: &m.text,
                created_at: m.created_at.0,
            })
            .collect();
        return print_json(&views);
    }
    if messages.is_empty() {
        println!(
            "No messages with {} yet. Start with `nexus chat`.",
            companion.name
        );
    }
    let mut last_conv = None;
    for m in messages {
        if last_conv != Some(m.conversation_id) {
            println!("--- conversation {} ---", m.conversation_id);
            last_conv = Some(m.conversation_id);
        }
        let who = match m.role {
            Role::User => "you",
            Role::Assistant => companion.name.as_str(),
            Role::System => "system",
        };
        println!("[{}] {who}: {}", m.created_at, m.text);
    }
    Ok(())
}

pub fn models(config: &NativeConfig, cmd: ModelsCmd) -> Result<(), CliError> {
    let manifest = Manifest::builtin();
    let fetcher = Fetcher::with_options(&config.models_dir, FetchOptions::from_env());
    match cmd {
        ModelsCmd::Fetch => {
            for entry in manifest.models() {
                let files = fetcher.ensure(entry)?;
                println!("{:<24} ready in {}", entry.id, files.dir().display());
            }
        }
        ModelsCmd::Verify => {
            let mut bad = 0;
            for entry in manifest.models() {
                let report = fetcher.verify(entry)?;
                for f in &report.files {
                    match f.status.problem(&f.file) {
                        None => println!("ok       {}/{}", entry.id, f.file.name),
                        Some(p) => {
                            bad += 1;
                            println!("PROBLEM  {}/{}: {p}", entry.id, f.file.name);
                        }
                    }
                }
            }
            if bad > 0 {
                return Err(nexus_app::AppError::Model(nexus_inference::InferenceError::InvalidModel(format!(
                    "{bad} model file(s) are missing or damaged; `nexus models fetch` repairs them"
                )))
                .into());
            }
        }
        ModelsCmd::List => {
            for entry in manifest.models() {
                println!(
                    "{:<24} {:<10} {:<28} {:>7.1} MB  {:<12} {}",
                    entry.id,
                    entry.role.as_str(),
                    entry.requirement(),
                    entry.total_size() as f64 / 1e6,
                    entry.license,
                    fetcher.status(entry).as_str()
                );
            }
        }
        ModelsCmd::Path => println!("{}", config.models_dir.display()),
    }
    Ok(())
}
