//! # nexus-app
//!
//! The public API of the Nexus core: [`Nexus`] wires the store, the clock and the language model
//! to the companion logic, and every shell (terminal, desktop, web, mobile bindings) calls it
//! directly. With the `native` feature it also knows how to open the on-disk SQLite store and
//! load the models from the verified cache ([`native`]).
//!
//! Must not contain: terminal or UI code, platform APIs (they come in through ports).

pub mod archive;
pub mod emotion;
mod memory;
#[cfg(feature = "native")]
pub mod native;

use std::sync::{Arc, Mutex};

pub use memory::Why;
use nexus_common::{Clock, CompanionId, ConversationId};
use nexus_companion::cards;
pub use nexus_companion::cards::{
    CardError, CardFormat, CardSpec, ImportSummary, MAX_CARD_BYTES, too_large_file,
};
use nexus_companion::engine::MemoryAccess;
pub use nexus_companion::evolve::TRAITS as PERSONA_TRAITS;
pub use nexus_companion::memory::{MemorySettings, MemorySnapshot, Recalled};
use nexus_companion::persona;
pub use nexus_companion::{ChatSettings, CompanionDraft, CompanionPatch, Reply};
use nexus_companion::{CompanionError, ConversationEngine};
pub use nexus_inference::{CancelToken, Embedder, Flow, LanguageModel};
pub use nexus_store::{
    Companion, Conversation, MemoryItem, MemoryKind, Message, PersonaChange, PersonaState, Role,
    Store, StoreError,
};

/// Setting key of the companion the user talks to by default.
pub const ACTIVE_COMPANION: &str = "active_companion";

/// What can go wrong in the app.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No companion with this name or id.
    #[error("no companion named {name:?}{}", hint(.known))]
    UnknownCompanion {
        /// What was asked for.
        name: String,
        /// The names that exist.
        known: Vec<String>,
    },
    /// No language model is loaded.
    #[error("no language model is loaded")]
    NoModel,
    /// No embedding model is loaded (needed to search and forget by meaning).
    #[error("no embedding model is loaded")]
    NoEmbedder,
    /// No memory with this id.
    #[error("no memory with id {0:?}")]
    UnknownMemory(String),
    /// The request is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Companion logic failed.
    #[error(transparent)]
    Companion(CompanionError),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] nexus_inference::InferenceError),
    /// A character card cannot be read (bad input) or written.
    #[error(transparent)]
    Card(CardError),
    /// Emotion understanding failed (no text emotion model, or it failed).
    #[error(transparent)]
    Emotion(emotion::EmotionAppError),
    /// Fetching or verifying models failed.
    #[cfg(feature = "native")]
    #[error(transparent)]
    Models(#[from] nexus_models::ModelsError),
}

fn hint(known: &[String]) -> String {
    if known.is_empty() {
        String::new()
    } else {
        format!(" (companions: {})", known.join(", "))
    }
}

impl From<CompanionError> for AppError {
    fn from(e: CompanionError) -> Self {
        match e {
            CompanionError::Store(s) => AppError::Store(s),
            CompanionError::Model(m) => AppError::Model(m),
            other => AppError::Companion(other),
        }
    }
}

impl From<CardError> for AppError {
    fn from(e: CardError) -> Self {
        match e {
            CardError::Store(s) => AppError::Store(s),
            other => AppError::Card(other),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = AppError> = std::result::Result<T, E>;

/// The Nexus core.
pub struct Nexus {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: ChatSettings,
    llm: Option<Box<dyn LanguageModel>>,
    emotion: emotion::EmotionState,
    embedder: Option<Box<dyn Embedder>>,
    memory_settings: MemorySettings,
    /// The memory index of the companion talked to last.
    memory_cache: Mutex<Option<(CompanionId, MemorySnapshot)>>,
}

impl std::fmt::Debug for Nexus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nexus")
            .field("settings", &self.settings)
            .field("llm", &self.llm.is_some())
            .field("embedder", &self.embedder.is_some())
            .finish()
    }
}

impl Nexus {
    /// The core over a store and a clock, with default chat settings and no model yet.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            settings: ChatSettings::default(),
            llm: None,
            emotion: emotion::EmotionState::default(),
            embedder: None,
            memory_settings: MemorySettings::default(),
            memory_cache: Mutex::new(None),
        }
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// Chat settings in effect.
    pub fn chat_settings(&self) -> &ChatSettings {
        &self.settings
    }

