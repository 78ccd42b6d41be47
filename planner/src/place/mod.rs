//! The placement algorithms, one file per strategy. Each returns units in execution order,
//! the room it reserved for offloading, and the decisions worth explaining;
//! [`crate::plan`] assembles the [`crate::Plan`].
//!
//! Stowage's own strategies share one cost model ([`Ctx`]): a unit costs its weights plus,
//! on any device but disk, the KV cache of the layers in it; each GPU keeps room for its
//! overhead and activations (cpu does, when there is no GPU); and when anything is offloaded,
//! room for the largest offloaded unit stays free on the execution device ([`with_offload_reserve`]).

pub(crate) mod accelerate;
pub(crate) mod balanced;
pub(crate) mod explicit;
pub(crate) mod optimal;
pub(crate) mod sequential;

use crate::budget::Budgets;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::inventory::{Inventory, Module};
use crate::placement::Unit;
use crate::quantize::{Quantize, QuantizeModule, quantize_for};
use crate::runtime::RuntimeCosts;
use crate::tensor::TensorInfo;
use crate::units::format_bytes;

/// Units and reserves chosen by a strategy.
#[derive(Debug, Default)]
pub(crate) struct Placed {
    pub units: Vec<Unit>,
    /// Offload reserves: room kept free to bring offloaded units in.
    pub reserved: Vec<(Device, u64)>,
    /// One line per decision a user could question.
    pub decisions: Vec<String>,
    /// The exact device map to report, when the strategy's keys are not simply the merge of
    /// where each tensor goes (Accelerate's map names parameterless modules too).
    pub device_map: Option<Vec<(String, Device)>>,
}

/// Something that can be placed: a module (whole, or split into its parts) or one tensor.
#[derive(Clone, Copy)]
pub(crate) enum Entry<'a> {
    Module(&'a Module),
    Tensor(usize),
}

impl<'a> Entry<'a> {
    pub fn bytes(self, inv: &Inventory, dtype: Option<DType>) -> u64 {
        match self {
            Entry::Module(m) => inv.module_bytes(m, dtype),
            Entry::Tensor(i) => inv.tensor_bytes(i, dtype),
        }
    }

    pub fn path(self, inv: &Inventory) -> String {
        match self {
            Entry::Module(m) => m.path.clone(),
            Entry::Tensor(i) => inv.tensors[i].name.clone(),
        }
    }

    pub fn tensors(self) -> Vec<usize> {
        match self {
            Entry::Module(m) => m.all_tensors(),
            Entry::Tensor(i) => vec![i],
        }
    }

    /// Whether this is a no-split unit.
    pub fn no_split(self) -> bool {
        matches!(self, Entry::Module(m) if m.no_split)
    }

    /// The parts a module splits into: its own tensors, then its children. `None` for a
    /// tensor, a no-split unit, or a module with nothing below it.
    pub fn split(self) -> Option<Vec<Entry<'a>>> {
        match self {
            Entry::Module(m) if !m.no_split && (m.children.len() + m.tensors.len()) > 1 => Some(
                m.tensors
                    .iter()
                    .map(|&i| Entry::Tensor(i))
                    .chain(m.children.iter().map(Entry::Module))
                    .collect(),
            ),
            Entry::Module(m) if !m.no_split && m.children.len() == 1 => {
                Some(vec![Entry::Module(&m.children[0])])
            }
            _ => None,
        }
    }

    pub fn unit(self, inv: &Inventory, dtype: Option<DType>, device: Device) -> Unit {
        Unit {
            path: self.path(inv),
            tensors: self.tensors(),
            bytes: self.bytes(inv, dtype),
            kv_bytes: 0,
            device,
        }
    }
}

/// The top-level entries of an inventory: the root's parts.
pub(crate) fn top_level(inv: &Inventory) -> Vec<Entry<'_>> {
    Entry::Module(&inv.root)
        .split()
        .unwrap_or_else(|| vec![Entry::Module(&inv.root)])
}

/// The leaves placement can never split: no-split units, and tensors outside any unit, in
/// execution order.
pub(crate) fn atoms(inv: &Inventory) -> Vec<Entry<'_>> {
    fn walk<'a>(e: Entry<'a>, out: &mut Vec<Entry<'a>>) {
        match e.split() {
            Some(parts) => parts.into_iter().for_each(|p| walk(p, out)),
            None => out.push(e),
        }
    }
    let mut out = Vec::new();
    walk(Entry::Module(&inv.root), &mut out);
    out
}

