//! # stowage
//!
//! Where should every tensor of a model too big for one device go — GPUs, CPU RAM, disk —
//! and how does it get there without running out of memory on the way?
//!
//! This crate is the front door: it re-exports the planner ([`stowage_planner`], which has
//! no burn dependency) and ships a few well-known model configs ([`builtin`]) so that plans
//! can be made with nothing downloaded. The `stowage` binary wraps it (`stowage plan`).
//!
//! ## Quick start
//!
//! ```
//! use stowage::{Budgets, Device, Inventory, InventoryOptions, PlanOptions};
//!
//! // Expand a shipped Llama-3-8B config into its tensors (no weights needed) ...
//! let config = stowage::builtin::config("llama-3-8b").unwrap()?;
//! let inventory = Inventory::from_config(config, &InventoryOptions::default())?;
//! assert_eq!(inventory.param_count(), 8_030_261_248);
//!
//! // ... and plan its 15 GiB of bf16 weights for two 6 GiB GPUs and 32 GiB of RAM.
//! let budgets = Budgets { gpus: vec![], cpu_bytes: 32 << 30, disk_bytes: 1 << 40 }
//!     .with_planned_gpus(&[6 << 30, 6 << 30]);
//! let plan = stowage::plan(&inventory, &budgets, &PlanOptions::default())?;
//! let map = plan.device_map(&inventory);
//! assert_eq!(map.device_of("model.embed_tokens.weight"), Some(Device::Gpu(0)));
//! assert_eq!(map.device_of("lm_head.weight"), Some(Device::Cpu));
//! # Ok::<(), stowage::Error>(())
//! ```
//!
//! ## Feature flags
//!
//! None yet: the default build needs no GPU and no driver. GPU budgets are read through NVML
//! at run time when a driver is present.

#![deny(missing_docs)]

pub mod builtin;

pub use stowage_planner as planner;
pub use stowage_planner::{
    BudgetOverrides, Budgets, DType, Device, DeviceMap, Error, Inventory, InventoryOptions,
    ModelConfig, Plan, PlanOptions, Probe, Strategy, format_bytes, parse_gpus, parse_max_memory,
    parse_size, plan, probe,
};
