//! The [`Embedder`] port and [`BertEmbedder`], sentence embeddings with a BERT encoder
//! (all-MiniLM-L6-v2: mean pooling over tokens, then L2 normalization).
//!
//! candle loads the safetensors file; the forward pass is written here, on plain `f32` slices,
//! because a chat message is about a dozen tokens and at that size candle's BERT
//! (`candle_transformers::models::bert`) spends its time on overhead rather than arithmetic
//! (6.0 ms for one sentence on 2 cores; this one takes 3.5 ms, see docs/BENCHMARKS.md):
//!
//! * **Pre-packed weights.** candle's matmul hands `x · Wᵀ` to gemm, which re-packs the whole
//!   `(out, in)` weight into its panel layout on *every* call: for 12 tokens half of the run
//!   time was that copy of the 42 MB encoder. Here each linear layer is packed once at load into
//!   16-column panels that a small register-blocked kernel (`kernel`) streams front to back.
//! * **Fused steps.** Query, key and value are one `d -> 3d` product; bias, GELU and residual
//!   adds happen in the product's epilogue; attention (scores, softmax, weighted sum, head
//!   split and merge) is one pass; GELU's `erf` is a rational function that vectorizes.
//! * **No padding work.** In a batch each sequence attends only to its own tokens and the
//!   padding rows are never computed (the reference computes them and masks them out).
//! * **Threads only where they pay.** Up to `SERIAL_ROWS` (32) tokens run on the calling thread;
//!   larger batches split the products over candle's worker pool.
//!
//! The arithmetic is the reference's, in the same order where it matters (embedding sums,
//! exact-erf GELU, layer-norm epsilon, masking that equals the `f32::MIN` score bias), so the
//! vectors equal sentence-transformers' (PyTorch) to about 3e-7 per component; unit tests below
//! compare the hidden states with candle's BERT, `tests/embed_e2e.rs` with an independent numpy
//! implementation, and `benches/embed.rs` with sentence-transformers.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
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
    encoder: Encoder,
    tokenizer: Tokenizer,
    dimension: usize,
    device: Device,
}

