use nexus_common::{CompanionId, ConversationId, JournalId, MemoryId, MessageId, Timestamp};
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

// ---------------------------------------------------------------------------------------------
// Rules every store enforces on the schema-version-2 entities (like `Companion::validate`).
// ---------------------------------------------------------------------------------------------

/// Fails unless `value` is a finite number in [0, 1].
fn check_unit_interval(what: &str, value: f32) -> Result<()> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{what} must be a number from 0 to 1, not {value}"
        )))
    }
}

/// Fails if `value` does not fit a signed 64-bit integer (what persistent stores can hold).
fn check_fits_i64(what: &str, value: u64) -> Result<()> {
    if i64::try_from(value).is_ok() {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{what} is too large ({value}, at most {})",
            i64::MAX
        )))
    }
}

impl MemoryItem {
    /// The longest text of a memory, in characters.
    pub const MAX_TEXT_CHARS: usize = 2_000;

    /// Checks the rules every store enforces: a non-blank text of at most
    /// [`MemoryItem::MAX_TEXT_CHARS`] characters, an importance in [0, 1] and an embedding of
    /// finite numbers (an empty embedding is fine).
    pub fn validate(&self) -> Result<()> {
        if self.text.trim().is_empty() {
            return Err(StoreError::Invalid("a memory needs a text".into()));
        }
        let chars = self.text.chars().count();
        if chars > Self::MAX_TEXT_CHARS {
            return Err(StoreError::Invalid(format!(
                "a memory's text has at most {} characters, this one has {chars}",
                Self::MAX_TEXT_CHARS
            )));
        }
        check_unit_interval("a memory's importance", self.importance)?;
        if let Some((i, value)) = self
            .embedding
            .iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite())
        {
            return Err(StoreError::Invalid(format!(
                "a memory's embedding must consist of finite numbers (value {i} is {value})"
            )));
        }
        Ok(())
    }

    /// [`MemoryItem::validate`], plus the rule for memories that are being added
    /// ([`Store::insert_memory`](crate::Store::insert_memory) and the new memory of
    /// [`Store::supersede_memory`](crate::Store::supersede_memory)): they are not superseded yet.
    /// Only `supersede_memory` marks a memory as superseded, so the versions of a fact always
    /// form one chain, newest last.
    pub fn validate_new(&self) -> Result<()> {
        self.validate()?;
        match self.superseded_by {
            None => Ok(()),
            Some(_) => Err(StoreError::Invalid(
                "a new memory cannot be superseded already (supersede_memory marks the old one)"
                    .into(),
            )),
        }
    }
}

impl PersonaState {
    /// Checks the rules every store enforces: trait names are not blank, trait scores,
    /// `familiarity` and `trust` are numbers in [0, 1], and `exchanges` fits a signed 64-bit
    /// integer.
    pub fn validate(&self) -> Result<()> {
        for (name, score) in &self.traits {
            if name.trim().is_empty() {
                return Err(StoreError::Invalid("a persona trait needs a name".into()));
            }
            check_unit_interval(&format!("the score of the trait {name:?}"), *score)?;
        }
        if self.locked.iter().any(|name| name.trim().is_empty()) {
            return Err(StoreError::Invalid(
                "a locked persona trait needs a name".into(),
            ));
        }
        check_unit_interval("familiarity", self.familiarity)?;
        check_unit_interval("trust", self.trust)?;
        check_fits_i64("the number of exchanges", self.exchanges)
    }

    /// The input checks of [`Store::save_persona_state`](crate::Store::save_persona_state):
    /// [`PersonaState::validate`], [`PersonaChange::validate`] of each change, and every change
    /// belongs to the state's companion.
    pub fn validate_save(&self, changes: &[PersonaChange]) -> Result<()> {
        self.validate()?;
        for change in changes {
            change.validate()?;
            if change.companion_id != self.companion_id {
                return Err(StoreError::Invalid(
                    "a persona change belongs to another companion than the state".into(),
                ));
            }
        }
        Ok(())
    }
}

impl PersonaChange {
    /// Checks the rules every store enforces: a non-blank field and finite old and new values.
    pub fn validate(&self) -> Result<()> {
        if self.field.trim().is_empty() {
            return Err(StoreError::Invalid(
                "a persona change needs the name of the field that changed".into(),
            ));
        }
        for (which, value) in [("old", self.old), ("new", self.new)] {
            if !value.is_finite() {
                return Err(StoreError::Invalid(format!(
                    "the {which} value of a change of {:?} must be a finite number, not {value}",
                    self.field
                )));
            }
        }
        Ok(())
    }
}

impl ConversationSummary {
    /// Checks the rules every store enforces: `covered_messages` fits a signed 64-bit integer.
    pub fn validate(&self) -> Result<()> {
        let covered = u64::try_from(self.covered_messages).unwrap_or(u64::MAX);
        check_fits_i64("the number of messages a summary covers", covered)
    }
}

impl CompanionAsset {
    /// The largest asset, in bytes (20 MiB).
    pub const MAX_BYTES: usize = 20 * 1024 * 1024;
    /// The longest asset name, in characters.
    pub const MAX_NAME_CHARS: usize = 255;

