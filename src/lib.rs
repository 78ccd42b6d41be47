#![doc = include_str!("../README.md")]
//!
//! ## Feature flags
//!
//! None yet: the default build needs no GPU and no driver. GPU budgets are read through NVML
//! at run time when a driver is present.
#![deny(missing_docs)]

pub mod builtin;

pub use stowage_planner as planner;
pub use stowage_planner::{
    BudgetOverrides, Budgets, Compat, DType, Device, DeviceMap, Error, Inventory, InventoryOptions,
    ModelConfig, OffloadOrder, Plan, PlanOptions, Probe, Strategy, format_bytes, parse_gpus,
    parse_max_memory, parse_size, plan, probe,
};
