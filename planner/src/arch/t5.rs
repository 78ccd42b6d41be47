//! T5 and mT5 (`t5`, `mt5`).
//!
//! `T5ForConditionalGeneration` stores `shared.weight`; the encoder's
//! `encoder.embed_tokens.weight` (always the same tensor as `shared.weight`), its blocks
//! `encoder.block.N.layer.0` (`layer_norm`, then `SelfAttention.{q,k,v,o}`, with
//! `SelfAttention.relative_attention_bias` in block 0 only) and `layer.1` (`layer_norm`, then
//! `DenseReluDense.{wi,wo}`, or `wi_0`/`wi_1`/`wo` when `feed_forward_proj` is `gated-*`), and
//! `encoder.final_layer_norm.weight`; then the decoder likewise, with `decoder.embed_tokens`
//! tied to `shared`, cross-attention `layer.1.EncDecAttention` between self-attention and the
//! feed-forward `layer.2`; then `decoder.final_layer_norm.weight` and `lm_head.weight`, tied to
//! `shared.weight` unless `tie_word_embeddings` is false (as for T5 v1.1, FLAN-T5 and mT5).
//!
//! `T5Model` stores the same without `lm_head`; `T5EncoderModel` stores `shared` and the
//! encoder only. Linear layers have no biases and the RMS layer norms no bias.

use super::builder::Tensors;
use super::fields::Fields;
use crate::config::ModelConfig;
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::TensorInfo;

/// `t5` or `mt5`: the same layout, with different transformers defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Variant {
    /// `t5`: `feed_forward_proj` defaults to `relu`, embeddings tied by default.
    T5,
    /// `mt5`: `feed_forward_proj` defaults to `gated-gelu`, embeddings untied by default.
    Mt5,
}

impl Variant {
    fn prefix(self) -> &'static str {
        match self {
            Variant::T5 => "T5",
            Variant::Mt5 => "MT5",
        }
    }

    fn tied_default(self) -> bool {
        self == Variant::T5
    }
}

/// Which stacks and head the class stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// `T5ForConditionalGeneration`: encoder, decoder and `lm_head`.
    ConditionalGeneration,
    /// `T5Model`: encoder and decoder.
    Model,
    /// `T5EncoderModel`: encoder only.
    Encoder,
}

impl Head {
    fn read(f: Fields, variant: Variant) -> Result<Head> {
        let v = variant.prefix();
        let classes = [
            (
                format!("{v}ForConditionalGeneration"),
                Head::ConditionalGeneration,
            ),
            (format!("{v}Model"), Head::Model),
            (format!("{v}EncoderModel"), Head::Encoder),
        ];
        let Some(arch) = f.architecture() else {
            return Ok(Head::ConditionalGeneration);
        };
        classes
            .iter()
            .find(|(name, _)| name == arch)
            .map(|&(_, head)| head)
            .ok_or_else(|| {
                let known: Vec<&str> = classes.iter().map(|(name, _)| name.as_str()).collect();
                f.unknown_head(arch, &known)
            })
    }
}

/// Sizes read from the config.
struct Dims {
    vocab: u64,
    d_model: u64,
    /// `num_heads * d_kv`: the width of q, k, v and of o's input.
    inner: u64,
    heads: u64,
    d_ff: u64,
    gated: bool,
    buckets: u64,
}

impl Dims {
    fn read(f: Fields, variant: Variant) -> Result<Self> {
        let default_ff = match variant {
            Variant::T5 => "relu",
            Variant::Mt5 => "gated-gelu",
        };
        let ff = f.text_or("feed_forward_proj", default_ff)?;
        let gated = match ff.split('-').collect::<Vec<_>>()[..] {
            ["gated", act] if !act.is_empty() => true,
            [act] if !act.is_empty() => false,
            _ => {
                return Err(f.invalid(format!(
                    "field `feed_forward_proj` is `{ff}`; expected `ACT` or `gated-ACT` \
                     (e.g. `relu`, `gated-gelu`)"
                )));
            }
        };
        let heads = f.dim("num_heads")?;
        Ok(Dims {
            vocab: f.dim("vocab_size")?,
            d_model: f.dim("d_model")?,
            inner: f.mul("`num_heads` × `d_kv`", heads, f.dim("d_kv")?)?,
            heads,
            d_ff: f.dim("d_ff")?,
            gated,
            buckets: f.dim_or("relative_attention_num_buckets", 32)?,
        })
    }

