//! # Text emotion
//!
//! How a piece of text feels: the 28 GoEmotions labels (27 emotions + neutral, multi-label),
//! the 7 Ekman groups, valence and arousal, with a confidence and flags for bad input.
//!
//! The model is all-MiniLM-L6-v2 (the project's sentence embedder, fetched and verified by
//! `nexus-models`) whose **top layers were fine-tuned by us on GoEmotions** together with two
//! linear heads on the mean-pooled tokens (`cargo xtask train-emotion`, see [`train`] and
//! `docs/BENCHMARKS.md`). Only the trained part ships in this crate
//! (`assets/text-emotion.safetensors`, f16, plus `assets/text-emotion.json`: per-label decision
//! thresholds tuned on the dev split, label names, the valence/arousal table, the training
//! configuration and dev metrics); the frozen lower layers come from the base model's files.
//!
//! * **Labels**: sigmoid probability per label; a label is *active* when its probability reaches
//!   its own threshold (rare labels have low thresholds).
//! * **Ekman**: a separate head trained on the Ekman labels, or the 28 probabilities grouped
//!   (noisy-or), whichever scored the better dev macro-F1 (recorded in the model card).
//! * **Valence / arousal**: GoEmotions has no such labels; they are the probability-weighted mean
//!   of the labels' coordinates ([`labels::VA_TABLE`]: valence from the VADER lexicon's word
//!   ratings, MIT; arousal from five circumplex levels of our own).
//! * **Bad input** never panics: empty or whitespace-only text gives a reading flagged `empty`
//!   with confidence 0; text that is probably not English is flagged `maybe_not_english` and its
//!   confidence divided by 4 ([`lang`]); text longer than [`MAX_TOKENS`] word pieces is
//!   truncated and flagged `truncated`.
//!
//! Builds for `wasm32-unknown-unknown`: everything is loaded from bytes.

pub mod bert;
pub mod labels;
pub mod lang;
pub mod metrics;
pub mod model;
#[cfg(feature = "train")]
pub mod train;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use tokenizers::{Tokenizer, TruncationParams};

use bert::BertConfig;
pub use labels::{Ekman, GoEmotion, NUM_EKMAN, NUM_GO};
use model::{Lower, Upper};

/// Longest input in word pieces (special tokens included); longer texts are truncated.
pub const MAX_TOKENS: usize = 128;
/// Texts run through the encoder together.
const BATCH: usize = 32;
/// Confidence is divided by this when the text is probably not English.
const NOT_ENGLISH_PENALTY: f32 = 4.0;

/// The trained weights shipped with the crate (f16 safetensors).
pub static BUNDLED_WEIGHTS: &[u8] = include_bytes!("../../assets/text-emotion.safetensors");
/// The model card shipped with the crate (JSON, [`ModelCard`]).
pub static BUNDLED_CARD: &[u8] = include_bytes!("../../assets/text-emotion.json");

/// What can go wrong loading or running the text emotion model.
#[derive(Debug, thiserror::Error)]
pub enum TextEmotionError {
    /// A model file (base model, trained weights or model card) cannot be used.
    #[error("text emotion model: {0}")]
    InvalidModel(String),
    /// The tokenizer failed on an input.
    #[error("text emotion tokenizer: {0}")]
    Tokenizer(String),
    /// A tensor operation failed.
    #[error("text emotion inference: {0}")]
    Inference(#[from] candle_core::Error),
    /// A file could not be read.
    #[cfg(not(target_arch = "wasm32"))]
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Result alias of this module.
pub type Result<T, E = TextEmotionError> = std::result::Result<T, E>;

/// Where the Ekman scores come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EkmanSource {
    /// The separate head trained on the Ekman labels.
    Head,
    /// The 28 label probabilities grouped per Ekman group (noisy-or).
    Derived,
}

/// One entry of the valence/arousal table in the model card.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VaEntry {
    /// GoEmotions label.
    pub label: String,
    /// Valence, -1..1.
    pub valence: f32,
    /// Arousal, 0..1.
    pub arousal: f32,
}

