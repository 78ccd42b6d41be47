//! The Llama decoder layout, shared by `llama`, `mistral`, `qwen2` and `mixtral`.
//!
//! `LlamaForCausalLM` (and its siblings) store `model.embed_tokens.weight`, then per layer
//! `input_layernorm`, `self_attn.{q,k,v,o}_proj`, `post_attention_layernorm` and the MLP
//! (`mlp.{gate,up,down}_proj`, or Mixtral's `block_sparse_moe`), then `model.norm.weight` and
//! `lm_head.weight`. The bare `LlamaModel` class stores the same without the `model.` prefix
//! and without `lm_head`.
//!
//! The families differ only in biases: Llama has `attention_bias` (q/k/v/o) and `mlp_bias`,
//! Qwen2 always has q/k/v biases and no others, Mistral and Mixtral have none.

use super::builder::Tensors;
use super::fields::Fields;
use super::mixtral::SparseMoe;
use crate::config::ModelConfig;
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::TensorInfo;

/// Which member of the Llama layout a config is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    /// `llama`.
    Llama,
    /// `mistral`.
    Mistral,
    /// `qwen2`.
    Qwen2,
    /// `mixtral`: a sparse MoE in place of the MLP.
    Mixtral,
}

impl Family {
    /// The class names of the bare model and of the causal LM.
    fn classes(self) -> [&'static str; 2] {
        match self {
            Family::Llama => ["LlamaModel", "LlamaForCausalLM"],
            Family::Mistral => ["MistralModel", "MistralForCausalLM"],
            Family::Qwen2 => ["Qwen2Model", "Qwen2ForCausalLM"],
            Family::Mixtral => ["MixtralModel", "MixtralForCausalLM"],
        }
    }
}

/// Sizes read from the config.
struct Dims {
    vocab: u64,
    hidden: u64,
    layers: u64,
    /// `num_attention_heads * head_dim`: the width of q and of o's input.
    q_width: u64,
    /// `num_key_value_heads * head_dim`: the width of k and v.
    kv_width: u64,
    intermediate: u64,
    /// Biases of q/k/v, of o, and of the MLP projections.
    qkv_bias: bool,
    o_bias: bool,
    mlp_bias: bool,
    /// Whether the checkpoint has the causal-LM head (and the `model.` prefix).
    causal: bool,
    tied: bool,
}

impl Dims {
    fn read(f: Fields, family: Family) -> Result<Self> {
        let hidden = f.dim("hidden_size")?;
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
            None => f.split("hidden_size", hidden, "num_attention_heads", heads)?,
        };
        let (qkv_bias, o_bias, mlp_bias) = match family {
            Family::Llama => {
                let attention = f.flag("attention_bias", false)?;
                (attention, attention, f.flag("mlp_bias", false)?)
            }
            Family::Qwen2 => (true, false, false),
            Family::Mistral | Family::Mixtral => (false, false, false),
        };
        let [base, causal_class] = family.classes();
        let causal = match f.architecture() {
            None => true,
            Some(a) if a == causal_class => true,
            Some(a) if a == base => false,
            Some(a) => return Err(f.unknown_head(a, &[causal_class, base])),
        };
        Ok(Dims {
            vocab: f.dim("vocab_size")?,
            hidden,
            layers: f.dim("num_hidden_layers")?,
            q_width: f.mul("`num_attention_heads` × `head_dim`", heads, head_dim)?,
            kv_width: f.mul("`num_key_value_heads` × `head_dim`", kv_heads, head_dim)?,
            intermediate: f.dim("intermediate_size")?,
            qkv_bias,
            o_bias,
            mlp_bias,
            causal,
            tied: f.tied(false)?,
        })
    }

    fn prefix(&self) -> &'static str {
        if self.causal { "model." } else { "" }
    }
}

