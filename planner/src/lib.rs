//! # stowage-planner
//!
//! Where should every tensor of a model go? This crate answers without loading the model and
//! without burn: it takes an [`Inventory`] (tensor names, shapes, dtypes and sizes, from
//! safetensors headers or from a `config.json` of a known architecture), reads the machine's
//! [`Budgets`] (measured by [`probe()`], overridable), and computes a [`Plan`] whose
//! [`DeviceMap`] has the shape of a Hugging Face `device_map`.
//!
//! Placement is a pure function: [`plan`] measures nothing, so plans for hardware you do not
//! have are as easy as plans for the machine you are on.
//!
//! ```
//! use stowage_planner::*;
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("model.safetensors");
//! # let json = br#"{"embed.weight":{"dtype":"BF16","shape":[4,4],"data_offsets":[0,32]},"layers.0.w":{"dtype":"BF16","shape":[4,4],"data_offsets":[32,64]},"layers.1.w":{"dtype":"BF16","shape":[4,4],"data_offsets":[64,96]}}"#;
//! # let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
//! # bytes.extend_from_slice(json);
//! # bytes.extend_from_slice(&[0u8; 96]);
//! # std::fs::write(&path, bytes).unwrap();
//! // Read only the header of a checkpoint ...
//! let inventory = Inventory::from_spec(path.to_str().unwrap(), &InventoryOptions::default())?;
//! assert_eq!(inventory.no_split_units(), ["layers.0", "layers.1"]);
//!
//! // ... and place it on one planned 64-byte GPU, then the CPU, with no run-time reserve.
//! let budgets = Budgets { gpus: vec![], cpu_bytes: 1 << 20, disk_bytes: 0 }
//!     .with_max_memory(&[(Device::Gpu(0), 64)]);
//! let opts = PlanOptions { runtime: RuntimeOptions::off(), ..Default::default() };
//! let plan = plan(&inventory, &budgets, &opts)?;
//! let map = plan.device_map(&inventory);
//! assert_eq!(map.device_of("embed.weight"), Some(Device::Gpu(0)));
//! assert_eq!(map.device_of("layers.1.w"), Some(Device::Cpu));
//! # Ok::<(), Error>(())
//! ```
//!
//! ## Feature flags
//!
//! None: NVML is loaded at run time when a driver is present, so the default build needs no
//! GPU and no driver.
#![deny(missing_docs)]

pub mod arch;
mod budget;
mod config;
mod device;
mod device_map;
mod dtype;
mod error;
mod fingerprint;
mod header;
mod index;
mod inventory;
mod names;
mod order;
mod pattern;
mod place;
mod placement;
mod probe;
mod quantize;
mod runtime;
mod source;
mod strategy;
mod tensor;
pub mod torch;
mod units;
pub use budget::{Budgets, GpuBudget, parse_gpus, parse_max_memory};
pub use config::ModelConfig;
pub use device::Device;
pub use device_map::DeviceMap;
pub use dtype::DType;
pub use error::{Error, Result};
pub use fingerprint::Fingerprint;
pub use header::{Header, MAX_HEADER_BYTES, parse_header, read_header};
pub use index::read_index;
pub use inventory::{BLOCK_CONTAINERS, Inventory, InventoryOptions, Module};
pub use names::summarize_names;
pub use pattern::Pattern;
pub use placement::{DeviceUsage, Plan, PlanOptions, Unit, plan, quantize_summary};
pub use probe::{BudgetOverrides, DiskInfo, GpuInfo, Probe, RamInfo, probe};
pub use quantize::{Quantize, QuantizeAs, QuantizeModule, quantize_for};
pub use runtime::{RuntimeCosts, RuntimeOptions};
pub use source::{ModelFiles, SourceOptions, hub_cache_dirs, resolve};
pub use strategy::{Compat, OffloadOrder, Strategy};
pub use tensor::{TensorInfo, TensorSource, gather_strided};
pub use units::{format_bytes, parse_size};
