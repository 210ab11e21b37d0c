//! [`CandleLlama`]: the portable llama forward pass on candle (CPU, also compiled to wasm).
//!
//! Adapted from `candle_transformers::models::quantized_llama` (MIT/Apache-2.0), with a key/value
//! cache that can be truncated (for prompt-prefix reuse) and optional re-quantization of the
//! weights at load time: candle has SIMD kernels for Q4_0/Q8_0/K-quants but not for Q4_1, so the
//! shipped Q4_1 weights run several times faster as Q8_0.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::Embedding;
use candle_transformers::quantized_nn::RmsNorm;

use crate::{CausalLm, GgufModel, InferenceError, ModelConfig, Result};

/// How the weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// Exactly as stored in the file.
    AsShipped,
    /// Re-quantize matrices stored in a format without fast candle kernels (Q4_1, Q5_x) to Q8_0.
    FastestCandle,
}

struct Layer {
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    w_gate: QMatMul,
    w_up: QMatMul,
    w_down: QMatMul,
    attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
    /// Keys and values, `(1, n_kv_head, seq, head_dim)`.
    kv: Option<(Tensor, Tensor)>,
}

/// The candle engine.
pub struct CandleLlama {
    config: ModelConfig,
    embeddings: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QMatMul,
    cos: Tensor,
    sin: Tensor,
    cached: usize,
    device: Device,
}

impl std::fmt::Debug for CandleLlama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CandleLlama")
            .field("config", &self.config)
            .field("cached", &self.cached)
            .finish()
    }
}

fn load_matrix(
    model: &GgufModel,
    name: &str,
    format: WeightFormat,
    device: &Device,
) -> Result<QMatMul> {
    let q = model.qtensor(name, device)?;
    let q = match (format, q.dtype()) {
        (WeightFormat::FastestCandle, GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1) => {
            QTensor::quantize(&q.dequantize(device)?, GgmlDType::Q8_0)?
        }
        _ => q,
    };
    Ok(QMatMul::from_qtensor(q)?)
}

impl CandleLlama {
    /// Loads the weights of a llama-architecture GGUF model, allocating a context window of at
    /// most `max_context` tokens.
    pub fn new(model: &GgufModel, max_context: usize, format: WeightFormat) -> Result<Self> {
        let device = Device::Cpu;
        let config = model.config(max_context)?;
        let eps = f64::from(config.rms_norm_eps);
        let embd_q = model.qtensor("token_embd.weight", &device)?;
        let embeddings = Embedding::new(embd_q.dequantize(&device)?, config.embedding_length);
        let output = if model.has_tensor("output.weight") {
            load_matrix(model, "output.weight", format, &device)?
        } else {
            // Tied embeddings: Q8_0 already has fast kernels.
            QMatMul::from_qtensor(embd_q)?
        };
        let norm = RmsNorm::from_qtensor(model.qtensor("output_norm.weight", &device)?, eps)?;
        let mut layers = Vec::with_capacity(config.block_count);
        for i in 0..config.block_count {
            let m = |n: &str| load_matrix(model, &format!("blk.{i}.{n}.weight"), format, &device);
            let norm = |n: &str| -> Result<RmsNorm> {
                Ok(RmsNorm::from_qtensor(
                    model.qtensor(&format!("blk.{i}.{n}.weight"), &device)?,
                    eps,
                )?)
            };
            layers.push(Layer {
                wq: m("attn_q")?,
                wk: m("attn_k")?,
                wv: m("attn_v")?,
                wo: m("attn_output")?,
                w_gate: m("ffn_gate")?,
                w_up: m("ffn_up")?,
                w_down: m("ffn_down")?,
                attn_norm: norm("attn_norm")?,
                ffn_norm: norm("ffn_norm")?,
                kv: None,
            });
        }
        let (cos, sin) = rope_tables(&config, &device)?;
        Ok(Self {
            config,
            embeddings,
            layers,
            norm,
            output,
            cos,
            sin,
            cached: 0,
            device,
        })
    }

