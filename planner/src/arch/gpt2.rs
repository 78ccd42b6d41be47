//! GPT-2 (`gpt2`).
//!
//! `GPT2LMHeadModel` stores `transformer.wte.weight`, `transformer.wpe.weight`, per block
//! `transformer.h.N.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}` (weights and
//! biases), `transformer.ln_f`, and `lm_head.weight`, tied to `transformer.wte.weight` unless
//! `tie_word_embeddings` is false. The projections are `Conv1D`s, whose weights are stored
//! `[in, out]`, the transpose of `nn.Linear`'s. The bare `GPT2Model` stores the same without
//! the `transformer.` prefix and without `lm_head`; the original `openai-community/gpt2`
//! checkpoint is of that kind, and also stores the causal-mask buffers `h.N.attn.bias`, which
//! are not listed here.

use super::builder::Tensors;
use super::fields::Fields;
use crate::config::ModelConfig;
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::TensorInfo;

const LM_HEAD: &str = "GPT2LMHeadModel";
const BASE: &str = "GPT2Model";

/// Whether the config names the LM-head class (the default) rather than the bare model.
fn has_lm_head(f: Fields) -> Result<bool> {
    match f.architecture() {
        None | Some(LM_HEAD) => Ok(true),
        Some(BASE) => Ok(false),
        Some(a) => Err(f.unknown_head(a, &[LM_HEAD, BASE])),
    }
}

/// The tensors of a GPT-2 checkpoint, in execution order.
pub(super) fn expand(config: &ModelConfig, dtype: Option<DType>) -> Result<Vec<TensorInfo>> {
    let f = Fields(config);
    let embd = f.dim("n_embd")?;
    let heads = f.dim("n_head")?;
    f.split("n_embd", embd, "n_head", heads)?;
    let inner = f.dim_or("n_inner", 4 * embd)?;
    let layers = f.dim("n_layer")?;
    let positions = f.dim("n_positions")?;
    let vocab = f.dim("vocab_size")?;
    let lm_head = has_lm_head(f)?;
    let tied = f.tied(true)?;

    let p = if lm_head { "transformer." } else { "" };
    let wte = format!("{p}wte.weight");
    let mut t = Tensors::new(config, dtype);
    t.push(wte.as_str(), &[vocab, embd])?;
    t.push(format!("{p}wpe.weight"), &[positions, embd])?;
    for i in 0..layers {
        let h = format!("{p}h.{i}");
        t.norm(&format!("{h}.ln_1"), embd, true)?;
        conv1d(&mut t, &format!("{h}.attn.c_attn"), embd, 3 * embd)?;
        conv1d(&mut t, &format!("{h}.attn.c_proj"), embd, embd)?;
        t.norm(&format!("{h}.ln_2"), embd, true)?;
        conv1d(&mut t, &format!("{h}.mlp.c_fc"), embd, inner)?;
        conv1d(&mut t, &format!("{h}.mlp.c_proj"), inner, embd)?;
    }
    t.norm(&format!("{p}ln_f"), embd, true)?;
    if lm_head {
        if tied {
            t.tied("lm_head.weight", &[vocab, embd], &wte)?;
        } else {
            t.push("lm_head.weight", &[vocab, embd])?;
        }
    }
    Ok(t.finish())
}

/// A `Conv1D`: weight `[inp, out]`, bias `[out]`.
fn conv1d(t: &mut Tensors, prefix: &str, inp: u64, out: u64) -> Result<()> {
    t.push(format!("{prefix}.weight"), &[inp, out])?;
    t.push(format!("{prefix}.bias"), &[out])
}

/// `lm_head.weight` tied to `transformer.wte.weight`, unless the config unties them.
pub(super) fn tied_pairs(config: &ModelConfig) -> Vec<(String, String)> {
    let f = Fields(config);
    if has_lm_head(f).unwrap_or(false) && f.tied(true).unwrap_or(true) {
        vec![("lm_head.weight".into(), "transformer.wte.weight".into())]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, load, params, parse};
    use super::*;

    #[test]
    fn gpt2_has_the_published_count() {
        let c = load("gpt2.json");
        let ts = expand(&c, None).unwrap();
        assert_eq!(params(&ts), 124_439_808);
        assert_eq!(ts.len(), 2 + 12 * 12 + 2 + 1);
        check(&c, &ts, &[("transformer.h.", 12)]);
        let names: Vec<&str> = ts[..6].iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "transformer.wte.weight",
                "transformer.wpe.weight",
                "transformer.h.0.ln_1.weight",
                "transformer.h.0.ln_1.bias",
                "transformer.h.0.attn.c_attn.weight",
                "transformer.h.0.attn.c_attn.bias",
            ]
        );
        assert_eq!(ts[4].shape, [768, 2304], "Conv1D stores [in, out]");
        let fc = ts
            .iter()
            .find(|t| t.name == "transformer.h.0.mlp.c_fc.weight")
            .unwrap();
        assert_eq!(fc.shape, [768, 3072]);
        let head = ts.last().unwrap();
        assert_eq!(head.name, "lm_head.weight");
        assert_eq!(head.tied_to.as_deref(), Some("transformer.wte.weight"));
        assert!(
            !ts.iter()
                .any(|t| t.name.ends_with(".attn.bias") || t.name.contains("masked"))
        );
    }

    #[test]
    fn untied_head_and_n_inner_count() {
        let c = parse(
            r#"{"model_type":"gpt2","n_embd":64,"n_head":4,"n_layer":10,"n_positions":32,
            "n_inner":100,"vocab_size":50,"tie_word_embeddings":false}"#,
        );
        let ts = expand(&c, None).unwrap();
        let block = 2 * 64
            + (64 * 192 + 192)
            + (64 * 64 + 64)
            + 2 * 64
            + (64 * 100 + 100)
            + (100 * 64 + 64);
        assert_eq!(
            params(&ts),
            50 * 64 + 32 * 64 + 10 * block + 2 * 64 + 50 * 64
        );
        assert!(tied_pairs(&c).is_empty());
        check(&c, &ts, &[("transformer.h.", 10)]);
    }

    #[test]
    fn bare_model_has_no_prefix_and_no_head() {
        let c = parse(
            r#"{"model_type":"gpt2","architectures":["GPT2Model"],"n_embd":64,"n_head":4,
            "n_layer":2,"n_positions":32,"vocab_size":50}"#,
        );
        let ts = expand(&c, None).unwrap();
        assert_eq!(ts[0].name, "wte.weight");
        assert_eq!(ts.last().unwrap().name, "ln_f.bias");
        check(&c, &ts, &[("h.", 2)]);
    }
}
