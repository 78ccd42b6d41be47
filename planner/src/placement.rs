//! A plan: which device each unit and each tensor goes to, and how full each device is.
//!
//! [`plan`] is a pure function of an [`Inventory`], [`Budgets`] and [`PlanOptions`]: it
//! measures nothing. Tied tensors count once and always land with their owner.

use crate::budget::Budgets;
use crate::device::Device;
use crate::device_map::DeviceMap;
use crate::dtype::DType;
use crate::error::Result;
use crate::inventory::Inventory;
use crate::place::{self, Ctx, Held};
use crate::quantize::{Quantize, QuantizeAs, QuantizeModule, quantize_for};
use crate::runtime::{RuntimeCosts, RuntimeOptions};
use crate::strategy::{Compat, OffloadOrder, Strategy};
use crate::tensor::TensorInfo;

/// What to plan for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// The placement strategy.
    pub strategy: Strategy,
    /// The dtype to size floating tensors with (see [`DType::sized_as`]); `None` means `auto`:
    /// the inventory's [`Inventory::auto_dtype`].
    pub dtype: Option<DType>,
    /// Whose semantics to follow: stowage's (default) or Accelerate's, quirks included.
    pub compat: Compat,
    /// Which units leave the GPUs first when the model does not fit on them
    /// ([`Strategy::Optimal`] only).
    pub offload_order: OffloadOrder,
    /// Run-time room to keep: KV cache, activations, GPU overhead. Ignored (all zero) with
    /// [`Compat::Accelerate`].
    pub runtime: RuntimeOptions,
    /// An explicit device map to check and use instead of a strategy.
    pub device_map: Option<DeviceMap>,
    /// The dtype the CPU backend stores floats in, to size what is placed on cpu (stowage's
    /// CPU backend, burn-ndarray, stores f32: a bf16 tensor takes twice its checkpoint size
    /// there). `None` sizes cpu like the other devices. Ignored with [`Compat::Accelerate`].
    pub cpu_float: Option<DType>,
    /// The dtype GPU-placed floats are held in. `None` sizes them by `dtype`, the narrower of
    /// stored and asked, as on disk; `Some(F32)` sizes the floats of a bf16 or f16 checkpoint
    /// as f32 on the GPUs (the loader widens them there, on the device). Linear-layer weights
    /// quantized at load keep their quantized size. Ignored (with a note) with
    /// [`Compat::Accelerate`].
    pub gpu_float: Option<DType>,
    /// Quantization applied at load to linear-layer weights on GPUs (see [`Quantize`]):
    /// those are sized as the kernels store them, values plus scales. cpu and disk keep
    /// their sizing. Ignored (with a note) with [`Compat::Accelerate`].
    pub quantize: Quantize,
    /// Per-module precisions overriding [`Self::quantize`] for the linear weights of the
    /// modules they match (the first matching rule wins; see [`QuantizeModule`]), e.g. int4
    /// everywhere but the MLP's up-projection in int8. Sized as [`Self::quantize_for`] says.
    pub quantize_modules: Vec<QuantizeModule>,
}

/// `int4 (groups of 32)`, with the per-module rules after it: `int4 (groups of 32), value=int8`.
pub fn quantize_summary(opts: &PlanOptions) -> String {
    let mut s = opts.quantize.to_string();
    for m in &opts.quantize_modules {
        s.push_str(&format!(", {m}"));
    }
    s
}

impl PlanOptions {
    /// The quantization the loader applies to `t` on a GPU: [`quantize_for`] with
    /// [`Self::quantize`] and [`Self::quantize_modules`].
    pub fn quantize_for(&self, t: &TensorInfo) -> Quantize {
        quantize_for(self.quantize, &self.quantize_modules, t)
    }

    /// Whether any weight may be quantized ([`Self::quantize`] or a rule that quantizes).
    pub fn quantizes(&self) -> bool {
        !self.quantize.is_none()
            || self
                .quantize_modules
                .iter()
                .any(|m| m.quantize != QuantizeAs::Keep)
    }
}

