//! The privacy archive: everything the user owns as one documented JSON file
//! (`docs/ARCHIVE.md`), and restoring it.

use std::collections::BTreeMap;

use base64::Engine as _;
use nexus_common::{JournalId, MemoryId, MessageId, Timestamp};
use nexus_store::{
    Companion, CompanionAsset, Conversation, ConversationSummary, JournalEntry, MemoryItem,
    Message, PersonaChange, PersonaState, Store, StoreError,
};
use serde::{Deserialize, Serialize};

use crate::{AppError, Result};

/// `format` of an archive.
pub const FORMAT: &str = "nexus-archive";
/// Newest archive version this build writes and reads.
pub const VERSION: u32 = 1;

/// A whole archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Archive {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`] when written by this build.
    pub version: u32,
    /// When it was written (ms since the epoch).
    pub exported_at: Timestamp,
    /// Version of Nexus that wrote it.
    pub app_version: String,
    /// App settings.
    pub settings: BTreeMap<String, String>,
    /// Every companion with everything that belongs to it.
    pub companions: Vec<CompanionArchive>,
    /// The emotion journal (readings and fused states), oldest first. Absent in archives of
    /// builds without the journal (read as empty).
    #[serde(default)]
    pub journal: Vec<JournalEntry>,
}

/// One companion and what hangs off it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompanionArchive {
    /// The companion (with its character card).
    pub companion: Companion,
    /// Evolved persona state.
    pub persona: Option<PersonaState>,
    /// Every recorded persona change.
    pub persona_history: Vec<PersonaChange>,
    /// Memories, superseded versions included.
    pub memories: Vec<MemoryItem>,
    /// Attached files, base64.
    pub assets: Vec<AssetArchive>,
    /// Conversations with their messages.
    pub conversations: Vec<ConversationArchive>,
}

/// An attached file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetArchive {
    /// Name.
    pub name: String,
    /// Media type.
    pub media_type: String,
    /// Content, base64 (standard alphabet, padded).
    pub base64: String,
}

/// A conversation with its messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationArchive {
    /// The conversation.
    pub conversation: Conversation,
    /// Messages, oldest first.
    pub messages: Vec<Message>,
    /// The rolling summary, if any.
    pub summary: Option<ConversationSummary>,
    /// For each reply: the memories that informed it.
    pub memories_used: BTreeMap<MessageId, Vec<MemoryId>>,
}

/// Reads everything from the store.
pub fn export(store: &dyn Store, now: Timestamp) -> Result<Archive> {
    let mut companions = Vec::new();
    for companion in store.list_companions()? {
        let id = companion.id;
        let mut conversations = Vec::new();
        for conversation in store.list_conversations(id)? {
            let messages = store.messages(conversation.id, None)?;
            let mut memories_used = BTreeMap::new();
            for m in messages
                .iter()
                .filter(|m| m.role == nexus_store::Role::Assistant)
            {
                let used = store.memories_used(m.id)?;
                if !used.is_empty() {
                    memories_used.insert(m.id, used);
                }
            }
            conversations.push(ConversationArchive {
                summary: store.latest_summary(conversation.id)?,
                conversation,
                messages,
                memories_used,
            });
        }
        companions.push(CompanionArchive {
            persona: store.persona_state(id)?,
            persona_history: store.persona_history(id, None)?,
            memories: store.list_memories(id, true)?,
            assets: store
                .assets(id)?
                .into_iter()
                .map(|a| AssetArchive {
                    name: a.name,
                    media_type: a.media_type,
                    base64: base64::engine::general_purpose::STANDARD.encode(&a.bytes),
                })
                .collect(),
            conversations,
            companion,
        });
    }
    Ok(Archive {
        format: FORMAT.into(),
        version: VERSION,
        exported_at: now,
        app_version: env!("CARGO_PKG_VERSION").into(),
        settings: store.settings()?.into_iter().collect(),
        companions,
        journal: store.journal(Timestamp(i64::MIN), Timestamp(i64::MAX))?,
    })
}

/// What [`restore`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Companions restored.
    pub companions: usize,
    /// Companions skipped because they already exist (same id).
    pub skipped: Vec<String>,
    /// Messages restored.
    pub messages: usize,
    /// Memories restored.
    pub memories: usize,
    /// Journal entries restored (entries whose id exists are skipped).
    pub journal_entries: usize,
}

/// Inserts memories so that every chain of versions is rebuilt with `supersede_memory`, oldest
/// first (the store only links versions that way).
fn restore_memories(store: &dyn Store, memories: &[MemoryItem]) -> Result<()> {
    let by_id: BTreeMap<MemoryId, &MemoryItem> = memories.iter().map(|m| (m.id, m)).collect();
    let newer: std::collections::BTreeSet<MemoryId> =
        memories.iter().filter_map(|m| m.superseded_by).collect();
    for head in memories.iter().filter(|m| !newer.contains(&m.id)) {
        let mut item = head.clone();
        item.superseded_by = None;
        store.insert_memory(&item)?;
        let mut cur = head;
        while let Some(next) = cur.superseded_by.and_then(|id| by_id.get(&id).copied()) {
            let mut n = next.clone();
            n.superseded_by = None;
            store.supersede_memory(cur.id, &n)?;
            cur = next;
        }
    }
    Ok(())
}

