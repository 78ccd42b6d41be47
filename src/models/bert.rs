//! BERT, the encoder of transformers' `BertModel`: embeddings, `num_hidden_layers` encoder
//! layers, and the pooler.
//!
//! Parameters carry transformers' checkpoint names once [`BertModel::renames`] is applied:
//! `embeddings.{word,position,token_type}_embeddings`, `embeddings.LayerNorm`, then per layer
//! `encoder.layer.N.attention.self.{query,key,value}`, `attention.output.{dense,LayerNorm}`,
//! `intermediate.dense`, `output.{dense,LayerNorm}`, then `pooler.dense`. (`self` is a Rust
//! keyword and burn names the LayerNorm parameters `gamma`/`beta`, so the struct fields are
//! `self_attn` and `layer_norm`.) Checkpoints of the `BertFor*` classes nest all of it under
//! `bert.`; [`BertConfig`] reads the class from `architectures` and the renames add the
//! prefix. Which classes have a pooler follows transformers (`add_pooling_layer`).
//!
//! The math is transformers' in eval mode (no dropout): absolute position embeddings, the
//! exact erf GELU for `hidden_act: "gelu"`, a LayerNorm after each residual, and a padding
//! mask from `attention_mask` (0: padding) over the keys.

use std::path::Path;

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, gelu_approximate, relu};
use stowage_planner::ModelConfig;

use super::attention::{attend, merge_heads, split_heads};
use super::fields::Fields;
use super::{Layered, move_to, token_ids};
use crate::error::Result;
// burn's Linear, able to also hold its weight quantized (`crate::quantized` says why).
use crate::quantized::{QuantLinear as Linear, QuantLinearConfig as LinearConfig};
use crate::rename::Renames;

/// The activation of the intermediate layer (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BertActivation {
    /// `gelu`: the exact GELU, `x · Φ(x)` with the error function.
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
    /// `relu`.
    Relu,
}

impl BertActivation {
    fn apply<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            BertActivation::Gelu => gelu(x),
            BertActivation::GeluTanh => gelu_approximate(x),
            BertActivation::Relu => relu(x),
        }
    }
}

/// The classes of transformers' BERT family stowage knows: name, whether the checkpoint nests
/// the encoder under `bert.`, whether the encoder has a pooler.
const CLASSES: [(&str, bool, bool); 9] = [
    ("BertModel", false, true),
    ("BertForPreTraining", true, true),
    ("BertForMaskedLM", true, false),
    ("BertLMHeadModel", true, false),
    ("BertForNextSentencePrediction", true, true),
    ("BertForSequenceClassification", true, true),
    ("BertForMultipleChoice", true, true),
    ("BertForTokenClassification", true, false),
    ("BertForQuestionAnswering", true, false),
];

/// A BERT encoder's sizes, from its `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    /// `vocab_size`.
    pub vocab_size: usize,
    /// `hidden_size`.
    pub hidden_size: usize,
    /// `num_hidden_layers`: the encoder layers, the blocks of [`Layered`].
    pub num_hidden_layers: usize,
    /// `num_attention_heads`; divides `hidden_size`.
    pub num_attention_heads: usize,
    /// `intermediate_size`.
    pub intermediate_size: usize,
    /// `hidden_act`.
    pub hidden_act: BertActivation,
    /// `max_position_embeddings`: the longest input.
    pub max_position_embeddings: usize,
    /// `type_vocab_size`: how many token types (segments).
    pub type_vocab_size: usize,
    /// `layer_norm_eps`.
    pub layer_norm_eps: f64,
    /// Whether the encoder has `pooler.dense` (per the class in `architectures`).
    pub pooler: bool,
    /// Whether checkpoint names start with `bert.` (every `BertFor*` class).
    pub prefixed: bool,
}

