//! The Llama-family decoder, transformers' `LlamaForCausalLM`, with the details that make it
//! Mistral's or Qwen2's.
//!
//! Parameters carry transformers' checkpoint names once [`LlamaForCausalLM::renames`] is
//! applied (burn's `RmsNorm` calls its weight `gamma`): `model.embed_tokens`, then per layer
//! `model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj, post_attention_layernorm,
//! mlp.{gate,up,down}_proj}`, then `model.norm` and `lm_head`.
//!
//! The math is transformers' in eval mode: RMSNorm before attention and MLP, rotary position
//! embeddings in the `rotate_half` convention ([`super::rope`]), grouped-query attention
//! (`num_key_value_heads` ≤ `num_attention_heads`, each key/value head shared by a run of
//! query heads), a causal mask, and the SwiGLU MLP `down(silu(gate(x)) · up(x))`.
//!
//! The family members differ in details read from `config.json`:
//! - `llama`: q/k/v/o biases when `attention_bias`, MLP biases when `mlp_bias`;
//!   `rope_scaling` of type `linear` or `llama3`.
//! - `qwen2`: q/k/v biases, always.
//! - `mistral`: no biases; `sliding_window`, when set, limits each token to that many
//!   positions back.
//!
//! A tied head (`tie_word_embeddings`) is still an `lm_head` parameter: [`crate::load`]
//! fills it with the embedding's storage (one copy) when the inventory knows the tie, which
//! it reads from the same `config.json`.

use std::path::Path;

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, RmsNorm, RmsNormConfig};
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::activation::silu;
use serde_json::Value;
use stowage_planner::ModelConfig;

use super::attention::{attend, merge_heads, repeat_kv, split_heads};
use super::fields::Fields;
use super::rope::{Rope, RopeScaling, RopeTables};
use super::{Layered, move_to, token_ids};
use crate::error::Result;
// burn's Linear, able to also hold its weight quantized (`crate::quantized` says why).
use crate::quantized::{QuantLinear as Linear, QuantLinearConfig as LinearConfig};
use crate::rename::Renames;

/// Which member of the Llama family a config describes (`model_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlamaFamily {
    /// `llama`.
    Llama,
    /// `mistral`.
    Mistral,
    /// `qwen2`.
    Qwen2,
}

impl LlamaFamily {
    /// The causal-LM class name.
    fn class(self) -> &'static str {
        match self {
            LlamaFamily::Llama => "LlamaForCausalLM",
            LlamaFamily::Mistral => "MistralForCausalLM",
            LlamaFamily::Qwen2 => "Qwen2ForCausalLM",
        }
    }
}

/// A Llama-family decoder's sizes, from its `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// `model_type`.
    pub family: LlamaFamily,
    /// `vocab_size`.
    pub vocab_size: usize,
    /// `hidden_size`.
    pub hidden_size: usize,
    /// `intermediate_size`.
    pub intermediate_size: usize,
    /// `num_hidden_layers`: the decoder layers, the blocks of [`Layered`].
    pub num_hidden_layers: usize,
    /// `num_attention_heads`.
    pub num_attention_heads: usize,
    /// `num_key_value_heads` (default: `num_attention_heads`); divides it.
    pub num_key_value_heads: usize,
    /// `head_dim` (default: `hidden_size / num_attention_heads`); even.
    pub head_dim: usize,
    /// `rms_norm_eps`.
    pub rms_norm_eps: f64,
    /// `rope_theta`.
    pub rope_theta: f64,
    /// `rope_scaling`.
    pub rope_scaling: RopeScaling,
    /// `tie_word_embeddings`: the head is the embedding.
    pub tie_word_embeddings: bool,
    /// Biases on `q_proj`, `k_proj`, `v_proj` (Qwen2; Llama's `attention_bias`).
    pub qkv_bias: bool,
    /// A bias on `o_proj` (Llama's `attention_bias`).
    pub o_bias: bool,
    /// Biases on the MLP projections (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// Mistral's `sliding_window`: how many positions a token sees, itself included.
    pub sliding_window: Option<usize>,
}

