//! # nexus-store
//!
//! The storage *ports* of Nexus: the entities the core persists and the [`Store`] trait that
//! every storage backend implements, plus [`MemoryStore`] (an in-memory implementation for
//! tests and the browser) and [`conformance`], the one test suite that every implementation
//! must pass (`nexus_store::conformance_tests!`).
//!
//! Must not depend on: any storage engine (SQLite lives in `nexus-store-sqlite`), any I/O.
//! Builds for `wasm32-unknown-unknown`.

mod entities;
mod forgetting;
mod memory;

pub mod conformance;

pub use entities::*;
pub use forgetting::Forgetting;
pub use memory::MemoryStore;
use nexus_common::{CompanionId, ConversationId, MemoryId, MessageId, Timestamp};

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The entity does not exist: the id that was looked up, updated or deleted, or the one an
    /// entity refers to (the companion of a new conversation, the conversation of a message).
    #[error("{entity} not found: {key}")]
    NotFound {
        /// Kind of entity ("companion", "conversation", ...).
        entity: &'static str,
        /// The id or name that was looked up.
        key: String,
    },
    /// A uniqueness rule would be broken (two companions with one name, an id used twice).
    #[error("{0}")]
    Conflict(String),
    /// The input breaks a rule of the data model (for example a companion without a name).
    #[error("invalid data: {0}")]
    Invalid(String),
    /// The stored data cannot be read: the database file is damaged or not a Nexus store.
    #[error("the store is corrupt or unreadable: {0}")]
    Corrupt(String),
    /// The store was written by a newer version of Nexus.
    #[error(
        "the store has schema version {found}, newer than this build supports ({supported}); update Nexus"
    )]
    TooNew {
        /// Version found in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// Any other failure of the storage engine (I/O, locking, ...).
    #[error("storage error: {0}")]
    Backend(String),
}

impl StoreError {
    /// [`StoreError::NotFound`] for the `entity` with this key.
    pub fn not_found(entity: &'static str, key: impl ToString) -> Self {
        Self::NotFound {
            entity,
            key: key.to_string(),
        }
    }

    /// The [`StoreError::Conflict`] of a companion name that is taken (ignoring case).
    pub fn name_taken(name: &str) -> Self {
        Self::Conflict(format!("a companion named \"{name}\" already exists"))
    }

    /// The [`StoreError::Conflict`] of an id that is already used by an `entity`.
    pub fn id_taken(entity: &'static str, id: impl std::fmt::Display) -> Self {
        Self::Conflict(format!("a {entity} with id {id} already exists"))
    }

    /// The [`StoreError::Conflict`] of superseding a memory that is already superseded.
    pub fn already_superseded(memory: MemoryId, by: MemoryId) -> Self {
        Self::Conflict(format!(
            "memory {memory} is already superseded by memory {by}; supersede that one instead"
        ))
    }

    /// The [`StoreError::Invalid`] of a memory used with another companion than its own (moved
    /// by an update, superseded by another companion's memory, informing its reply).
    pub fn other_companion(memory: MemoryId) -> Self {
        Self::Invalid(format!(
            "memory {memory} belongs to another companion than the one it is used with"
        ))
    }
}

/// Result alias of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The persistence port of the core. Every write is atomic: it either happens entirely or not at
/// all, also when the process dies in the middle of it.
///
/// Names of companions are unique, compared case-insensitively ([`Companion::name_key`]).
/// Creating an entity whose id exists is a [`StoreError::Conflict`]; any method given the id of
/// a missing entity (including the parent ids of `list_*`, `messages` and `message_count`)
/// fails with [`StoreError::NotFound`], except [`Store::delete_memories`], which ignores them.
/// The rules on the input alone ([`Companion::validate`], [`MemoryItem::validate`], ...) are
/// checked before anything is looked up. Every implementation must pass [`conformance`].
pub trait Store: Send + Sync {
    // --- companions ---
    /// Inserts a new companion after [`Companion::validate`]. Fails with
    /// [`StoreError::Conflict`] if the name is taken.
    fn create_companion(&self, companion: &Companion) -> Result<()>;
    /// The companion with this id.
    fn companion(&self, id: CompanionId) -> Result<Companion>;
    /// The companion with this name (case-insensitive), if any.
    fn companion_by_name(&self, name: &str) -> Result<Option<Companion>>;
    /// All companions, oldest first (by `created_at`, then id).
    fn list_companions(&self) -> Result<Vec<Companion>>;
    /// Replaces a companion's fields (matched by id) after [`Companion::validate`]; `created_at`
    /// keeps its stored value. Fails with [`StoreError::Conflict`] if another companion has the
    /// new name.
    fn update_companion(&self, companion: &Companion) -> Result<()>;
    /// Deletes a companion with everything that belongs to it: conversations, messages,
    /// summaries, memories and their reply records, persona state and history, assets.
    fn delete_companion(&self, id: CompanionId) -> Result<()>;