/// Everything about the trained weights that is not a tensor (`assets/text-emotion.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCard {
    /// Version of this format (1).
    pub format: u32,
    /// Manifest id of the base model (`all-minilm-l6-v2`).
    pub base_model: String,
    /// Index of the first encoder layer stored in the weights file; the layers below come from
    /// the base model.
    pub first_trained_layer: usize,
    /// Storage type of the weights file (`f16` or `f32`).
    pub weights_dtype: String,
    /// The 28 label names, in output order.
    pub labels: Vec<String>,
    /// Decision threshold of every label (tuned on the dev split).
    pub thresholds: Vec<f32>,
    /// The 7 Ekman group names, in output order.
    pub ekman_labels: Vec<String>,
    /// Which Ekman scores are used.
    pub ekman_source: EkmanSource,
    /// Decision threshold of every Ekman group, for the chosen source.
    pub ekman_thresholds: Vec<f32>,
    /// Valence/arousal coordinates of the labels, and where they come from.
    pub va_table: Vec<VaEntry>,
    /// Citation of the valence/arousal table.
    pub va_source: String,
    /// How the weights were trained (command, hyper-parameters, seed, time).
    pub training: serde_json::Value,
    /// Scores on the GoEmotions dev split.
    pub dev_metrics: serde_json::Value,
}

/// What went wrong or was unusual about one input text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextFlags {
    /// The text is empty or whitespace only: no reading, confidence 0.
    pub empty: bool,
    /// The text is probably not English: the reading is unreliable (low confidence).
    pub maybe_not_english: bool,
    /// The text was longer than [`MAX_TOKENS`] word pieces; only its beginning was read.
    pub truncated: bool,
}

/// The emotion reading of one text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextReading {
    /// All 28 labels with their probability, highest first.
    pub labels: Vec<(GoEmotion, f32)>,
    /// Labels whose probability reaches their threshold, highest first (may be empty).
    pub active: Vec<GoEmotion>,
    /// All 7 Ekman groups with their score, highest first.
    pub ekman: Vec<(Ekman, f32)>,
    /// Ekman groups whose score reaches their threshold, highest first.
    pub ekman_active: Vec<Ekman>,
    /// Unpleasant (-1) to pleasant (+1).
    pub valence: f32,
    /// Calm (0) to excited (1).
    pub arousal: f32,
    /// 0 (no information) to 1: the top label's probability, lowered for unreadable or
    /// non-English text, 0 for empty text.
    pub confidence: f32,
    /// Input problems.
    pub flags: TextFlags,
}

impl TextReading {
    /// Probability of one label.
    pub fn score(&self, label: GoEmotion) -> f32 {
        self.labels
            .iter()
            .find(|(l, _)| *l == label)
            .map_or(0.0, |&(_, s)| s)
    }

    /// Score of one Ekman group.
    pub fn ekman_score(&self, group: Ekman) -> f32 {
        self.ekman
            .iter()
            .find(|(g, _)| *g == group)
            .map_or(0.0, |&(_, s)| s)
    }

    /// The most probable label (`neutral` for an empty text).
    pub fn top(&self) -> GoEmotion {
        if self.flags.empty {
            return GoEmotion::Neutral;
        }
        self.labels.first().map_or(GoEmotion::Neutral, |&(l, _)| l)
    }

    /// Valence, arousal and confidence as the crate's common [`Affect`](crate::Affect).
    pub fn affect(&self) -> crate::Affect {
        crate::Affect {
            valence: self.valence,
            arousal: self.arousal,
            confidence: self.confidence,
        }
    }

    fn empty() -> Self {
        Self {
            labels: GoEmotion::ALL.iter().map(|&l| (l, 0.0)).collect(),
            active: Vec::new(),
            ekman: Ekman::ALL.iter().map(|&g| (g, 0.0)).collect(),
            ekman_active: Vec::new(),
            valence: 0.0,
            arousal: 0.0,
            confidence: 0.0,
            flags: TextFlags {
                empty: true,
                ..TextFlags::default()
            },
        }
    }
}

/// Where the frozen lower layers come from.
enum Base {
    /// Loaded for this model.
    Own(Lower),
    /// The sentence embedder's encoder (the same base model): one copy of the weights in
    /// memory for memory recall and emotion.
    Shared(std::sync::Arc<nexus_inference::BertEmbedder>, usize),
}

