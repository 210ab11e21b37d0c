//! # Native llama forward pass
//!
//! A pure-Rust (std::arch SIMD) implementation of [`CausalLm`] for llama-architecture GGUF
//! models with Q4_0 / Q4_1 / Q8_0 matrices, tuned for small models on a few CPU cores, where the
//! fixed cost per operation matters as much as the arithmetic.
//!
//! ## Usage
//!
//! ```no_run
//! # fn main() -> nexus_inference::Result<()> {
//! use nexus_inference::{CausalLm, GgufModel, native::NativeLlama};
//! let model = GgufModel::open(std::path::Path::new("model.gguf"))?;
//! let mut llm = NativeLlama::new(&model, 4096, 0)?; // context 4096, all cores
//! let mut logits = Vec::new();
//! llm.forward(&[1, 4093, 198], 0, &mut logits)?; // prompt
//! llm.forward(&[30], 3, &mut logits)?; // next token
//! # Ok(())
//! # }
//! ```
//!
//! ## Design
//!
//! * **Weights** are repacked at load time into two kernel-friendly layouts
//!   (`quant`): 4-bit (Q4_0/Q4_1) and biased 8-bit (Q8_0) codes with f16 scales, in aligned,
//!   separately streamed sections with software prefetch. The q, k and v projections of a layer
//!   are stacked into one matrix (when their types agree) so they run as one operation.
//! * **Activations** are quantized once per matrix product to 8-bit blocks (like GGML's Q8_1),
//!   and products use exact integer block sums (`simd`: AVX-512 VNNI, AVX2, or scalar,
//!   chosen at run time; [`Isa`]).
//! * **Threads**: a persistent pool (`pool`) with spin-then-park workers and dynamic chunks;
//!   every matrix product splits its output rows across the threads, gate/up are fused with the
//!   SiLU, residual additions are fused into the output and down projections. A decode step of
//!   a 30-layer model is ~150 fork-joins, no allocation and no lock. Workers that are late
//!   (preempted on a busy machine) never hold up the caller.
//! * **Batched prefill**: a prompt runs in batches of up to [`MAX_BATCH`] tokens; each weight
//!   tile is used for 4 tokens at a time from registers, attention is causal per token.
//! * **Cache** (`attention`): f32 keys (transposed in chunks of 16 positions) and values,
//!   allocated for the whole context at construction (pages are committed as they are first
//!   written). `pos < cached` in [`CausalLm::forward`] just moves the end of the cache.
//!
//! Numerics follow candle's `quantized_llama` (interleaved RoPE, RMS norm, SiLU-gated FFN,
//! softmax attention); the only approximation beyond GGML's activation quantization is a fast
//! `exp` (1e-7 relative) in softmax and SiLU. The tests check that our distance to the exact
//! (f32) result is no larger than candle's own.

mod attention;
mod pool;
mod quant;
mod simd;

#[cfg(test)]
mod tests;

use std::ops::Range;

pub use simd::Isa;

use crate::{CausalLm, GgufModel, InferenceError, ModelConfig, Result};
use attention::{KvCache, MAX_HEAD_DIM};
use pool::{ColumnsMut, Pool};
use quant::{QActs, QMatrix};

/// Largest number of tokens processed by one pass over the weights during prefill.
pub const MAX_BATCH: usize = 128;

/// Rows of the gated FFN computed per step (bounds the stack buffers of [`swiglu`]).
const SWIGLU_ROWS: usize = 32;

/// The native engine: weights, key/value cache, scratch buffers and worker threads.
pub struct NativeLlama {
    config: ModelConfig,
    isa: Isa,
    pool: Pool,
    weights: Weights,
    cache: KvCache,
    rope: Rope,
    scratch: Scratch,
    /// Tokens whose keys and values are in the cache.
    cached: usize,
}

impl std::fmt::Debug for NativeLlama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeLlama")
            .field("model", &self.config.name)
            .field("isa", &self.isa)
            .field("threads", &self.pool.threads())
            .field("cached", &self.cached)
            .finish()
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    /// q, k and v projections stacked by rows (one matrix unless their types differ).
    qkv: Vec<QMatrix>,
    wo: QMatrix,
    ffn_norm: Vec<f32>,
    gate: QMatrix,
    up: QMatrix,
    down: QMatrix,
}

