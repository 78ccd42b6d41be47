//! OPT (`opt`).
//!
//! `OPTForCausalLM` stores `model.decoder.embed_tokens.weight` (`[vocab,
//! word_embed_proj_dim]`), `model.decoder.embed_positions.weight` (`[max_position_embeddings +
//! 2, hidden]`: OPT offsets positions by 2), `model.decoder.project_in.weight` when
//! `word_embed_proj_dim` differs from `hidden_size`, then per layer
//! `model.decoder.layers.N.{self_attn_layer_norm, self_attn.{q,k,v,out}_proj,
//! final_layer_norm, fc1, fc2}`, then `model.decoder.final_layer_norm` (absent when
//! `do_layer_norm_before` is false, as for opt-350m), `model.decoder.project_out.weight`, and
//! `lm_head.weight` (`[vocab, word_embed_proj_dim]`), tied to `embed_tokens` by default.
//!
//! With `do_layer_norm_before` false the layer norms run after their sublayer, and are listed
//! there. `enable_bias` (default true) gives the projections biases and
//! `layer_norm_elementwise_affine` (default true) gives the layer norms parameters. The bare
//! `OPTModel` stores the same names starting with `decoder.`, and no `lm_head`. The published
//! `facebook/opt-*` checkpoints were saved from `OPTModel`; transformers adds the `model.`
//! prefix when loading them into `OPTForCausalLM`.

use super::builder::Tensors;
use super::fields::Fields;
use crate::config::ModelConfig;
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::TensorInfo;

const CAUSAL: &str = "OPTForCausalLM";
const BASE: &str = "OPTModel";

/// Whether the config names the causal-LM class (the default) rather than the bare model.
fn causal(f: Fields) -> Result<bool> {
    match f.architecture() {
        None | Some(CAUSAL) => Ok(true),
        Some(BASE) => Ok(false),
        Some(a) => Err(f.unknown_head(a, &[CAUSAL, BASE])),
    }
}

fn prefix(causal: bool) -> &'static str {
    if causal { "model.decoder." } else { "decoder." }
}

/// The tensors of an OPT checkpoint, in execution order.
pub(super) fn expand(config: &ModelConfig, dtype: Option<DType>) -> Result<Vec<TensorInfo>> {
    let f = Fields(config);
    let hidden = f.dim("hidden_size")?;
    let heads = f.dim("num_attention_heads")?;
    f.split("hidden_size", hidden, "num_attention_heads", heads)?;
    let layers = f.dim("num_hidden_layers")?;
    let ffn = f.dim("ffn_dim")?;
    let vocab = f.dim("vocab_size")?;
    let positions = f.dim("max_position_embeddings")? + 2;
    let proj = f.dim_or("word_embed_proj_dim", hidden)?;
    let norm_before = f.flag("do_layer_norm_before", true)?;
    let final_norm = norm_before && !f.flag("_remove_final_layer_norm", false)?;
    let bias = f.flag("enable_bias", true)?;
    let affine = f.flag("layer_norm_elementwise_affine", true)?;
    let causal = causal(f)?;
    let tied = f.tied(true)?;

    let p = prefix(causal);
    let embed = format!("{p}embed_tokens.weight");
    let mut t = Tensors::new(config, dtype);
    let norm = |t: &mut Tensors, name: &str| {
        if affine {
            t.norm(name, hidden, true)
        } else {
            Ok(())
        }
    };
    t.push(embed.as_str(), &[vocab, proj])?;
    t.push(format!("{p}embed_positions.weight"), &[positions, hidden])?;
    if proj != hidden {
        t.linear(&format!("{p}project_in"), hidden, proj, false)?;
    }
    for i in 0..layers {
        let l = format!("{p}layers.{i}");
        let attn_norm = format!("{l}.self_attn_layer_norm");
        let ffn_norm = format!("{l}.final_layer_norm");
        if norm_before {
            norm(&mut t, &attn_norm)?;
        }
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            t.linear(&format!("{l}.self_attn.{proj}"), hidden, hidden, bias)?;
        }
        norm(&mut t, if norm_before { &ffn_norm } else { &attn_norm })?;
        t.linear(&format!("{l}.fc1"), ffn, hidden, bias)?;
        t.linear(&format!("{l}.fc2"), hidden, ffn, bias)?;
        if !norm_before {
            norm(&mut t, &ffn_norm)?;
        }
    }
    if final_norm {
        norm(&mut t, &format!("{p}final_layer_norm"))?;
    }
    if proj != hidden {
        t.linear(&format!("{p}project_out"), proj, hidden, false)?;
    }
    if causal {
        if tied {
            t.tied("lm_head.weight", &[vocab, proj], &embed)?;
        } else {
            t.push("lm_head.weight", &[vocab, proj])?;
        }
    }
    Ok(t.finish())
}

