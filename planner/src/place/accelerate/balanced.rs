//! transformers' `get_balanced_memory`: the GPU budgets `auto`, `balanced` and
//! `balanced_low_0` hand to `infer_auto_device_map`.
//!
//! With `n` GPUs of non-zero budget, every GPU but the last is capped at
//! `total // n + int(1.25 × max(largest no-split block, largest leaf))`, where a leaf is a
//! module's own parameters and buffers; the last GPU keeps its full budget, "just in case the
//! buffer is not enough". With `low_zero` (`balanced_low_0`) the share is `total // (n − 1)`,
//! GPU 0 keeps its budget through the capping, then gets only `max(0, total − Σ budgets of
//! GPUs 1…n−1)`. One GPU turns `low_zero` off. The 0.9 factor transformers applies to a lone
//! GPU, and to cpu, only applies when the user passed no `max_memory`; stowage always passes
//! one, so it never applies here.

use super::tree::Tree;
use crate::device::Device;

/// The budgets after balancing: `budgets` (device, bytes) in placement order, with the GPU
/// entries capped.
pub(super) fn balanced_memory(
    tree: &Tree,
    budgets: &[(Device, u64)],
    low_zero: bool,
) -> Vec<(Device, u64)> {
    let mut out = budgets.to_vec();
    let gpus: Vec<u32> = budgets
        .iter()
        .filter_map(|&(d, b)| match d {
            Device::Gpu(i) if b > 0 => Some(i),
            _ => None,
        })
        .collect();
    let n = gpus.len() as u64;
    if n == 0 {
        return out;
    }
    let low_zero = low_zero && n > 1;
    let total = tree.root.bytes;
    let mut per_gpu = total / if low_zero { n - 1 } else { n };

    let mut biggest_block = 0u64;
    let mut biggest_leaf = 0u64;
    tree.root.walk(&mut |node| {
        if !node.is_module() {
            return;
        }
        if node.no_split {
            biggest_block = biggest_block.max(node.bytes);
        }
        // `leaves_module_sizes`: the direct tensors of each module below the root.
        let own = node
            .params
            .iter()
            .map(|p| p.bytes)
            .fold(node.buffer_bytes, u64::saturating_add);
        if !node.path.is_empty() {
            biggest_leaf = biggest_leaf.max(own);
        }
    });
    // `int(1.25 * x)` in Python floats, truncated.
    per_gpu = per_gpu.saturating_add((1.25 * biggest_block.max(biggest_leaf) as f64) as u64);

    let get = |out: &[(Device, u64)], i: u32| {
        out.iter()
            .find(|(d, _)| *d == Device::Gpu(i))
            .map_or(0, |e| e.1)
    };
    for &i in &gpus[..gpus.len() - 1] {
        let cap = if low_zero && i == 0 {
            get(&out, 0)
        } else {
            per_gpu
        };
        let capped = cap.min(get(&out, i));
        set(&mut out, i, capped);
    }
    if low_zero {
        // `range(1, num_devices)`: GPU indices, not positions, as transformers writes it.
        let others: u64 = (1..n as u32).map(|i| get(&out, i)).sum();
        let min_zero = total.saturating_sub(others);
        let zero = min_zero.min(get(&out, 0));
        set(&mut out, 0, zero);
    }
    out
}

fn set(out: &mut [(Device, u64)], gpu: u32, bytes: u64) {
    if let Some(e) = out.iter_mut().find(|(d, _)| *d == Device::Gpu(gpu)) {
        e.1 = bytes;
    }
}
