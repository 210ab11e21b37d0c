//! Training of the text emotion model on GoEmotions (feature `train`, run by
//! `cargo xtask train-emotion`).
//!
//! 1. Read `original/{train,dev}.tsv` and `ekman/{train,dev}.tsv` (same rows, 28 and 7 labels).
//! 2. Tokenize (at most `max_tokens` word pieces) and run the **frozen** part of MiniLM
//!    (embeddings and layers below `first_trained_layer`) once over both splits; the token
//!    outputs are cached on disk (`cache_dir`, keyed by a hash of the token ids, the split and
//!    the layer), so later runs start training at once.
//! 3. Train the top layers (initialized from MiniLM) and both heads with AdamW, BCE-with-logits on
//!    the 28 labels plus `ekman_weight` x BCE on the 7 Ekman labels, dropout, linear warm-up and
//!    decay, length-bucketed batches in a seeded random order.
//! 4. After every epoch, score the dev split (per-label thresholds tuned on it) and keep the
//!    epoch with the best 28-label macro-F1 (early stopping after `patience` epochs without
//!    progress).
//! 5. Store the best weights (f16 unless `--f32`), re-score dev **with the stored weights**, pick
//!    the Ekman source (head or derived from the 28) by dev macro-F1, and write the model card.
//!
//! Everything random (batch order, dropout, head initialization) comes from `seed`.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokenizers::{Tokenizer, TruncationParams};

use super::bert::{BertConfig, Dropout};
use super::labels::{self, Ekman, GoEmotion, NUM_EKMAN, NUM_GO};
use super::metrics;
use super::model::{Lower, Upper};
use super::{EkmanSource, ModelCard, VaEntry};

/// Result of training steps (errors as text, this is a developer tool).
pub type TrainResult<T> = Result<T, String>;

/// Training configuration (defaults: the shipped model).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainConfig {
    /// GoEmotions folder (with `original/` and `ekman/`).
    pub data_dir: PathBuf,
    /// The base model folder (`config.json`, `tokenizer.json`, `model.safetensors`).
    pub model_dir: PathBuf,
    /// Where to write `text-emotion.safetensors` and `text-emotion.json`.
    pub out_dir: PathBuf,
    /// Where to cache the frozen layers' outputs.
    pub cache_dir: PathBuf,
    /// Number of top encoder layers trained.
    pub trained_layers: usize,
    /// Maximum number of epochs.
    pub epochs: usize,
    /// Stop after this many epochs without a better dev macro-F1.
    pub patience: usize,
    /// Sentences per batch.
    pub batch_size: usize,
    /// Peak learning rate of the encoder layers.
    pub lr_encoder: f64,
    /// Peak learning rate of the heads.
    pub lr_head: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Share of the steps used for linear warm-up.
    pub warmup: f64,
    /// Dropout rate in the trained layers and before the heads.
    pub dropout: f32,
    /// Weight of the Ekman loss.
    pub ekman_weight: f64,
    /// Longest input in word pieces during training.
    pub max_tokens: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Only the first N training rows (for timing runs).
    pub limit: Option<usize>,
    /// Store f32 instead of f16 weights.
    pub f32_weights: bool,
    /// Sentences per batch when computing the frozen layers.
    pub embed_batch: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("../shared/data/goemotions"),
            model_dir: PathBuf::new(),
            out_dir: PathBuf::from("core/emotion/assets"),
            cache_dir: PathBuf::from("target/text-emotion-cache"),
            trained_layers: 1,
            epochs: 3,
            patience: 1,
            batch_size: 32,
            lr_encoder: 2e-4,
            lr_head: 3e-3,
            weight_decay: 0.01,
            warmup: 0.06,
            dropout: 0.1,
            ekman_weight: 0.5,
            max_tokens: 64,
            seed: 42,
            limit: None,
            f32_weights: false,
            embed_batch: 64,
        }
    }
}