    /// `{prefix}.{q,k,v}`, the relative position bias when `relative`, then `{prefix}.o`.
    fn attention(&self, t: &mut Tensors, prefix: &str, relative: bool) -> Result<()> {
        for proj in ["q", "k", "v"] {
            t.linear(&format!("{prefix}.{proj}"), self.inner, self.d_model, false)?;
        }
        if relative {
            t.push(
                format!("{prefix}.relative_attention_bias.weight"),
                &[self.buckets, self.heads],
            )?;
        }
        t.linear(&format!("{prefix}.o"), self.d_model, self.inner, false)
    }

    /// `{prefix}.wi` (or `wi_0`, `wi_1`), then `{prefix}.wo`.
    fn feed_forward(&self, t: &mut Tensors, prefix: &str) -> Result<()> {
        let inputs: &[&str] = if self.gated {
            &["wi_0", "wi_1"]
        } else {
            &["wi"]
        };
        for wi in inputs {
            t.linear(&format!("{prefix}.{wi}"), self.d_ff, self.d_model, false)?;
        }
        t.linear(&format!("{prefix}.wo"), self.d_model, self.d_ff, false)
    }
}

/// The tensors of a T5 or mT5 checkpoint, in execution order.
pub(super) fn expand(
    config: &ModelConfig,
    dtype: Option<DType>,
    variant: Variant,
) -> Result<Vec<TensorInfo>> {
    let f = Fields(config);
    let d = Dims::read(f, variant)?;
    let encoder_layers = f.dim("num_layers")?;
    let decoder_layers = f.dim_or("num_decoder_layers", encoder_layers)?;
    let head = Head::read(f, variant)?;
    let tied = f.tied(variant.tied_default())?;
    let embedding = [d.vocab, d.d_model];

    let mut t = Tensors::new(config, dtype);
    t.push("shared.weight", &embedding)?;
    t.tied("encoder.embed_tokens.weight", &embedding, "shared.weight")?;
    for i in 0..encoder_layers {
        let b = format!("encoder.block.{i}");
        t.norm(&format!("{b}.layer.0.layer_norm"), d.d_model, false)?;
        d.attention(&mut t, &format!("{b}.layer.0.SelfAttention"), i == 0)?;
        t.norm(&format!("{b}.layer.1.layer_norm"), d.d_model, false)?;
        d.feed_forward(&mut t, &format!("{b}.layer.1.DenseReluDense"))?;
    }
    t.norm("encoder.final_layer_norm", d.d_model, false)?;
    if head == Head::Encoder {
        return Ok(t.finish());
    }
    t.tied("decoder.embed_tokens.weight", &embedding, "shared.weight")?;
    for i in 0..decoder_layers {
        let b = format!("decoder.block.{i}");
        t.norm(&format!("{b}.layer.0.layer_norm"), d.d_model, false)?;
        d.attention(&mut t, &format!("{b}.layer.0.SelfAttention"), i == 0)?;
        t.norm(&format!("{b}.layer.1.layer_norm"), d.d_model, false)?;
        d.attention(&mut t, &format!("{b}.layer.1.EncDecAttention"), false)?;
        t.norm(&format!("{b}.layer.2.layer_norm"), d.d_model, false)?;
        d.feed_forward(&mut t, &format!("{b}.layer.2.DenseReluDense"))?;
    }
    t.norm("decoder.final_layer_norm", d.d_model, false)?;
    if head == Head::ConditionalGeneration {
        if tied {
            t.tied("lm_head.weight", &embedding, "shared.weight")?;
        } else {
            t.push("lm_head.weight", &embedding)?;
        }
    }
    Ok(t.finish())
}