/// `lm_head.weight` tied to `model.decoder.embed_tokens.weight`, unless the config unties them.
pub(super) fn tied_pairs(config: &ModelConfig) -> Vec<(String, String)> {
    let f = Fields(config);
    if causal(f).unwrap_or(false) && f.tied(true).unwrap_or(true) {
        vec![(
            "lm_head.weight".into(),
            format!("{}embed_tokens.weight", prefix(true)),
        )]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, load, params, parse};
    use super::*;

    #[test]
    fn opt_125m_has_the_published_count() {
        let c = load("opt-125m.json");
        let ts = expand(&c, None).unwrap();
        assert_eq!(params(&ts), 125_239_296);
        check(&c, &ts, &[("model.decoder.layers.", 12)]);
        assert_eq!(ts[1].name, "model.decoder.embed_positions.weight");
        assert_eq!(ts[1].shape, [2050, 768]);
        assert_eq!(ts[1].dtype, DType::F16);
        let names: Vec<&str> = ts[2..7].iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "model.decoder.layers.0.self_attn_layer_norm.weight",
                "model.decoder.layers.0.self_attn_layer_norm.bias",
                "model.decoder.layers.0.self_attn.q_proj.weight",
                "model.decoder.layers.0.self_attn.q_proj.bias",
                "model.decoder.layers.0.self_attn.k_proj.weight",
            ]
        );
        let n = ts.len();
        assert_eq!(ts[n - 3].name, "model.decoder.final_layer_norm.weight");
        assert_eq!(
            ts[n - 1].tied_to.as_deref(),
            Some("model.decoder.embed_tokens.weight")
        );
        assert!(!ts.iter().any(|t| t.name.contains("project_")));
    }

    #[test]
    fn opt_350m_projects_and_norms_after() {
        // facebook/opt-350m: published count 331,196,416.
        let c = parse(
            r#"{"model_type":"opt","architectures":["OPTForCausalLM"],"hidden_size":1024,
            "ffn_dim":4096,"num_attention_heads":16,"num_hidden_layers":24,"vocab_size":50272,
            "max_position_embeddings":2048,"word_embed_proj_dim":512,
            "do_layer_norm_before":false,"torch_dtype":"float16"}"#,
        );
        let ts = expand(&c, None).unwrap();
        assert_eq!(params(&ts), 331_196_416);
        check(&c, &ts, &[("model.decoder.layers.", 24)]);
        assert!(
            !ts.iter()
                .any(|t| t.name == "model.decoder.final_layer_norm.weight")
        );
        assert_eq!(ts[2].name, "model.decoder.project_in.weight");
        assert_eq!(ts[2].shape, [1024, 512]);
        let layer0: Vec<&str> = ts[3..19]
            .iter()
            .map(|t| t.name.strip_prefix("model.decoder.layers.0.").unwrap())
            .collect();
        assert_eq!(
            layer0[8..10],
            ["self_attn_layer_norm.weight", "self_attn_layer_norm.bias"]
        );
        assert_eq!(
            layer0[14..],
            ["final_layer_norm.weight", "final_layer_norm.bias"]
        );
        let n = ts.len();
        assert_eq!(ts[n - 2].name, "model.decoder.project_out.weight");
        assert_eq!(ts[n - 1].shape, [50272, 512]);
    }

    #[test]
    fn bare_model_without_biases() {
        let c = parse(
            r#"{"model_type":"opt","architectures":["OPTModel"],"hidden_size":64,"ffn_dim":128,
            "num_attention_heads":4,"num_hidden_layers":2,"vocab_size":100,
            "max_position_embeddings":32,"enable_bias":false,
            "layer_norm_elementwise_affine":false}"#,
        );
        let ts = expand(&c, None).unwrap();
        assert_eq!(ts[0].name, "decoder.embed_tokens.weight");
        assert!(
            !ts.iter()
                .any(|t| t.name.ends_with(".bias") || t.name.contains("norm"))
        );
        assert_eq!(
            params(&ts),
            100 * 64 + 34 * 64 + 2 * (4 * 64 * 64 + 2 * 64 * 128)
        );
        check(&c, &ts, &[("decoder.layers.", 2)]);
    }
}
