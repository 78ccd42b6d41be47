//! GPU placement on a real second device: burn's wgpu backend over whatever Vulkan driver is
//! present. CI has no GPU and runs these on Mesa's software driver (lavapipe), where wgpu's
//! default adapter and its CPU adapter are two devices with their own memory.
#![cfg(feature = "wgpu")]

use safetensors::Dtype;
use stowage::planner::{GpuBudget, InventoryOptions, RuntimeOptions};
use stowage::{
    Budgets, Device, DispatchDevice, GpuBackend, Inventory, LoadOptions, PlanOptions, Strategy,
    Targets,
};

use crate::fixtures::*;
use crate::load::{Valued, llama_valued, stored, write_sharded_valued};

fn plan_split(inv: &Inventory, gpu: u64, cpu: u64, dtype: Option<stowage::DType>) -> stowage::Plan {
    let budgets = Budgets {
        gpus: (0..2)
            .map(|index| GpuBudget {
                index,
                name: format!("wgpu {index}"),
                bytes: gpu,
                present: false,
            })
            .collect(),
        cpu_bytes: cpu,
        disk_bytes: 1 << 30,
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

fn values_of(store: &stowage::TensorStore<GpuBackend>, name: &str, rank: usize) -> Vec<f32> {
    let data = match rank {
        1 => store.float::<1>(name).unwrap().into_data(),
        2 => store.float::<2>(name).unwrap().into_data(),
        r => panic!("rank {r}"),
    };
    data.convert::<f32>().to_vec().unwrap()
}

/// The burn device a stored float tensor is on (`None` for disk tensors).
fn device_of(
    store: &stowage::TensorStore<GpuBackend>,
    name: &str,
    rank: usize,
) -> Option<DispatchDevice> {
    if let stowage::StoredTensor::Disk(_) = store.get(name)? {
        return None;
    }
    Some(match rank {
        1 => store.float::<1>(name).unwrap().device(),
        2 => store.float::<2>(name).unwrap().device(),
        r => panic!("rank {r}"),
    })
}

fn check_split(src: &[Valued], dir: &std::path::Path, dtype: Option<stowage::DType>) {
    let inv = Inventory::from_spec(s(dir), &InventoryOptions::default()).unwrap();
    let total = inv.total_bytes(None);
    // GPU 0 keeps room for the largest offloaded unit and takes the embedding, GPU 1 a few
    // layers, the CPU (f32) a few more, the disk the rest.
    let f32_total: u64 = inv.tensors.iter().map(|t| t.elems() * 4).sum();
    let plan = plan_split(&inv, total * 2 / 5, f32_total * 3 / 10, dtype);
    for d in [Device::Gpu(0), Device::Gpu(1), Device::Cpu, Device::Disk] {
        assert!(
            plan.tensor_devices.contains(&d),
            "the plan should use {d}: {:?}",
            plan.tensor_devices
        );
    }
    let targets = Targets::<GpuBackend>::wgpu_first(2).unwrap();
    let opts = LoadOptions {
        offload_folder: dir.join("offload"),
        ..Default::default()
    };
    let (store, report) =
        stowage::load_store::<GpuBackend>(&inv, &plan, targets.clone(), &opts).unwrap();
    assert_eq!(report.loaded, src.len());
    for (name, dtype, shape, v) in src {
        let i = inv.find(name).unwrap();
        let device = plan.tensor_devices[i];
        let want: Vec<f32> = v.iter().map(|&x| stored(*dtype, x)).collect();
        assert_eq!(
            values_of(&store, name, shape.len()),
            want,
            "{name} on {device}"
        );
        if let Some(d) = targets.device(device) {
            assert_eq!(
                device_of(&store, name, shape.len()).as_ref(),
                Some(d),
                "{name}"
            );
        }
    }
    for d in &report.devices {
        assert_eq!(d.actual_bytes, d.planned_bytes, "{}", d.device);
    }
}

#[test]
fn f32_split_over_two_gpus_cpu_and_disk() {
    let dir = tempfile::tempdir().unwrap();
    let src = llama_valued(6, Dtype::F32);
    write_sharded_valued(dir.path(), &src, 3);
    check_split(&src, dir.path(), None);
}

#[test]
fn f16_goes_to_the_gpus_as_stored_and_widened_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let src = llama_valued(6, Dtype::F16);
    write_sharded_valued(dir.path(), &src, 2);
    check_split(&src, dir.path(), None);
}

#[test]
fn bf16_on_a_gpu_without_bf16_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let src = llama_valued(2, Dtype::BF16);
    write_sharded_valued(dir.path(), &src, 1);
    let inv = Inventory::from_spec(s(dir.path()), &InventoryOptions::default()).unwrap();
    let plan = plan_split(&inv, 1 << 30, 1 << 30, None);
    assert_eq!(plan.tensor_devices[0], Device::Gpu(0));
    let targets = Targets::<GpuBackend>::wgpu_first(2).unwrap();
    let err = stowage::load_store::<GpuBackend>(&inv, &plan, targets, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    // Mesa's lavapipe holds f16 but not bf16.
    assert!(
        err.contains("model.embed_tokens.weight")
            && err.contains("BF16")
            && err.contains("--dtype f16"),
        "{err}"
    );
}

#[test]
fn gpu_missing_or_dtype_unheld_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let src = llama_valued(4, Dtype::F32);
    write_sharded_valued(dir.path(), &src, 2);
    let inv = Inventory::from_spec(s(dir.path()), &InventoryOptions::default()).unwrap();
    let total = inv.total_bytes(None);
    let plan = plan_split(&inv, total / 4, total, None);
    assert!(plan.tensor_devices.contains(&Device::Gpu(1)));
    let one = Targets::<GpuBackend>::wgpu_first(1).unwrap();
    let err = stowage::load_store::<GpuBackend>(&inv, &plan, one, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("GPU 1"), "{err}");
    assert!(Targets::<GpuBackend>::wgpu_first(3).is_err());
}

