//! Peak memory and speed of loading, side by side with candle's loader and the limits of this
//! machine, in one run.
//!
//! Run: `cargo bench --bench load_memory` (about 12 minutes on the project's 2-core VM). It
//! prints markdown tables on stdout, writes `target/bench/load_memory.json` and the plot
//! `target/bench/load_memory.svg`, and, run with the default sizes and runs, copies the plot to
//! `benches/load_memory.svg` for the README. Environment:
//! - `STOWAGE_BENCH_SIZES`: checkpoint sizes in GB, default `0.5,1,2,4`. `8` is left out: its
//!   f32 tensors alone take 16 GB, and `candle_widen` would peak near 24 GB (1.5× those, its
//!   maps included), over what a 24 GiB VM has;
//! - `STOWAGE_BENCH_RUNS`: runs per scenario, default 3; every figure is the median of its runs;
//! - `STOWAGE_BENCH_WORKDIR`: where checkpoints are written, kept afterwards (default: a
//!   temporary directory, removed). With it one scenario can be rerun alone, e.g. under
//!   `perf record`: `STOWAGE_BENCH_SCENARIO=stowage_widen STOWAGE_BENCH_DIR=$WORKDIR/bf16-4
//!   target/release/deps/load_memory-<hash>`.
//!
//! For each size it writes llama-shaped sharded checkpoints (bf16 and f32) with
//! `stowage::synthetic`, then runs every scenario in a fresh child process, in rounds of one run
//! each (see `RUN_ORDER`). Before each child it re-reads that checkpoint (warm page cache) and
//! pauses to 4 s (freed memory goes back to the VM's host meanwhile); the child resets its peak
//! RSS right before the measured phase. Scenarios:
//! - `read_reused`: `read()` every shard into one reused 64 MiB buffer (the page cache's speed:
//!   the limit for a zero-copy load);
//! - `read_fresh`: `read()` each shard into a fresh buffer of its size (the limit for a load
//!   that must own its memory);
//! - `touch_widen`: allocate and write, with every core, one fresh f32 buffer per tensor of the
//!   bf16 checkpoint, reading nothing (the limit for a load that widens: it must own twice the
//!   checkpoint's size of fresh memory);
//! - `naive_widen`: read each shard whole into memory, then widen its bf16 tensors to f32 (what a
//!   loader without mmap streaming does);
//! - `candle_bf16`: candle-core's `MmapedSafetensors::multi` over the shards, then `load` of
//!   every tensor onto `Device::Cpu` (an owned copy), with the tensors and the maps kept alive;
//! - `candle_widen`: the same, each tensor then `to_dtype(F32)` as candle-nn's `VarBuilder`
//!   does for an f32 model (the bf16 copy is dropped);
//! - `candle_f32`: `candle_bf16`'s load of the f32 checkpoint;
//! - `stowage_widen`: `stowage::load_store` of the bf16 checkpoint onto the CPU, widened to f32;
//! - `stowage_disk`: the bf16 checkpoint planned wholly to disk (left in place);
//! - `stowage_f32`: the f32 checkpoint onto the CPU (zero copy: tensors are the mapped pages).
//!
//! Each row: wall seconds, GB/s of checkpoint bytes, peak RSS (VmHWM) and its anonymous and
//! file-backed parts at the end (everything loaded still alive), the bytes the CPU holds and
//! peak / those bytes. Then ratios per size: stowage against candle (time, peak) and against
//! the `read()` limits (GB/s), and the peak against the target "bytes on cpu + 2 staging
//! buffers + 5%", a staging buffer being the largest tensor as loaded (f32), the most a
//! tensor-at-a-time loader holds in flight. Ratios come from medians measured in the same run.
//! PyTorch/transformers are not compared here (no torch on the project's VMs); see
//! `shared/notes/measuring.md` for reference figures.

#[path = "load_memory/plot.rs"]
mod plot;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde_json::{Value, json};
use stowage::planner::{InventoryOptions, RuntimeOptions};
use stowage::{Budgets, DType, Inventory, LoadOptions, PlanOptions};

