//! One load scenario, run in a fresh child process of the bench: the loader under test, timed
//! from right after the peak RSS is reset, and one JSON line on stdout with what it measured.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::TensorPrimitive;
use burn_ndarray::{NdArray, NdArrayTensor};
use rayon::prelude::*;
use serde_json::{Value, json};
use stowage::planner::{InventoryOptions, RuntimeOptions};
use stowage::{Budgets, DType, Inventory, LoadOptions, PlanOptions, StoredTensor, TensorStore};

/// The shards of the checkpoint in `dir`, in name order.
pub fn shards(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    v.sort();
    v
}

/// Tensor names and element counts, shard by shard in offset order (the order stowage loads).
pub fn tensors(files: &[PathBuf]) -> Vec<(String, u64)> {
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

/// This process's memory from `/proc/self/status`, in bytes.
pub struct Status {
    /// Peak resident set since the last reset (VmHWM).
    pub peak: u64,
    /// Resident set now (VmRSS).
    pub rss: u64,
    /// Anonymous pages now (RssAnon).
    pub anon: u64,
    /// File-backed pages now (RssFile).
    pub file: u64,
}

/// Reads [`Status`].
pub fn status() -> Status {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let f = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Status {
        peak: f("VmHWM:"),
        rss: f("VmRSS:"),
        anon: f("RssAnon:"),
        file: f("RssFile:"),
    }
}

/// Minor and major page faults of this process so far, from `/proc/self/stat`. A major
/// fault read the page from disk: a checkpoint that was meant to be in the page cache was not.
pub fn faults() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name in parentheses: state, ppid, …; minflt and majflt are the 10th
    // and 12th fields of the line.
    let fields: Vec<u64> = text
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split(' ').map(|f| f.parse().unwrap_or(0)).collect())
        .unwrap_or_default();
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    (at(7), at(9))
}

/// Resets the peak RSS (VmHWM) to the current RSS.
pub fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// Maps the shards with candle, as `VarBuilder::from_mmaped_safetensors` does.
#[allow(unsafe_code)]
fn candle_map(files: &[PathBuf]) -> candle_core::safetensors::MmapedSafetensors {
    // SAFETY: this bench wrote the files and nothing modifies them while they are mapped.
    unsafe { candle_core::safetensors::MmapedSafetensors::multi(files) }.unwrap()
}

/// Bytes of the model held as f32, tied tensors counted once (the planner's own sizing keeps
/// the smaller of the stored and the requested width).
fn as_f32(inv: &Inventory) -> u64 {
    inv.tensors
        .iter()
        .filter(|t| t.tied_to.is_none())
        .map(|t| t.elems() * 4)
        .sum()
}

/// The budgets and options a stowage scenario plans with: everything on the CPU, everything
/// on disk, or a CPU budget of half the model as the CPU holds it (f32) plus its largest
/// tensor (the room the planner keeps on the CPU to bring a disk unit in), the rest on disk:
/// left in place (`stowage_split`) or converted to bf16 and written to the offload folder
/// (`stowage_offload`, and `write_fsync`, which writes as many bytes).
fn stowage_plan(scenario: &str, inv: &Inventory) -> (Budgets, PlanOptions) {
    let as_f32 = as_f32(inv);
    let largest = inv.tensors.iter().map(|t| t.elems() * 4).max().unwrap_or(0);
    let (cpu_bytes, dtype) = match scenario {
        "stowage_disk" => (0, None),
        "stowage_split" => (as_f32 / 2 + largest, None),
        "stowage_offload" | "write_fsync" => (as_f32 / 2 + largest, Some(DType::BF16)),
        _ => (1 << 40, None),
    };
    let budgets = Budgets {
        gpus: vec![],
        cpu_bytes,
        disk_bytes: 1 << 40,
    };
    let opts = PlanOptions {
        runtime: RuntimeOptions::off(),
        cpu_float: Some(DType::F32),
        dtype,
        ..Default::default()
    };
    (budgets, opts)
}

/// A sum of `values` with eight accumulators, so it runs at memory speed.
fn sum(values: &[f32]) -> f64 {
    let mut acc = [0f32; 8];
    let mut chunks = values.chunks_exact(8);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter()
        .chain(chunks.remainder())
        .map(|&v| v as f64)
        .sum()
}

/// Reads every f32 tensor the store holds on the CPU once, in place, with every core (a
/// zero-copy load's tensors are the mapped pages: this is where they are read).
fn raw_pass(store: &TensorStore<NdArray>) -> f64 {
    let mut total = 0.0;
    for (_, _, t) in store.iter() {
        if let StoredTensor::Float {
            tensor: TensorPrimitive::Float(NdArrayTensor::F32(storage)),
            ..
        } = t
        {
            let view = storage.view();
            let values = view.as_slice().expect("stored contiguous");
            total += values.par_chunks(1 << 16).map(sum).sum::<f64>();
        }
    }
    total
}