    // --- conversations ---
    /// Inserts a new conversation; its companion must exist.
    fn create_conversation(&self, conversation: &Conversation) -> Result<()>;
    /// The conversation with this id.
    fn conversation(&self, id: ConversationId) -> Result<Conversation>;
    /// The conversations of a companion, oldest first (by `created_at`, then id).
    fn list_conversations(&self, companion: CompanionId) -> Result<Vec<Conversation>>;
    /// Deletes a conversation with its messages, their memory records and its summaries.
    fn delete_conversation(&self, id: ConversationId) -> Result<()>;

    // --- messages ---
    /// Appends messages (typically one exchange: the user's turn and the reply) atomically and
    /// bumps each conversation's `updated_at` to its newest appended message's time (it never
    /// moves backwards). If any message's conversation is missing or any id exists, nothing is
    /// written.
    fn append_messages(&self, messages: &[Message]) -> Result<()>;
    /// The last `limit` messages of a conversation (all if `None`), in chronological order:
    /// by `created_at`, messages with equal times in the order they were appended.
    fn messages(&self, conversation: ConversationId, limit: Option<usize>) -> Result<Vec<Message>>;
    /// Number of messages in a conversation.
    fn message_count(&self, conversation: ConversationId) -> Result<usize>;

    // --- settings ---
    /// A setting's value.
    fn setting(&self, key: &str) -> Result<Option<String>>;
    /// Sets (or replaces) a setting.
    fn set_setting(&self, key: &str, value: &str) -> Result<()>;
    /// Removes a setting; removing a missing key is not an error.
    fn delete_setting(&self, key: &str) -> Result<()>;
    /// All settings, sorted by key.
    fn settings(&self) -> Result<Vec<(String, String)>>;

    /// Messages of a conversation by chronological position (the order of
    /// [`Store::messages`]): `limit` messages starting at the `start`-th (0-based); fewer, or
    /// none, past the end. Used to summarize old parts of long conversations.
    fn messages_range(
        &self,
        conversation: ConversationId,
        start: usize,
        limit: usize,
    ) -> Result<Vec<Message>>;

    // --- long-term memory ---
    /// Inserts a memory after [`MemoryItem::validate_new`] (it cannot be superseded already);
    /// its companion must exist. Its `source_message_ids` are kept as given: they may name
    /// messages that were deleted since.
    fn insert_memory(&self, memory: &MemoryItem) -> Result<()>;
    /// Replaces what the user can edit of a memory (matched by id) after
    /// [`MemoryItem::validate`]: text, kind, subject, importance, pinned, embedding, sources
    /// and `updated_at`. `created_at`, `last_used_at` and `superseded_by` keep their stored
    /// values (they are managed by the store: an edit made from a stale copy cannot undo a
    /// supersession or a use). Moving a memory to another companion is [`StoreError::Invalid`].
    fn update_memory(&self, memory: &MemoryItem) -> Result<()>;
    /// Inserts `new` (as [`Store::insert_memory`]) and marks `old` as superseded by it,
    /// atomically. `old` must exist ([`StoreError::NotFound`]), belong to the same companion
    /// ([`StoreError::Invalid`]) and be current: a memory that is already superseded is a
    /// [`StoreError::Conflict`], so the versions of a fact always form one chain.
    fn supersede_memory(&self, old: MemoryId, new: &MemoryItem) -> Result<()>;
    /// The memory with this id.
    fn memory(&self, id: MemoryId) -> Result<MemoryItem>;
    /// A companion's memories, oldest first (by `created_at`, then id); superseded ones only if
    /// `include_superseded`.
    fn list_memories(
        &self,
        companion: CompanionId,
        include_superseded: bool,
    ) -> Result<Vec<MemoryItem>>;
    /// Deletes memories for good (forgetting) together with their reply records, and repairs
    /// the history of superseded versions as [`Forgetting`] describes: forgetting the current
    /// version of a fact also deletes the older versions it superseded; forgetting an older
    /// version links the version before it to the one after it. Nothing is ever brought back
    /// as current. Missing ids are ignored. Returns how many memories were deleted (older
    /// versions included).
    fn delete_memories(&self, ids: &[MemoryId]) -> Result<usize>;
    /// Records which memories informed a reply, replacing an earlier record of that reply
    /// (repeated ids count once, at their first position; an empty list clears the record),
    /// and sets their `last_used_at` to `at`. The reply and the memories must exist
    /// ([`StoreError::NotFound`]) and the memories must belong to the companion of the reply's
    /// conversation ([`StoreError::Invalid`]).
    fn record_memories_used(
        &self,
        reply: MessageId,
        memories: &[MemoryId],
        at: Timestamp,
    ) -> Result<()>;
    /// The memories recorded for a reply, in the order given (without the ones deleted since);
    /// empty if none were recorded.
    fn memories_used(&self, reply: MessageId) -> Result<Vec<MemoryId>>;

