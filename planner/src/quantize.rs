//! Sizing quantized weights: which tensors stowage quantizes at load, and exactly how many
//! bytes each then takes on a GPU.
//!
//! The format is stowage-kernels' (its crate docs spell it out): symmetric, one f32 scale per
//! group of `G` values along the last dimension of a `[rows, cols]` weight, `⌈cols / G⌉`
//! groups per row (the last one shorter when `G` does not divide `cols`); values packed
//! flat in row-major order, 1 byte (int8) or half a byte (int4) each, the whole padded to a
//! multiple of 4 bytes. So a quantized tensor takes exactly
//!
//! ```text
//! 4 × ⌈rows × cols / k⌉  +  4 × rows × ⌈cols / G⌉      (k = 4 for int8, 8 for int4)
//! ```
//!
//! bytes, which is what [`Quantize::bytes`] returns and what the kernels allocate (a test in
//! stowage-kernels checks the two agree).
//!
//! Quantization happens on the device, so only GPUs hold quantized tensors: cpu keeps its own
//! sizing (the CPU backend holds f32), and disk holds the checkpoint's bytes; an offloaded
//! unit is quantized when it is brought to the GPU, so the room kept for it there is its
//! quantized size.

use std::fmt;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::inventory::BLOCK_CONTAINERS;
use crate::pattern::Pattern;
use crate::tensor::TensorInfo;

/// Quantization to plan for: none, or int8/int4 with a group size
/// ([`crate::PlanOptions::quantize`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Quantize {
    /// Weights keep their dtype.
    #[default]
    None,
    /// int8 values, one f32 scale per `group` values.
    Int8 {
        /// Values per scale.
        group: u32,
    },
    /// int4 values, two per byte, one f32 scale per `group` values.
    Int4 {
        /// Values per scale.
        group: u32,
    },
}

impl Quantize {
    /// The group size when none is given.
    pub const DEFAULT_GROUP: u32 = 128;
    /// The smallest group size the kernels use.
    pub const MIN_GROUP: u32 = 8;
    /// The largest group size the kernels use.
    pub const MAX_GROUP: u32 = 1024;

    /// Parses `none`, `int8` or `int4` with a group size (`None`: the default), checking the
    /// group is a power of two from [`Self::MIN_GROUP`] to [`Self::MAX_GROUP`].
    ///
    /// ```
    /// use stowage_planner::Quantize;
    /// assert_eq!(Quantize::new("int4", None)?, Quantize::Int4 { group: 128 });
    /// assert_eq!(Quantize::new("int8", Some(32))?, Quantize::Int8 { group: 32 });
    /// assert!(Quantize::new("int4", Some(100)).is_err());
    /// # Ok::<(), stowage_planner::Error>(())
    /// ```
    pub fn new(kind: &str, group: Option<u32>) -> Result<Quantize> {
        let g = group.unwrap_or(Self::DEFAULT_GROUP);
        let q = match kind {
            "none" => return Ok(Quantize::None),
            "int8" => Quantize::Int8 { group: g },
            "int4" => Quantize::Int4 { group: g },
            other => {
                return Err(Error::Unsupported {
                    what: format!("quantization `{other}`"),
                    hint: "; use none, int8 or int4".into(),
                });
            }
        };
        if !(Self::MIN_GROUP..=Self::MAX_GROUP).contains(&g) || !g.is_power_of_two() {
            return Err(Error::Unsupported {
                what: format!("quantization group size {g}"),
                hint: format!(
                    "; use a power of two from {} to {} ({} is the default)",
                    Self::MIN_GROUP,
                    Self::MAX_GROUP,
                    Self::DEFAULT_GROUP
                ),
            });
        }
        Ok(q)
    }

