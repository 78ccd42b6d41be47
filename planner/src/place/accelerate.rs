//! `--compat accelerate`: the device map `from_pretrained(device_map=STRATEGY,
//! max_memory=...)` computes with Accelerate 1.x and transformers 5.x, quirks included.
//!
//! The ways to reproduce it, one file each:
//! - [`layout`]: the PyTorch module tree of the known architectures, which the checkpoint does
//!   not say (definition order, parameterless modules, buffers, no-split blocks, forced ties);
//! - [`tree`]: that tree built over the inventory and sized as transformers'
//!   `compute_module_sizes` sizes it;
//! - [`balanced`]: `get_balanced_memory`, for `auto`, `balanced` and `balanced_low_0`;
//! - [`infer`]: `infer_auto_device_map`, step by step, and `clean_device_map`.
//!
//! Reproduced, checked against maps computed by the real tools (torch 2.15.0,
//! transformers 5.24.0, accelerate 1.15.0; `scripts/accelerate_fixtures.py`,
//! `tests/fixtures/accelerate/`):
//! - entries are taken in module **definition** order (`named_children`), not execution
//!   order: OPT's decoder registers `project_out`, `project_in` and `final_layer_norm` before
//!   `layers`; parameterless modules (`model.rotary_emb`, `transformer.drop`,
//!   `encoder.dropout`) are entries too;
//! - the first GPU and cpu ("main devices") only offer their budget minus the largest layer
//!   still to place, whether or not anything is offloaded; the reserve shrinks as the largest
//!   layers get placed, and taking a top-level module off the list drops its own layers from
//!   the reckoning (so a model that fits whole on the first device goes there, and only a
//!   model that has to be split loses that room);
//! - non-persistent buffers count in module sizes (rotary `inv_freq` and `original_inv_freq`,
//!   f32 whatever the dtype), computed from the config since checkpoints do not store them;
//! - floating parameters take the size of the dtype the model is built in (`--dtype`), even
//!   when the checkpoint stores a smaller one;
//! - tied parameters count zero, and the modules holding them go with the module holding their
//!   partner, found by transformers' substring test; when only the tied modules make it too
//!   big, the first splittable one is split instead;
//! - `get_balanced_memory`: every GPU but the last capped at `total // n` plus
//!   `int(1.25 × max(largest no-split block, largest leaf))`, the last GPU keeping its full
//!   budget; `balanced_low_0` gives GPU 0 only what GPUs 1…n−1 cannot take;
//! - disk takes everything: its budget is ignored, as `infer_auto_device_map` ignores it;
//! - transformers 5 ties T5's and mT5's `lm_head` to `shared` whatever the config says;
//! - the no-split blocks are the model's `_no_split_modules`; `--no-split` patterns are not
//!   used for the known architectures.
//!
//! Budgets are used as an explicit `max_memory`: transformers' 0.9 factors for a lone GPU and
//! for cpu only apply when `from_pretrained` gets no `max_memory`. Runtime reserves (KV cache,
//! activations, GPU overhead) are not taken: Accelerate has none.
//!
//! Architectures without a [`layout`] (`bert`, `deepseek_v3`, `kimi_k2`, or no config) use the
//! inventory's own tree: execution order, its no-split units, no buffers, no parameterless
//! modules. The map then matches Accelerate's only where the two orders agree.
//!
//! # Where stowage's default mode differs, and why
//!
//! - **Reserve only when offloading.** Accelerate keeps room for the largest layer on GPU 0
//!   and cpu even when everything fits, so a model that would fit is offloaded
//!   (accelerate#3041). Stowage reserves room for the largest *offloaded* unit, and only when
//!   something is offloaded.
//! - **Execution order, not definition order.** A fill in definition order puts OPT's final
//!   norm (and `project_out`) with the embeddings, before the layers, so the hidden states
//!   travel back to an earlier device at the end of the forward pass. Stowage orders modules
//!   as the forward pass runs them, recovered from tensor names.
//! - **No buffers.** Checkpoints do not store non-persistent buffers and their size is
//!   negligible next to the weights; stowage sizes what the checkpoint holds, in the dtype
//!   asked (never above the stored one).
//! - **Runtime-aware budgets.** A GPU also holds the KV cache, activations and the CUDA
//!   context; stowage takes them off each budget, where Accelerate leaves them to the user's
//!   `max_memory`.
//! - **Balanced shares use the largest unit, not 1.25× of it.** Accelerate pads each share by
//!   1.25 × the largest block or leaf, a guess that still leaves the last GPU short or
//!   over-full; stowage pads by exactly the largest no-split unit.
//!
//! # Known limits
//!
//! - The plan reports Accelerate's own keys (after `clean_device_map`, parameterless modules
//!   included), in first-seen order: Python's follows a `set`, so its order is not
//!   reproducible anyway.
//! - Keys follow the checkpoint's names. Checkpoints saved from a base class without the
//!   prefix the head class adds (`facebook/opt-*`: `decoder.*`; `openai-community/gpt2`:
//!   `h.*`) give keys transformers writes as `model.decoder.*` and `transformer.h.*`.
//! - Quantized checkpoints are sized as stored (FP8 weights one byte); transformers asks its
//!   quantizer, which may count scales differently. Not checked against the tools.
//! - With several tie groups, groups are taken by owner name; transformers iterates a `set`.
//! - `balanced_low_0` sums GPUs `1..n` by index, as transformers does; where GPUs are not
//!   numbered from 0 transformers raises `KeyError` and stowage counts the missing ones as 0.