    // --- persona evolution ---
    /// The persona state of a companion, if one was saved.
    fn persona_state(&self, companion: CompanionId) -> Result<Option<PersonaState>>;
    /// Saves the state (after [`PersonaState::validate`]) and appends the changes (after
    /// [`PersonaChange::validate`]; each must belong to the state's companion, else
    /// [`StoreError::Invalid`]) to the history, atomically.
    fn save_persona_state(&self, state: &PersonaState, changes: &[PersonaChange]) -> Result<()>;
    /// The newest `limit` changes (all if `None`), in chronological order: by `at`, changes
    /// with equal times in the order they were saved.
    fn persona_history(
        &self,
        companion: CompanionId,
        limit: Option<usize>,
    ) -> Result<Vec<PersonaChange>>;

    // --- rolling summaries ---
    /// The newest summary of a conversation: the greatest `created_at`, of equal times the one
    /// saved last.
    fn latest_summary(&self, conversation: ConversationId) -> Result<Option<ConversationSummary>>;
    /// Stores a summary (after [`ConversationSummary::validate`]); its conversation must exist.
    /// Older summaries are kept until the conversation is deleted.
    fn save_summary(&self, summary: &ConversationSummary) -> Result<()>;

    // --- companion assets ---
    /// Stores an asset (after [`CompanionAsset::validate`]), replacing the companion's asset
    /// with the same name (names are case-sensitive); its companion must exist.
    fn put_asset(&self, asset: &CompanionAsset) -> Result<()>;
    /// A companion's assets, sorted by name (byte order).
    fn assets(&self, companion: CompanionId) -> Result<Vec<CompanionAsset>>;
    /// Deletes one asset; a missing asset is not an error, a missing companion is.
    fn delete_asset(&self, companion: CompanionId, name: &str) -> Result<()>;

    // --- emotion journal ---
    /// Appends journal entries (typically a reading and the fused state it led to) atomically,
    /// after [`JournalEntry::validate`]. An id that exists is a [`StoreError::Conflict`] and
    /// nothing is written. The conversation and message links are kept as given (they are not
    /// checked: readings may be recorded for messages deleted since, or for none).
    fn add_journal_entries(&self, entries: &[JournalEntry]) -> Result<()>;
    /// The entries with `from <= at < to`, in chronological order: by `at`, entries with equal
    /// times in the order they were added.
    fn journal(&self, from: Timestamp, to: Timestamp) -> Result<Vec<JournalEntry>>;

    // --- privacy ---
    /// Deletes everything: all companions with everything that belongs to them, all
    /// settings and the whole emotion journal. The store stays usable. A persistent store must leave no user text behind in
    /// its files (free pages, journals).
    fn wipe(&self) -> Result<()>;

    // --- replication (nexus-sync) ---
    /// Writes memories exactly as given, every field included (`created_at`, `last_used_at`,
    /// `superseded_by`): inserts the ones whose id is new and replaces the others, atomically.
    /// This is how replicated memories arrive from another device, whose store already applied
    /// the rules of [`Store::supersede_memory`] and [`Store::delete_memories`].
    ///
    /// Each memory must pass [`MemoryItem::validate`] and its companion must exist
    /// ([`StoreError::NotFound`]); an existing memory cannot move to another companion
    /// ([`StoreError::Invalid`]), and after the batch every `superseded_by` must name an existing
    /// memory ([`StoreError::NotFound`]) other than itself, of the same companion
    /// ([`StoreError::Invalid`]). A memory may name one that comes later in the same batch. On
    /// any failure nothing is written.
    fn put_memories(&self, memories: &[MemoryItem]) -> Result<()>;
    /// Writes journal entries exactly as given, by id: inserts the ones whose id is new and
    /// replaces every field of the others, atomically, after [`JournalEntry::validate`] (on any
    /// failure nothing is written). A replaced entry keeps its place among entries with the
    /// same time. This is how replicated entries arrive from another device; writing the same
    /// entry twice changes nothing.
    fn put_journal_entries(&self, entries: &[JournalEntry]) -> Result<()>;
    /// A value of the sync engine's local state (documents, cursors, queued changes), if set.
    /// This state holds user data (the documents): [`Store::wipe`] deletes it too.
    fn sync_value(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Sets (`Some`) or deletes (`None`) sync state values, atomically.
    fn set_sync_values(&self, values: &[(String, Option<Vec<u8>>)]) -> Result<()>;
    /// The keys of the sync state that start with `prefix`, sorted (byte order).
    fn sync_keys(&self, prefix: &str) -> Result<Vec<String>>;
}
