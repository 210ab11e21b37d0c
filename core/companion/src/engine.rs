//! The conversation engine: one exchange = assemble the prompt, stream the reply, persist both
//! turns atomically.

use nexus_common::{Clock, ConversationId, MessageId};
use nexus_inference::{
    CancelToken, Flow, GenerateRequest, Generation, LanguageModel, SamplingParams,
};
use nexus_store::{Companion, Conversation, Message, Role, Store};
use serde::{Deserialize, Serialize};

use crate::cards::prompt::{assemble_for, greeting};
use crate::persona::system_prompt;
use crate::prompt::PromptPlan;
use crate::{CompanionError, Result};

/// Longest accepted user message (characters).
pub const MAX_USER_CHARS: usize = 32_000;

/// How replies are generated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChatSettings {
    /// Upper bound on a reply's length in tokens.
    pub max_reply_tokens: usize,
    /// Sampling of the reply.
    pub sampling: SamplingParams,
    /// Most history messages loaded from the store per exchange (the token budget decides how
    /// many of them make it into the prompt).
    pub history_window: usize,
}

impl Default for ChatSettings {
    fn default() -> Self {
        Self {
            max_reply_tokens: 256,
            sampling: SamplingParams::default(),
            history_window: 200,
        }
    }
}

/// The result of one exchange.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The user's message as stored.
    pub user_message: Message,
    /// The companion's reply as stored (`None` if cancelled before any text).
    pub reply_message: Option<Message>,
    /// Measurements of the generation.
    pub generation: Generation,
    /// How the prompt was assembled.
    pub plan: PromptPlan,
}

/// Runs conversations against a store and a clock.
pub struct ConversationEngine<'a> {
    store: &'a dyn Store,
    clock: &'a dyn Clock,
    settings: ChatSettings,
    /// Extra lines appended to the system prompt of the next replies (tone guidance).
    guidance: Vec<String>,
}

impl std::fmt::Debug for ConversationEngine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationEngine")
            .field("settings", &self.settings)
            .field("guidance", &self.guidance)
            .finish()
    }
}

impl<'a> ConversationEngine<'a> {
    /// An engine with these settings.
    pub fn new(store: &'a dyn Store, clock: &'a dyn Clock, settings: ChatSettings) -> Self {
        Self {
            store,
            clock,
            settings,
            guidance: Vec::new(),
        }
    }

    /// Appends these lines (tone guidance from the user's emotional state, see
    /// [`mood`](crate::mood)) to the system prompt of its replies; blank lines are ignored.
    pub fn with_guidance(mut self, lines: Vec<String>) -> Self {
        self.guidance = lines
            .into_iter()
            .filter(|line| !line.trim().is_empty())
            .collect();
        self
    }

    /// The companion's system prompt with the guidance lines appended.
    fn system_prompt_for(&self, companion: &Companion) -> String {
        let mut prompt = system_prompt(companion);
        if !self.guidance.is_empty() {
            prompt.push_str("\n\n");
            prompt.push_str(&self.guidance.join("\n"));
        }
        prompt
    }

    /// Starts a new conversation; the companion's greeting (if any) is its first message.
    pub fn start_conversation(&self, companion: &Companion) -> Result<Conversation> {
        let now = self.clock.now();
        let conversation = Conversation {
            id: ConversationId::new(),
            companion_id: companion.id,
            title: None,
            created_at: now,
            updated_at: now,
        };
        self.store.create_conversation(&conversation)?;
        if !companion.greeting.is_empty() {
            self.store.append_messages(&[Message {
                id: MessageId::new(),
                conversation_id: conversation.id,
                role: Role::Assistant,
                // `{{char}}`/`{{user}}` of card greetings replaced.
                text: greeting(companion),
                created_at: now,
                token_count: 0,
            }])?;
        }
        Ok(conversation)
    }

    /// The companion's most recently active conversation, or a new one.
    pub fn current_conversation(&self, companion: &Companion) -> Result<Conversation> {
        let latest = self
            .store
            .list_conversations(companion.id)?
            .into_iter()
            .max_by_key(|c| c.updated_at);
        match latest {
            Some(c) => Ok(c),
            None => self.start_conversation(companion),
        }
    }