impl std::fmt::Debug for BertEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertEmbedder")
            .field("dimension", &self.dimension)
            .field("layers", &self.encoder.layers.len())
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
        let config: BertConfig = serde_json::from_slice(config_json)
            .map_err(|e| InferenceError::InvalidModel(format!("BERT config.json: {e}")))?;
        let mut tokenizer = Tokenizer::from_bytes(tokenizer_json)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS.min(config.max_position_embeddings),
                ..Default::default()
            }))
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        let tensors = candle_core::safetensors::load_buffer(&safetensors, &device)
            .map_err(|e| InferenceError::InvalidModel(format!("BERT weights: {e}")))?;
        drop(safetensors);
        let encoder = Encoder::load(Weights::new(tensors, &config), &config)?;
        Ok(Self {
            encoder,
            tokenizer,
            dimension: config.hidden_size,
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

    /// Token-level hidden states `(n, len, d)` and the attention mask `(n, len)` (`u32`, 1 for a
    /// real token) of a batch, padded to its longest text (for heads trained on top). The states
    /// of padding positions are zero: they are not computed (the reference computes values there
    /// that every consumer masks out).
    pub fn hidden_states(&self, texts: &[&str]) -> Result<(Tensor, Tensor)> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        let n = encodings.len();
        let len = encodings.first().map_or(0, |e| e.len());
        let d = self.dimension;
        // The tokenizer pads on the right: each sequence is its real tokens, then padding.
        let mut ids = Vec::with_capacity(n * len);
        let mut lengths = Vec::with_capacity(n);
        let mut mask = Vec::with_capacity(n * len);
        for e in &encodings {
            let real = e
                .get_attention_mask()
                .iter()
                .take_while(|&&m| m != 0)
                .count();
            ids.extend_from_slice(&e.get_ids()[..real]);
            lengths.push(real);
            mask.extend_from_slice(e.get_attention_mask());
        }
        let states = self.encoder.forward(&ids, &lengths)?;
        let hidden = pad_rows(states, &lengths, len, d, &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        Ok((hidden, mask))
    }
}

impl BertEmbedder {
    /// Number of encoder layers.
    pub fn layers(&self) -> usize {
        self.encoder.layers.len()
    }

    /// Hidden states after the embeddings and the first `layers` encoder layers for rows of
    /// token ids (as a tokenizer made them, special tokens included): `(n, len, d)` with `len`
    /// the longest row, padding positions zero. Lets a model fine-tuned on top of the lower
    /// layers (the text emotion model) share this model's weights instead of loading its own
    /// copy.
    pub fn layer_states(&self, rows: &[&[u32]], layers: usize) -> Result<Tensor> {
        if layers > self.layers() {
            return Err(InferenceError::InvalidRequest(format!(
                "{layers} layers asked of a {}-layer model",
                self.layers()
            )));
        }
        let len = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let d = self.dimension;
        let lengths: Vec<usize> = rows.iter().map(|r| r.len()).collect();
        let ids: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        let states = self.encoder.forward_layers(&ids, &lengths, layers)?;
        pad_rows(states, &lengths, len, d, &self.device)
    }
}

/// Sequences stored one after the other (`lengths`) back to `(n, len, d)`, padding rows zero.
fn pad_rows(
    states: Vec<f32>,
    lengths: &[usize],
    len: usize,
    d: usize,
    device: &Device,
) -> Result<Tensor> {
    let n = lengths.len();
    let hidden = if lengths.iter().all(|&l| l == len) {
        states
    } else {
        let mut hidden = vec![0.0_f32; n * len * d];
        let mut from = 0;
        for (b, &l) in lengths.iter().enumerate() {
            hidden[b * len * d..(b * len + l) * d].copy_from_slice(&states[from..from + l * d]);
            from += l * d;
        }
        hidden
    };
    Ok(Tensor::from_vec(hidden, (n, len, d), device)?)
}

impl<T: Embedder + ?Sized> Embedder for std::sync::Arc<T> {
    fn dimension(&self) -> usize {
        (**self).dimension()
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        (**self).embed(texts)
    }
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

/// The fields of a Hugging Face BERT `config.json` that the forward pass needs.
#[derive(Debug, Deserialize)]
struct BertConfig {
    hidden_size: usize,
    num_attention_heads: usize,
    num_hidden_layers: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_position_type")]
    position_embedding_type: String,
    #[serde(default)]
    model_type: Option<String>,
}

fn default_eps() -> f64 {
    1e-12
}

fn default_act() -> String {
    "gelu".into()
}

fn default_position_type() -> String {
    "absolute".into()
}

/// The feed-forward activation.
#[derive(Debug, Clone, Copy)]
enum Activation {
    /// `x · Φ(x)` with the exact error function (Hugging Face's `"gelu"`).
    GeluErf,
    /// The tanh approximation (`"gelu_new"`, `"gelu_pytorch_tanh"`).
    GeluTanh,
    Relu,
}

impl Activation {
    fn parse(name: &str) -> Result<Self> {
        match name {
            "gelu" => Ok(Self::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_approximate" => Ok(Self::GeluTanh),
            "relu" => Ok(Self::Relu),
            other => Err(InferenceError::Unsupported(format!(
                "BERT activation {other:?}"
            ))),
        }
    }

    fn apply(self, x: f32) -> f32 {
        match self {
            Self::GeluErf => 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)),
            Self::GeluTanh => {
                const SQRT_2_OVER_PI: f32 = 0.797_884_6;
                0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
            }
            Self::Relu => x.max(0.0),
        }
    }
}

/// The tensors of a safetensors file, looked up under the model's name prefix.
struct Weights {
    tensors: HashMap<String, Tensor>,
    prefix: String,
}

impl Weights {
    fn new(tensors: HashMap<String, Tensor>, config: &BertConfig) -> Self {
        // Exported base models name their tensors `embeddings.…`; checkpoints with a task head
        // nest them under `bert.…` (or the model type).
        let probe = "embeddings.word_embeddings.weight";
        let candidates = ["bert", config.model_type.as_deref().unwrap_or("bert")];
        let prefix = if tensors.contains_key(probe) {
            String::new()
        } else {
            candidates
                .iter()
                .map(|p| format!("{p}."))
                .find(|p| tensors.contains_key(&format!("{p}{probe}")))
                .unwrap_or_default()
        };
        Self { tensors, prefix }
    }

    /// The tensor `name` as f32 values in row-major order, checked against `shape` (`None`: any
    /// number of rows).
    fn get(&self, name: &str, rows: Option<usize>, cols: usize) -> Result<(Vec<f32>, usize)> {
        let full = format!("{}{name}", self.prefix);
        let t = self.tensors.get(&full).ok_or_else(|| {
            InferenceError::InvalidModel(format!("BERT weights: no tensor {full}"))
        })?;
        let (r, c) = match t.dims() {
            [c] => (1, *c),
            [r, c] => (*r, *c),
            _ => (0, 0),
        };
        if c != cols || rows.is_some_and(|rows| rows != r) || r == 0 {
            return Err(InferenceError::InvalidModel(format!(
                "BERT weights: {full} has shape {:?}, expected {:?} x {cols}",
                t.dims(),
                rows
            )));
        }
        Ok((t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?, r))
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        Ok(self.get(name, Some(1), len)?.0)
    }

    fn linear(&self, name: &str, d_in: usize, d_out: usize) -> Result<Linear> {
        let (w, _) = self.get(&format!("{name}.weight"), Some(d_out), d_in)?;
        let bias = self.vector(&format!("{name}.bias"), d_out)?;
        Ok(Linear::pack(&w, bias, d_in, d_out))
    }

    fn norm(&self, name: &str, d: usize, eps: f64) -> Result<Norm> {
        Ok(Norm {
            weight: self.vector(&format!("{name}.weight"), d)?,
            bias: self.vector(&format!("{name}.bias"), d)?,
            eps: eps as f32,
        })
    }
}

/// A layer norm's scale and shift.
#[derive(Debug)]
struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl Norm {
    /// Normalizes every row of `xs` (rows of `weight.len()` values) in place.
    fn apply(&self, xs: &mut [f32]) {
        let d = self.weight.len();
        for row in xs.chunks_exact_mut(d) {
            let mean = row.iter().sum::<f32>() / d as f32;
            let var = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / d as f32;
            let inv_std = (var + self.eps).sqrt().recip();
            for ((x, &w), &b) in row.iter_mut().zip(&self.weight).zip(&self.bias) {
                *x = (*x - mean) * inv_std * w + b;
            }
        }
    }
}

/// Output columns per weight panel: two 8-lane vectors.
const NR: usize = 16;
/// Rows (tokens) per kernel call: 6 × 2 accumulator vectors stay in registers.
const MR: usize = 6;
/// Rows per task when a matrix product is split by rows (large batches).
const ROWS_PER_TASK: usize = 16 * MR;
/// Up to this many rows (tokens in the batch) a product runs on the calling thread alone.
///
/// candle's worker pool meets at a spinning barrier after every product. With both cores free,
/// two threads take one 12-token sentence from about 3.7 to 2.1 ms, but when the other core is
/// busy (the chat model decoding, a compiler) every one of the 36 barriers of a forward pass
/// waits for the scheduler, and the same sentence takes tens of milliseconds. Short inputs, the
/// interactive case, therefore stay on one thread; batches, where each product is long enough to
/// absorb the wait, use the pool.
const SERIAL_ROWS: usize = 32;

/// A linear layer, its weight packed for [`Linear::forward`].
///
/// `panels[p]` holds, for every input index `k` in order, the `NR` weights of output columns
/// `p·NR .. p·NR + NR` (zero past the last column): the kernel streams one panel front to back
/// and reads each weight once per `MR` rows. Packing happens once at load; the general-purpose
/// gemm that candle uses re-packs the whole matrix on every call instead, which for a sentence of
/// a dozen tokens cost more than the arithmetic.
#[derive(Debug)]
struct Linear {
    panels: Vec<[f32; NR]>,
    bias: Vec<f32>,
    d_in: usize,
    d_out: usize,
}

/// What happens to each output element after the product.
#[derive(Clone, Copy)]
enum Epilogue<'a> {
    /// `x + bias`.
    Bias,
    /// `activation(x + bias)`.
    BiasActivate(Activation),
    /// `(x + bias) + residual`, `residual` shaped like the output.
    BiasResidual(&'a [f32]),
}

impl Linear {
    /// Packs a row-major `(d_out, d_in)` weight (PyTorch's layout).
    fn pack(w: &[f32], bias: Vec<f32>, d_in: usize, d_out: usize) -> Self {
        let n_panels = d_out.div_ceil(NR);
        let mut panels = vec![[0.0_f32; NR]; n_panels * d_in];
        for (o, row) in w.chunks_exact(d_in).enumerate() {
            let (p, c) = (o / NR, o % NR);
            for (k, &v) in row.iter().enumerate() {
                panels[p * d_in + k][c] = v;
            }
        }
        Self {
            panels,
            bias,
            d_in,
            d_out,
        }
    }

    /// `x · Wᵀ` for `x` of `rows × d_in`, then `epilogue`, as `rows × d_out`.
    fn forward(&self, x: &[f32], rows: usize, epilogue: Epilogue<'_>) -> Vec<f32> {
        let (d_in, d_out) = (self.d_in, self.d_out);
        debug_assert_eq!(x.len(), rows * d_in);
        if rows == 0 {
            return Vec::new();
        }
        // The activations in blocks of MR rows, column by column (zero rows past the end), so
        // that the kernel reads both operands front to back.
        let blocks = rows.div_ceil(MR);
        let mut packed = vec![[0.0_f32; MR]; blocks * d_in];
        for (r, row) in x.chunks_exact(d_in).enumerate() {
            let block = &mut packed[(r / MR) * d_in..(r / MR + 1) * d_in];
            for (p, &v) in block.iter_mut().zip(row) {
                p[r % MR] = v;
            }
        }
        let n_panels = self.panels.len() / d_in;
        let mut out = vec![0.0_f32; rows * d_out];
        let run = |n_tasks: usize, task: &(dyn Fn(std::ops::Range<usize>) + Sync)| {
            if rows <= SERIAL_ROWS {
                task(0..n_tasks);
            } else {
                candle_core::utils::barrier_pool().execute_chunked(n_tasks, task);
            }
        };
        if rows <= 2 * ROWS_PER_TASK {
            // Few rows: split the weight (each thread streams its own panels once).
            let mut tiles = vec![[0.0_f32; NR]; n_panels * blocks * MR];
            {
                let slots: Vec<Mutex<&mut [[f32; NR]]>> =
                    tiles.chunks_mut(blocks * MR).map(Mutex::new).collect();
                run(n_panels, &|panels| {
                    for p in panels {
                        let mut tile = lock(&slots[p]);
                        let panel = &self.panels[p * d_in..(p + 1) * d_in];
                        for (b, acc) in tile.chunks_exact_mut(MR).enumerate() {
                            kernel(&packed[b * d_in..(b + 1) * d_in], panel, acc);
                        }
                    }
                });
            }
            for (r, out_row) in out.chunks_exact_mut(d_out).enumerate() {
                for (p, cols) in out_row.chunks_mut(NR).enumerate() {
                    let acc = &tiles[p * blocks * MR + r];
                    cols.copy_from_slice(&acc[..cols.len()]);
                }
            }
            self.finish(&mut out, 0, epilogue);
        } else {
            // Many rows: split the rows (each thread reads the whole weight, from cache).
            let tasks = rows.div_ceil(ROWS_PER_TASK);
            let slots: Vec<Mutex<&mut [f32]>> = out
                .chunks_mut(ROWS_PER_TASK * d_out)
                .map(Mutex::new)
                .collect();
            run(tasks, &|tasks| {
                for t in tasks {
                    let mut out = lock(&slots[t]);
                    let first_block = t * ROWS_PER_TASK / MR;
                    let task_rows = out.len() / d_out;
                    let mut acc = vec![[0.0_f32; NR]; MR];
                    for p in 0..n_panels {
                        let panel = &self.panels[p * d_in..(p + 1) * d_in];
                        let cols = NR.min(d_out - p * NR);
                        for b in 0..task_rows.div_ceil(MR) {
                            let block = first_block + b;
                            kernel(&packed[block * d_in..(block + 1) * d_in], panel, &mut acc);
                            for (r, a) in acc.iter().enumerate().take(task_rows - b * MR) {
                                let at = (b * MR + r) * d_out + p * NR;
                                out[at..at + cols].copy_from_slice(&a[..cols]);
                            }
                        }
                    }
                    self.finish(&mut out, t * ROWS_PER_TASK, epilogue);
                }
            });
        }
        out
    }

    /// Applies `epilogue` to `out`, rows of the full output starting at row `first_row`.
    fn finish(&self, out: &mut [f32], first_row: usize, epilogue: Epilogue<'_>) {
        let d = self.d_out;
        match epilogue {
            Epilogue::Bias => {
                for row in out.chunks_exact_mut(d) {
                    for (x, &b) in row.iter_mut().zip(&self.bias) {
                        *x += b;
                    }
                }
            }
            // Written out so that the exact-erf GELU vectorizes (erf is a rational function).
            Epilogue::BiasActivate(Activation::GeluErf) => {
                for row in out.chunks_exact_mut(d) {
                    for (x, &b) in row.iter_mut().zip(&self.bias) {
                        let v = *x + b;
                        *x = 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
                    }
                }
            }
            Epilogue::BiasActivate(activation) => {
                for row in out.chunks_exact_mut(d) {
                    for (x, &b) in row.iter_mut().zip(&self.bias) {
                        *x = activation.apply(*x + b);
                    }
                }
            }
            Epilogue::BiasResidual(residual) => {
                let residual = &residual[first_row * d..first_row * d + out.len()];
                for (row, res) in out.chunks_exact_mut(d).zip(residual.chunks_exact(d)) {
                    for ((x, &b), &r) in row.iter_mut().zip(&self.bias).zip(res) {
                        *x = (*x + b) + r;
                    }
                }
            }
        }
    }
}

/// Locks a slot that exactly one task uses (so it is never contended, nor poisoned unless that
/// task panicked, in which case the pool re-raises the panic anyway).
fn lock<'a, 'b, T: ?Sized>(slot: &'a Mutex<&'b mut T>) -> std::sync::MutexGuard<'a, &'b mut T> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `acc[r][c] = Σ_k x[k][r] · panel[k][c]`: one block of MR rows against one panel of NR
/// columns. Fixed sizes and straight-line loops, so the compiler keeps the 6 × 16 accumulators in
/// vector registers and emits fused multiply-adds where the target has them.
#[inline(always)]
fn kernel(x: &[[f32; MR]], panel: &[[f32; NR]], acc: &mut [[f32; NR]]) {
    let mut sum = [[0.0_f32; NR]; MR];
    for (xk, wk) in x.iter().zip(panel) {
        for r in 0..MR {
            let xv = xk[r];
            for c in 0..NR {
                sum[r][c] = madd(xv, wk[c], sum[r][c]);
            }
        }
    }
    for (a, s) in acc.iter_mut().zip(&sum) {
        *a = *s;
    }
}

/// `a · b + c`, fused where the target has a fused multiply-add instruction (x86-64-v3,
/// aarch64), as the gemm kernels do; elsewhere (wasm) a software `fma` would be far slower.
#[inline(always)]
fn madd(a: f32, b: f32, c: f32) -> f32 {
    if cfg!(any(target_feature = "fma", target_arch = "aarch64")) {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// One transformer block.
#[derive(Debug)]
struct Layer {
    /// Query, key and value side by side: `d -> 3d`.
    qkv: Linear,
    out: Linear,
    attention_norm: Norm,
    up: Linear,
    down: Linear,
    output_norm: Norm,
}

/// The BERT encoder: embeddings, then the transformer blocks.
#[derive(Debug)]
struct Encoder {
    /// `(vocabulary, d)`.
    word_embeddings: Vec<f32>,
    vocab: usize,
    /// `(max_positions, d)`.
    position_embeddings: Vec<f32>,
    max_positions: usize,
    /// Row 0 of the token-type table: every input is a single segment.
    token_type: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    activation: Activation,
}

impl Encoder {
    fn load(w: Weights, c: &BertConfig) -> Result<Self> {
        let d = c.hidden_size;
        if c.num_attention_heads == 0 || !d.is_multiple_of(c.num_attention_heads) {
            return Err(InferenceError::InvalidModel(format!(
                "BERT config.json: hidden_size {d} is not a multiple of {} heads",
                c.num_attention_heads
            )));
        }
        if c.position_embedding_type != "absolute" {
            return Err(InferenceError::Unsupported(format!(
                "BERT position embeddings {:?}",
                c.position_embedding_type
            )));
        }
        let activation = Activation::parse(&c.hidden_act)?;
        let (word_embeddings, vocab) = w.get("embeddings.word_embeddings.weight", None, d)?;
        let (position_embeddings, max_positions) = w.get(
            "embeddings.position_embeddings.weight",
            Some(c.max_position_embeddings),
            d,
        )?;
        let (mut token_type, _) = w.get("embeddings.token_type_embeddings.weight", None, d)?;
        token_type.truncate(d);
        let eps = c.layer_norm_eps;
        let embedding_norm = w.norm("embeddings.LayerNorm", d, eps)?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let attn = format!("{p}.attention.self");
            let mut qkv_w = Vec::with_capacity(3 * d * d);
            let mut qkv_b = Vec::with_capacity(3 * d);
            for part in ["query", "key", "value"] {
                qkv_w.extend(w.get(&format!("{attn}.{part}.weight"), Some(d), d)?.0);
                qkv_b.extend(w.vector(&format!("{attn}.{part}.bias"), d)?);
            }
            layers.push(Layer {
                qkv: Linear::pack(&qkv_w, qkv_b, d, 3 * d),
                out: w.linear(&format!("{p}.attention.output.dense"), d, d)?,
                attention_norm: w.norm(&format!("{p}.attention.output.LayerNorm"), d, eps)?,
                up: w.linear(&format!("{p}.intermediate.dense"), d, c.intermediate_size)?,
                down: w.linear(&format!("{p}.output.dense"), c.intermediate_size, d)?,
                output_norm: w.norm(&format!("{p}.output.LayerNorm"), d, eps)?,
            });
        }
        Ok(Self {
            word_embeddings,
            vocab,
            position_embeddings,
            max_positions,
            token_type,
            embedding_norm,
            layers,
            heads: c.num_attention_heads,
            head_dim: d / c.num_attention_heads,
            activation,
        })
    }

    /// Hidden states of the real tokens of a batch: `ids` holds the sequences one after the
    /// other, `lengths` their lengths. Returns `Σ lengths × d` values, sequence after sequence.
    ///
    /// Padding never enters the computation: each sequence attends only to its own tokens, which
    /// is exactly what the reference's `f32::MIN` score bias for padded keys amounts to (their
    /// weights underflow to 0), and the hidden states of padding rows, which the reference
    /// computes and every consumer masks out, are not computed at all.
    fn forward(&self, ids: &[u32], lengths: &[usize]) -> Result<Vec<f32>> {
        self.forward_layers(ids, lengths, self.layers.len())
    }

    /// The embeddings and the first `layers` layers.
    fn forward_layers(&self, ids: &[u32], lengths: &[usize], layers: usize) -> Result<Vec<f32>> {
        let d = self.heads * self.head_dim;
        let rows = ids.len();
        debug_assert_eq!(rows, lengths.iter().sum::<usize>());
        if let Some(&len) = lengths.iter().find(|&&l| l > self.max_positions) {
            return Err(InferenceError::InvalidRequest(format!(
                "{len} tokens exceed the model's {} positions",
                self.max_positions
            )));
        }
        let mut xs = Vec::with_capacity(rows * d);
        let positions = lengths.iter().flat_map(|&l| 0..l);
        for (&id, pos) in ids.iter().zip(positions) {
            let id = id as usize;
            if id >= self.vocab {
                return Err(InferenceError::InvalidRequest(format!(
                    "token id {id} is outside the vocabulary"
                )));
            }
            let word = &self.word_embeddings[id * d..(id + 1) * d];
            let pos = &self.position_embeddings[pos * d..(pos + 1) * d];
            // Same order of sums as the reference: (word + token type) + position.
            xs.extend(
                word.iter()
                    .zip(&self.token_type)
                    .zip(pos)
                    .map(|((w, t), p)| (w + t) + p),
            );
        }
        self.embedding_norm.apply(&mut xs);
        let attention = Attention {
            lengths,
            heads: self.heads,
            head_dim: self.head_dim,
        };
        for layer in self.layers.iter().take(layers) {
            let qkv = layer.qkv.forward(&xs, rows, Epilogue::Bias);
            let context = attention.attend(&qkv);
            let mut attended = layer
                .out
                .forward(&context, rows, Epilogue::BiasResidual(&xs));
            layer.attention_norm.apply(&mut attended);
            let up = layer
                .up
                .forward(&attended, rows, Epilogue::BiasActivate(self.activation));
            xs = layer
                .down
                .forward(&up, rows, Epilogue::BiasResidual(&attended));
            layer.output_norm.apply(&mut xs);
        }
        Ok(xs)
    }
}

/// Multi-head self-attention over a fused projection, for sequences stored one after the other.
struct Attention<'a> {
    lengths: &'a [usize],
    heads: usize,
    head_dim: usize,
}

impl Attention<'_> {
    /// Per sequence and head, `softmax(q·kᵀ / √head_dim) · v`, from `qkv` (`rows × 3d`: queries,
    /// keys and values side by side, bias added), written as `rows × d` with the heads side by
    /// side.
    fn attend(&self, qkv: &[f32]) -> Vec<f32> {
        let dh = self.head_dim;
        let d = self.heads * dh;
        let scale = 1.0 / (dh as f32).sqrt();
        let mut out = vec![0.0_f32; qkv.len() / 3];
        let longest = self.lengths.iter().copied().max().unwrap_or(0);
        let mut probs = vec![0.0_f32; longest];
        let mut first = 0;
        for &len in self.lengths {
            let probs = &mut probs[..len];
            for h in 0..self.heads {
                let head = |row: usize, part: usize| {
                    let at = (first + row) * 3 * d + part * d + h * dh;
                    &qkv[at..at + dh]
                };
                for i in 0..len {
                    let q = head(i, 0);
                    let mut max = f32::NEG_INFINITY;
                    for (j, p) in probs.iter_mut().enumerate() {
                        *p = dot(q, head(j, 1)) * scale;
                        max = max.max(*p);
                    }
                    let mut sum = 0.0_f32;
                    for p in probs.iter_mut() {
                        *p = (*p - max).exp();
                        sum += *p;
                    }
                    let at = (first + i) * d + h * dh;
                    let o = &mut out[at..at + dh];
                    for (j, &p) in probs.iter().enumerate() {
                        let p = p / sum;
                        for (o, &v) in o.iter_mut().zip(head(j, 2)) {
                            *o = madd(p, v, *o);
                        }
                    }
                }
            }
            first += len;
        }
        out
    }
}

