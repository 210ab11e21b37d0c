//! A small BERT encoder (all-MiniLM-L6-v2) on candle whose layers can be run one range at a time
//! and trained.
//!
//! `nexus_inference::BertEmbedder` (candle-transformers' BERT) only exposes the last layer's
//! output, while the text emotion model needs the lower layers' output (frozen, cached during
//! training) and its own fine-tuned top layers. This is the same computation as
//! candle-transformers' `bert.rs` (post-LayerNorm BERT, GELU (erf), absolute positions), written
//! so that every op has a gradient when `train` is on (composed softmax and LayerNorm instead of
//! candle's fused kernels, which have no backward pass). A test checks that the full 6-layer
//! output equals `BertEmbedder::hidden_states`.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

/// The fields of a BERT `config.json` this encoder uses.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// Token vocabulary size.
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Longest position the position embeddings cover.
    pub max_position_embeddings: usize,
    /// Token type vocabulary size.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Activation; only `gelu` (erf) is supported.
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_act() -> String {
    "gelu".into()
}

/// Applies dropout during training (implemented by the trainer with a seeded generator, so that
/// runs are reproducible); inference passes `None`.
pub trait Dropout {
    /// `xs` with elements zeroed at the dropout rate and the rest scaled up.
    fn apply(&mut self, xs: &Tensor) -> Result<Tensor>;
}

fn dropout(xs: Tensor, d: &mut Option<&mut dyn Dropout>) -> Result<Tensor> {
    match d {
        Some(d) => d.apply(&xs),
        None => Ok(xs),
    }
}

/// LayerNorm over the last dimension. With `train` it is composed of differentiable ops;
/// otherwise candle's fused kernel.
fn layer_norm(ln: &LayerNorm, eps: f64, xs: &Tensor, train: bool) -> Result<Tensor> {
    if !train {
        return ln.forward(xs);
    }
    let bias = ln
        .bias()
        .ok_or_else(|| candle_core::Error::Msg("LayerNorm without bias".into()))?;
    let mean = xs.mean_keepdim(D::Minus1)?;
    let centered = xs.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed.broadcast_mul(ln.weight())?.broadcast_add(bias)
}

fn softmax_last(xs: &Tensor, train: bool) -> Result<Tensor> {
    if train {
        candle_nn::ops::softmax(xs, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(xs)
    }
}

/// Word, position and token-type embeddings followed by LayerNorm (never trained here).
#[derive(Debug)]
pub struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
}

impl Embeddings {
    /// Loads `embeddings.*` from `vb`.
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            word: candle_nn::embedding(cfg.vocab_size, h, vb.pp("word_embeddings"))?,
            position: candle_nn::embedding(
                cfg.max_position_embeddings,
                h,
                vb.pp("position_embeddings"),
            )?,
            token_type: candle_nn::embedding(
                cfg.type_vocab_size,
                h,
                vb.pp("token_type_embeddings"),
            )?,
            norm: candle_nn::layer_norm(h, cfg.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    /// `(n, len)` token ids to `(n, len, hidden)` (token type 0 everywhere).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, len) = ids.dims2()?;
        let positions = Tensor::arange(0u32, len as u32, ids.device())?;
        let words = self.word.forward(ids)?;
        let types = self.token_type.forward(&ids.zeros_like()?)?;
        let xs = (words + types)?.broadcast_add(&self.position.forward(&positions)?)?;
        self.norm.forward(&xs)
    }
}

/// One post-LayerNorm transformer layer (`encoder.layer.N.*`).
#[derive(Debug)]
pub struct EncoderLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
    heads: usize,
    head_dim: usize,
    eps: f64,
}