impl Base {
    fn forward(&self, rows: &[&[u32]], ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        match self {
            Base::Own(lower) => Ok(lower.forward(ids, mask)?),
            Base::Shared(embedder, layers) => embedder
                .layer_states(rows, *layers)
                .map_err(|e| TextEmotionError::InvalidModel(format!("base model: {e}"))),
        }
    }
}

/// Weights of BERT's embeddings and first `layers` layers (what [`Lower`] holds).
fn lower_parameters(cfg: &BertConfig, layers: usize) -> usize {
    let (d, ff) = (cfg.hidden_size, cfg.intermediate_size);
    let embeddings =
        (cfg.vocab_size + cfg.max_position_embeddings + cfg.type_vocab_size) * d + 2 * d;
    let layer = 4 * (d * d + d) + 2 * (2 * d) + (d * ff + ff) + (ff * d + d);
    embeddings + layers * layer
}

/// The base weights a model is built from.
enum BaseSource {
    Weights(Vec<u8>),
    Shared(std::sync::Arc<nexus_inference::BertEmbedder>),
}

/// The text emotion model, ready to run.
pub struct TextEmotion {
    tokenizer: Tokenizer,
    unk_id: Option<u32>,
    lower: Base,
    lower_parameters: usize,
    upper: Upper,
    card: ModelCard,
    device: Device,
}

impl std::fmt::Debug for TextEmotion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEmotion")
            .field("base_model", &self.card.base_model)
            .field("first_trained_layer", &self.card.first_trained_layer)
            .field("ekman_source", &self.card.ekman_source)
            .finish_non_exhaustive()
    }
}

/// The base model's files, as bytes.
#[derive(Debug, Clone, Copy)]
pub struct BaseModel<'a> {
    /// `config.json`.
    pub config_json: &'a [u8],
    /// `tokenizer.json`.
    pub tokenizer_json: &'a [u8],
    /// `model.safetensors`.
    pub safetensors: &'a [u8],
}

fn invalid(what: &str, e: impl std::fmt::Display) -> TextEmotionError {
    TextEmotionError::InvalidModel(format!("{what}: {e}"))
}

impl TextEmotion {
    /// The model with the weights bundled in this crate on top of the base model's files.
    pub fn new(base: BaseModel<'_>) -> Result<Self> {
        Self::with_weights(base, BUNDLED_WEIGHTS, BUNDLED_CARD)
    }

    /// The model with the given trained weights (safetensors) and model card (JSON).
    pub fn with_weights(base: BaseModel<'_>, weights: &[u8], card_json: &[u8]) -> Result<Self> {
        Self::load(
            base.config_json,
            base.tokenizer_json,
            base.safetensors.to_vec(),
            weights,
            card_json,
        )
    }

    /// The model with the bundled trained weights on top of the lower layers of `embedder`,
    /// which must be the base model (`config_json` and `tokenizer_json` are its files): the
    /// weights are not loaded a second time (about 90 MB less memory, and a faster start).
    pub fn with_embedder(
        embedder: std::sync::Arc<nexus_inference::BertEmbedder>,
        config_json: &[u8],
        tokenizer_json: &[u8],
    ) -> Result<Self> {
        Self::build(
            config_json,
            tokenizer_json,
            BaseSource::Shared(embedder),
            BUNDLED_WEIGHTS,
            BUNDLED_CARD,
        )
    }

    /// [`TextEmotion::with_weights`] taking the base weights by value (no copy of ~90 MB).
    fn load(
        config_json: &[u8],
        tokenizer_json: &[u8],
        base_safetensors: Vec<u8>,
        weights: &[u8],
        card_json: &[u8],
    ) -> Result<Self> {
        Self::build(
            config_json,
            tokenizer_json,
            BaseSource::Weights(base_safetensors),
            weights,
            card_json,
        )
    }

