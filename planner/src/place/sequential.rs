//! `sequential`: fill GPU 0, then GPU 1, …, then cpu, then disk.
//!
//! Entries are taken in execution order. One that fits in what is left of the current device
//! goes there. One that does not is split into its children if it is a splittable module;
//! otherwise the fill moves on to the next device and never comes back (so the layers on each
//! device stay contiguous). When anything ends up offloaded, room for the largest offloaded
//! unit is kept free on GPU 0 (and on cpu when disk is used) so it can be brought in at run
//! time; when nothing is offloaded, nothing is reserved (Accelerate reserves it always and so
//! offloads models that would have fit, accelerate#3041).

use std::collections::VecDeque;

use super::{Entry, Placed, top_level};
use crate::budget::Budgets;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::inventory::Inventory;
use crate::placement::Unit;

pub(crate) fn place(inv: &Inventory, budgets: &Budgets, dtype: Option<DType>) -> Result<Placed> {
    let devices = budgets.devices();
    let first_gpu = devices.first().copied().filter(|d| d.is_gpu());
    let (mut reserve_gpu, mut reserve_cpu) = (0u64, 0u64);
    loop {
        let reserves = [(first_gpu, reserve_gpu), (Some(Device::Cpu), reserve_cpu)];
        let units = fill(inv, budgets, dtype, &devices, &reserves)?;
        let largest = |pred: &dyn Fn(Device) -> bool| {
            units
                .iter()
                .filter(|u| pred(u.device))
                .map(|u| u.bytes)
                .max()
                .unwrap_or(0)
        };
        let need_gpu = if first_gpu.is_some() {
            largest(&|d| !d.is_gpu())
        } else {
            0
        };
        let need_cpu = largest(&|d| d == Device::Disk);
        if need_gpu <= reserve_gpu && need_cpu <= reserve_cpu {
            let reserved = reserves
                .iter()
                .filter_map(|&(d, r)| Some((d?, r)))
                .filter(|&(_, r)| r > 0)
                .collect();
            return Ok(Placed { units, reserved });
        }
        // Reserves only grow, and are bounded by the largest unit: this terminates.
        reserve_gpu = reserve_gpu.max(need_gpu);
        reserve_cpu = reserve_cpu.max(need_cpu);
    }
}

fn fill(
    inv: &Inventory,
    budgets: &Budgets,
    dtype: Option<DType>,
    devices: &[Device],
    reserves: &[(Option<Device>, u64)],
) -> Result<Vec<Unit>> {
    let room = |d: Device| {
        let reserve: u64 = reserves
            .iter()
            .filter(|(r, _)| *r == Some(d))
            .map(|r| r.1)
            .sum();
        budgets.get(d).unwrap_or(0).saturating_sub(reserve)
    };
    let mut queue: VecDeque<Entry> = top_level(inv).into();
    let mut units = Vec::new();
    let mut current = 0usize;
    let mut used = vec![0u64; devices.len()];
    while let Some(entry) = queue.pop_front() {
        let bytes = entry.bytes(inv, dtype);
        loop {
            let Some(&device) = devices.get(current) else {
                let (best, free) = devices
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| (d, room(d).saturating_sub(used[i])))
                    .max_by_key(|&(_, free)| free)
                    .unwrap_or((Device::Disk, 0));
                return Err(Error::DoesNotFit {
                    unit: entry.path(inv),
                    needed: bytes,
                    device: best.to_string(),
                    available: free,
                });
            };
            if bytes <= room(device).saturating_sub(used[current]) {
                used[current] += bytes;
                units.push(entry.unit(inv, dtype, device));
                break;
            }
            if let Some(parts) = entry.split() {
                for part in parts.into_iter().rev() {
                    queue.push_front(part);
                }
                break;
            }
            current += 1;
        }
    }
    Ok(units)
}