/// One labelled sentence.
#[derive(Debug, Clone)]
pub struct Example {
    /// The comment.
    pub text: String,
    /// The 28 GoEmotions labels.
    pub go: [bool; NUM_GO],
    /// The 7 Ekman labels.
    pub ekman: [bool; NUM_EKMAN],
}

fn read_tsv(path: &Path) -> TrainResult<Vec<(String, Vec<usize>, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(n, line)| {
            let mut f = line.split('\t');
            let (Some(t), Some(l), Some(id)) = (f.next(), f.next(), f.next()) else {
                return Err(format!("{}:{}: expected 3 columns", path.display(), n + 1));
            };
            let labels = l
                .split(',')
                .map(|x| x.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
            Ok((t.to_string(), labels, id.to_string()))
        })
        .collect()
}

/// Reads one split (`train` or `dev`) with both label sets.
pub fn read_split(data_dir: &Path, split: &str) -> TrainResult<Vec<Example>> {
    let orig = read_tsv(&data_dir.join("original").join(format!("{split}.tsv")))?;
    let ekman = read_tsv(&data_dir.join("ekman").join(format!("{split}.tsv")))?;
    if orig.len() != ekman.len() {
        return Err(format!("{split}: original and ekman differ in length"));
    }
    orig.into_iter()
        .zip(ekman)
        .map(|((text, go_l, id), (_, ek_l, id2))| {
            if id != id2 {
                return Err(format!("{split}: row ids differ ({id} vs {id2})"));
            }
            let mut go = [false; NUM_GO];
            for l in go_l {
                *go.get_mut(l)
                    .ok_or(format!("{split}: label {l} out of range"))? = true;
            }
            let mut ek = [false; NUM_EKMAN];
            for l in ek_l {
                *ek.get_mut(l)
                    .ok_or(format!("{split}: ekman label {l} out of range"))? = true;
            }
            Ok(Example {
                text,
                go,
                ekman: ek,
            })
        })
        .collect()
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The frozen layers' output of every sentence of a split, unpadded.
struct Cached {
    hidden: usize,
    /// Start of each row in `data` (in vectors), and its length in tokens.
    rows: Vec<(usize, usize)>,
    data: Vec<f32>,
}

impl Cached {
    fn row(&self, i: usize) -> &[f32] {
        let (start, len) = self.rows[i];
        &self.data[start * self.hidden..(start + len) * self.hidden]
    }

    fn len_of(&self, i: usize) -> usize {
        self.rows[i].1
    }
}

fn fnv(ids: &[Vec<u32>], extra: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |x: u64| {
        h ^= x;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    for e in extra {
        eat(*e);
    }
    for row in ids {
        eat(row.len() as u64);
        for &t in row {
            eat(t as u64);
        }
    }
    h
}

fn tokenize(tok: &Tokenizer, examples: &[Example]) -> TrainResult<Vec<Vec<u32>>> {
    let enc = tok
        .encode_batch(
            examples.iter().map(|e| e.text.as_str()).collect::<Vec<_>>(),
            true,
        )
        .map_err(err)?;
    Ok(enc.iter().map(|e| e.get_ids().to_vec()).collect())
}

/// Runs (or loads from the cache) the frozen layers over `ids`.
fn frozen_outputs(
    lower: &Lower,
    ids: &[Vec<u32>],
    hidden: usize,
    cfg: &TrainConfig,
    split: &str,
    first_trained: usize,
) -> TrainResult<Cached> {
    let key = fnv(ids, &[first_trained as u64, hidden as u64, 1]);
    let path = cfg
        .cache_dir
        .join(format!("{split}-L{first_trained}-{key:016x}.f32"));
    let mut rows = Vec::with_capacity(ids.len());
    let mut start = 0;
    for r in ids {
        rows.push((start, r.len()));
        start += r.len();
    }
    let total = start * hidden;
    if let Ok(file) = std::fs::File::open(&path) {
        let mut bytes = Vec::with_capacity(total * 4);
        BufReader::new(file).read_to_end(&mut bytes).map_err(err)?;
        if bytes.len() == total * 4 {
            let data = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            eprintln!("{split}: frozen layers from cache {}", path.display());
            return Ok(Cached { hidden, rows, data });
        }
    }
    let t0 = Instant::now();
    let mut data = vec![0f32; total];
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| ids[i].len());
    let dev = Device::Cpu;
    let mut done = 0;
    for chunk in order.chunks(cfg.embed_batch.max(1)) {
        let len = chunk.iter().map(|&i| ids[i].len()).max().unwrap_or(1);
        let n = chunk.len();
        let mut flat = vec![0u32; n * len];
        let mut mask = vec![0u32; n * len];
        for (r, &i) in chunk.iter().enumerate() {
            flat[r * len..r * len + ids[i].len()].copy_from_slice(&ids[i]);
            mask[r * len..r * len + ids[i].len()].fill(1);
        }
        let t = Tensor::from_vec(flat, (n, len), &dev).map_err(err)?;
        let m = Tensor::from_vec(mask, (n, len), &dev).map_err(err)?;
        let out = lower
            .forward(&t, &m)
            .map_err(err)?
            .to_vec3::<f32>()
            .map_err(err)?;
        for (r, &i) in chunk.iter().enumerate() {
            let (s, l) = rows[i];
            for (k, v) in out[r].iter().take(l).enumerate() {
                data[(s + k) * hidden..(s + k + 1) * hidden].copy_from_slice(v);
            }
        }
        done += n;
        if done % (cfg.embed_batch * 50) < n {
            eprintln!(
                "{split}: frozen layers {done}/{} ({:.0} sentences/s)",
                ids.len(),
                done as f64 / t0.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!(
        "{split}: frozen layers of {} sentences in {:.1}s",
        ids.len(),
        t0.elapsed().as_secs_f64()
    );
    std::fs::create_dir_all(&cfg.cache_dir).map_err(err)?;
    let tmp = path.with_extension("tmp");
    {
        let mut w = BufWriter::new(std::fs::File::create(&tmp).map_err(err)?);
        for v in &data {
            w.write_all(&v.to_le_bytes()).map_err(err)?;
        }
        w.flush().map_err(err)?;
    }
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(Cached { hidden, rows, data })
}

/// Seeded dropout (candle's own uses an unseeded generator).
struct SeededDropout {
    rng: StdRng,
    p: f32,
}

impl Dropout for SeededDropout {
    fn apply(&mut self, xs: &Tensor) -> candle_core::Result<Tensor> {
        if self.p <= 0.0 {
            return Ok(xs.clone());
        }
        let keep = 1.0 / (1.0 - self.p);
        let mask: Vec<f32> = (0..xs.elem_count())
            .map(|_| {
                if self.rng.random::<f32>() < self.p {
                    0.0
                } else {
                    keep
                }
            })
            .collect();
        xs.mul(&Tensor::from_vec(mask, xs.shape(), xs.device())?)
    }
}

/// Mean binary cross-entropy with logits, numerically stable:
/// `max(x, 0) - x y + log(1 + exp(-|x|))`.
fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let pos = logits.relu()?;
    let soft = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    ((pos - logits.mul(targets)?)? + soft)?.mean_all()
}

/// A padded batch built from the cache: hidden `(n, len, h)`, mask `(n, len)`.
fn batch(cache: &Cached, idx: &[usize], dev: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let h = cache.hidden;
    let len = idx.iter().map(|&i| cache.len_of(i)).max().unwrap_or(1);
    let n = idx.len();
    let mut data = vec![0f32; n * len * h];
    let mut mask = vec![0u32; n * len];
    for (r, &i) in idx.iter().enumerate() {
        let row = cache.row(i);
        data[r * len * h..r * len * h + row.len()].copy_from_slice(row);
        mask[r * len..r * len + cache.len_of(i)].fill(1);
    }
    Ok((
        Tensor::from_vec(data, (n, len, h), dev)?,
        Tensor::from_vec(mask, (n, len), dev)?,
    ))
}

fn targets<const K: usize>(
    rows: impl Iterator<Item = [bool; K]>,
    dev: &Device,
) -> candle_core::Result<Tensor> {
    let v: Vec<f32> = rows
        .flat_map(|r| r.map(|b| if b { 1.0 } else { 0.0 }))
        .collect();
    let n = v.len() / K;
    Tensor::from_vec(v, (n, K), dev)
}

/// Dev-split probabilities of the 28 labels and the Ekman head.
/// Per-row probabilities of the 28 labels and of the Ekman head.
type Probs = (Vec<Vec<f32>>, Vec<Vec<f32>>);

fn predict(upper: &Upper, cache: &Cached, dev: &Device) -> TrainResult<Probs> {
    let mut order: Vec<usize> = (0..cache.rows.len()).collect();
    order.sort_by_key(|&i| cache.len_of(i));
    let mut go = vec![Vec::new(); order.len()];
    let mut ek = vec![Vec::new(); order.len()];
    for chunk in order.chunks(128) {
        let (h, m) = batch(cache, chunk, dev).map_err(err)?;
        let (g, e) = upper.forward(&h, &m, false, None).map_err(err)?;
        let g = candle_nn::ops::sigmoid(&g)
            .map_err(err)?
            .to_vec2::<f32>()
            .map_err(err)?;
        let e = candle_nn::ops::sigmoid(&e)
            .map_err(err)?
            .to_vec2::<f32>()
            .map_err(err)?;
        for ((&i, gr), er) in chunk.iter().zip(g).zip(e) {
            go[i] = gr;
            ek[i] = er;
        }
    }
    Ok((go, ek))
}

/// Dev scores of one model state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DevScores {
    /// Macro-F1 over the 28 labels, thresholds tuned on dev.
    pub macro_f1: f32,
    /// Same, thresholds tuned on one half of dev and scored on the other (both ways, averaged).
    pub macro_f1_cross_fitted: f32,
    /// Micro-F1 over the 28 labels at the tuned thresholds.
    pub micro_f1: f32,
    /// Macro-F1 with one threshold (0.5) for every label.
    pub macro_f1_at_half: f32,
    /// Ekman macro-F1 of the Ekman head.
    pub ekman_head_macro_f1: f32,
    /// Ekman macro-F1 of the groups derived from the 28 probabilities.
    pub ekman_derived_macro_f1: f32,
    /// Per-label F1 at the tuned thresholds.
    pub per_label_f1: Vec<f32>,
    /// Tuned thresholds of the 28 labels.
    pub thresholds: Vec<f32>,
    /// Tuned thresholds of the Ekman head.
    pub ekman_head_thresholds: Vec<f32>,
    /// Tuned thresholds of the derived Ekman scores.
    pub ekman_derived_thresholds: Vec<f32>,
    /// Ekman cross-fitted macro-F1 of the better source.
    pub ekman_macro_f1_cross_fitted: f32,
}

/// Scores probabilities against the dev labels.
pub fn score_dev(go: &[Vec<f32>], ek_head: &[Vec<f32>], gold: &[Example]) -> DevScores {
    let g_go: Vec<Vec<bool>> = gold.iter().map(|e| e.go.to_vec()).collect();
    let g_ek: Vec<Vec<bool>> = gold.iter().map(|e| e.ekman.to_vec()).collect();
    let thresholds = metrics::tune_thresholds(go, &g_go, NUM_GO);
    let derived: Vec<Vec<f32>> = go
        .iter()
        .map(|p| labels::ekman_from_go(p).to_vec())
        .collect();
    let th_head = metrics::tune_thresholds(ek_head, &g_ek, NUM_EKMAN);
    let th_der = metrics::tune_thresholds(&derived, &g_ek, NUM_EKMAN);
    let head_f1 = metrics::macro_f1(ek_head, &g_ek, &th_head);
    let der_f1 = metrics::macro_f1(&derived, &g_ek, &th_der);
    let better = if head_f1 >= der_f1 {
        ek_head
    } else {
        &derived[..]
    };
    DevScores {
        macro_f1: metrics::macro_f1(go, &g_go, &thresholds),
        macro_f1_cross_fitted: metrics::cross_fitted_macro_f1(go, &g_go, NUM_GO),
        micro_f1: metrics::micro_f1(go, &g_go, &thresholds),
        macro_f1_at_half: metrics::macro_f1(go, &g_go, &[0.5; NUM_GO]),
        ekman_head_macro_f1: head_f1,
        ekman_derived_macro_f1: der_f1,
        per_label_f1: metrics::per_label_f1(go, &g_go, &thresholds),
        thresholds,
        ekman_head_thresholds: th_head,
        ekman_derived_thresholds: th_der,
        ekman_macro_f1_cross_fitted: metrics::cross_fitted_macro_f1(better, &g_ek, NUM_EKMAN),
    }
}

fn snapshot(maps: &[&VarMap]) -> TrainResult<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for m in maps {
        let data = m
            .data()
            .lock()
            .map_err(|_| "var map lock poisoned".to_string())?;
        for (name, var) in data.iter() {
            out.insert(name.clone(), var.as_tensor().copy().map_err(err)?);
        }
    }
    Ok(out)
}

/// Trains, writes the weights and the model card, and returns the card.
pub fn run(cfg: &TrainConfig) -> TrainResult<ModelCard> {
    let started = Instant::now();
    let dev = Device::Cpu;
    let read = |name: &str| {
        let p = cfg.model_dir.join(name);
        std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))
    };
    let bert_cfg: BertConfig = serde_json::from_slice(&read("config.json")?).map_err(err)?;
    let first = bert_cfg
        .num_hidden_layers
        .checked_sub(cfg.trained_layers)
        .ok_or("more trained layers than the model has")?;
    let mut tok = Tokenizer::from_bytes(read("tokenizer.json")?).map_err(err)?;
    tok.with_padding(None);
    tok.with_truncation(Some(TruncationParams {
        max_length: cfg.max_tokens,
        ..Default::default()
    }))
    .map_err(err)?;

    let mut train = read_split(&cfg.data_dir, "train")?;
    if let Some(n) = cfg.limit {
        train.truncate(n);
    }
    let dev_set = read_split(&cfg.data_dir, "dev")?;
    eprintln!("train {} sentences, dev {}", train.len(), dev_set.len());

    let base_path = cfg.model_dir.join("model.safetensors");
    let base_tensors = candle_core::safetensors::load(&base_path, &dev).map_err(err)?;
    let base_vb = VarBuilder::from_tensors(base_tensors.clone(), DType::F32, &dev);
    let lower = Lower::load(&base_vb, &bert_cfg, first).map_err(err)?;
    let train_ids = tokenize(&tok, &train)?;
    let dev_ids = tokenize(&tok, &dev_set)?;
    let train_cache = frozen_outputs(
        &lower,
        &train_ids,
        bert_cfg.hidden_size,
        cfg,
        "train",
        first,
    )?;
    let dev_cache = frozen_outputs(&lower, &dev_ids, bert_cfg.hidden_size, cfg, "dev", first)?;
    let cache_secs = started.elapsed().as_secs_f64();
    drop(lower);

    // Trainable part: layers initialized from MiniLM, heads from the seeded generator.
    let enc_map = VarMap::new();
    let head_map = VarMap::new();
    let upper = Upper::load(
        &VarBuilder::from_varmap(&enc_map, DType::F32, &dev),
        &VarBuilder::from_varmap(&head_map, DType::F32, &dev),
        &bert_cfg,
        first,
    )
    .map_err(err)?;
    {
        let data = enc_map.data().lock().map_err(|_| "lock".to_string())?;
        for (name, var) in data.iter() {
            let t = base_tensors
                .get(name)
                .ok_or_else(|| format!("base model has no {name}"))?;
            var.set(t).map_err(err)?;
        }
    }
    drop(base_tensors);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    {
        // Deterministic head initialization (candle's default initializers are not seeded).
        let data = head_map.data().lock().map_err(|_| "lock".to_string())?;
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        for name in names {
            let var: &Var = &data[name];
            let shape = var.shape().clone();
            let v: Vec<f32> = if name.ends_with("weight") {
                let fan_in = shape.dims().last().copied().unwrap_or(1) as f32;
                let bound = (1.0 / fan_in).sqrt();
                (0..shape.elem_count())
                    .map(|_| rng.random_range(-bound..bound))
                    .collect()
            } else {
                vec![0.0; shape.elem_count()]
            };
            var.set(&Tensor::from_vec(v, shape, &dev).map_err(err)?)
                .map_err(err)?;
        }
    }
    let mut opt_enc = AdamW::new(
        enc_map.all_vars(),
        ParamsAdamW {
            lr: cfg.lr_encoder,
            weight_decay: cfg.weight_decay,
            ..Default::default()
        },
    )
    .map_err(err)?;
    let mut opt_head = AdamW::new(
        head_map.all_vars(),
        ParamsAdamW {
            lr: cfg.lr_head,
            weight_decay: cfg.weight_decay,
            ..Default::default()
        },
    )
    .map_err(err)?;
    let mut drop_rng = SeededDropout {
        rng: StdRng::seed_from_u64(cfg.seed ^ 0x5eed),
        p: cfg.dropout,
    };

    // Length buckets: sort by length, cut into batches, shuffle the batch order every epoch.
    let mut by_len: Vec<usize> = (0..train.len()).collect();
    by_len.sort_by_key(|&i| (train_cache.len_of(i), i));
    let batches: Vec<Vec<usize>> = by_len
        .chunks(cfg.batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect();
    let total_steps = (batches.len() * cfg.epochs).max(1);
    let warmup_steps = ((total_steps as f64) * cfg.warmup).ceil().max(1.0) as usize;
    let lr_at = |step: usize| -> f64 {
        if step < warmup_steps {
            (step + 1) as f64 / warmup_steps as f64
        } else {
            ((total_steps - step) as f64 / (total_steps - warmup_steps).max(1) as f64).max(0.0)
        }
    };

    let mut best: Option<(f32, usize)> = None;
    let mut best_card: Option<ModelCard> = None;
    let mut history = Vec::new();
    let mut step = 0;
    let train_started = Instant::now();
    for epoch in 0..cfg.epochs {
        let t0 = Instant::now();
        let mut order = batches.clone();
        order.shuffle(&mut rng);
        for inner in order.iter_mut() {
            inner.shuffle(&mut rng);
        }
        let mut loss_sum = 0.0f64;
        for (b, idx) in order.iter().enumerate() {
            let (h, m) = batch(&train_cache, idx, &dev).map_err(err)?;
            let y_go = targets(idx.iter().map(|&i| train[i].go), &dev).map_err(err)?;
            let y_ek = targets(idx.iter().map(|&i| train[i].ekman), &dev).map_err(err)?;
            let (lg, le) = upper
                .forward(&h, &m, true, Some(&mut drop_rng))
                .map_err(err)?;
            let loss = (bce_with_logits(&lg, &y_go).map_err(err)?
                + (bce_with_logits(&le, &y_ek).map_err(err)? * cfg.ekman_weight).map_err(err)?)
            .map_err(err)?;
            let f = lr_at(step);
            opt_enc.set_learning_rate(cfg.lr_encoder * f);
            opt_head.set_learning_rate(cfg.lr_head * f);
            let grads = loss.backward().map_err(err)?;
            opt_enc.step(&grads).map_err(err)?;
            opt_head.step(&grads).map_err(err)?;
            loss_sum += f64::from(loss.to_scalar::<f32>().map_err(err)?);
            step += 1;
            if (b + 1) % 200 == 0 {
                eprintln!(
                    "epoch {} batch {}/{} loss {:.4} ({:.1} batches/s)",
                    epoch + 1,
                    b + 1,
                    order.len(),
                    loss_sum / (b + 1) as f64,
                    (b + 1) as f64 / t0.elapsed().as_secs_f64()
                );
            }
        }
        let (go, ek) = predict(&upper, &dev_cache, &dev)?;
        let s = score_dev(&go, &ek, &dev_set);
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "epoch {}: loss {:.4}, dev macro-F1 {:.4} (cross-fitted {:.4}), Ekman head {:.4} / derived {:.4}, {:.0}s",
            epoch + 1,
            loss_sum / order.len().max(1) as f64,
            s.macro_f1,
            s.macro_f1_cross_fitted,
            s.ekman_head_macro_f1,
            s.ekman_derived_macro_f1,
            secs
        );
        history.push(serde_json::json!({
            "epoch": epoch + 1,
            "train_loss": loss_sum / order.len().max(1) as f64,
            "dev_macro_f1": s.macro_f1,
            "dev_macro_f1_cross_fitted": s.macro_f1_cross_fitted,
            "dev_ekman_head_macro_f1": s.ekman_head_macro_f1,
            "dev_ekman_derived_macro_f1": s.ekman_derived_macro_f1,
            "seconds": secs,
        }));
        let improved = best.as_ref().is_none_or(|(f, _)| s.macro_f1 > *f);
        if improved {
            let weights = snapshot(&[&enc_map, &head_map])?;
            let info = RunInfo {
                first,
                best_epoch: epoch + 1,
                epochs_run: epoch + 1,
                history: history.clone(),
                train_sentences: train.len(),
                cache_secs,
                train_secs: train_started.elapsed().as_secs_f64(),
                total_secs: started.elapsed().as_secs_f64(),
            };
            // Written after every better epoch, so that an interrupted run keeps its best state.
            let card = store(cfg, &bert_cfg, &weights, &dev_cache, &dev_set, &info)?;
            best = Some((s.macro_f1, epoch + 1));
            best_card = Some(card);
        } else if best
            .as_ref()
            .is_some_and(|(_, e)| epoch + 1 - e >= cfg.patience.max(1))
        {
            eprintln!(
                "no better dev macro-F1 for {} epoch(s): stopping",
                cfg.patience.max(1)
            );
            break;
        }
    }
    let card = best_card.ok_or("no epoch ran")?;
    eprintln!("done in {:.0}s", started.elapsed().as_secs_f64());
    Ok(card)
}

