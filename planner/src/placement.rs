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
use crate::place;
use crate::strategy::Strategy;

/// What to plan for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// The placement strategy.
    pub strategy: Strategy,
    /// The dtype to size floating tensors with (see [`DType::sized_as`]); `None` means `auto`:
    /// the inventory's [`Inventory::auto_dtype`].
    pub dtype: Option<DType>,
}

/// A placed unit: a module placed whole, or a single tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Module path or tensor name.
    pub path: String,
    /// Indices into [`Inventory::tensors`].
    pub tensors: Vec<usize>,
    /// Bytes it takes (tied tensors count zero).
    pub bytes: u64,
    /// Where it goes.
    pub device: Device,
}

/// How one device is used by a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceUsage {
    /// The device.
    pub device: Device,
    /// Its display name (GPU model, `cpu`, `disk`).
    pub name: String,
    /// Its budget.
    pub budget_bytes: u64,
    /// Bytes placed on it.
    pub used_bytes: u64,
    /// Room kept free to bring in the largest offloaded unit at run time (GPU 0, and cpu when
    /// disk is used); zero when nothing is offloaded.
    pub reserved_bytes: u64,
}

/// The result of [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
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
    /// Bytes of the whole model.
    pub total_bytes: u64,
}

impl Plan {
    /// Bytes placed on `device`.
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

    /// The Hugging Face `device_map`, merged to the coarsest modules lying wholly on one device.
    pub fn device_map(&self, inventory: &Inventory) -> DeviceMap {
        DeviceMap::from_tensor_devices(inventory, &self.tensor_devices)
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
/// let plan = plan(&inv, &budgets, &PlanOptions::default())?;
/// let map = plan.device_map(&inv);
/// assert_eq!(map.get("embed"), Some(Device::Gpu(0)));
/// assert_eq!(map.get("head"), Some(Device::Cpu));
/// # Ok::<(), Error>(())
/// ```
pub fn plan(inventory: &Inventory, budgets: &Budgets, opts: &PlanOptions) -> Result<Plan> {
    let dtype = opts.dtype.or(inventory.auto_dtype);
    let placed = match opts.strategy {
        Strategy::Sequential => place::sequential::place(inventory, budgets, dtype)?,
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
    }
    let devices = budgets
        .devices()
        .into_iter()
        .map(|device| {
            let budget_bytes = budgets.get(device).unwrap_or(0);
            let used_bytes = units
                .iter()
                .filter(|u| u.device == device)
                .map(|u| u.bytes)
                .sum();
            // A device smaller than the reserve keeps all it has left free, and no more.
            let reserve = placed
                .reserved
                .iter()
                .find(|(d, _)| *d == device)
                .map_or(0, |r| r.1);
            let reserved_bytes = reserve.min(budget_bytes.saturating_sub(used_bytes));
            DeviceUsage {
                device,
                name: budgets.name(device),
                budget_bytes,
                used_bytes,
                reserved_bytes,
            }
        })
        .collect();
    Ok(Plan {
        strategy: opts.strategy,
        dtype,
        units,
        devices,
        tensor_devices,
        total_bytes: inventory.total_bytes(dtype),
    })
}
