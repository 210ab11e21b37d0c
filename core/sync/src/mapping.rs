//! Between the store and the documents: the store is the query engine, the documents are the
//! replication format. [`capture`] writes what the store holds into a document (only what
//! differs); [`apply`] writes what a merge changed in a document into the store (upserts and
//! deletions by id). The field layout is documented in docs/SYNC.md.

use std::collections::{BTreeMap, BTreeSet};

use nexus_common::{CompanionId, ConversationId, MemoryId, MessageId, Timestamp};
use nexus_store::{
    Companion, Conversation, EmotionSource, JournalEntry, MemoryItem, MemoryKind, Message,
    PersonaChange, PersonaState, Role, Store, StoreError,
};
use sha2::{Digest, Sha256};

use crate::doc::{DocName, FORGOTTEN, Field, Record, View, Writer};
use crate::{Result, SyncError};

/// Settings whose key starts with this stay on the device (never synced).
pub const DEVICE_LOCAL_PREFIX: &str = "device.";

fn s(v: &str) -> Field {
    Field::Str(v.to_owned())
}

fn opt_s(v: Option<&str>) -> Field {
    v.map_or(Field::Null, s)
}

fn rec<const N: usize>(fields: [(&str, Field); N]) -> Record {
    fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn bad(what: &str) -> SyncError {
    SyncError::Schema(format!("a document holds a malformed {what}"))
}

fn get_str(r: &Record, k: &str) -> Option<String> {
    r.get(k).and_then(Field::as_str).map(str::to_owned)
}

fn get_i64(r: &Record, k: &str) -> Option<i64> {
    r.get(k).and_then(Field::as_i64)
}

#[allow(clippy::cast_possible_truncation)]
fn get_f32(r: &Record, k: &str) -> Option<f32> {
    r.get(k).and_then(Field::as_f64).map(|f| f as f32)
}

fn get_bool(r: &Record, k: &str) -> bool {
    matches!(r.get(k), Some(Field::Bool(true)))
}

// --- records of each entity ---------------------------------------------------------------

fn profile_record(c: &Companion) -> Record {
    rec([
        ("name", s(&c.name)),
        ("description", s(&c.description)),
        ("personality", s(&c.personality)),
        ("speaking_style", s(&c.speaking_style)),
        ("greeting", s(&c.greeting)),
        (
            "card",
            c.card
                .as_ref()
                .map_or(Field::Null, |v| Field::Str(v.to_string())),
        ),
        ("created_at", Field::Int(c.created_at.0)),
        ("updated_at", Field::Int(c.updated_at.0)),
        ("deleted", Field::Bool(false)),
    ])
}

fn companion_from(id: CompanionId, r: &Record) -> Result<Companion> {
    let text = |k: &str| get_str(r, k).unwrap_or_default();
    Ok(Companion {
        id,
        name: get_str(r, "name").ok_or_else(|| bad("companion (no name)"))?,
        description: text("description"),
        personality: text("personality"),
        speaking_style: text("speaking_style"),
        greeting: text("greeting"),
        card: get_str(r, "card").and_then(|json| serde_json::from_str(&json).ok()),
        created_at: Timestamp(get_i64(r, "created_at").unwrap_or(0)),
        updated_at: Timestamp(get_i64(r, "updated_at").unwrap_or(0)),
    })
}

fn persona_record(p: &PersonaState) -> Record {
    let mut r = rec([
        ("familiarity", Field::F64(f64::from(p.familiarity))),
        ("trust", Field::F64(f64::from(p.trust))),
        (
            "exchanges",
            Field::Int(i64::try_from(p.exchanges).unwrap_or(i64::MAX)),
        ),
        ("updated_at", Field::Int(p.updated_at.0)),
    ]);
    for (name, score) in &p.traits {
        r.insert(format!("trait.{name}"), Field::F64(f64::from(*score)));
    }
    for name in &p.locked {
        r.insert(format!("locked.{name}"), Field::Bool(true));
    }
    r
}

fn persona_from(companion_id: CompanionId, r: &Record) -> Option<PersonaState> {
    if r.is_empty() {
        return None;
    }
    let mut traits = BTreeMap::new();
    let mut locked = BTreeSet::new();
    for (k, v) in r {
        if let Some(name) = k.strip_prefix("trait.") {
            #[allow(clippy::cast_possible_truncation)]
            traits.insert(name.to_owned(), v.as_f64().unwrap_or(0.5) as f32);
        } else if let Some(name) = k.strip_prefix("locked.")
            && *v == Field::Bool(true)
        {
            locked.insert(name.to_owned());
        }
    }
    Some(PersonaState {
        companion_id,
        traits,
        locked,
        familiarity: get_f32(r, "familiarity").unwrap_or(0.0),
        trust: get_f32(r, "trust").unwrap_or(0.0),
        exchanges: get_i64(r, "exchanges")
            .and_then(|e| u64::try_from(e).ok())
            .unwrap_or(0),
        updated_at: Timestamp(get_i64(r, "updated_at").unwrap_or(0)),
    })
}

/// The key of a persona change (they have no id): time, then a hash of the content.
pub fn persona_change_key(c: &PersonaChange) -> String {
    let mut h = Sha256::new();
    h.update(c.field.as_bytes());
    h.update([0]);
    h.update(c.old.to_bits().to_be_bytes());
    h.update(c.new.to_bits().to_be_bytes());
    h.update(c.reason.as_bytes());
    let d = h.finalize();
    format!(
        "{:015}-{:02x}{:02x}{:02x}{:02x}",
        c.at.0.max(0),
        d[0],
        d[1],
        d[2],
        d[3]
    )
}

fn persona_change_record(c: &PersonaChange) -> Record {
    rec([
        ("field", s(&c.field)),
        ("old", Field::F64(f64::from(c.old))),
        ("new", Field::F64(f64::from(c.new))),
        ("reason", s(&c.reason)),
        ("at", Field::Int(c.at.0)),
    ])
}

fn persona_change_from(companion_id: CompanionId, r: &Record) -> Option<PersonaChange> {
    Some(PersonaChange {
        companion_id,
        field: get_str(r, "field")?,
        old: get_f32(r, "old")?,
        new: get_f32(r, "new")?,
        reason: get_str(r, "reason").unwrap_or_default(),
        at: Timestamp(get_i64(r, "at")?),
    })
}

fn memory_record(m: &MemoryItem) -> Record {
    let sources: Vec<String> = m
        .source_message_ids
        .iter()
        .map(ToString::to_string)
        .collect();
    rec([
        ("text", s(&m.text)),
        ("kind", s(m.kind.as_str())),
        ("subject", s(&m.subject)),
        ("importance", Field::F64(f64::from(m.importance))),
        ("pinned", Field::Bool(m.pinned)),
        (
            "embedding",
            Field::Bytes(m.embedding.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ),
        ("source_message_ids", s(&sources.join(","))),
        ("created_at", Field::Int(m.created_at.0)),
        ("updated_at", Field::Int(m.updated_at.0)),
        (
            "last_used_at",
            m.last_used_at.map_or(Field::Null, |t| Field::Int(t.0)),
        ),
        (
            "superseded_by",
            opt_s(m.superseded_by.map(|id| id.to_string()).as_deref()),
        ),
    ])
}

fn memory_from(companion_id: CompanionId, key: &str, r: &Record) -> Result<MemoryItem> {
    let embedding = match r.get("embedding") {
        Some(Field::Bytes(b)) if b.len() % 4 == 0 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        _ => Vec::new(),
    };
    let sources = get_str(r, "source_message_ids").unwrap_or_default();
    Ok(MemoryItem {
        id: key.parse().map_err(|_| bad("memory id"))?,
        companion_id,
        text: get_str(r, "text").ok_or_else(|| bad("memory (no text)"))?,
        kind: get_str(r, "kind")
            .and_then(|k| MemoryKind::parse(&k))
            .unwrap_or(MemoryKind::Fact),
        subject: get_str(r, "subject").unwrap_or_default(),
        importance: get_f32(r, "importance").unwrap_or(0.5).clamp(0.0, 1.0),
        pinned: get_bool(r, "pinned"),
        embedding,
        source_message_ids: sources
            .split(',')
            .filter_map(|id| id.parse::<MessageId>().ok())
            .collect(),
        created_at: Timestamp(get_i64(r, "created_at").unwrap_or(0)),
        updated_at: Timestamp(get_i64(r, "updated_at").unwrap_or(0)),
        last_used_at: get_i64(r, "last_used_at").map(Timestamp),
        superseded_by: get_str(r, "superseded_by").and_then(|id| id.parse::<MemoryId>().ok()),
    })
}

fn conversation_record(c: &Conversation) -> Record {
    rec([
        ("companion_id", s(&c.companion_id.to_string())),
        ("title", opt_s(c.title.as_deref())),
        ("created_at", Field::Int(c.created_at.0)),
        ("deleted", Field::Bool(false)),
    ])
}

fn message_record(m: &Message) -> Record {
    rec([
        ("role", s(m.role.as_str())),
        ("text", s(&m.text)),
        ("created_at", Field::Int(m.created_at.0)),
        ("token_count", Field::Int(i64::from(m.token_count))),
    ])
}

fn message_from(conversation_id: ConversationId, key: &str, r: &Record) -> Result<Message> {
    Ok(Message {
        id: key.parse().map_err(|_| bad("message id"))?,
        conversation_id,
        role: get_str(r, "role")
            .and_then(|role| Role::parse(&role))
            .ok_or_else(|| bad("message role"))?,
        text: get_str(r, "text").unwrap_or_default(),
        created_at: Timestamp(get_i64(r, "created_at").unwrap_or(0)),
        token_count: get_i64(r, "token_count")
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(0),
    })
}

/// The journal collection of the store's emotion journal entries.
pub const READINGS: &str = "readings";

fn journal_record(e: &JournalEntry) -> Record {
    rec([
        ("at", Field::Int(e.at.0)),
        ("source", s(e.source.as_str())),
        (
            "labels",
            s(&serde_json::to_string(&e.labels).unwrap_or_else(|_| "[]".to_owned())),
        ),
        ("valence", Field::F64(f64::from(e.valence))),
        ("arousal", Field::F64(f64::from(e.arousal))),
        ("confidence", Field::F64(f64::from(e.confidence))),
        (
            "conversation_id",
            opt_s(e.conversation_id.map(|id| id.to_string()).as_deref()),
        ),
        (
            "message_id",
            opt_s(e.message_id.map(|id| id.to_string()).as_deref()),
        ),
        (
            "details",
            s(&serde_json::to_string(&e.details).unwrap_or_else(|_| "null".to_owned())),
        ),
    ])
}

/// A journal entry of the document; `None` (skipped, with a warning) if it is malformed or
/// breaks the store's rules: one bad reading written elsewhere must not stop the others.
fn journal_from(key: &str, r: &Record) -> Option<JournalEntry> {
    let entry = (|| {
        Some(JournalEntry {
            id: key.parse().ok()?,
            at: Timestamp(get_i64(r, "at")?),
            source: EmotionSource::parse(&get_str(r, "source")?)?,
            labels: match get_str(r, "labels") {
                Some(json) => serde_json::from_str(&json).ok()?,
                None => Vec::new(),
            },
            valence: get_f32(r, "valence").unwrap_or(0.0),
            arousal: get_f32(r, "arousal").unwrap_or(0.0),
            confidence: get_f32(r, "confidence").unwrap_or(0.0),
            conversation_id: get_str(r, "conversation_id").and_then(|id| id.parse().ok()),
            message_id: get_str(r, "message_id").and_then(|id| id.parse().ok()),
            details: get_str(r, "details")
                .and_then(|json| serde_json::from_str(&json).ok())
                .unwrap_or(serde_json::Value::Null),
        })
    })()
    .filter(|e| e.validate().is_ok());
    if entry.is_none() {
        tracing::warn!("sync: skipped the malformed journal reading {key:?}");
    }
    entry
}

/// The whole emotion journal of the store, oldest first.
pub fn store_journal(store: &dyn Store) -> Result<Vec<JournalEntry>> {
    Ok(store.journal(Timestamp(i64::MIN), Timestamp(i64::MAX))?)
}

// --- store -> document -----------------------------------------------------------------------

/// The documents the store's content lives in (settings, the journal, every companion, every
/// conversation).
pub fn store_documents(store: &dyn Store) -> Result<Vec<DocName>> {
    let mut names = vec![DocName::Settings, DocName::Journal];
    for c in store.list_companions()? {
        names.push(DocName::Companion(c.id));
        for conv in store.list_conversations(c.id)? {
            names.push(DocName::Conversation(conv.id));
        }
    }
    Ok(names)
}

fn missing<T>(r: nexus_store::Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes what the store holds for document `name` into it, through `w` (only differences).
/// `current` is the document's view before. An entity missing from the store but present in the
/// document was deleted on this device: it is deleted (or marked deleted) in the document too.
pub fn capture(
    store: &dyn Store,
    name: &DocName,
    current: &View,
    w: &mut Writer<'_>,
) -> Result<()> {
    capture_with(store, name, current, w, false)
}

/// [`capture`] of a companion shared with this device by someone else (a read-write share,
/// see [`crate::share`]): the same, except that a name this device gave the companion to
/// settle a clash with one of its own companions (`Name (<6 hex>)`, see [`apply`]) is not
/// written: the owner does not have that clash, and keeps the name.
pub fn capture_shared(
    store: &dyn Store,
    name: &DocName,
    current: &View,
    w: &mut Writer<'_>,
) -> Result<()> {
    capture_with(store, name, current, w, true)
}

fn capture_with(
    store: &dyn Store,
    name: &DocName,
    current: &View,
    w: &mut Writer<'_>,
    shared: bool,
) -> Result<()> {
    match name {
        DocName::Settings => {
            let settings: Record = store
                .settings()?
                .into_iter()
                .filter(|(k, _)| !k.starts_with(DEVICE_LOCAL_PREFIX))
                .map(|(k, v)| (k, Field::Str(v)))
                .collect();
            w.set_record("settings", &settings)?;
        }
        // Written by the sync client itself, not mapped to the store.
        DocName::Space => {}
        DocName::Journal => {
            // Append-only: entries never change once written, and the store deletes none
            // (except `wipe`, which forgets the documents too). Only new ones are added, so
            // only the keys of `current` are needed (`doc::read_keys`).
            let known = current.collection(READINGS);
            for e in store_journal(store)? {
                let key = e.id.to_string();
                if !known.contains_key(&key) {
                    w.put_entity(READINGS, &key, &journal_record(&e))?;
                }
            }
        }
        DocName::Companion(id) => {
            let Some(companion) = missing(store.companion(*id))? else {
                if !current.record("profile").is_empty()
                    && !get_bool(current.record("profile"), "deleted")
                {
                    w.update_record("profile", &rec([("deleted", Field::Bool(true))]))?;
                }
                return Ok(());
            };
            let mut profile = profile_record(&companion);
            if shared
                && let Some(doc_name) = get_str(current.record("profile"), "name")
                && companion.name
                    == suffixed(&Companion {
                        name: doc_name.clone(),
                        ..companion.clone()
                    })
            {
                profile.insert("name".to_owned(), s(&doc_name));
            }
            w.update_record("profile", &profile)?;
            if let Some(state) = store.persona_state(*id)? {
                w.set_record("persona", &persona_record(&state))?;
            }
            let known = current.collection("persona_history");
            for change in store.persona_history(*id, None)? {
                let key = persona_change_key(&change);
                if !known.contains_key(&key) {
                    w.put_entity("persona_history", &key, &persona_change_record(&change))?;
                }
            }
            let mut memories = store.list_memories(*id, true)?;
            // A memory this document says was forgotten (restored from an old archive, or
            // left by an interrupted apply) is forgotten again, never written back.
            let forgotten = current.collection(FORGOTTEN);
            let back: Vec<MemoryId> = memories
                .iter()
                .filter(|m| forgotten.contains_key(&m.id.to_string()))
                .map(|m| m.id)
                .collect();
            if !back.is_empty() {
                store.delete_memories(&back)?;
                memories = store.list_memories(*id, true)?;
            }
            let ids: BTreeSet<String> = memories.iter().map(|m| m.id.to_string()).collect();
            for m in &memories {
                let key = m.id.to_string();
                let record = memory_record(m);
                let unchanged = current.collection("memories").get(&key).is_some_and(|r| {
                    r.len() == record.len()
                        && r.iter()
                            .all(|(k, v)| record.get(k).is_some_and(|x| x.same(v)))
                });
                if !unchanged {
                    w.put_entity("memories", &key, &record)?;
                }
            }
            for key in current.collection("memories").keys() {
                if !ids.contains(key) {
                    w.delete_entity("memories", key)?;
                }
            }
        }
        DocName::Conversation(id) => {
            let Some(conversation) = missing(store.conversation(*id))? else {
                if !current.record("conversation").is_empty()
                    && !get_bool(current.record("conversation"), "deleted")
                {
                    w.update_record("conversation", &rec([("deleted", Field::Bool(true))]))?;
                }
                return Ok(());
            };
            w.update_record("conversation", &conversation_record(&conversation))?;
            let known = current.collection("messages");
            // Messages never change once written: only new ones are added.
            for m in store.messages(*id, None)? {
                let key = m.id.to_string();
                if !known.contains_key(&key) {
                    w.put_entity("messages", &key, &message_record(&m))?;
                }
            }
        }
    }
    Ok(())
}

// --- document -> store -----------------------------------------------------------------------

/// A companion whose name is taken by another companion (created on two devices at once): the
/// one with the smaller id keeps the name, the other gets a suffix from its id. Every device
/// decides the same way, so the renames converge.
fn suffixed(c: &Companion) -> String {
    let id = c.id.to_string();
    format!("{} ({})", c.name, &id[id.len() - 6..])
}

fn upsert_companion(store: &dyn Store, c: &Companion) -> Result<()> {
    let exists = missing(store.companion(c.id))?.is_some();
    let write = |c: &Companion| {
        if exists {
            store.update_companion(c)
        } else {
            store.create_companion(c)
        }
    };
    match write(c) {
        Err(StoreError::Conflict(_)) => {
            let Some(other) = store.companion_by_name(&c.name)? else {
                return Err(StoreError::Conflict(format!("companion {} conflicts", c.name)).into());
            };
            if other.id < c.id {
                let renamed = Companion {
                    name: suffixed(c),
                    ..c.clone()
                };
                write(&renamed)?;
            } else {
                let renamed = Companion {
                    name: suffixed(&other),
                    ..other.clone()
                };
                store.update_companion(&renamed)?;
                write(c)?;
            }
            Ok(())
        }
        other => Ok(other?),
    }
}

/// Writes into the store what changed in document `name` from `before` to `after` (everything
/// in `after` if `full`: a document this device has not applied yet). Fails with
/// [`SyncError::Deferred`] when the entity's parent is not in the store yet (a conversation
/// whose companion's document has not arrived): the caller retries later.
pub fn apply(
    store: &dyn Store,
    name: &DocName,
    before: &View,
    after: &View,
    full: bool,
) -> Result<()> {
    let changed = |part: &str| full || before.record(part) != after.record(part);
    match name {
        DocName::Settings => {
            let (old, new) = (before.record("settings"), after.record("settings"));
            for (k, v) in new {
                if k.starts_with(DEVICE_LOCAL_PREFIX) {
                    continue;
                }
                if (full || old.get(k) != Some(v))
                    && let Some(v) = v.as_str()
                {
                    store.set_setting(k, v)?;
                }
            }
            if !full {
                for k in old.keys().filter(|k| !new.contains_key(*k)) {
                    if !k.starts_with(DEVICE_LOCAL_PREFIX) {
                        store.delete_setting(k)?;
                    }
                }
            }
        }
        DocName::Space => {}
        DocName::Journal => {
            // New or changed readings, upserted by id (re-applying one changes nothing).
            // Readings removed from the document stay in the store (the journal is append-only).
            let (old, new) = (before.collection(READINGS), after.collection(READINGS));
            let puts: Vec<JournalEntry> = new
                .iter()
                .filter(|(k, r)| full || old.get(*k) != Some(*r))
                .filter_map(|(k, r)| journal_from(k, r))
                .collect();
            store.put_journal_entries(&puts)?;
        }
        DocName::Companion(id) => {
            let profile = after.record("profile");
            if profile.is_empty() {
                return Err(SyncError::Deferred(format!("{name} has no profile yet")));
            }
            if get_bool(profile, "deleted") {
                missing(store.delete_companion(*id))?;
                return Ok(());
            }
            if changed("profile") {
                upsert_companion(store, &companion_from(*id, profile)?)?;
            }
            let history_before = if full {
                &BTreeMap::new()
            } else {
                before.collection("persona_history")
            };
            let new_changes: Vec<PersonaChange> = after
                .collection("persona_history")
                .iter()
                .filter(|(k, _)| !history_before.contains_key(*k))
                .filter_map(|(_, r)| persona_change_from(*id, r))
                .collect();
            if changed("persona") || !new_changes.is_empty() {
                let state = match persona_from(*id, after.record("persona")) {
                    Some(state) => Some(state),
                    None => store.persona_state(*id)?,
                };
                if let Some(state) = state {
                    let mut new_changes = new_changes;
                    if full {
                        let stored: BTreeSet<String> = store
                            .persona_history(*id, None)?
                            .iter()
                            .map(persona_change_key)
                            .collect();
                        new_changes.retain(|c| !stored.contains(&persona_change_key(c)));
                    }
                    new_changes.sort_by_key(|c| c.at);
                    store.save_persona_state(&state, &new_changes)?;
                }
            }
            let (old, new) = (before.collection("memories"), after.collection("memories"));
            let mut puts = new
                .iter()
                .filter(|(k, r)| full || old.get(*k) != Some(*r))
                .map(|(k, r)| memory_from(*id, k, r))
                .collect::<Result<Vec<_>>>()?;
            let gone: Vec<MemoryId> = if full {
                Vec::new()
            } else {
                old.keys()
                    .filter(|k| !new.contains_key(*k))
                    .filter_map(|k| k.parse().ok())
                    .collect()
            };
            // A link to a memory that a concurrent edit forgot: the old version is current again.
            // (`new` may hold only the memories the merge touched; the others are in the store.)
            for m in &mut puts {
                if let Some(next) = m.superseded_by
                    && !new.contains_key(&next.to_string())
                    && (gone.contains(&next) || missing(store.memory(next))?.is_none())
                {
                    m.superseded_by = None;
                }
            }
            store.put_memories(&puts)?;
            store.delete_memories(&gone)?;
        }
        DocName::Conversation(id) => {
            let record = after.record("conversation");
            if record.is_empty() {
                return Err(SyncError::Deferred(format!("{name} has no record yet")));
            }
            if get_bool(record, "deleted") {
                missing(store.delete_conversation(*id))?;
                return Ok(());
            }
            let companion_id: CompanionId = get_str(record, "companion_id")
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| bad("conversation (no companion)"))?;
            if missing(store.conversation(*id))?.is_none() {
                if missing(store.companion(companion_id))?.is_none() {
                    return Err(SyncError::Deferred(format!(
                        "{name}: its companion is not here yet"
                    )));
                }
                let created_at = Timestamp(get_i64(record, "created_at").unwrap_or(0));
                store.create_conversation(&Conversation {
                    id: *id,
                    companion_id,
                    title: get_str(record, "title"),
                    created_at,
                    updated_at: created_at,
                })?;
            }
            let (old, new) = (before.collection("messages"), after.collection("messages"));
            let fresh: Vec<(&String, &Record)> = new
                .iter()
                .filter(|(k, _)| full || !old.contains_key(*k))
                .collect();
            if !fresh.is_empty() {
                let mut messages = fresh
                    .into_iter()
                    .map(|(k, r)| message_from(*id, k, r))
                    .collect::<Result<Vec<_>>>()?;
                messages.sort_by_key(|m| (m.created_at, m.id));
                // Usually none of them is stored yet; if some are (a re-applied document, or
                // this device's own messages echoed), append only the others.
                match store.append_messages(&messages) {
                    Err(StoreError::Conflict(_)) => {
                        let stored: BTreeSet<MessageId> =
                            store.messages(*id, None)?.iter().map(|m| m.id).collect();
                        messages.retain(|m| !stored.contains(&m.id));
                        store.append_messages(&messages)?;
                    }
                    other => other?,
                }
            }
        }
    }
    Ok(())
}