/// Sizes of the tensors as one kind of device stores them: prefix sums (so any module's bytes
/// are one subtraction, tensors being numbered depth first) and, per tensor, the bytes of the
/// atom holding it (what must be brought in at once when it runs offloaded).
struct Sizing {
    prefix: Vec<u64>,
    atom: Vec<u64>,
}

impl Sizing {
    fn new(inv: &Inventory, size: impl Fn(&crate::tensor::TensorInfo) -> u64) -> Sizing {
        let mut prefix = Vec::with_capacity(inv.tensors.len() + 1);
        prefix.push(0u64);
        for t in &inv.tensors {
            let last = *prefix.last().expect("starts with 0");
            prefix.push(last.saturating_add(size(t)));
        }
        let mut atom = vec![0u64; inv.tensors.len()];
        for a in atoms(inv) {
            let range = match a {
                Entry::Module(m) => m.range.clone(),
                Entry::Tensor(i) => i..i + 1,
            };
            let bytes = prefix[range.end] - prefix[range.start];
            atom[range].fill(bytes);
        }
        Sizing { prefix, atom }
    }

    fn of(&self, e: Entry) -> u64 {
        let range = match e {
            Entry::Module(m) => m.range.clone(),
            Entry::Tensor(i) => i..i + 1,
        };
        self.prefix[range.end] - self.prefix[range.start]
    }
}

/// How each kind of device holds what is placed on it, where that differs from the sizing
/// dtype: floats on cpu and on GPUs, and linear-layer weights quantized on GPUs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Held {
    /// The dtype the CPU backend stores floats in (`None`: as on other devices).
    pub cpu_float: Option<DType>,
    /// The dtype GPUs hold floats in (`None`: as the sizing dtype says).
    pub gpu_float: Option<DType>,
    /// The quantization GPUs hold linear-layer weights in.
    pub quantize: Quantize,
    /// Per-module precisions over `quantize`.
    pub modules: Vec<QuantizeModule>,
}

/// What a plan is computed against: the inventory, the budgets, the sizing dtype and the
/// run-time room.
pub(crate) struct Ctx<'a> {
    pub inv: &'a Inventory,
    pub budgets: &'a Budgets,
    pub runtime: &'a RuntimeCosts,
    /// Sizes on GPUs and disk: floats as `dtype` asks.
    device: Sizing,
    /// Sizes on cpu: floats as the CPU backend stores them, when that differs.
    cpu: Option<Sizing>,
    /// Sizes on GPUs when they hold floats in another dtype, or quantize linear-layer weights.
    gpu: Option<Sizing>,
}

/// Bytes of `t` held with floats as `float`, other tensors as `dtype` sizes them.
fn held_as(t: &TensorInfo, float: DType, dtype: Option<DType>) -> u64 {
    match t.tied_to {
        Some(_) => 0,
        None if t.dtype.is_float() => float.bytes_for(t.elems()).unwrap_or(u64::MAX),
        None => t.bytes_as(dtype),
    }
}

impl<'a> Ctx<'a> {
    /// `held`: how cpu and GPUs hold what is placed on them, where it differs from `dtype`.
    pub fn new(
        inv: &'a Inventory,
        budgets: &'a Budgets,
        dtype: Option<DType>,
        held: Held,
        runtime: &'a RuntimeCosts,
    ) -> Self {
        let Held {
            cpu_float,
            gpu_float,
            quantize,
            modules,
        } = held;
        let device = Sizing::new(inv, |t| inv.bytes_of(t, dtype));
        let cpu = cpu_float.map(|f| Sizing::new(inv, |t| held_as(t, f, dtype)));
        let quantizes = !quantize.is_none() || !modules.is_empty();
        let gpu = (quantizes || gpu_float.is_some()).then(|| {
            Sizing::new(inv, |t| {
                let q = quantize_for(quantize, &modules, t);
                match gpu_float {
                    _ if q.applies_to(t) => q.tensor_bytes(t, dtype),
                    Some(f) => held_as(t, f, dtype),
                    None => inv.bytes_of(t, dtype),
                }
            })
        });
        Ctx {
            inv,
            budgets,
            runtime,
            device,
            cpu,
            gpu,
        }
    }

