//! The list an architecture builds: tensors in execution order, each checked so that an odd
//! config cannot overflow a size or exhaust memory.

use crate::config::ModelConfig;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::TensorInfo;

/// Most tensors one config may expand to. The largest published MoEs expand to about 1.5e5
/// (Kimi K2 with its FP8 scales); a config asking for more than this is a typo.
const MAX_TENSORS: usize = 2_000_000;

/// Most bytes one config may describe (1 EiB), so that sums over the list never overflow.
const MAX_TOTAL_BYTES: u64 = 1 << 60;

/// `{module}.{leaf}`, allocated once at its exact length (`format!` guesses the length and
/// grows the string; expansions make one name per tensor, 1.4e5 of them for Kimi K2).
pub(super) fn join(module: &str, leaf: &str) -> String {
    let mut name = String::with_capacity(module.len() + 1 + leaf.len());
    name.push_str(module);
    name.push('.');
    name.push_str(leaf);
    name
}

/// Tensors of one config, pushed in execution order.
pub(super) struct Tensors<'a> {
    config: &'a ModelConfig,
    float: DType,
    list: Vec<TensorInfo>,
    total_bytes: u64,
}

impl<'a> Tensors<'a> {
    /// An empty list whose floating tensors are stored as `dtype`, else as the config's
    /// `torch_dtype`, else as F32.
    pub(super) fn new(config: &'a ModelConfig, dtype: Option<DType>) -> Self {
        Tensors {
            config,
            float: dtype.or_else(|| config.torch_dtype()).unwrap_or(DType::F32),
            list: Vec::new(),
            total_bytes: 0,
        }
    }

    /// A floating tensor.
    pub(super) fn push(&mut self, name: impl Into<String>, shape: &[u64]) -> Result<()> {
        self.add(name.into(), self.float, shape, None)
    }

    /// A tensor with a dtype of its own (FP8 weights, F32 scales and biases).
    pub(super) fn push_as(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        shape: &[u64],
    ) -> Result<()> {
        self.add(name.into(), dtype, shape, None)
    }

    /// A tensor that shares the storage of `owner`, pushed earlier.
    pub(super) fn tied(
        &mut self,
        name: impl Into<String>,
        shape: &[u64],
        owner: &str,
    ) -> Result<()> {
        let dtype = self
            .list
            .iter()
            .rev()
            .find(|t| t.name == owner)
            .map_or(self.float, |t| t.dtype);
        self.add(name.into(), dtype, shape, Some(owner.to_string()))
    }

    /// `{prefix}.weight` of shape `[out, inp]` (as `nn.Linear` stores it), and `{prefix}.bias`
    /// of shape `[out]` when `bias`.
    pub(super) fn linear(&mut self, prefix: &str, out: u64, inp: u64, bias: bool) -> Result<()> {
        self.push(join(prefix, "weight"), &[out, inp])?;
        if bias {
            self.push(join(prefix, "bias"), &[out])?;
        }
        Ok(())
    }

    /// `{prefix}.weight` of shape `[dim]`, and `{prefix}.bias` when `bias` (a LayerNorm; an
    /// RMSNorm has no bias).
    pub(super) fn norm(&mut self, prefix: &str, dim: u64, bias: bool) -> Result<()> {
        self.push(join(prefix, "weight"), &[dim])?;
        if bias {
            self.push(join(prefix, "bias"), &[dim])?;
        }
        Ok(())
    }

    /// Makes room for `n` more tensors (at most the cap), so a large expansion does not
    /// grow the list step by step.
    pub(super) fn reserve(&mut self, n: u64) {
        let room = MAX_TENSORS.saturating_sub(self.list.len());
        self.list
            .reserve(usize::try_from(n).map_or(room, |n| n.min(room)));
    }

    /// The finished list.
    pub(super) fn finish(self) -> Vec<TensorInfo> {
        self.list
    }

    fn add(
        &mut self,
        name: String,
        dtype: DType,
        shape: &[u64],
        tied_to: Option<String>,
    ) -> Result<()> {
        let invalid = |reason: String| Error::ConfigInvalid {
            path: self.config.path.clone(),
            reason,
        };
        if self.list.len() >= MAX_TENSORS {
            return Err(invalid(format!(
                "the config describes more than {MAX_TENSORS} tensors; check its layer and expert counts"
            )));
        }
        let bytes = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .and_then(|elems| dtype.bytes_for(elems))
            .filter(|&b| b <= MAX_TOTAL_BYTES);
        let Some(bytes) = bytes else {
            return Err(invalid(format!(
                "tensor `{name}` would have shape {shape:?}, too large to size; check the config's sizes"
            )));
        };
        if tied_to.is_none() {
            self.total_bytes = self.total_bytes.saturating_add(bytes);
            if self.total_bytes > MAX_TOTAL_BYTES {
                return Err(invalid(
                    "the config describes more than 1 EiB of weights; check its sizes".to_string(),
                ));
            }
        }
        self.list.push(TensorInfo {
            tied_to,
            ..super::tensor(name, dtype, shape)
        });
        Ok(())
    }
}
