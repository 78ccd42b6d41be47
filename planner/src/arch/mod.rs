//! Expanding a `config.json` of a known architecture into its exact tensor list, so a model
//! can be planned without downloading its weights.
//!
//! There are two ways to learn a model's tensors: read the safetensors headers of its
//! checkpoint, or, with only its `config.json`, call [`expand`] here. [`tied_pairs`] serves
//! the first way too: it names the ties a checkpoint leaves implicit by omitting a tensor.
//!
//! Each architecture lives in its own file and produces the tensors of the Hugging Face
//! checkpoint of the head class named by `architectures[0]` (the usual one when absent), with
//! the names, shapes and dtypes that class's `save_pretrained` writes, in execution order:
//! embeddings, then the blocks in numeric order, each in the order its forward pass uses its
//! tensors, then the final norm and the head. Tied tensors (e.g. `lm_head.weight` when
//! `tie_word_embeddings`) are listed with [`TensorInfo::tied_to`] set, so they count zero
//! bytes. Non-persistent buffers (rotary `inv_freq`, GPT-2's causal `attn.bias` mask) are not
//! listed; modern checkpoints do not store them.
//!
//! | `model_type` | file | head classes (default first) |
//! |---|---|---|
//! | `llama`, `mistral`, `qwen2` | `llama.rs` | `*ForCausalLM`, `*Model` |
//! | `mixtral` | `llama.rs` + `mixtral.rs` | `MixtralForCausalLM`, `MixtralModel` |
//! | `gpt2` | `gpt2.rs` | `GPT2LMHeadModel`, `GPT2Model` |
//! | `bert` | `bert.rs` | `BertModel`, `BertForMaskedLM`, `BertForPreTraining`, … |
//! | `t5`, `mt5` | `t5.rs` | `T5ForConditionalGeneration`, `T5Model`, `T5EncoderModel` |
//! | `opt` | `opt.rs` | `OPTForCausalLM`, `OPTModel` |
//! | `deepseek_v3`, `kimi_k2` | `deepseek_v3.rs` | `DeepseekV3ForCausalLM`, `DeepseekV3Model` |
//!
//! Floating tensors are stored as the `dtype` passed to [`expand`], else as the config's
//! `torch_dtype`, else as F32. The exceptions are tensors a checkpoint always stores in a
//! fixed type: DeepSeek-V3's FP8 weights and their F32 scales, and its F32 router bias.

mod bert;
mod builder;
mod deepseek_v3;
mod fields;
mod gpt2;
mod llama;
mod mixtral;
mod opt;
mod runtime;
mod t5;
#[cfg(test)]
mod testing;

use crate::config::ModelConfig;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::{TensorInfo, TensorSource};

use llama::Family;
pub use runtime::{RuntimeDims, runtime_dims};

/// The `model_type`s that [`expand`] understands.
pub const KNOWN: &[&str] = &[
    "llama",
    "mistral",
    "qwen2",
    "mixtral",
    "gpt2",
    "bert",
    "t5",
    "mt5",
    "opt",
    "deepseek_v3",
    "kimi_k2",
];

/// The modules an architecture keeps in f32 when the model is loaded in f16 (transformers'
/// `_keep_in_fp32_modules`): T5's and mT5's feed-forward output projection `wo`, whose
/// activations overflow f16. Matched against whole segments of a tensor's name.
pub fn keep_in_fp32(model_type: &str) -> &'static [&'static str] {
    match model_type {
        "t5" | "mt5" => &["wo"],
        _ => &[],
    }
}

/// Expands `config` into its tensors, in execution order, stored as `dtype` for floating
/// tensors (the config's `torch_dtype` when `None`, else F32).
///
/// A missing or odd field (zero heads, a hidden size that does not split into heads, a size
/// that overflows) is [`Error::ConfigInvalid`] naming the file and the field; a `model_type`
/// not in [`KNOWN`] is [`Error::UnknownArchitecture`].
pub fn expand(config: &ModelConfig, dtype: Option<DType>) -> Result<Vec<TensorInfo>> {
    match config.model_type() {
        Some("llama") => llama::expand(config, dtype, Family::Llama),
        Some("mistral") => llama::expand(config, dtype, Family::Mistral),
        Some("qwen2") => llama::expand(config, dtype, Family::Qwen2),
        Some("mixtral") => llama::expand(config, dtype, Family::Mixtral),
        Some("gpt2") => gpt2::expand(config, dtype),
        Some("bert") => bert::expand(config, dtype),
        Some("t5") => t5::expand(config, dtype, t5::Variant::T5),
        Some("mt5") => t5::expand(config, dtype, t5::Variant::Mt5),
        Some("opt") => opt::expand(config, dtype),
        Some("deepseek_v3" | "kimi_k2") => deepseek_v3::expand(config, dtype),
        _ => Err(unknown(config)),
    }
}

