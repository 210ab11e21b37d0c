//! The [`LanguageModel`] port and [`Llm`], the generation loop over any [`CausalLm`] engine:
//! prompt rendering, trimming to the context window, prompt-prefix reuse, sampling,
//! streaming, stop sequences and cancellation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use web_time::Instant;

use crate::sampling::{Sampler, SamplingParams};
use crate::template::ChatTemplate;
use crate::tokenizer::{GgufTokenizer, TokenStreamDecoder};
use crate::{CausalLm, GgufModel, InferenceError, Result};

/// One message of a chat prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with this role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A request for one reply.
#[derive(Debug, Clone, Default)]
pub struct GenerateRequest {
    /// The conversation so far; a leading `system` message is kept when trimming.
    pub messages: Vec<ChatMessage>,
    /// Upper bound on generated tokens.
    pub max_tokens: usize,
    /// How tokens are chosen.
    pub sampling: SamplingParams,
    /// Generation ends before any of these strings; they are not part of the reply.
    pub stop: Vec<String>,
    /// Set it from another thread to stop generating.
    pub cancel: Option<CancelToken>,
}

/// Whether the receiver of a streamed piece wants more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep generating.
    Continue,
    /// Stop now (the reply ends as cancelled).
    Stop,
}

/// Why a reply ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its turn.
    EndOfTurn,
    /// A stop sequence appeared.
    StopSequence(String),
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context window is full.
    ContextFull,
    /// Cancelled by the caller.
    Cancelled,
}

/// A finished (or stopped) reply with its measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The reply text (stop sequence excluded).
    pub text: String,
    /// Generated tokens (sampled, including the end-of-turn token if any).
    pub tokens: usize,
    /// Tokens of the rendered prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens found in the key/value cache from the previous call (not recomputed).
    pub reused_prompt_tokens: usize,
    /// Messages dropped (oldest first) so that the prompt fits the context window.
    pub trimmed_messages: usize,
    /// Why it ended.
    pub finish: FinishReason,
    /// Milliseconds from the call to the first streamed text.
    pub ms_to_first_token: f64,
    /// Milliseconds spent on the prompt (prefill).
    pub prefill_ms: f64,
    /// Generated tokens per second after the first one.
    pub tokens_per_s: f64,
}

/// A shared flag that cancels a generation.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }
    /// Requests cancellation.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The chat-model port that the companion logic uses.
pub trait LanguageModel: Send {
    /// Context window in tokens.
    fn context_length(&self) -> usize;
    /// Tokens of a text under this model's tokenizer.
    fn count_tokens(&self, text: &str) -> usize;
    /// Generates a reply to `request.messages`, calling `on_text` with each new piece of text
    /// (always complete UTF-8) as soon as it is known not to belong to a stop sequence.
    fn generate(
        &mut self,
        request: &GenerateRequest,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation>;
}

/// Prompt tokens are fed to the engine in chunks of this size, bounding the memory of prefill.
const PREFILL_CHUNK: usize = 256;

/// A chat model: tokenizer, chat template and an engine.
pub struct Llm {
    engine: Box<dyn CausalLm>,
    tokenizer: GgufTokenizer,
    template: ChatTemplate,
    /// Tokens whose keys/values are in the engine's cache, in order.
    cached: Vec<u32>,
    logits: Vec<f32>,
}

impl std::fmt::Debug for Llm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llm")
            .field("engine", &self.engine.engine())
            .field("context_length", &self.engine.config().context_length)
            .finish()
    }
}