impl BertConfig {
    /// Reads a `config.json`.
    ///
    /// # Errors
    ///
    /// The file cannot be read or parsed, or see [`BertConfig::from_model_config`].
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_model_config(&ModelConfig::from_file(path)?)
    }

    /// The sizes of a parsed `config.json`.
    ///
    /// # Errors
    ///
    /// A missing or zero size, `model_type` other than `bert`, a class in `architectures` not
    /// of the BERT family, a `hidden_act` other than `gelu`, `gelu_new`, `gelu_pytorch_tanh`
    /// or `relu`, or a `position_embedding_type` other than `absolute`; each names the file
    /// and the field.
    pub fn from_model_config(config: &ModelConfig) -> Result<Self> {
        let f = Fields(config);
        let model_type = f.text_or("model_type", "bert")?;
        if model_type != "bert" {
            return Err(f.invalid(format!(
                "`model_type` is `{model_type}`, not `bert`; BertConfig reads BERT configs only"
            )));
        }
        let (prefixed, pooler) = match config.architecture() {
            None => (false, true),
            Some(a) => match CLASSES.iter().find(|(name, ..)| *name == a) {
                Some(&(_, prefixed, pooler)) => (prefixed, pooler),
                None => {
                    let known: Vec<&str> = CLASSES.iter().map(|(n, ..)| *n).collect();
                    return Err(f.invalid(format!(
                        "architecture `{a}` is not a BERT class stowage knows ({})",
                        known.join(", ")
                    )));
                }
            },
        };
        let hidden_act = match f.text_or("hidden_act", "gelu")? {
            "gelu" => BertActivation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => BertActivation::GeluTanh,
            "relu" => BertActivation::Relu,
            other => {
                return Err(f.invalid(format!(
                    "`hidden_act` `{other}` is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu)"
                )));
            }
        };
        let positions = f.text_or("position_embedding_type", "absolute")?;
        if positions != "absolute" {
            return Err(f.invalid(format!(
                "`position_embedding_type` `{positions}` is not supported, only `absolute`"
            )));
        }
        let hidden_size = f.dim("hidden_size")?;
        let num_attention_heads = f.dim("num_attention_heads")?;
        f.head_dim(hidden_size, num_attention_heads)?;
        Ok(BertConfig {
            vocab_size: f.dim("vocab_size")?,
            hidden_size,
            num_hidden_layers: f.dim("num_hidden_layers")?,
            num_attention_heads,
            intermediate_size: f.dim("intermediate_size")?,
            hidden_act,
            max_position_embeddings: f.dim_or("max_position_embeddings", 512)?,
            type_vocab_size: f.dim_or("type_vocab_size", 2)?,
            layer_norm_eps: f.positive_or("layer_norm_eps", 1e-12)?,
            pooler,
            prefixed,
        })
    }

    /// The model on `device` with lazy parameters: nothing is allocated until a parameter is
    /// loaded (by [`crate::load`]) or used.
    pub fn init<B: Backend>(&self, device: &B::Device) -> BertModel<B> {
        let (h, eps) = (self.hidden_size, self.layer_norm_eps);
        let embedding = |n| EmbeddingConfig::new(n, h).init(device);
        BertModel {
            embeddings: BertEmbeddings {
                word_embeddings: embedding(self.vocab_size),
                position_embeddings: embedding(self.max_position_embeddings),
                token_type_embeddings: embedding(self.type_vocab_size),
                layer_norm: LayerNormConfig::new(h).with_epsilon(eps).init(device),
            },
            encoder: BertEncoder {
                layer: (0..self.num_hidden_layers)
                    .map(|_| self.init_layer(device))
                    .collect(),
            },
            pooler: self.pooler.then(|| BertPooler {
                dense: LinearConfig::new(h, h).init(device),
            }),
            config: self.clone(),
        }
    }

    /// One encoder layer on `device` with lazy parameters.
    pub fn init_layer<B: Backend>(&self, device: &B::Device) -> BertLayer<B> {
        let (h, eps) = (self.hidden_size, self.layer_norm_eps);
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        let norm = || LayerNormConfig::new(h).with_epsilon(eps).init(device);
        BertLayer {
            attention: BertAttention {
                self_attn: BertSelfAttention {
                    query: linear(h, h),
                    key: linear(h, h),
                    value: linear(h, h),
                    num_heads: self.num_attention_heads,
                },
                output: BertSelfOutput {
                    dense: linear(h, h),
                    layer_norm: norm(),
                },
            },
            intermediate: BertIntermediate {
                dense: linear(h, self.intermediate_size),
                act: self.hidden_act,
            },
            output: BertOutput {
                dense: linear(self.intermediate_size, h),
                layer_norm: norm(),
            },
        }
    }
}

