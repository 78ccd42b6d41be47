//! `balanced` (alias `auto`) and `balanced_low_0`: even shares over the GPUs, then the
//! sequential fill.
//!
//! `balanced`: with `n` GPUs and a model costing `total` on them (weights and KV cache), every
//! GPU but the last is capped at `share = total / n + largest unit`, where the largest unit is
//! the costliest no-split unit (the buffer that keeps a GPU's share from being cut short by
//! one unit); the last GPU keeps its full budget. `balanced_low_0`: the share is computed over
//! GPUs 1…n−1 instead, and GPU 0 is capped at what does not fit on them: the shortest head of
//! the model whose rest fits, in order, on GPUs 1…n−1 (Accelerate subtracts their summed
//! budgets from the total instead, which overloads GPU 0 when a GPU is too small for a unit). Then the fill is [`super::sequential`]'s, with the same
//! reserves. With one GPU both are the sequential fill.

use super::{Ctx, Placed, atoms, fill, fits, top_level, with_offload_reserve};
use crate::device::Device;
use crate::error::Result;
use crate::units::format_bytes;

pub(crate) fn place(ctx: &Ctx, low_zero: bool) -> Result<Placed> {
    let gpus = ctx.budgets.gpu_devices();
    let atoms = atoms(ctx.inv);
    let costs: Vec<u64> = atoms.iter().map(|&a| ctx.cost(a, Device::Gpu(0))).collect();
    // Saturating: costs include run-time room, which absurd options make 2^64 - 1.
    let total: u64 = costs.iter().fold(0, |a, &c| a.saturating_add(c));
    let largest = atoms
        .iter()
        .filter(|a| a.no_split())
        .map(|&a| ctx.cost(a, Device::Gpu(0)))
        .max()
        .or_else(|| atoms.iter().map(|&a| ctx.cost(a, Device::Gpu(0))).max())
        .unwrap_or(0);
    let low_zero = low_zero && gpus.len() > 1;
    let sharing = if low_zero { &gpus[1..] } else { &gpus[..] };
    let share = if sharing.is_empty() {
        u64::MAX
    } else {
        (total / sharing.len() as u64).saturating_add(largest)
    };

    with_offload_reserve(ctx, |reserves| {
        let cap = |d: Device| ctx.capacity(d, reserves);
        let capped = |d: Device| {
            let last = gpus.last() == Some(&d);
            if d.is_gpu() && !last && !(low_zero && d == gpus[0]) {
                cap(d).min(share)
            } else {
                cap(d)
            }
        };
        // GPU 0 takes the shortest head of the model whose rest fits on GPUs 1…n.
        let zero_cap = if low_zero {
            let others: Vec<u64> = gpus[1..].iter().map(|&d| capped(d)).collect();
            let (mut a, mut b) = (0usize, costs.len());
            while a < b {
                let mid = (a + b) / 2;
                if fits(costs[mid..].iter().copied(), &others) {
                    b = mid
                } else {
                    a = mid + 1
                }
            }
            Some(cap(gpus[0]).min(costs[..a].iter().fold(0, |s, &c| s.saturating_add(c))))
        } else {
            None
        };
        let capacity = |d: Device| match zero_cap {
            Some(z) if d == gpus[0] => z,
            _ => capped(d),
        };
        let (units, mut decisions) = fill(ctx, top_level(ctx.inv), &capacity)?;
        if gpus.len() > 1 {
            let note = match zero_cap {
                Some(z) => format!(
                    "GPU 0 capped at {} (what does not fit on GPUs 1–{}), GPUs but the last at {} = {} / {} + largest unit {}",
                    format_bytes(z),
                    gpus.len() - 1,
                    format_bytes(share),
                    format_bytes(total),
                    sharing.len(),
                    format_bytes(largest)
                ),
                None => format!(
                    "GPUs but the last capped at {} = {} / {} + largest unit {}",
                    format_bytes(share),
                    format_bytes(total),
                    sharing.len(),
                    format_bytes(largest)
                ),
            };
            decisions.insert(0, note);
        }
        Ok((units, decisions))
    })
}