/// `encoder.embed_tokens.weight` and `decoder.embed_tokens.weight` (always tied to
/// `shared.weight`), and `lm_head.weight` when the config ties it.
pub(super) fn tied_pairs(config: &ModelConfig, variant: Variant) -> Vec<(String, String)> {
    let f = Fields(config);
    let Ok(head) = Head::read(f, variant) else {
        return Vec::new();
    };
    let mut tied = vec!["encoder.embed_tokens.weight"];
    if head != Head::Encoder {
        tied.push("decoder.embed_tokens.weight");
    }
    if head == Head::ConditionalGeneration && f.tied(variant.tied_default()).unwrap_or(false) {
        tied.push("lm_head.weight");
    }
    tied.into_iter()
        .map(|name| (name.to_string(), "shared.weight".to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, load, params, parse};
    use super::*;

    #[test]
    fn t5_small_has_the_published_count() {
        let c = load("t5-small.json");
        let ts = expand(&c, None, Variant::T5).unwrap();
        assert_eq!(params(&ts), 60_506_624);
        check(&c, &ts, &[("encoder.block.", 6), ("decoder.block.", 6)]);
        let names: Vec<(&str, Option<&str>)> = ts[..9]
            .iter()
            .map(|t| (t.name.as_str(), t.tied_to.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("shared.weight", None),
                ("encoder.embed_tokens.weight", Some("shared.weight")),
                ("encoder.block.0.layer.0.layer_norm.weight", None),
                ("encoder.block.0.layer.0.SelfAttention.q.weight", None),
                ("encoder.block.0.layer.0.SelfAttention.k.weight", None),
                ("encoder.block.0.layer.0.SelfAttention.v.weight", None),
                (
                    "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                    None
                ),
                ("encoder.block.0.layer.0.SelfAttention.o.weight", None),
                ("encoder.block.0.layer.1.layer_norm.weight", None),
            ]
        );
        assert_eq!(ts[6].shape, [32, 8]);
        let relative = ts
            .iter()
            .filter(|t| t.name.contains("relative_attention_bias"))
            .count();
        assert_eq!(relative, 2, "block 0 of each stack only");
        let cross = ts
            .iter()
            .find(|t| t.name == "decoder.block.5.layer.1.EncDecAttention.o.weight");
        assert_eq!(cross.unwrap().shape, [512, 512]);
        let head = ts.last().unwrap();
        assert_eq!(
            (head.name.as_str(), head.tied_to.as_deref()),
            ("lm_head.weight", Some("shared.weight"))
        );
        assert_eq!(ts.iter().filter(|t| t.tied_to.is_some()).count(), 3);
    }

    #[test]
    fn gated_untied_t5_v1_1() {
        // google/t5-v1_1-small.
        let c = parse(
            r#"{"model_type":"t5","architectures":["T5ForConditionalGeneration"],"d_ff":1024,
            "d_kv":64,"d_model":512,"num_heads":6,"num_layers":8,"num_decoder_layers":8,
            "feed_forward_proj":"gated-gelu","tie_word_embeddings":false,"vocab_size":32128,
            "relative_attention_num_buckets":32}"#,
        );
        let ts = expand(&c, None, Variant::T5).unwrap();
        assert_eq!(params(&ts), 76_961_152);
        assert!(
            ts.iter()
                .any(|t| t.name == "decoder.block.7.layer.2.DenseReluDense.wi_1.weight")
        );
        assert_eq!(ts.last().unwrap().tied_to, None);
        check(&c, &ts, &[("encoder.block.", 8), ("decoder.block.", 8)]);
    }

    #[test]
    fn mt5_defaults_and_encoder_only() {
        let c = parse(
            r#"{"model_type":"mt5","architectures":["MT5EncoderModel"],"d_ff":1024,"d_kv":64,
            "d_model":512,"num_heads":6,"num_layers":8,"vocab_size":250112}"#,
        );
        let ts = expand(&c, None, Variant::Mt5).unwrap();
        assert!(
            ts.iter().any(|t| t.name.ends_with("wi_0.weight")),
            "mt5 is gated by default"
        );
        assert_eq!(ts.last().unwrap().name, "encoder.final_layer_norm.weight");
        check(&c, &ts, &[("encoder.block.", 8)]);

        let bad = parse(
            r#"{"model_type":"t5","d_ff":1024,"d_kv":64,"d_model":512,"num_heads":6,
            "num_layers":8,"vocab_size":100,"feed_forward_proj":"gated-gelu-new"}"#,
        );
        let msg = expand(&bad, None, Variant::T5).unwrap_err().to_string();
        assert!(
            msg.contains("feed_forward_proj") && msg.contains("test/config.json"),
            "{msg}"
        );
    }
}