    /// Checks the rules every store enforces: the name is a relative path that stays inside
    /// the companion's folder when the card is exported (not blank, at most
    /// [`CompanionAsset::MAX_NAME_CHARS`] characters, no leading `/` or `\`, no `..` component,
    /// no control characters), and the asset has at most [`CompanionAsset::MAX_BYTES`] bytes.
    pub fn validate(&self) -> Result<()> {
        check_asset_name(&self.name)?;
        if self.bytes.len() > Self::MAX_BYTES {
            return Err(StoreError::Invalid(format!(
                "the asset {:?} is too large ({} bytes, at most {})",
                self.name,
                self.bytes.len(),
                Self::MAX_BYTES
            )));
        }
        Ok(())
    }
}

fn check_asset_name(name: &str) -> Result<()> {
    let invalid = |why: &str| Err(StoreError::Invalid(format!("asset name {name:?}: {why}")));
    if name.trim().is_empty() {
        return Err(StoreError::Invalid("an asset needs a name".into()));
    }
    if name.chars().count() > CompanionAsset::MAX_NAME_CHARS {
        return invalid(&format!(
            "at most {} characters",
            CompanionAsset::MAX_NAME_CHARS
        ));
    }
    if name.chars().any(char::is_control) {
        return invalid("no control characters");
    }
    if name.starts_with(['/', '\\']) {
        return invalid("it must be a relative path (no leading '/')");
    }
    // Both separators: a card exported on Windows must not escape its folder either.
    if name.split(['/', '\\']).any(|part| part == "..") {
        return invalid("no '..' components");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The emotion journal (schema version 3).
// ---------------------------------------------------------------------------------------------

/// Where an entry of the emotion journal comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmotionSource {
    /// What the user wrote (the text emotion model).
    Text,
    /// How the user sounded (voice prosody).
    Voice,
    /// Heart rate from a wearable.
    Heart,
    /// Facial expression (blend shapes from an AR shell).
    Face,
    /// The fused state of all the signals at one time.
    Fused,
}

impl EmotionSource {
    /// Every source, in storage order.
    pub const ALL: [EmotionSource; 5] = [
        EmotionSource::Text,
        EmotionSource::Voice,
        EmotionSource::Heart,
        EmotionSource::Face,
        EmotionSource::Fused,
    ];

    /// The lower-case name used in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            EmotionSource::Text => "text",
            EmotionSource::Voice => "voice",
            EmotionSource::Heart => "heart",
            EmotionSource::Face => "face",
            EmotionSource::Fused => "fused",
        }
    }

    /// Parses the lower-case name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// One entry of the emotion journal: a reading of one signal, or a fused state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Stable id.
    pub id: JournalId,
    /// When the signal was observed (for a fused state: the time it describes).
    pub at: Timestamp,
    /// The signal.
    pub source: EmotionSource,
    /// Emotion labels with their score in [0, 1], highest first (may be empty, e.g. for heart
    /// rate, which only gives arousal).
    pub labels: Vec<(String, f32)>,
    /// Unpleasant (-1) to pleasant (+1).
    pub valence: f32,
    /// Calm (0) to excited (1).
    pub arousal: f32,
    /// 0 (no information) to 1 (reliable).
    pub confidence: f32,
    /// The conversation of the message the reading belongs to, if any. Not a reference the
    /// store checks: the entry outlives a deleted conversation (only the link is then dead).
    pub conversation_id: Option<ConversationId>,
    /// The message the reading belongs to (the user's message for text readings), if any.
    pub message_id: Option<MessageId>,
    /// Source-specific details as a JSON value (input flags, a fused state's contributions).
    pub details: serde_json::Value,
}

impl JournalEntry {
    /// The most labels an entry can have.
    pub const MAX_LABELS: usize = 64;

    /// Checks the rules every store enforces: valence in [-1, 1], arousal and confidence in
    /// [0, 1], at most [`JournalEntry::MAX_LABELS`] labels with a non-blank name (at most 64
    /// characters) and a score in [0, 1].
    pub fn validate(&self) -> Result<()> {
        if !(-1.0..=1.0).contains(&self.valence) {
            return Err(StoreError::Invalid(format!(
                "a journal entry's valence must be a number from -1 to 1, not {}",
                self.valence
            )));
        }
        check_unit_interval("a journal entry's arousal", self.arousal)?;
        check_unit_interval("a journal entry's confidence", self.confidence)?;
        if self.labels.len() > Self::MAX_LABELS {
            return Err(StoreError::Invalid(format!(
                "a journal entry has at most {} labels",
                Self::MAX_LABELS
            )));
        }
        for (label, score) in &self.labels {
            if label.trim().is_empty() || label.chars().count() > 64 {
                return Err(StoreError::Invalid(format!(
                    "a journal label must have 1 to 64 characters, not {label:?}"
                )));
            }
            check_unit_interval("a journal label's score", *score)?;
        }
        Ok(())
    }
}