/// A placed unit: a module placed whole, or a single tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Module path or tensor name.
    pub path: String,
    /// Indices into [`Inventory::tensors`].
    pub tensors: Vec<usize>,
    /// Bytes of weights it takes (tied tensors count zero).
    pub bytes: u64,
    /// Bytes of KV cache its layers need where it runs (zero on disk: see [`DeviceUsage`]).
    pub kv_bytes: u64,
    /// Where it goes.
    pub device: Device,
}

/// How one device is used by a plan: its budget and the line items that add up to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceUsage {
    /// The device.
    pub device: Device,
    /// Its display name (GPU model, `cpu`, `disk`).
    pub name: String,
    /// Its budget.
    pub budget_bytes: u64,
    /// Weights placed on it.
    pub used_bytes: u64,
    /// KV cache of the layers on it (on cpu, also that of the layers on disk).
    pub kv_cache_bytes: u64,
    /// Peak activations (GPUs holding weights; cpu when there is no GPU).
    pub activation_bytes: u64,
    /// CUDA context and allocator slack (GPUs holding weights).
    pub overhead_bytes: u64,
    /// Room kept free to bring in the largest offloaded unit (the execution device, and cpu
    /// when disk is used); zero when nothing is offloaded.
    pub reserved_bytes: u64,
}

impl DeviceUsage {
    /// Budget left after every line item.
    pub fn free_bytes(&self) -> u64 {
        self.budget_bytes.saturating_sub(self.committed_bytes())
    }

    /// Everything the plan commits on this device.
    pub fn committed_bytes(&self) -> u64 {
        self.used_bytes
            + self.kv_cache_bytes
            + self.activation_bytes
            + self.overhead_bytes
            + self.reserved_bytes
    }
}

/// The result of [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The options it was made with (`dtype` resolved).
    pub options: PlanOptions,
    /// The strategy used.
    pub strategy: Strategy,
    /// The dtype tensors were sized with (`None`: as stored).
    pub dtype: Option<DType>,
    /// Units in execution order.
    pub units: Vec<Unit>,
    /// Every device in placement order, used or not.
    pub devices: Vec<DeviceUsage>,
    /// The device of each tensor of the inventory, by index.
    pub tensor_devices: Vec<Device>,
    /// Bytes of the whole model's weights.
    pub total_bytes: u64,
    /// One line per decision a user could question (`--explain`).
    pub decisions: Vec<String>,
    /// Things the user should know about the plan (e.g. no run-time reserve computed).
    pub notes: Vec<String>,
    /// The map to report when it is not the merge of the tensors' devices (`--compat
    /// accelerate` writes Accelerate's keys, parameterless modules included).
    pub exact_map: Option<DeviceMap>,
}

impl Plan {
    /// Bytes of weights placed on `device`.
    pub fn used_on(&self, device: Device) -> u64 {
        self.devices
            .iter()
            .find(|d| d.device == device)
            .map_or(0, |d| d.used_bytes)
    }

    /// Bytes not on a GPU (on cpu or disk) when there are GPUs; bytes on disk otherwise.
    pub fn offloaded_bytes(&self) -> u64 {
        let has_gpu = self.devices.iter().any(|d| d.device.is_gpu());
        self.devices
            .iter()
            .filter(|d| {
                if has_gpu {
                    !d.device.is_gpu()
                } else {
                    d.device == Device::Disk
                }
            })
            .map(|d| d.used_bytes)
            .sum()
    }

    /// The largest load on a GPU (weights and KV cache) relative to the room it had for
    /// them (budget less overhead, activations and reserve); 0 with no GPU.
    pub fn max_gpu_load(&self) -> f64 {
        self.devices
            .iter()
            .filter(|d| d.device.is_gpu() && d.used_bytes > 0)
            .map(|d| {
                let room =
                    d.budget_bytes - d.activation_bytes - d.overhead_bytes - d.reserved_bytes;
                (d.used_bytes + d.kv_cache_bytes) as f64 / room.max(1) as f64
            })
            .fold(0.0, f64::max)
    }

