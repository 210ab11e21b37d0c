//! # nexus-inference
//!
//! Everything that turns weights into text or vectors, behind two ports:
//!
//! * [`LanguageModel`]: chat-style generation, streamed token by token, with sampling,
//!   stop sequences, cancellation and context-window protection. [`Llm`] implements it over any
//!   [`CausalLm`] forward pass: [`CandleLlama`] (portable, also in wasm) or, on x86_64 and
//!   aarch64, the hand-tuned native backend in [`native`].
//! * [`Embedder`]: sentence embeddings; [`BertEmbedder`] runs all-MiniLM-L6-v2 with candle.
//!
//! The tokenizer is built from the GGUF metadata with the `tokenizers` crate
//! ([`GgufTokenizer`]); the chat template comes from the GGUF metadata too ([`ChatTemplate`]).
//!
//! Must not depend on: storage, the companion logic, any platform API or network. Reading model
//! files is done by the caller or through `std::fs` helpers that are not compiled for wasm.

mod error;
mod gguf;
mod llm;
mod sampling;
mod template;
mod tokenizer;

pub mod candle_llama;
pub mod embed;
#[cfg(all(
    feature = "native",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub mod native;

pub use candle_llama::CandleLlama;
pub use embed::{BertEmbedder, Embedder};
pub use error::{InferenceError, Result};
pub use gguf::{DEFAULT_CONTEXT_LENGTH, GgufModel, ModelConfig};
pub use llm::{
    CancelToken, ChatMessage, FinishReason, Flow, GenerateRequest, Generation, LanguageModel, Llm,
};
pub use sampling::{Sampler, SamplingParams, argmax as sampling_argmax};
pub use template::ChatTemplate;
pub use tokenizer::{GgufTokenizer, TokenStreamDecoder};

/// A decoder-only transformer forward pass with its own key/value cache.
///
/// This is the seam between the generic generation loop ([`Llm`]) and the engines that do the
/// arithmetic. An implementation keeps the keys and values of the tokens it has seen.
pub trait CausalLm: Send {
    /// Shape and limits of the model.
    fn config(&self) -> &ModelConfig;

    /// Runs `tokens` at positions `pos..pos + tokens.len()` and writes the logits of the LAST
    /// token into `logits` (resized to the vocabulary size).
    ///
    /// Before running, the cache is truncated to its first `pos` entries: `pos` may be anything
    /// from 0 to the number of cached tokens, which lets the caller reuse a shared prompt prefix
    /// or rewind. `pos + tokens.len()` must not exceed `config().context_length`; `tokens` must
    /// not be empty and every id must be below the vocabulary size.
    fn forward(&mut self, tokens: &[u32], pos: usize, logits: &mut Vec<f32>) -> Result<()>;

    /// A short name of the engine for logs and benchmarks, for example `"candle"`.
    fn engine(&self) -> &'static str;
}