    /// Answers `user_text` in `conversation`, streaming the reply through `on_text`, and stores
    /// the user's message and the reply in one transaction.
    pub fn reply(
        &self,
        llm: &mut dyn LanguageModel,
        conversation: ConversationId,
        user_text: &str,
        cancel: Option<CancelToken>,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Reply> {
        let text = user_text.trim();
        if text.is_empty() {
            return Err(CompanionError::Invalid("the message is empty".into()));
        }
        if text.chars().count() > MAX_USER_CHARS {
            return Err(CompanionError::Invalid(format!(
                "the message is too long (at most {MAX_USER_CHARS} characters)"
            )));
        }
        let conv = self.store.conversation(conversation)?;
        let companion = self.store.companion(conv.companion_id)?;
        let received_at = self.clock.now();
        let history = self
            .store
            .messages(conversation, Some(self.settings.history_window))?;
        let budget = llm
            .context_length()
            .saturating_sub(self.settings.max_reply_tokens);
        // Companions made from a character card add the card's system prompt, scenario,
        // examples, lorebook and post-history instructions (plain `assemble` otherwise).
        let plan = assemble_for(
            &companion,
            &self.system_prompt_for(&companion),
            &history,
            text,
            budget,
            &|s| llm.count_tokens(s),
        );
        let request = GenerateRequest {
            messages: plan.messages.clone(),
            max_tokens: self.settings.max_reply_tokens,
            sampling: self.settings.sampling.clone(),
            stop: Vec::new(),
            cancel,
        };
        let generation = llm.generate(&request, on_text)?;

        let user_message = Message {
            id: MessageId::new(),
            conversation_id: conversation,
            role: Role::User,
            text: text.to_owned(),
            created_at: received_at,
            token_count: u32::try_from(llm.count_tokens(text)).unwrap_or(u32::MAX),
        };
        let reply_text = generation.text.trim().to_owned();
        let reply_message = (!reply_text.is_empty()).then(|| Message {
            id: MessageId::new(),
            conversation_id: conversation,
            role: Role::Assistant,
            token_count: u32::try_from(llm.count_tokens(&reply_text)).unwrap_or(u32::MAX),
            text: reply_text,
            created_at: self.clock.now().max(received_at.plus_millis(1)),
        });
        let mut batch = vec![user_message.clone()];
        batch.extend(reply_message.clone());
        self.store.append_messages(&batch)?;
        Ok(Reply {
            user_message,
            reply_message,
            generation,
            plan,
        })
    }
}

#[cfg(test)]
mod tests {
    use nexus_inference::FinishReason;
    use nexus_store::MemoryStore;
    use nexus_testing::{FakeLlm, SteppingClock};

    use super::*;
    use crate::persona::{CompanionDraft, create};

    fn setup() -> (MemoryStore, SteppingClock) {
        (MemoryStore::new(), SteppingClock::new(1_000, 10))
    }

    #[test]
    fn guidance_lines_are_appended_to_the_system_prompt() {
        let (store, clock) = setup();
        let c = create(&store, &clock, &CompanionDraft::default_companion()).expect("companion");
        let plain = ConversationEngine::new(&store, &clock, ChatSettings::default());
        let conv = plain.start_conversation(&c).expect("conversation");
        let guided = ConversationEngine::new(&store, &clock, ChatSettings::default())
            .with_guidance(vec![
                "The user seems anxious (confidence 0.7). Be calm.".into(),
                "  ".into(),
                "Your own mood is calm.".into(),
            ]);
        let mut llm = FakeLlm::new(&["One.", "Two."]);
        guided
            .reply(&mut llm, conv.id, "I'm worried.", None, &mut |_| {
                Flow::Continue
            })
            .expect("guided reply");
        plain
            .reply(&mut llm, conv.id, "Hello.", None, &mut |_| Flow::Continue)
            .expect("plain reply");
        let requests = llm.recorded();
        let system = |i: usize| requests[i].messages[0].content.clone();
        assert!(
            system(0).ends_with(
                "\n\nThe user seems anxious (confidence 0.7). Be calm.\nYour own mood is calm."
            ),
            "{}",
            system(0)
        );
        assert!(
            system(0).starts_with(&system(1)),
            "the persona prompt comes first"
        );
        assert!(
            !system(1).contains("anxious"),
            "no guidance, no extra lines"
        );
    }

    #[test]
    fn an_exchange_streams_and_persists_both_turns_with_the_persona_in_the_prompt() {
        let (store, clock) = setup();
        let c = create(&store, &clock, &CompanionDraft::default_companion()).expect("companion");
        let engine = ConversationEngine::new(&store, &clock, ChatSettings::default());
        let conv = engine.start_conversation(&c).expect("conversation");
        assert_eq!(
            store.messages(conv.id, None).expect("greeting")[0].text,
            c.greeting
        );

        let mut llm = FakeLlm::new(&["Nice to meet you, Sam!"]);
        let mut streamed = Vec::new();
        let reply = engine
            .reply(&mut llm, conv.id, "  Hi, I'm Sam.  ", None, &mut |p| {
                streamed.push(p.to_owned());
                Flow::Continue
            })
            .expect("reply");
        assert_eq!(streamed.concat(), "Nice to meet you, Sam!");
        assert!(streamed.len() > 1, "streamed piece by piece");
        let stored = store.messages(conv.id, None).expect("messages");
        assert_eq!(stored.len(), 3);
        assert_eq!(
            (stored[1].role, stored[1].text.as_str()),
            (Role::User, "Hi, I'm Sam.")
        );
        assert_eq!(
            (stored[2].role, stored[2].text.as_str()),
            (Role::Assistant, "Nice to meet you, Sam!")
        );
        assert!(stored[2].created_at > stored[1].created_at);
        assert!(stored[1].token_count > 0);
        assert_eq!(
            reply.reply_message.as_ref().map(|m| m.id),
            Some(stored[2].id)
        );

        let req = &llm.recorded()[0];
        assert_eq!(req.messages[0].role, "system");
        assert!(req.messages[0].content.starts_with("You are Nova"));
        assert_eq!(
            req.messages[1].content, c.greeting,
            "history is in the prompt"
        );
        assert_eq!(
            req.messages.last().map(|m| m.content.as_str()),
            Some("Hi, I'm Sam.")
        );
    }