    fn build(
        config_json: &[u8],
        tokenizer_json: &[u8],
        base: BaseSource,
        weights: &[u8],
        card_json: &[u8],
    ) -> Result<Self> {
        if weights.is_empty() || card_json.is_empty() {
            return Err(TextEmotionError::InvalidModel(
                "no trained weights (run `cargo xtask train-emotion`)".into(),
            ));
        }
        let card: ModelCard =
            serde_json::from_slice(card_json).map_err(|e| invalid("model card", e))?;
        validate_card(&card)?;
        let cfg: BertConfig =
            serde_json::from_slice(config_json).map_err(|e| invalid("config.json", e))?;
        if card.first_trained_layer > cfg.num_hidden_layers {
            return Err(invalid(
                "model card",
                format!(
                    "first trained layer {} but the base model has {} layers",
                    card.first_trained_layer, cfg.num_hidden_layers
                ),
            ));
        }
        let device = Device::Cpu;
        let lower = match base {
            BaseSource::Weights(base_safetensors) => {
                let base_vb =
                    VarBuilder::from_buffered_safetensors(base_safetensors, DType::F32, &device)
                        .map_err(|e| invalid("base model weights", e))?;
                Base::Own(
                    Lower::load(&base_vb, &cfg, card.first_trained_layer)
                        .map_err(|e| invalid("base model weights", e))?,
                )
            }
            BaseSource::Shared(embedder) => {
                if embedder.layers() != cfg.num_hidden_layers
                    || nexus_inference::Embedder::dimension(&*embedder) != cfg.hidden_size
                {
                    return Err(invalid(
                        "base model",
                        "the embedder is not the base model this model was trained on",
                    ));
                }
                Base::Shared(embedder, card.first_trained_layer)
            }
        };
        let lower_parameters = lower_parameters(&cfg, card.first_trained_layer);
        let trained_vb =
            VarBuilder::from_buffered_safetensors(weights.to_vec(), DType::F32, &device)
                .map_err(|e| invalid("trained weights", e))?;
        let upper = Upper::load(&trained_vb, &trained_vb, &cfg, card.first_trained_layer)
            .map_err(|e| invalid("trained weights", e))?;
        let mut tokenizer =
            Tokenizer::from_bytes(tokenizer_json).map_err(|e| invalid("tokenizer.json", e))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| invalid("tokenizer.json", e))?;
        let unk_id = tokenizer.token_to_id("[UNK]");
        Ok(Self {
            tokenizer,
            unk_id,
            lower,
            lower_parameters,
            upper,
            card,
            device,
        })
    }

    /// Loads the base model from a directory (`config.json`, `tokenizer.json`,
    /// `model.safetensors`, e.g. the `all-minilm-l6-v2` cache directory of `nexus-models`) with
    /// the bundled trained weights.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &std::path::Path) -> Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| TextEmotionError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        let (config_json, tokenizer_json, safetensors) = (
            read("config.json")?,
            read("tokenizer.json")?,
            read("model.safetensors")?,
        );
        Self::load(
            &config_json,
            &tokenizer_json,
            safetensors,
            BUNDLED_WEIGHTS,
            BUNDLED_CARD,
        )
    }

    /// The model card (thresholds, label names, training configuration, dev metrics).
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// Number of weights used at inference (base model part + trained part).
    pub fn parameter_count(&self) -> usize {
        self.lower_parameters + self.upper.parameter_count()
    }

    /// One reading per text, in order. Empty input gives empty output; empty texts give readings
    /// flagged `empty`.
    pub fn analyze(&self, texts: &[&str]) -> Result<Vec<TextReading>> {
        let mut out: Vec<Option<TextReading>> = vec![None; texts.len()];
        let mut work = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            if text.trim().is_empty() {
                out[i] = Some(TextReading::empty());
            } else {
                work.push(i);
            }
        }
        let encodings = self
            .tokenizer
            .encode_batch(work.iter().map(|&i| texts[i]).collect::<Vec<_>>(), true)
            .map_err(|e| TextEmotionError::Tokenizer(e.to_string()))?;
        let mut order: Vec<usize> = (0..work.len()).collect();
        order.sort_by_key(|&k| encodings[k].len());
        for chunk in order.chunks(BATCH) {
            let rows: Vec<&tokenizers::Encoding> = chunk.iter().map(|&k| &encodings[k]).collect();
            let probs = self.run(&rows)?;
            for ((&k, enc), (go, ek)) in chunk.iter().zip(&rows).zip(probs) {
                let i = work[k];
                out[i] = Some(self.reading(texts[i], enc, &go, &ek));
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or_else(TextReading::empty))
            .collect())
    }

    /// The model on a batch of encodings: per row, the 28 label probabilities and the 7 Ekman
    /// head probabilities.
    fn run(&self, rows: &[&tokenizers::Encoding]) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
        let n = rows.len();
        let len = rows.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0u32; n * len];
        let mut mask = vec![0u32; n * len];
        for (r, e) in rows.iter().enumerate() {
            ids[r * len..r * len + e.len()].copy_from_slice(e.get_ids());
            mask[r * len..r * len + e.len()].fill(1);
        }
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let id_rows: Vec<&[u32]> = rows.iter().map(|e| e.get_ids()).collect();
        let hidden = self.lower.forward(&id_rows, &ids, &mask)?;
        let (go, ek) = self.upper.forward(&hidden, &mask, false, None)?;
        let go = candle_nn::ops::sigmoid(&go)?.to_vec2::<f32>()?;
        let ek = candle_nn::ops::sigmoid(&ek)?.to_vec2::<f32>()?;
        Ok(go.into_iter().zip(ek).collect())
    }

    fn reading(
        &self,
        text: &str,
        enc: &tokenizers::Encoding,
        go: &[f32],
        ek_head: &[f32],
    ) -> TextReading {
        let special = enc.get_special_tokens_mask();
        let pieces = special.iter().filter(|&&s| s == 0).count();
        let unknown = enc
            .get_ids()
            .iter()
            .zip(special)
            .filter(|&(&id, &s)| s == 0 && Some(id) == self.unk_id)
            .count();
        let lang = lang::check(text, pieces, unknown);
        let flags = TextFlags {
            empty: false,
            maybe_not_english: lang.maybe_not_english,
            truncated: !enc.get_overflowing().is_empty(),
        };
        decide(&self.card, go, ek_head, flags, lang.readable)
    }
}

