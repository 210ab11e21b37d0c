//! Prompt assembly and time to first token as a conversation grows: 10, 100, 1,000 and 10,000
//! messages, on a real SQLite file with the real tokenizer and the real chat model.
//!
//! ```text
//! cargo bench -p nexus-app --features native --bench prompt
//! ```
//!
//! For each size it grows one conversation exchange by exchange through the
//! `ConversationEngine` (so the rolling summary rolls as it does for users), with a stand-in
//! model that counts tokens with the real GGUF tokenizer but answers instantly with scripted
//! replies (generating 5,000 real replies would take hours and measure the model, not the
//! assembly). Then it measures:
//!
//! * **assemble**: `ConversationEngine::prepare` (store reads, rolling summary, memory-free
//!   prompt assembly with real token counts), median and 95th percentile of 200 runs;
//! * **naive**: what assembly costs without a summary: read every message from the store and
//!   keep the newest that fit the same budget (the baseline of apps that load the whole
//!   history), median of 20 runs;
//! * **ttft**: two real replies of the native chat model (`max_tokens` 8, temperature 0) in
//!   that conversation; the time to the first token of the second one (the first fills the
//!   model's cache; the second is what a user sees on each new message).

use std::time::Instant;

use nexus_app::native::{self, NativeConfig};
use nexus_common::{ConversationId, SystemClock};
use nexus_companion::persona::{CompanionDraft, create};
use nexus_companion::prompt::assemble;
use nexus_companion::{ChatSettings, ConversationEngine};
use nexus_inference::{
    FinishReason, Flow, GenerateRequest, Generation, LanguageModel, Llm, Result as LlmResult,
};
use nexus_store::Store;

/// Real token counts, instant scripted answers.
struct Tokenizing {
    llm: Llm,
    n: usize,
}

const REPLIES: &[&str] = &[
    "That sounds lovely. How did it make you feel?",
    "I remember you mentioned that before. Tell me more!",
    "Oh no, I'm sorry to hear that. Do you want to talk about it?",
    "Ha, that's a good one. What happened next?",
];

const USER: &[&str] = &[
    "Today I went for a long walk by the river and saw two herons.",
    "Work was stressful, my manager moved the deadline again.",
    "I'm thinking about learning Spanish before my trip to Mexico in the spring.",
    "My sister Anna called, she is getting married in June!",
    "I cooked a mushroom risotto tonight and it actually turned out great.",
    "Couldn't sleep well, too much coffee I guess.",
];

impl LanguageModel for Tokenizing {
    fn context_length(&self) -> usize {
        self.llm.context_length()
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.llm.count_tokens(text)
    }

    fn generate(
        &mut self,
        request: &GenerateRequest,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> LlmResult<Generation> {
        self.n += 1;
        let text = REPLIES[self.n % REPLIES.len()].to_owned();
        on_text(&text);
        Ok(Generation {
            tokens: self.llm.count_tokens(&text),
            prompt_tokens: request
                .messages
                .iter()
                .map(|m| self.llm.count_tokens(&m.content))
                .sum(),
            text,
            reused_prompt_tokens: 0,
            trimmed_messages: 0,
            finish: FinishReason::EndOfTurn,
            prefill_ms: 0.0,
            ms_to_first_token: 0.0,
            tokens_per_s: 0.0,
        })
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn main() {
    let gguf = nexus_testing::models::chat_gguf();
    let models_dir = gguf
        .parent()
        .and_then(std::path::Path::parent)
        .expect("cache layout")
        .to_path_buf();
    let sizes: Vec<usize> = std::env::var("NEXUS_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100, 1_000, 10_000]);
    println!(
        "| messages | assemble p50 ms | assemble p95 ms | naive p50 ms | prompt tokens | summarized messages | ttft ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = NativeConfig {
            threads: 2,
            ..NativeConfig::new(dir.path().to_path_buf(), models_dir.clone())
        };
        let llm = native::load_chat_model(&config).expect("chat model");
        let store = native::open_store(dir.path()).expect("store");
        let clock = SystemClock;
        let settings = ChatSettings {
            max_reply_tokens: 8,
            sampling: nexus_inference::SamplingParams {
                temperature: 0.0,
                ..Default::default()
            },
            ..ChatSettings::default()
        };
        let companion =
            create(&store, &clock, &CompanionDraft::default_companion()).expect("companion");
        let engine = ConversationEngine::new(&store, &clock, settings.clone());
        let conv = engine.start_conversation(&companion).expect("conversation");
        let id: ConversationId = conv.id;
        let mut llm = {
            let mut fake = Tokenizing { llm, n: 0 };
            // Each exchange adds two messages (the greeting is the first).
            for i in 0..(n.saturating_sub(1) / 2) {
                let text = format!("{} ({i})", USER[i % USER.len()]);
                engine
                    .reply(&mut fake, id, &text, None, &mut |_| Flow::Continue)
                    .expect("exchange");
            }
            fake.llm
        };
        let count = |s: &str| llm.count_tokens(s);
        let question = "What do you think I should do this weekend?";
        let mut times = Vec::new();
        let mut tokens = 0;
        for _ in 0..200 {
            let t = Instant::now();
            let p = engine
                .prepare(&conv, &companion, question, llm.context_length(), &count)
                .expect("prepare");
            times.push(t.elapsed().as_secs_f64() * 1e3);
            tokens = p.plan.estimated_tokens;
        }
        times.sort_by(f64::total_cmp);
        let mut naive = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let all = store.messages(id, None).expect("messages");
            let p = assemble(
                "You are Nova.",
                &all,
                question,
                llm.context_length() - settings.max_reply_tokens,
                &count,
            );
            std::hint::black_box(p);
            naive.push(t.elapsed().as_secs_f64() * 1e3);
        }
        naive.sort_by(f64::total_cmp);
        let covered = store
            .latest_summary(id)
            .expect("summary")
            .map_or(0, |s| s.covered_messages);
        let mut ttft = 0.0;
        for q in [question, "And what about next weekend?"] {
            let r = engine
                .reply(&mut llm, id, q, None, &mut |_| Flow::Continue)
                .expect("real reply");
            ttft = r.generation.ms_to_first_token;
        }
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {tokens} | {covered} | {ttft:.0} |",
            store.message_count(id).expect("count") - 4,
            pct(&times, 0.5),
            pct(&times, 0.95),
            pct(&naive, 0.5),
        );
    }
}
