use nexus_common::{CompanionId, ConversationId, MemoryId, MessageId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::{Result, StoreError};

/// A companion: the persona the user talks to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Companion {
    /// Stable id.
    pub id: CompanionId,
    /// Display name, unique (case-insensitive) among the user's companions.
    pub name: String,
    /// Who the companion is (background, role).
    pub description: String,
    /// Character traits in words.
    pub personality: String,
    /// How the companion talks.
    pub speaking_style: String,
    /// First message of a new conversation.
    pub greeting: String,
    /// The companion's character card (the `data` object of a SillyTavern V2/V3 card, as
    /// JSON): scenario, example messages, system prompt, lorebook, tags, creator notes,
    /// extensions and any unknown fields, so that an imported card exports unchanged. The fields
    /// above are authoritative for what they cover. `None` for companions not made from a card.
    #[serde(default)]
    pub card: Option<serde_json::Value>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change of any field.
    pub updated_at: Timestamp,
}

impl Companion {
    /// The key under which names are unique: two names with the same key are "the same name".
    /// Comparison ignores case (full Unicode lower-casing, not only ASCII); every store uses
    /// this function so they agree on what a conflict is.
    pub fn name_key(name: &str) -> String {
        name.to_lowercase()
    }

    /// Checks the rules every store enforces: a non-blank name without control characters,
    /// at most 100 characters.
    pub fn validate(&self) -> Result<()> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err(StoreError::Invalid("a companion needs a name".into()));
        }
        if name.chars().count() > 100 {
            return Err(StoreError::Invalid(
                "a companion's name has at most 100 characters".into(),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(StoreError::Invalid(
                "a companion's name cannot contain control characters".into(),
            ));
        }
        Ok(())
    }
}

/// A conversation between the user and one companion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// Stable id.
    pub id: ConversationId,
    /// The companion the user talks to.
    pub companion_id: CompanionId,
    /// Optional title.
    pub title: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Time of the newest message (or creation).
    pub updated_at: Timestamp,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions to the model (persona, context).
    System,
    /// The person using Nexus.
    User,
    /// The companion.
    Assistant,
}

impl Role {
    /// The lower-case name used in storage and chat templates.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    /// Parses the lower-case name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Stable id.
    pub id: MessageId,
    /// The conversation it belongs to.
    pub conversation_id: ConversationId,
    /// Who wrote it.
    pub role: Role,
    /// The text.
    pub text: String,
    /// When it was written (for a reply: when it was complete).
    pub created_at: Timestamp,
    /// Number of tokens of `text` under the model that was used (0 if unknown).
    pub token_count: u32,
}

// ---------------------------------------------------------------------------------------------
// Long-term memory, evolving personas, rolling summaries (schema version 2).
// ---------------------------------------------------------------------------------------------

/// What a memory is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryKind {
    /// Something the user likes, dislikes or prefers.
    Preference,
    /// A person in the user's life (name, relation).
    Person,
    /// Something that happened.
    Event,
    /// Something the user intends to do.
    Plan,
    /// How the user feels about something.
    Feeling,
    /// A fact about the user (job, home, pet, ...).
    Fact,
    /// About the relationship between the user and the companion.
    Relationship,
}

impl MemoryKind {
    /// Every kind, in a stable order.
    pub const ALL: [MemoryKind; 7] = [
        MemoryKind::Preference,
        MemoryKind::Person,
        MemoryKind::Event,
        MemoryKind::Plan,
        MemoryKind::Feeling,
        MemoryKind::Fact,
        MemoryKind::Relationship,
    ];

    /// The snake_case name used in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryKind::Preference => "preference",
            MemoryKind::Person => "person",
            MemoryKind::Event => "event",
            MemoryKind::Plan => "plan",
            MemoryKind::Feeling => "feeling",
            MemoryKind::Fact => "fact",
            MemoryKind::Relationship => "relationship",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A durable fact the companion remembers about the user or the relationship.
///
/// Memories are never edited in place by the companion: a contradicting fact creates a new
/// memory and marks the old one `superseded_by` it, so the history stays visible. The user can
/// edit (same id, `updated_at` bumped), pin and delete ("forget") memories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryItem {
    /// Stable id.
    pub id: MemoryId,
    /// Whose memory it is.
    pub companion_id: CompanionId,
    /// The fact in one sentence, e.g. "The user's sister is called Anna."
    pub text: String,
    /// What it is about.
    pub kind: MemoryKind,
    /// A normalized key of what the fact is about (e.g. `sister.name`, `likes:coffee`):
    /// facts with the same subject can supersede each other. Empty if unknown.
    pub subject: String,
    /// 0 (trivia) to 1 (life-defining).
    pub importance: f32,
    /// Pinned memories are always considered and never superseded automatically.
    pub pinned: bool,
    /// Sentence embedding of `text` (unit length; empty if not computed).
    pub embedding: Vec<f32>,
    /// The messages the fact was learned from.
    pub source_message_ids: Vec<MessageId>,
    /// When the fact was learned.
    pub created_at: Timestamp,
    /// Last change (edit, pin).
    pub updated_at: Timestamp,
    /// Last time it informed a reply.
    pub last_used_at: Option<Timestamp>,
    /// The newer memory that replaced this one, if any.
    pub superseded_by: Option<MemoryId>,
}

/// The persona's evolving state: trait scores and the relationship.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonaState {
    /// Whose state.
    pub companion_id: CompanionId,
    /// Trait name (e.g. the Big Five: `openness`, `conscientiousness`, `extraversion`,
    /// `agreeableness`, `neuroticism`) to score in [0, 1].
    pub traits: std::collections::BTreeMap<String, f32>,
    /// Traits the user locked: they never change automatically.
    pub locked: std::collections::BTreeSet<String>,
    /// How well the companion knows the user, in [0, 1].
    pub familiarity: f32,
    /// How much the user confides in the companion, in [0, 1].
    pub trust: f32,
    /// Exchanges counted so far.
    pub exchanges: u64,
    /// Last change.
    pub updated_at: Timestamp,
}

/// One recorded change of the persona state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonaChange {
    /// Whose persona.
    pub companion_id: CompanionId,
    /// What changed: a trait name, `familiarity`, `trust`, or `lock:<trait>` / `unlock:<trait>`.
    pub field: String,
    /// Value before.
    pub old: f32,
    /// Value after.
    pub new: f32,
    /// Why (e.g. "user shared something personal", "edited by the user").
    pub reason: String,
    /// When.
    pub at: Timestamp,
}

/// A rolling summary of the beginning of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationSummary {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Summary text.
    pub text: String,
    /// Number of messages (from the start of the conversation, chronological) it covers.
    pub covered_messages: usize,
    /// Tokens of `text`.
    pub token_count: u32,
    /// When it was written.
    pub created_at: Timestamp,
}

/// A file attached to a companion: its avatar image, or an asset of an imported character card
/// (CHARX), kept so that the card exports with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanionAsset {
    /// Whose asset.
    pub companion_id: CompanionId,
    /// Unique name within the companion, e.g. `avatar.png` or `assets/icon/main.png`.
    pub name: String,
    /// Media type, e.g. `image/png`.
    pub media_type: String,
    /// The bytes (at most 20 MB).
    pub bytes: Vec<u8>,
}
