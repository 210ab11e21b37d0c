//! Long-term memory, the evolving persona and the user's privacy controls, as the shells see
//! them: list, search, edit, pin and forget memories; why a reply said what it said; the
//! persona's traits, locks and history; export, restore and delete everything.

use nexus_common::{CompanionId, MemoryId, MessageId};
use nexus_companion::evolve;
use nexus_companion::memory::{Memories, MemorySnapshot};
use nexus_store::{MemoryItem, PersonaChange, PersonaState, StoreError};

use crate::archive::{self, RestoreReport};
use crate::{AppError, Companion, Message, Nexus, Result, Role};

/// Why a reply said what it said: the memories that were in its prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Why {
    /// The reply.
    pub reply: Message,
    /// Each memory it used, in prompt order; `None` if it was forgotten since.
    pub memories: Vec<(MemoryId, Option<MemoryItem>)>,
}

impl Nexus {
    pub(crate) fn snapshot(&self, companion: CompanionId) -> Result<Option<MemorySnapshot>> {
        let Some(embedder) = self.embedder.as_deref() else {
            return Ok(None);
        };
        let mut cache = self
            .memory_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((id, snapshot)) = cache.as_ref()
            && *id == companion
        {
            return Ok(Some(snapshot.clone()));
        }
        let snapshot = Memories::new(
            &*self.store,
            embedder,
            &*self.clock,
            self.memory_settings.clone(),
        )
        .snapshot(companion)?;
        *cache = Some((companion, snapshot.clone()));
        Ok(Some(snapshot))
    }

    /// Drops the cached memory index (after memories changed).
    pub(crate) fn invalidate_memories(&self) {
        if let Ok(mut cache) = self.memory_cache.lock() {
            *cache = None;
        }
    }

