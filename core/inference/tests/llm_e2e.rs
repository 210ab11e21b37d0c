//! End-to-end behaviour of the chat model with the real SmolLM2 weights, on every engine.

use std::sync::OnceLock;

use nexus_inference::candle_llama::WeightFormat;
use nexus_inference::*;

fn gguf() -> &'static GgufModel {
    static MODEL: OnceLock<GgufModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        GgufModel::open(&nexus_testing::models::chat_gguf()).expect("load the chat model")
    })
}

/// Makes an engine with a context window of this many tokens.
type MakeEngine = Box<dyn Fn(usize) -> Box<dyn CausalLm>>;

/// Every engine this platform has.
fn engines() -> Vec<(&'static str, MakeEngine)> {
    let mut v: Vec<(&'static str, MakeEngine)> = vec![(
        "candle",
        Box::new(|ctx| {
            Box::new(CandleLlama::new(gguf(), ctx, WeightFormat::FastestCandle).expect("candle"))
        }),
    )];
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    v.push((
        "native",
        Box::new(|ctx| Box::new(native::NativeLlama::new(gguf(), ctx, 2).expect("native"))),
    ));
    v
}

fn llm(make: &dyn Fn(usize) -> Box<dyn CausalLm>, ctx: usize) -> Llm {
    Llm::new(gguf(), make(ctx)).expect("llm")
}

fn ask(text: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", "You are a helpful assistant."),
        ChatMessage::new("user", text),
    ]
}

fn greedy(messages: Vec<ChatMessage>, max_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        messages,
        max_tokens,
        sampling: SamplingParams::greedy(),
        ..Default::default()
    }
}

#[test]
fn greedy_decoding_is_identical_across_runs_and_valid_utf8() {
    for (name, make) in engines() {
        let req = greedy(ask("Name three fruits and say something about each."), 48);
        let mut streamed = String::new();
        let a = llm(&*make, 1024)
            .generate(&req, &mut |p| {
                streamed.push_str(p);
                Flow::Continue
            })
            .expect("first run");
        let b = llm(&*make, 1024)
            .generate(&req, &mut |_| Flow::Continue)
            .expect("second run");
        assert_eq!(a.text, b.text, "{name}: greedy output differs between runs");
        assert_eq!(
            streamed, a.text,
            "{name}: the streamed pieces add up to the reply"
        );
        assert!(
            !a.text.contains('\u{FFFD}'),
            "{name}: no broken UTF-8: {:?}",
            a.text
        );
        assert!(a.tokens > 10, "{name}: it says something: {:?}", a.text);
        // And the answer makes sense for this small model.
        let capital = llm(&*make, 1024)
            .generate(
                &greedy(ask("What is the capital of France?"), 24),
                &mut |_| Flow::Continue,
            )
            .expect("capital");
        assert!(capital.text.contains("Paris"), "{name}: {:?}", capital.text);
        assert_eq!(capital.finish, FinishReason::EndOfTurn, "{name}");
    }
}

#[test]
fn a_stop_sequence_ends_generation_before_it() {
    for (name, make) in engines() {
        let mut model = llm(&*make, 1024);
        let base = greedy(ask("Count from 1 to 20, separated by commas."), 80);
        let full = model
            .generate(&base, &mut |_| Flow::Continue)
            .expect("full");
        let stop = "5".to_string();
        assert!(
            full.text.contains(&stop),
            "{name}: the model counts: {:?}",
            full.text
        );
        let req = GenerateRequest {
            stop: vec![stop.clone()],
            ..base
        };
        let mut streamed = String::new();
        let g = model
            .generate(&req, &mut |p| {
                streamed.push_str(p);
                Flow::Continue
            })
            .expect("stopped");
        assert_eq!(g.finish, FinishReason::StopSequence(stop.clone()), "{name}");
        let cut = full.text.find(&stop).expect("present");
        assert_eq!(
            g.text,
            full.text[..cut],
            "{name}: the reply ends right before the stop sequence"
        );
        assert_eq!(
            streamed, g.text,
            "{name}: no part of the stop sequence was streamed"
        );
        assert!(g.tokens < full.tokens, "{name}");
    }
}

