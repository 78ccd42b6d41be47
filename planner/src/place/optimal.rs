//! `optimal`: the contiguous split of the execution-ordered units over the GPUs that
//! minimises the largest load relative to each GPU's capacity, computed exactly.
//!
//! 1. The units are the atoms of the model: no-split units and the tensors outside them.
//!    With [`OffloadOrder::ExpertsFirst`], each block holding routed experts becomes two
//!    atoms: the block without its experts, and the experts.
//! 2. If the atoms do not all fit on the GPUs, the fewest are offloaded, taken in offload
//!    order (by default from the end of the model: the head, then the last layers), found by
//!    binary search on their number (fitting is monotone: any subsequence of a sequence that
//!    fits also fits).
//! 3. The atoms left are split into one contiguous run per GPU, in GPU order, minimising
//!    `max(load_i / capacity_i)` by dynamic programming: `best[i][j]` is the least possible
//!    worst ratio for the first `j` atoms on the first `i` GPUs, and since `best[i-1][k]`
//!    grows with `k` while the ratio of the run `k..j` shrinks, the best `k` is found by
//!    binary search. Ratios are compared exactly (128-bit cross products). Time
//!    `O(gpus × atoms × log atoms)`.
//! 4. Offloaded atoms go to cpu, then disk, in execution order.
//!
//! Offload reserves are those of every stowage strategy (see [`super::with_offload_reserve`]).

use std::cmp::Ordering;

use super::{Ctx, Entry, Placed, atoms, fits, with_offload_reserve};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::inventory::Module;
use crate::names::summarize_names;
use crate::placement::Unit;
use crate::strategy::OffloadOrder;
use crate::units::format_bytes;

/// A non-negative ratio `num / den`, with `den == 0` meaning infinity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ratio {
    num: u64,
    den: u64,
}

impl Ratio {
    const ZERO: Ratio = Ratio { num: 0, den: 1 };
    const INF: Ratio = Ratio { num: 1, den: 0 };

    /// `load / cap`: zero for an empty run, infinite when it does not fit.
    fn of(load: u64, cap: u64) -> Ratio {
        if load == 0 {
            Ratio::ZERO
        } else if load > cap {
            Ratio::INF
        } else {
            Ratio {
                num: load,
                den: cap,
            }
        }
    }

    pub(crate) fn as_f64(self) -> f64 {
        if self.den == 0 {
            f64::INFINITY
        } else {
            self.num as f64 / self.den as f64
        }
    }
}

impl PartialEq for Ratio {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Ratio {}
impl PartialOrd for Ratio {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ratio {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.den, other.den) {
            (0, 0) => Ordering::Equal,
            (0, _) => Ordering::Greater,
            (_, 0) => Ordering::Less,
            _ => {
                (self.num as u128 * other.den as u128).cmp(&(other.num as u128 * self.den as u128))
            }
        }
    }
}

/// The split of `costs` into `caps.len()` contiguous runs minimising the worst `load / cap`:
/// the start of each GPU's run (`starts[i]..starts[i+1]`), and that worst ratio. `None` when
/// the costs do not fit at all.
pub(crate) fn split(costs: &[u64], caps: &[u64]) -> Option<(Vec<usize>, Ratio)> {
    let p = costs.len();
    let n = caps.len();
    let mut prefix = vec![0u64; p + 1];
    for (j, &c) in costs.iter().enumerate() {
        prefix[j + 1] = prefix[j].saturating_add(c);
    }
    let mut best = vec![Ratio::INF; p + 1];
    best[0] = Ratio::ZERO;
    let mut choice = vec![vec![0usize; p + 1]; n];
    for (i, &cap) in caps.iter().enumerate() {
        let prev = best.clone();
        let mut lo = 0usize;
        for j in 0..=p {
            // The smallest k whose run k..j fits on this GPU.
            while prefix[j] - prefix[lo] > cap {
                lo += 1;
            }
            let run = |k: usize| Ratio::of(prefix[j] - prefix[k], cap);
            let value = |k: usize| prev[k].max(run(k));
            // prev[k] grows with k and run(k) shrinks: find where they cross.
            let (mut a, mut b) = (lo, j);
            while a < b {
                let mid = (a + b) / 2;
                if prev[mid] >= run(mid) {
                    b = mid
                } else {
                    a = mid + 1
                }
            }
            let mut k = a;
            if a > lo && value(a - 1) <= value(a) {
                k = a - 1;
            }
            best[j] = value(k);
            choice[i][j] = k;
        }
    }
    if best[p] == Ratio::INF {
        return None;
    }
    let mut starts = vec![0usize; n + 1];
    starts[n] = p;
    let mut j = p;
    for i in (0..n).rev() {
        j = choice[i][j];
        starts[i] = j;
    }
    Some((starts, best[p]))
}