impl EncoderLayer {
    /// Loads one layer's weights from `vb` (already prefixed with `encoder.layer.N`).
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        if cfg.hidden_act != "gelu" {
            candle_core::bail!("unsupported activation {:?} (only gelu)", cfg.hidden_act);
        }
        let h = cfg.hidden_size;
        let att = vb.pp("attention");
        let slf = att.pp("self");
        Ok(Self {
            query: candle_nn::linear(h, h, slf.pp("query"))?,
            key: candle_nn::linear(h, h, slf.pp("key"))?,
            value: candle_nn::linear(h, h, slf.pp("value"))?,
            attn_out: candle_nn::linear(h, h, att.pp("output").pp("dense"))?,
            attn_norm: candle_nn::layer_norm(
                h,
                cfg.layer_norm_eps,
                att.pp("output").pp("LayerNorm"),
            )?,
            intermediate: candle_nn::linear(
                h,
                cfg.intermediate_size,
                vb.pp("intermediate").pp("dense"),
            )?,
            output: candle_nn::linear(cfg.intermediate_size, h, vb.pp("output").pp("dense"))?,
            out_norm: candle_nn::layer_norm(
                h,
                cfg.layer_norm_eps,
                vb.pp("output").pp("LayerNorm"),
            )?,
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
            eps: cfg.layer_norm_eps,
        })
    }

    fn split_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (n, len, _) = xs.dims3()?;
        xs.reshape((n, len, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// `(n, len, hidden)` to `(n, len, hidden)`. `mask` is the additive attention mask
    /// `(n, 1, 1, len)` from [`attention_bias`]. With `train`, every op is differentiable and
    /// `dropout` (if any) is applied after each residual branch as in BERT.
    pub fn forward(
        &self,
        xs: &Tensor,
        mask: &Tensor,
        train: bool,
        mut drop: Option<&mut dyn Dropout>,
    ) -> Result<Tensor> {
        let (n, len, h) = xs.dims3()?;
        let q = self.split_heads(&self.query.forward(xs)?)?;
        let k = self.split_heads(&self.key.forward(xs)?)?;
        let v = self.split_heads(&self.value.forward(xs)?)?;
        let scores = (q.matmul(&k.t()?)? / (self.head_dim as f64).sqrt())?.broadcast_add(mask)?;
        let probs = softmax_last(&scores, train)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((n, len, h))?;
        let attn = dropout(self.attn_out.forward(&ctx)?, &mut drop)?;
        let attn = layer_norm(&self.attn_norm, self.eps, &(attn + xs)?, train)?;
        let inter = self.intermediate.forward(&attn)?.gelu_erf()?;
        let out = dropout(self.output.forward(&inter)?, &mut drop)?;
        layer_norm(&self.out_norm, self.eps, &(out + attn)?, train)
    }

    /// Number of weights in the layer.
    pub fn parameter_count(&self) -> usize {
        let lin = |l: &Linear| l.weight().elem_count() + l.bias().map_or(0, |b| b.elem_count());
        let ln = |l: &LayerNorm| l.weight().elem_count() + l.bias().map_or(0, |b| b.elem_count());
        lin(&self.query)
            + lin(&self.key)
            + lin(&self.value)
            + lin(&self.attn_out)
            + ln(&self.attn_norm)
            + lin(&self.intermediate)
            + lin(&self.output)
            + ln(&self.out_norm)
    }
}

impl Embeddings {
    /// Number of weights in the embeddings.
    pub fn parameter_count(&self) -> usize {
        self.word.embeddings().elem_count()
            + self.position.embeddings().elem_count()
            + self.token_type.embeddings().elem_count()
            + self.norm.weight().elem_count()
            + self.norm.bias().map_or(0, |b| b.elem_count())
    }
}

/// The additive attention bias `(n, 1, 1, len)`: 0 where `mask` (`(n, len)`, 1 = token) is set,
/// a large negative number on padding.
pub fn attention_bias(mask: &Tensor) -> Result<Tensor> {
    let (n, len) = mask.dims2()?;
    let m = mask.to_dtype(DType::F32)?;
    ((m - 1.0)? * 1e9)?.reshape((n, 1, 1, len))
}

/// Mean of the token vectors where `mask` is 1: `(n, len, d)` to `(n, d)`.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let sum = hidden.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.clamp(1.0, f64::MAX)?;
    sum.broadcast_div(&count)
}
