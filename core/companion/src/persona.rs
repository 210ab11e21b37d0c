//! Creating and editing companions, and turning one into the system prompt.

use nexus_common::{Clock, CompanionId};
use nexus_store::{Companion, Store};
use serde::{Deserialize, Serialize};

use crate::{CompanionError, Result};

/// Longest accepted text of one persona field (characters).
pub const MAX_FIELD_CHARS: usize = 4000;

/// Everything needed to create a companion.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CompanionDraft {
    /// Name (unique, case-insensitive).
    pub name: String,
    /// Who the companion is.
    pub description: String,
    /// Character traits.
    pub personality: String,
    /// How it talks.
    pub speaking_style: String,
    /// First message of a conversation.
    pub greeting: String,
}

impl CompanionDraft {
    /// The companion created on first run when the user has none.
    pub fn default_companion() -> Self {
        Self {
            name: "Nova".into(),
            description: "Nova is a friendly AI companion who lives on the user's own device. \
                          Nova listens closely, remembers what matters to the user and keeps \
                          everything private."
                .into(),
            personality: "warm, curious, supportive, honest, a little playful".into(),
            speaking_style: "short, natural sentences; asks one question at a time; no lists"
                .into(),
            greeting: "Hi, I'm Nova. How are you today?".into(),
        }
    }
}

/// A partial edit: only the fields that are `Some` change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CompanionPatch {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New personality.
    pub personality: Option<String>,
    /// New speaking style.
    pub speaking_style: Option<String>,
    /// New greeting.
    pub greeting: Option<String>,
}

impl CompanionPatch {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

fn check_field(label: &str, value: &str) -> Result<String> {
    let v = value.trim();
    if v.chars().count() > MAX_FIELD_CHARS {
        return Err(CompanionError::Invalid(format!(
            "the {label} is too long ({} characters, at most {MAX_FIELD_CHARS})",
            v.chars().count()
        )));
    }
    Ok(v.to_owned())
}

/// Creates a companion from a draft.
pub fn create(store: &dyn Store, clock: &dyn Clock, draft: &CompanionDraft) -> Result<Companion> {
    let now = clock.now();
    let companion = Companion {
        id: CompanionId::new(),
        name: check_field("name", &draft.name)?,
        description: check_field("description", &draft.description)?,
        personality: check_field("personality", &draft.personality)?,
        speaking_style: check_field("speaking style", &draft.speaking_style)?,
        greeting: check_field("greeting", &draft.greeting)?,
        card: None,
        created_at: now,
        updated_at: now,
    };
    store.create_companion(&companion)?;
    Ok(companion)
}

/// Applies a patch to a companion and stores it.
pub fn edit(
    store: &dyn Store,
    clock: &dyn Clock,
    id: CompanionId,
    patch: &CompanionPatch,
) -> Result<Companion> {
    let mut c = store.companion(id)?;
    let set = |field: &mut String, label: &str, v: &Option<String>| -> Result<()> {
        if let Some(v) = v {
            *field = check_field(label, v)?;
        }
        Ok(())
    };
    set(&mut c.name, "name", &patch.name)?;
    set(&mut c.description, "description", &patch.description)?;
    set(&mut c.personality, "personality", &patch.personality)?;
    set(
        &mut c.speaking_style,
        "speaking style",
        &patch.speaking_style,
    )?;
    set(&mut c.greeting, "greeting", &patch.greeting)?;
    c.updated_at = clock.now();
    store.update_companion(&c)?;
    Ok(c)
}

/// The system prompt that makes the model speak as this companion.
///
/// Kept short and concrete: the default model has 135M parameters and follows a few plain
/// sentences better than a long character sheet.
pub fn system_prompt(c: &Companion) -> String {
    let mut s = format!("You are {}, the user's companion.", c.name);
    for (label, value) in [
        ("", c.description.as_str()),
        ("Personality: ", c.personality.as_str()),
        ("Speaking style: ", c.speaking_style.as_str()),
    ] {
        if !value.is_empty() {
            s.push(' ');
            s.push_str(label);
            s.push_str(value);
            if !value.ends_with(['.', '!', '?']) {
                s.push('.');
            }
        }
    }
    s.push_str(" Stay in character, be kind and reply briefly.");
    s
}

#[cfg(test)]
mod tests {
    use nexus_store::MemoryStore;
    use nexus_testing::FixedClock;

    use super::*;

    #[test]
    fn create_edit_and_prompt() {
        let store = MemoryStore::new();
        let clock = FixedClock::at(1_000);
        let c = create(
            &store,
            &clock,
            &CompanionDraft {
                name: "  Ada ".into(),
                personality: "calm".into(),
                ..Default::default()
            },
        )
        .expect("create");
        assert_eq!(c.name, "Ada");
        clock.advance(5);
        let patch = CompanionPatch {
            speaking_style: Some("formal".into()),
            ..Default::default()
        };
        let c2 = edit(&store, &clock, c.id, &patch).expect("edit");
        assert_eq!(c2.speaking_style, "formal");
        assert_eq!(c2.personality, "calm");
        assert_eq!(c2.updated_at.0, 1_005);
        assert_eq!(
            system_prompt(&c2),
            "You are Ada, the user's companion. Personality: calm. Speaking style: formal. Stay in character, be kind and reply briefly."
        );
    }

    #[test]
    fn invalid_drafts_are_rejected_clearly() {
        let store = MemoryStore::new();
        let clock = FixedClock::at(0);
        assert!(
            create(&store, &clock, &CompanionDraft::default()).is_err(),
            "no name"
        );
        let long = CompanionDraft {
            name: "X".into(),
            description: "a".repeat(MAX_FIELD_CHARS + 1),
            ..Default::default()
        };
        let err = create(&store, &clock, &long).expect_err("too long");
        assert!(err.to_string().contains("too long"));
        create(&store, &clock, &CompanionDraft::default_companion()).expect("default");
        let dup = CompanionDraft {
            name: "nova".into(),
            ..Default::default()
        };
        assert!(
            create(&store, &clock, &dup).is_err(),
            "names are unique, case-insensitively"
        );
    }
}
