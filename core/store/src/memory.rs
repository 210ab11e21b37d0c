//! [`MemoryStore`]: the in-memory [`Store`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use nexus_common::{CompanionId, ConversationId, JournalId, MemoryId, MessageId, Timestamp};

use crate::{
    Companion, CompanionAsset, Conversation, ConversationSummary, Forgetting, JournalEntry,
    MemoryItem, Message, PersonaChange, PersonaState, Result, Store, StoreError,
};

/// A [`Store`] that keeps everything in memory and forgets it when dropped: for tests, and for
/// targets without a database. It behaves exactly like the persistent stores (same rules, same
/// errors, same order), which the [`conformance`](crate::conformance) suite checks.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    companions: BTreeMap<CompanionId, Companion>,
    conversations: BTreeMap<ConversationId, Conversation>,
    /// Messages of each conversation, sorted by `created_at`; equal times in insertion order.
    messages: BTreeMap<ConversationId, Vec<Message>>,
    /// The conversation of every message.
    message_ids: BTreeMap<MessageId, ConversationId>,
    settings: BTreeMap<String, String>,
    memories: BTreeMap<MemoryId, MemoryItem>,
    /// The memories recorded for each reply, in order; no empty lists.
    memory_uses: BTreeMap<MessageId, Vec<MemoryId>>,
    personas: BTreeMap<CompanionId, PersonaState>,
    /// Each companion's persona changes, sorted by `at`; equal times in the order saved.
    persona_changes: BTreeMap<CompanionId, Vec<PersonaChange>>,
    /// Each conversation's summaries, in the order saved.
    summaries: BTreeMap<ConversationId, Vec<ConversationSummary>>,
    /// Sorted by companion, then name (byte order, like `str`'s `Ord`).
    assets: BTreeMap<(CompanionId, String), CompanionAsset>,
    /// The emotion journal, sorted by `at`; equal times in the order added.
    journal: Vec<JournalEntry>,
    /// The ids of `journal`.
    journal_ids: BTreeSet<JournalId>,
    /// The sync engine's local state.
    sync: BTreeMap<String, Vec<u8>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every method checks all its rules before it changes anything, so a panic while the lock
        // was held cannot have left half a write behind: the data of a poisoned lock is sound.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    /// Fails if a companion other than `except` has a name equal to `name` ignoring case.
    fn check_name_free(&self, name: &str, except: Option<CompanionId>) -> Result<()> {
        let key = Companion::name_key(name);
        let taken = self
            .companions
            .values()
            .any(|c| Some(c.id) != except && Companion::name_key(&c.name) == key);
        if taken {
            Err(StoreError::name_taken(name))
        } else {
            Ok(())
        }
    }

    fn check_companion_exists(&self, id: CompanionId) -> Result<()> {
        if self.companions.contains_key(&id) {
            Ok(())
        } else {
            Err(StoreError::not_found("companion", id))
        }
    }

    fn conversation_messages(&self, id: ConversationId) -> Result<&[Message]> {
        if !self.conversations.contains_key(&id) {
            return Err(StoreError::not_found("conversation", id));
        }
        Ok(self.messages.get(&id).map_or(&[], Vec::as_slice))
    }

    fn check_message_exists(&self, id: MessageId) -> Result<ConversationId> {
        self.message_ids
            .get(&id)
            .copied()
            .ok_or_else(|| StoreError::not_found("message", id))
    }

    fn remove_conversation(&mut self, id: ConversationId) {
        self.conversations.remove(&id);
        self.summaries.remove(&id);
        for message in self.messages.remove(&id).unwrap_or_default() {
            self.message_ids.remove(&message.id);
            self.memory_uses.remove(&message.id);
        }
    }

    /// Removes memories and their reply records (not the links to them: see [`Forgetting`]).
    fn remove_memories(&mut self, ids: &BTreeSet<MemoryId>) {
        self.memories.retain(|id, _| !ids.contains(id));
        self.memory_uses.retain(|_, used| {
            used.retain(|id| !ids.contains(id));
            !used.is_empty()
        });
    }

    fn remove_companion_data(&mut self, id: CompanionId) {
        let conversations: Vec<ConversationId> = self
            .conversations
            .values()
            .filter(|c| c.companion_id == id)
            .map(|c| c.id)
            .collect();
        for conversation in conversations {
            self.remove_conversation(conversation);
        }
        let memories: BTreeSet<MemoryId> = self
            .memories
            .values()
            .filter(|m| m.companion_id == id)
            .map(|m| m.id)
            .collect();
        self.remove_memories(&memories);
        self.personas.remove(&id);
        self.persona_changes.remove(&id);
        self.assets.retain(|(companion, _), _| *companion != id);
    }

    fn memory(&self, id: MemoryId) -> Result<&MemoryItem> {
        self.memories
            .get(&id)
            .ok_or_else(|| StoreError::not_found("memory", id))
    }
}