/// Pairs `(tied, owner)` of tensors this architecture ties when the config says so, with
/// canonical checkpoint names; used to detect ties in checkpoints that omit the tied tensor.
///
/// These are exactly the tensors [`expand`] lists with [`TensorInfo::tied_to`] set. Empty for
/// an unknown `model_type`.
pub fn tied_pairs(config: &ModelConfig) -> Vec<(String, String)> {
    match config.model_type() {
        Some("llama") => llama::tied_pairs(config, Family::Llama),
        Some("mistral") => llama::tied_pairs(config, Family::Mistral),
        Some("qwen2") => llama::tied_pairs(config, Family::Qwen2),
        Some("mixtral") => llama::tied_pairs(config, Family::Mixtral),
        Some("gpt2") => gpt2::tied_pairs(config),
        Some("bert") => bert::tied_pairs(config),
        Some("t5") => t5::tied_pairs(config, t5::Variant::T5),
        Some("mt5") => t5::tied_pairs(config, t5::Variant::Mt5),
        Some("opt") => opt::tied_pairs(config),
        Some("deepseek_v3" | "kimi_k2") => deepseek_v3::tied_pairs(config),
        _ => Vec::new(),
    }
}

fn unknown(config: &ModelConfig) -> Error {
    Error::UnknownArchitecture {
        path: config.path.clone(),
        model_type: config.model_type().unwrap_or("(no model_type)").to_string(),
        known: KNOWN.to_vec(),
    }
}

/// Builds a config-sourced tensor.
pub(crate) fn tensor(name: impl Into<String>, dtype: DType, shape: &[u64]) -> TensorInfo {
    TensorInfo {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
        source: TensorSource::Config,
        tied_to: None,
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{load, parse};
    use super::*;

    #[test]
    fn every_known_type_dispatches() {
        for model_type in KNOWN {
            let c = parse(&format!(r#"{{"model_type":"{model_type}"}}"#));
            let err = expand(&c, None).unwrap_err();
            assert!(
                matches!(err, Error::ConfigInvalid { .. }),
                "{model_type}: expected a missing-field error, got {err}"
            );
            assert!(
                err.to_string().contains("missing field"),
                "{model_type}: {err}"
            );
        }
    }

    #[test]
    fn unknown_model_type_names_the_file_and_the_known_ones() {
        let c = parse(r#"{"model_type":"falcon","hidden_size":4544}"#);
        let err = expand(&c, None).unwrap_err();
        assert!(matches!(err, Error::UnknownArchitecture { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("test/config.json") && msg.contains("`falcon`"),
            "{msg}"
        );
        assert!(msg.contains("llama") && msg.contains("kimi_k2"), "{msg}");
        assert!(tied_pairs(&c).is_empty());

        let untyped = parse(r#"{"hidden_size":4544}"#);
        let msg = expand(&untyped, None).unwrap_err().to_string();
        assert!(msg.contains("(no model_type)"), "{msg}");
    }

    #[test]
    fn missing_field_names_the_file_and_the_field() {
        let c = parse(
            r#"{"model_type":"llama","hidden_size":4096,"num_attention_heads":32,
            "intermediate_size":14336,"vocab_size":128256}"#,
        );
        let msg = expand(&c, None).unwrap_err().to_string();
        assert!(msg.contains("test/config.json"), "{msg}");
        assert!(msg.contains("`num_hidden_layers`"), "{msg}");
    }

    #[test]
    fn dtype_comes_from_the_argument_then_the_config_then_f32() {
        let llama = load("llama-3-8b.json");
        assert!(
            expand(&llama, None)
                .unwrap()
                .iter()
                .all(|t| t.dtype == DType::BF16)
        );
        let as_f16 = expand(&llama, Some(DType::F16)).unwrap();
        assert!(as_f16.iter().all(|t| t.dtype == DType::F16));
        let gpt2 = load("gpt2.json");
        assert!(
            expand(&gpt2, None)
                .unwrap()
                .iter()
                .all(|t| t.dtype == DType::F32)
        );
    }

    #[test]
    fn absurd_sizes_are_errors_not_panics() {
        let huge = parse(
            r#"{"model_type":"llama","hidden_size":4294967296,"num_attention_heads":1,
            "intermediate_size":4294967296,"num_hidden_layers":1,"vocab_size":4294967296}"#,
        );
        let msg = expand(&huge, None).unwrap_err().to_string();
        assert!(
            msg.contains("test/config.json") && msg.contains("too large"),
            "{msg}"
        );

        let too_big = parse(r#"{"model_type":"gpt2","n_embd":8589934592}"#);
        let msg = expand(&too_big, None).unwrap_err().to_string();
        assert!(msg.contains("`n_embd`"), "{msg}");

        let many = parse(
            r#"{"model_type":"mixtral","hidden_size":8,"num_attention_heads":1,
            "intermediate_size":8,"num_hidden_layers":1000,"vocab_size":8,
            "num_local_experts":100000}"#,
        );
        let msg = expand(&many, None).unwrap_err().to_string();
        assert!(msg.contains("more than 2000000 tensors"), "{msg}");
    }
}
