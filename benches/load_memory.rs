//! Peak memory and speed of loading, side by side with the limits of this machine.
//!
//! Run: `cargo bench --bench load_memory` (sizes in GB with `STOWAGE_BENCH_SIZES=0.5,1,2`,
//! default `0.5,1`). For each size it writes llama-shaped sharded checkpoints (bf16 and f32) with
//! `stowage::synthetic`, reads them once (warm page cache), then runs each scenario in a fresh
//! child process, resetting the peak RSS right before the measured phase. Scenarios:
//! - `read_reused`: `read()` every shard into one reused 64 MiB buffer (the page cache's speed:
//!   the limit for a zero-copy load);
//! - `read_fresh`: `read()` each shard into a fresh buffer of its size (the limit for a load
//!   that must own its memory);
//! - `naive_widen`: read each shard whole into memory, then widen its bf16 tensors to f32 (what a
//!   loader without mmap streaming does);
//! - `stowage_f32`: `stowage::load_store` of the f32 checkpoint onto the CPU (zero copy);
//! - `stowage_widen`: the bf16 checkpoint onto the CPU, widened to f32;
//! - `stowage_disk`: the bf16 checkpoint planned wholly to disk (left in place).
//!
//! Each row: wall seconds, GB/s of checkpoint bytes, peak RSS (VmHWM) and its anonymous and
//! file-backed parts at the end, and the ratio of peak RSS to the bytes the CPU holds. Results
//! go to stdout and to `target/bench/load_memory.json`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use stowage::planner::{InventoryOptions, RuntimeOptions};
use stowage::{Budgets, DType, Inventory, LoadOptions, PlanOptions};

const ENV: &str = "STOWAGE_BENCH_SCENARIO";

fn shards(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    v.sort();
    v
}

fn status() -> (u64, u64, u64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let f = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (f("VmHWM:"), f("RssAnon:"), f("RssFile:"))
}

