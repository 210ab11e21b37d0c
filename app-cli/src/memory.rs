//! `nexus memory …`: see, search, edit, pin and forget what the companion remembers about you.

use std::io::Write;

use clap::Subcommand;
use nexus_app::native::{self, NativeConfig};
use nexus_app::{Companion, MemoryItem, Nexus};
use serde::Serialize;

use crate::error::CliError;

#[derive(Debug, Subcommand)]
pub enum MemoryCmd {
    /// List what the companion remembers (newest first).
    List {
        /// Whose memories (default: your default companion).
        #[arg(long, short)]
        companion: Option<String>,
        /// Include older versions that newer facts replaced.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Find memories by meaning and by words.
    Search {
        /// What to look for.
        text: String,
        #[arg(long, short)]
        companion: Option<String>,
        /// Most results.
        #[arg(long, short = 'n', default_value_t = 10)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace the text of a memory.
    Edit {
        /// The memory's id (or its last 8 characters, as `memory list` shows them).
        id: String,
        /// The new text.
        text: String,
        #[arg(long, short)]
        companion: Option<String>,
    },
    /// Pin a memory: it is always recalled and never replaced by a newer fact.
    Pin {
        /// The memory's id (or its last 8 characters).
        id: String,
        #[arg(long, short)]
        companion: Option<String>,
    },
    /// Unpin a memory.
    Unpin {
        /// The memory's id (or its last 8 characters).
        id: String,
        #[arg(long, short)]
        companion: Option<String>,
    },
    /// Forget one memory (with its older versions), or everything about a subject.
    Forget {
        /// The memory's id (or its last 8 characters).
        #[arg(required_unless_present = "about", conflicts_with = "about")]
        id: Option<String>,
        /// Forget every memory about this subject (by name or meaning).
        #[arg(long, value_name = "TEXT")]
        about: Option<String>,
        #[arg(long, short)]
        companion: Option<String>,
        /// Print JSON (the forgotten memories).
        #[arg(long)]
        json: bool,
    },
}

/// A memory as `--json` prints it.
#[derive(Serialize)]
pub struct MemoryView<'a> {
    id: String,
    text: &'a str,
    kind: &'static str,
    subject: &'a str,
    importance: f32,
    pinned: bool,
    created_at: i64,
    updated_at: i64,
    last_used_at: Option<i64>,
    superseded_by: Option<String>,
    source_message_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<f32>,
}

impl<'a> MemoryView<'a> {
    /// The view of `m` (with a search or recall score).
    pub fn new(m: &'a MemoryItem, score: Option<f32>) -> Self {
        Self {
            id: m.id.to_string(),
            text: &m.text,
            kind: m.kind.as_str(),
            subject: &m.subject,
            importance: m.importance,
            pinned: m.pinned,
            created_at: m.created_at.0,
            updated_at: m.updated_at.0,
            last_used_at: m.last_used_at.map(|t| t.0),
            superseded_by: m.superseded_by.map(|id| id.to_string()),
            source_message_ids: m
                .source_message_ids
                .iter()
                .map(|id| id.to_string())
                .collect(),
            score,
        }
    }
}

/// The short id shown in lists: the last 8 characters (the random part of the id).
pub fn short_id(m: &MemoryItem) -> String {
    let id = m.id.to_string();
    id[id.len().saturating_sub(8)..].to_owned()
}

/// One line of a memory list.
pub fn line(m: &MemoryItem) -> String {
    let mut flags = Vec::new();
    if m.pinned {
        flags.push("pinned".to_owned());
    }
    if m.superseded_by.is_some() {
        flags.push("replaced".to_owned());
    }
    let date: String = m.created_at.to_string().chars().take(10).collect();
    format!(
        "{}  {:<10} {}  ({date}{}{})",
        short_id(m),
        m.kind.as_str(),
        m.text,
        if flags.is_empty() { "" } else { ", " },
        flags.join(", ")
    )
}

fn print_json(value: &impl Serialize) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(std::io::Error::other)?;
    writeln!(out)?;
    Ok(())
}