    /// Replaces the chat settings.
    pub fn set_chat_settings(&mut self, settings: ChatSettings) {
        self.settings = settings;
    }

    /// Installs the language model.
    pub fn set_language_model(&mut self, llm: Box<dyn LanguageModel>) {
        self.llm = Some(llm);
    }

    /// Whether a language model is installed.
    pub fn has_language_model(&self) -> bool {
        self.llm.is_some()
    }

    /// Installs the embedding model: from now on replies recall long-term memories and learn
    /// new ones, and memories can be searched and forgotten by meaning.
    pub fn set_embedder(&mut self, embedder: Box<dyn Embedder>) {
        self.embedder = Some(embedder);
        self.invalidate_memories();
    }

    /// Whether an embedding model is installed.
    pub fn has_embedder(&self) -> bool {
        self.embedder.is_some()
    }

    /// Tuning of memory learning and recall.
    pub fn memory_settings(&self) -> &MemorySettings {
        &self.memory_settings
    }

    /// Replaces the memory settings.
    pub fn set_memory_settings(&mut self, settings: MemorySettings) {
        self.memory_settings = settings;
    }

    fn engine(&self) -> ConversationEngine<'_> {
        ConversationEngine::new(&*self.store, &*self.clock, self.settings.clone())
    }

    // ---- companions ----

    /// Creates a companion.
    pub fn create_companion(&self, draft: &CompanionDraft) -> Result<Companion> {
        Ok(persona::create(&*self.store, &*self.clock, draft)?)
    }

    /// All companions, oldest first.
    pub fn companions(&self) -> Result<Vec<Companion>> {
        Ok(self.store.list_companions()?)
    }

    /// The companion with this name (case-insensitive) or id.
    pub fn find_companion(&self, name_or_id: &str) -> Result<Companion> {
        let key = name_or_id.trim();
        if let Some(c) = self.store.companion_by_name(key)? {
            return Ok(c);
        }
        if let Ok(id) = key.parse() {
            match self.store.companion(id) {
                Ok(c) => return Ok(c),
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::UnknownCompanion {
            name: key.to_owned(),
            known: self.companions()?.into_iter().map(|c| c.name).collect(),
        })
    }

    /// Edits a companion.
    pub fn edit_companion(&self, name_or_id: &str, patch: &CompanionPatch) -> Result<Companion> {
        let c = self.find_companion(name_or_id)?;
        Ok(persona::edit(&*self.store, &*self.clock, c.id, patch)?)
    }

    /// Deletes a companion with its conversations.
    pub fn delete_companion(&self, name_or_id: &str) -> Result<Companion> {
        let c = self.find_companion(name_or_id)?;
        self.store.delete_companion(c.id)?;
        self.store
            .delete_setting(&nexus_companion::mood::setting_key(c.id))?;
        if self.store.setting(ACTIVE_COMPANION)?.as_deref() == Some(&c.id.to_string()) {
            self.store.delete_setting(ACTIVE_COMPANION)?;
        }
        Ok(c)
    }

    /// Makes a companion the default one.
    pub fn set_active_companion(&self, companion: &Companion) -> Result<()> {
        Ok(self
            .store
            .set_setting(ACTIVE_COMPANION, &companion.id.to_string())?)
    }

    /// The companion to talk to: the named one, else the active one, else the first one; on a
    /// first run without any companion, the default companion is created.
    pub fn companion_or_default(&self, name: Option<&str>) -> Result<Companion> {
        if let Some(name) = name {
            return self.find_companion(name);
        }
        if let Some(id) = self
            .store
            .setting(ACTIVE_COMPANION)?
            .and_then(|s| s.parse().ok())
        {
            match self.store.companion(id) {
                Ok(c) => return Ok(c),
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(c) = self.companions()?.into_iter().next() {
            return Ok(c);
        }
        let c = self.create_companion(&CompanionDraft::default_companion())?;
        self.set_active_companion(&c)?;
        Ok(c)
    }

    // ---- character cards ----

    /// Imports a character card file (PNG, JSON or CHARX; V1, V2 or V3) as a new companion,
    /// named `name` or after the card, with its picture and assets. Fails with
    /// [`CardError::NameTaken`] if the name is taken. The first companion becomes the active one.
    pub fn import_card(
        &self,
        bytes: &[u8],
        name: Option<&str>,
    ) -> Result<(Companion, ImportSummary)> {
        let first = self.store.list_companions()?.is_empty();
        let (companion, summary) = cards::import(&*self.store, &*self.clock, bytes, name)?;
        if first {
            self.set_active_companion(&companion)?;
        }
        Ok((companion, summary))
    }

    /// A companion (by name or id) as a character card file in `format`.
    pub fn export_card(
        &self,
        name_or_id: &str,
        format: CardFormat,
    ) -> Result<(Companion, Vec<u8>)> {
        let companion = self.find_companion(name_or_id)?;
        let bytes = cards::export(&*self.store, &companion, format)?;
        Ok((companion, bytes))
    }

    // ---- conversations ----

    /// The companion's most recent conversation, or a new one (opening with the greeting).
    pub fn current_conversation(&self, companion: &Companion) -> Result<Conversation> {
        Ok(self.engine().current_conversation(companion)?)
    }

    /// A new conversation with the companion.
    pub fn new_conversation(&self, companion: &Companion) -> Result<Conversation> {
        Ok(self.engine().start_conversation(companion)?)
    }

    /// Messages of a conversation (the last `limit`, or all), oldest first.
    pub fn messages(
        &self,
        conversation: ConversationId,
        limit: Option<usize>,
    ) -> Result<Vec<Message>> {
        Ok(self.store.messages(conversation, limit)?)
    }

    /// Sends the user's message and streams the companion's reply; both are stored. With an
    /// embedder, relevant memories go into the prompt (see [`Reply::memories_used`] and
    /// [`Nexus::why`]) and new facts are learned; the persona evolves.
    pub fn send(
        &mut self,
        conversation: ConversationId,
        text: &str,
        cancel: Option<CancelToken>,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Reply> {
        if self.llm.is_none() {
            return Err(AppError::NoModel);
        }
        let companion = self.store.conversation(conversation)?.companion_id;
        let snapshot = self.snapshot(companion)?;
        let emotion = self.prepare_emotion(conversation, text); // tone guidance (emotion.rs)
        let mut engine = ConversationEngine::new(&*self.store, &*self.clock, self.settings.clone())
            .with_guidance(emotion.guidance());
        if let (Some(embedder), Some(snapshot)) = (self.embedder.as_deref(), snapshot.as_ref()) {
            engine = engine.with_memory(MemoryAccess {
                embedder,
                snapshot,
                settings: &self.memory_settings,
            });
        }
        let llm = self.llm.as_deref_mut().ok_or(AppError::NoModel)?;
        let reply = engine.reply(llm, conversation, text, cancel, on_text)?;
        self.finish_emotion(emotion, &reply); // journal + mood (emotion.rs)
        if !reply.learned.added.is_empty() {
            self.invalidate_memories();
        }
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use nexus_store::MemoryStore;
    use nexus_testing::{FakeLlm, SteppingClock};

    use super::*;

    fn app() -> Nexus {
        Nexus::new(
            Arc::new(MemoryStore::new()),
            Arc::new(SteppingClock::new(0, 1)),
        )
    }

    #[test]
    fn first_run_creates_the_default_companion_once() {
        let app = app();
        let a = app.companion_or_default(None).expect("default");
        assert_eq!(a.name, "Nova");
        let b = app.companion_or_default(None).expect("again");
        assert_eq!(a.id, b.id);
        assert_eq!(app.companions().expect("list").len(), 1);
    }

    #[test]
    fn companions_are_found_by_name_or_id_and_unknown_names_list_the_known_ones() {
        let app = app();
        let c = app
            .create_companion(&CompanionDraft {
                name: "Ada".into(),
                ..Default::default()
            })
            .expect("create");
        assert_eq!(app.find_companion("ada").expect("by name").id, c.id);
        assert_eq!(
            app.find_companion(&c.id.to_string()).expect("by id").id,
            c.id
        );
        let err = app.find_companion("Bob").expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "no companion named \"Bob\" (companions: Ada)"
        );
    }

    #[test]
    fn deleting_the_active_companion_falls_back_to_another() {
        let app = app();
        let a = app
            .create_companion(&CompanionDraft {
                name: "A".into(),
                ..Default::default()
            })
            .expect("a");
        let b = app
            .create_companion(&CompanionDraft {
                name: "B".into(),
                ..Default::default()
            })
            .expect("b");
        app.set_active_companion(&b).expect("active");
        assert_eq!(app.companion_or_default(None).expect("active").id, b.id);
        app.delete_companion("B").expect("delete");
        assert_eq!(app.companion_or_default(None).expect("fallback").id, a.id);
    }

    #[test]
    fn send_needs_a_model_and_then_stores_the_exchange() {
        let mut app = app();
        let c = app.companion_or_default(None).expect("default");
        let conv = app.current_conversation(&c).expect("conversation");
        assert!(matches!(
            app.send(conv.id, "hi", None, &mut |_| Flow::Continue),
            Err(AppError::NoModel)
        ));
        app.set_language_model(Box::new(FakeLlm::new(&["Hello!"])));
        let r = app
            .send(conv.id, "hi", None, &mut |_| Flow::Continue)
            .expect("send");
        assert_eq!(r.reply_message.map(|m| m.text), Some("Hello!".into()));
        assert_eq!(app.messages(conv.id, None).expect("messages").len(), 3);
    }

    #[test]
    fn cards_import_and_export_and_name_conflicts_are_clear() {
        let app = app();
        let card = br#"{"spec":"chara_card_v2","spec_version":"2.0",
            "data":{"name":"Mira","description":"A gardener.","first_mes":"Hello {{user}}!"}}"#;
        let (mira, summary) = app.import_card(card, None).expect("import");
        assert_eq!((mira.name.as_str(), summary.spec), ("Mira", CardSpec::V2));
        assert_eq!(
            app.companion_or_default(None).expect("active").id,
            mira.id,
            "the first companion becomes the active one"
        );
        let err = app.import_card(card, None).expect_err("taken");
        assert!(
            matches!(err, AppError::Card(CardError::NameTaken(_))),
            "{err}"
        );
        let (copy, _) = app.import_card(card, Some("Mira 2")).expect("renamed");
        assert_eq!(copy.name, "Mira 2");
        let (_, json) = app.export_card("mira 2", CardFormat::Json).expect("export");
        let json = String::from_utf8(json).expect("UTF-8");
        for expected in [
            r#""spec": "chara_card_v3""#,
            r#""name": "Mira 2""#,
            r#""first_mes": "Hello {{user}}!""#,
        ] {
            assert!(json.contains(expected), "{expected} in {json}");
        }
        let conv = app.new_conversation(&mira).expect("conversation");
        assert_eq!(
            app.messages(conv.id, None).expect("messages")[0].text,
            "Hello User!",
            "card greetings have their macros replaced"
        );
        assert!(matches!(
            app.import_card(b"not a card", None),
            Err(AppError::Card(CardError::NotACard(_)))
        ));
    }
}