impl LlamaConfig {
    /// Reads a `config.json`.
    ///
    /// # Errors
    ///
    /// The file cannot be read or parsed, or see [`LlamaConfig::from_model_config`].
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_model_config(&ModelConfig::from_file(path)?)
    }

    /// The sizes of a parsed `config.json`.
    ///
    /// # Errors
    ///
    /// A missing or zero size, heads that do not divide, `model_type` other than `llama`,
    /// `mistral` or `qwen2`, a class other than the family's causal LM, an activation other
    /// than `silu`, or a RoPE scaling other than `linear` and `llama3`; each names the file
    /// and the field.
    pub fn from_model_config(config: &ModelConfig) -> Result<Self> {
        let f = Fields(config);
        let family = match f.text_or("model_type", "llama")? {
            "llama" => LlamaFamily::Llama,
            "mistral" => LlamaFamily::Mistral,
            "qwen2" => LlamaFamily::Qwen2,
            other => {
                return Err(f.invalid(format!(
                    "`model_type` is `{other}`; LlamaConfig reads llama, mistral and qwen2"
                )));
            }
        };
        if let Some(a) = config.architecture()
            && a != family.class()
        {
            return Err(f.invalid(format!(
                "architecture `{a}` is not `{}`, the causal LM stowage builds",
                family.class()
            )));
        }
        let act = f.text_or("hidden_act", "silu")?;
        if act != "silu" {
            return Err(f.invalid(format!(
                "`hidden_act` `{act}` is not supported, only `silu`"
            )));
        }
        let hidden_size = f.dim("hidden_size")?;
        let heads = f.dim("num_attention_heads")?;
        let kv_heads = f.dim_or("num_key_value_heads", heads)?;
        if !heads.is_multiple_of(kv_heads) {
            return Err(f.invalid(format!(
                "`num_attention_heads` ({heads}) is not a multiple of `num_key_value_heads` \
                 ({kv_heads})"
            )));
        }
        let head_dim = match f.opt_dim("head_dim")? {
            Some(d) => d,
            None => f.head_dim(hidden_size, heads)?,
        };
        if !head_dim.is_multiple_of(2) {
            return Err(f.invalid(format!(
                "the head size {head_dim} is odd; RoPE needs it even"
            )));
        }
        let (qkv_bias, o_bias, mlp_bias) = match family {
            LlamaFamily::Llama => {
                let attention = f.flag("attention_bias", false)?;
                (attention, attention, f.flag("mlp_bias", false)?)
            }
            LlamaFamily::Qwen2 => (true, false, false),
            LlamaFamily::Mistral => (false, false, false),
        };
        let sliding_window = match family {
            LlamaFamily::Mistral => f.opt_dim("sliding_window")?,
            LlamaFamily::Qwen2 if f.flag("use_sliding_window", false)? => {
                return Err(f.invalid("`use_sliding_window` is not supported for qwen2"));
            }
            _ => None,
        };
        let (rope_theta, rope_scaling) = rope(f)?;
        Ok(LlamaConfig {
            family,
            vocab_size: f.dim("vocab_size")?,
            hidden_size,
            intermediate_size: f.dim("intermediate_size")?,
            num_hidden_layers: f.dim("num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: f.positive_or("rms_norm_eps", 1e-6)?,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: f.flag("tie_word_embeddings", false)?,
            qkv_bias,
            o_bias,
            mlp_bias,
            sliding_window,
        })
    }

    /// The rotary embedding of one head.
    pub fn rope(&self) -> Rope {
        Rope {
            theta: self.rope_theta,
            head_dim: self.head_dim,
            scaling: self.rope_scaling,
        }
    }

    /// The model on `device` with lazy parameters: nothing is allocated until a parameter is
    /// loaded (by [`crate::load`]) or used.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LlamaForCausalLM<B> {
        LlamaForCausalLM {
            model: LlamaModel {
                embed_tokens: EmbeddingConfig::new(self.vocab_size, self.hidden_size).init(device),
                layers: (0..self.num_hidden_layers)
                    .map(|_| self.init_layer(device))
                    .collect(),
                norm: self.norm(device),
            },
            lm_head: LinearConfig::new(self.hidden_size, self.vocab_size)
                .with_bias(false)
                .init(device),
            config: self.clone(),
        }
    }

    /// One decoder layer on `device` with lazy parameters.
    pub fn init_layer<B: Backend>(&self, device: &B::Device) -> LlamaDecoderLayer<B> {
        let linear = |i, o, bias| LinearConfig::new(i, o).with_bias(bias).init(device);
        let (h, q, kv, inter) = (
            self.hidden_size,
            self.num_attention_heads * self.head_dim,
            self.num_key_value_heads * self.head_dim,
            self.intermediate_size,
        );
        LlamaDecoderLayer {
            input_layernorm: self.norm(device),
            self_attn: LlamaAttention {
                q_proj: linear(h, q, self.qkv_bias),
                k_proj: linear(h, kv, self.qkv_bias),
                v_proj: linear(h, kv, self.qkv_bias),
                o_proj: linear(q, h, self.o_bias),
                num_heads: self.num_attention_heads,
                num_kv_heads: self.num_key_value_heads,
            },
            post_attention_layernorm: self.norm(device),
            mlp: LlamaMlp {
                gate_proj: linear(h, inter, self.mlp_bias),
                up_proj: linear(h, inter, self.mlp_bias),
                down_proj: linear(inter, h, self.mlp_bias),
            },
        }
    }

    fn norm<B: Backend>(&self, device: &B::Device) -> RmsNorm<B> {
        RmsNormConfig::new(self.hidden_size)
            .with_epsilon(self.rms_norm_eps)
            .init(device)
    }
}