#[test]
fn cli_loads_onto_two_wgpu_devices() {
    let dir = tempfile::tempdir().unwrap();
    let src = llama_valued(6, Dtype::F32);
    write_sharded_valued(dir.path(), &src, 2);
    let inv = Inventory::from_spec(s(dir.path()), &InventoryOptions::default()).unwrap();
    let total = inv.total_bytes(None);
    let gpus = format!("2x{}B", total * 2 / 5);
    let cpu = format!("cpu={}B", total * 3 / 10);
    let offload = dir.path().join("offload");
    let o = stowage(&[
        "load",
        s(dir.path()),
        "--gpus",
        &gpus,
        "--max-memory",
        &cpu,
        "--strategy",
        "sequential",
        "--max-seq-len",
        "0",
        "--gpu-overhead",
        "0",
        "--offload-folder",
        s(&offload),
        "--backend",
        "wgpu",
        "--checksums",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let devices = v["devices"].as_array().unwrap();
    for d in devices {
        assert_eq!(d["planned_bytes"], d["actual_bytes"], "{d}");
    }
    for want in ["0", "1", "cpu", "disk"] {
        let d = devices
            .iter()
            .find(|d| d["device"] == want || d["device"] == want.parse::<u64>().unwrap_or(99))
            .unwrap_or_else(|| panic!("no {want} in {devices:?}"));
        assert!(d["actual_bytes"].as_u64().unwrap() > 0, "{want}: {d}");
    }
    // Checksums of GPU tensors are the file's values.
    let (name, _, _, values) = &src[0];
    let sum: f64 = values.iter().map(|&x| x as f64).sum();
    let got = v["checksums"][name]["sum"].as_f64().unwrap();
    assert!((got - sum).abs() < 1e-6, "{got} vs {sum}");
    assert_eq!(v["checksums"][name]["device"], 0);
}

/// A 6-layer Llama placed: embeddings and layers 0-1 on GPU 0, layers 2-3 on GPU 1, layer 4
/// on the CPU, layer 5 on disk.
fn spread_llama(dir: &std::path::Path) -> (Inventory, stowage::Plan, stowage::Plan) {
    use crate::execute::{DEEP, move_blocks};
    DEEP.write(dir);
    let inv = crate::models::inventory(dir);
    let mut one = crate::models::plan(&inv);
    one.tensor_devices
        .iter_mut()
        .for_each(|d| *d = Device::Gpu(0));
    let mut spread = one.clone();
    for (from, to) in [
        (2, Device::Gpu(1)),
        (3, Device::Gpu(1)),
        (4, Device::Cpu),
        (5, Device::Disk),
    ] {
        spread = move_blocks(&inv, &spread, "model.layers.", to, move |n| n == from);
    }
    (inv, one, spread)
}

fn llama_logits(
    dir: &std::path::Path,
    inv: &Inventory,
    plan: &stowage::Plan,
    options: &stowage::SplitOptions,
) -> (Vec<f32>, stowage::RunTrace) {
    use stowage::models::{LlamaConfig, token_ids};
    let config = LlamaConfig::from_file(&dir.join("config.json")).unwrap();
    let targets = Targets::<GpuBackend>::wgpu_first(2).unwrap();
    let (split, _) = stowage::SplitModel::<GpuBackend, _>::load(
        |d| config.init::<GpuBackend>(d),
        inv,
        plan,
        targets.clone(),
        options,
    )
    .unwrap();
    let ids = token_ids::<GpuBackend>(&[&crate::models::PROMPT], &targets.gpus[0]);
    let (logits, trace) = split.forward(&ids).unwrap();
    (logits.into_data().convert::<f32>().to_vec().unwrap(), trace)
}

#[test]
fn split_llama_on_two_gpus_cpu_and_disk_computes_what_one_gpu_does() {
    use stowage::{OffloadMode, SplitOptions, UnitSource};
    let dir = tempfile::tempdir().unwrap();
    let (inv, one, spread) = spread_llama(dir.path());
    let (want, _) = llama_logits(dir.path(), &inv, &one, &SplitOptions::default());

    // Upload: the cpu and disk layers are copied to GPU 0 before use; everything runs on
    // lavapipe, so the logits are the single-GPU ones exactly.
    for prefetch in [0, 2] {
        let options = SplitOptions {
            mode: OffloadMode::Upload,
            prefetch,
            ..Default::default()
        };
        let (got, trace) = llama_logits(dir.path(), &inv, &spread, &options);
        assert_eq!(got, want, "upload, prefetch {prefetch}");
        let ran: Vec<(Device, UnitSource)> =
            trace.units.iter().map(|u| (u.ran_on, u.source)).collect();
        assert_eq!(
            ran[1..7],
            [
                (Device::Gpu(0), UnitSource::Resident),
                (Device::Gpu(0), UnitSource::Resident),
                (Device::Gpu(1), UnitSource::Resident),
                (Device::Gpu(1), UnitSource::Resident),
                (Device::Gpu(0), UnitSource::Cpu),
                (Device::Gpu(0), UnitSource::Disk),
            ]
        );
    }

    // In place: layer 4 runs on burn-ndarray, layer 5 is read into the CPU and runs there.
    let options = SplitOptions {
        mode: OffloadMode::InPlace,
        prefetch: 1,
        ..Default::default()
    };
    let (got, trace) = llama_logits(dir.path(), &inv, &spread, &options);
    assert_eq!(trace.units[5].ran_on, Device::Cpu);
    assert_eq!(trace.units[6].ran_on, Device::Cpu);
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "in place on the CPU: max abs diff {worst}");
}
