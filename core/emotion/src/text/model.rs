//! The network of the text emotion model: MiniLM's frozen lower layers (from the fetched model),
//! our fine-tuned top layers, mean pooling and two linear heads (28 GoEmotions labels, 7 Ekman
//! groups). Shared by inference and training.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::bert::{BertConfig, Dropout, Embeddings, EncoderLayer, attention_bias, mean_pool};
use super::labels::{NUM_EKMAN, NUM_GO};

/// Names of the head weights in the trained weights file.
pub const GO_HEAD: &str = "heads.go";
/// Names of the Ekman head weights in the trained weights file.
pub const EKMAN_HEAD: &str = "heads.ekman";

/// The frozen part: embeddings and the encoder layers below the first trained one.
#[derive(Debug)]
pub struct Lower {
    embeddings: Embeddings,
    layers: Vec<EncoderLayer>,
}

impl Lower {
    /// Loads the embeddings and layers `0..first_trained` from the base model's weights.
    pub fn load(base: &VarBuilder, cfg: &BertConfig, first_trained: usize) -> Result<Self> {
        let base = if base.contains_tensor("bert.embeddings.word_embeddings.weight") {
            base.pp("bert")
        } else {
            base.clone()
        };
        let embeddings = Embeddings::load(base.pp("embeddings"), cfg)?;
        let layers = (0..first_trained)
            .map(|i| EncoderLayer::load(base.pp(format!("encoder.layer.{i}")), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { embeddings, layers })
    }

    /// `(n, len)` ids and mask to the hidden states `(n, len, hidden)` after the frozen layers.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let bias = attention_bias(mask)?;
        let mut xs = self.embeddings.forward(ids)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, &bias, false, None)?;
        }
        Ok(xs)
    }

    /// Number of weights.
    pub fn parameter_count(&self) -> usize {
        self.embeddings.parameter_count()
            + self
                .layers
                .iter()
                .map(EncoderLayer::parameter_count)
                .sum::<usize>()
    }
}

/// The trained part: the top encoder layers and both heads.
#[derive(Debug)]
pub struct Upper {
    layers: Vec<EncoderLayer>,
    go: Linear,
    ekman: Linear,
}

impl Upper {
    /// Loads layers `first_trained..num_hidden_layers` (named `encoder.layer.N.*` as in the base
    /// model) from `layers`, and the heads ([`GO_HEAD`], [`EKMAN_HEAD`]) from `heads`.
    pub fn load(
        layers: &VarBuilder,
        heads: &VarBuilder,
        cfg: &BertConfig,
        first_trained: usize,
    ) -> Result<Self> {
        let h = cfg.hidden_size;
        let layers = (first_trained..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::load(layers.pp(format!("encoder.layer.{i}")), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            go: candle_nn::linear(h, NUM_GO, heads.pp(GO_HEAD))?,
            ekman: candle_nn::linear(h, NUM_EKMAN, heads.pp(EKMAN_HEAD))?,
        })
    }

    /// Hidden states after the frozen layers and their mask to the logits of both heads,
    /// `(n, 28)` and `(n, 7)`. With `train`, every op is differentiable and `drop` applies dropout
    /// inside the layers and on the pooled vector.
    pub fn forward(
        &self,
        hidden: &Tensor,
        mask: &Tensor,
        train: bool,
        mut drop: Option<&mut dyn Dropout>,
    ) -> Result<(Tensor, Tensor)> {
        let bias = attention_bias(mask)?;
        let mut xs = hidden.clone();
        for layer in &self.layers {
            let d: Option<&mut dyn Dropout> = match drop {
                Some(ref mut d) => Some(&mut **d),
                None => None,
            };
            xs = layer.forward(&xs, &bias, train, d)?;
        }
        let mut pooled = mean_pool(&xs, mask)?;
        if let Some(d) = drop {
            pooled = d.apply(&pooled)?;
        }
        Ok((self.go.forward(&pooled)?, self.ekman.forward(&pooled)?))
    }

    /// Number of weights.
    pub fn parameter_count(&self) -> usize {
        let lin = |l: &Linear| l.weight().elem_count() + l.bias().map_or(0, |b| b.elem_count());
        self.layers
            .iter()
            .map(EncoderLayer::parameter_count)
            .sum::<usize>()
            + lin(&self.go)
            + lin(&self.ekman)
    }
}