/// `rope_theta` and the scaling, from `rope_theta`/`rope_scaling` or the newer
/// `rope_parameters`.
fn rope(f: Fields) -> Result<(f64, RopeScaling)> {
    let params = f
        .value("rope_parameters")
        .or_else(|| f.value("rope_scaling"));
    let theta = match (
        f.value("rope_theta"),
        params.and_then(|p| p.get("rope_theta")),
    ) {
        (Some(v), _) => f.positive_in("rope_theta", v)?,
        (None, Some(v)) => f.positive_in("rope_parameters.rope_theta", v)?,
        (None, None) => 10_000.0,
    };
    let Some(params) = params else {
        return Ok((theta, RopeScaling::None));
    };
    let field = |key: &str| -> Result<f64> {
        match params.get(key) {
            Some(v) => f.positive_in(&format!("rope_scaling.{key}"), v),
            None => Err(f.invalid(format!("`rope_scaling` has no `{key}`"))),
        }
    };
    let kind = params
        .get("rope_type")
        .or_else(|| params.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: field("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: field("factor")?,
            low_freq_factor: field("low_freq_factor")?,
            high_freq_factor: field("high_freq_factor")?,
            original_max_position_embeddings: field("original_max_position_embeddings")?,
        },
        other => {
            return Err(f.invalid(format!(
                "RoPE scaling `{other}` is not supported (default, linear, llama3)"
            )));
        }
    };
    Ok((theta, scaling))
}

/// `self_attn`: grouped-query attention with rotary positions.
#[derive(Module, Debug)]
pub struct LlamaAttention<B: Backend> {
    /// `q_proj`: `hidden` → `heads · head_dim`.
    pub q_proj: Linear<B>,
    /// `k_proj`: `hidden` → `kv_heads · head_dim`.
    pub k_proj: Linear<B>,
    /// `v_proj`: `hidden` → `kv_heads · head_dim`.
    pub v_proj: Linear<B>,
    /// `o_proj`: `heads · head_dim` → `hidden`.
    pub o_proj: Linear<B>,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads; divides `num_heads`.
    pub num_kv_heads: usize,
}

impl<B: Backend> LlamaAttention<B> {
    /// `[batch, seq, hidden]` → `[batch, seq, hidden]`, positions from 0.
    pub fn forward(&self, x: Tensor<B, 3>, ctx: &LlamaContext<B>) -> Tensor<B, 3> {
        let times = self.num_heads / self.num_kv_heads;
        let q = split_heads(self.q_proj.forward(x.clone()), self.num_heads);
        let k = split_heads(self.k_proj.forward(x.clone()), self.num_kv_heads);
        let v = split_heads(self.v_proj.forward(x), self.num_kv_heads);
        let (q, k) = (ctx.rope.apply(q), ctx.rope.apply(k));
        let out = attend(q, repeat_kv(k, times), repeat_kv(v, times), Some(&ctx.mask));
        self.o_proj.forward(merge_heads(out))
    }
}

/// `mlp`: SwiGLU.
#[derive(Module, Debug)]
pub struct LlamaMlp<B: Backend> {
    /// `gate_proj`.
    pub gate_proj: Linear<B>,
    /// `up_proj`.
    pub up_proj: Linear<B>,
    /// `down_proj`.
    pub down_proj: Linear<B>,
}