const ENV: &str = "STOWAGE_BENCH_SCENARIO";
const MIB: f64 = (1u64 << 20) as f64;
/// The pause before each child. This VM hands freed memory back to its host about 2 s after
/// it is freed; a child started sooner finds some of it still mapped and first-touches it
/// ~20% faster, which favours whichever scenario follows a big one.
const PAUSE: Duration = Duration::from_secs(4);
/// The loader compared against, as pinned in `Cargo.toml`.
const CANDLE: &str = "candle-core 0.11.1";

/// A scenario and the checkpoint it reads, in the order of the tables.
const CASES: [(&str, &str); 11] = [
    ("read_reused", "bf16"),
    ("read_fresh", "bf16"),
    ("touch_widen", "bf16"),
    ("naive_widen", "bf16"),
    ("candle_bf16", "bf16"),
    ("candle_widen", "bf16"),
    ("stowage_widen", "bf16"),
    ("stowage_disk", "bf16"),
    ("read_reused", "f32"),
    ("candle_f32", "f32"),
    ("stowage_f32", "f32"),
];

/// The order the cases run in each round (indices into [`CASES`]): one that allocates little
/// between two that allocate gigabytes, so each big one starts after a longer quiet spell (the
/// VM returns a big free to its host over several seconds; a child started meanwhile
/// first-touches memory faster). `candle_f32` follows `candle_bf16`, the one big pair left,
/// which if anything favours candle.
const RUN_ORDER: [usize; 11] = [0, 2, 1, 6, 7, 5, 8, 3, 10, 4, 9];

/// The row label of a case: the scenario, tagged `(f32)` when its name does not say so.
fn label(scenario: &str, checkpoint: &str) -> String {
    if checkpoint == "f32" && !scenario.ends_with("f32") {
        format!("{scenario} (f32)")
    } else {
        scenario.to_string()
    }
}

fn shards(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    v.sort();
    v
}

