//! The conversation engine: one exchange = assemble the prompt, stream the reply, persist both
//! turns atomically.

use nexus_common::{Clock, ConversationId, MessageId, Timestamp};
use nexus_inference::{
    CancelToken, ChatMessage, Embedder, Flow, GenerateRequest, Generation, LanguageModel,
    SamplingParams,
};
use nexus_store::{
    Companion, Conversation, ConversationSummary, Message, PersonaChange, PersonaState, Role, Store,
};
use serde::{Deserialize, Serialize};

use crate::cards::prompt::{assemble_for, greeting};
use crate::evolve::{self, Signals};
use crate::memory::{Learned, Memories, MemorySettings, MemorySnapshot, Recalled};
use crate::persona::system_prompt;
use crate::prompt::{PER_MESSAGE_OVERHEAD, PromptPlan};
use crate::summary::{self, message_tokens, plan_roll};
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
    /// Most messages read from the store at once. Only conversations that were never
    /// summarized (imported ones) have more messages after their summary; they are folded into
    /// it page by page.
    pub history_window: usize,
    /// Token budget of the rolling summary of older messages ([`crate::summary`]).
    pub summary_tokens: usize,
    /// Whether the persona evolves with each exchange ([`crate::evolve`]).
    pub evolve_persona: bool,
}

impl Default for ChatSettings {
    fn default() -> Self {
        Self {
            max_reply_tokens: 256,
            sampling: SamplingParams::default(),
            history_window: 400,
            summary_tokens: 200,
            evolve_persona: true,
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
    /// The memories put into the prompt (recorded as used by the reply), best first.
    pub memories_used: Vec<Recalled>,
    /// What was learned from the user's message.
    pub learned: Learned,
    /// How the persona changed.
    pub persona_changes: Vec<PersonaChange>,
    /// The summary written before this reply, when the conversation rolled.
    pub summary: Option<ConversationSummary>,
}

/// Long-term memory for the exchanges of one companion: recall from `snapshot` (build it with
/// [`Memories::snapshot`] and rebuild after [`Reply::learned`] added something), learn with
/// `embedder`.
#[derive(Clone, Copy)]
pub struct MemoryAccess<'m> {
    /// Embeds the query and new facts.
    pub embedder: &'m dyn Embedder,
    /// The companion's active memories.
    pub snapshot: &'m MemorySnapshot,
    /// Tuning.
    pub settings: &'m MemorySettings,
}

impl std::fmt::Debug for MemoryAccess<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryAccess")
            .field("memories", &self.snapshot.len())
            .finish()
    }
}

/// Heading of the recalled memories in the prompt.
pub const MEMORY_HEADING: &str =
    "What you remember about the user (use it when it helps; never invent more):";

/// Runs conversations against a store and a clock.
pub struct ConversationEngine<'a> {
    store: &'a dyn Store,
    clock: &'a dyn Clock,
    settings: ChatSettings,
    memory: Option<MemoryAccess<'a>>,
    guidance: Vec<String>,
}