struct Weights {
    embed: QMatrix,
    /// `None`: tied to `embed`.
    output: Option<QMatrix>,
    norm: Vec<f32>,
    layers: Vec<Layer>,
}

struct Rope {
    /// `[position][rope_dim / 2]`.
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
}

struct Scratch {
    batch: usize,
    /// Residual stream `[batch][dim]`.
    x: Vec<f32>,
    /// Normalized input of a matrix product `[batch][dim]`.
    xn: Vec<f32>,
    /// Quantized activations for the `dim`-, attention- and FFN-wide inputs.
    act_d: QActs,
    act_o: QActs,
    act_f: QActs,
    /// `[batch][q + k + v]`, `[batch][heads * head_dim]`, `[batch][ffn]`.
    qkv: Vec<f32>,
    att: Vec<f32>,
    h: Vec<f32>,
}

impl NativeLlama {
    /// Loads `model` for a context of at most `max_context` tokens, running on `threads`
    /// threads (0: all available cores).
    pub fn new(model: &GgufModel, max_context: usize, threads: usize) -> Result<Self> {
        let config = model.config(max_context)?;
        let c = &config;
        if c.head_dim == 0
            || c.head_dim > MAX_HEAD_DIM
            || !c.head_dim.is_multiple_of(2)
            || c.rope_dim > c.head_dim
            || !c.rope_dim.is_multiple_of(2)
        {
            return Err(InferenceError::Unsupported(format!(
                "head dim {} / rope dim {}",
                c.head_dim, c.rope_dim
            )));
        }
        let weights = Weights::load(model, c)?;
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let pool = Pool::new(threads).map_err(|e| {
            InferenceError::InvalidRequest(format!("cannot start inference threads: {e}"))
        })?;
        let (kv_dim, q_dim) = (c.head_count_kv * c.head_dim, c.head_count * c.head_dim);
        let batch = MAX_BATCH.min(c.context_length);
        let scratch = Scratch {
            batch,
            x: vec![0.0; batch * c.embedding_length],
            xn: vec![0.0; batch * c.embedding_length],
            act_d: QActs::new(batch, c.embedding_length),
            act_o: QActs::new(batch, q_dim),
            act_f: QActs::new(batch, c.feed_forward_length),
            qkv: vec![0.0; batch * (q_dim + 2 * kv_dim)],
            att: vec![0.0; batch * q_dim],
            h: vec![0.0; batch * c.feed_forward_length],
        };
        Ok(Self {
            isa: Isa::detect(),
            pool,
            weights,
            cache: KvCache::new(c.block_count, c.head_count_kv, c.context_length, c.head_dim),
            rope: Rope::new(c),
            scratch,
            cached: 0,
            config,
        })
    }

    /// The instruction set the kernels use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Selects the kernels' instruction set (for tests and benchmarks); fails if this CPU
    /// lacks it.
    pub fn set_isa(&mut self, isa: Isa) -> Result<()> {
        if !isa.is_supported() {
            return Err(InferenceError::Unsupported(format!("{isa:?} on this CPU")));
        }
        self.isa = isa;
        Ok(())
    }

    /// Number of threads, the calling one included.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Tokens currently held in the key/value cache.
    pub fn cached_tokens(&self) -> usize {
        self.cached
    }

