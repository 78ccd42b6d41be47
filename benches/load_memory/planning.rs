//! Config-only planning of the shipped models, up to Kimi K2 (the ≈1 T-parameter MoE), in a
//! fresh child process each, as `stowage plan builtin:NAME` does it: parse the built-in
//! `config.json`, expand it into the module tree, place it, merge the device map. Timed phase by
//! phase, then again in the same process; the target is under 100 ms for Kimi K2 from config
//! to device map.

use std::time::Instant;

use serde_json::json;
use stowage::{Budgets, Inventory, InventoryOptions, PlanOptions, Strategy, builtin};

/// The models planned, with the strategy: Kimi K2 on eight planned 141 GiB GPUs (it needs
/// about 1 TB), the others on two 16 GiB GPUs so they spill to the CPU; 64 GiB of RAM and
/// 4 TiB of disk behind them, as in `benches/plan.rs`.
pub const MODELS: [(&str, Strategy); 5] = [
    ("llama-3-8b", Strategy::Balanced),
    ("llama-3-70b", Strategy::Balanced),
    ("mixtral-8x7b", Strategy::Balanced),
    ("kimi-k2", Strategy::Balanced),
    ("kimi-k2", Strategy::Optimal),
];

/// Plans made again in the same process after the first.
const AGAIN: usize = 4;

/// The GPUs a model is planned on: count and GiB each.
pub fn gpus(model: &str) -> (usize, u64) {
    if model == "kimi-k2" {
        (8, 141)
    } else {
        (2, 16)
    }
}

/// Plans `model` with `strategy` in this (child) process; prints one JSON line.
pub fn run(model: &str, strategy: &str) {
    let strategy: Strategy = strategy.parse().unwrap();
    let (n, gib) = gpus(model);
    let budgets = Budgets {
        gpus: vec![],
        cpu_bytes: 64 << 30,
        disk_bytes: 4 << 40,
    }
    .with_planned_gpus(&vec![gib << 30; n]);
    let opts = PlanOptions {
        strategy,
        ..Default::default()
    };
    super::child::reset_peak();
    // The first plan is what a fresh `stowage plan` pays (its allocations first-touch fresh
    // memory); the next ones, in the same process, what the library costs once warm.
    let mut totals = Vec::new();
    let mut first = None;
    for _ in 0..AGAIN + 1 {
        let started = Instant::now();
        let config = builtin::config(model).expect("a builtin").unwrap();
        let inv = Inventory::from_config(config, &InventoryOptions::default()).unwrap();
        let inventory_s = started.elapsed().as_secs_f64();
        let t = Instant::now();
        let plan = stowage::plan(&inv, &budgets, &opts).unwrap();
        let plan_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let map = plan.device_map(&inv);
        let device_map_s = t.elapsed().as_secs_f64();
        totals.push(started.elapsed().as_secs_f64());
        std::hint::black_box(&map);
        if first.is_none() {
            let s = super::child::status();
            first = Some(json!({"model": model, "strategy": strategy.as_str(),
                "gpus": format!("{n}x{gib}GiB"), "tensors": inv.tensors.len(),
                "params": inv.param_count(), "weights_bytes": plan.total_bytes,
                "seconds": totals[0], "inventory_s": inventory_s, "plan_s": plan_s,
                "device_map_s": device_map_s, "peak": s.peak, "anon": s.anon}));
        }
    }
    let mut line = first.expect("one plan");
    line["warm_seconds"] = json!(super::median(totals[1..].to_vec()));
    println!("{line}");
}