impl std::fmt::Debug for ConversationEngine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationEngine")
            .field("settings", &self.settings)
            .field("memory", &self.memory)
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
            memory: None,
            guidance: Vec::new(),
        }
    }

    /// Recalls long-term memories into prompts and learns from the user's messages.
    pub fn with_memory(mut self, memory: MemoryAccess<'a>) -> Self {
        self.memory = Some(memory);
        self
    }

    /// Extra instructions for the next replies (e.g. tone guidance from the user's emotional
    /// state), placed right before the user's message.
    pub fn with_guidance(mut self, lines: Vec<String>) -> Self {
        self.guidance = lines;
        self
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

    /// The companion's persona state (its initial one if it never changed).
    pub fn persona_state(&self, companion: &Companion) -> Result<PersonaState> {
        Ok(self
            .store
            .persona_state(companion.id)?
            .unwrap_or_else(|| evolve::initial_state(companion, companion.created_at)))
    }

    /// Builds the prompt for `user_text` without generating: the rolling summary is brought up
    /// to date (and stored) if the conversation outgrew its budget, memories are recalled.
    /// `context` is the model's context window; `count` its tokenizer.
    pub fn prepare(
        &self,
        conversation: &Conversation,
        companion: &Companion,
        user_text: &str,
        context: usize,
        count: &dyn Fn(&str) -> usize,
    ) -> Result<Prepared> {
        let now = self.clock.now();
        let budget = context.saturating_sub(self.settings.max_reply_tokens);
        let state = self.persona_state(companion)?;
        let mut head = system_prompt(companion);
        let hint = evolve::prompt_hint(&state);
        if !hint.is_empty() {
            head.push(' ');
            head.push_str(&hint);
        }

        // Long-term memory and guidance go right before the user's message: they change with
        // every message, while everything before them stays the same between summary steps
        // (so the model reuses its cache).
        let memories_used = match &self.memory {
            Some(m) if !m.snapshot.is_empty() => {
                Memories::new(self.store, m.embedder, self.clock, m.settings.clone())
                    .recall(m.snapshot, user_text, count)?
            }
            _ => Vec::new(),
        };
        let mut note = Vec::new();
        if !memories_used.is_empty() {
            note.push(MEMORY_HEADING.to_owned());
            note.extend(memories_used.iter().map(|r| format!("- {}", r.memory.text)));
        }
        note.extend(self.guidance.iter().cloned());
        let note = note.join("\n");
        let note_tokens = if note.is_empty() {
            0
        } else {
            count(&note) + PER_MESSAGE_OVERHEAD
        };

        // Room for the messages after the summary: what the fixed parts leave, reserving the
        // full memory budget so that steps do not depend on what one message recalled.
        let memory_reserve = self
            .memory
            .map_or(0, |m| {
                m.settings.token_budget.min(budget / 4) + PER_MESSAGE_OVERHEAD
            })
            .max(note_tokens);
        let summary_budget = self.settings.summary_tokens.min(budget / 4);
        let fixed = count(&head)
            + summary_budget
            + memory_reserve
            + count(user_text)
            + 3 * PER_MESSAGE_OVERHEAD;
        let limit = budget.saturating_sub(fixed);
        let (tail, summary, rolled) =
            self.roll(conversation.id, limit, summary_budget, count, now)?;

        let mut plan = assemble_for(
            companion,
            &head,
            &tail,
            user_text,
            budget.saturating_sub(
                note_tokens + summary.as_ref().map_or(0, |s| s.token_count as usize),
            ),
            count,
        );
        if let Some(s) = summary.as_ref().filter(|s| !s.text.is_empty())
            && let Some(system) = plan.messages.first_mut()
        {
            system.content.push_str("\n\n");
            system.content.push_str(&s.text);
            plan.estimated_tokens += s.token_count as usize;
        }
        if !note.is_empty() {
            let at = plan.messages.len().saturating_sub(1);
            plan.messages.insert(at, ChatMessage::new("system", note));
            plan.estimated_tokens += note_tokens;
        }
        Ok(Prepared {
            plan,
            memories_used,
            summary: if rolled { summary } else { None },
        })
    }

    /// The messages after the summary, the summary, and whether it was just (re)written.
    fn roll(
        &self,
        conversation: ConversationId,
        limit: usize,
        summary_budget: usize,
        count: &dyn Fn(&str) -> usize,
        now: Timestamp,
    ) -> Result<(Vec<Message>, Option<ConversationSummary>, bool)> {
        let mut summary = self.store.latest_summary(conversation)?;
        let total = self.store.message_count(conversation)?;
        let mut covered = summary
            .as_ref()
            .map_or(0, |s| s.covered_messages)
            .min(total);
        let mut rolled = false;
        let page = self.settings.history_window.max(16);
        let fold = |summary: &Option<ConversationSummary>, chunk: &[Message]| {
            summary::summarize(
                summary.as_ref().map(|s| s.text.as_str()),
                chunk,
                summary_budget,
                count,
            )
        };
        // Conversations that were never summarized (imported ones) are folded page by page.
        while total - covered > page {
            let chunk = self.store.messages_range(
                conversation,
                covered,
                page.min(total - covered - page),
            )?;
            if chunk.is_empty() {
                break;
            }
            let text = fold(&summary, &chunk);
            covered += chunk.len();
            summary = Some(self.summary(conversation, text, covered, count, now));
            rolled = true;
        }
        let mut tail = self
            .store
            .messages_range(conversation, covered, total - covered)?;
        let tokens: Vec<usize> = tail.iter().map(|m| message_tokens(m, count)).collect();
        let n = plan_roll(&tokens, limit, limit / 2);
        if n > 0 {
            let text = fold(&summary, &tail[..n]);
            covered += n;
            tail.drain(..n);
            summary = Some(self.summary(conversation, text, covered, count, now));
            rolled = true;
        }
        if rolled && let Some(s) = &summary {
            self.store.save_summary(s)?;
        }
        Ok((tail, summary, rolled))
    }

    fn summary(
        &self,
        conversation: ConversationId,
        text: String,
        covered: usize,
        count: &dyn Fn(&str) -> usize,
        now: Timestamp,
    ) -> ConversationSummary {
        ConversationSummary {
            conversation_id: conversation,
            token_count: u32::try_from(count(&text)).unwrap_or(u32::MAX),
            text,
            covered_messages: covered,
            created_at: now,
        }
    }

    /// Answers `user_text` in `conversation`, streaming the reply through `on_text`, and stores
    /// the user's message and the reply in one transaction. Then, with memory, learns from the
    /// user's message and records which memories informed the reply; the persona evolves.
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
        let context = llm.context_length();
        let prepared = {
            let count = |s: &str| llm.count_tokens(s);
            self.prepare(&conv, &companion, text, context, &count)?
        };
        let request = GenerateRequest {
            messages: prepared.plan.messages.clone(),
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
        let replied_at = self.clock.now().max(received_at.plus_millis(1));
        let reply_message = (!reply_text.is_empty()).then(|| Message {
            id: MessageId::new(),
            conversation_id: conversation,
            role: Role::Assistant,
            token_count: u32::try_from(llm.count_tokens(&reply_text)).unwrap_or(u32::MAX),
            text: reply_text,
            created_at: replied_at,
        });
        let mut batch = vec![user_message.clone()];
        batch.extend(reply_message.clone());
        self.store.append_messages(&batch)?;

        // After the exchange is safely stored: memory and persona. A failure here loses
        // nothing the user said.
        let mut learned = Learned::default();
        if let Some(m) = &self.memory {
            if let Some(reply) = &reply_message
                && !prepared.memories_used.is_empty()
            {
                let ids: Vec<_> = prepared.memories_used.iter().map(|r| r.memory.id).collect();
                self.store
                    .record_memories_used(reply.id, &ids, replied_at)?;
            }
            learned = Memories::new(self.store, m.embedder, self.clock, m.settings.clone())
                .learn(companion.id, &user_message)?;
        }
        let persona_changes = if self.settings.evolve_persona {
            self.evolve(&companion, text, &learned)?
        } else {
            Vec::new()
        };
        Ok(Reply {
            user_message,
            reply_message,
            generation,
            plan: prepared.plan,
            memories_used: prepared.memories_used,
            learned,
            persona_changes,
            summary: prepared.summary,
        })
    }

    fn evolve(
        &self,
        companion: &Companion,
        text: &str,
        learned: &Learned,
    ) -> Result<Vec<PersonaChange>> {
        let mut state = self.persona_state(companion)?;
        let base = evolve::initial_traits(companion);
        let signals = Signals {
            user_text: text.to_owned(),
            learned: learned.added.iter().map(|m| m.kind).collect(),
        };
        let changes = evolve::evolve(&mut state, &base, &signals, self.clock.now());
        // Saved even without changes: the exchange count moved.
        self.store.save_persona_state(&state, &changes)?;
        Ok(changes)
    }
}