/// Word, position and token-type embeddings, summed and normalised.
#[derive(Module, Debug)]
pub struct BertEmbeddings<B: Backend> {
    /// `word_embeddings`: `[vocab_size, hidden_size]`.
    pub word_embeddings: Embedding<B>,
    /// `position_embeddings`: `[max_position_embeddings, hidden_size]`.
    pub position_embeddings: Embedding<B>,
    /// `token_type_embeddings`: `[type_vocab_size, hidden_size]`.
    pub token_type_embeddings: Embedding<B>,
    /// `LayerNorm`.
    pub layer_norm: LayerNorm<B>,
}

impl<B: Backend> BertEmbeddings<B> {
    /// `[batch, seq]` ids (and token types, 0 when `None`) → `[batch, seq, hidden]`.
    ///
    /// # Panics
    ///
    /// If `seq` is longer than `max_position_embeddings`.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        token_type_ids: Option<Tensor<B, 2, Int>>,
    ) -> Tensor<B, 3> {
        let [batch, seq] = input_ids.dims();
        let max = self.position_embeddings.weight.lazy_shape().dims::<2>()[0];
        assert!(
            seq <= max,
            "the input has {seq} tokens but the model has {max} position embeddings"
        );
        let device = input_ids.device();
        let positions = Tensor::<B, 1, Int>::arange(0..seq as i64, &device).reshape([1, seq]);
        let types = token_type_ids.unwrap_or_else(|| Tensor::zeros([batch, seq], &device));
        let x = self.word_embeddings.forward(input_ids) + self.token_type_embeddings.forward(types);
        self.layer_norm
            .forward(x + self.position_embeddings.forward(positions))
    }
}

/// `attention.self`: the query, key and value projections and multi-head attention.
#[derive(Module, Debug)]
pub struct BertSelfAttention<B: Backend> {
    /// `query`.
    pub query: Linear<B>,
    /// `key`.
    pub key: Linear<B>,
    /// `value`.
    pub value: Linear<B>,
    /// The number of heads.
    pub num_heads: usize,
}

impl<B: Backend> BertSelfAttention<B> {
    /// `[batch, seq, hidden]` → the heads' outputs, concatenated, `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<B, 3>, mask: Option<&Tensor<B, 4, Bool>>) -> Tensor<B, 3> {
        let heads = self.num_heads;
        let q = split_heads(self.query.forward(x.clone()), heads);
        let k = split_heads(self.key.forward(x.clone()), heads);
        let v = split_heads(self.value.forward(x), heads);
        merge_heads(attend(q, k, v, mask))
    }
}

/// `attention.output` and `output`: a projection, the residual, a LayerNorm.
#[derive(Module, Debug)]
pub struct BertSelfOutput<B: Backend> {
    /// `dense`.
    pub dense: Linear<B>,
    /// `LayerNorm`.
    pub layer_norm: LayerNorm<B>,
}

impl<B: Backend> BertSelfOutput<B> {
    /// `LayerNorm(dense(x) + residual)`.
    pub fn forward(&self, x: Tensor<B, 3>, residual: Tensor<B, 3>) -> Tensor<B, 3> {
        self.layer_norm.forward(self.dense.forward(x) + residual)
    }
}

/// The layer's second residual block has the same shape as the first.
pub type BertOutput<B> = BertSelfOutput<B>;

/// `attention`: self-attention and its output block.
#[derive(Module, Debug)]
pub struct BertAttention<B: Backend> {
    /// `self` (a Rust keyword, hence the field name).
    pub self_attn: BertSelfAttention<B>,
    /// `output`.
    pub output: BertSelfOutput<B>,
}