impl Llm {
    /// A chat model over `engine`, with the tokenizer and template of `model`.
    pub fn new(model: &GgufModel, engine: Box<dyn CausalLm>) -> Result<Self> {
        let tokenizer = GgufTokenizer::from_gguf(model)?;
        let tok_text = |id: Option<u32>| {
            id.map(|i| tokenizer.decode(&[i], false))
                .unwrap_or_default()
        };
        let template = match model.metadata_str("tokenizer.chat_template") {
            Some(src) => {
                ChatTemplate::new(src, &tok_text(tokenizer.bos()), &tok_text(tokenizer.eos()))?
            }
            None => ChatTemplate::chatml(),
        };
        Ok(Self {
            engine,
            tokenizer,
            template,
            cached: Vec::new(),
            logits: Vec::new(),
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &GgufTokenizer {
        &self.tokenizer
    }

    /// The chat template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The engine's name.
    pub fn engine_name(&self) -> &'static str {
        self.engine.engine()
    }

    /// Renders messages with the chat template, ready for the assistant's turn.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String> {
        self.template.render(
            messages
                .iter()
                .map(|m| (m.role.as_str(), m.content.as_str())),
            true,
        )
    }

    /// Renders and tokenizes, dropping the oldest non-system messages (and, as a last resort,
    /// the start of the oldest remaining one) until the prompt leaves `reserve` tokens free.
    fn prompt_tokens(&self, messages: &[ChatMessage], reserve: usize) -> Result<(Vec<u32>, usize)> {
        let budget = self
            .engine
            .config()
            .context_length
            .saturating_sub(reserve)
            .max(1);
        let mut msgs = messages.to_vec();
        let mut trimmed = 0;
        loop {
            let tokens = self.tokenizer.encode(&self.render(&msgs)?)?;
            if tokens.len() <= budget {
                return Ok((tokens, trimmed));
            }
            let first_droppable = usize::from(msgs.first().is_some_and(|m| m.role == "system"));
            // Keep at least the last message; drop whole messages while others remain.
            if msgs.len() > first_droppable + 1 {
                msgs.remove(first_droppable);
                trimmed += 1;
                continue;
            }
            // One message (plus system) is still too long: keep the end of the longest part.
            let over = tokens.len() - budget;
            let idx = (0..msgs.len())
                .max_by_key(|&i| msgs[i].content.len())
                .unwrap_or(0);
            let content = &msgs[idx].content;
            let content_tokens = self.tokenizer.encode(content)?;
            if content_tokens.len() <= over {
                if msgs[idx].content.is_empty() {
                    return Err(InferenceError::InvalidRequest(
                        "the context window is too small for the chat template".into(),
                    ));
                }
                msgs[idx].content.clear();
            } else {
                msgs[idx].content = self.tokenizer.decode(
                    &content_tokens[over + 8.min(content_tokens.len() - over)..],
                    true,
                );
            }
        }
    }

    /// Runs `tokens` through the engine, reusing the cached prefix; leaves the logits of the
    /// last token in `self.logits`. Returns how many tokens were reused.
    ///
    /// The last token always runs on its own: batched and single-token arithmetic round
    /// differently, and this way the logits that sampling sees do not depend on how much of the
    /// prompt was cached (a seeded reply is the same whether or not it is regenerated).
    fn prefill(&mut self, tokens: &[u32]) -> Result<usize> {
        let last = tokens.len() - 1;
        let common = self
            .cached
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count();
        let start = common.min(last);
        self.cached.truncate(start);
        let mut pos = start;
        for chunk in tokens[start..last]
            .chunks(PREFILL_CHUNK)
            .chain(std::iter::once(&tokens[last..]))
        {
            self.engine
                .forward(chunk, pos, &mut self.logits)
                .inspect_err(|_| self.cached.clear())?;
            self.cached.extend_from_slice(chunk);
            pos += chunk.len();
        }
        Ok(start)
    }
}

/// Holds back streamed text that could be the beginning of a stop sequence.
struct StopMatcher<'a> {
    stops: &'a [String],
    text: String,
    emitted: usize,
}

impl<'a> StopMatcher<'a> {
    fn new(stops: &'a [String]) -> Self {
        Self {
            stops,
            text: String::new(),
            emitted: 0,
        }
    }

    /// Adds text. Returns the newly releasable text and the stop sequence if one appeared.
    fn push(&mut self, piece: &str) -> (String, Option<String>) {
        let search_from = self
            .emitted
            .saturating_sub(self.stops.iter().map(String::len).max().unwrap_or(0));
        let search_from = (0..=search_from)
            .rev()
            .find(|&i| self.text.is_char_boundary(i))
            .unwrap_or(0);
        self.text.push_str(piece);
        // Earliest complete stop sequence.
        let found = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| {
                self.text[search_from..]
                    .find(s.as_str())
                    .map(|i| (search_from + i, s))
            })
            .min_by_key(|(i, _)| *i);
        if let Some((at, stop)) = found {
            self.text.truncate(at);
            let out = self.text.get(self.emitted..).unwrap_or("").to_owned();
            self.emitted = self.text.len();
            return (out, Some(stop.clone()));
        }
        // Longest suffix of the text that is a proper prefix of some stop sequence.
        let mut hold = 0;
        for s in self.stops {
            for (i, _) in s.char_indices().skip(1) {
                if i > hold && self.text.ends_with(&s[..i]) {
                    hold = i;
                }
            }
        }
        let release_to = (self.text.len() - hold).max(self.emitted);
        let out = self.text[self.emitted..release_to].to_owned();
        self.emitted = release_to;
        (out, None)
    }

    /// Releases everything still held back.
    fn flush(&mut self) -> String {
        let out = self.text[self.emitted..].to_owned();
        self.emitted = self.text.len();
        out
    }
}

impl LanguageModel for Llm {
    fn context_length(&self) -> usize {
        self.engine.config().context_length
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.tokenizer.count(text)
    }