/// A prompt ready for generation ([`ConversationEngine::prepare`]).
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The messages.
    pub plan: PromptPlan,
    /// Memories in it.
    pub memories_used: Vec<Recalled>,
    /// The summary, when it was just written.
    pub summary: Option<ConversationSummary>,
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
    fn guidance_lines_reach_the_prompt_right_before_the_users_message() {
        let (store, clock) = setup();
        let c = create(&store, &clock, &CompanionDraft::default_companion()).expect("companion");
        let plain = ConversationEngine::new(&store, &clock, ChatSettings::default());
        let conv = plain.start_conversation(&c).expect("conversation");
        let guided = ConversationEngine::new(&store, &clock, ChatSettings::default())
            .with_guidance(vec![
                "The user seems anxious (confidence 0.7). Be calm.".into(),
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
        let guided_messages = &requests[0].messages;
        let n = guided_messages.len();
        assert_eq!(guided_messages[n - 1].content, "I'm worried.");
        assert_eq!(guided_messages[n - 2].role, "system");
        assert!(
            guided_messages[n - 2].content.ends_with(
                "The user seems anxious (confidence 0.7). Be calm.\nYour own mood is calm."
            ),
            "{guided_messages:?}"
        );
        assert!(
            requests[1]
                .messages
                .iter()
                .all(|m| !m.content.contains("anxious")),
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
