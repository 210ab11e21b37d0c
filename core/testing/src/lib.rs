//! # nexus-testing
//!
//! Fakes and fixtures shared by the tests of every crate: clocks that tests control, a scripted
//! language model, and access to the real model weights (fetched once through the project's own
//! fetch step and cached). A dev-dependency only: never a dependency of shipped code.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use nexus_common::{Clock, Timestamp};
use nexus_inference::{FinishReason, Flow, GenerateRequest, Generation, LanguageModel, Result};

#[cfg(not(target_arch = "wasm32"))]
pub mod models;

/// A clock that stands still until told to move.
#[derive(Debug)]
pub struct FixedClock(AtomicI64);

impl FixedClock {
    /// A clock at `ms` milliseconds since the epoch.
    pub fn at(ms: i64) -> Self {
        Self(AtomicI64::new(ms))
    }
    /// Moves the clock forward.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// A clock that advances by a fixed step on every reading (distinct, ordered timestamps).
#[derive(Debug)]
pub struct SteppingClock {
    next: AtomicI64,
    step: i64,
}

impl SteppingClock {
    /// Starts at `start` ms and advances `step` ms per reading.
    pub fn new(start: i64, step: i64) -> Self {
        Self {
            next: AtomicI64::new(start),
            step,
        }
    }
}

impl Clock for SteppingClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.next.fetch_add(self.step, Ordering::SeqCst))
    }
}

/// A language model that replies with scripted texts (word by word) and records every request.
#[derive(Debug, Default)]
pub struct FakeLlm {
    replies: Mutex<Vec<String>>,
    /// Every request received, in order.
    pub requests: Mutex<Vec<GenerateRequest>>,
    /// Context window it claims.
    pub context: usize,
}

impl FakeLlm {
    /// Replies with `replies` in order, then echoes the last user message.
    pub fn new(replies: &[&str]) -> Self {
        Self {
            replies: Mutex::new(replies.iter().rev().map(|s| s.to_string()).collect()),
            requests: Mutex::new(Vec::new()),
            context: 2048,
        }
    }

    /// The requests received so far.
    pub fn recorded(&self) -> Vec<GenerateRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl LanguageModel for FakeLlm {
    fn context_length(&self) -> usize {
        self.context
    }

    /// One token per whitespace-separated word (plus one), deterministic.
    fn count_tokens(&self, text: &str) -> usize {
        text.split_whitespace().count() + 1
    }

    fn generate(
        &mut self,
        request: &GenerateRequest,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation> {
        if let Ok(mut r) = self.requests.lock() {
            r.push(request.clone());
        }
        let reply = self
            .replies
            .lock()
            .ok()
            .and_then(|mut r| r.pop())
            .unwrap_or_else(|| {
                let last = request.messages.iter().rev().find(|m| m.role == "user");
                format!("You said: {}", last.map_or("", |m| m.content.as_str()))
            });
        let mut text = String::new();
        let mut finish = FinishReason::EndOfTurn;
        for (i, word) in reply.split_inclusive(' ').enumerate() {
            if i >= request.max_tokens {
                finish = FinishReason::MaxTokens;
                break;
            }
            if request.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
                finish = FinishReason::Cancelled;
                break;
            }
            text.push_str(word);
            if on_text(word) == Flow::Stop {
                finish = FinishReason::Cancelled;
                break;
            }
        }
        let prompt_tokens = request
            .messages
            .iter()
            .map(|m| self.count_tokens(&m.content) + 4)
            .sum();
        Ok(Generation {
            tokens: text.split_whitespace().count() + 1,
            text,
            prompt_tokens,
            reused_prompt_tokens: 0,
            trimmed_messages: 0,
            finish,
            ms_to_first_token: 1.0,
            prefill_ms: 1.0,
            tokens_per_s: 100.0,
        })
    }
}
