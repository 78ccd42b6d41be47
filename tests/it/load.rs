//! Loading real checkpoints written by the tests, and comparing every loaded value with the
//! source values.

use std::path::Path;

use burn_ndarray::{NdArray, NdArrayDevice};
use half::{bf16, f16};
use safetensors::Dtype;
use stowage::planner::{InventoryOptions, RuntimeOptions};
use stowage::{Budgets, Device, Inventory, LoadOptions, PlanOptions, StoredTensor, Strategy};

use crate::fixtures::*;

/// A tensor with values: name, dtype, shape, values (as f32, rounded to `dtype` when written).
pub(crate) type Valued = (String, Dtype, Vec<usize>, Vec<f32>);

pub(crate) fn values(seed: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 + seed * 13) % 97) as f32 / 8.0 - 6.0)
        .collect()
}

/// The value a reader gets back after `x` was stored as `dtype`.
pub(crate) fn stored(dtype: Dtype, x: f32) -> f32 {
    match dtype {
        Dtype::BF16 => bf16::from_f32(x).to_f32(),
        Dtype::F16 => f16::from_f32(x).to_f32(),
        _ => x,
    }
}

fn encode(dtype: Dtype, v: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::BF16 => v
            .iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect(),
        Dtype::F16 => v
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect(),
        other => panic!("{other:?}"),
    }
}