    fn attention(
        &mut self,
        li: usize,
        x: &Tensor,
        pos: usize,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, seq, hidden) = x.dims3()?;
        let layer = &mut self.layers[li];
        let q = layer
            .wq
            .forward(x)?
            .reshape((b, seq, c.head_count, c.head_dim))?
            .transpose(1, 2)?;
        let k = layer
            .wk
            .forward(x)?
            .reshape((b, seq, c.head_count_kv, c.head_dim))?
            .transpose(1, 2)?;
        let v = layer
            .wv
            .forward(x)?
            .reshape((b, seq, c.head_count_kv, c.head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let cos = self.cos.narrow(0, pos, seq)?;
        let sin = self.sin.narrow(0, pos, seq)?;
        let q = candle_nn::rotary_emb::rope_i(&q.contiguous()?, &cos, &sin)?;
        let k = candle_nn::rotary_emb::rope_i(&k.contiguous()?, &cos, &sin)?;
        let (k, v) = match layer.kv.take() {
            Some((kc, vc)) if pos > 0 => (
                Tensor::cat(&[&kc.narrow(2, 0, pos)?, &k], 2)?,
                Tensor::cat(&[&vc.narrow(2, 0, pos)?, &v], 2)?,
            ),
            _ => (k, v),
        };
        layer.kv = Some((k.clone(), v.clone()));
        let n_rep = c.head_count / c.head_count_kv;
        let k = candle_transformers::utils::repeat_kv(k, n_rep)?;
        let v = candle_transformers::utils::repeat_kv(v, n_rep)?;
        let att = (q.matmul(&k.t()?)? / (c.head_dim as f64).sqrt())?;
        let att = match mask {
            Some(mask) => {
                let neg_inf =
                    Tensor::new(f32::NEG_INFINITY, &self.device)?.broadcast_as(att.shape())?;
                mask.broadcast_as(att.shape())?.where_cond(&neg_inf, &att)?
            }
            None => att,
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att
            .matmul(&v.contiguous()?)?
            .transpose(1, 2)?
            .reshape((b, seq, hidden))?;
        Ok(layer.wo.forward(&y)?)
    }
}

fn rope_tables(c: &ModelConfig, device: &Device) -> Result<(Tensor, Tensor)> {
    let theta: Vec<f32> = (0..c.rope_dim)
        .step_by(2)
        .map(|i| 1.0 / c.rope_freq_base.powf(i as f32 / c.rope_dim as f32))
        .collect();
    let theta = Tensor::new(theta.as_slice(), device)?;
    let idx = Tensor::arange(0, c.context_length as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((c.context_length, 1))?
        .matmul(&theta.reshape((1, theta.elem_count()))?)?;
    Ok((idx.cos()?, idx.sin()?))
}

pub(crate) fn check_forward_args(
    c: &ModelConfig,
    cached: usize,
    tokens: &[u32],
    pos: usize,
) -> Result<()> {
    if tokens.is_empty() {
        return Err(InferenceError::InvalidRequest("no tokens to run".into()));
    }
    if pos > cached {
        return Err(InferenceError::InvalidRequest(format!(
            "position {pos} is beyond the {cached} cached tokens"
        )));
    }
    if pos + tokens.len() > c.context_length {
        return Err(InferenceError::InvalidRequest(format!(
            "{} tokens at position {pos} exceed the context window of {}",
            tokens.len(),
            c.context_length
        )));
    }
    if let Some(bad) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
        return Err(InferenceError::InvalidRequest(format!(
            "token id {bad} is outside the vocabulary"
        )));
    }
    Ok(())
}

impl CausalLm for CandleLlama {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn forward(&mut self, tokens: &[u32], pos: usize, logits: &mut Vec<f32>) -> Result<()> {
        check_forward_args(&self.config, self.cached, tokens, pos)?;
        let seq = tokens.len();
        let input = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        let mask = if seq > 1 {
            Some(candle_transformers::utils::build_causal_mask(
                seq,
                pos,
                &self.device,
            )?)
        } else {
            None
        };
        // A failure below leaves the cache in an unknown state: treat it as empty.
        self.cached = 0;
        let mut x = self.embeddings.forward(&input)?;
        for li in 0..self.layers.len() {
            let h = self.layers[li].attn_norm.forward(&x)?;
            let h = self.attention(li, &h, pos, mask.as_ref())?;
            let x1 = (h + &x)?;
            let layer = &self.layers[li];
            let h = layer.ffn_norm.forward(&x1)?;
            let gate = candle_nn::ops::silu(&layer.w_gate.forward(&h)?)?;
            let h = layer.w_down.forward(&(gate * layer.w_up.forward(&h)?)?)?;
            x = (h + x1)?;
        }
        let x = self.norm.forward(&x)?.i((.., seq - 1, ..))?;
        let out = self.output.forward(&x)?.squeeze(0)?.to_dtype(DType::F32)?;
        *logits = out.to_vec1::<f32>()?;
        self.cached = pos + seq;
        Ok(())
    }

    fn engine(&self) -> &'static str {
        "candle"
    }
}