    #[test]
    fn the_next_exchange_sees_the_previous_one() {
        let (store, clock) = setup();
        let c = create(&store, &clock, &CompanionDraft::default_companion()).expect("companion");
        let engine = ConversationEngine::new(&store, &clock, ChatSettings::default());
        let conv = engine.current_conversation(&c).expect("new conversation");
        assert_eq!(engine.current_conversation(&c).expect("same").id, conv.id);
        let mut llm = FakeLlm::new(&["Hello Sam.", "Your name is Sam."]);
        engine
            .reply(&mut llm, conv.id, "I'm Sam", None, &mut |_| Flow::Continue)
            .expect("first");
        engine
            .reply(&mut llm, conv.id, "Who am I?", None, &mut |_| {
                Flow::Continue
            })
            .expect("second");
        let second = &llm.recorded()[1];
        let texts: Vec<&str> = second.messages.iter().map(|m| m.content.as_str()).collect();
        assert!(texts.contains(&"I'm Sam") && texts.contains(&"Hello Sam."));
    }

    #[test]
    fn long_histories_are_trimmed_to_the_budget() {
        let (store, clock) = setup();
        let c = create(&store, &clock, &CompanionDraft::default_companion()).expect("companion");
        let settings = ChatSettings {
            max_reply_tokens: 100,
            ..Default::default()
        };
        let engine = ConversationEngine::new(&store, &clock, settings);
        let conv = engine.start_conversation(&c).expect("conversation");
        let mut llm = FakeLlm::new(&[]);
        llm.context = 400;
        for i in 0..100 {
            engine
                .reply(
                    &mut llm,
                    conv.id,
                    &format!("message {i} with a few words"),
                    None,
                    &mut |_| Flow::Continue,
                )
                .expect("reply");
        }
        let last = llm.recorded().pop().expect("recorded");
        let tokens: usize = last
            .messages
            .iter()
            .map(|m| m.content.split_whitespace().count() + 1 + 5)
            .sum();
        assert!(
            tokens <= 300,
            "prompt of {tokens} tokens exceeds the budget"
        );
        assert!(last.messages.len() > 5, "but recent turns are there");
        assert_eq!(store.message_count(conv.id).expect("count"), 201);
    }

    #[test]
    fn empty_or_huge_messages_are_rejected_and_nothing_is_stored() {
        let (store, clock) = setup();
        let c = create(&store, &clock, &CompanionDraft::default_companion()).expect("companion");
        let engine = ConversationEngine::new(&store, &clock, ChatSettings::default());
        let conv = engine.start_conversation(&c).expect("conversation");
        let mut llm = FakeLlm::new(&[]);
        for bad in ["", "   \n", &"x".repeat(MAX_USER_CHARS + 1)] {
            assert!(
                engine
                    .reply(&mut llm, conv.id, bad, None, &mut |_| Flow::Continue)
                    .is_err()
            );
        }
        assert_eq!(
            store.message_count(conv.id).expect("count"),
            1,
            "only the greeting"
        );
        assert!(llm.recorded().is_empty());
    }

    #[test]
    fn a_cancelled_reply_keeps_what_was_said() {
        let (store, clock) = setup();
        let c = create(&store, &clock, &CompanionDraft::default_companion()).expect("companion");
        let engine = ConversationEngine::new(&store, &clock, ChatSettings::default());
        let conv = engine.start_conversation(&c).expect("conversation");
        let mut llm = FakeLlm::new(&["one two three four five"]);
        let mut n = 0;
        let r = engine
            .reply(&mut llm, conv.id, "count", None, &mut |_| {
                n += 1;
                if n == 2 { Flow::Stop } else { Flow::Continue }
            })
            .expect("reply");
        assert_eq!(r.generation.finish, FinishReason::Cancelled);
        assert_eq!(r.reply_message.map(|m| m.text), Some("one two".into()));
    }
}