    /// Runs one batch at positions `pos..pos + tokens.len()`; fills `logits` (vocabulary-sized)
    /// from the last token if given.
    fn run_batch(&mut self, tokens: &[u32], pos: usize, logits: Option<&mut [f32]>) {
        let Self {
            config: c,
            isa,
            pool,
            weights,
            cache,
            rope,
            scratch: s,
            ..
        } = self;
        let isa = *isa;
        let n = tokens.len();
        let d = c.embedding_length;
        let (hd, nh, nkv) = (c.head_dim, c.head_count, c.head_count_kv);
        let (q_dim, kv_dim, ff) = (nh * hd, nkv * hd, c.feed_forward_length);
        let qkv_dim = q_dim + 2 * kv_dim;
        let eps = c.rms_norm_eps;

        for (t, &tok) in tokens.iter().enumerate() {
            weights
                .embed
                .dequantize_row(tok as usize, &mut s.x[t * d..(t + 1) * d]);
        }
        for (l, layer) in weights.layers.iter().enumerate() {
            // Attention: norm, fused q/k/v projection, RoPE + cache store, causal attention,
            // output projection added to the residual.
            norm_quantize(
                isa,
                pool,
                &s.x,
                &layer.attn_norm,
                eps,
                n,
                &mut s.xn,
                &mut s.act_d,
            );
            let act = &s.act_d;
            pool.for_columns(&mut s.qkv[..n * qkv_dim], qkv_dim, 16, &|v| {
                stacked_matmul(isa, &layer.qkv, act, n, v, false);
            });
            for t in 0..n {
                let p = pos + t;
                let row = &mut s.qkv[t * qkv_dim..(t + 1) * qkv_dim];
                let (q, kv) = row.split_at_mut(q_dim);
                let (k, v) = kv.split_at_mut(kv_dim);
                for head in q.chunks_exact_mut(hd).chain(k.chunks_exact_mut(hd)) {
                    rope.apply(head, p);
                }
                for g in 0..nkv {
                    cache.store(l, g, p, &k[g * hd..(g + 1) * hd], &v[g * hd..(g + 1) * hd]);
                }
            }
            let (qkv, kvc) = (&s.qkv, &*cache);
            pool.for_columns(&mut s.att[..n * q_dim], q_dim, hd, &|v| {
                let heads = v.cols().start / hd..v.cols().end / hd;
                let scale = 1.0 / (hd as f32).sqrt();
                for t in 0..n {
                    let len = pos + t + 1;
                    let q = &qkv[t * qkv_dim..t * qkv_dim + q_dim];
                    let out = v.row(t);
                    for (i, h) in heads.clone().enumerate() {
                        let (keys, values) = kvc.head(l, h / (nh / nkv), len);
                        simd::attend(
                            isa,
                            &q[h * hd..(h + 1) * hd],
                            (keys, values, len),
                            scale,
                            &mut out[i * hd..(i + 1) * hd],
                        );
                    }
                }
            });
            quantize(isa, pool, &s.att, q_dim, n, &mut s.act_o);
            let act = &s.act_o;
            pool.for_columns(&mut s.x[..n * d], d, 16, &|v| {
                stacked_matmul(isa, std::slice::from_ref(&layer.wo), act, n, v, true);
            });

            // Feed-forward: norm, fused gate/up with SiLU, down projection added to the residual.
            norm_quantize(
                isa,
                pool,
                &s.x,
                &layer.ffn_norm,
                eps,
                n,
                &mut s.xn,
                &mut s.act_d,
            );
            let act = &s.act_d;
            pool.for_columns(&mut s.h[..n * ff], ff, 16, &|v| {
                swiglu(isa, layer, act, n, v)
            });
            quantize(isa, pool, &s.h, ff, n, &mut s.act_f);
            let act = &s.act_f;
            pool.for_columns(&mut s.x[..n * d], d, 16, &|v| {
                stacked_matmul(isa, std::slice::from_ref(&layer.down), act, n, v, true);
            });
        }

        if let Some(logits) = logits {
            let last = &s.x[(n - 1) * d..n * d];
            rms_norm(last, &weights.norm, eps, &mut s.xn[..d]);
            let shape = s.act_d.shape();
            simd::quantize_rows(
                isa,
                &s.xn[..d],
                d,
                shape,
                &mut s.act_d.rows_mut()[..shape.stride],
            );
            let out = weights.output.as_ref().unwrap_or(&weights.embed);
            let act = &s.act_d;
            let vocab = logits.len();
            pool.for_columns(logits, vocab, 16, &|v| {
                stacked_matmul(isa, std::slice::from_ref(out), act, 1, v, false);
            });
        }
    }
}

