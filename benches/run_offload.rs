//! A forward pass of a split model with half of its blocks on disk: prefetch off and on, side
//! by side in one run, against the same model wholly in RAM and the time it takes to read the
//! offloaded bytes.
//!
//! Run: `cargo bench --bench run_offload` (a few minutes on the project's 2-core VM). It writes
//! a llama-shaped bf16 checkpoint (`stowage::synthetic`, default 2 GB: `STOWAGE_BENCH_GB`),
//! plans it all on the CPU, then moves the odd-numbered layers to disk, and measures, with
//! `STOWAGE_BENCH_TOKENS` tokens (default 8: a short prompt, where a layer computes in about the time it takes to bring it in) and the median of `STOWAGE_BENCH_RUNS` passes
//! (default 5), after one warm-up pass each (the page cache holds the checkpoint):
//! - `resident`: every layer in RAM (f32), no offload: the compute alone;
//! - `prefetch 0`: each disk layer read and widened to f32 when reached, then run;
//! - `prefetch 1`, `prefetch 2`: the next one or two disk layers brought in on background
//!   threads while a layer computes;
//! - `read`: `read()` of the offloaded layers' byte ranges into a reused buffer (the bound set
//!   by reading the offloaded bytes from the page cache), and `bring-in`: bringing every disk
//!   layer in alone (read + widen to f32), without computing.
//!
//! Perfect overlap would take max(resident, bring-in); no overlap takes resident + bring-in.
//! The table gives each run against both. Results go to stdout as markdown and to
//! `target/bench/run_offload.json`.

#[path = "common/env.rs"]
mod env;

use std::io::{Read, Seek, SeekFrom};
use std::time::Instant;

use burn_ndarray::{NdArray, NdArrayDevice};
use env::{env_or, median};
use stowage::models::{LlamaConfig, token_ids};
use stowage::planner::{InventoryOptions, RuntimeOptions, TensorSource};
use stowage::{Budgets, DType, Device, Inventory, PlanOptions, SplitModel, SplitOptions};

type B = NdArray;
const DEV: NdArrayDevice = NdArrayDevice::Cpu;