/// An atom: a whole entry, or (experts-first) a block without its experts.
#[derive(Clone)]
struct Atom {
    path: String,
    tensors: Vec<usize>,
    experts: bool,
}

fn find_experts(m: &Module) -> Option<&Module> {
    if m.path.rsplit('.').next() == Some("experts") && !m.children.is_empty() {
        return Some(m);
    }
    m.children.iter().find_map(find_experts)
}

fn make_atoms(ctx: &Ctx, order: OffloadOrder) -> Vec<Atom> {
    let mut out = Vec::new();
    for e in atoms(ctx.inv) {
        let whole = |e: Entry| Atom {
            path: e.path(ctx.inv),
            tensors: e.tensors(),
            experts: false,
        };
        match (order, e) {
            (OffloadOrder::ExpertsFirst, Entry::Module(m)) if m.no_split => match find_experts(m) {
                Some(experts) => {
                    let expert_tensors = experts.all_tensors();
                    let rest: Vec<usize> = m
                        .all_tensors()
                        .into_iter()
                        .filter(|t| expert_tensors.binary_search(t).is_err())
                        .collect();
                    out.push(Atom {
                        path: m.path.clone(),
                        tensors: rest,
                        experts: false,
                    });
                    out.push(Atom {
                        path: experts.path.clone(),
                        tensors: expert_tensors,
                        experts: true,
                    });
                }
                None => out.push(whole(e)),
            },
            _ => out.push(whole(e)),
        }
    }
    out
}