/// Dot product with eight independent partial sums, so that it vectorizes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0_f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] = madd(x[l], y[l], acc[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The error function in f32, as a rational function (no `exp` and only selects, so loops over
/// it vectorize): within a few f32 ulps of the exact value (the unit tests compare it with
/// libm). From |x| = 3.92 on, erf rounds to ±1 in f32. Coefficients of the minimax approximation
/// used by Eigen and XLA for `erf` on f32.
#[inline]
fn erf(x: f32) -> f32 {
    if x.abs() >= 3.92 {
        return 1.0_f32.copysign(x);
    }
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p - 2.101_024e-6;
    p = x2 * p - 5.692_506_4e-5;
    p = x2 * p - 7.349_906_3e-4;
    p = x2 * p - 2.954_600_1e-3;
    p = x2 * p - 1.609_603_3e-2;
    let mut q = x2 * -1.456_607_2e-5 - 2.133_740_6e-4;
    q = x2 * q - 1.682_827e-3;
    q = x2 * q - 7.373_329e-3;
    q = x2 * q - 1.426_474e-2;
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_matches_libm_erf() {
        // candle's own gelu_erf uses libm's erff: compare the whole GELU, as used. The rational
        // erf is a few ulps off near ±1, which 1 + erf(x) turns into an absolute error of about
        // 1e-6 in the far negative tail (where GELU is ~0): far below the rounding of the
        // surrounding f32 matmuls.
        let xs: Vec<f32> = (-12_000..=12_000).map(|i| i as f32 * 1e-3).collect();
        let reference = Tensor::new(xs.as_slice(), &Device::Cpu)
            .and_then(|t| t.gelu_erf())
            .and_then(|t| t.to_vec1::<f32>())
            .expect("candle gelu_erf");
        for (x, r) in xs.iter().zip(reference) {
            let ours = Activation::GeluErf.apply(*x);
            assert!(
                (ours - r).abs() <= 1.5e-6 + 4e-7 * r.abs(),
                "gelu({x}) = {ours}, libm {r}"
            );
        }
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }

    #[test]
    fn dot_handles_any_length() {
        for n in [0, 1, 7, 8, 9, 32, 33] {
            let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let b: Vec<f32> = (0..n).map(|i| 1.0 - i as f32 * 0.5).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() <= 1e-4 * naive.abs().max(1.0));
        }
    }

    /// The fused encoder against candle-transformers' BERT, the implementation it replaced, on
    /// the real weights, with and without padding.
    #[test]
    fn encoder_matches_candle_transformers_bert() {
        use candle_transformers::models::bert::{BertModel, Config};
        let dir = nexus_testing::models::embedding_dir();
        let ours = BertEmbedder::from_dir(&dir).expect("load");
        let config: Config =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config"))
                .expect("config");
        let vb = var_builder(&dir);
        let theirs = BertModel::load(vb, &config).expect("candle bert");
        let long = "a long text that fills the whole window of the model ".repeat(30);
        // Few rows (the weight-split path of Linear::forward) and many (the row-split path).
        let cases: [&[&str]; 2] = [
            &[
                "I had a lovely walk in the park today.",
                "short",
                "A somewhat longer sentence, so that the other two are padded in the batch.",
            ],
            &["padded to the longest", &long, "and another one"],
        ];
        for texts in cases {
            let (hidden, mask) = ours.hidden_states(texts).expect("ours");
            let ids = {
                let enc = ours
                    .tokenizer
                    .encode_batch(texts.to_vec(), true)
                    .expect("tok");
                let rows: Vec<Vec<u32>> = enc.iter().map(|e| e.get_ids().to_vec()).collect();
                Tensor::new(rows, &Device::Cpu).expect("ids")
            };
            let reference = theirs
                .forward(&ids, &ids.zeros_like().expect("types"), Some(&mask))
                .expect("candle forward");
            let (a, b) = (
                hidden
                    .flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .expect("a"),
                reference
                    .flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .expect("b"),
            );
            assert_eq!(a.len(), b.len());
            // Only real tokens: the states of padding rows are never used (pooling masks them).
            let real = mask
                .flatten_all()
                .and_then(|t| t.to_vec1::<u32>())
                .expect("mask");
            let worst = a
                .chunks_exact(384)
                .zip(b.chunks_exact(384))
                .zip(&real)
                .filter(|(_, keep)| **keep != 0)
                .flat_map(|((x, y), _)| x.iter().zip(y).map(|(x, y)| (x - y).abs()))
                .fold(0.0_f32, f32::max);
            assert!(
                worst < 5e-5,
                "{} rows: largest hidden-state difference {worst}",
                a.len() / 384
            );
        }
    }

    #[test]
    fn padding_rows_are_zero_and_an_empty_batch_is_empty() {
        let e = BertEmbedder::from_dir(&nexus_testing::models::embedding_dir()).expect("load");
        let (hidden, mask) = e
            .hidden_states(&["hi", "a longer text than hi"])
            .expect("states");
        let (n, len, d) = hidden.dims3().expect("3-D");
        assert_eq!((n, d), (2, 384));
        let states = hidden
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("states");
        let mask = mask
            .flatten_all()
            .and_then(|t| t.to_vec1::<u32>())
            .expect("mask");
        for (row, keep) in states.chunks_exact(d).zip(&mask) {
            assert_eq!(*keep == 0, row.iter().all(|&x| x == 0.0), "len {len}");
        }
        let (hidden, mask) = e.hidden_states(&[]).expect("empty");
        assert_eq!(hidden.elem_count(), 0);
        assert_eq!(mask.elem_count(), 0);
    }

    fn var_builder(dir: &std::path::Path) -> candle_nn::VarBuilder<'static> {
        let bytes = std::fs::read(dir.join("model.safetensors")).expect("weights");
        candle_nn::VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu)
            .expect("var builder")
    }
}