impl CausalLm for NativeLlama {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn forward(&mut self, tokens: &[u32], pos: usize, logits: &mut Vec<f32>) -> Result<()> {
        let c = &self.config;
        if tokens.is_empty() {
            return Err(InferenceError::InvalidRequest("no tokens to run".into()));
        }
        if pos > self.cached {
            return Err(InferenceError::InvalidRequest(format!(
                "position {pos} is past the {} cached tokens",
                self.cached
            )));
        }
        if pos + tokens.len() > c.context_length {
            return Err(InferenceError::InvalidRequest(format!(
                "{} tokens at position {pos} exceed the context of {} tokens",
                tokens.len(),
                c.context_length
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(InferenceError::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary of {}",
                c.vocab_size
            )));
        }
        let vocab = c.vocab_size;
        self.cached = pos;
        logits.resize(vocab, 0.0);
        let batch = self.scratch.batch;
        let chunks = tokens.len().div_ceil(batch);
        for (i, chunk) in tokens.chunks(batch).enumerate() {
            let at = self.cached;
            let out = if i + 1 == chunks {
                Some(&mut logits[..])
            } else {
                None
            };
            self.run_batch(chunk, at, out);
            self.cached += chunk.len();
        }
        Ok(())
    }

    fn engine(&self) -> &'static str {
        "native"
    }
}

impl Weights {
    fn load(model: &GgufModel, c: &ModelConfig) -> Result<Self> {
        let d = c.embedding_length;
        let (q_dim, kv_dim) = (c.head_count * c.head_dim, c.head_count_kv * c.head_dim);
        let matrix = |name: &str, rows: usize, cols: usize| -> Result<QMatrix> {
            let (dtype, dims, bytes) = model.raw_tensor(name)?;
            if dims != [rows, cols] {
                return Err(InferenceError::InvalidModel(format!(
                    "tensor {name} has shape {dims:?}, expected [{rows}, {cols}]"
                )));
            }
            QMatrix::from_ggml(name, dtype, rows, cols, bytes)
        };
        let vector = |name: &str| -> Result<Vec<f32>> {
            let (dtype, _, bytes) = model.raw_tensor(name)?;
            quant::vector_f32(name, dtype, bytes, d)
        };
        let embed = matrix("token_embd.weight", c.vocab_size, d)?;
        let output = if model.has_tensor("output.weight") {
            Some(matrix("output.weight", c.vocab_size, d)?)
        } else {
            None
        };
        let mut layers = Vec::with_capacity(c.block_count);
        for i in 0..c.block_count {
            let name = |t: &str| format!("blk.{i}.{t}.weight");
            let q = matrix(&name("attn_q"), q_dim, d)?;
            let k = matrix(&name("attn_k"), kv_dim, d)?;
            let v = matrix(&name("attn_v"), kv_dim, d)?;
            let qkv = match QMatrix::vstack(&[q.clone(), k.clone(), v.clone()]) {
                Some(m) => vec![m],
                None => vec![q, k, v],
            };
            layers.push(Layer {
                attn_norm: vector(&name("attn_norm"))?,
                qkv,
                wo: matrix(&name("attn_output"), d, q_dim)?,
                ffn_norm: vector(&name("ffn_norm"))?,
                gate: matrix(&name("ffn_gate"), c.feed_forward_length, d)?,
                up: matrix(&name("ffn_up"), c.feed_forward_length, d)?,
                down: matrix(&name("ffn_down"), d, c.feed_forward_length)?,
            });
        }
        Ok(Self {
            embed,
            output,
            norm: vector("output_norm.weight")?,
            layers,
        })
    }
}