fn main() {
    // `cargo test` runs bench targets without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let gb: f64 = env_or("STOWAGE_BENCH_GB", 2.0);
    let tokens: usize = env_or("STOWAGE_BENCH_TOKENS", 8);
    let runs: usize = env_or("STOWAGE_BENCH_RUNS", 5);

    let dir = tempfile::tempdir().expect("temp dir");
    let bytes = (gb * 1e9) as u64;
    stowage::synthetic::write_llama(dir.path(), bytes, DType::BF16).expect("checkpoint");
    let inv = Inventory::from_spec(dir.path().to_str().unwrap(), &InventoryOptions::default())
        .expect("inventory");
    let config = LlamaConfig::from_file(&dir.path().join("config.json")).expect("config");
    let budgets = Budgets {
        gpus: vec![],
        cpu_bytes: 1 << 40,
        disk_bytes: 1 << 40,
    };
    let opts = PlanOptions {
        runtime: RuntimeOptions::off(),
        cpu_float: Some(DType::F32),
        ..Default::default()
    };
    let resident_plan = stowage::plan(&inv, &budgets, &opts).expect("plan");
    let mut split_plan = resident_plan.clone();
    let mut offloaded: Vec<(std::path::PathBuf, u64, u64)> = Vec::new();
    let mut disk_layers = Vec::new();
    for (t, d) in inv.tensors.iter().zip(split_plan.tensor_devices.iter_mut()) {
        let Some(rest) = t.name.strip_prefix("model.layers.") else {
            continue;
        };
        let n: usize = rest.split('.').next().unwrap().parse().unwrap();
        if n % 2 == 1 {
            *d = Device::Disk;
            if let TensorSource::File {
                path, start, end, ..
            } = &t.source
            {
                offloaded.push((path.clone(), *start, *end));
            }
            if !disk_layers.contains(&n) {
                disk_layers.push(n);
            }
        }
    }
    let layers = config.num_hidden_layers;
    let offloaded_bytes: u64 = offloaded.iter().map(|(_, s, e)| e - s).sum();
    eprintln!(
        "checkpoint {:.2} GB bf16, {layers} layers, {} on disk ({:.2} GB), {tokens} tokens, {runs} runs",
        inv.total_bytes(None) as f64 / 1e9,
        disk_layers.len(),
        offloaded_bytes as f64 / 1e9
    );
    let ids: Vec<u32> = (0..tokens as u32).map(|i| (i * 7919) % 32000).collect();
    let input = token_ids::<B>(&[&ids], &DEV);

    let mut rows: Vec<(String, f64, f64, f64)> = Vec::new(); // name, wall, compute, wait
    let mut measure = |name: &str, plan: &stowage::Plan, prefetch: usize| -> f64 {
        let options = SplitOptions {
            prefetch,
            sync_timings: false,
            ..Default::default()
        };
        let (split, _) =
            SplitModel::<B, _>::load(|d| config.init::<B>(d), &inv, plan, &DEV, &options)
                .expect("load");
        split.forward(&input).expect("warm-up");
        let mut walls = Vec::new();
        let mut computes = Vec::new();
        let mut waits = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let (out, trace) = split.forward(&input).expect("forward");
            let _ = out.into_data();
            walls.push(t.elapsed().as_secs_f64());
            computes.push(trace.units.iter().map(|u| u.seconds).sum::<f64>());
            waits.push(trace.units.iter().map(|u| u.wait_seconds).sum::<f64>());
        }
        let wall = median(walls);
        eprintln!("{name}: {wall:.3} s");
        rows.push((name.into(), wall, median(computes), median(waits)));
        wall
    };
    let resident = measure("resident (all in RAM)", &resident_plan, 0);
    let p0 = measure("half on disk, prefetch 0", &split_plan, 0);
    let p1 = measure("half on disk, prefetch 1", &split_plan, 1);
    let p2 = measure("half on disk, prefetch 2", &split_plan, 2);

    // The bound: reading the offloaded bytes from the page cache into a reused buffer.
    let mut buf = vec![0u8; 64 << 20];
    let mut reads = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        for (path, start, end) in &offloaded {
            let mut f = std::fs::File::open(path).expect("open");
            f.seek(SeekFrom::Start(*start)).expect("seek");
            let mut left = (end - start) as usize;
            while left > 0 {
                let n = left.min(buf.len());
                f.read_exact(&mut buf[..n]).expect("read");
                left -= n;
            }
        }
        reads.push(t.elapsed().as_secs_f64());
    }
    let read = median(reads);
    // Bringing the disk layers in alone: what prefetch has to hide.
    let (split, _) = SplitModel::<B, _>::load(
        |d| config.init::<B>(d),
        &inv,
        &split_plan,
        &DEV,
        &SplitOptions::default(),
    )
    .expect("load");
    let model = split.model();
    let mut bring = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        for &n in &disk_layers {
            let block = stowage::models::Layered::make_block(model, n, &DEV);
            let options = stowage::ModuleLoadOptions {
                renames: stowage::models::Layered::block_renames(model, n),
                ..Default::default()
            };
            let mut exec = split_plan.clone();
            exec.tensor_devices
                .iter_mut()
                .for_each(|d| *d = Device::Cpu);
            let (block, _) = stowage::load(block, &inv, &exec, &DEV, &options).expect("block");
            drop(block);
        }
        bring.push(t.elapsed().as_secs_f64());
    }
    let bring_in = median(bring);

    let best = resident.max(bring_in);
    let serial = resident + bring_in;
    println!(
        "\nForward pass, {:.2} GB bf16 llama-shaped checkpoint ({layers} layers, {} on disk, {:.2} GB offloaded), {tokens} tokens, CPU (burn-ndarray), median of {runs}\n",
        inv.total_bytes(None) as f64 / 1e9,
        disk_layers.len(),
        offloaded_bytes as f64 / 1e9
    );
    println!(
        "| run | wall s | compute s | waiting for weights s | / perfect overlap | / no overlap |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, wall, compute, wait) in &rows {
        println!(
            "| {name} | {wall:.3} | {compute:.3} | {wait:.3} | {:.2} | {:.2} |",
            wall / best,
            wall / serial
        );
    }
    println!("\n| bound | s | GB/s |\n|---|---:|---:|");
    println!(
        "| read() of the offloaded bytes (page cache, reused buffer) | {read:.3} | {:.2} |",
        offloaded_bytes as f64 / 1e9 / read
    );
    println!(
        "| bring the disk layers in alone (read + widen to f32) | {bring_in:.3} | {:.2} |",
        offloaded_bytes as f64 / 1e9 / bring_in
    );
    println!(
        "\nprefetch 1 / prefetch 0: {:.2}; prefetch 2 / prefetch 0: {:.2}; prefetch 1 / read bound: {:.2}",
        p1 / p0,
        p2 / p0,
        p1 / read
    );
    let json = serde_json::json!({
        "checkpoint_bytes": inv.total_bytes(None),
        "layers": layers,
        "disk_layers": disk_layers.len(),
        "offloaded_bytes": offloaded_bytes,
        "tokens": tokens,
        "runs": runs,
        "rows": rows.iter().map(|(n, w, c, wt)| serde_json::json!({"run": n, "wall_s": w, "compute_s": c, "wait_s": wt})).collect::<Vec<_>>(),
        "read_s": read,
        "bring_in_s": bring_in,
        "prefetch1_over_prefetch0": p1 / p0,
        "prefetch2_over_prefetch0": p2 / p0,
    });
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    std::fs::write(
        out.join("run_offload.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .expect("write JSON");
}