pub(crate) fn write_valued(path: &Path, tensors: &[Valued]) {
    let data: Vec<Vec<u8>> = tensors.iter().map(|(_, d, _, v)| encode(*d, v)).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&data)
        .map(|((n, d, s, _), b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Writes `src` as `shards` shards with their real values, plus the index.
pub(crate) fn write_sharded_valued(dir: &Path, src: &[Valued], shards: usize) {
    let per = src.len().div_ceil(shards);
    let mut map = serde_json::Map::new();
    for (k, chunk) in src.chunks(per).enumerate() {
        let name = format!("model-{:05}-of-{shards:05}.safetensors", k + 1);
        write_valued(&p(dir, &name), chunk);
        for (t, _, _, _) in chunk {
            map.insert(t.clone(), name.clone().into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

/// A small llama-shaped model with deterministic values.
pub(crate) fn llama_valued(layers: usize, dtype: Dtype) -> Vec<Valued> {
    llama_tensors(layers, 16, dtype, false)
        .into_iter()
        .enumerate()
        .map(|(k, (n, d, s))| {
            let len = s.iter().product();
            (n, d, s, values(k, len))
        })
        .collect()
}

fn plan_for(inv: &Inventory, cpu: u64, disk: u64, dtype: Option<stowage::DType>) -> stowage::Plan {
    let budgets = Budgets {
        gpus: vec![],
        cpu_bytes: cpu,
        disk_bytes: disk,
    };
    let opts = PlanOptions {
        strategy: Strategy::Sequential,
        dtype,
        runtime: RuntimeOptions::off(),
        cpu_float: Some(stowage::DType::F32),
        ..Default::default()
    };
    stowage::plan(inv, &budgets, &opts).unwrap()
}

/// Every tensor in `store` has exactly the source values, as stored by `as_dtype`.
fn assert_values(
    store: &stowage::TensorStore<NdArray>,
    source: &[Valued],
    as_dtype: impl Fn(&str, Dtype) -> Dtype,
) {
    for (name, dtype, shape, v) in source {
        let stored_dtype = as_dtype(name, *dtype);
        let got: Vec<f32> = match shape.len() {
            1 => store
                .float::<1>(name)
                .unwrap()
                .into_data()
                .to_vec()
                .unwrap(),
            2 => store
                .float::<2>(name)
                .unwrap()
                .into_data()
                .to_vec()
                .unwrap(),
            r => panic!("rank {r}"),
        };
        let want: Vec<f32> = v
            .iter()
            .map(|&x| stored(stored_dtype, stored(*dtype, x)))
            .collect();
        assert_eq!(got, want, "{name}");
        assert_eq!(store.get(name).unwrap().shape(), shape.as_slice(), "{name}");
    }
}

fn load(
    inv: &Inventory,
    plan: &stowage::Plan,
    opts: &LoadOptions,
) -> (stowage::TensorStore<NdArray>, stowage::LoadReport) {
    stowage::load_store::<NdArray>(inv, plan, &NdArrayDevice::Cpu, opts).unwrap()
}

#[test]
fn single_f32_all_on_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let src = llama_valued(3, Dtype::F32);
    write_valued(&p(dir.path(), "model.safetensors"), &src);
    let inv = Inventory::from_spec(s(dir.path()), &InventoryOptions::default()).unwrap();
    let plan = plan_for(&inv, 1 << 30, 1 << 30, None);
    let (store, report) = load(&inv, &plan, &LoadOptions::default());
    assert_values(&store, &src, |_, d| d);
    assert_eq!(report.loaded, src.len());
    assert_eq!(
        report.devices[0].planned_bytes,
        report.devices[0].actual_bytes
    );
}

#[test]
fn sharded_bf16_widened_to_f32() {
    let dir = tempfile::tempdir().unwrap();
    let src = llama_valued(4, Dtype::BF16);
    write_sharded_valued(dir.path(), &src, 3);
    let inv = Inventory::from_spec(s(dir.path()), &InventoryOptions::default()).unwrap();
    let plan = plan_for(&inv, 1 << 30, 1 << 30, None);
    let (store, report) = load(&inv, &plan, &LoadOptions::default());
    assert_values(&store, &src, |_, d| d);
    let cpu = &report.devices[0];
    assert_eq!(cpu.device, Device::Cpu);
    assert_eq!(
        cpu.actual_bytes, cpu.planned_bytes,
        "the plan sized cpu floats as f32"
    );
    assert_eq!(cpu.actual_bytes, 2 * inv.total_bytes(None));
}

#[test]
fn tied_head_shares_the_embedding() {
    let dir = tempfile::tempdir().unwrap();
    let src: Vec<Valued> = llama_valued(2, Dtype::F32)
        .into_iter()
        .filter(|t| t.0 != "lm_head.weight")
        .collect();
    write_valued(&p(dir.path(), "model.safetensors"), &src);
    std::fs::write(p(dir.path(), "config.json"), llama_config(2, 16, true)).unwrap();
    let inv = Inventory::from_spec(s(dir.path()), &InventoryOptions::default()).unwrap();
    let plan = plan_for(&inv, 1 << 30, 1 << 30, None);
    let (store, report) = load(&inv, &plan, &LoadOptions::default());
    assert_eq!(
        report.tied,
        [(
            "lm_head.weight".to_string(),
            "model.embed_tokens.weight".to_string()
        )]
    );
    let head: Vec<f32> = store
        .float::<2>("lm_head.weight")
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    let embed: Vec<f32> = store
        .float::<2>("model.embed_tokens.weight")
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    assert_eq!(head, embed);
    // Counted once: the cpu holds exactly the checkpoint's bytes (f32 as stored).
    assert_eq!(report.devices[0].actual_bytes, inv.total_bytes(None));
}

#[test]
fn disk_part_is_read_in_place_and_matches() {
    let dir = tempfile::tempdir().unwrap();
    let src = llama_valued(6, Dtype::BF16);
    write_valued(&p(dir.path(), "model.safetensors"), &src);
    let inv = Inventory::from_spec(s(dir.path()), &InventoryOptions::default()).unwrap();
    // Room on cpu for a few layers as f32; the rest goes to disk.
    let plan = plan_for(&inv, 40 << 10, 1 << 30, None);
    assert!(plan.used_on(Device::Disk) > 0 && plan.used_on(Device::Cpu) > 0);
    let off = tempfile::tempdir().unwrap();
    let opts = LoadOptions {
        offload_folder: off.path().join("o"),
        ..Default::default()
    };
    let (store, report) = load(&inv, &plan, &opts);
    assert!(report.disk_in_place > 0);
    assert!(report.offload.is_none(), "same dtype: nothing written");
    assert!(!off.path().join("o").exists());
    assert!(
        store
            .iter()
            .any(|(_, d, t)| d == Device::Disk && matches!(t, StoredTensor::Disk(_)))
    );
    assert_values(&store, &src, |_, d| d);
}

#[test]
fn f32_to_f16_on_disk_goes_through_the_offload_folder_and_is_never_stale() {
    let dir = tempfile::tempdir().unwrap();
    let path = p(dir.path(), "model.safetensors");
    let src = llama_valued(3, Dtype::F32);
    write_valued(&path, &src);
    let off = tempfile::tempdir().unwrap();
    let folder = off.path().join("offload");
    let opts = LoadOptions {
        offload_folder: folder.clone(),
        ..Default::default()
    };
    let disk_only = |inv: &Inventory| {
        let budgets = Budgets {
            gpus: vec![],
            cpu_bytes: 0,
            disk_bytes: 1 << 30,
        };
        let o = PlanOptions {
            dtype: Some(stowage::DType::F16),
            runtime: RuntimeOptions::off(),
            ..Default::default()
        };
        stowage::plan(inv, &budgets, &o).unwrap()
    };

    let inv = Inventory::from_spec(s(&path), &InventoryOptions::default()).unwrap();
    let (store, report) = load(&inv, &disk_only(&inv), &opts);
    let o = report
        .offload
        .clone()
        .expect("converted tensors were written");
    assert!(!o.reused && o.written_bytes > 0 && o.tensors == src.len());
    assert_values(&store, &src, |_, _| Dtype::F16);
    assert!(folder.join("stowage-offload.json").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Same sources: reused, nothing written.
    let (_, again) = load(&inv, &disk_only(&inv), &opts);
    assert!(again.offload.unwrap().reused);

    // The checkpoint changes: a plan made before refuses to load ...
    std::thread::sleep(std::time::Duration::from_millis(20));
    let changed: Vec<Valued> = src
        .iter()
        .map(|(n, d, s, v)| {
            (
                n.clone(),
                *d,
                s.clone(),
                v.iter().map(|x| x + 1.0).collect(),
            )
        })
        .collect();
    write_valued(&path, &changed);
    let err = stowage::load_store::<NdArray>(&inv, &disk_only(&inv), &NdArrayDevice::Cpu, &opts)
        .unwrap_err();
    assert!(
        err.to_string().contains("changed since it was planned"),
        "{err}"
    );
    // ... and a fresh plan rewrites the folder instead of trusting it.
    let inv = Inventory::from_spec(s(&path), &InventoryOptions::default()).unwrap();
    let (store, report) = load(&inv, &disk_only(&inv), &opts);
    assert!(!report.offload.unwrap().reused);
    assert_values(&store, &changed, |_, _| Dtype::F16);
}

#[test]
fn offload_folder_that_cannot_be_created_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = p(dir.path(), "model.safetensors");
    write_valued(&path, &llama_valued(1, Dtype::F32));
    let blocker = p(dir.path(), "not-a-folder");
    std::fs::write(&blocker, b"x").unwrap();
    let inv = Inventory::from_spec(s(&path), &InventoryOptions::default()).unwrap();
    let budgets = Budgets {
        gpus: vec![],
        cpu_bytes: 0,
        disk_bytes: 1 << 30,
    };
    let o = PlanOptions {
        dtype: Some(stowage::DType::F16),
        runtime: RuntimeOptions::off(),
        ..Default::default()
    };
    let plan = stowage::plan(&inv, &budgets, &o).unwrap();
    let opts = LoadOptions {
        offload_folder: blocker.join("sub"),
        ..Default::default()
    };
    let err = stowage::load_store::<NdArray>(&inv, &plan, &NdArrayDevice::Cpu, &opts).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("not-a-folder/sub") && msg.contains("offload folder"),
        "{msg}"
    );
}

#[test]
fn cli_checksums_match_sums_of_the_file_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let src = llama_valued(4, Dtype::BF16);
    write_sharded_valued(dir.path(), &src, 2);
    let out = stowage(&[
        "load",
        s(dir.path()),
        "--max-memory",
        "cpu=48KiB",
        "--max-memory",
        "disk=1GiB",
        "--max-seq-len",
        "0",
        "--strategy",
        "sequential",
        "--checksums",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let sums = v["checksums"].as_object().unwrap();
    assert_eq!(sums.len(), src.len());
    let mut devices = std::collections::BTreeSet::new();
    // Independently: read each shard with the safetensors crate and sum the bf16 values.
    for k in 1..=2 {
        let bytes =
            std::fs::read(p(dir.path(), &format!("model-{k:05}-of-00002.safetensors"))).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in st.tensors() {
            let vals: Vec<f64> = view
                .data()
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f64())
                .collect();
            let (sum, abs): (f64, f64) = (vals.iter().sum(), vals.iter().map(|x| x.abs()).sum());
            let got = &sums[&name];
            assert!(
                (got["sum"].as_f64().unwrap() - sum).abs() <= 1e-9 * abs.max(1.0),
                "{name}"
            );
            assert!(
                (got["abs_sum"].as_f64().unwrap() - abs).abs() <= 1e-9 * abs.max(1.0),
                "{name}"
            );
            assert_eq!(got["shape"].as_array().unwrap().len(), view.shape().len());
            devices.insert(got["device"].to_string());
        }
    }
    assert_eq!(devices.len(), 2, "cpu and disk both checked: {devices:?}");
    assert!(v["memory"]["peak_bytes"].as_u64().unwrap() > 0);
}

#[test]
#[cfg(not(any(feature = "cuda", feature = "wgpu")))]
fn gpu_in_the_plan_without_cuda_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    write_valued(
        &p(dir.path(), "model.safetensors"),
        &llama_valued(1, Dtype::F32),
    );
    let out = stowage(&[
        "load",
        s(dir.path()),
        "--gpus",
        "1GiB",
        "--gpu-overhead",
        "0",
    ]);
    assert_clean_error(&out, &["--features cuda", "GPU 0"]);
}

#[test]
fn a_config_alone_has_nothing_to_load() {
    let out = stowage(&["load", "builtin:llama-3-8b", "--max-memory", "cpu=64GiB"]);
    assert_clean_error(&out, &["comes from a config", "no weights"]);
}

/// Runs `stowage` with writes capped at `max_file_bytes` per file (`RLIMIT_FSIZE`, with
/// `SIGXFSZ` ignored so that a write past it fails with `EFBIG` as a full disk fails with
/// `ENOSPC`): the offload writer's error path, on a real filesystem.
#[allow(unsafe_code)]
pub(crate) fn stowage_with_file_cap(args: &[&str], max_file_bytes: u64) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_stowage"));
    cmd.args(args).env("NO_COLOR", "1").env_remove("RUST_LOG");
    // SAFETY: between fork and exec only async-signal-safe calls are made (signal,
    // setrlimit), on values owned by the closure.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: max_file_bytes,
                rlim_max: max_file_bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().expect("stowage runs")
}

#[test]
fn a_write_failing_midway_leaves_nothing_a_later_load_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let src = llama_valued(4, Dtype::F32);
    write_sharded_valued(dir.path(), &src, 2);
    let folder = dir.path().join("offload");
    let args = [
        "load",
        s(dir.path()),
        "--dtype",
        "f16",
        "--max-memory",
        "cpu=0",
        "--max-seq-len",
        "0",
        "--offload-folder",
        s(&folder),
        "--json",
    ];
    // Every converted tensor goes to the offload folder; no file may exceed 4 KiB.
    let failed = stowage_with_file_cap(&args, 4096);
    assert_clean_error(&failed, &["offload", "File too large"]);
    let trusted = folder.join("stowage-offload.json");
    assert!(!trusted.exists(), "no index after a failed write");
    let leftovers: Vec<_> = std::fs::read_dir(&folder)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers
            .iter()
            .all(|n| !n.to_string_lossy().contains(".tmp")),
        "temporary files removed: {leftovers:?}"
    );

    // The same load without the cap writes the folder afresh and loads the right values.
    let ok = stowage(&args);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let v: serde_json::Value = serde_json::from_str(&stdout(&ok)).unwrap();
    assert_eq!(v["offload"]["reused"], false);
    assert!(trusted.exists());
    let inv = Inventory::from_spec(s(dir.path()), &InventoryOptions::default()).unwrap();
    let budgets = Budgets {
        gpus: vec![],
        cpu_bytes: 0,
        disk_bytes: 1 << 30,
    };
    let o = PlanOptions {
        dtype: Some(stowage::DType::F16),
        runtime: RuntimeOptions::off(),
        ..Default::default()
    };
    let plan = stowage::plan(&inv, &budgets, &o).unwrap();
    let opts = LoadOptions {
        offload_folder: folder.clone(),
        ..Default::default()
    };
    let (store, report) = load(&inv, &plan, &opts);
    assert!(
        report.offload.unwrap().reused,
        "the folder the CLI wrote is trusted now"
    );
    assert_values(&store, &src, |_, _| Dtype::F16);
}

