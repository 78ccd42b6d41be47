//! An explicit device map from the user: module prefix → device, checked rather than computed.
//!
//! Each tensor takes the device of the longest entry that is its name or a dotted prefix of it
//! (`""` covers everything). The map must cover every tensor, name nothing the model lacks,
//! keep each no-split unit and each tied pair on one device, and fit the budgets with the
//! same run-time room the strategies keep.

use super::{Ctx, Placed, with_offload_reserve};
use crate::device::Device;
use crate::device_map::DeviceMap;
use crate::error::{Error, Result};
use crate::placement::Unit;

pub(crate) fn place(ctx: &Ctx, map: &DeviceMap) -> Result<Placed> {
    let inv = ctx.inv;
    // Each tensor's entry: the longest matching prefix.
    let mut entry_of = vec![None::<usize>; inv.tensors.len()];
    let mut used_entries = vec![false; map.entries.len()];
    for (i, t) in inv.tensors.iter().enumerate() {
        let best = map
            .entries
            .iter()
            .enumerate()
            .filter(|(_, (k, _))| {
                k.is_empty() || t.name == *k || t.name.starts_with(&format!("{k}."))
            })
            .max_by_key(|(_, (k, _))| k.len());
        match best {
            Some((e, _)) => {
                entry_of[i] = Some(e);
                used_entries[e] = true;
            }
            None => {
                return Err(Error::MapIncomplete {
                    tensor: t.name.clone(),
                    module: t.module().to_string(),
                });
            }
        }
    }
    if let Some(e) = used_entries.iter().position(|u| !u) {
        return Err(Error::MapUnknownEntry {
            entry: map.entries[e].0.clone(),
        });
    }
    let device_of = |i: usize| map.entries[entry_of[i].expect("covered")].1;
    for (_, device) in &map.entries {
        if ctx.budgets.get(*device).is_none() {
            return Err(Error::MapUnknownDevice {
                device: device.to_string(),
            });
        }
    }
    let mut problem = None;
    inv.root.walk(&mut |m| {
        if m.no_split && problem.is_none() {
            let mut devices: Vec<Device> = m.all_tensors().into_iter().map(device_of).collect();
            devices.sort();
            devices.dedup();
            if devices.len() > 1 {
                let names: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
                problem = Some(Error::MapSplitsUnit {
                    unit: m.path.clone(),
                    devices: names.join(", "),
                });
            }
        }
    });
    if let Some(e) = problem {
        return Err(e);
    }
    for (i, t) in inv.tensors.iter().enumerate() {
        if let Some(owner) = t.tied_to.as_deref().and_then(|o| inv.find(o))
            && device_of(i) != device_of(owner)
        {
            return Err(Error::MapSeparatesTie {
                tensor: t.name.clone(),
                device: device_of(i).to_string(),
                owner: inv.tensors[owner].name.clone(),
                owner_device: device_of(owner).to_string(),
            });
        }
    }
    // Units: one per entry, holding the tensors it claims.
    let units: Vec<Unit> = map
        .entries
        .iter()
        .enumerate()
        .map(|(e, (path, device))| {
            let tensors: Vec<usize> = (0..inv.tensors.len())
                .filter(|&i| entry_of[i] == Some(e))
                .collect();
            let bytes = tensors.iter().map(|&i| ctx.tensor_on(i, *device)).sum();
            Unit {
                path: path.clone(),
                tensors,
                bytes,
                kv_bytes: 0,
                device: *device,
            }
        })
        .collect();
    for device in ctx.devices() {
        let here = units.iter().filter(|u| u.device == device);
        let weights: u64 = here.clone().map(|u| u.bytes).sum();
        let kv: u64 = if device == Device::Disk {
            0
        } else {
            here.map(|u| ctx.runtime.kv_under(&u.path))
                .fold(0, u64::saturating_add)
        };
        let fixed = if weights > 0 {
            ctx.fixed_reserve(device)
        } else {
            0
        };
        let budget = ctx.budgets.get(device).unwrap_or(0);
        // Saturating: a run-time room from absurd options (`max_seq_len` of 2^64 - 1) is
        // over any budget, not an overflow.
        let needed = weights.saturating_add(kv).saturating_add(fixed);
        if needed > budget {
            return Err(Error::MapOverBudget {
                device: ctx.budgets.label(device),
                needed,
                weights,
                budget,
            });
        }
    }
    // Reserves are reported as far as the budgets allow; the map itself is the user's.
    let mut placed = with_offload_reserve(ctx, |_| Ok((units.clone(), Vec::new())))?;
    placed
        .decisions
        .push("placement given by an explicit device map".into());
    Ok(placed)
}