/// Facts about a run recorded in the model card.
struct RunInfo {
    first: usize,
    best_epoch: usize,
    epochs_run: usize,
    history: Vec<serde_json::Value>,
    train_sentences: usize,
    cache_secs: f64,
    train_secs: f64,
    total_secs: f64,
}

/// Stores `weights` (f16 unless `f32_weights`), scores dev again with exactly the stored
/// (rounded) weights, picks the Ekman source and writes the model card.
fn store(
    cfg: &TrainConfig,
    bert_cfg: &BertConfig,
    weights: &HashMap<String, Tensor>,
    dev_cache: &Cached,
    dev_set: &[Example],
    info: &RunInfo,
) -> TrainResult<ModelCard> {
    let dev = Device::Cpu;
    let dtype = if cfg.f32_weights {
        DType::F32
    } else {
        DType::F16
    };
    let mut stored = HashMap::new();
    for (k, v) in weights {
        stored.insert(k.clone(), v.to_dtype(dtype).map_err(err)?);
    }
    std::fs::create_dir_all(&cfg.out_dir).map_err(err)?;
    let weights_path = cfg.out_dir.join("text-emotion.safetensors");
    candle_core::safetensors::save(&stored, &weights_path).map_err(err)?;
    let bytes = std::fs::read(&weights_path).map_err(err)?;
    let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &dev).map_err(err)?;
    let reloaded = Upper::load(&vb, &vb, bert_cfg, info.first).map_err(err)?;
    let (go, ek) = predict(&reloaded, dev_cache, &dev)?;
    let s = score_dev(&go, &ek, dev_set);
    let ekman_source = if s.ekman_head_macro_f1 >= s.ekman_derived_macro_f1 {
        EkmanSource::Head
    } else {
        EkmanSource::Derived
    };
    let ekman_thresholds = match ekman_source {
        EkmanSource::Head => s.ekman_head_thresholds.clone(),
        EkmanSource::Derived => s.ekman_derived_thresholds.clone(),
    };
    let ekman_f1 = s.ekman_head_macro_f1.max(s.ekman_derived_macro_f1);
    eprintln!(
        "stored weights (epoch {}, {dtype:?}): dev macro-F1 {:.4} (cross-fitted {:.4}), Ekman ({ekman_source:?}) {:.4}",
        info.best_epoch, s.macro_f1, s.macro_f1_cross_fitted, ekman_f1
    );
    let per_label: serde_json::Map<String, serde_json::Value> = GoEmotion::ALL
        .iter()
        .zip(&s.per_label_f1)
        .map(|(l, f)| (l.name().to_string(), serde_json::json!(round4(*f))))
        .collect();
    let card = ModelCard {
        format: 1,
        base_model: "all-minilm-l6-v2".into(),
        first_trained_layer: info.first,
        weights_dtype: if cfg.f32_weights { "f32" } else { "f16" }.into(),
        labels: GoEmotion::ALL
            .iter()
            .map(|l| l.name().to_string())
            .collect(),
        thresholds: s.thresholds.clone(),
        ekman_labels: Ekman::ALL.iter().map(|g| g.name().to_string()).collect(),
        ekman_source,
        ekman_thresholds,
        va_table: GoEmotion::ALL
            .iter()
            .map(|l| {
                let (v, a) = l.valence_arousal();
                VaEntry {
                    label: l.name().into(),
                    valence: round4(v),
                    arousal: round4(a),
                }
            })
            .collect(),
        va_source: "valence: VADER lexicon word ratings / 4 (Hutto & Gilbert 2014, MIT); \
                    arousal: five circumplex levels of nexus-emotion (labels::VA_TABLE)"
            .into(),
        training: serde_json::json!({
            "command": "cargo xtask train-emotion",
            "config": {
                "trained_layers": cfg.trained_layers,
                "epochs": cfg.epochs,
                "patience": cfg.patience,
                "batch_size": cfg.batch_size,
                "lr_encoder": cfg.lr_encoder,
                "lr_head": cfg.lr_head,
                "weight_decay": cfg.weight_decay,
                "warmup": cfg.warmup,
                "dropout": cfg.dropout,
                "ekman_weight": cfg.ekman_weight,
                "max_tokens": cfg.max_tokens,
                "limit": cfg.limit,
            },
            "seed": cfg.seed,
            "best_epoch": info.best_epoch,
            "epochs_run": info.epochs_run,
            "history": info.history,
            "train_sentences": info.train_sentences,
            "frozen_layer_cache_seconds": info.cache_secs.round(),
            "training_seconds": info.train_secs.round(),
            "total_seconds": info.total_secs.round(),
        }),
        dev_metrics: serde_json::json!({
            "macro_f1": round4(s.macro_f1),
            "macro_f1_cross_fitted": round4(s.macro_f1_cross_fitted),
            "micro_f1": round4(s.micro_f1),
            "macro_f1_at_0.5": round4(s.macro_f1_at_half),
            "ekman_macro_f1": round4(ekman_f1),
            "ekman_macro_f1_cross_fitted": round4(s.ekman_macro_f1_cross_fitted),
            "ekman_head_macro_f1": round4(s.ekman_head_macro_f1),
            "ekman_derived_macro_f1": round4(s.ekman_derived_macro_f1),
            "per_label_f1": per_label,
        }),
    };
    let json = serde_json::to_string_pretty(&card).map_err(err)?;
    std::fs::write(cfg.out_dir.join("text-emotion.json"), json + "\n").map_err(err)?;
    eprintln!("wrote {} and text-emotion.json", weights_path.display());
    Ok(card)
}

fn round4(x: f32) -> f32 {
    (x * 10_000.0).round() / 10_000.0
}