/// Records which memories informed which reply. Recording stamps `last_used_at`, so replies are
/// replayed in order, each at the time its memories were last used, which restores the stamps.
fn restore_uses(store: &dyn Store, c: &CompanionArchive, fallback: Timestamp) -> Result<()> {
    let times: BTreeMap<MessageId, Timestamp> = c
        .conversations
        .iter()
        .flat_map(|conv| conv.messages.iter().map(|m| (m.id, m.created_at)))
        .collect();
    let mut uses: Vec<(Timestamp, MessageId, &Vec<MemoryId>)> = c
        .conversations
        .iter()
        .flat_map(|conv| conv.memories_used.iter())
        .map(|(reply, used)| (times.get(reply).copied().unwrap_or(fallback), *reply, used))
        .collect();
    uses.sort();
    // The last reply (in time) that used each memory.
    let mut last_reply: BTreeMap<MemoryId, MessageId> = BTreeMap::new();
    for (_, reply, used) in &uses {
        for m in used.iter() {
            last_reply.insert(*m, *reply);
        }
    }
    let last_used: BTreeMap<MemoryId, Timestamp> = c
        .memories
        .iter()
        .filter_map(|m| Some((m.id, m.last_used_at?)))
        .collect();
    for (time, reply, used) in uses {
        let at = used
            .iter()
            .filter(|m| last_reply.get(m) == Some(&reply))
            .filter_map(|m| last_used.get(m).copied())
            .max()
            .unwrap_or(time);
        store.record_memories_used(reply, used, at)?;
    }
    Ok(())
}

/// Parses and checks an archive.
pub fn parse(bytes: &[u8]) -> Result<Archive> {
    let invalid = |m: String| AppError::Store(StoreError::Invalid(m));
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("the archive is not valid JSON: {e}")))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(invalid(
            "this file is not a Nexus archive (no \"format\": \"nexus-archive\")".into(),
        ));
    }
    let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
    if version == 0 || version > u64::from(VERSION) {
        return Err(invalid(format!(
            "archive version {version} is not supported by this build (newest: {VERSION})"
        )));
    }
    serde_json::from_value(value).map_err(|e| invalid(format!("the archive is damaged: {e}")))
}