    /// `none`, `int8` or `int4`.
    pub fn as_str(self) -> &'static str {
        match self {
            Quantize::None => "none",
            Quantize::Int8 { .. } => "int8",
            Quantize::Int4 { .. } => "int4",
        }
    }

    /// Whether weights are quantized at all.
    pub fn is_none(self) -> bool {
        self == Quantize::None
    }

    /// Values per scale; `None` without quantization.
    pub fn group(self) -> Option<u32> {
        match self {
            Quantize::None => None,
            Quantize::Int8 { group } | Quantize::Int4 { group } => Some(group),
        }
    }

    /// Bytes of a quantized `[rows, cols]` tensor: values plus scales (see the module docs);
    /// `None` without quantization.
    ///
    /// ```
    /// use stowage_planner::Quantize;
    /// // 3 rows of 37: 111 int4 values in 14 words, 3 × ⌈37/32⌉ = 6 scales.
    /// assert_eq!(Quantize::Int4 { group: 32 }.bytes(3, 37), Some(14 * 4 + 6 * 4));
    /// ```
    pub fn bytes(self, rows: u64, cols: u64) -> Option<u64> {
        let (per_word, group) = match self {
            Quantize::None => return None,
            Quantize::Int8 { group } => (4, group),
            Quantize::Int4 { group } => (8, group),
        };
        let values = rows
            .saturating_mul(cols)
            .div_ceil(per_word)
            .saturating_mul(4);
        let scales = rows
            .saturating_mul(cols.div_ceil(u64::from(group.max(1))))
            .saturating_mul(4);
        Some(values.saturating_add(scales))
    }

    /// Whether stowage quantizes `t`: the weight of a linear layer inside a numbered block.
    ///
    /// The inventory has no module kinds, so this is decided by name, dtype and shape:
    /// - a 2-D f32, f16 or bf16 tensor (what the kernels read), not tied to another;
    /// - named `….weight`, inside a numbered block (`layers.N`, `h.N`, `block.N`, `layer.N`,
    ///   `blocks.N`, `experts.N`): attention projections, MLPs, experts. Embeddings, the
    ///   final norm and the head (tied or not) sit outside the blocks and keep their dtype;
    /// - not a norm, an embedding or a bias table (a layer whose name contains `norm`,
    ///   `embed` or `bias`, such as T5's `relative_attention_bias`), nor a mixture-of-experts
    ///   router (a layer named `gate` or `router`; `gate_proj` is a linear layer).
    ///
    /// Groups run along the stored last dimension: `in_features` for PyTorch's `nn.Linear`
    /// (`[out, in]`); GPT-2's `Conv1D` stores `[in, out]`, so its groups run along `out`.
    ///
    /// ```
    /// use stowage_planner::{DType, Quantize, TensorInfo, TensorSource};
    /// let t = |name: &str, shape: Vec<u64>| TensorInfo {
    ///     name: name.into(), dtype: DType::BF16, shape, source: TensorSource::Config, tied_to: None,
    /// };
    /// let q = Quantize::Int4 { group: 128 };
    /// assert!(q.applies_to(&t("model.layers.0.self_attn.q_proj.weight", vec![4096, 4096])));
    /// assert!(!q.applies_to(&t("model.layers.0.input_layernorm.weight", vec![4096])));
    /// assert!(!q.applies_to(&t("model.embed_tokens.weight", vec![128256, 4096])));
    /// assert!(!q.applies_to(&t("lm_head.weight", vec![128256, 4096])));
    /// assert!(!q.applies_to(&t("model.layers.0.block_sparse_moe.gate.weight", vec![8, 4096])));
    /// ```
    pub fn applies_to(self, t: &TensorInfo) -> bool {
        if self.is_none()
            || t.tied_to.is_some()
            || t.shape.len() != 2
            || !matches!(t.dtype, DType::F32 | DType::F16 | DType::BF16)
        {
            return false;
        }
        let Some(module) = t.name.strip_suffix(".weight") else {
            return false;
        };
        let segments: Vec<&str> = module.split('.').collect();
        let in_block = segments.windows(2).any(|w| {
            BLOCK_CONTAINERS.contains(&w[0])
                && !w[1].is_empty()
                && w[1].bytes().all(|b| b.is_ascii_digit())
        });
        let layer = segments.last().copied().unwrap_or("").to_ascii_lowercase();
        let excluded = ["norm", "embed", "bias"].iter().any(|s| layer.contains(s))
            || layer == "gate"
            || layer == "router";
        in_block && !excluded
    }

    /// Bytes `t` takes on a GPU with `dtype` requested: quantized when [`Self::applies_to`],
    /// else as [`TensorInfo::bytes_as`] sizes it.
    pub fn tensor_bytes(self, t: &TensorInfo, dtype: Option<DType>) -> u64 {
        if self.applies_to(t) {
            self.bytes(t.shape[0], t.shape[1]).unwrap_or(u64::MAX)
        } else {
            t.bytes_as(dtype)
        }
    }
}

