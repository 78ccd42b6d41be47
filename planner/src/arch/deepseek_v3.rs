//! DeepSeek-V3 (`deepseek_v3`), and Kimi K2 (`kimi_k2`), which reuses its layout.
//!
//! `DeepseekV3ForCausalLM` stores `model.embed_tokens.weight`, then per layer
//! `input_layernorm`, the multi-head latent attention `self_attn.{q_a_proj, q_a_layernorm,
//! q_b_proj}` (or `q_proj` when `q_lora_rank` is absent or null), `self_attn.{
//! kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj}`, `post_attention_layernorm`, and
//! the MLP: dense `mlp.{gate,up,down}_proj` in the first `first_k_dense_replace` layers (and in
//! layers off the `moe_layer_freq` grid), else the MoE `mlp.gate.weight` (the router),
//! `mlp.gate.e_score_correction_bias` (F32), `mlp.experts.E.{gate,up,down}_proj` and
//! `mlp.shared_experts.{gate,up,down}_proj` (`n_shared_experts × moe_intermediate_size`
//! wide); then `model.norm.weight` and `lm_head.weight`. `DeepseekV3Model` stores the same
//! without the `model.` prefix and without `lm_head`.
//!
//! When `quantization_config` has `quant_method: "fp8"` (DeepSeek-V3, Kimi K2), every linear
//! weight inside the layers except the router is stored as F8_E4M3 (F8_E5M2 for `fmt:
//! "e5m2"`) and followed by its `weight_scale_inv`, F32 of shape `[ceil(out / block₀),
//! ceil(in / block₁)]` with `weight_block_size` `[block₀, block₁]`. Embeddings, norms, the
//! router and `lm_head` keep the floating dtype. Quantized weights and scales keep their
//! stored types whatever `dtype` is passed: that is what the checkpoint holds. Other
//! quantization methods are refused rather than sized wrong.
//!
//! The multi-token-prediction layers (`num_nextn_predict_layers`, stored by DeepSeek-V3 as
//! `model.layers.61.*`) are not listed: transformers does not load them.

use std::fmt::Write;

use serde_json::Value;

use super::builder::{Tensors, join};
use super::fields::Fields;
use crate::config::ModelConfig;
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::TensorInfo;

const CAUSAL: &str = "DeepseekV3ForCausalLM";
const BASE: &str = "DeepseekV3Model";

/// Block-wise FP8 storage of the linear weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fp8 {
    dtype: DType,
    block: [u64; 2],
}

impl Fp8 {
    /// The FP8 scheme of `quantization_config`, `None` when the config has none.
    fn read(f: Fields) -> Result<Option<Fp8>> {
        let Some(q) = f.0.raw.get("quantization_config").filter(|q| !q.is_null()) else {
            return Ok(None);
        };
        let method = q.get("quant_method").and_then(Value::as_str).unwrap_or("?");
        if method != "fp8" {
            return Err(f.invalid(format!(
                "`quantization_config.quant_method` is `{method}`; stowage expands only `fp8` \
                 from a config; point at the folder with the safetensors weights instead"
            )));
        }
        let dtype = match q.get("fmt").and_then(Value::as_str).unwrap_or("e4m3") {
            "e4m3" => DType::F8_E4M3,
            "e5m2" => DType::F8_E5M2,
            other => {
                return Err(f.invalid(format!(
                    "`quantization_config.fmt` is `{other}`; expected `e4m3` or `e5m2`"
                )));
            }
        };
        let block = match q.get("weight_block_size").filter(|b| !b.is_null()) {
            None => [128, 128],
            Some(b) => b
                .as_array()
                .and_then(|a| match a.as_slice() {
                    [rows, cols] => Some([rows.as_u64()?, cols.as_u64()?]),
                    _ => None,
                })
                .filter(|block| block.iter().all(|&n| n > 0))
                .ok_or_else(|| {
                    f.invalid(format!(
                        "`quantization_config.weight_block_size` is {b}; expected two positive \
                         integers such as [128, 128]"
                    ))
                })?,
        };
        Ok(Some(Fp8 { dtype, block }))
    }
}

/// Sizes read from the config.
struct Dims {
    vocab: u64,
    hidden: u64,
    layers: u64,
    /// `q_lora_rank`; `None` for a plain `q_proj`.
    q_rank: Option<u64>,
    /// `num_attention_heads * (qk_nope_head_dim + qk_rope_head_dim)`.
    q_width: u64,
    kv_rank: u64,
    rope: u64,
    /// `num_attention_heads * (qk_nope_head_dim + v_head_dim)`.
    kv_width: u64,
    /// `num_attention_heads * v_head_dim`.
    o_width: u64,
    attention_bias: bool,
    intermediate: u64,
    moe: Option<Moe>,
    causal: bool,
    tied: bool,
    fp8: Option<Fp8>,
}

