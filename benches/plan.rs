//! How long planning takes, from a config alone, for the shipped models up to the
//! ≈1 T-parameter MoE (Kimi K2: 61 layers of 384 experts, ≈140 k tensors).
//!
//! Run: `cargo bench --bench plan`. Each row is one step, timed on its own:
//! `expand` turns the config into its tensor list, `inventory` orders it into the module
//! tree, `plan_*` places an inventory with one strategy on eight planned 141 GiB GPUs (and
//! 64 GiB of RAM for the spill), `device_map` merges the result into the HF shape. The
//! interactive target is the whole of it well under 100 ms for Kimi K2.

use stowage::planner::{RuntimeOptions, arch};
use stowage::{Budgets, Inventory, InventoryOptions, PlanOptions, Strategy, builtin};

fn main() {
    divan::main();
}

const MODELS: &[&str] = &["llama-3-8b", "llama-3-70b", "mixtral-8x7b", "kimi-k2"];

fn inventory(name: &str) -> Inventory {
    let config = builtin::config(name).unwrap().unwrap();
    Inventory::from_config(config, &InventoryOptions::default()).unwrap()
}

fn budgets(gpus: usize, gpu_gib: u64) -> Budgets {
    Budgets {
        gpus: vec![],
        cpu_bytes: 64 << 30,
        disk_bytes: 4 << 40,
    }
    .with_planned_gpus(&vec![gpu_gib << 30; gpus])
}

#[divan::bench(args = MODELS)]
fn expand(bencher: divan::Bencher, name: &str) {
    let config = builtin::config(name).unwrap().unwrap();
    bencher.bench(|| arch::expand(&config, None).unwrap());
}

#[divan::bench(args = MODELS)]
fn inventory_from_config(bencher: divan::Bencher, name: &str) {
    let config = builtin::config(name).unwrap().unwrap();
    bencher.bench(|| Inventory::from_config(config.clone(), &InventoryOptions::default()).unwrap());
}

fn bench_plan(bencher: divan::Bencher, name: &str, strategy: Strategy) {
    let inv = inventory(name);
    // Kimi K2 needs about 1 TB: eight H200-sized GPUs; the others get two small ones so they spill.
    let b = if name == "kimi-k2" {
        budgets(8, 141)
    } else {
        budgets(2, 16)
    };
    let opts = PlanOptions {
        strategy,
        runtime: RuntimeOptions::default(),
        ..Default::default()
    };
    bencher.bench(|| stowage::plan(&inv, &b, &opts).unwrap());
}

#[divan::bench(args = MODELS)]
fn plan_sequential(bencher: divan::Bencher, name: &str) {
    bench_plan(bencher, name, Strategy::Sequential);
}

#[divan::bench(args = MODELS)]
fn plan_balanced(bencher: divan::Bencher, name: &str) {
    bench_plan(bencher, name, Strategy::Balanced);
}

#[divan::bench(args = MODELS)]
fn plan_optimal(bencher: divan::Bencher, name: &str) {
    bench_plan(bencher, name, Strategy::Optimal);
}

#[divan::bench(args = MODELS)]
fn device_map(bencher: divan::Bencher, name: &str) {
    let inv = inventory(name);
    let b = if name == "kimi-k2" {
        budgets(8, 141)
    } else {
        budgets(2, 16)
    };
    let plan = stowage::plan(&inv, &b, &PlanOptions::default()).unwrap();
    bencher.bench(|| plan.device_map(&inv));
}