    /// The Hugging Face `device_map`, merged to the coarsest modules lying wholly on one device.
    pub fn device_map(&self, inventory: &Inventory) -> DeviceMap {
        match &self.exact_map {
            Some(map) => map.clone(),
            None => DeviceMap::from_tensor_devices(inventory, &self.tensor_devices),
        }
    }
}

/// Places every tensor of `inventory` within `budgets`.
///
/// ```
/// use stowage_planner::*;
/// let t = |name: &str| TensorInfo {
///     name: name.into(), dtype: DType::F32, shape: vec![256],
///     source: TensorSource::Config, tied_to: None,
/// };
/// let names = ["embed.weight", "layers.0.w", "layers.1.w", "layers.2.w", "head.weight"];
/// let inv = Inventory::from_tensors(names.map(t).to_vec(), None, &Default::default())?;
/// let budgets = Budgets { gpus: vec![], cpu_bytes: 4096, disk_bytes: 1 << 20 }
///     .with_max_memory(&[(Device::Gpu(0), 2048)]);
/// let opts = PlanOptions {
///     strategy: Strategy::Sequential,
///     runtime: RuntimeOptions::off(),
///     ..Default::default()
/// };
/// let plan = plan(&inv, &budgets, &opts)?;
/// let map = plan.device_map(&inv);
/// assert_eq!(map.get("embed"), Some(Device::Gpu(0)));
/// assert_eq!(map.get("head"), Some(Device::Cpu));
/// # Ok::<(), Error>(())
/// ```
pub fn plan(inventory: &Inventory, budgets: &Budgets, opts: &PlanOptions) -> Result<Plan> {
    let dtype = opts.dtype.or(inventory.auto_dtype);
    let mut options = opts.clone();
    options.dtype = dtype;
    if opts.compat == Compat::Accelerate {
        options.runtime = RuntimeOptions::off();
        // Accelerate sizes GPUs its own way: the loader must hold floats as planned.
        options.gpu_float = None;
    }
    let runtime = RuntimeCosts::estimate(inventory, dtype, &options.runtime);
    let cpu_float = if opts.compat == Compat::Accelerate {
        None
    } else {
        opts.cpu_float
    };
    let (quantize, modules) = match opts.compat {
        Compat::Accelerate => (Quantize::None, Vec::new()),
        Compat::Stowage => (opts.quantize, opts.quantize_modules.clone()),
    };
    let quantizes = !quantize.is_none() || modules.iter().any(|m| m.quantize != QuantizeAs::Keep);
    let held = Held {
        cpu_float,
        gpu_float: options.gpu_float,
        quantize,
        modules: modules.clone(),
    };
    let ctx = Ctx::new(inventory, budgets, dtype, held, &runtime);
    let placed = match (opts.compat, opts.strategy) {
        _ if opts.device_map.is_some() => {
            place::explicit::place(&ctx, opts.device_map.as_ref().expect("checked"))?
        }
        (Compat::Accelerate, strategy) => {
            place::accelerate::place(inventory, budgets, dtype, strategy)?
        }
        (Compat::Stowage, Strategy::Sequential) => place::sequential::place(&ctx)?,
        (Compat::Stowage, Strategy::Balanced) => place::balanced::place(&ctx, false)?,
        (Compat::Stowage, Strategy::BalancedLow0) => place::balanced::place(&ctx, true)?,
        (Compat::Stowage, Strategy::Optimal) => place::optimal::place(&ctx, opts.offload_order)?,
    };
    let mut tensor_devices = vec![Device::Disk; inventory.tensors.len()];
    for unit in &placed.units {
        for &i in &unit.tensors {
            tensor_devices[i] = unit.device;
        }
    }
    // Tied tensors go where their owner goes.
    let mut units = placed.units;
    for (i, t) in inventory.tensors.iter().enumerate() {
        if let Some(owner) = t.tied_to.as_deref().and_then(|o| inventory.find(o)) {
            tensor_devices[i] = tensor_devices[owner];
        }
    }
    for unit in &mut units {
        let all_tied = unit
            .tensors
            .iter()
            .all(|&i| inventory.tensors[i].tied_to.is_some());
        if all_tied && let Some(&first) = unit.tensors.first() {
            unit.device = tensor_devices[first];
        }
        unit.kv_bytes = runtime.kv_under(&unit.path);
    }
    let has_gpu = !budgets.gpus.is_empty();
    let devices = budgets
        .devices()
        .into_iter()
        .map(|device| {
            let budget_bytes = budgets.get(device).unwrap_or(0);
            let here = || units.iter().filter(|u| u.device == device);
            let used_bytes: u64 = here().map(|u| u.bytes).sum();
            let mut kv_cache_bytes: u64 = match device {
                Device::Disk => 0,
                _ => here().map(|u| u.kv_bytes).fold(0, u64::saturating_add),
            };
            let reserve = placed
                .reserved
                .iter()
                .find(|(d, _)| *d == device)
                .map_or(0, |r| r.1);
            if device == Device::Cpu {
                // The KV cache of layers on disk lives in RAM; it is part of cpu's reserve.
                let disk_kv: u64 = units
                    .iter()
                    .filter(|u| u.device == Device::Disk)
                    .map(|u| u.kv_bytes)
                    .fold(0, u64::saturating_add);
                kv_cache_bytes = kv_cache_bytes.saturating_add(disk_kv);
            }
            let disk_kv_in_reserve = if device == Device::Cpu {
                units
                    .iter()
                    .filter(|u| u.device == Device::Disk)
                    .map(|u| u.kv_bytes)
                    .fold(0, u64::saturating_add)
            } else {
                0
            };
            let busy = used_bytes > 0 || reserve > 0;
            let (activation_bytes, overhead_bytes) = match device {
                Device::Gpu(_) if busy => (runtime.activation_bytes, runtime.gpu_overhead_bytes),
                Device::Cpu if !has_gpu && busy => (runtime.activation_bytes, 0),
                _ => (0, 0),
            };
            // Line items are clamped to the budget: a device smaller than its reserves holds
            // nothing and keeps all it has.
            let mut left = budget_bytes.saturating_sub(used_bytes.saturating_add(kv_cache_bytes));
            let mut take = |x: u64| {
                let t = x.min(left);
                left -= t;
                t
            };
            let activation_bytes = take(activation_bytes);
            let overhead_bytes = take(overhead_bytes);
            let reserved_bytes = take(reserve.saturating_sub(disk_kv_in_reserve));
            DeviceUsage {
                device,
                name: budgets.name(device),
                budget_bytes,
                used_bytes,
                kv_cache_bytes,
                activation_bytes,
                overhead_bytes,
                reserved_bytes,
            }
        })
        .collect();
    let mut notes: Vec<String> = runtime.note.iter().cloned().collect();
    if opts.compat == Compat::Accelerate && opts.quantizes() {
        notes.push(format!(
            "quantization ({}) is ignored with --compat accelerate",
            quantize_summary(opts)
        ));
    }
    if let (Compat::Accelerate, Some(f)) = (opts.compat, opts.gpu_float) {
        notes.push(format!(
            "--gpu-float {} is ignored with --compat accelerate",
            f.as_str().to_ascii_lowercase()
        ));
    }
    // Accelerate sizes what it places its own way (buffers, the model's dtype); quantized
    // weights count as the GPUs hold them.
    let total_bytes = match opts.compat {
        Compat::Accelerate => units.iter().map(|u| u.bytes).sum(),
        _ if quantizes => inventory
            .tensors
            .iter()
            .map(|t| match quantize_for(quantize, &modules, t) {
                q if q.applies_to(t) => q.tensor_bytes(t, dtype),
                _ => inventory.bytes_of(t, dtype),
            })
            .fold(0, u64::saturating_add),
        _ => inventory.total_bytes(dtype),
    };
    Ok(Plan {
        options,
        strategy: opts.strategy,
        dtype,
        units,
        devices,
        tensor_devices,
        // Accelerate sizes what it places its own way (buffers, the model's dtype).
        total_bytes,
        decisions: placed.decisions,
        notes,
        exact_map: placed.device_map.map(|entries| DeviceMap { entries }),
    })
}
