//! The text tokenizer of a GGUF model, built from its metadata with the `tokenizers` crate.

use std::collections::HashMap;

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use crate::gguf::GgufModel;
use crate::{InferenceError, Result};

/// GGUF token types (llama.cpp `llama_token_type`).
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// A byte-level BPE tokenizer reconstructed from `tokenizer.ggml.*` metadata.
///
/// Encoding goes through `tokenizers` (BPE model, byte-level pre-tokenizer, special tokens);
/// decoding for streaming uses a per-token byte table, which is exact for byte-level BPE and
/// lets [`TokenStreamDecoder`] emit only complete UTF-8.
#[derive(Clone)]
pub struct GgufTokenizer {
    inner: Tokenizer,
    /// Raw bytes of every token (special tokens: their text).
    token_bytes: Vec<Vec<u8>>,
    special: Vec<bool>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
}

impl std::fmt::Debug for GgufTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufTokenizer")
            .field("vocab", &self.token_bytes.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

/// GPT-2's reversible map from bytes to printable characters, inverted.
fn unicode_to_byte() -> HashMap<char, u8> {
    let mut bs: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .filter_map(|(b, c)| Some((char::from_u32(c)?, u8::try_from(b).ok()?)))
        .collect()
}

impl GgufTokenizer {
    /// Builds the tokenizer from a model's metadata.
    pub fn from_gguf(model: &GgufModel) -> Result<Self> {
        let bad = |m: &str| InferenceError::Tokenizer(m.to_owned());
        let kind = model.metadata_str("tokenizer.ggml.model").unwrap_or("");
        if kind != "gpt2" {
            return Err(InferenceError::Unsupported(format!(
                "tokenizer model {kind:?} (only byte-level BPE, \"gpt2\", is supported)"
            )));
        }
        let tokens: Vec<String> = model
            .metadata("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .ok_or_else(|| bad("tokenizer.ggml.tokens is missing"))?
            .iter()
            .map(|v| v.to_string().cloned())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad("tokenizer.ggml.tokens holds a non-string"))?;
        let types: Vec<i32> = match model
            .metadata("tokenizer.ggml.token_type")
            .and_then(|v| v.to_vec().ok())
        {
            Some(v) => v.iter().map(|t| t.to_i32().unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        let merges: Vec<(String, String)> = model
            .metadata("tokenizer.ggml.merges")
            .and_then(|v| v.to_vec().ok())
            .ok_or_else(|| bad("tokenizer.ggml.merges is missing"))?
            .iter()
            .filter_map(|v| v.to_string().ok())
            .filter_map(|m| m.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
            .collect();

        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| bad(&format!("cannot build BPE: {e}")))?;

        let byte_level = ByteLevel::new(false, true, true);
        let pre = model
            .metadata_str("tokenizer.ggml.pre")
            .unwrap_or("default");
        let mut tokenizer = Tokenizer::new(bpe);
        // SmolLM (and StarCoder-family) vocabularies split every digit on its own before the
        // byte-level split; see the `Digits(individual_digits = true)` step of their tokenizer.json.
        if matches!(pre, "smollm" | "starcoder" | "refact") {
            let seq = Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                PreTokenizerWrapper::ByteLevel(byte_level),
            ]);
            tokenizer.with_pre_tokenizer(Some(seq));
        } else {
            tokenizer.with_pre_tokenizer(Some(byte_level));
        }
        tokenizer.with_decoder(Some(byte_level));

        let special: Vec<bool> = types
            .iter()
            .map(|&t| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
            .chain(std::iter::repeat(false))
            .take(tokens.len())
            .collect();
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&special)
            .filter(|(_, s)| **s)
            .map(|(t, _)| AddedToken::from(t.clone(), true))
            .collect();
        tokenizer.add_special_tokens(&added);

        let map = unicode_to_byte();
        let token_bytes = tokens
            .iter()
            .zip(&special)
            .map(|(t, &s)| {
                if s {
                    t.as_bytes().to_vec()
                } else {
                    // Characters outside the byte map cannot occur in a byte-level vocabulary;
                    // keep them as UTF-8 rather than failing.
                    t.chars()
                        .flat_map(|c| match map.get(&c) {
                            Some(&b) => vec![b],
                            None => c.to_string().into_bytes(),
                        })
                        .collect()
                }
            })
            .collect();

        let id = |k: &str| model.metadata_u64(k).and_then(|v| u32::try_from(v).ok());
        Ok(Self {
            inner: tokenizer,
            token_bytes,
            special,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            add_bos: model
                .metadata("tokenizer.ggml.add_bos_token")
                .and_then(|v| v.to_bool().ok())
                .unwrap_or(false),
        })
    }

    /// Encodes text; special-token text such as `<|im_start|>` maps to its id. Adds the BOS
    /// token when the model asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Number of tokens of `text` (without BOS).
    pub fn count(&self, text: &str) -> usize {
        self.inner
            .encode_fast(text, false)
            .map_or(text.len() / 3, |e| e.len())
    }

    /// Decodes ids to text; invalid UTF-8 (a cut multi-byte character) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            if skip_special && self.is_special(id) {
                continue;
            }
            if let Some(b) = self.token_bytes.get(id as usize) {
                bytes.extend_from_slice(b);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The id of a token string (special tokens included).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Whether `id` is a control/special token (end of turn, start of turn, ...).
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// End-of-sequence id.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// Beginning-of-sequence id.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// The raw bytes of a token.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

/// Turns a stream of token ids into text pieces that are always complete UTF-8.
#[derive(Debug, Default)]
pub struct TokenStreamDecoder {
    pending: Vec<u8>,
}

impl TokenStreamDecoder {
    /// A decoder with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token; returns the text that became complete, if any.
    pub fn push(&mut self, tokenizer: &GgufTokenizer, id: u32) -> Option<String> {
        self.pending.extend_from_slice(tokenizer.token_bytes(id));
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            // A byte sequence that can never become valid: flush it lossily.
            Err(_) => {
                let s = String::from_utf8_lossy(&self.pending).into_owned();
                self.pending.clear();
                return Some(s);
            }
        };
        if valid == 0 {
            return None;
        }
        let rest = self.pending.split_off(valid);
        let done = std::mem::replace(&mut self.pending, rest);
        String::from_utf8(done).ok()
    }

    /// Whatever is left (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        Some(s)
    }
}