/// A byte flipped inside the offload data file (length unchanged) is caught on the next load
/// that reuses the folder: that tensor is rewritten from the checkpoint, named in the report,
/// and the values served are the checkpoint's.
#[test]
fn a_flipped_byte_in_the_offload_folder_is_caught_and_repaired() {
    use stowage::{DType, Device, Pretrained};
    let dir = tempfile::tempdir().unwrap();
    let config = stowage::synthetic::tiny_config("llama", 3).unwrap();
    stowage::synthetic::write_from_config(dir.path(), &config, DType::F32).unwrap();
    let offload = tempfile::tempdir().unwrap();
    let load = || {
        Pretrained::new(dir.path())
            .max_memory_str("cpu=16KiB")
            .max_memory(Device::Disk, 1 << 30)
            .max_seq_len(0)
            .dtype(DType::BF16)
            .offload_folder(offload.path())
            .checksums(true)
            .load_store::<burn_ndarray::NdArray>(&burn_ndarray::NdArrayDevice::Cpu)
            .unwrap()
            .1
    };
    let first = load();
    let summary = first.offload.as_ref().expect("offloaded");
    assert!(!summary.reused && summary.written_bytes > 0);
    let data = offload.path().join("stowage-offload.safetensors");
    let mut bytes = std::fs::read(&data).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&data, &bytes).unwrap();
    let second = load();
    let summary = second.offload.as_ref().unwrap();
    assert!(summary.reused);
    assert_eq!(summary.repaired.len(), 1, "{:?}", summary.repaired);
    assert_eq!(first.checksums, second.checksums, "the checkpoint's values");
    let third = load();
    assert!(third.offload.as_ref().unwrap().repaired.is_empty());
}