/// `ids` without repetitions, each at its first position.
fn first_occurrences(ids: &[MemoryId]) -> Vec<MemoryId> {
    let mut seen = BTreeSet::new();
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

impl Store for MemoryStore {
    fn create_companion(&self, companion: &Companion) -> Result<()> {
        companion.validate()?;
        let mut inner = self.lock();
        if inner.companions.contains_key(&companion.id) {
            return Err(StoreError::id_taken("companion", companion.id));
        }
        inner.check_name_free(&companion.name, None)?;
        inner.companions.insert(companion.id, companion.clone());
        Ok(())
    }

    fn companion(&self, id: CompanionId) -> Result<Companion> {
        self.lock()
            .companions
            .get(&id)
            .cloned()
            .ok_or_else(|| StoreError::not_found("companion", id))
    }

    fn companion_by_name(&self, name: &str) -> Result<Option<Companion>> {
        let key = Companion::name_key(name);
        let inner = self.lock();
        Ok(inner
            .companions
            .values()
            .find(|c| Companion::name_key(&c.name) == key)
            .cloned())
    }

    fn list_companions(&self) -> Result<Vec<Companion>> {
        let mut companions: Vec<Companion> = self.lock().companions.values().cloned().collect();
        companions.sort_by_key(|c| (c.created_at, c.id));
        Ok(companions)
    }

    fn update_companion(&self, companion: &Companion) -> Result<()> {
        companion.validate()?;
        let mut inner = self.lock();
        inner.check_companion_exists(companion.id)?;
        inner.check_name_free(&companion.name, Some(companion.id))?;
        if let Some(stored) = inner.companions.get_mut(&companion.id) {
            *stored = Companion {
                created_at: stored.created_at,
                ..companion.clone()
            };
        }
        Ok(())
    }

    fn delete_companion(&self, id: CompanionId) -> Result<()> {
        let mut inner = self.lock();
        if inner.companions.remove(&id).is_none() {
            return Err(StoreError::not_found("companion", id));
        }
        inner.remove_companion_data(id);
        Ok(())
    }

    fn create_conversation(&self, conversation: &Conversation) -> Result<()> {
        let mut inner = self.lock();
        inner.check_companion_exists(conversation.companion_id)?;
        if inner.conversations.contains_key(&conversation.id) {
            return Err(StoreError::id_taken("conversation", conversation.id));
        }
        inner
            .conversations
            .insert(conversation.id, conversation.clone());
        Ok(())
    }

    fn conversation(&self, id: ConversationId) -> Result<Conversation> {
        let inner = self.lock();
        inner
            .conversations
            .get(&id)
            .cloned()
            .ok_or_else(|| StoreError::not_found("conversation", id))
    }

    fn list_conversations(&self, companion: CompanionId) -> Result<Vec<Conversation>> {
        let inner = self.lock();
        inner.check_companion_exists(companion)?;
        let mut conversations: Vec<Conversation> = inner
            .conversations
            .values()
            .filter(|c| c.companion_id == companion)
            .cloned()
            .collect();
        conversations.sort_by_key(|c| (c.created_at, c.id));
        Ok(conversations)
    }

    fn delete_conversation(&self, id: ConversationId) -> Result<()> {
        let mut inner = self.lock();
        if !inner.conversations.contains_key(&id) {
            return Err(StoreError::not_found("conversation", id));
        }
        inner.remove_conversation(id);
        Ok(())
    }

    fn append_messages(&self, messages: &[Message]) -> Result<()> {
        let mut inner = self.lock();
        // Check the whole batch first (in order, so the first bad message decides the error):
        // nothing is written unless every message can be.
        let mut batch_ids = BTreeSet::new();
        for message in messages {
            if !inner.conversations.contains_key(&message.conversation_id) {
                return Err(StoreError::not_found(
                    "conversation",
                    message.conversation_id,
                ));
            }
            if inner.message_ids.contains_key(&message.id) || !batch_ids.insert(message.id) {
                return Err(StoreError::id_taken("message", message.id));
            }
        }
        let inner = &mut *inner;
        for message in messages {
            let list = inner.messages.entry(message.conversation_id).or_default();
            let at = list.partition_point(|m| m.created_at <= message.created_at);
            list.insert(at, message.clone());
            inner
                .message_ids
                .insert(message.id, message.conversation_id);
            if let Some(conversation) = inner.conversations.get_mut(&message.conversation_id) {
                conversation.updated_at = conversation.updated_at.max(message.created_at);
            }
        }
        Ok(())
    }

    fn messages(&self, conversation: ConversationId, limit: Option<usize>) -> Result<Vec<Message>> {
        let inner = self.lock();
        let all = inner.conversation_messages(conversation)?;
        let skip = limit.map_or(0, |limit| all.len().saturating_sub(limit));
        Ok(all[skip..].to_vec())
    }

    fn message_count(&self, conversation: ConversationId) -> Result<usize> {
        Ok(self.lock().conversation_messages(conversation)?.len())
    }

    fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(self.lock().settings.get(key).cloned())
    }

    fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.lock()
            .settings
            .insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    fn delete_setting(&self, key: &str) -> Result<()> {
        self.lock().settings.remove(key);
        Ok(())
    }

    fn settings(&self) -> Result<Vec<(String, String)>> {
        Ok(self
            .lock()
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn messages_range(
        &self,
        conversation: ConversationId,
        start: usize,
        limit: usize,
    ) -> Result<Vec<Message>> {
        let inner = self.lock();
        let all = inner.conversation_messages(conversation)?;
        Ok(all.iter().skip(start).take(limit).cloned().collect())
    }

    fn insert_memory(&self, memory: &MemoryItem) -> Result<()> {
        memory.validate_new()?;
        let mut inner = self.lock();
        inner.check_companion_exists(memory.companion_id)?;
        if inner.memories.contains_key(&memory.id) {
            return Err(StoreError::id_taken("memory", memory.id));
        }
        inner.memories.insert(memory.id, memory.clone());
        Ok(())
    }

    fn update_memory(&self, memory: &MemoryItem) -> Result<()> {
        memory.validate()?;
        let mut inner = self.lock();
        let stored = inner
            .memories
            .get_mut(&memory.id)
            .ok_or_else(|| StoreError::not_found("memory", memory.id))?;
        if stored.companion_id != memory.companion_id {
            return Err(StoreError::other_companion(memory.id));
        }
        *stored = MemoryItem {
            created_at: stored.created_at,
            last_used_at: stored.last_used_at,
            superseded_by: stored.superseded_by,
            ..memory.clone()
        };
        Ok(())
    }

    fn supersede_memory(&self, old: MemoryId, new: &MemoryItem) -> Result<()> {
        new.validate_new()?;
        let mut inner = self.lock();
        let replaced = inner.memory(old)?;
        if replaced.companion_id != new.companion_id {
            return Err(StoreError::other_companion(new.id));
        }
        if let Some(by) = replaced.superseded_by {
            return Err(StoreError::already_superseded(old, by));
        }
        if inner.memories.contains_key(&new.id) {
            return Err(StoreError::id_taken("memory", new.id));
        }
        inner.memories.insert(new.id, new.clone());
        if let Some(replaced) = inner.memories.get_mut(&old) {
            replaced.superseded_by = Some(new.id);
        }
        Ok(())
    }

    fn memory(&self, id: MemoryId) -> Result<MemoryItem> {
        self.lock().memory(id).cloned()
    }

    fn list_memories(
        &self,
        companion: CompanionId,
        include_superseded: bool,
    ) -> Result<Vec<MemoryItem>> {
        let inner = self.lock();
        inner.check_companion_exists(companion)?;
        let mut memories: Vec<MemoryItem> = inner
            .memories
            .values()
            .filter(|m| m.companion_id == companion)
            .filter(|m| include_superseded || m.superseded_by.is_none())
            .cloned()
            .collect();
        memories.sort_by_key(|m| (m.created_at, m.id));
        Ok(memories)
    }

    fn delete_memories(&self, ids: &[MemoryId]) -> Result<usize> {
        let mut inner = self.lock();
        let links: BTreeMap<MemoryId, Option<MemoryId>> = inner
            .memories
            .values()
            .map(|m| (m.id, m.superseded_by))
            .collect();
        let plan = Forgetting::plan(&links, ids);
        for (id, successor) in &plan.relink {
            if let Some(memory) = inner.memories.get_mut(id) {
                memory.superseded_by = Some(*successor);
            }
        }
        inner.remove_memories(&plan.delete.iter().copied().collect());
        Ok(plan.delete.len())
    }

    fn record_memories_used(
        &self,
        reply: MessageId,
        memories: &[MemoryId],
        at: Timestamp,
    ) -> Result<()> {
        let mut inner = self.lock();
        let conversation = inner.check_message_exists(reply)?;
        let companion = inner
            .conversations
            .get(&conversation)
            .map(|c| c.companion_id)
            .ok_or_else(|| StoreError::not_found("conversation", conversation))?;
        let memories = first_occurrences(memories);
        for &id in &memories {
            if inner.memory(id)?.companion_id != companion {
                return Err(StoreError::other_companion(id));
            }
        }
        for id in &memories {
            if let Some(memory) = inner.memories.get_mut(id) {
                memory.last_used_at = Some(at);
            }
        }
        if memories.is_empty() {
            inner.memory_uses.remove(&reply);
        } else {
            inner.memory_uses.insert(reply, memories);
        }
        Ok(())
    }

    fn memories_used(&self, reply: MessageId) -> Result<Vec<MemoryId>> {
        let inner = self.lock();
        inner.check_message_exists(reply)?;
        Ok(inner.memory_uses.get(&reply).cloned().unwrap_or_default())
    }

    fn persona_state(&self, companion: CompanionId) -> Result<Option<PersonaState>> {
        let inner = self.lock();
        inner.check_companion_exists(companion)?;
        Ok(inner.personas.get(&companion).cloned())
    }

    fn save_persona_state(&self, state: &PersonaState, changes: &[PersonaChange]) -> Result<()> {
        state.validate_save(changes)?;
        let mut inner = self.lock();
        inner.check_companion_exists(state.companion_id)?;
        inner.personas.insert(state.companion_id, state.clone());
        let history = inner.persona_changes.entry(state.companion_id).or_default();
        for change in changes {
            let at = history.partition_point(|c| c.at <= change.at);
            history.insert(at, change.clone());
        }
        Ok(())
    }

    fn persona_history(
        &self,
        companion: CompanionId,
        limit: Option<usize>,
    ) -> Result<Vec<PersonaChange>> {
        let inner = self.lock();
        inner.check_companion_exists(companion)?;
        let all = inner
            .persona_changes
            .get(&companion)
            .map_or(&[][..], Vec::as_slice);
        let skip = limit.map_or(0, |limit| all.len().saturating_sub(limit));
        Ok(all[skip..].to_vec())
    }

    fn latest_summary(&self, conversation: ConversationId) -> Result<Option<ConversationSummary>> {
        let inner = self.lock();
        inner.conversation_messages(conversation)?; // NotFound for a missing conversation
        Ok(inner
            .summaries
            .get(&conversation)
            // `max_by_key` returns the last of equal maxima: the one saved last.
            .and_then(|list| list.iter().max_by_key(|s| s.created_at))
            .cloned())
    }

    fn save_summary(&self, summary: &ConversationSummary) -> Result<()> {
        summary.validate()?;
        let mut inner = self.lock();
        inner.conversation_messages(summary.conversation_id)?;
        inner
            .summaries
            .entry(summary.conversation_id)
            .or_default()
            .push(summary.clone());
        Ok(())
    }

    fn put_asset(&self, asset: &CompanionAsset) -> Result<()> {
        asset.validate()?;
        let mut inner = self.lock();
        inner.check_companion_exists(asset.companion_id)?;
        inner
            .assets
            .insert((asset.companion_id, asset.name.clone()), asset.clone());
        Ok(())
    }

    fn assets(&self, companion: CompanionId) -> Result<Vec<CompanionAsset>> {
        let inner = self.lock();
        inner.check_companion_exists(companion)?;
        Ok(inner
            .assets
            .range((companion, String::new())..)
            .take_while(|((owner, _), _)| *owner == companion)
            .map(|(_, asset)| asset.clone())
            .collect())
    }

    fn delete_asset(&self, companion: CompanionId, name: &str) -> Result<()> {
        let mut inner = self.lock();
        inner.check_companion_exists(companion)?;
        inner.assets.remove(&(companion, name.to_owned()));
        Ok(())
    }

    fn add_journal_entries(&self, entries: &[JournalEntry]) -> Result<()> {
        for entry in entries {
            entry.validate()?;
        }
        let mut inner = self.lock();
        let mut new_ids = BTreeSet::new();
        for entry in entries {
            if inner.journal_ids.contains(&entry.id) || !new_ids.insert(entry.id) {
                return Err(StoreError::id_taken("journal entry", entry.id));
            }
        }
        for entry in entries {
            // After every entry with the same or an earlier time: equal times keep their order.
            let at = inner.journal.partition_point(|e| e.at <= entry.at);
            inner.journal.insert(at, entry.clone());
            inner.journal_ids.insert(entry.id);
        }
        Ok(())
    }

    fn put_journal_entries(&self, entries: &[JournalEntry]) -> Result<()> {
        for entry in entries {
            entry.validate()?;
        }
        let mut inner = self.lock();
        for entry in entries {
            let current = inner
                .journal_ids
                .contains(&entry.id)
                .then(|| inner.journal.iter().position(|e| e.id == entry.id))
                .flatten();
            match current {
                Some(i) if inner.journal[i].at == entry.at => inner.journal[i] = entry.clone(),
                Some(i) => {
                    inner.journal.remove(i);
                    let at = inner.journal.partition_point(|e| e.at <= entry.at);
                    inner.journal.insert(at, entry.clone());
                }
                None => {
                    let at = inner.journal.partition_point(|e| e.at <= entry.at);
                    inner.journal.insert(at, entry.clone());
                    inner.journal_ids.insert(entry.id);
                }
            }
        }
        Ok(())
    }

    fn journal(&self, from: Timestamp, to: Timestamp) -> Result<Vec<JournalEntry>> {
        let inner = self.lock();
        let start = inner.journal.partition_point(|e| e.at < from);
        let end = inner.journal.partition_point(|e| e.at < to).max(start);
        Ok(inner.journal[start..end].to_vec())
    }

    fn wipe(&self) -> Result<()> {
        *self.lock() = Inner::default();
        Ok(())
    }

    fn put_memories(&self, memories: &[MemoryItem]) -> Result<()> {
        for memory in memories {
            memory.validate()?;
        }
        let mut inner = self.lock();
        for memory in memories {
            inner.check_companion_exists(memory.companion_id)?;
            if let Some(existing) = inner.memories.get(&memory.id)
                && existing.companion_id != memory.companion_id
            {
                return Err(StoreError::other_companion(memory.id));
            }
        }
        // Check the links against the memories as they will be after the batch.
        let owner = |id: MemoryId| {
            memories
                .iter()
                .rev()
                .find(|m| m.id == id)
                .map(|m| m.companion_id)
                .or_else(|| inner.memories.get(&id).map(|m| m.companion_id))
        };
        for memory in memories {
            if let Some(next) = memory.superseded_by {
                if next == memory.id {
                    return Err(StoreError::Invalid(format!(
                        "memory {next} cannot supersede itself"
                    )));
                }
                match owner(next) {
                    None => return Err(StoreError::not_found("memory", next)),
                    Some(companion) if companion != memory.companion_id => {
                        return Err(StoreError::other_companion(next));
                    }
                    Some(_) => {}
                }
            }
        }
        for memory in memories {
            inner.memories.insert(memory.id, memory.clone());
        }
        Ok(())
    }

    fn sync_value(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.lock().sync.get(key).cloned())
    }

    fn set_sync_values(&self, values: &[(String, Option<Vec<u8>>)]) -> Result<()> {
        let mut inner = self.lock();
        for (key, value) in values {
            match value {
                Some(value) => inner.sync.insert(key.clone(), value.clone()),
                None => inner.sync.remove(key),
            };
        }
        Ok(())
    }

    fn sync_keys(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .lock()
            .sync
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }
}