    fn sizing(&self, device: Device) -> &Sizing {
        match (device, &self.cpu, &self.gpu) {
            (Device::Cpu, Some(cpu), _) => cpu,
            (Device::Gpu(_), _, Some(gpu)) => gpu,
            _ => &self.device,
        }
    }

    pub fn devices(&self) -> Vec<Device> {
        self.budgets.devices()
    }

    pub fn has_gpu(&self) -> bool {
        !self.budgets.gpus.is_empty()
    }

    /// The device offloaded units are brought to when they run: GPU 0, else cpu.
    pub fn exec_device(&self) -> Device {
        self.budgets
            .gpus
            .first()
            .map_or(Device::Cpu, |g| Device::Gpu(g.index))
    }

    /// Bytes of tensor `i` on `device`.
    pub fn tensor_on(&self, i: usize, device: Device) -> u64 {
        self.weights_on(Entry::Tensor(i), device)
    }

    /// Bytes of `e`'s weights on `device` (cpu may store floats wider).
    pub fn weights_on(&self, e: Entry, device: Device) -> u64 {
        self.sizing(device).of(e)
    }

    /// The largest atom in `unit`, sized as on `device`: the most that must be brought in at
    /// once to run it there.
    pub fn largest_atom(&self, unit: &Unit, on: Device) -> u64 {
        let atom = &self.sizing(on).atom;
        unit.tensors.iter().map(|&t| atom[t]).max().unwrap_or(0)
    }

    pub fn kv(&self, e: Entry) -> u64 {
        match e {
            Entry::Module(m) => self.runtime.kv_under(&m.path),
            Entry::Tensor(_) => 0,
        }
    }

    /// What `e` takes on `device`: its weights, plus its KV cache unless on disk.
    pub fn cost(&self, e: Entry, device: Device) -> u64 {
        let kv = if device == Device::Disk {
            0
        } else {
            self.kv(e)
        };
        self.weights_on(e, device).saturating_add(kv)
    }

    /// Room a device keeps for running the model: overhead and activations on GPUs, and
    /// activations on cpu when there is no GPU.
    pub fn fixed_reserve(&self, device: Device) -> u64 {
        match device {
            Device::Gpu(_) => self
                .runtime
                .gpu_overhead_bytes
                .saturating_add(self.runtime.activation_bytes),
            Device::Cpu if !self.has_gpu() => self.runtime.activation_bytes,
            _ => 0,
        }
    }

    /// The budget left for units on `device` once fixed and offload reserves are taken.
    pub fn capacity(&self, device: Device, reserves: &Reserves) -> u64 {
        self.budgets
            .get(device)
            .unwrap_or(0)
            .saturating_sub(self.fixed_reserve(device))
            .saturating_sub(reserves.on(device))
    }
}

/// Offload reserves: on the execution device, the largest offloaded atom; on cpu, the
/// largest atom on disk and the KV cache of the layers on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Reserves {
    pub exec: (Option<Device>, u64),
    pub cpu: u64,
}

impl Reserves {
    pub fn on(&self, device: Device) -> u64 {
        let mut r = 0;
        if self.exec.0 == Some(device) {
            r = self.exec.1;
        }
        if device == Device::Cpu {
            r = u64::saturating_add(r, self.cpu);
        }
        r
    }

    fn grow_to(&self, other: &Reserves) -> Reserves {
        Reserves {
            exec: (other.exec.0, self.exec.1.max(other.exec.1)),
            cpu: self.cpu.max(other.cpu),
        }
    }
}