/// The tensors of a Llama-layout checkpoint, in execution order.
pub(super) fn expand(
    config: &ModelConfig,
    dtype: Option<DType>,
    family: Family,
) -> Result<Vec<TensorInfo>> {
    let f = Fields(config);
    let d = Dims::read(f, family)?;
    let moe = match family {
        Family::Mixtral => Some(SparseMoe::read(f)?),
        _ => None,
    };
    let p = d.prefix();
    let embed = format!("{p}embed_tokens.weight");
    let mut t = Tensors::new(config, dtype);
    t.push(embed.as_str(), &[d.vocab, d.hidden])?;
    for i in 0..d.layers {
        let l = format!("{p}layers.{i}");
        t.norm(&format!("{l}.input_layernorm"), d.hidden, false)?;
        t.linear(
            &format!("{l}.self_attn.q_proj"),
            d.q_width,
            d.hidden,
            d.qkv_bias,
        )?;
        t.linear(
            &format!("{l}.self_attn.k_proj"),
            d.kv_width,
            d.hidden,
            d.qkv_bias,
        )?;
        t.linear(
            &format!("{l}.self_attn.v_proj"),
            d.kv_width,
            d.hidden,
            d.qkv_bias,
        )?;
        t.linear(
            &format!("{l}.self_attn.o_proj"),
            d.hidden,
            d.q_width,
            d.o_bias,
        )?;
        t.norm(&format!("{l}.post_attention_layernorm"), d.hidden, false)?;
        match &moe {
            Some(moe) => moe.push(&mut t, &l, d.hidden, d.intermediate)?,
            None => {
                t.linear(
                    &format!("{l}.mlp.gate_proj"),
                    d.intermediate,
                    d.hidden,
                    d.mlp_bias,
                )?;
                t.linear(
                    &format!("{l}.mlp.up_proj"),
                    d.intermediate,
                    d.hidden,
                    d.mlp_bias,
                )?;
                t.linear(
                    &format!("{l}.mlp.down_proj"),
                    d.hidden,
                    d.intermediate,
                    d.mlp_bias,
                )?;
            }
        }
    }
    t.norm(&format!("{p}norm"), d.hidden, false)?;
    if d.causal {
        if d.tied {
            t.tied("lm_head.weight", &[d.vocab, d.hidden], &embed)?;
        } else {
            t.push("lm_head.weight", &[d.vocab, d.hidden])?;
        }
    }
    Ok(t.finish())
}