pub(crate) fn place(ctx: &Ctx, order: OffloadOrder) -> Result<Placed> {
    let atoms = make_atoms(ctx, order);
    let sizes = |on: Device| -> Vec<u64> {
        atoms
            .iter()
            .map(|a| a.tensors.iter().map(|&t| ctx.tensor_on(t, on)).sum())
            .collect()
    };
    let weights = sizes(Device::Disk);
    let weights_cpu = sizes(Device::Cpu);
    // GPUs size every GPU alike (quantized weights differ from disk's).
    let weights_gpu = sizes(Device::Gpu(0));
    let kv: Vec<u64> = atoms
        .iter()
        .map(|a| {
            if a.experts {
                0
            } else {
                ctx.runtime.kv_under(&a.path)
            }
        })
        .collect();
    // Offload candidates: experts (last layer first) when asked, then everything from the end.
    let mut candidates: Vec<usize> = Vec::with_capacity(atoms.len());
    if order == OffloadOrder::ExpertsFirst {
        candidates.extend((0..atoms.len()).rev().filter(|&j| atoms[j].experts));
    }
    candidates.extend(
        (0..atoms.len())
            .rev()
            .filter(|&j| !(order == OffloadOrder::ExpertsFirst && atoms[j].experts)),
    );
    let gpus = ctx.budgets.gpu_devices();

    with_offload_reserve(ctx, |reserves| {
        let caps: Vec<u64> = gpus.iter().map(|&d| ctx.capacity(d, reserves)).collect();
        let on_gpu_cost = |j: usize| weights_gpu[j].saturating_add(kv[j]);
        let kept = |removed: usize| {
            let mut off = vec![false; atoms.len()];
            for &c in &candidates[..removed] {
                off[c] = true;
            }
            off
        };
        let feasible = |removed: usize| {
            let off = kept(removed);
            fits(
                (0..atoms.len()).filter(|&j| !off[j]).map(on_gpu_cost),
                &caps,
            )
        };
        // The fewest offloaded atoms that let the rest fit.
        let (mut a, mut b) = (0usize, candidates.len());
        while a < b {
            let mid = (a + b) / 2;
            if feasible(mid) { b = mid } else { a = mid + 1 }
        }
        let off = kept(a);
        let resident: Vec<usize> = (0..atoms.len()).filter(|&j| !off[j]).collect();
        let costs: Vec<u64> = resident.iter().map(|&j| on_gpu_cost(j)).collect();
        let (starts, worst) = split(&costs, &caps).expect("feasible by construction");
        let mut device = vec![Device::Disk; atoms.len()];
        for (g, &gpu) in gpus.iter().enumerate() {
            for &j in &resident[starts[g]..starts[g + 1]] {
                device[j] = gpu;
            }
        }
        let mut decisions = Vec::new();
        if !gpus.is_empty() && !costs.is_empty() {
            decisions.push(format!(
                "optimal split over {} GPUs: the fullest is {:.1}% of its capacity",
                gpus.len(),
                100.0 * worst.as_f64()
            ));
        }
        // Offloaded atoms: cpu, then disk, in execution order.
        let mut cpu_left = ctx.capacity(Device::Cpu, reserves);
        let mut disk_left = ctx.capacity(Device::Disk, reserves);
        let mut on_disk = false;
        let mut to_cpu: Vec<(&str, &str)> = Vec::new();
        for j in (0..atoms.len()).filter(|&j| off[j]) {
            let cpu_cost = weights_cpu[j].saturating_add(kv[j]);
            let why = if order == OffloadOrder::ExpertsFirst && atoms[j].experts {
                "routed experts leave the GPUs first"
            } else {
                "units leave the GPUs from the end of the model"
            };
            if !on_disk && cpu_cost <= cpu_left {
                cpu_left -= cpu_cost;
                device[j] = Device::Cpu;
                if !gpus.is_empty() {
                    to_cpu.push((atoms[j].path.as_str(), why));
                }
            } else if weights[j] <= disk_left {
                if !on_disk {
                    decisions.push(format!(
                        "{} → disk: cpu had {} left, it needs {}",
                        atoms[j].path,
                        format_bytes(cpu_left),
                        format_bytes(cpu_cost)
                    ));
                }
                on_disk = true;
                disk_left -= weights[j];
                device[j] = Device::Disk;
            } else {
                return Err(Error::DoesNotFit {
                    unit: atoms[j].path.clone(),
                    needed: weights[j],
                    device: "disk".into(),
                    available: disk_left.max(cpu_left),
                });
            }
        }
        // One line per run of offloaded units with the same reason, after the split's line.
        let mut lines = Vec::new();
        let mut k = 0;
        while k < to_cpu.len() {
            let end = (k..to_cpu.len())
                .find(|&e| to_cpu[e].1 != to_cpu[k].1)
                .unwrap_or(to_cpu.len());
            let names = summarize_names(to_cpu[k..end].iter().map(|x| x.0));
            lines.push(format!(
                "{names} → cpu: the rest fills the GPUs ({})",
                to_cpu[k].1
            ));
            k = end;
        }
        let at = decisions.len().min(1);
        decisions.splice(at..at, lines);
        let units = atoms
            .iter()
            .zip(&device)
            .enumerate()
            .map(|(j, (a, &d))| Unit {
                path: a.path.clone(),
                tensors: a.tensors.clone(),
                bytes: match d {
                    Device::Cpu => weights_cpu[j],
                    Device::Gpu(_) => weights_gpu[j],
                    Device::Disk => weights[j],
                },
                kv_bytes: 0,
                device: d,
            })
            .collect();
        Ok((units, decisions))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The best worst ratio over every way to cut `costs` into `caps.len()` contiguous runs.
    fn brute(costs: &[u64], caps: &[u64]) -> Option<Ratio> {
        fn go(costs: &[u64], caps: &[u64], worst: Ratio) -> Option<Ratio> {
            match caps.split_first() {
                None => costs.is_empty().then_some(worst),
                Some((&cap, rest)) => (0..=costs.len())
                    .filter_map(|k| {
                        let r = Ratio::of(costs[..k].iter().sum(), cap);
                        if r == Ratio::INF {
                            return None;
                        }
                        go(&costs[k..], rest, worst.max(r))
                    })
                    .min(),
            }
        }
        go(costs, caps, Ratio::ZERO)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn split_is_optimal(
            costs in proptest::collection::vec(0u64..50, 0..9),
            caps in proptest::collection::vec(0u64..120, 1..4),
        ) {
            let got = split(&costs, &caps);
            let want = brute(&costs, &caps);
            prop_assert_eq!(got.as_ref().map(|g| g.1), want);
            prop_assert_eq!(got.is_some(), fits(costs.iter().copied(), &caps));
            if let Some((starts, worst)) = got {
                prop_assert_eq!(starts[0], 0);
                prop_assert_eq!(*starts.last().unwrap(), costs.len());
                for (g, &cap) in caps.iter().enumerate() {
                    let load: u64 = costs[starts[g]..starts[g + 1]].iter().sum();
                    prop_assert!(Ratio::of(load, cap) <= worst);
                }
            }
        }
    }

    #[test]
    fn unequal_gpus_get_proportional_shares() {
        let costs = vec![10u64; 12];
        let (starts, worst) = split(&costs, &[80, 40]).unwrap();
        assert_eq!(starts, vec![0, 8, 12]);
        assert_eq!(worst, Ratio::of(80, 80));
        let (starts, _) = split(&costs, &[200, 100]).unwrap();
        assert_eq!(starts, vec![0, 8, 12], "loads 80/200 and 40/100");
    }
}