impl<B: Backend> LlamaMlp<B> {
    /// `down(silu(gate(x)) · up(x))`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}

/// `model.layers.N`: one block.
#[derive(Module, Debug)]
pub struct LlamaDecoderLayer<B: Backend> {
    /// `input_layernorm`.
    pub input_layernorm: RmsNorm<B>,
    /// `self_attn`.
    pub self_attn: LlamaAttention<B>,
    /// `post_attention_layernorm`.
    pub post_attention_layernorm: RmsNorm<B>,
    /// `mlp`.
    pub mlp: LlamaMlp<B>,
}

impl<B: Backend> LlamaDecoderLayer<B> {
    /// One layer over `[batch, seq, hidden]`: two pre-norm residual blocks.
    pub fn forward(&self, x: Tensor<B, 3>, ctx: &LlamaContext<B>) -> Tensor<B, 3> {
        let x = x.clone() + self.self_attn.forward(self.input_layernorm.forward(x), ctx);
        x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x))
    }
}

/// `model`: the decoder without its head.
#[derive(Module, Debug)]
pub struct LlamaModel<B: Backend> {
    /// `embed_tokens`.
    pub embed_tokens: Embedding<B>,
    /// `layers.N`.
    pub layers: Vec<LlamaDecoderLayer<B>>,
    /// `norm`.
    pub norm: RmsNorm<B>,
}

/// transformers' `LlamaForCausalLM` (and `MistralForCausalLM`, `Qwen2ForCausalLM`).
#[derive(Module, Debug)]
pub struct LlamaForCausalLM<B: Backend> {
    /// `model`.
    pub model: LlamaModel<B>,
    /// `lm_head`: `hidden` → `vocab`, no bias.
    pub lm_head: Linear<B>,
    /// The sizes it was built with.
    pub config: LlamaConfig,
}

/// What every [`LlamaDecoderLayer`] needs besides the hidden states.
#[derive(Debug, Clone)]
pub struct LlamaContext<B: Backend> {
    /// The rotary tables of positions `0..seq`.
    pub rope: RopeTables<B>,
    /// `[1, 1, seq, seq]`, true where query `i` may not see key `j`.
    pub mask: Tensor<B, 4, Bool>,
}

/// The causal mask of `seq` positions, `[1, 1, seq, seq]`, true where query `i` may not see
/// key `j`: `j > i`, or `i − j ≥ window` with a sliding window.
pub fn causal_mask<B: Backend>(
    seq: usize,
    window: Option<usize>,
    device: &B::Device,
) -> Tensor<B, 4, Bool> {
    let masked: Vec<bool> = (0..seq)
        .flat_map(|i| (0..seq).map(move |j| j > i || window.is_some_and(|w| i - j >= w)))
        .collect();
    Tensor::from_data(TensorData::new(masked, [1, 1, seq, seq]), device)
}

impl<B: Backend> LlamaForCausalLM<B> {
    /// Logits `[batch, seq, vocab]` of `[batch, seq]` token ids: [`Layered::run`].
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.run(&input_ids)
    }

    /// Rules from this model's parameter paths to transformers' checkpoint names: burn's
    /// `gamma` of each RMSNorm is `weight`.
    pub fn renames(&self) -> Renames {
        Renames::new().segment("gamma", "weight")
    }

    /// `new` tokens after `prompt`, each the most likely next one (the first on ties), by
    /// running the whole sequence again for every token (no KV cache).
    ///
    /// # Panics
    ///
    /// If `prompt` is empty.
    pub fn generate_greedy(&self, prompt: &[u32], new: usize) -> Vec<u32> {
        assert!(!prompt.is_empty(), "greedy generation needs a prompt");
        let device = self.model.embed_tokens.weight.lazy_device();
        let mut ids = prompt.to_vec();
        for _ in 0..new {
            let logits = self.forward(token_ids(&[&ids], &device));
            let [_, seq, vocab] = logits.dims();
            let last = logits
                .slice([0..1, seq - 1..seq, 0..vocab])
                .reshape([vocab]);
            let next = last.argmax(0).into_data().iter::<i64>().next();
            ids.push(
                next.and_then(|t| u32::try_from(t).ok())
                    .expect("a token id"),
            );
        }
        ids.split_off(prompt.len())
    }
}

impl<B: Backend> Layered<B> for LlamaForCausalLM<B> {
    type Input = Tensor<B, 2, Int>;
    type Block = LlamaDecoderLayer<B>;
    type Context = LlamaContext<B>;
    type Output = Tensor<B, 3>;

    fn num_blocks(&self) -> usize {
        self.config.num_hidden_layers
    }

    fn blocks(&self) -> &[LlamaDecoderLayer<B>] {
        &self.model.layers
    }

    fn blocks_mut(&mut self) -> &mut Vec<LlamaDecoderLayer<B>> {
        &mut self.model.layers
    }

    fn block_path(&self, i: usize) -> String {
        format!("model.layers.{i}")
    }