/// What a [`QuantizeModule`] rule does to the weights it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantizeAs {
    /// Keep the checkpoint's dtype (transformers' `llm_int8_skip_modules`).
    Keep,
    /// int8, in the plan's group size.
    Int8,
    /// int4, in the plan's group size.
    Int4,
}

impl QuantizeAs {
    /// `none`, `int8` or `int4`.
    pub fn as_str(self) -> &'static str {
        match self {
            QuantizeAs::Keep => "none",
            QuantizeAs::Int8 => "int8",
            QuantizeAs::Int4 => "int4",
        }
    }

    /// The quantization this gives with `group` values per scale.
    pub fn with_group(self, group: u32) -> Quantize {
        match self {
            QuantizeAs::Keep => Quantize::None,
            QuantizeAs::Int8 => Quantize::Int8 { group },
            QuantizeAs::Int4 => Quantize::Int4 { group },
        }
    }
}

/// A per-module precision: the linear weights of the modules `pattern` matches are quantized
/// as [`QuantizeAs`] says instead of as the plan's [`Quantize`]
/// ([`crate::PlanOptions::quantize_modules`]; the first matching rule wins).
///
/// The pattern is matched against the weight's module path (its name without `.weight`) as
/// `--no-split` patterns are ([`Pattern`]), and also at the end of the path: `intermediate.dense`
/// matches `encoder.layer.3.intermediate.dense`, `value` matches every `….value`. Only weights
/// the quantization rule picks ([`Quantize::applies_to`]) are affected: a rule cannot quantize
/// an embedding or a norm. All rules share the plan's group size (the default when the plan
/// itself quantizes nothing).
///
/// ```
/// use stowage_planner::{DType, Quantize, QuantizeAs, QuantizeModule, TensorInfo, TensorSource, quantize_for};
/// let t = |name: &str| TensorInfo {
///     name: name.into(), dtype: DType::F32, shape: vec![1536, 384], source: TensorSource::Config, tied_to: None,
/// };
/// let rules = [QuantizeModule::parse("intermediate.dense=int8")?, QuantizeModule::parse("layer.0.**=none")?];
/// let int4 = Quantize::Int4 { group: 32 };
/// let up = t("encoder.layer.3.intermediate.dense.weight");
/// assert_eq!(quantize_for(int4, &rules, &up), Quantize::Int8 { group: 32 });
/// assert_eq!(quantize_for(int4, &rules, &t("encoder.layer.3.output.dense.weight")), int4);
/// assert_eq!(quantize_for(int4, &rules, &t("layer.0.output.dense.weight")), Quantize::None);
/// assert_eq!(quantize_for(int4, &rules, &t("embeddings.word_embeddings.weight")), Quantize::None);
/// # Ok::<(), stowage_planner::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantizeModule {
    text: String,
    whole: Pattern,
    tail: Option<Pattern>,
    /// What the matched weights become.
    pub quantize: QuantizeAs,
}

impl QuantizeModule {
    /// A rule giving the modules `pattern` matches `quantize`.
    pub fn new(pattern: &str, quantize: QuantizeAs) -> Result<QuantizeModule> {
        let text = pattern.trim().to_string();
        let whole = Pattern::new(&text)?;
        let tail = (text.contains('.') && !text.starts_with("**"))
            .then(|| Pattern::new(&format!("**.{text}")))
            .transpose()?;
        Ok(QuantizeModule {
            text,
            whole,
            tail,
            quantize,
        })
    }

