//! Room a model needs on its devices once it runs, beyond its weights: the KV cache of each
//! layer, a peak-activation estimate per GPU, and a per-GPU overhead for the CUDA context and
//! allocator slack.
//!
//! KV cache: `batch × max_seq_len × (keys + values per token) × bytes` per layer, charged to
//! the device holding the layer (a layer on disk has its cache in cpu RAM). Activations:
//! `batch × max_seq_len × (2 × hidden + 3 × intermediate) × bytes` on each GPU (the residual,
//! the normalised input, and the MLP's gate, up and product), plus the last position's f32
//! logits; attention scores are assumed not materialised (SDPA or flash attention). With no
//! GPU the activations are charged to cpu. `max_seq_len = 0` and `gpu_overhead_bytes = 0`
//! turn all of it off, so budgets mean what they mean in Accelerate.

use std::collections::HashMap;

use crate::arch::runtime_dims;
use crate::dtype::DType;
use crate::inventory::Inventory;

/// What to plan run-time room for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Longest sequence (prompt + generated tokens) to keep a KV cache for; 0 turns KV cache
    /// and activation reserves off.
    pub max_seq_len: u64,
    /// Sequences run at once.
    pub batch: u64,
    /// Bytes kept free on each GPU for the CUDA context and allocator slack.
    pub gpu_overhead_bytes: u64,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            max_seq_len: 4096,
            batch: 1,
            gpu_overhead_bytes: 512 << 20,
        }
    }
}

impl RuntimeOptions {
    /// No run-time reserves at all: budgets hold weights only, as in Accelerate.
    pub fn off() -> Self {
        RuntimeOptions {
            max_seq_len: 0,
            batch: 1,
            gpu_overhead_bytes: 0,
        }
    }
}

/// Run-time room, computed once per plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeCosts {
    /// KV-cache bytes of each block that holds one, by module path.
    pub kv_bytes: HashMap<String, u64>,
    /// Peak activations on each GPU (or on cpu when there is no GPU).
    pub activation_bytes: u64,
    /// Overhead on each GPU.
    pub gpu_overhead_bytes: u64,
    /// Why no KV cache or activations were computed, when they were not.
    pub note: Option<String>,
}

impl RuntimeCosts {
    /// The run-time room of `inventory` for `opts`, with activations and cache in `dtype`
    /// (at least 16 bits: an f8 checkpoint still computes in bf16).
    pub fn estimate(inventory: &Inventory, dtype: Option<DType>, opts: &RuntimeOptions) -> Self {
        let mut costs = RuntimeCosts {
            gpu_overhead_bytes: opts.gpu_overhead_bytes,
            ..Default::default()
        };
        if opts.max_seq_len == 0 || opts.batch == 0 {
            return costs;
        }
        let Some(dims) = inventory.config.as_ref().and_then(runtime_dims) else {
            costs.note = Some(
                "no KV-cache or activation reserve computed: the architecture is unknown (no \
                 config.json of a known model_type)"
                    .into(),
            );
            return costs;
        };
        let bytes = dtype
            .filter(|d| d.is_float())
            .map_or(2, |d| (d.bits() / 8).max(2));
        let tokens = opts.batch.saturating_mul(opts.max_seq_len);
        let per_layer = tokens
            .saturating_mul(dims.kv_elems_per_token)
            .saturating_mul(bytes);
        if per_layer > 0 {
            inventory.root.walk(&mut |m| {
                let is_block = m.no_split
                    && m.path.rsplit_once('.').is_some_and(|(parent, last)| {
                        last.chars().all(|c| c.is_ascii_digit())
                            && (parent == dims.kv_container
                                || parent.ends_with(&format!(".{}", dims.kv_container)))
                    });
                if is_block {
                    costs.kv_bytes.insert(m.path.clone(), per_layer);
                }
            });
        }
        let width = 2 * dims.hidden + 3 * dims.intermediate;
        costs.activation_bytes = tokens
            .saturating_mul(width)
            .saturating_mul(bytes)
            .saturating_add(opts.batch.saturating_mul(dims.vocab).saturating_mul(4));
        costs
    }

    /// KV-cache bytes of everything at or below `path` (a module path or tensor name).
    pub fn kv_under(&self, path: &str) -> u64 {
        if path.is_empty() {
            return self.kv_bytes.values().fold(0, |a, &b| a.saturating_add(b));
        }
        let prefix = format!("{path}.");
        self.kv_bytes
            .iter()
            .filter(|(p, _)| p.as_str() == path || p.starts_with(&prefix))
            .fold(0, |a, (_, &b)| a.saturating_add(b))
    }
}