/// Restores an archive into the store. Companions that already exist (same id) are skipped;
/// a name taken by another companion gets " (restored)" appended.
pub fn restore(store: &dyn Store, archive: &Archive) -> Result<RestoreReport> {
    let mut report = RestoreReport::default();
    for (k, v) in &archive.settings {
        if store.setting(k)?.is_none() {
            store.set_setting(k, v)?;
        }
    }
    for c in &archive.companions {
        match store.companion(c.companion.id) {
            Ok(_) => {
                report.skipped.push(c.companion.name.clone());
                continue;
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let mut companion = c.companion.clone();
        if store.companion_by_name(&companion.name)?.is_some() {
            companion.name = format!("{} (restored)", companion.name);
        }
        store.create_companion(&companion)?;
        for a in &c.assets {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&a.base64)
                .map_err(|e| {
                    AppError::Store(StoreError::Invalid(format!(
                        "asset {}: bad base64: {e}",
                        a.name
                    )))
                })?;
            store.put_asset(&CompanionAsset {
                companion_id: companion.id,
                name: a.name.clone(),
                media_type: a.media_type.clone(),
                bytes,
            })?;
        }
        restore_memories(store, &c.memories)?;
        report.memories += c.memories.len();
        for conv in &c.conversations {
            store.create_conversation(&conv.conversation)?;
            store.append_messages(&conv.messages)?;
            report.messages += conv.messages.len();
            if let Some(s) = &conv.summary {
                store.save_summary(s)?;
            }
        }
        restore_uses(store, c, archive.exported_at)?;
        if let Some(p) = &c.persona {
            store.save_persona_state(p, &c.persona_history)?;
        }
        report.companions += 1;
    }
    let existing: std::collections::BTreeSet<JournalId> = store
        .journal(Timestamp(i64::MIN), Timestamp(i64::MAX))?
        .into_iter()
        .map(|e| e.id)
        .collect();
    let missing: Vec<JournalEntry> = archive
        .journal
        .iter()
        .filter(|e| !existing.contains(&e.id))
        .cloned()
        .collect();
    store.add_journal_entries(&missing)?;
    report.journal_entries = missing.len();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use nexus_common::{CompanionId, ConversationId};
    use nexus_store::{MemoryKind, MemoryStore, Role};

    use super::*;

    fn filled() -> MemoryStore {
        let s = MemoryStore::new();
        let c = Companion {
            id: CompanionId::new(),
            name: "Nova".into(),
            description: "d".into(),
            personality: "p".into(),
            speaking_style: "s".into(),
            greeting: "g".into(),
            card: Some(serde_json::json!({"scenario": "x", "extensions": {"k": [1, 2]}})),
            created_at: Timestamp(1),
            updated_at: Timestamp(2),
        };
        s.create_companion(&c).expect("companion");
        let conv = Conversation {
            id: ConversationId::new(),
            companion_id: c.id,
            title: None,
            created_at: Timestamp(3),
            updated_at: Timestamp(3),
        };
        s.create_conversation(&conv).expect("conversation");
        let msg = |role, text: &str, t| Message {
            id: MessageId::new(),
            conversation_id: conv.id,
            role,
            text: text.into(),
            created_at: Timestamp(t),
            token_count: 3,
        };
        let (u, a) = (
            msg(Role::User, "I live in Lyon.", 4),
            msg(Role::Assistant, "Lovely city!", 5),
        );
        s.append_messages(&[u.clone(), a.clone()])
            .expect("messages");
        let mem = |text: &str| MemoryItem {
            id: MemoryId::new(),
            companion_id: c.id,
            text: text.into(),
            kind: MemoryKind::Fact,
            subject: "user.home".into(),
            importance: 0.7,
            pinned: false,
            embedding: vec![0.6, 0.8],
            source_message_ids: vec![u.id],
            created_at: Timestamp(6),
            updated_at: Timestamp(6),
            last_used_at: None,
            superseded_by: None,
        };
        let (old, new) = (
            mem("The user lives in Paris."),
            mem("The user lives in Lyon."),
        );
        s.insert_memory(&old).expect("old");
        s.supersede_memory(old.id, &new).expect("supersede");
        s.record_memories_used(a.id, &[new.id], Timestamp(7))
            .expect("used");
        s.put_asset(&CompanionAsset {
            companion_id: c.id,
            name: "avatar.png".into(),
            media_type: "image/png".into(),
            bytes: vec![0, 159, 146, 150],
        })
        .expect("asset");
        s.save_summary(&ConversationSummary {
            conversation_id: conv.id,
            text: "They talked.".into(),
            covered_messages: 2,
            token_count: 3,
            created_at: Timestamp(8),
        })
        .expect("summary");
        s.set_setting("active_companion", &c.id.to_string())
            .expect("setting");
        let entry = |source, at, message_id| JournalEntry {
            id: JournalId::new(),
            at: Timestamp(at),
            source,
            labels: vec![("sadness".into(), 0.6), ("neutral".into(), 0.3)],
            valence: -0.4,
            arousal: 0.3,
            confidence: 0.7,
            conversation_id: None,
            message_id,
            details: serde_json::json!({"flags": {"maybe_not_english": false}}),
        };
        s.add_journal_entries(&[
            entry(nexus_store::EmotionSource::Text, 50, Some(MessageId::new())),
            entry(nexus_store::EmotionSource::Fused, 50, None),
            entry(nexus_store::EmotionSource::Heart, 20, None),
        ])
        .expect("journal");
        s
    }

    #[test]
    fn export_then_restore_into_an_empty_store_gives_the_same_archive() {
        let a = export(&filled(), Timestamp(100)).expect("export");
        assert_eq!(a.companions.len(), 1);
        assert_eq!(
            a.companions[0].memories.len(),
            2,
            "superseded history is exported"
        );
        let bytes = serde_json::to_vec_pretty(&a).expect("json");
        let parsed = parse(&bytes).expect("parse");
        let target = MemoryStore::new();
        let report = restore(&target, &parsed).expect("restore");
        assert_eq!(
            (
                report.companions,
                report.messages,
                report.memories,
                report.journal_entries
            ),
            (1, 2, 2, 3)
        );
        assert_eq!(a.journal.len(), 3, "the journal is exported");
        let again = export(&target, Timestamp(100)).expect("export again");
        assert_eq!(again, a, "nothing is lost in a round trip");
        let twice = restore(&target, &parsed).expect("restore twice");
        assert_eq!(
            twice.skipped,
            vec!["Nova".to_string()],
            "restoring twice is harmless"
        );
        assert_eq!(twice.journal_entries, 0, "journal entries are not doubled");
        assert_eq!(
            export(&target, Timestamp(100)).expect("after twice"),
            a,
            "nothing doubled"
        );
    }

    #[test]
    fn foreign_or_damaged_files_are_refused_clearly() {
        assert!(
            parse(b"not json")
                .expect_err("junk")
                .to_string()
                .contains("not valid JSON")
        );
        assert!(
            parse(br#"{"format":"other"}"#)
                .expect_err("foreign")
                .to_string()
                .contains("not a Nexus archive")
        );
        assert!(
            parse(br#"{"format":"nexus-archive","version":99}"#)
                .expect_err("newer")
                .to_string()
                .contains("99")
        );
        assert!(parse(br#"{"format":"nexus-archive","version":1,"companions":"x"}"#).is_err());
    }
}