mod balanced;
mod infer;
mod layout;
mod tree;

use super::{Entry, Placed};
use crate::budget::Budgets;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::placement::Unit;
use crate::strategy::Strategy;
use crate::units::format_bytes;

use tree::Tree;

/// The model tree and the budgets `infer_auto_device_map` gets.
struct Setup {
    tree: Tree,
    /// Whether the architecture has a known [`layout`].
    known: bool,
    /// The budgets as given, in placement order.
    given: Vec<(Device, u64)>,
    /// The budgets after `get_balanced_memory` (the given ones for `sequential`).
    devices: Vec<(Device, u64)>,
}

fn setup(
    inv: &Inventory,
    budgets: &Budgets,
    dtype: Option<DType>,
    strategy: Strategy,
) -> Result<Setup> {
    let low_zero = match strategy {
        Strategy::Sequential => None,
        Strategy::Balanced => Some(false),
        Strategy::BalancedLow0 => Some(true),
        _ => {
            return Err(Error::Unsupported {
                what: format!("--strategy {strategy} with --compat accelerate"),
                hint: "; it has no Accelerate equivalent: use auto, balanced, balanced_low_0 or \
                       sequential, or drop --compat accelerate"
                    .into(),
            });
        }
    };
    let layout = layout::layout(inv);
    let tree = Tree::build(inv, dtype, layout.as_ref());
    let given: Vec<(Device, u64)> = budgets
        .devices()
        .into_iter()
        .map(|d| (d, budgets.get(d).unwrap_or(0)))
        .collect();
    let devices = match low_zero {
        Some(low_zero) => balanced::balanced_memory(&tree, &given, low_zero),
        None => given.clone(),
    };
    Ok(Setup {
        tree,
        known: layout.is_some(),
        given,
        devices,
    })
}

/// Places `inv` as Accelerate would: see the module docs.
pub(crate) fn place(
    inv: &Inventory,
    budgets: &Budgets,
    dtype: Option<DType>,
    strategy: Strategy,
) -> Result<Placed> {
    let setup = setup(inv, budgets, dtype, strategy)?;
    let inferred = infer::infer(&setup.tree, &setup.devices);
    let mut map: Vec<(String, Device)> = inferred
        .placed
        .iter()
        .map(|&(n, d)| (n.path.clone(), d))
        .collect();
    infer::clean(&mut map, "");

    let mut decisions = Vec::new();
    if !setup.known {
        decisions.push(
            "accelerate compat: architecture without a known module layout; using the \
             inventory's execution order"
                .to_string(),
        );
    }
    for (&(device, before), &(_, after)) in setup.given.iter().zip(&setup.devices) {
        if after != before {
            decisions.push(format!(
                "accelerate compat: get_balanced_memory caps GPU {device} at {}",
                format_bytes(after)
            ));
        }
    }
    for &(device, bytes) in inferred.reserves.iter().filter(|r| r.1 > 0) {
        let on = match device {
            Device::Gpu(i) => format!("GPU {i}"),
            other => other.to_string(),
        };
        decisions.push(format!(
            "accelerate compat: {} kept free on {on} for the largest layer, offloaded or not",
            format_bytes(bytes)
        ));
    }

    let mut units: Vec<Unit> = inferred
        .placed
        .iter()
        .filter_map(|&(node, device)| {
            let mut tensors = node.tensors();
            tensors.sort_unstable();
            let &first = tensors.first()?;
            let mut unit = Entry::Tensor(first).unit(inv, dtype, device);
            unit.path = node.path.clone();
            unit.tensors = tensors;
            unit.bytes = node.bytes;
            Some(unit)
        })
        .collect();
    units.sort_by_key(|u| u.tensors[0]);
    let reserved = inferred.reserves.into_iter().filter(|r| r.1 > 0).collect();
    Ok(Placed {
        units,
        reserved,
        decisions,
        device_map: Some(map),
    })
}

#[cfg(test)]
mod tests;