/// Runs `attempt` with growing offload reserves until the reserves it needs are the ones it
/// was given. Nothing offloaded, nothing reserved.
pub(crate) fn with_offload_reserve(
    ctx: &Ctx,
    mut attempt: impl FnMut(&Reserves) -> Result<(Vec<Unit>, Vec<String>)>,
) -> Result<Placed> {
    let exec = ctx.exec_device();
    let mut reserves = Reserves {
        exec: (Some(exec), 0),
        cpu: 0,
    };
    loop {
        let (units, decisions) = attempt(&reserves)?;
        let offloaded = |u: &&Unit| {
            if exec == Device::Cpu {
                u.device == Device::Disk
            } else {
                !u.device.is_gpu()
            }
        };
        let need_exec = units
            .iter()
            .filter(offloaded)
            .map(|u| ctx.largest_atom(u, exec))
            .max()
            .unwrap_or(0);
        let on_disk = || units.iter().filter(|u| u.device == Device::Disk);
        let largest_disk = on_disk()
            .map(|u| ctx.largest_atom(u, Device::Cpu))
            .max()
            .unwrap_or(0);
        let disk_kv: u64 = on_disk()
            .map(|u| ctx.runtime.kv_under(&u.path))
            .fold(0, u64::saturating_add);
        // With no GPU the execution device is cpu: one reserve covers both needs.
        let need = if exec == Device::Cpu {
            Reserves {
                exec: (Some(exec), 0),
                cpu: largest_disk.saturating_add(disk_kv),
            }
        } else {
            Reserves {
                exec: (Some(exec), need_exec),
                cpu: largest_disk.saturating_add(disk_kv),
            }
        };
        let grown = reserves.grow_to(&need);
        if grown == reserves {
            let mut reserved = Vec::new();
            if reserves.exec.1 > 0 {
                reserved.push((exec, reserves.exec.1));
            }
            if reserves.cpu > 0 {
                reserved.push((Device::Cpu, reserves.cpu));
            }
            return Ok(Placed {
                units,
                reserved,
                decisions,
                device_map: None,
            });
        }
        // Reserves only grow, and are bounded by the model's size: this terminates.
        reserves = grown;
    }
}

/// Whether `costs`, in order, fit as contiguous runs into `caps`, in order (filling each as
/// far as it goes, which finds a fit whenever one exists).
pub(crate) fn fits(costs: impl Iterator<Item = u64>, caps: &[u64]) -> bool {
    let (mut gpu, mut used) = (0usize, 0u64);
    for c in costs {
        while gpu < caps.len() && used.saturating_add(c) > caps[gpu] {
            gpu += 1;
            used = 0;
        }
        if gpu == caps.len() {
            return false;
        }
        used = used.saturating_add(c);
    }
    true
}

/// Fills `devices` in order with `entries` (see [`sequential`]) within `capacity`, splitting
/// modules that do not fit where the fill has reached.
pub(crate) fn fill(
    ctx: &Ctx,
    entries: Vec<Entry>,
    capacity: &dyn Fn(Device) -> u64,
) -> Result<(Vec<Unit>, Vec<String>)> {
    let devices = ctx.devices();
    let mut queue: std::collections::VecDeque<Entry> = entries.into();
    let mut units = Vec::new();
    let mut decisions = Vec::new();
    let mut current = 0usize;
    let mut used = vec![0u64; devices.len()];
    while let Some(entry) = queue.pop_front() {
        loop {
            let Some(&device) = devices.get(current) else {
                let (best, free) = devices
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| (d, capacity(d).saturating_sub(used[i])))
                    .max_by_key(|&(_, free)| free)
                    .unwrap_or((Device::Disk, 0));
                return Err(Error::DoesNotFit {
                    unit: entry.path(ctx.inv),
                    needed: ctx.cost(entry, Device::Disk),
                    device: best.to_string(),
                    available: free,
                });
            };
            let cost = ctx.cost(entry, device);
            let free = capacity(device).saturating_sub(used[current]);
            if cost <= free {
                used[current] += cost;
                units.push(Unit {
                    path: entry.path(ctx.inv),
                    tensors: entry.tensors(),
                    bytes: ctx.weights_on(entry, device),
                    kv_bytes: 0,
                    device,
                });
                break;
            }
            if let Some(parts) = entry.split() {
                for part in parts.into_iter().rev() {
                    queue.push_front(part);
                }
                break;
            }
            if let Some(next) = devices.get(current + 1) {
                decisions.push(format!(
                    "{} → {next}: {} had {} left, it needs {}",
                    entry.path(ctx.inv),
                    ctx.budgets.label(device),
                    format_bytes(free),
                    format_bytes(cost)
                ));
            }
            current += 1;
        }
    }
    Ok((units, decisions))
}

#[cfg(test)]
mod tests;