/// `intermediate`: the widening projection and its activation.
#[derive(Module, Debug)]
pub struct BertIntermediate<B: Backend> {
    /// `dense`: `hidden_size` → `intermediate_size`.
    pub dense: Linear<B>,
    /// `hidden_act`.
    pub act: BertActivation,
}

/// `encoder.layer.N`: one block.
#[derive(Module, Debug)]
pub struct BertLayer<B: Backend> {
    /// `attention`.
    pub attention: BertAttention<B>,
    /// `intermediate`.
    pub intermediate: BertIntermediate<B>,
    /// `output`.
    pub output: BertOutput<B>,
}

impl<B: Backend> BertLayer<B> {
    /// One layer over `[batch, seq, hidden]`; `mask` (true: padding) broadcasts to
    /// `[batch, heads, seq, seq]`.
    pub fn forward(&self, x: Tensor<B, 3>, mask: Option<&Tensor<B, 4, Bool>>) -> Tensor<B, 3> {
        let attended = self.attention.self_attn.forward(x.clone(), mask);
        let x = self.attention.output.forward(attended, x);
        let wide = self
            .intermediate
            .act
            .apply(self.intermediate.dense.forward(x.clone()));
        self.output.forward(wide, x)
    }
}

/// `encoder`: the layers.
#[derive(Module, Debug)]
pub struct BertEncoder<B: Backend> {
    /// `layer.N`.
    pub layer: Vec<BertLayer<B>>,
}

/// `pooler`: `tanh(dense(first token))`.
#[derive(Module, Debug)]
pub struct BertPooler<B: Backend> {
    /// `dense`.
    pub dense: Linear<B>,
}

/// transformers' `BertModel`.
#[derive(Module, Debug)]
pub struct BertModel<B: Backend> {
    /// `embeddings`.
    pub embeddings: BertEmbeddings<B>,
    /// `encoder`.
    pub encoder: BertEncoder<B>,
    /// `pooler`, where the class has one.
    pub pooler: Option<BertPooler<B>>,
    /// The sizes it was built with.
    pub config: BertConfig,
}

/// The input of [`BertModel`]: `[batch, seq]` token ids, with optional token types and
/// padding mask of the same shape.
#[derive(Debug, Clone)]
pub struct BertInput<B: Backend> {
    /// Token ids.
    pub input_ids: Tensor<B, 2, Int>,
    /// Segment of each token (0 or 1 for sentence pairs); all 0 when `None`.
    pub token_type_ids: Option<Tensor<B, 2, Int>>,
    /// 1 for tokens to attend to, 0 for padding; all 1 when `None`.
    pub attention_mask: Option<Tensor<B, 2, Int>>,
}

impl<B: Backend> BertInput<B> {
    /// One sequence of token ids, with no token types and no padding.
    pub fn from_ids(ids: &[u32], device: &B::Device) -> Self {
        BertInput {
            input_ids: token_ids(&[ids], device),
            token_type_ids: None,
            attention_mask: None,
        }
    }

    /// Sequences of token ids, right-padded with `pad_id` to the longest, with the padding
    /// mask that goes with them.
    ///
    /// # Panics
    ///
    /// If `sequences` is empty.
    pub fn padded(sequences: &[&[u32]], pad_id: u32, device: &B::Device) -> Self {
        let len = sequences.iter().map(|s| s.len()).max().expect("a sequence");
        let padded = |mut row: Vec<u32>, with: u32| {
            row.resize(len, with);
            row
        };
        let ids: Vec<Vec<u32>> = sequences
            .iter()
            .map(|s| padded(s.to_vec(), pad_id))
            .collect();
        let mask: Vec<Vec<u32>> = sequences
            .iter()
            .map(|s| padded(vec![1; s.len()], 0))
            .collect();
        let rows =
            |v: &[Vec<u32>]| token_ids(&v.iter().map(Vec::as_slice).collect::<Vec<_>>(), device);
        BertInput {
            input_ids: rows(&ids),
            token_type_ids: None,
            attention_mask: Some(rows(&mask)),
        }
    }