    fn generate(
        &mut self,
        request: &GenerateRequest,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation> {
        let started = Instant::now();
        if request.messages.is_empty() {
            return Err(InferenceError::InvalidRequest(
                "no messages to reply to".into(),
            ));
        }
        let ctx = self.engine.config().context_length;
        // Room for the reply: what was asked, but never more than half the window.
        let reserve = request.max_tokens.clamp(1, ctx / 2);
        let (prompt, trimmed_messages) = self.prompt_tokens(&request.messages, reserve)?;
        let reused = self.prefill(&prompt)?;
        let prefill_ms = started.elapsed().as_secs_f64() * 1e3;

        let mut sampler = Sampler::new(request.sampling.clone());
        let mut history = prompt.clone();
        let mut decoder = TokenStreamDecoder::new();
        let mut stops = StopMatcher::new(&request.stop);
        let mut text = String::new();
        let mut first_text_at: Option<Instant> = None;
        let mut generated = 0usize;
        let mut emit = |piece: &str, text: &mut String, first: &mut Option<Instant>| -> Flow {
            if piece.is_empty() {
                return Flow::Continue;
            }
            first.get_or_insert_with(Instant::now);
            text.push_str(piece);
            on_text(piece)
        };

        let finish = loop {
            if request
                .cancel
                .as_ref()
                .is_some_and(CancelToken::is_cancelled)
            {
                break FinishReason::Cancelled;
            }
            if generated >= request.max_tokens {
                break FinishReason::MaxTokens;
            }
            let token = sampler.sample(&mut self.logits, &history);
            generated += 1;
            if Some(token) == self.tokenizer.eos() || self.tokenizer.is_special(token) {
                break FinishReason::EndOfTurn;
            }
            history.push(token);
            if let Some(piece) = decoder.push(&self.tokenizer, token) {
                let (out, stop) = stops.push(&piece);
                let flow = emit(&out, &mut text, &mut first_text_at);
                if let Some(stop) = stop {
                    break FinishReason::StopSequence(stop);
                }
                if flow == Flow::Stop {
                    break FinishReason::Cancelled;
                }
            }
            if self.cached.len() + 1 > ctx {
                break FinishReason::ContextFull;
            }
            let pos = self.cached.len();
            self.engine
                .forward(&[token], pos, &mut self.logits)
                .inspect_err(|_| self.cached.clear())?;
            self.cached.push(token);
        };
        if !matches!(finish, FinishReason::StopSequence(_)) {
            if let Some(rest) = decoder.finish() {
                let (out, _) = stops.push(&rest);
                emit(&out, &mut text, &mut first_text_at);
            }
            let rest = stops.flush();
            emit(&rest, &mut text, &mut first_text_at);
        }

        let now = Instant::now();
        let first = first_text_at.unwrap_or(now);
        let decode_s = now.duration_since(first).as_secs_f64();
        Ok(Generation {
            text,
            tokens: generated,
            prompt_tokens: prompt.len(),
            reused_prompt_tokens: reused,
            trimmed_messages,
            finish,
            ms_to_first_token: first.duration_since(started).as_secs_f64() * 1e3,
            prefill_ms,
            tokens_per_s: if decode_s > 0.0 && generated > 1 {
                (generated - 1) as f64 / decode_s
            } else {
                0.0
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, Option<String>) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = Vec::new();
        for p in pieces {
            let (o, stop) = m.push(p);
            out.push(o);
            if stop.is_some() {
                return (out, stop);
            }
        }
        out.push(m.flush());
        (out, None)
    }

    #[test]
    fn stop_sequence_split_across_pieces_is_never_streamed() {
        let (out, stop) = run(&["User:"], &["Hello", " Us", "er", ": hi"]);
        assert_eq!(out.concat(), "Hello ");
        assert_eq!(stop.as_deref(), Some("User:"));
        assert_eq!(
            out[1], " ",
            "\"Us\" is held back while it may start the stop sequence; the space is not"
        );
    }

    #[test]
    fn held_back_text_is_released_when_it_diverges() {
        let (out, stop) = run(&["User:"], &["a Us", "ual day"]);
        assert_eq!(stop, None);
        assert_eq!(out.concat(), "a Usual day");
    }

    #[test]
    fn without_stops_everything_streams_immediately() {
        let (out, _) = run(&[], &["ab", "cd"]);
        assert_eq!(out, vec!["ab", "cd", ""]);
    }

    #[test]
    fn multibyte_text_near_stops_is_safe() {
        let (out, stop) = run(&["ü!"], &["grüß ü", "!x"]);
        assert_eq!(out.concat(), "grüß ");
        assert_eq!(stop.as_deref(), Some("ü!"));
    }
}
