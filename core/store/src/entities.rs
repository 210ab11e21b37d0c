use nexus_common::{CompanionId, ConversationId, MessageId, Timestamp};
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