/// Tensor names and element counts, shard by shard in offset order (the order stowage loads).
fn tensors(files: &[PathBuf]) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for f in files {
        let mut file = std::fs::File::open(f).unwrap();
        let mut len = [0u8; 8];
        file.read_exact(&mut len).unwrap();
        let mut header = vec![0u8; u64::from_le_bytes(len) as usize];
        file.read_exact(&mut header).unwrap();
        let header: BTreeMap<String, Value> = serde_json::from_slice(&header).unwrap();
        let mut shard: Vec<(u64, String, u64)> = header
            .into_iter()
            .filter(|(k, _)| k != "__metadata__")
            .map(|(k, v)| {
                let elems = v["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .product();
                (v["data_offsets"][0].as_u64().unwrap(), k, elems)
            })
            .collect();
        shard.sort();
        out.extend(shard.into_iter().map(|(_, k, e)| (k, e)));
    }
    out
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

/// Maps the shards with candle, as `VarBuilder::from_mmaped_safetensors` does.
#[allow(unsafe_code)]
fn candle_map(files: &[PathBuf]) -> candle_core::safetensors::MmapedSafetensors {
    // SAFETY: this bench wrote the files and nothing modifies them while they are mapped.
    unsafe { candle_core::safetensors::MmapedSafetensors::multi(files) }.unwrap()
}

/// One scenario in this (child) process; prints one JSON line.
fn child(scenario: &str, dir: &Path) {
    let files = shards(dir);
    let total: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    let (names, elems): (Vec<String>, Vec<u64>) = tensors(&files).into_iter().unzip();
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
        "touch_widen" => {
            let kept: Vec<Vec<f32>> = elems
                .iter()
                .map(|&n| {
                    let mut v = vec![0f32; n as usize];
                    v.par_chunks_mut(1 << 16).for_each(|c| c.fill(1.0));
                    v
                })
                .collect();
            cpu_bytes = elems.iter().sum::<u64>() * 4;
            keep.push(Box::new(kept));
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
        "candle_bf16" | "candle_widen" | "candle_f32" => {
            let st = candle_map(&files);
            let mut kept = Vec::with_capacity(names.len());
            for name in &names {
                let mut t = st.load(name, &candle_core::Device::Cpu).unwrap();
                if scenario == "candle_widen" {
                    t = t.to_dtype(candle_core::DType::F32).unwrap();
                }
                cpu_bytes += (t.elem_count() * t.dtype().size_in_bytes()) as u64;
                kept.push(t);
            }
            // Like a VarBuilder while a model is built: the maps stay open.
            keep.push(Box::new(kept));
            keep.push(Box::new(st));
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
        json!({"scenario": scenario, "seconds": secs, "bytes": total, "peak": hwm, "anon": anon,
            "file": file, "cpu_bytes": cpu_bytes})
    );
}

/// Reads every shard of `dir` through `buf`, so its pages are in the page cache.
fn warm(dir: &Path, buf: &mut [u8]) {
    for f in shards(dir) {
        let mut file = std::fs::File::open(f).unwrap();
        while file.read(buf).unwrap() > 0 {}
    }
}

/// Runs one scenario in a fresh child process after re-warming its checkpoint and a pause.
/// These VMs page out memory idle for a minute (a DAMON `pageout` scheme), page cache
/// included, so a checkpoint last read a round ago may have gone cold.
fn run_child(exe: &str, scenario: &str, dir: &Path, buf: &mut [u8]) -> Value {
    let pause = Instant::now();
    warm(dir, buf);
    std::thread::sleep(PAUSE.saturating_sub(pause.elapsed()));
    let out = Command::new(exe)
        .env(ENV, scenario)
        .env("STOWAGE_BENCH_DIR", dir)
        .output()
        .expect("child runs");
    assert!(
        out.status.success(),
        "{scenario}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = out.stdout.split(|&b| b == b'\n').next().unwrap();
    serde_json::from_slice(line).unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Medians of one case's runs at one size.
struct Row {
    label: String,
    checkpoint: &'static str,
    bytes: u64,
    seconds: f64,
    spread: f64,
    peak: f64,
    anon: f64,
    file: f64,
    cpu: f64,
    runs: Vec<Value>,
}

impl Row {
    fn new(label: String, checkpoint: &'static str, runs: Vec<Value>) -> Row {
        let med = |k: &str| median(runs.iter().map(|r| r[k].as_f64().unwrap()).collect());
        let secs: Vec<f64> = runs
            .iter()
            .map(|r| r["seconds"].as_f64().unwrap())
            .collect();
        let (lo, hi) = secs
            .iter()
            .fold((f64::MAX, 0.0f64), |(l, h), &s| (l.min(s), h.max(s)));
        let seconds = med("seconds");
        Row {
            label,
            checkpoint,
            bytes: runs[0]["bytes"].as_u64().unwrap(),
            spread: if seconds > 0.0 {
                (hi - lo) / seconds
            } else {
                0.0
            },
            seconds,
            peak: med("peak"),
            anon: med("anon"),
            file: med("file"),
            cpu: med("cpu_bytes"),
            runs,
        }
    }

    fn gbs(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e9
    }

    fn line(&self) -> String {
        let ratio = if self.cpu > 0.0 {
            format!("{:.3}", self.peak / self.cpu)
        } else {
            "-".into()
        };
        format!(
            "| {} | {} | {:.2} | {:.4} | {:.0}% | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            self.label,
            self.checkpoint,
            self.bytes as f64 / 1e9,
            self.seconds,
            self.spread * 100.0,
            self.gbs(),
            self.peak / MIB,
            self.anon / MIB,
            self.file / MIB,
            self.cpu / MIB,
            ratio
        )
    }

    fn json(&self) -> Value {
        json!({"scenario": self.label, "checkpoint": self.checkpoint, "bytes": self.bytes,
            "seconds": self.seconds, "seconds_spread": self.spread, "gb_per_s": self.gbs(),
            "peak": self.peak, "anon": self.anon, "file": self.file, "cpu_bytes": self.cpu,
            "runs": self.runs})
    }
}

/// The ratios the targets are read against, from one size's medians.
fn ratios(rows: &[Row], staging: f64) -> Vec<(&'static str, f64)> {
    let get = |l: &str| rows.iter().find(|r| r.label == l).unwrap();
    let (sw, cw) = (get("stowage_widen"), get("candle_widen"));
    let bound = sw.cpu * 1.05 + 2.0 * staging;
    vec![
        (
            "stowage_widen / candle_widen, time",
            sw.seconds / cw.seconds,
        ),
        ("stowage_widen / candle_widen, peak", sw.peak / cw.peak),
        (
            "stowage_widen / touch_widen, time",
            sw.seconds / get("touch_widen").seconds,
        ),
        (
            "stowage_widen / read_fresh, GB/s",
            sw.gbs() / get("read_fresh").gbs(),
        ),
        (
            "stowage_widen / read_reused, GB/s",
            sw.gbs() / get("read_reused").gbs(),
        ),
        ("stowage_widen peak / bytes on cpu", sw.peak / sw.cpu),
        (
            "stowage_widen peak / (1.05 cpu + 2 staging)",
            sw.peak / bound,
        ),
        (
            "stowage_widen peak - bytes on cpu, MiB",
            (sw.peak - sw.cpu) / MIB,
        ),
        ("candle_widen peak / bytes on cpu", cw.peak / cw.cpu),
        ("stowage_disk peak, MiB", get("stowage_disk").peak / MIB),
        (
            "stowage_f32 / candle_f32, time",
            get("stowage_f32").seconds / get("candle_f32").seconds,
        ),
        (
            "stowage_f32 / read_reused (f32), GB/s",
            get("stowage_f32").gbs() / get("read_reused (f32)").gbs(),
        ),
        (
            "candle_bf16 / read_fresh, GB/s",
            get("candle_bf16").gbs() / get("read_fresh").gbs(),
        ),
    ]
}

/// Today's date (UTC) as `YYYY-MM-DD`, from the days since 1970 (Hinnant's civil_from_days).
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// CPU model, cores, memory and kernel of this machine.
fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let mem_kb: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memory_gib": (mem_kb as f64 / (1u64 << 20) as f64 * 10.0).round() / 10.0,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
    })
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
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and should not start a 12-minute run.
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("load_memory: run it with `cargo bench --bench load_memory`");
        return;
    }
    let started = Instant::now();
    let mut order = RUN_ORDER;
    order.sort();
    assert_eq!(
        order,
        std::array::from_fn(|i| i),
        "RUN_ORDER runs every case once"
    );
    let sizes_env = std::env::var("STOWAGE_BENCH_SIZES").ok();
    let sizes: Vec<f64> = sizes_env
        .as_deref()
        .unwrap_or("0.5,1,2,4")
        .split(',')
        .map(|s| s.trim().parse().expect("sizes in GB"))
        .collect();
    let runs: usize = std::env::var("STOWAGE_BENCH_RUNS")
        .map_or(3, |r| r.parse().expect("a number of runs"))
        .max(1);
    let temp = tempfile::tempdir().unwrap();
    let mut buf = vec![0u8; 64 << 20];
    let workdir = std::env::var_os("STOWAGE_BENCH_WORKDIR").map(PathBuf::from);
    let root = workdir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    let mut command = String::from("cargo bench --bench load_memory");
    if let Some(v) = &sizes_env {
        command = format!("STOWAGE_BENCH_SIZES={v} {command}");
    }
    if runs != 3 {
        command = format!("STOWAGE_BENCH_RUNS={runs} {command}");
    }
    let machine = machine();
    let date = today();
    println!(
        "load_memory: {date}, {} ({} cores, {} GiB), {CANDLE}, warm page cache, medians of \
         {runs} run(s)\n",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"],
        machine["memory_gib"]
    );
    println!(
        "| scenario | checkpoint | GB | s | spread | GB/s | peak MiB | anon MiB | file MiB \
         | cpu MiB | peak / cpu |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut all_rows: Vec<(f64, Vec<Row>)> = Vec::new();
    let mut all_ratios: Vec<(f64, Vec<(&str, f64)>)> = Vec::new();
    let mut staging_of = Vec::new();
    for &size in &sizes {
        let bytes = (size * 1e9) as u64;
        let bf16 = root.join(format!("bf16-{size}"));
        let f32d = root.join(format!("f32-{size}"));
        let t = Instant::now();
        for (d, dtype) in [(&bf16, DType::BF16), (&f32d, DType::F32)] {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir_all(d).unwrap();
            stowage::synthetic::write_llama(d, bytes, dtype).unwrap();
            warm(d, &mut buf);
        }
        eprintln!(
            "{size} GB: checkpoints written and read in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        // A staging buffer: the largest tensor as loaded (f32).
        let staging = tensors(&shards(&bf16))
            .iter()
            .map(|t| t.1)
            .max()
            .unwrap_or(0) as f64
            * 4.0;
        staging_of.push(staging);
        let mut results: Vec<Vec<Value>> = vec![Vec::new(); CASES.len()];
        for run in 0..runs {
            let t = Instant::now();
            for i in RUN_ORDER {
                let (scenario, checkpoint) = CASES[i];
                let dir = if checkpoint == "f32" { &f32d } else { &bf16 };
                results[i].push(run_child(&args[0], scenario, dir, &mut buf));
            }
            eprintln!(
                "{size} GB: run {}/{runs} in {:.1} s",
                run + 1,
                t.elapsed().as_secs_f64()
            );
        }
        let rows: Vec<Row> = CASES
            .iter()
            .zip(results)
            .map(|((s, c), r)| Row::new(label(s, c), c, r))
            .collect();
        for r in &rows {
            println!("{}", r.line());
        }
        all_ratios.push((size, ratios(&rows, staging)));
        all_rows.push((size, rows));
        if workdir.is_none() {
            let _ = std::fs::remove_dir_all(&bf16);
            let _ = std::fs::remove_dir_all(&f32d);
        }
    }

    println!("\nRatios (medians of the same run; GB/s of checkpoint bytes):\n");
    let head: Vec<String> = sizes.iter().map(|s| format!("{s} GB")).collect();
    println!("| ratio | {} |", head.join(" | "));
    println!("|---|{}", "---|".repeat(sizes.len()));
    for (k, (name, _)) in all_ratios[0].1.iter().enumerate() {
        let cells: Vec<String> = all_ratios
            .iter()
            .map(|(_, r)| match r[k].1 {
                v if v != 0.0 && v.abs() < 0.01 => format!("{v:.1e}"),
                v => format!("{v:.3}"),
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    let total = started.elapsed().as_secs_f64();
    println!("\ntotal wall time: {total:.0} s");

    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let report = json!({
        "command": command,
        "date": date,
        "machine": machine,
        "runs": runs,
        "sizes_gb": sizes,
        "total_seconds": total,
        "sizes": all_rows.iter().zip(&all_ratios).zip(&staging_of).map(|(((size, rows), (_, r)), st)| json!({
            "size_gb": size,
            "staging_bytes": st,
            "scenarios": rows.iter().map(Row::json).collect::<Vec<_>>(),
            "ratios": r.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
    });
    std::fs::write(
        out.join("load_memory.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();

    let lines: Vec<plot::Line> = CASES
        .iter()
        .enumerate()
        .map(|(i, (s, c))| {
            let points = |f: &dyn Fn(&Row) -> f64| {
                all_rows
                    .iter()
                    .map(|(_, rows)| (rows[i].bytes as f64 / 1e9, f(&rows[i])))
                    .collect()
            };
            plot::Line {
                label: label(s, c),
                points: [points(&|r| r.peak / 1e9), points(&|r| r.seconds)],
            }
        })
        .collect();
    let svg = out.join("load_memory.svg");
    let title = format!(
        "stowage vs {CANDLE}: loading to CPU, warm cache, medians of {runs} ({date}, {} cores)",
        machine["cores"]
    );
    plot::draw(&svg, &title, &lines).unwrap();
    eprintln!(
        "wrote {} and {}",
        out.join("load_memory.json").display(),
        svg.display()
    );
    // Only the documented run replaces the README's plot.
    if sizes_env.is_none() && runs == 3 {
        let readme_svg = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/load_memory.svg");
        std::fs::copy(&svg, &readme_svg).unwrap();
        eprintln!("copied the plot to {}", readme_svg.display());
    }
}