#[test]
fn cancellation_stops_within_a_few_tokens() {
    for (name, make) in engines() {
        let mut model = llm(&*make, 1024);
        let cancel = CancelToken::new();
        let req = GenerateRequest {
            cancel: Some(cancel.clone()),
            ..greedy(ask("Write a long story about a lighthouse keeper."), 200)
        };
        let mut pieces = 0;
        let g = model
            .generate(&req, &mut |_| {
                pieces += 1;
                if pieces == 5 {
                    cancel.cancel();
                }
                Flow::Continue
            })
            .expect("cancelled");
        assert_eq!(g.finish, FinishReason::Cancelled, "{name}");
        assert!(g.tokens <= 8, "{name}: stopped after {} tokens", g.tokens);

        // The callback can stop it too.
        let g = model
            .generate(&greedy(ask("Write a long story."), 200), &mut |_| {
                Flow::Stop
            })
            .expect("stopped by callback");
        assert_eq!(g.finish, FinishReason::Cancelled, "{name}");
        assert!(g.tokens <= 3, "{name}: {}", g.tokens);
    }
}

#[test]
fn a_conversation_longer_than_the_context_window_is_trimmed_not_fatal() {
    for (name, make) in engines() {
        let mut model = llm(&*make, 256);
        let mut messages = vec![ChatMessage::new("system", "You are a helpful assistant.")];
        for i in 0..60 {
            messages.push(ChatMessage::new(
                "user",
                format!("Message {i}: tell me about the sea."),
            ));
            messages.push(ChatMessage::new(
                "assistant",
                "The sea is vast and deep and full of life.",
            ));
        }
        messages.push(ChatMessage::new("user", "What is the capital of France?"));
        let g = model
            .generate(&greedy(messages, 32), &mut |_| Flow::Continue)
            .expect("trimmed");
        assert!(
            g.trimmed_messages > 50,
            "{name}: {} trimmed",
            g.trimmed_messages
        );
        assert!(g.prompt_tokens <= 256 - 32, "{name}: {}", g.prompt_tokens);

        // A single message longer than the window is cut from the start.
        let huge = "word ".repeat(5000) + "What is the capital of France?";
        let g = model
            .generate(&greedy(ask(&huge), 16), &mut |_| Flow::Continue)
            .expect("huge");
        assert!(g.prompt_tokens <= 256, "{name}");

        // Generation itself stops at the end of the window.
        let mut small = llm(&*make, 64);
        let g = small
            .generate(
                &greedy(ask("Write a long story about the sea."), 1000),
                &mut |_| Flow::Continue,
            )
            .expect("fills the window");
        assert!(
            matches!(
                g.finish,
                FinishReason::ContextFull | FinishReason::EndOfTurn
            ),
            "{name}: {:?}",
            g.finish
        );
    }
}

#[test]
fn the_prompt_prefix_is_reused_and_gives_the_same_reply() {
    for (name, make) in engines() {
        let mut warm = llm(&*make, 1024);
        let mut history = ask("Hi! My name is Sam.");
        let first = warm
            .generate(&greedy(history.clone(), 24), &mut |_| Flow::Continue)
            .expect("first");
        history.push(ChatMessage::new("assistant", first.text.clone()));
        history.push(ChatMessage::new("user", "What is my name?"));
        let second = warm
            .generate(&greedy(history.clone(), 24), &mut |_| Flow::Continue)
            .expect("second");
        assert!(
            second.reused_prompt_tokens > 20,
            "{name}: reused {}",
            second.reused_prompt_tokens
        );
        let cold = llm(&*make, 1024)
            .generate(&greedy(history, 24), &mut |_| Flow::Continue)
            .expect("cold");
        assert_eq!(cold.reused_prompt_tokens, 0);
        assert_eq!(
            second.text, cold.text,
            "{name}: a reused cache changes nothing"
        );
    }
}