/// One scenario in this (child) process; prints one JSON line.
fn child(scenario: &str, dir: &Path) {
    let files = shards(dir);
    let total: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    let (inv, plan) = if scenario.starts_with("stowage") {
        let inv =
            Inventory::from_spec(dir.to_str().unwrap(), &InventoryOptions::default()).unwrap();
        let cpu = if scenario == "stowage_disk" {
            0
        } else {
            1 << 40
        };
        let budgets = Budgets {
            gpus: vec![],
            cpu_bytes: cpu,
            disk_bytes: 1 << 40,
        };
        let opts = PlanOptions {
            runtime: RuntimeOptions::off(),
            cpu_float: Some(DType::F32),
            ..Default::default()
        };
        let plan = stowage::plan(&inv, &budgets, &opts).unwrap();
        (Some(inv), Some(plan))
    } else {
        (None, None)
    };
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let started = Instant::now();
    let mut cpu_bytes = 0u64;
    // What the scenario loaded stays alive until memory is read.
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    match scenario {
        "read_reused" => {
            let mut buf = vec![0u8; 64 << 20];
            for f in &files {
                let mut file = std::fs::File::open(f).unwrap();
                while file.read(&mut buf).unwrap() > 0 {}
            }
        }
        "read_fresh" => {
            for f in &files {
                let bytes = std::fs::read(f).unwrap();
                std::hint::black_box(&bytes);
            }
        }
        "naive_widen" => {
            let mut kept: Vec<Vec<f32>> = Vec::new();
            for f in &files {
                let bytes = std::fs::read(f).unwrap();
                let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
                let data = &bytes[8 + n..];
                kept.push(
                    data.chunks_exact(2)
                        .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                        .collect(),
                );
            }
            cpu_bytes = kept.iter().map(|v| v.len() as u64 * 4).sum();
            keep.push(Box::new(kept));
        }
        _ => {
            let (inv, plan) = (inv.unwrap(), plan.unwrap());
            let opts = LoadOptions {
                offload_folder: dir.join("offload"),
                ..Default::default()
            };
            let (store, report) = stowage::load_store::<burn_ndarray::NdArray>(
                &inv,
                &plan,
                &burn_ndarray::NdArrayDevice::Cpu,
                &opts,
            )
            .unwrap();
            cpu_bytes = report
                .devices
                .iter()
                .filter(|d| d.device == stowage::Device::Cpu)
                .map(|d| d.actual_bytes)
                .sum();
            keep.push(Box::new(store));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let (hwm, anon, file) = status();
    drop(keep);
    println!(
        "{}",
        serde_json::json!({"scenario": scenario, "seconds": secs, "bytes": total, "peak": hwm, "anon": anon, "file": file, "cpu_bytes": cpu_bytes})
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Ok(scenario) = std::env::var(ENV) {
        child(
            &scenario,
            Path::new(&std::env::var("STOWAGE_BENCH_DIR").unwrap()),
        );
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let sizes: Vec<f64> = std::env::var("STOWAGE_BENCH_SIZES")
        .unwrap_or_else(|_| "0.5,1".into())
        .split(',')
        .map(|s| s.trim().parse().expect("sizes in GB"))
        .collect();
    let root = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    println!(
        "{:<14} {:>6} {:>8} {:>7} {:>10} {:>10} {:>10} {:>9}",
        "scenario", "GB", "seconds", "GB/s", "peak MiB", "anon MiB", "file MiB", "peak/cpu"
    );
    for size in sizes {
        let bytes = (size * 1e9) as u64;
        let bf16 = root.path().join(format!("bf16-{size}"));
        let f32d = root.path().join(format!("f32-{size}"));
        std::fs::create_dir_all(&bf16).unwrap();
        std::fs::create_dir_all(&f32d).unwrap();
        stowage::synthetic::write_llama(&bf16, bytes, DType::BF16).unwrap();
        stowage::synthetic::write_llama(&f32d, bytes, DType::F32).unwrap();
        for d in [&bf16, &f32d] {
            for f in shards(d) {
                let _ = std::fs::read(f).unwrap(); // warm the page cache
            }
        }
        for (scenario, dir) in [
            ("read_reused", &bf16),
            ("read_fresh", &bf16),
            ("naive_widen", &bf16),
            ("stowage_widen", &bf16),
            ("stowage_disk", &bf16),
            ("read_reused", &f32d),
            ("stowage_f32", &f32d),
        ] {
            std::thread::sleep(std::time::Duration::from_secs(2)); // let freed memory return
            let out = Command::new(&args[0])
                .env(ENV, scenario)
                .env("STOWAGE_BENCH_DIR", dir)
                .output()
                .expect("child runs");
            assert!(
                out.status.success(),
                "{scenario}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value =
                serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
            let mib = |k: &str| v[k].as_u64().unwrap() as f64 / (1 << 20) as f64;
            let gbs = v["bytes"].as_u64().unwrap() as f64 / v["seconds"].as_f64().unwrap() / 1e9;
            let cpu = v["cpu_bytes"].as_u64().unwrap();
            let ratio = if cpu > 0 {
                format!("{:.3}", v["peak"].as_u64().unwrap() as f64 / cpu as f64)
            } else {
                "-".into()
            };
            let label = if dir == &f32d {
                format!("{scenario} (f32)")
            } else {
                scenario.to_string()
            };
            println!(
                "{:<20} {:>6.2} {:>8.3} {:>7.2} {:>10.1} {:>10.1} {:>10.1} {:>9}",
                label,
                v["bytes"].as_u64().unwrap() as f64 / 1e9,
                v["seconds"].as_f64().unwrap(),
                gbs,
                mib("peak"),
                mib("anon"),
                mib("file"),
                ratio
            );
            let mut row = v.clone();
            row["checkpoint"] = if dir == &f32d { "f32" } else { "bf16" }.into();
            rows.push(row);
        }
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("load_memory.json"),
        serde_json::to_string_pretty(&rows).unwrap(),
    )
    .unwrap();
}