    /// Parses `PATTERN=int8`, `PATTERN=int4` or `PATTERN=none` (`--quantize-module`).
    pub fn parse(spec: &str) -> Result<QuantizeModule> {
        let bad = |hint: &str| Error::Unsupported {
            what: format!("quantize-module rule `{spec}`"),
            hint: hint.to_string(),
        };
        let (pattern, kind) = spec
            .rsplit_once('=')
            .ok_or_else(|| bad("; write PATTERN=int8, PATTERN=int4 or PATTERN=none"))?;
        let quantize = match kind.trim() {
            "none" | "keep" => QuantizeAs::Keep,
            "int8" => QuantizeAs::Int8,
            "int4" => QuantizeAs::Int4,
            _ => return Err(bad("; the precision after `=` is int8, int4 or none")),
        };
        QuantizeModule::new(pattern, quantize)
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        &self.text
    }

    /// Whether the module at `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        self.whole.matches(path) || self.tail.as_ref().is_some_and(|t| t.matches(path))
    }
}

impl fmt::Display for QuantizeModule {
    /// `PATTERN=int8`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.text, self.quantize.as_str())
    }
}

/// The quantization `t` gets: [`Quantize::None`] unless the quantization rule picks it
/// ([`Quantize::applies_to`]); then the first of `modules` that matches its module, else
/// `base`. Rules use `base`'s group size, or [`Quantize::DEFAULT_GROUP`] when `base` is
/// `None`.
pub fn quantize_for(base: Quantize, modules: &[QuantizeModule], t: &TensorInfo) -> Quantize {
    let group = base.group().unwrap_or(Quantize::DEFAULT_GROUP);
    let eligible = QuantizeAs::Int8.with_group(group);
    if !eligible.applies_to(t) {
        return Quantize::None;
    }
    let module = t.name.strip_suffix(".weight").unwrap_or(&t.name);
    match modules.iter().find(|m| m.matches(module)) {
        Some(m) => m.quantize.with_group(group),
        None => base,
    }
}