#[test]
fn sampling_with_a_seed_is_reproducible_and_differs_between_seeds() {
    let (_, make) = &engines()[0];
    let req = |seed| GenerateRequest {
        sampling: SamplingParams {
            temperature: 1.0,
            seed: Some(seed),
            ..SamplingParams::default()
        },
        ..greedy(ask("Tell me a short poem about autumn."), 24)
    };
    let mut model = llm(&**make, 512);
    let a = model.generate(&req(1), &mut |_| Flow::Continue).expect("a");
    let b = model.generate(&req(1), &mut |_| Flow::Continue).expect("b");
    let c = model.generate(&req(2), &mut |_| Flow::Continue).expect("c");
    assert_eq!(a.text, b.text);
    assert_ne!(a.text, c.text);
}

#[test]
fn the_tokenizer_maps_special_tokens_and_round_trips_text() {
    let tok = GgufTokenizer::from_gguf(gguf()).expect("tokenizer");
    assert_eq!(tok.token_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_id("<|im_end|>"), Some(2));
    assert_eq!(tok.eos(), Some(2));
    let ids = tok
        .encode("<|im_start|>user\nHi<|im_end|>\n")
        .expect("encode");
    assert_eq!(
        ids.first(),
        Some(&1),
        "the special token text maps to its id"
    );
    assert!(ids.contains(&2));
    assert!(tok.is_special(1) && !tok.is_special(ids[1]));
    // Digits are split one by one, as SmolLM's own tokenizer does.
    assert_eq!(tok.encode("2024").expect("digits").len(), 4);
    for text in [
        "Hello, world!",
        "  leading spaces and\ttabs\nnew lines",
        "Grüße aus Köln — ça va? 日本語のテキスト 🙂👍🏽",
        "code: fn main() { println!(\"{}\", 1 + 2); }",
    ] {
        let ids = tok.encode(text).expect("encode");
        assert_eq!(tok.decode(&ids, false), text, "round trip");
        // Streaming decoding gives the same text, only in complete characters.
        let mut d = TokenStreamDecoder::new();
        let mut s = String::new();
        for &id in &ids {
            if let Some(p) = d.push(&tok, id) {
                assert!(!p.contains('\u{FFFD}'));
                s.push_str(&p);
            }
        }
        s.extend(d.finish());
        assert_eq!(s, text);
    }
}

#[test]
fn bad_requests_are_errors_not_panics() {
    let (_, make) = &engines()[0];
    let mut model = llm(&**make, 256);
    assert!(
        model
            .generate(&greedy(vec![], 8), &mut |_| Flow::Continue)
            .is_err()
    );
    let mut engine = make(64);
    let mut logits = Vec::new();
    assert!(engine.forward(&[], 0, &mut logits).is_err());
    assert!(
        engine.forward(&[1, 2], 5, &mut logits).is_err(),
        "position beyond the cache"
    );
    assert!(
        engine.forward(&[u32::MAX], 0, &mut logits).is_err(),
        "unknown token id"
    );
    assert!(
        engine.forward(&vec![1; 65], 0, &mut logits).is_err(),
        "longer than the window"
    );
    assert!(
        engine.forward(&[1, 2, 3], 0, &mut logits).is_ok(),
        "still usable after errors"
    );
    assert!(GgufModel::from_bytes(b"GGUF garbage".to_vec()).is_err());
    let bytes = std::fs::read(nexus_testing::models::chat_gguf()).expect("read");
    let truncated = GgufModel::from_bytes(bytes[..bytes.len() / 2].to_vec());
    assert!(truncated.is_err(), "a truncated file is rejected at load");
}
