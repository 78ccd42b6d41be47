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

/// Budgets of `gpus` wgpu devices of `gpu` bytes each, `cpu` bytes of RAM and `disk` bytes of
/// disk: never the machine's own.
fn budgets(gpus: u32, gpu: u64, cpu: u64, disk: u64) -> Budgets {
    Budgets {
        gpus: (0..gpus)
            .map(|index| GpuBudget {
                index,
                name: format!("wgpu {index}"),
                bytes: gpu,
                present: false,
            })
            .collect(),
        cpu_bytes: cpu,
        disk_bytes: disk,
    }
}

fn plan_split(inv: &Inventory, gpu: u64, cpu: u64, dtype: Option<stowage::DType>) -> stowage::Plan {
    let budgets = budgets(2, gpu, cpu, 1 << 30);
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

/// A plan of `inv` over two GPUs of `gpu` bytes each holding floats as f32, the rest on cpu.
fn plan_gpu_f32(inv: &Inventory, gpu: u64) -> stowage::Plan {
    let budgets = budgets(2, gpu, 1 << 30, 1 << 30);
    let opts = PlanOptions {
        strategy: Strategy::Sequential,
        runtime: RuntimeOptions::off(),
        cpu_float: Some(stowage::DType::F32),
        gpu_float: Some(stowage::DType::F32),
        ..Default::default()
    };
    stowage::plan(inv, &budgets, &opts).unwrap()
}

/// Lavapipe holds no bf16: with the GPUs holding floats as f32, a bf16 checkpoint crosses as
/// stored and is widened on each device, to exactly `half`'s values, and verified there.
#[test]
fn bf16_widened_on_two_gpus_holds_exactly_halfs_values() {
    let dir = tempfile::tempdir().unwrap();
    let src = llama_valued(6, Dtype::BF16);
    write_sharded_valued(dir.path(), &src, 3);
    let inv = Inventory::from_spec(s(dir.path()), &InventoryOptions::default()).unwrap();
    let f32_total: u64 = inv.tensors.iter().map(|t| t.elems() * 4).sum();
    let plan = plan_gpu_f32(&inv, f32_total * 2 / 5);
    let on_gpus: Vec<usize> = (0..inv.tensors.len())
        .filter(|&i| plan.tensor_devices[i].is_gpu())
        .collect();
    for d in [Device::Gpu(0), Device::Gpu(1), Device::Cpu] {
        assert!(
            plan.tensor_devices.contains(&d),
            "{d}: {:?}",
            plan.tensor_devices
        );
    }
    // The GPUs are sized for f32, twice the checkpoint's bytes.
    let gpu_f32: u64 = on_gpus.iter().map(|&i| inv.tensors[i].elems() * 4).sum();
    assert_eq!(
        plan.used_on(Device::Gpu(0)) + plan.used_on(Device::Gpu(1)),
        gpu_f32
    );

    let targets = Targets::<GpuBackend>::wgpu_first(2).unwrap();
    let opts = LoadOptions {
        offload_folder: dir.path().join("offload"),
        verify: true,
        ..Default::default()
    };
    let (store, report) =
        stowage::load_store::<GpuBackend>(&inv, &plan, targets.clone(), &opts).unwrap();
    assert_eq!(report.widened_on_device, on_gpus.len());
    assert_eq!(report.verified, on_gpus.len());
    for d in &report.devices {
        assert_eq!(d.actual_bytes, d.planned_bytes, "{}", d.device);
    }
    for (name, dtype, shape, v) in &src {
        let i = inv.find(name).unwrap();
        let device = plan.tensor_devices[i];
        let want: Vec<f32> = v
            .iter()
            .map(|&x| half::bf16::from_f32(x).to_f32())
            .collect();
        assert_eq!(*dtype, Dtype::BF16);
        assert_eq!(
            values_of(&store, name, shape.len()),
            want,
            "{name} on {device}"
        );
        if let Some(gpu) = targets.device(device).filter(|_| device.is_gpu()) {
            assert_eq!(device_of(&store, name, shape.len()).as_ref(), Some(gpu));
            let dtype = match shape.len() {
                1 => store.float::<1>(name).unwrap().dtype(),
                _ => store.float::<2>(name).unwrap().dtype(),
            };
            assert_eq!(dtype, burn::tensor::DType::F32, "{name}");
        }
    }
}

/// Writes one safetensors file of raw tensors: name, dtype, shape, little-endian bytes.
fn write_raw_tensors(path: &std::path::Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            let view = safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap();
            (n.to_string(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Every kind of tensor on a GPU verifies: odd counts of bf16 and f16 values widened on the
/// device (the upload padded, the checksum's last word zero-padded), f32 kept, f32 narrowed
/// to f16 on the host, integers, booleans.
#[test]
fn verify_passes_for_every_kind_of_gpu_tensor() {
    use half::{bf16, f16};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let vals = |n: usize| (0..n).map(|i| i as f32 * 0.625 - 3.0).collect::<Vec<f32>>();
    let bf: Vec<u8> = vals(15)
        .iter()
        .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
        .collect();
    let hf: Vec<u8> = vals(7)
        .iter()
        .flat_map(|&x| f16::from_f32(x).to_le_bytes())
        .collect();
    let f: Vec<u8> = vals(5).iter().flat_map(|x| x.to_le_bytes()).collect();
    let ids: Vec<u8> = [3i64, -1, 70000, 0, 5]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    write_raw_tensors(
        &path,
        &[
            ("a.weight", Dtype::BF16, vec![3, 5], bf.clone()),
            ("b.weight", Dtype::F16, vec![7], hf.clone()),
            ("c.weight", Dtype::F32, vec![5], f),
            ("d.ids", Dtype::I64, vec![5], ids),
            ("e.mask", Dtype::BOOL, vec![3], vec![1, 0, 9]),
        ],
    );
    let inv = Inventory::from_spec(s(&path), &InventoryOptions::default()).unwrap();
    let targets = Targets::<GpuBackend>::wgpu_first(1).unwrap();
    for gpu_float in [stowage::DType::F32, stowage::DType::F16] {
        let budgets = budgets(1, 1 << 20, 0, 0);
        let opts = PlanOptions {
            runtime: RuntimeOptions::off(),
            gpu_float: Some(gpu_float),
            ..Default::default()
        };
        let plan = stowage::plan(&inv, &budgets, &opts).unwrap();
        assert!(plan.tensor_devices.iter().all(|d| *d == Device::Gpu(0)));
        let opts = LoadOptions {
            verify: true,
            ..Default::default()
        };
        let (store, report) =
            stowage::load_store::<GpuBackend>(&inv, &plan, targets.clone(), &opts).unwrap();
        assert_eq!(report.verified, 5, "{gpu_float}");
        let widened = if gpu_float == stowage::DType::F32 {
            2
        } else {
            0
        };
        assert_eq!(report.widened_on_device, widened, "{gpu_float}");
        let a = store.float::<2>("a.weight").unwrap().into_data();
        let want: Vec<f32> = bf
            .chunks(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .map(|x| match gpu_float {
                stowage::DType::F16 => f16::from_f32(x).to_f32(),
                _ => x,
            })
            .collect();
        assert_eq!(
            a.convert::<f32>().to_vec::<f32>().unwrap(),
            want,
            "{gpu_float}"
        );
        for d in &report.devices {
            assert_eq!(d.actual_bytes, d.planned_bytes, "{gpu_float} {}", d.device);
        }
    }
}

/// `stowage plan --gpu-float f32 --json` keeps the option in the saved plan (and a plan
/// without it has no such key); `stowage load --plan` of it widens the bf16 checkpoint on the
/// two devices, and `--verify` proves every GPU tensor, in JSON and in the table.
#[test]
fn cli_plans_gpu_float_and_verifies_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let src = llama_valued(4, Dtype::BF16);
    write_sharded_valued(dir.path(), &src, 2);
    let inv = Inventory::from_spec(s(dir.path()), &InventoryOptions::default()).unwrap();
    let f32_total: u64 = inv.tensors.iter().map(|t| t.elems() * 4).sum();
    let gpus = format!("2x{}B", f32_total * 2 / 5);
    let offload = dir.path().join("offload");
    let plan_args = |gpu_float: bool| {
        let mut a = vec![
            "plan",
            s(dir.path()),
            "--gpus",
            &gpus,
            "--max-memory",
            "cpu=1GiB",
            "--strategy",
            "sequential",
            "--max-seq-len",
            "0",
            "--gpu-overhead",
            "0",
            "--offload-folder",
            s(&offload),
            "--json",
        ];
        if gpu_float {
            a.extend(["--gpu-float", "f32"]);
        }
        stowage(&a)
    };
    let plain = plan_args(false);
    assert!(plain.status.success(), "{}", stderr(&plain));
    let plain: serde_json::Value = serde_json::from_str(&stdout(&plain)).unwrap();
    assert!(
        plain["options"].get("gpu_float").is_none(),
        "{}",
        plain["options"]
    );

    let o = plan_args(true);
    assert!(o.status.success(), "{}", stderr(&o));
    let planned: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(planned["options"]["gpu_float"], "f32");
    // Units on the GPUs are sized as f32: 4 bytes a value.
    let under = |name: &str| -> Vec<&Valued> {
        src.iter()
            .filter(|(n, ..)| n == name || n.starts_with(&format!("{name}.")))
            .collect()
    };
    let gpu_units: Vec<&serde_json::Value> = planned["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["device"].is_u64())
        .collect();
    assert!(!gpu_units.is_empty());
    for u in &gpu_units {
        let values: usize = under(u["name"].as_str().unwrap())
            .iter()
            .map(|(.., v)| v.len())
            .sum();
        assert_eq!(u["bytes"], 4 * values as u64, "{u}");
    }
    let saved = dir.path().join("plan.json");
    std::fs::write(&saved, stdout(&o)).unwrap();

    let load = |json: bool| {
        let mut a = vec!["load", "--plan", s(&saved), "--backend", "wgpu", "--verify"];
        if json {
            a.push("--json");
        }
        stowage(&a)
    };
    let o = load(true);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    for d in v["devices"].as_array().unwrap() {
        assert_eq!(d["planned_bytes"], d["actual_bytes"], "{d}");
    }
    let gpu_tensors: usize = gpu_units
        .iter()
        .map(|u| under(u["name"].as_str().unwrap()).len())
        .sum();
    assert!(gpu_tensors > 0);
    assert_eq!(v["widened_on_device"], gpu_tensors);
    assert_eq!(v["verified"], gpu_tensors);

    let o = load(false);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    assert!(
        table.contains(&format!("{gpu_tensors} tensors widened to f32 on the GPUs"))
            && table.contains(&format!("verified: {gpu_tensors} tensors")),
        "{table}"
    );
}

/// The dequantized values of a stored weight, whether burn holds it quantized or in f32.
fn dequantized(store: &stowage::TensorStore<GpuBackend>, name: &str) -> Vec<f32> {
    let t = store.float::<2>(name).unwrap();
    let t = match t.dtype() {
        burn::tensor::DType::QFloat(_) => t.dequantize(),
        _ => t,
    };
    t.into_data().to_vec::<f32>().unwrap()
}

/// Equal bit for bit, any NaN matching any NaN (a device may give another NaN payload).
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || x.is_nan() && y.is_nan())
}

/// `plan.quantize` at load onto two GPUs: the blocks' linear weights cross as the file stores
/// them (f32, bf16 — which lavapipe cannot even hold — and f16) and are quantized there by the
/// kernels; a weight whose rows are not whole groups is quantized on the host instead. Every
/// weight holds the host rule's numbers bit for bit (edge groups included: zeros, values below
/// 2⁻¹¹², an infinity, the largest finite value), `verify` proves each on its device, and what
/// the device-quantized ones take is the planner's figure. The rest is loaded as usual.
#[test]
fn quantize_at_load_on_two_gpus_from_the_files_bytes() {
    use crate::load::{values, write_valued};
    use stowage::QuantizedWeight;
    use stowage::planner::Quantize;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let mut up = values(1, 24 * 32);
    up[..8].fill(0.0);
    up[8..16].fill(1e-36);
    up[16] = f32::INFINITY;
    up[40] = -0.0;
    up[41] = f32::MAX;
    let t = |n: &str, d, s: &[usize], v: Vec<f32>| (n.to_string(), d, s.to_vec(), v);
    let src: Vec<Valued> = vec![
        t(
            "model.embed_tokens.weight",
            Dtype::F32,
            &[10, 32],
            values(0, 320),
        ),
        t(
            "model.layers.0.mlp.up_proj.weight",
            Dtype::F32,
            &[24, 32],
            up,
        ),
        t(
            "model.layers.0.mlp.down_proj.weight",
            Dtype::BF16,
            &[32, 24],
            values(2, 768),
        ),
        t(
            "model.layers.1.self_attn.q_proj.weight",
            Dtype::F16,
            &[16, 32],
            values(3, 512),
        ),
        t(
            "model.layers.1.self_attn.o_proj.weight",
            Dtype::F32,
            &[16, 12],
            values(4, 192),
        ),
        t(
            "model.layers.1.input_layernorm.weight",
            Dtype::F32,
            &[32],
            values(5, 32),
        ),
        t("model.norm.weight", Dtype::F32, &[32], values(6, 32)),
    ];
    write_valued(&path, &src);
    let inv = Inventory::from_spec(s(&path), &InventoryOptions::default()).unwrap();
    let targets = Targets::<GpuBackend>::wgpu_first(2).unwrap();
    for quantize in [Quantize::Int8 { group: 8 }, Quantize::Int4 { group: 8 }] {
        let budgets = budgets(2, 1 << 20, 0, 0);
        let opts = PlanOptions {
            strategy: Strategy::Balanced,
            runtime: RuntimeOptions::off(),
            quantize,
            ..Default::default()
        };
        let plan = stowage::plan(&inv, &budgets, &opts).unwrap();
        for gpu in [Device::Gpu(0), Device::Gpu(1)] {
            assert!(plan.tensor_devices.contains(&gpu), "{quantize}: {plan:?}");
        }
        let opts = LoadOptions {
            verify: true,
            checksums: true,
            ..Default::default()
        };
        let (store, report) =
            stowage::load_store::<GpuBackend>(&inv, &plan, targets.clone(), &opts).unwrap();
        assert_eq!(report.verified, src.len(), "{quantize}");
        let names: Vec<&str> = report.quantized.iter().map(|q| q.tensor.as_str()).collect();
        assert_eq!(names.len(), 4, "{quantize}: {names:?}");
        for (name, dtype, shape, v) in &src {
            let file: Vec<f32> = v.iter().map(|&x| stored(*dtype, x)).collect();
            let Some(q) = report.quantized.iter().find(|q| q.tensor == *name) else {
                assert!(!name.contains("proj"), "{name} was not quantized");
                assert_eq!(values_of(&store, name, shape.len()), file, "{name}");
                continue;
            };
            let (rows, cols) = (shape[0], shape[1]);
            let host = QuantizedWeight::quantize(&file, rows, cols, quantize).unwrap();
            let got = dequantized(&store, name);
            assert!(same_bits(&got, &host.dequantize()), "{quantize} {name}");
            // Rows of whole groups are quantized on the device, packed as the planner sized.
            let whole = cols % 8 == 0;
            assert_eq!(q.on_device, whole, "{quantize} {name}");
            assert!(q.verified, "{quantize} {name}");
            if whole {
                assert_eq!(q.bytes, q.planned_bytes, "{quantize} {name}");
            }
        }
        // `--checksums` of a quantized weight sums its dequantized values.
        let name = "model.layers.1.self_attn.q_proj.weight";
        let sum: f64 = dequantized(&store, name)
            .iter()
            .map(|&x| f64::from(x))
            .sum();
        let (_, c) = report.checksums.iter().find(|(n, _)| n == name).unwrap();
        assert!((c.sum - sum).abs() < 1e-9, "{} vs {sum}", c.sum);
        // The GPUs hold what was planned, but for the one weight quantized on the host in
        // smaller blocks (its scales repeated per block) or held in f32.
        let o_proj = report
            .quantized
            .iter()
            .find(|q| q.tensor.ends_with("o_proj.weight"))
            .unwrap();
        let planned: u64 = report.devices.iter().map(|d| d.planned_bytes).sum();
        let actual: u64 = report.devices.iter().map(|d| d.actual_bytes).sum();
        assert_eq!(actual - o_proj.bytes, planned - o_proj.planned_bytes);
    }
}

/// `stowage load --quantize int4 --verify` on two wgpu devices: every linear weight of the
/// blocks quantized on its GPU and proved there, the GPUs holding exactly what the plan says;
/// the table says so too.
#[test]
fn cli_quantizes_on_the_gpus_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let src = llama_valued(2, Dtype::F16);
    write_sharded_valued(dir.path(), &src, 2);
    let args = |json: bool| {
        let mut a = vec![
            "load",
            s(dir.path()),
            "--gpus",
            "2x1MiB",
            "--max-memory",
            "cpu=0",
            "--max-memory",
            "disk=0",
            "--strategy",
            "balanced",
            "--max-seq-len",
            "0",
            "--gpu-overhead",
            "0",
            "--backend",
            "wgpu",
            "--quantize",
            "int4",
            "--quantize-group",
            "8",
            "--verify",
        ];
        if json {
            a.push("--json");
        }
        stowage(&a)
    };
    let o = args(true);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let linear = src
        .iter()
        .filter(|(n, ..)| n.contains("layers.") && n.contains("proj"))
        .count();
    let q = v["quantized"].as_array().unwrap();
    assert_eq!(q.len(), linear, "{q:?}");
    for t in q {
        assert_eq!(t["on_device"], true, "{t}");
        assert_eq!(t["bytes"], t["planned_bytes"], "{t}");
        assert!(
            t["held_as"].as_str().unwrap().starts_with("int4, packed"),
            "{t}"
        );
    }
    assert_eq!(v["verified"], src.len());
    let devices = v["devices"].as_array().unwrap();
    for d in devices {
        assert_eq!(d["planned_bytes"], d["actual_bytes"], "{d}");
    }
    let o = args(false);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    assert!(
        table.contains(&format!(
            "quantized: {linear} weights on the GPUs ({linear} on the device"
        )) && table.contains("held as int4, packed in u32 words, an f32 scale per 8 values"),
        "{table}"
    );
}

/// A tensor larger than the GPU allocates at once (wgpu binds buffers of limited size) is
/// refused before anything is read, naming the tensor, its size and the device's limit,
/// instead of failing on the device's thread. The checkpoint is sparse: nothing is written.
#[test]
fn a_tensor_larger_than_the_gpu_allocates_is_refused_before_reading() {
    use stowage::DeviceTransforms;
    let targets = Targets::<GpuBackend>::wgpu_first(1).unwrap();
    let max = GpuBackend::max_allocation(&targets.gpus[0]).expect("wgpu reports its limit");
    let elems = max / 4 + 1;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let header = format!(
        r#"{{"small.weight":{{"dtype":"F32","shape":[4],"data_offsets":[0,16]}},"big.weight":{{"dtype":"F32","shape":[{elems}],"data_offsets":[16,{}]}}}}"#,
        16 + 4 * elems
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(bytes.len() as u64 + 16 + 4 * elems).unwrap();
    let inv = Inventory::from_spec(s(&path), &InventoryOptions::default()).unwrap();
    let budgets = budgets(1, 1 << 50, 0, 0);
    let opts = PlanOptions {
        runtime: RuntimeOptions::off(),
        ..Default::default()
    };
    let plan = stowage::plan(&inv, &budgets, &opts).unwrap();
    let err = stowage::load_store::<GpuBackend>(&inv, &plan, targets, &LoadOptions::default())
        .unwrap_err();
    assert!(
        matches!(&err, stowage::Error::TooLargeForGpu { tensor, bytes, max: m, .. }
            if tensor == "big.weight" && *bytes == 4 * elems && *m == max),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("big.weight") && msg.contains("can allocate at once"),
        "{msg}"
    );
}