    fn memories_api(&self) -> Result<Memories<'_>> {
        let embedder = self.embedder.as_deref().ok_or(AppError::NoEmbedder)?;
        Ok(Memories::new(
            &*self.store,
            embedder,
            &*self.clock,
            self.memory_settings.clone(),
        ))
    }

    /// A companion's memories, newest first; with `history`, superseded versions too.
    pub fn memories(&self, companion: &Companion, history: bool) -> Result<Vec<MemoryItem>> {
        let mut all = self.store.list_memories(companion.id, history)?;
        all.sort_by_key(|m| std::cmp::Reverse(m.created_at));
        Ok(all)
    }

    /// Memories matching `text` (by meaning, and literally), best first. Needs the embedder.
    pub fn search_memories(
        &self,
        companion: &Companion,
        text: &str,
        limit: usize,
    ) -> Result<Vec<(MemoryItem, f32)>> {
        if text.trim().is_empty() {
            return Err(invalid("the search text is empty"));
        }
        Ok(self.memories_api()?.search(companion.id, text, limit)?)
    }

    /// The memory whose id is `key`, or ends or starts with `key` (at least 4 characters, as
    /// long as only one memory matches). Superseded versions can be found too.
    pub fn find_memory(&self, companion: &Companion, key: &str) -> Result<MemoryItem> {
        let key = key.trim().to_lowercase();
        if let Ok(id) = key.parse::<MemoryId>() {
            return match self.store.memory(id) {
                Ok(m) if m.companion_id == companion.id => Ok(m),
                Ok(_) | Err(StoreError::NotFound { .. }) => Err(AppError::UnknownMemory(key)),
                Err(e) => Err(e.into()),
            };
        }
        if key.chars().count() < 4 {
            return Err(invalid("give at least 4 characters of the memory id"));
        }
        let mut hits: Vec<MemoryItem> = self
            .store
            .list_memories(companion.id, true)?
            .into_iter()
            .filter(|m| {
                let id = m.id.to_string();
                id.ends_with(&key) || id.starts_with(&key)
            })
            .collect();
        match hits.len() {
            0 => Err(AppError::UnknownMemory(key)),
            1 => Ok(hits.remove(0)),
            n => Err(invalid(&format!(
                "{n} memories match {key:?}; give more characters of the id"
            ))),
        }
    }

    /// Replaces a memory's text (its meaning is embedded again when the embedder is loaded).
    pub fn edit_memory(&self, memory: &MemoryItem, text: &str) -> Result<MemoryItem> {
        let text = text.trim();
        if text.is_empty() {
            return Err(invalid("the new text is empty"));
        }
        let mut m = memory.clone();
        m.text = text.to_owned();
        if let Some(e) = self.embedder.as_deref() {
            m.embedding = e.embed(&[text])?.pop().unwrap_or_default();
        }
        m.updated_at = self.clock.now().max(m.updated_at);
        self.store.update_memory(&m)?;
        self.invalidate_memories();
        Ok(m)
    }

    /// Pins (always recalled, never superseded) or unpins a memory.
    pub fn pin_memory(&self, memory: &MemoryItem, pinned: bool) -> Result<MemoryItem> {
        let mut m = memory.clone();
        m.pinned = pinned;
        m.updated_at = self.clock.now().max(m.updated_at);
        self.store.update_memory(&m)?;
        self.invalidate_memories();
        Ok(m)
    }

    /// Forgets a memory for good, with the older versions it superseded. Returns how many
    /// stored items were deleted.
    pub fn forget_memory(&self, memory: &MemoryItem) -> Result<usize> {
        let n = self.store.delete_memories(&[memory.id])?;
        self.invalidate_memories();
        Ok(n)
    }

    /// Forgets everything about a subject (by name or meaning). Needs the embedder.
    pub fn forget_about(&self, companion: &Companion, subject: &str) -> Result<Vec<MemoryItem>> {
        if subject.trim().is_empty() {
            return Err(invalid("say what to forget about"));
        }
        let gone = self.memories_api()?.forget_about(companion.id, subject)?;
        self.invalidate_memories();
        Ok(gone)
    }

    /// The last reply of the companion in a conversation.
    pub fn last_reply(
        &self,
        conversation: nexus_common::ConversationId,
    ) -> Result<Option<Message>> {
        Ok(self
            .store
            .messages(conversation, Some(8))?
            .into_iter()
            .rev()
            .find(|m| m.role == Role::Assistant))
    }

    /// The memories that informed a reply.
    pub fn why(&self, reply: &Message) -> Result<Why> {
        let ids = self.store.memories_used(reply.id)?;
        let mut memories = Vec::with_capacity(ids.len());
        for id in ids {
            match self.store.memory(id) {
                Ok(m) => memories.push((id, Some(m))),
                Err(StoreError::NotFound { .. }) => memories.push((id, None)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Why {
            reply: reply.clone(),
            memories,
        })
    }

    /// The memories that informed the reply with this id.
    pub fn why_message(
        &self,
        conversation: nexus_common::ConversationId,
        reply: MessageId,
    ) -> Result<Why> {
        let message = self
            .store
            .messages(conversation, None)?
            .into_iter()
            .find(|m| m.id == reply)
            .ok_or_else(|| AppError::Store(StoreError::not_found("message", reply)))?;
        self.why(&message)
    }

    // ---- persona ----

    /// A companion's persona state: traits, relationship, locks.
    pub fn persona_state(&self, companion: &Companion) -> Result<PersonaState> {
        Ok(self.engine().persona_state(companion)?)
    }

    /// Locks a trait (it stops evolving) or unlocks it. Fails for unknown trait names.
    pub fn lock_trait(
        &self,
        companion: &Companion,
        name: &str,
        locked: bool,
    ) -> Result<PersonaState> {
        let name = name.trim().to_lowercase();
        if !evolve::TRAITS.contains(&name.as_str()) {
            return Err(invalid(&format!(
                "no trait {name:?} (traits: {})",
                evolve::TRAITS.join(", ")
            )));
        }
        let mut state = self.persona_state(companion)?;
        if let Some(change) = evolve::set_lock(&mut state, &name, locked, self.clock.now()) {
            self.store.save_persona_state(&state, &[change])?;
        }
        Ok(state)
    }

    /// The newest `limit` persona changes (all with `None`), oldest first.
    pub fn persona_history(
        &self,
        companion: &Companion,
        limit: Option<usize>,
    ) -> Result<Vec<PersonaChange>> {
        Ok(self.store.persona_history(companion.id, limit)?)
    }

    // ---- privacy ----

    /// Everything the user owns as a privacy archive (JSON, `docs/ARCHIVE.md`).
    pub fn export_archive(&self) -> Result<Vec<u8>> {
        let archive = archive::export(&*self.store, self.clock.now())?;
        serde_json::to_vec_pretty(&archive)
            .map_err(|e| invalid(&format!("cannot write the archive: {e}")))
    }

    /// Restores a privacy archive (companions that exist already are skipped).
    pub fn import_archive(&self, bytes: &[u8]) -> Result<RestoreReport> {
        let archive = archive::parse(bytes)?;
        let report = archive::restore(&*self.store, &archive)?;
        self.invalidate_memories();
        Ok(report)
    }

    /// Deletes everything the user owns from the store, overwriting freed space (see
    /// [`nexus_store::Store::wipe`]). Shells delete their files afterwards.
    pub fn forget_everything(&self) -> Result<()> {
        self.store.wipe()?;
        self.invalidate_memories();
        Ok(())
    }
}

fn invalid(message: &str) -> AppError {
    AppError::Invalid(message.to_owned())
}