    /// The same input with these token types.
    pub fn with_token_type_ids(mut self, token_type_ids: Tensor<B, 2, Int>) -> Self {
        self.token_type_ids = Some(token_type_ids);
        self
    }
}

/// What every [`BertLayer`] needs besides the hidden states: the padding mask.
#[derive(Debug, Clone)]
pub struct BertContext<B: Backend> {
    /// `[batch, 1, 1, seq]`, true at padding; `None` when nothing is padded.
    pub mask: Option<Tensor<B, 4, Bool>>,
}

/// What [`BertModel`] computes (transformers' `BaseModelOutputWithPooling`).
#[derive(Debug, Clone)]
pub struct BertModelOutput<B: Backend> {
    /// `[batch, seq, hidden]`: the last layer's output.
    pub last_hidden_state: Tensor<B, 3>,
    /// `[batch, hidden]`: the pooler's output, where the model has a pooler.
    pub pooler_output: Option<Tensor<B, 2>>,
}

impl<B: Backend> BertModel<B> {
    /// The whole model: [`Layered::run`], embeddings → every layer → pooler.
    pub fn forward(&self, input: &BertInput<B>) -> BertModelOutput<B> {
        self.run(input)
    }

    /// Rules from this model's parameter paths to transformers' checkpoint names:
    /// `gamma`/`beta` → `weight`/`bias`, `layer_norm` → `LayerNorm`, `self_attn` → `self`,
    /// and the `bert.` prefix for the `BertFor*` classes.
    pub fn renames(&self) -> Renames {
        let r = Renames::new()
            .segment("gamma", "weight")
            .segment("beta", "bias")
            .segment("layer_norm", "LayerNorm")
            .segment("self_attn", "self");
        if self.config.prefixed {
            r.add_prefix("bert")
        } else {
            r
        }
    }
}

impl<B: Backend> Layered<B> for BertModel<B> {
    type Input = BertInput<B>;
    type Block = BertLayer<B>;
    type Context = BertContext<B>;
    type Output = BertModelOutput<B>;

    fn num_blocks(&self) -> usize {
        self.config.num_hidden_layers
    }

    fn blocks(&self) -> &[BertLayer<B>] {
        &self.encoder.layer
    }

    fn blocks_mut(&mut self) -> &mut Vec<BertLayer<B>> {
        &mut self.encoder.layer
    }

    fn block_path(&self, i: usize) -> String {
        format!("encoder.layer.{i}")
    }

    fn renames(&self) -> Renames {
        BertModel::renames(self)
    }

    fn make_block(&self, _i: usize, device: &B::Device) -> BertLayer<B> {
        self.config.init_layer(device)
    }

    fn embed(&self, input: &BertInput<B>) -> (Tensor<B, 3>, BertContext<B>) {
        let device = self.embeddings.word_embeddings.weight.lazy_device();
        let ids = move_to(input.input_ids.clone(), &device);
        let types = input.token_type_ids.clone().map(|t| move_to(t, &device));
        let mask = input.attention_mask.clone().map(|m| {
            let [batch, seq] = m.dims();
            move_to(m, &device)
                .equal_elem(0)
                .reshape([batch, 1, 1, seq])
        });
        (self.embeddings.forward(ids, types), BertContext { mask })
    }

    fn context_to(ctx: &BertContext<B>, device: &B::Device) -> BertContext<B> {
        BertContext {
            mask: ctx.mask.clone().map(|m| move_to(m, device)),
        }
    }

    fn run_block(block: &BertLayer<B>, x: Tensor<B, 3>, ctx: &BertContext<B>) -> Tensor<B, 3> {
        block.forward(x, ctx.mask.as_ref())
    }

    fn finish(&self, x: Tensor<B, 3>) -> BertModelOutput<B> {
        let pooler_output = self.pooler.as_ref().map(|p| {
            let [batch, _, hidden] = x.dims();
            let first = x.clone().slice([0..batch, 0..1]).reshape([batch, hidden]);
            p.dense.forward(first).tanh()
        });
        BertModelOutput {
            last_hidden_state: x,
            pooler_output,
        }
    }
}