impl Rope {
    fn new(c: &ModelConfig) -> Self {
        let half = c.rope_dim / 2;
        let mut cos = Vec::with_capacity(c.context_length * half);
        let mut sin = Vec::with_capacity(c.context_length * half);
        let base = f64::from(c.rope_freq_base);
        for p in 0..c.context_length {
            for i in 0..half {
                let theta = base.powf(-((2 * i) as f64) / c.rope_dim as f64);
                let angle = p as f64 * theta;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Self { cos, sin, half }
    }

    /// Rotates the interleaved pairs `(2i, 2i + 1)` of one head at position `p`.
    fn apply(&self, x: &mut [f32], p: usize) {
        let (cos, sin) = (
            &self.cos[p * self.half..][..self.half],
            &self.sin[p * self.half..][..self.half],
        );
        for ((pair, &c), &s) in x.chunks_exact_mut(2).zip(cos).zip(sin) {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * c - b * s;
            pair[1] = a * s + b * c;
        }
    }
}

/// `out = x / rms(x) * w`.
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let ss = simd::dot_f32(x, x);
    let scale = 1.0 / (ss / x.len() as f32 + eps).sqrt();
    for ((o, &x), &w) in out.iter_mut().zip(x).zip(w) {
        *o = x * scale * w;
    }
}

/// RMS-normalizes rows `0..n` of `x` into `xn` and quantizes them into `act` (in parallel for
/// several rows).
#[allow(clippy::too_many_arguments)]
fn norm_quantize(
    isa: Isa,
    pool: &mut Pool,
    x: &[f32],
    w: &[f32],
    eps: f32,
    n: usize,
    xn: &mut [f32],
    act: &mut QActs,
) {
    let d = w.len();
    let shape = act.shape();
    let work = |rows: Range<usize>, xn: &mut [f32], dst: &mut [u8]| {
        for (i, t) in rows.enumerate() {
            rms_norm(&x[t * d..(t + 1) * d], w, eps, &mut xn[i * d..(i + 1) * d]);
        }
        simd::quantize_rows(isa, xn, d, shape, dst);
    };
    let dst = &mut act.rows_mut()[..n * shape.stride];
    if n == 1 {
        work(0..1, &mut xn[..d], dst);
    } else {
        pool.for_rows2(n, (xn, d), (dst, shape.stride), &work);
    }
}

/// Quantizes rows `0..n` of `x` (`cols` wide) into `act`.
fn quantize(isa: Isa, pool: &mut Pool, x: &[f32], cols: usize, n: usize, act: &mut QActs) {
    let shape = act.shape();
    let dst = &mut act.rows_mut()[..n * shape.stride];
    if n == 1 {
        simd::quantize_rows(isa, &x[..cols], cols, shape, dst);
    } else {
        pool.for_rows2(
            n,
            (dst, shape.stride),
            (&mut [0u8; 0][..], 0),
            &|rows, dst, _| {
                simd::quantize_rows(
                    isa,
                    &x[rows.start * cols..rows.end * cols],
                    cols,
                    shape,
                    dst,
                );
            },
        );
    }
}

/// `out[t][r] (+)= parts[r] . act[t]` for the view's columns, where `parts` are stacked by rows.
fn stacked_matmul(
    isa: Isa,
    parts: &[QMatrix],
    act: &QActs,
    n: usize,
    out: &mut ColumnsMut<'_, f32>,
    add: bool,
) {
    let cols = out.cols();
    let mut offset = 0;
    for w in parts {
        let rows =
            cols.start.max(offset) - offset..cols.end.min(offset + w.rows()).max(offset) - offset;
        if rows.start < rows.end {
            simd::matmul(isa, [w], rows, act, 0..n, &mut |t, r0, k, [vals]| {
                let at = offset + r0 - cols.start;
                let dst = &mut out.row(t)[at..at + k];
                if add {
                    for (d, v) in dst.iter_mut().zip(vals) {
                        *d += v;
                    }
                } else {
                    dst.copy_from_slice(&vals[..k]);
                }
            });
        }
        offset += w.rows();
    }
}

/// `out[t][r] = silu(gate[r] . act[t]) * (up[r] . act[t])` for the view's columns.
fn swiglu(isa: Isa, layer: &Layer, act: &QActs, n: usize, out: &mut ColumnsMut<'_, f32>) {
    let cols = out.cols();
    let mut g = [0f32; SWIGLU_ROWS * MAX_BATCH];
    let mut u = [0f32; SWIGLU_ROWS * MAX_BATCH];
    let mut r = cols.start;
    while r < cols.end {
        let rows = r..(r + SWIGLU_ROWS).min(cols.end);
        let w = rows.len();
        simd::matmul(
            isa,
            [&layer.gate, &layer.up],
            rows.clone(),
            act,
            0..n,
            &mut |t, r0, k, [gv, uv]| {
                let at = t * w + r0 - r;
                g[at..at + k].copy_from_slice(&gv[..k]);
                u[at..at + k].copy_from_slice(&uv[..k]);
            },
        );
        for t in 0..n {
            let (gt, ut) = (&mut g[t * w..(t + 1) * w], &u[t * w..(t + 1) * w]);
            simd::silu_mul(gt, ut);
            out.row(t)[r - cols.start..r - cols.start + w].copy_from_slice(gt);
        }
        r = rows.end;
    }
}