/// `lm_head.weight` tied to `model.embed_tokens.weight`, when the config ties them.
pub(super) fn tied_pairs(config: &ModelConfig, family: Family) -> Vec<(String, String)> {
    let f = Fields(config);
    let causal = f.architecture().is_none_or(|a| a == family.classes()[1]);
    if causal && f.tied(false).unwrap_or(false) {
        vec![("lm_head.weight".into(), "model.embed_tokens.weight".into())]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, load, params, parse};
    use super::*;

    #[test]
    fn llama_3_8b_has_the_published_count() {
        let c = load("llama-3-8b.json");
        let ts = expand(&c, None, Family::Llama).unwrap();
        assert_eq!(params(&ts), 8_030_261_248);
        assert_eq!(ts.len(), 2 + 32 * 9 + 1);
        check(&c, &ts, &[("model.layers.", 32)]);
        assert_eq!(ts[0].name, "model.embed_tokens.weight");
        assert_eq!(ts[0].shape, [128_256, 4096]);
        assert_eq!(ts[0].dtype, DType::BF16);
        let names: Vec<&str> = ts[1..10].iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "model.layers.0.input_layernorm.weight",
                "model.layers.0.self_attn.q_proj.weight",
                "model.layers.0.self_attn.k_proj.weight",
                "model.layers.0.self_attn.v_proj.weight",
                "model.layers.0.self_attn.o_proj.weight",
                "model.layers.0.post_attention_layernorm.weight",
                "model.layers.0.mlp.gate_proj.weight",
                "model.layers.0.mlp.up_proj.weight",
                "model.layers.0.mlp.down_proj.weight",
            ]
        );
        assert_eq!(ts[3].shape, [1024, 4096], "k_proj is 8 kv heads × 128");
        assert_eq!(ts[9].shape, [4096, 14_336]);
        let last = &ts[ts.len() - 1];
        assert_eq!(
            (last.name.as_str(), last.tied_to.as_deref()),
            ("lm_head.weight", None)
        );
        assert_eq!(ts[ts.len() - 2].name, "model.norm.weight");
    }

    #[test]
    fn llama_3_70b_has_the_published_count() {
        let c = load("llama-3-70b.json");
        let ts = expand(&c, None, Family::Llama).unwrap();
        assert_eq!(params(&ts), 70_553_706_496);
        check(&c, &ts, &[("model.layers.", 80)]);
    }

    #[test]
    fn mistral_7b_has_the_published_count() {
        let c = load("mistral-7b.json");
        let ts = expand(&c, None, Family::Mistral).unwrap();
        assert_eq!(params(&ts), 7_241_732_096);
        check(&c, &ts, &[("model.layers.", 32)]);
        assert!(ts.iter().all(|t| !t.name.ends_with(".bias")));
    }

    #[test]
    fn qwen2_7b_has_the_published_count_with_qkv_biases() {
        let c = load("qwen2-7b.json");
        let ts = expand(&c, None, Family::Qwen2).unwrap();
        assert_eq!(params(&ts), 7_615_616_512);
        check(&c, &ts, &[("model.layers.", 28)]);
        let biases: Vec<&str> = ts
            .iter()
            .filter(|t| t.name.ends_with(".bias"))
            .map(|t| t.name.as_str())
            .take(3)
            .collect();
        assert_eq!(
            biases,
            [
                "model.layers.0.self_attn.q_proj.bias",
                "model.layers.0.self_attn.k_proj.bias",
                "model.layers.0.self_attn.v_proj.bias",
            ]
        );
        assert_eq!(
            ts.iter().filter(|t| t.name.ends_with(".bias")).count(),
            28 * 3
        );
    }

    #[test]
    fn tied_qwen2_lists_lm_head_as_tied() {
        // Qwen2-0.5B ties its embeddings.
        let c = parse(
            r#"{"model_type":"qwen2","architectures":["Qwen2ForCausalLM"],"hidden_size":896,
            "intermediate_size":4864,"num_attention_heads":14,"num_key_value_heads":2,
            "num_hidden_layers":24,"vocab_size":151936,"tie_word_embeddings":true,
            "torch_dtype":"bfloat16"}"#,
        );
        let ts = expand(&c, None, Family::Qwen2).unwrap();
        assert_eq!(params(&ts), 494_032_768);
        let head = ts.last().unwrap();
        assert_eq!(head.name, "lm_head.weight");
        assert_eq!(head.tied_to.as_deref(), Some("model.embed_tokens.weight"));
        assert_eq!(head.bytes_as(None), 0);
        check(&c, &ts, &[("model.layers.", 24)]);
    }

    #[test]
    fn head_dim_and_biases_are_respected() {
        // Mistral-Nemo: head_dim 128 although hidden / heads = 160.
        let nemo = parse(
            r#"{"model_type":"mistral","hidden_size":5120,"head_dim":128,"intermediate_size":14336,
            "num_attention_heads":32,"num_key_value_heads":8,"num_hidden_layers":40,
            "vocab_size":131072}"#,
        );
        let ts = expand(&nemo, None, Family::Mistral).unwrap();
        assert_eq!(params(&ts), 12_247_782_400);
        let q = ts
            .iter()
            .find(|t| t.name == "model.layers.0.self_attn.q_proj.weight")
            .unwrap();
        assert_eq!(q.shape, [4096, 5120]);
        assert_eq!(q.dtype, DType::F32, "no torch_dtype: F32");

        let biased = parse(
            r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,
            "num_attention_heads":4,"num_hidden_layers":2,"vocab_size":100,
            "attention_bias":true,"mlp_bias":true}"#,
        );
        let ts = expand(&biased, Some(DType::F16), Family::Llama).unwrap();
        assert_eq!(
            ts.iter().filter(|t| t.name.ends_with(".bias")).count(),
            2 * 7
        );
        assert!(ts.iter().all(|t| t.dtype == DType::F16));
        check(&biased, &ts, &[("model.layers.", 2)]);
    }

    #[test]
    fn bare_model_has_no_prefix_and_no_head() {
        let c = parse(
            r#"{"model_type":"llama","architectures":["LlamaModel"],"hidden_size":64,
            "intermediate_size":128,"num_attention_heads":4,"num_hidden_layers":12,
            "vocab_size":100,"tie_word_embeddings":true}"#,
        );
        let ts = expand(&c, None, Family::Llama).unwrap();
        assert_eq!(ts[0].name, "embed_tokens.weight");
        assert_eq!(ts.last().unwrap().name, "norm.weight");
        assert!(tied_pairs(&c, Family::Llama).is_empty());
        check(&c, &ts, &[("layers.", 12)]);
    }

    #[test]
    fn odd_configs_are_errors_naming_the_field() {
        let cases = [
            (r#""num_attention_heads":0"#, "num_attention_heads"),
            (r#""num_attention_heads":5"#, "not divisible"),
            (
                r#""num_attention_heads":4,"num_key_value_heads":3"#,
                "num_key_value_heads",
            ),
            (r#""num_attention_heads":4,"head_dim":-1"#, "head_dim"),
            (r#""num_attention_heads":"4""#, "num_attention_heads"),
            (
                r#""num_attention_heads":4,"tie_word_embeddings":"yes""#,
                "tie_word_embeddings",
            ),
            (
                r#""num_attention_heads":4,"architectures":["LlamaForVision"]"#,
                "LlamaForVision",
            ),
        ];
        for (extra, needle) in cases {
            let c = parse(&format!(
                r#"{{"model_type":"llama","hidden_size":64,"intermediate_size":128,
                "num_hidden_layers":2,"vocab_size":100,{extra}}}"#
            ));
            let err = expand(&c, None, Family::Llama).unwrap_err().to_string();
            assert!(
                err.contains("test/config.json") && err.contains(needle),
                "{extra}: {err}"
            );
        }
    }
}