/// Sums every floating tensor the store holds on the CPU with burn's `sum`, as a model's
/// first use would read it. burn-ndarray 0.21 turns a borrowed (mapped) tensor into an owned
/// copy for each operation on it, so this also measures that copy.
fn burn_pass(store: &TensorStore<NdArray>) -> f64 {
    let mut total = 0.0f64;
    for (name, device, t) in store.iter() {
        let StoredTensor::Float { shape, .. } = t else {
            continue;
        };
        if device != stowage::Device::Cpu {
            continue;
        }
        total += match shape.len() {
            1 => store.float::<1>(name).unwrap().sum().into_scalar(),
            2 => store.float::<2>(name).unwrap().sum().into_scalar(),
            r => panic!("`{name}`: rank {r} is not in a llama checkpoint"),
        } as f64;
    }
    total
}

/// Writes `bytes` to a new file in `dir` from a reused 8 MiB buffer, fsyncs it and removes
/// it: the disk's speed for what `stowage_offload` writes.
fn write_fsync(dir: &Path, bytes: u64) {
    use std::io::Write;
    let path = dir.join("write_fsync.bin");
    let buf = vec![1u8; 8 << 20];
    let mut file = std::fs::File::create(&path).unwrap();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        file.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    file.sync_all().unwrap();
    drop(file);
    std::fs::remove_file(&path).unwrap();
}

/// One scenario on the checkpoint in `dir`, in this (child) process; prints one JSON line.
pub fn run(scenario: &str, dir: &Path) {
    let files = shards(dir);
    let total: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    let (names, elems): (Vec<String>, Vec<u64>) = tensors(&files).into_iter().unzip();
    let stowage = if scenario.starts_with("stowage") || scenario == "write_fsync" {
        let inv =
            Inventory::from_spec(dir.to_str().unwrap(), &InventoryOptions::default()).unwrap();
        let (budgets, opts) = stowage_plan(scenario, &inv);
        let plan = stowage::plan(&inv, &budgets, &opts).unwrap();
        // Every run writes its offload folder afresh rather than reusing the last one's.
        let folder = dir.join("offload");
        let _ = std::fs::remove_dir_all(&folder);
        Some((inv, plan, folder))
    } else {
        None
    };
    let base = status().rss;
    let (minor, major) = faults();
    reset_peak();
    let started = Instant::now();
    let mut cpu_bytes = 0u64;
    let mut extra = serde_json::Map::new();
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
        "write_fsync" => {
            let (_, plan, _) = stowage.as_ref().expect("a plan");
            let bytes = plan.used_on(stowage::Device::Disk);
            write_fsync(dir, bytes);
            extra.insert("written_bytes".into(), json!(bytes));
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
            let (inv, plan, folder) = stowage.expect("a stowage scenario");
            let opts = LoadOptions {
                offload_folder: folder,
                ..Default::default()
            };
            let (store, report) = stowage::load_store::<burn_ndarray::NdArray>(
                &inv,
                &plan,
                &burn_ndarray::NdArrayDevice::Cpu,
                &opts,
            )
            .unwrap();
            let on = |device| {
                report
                    .devices
                    .iter()
                    .filter(|d| d.device == device)
                    .map(|d| d.actual_bytes)
                    .sum::<u64>()
            };
            cpu_bytes = on(stowage::Device::Cpu);
            extra.insert("disk_bytes".into(), json!(on(stowage::Device::Disk)));
            extra.insert("loaded_bytes".into(), json!(as_f32(&inv)));
            extra.insert(
                "written_bytes".into(),
                json!(report.offload.as_ref().map_or(0, |o| o.written_bytes)),
            );
            keep.push(Box::new(store));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let s = status();
    let (minor_after, major_after) = faults();
    extra.insert("minor_faults".into(), json!(minor_after - minor));
    extra.insert("major_faults".into(), json!(major_after - major));
    // A zero-copy load defers reading its pages to first use: pay that once, timed apart,
    // then once more through burn's own `sum`.
    if scenario == "stowage_f32" {
        let store = keep[0]
            .downcast_ref::<TensorStore<NdArray>>()
            .expect("the store");
        for (key, f) in [
            ("pass", raw_pass as fn(&TensorStore<NdArray>) -> f64),
            ("burn_pass", burn_pass),
        ] {
            reset_peak();
            let t = Instant::now();
            std::hint::black_box(f(store));
            let secs = t.elapsed().as_secs_f64();
            let after = status();
            extra.insert(format!("{key}_seconds"), json!(secs));
            extra.insert(format!("{key}_peak"), json!(after.peak));
            extra.insert(format!("{key}_anon"), json!(after.anon));
            extra.insert(format!("{key}_file"), json!(after.file));
        }
    }
    drop(keep);
    let mut line = json!({"scenario": scenario, "seconds": secs, "bytes": total, "peak": s.peak,
        "anon": s.anon, "file": s.file, "base": base, "cpu_bytes": cpu_bytes});
    line.as_object_mut().unwrap().extend(extra);
    println!("{line}");
}
