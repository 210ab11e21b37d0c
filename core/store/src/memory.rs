//! [`MemoryStore`]: the in-memory [`Store`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use nexus_common::{CompanionId, ConversationId, MessageId};

use crate::{Companion, Conversation, Message, Result, Store, StoreError};

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
    message_ids: BTreeSet<MessageId>,
    settings: BTreeMap<String, String>,
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

    fn remove_conversation(&mut self, id: ConversationId) {
        self.conversations.remove(&id);
        for message in self.messages.remove(&id).unwrap_or_default() {
            self.message_ids.remove(&message.id);
        }
    }
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
        let conversations: Vec<ConversationId> = inner
            .conversations
            .values()
            .filter(|c| c.companion_id == id)
            .map(|c| c.id)
            .collect();
        for conversation in conversations {
            inner.remove_conversation(conversation);
        }
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
            if inner.message_ids.contains(&message.id) || !batch_ids.insert(message.id) {
                return Err(StoreError::id_taken("message", message.id));
            }
        }
        let inner = &mut *inner;
        for message in messages {
            let list = inner.messages.entry(message.conversation_id).or_default();
            let at = list.partition_point(|m| m.created_at <= message.created_at);
            list.insert(at, message.clone());
            inner.message_ids.insert(message.id);
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
}