fn companion(app: &Nexus, name: Option<&str>) -> Result<Companion, CliError> {
    Ok(match name {
        Some(n) => app.find_companion(n)?,
        None => app.companion_or_default(None)?,
    })
}

/// The app with the embedding model loaded (for search, edit and forgetting by meaning).
fn with_embedder(config: &NativeConfig) -> Result<Nexus, CliError> {
    let mut app = native::open(config)?;
    app.set_embedder(Box::new(native::load_embedder(config)?));
    Ok(app)
}

pub fn run(config: &NativeConfig, cmd: MemoryCmd) -> Result<(), CliError> {
    match cmd {
        MemoryCmd::List {
            companion: name,
            all,
            json,
        } => {
            let app = native::open(config)?;
            let c = companion(&app, name.as_deref())?;
            let memories = app.memories(&c, all)?;
            if json {
                let views: Vec<_> = memories.iter().map(|m| MemoryView::new(m, None)).collect();
                return print_json(&views);
            }
            if memories.is_empty() {
                println!(
                    "{} doesn't remember anything about you yet. Chat with `nexus chat`.",
                    c.name
                );
                return Ok(());
            }
            println!("What {} remembers about you ({}):", c.name, memories.len());
            for m in &memories {
                println!("  {}", line(m));
            }
        }
        MemoryCmd::Search {
            text,
            companion: name,
            limit,
            json,
        } => {
            let app = with_embedder(config)?;
            let c = companion(&app, name.as_deref())?;
            let hits = app.search_memories(&c, &text, limit.max(1))?;
            if json {
                let views: Vec<_> = hits
                    .iter()
                    .map(|(m, s)| MemoryView::new(m, Some(*s)))
                    .collect();
                return print_json(&views);
            }
            if hits.is_empty() {
                println!("No memories match {text:?}.");
            }
            for (m, score) in &hits {
                println!("  {score:.2}  {}", line(m));
            }
        }
        MemoryCmd::Edit {
            id,
            text,
            companion: name,
        } => {
            let app = with_embedder(config)?;
            let c = companion(&app, name.as_deref())?;
            let m = app.find_memory(&c, &id)?;
            let m = app.edit_memory(&m, &text)?;
            println!("Updated {}: {}", short_id(&m), m.text);
        }
        MemoryCmd::Pin {
            id,
            companion: name,
        } => pin(config, &id, name.as_deref(), true)?,
        MemoryCmd::Unpin {
            id,
            companion: name,
        } => pin(config, &id, name.as_deref(), false)?,
        MemoryCmd::Forget {
            id,
            about,
            companion: name,
            json,
        } => {
            let (app, gone) = match (id, about) {
                (_, Some(subject)) => {
                    let app = with_embedder(config)?;
                    let c = companion(&app, name.as_deref())?;
                    let gone = app.forget_about(&c, &subject)?;
                    (app, gone)
                }
                (Some(id), None) => {
                    let app = native::open(config)?;
                    let c = companion(&app, name.as_deref())?;
                    let m = app.find_memory(&c, &id)?;
                    app.forget_memory(&m)?;
                    (app, vec![m])
                }
                (None, None) => {
                    return Err(CliError::Usage(
                        "say which memory to forget (ID) or what about (--about TEXT)".into(),
                    ));
                }
            };
            drop(app);
            if json {
                let views: Vec<_> = gone.iter().map(|m| MemoryView::new(m, None)).collect();
                print_json(&views)?;
            } else {
                if gone.is_empty() {
                    println!("Nothing to forget.");
                }
                for m in &gone {
                    println!("Forgot {}: {}", short_id(m), m.text);
                }
            }
            if !gone.is_empty() {
                crate::sync::after_forgetting(&config.data_dir);
            }
        }
    }
    Ok(())
}

fn pin(config: &NativeConfig, id: &str, name: Option<&str>, pinned: bool) -> Result<(), CliError> {
    let app = native::open(config)?;
    let c = companion(&app, name)?;
    let m = app.pin_memory(&app.find_memory(&c, id)?, pinned)?;
    println!(
        "{} {}: {}",
        if pinned { "Pinned" } else { "Unpinned" },
        short_id(&m),
        m.text
    );
    Ok(())
}
