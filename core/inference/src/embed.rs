//! The [`Embedder`] port and [`BertEmbedder`], sentence embeddings with a BERT encoder on candle
//! (all-MiniLM-L6-v2: mean pooling over tokens, then L2 normalization).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::{InferenceError, Result};

/// Turns texts into fixed-size vectors whose dot product measures similarity.
pub trait Embedder: Send + Sync {
    /// Length of every vector.
    fn dimension(&self) -> usize;
    /// One unit-length vector per text, in order. Empty input gives empty output.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
}

/// Longest input in tokens; longer texts are truncated (sentence-transformers' limit for MiniLM).
pub const MAX_TOKENS: usize = 256;

/// A BERT sentence embedder.
pub struct BertEmbedder {
    model: BertModel,
    tokenizer: Tokenizer,
    dimension: usize,
    device: Device,
}

impl std::fmt::Debug for BertEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertEmbedder")
            .field("dimension", &self.dimension)
            .finish()
    }
}

impl BertEmbedder {
    /// Loads from the bytes of `config.json`, `tokenizer.json` and `model.safetensors`.
    pub fn from_bytes(
        config_json: &[u8],
        tokenizer_json: &[u8],
        safetensors: Vec<u8>,
    ) -> Result<Self> {
        let device = Device::Cpu;
        let config: Config = serde_json::from_slice(config_json)
            .map_err(|e| InferenceError::InvalidModel(format!("BERT config.json: {e}")))?;
        let mut tokenizer = Tokenizer::from_bytes(tokenizer_json)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        let vb = VarBuilder::from_buffered_safetensors(safetensors, DType::F32, &device)
            .map_err(|e| InferenceError::InvalidModel(format!("BERT weights: {e}")))?;
        let model = BertModel::load(vb, &config)
            .map_err(|e| InferenceError::InvalidModel(format!("BERT weights: {e}")))?;
        let dimension = config_hidden_size(config_json)?;
        Ok(Self {
            model,
            tokenizer,
            dimension,
            device,
        })
    }

    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from a directory.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &std::path::Path) -> Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| InferenceError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        Self::from_bytes(
            &read("config.json")?,
            &read("tokenizer.json")?,
            read("model.safetensors")?,
        )
    }

    /// Token-level hidden states and the attention mask of a batch (for heads trained on top).
    pub fn hidden_states(&self, texts: &[&str]) -> Result<(Tensor, Tensor)> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        let n = encodings.len();
        let len = encodings.first().map_or(0, |e| e.len());
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for e in &encodings {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let type_ids = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?;
        Ok((hidden, mask))
    }
}

fn config_hidden_size(config_json: &[u8]) -> Result<usize> {
    serde_json::from_slice::<serde_json::Value>(config_json)
        .ok()
        .and_then(|v| v.get("hidden_size")?.as_u64())
        .map(|v| v as usize)
        .ok_or_else(|| InferenceError::InvalidModel("BERT config.json has no hidden_size".into()))
}

/// Mean of the token vectors where `mask` is 1, then L2-normalized: `(n, len, d) -> (n, d)`.
pub fn mean_pool_normalize(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
    let mean = summed.broadcast_div(&counts)?;
    let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    Ok(mean.broadcast_div(&norm)?)
}

impl Embedder for BertEmbedder {
    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (hidden, mask) = self.hidden_states(texts)?;
        Ok(mean_pool_normalize(&hidden, &mask)?.to_vec2::<f32>()?)
    }
}

/// Cosine similarity of two unit vectors (their dot product).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
