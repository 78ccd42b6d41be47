#![doc = include_str!("../README.md")]
//!
//! ## Feature flags
//!
//! - `wgpu`: GPUs through wgpu (Vulkan, Metal, DX12), in burn's `Dispatch` backend with
//!   burn-ndarray for the CPU (`GpuBackend` when enabled).
//! - `cuda`: NVIDIA GPUs through burn-cuda, the same way; guarded by an NVML probe.
//!
//! The default build needs no GPU and no driver: it loads onto burn-ndarray, and GPU budgets
//! are still read through NVML at run time when a driver is present.
#![deny(missing_docs)]

mod backend;
pub mod builtin;
mod checksum;
mod convert;
mod cube;
mod error;
mod execute;
mod load;
mod memory;
#[allow(unsafe_code)]
mod mmap;
pub mod models;
mod module;
mod offload;
mod overrides;
mod pretrained;
pub mod quantized;
mod rename;
mod report;
mod save;
pub mod saved;
mod state_dict;
mod store;
pub mod synthetic;
mod temp_file;

pub use backend::{BackendChoice, ChosenBackend, Targets, choose_backend};
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub use backend::{DispatchDevice, GpuBackend};
pub use cube::{DeviceTransforms, KernelError};
pub use error::{Error, Result, ShapeMismatch};
pub use execute::{
    OffloadMode, RunTrace, SplitLoadReport, SplitModel, SplitOptions, UnitRun, UnitSource,
};
pub use load::{LoadOptions, Progress, load_store};
pub use memory::Memory;
pub use module::{
    Mismatch, ModuleCheck, ModuleLoadOptions, ModuleLoadReport, WeightLayout, check_module, load,
    module_tensors,
};
pub use pretrained::{
    AutoModel, DeviceMapSpec, NoteFn, Planned, Pretrained, ProgressFn, default_offload_folder,
    default_plan_options,
};
pub use quantized::{QuantLinear, QuantLinearConfig, QuantizedParam, QuantizedWeight};
pub use rename::{Rename, Renames};
pub use report::{Checksum, DeviceLoad, LoadReport, OffloadSummary};
pub use save::{DEFAULT_MAX_SHARD_BYTES, SaveReport, save_safetensors};
pub use state_dict::StateDict;
pub use store::{DiskTensor, StoredTensor, TensorStore};

pub use stowage_planner as planner;
pub use stowage_planner::{
    BudgetOverrides, Budgets, Compat, DType, Device, DeviceMap, Inventory, InventoryOptions,
    ModelConfig, OffloadOrder, Plan, PlanOptions, Probe, Quantize, QuantizeAs, QuantizeModule,
    Strategy, format_bytes, parse_gpus, parse_max_memory, parse_size, plan, probe,
};