    fn renames(&self) -> Renames {
        LlamaForCausalLM::renames(self)
    }

    fn make_block(&self, _i: usize, device: &B::Device) -> LlamaDecoderLayer<B> {
        self.config.init_layer(device)
    }

    fn embed(&self, input_ids: &Tensor<B, 2, Int>) -> (Tensor<B, 3>, LlamaContext<B>) {
        let device = self.model.embed_tokens.weight.lazy_device();
        let seq = input_ids.dims()[1];
        let x = self
            .model
            .embed_tokens
            .forward(move_to(input_ids.clone(), &device));
        let ctx = LlamaContext {
            rope: self.config.rope().tables(0..seq, &device),
            mask: causal_mask(seq, self.config.sliding_window, &device),
        };
        (x, ctx)
    }

    fn context_to(ctx: &LlamaContext<B>, device: &B::Device) -> LlamaContext<B> {
        LlamaContext {
            rope: ctx.rope.to_device(device),
            mask: move_to(ctx.mask.clone(), device),
        }
    }

    fn run_block(
        block: &LlamaDecoderLayer<B>,
        x: Tensor<B, 3>,
        ctx: &LlamaContext<B>,
    ) -> Tensor<B, 3> {
        block.forward(x, ctx)
    }

    fn finish(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.lm_head.forward(self.model.norm.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_ndarray::{NdArray, NdArrayDevice};
    use std::path::PathBuf;

    type B = NdArray;

    fn config(json: &str) -> Result<LlamaConfig> {
        let c = ModelConfig::from_json_str(&PathBuf::from("/m/config.json"), json)?;
        LlamaConfig::from_model_config(&c)
    }

    #[test]
    fn causal_mask_hides_the_future_and_beyond_the_window() {
        let m: Vec<bool> = causal_mask::<B>(4, None, &NdArrayDevice::Cpu)
            .into_data()
            .to_vec()
            .unwrap();
        let row = |r: usize| m[r * 4..r * 4 + 4].to_vec();
        assert_eq!(row(0), [false, true, true, true]);
        assert_eq!(row(3), [false, false, false, false]);
        let w: Vec<bool> = causal_mask::<B>(4, Some(2), &NdArrayDevice::Cpu)
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(w[12..16], [true, true, false, false]);
    }

    #[test]
    fn family_details_come_from_the_config() {
        let base = r#""hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
            "num_attention_heads":8,"vocab_size":100"#;
        let qwen = config(&format!(
            r#"{{"model_type":"qwen2",{base},"num_key_value_heads":2}}"#
        ))
        .unwrap();
        assert_eq!(qwen.family, LlamaFamily::Qwen2);
        assert!(qwen.qkv_bias && !qwen.o_bias && !qwen.mlp_bias);
        assert_eq!((qwen.head_dim, qwen.num_key_value_heads), (8, 2));
        let mistral = config(&format!(
            r#"{{"model_type":"mistral",{base},"sliding_window":4096,"rope_theta":1e6}}"#
        ))
        .unwrap();
        assert_eq!(mistral.sliding_window, Some(4096));
        assert_eq!(mistral.rope_theta, 1e6);
        assert_eq!(mistral.num_key_value_heads, 8);
        let llama3 = config(&format!(
            r#"{{"model_type":"llama",{base},"attention_bias":true,"rope_scaling":{{"rope_type":"llama3",
            "factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}}}"#
        ))
        .unwrap();
        assert!(llama3.qkv_bias && llama3.o_bias);
        assert!(matches!(llama3.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
    }

    #[test]
    fn bad_configs_name_the_file_and_the_field() {
        let base =
            r#""hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"vocab_size":100"#;
        for (json, needle) in [
            (
                format!(r#"{{{base},"num_attention_heads":8,"num_key_value_heads":3}}"#),
                "num_key_value_heads",
            ),
            (
                format!(r#"{{{base},"num_attention_heads":0}}"#),
                "num_attention_heads",
            ),
            (
                format!(r#"{{{base},"num_attention_heads":8,"model_type":"gpt2"}}"#),
                "model_type",
            ),
            (
                format!(
                    r#"{{{base},"num_attention_heads":8,"rope_scaling":{{"type":"yarn","factor":2}}}}"#
                ),
                "yarn",
            ),
            (r#"{"num_attention_heads":8}"#.to_string(), "hidden_size"),
        ] {
            let err = config(&json).unwrap_err().to_string();
            assert!(
                err.contains("/m/config.json") && err.contains(needle),
                "{err}"
            );
        }
    }
}
