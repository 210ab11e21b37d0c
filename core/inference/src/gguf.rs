//! A GGUF file held in memory: metadata, model configuration and tensor access.

use std::io::Cursor;
use std::sync::Arc;

use candle_core::Device;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};

use crate::{InferenceError, Result};

/// Shape and limits of a llama-architecture model, read from GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// `general.architecture` (only `llama` is supported).
    pub architecture: String,
    /// `general.name`, if present.
    pub name: Option<String>,
    /// Vocabulary size (rows of the token embedding).
    pub vocab_size: usize,
    /// Context window in tokens that the engine allocates (may be below the trained one).
    pub context_length: usize,
    /// Context window the model was trained for.
    pub trained_context_length: usize,
    /// Hidden size.
    pub embedding_length: usize,
    /// Number of transformer blocks.
    pub block_count: usize,
    /// Attention heads.
    pub head_count: usize,
    /// Key/value heads (grouped-query attention).
    pub head_count_kv: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Hidden size of the feed-forward network.
    pub feed_forward_length: usize,
    /// RoPE base frequency.
    pub rope_freq_base: f32,
    /// Dimensions rotated by RoPE.
    pub rope_dim: usize,
    /// Epsilon of the RMS norms.
    pub rms_norm_eps: f32,
}

/// Default context window allocated by engines: enough for a long chat on a small device
/// while keeping the key/value cache small. The prompt builder trims to stay inside it.
pub const DEFAULT_CONTEXT_LENGTH: usize = 4096;

/// A parsed GGUF model file kept in memory.
#[derive(Clone)]
pub struct GgufModel {
    content: Arc<Content>,
    bytes: Arc<[u8]>,
}

impl std::fmt::Debug for GgufModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufModel")
            .field("bytes", &self.bytes.len())
            .field("tensors", &self.content.tensor_infos.len())
            .finish()
    }
}

impl GgufModel {
    /// Parses a GGUF file from its bytes.
    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>) -> Result<Self> {
        let bytes: Arc<[u8]> = bytes.into();
        let content = Content::read(&mut Cursor::new(&bytes[..]))
            .map_err(|e| InferenceError::InvalidModel(format!("not a readable GGUF file: {e}")))?;
        let model = Self {
            content: Arc::new(content),
            bytes,
        };
        // Every tensor must lie inside the file: a truncated download fails here, not later.
        for (name, info) in &model.content.tensor_infos {
            model.tensor_range(name, info.ggml_dtype, info.shape.elem_count(), info.offset)?;
        }
        Ok(model)
    }

    /// Reads and parses a GGUF file.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| InferenceError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(bytes)
    }

    /// The parsed header (metadata and tensor infos).
    pub fn content(&self) -> &Content {
        &self.content
    }

    /// A metadata value.
    pub fn metadata(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// A string metadata value.
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        self.metadata(key)
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
    }

    /// An integer metadata value (any integer type).
    pub fn metadata_u64(&self, key: &str) -> Option<u64> {
        let v = self.metadata(key)?;
        v.to_u64()
            .ok()
            .or_else(|| v.to_u32().ok().map(u64::from))
            .or_else(|| v.to_i32().ok().and_then(|x| u64::try_from(x).ok()))
            .or_else(|| v.to_u16().ok().map(u64::from))
            .or_else(|| v.to_u8().ok().map(u64::from))
    }

    fn required_usize(&self, key: &str) -> Result<usize> {
        self.metadata_u64(key)
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| InferenceError::InvalidModel(format!("metadata key {key} is missing")))
    }

    /// The model configuration, with the engine context window capped at `max_context`.
    pub fn config(&self, max_context: usize) -> Result<ModelConfig> {
        let architecture = self
            .metadata_str("general.architecture")
            .unwrap_or("")
            .to_owned();
        if architecture != "llama" {
            return Err(InferenceError::Unsupported(format!(
                "architecture {architecture:?} (only llama-architecture GGUF models are supported)"
            )));
        }
        let a = |k: &str| format!("llama.{k}");
        let embedding_length = self.required_usize(&a("embedding_length"))?;
        let head_count = self.required_usize(&a("attention.head_count"))?;
        let head_count_kv = self.required_usize(&a("attention.head_count_kv"))?;
        if head_count == 0 || head_count_kv == 0 || head_count % head_count_kv != 0 {
            return Err(InferenceError::InvalidModel(format!(
                "bad head counts {head_count}/{head_count_kv}"
            )));
        }
        let head_dim = embedding_length / head_count;
        let trained_context_length = self.required_usize(&a("context_length"))?;
        let vocab_size = self
            .content
            .tensor_infos
            .get("token_embd.weight")
            .map(|t| t.shape.dims()[0])
            .ok_or_else(|| InferenceError::InvalidModel("token_embd.weight is missing".into()))?;
        let f32_of = |k: &str| self.metadata(k).and_then(|v| v.to_f32().ok());
        Ok(ModelConfig {
            architecture,
            name: self.metadata_str("general.name").map(str::to_owned),
            vocab_size,
            context_length: trained_context_length.min(max_context.max(16)),
            trained_context_length,
            embedding_length,
            block_count: self.required_usize(&a("block_count"))?,
            head_count,
            head_count_kv,
            head_dim,
            feed_forward_length: self.required_usize(&a("feed_forward_length"))?,
            rope_freq_base: f32_of(&a("rope.freq_base")).unwrap_or(10_000.0),
            rope_dim: self
                .metadata_u64(&a("rope.dimension_count"))
                .map_or(head_dim, |v| v as usize),
            rms_norm_eps: f32_of(&a("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
        })
    }

    fn tensor_range(
        &self,
        name: &str,
        dtype: GgmlDType,
        elems: usize,
        offset: u64,
    ) -> Result<std::ops::Range<usize>> {
        let bad = || {
            InferenceError::InvalidModel(format!(
                "tensor {name} lies outside the file (truncated?)"
            ))
        };
        if !elems.is_multiple_of(dtype.block_size()) {
            return Err(InferenceError::InvalidModel(format!(
                "tensor {name} has a partial block"
            )));
        }
        let len = elems / dtype.block_size() * dtype.type_size();
        let start = usize::try_from(self.content.tensor_data_offset + offset).map_err(|_| bad())?;
        let end = start.checked_add(len).ok_or_else(bad)?;
        if end > self.bytes.len() {
            return Err(bad());
        }
        Ok(start..end)
    }

    /// The raw bytes of a tensor, with its type and dimensions (GGUF order reversed, i.e.
    /// `[rows, columns]` for a matrix).
    pub fn raw_tensor(&self, name: &str) -> Result<(GgmlDType, Vec<usize>, &[u8])> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| InferenceError::InvalidModel(format!("tensor {name} is missing")))?;
        let range =
            self.tensor_range(name, info.ggml_dtype, info.shape.elem_count(), info.offset)?;
        Ok((
            info.ggml_dtype,
            info.shape.dims().to_vec(),
            &self.bytes[range],
        ))
    }

    /// Whether the file has this tensor.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// A tensor as a candle `QTensor` (copied out of the file bytes).
    pub fn qtensor(&self, name: &str, device: &Device) -> Result<QTensor> {
        Ok(self
            .content
            .tensor(&mut Cursor::new(&self.bytes[..]), name, device)?)
    }
}