/// The routed experts and where they are.
struct Moe {
    experts: u64,
    intermediate: u64,
    shared_width: u64,
    first_dense: u64,
    every: u64,
}

impl Moe {
    fn in_layer(&self, i: u64) -> bool {
        i >= self.first_dense && i.is_multiple_of(self.every)
    }
}

impl Dims {
    fn read(f: Fields) -> Result<Self> {
        let heads = f.dim("num_attention_heads")?;
        let nope = f.dim("qk_nope_head_dim")?;
        let rope = f.dim("qk_rope_head_dim")?;
        let v = f.dim("v_head_dim")?;
        let moe = match f.opt_dim("n_routed_experts")? {
            None => None,
            Some(experts) => {
                let intermediate = f.dim("moe_intermediate_size")?;
                let shared = f.count_or("n_shared_experts", 0)?;
                Some(Moe {
                    experts,
                    intermediate,
                    shared_width: f.mul(
                        "`n_shared_experts` × `moe_intermediate_size`",
                        shared,
                        intermediate,
                    )?,
                    first_dense: f.count("first_k_dense_replace")?,
                    every: f.dim_or("moe_layer_freq", 1)?,
                })
            }
        };
        let causal = match f.architecture() {
            None | Some(CAUSAL) => true,
            Some(BASE) => false,
            Some(a) => return Err(f.unknown_head(a, &[CAUSAL, BASE])),
        };
        Ok(Dims {
            vocab: f.dim("vocab_size")?,
            hidden: f.dim("hidden_size")?,
            layers: f.dim("num_hidden_layers")?,
            q_rank: f.opt_dim("q_lora_rank")?,
            q_width: f.mul(
                "`num_attention_heads` × query head size",
                heads,
                nope + rope,
            )?,
            kv_rank: f.dim("kv_lora_rank")?,
            rope,
            kv_width: f.mul(
                "`num_attention_heads` × key-value head size",
                heads,
                nope + v,
            )?,
            o_width: f.mul("`num_attention_heads` × `v_head_dim`", heads, v)?,
            attention_bias: f.flag("attention_bias", false)?,
            intermediate: f.dim("intermediate_size")?,
            moe,
            causal,
            tied: f.tied(false)?,
            fp8: Fp8::read(f)?,
        })
    }

    fn prefix(&self) -> &'static str {
        if self.causal { "model." } else { "" }
    }

    /// How many tensors [`expand`] lists (an upper bound, saturating for absurd configs), so
    /// the list is allocated once.
    fn count(&self) -> u64 {
        let proj = if self.fp8.is_some() { 2 } else { 1 };
        let biased = proj + u64::from(self.attention_bias);
        let q = if self.q_rank.is_some() {
            biased + 1 + proj
        } else {
            proj
        };
        let layer = 2 + q + biased + 1 + proj + biased;
        let dense = 3 * proj;
        let mut n = 3 + self.layers.saturating_mul(layer + dense);
        if let Some(moe) = &self.moe {
            let every = moe.every.max(1);
            let moe_layers = self
                .layers
                .div_ceil(every)
                .saturating_sub(moe.first_dense.div_ceil(every));
            let per_layer = moe.experts.saturating_add(1).saturating_mul(dense) + 2;
            n = n.saturating_add(moe_layers.saturating_mul(per_layer));
        }
        n
    }

    /// A linear layer `{m}.{seg}` inside a decoder layer: FP8 with its scales when the config
    /// says so.
    fn proj(
        &self,
        t: &mut Tensors,
        m: &mut String,
        seg: &str,
        out: u64,
        inp: u64,
        bias: bool,
    ) -> Result<()> {
        within(m, seg, |m| {
            let Some(fp8) = self.fp8 else {
                return t.linear(m, out, inp, bias);
            };
            t.push_as(join(m, "weight"), fp8.dtype, &[out, inp])?;
            let scales = [out.div_ceil(fp8.block[0]), inp.div_ceil(fp8.block[1])];
            t.push_as(join(m, "weight_scale_inv"), DType::F32, &scales)?;
            if bias {
                t.push(join(m, "bias"), &[out])?;
            }
            Ok(())
        })
    }

    /// The gated MLP whose module path is `m`.
    fn mlp(&self, t: &mut Tensors, m: &mut String, intermediate: u64) -> Result<()> {
        self.proj(t, m, "gate_proj", intermediate, self.hidden, false)?;
        self.proj(t, m, "up_proj", intermediate, self.hidden, false)?;
        self.proj(t, m, "down_proj", self.hidden, intermediate, false)
    }

    /// The attention whose module path is `a`.
    fn attention(&self, t: &mut Tensors, a: &mut String) -> Result<()> {
        let bias = self.attention_bias;
        match self.q_rank {
            Some(rank) => {
                self.proj(t, a, "q_a_proj", rank, self.hidden, bias)?;
                within(a, "q_a_layernorm", |a| t.norm(a, rank, false))?;
                self.proj(t, a, "q_b_proj", self.q_width, rank, false)?;
            }
            None => self.proj(t, a, "q_proj", self.q_width, self.hidden, false)?,
        }
        let kv_a = self.kv_rank + self.rope;
        self.proj(t, a, "kv_a_proj_with_mqa", kv_a, self.hidden, bias)?;
        within(a, "kv_a_layernorm", |a| t.norm(a, self.kv_rank, false))?;
        self.proj(t, a, "kv_b_proj", self.kv_width, self.kv_rank, false)?;
        self.proj(t, a, "o_proj", self.hidden, self.o_width, bias)
    }
}