/// Turns probabilities into a reading with the card's thresholds and the Ekman source.
fn decide(
    card: &ModelCard,
    go: &[f32],
    ek_head: &[f32],
    flags: TextFlags,
    readable: f32,
) -> TextReading {
    let ekman_scores: Vec<f32> = match card.ekman_source {
        EkmanSource::Head => ek_head.to_vec(),
        EkmanSource::Derived => labels::ekman_from_go(go).to_vec(),
    };
    let mut labels: Vec<(GoEmotion, f32)> = GoEmotion::ALL
        .iter()
        .copied()
        .zip(go.iter().copied())
        .collect();
    labels.sort_by(|a, b| b.1.total_cmp(&a.1));
    let active = labels
        .iter()
        .filter(|(l, p)| card.thresholds.get(l.index()).is_some_and(|&t| *p >= t))
        .map(|&(l, _)| l)
        .collect();
    let mut ekman: Vec<(Ekman, f32)> = Ekman::ALL.iter().copied().zip(ekman_scores).collect();
    ekman.sort_by(|a, b| b.1.total_cmp(&a.1));
    let ekman_active = ekman
        .iter()
        .filter(|(g, p)| {
            card.ekman_thresholds
                .get(g.index())
                .is_some_and(|&t| *p >= t)
        })
        .map(|&(g, _)| g)
        .collect();
    let (valence, arousal) = labels::valence_arousal(go);
    let mut confidence = labels.first().map_or(0.0, |&(_, p)| p) * readable.clamp(0.0, 1.0);
    if flags.maybe_not_english {
        confidence /= NOT_ENGLISH_PENALTY;
    }
    TextReading {
        labels,
        active,
        ekman,
        ekman_active,
        valence,
        arousal,
        confidence: confidence.clamp(0.0, 1.0),
        flags,
    }
}

fn validate_card(card: &ModelCard) -> Result<()> {
    let names: Vec<&str> = GoEmotion::ALL.iter().map(|l| l.name()).collect();
    let ekman: Vec<&str> = Ekman::ALL.iter().map(|g| g.name()).collect();
    let ok = card.format == 1
        && card
            .labels
            .iter()
            .map(String::as_str)
            .eq(names.iter().copied())
        && card
            .ekman_labels
            .iter()
            .map(String::as_str)
            .eq(ekman.iter().copied())
        && card.thresholds.len() == NUM_GO
        && card.ekman_thresholds.len() == NUM_EKMAN
        && card
            .thresholds
            .iter()
            .chain(&card.ekman_thresholds)
            .all(|t| t.is_finite() && (0.0..=1.0).contains(t));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "model card",
            "unexpected format, label names or thresholds",
        ))
    }
}

#[cfg(test)]
mod tests;