impl fmt::Display for Quantize {
    /// `none`, or `int4 (groups of 128)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.group() {
            None => f.write_str("none"),
            Some(g) => write!(f, "{} (groups of {g})", self.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorSource;

    fn tensor(name: &str, dtype: DType, shape: &[u64]) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            source: TensorSource::Config,
            tied_to: None,
        }
    }

    /// The formula on shapes no group divides, rows of one value, an empty tensor, and one
    /// whose value count is not a multiple of the values per word.
    #[test]
    fn awkward_shapes() {
        let int8 = |g| Quantize::Int8 { group: g };
        let int4 = |g| Quantize::Int4 { group: g };
        // [3, 37], groups of 32: 2 groups per row, 6 scales = 24 bytes.
        assert_eq!(int8(32).bytes(3, 37), Some(112 + 24)); // 111 values → 28 words
        assert_eq!(int4(32).bytes(3, 37), Some(56 + 24)); // 111 nibbles → 14 words
        // [1, 1]: one value, one word, one scale.
        assert_eq!(int8(128).bytes(1, 1), Some(4 + 4));
        assert_eq!(int4(128).bytes(1, 1), Some(4 + 4));
        // [0, 5] and [5, 0]: nothing.
        assert_eq!(int4(8).bytes(0, 5), Some(0));
        assert_eq!(int4(8).bytes(5, 0), Some(0));
        // [7, 9], int4 groups of 8: 63 nibbles → 8 words; 2 groups per row → 14 scales.
        assert_eq!(int4(8).bytes(7, 9), Some(32 + 56));
        // Llama-3-70B's MLP up-projection, [28672, 8192], int4 groups of 128: half a byte per
        // value plus 4 bytes per 128 values.
        let (r, c) = (28672u64, 8192u64);
        assert_eq!(int4(128).bytes(r, c), Some(r * c / 2 + r * c / 128 * 4));
        assert_eq!(int8(64).bytes(r, c), Some(r * c + r * c / 64 * 4));
        assert_eq!(Quantize::None.bytes(3, 3), None);
    }

    #[test]
    fn which_tensors() {
        let q = Quantize::Int8 { group: 64 };
        let yes = [
            "model.layers.3.mlp.down_proj.weight",
            "model.layers.0.block_sparse_moe.experts.7.w1.weight",
            "model.layers.1.mlp.shared_experts.gate_proj.weight",
            "transformer.h.2.attn.c_attn.weight",
            "encoder.block.0.layer.0.SelfAttention.q.weight",
            "bert.encoder.layer.11.attention.self.query.weight",
        ];
        for name in yes {
            assert!(
                q.applies_to(&tensor(name, DType::BF16, &[64, 96])),
                "{name}"
            );
        }
        let no = [
            (
                "model.layers.3.mlp.down_proj.bias",
                DType::BF16,
                &[64, 96][..],
            ),
            ("model.layers.3.mlp.down_proj.weight", DType::BF16, &[64]),
            (
                "model.layers.3.mlp.down_proj.weight",
                DType::F8_E4M3,
                &[64, 96],
            ),
            ("model.layers.3.mlp.down_proj.weight", DType::I32, &[64, 96]),
            (
                "model.layers.3.mlp.experts.weight",
                DType::BF16,
                &[8, 64, 96],
            ),
            ("model.layers.0.mlp.gate.weight", DType::BF16, &[8, 64]),
            (
                "model.layers.0.post_attention_layernorm.weight",
                DType::BF16,
                &[64, 2],
            ),
            (
                "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                DType::F32,
                &[32, 8],
            ),
            ("model.embed_tokens.weight", DType::BF16, &[1000, 64]),
            ("lm_head.weight", DType::BF16, &[1000, 64]),
            ("model.layers.weight", DType::BF16, &[64, 64]),
        ];
        for (name, dtype, shape) in no {
            assert!(!q.applies_to(&tensor(name, dtype, shape)), "{name}");
        }
        let mut tied = tensor("model.layers.0.mlp.up_proj.weight", DType::BF16, &[4, 4]);
        tied.tied_to = Some("model.layers.1.mlp.up_proj.weight".into());
        assert!(!q.applies_to(&tied));
        assert!(!Quantize::None.applies_to(&tensor(yes[0], DType::BF16, &[4, 4])));
    }

    #[test]
    fn sizes_by_tensor() {
        let q = Quantize::Int4 { group: 128 };
        let w = tensor(
            "model.layers.0.self_attn.o_proj.weight",
            DType::BF16,
            &[256, 384],
        );
        assert_eq!(q.tensor_bytes(&w, None), 256 * 384 / 2 + 256 * 3 * 4);
        let norm = tensor("model.layers.0.input_layernorm.weight", DType::BF16, &[256]);
        assert_eq!(q.tensor_bytes(&norm, Some(DType::F32)), 256 * 2);
        assert_eq!(
            Quantize::None.tensor_bytes(&w, Some(DType::F16)),
            256 * 384 * 2
        );
    }

    /// A small decoder: embedding [64, 32], 4 layers of q_proj [32, 32], up_proj [64, 32]
    /// and a norm [32], final norm, untied head [64, 32]; all bf16.
    fn small_model() -> crate::Inventory {
        let mut t = vec![tensor("model.embed_tokens.weight", DType::BF16, &[64, 32])];
        for i in 0..4 {
            let l = format!("model.layers.{i}");
            t.push(tensor(
                &format!("{l}.self_attn.q_proj.weight"),
                DType::BF16,
                &[32, 32],
            ));
            t.push(tensor(
                &format!("{l}.mlp.up_proj.weight"),
                DType::BF16,
                &[64, 32],
            ));
            t.push(tensor(
                &format!("{l}.input_layernorm.weight"),
                DType::BF16,
                &[32],
            ));
        }
        t.push(tensor("model.norm.weight", DType::BF16, &[32]));
        t.push(tensor("lm_head.weight", DType::BF16, &[64, 32]));
        crate::Inventory::from_tensors(t, None, &Default::default()).unwrap()
    }

    /// GPUs hold quantized sizes, cpu its f32 sizes, disk the stored ones, whatever the
    /// strategy; a GPU too small for bf16 holds the quantized model whole.
    #[test]
    fn placement_sizes_each_device_its_way() {
        use crate::{Budgets, Device, PlanOptions, RuntimeOptions, Strategy, plan};
        let inv = small_model();
        let q = Quantize::Int4 { group: 8 };
        // int4, groups of 8: q_proj 512 + 32·4·4 = 1024 bytes, up_proj 1024 + 64·4·4 = 2048.
        let quantized_total = 4096 + 4 * (1024 + 2048 + 64) + 64 + 4096;
        let stored_total = 4096 + 4 * (2048 + 4096 + 64) + 64 + 4096;
        assert_eq!(inv.total_bytes(None), stored_total);
        for strategy in [Strategy::Sequential, Strategy::Balanced, Strategy::Optimal] {
            let opts = |quantize, cpu_float| PlanOptions {
                strategy,
                runtime: RuntimeOptions::off(),
                cpu_float,
                quantize,
                ..Default::default()
            };
            let fits = Budgets {
                gpus: vec![],
                cpu_bytes: 1 << 20,
                disk_bytes: 1 << 20,
            }
            .with_max_memory(&[(Device::Gpu(0), quantized_total)]);
            let p = plan(&inv, &fits, &opts(q, None)).unwrap();
            assert_eq!(p.offloaded_bytes(), 0, "{strategy:?}");
            assert_eq!(p.used_on(Device::Gpu(0)), quantized_total);
            assert_eq!(p.total_bytes, quantized_total);
            let p = plan(&inv, &fits, &opts(Quantize::None, None)).unwrap();
            assert!(p.offloaded_bytes() > 0, "{strategy:?}");

            // A GPU for about half, a little cpu (floats as f32), the rest on disk.
            let split = Budgets {
                gpus: vec![],
                cpu_bytes: 30_000,
                disk_bytes: 1 << 20,
            }
            .with_max_memory(&[(Device::Gpu(0), 10_000)]);
            let p = plan(&inv, &split, &opts(q, Some(DType::F32))).unwrap();
            let mut seen = [false; 3];
            for unit in &p.units {
                let ts = unit.tensors.iter().map(|&i| &inv.tensors[i]);
                let (want, k) = match unit.device {
                    Device::Gpu(_) => (ts.map(|t| q.tensor_bytes(t, None)).sum::<u64>(), 0),
                    Device::Cpu => (ts.map(|t| t.elems() * 4).sum(), 1),
                    Device::Disk => (ts.map(|t| t.stored_bytes()).sum(), 2),
                };
                seen[k] = true;
                assert_eq!(
                    unit.bytes, want,
                    "{strategy:?}: {} on {}",
                    unit.path, unit.device
                );
            }
            assert_eq!(seen, [true, true, true], "{strategy:?}: every device used");
        }
    }

    #[test]
    fn parse_and_show() {
        assert_eq!(Quantize::new("none", Some(3)).unwrap(), Quantize::None);
        assert_eq!(
            Quantize::new("int8", None).unwrap(),
            Quantize::Int8 { group: 128 }
        );
        for bad in [0, 4, 96, 2048] {
            let err = Quantize::new("int4", Some(bad)).unwrap_err().to_string();
            assert!(err.contains("power of two"), "{err}");
        }
        assert!(Quantize::new("int2", None).is_err());
        assert_eq!(
            Quantize::Int4 { group: 64 }.to_string(),
            "int4 (groups of 64)"
        );
        assert_eq!(Quantize::None.to_string(), "none");
    }
}