/// Runs `f` on the module path `m` extended by `.{segment}`, then restores `m`: names are built
/// in one buffer, and only each tensor's own name is allocated.
fn within<R>(m: &mut String, segment: &str, f: impl FnOnce(&mut String) -> R) -> R {
    let mark = m.len();
    m.push('.');
    m.push_str(segment);
    let r = f(m);
    m.truncate(mark);
    r
}

/// [`within`] the numbered child `.{n}` (a layer, an expert).
fn within_nth<R>(m: &mut String, n: u64, f: impl FnOnce(&mut String) -> R) -> R {
    let mark = m.len();
    write!(m, ".{n}").expect("writing to a String cannot fail");
    let r = f(m);
    m.truncate(mark);
    r
}

/// The tensors of a DeepSeek-V3 or Kimi K2 checkpoint, in execution order.
pub(super) fn expand(config: &ModelConfig, dtype: Option<DType>) -> Result<Vec<TensorInfo>> {
    let d = Dims::read(Fields(config))?;
    let p = d.prefix();
    let embed = format!("{p}embed_tokens.weight");
    let mut t = Tensors::new(config, dtype);
    t.reserve(d.count());
    t.push(embed.as_str(), &[d.vocab, d.hidden])?;
    let mut layers = format!("{p}layers");
    for i in 0..d.layers {
        within_nth(&mut layers, i, |l| {
            within(l, "input_layernorm", |m| t.norm(m, d.hidden, false))?;
            within(l, "self_attn", |a| d.attention(&mut t, a))?;
            within(l, "post_attention_layernorm", |m| {
                t.norm(m, d.hidden, false)
            })?;
            within(l, "mlp", |mlp| match &d.moe {
                Some(moe) if moe.in_layer(i) => {
                    t.push(join(mlp, "gate.weight"), &[moe.experts, d.hidden])?;
                    t.push_as(
                        join(mlp, "gate.e_score_correction_bias"),
                        DType::F32,
                        &[moe.experts],
                    )?;
                    within(mlp, "experts", |experts| {
                        (0..moe.experts).try_for_each(|e| {
                            within_nth(experts, e, |m| d.mlp(&mut t, m, moe.intermediate))
                        })
                    })?;
                    if moe.shared_width > 0 {
                        within(mlp, "shared_experts", |m| {
                            d.mlp(&mut t, m, moe.shared_width)
                        })?;
                    }
                    Ok(())
                }
                _ => d.mlp(&mut t, mlp, d.intermediate),
            })
        })?;
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
pub(super) fn tied_pairs(config: &ModelConfig) -> Vec<(String, String)> {
    let f = Fields(config);
    let causal = f.architecture().is_none_or(|a| a == CAUSAL);
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

    fn is_scale(t: &TensorInfo) -> bool {
        t.name.ends_with(".weight_scale_inv")
    }

    /// Kimi K2 without its FP8 scales: 1.0264 T parameters.
    const KIMI_K2_PARAMS: u64 = 1_026_408_232_448;
    /// Its F32 scales (one per 128 × 128 block of each FP8 weight).
    const KIMI_K2_SCALES: u64 = 62_495_192;

    #[test]
    fn kimi_k2_has_the_published_count() {
        let c = load("kimi-k2.json");
        assert_eq!(c.model_type(), Some("kimi_k2"));
        let ts = expand(&c, None).unwrap();
        let weights: Vec<TensorInfo> = ts.iter().filter(|t| !is_scale(t)).cloned().collect();
        assert_eq!(params(&weights), KIMI_K2_PARAMS);
        // The Hub's safetensors metadata counts the scales too: "1026.5B".
        assert_eq!(params(&ts), KIMI_K2_PARAMS + KIMI_K2_SCALES);
        assert_eq!((params(&ts) as f64 / 1e8).round(), 10_265.0);
        // Within 2% of the published "1T total" (1.026 T to 1.04 T with the MTP layer).
        let ratio = KIMI_K2_PARAMS as f64 / 1.026e12;
        assert!((0.98..1.02).contains(&ratio), "{ratio}");
        assert_eq!(ts.len(), 3 + 20 + 60 * (14 + 2 + 385 * 6));
        check(&c, &ts, &[("model.layers.", 61)]);
    }

    #[test]
    fn kimi_k2_stores_fp8_weights_with_block_scales() {
        let c = load("kimi-k2.json");
        let ts = expand(&c, Some(DType::F16)).unwrap();
        let get = |name: &str| {
            ts.iter()
                .find(|t| t.name == name)
                .unwrap_or_else(|| panic!("{name}"))
        };
        let embed = get("model.embed_tokens.weight");
        assert_eq!(
            (embed.dtype, embed.shape.as_slice()),
            (DType::F16, &[163_840, 7168][..])
        );
        let kv_a = get("model.layers.0.self_attn.kv_a_proj_with_mqa.weight");
        assert_eq!(
            (kv_a.dtype, kv_a.shape.as_slice()),
            (DType::F8_E4M3, &[576, 7168][..])
        );
        let kv_a_scale = get("model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv");
        assert_eq!(
            (kv_a_scale.dtype, kv_a_scale.shape.as_slice()),
            (DType::F32, &[5, 56][..])
        );
        assert_eq!(
            get("model.layers.0.mlp.down_proj.weight").shape,
            [7168, 18_432]
        );
        assert!(
            !ts.iter()
                .any(|t| t.name.starts_with("model.layers.0.mlp.gate."))
        );
        let router = get("model.layers.1.mlp.gate.weight");
        assert_eq!(
            (router.dtype, router.shape.as_slice()),
            (DType::F16, &[384, 7168][..])
        );
        let bias = get("model.layers.1.mlp.gate.e_score_correction_bias");
        assert_eq!(
            (bias.dtype, bias.shape.as_slice()),
            (DType::F32, &[384][..])
        );
        let expert = get("model.layers.60.mlp.experts.383.down_proj.weight");
        assert_eq!(
            (expert.dtype, expert.shape.as_slice()),
            (DType::F8_E4M3, &[7168, 2048][..])
        );
        assert_eq!(
            get("model.layers.60.mlp.shared_experts.up_proj.weight").shape,
            [2048, 7168]
        );
        let head = ts.last().unwrap();
        assert_eq!(
            (head.name.as_str(), head.dtype, head.tied_to.as_deref()),
            ("lm_head.weight", DType::F16, None)
        );

        let layer1: Vec<&str> = ts
            .iter()
            .filter_map(|t| t.name.strip_prefix("model.layers.1."))
            .take(22)
            .collect();
        assert_eq!(
            layer1,
            [
                "input_layernorm.weight",
                "self_attn.q_a_proj.weight",
                "self_attn.q_a_proj.weight_scale_inv",
                "self_attn.q_a_layernorm.weight",
                "self_attn.q_b_proj.weight",
                "self_attn.q_b_proj.weight_scale_inv",
                "self_attn.kv_a_proj_with_mqa.weight",
                "self_attn.kv_a_proj_with_mqa.weight_scale_inv",
                "self_attn.kv_a_layernorm.weight",
                "self_attn.kv_b_proj.weight",
                "self_attn.kv_b_proj.weight_scale_inv",
                "self_attn.o_proj.weight",
                "self_attn.o_proj.weight_scale_inv",
                "post_attention_layernorm.weight",
                "mlp.gate.weight",
                "mlp.gate.e_score_correction_bias",
                "mlp.experts.0.gate_proj.weight",
                "mlp.experts.0.gate_proj.weight_scale_inv",
                "mlp.experts.0.up_proj.weight",
                "mlp.experts.0.up_proj.weight_scale_inv",
                "mlp.experts.0.down_proj.weight",
                "mlp.experts.0.down_proj.weight_scale_inv",
            ]
        );
        let last = ts
            .iter()
            .rposition(|t| t.name.starts_with("model.layers.1."))
            .unwrap();
        assert_eq!(
            ts[last].name,
            "model.layers.1.mlp.shared_experts.down_proj.weight_scale_inv"
        );
    }

    /// deepseek-ai/DeepSeek-V3 without its MTP layer: the published 671 B.
    const DEEPSEEK_V3: &str = r#"{"model_type":"deepseek_v3","architectures":["DeepseekV3ForCausalLM"],
        "hidden_size":7168,"intermediate_size":18432,"moe_intermediate_size":2048,
        "num_hidden_layers":61,"num_attention_heads":128,"num_key_value_heads":128,
        "n_routed_experts":256,"n_shared_experts":1,"first_k_dense_replace":3,"moe_layer_freq":1,
        "q_lora_rank":1536,"kv_lora_rank":512,"qk_nope_head_dim":128,"qk_rope_head_dim":64,
        "v_head_dim":128,"vocab_size":129280,"num_nextn_predict_layers":1,
        "tie_word_embeddings":false,"torch_dtype":"bfloat16",
        "quantization_config":{"activation_scheme":"dynamic","fmt":"e4m3","quant_method":"fp8",
        "weight_block_size":[128,128]}}"#;

    #[test]
    fn deepseek_v3_has_the_published_count() {
        let c = parse(DEEPSEEK_V3);
        let ts = expand(&c, None).unwrap();
        let weights: Vec<TensorInfo> = ts.iter().filter(|t| !is_scale(t)).cloned().collect();
        assert_eq!(params(&weights), 671_026_419_200);
        assert!(
            !ts.iter().any(|t| t.name.starts_with("model.layers.61.")),
            "no MTP layer"
        );
        assert!(
            ts.iter()
                .any(|t| t.name == "model.layers.2.mlp.down_proj.weight")
        );
        assert!(
            ts.iter()
                .any(|t| t.name == "model.layers.3.mlp.gate.weight")
        );
        check(&c, &ts, &[("model.layers.", 61)]);
    }

    #[test]
    fn unquantized_without_q_lora_and_tied() {
        let c = parse(
            r#"{"model_type":"deepseek_v3","hidden_size":64,"intermediate_size":96,
            "moe_intermediate_size":16,"num_hidden_layers":4,"num_attention_heads":2,
            "n_routed_experts":4,"n_shared_experts":2,"first_k_dense_replace":1,
            "moe_layer_freq":2,"q_lora_rank":null,"kv_lora_rank":8,"qk_nope_head_dim":4,
            "qk_rope_head_dim":2,"v_head_dim":4,"vocab_size":50,"tie_word_embeddings":true,
            "torch_dtype":"bfloat16"}"#,
        );
        let ts = expand(&c, None).unwrap();
        assert!(!ts.iter().any(is_scale));
        assert!(
            ts.iter()
                .all(|t| t.dtype == DType::BF16 || t.name.ends_with("correction_bias"))
        );
        let q = ts
            .iter()
            .find(|t| t.name == "model.layers.0.self_attn.q_proj.weight")
            .unwrap();
        assert_eq!(q.shape, [12, 64]);
        let moe_layers: Vec<bool> = (0..4)
            .map(|i| {
                ts.iter()
                    .any(|t| t.name == format!("model.layers.{i}.mlp.gate.weight"))
            })
            .collect();
        assert_eq!(
            moe_layers,
            [false, false, true, false],
            "first 1 dense, then every 2nd"
        );
        let shared = ts
            .iter()
            .find(|t| t.name == "model.layers.2.mlp.shared_experts.gate_proj.weight")
            .unwrap();
        assert_eq!(shared.shape, [32, 64]);
        assert_eq!(
            ts.last().unwrap().tied_to.as_deref(),
            Some("model.embed_tokens.weight")
        );
        check(&c, &ts, &[("model.layers.", 4)]);
    }

    #[test]
    fn bad_quantization_is_an_error() {
        for (q, needle) in [
            (r#"{"quant_method":"gptq","bits":4}"#, "gptq"),
            (
                r#"{"quant_method":"fp8","weight_block_size":[0,128]}"#,
                "weight_block_size",
            ),
            (
                r#"{"quant_method":"fp8","weight_block_size":[128]}"#,
                "weight_block_size",
            ),
            (r#"{"quant_method":"fp8","fmt":"e3m4"}"#, "e3m4"),
        ] {
            let c = parse(&DEEPSEEK_V3.replace(
                r#""quantization_config":{"activation_scheme":"dynamic","fmt":"e4m3","quant_method":"fp8",
        "weight_block_size":[128,128]}"#,
                &format!(r#""quantization_config":{q}"#),
            ));
            let msg = expand(&c, None).unwrap_err().to_string();
            assert!(
                msg.contains("test/config.json") && msg.contains(needle),
                "{q}: {msg}"
            );
        }
    }
}
