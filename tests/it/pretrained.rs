//! `stowage::Pretrained`, the library's front door, against the CLI that is flags over it:
//! the same inputs give the same plans, load reports and outputs; and what only the builder
//! does (config overrides, typed options, loading into a caller's module).

use burn_ndarray::{NdArray, NdArrayDevice};
use serde_json::Value;
use stowage::models::{BertInput, LlamaConfig, token_ids};
use stowage::planner::{InventoryOptions, Quantize};
use stowage::synthetic::{tiny_config, write_from_config};
use stowage::{AutoModel, DType, Device, DeviceMapSpec, Error, Inventory, Pretrained};

use crate::fixtures::{s, stderr, stdout, stowage};

type B = NdArray;
const DEV: NdArrayDevice = NdArrayDevice::Cpu;

/// A tiny model of `model_type` with `layers` layers, written in `dtype`.
fn tiny(model_type: &str, layers: u64, dtype: DType) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config(model_type, layers).unwrap();
    config["torch_dtype"] = match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    }
    .into();
    write_from_config(dir.path(), &config, dtype).unwrap();
    dir
}

/// `stowage <cmd> <args> --json`, parsed.
fn cli_json(cmd: &str, args: &[&str]) -> Value {
    let mut all = vec![cmd];
    all.extend_from_slice(args);
    all.push("--json");
    let out = stowage(&all);
    assert!(out.status.success(), "stowage {all:?}: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// Fixed budgets, so that neither side measures the machine differently.
const FIXED: [&str; 6] = [
    "--gpus",
    "2x96KiB",
    "--max-memory",
    "cpu=64KiB",
    "--max-memory",
    "disk=1GiB",
];

fn fixed(model: &std::path::Path) -> Pretrained {
    Pretrained::new(model)
        .gpus(&[96 << 10, 96 << 10])
        .max_memory(Device::Cpu, 64 << 10)
        .max_memory(Device::Disk, 1 << 30)
}

#[test]
fn library_and_cli_give_identical_plans() {
    let dir = tiny("llama", 6, DType::BF16);
    let m = s(dir.path());
    let cases: Vec<(Vec<&str>, Pretrained)> = vec![
        (vec![], fixed(dir.path())),
        (
            vec!["--strategy", "sequential"],
            fixed(dir.path()).device_map(DeviceMapSpec::Sequential),
        ),
        (
            vec![
                "--strategy",
                "optimal",
                "--quantize",
                "int4",
                "--quantize-group",
                "32",
            ],
            fixed(dir.path())
                .device_map(DeviceMapSpec::Optimal)
                .quantize(Quantize::Int4 { group: 32 }),
        ),
        (
            vec!["--strategy", "balanced_low_0", "--dtype", "f16"],
            fixed(dir.path())
                .device_map(DeviceMapSpec::BalancedLow0)
                .dtype(DType::F16),
        ),
        (
            vec!["--gpu-float", "f32", "--max-seq-len", "16", "--batch", "2"],
            fixed(dir.path())
                .gpu_float(DType::F32)
                .max_seq_len(16)
                .batch(2),
        ),
        (
            vec!["--compat", "accelerate"],
            fixed(dir.path()).compat(stowage::Compat::Accelerate),
        ),
        (
            vec!["--device-map", "disk"],
            fixed(dir.path()).device_map(Device::Disk),
        ),
        (
            vec![
                "--quantize",
                "int4",
                "--quantize-module",
                "mlp.up_proj=int8",
                "--quantize-module",
                "layers.0.**=none",
            ],
            fixed(dir.path())
                .load_in_4bit()
                .quantize_module("mlp.up_proj", stowage::QuantizeAs::Int8)
                .quantize_module_str("layers.0.**=none"),
        ),
        (
            vec!["--max-memory", "0=80KiB", "--gpu-overhead", "1KiB"],
            fixed(dir.path())
                .max_memory_str("0=80KiB")
                .gpu_overhead(1 << 10),
        ),
    ];
    for (flags, builder) in cases {
        let mut args = vec![m];
        args.extend_from_slice(&FIXED);
        args.extend_from_slice(&flags);
        let cli = cli_json("plan", &args);
        let lib = builder.plan().unwrap().to_json();
        assert_eq!(cli, lib, "flags {flags:?}");
    }

    // A saved plan, read back by both.
    let saved = dir.path().join("plan.json");
    let mut args = vec![m];
    args.extend_from_slice(&FIXED);
    args.extend_from_slice(&["--strategy", "sequential"]);
    args.extend_from_slice(&[
        "--quantize",
        "int4",
        "--quantize-module",
        "mlp.up_proj=int8",
    ]);
    std::fs::write(
        &saved,
        stdout(&stowage(&[&["plan"], &args[..], &["--json"]].concat())),
    )
    .unwrap();
    let cli = cli_json("plan", &["--plan", s(&saved)]);
    let lib = Pretrained::maybe(None)
        .device_map_str(s(&saved))
        .plan()
        .unwrap()
        .to_json();
    assert_eq!(cli, lib);
    assert_eq!(lib["strategy"], "sequential");
    assert!(lib.to_string().contains("mlp.up_proj"), "rules kept: {lib}");
}

/// The parts of a load report that do not depend on timing or the process's memory.
fn stable(report: &Value) -> Value {
    let mut r = report.clone();
    for k in ["seconds", "throughput_gbps", "memory", "model"] {
        r.as_object_mut().unwrap().remove(k);
    }
    r
}

#[test]
fn library_and_cli_load_the_same() {
    // f32 checkpoint, bf16 asked: what goes to disk is converted into the offload folder.
    let dir = tiny("llama", 4, DType::F32);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cli = cli_json(
        "load",
        &[
            s(dir.path()),
            "--max-memory",
            "cpu=80KiB",
            "--max-memory",
            "disk=1GiB",
            "--max-seq-len",
            "0",
            "--offload-folder",
            s(a.path()),
            "--dtype",
            "bf16",
            "--checksums",
        ],
    );
    let (store, report) = Pretrained::new(dir.path())
        .max_memory_str("cpu=80KiB")
        .max_memory(Device::Disk, 1 << 30)
        .max_seq_len(0)
        .offload_folder(b.path())
        .dtype(DType::BF16)
        .checksums(true)
        .load_store::<B>(&DEV)
        .unwrap();
    assert!(report.offload.is_some(), "the budget forces disk offload");
    assert_eq!(report.loaded, store.len());
    let lib = serde_json::json!({
        "loaded": report.loaded,
        "tied": report.tied,
        "disk_in_place": report.disk_in_place,
        "offload": report.offload.as_ref().map(|o| serde_json::json!({
            "folder": o.folder, "tensors": o.tensors, "written_bytes": o.written_bytes, "reused": o.reused,
            "repaired": o.repaired,
            "removed_leftovers": o.removed_leftovers.iter().map(|(p, len)| serde_json::json!({"path": p, "bytes": len})).collect::<Vec<_>>(),
        })),
        "devices": report.devices.iter().map(|d| serde_json::json!({
            "device": d.device.to_json(), "planned_bytes": d.planned_bytes, "actual_bytes": d.actual_bytes,
        })).collect::<Vec<_>>(),
        "widened_on_device": report.widened_on_device,
        "verified": report.verified,
        "bytes_read": report.bytes_read,
        "checksums": report.checksums.iter().map(|(n, c)| (n.clone(), serde_json::json!({
            "device": c.device.to_json(), "shape": c.shape, "sum": c.sum, "abs_sum": c.abs_sum,
        }))).collect::<serde_json::Map<_, _>>(),
    });
    let mut cli = stable(&cli);
    cli["offload"]["folder"] = serde_json::json!(b.path());
    // Checksums are f64 sums taken in parallel: equal up to the order of the additions.
    let (mut lib, cli_sums) = (
        stable(&lib),
        cli.as_object_mut().unwrap().remove("checksums"),
    );
    let lib_sums = lib.as_object_mut().unwrap().remove("checksums").unwrap();
    let cli_sums = cli_sums.unwrap();
    assert_eq!(cli, lib);
    assert_eq!(cli_sums.as_object().unwrap().len(), report.loaded);
    for (name, c) in cli_sums.as_object().unwrap() {
        let l = &lib_sums[name];
        assert_eq!(
            (&c["device"], &c["shape"]),
            (&l["device"], &l["shape"]),
            "{name}"
        );
        for k in ["sum", "abs_sum"] {
            let (a, b) = (c[k].as_f64().unwrap(), l[k].as_f64().unwrap());
            assert!(
                (a - b).abs() <= 1e-9 * a.abs().max(1.0),
                "{name} {k}: {a} vs {b}"
            );
        }
    }
    assert!(
        report
            .devices
            .iter()
            .any(|d| d.device == Device::Cpu && d.actual_bytes > 0),
        "some tensors on cpu: {:?}",
        report.devices
    );
}

#[test]
fn library_and_cli_run_the_same() {
    let dir = tiny("llama", 3, DType::F32);
    let cli = cli_json(
        "run",
        &[
            s(dir.path()),
            "--ids",
            "1,2,3",
            "--max-memory",
            "cpu=60KiB",
            "--max-memory",
            "disk=1GiB",
        ],
    );
    let (model, report) = Pretrained::new(dir.path())
        .max_memory_str("cpu=60KiB")
        .max_memory(Device::Disk, 1 << 30)
        .load_auto::<B>(&DEV)
        .unwrap();
    assert!(
        report.blocks.iter().any(|(_, d, _)| *d == Device::Disk),
        "some block is on disk: {:?}",
        report.blocks
    );
    let AutoModel::Llama(split) = model else {
        panic!("a llama config loads as Llama")
    };
    let (logits, _) = split.forward(&token_ids::<B>(&[&[1, 2, 3]], &DEV)).unwrap();
    let [_, seq, vocab] = logits.dims();
    let last: Vec<f32> = logits
        .slice([0..1, seq - 1..seq, 0..vocab])
        .into_data()
        .to_vec()
        .unwrap();
    let cli_values: Vec<f32> = cli["output"]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(cli_values, last);
}

#[test]
fn bert_and_llama_load_in_a_few_lines_and_match_a_whole_module_load() {
    let dir = tiny("bert", 2, DType::F32);
    let (bert, _) = Pretrained::new(dir.path()).load_bert::<B>(&DEV).unwrap();
    let (out, _) = bert
        .forward(&BertInput::from_ids(&[101, 7, 102], &DEV))
        .unwrap();
    assert_eq!(out.last_hidden_state.dims(), [1, 3, 32]);

    // The split Llama (a block on disk) against the whole model loaded as a burn module.
    let dir = tiny("llama", 3, DType::F32);
    let (split, _) = Pretrained::new(dir.path())
        .max_memory_str("cpu=60KiB")
        .max_memory(Device::Disk, 1 << 30)
        .load_llama::<B>(&DEV)
        .unwrap();
    let config = LlamaConfig::from_file(&dir.path().join("config.json")).unwrap();
    let lazy = config.init::<B>(&DEV);
    let renames = lazy.renames();
    let (whole, report) = Pretrained::new(dir.path())
        .device_map(Device::Cpu)
        .renames(renames)
        .load_module(lazy, &DEV)
        .unwrap();
    assert!(report.missing.is_empty() && report.unexpected.is_empty());
    let ids = token_ids::<B>(&[&[4, 5, 6, 7]], &DEV);
    let (a, _) = split.forward(&ids).unwrap();
    let b = whole.forward(ids);
    assert_eq!(
        a.into_data().to_vec::<f32>().unwrap(),
        b.into_data().to_vec::<f32>().unwrap()
    );
}

#[test]
fn config_overrides_plan_and_build_fewer_layers() {
    let dir = tiny("llama", 4, DType::F32);
    let planned = Pretrained::new(dir.path())
        .config_override("num_hidden_layers", 2)
        .device_map(Device::Cpu)
        .plan()
        .unwrap();
    let names: Vec<&str> = planned
        .inventory
        .tensors
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("model.layers.1.")));
    assert!(!names.iter().any(|n| n.starts_with("model.layers.2.")));
    let full = Inventory::from_spec(s(dir.path()), &InventoryOptions::default()).unwrap();
    assert_eq!(full.tensors.len() - planned.inventory.tensors.len(), 2 * 9);
    assert!(planned.plan.total_bytes < full.total_bytes(None));

    let (split, report) = planned.load_llama::<B>(&DEV).unwrap();
    assert_eq!(report.blocks.len(), 2);
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    let (logits, _) = split.forward(&token_ids::<B>(&[&[1, 2]], &DEV)).unwrap();
    assert!(
        logits
            .into_data()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .all(|v| v.is_finite())
    );

    // Reshaping tensors the checkpoint holds is refused, naming the tensor and the file.
    let err = Pretrained::new(dir.path())
        .config_override("hidden_size", 64)
        .plan()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("hidden_size") && err.contains("model.safetensors"),
        "{err}"
    );
    // More layers than the checkpoint has: the missing tensor is named.
    let err = Pretrained::new(dir.path())
        .config_override("num_hidden_layers", 5)
        .plan()
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.layers.4."), "{err}");
}

#[test]
fn bad_options_are_clear_errors() {
    let dir = tiny("llama", 2, DType::F32);
    let err = |b: Pretrained| match b.plan() {
        Err(e) => e.to_string(),
        Ok(_) => panic!("planned"),
    };
    assert!(err(fixed(dir.path()).dtype(DType::I64)).contains("f32, f16 or bf16"));
    assert!(err(fixed(dir.path()).quantize_group(64)).contains("needs --quantize"));
    assert!(err(fixed(dir.path()).quantize_module_str("mlp=int3")).contains("int8, int4 or none"));
    assert!(err(fixed(dir.path()).quantize_module_str("mlp")).contains("PATTERN=int8"));
    assert!(
        err(fixed(dir.path()).quantize_module("a..b", stowage::QuantizeAs::Int8)).contains("a..b")
    );
    assert!(
        err(fixed(dir.path()).offload_order(stowage::OffloadOrder::ExpertsFirst))
            .contains("needs --strategy optimal")
    );
    assert!(err(fixed(dir.path()).max_memory_str("cpu=lots")).contains("lots"));
    assert!(err(Pretrained::new("builtin:nope")).contains("no builtin `nope`"));
    let e = fixed(dir.path())
        .max_memory(Device::Cpu, 1)
        .max_memory(Device::Disk, 1);
    assert!(matches!(e.plan(), Err(Error::Place { .. })));
    // A missing model lists what was tried.
    assert!(err(Pretrained::new(dir.path().join("absent"))).contains("absent"));
}

/// `state_dict`: the tensors of a checkpoint held in memory load as the checkpoint does (a
/// split model with a block on disk, the same logits), with only a `config.json` on disk; a
/// tensor changed in memory changes the output; bad tensors are errors naming them.
#[test]
fn a_state_dict_in_memory_loads_as_its_checkpoint() {
    let dir = tiny("llama", 3, DType::F32);
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let state_dict = |scale_head: f32| {
        let mut sd = stowage::StateDict::new();
        for (name, view) in file.iter() {
            let dtype = DType::from_header(&format!("{:?}", view.dtype())).unwrap();
            let shape: Vec<u64> = view.shape().iter().map(|&d| d as u64).collect();
            let mut data = view.data().to_vec();
            if name == "lm_head.weight" {
                for c in data.chunks_mut(4) {
                    let v = f32::from_le_bytes(c.try_into().unwrap()) * scale_head;
                    c.copy_from_slice(&v.to_le_bytes());
                }
            }
            sd.insert(name, dtype, &shape, data).unwrap();
        }
        sd
    };
    // Only the config on disk: the weights can come from nowhere but memory.
    let config_only = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.path().join("config.json"),
        config_only.path().join("config.json"),
    )
    .unwrap();
    let offload = tempfile::tempdir().unwrap();
    let load = |p: Pretrained| {
        let (llama, report) = p
            .max_memory_str("cpu=60KiB")
            .max_memory(Device::Disk, 1 << 30)
            .offload_folder(offload.path())
            .load_llama::<B>(&DEV)
            .unwrap();
        assert!(report.blocks.iter().any(|(_, d, _)| *d == Device::Disk));
        let (logits, _) = llama.forward(&token_ids::<B>(&[&[4, 5, 6]], &DEV)).unwrap();
        logits.into_data().to_vec::<f32>().unwrap()
    };
    let from_file = load(Pretrained::new(dir.path()));
    let from_memory = load(Pretrained::new(config_only.path()).state_dict(state_dict(1.0)));
    assert_eq!(from_file, from_memory);
    let scaled = load(Pretrained::new(config_only.path()).state_dict(state_dict(2.0)));
    assert_ne!(scaled, from_file);
    for (a, b) in scaled.iter().zip(&from_file) {
        assert!(
            (a - 2.0 * b).abs() <= 1e-4 * (1.0 + b.abs()),
            "{a} vs 2 × {b}"
        );
    }
    // The same tensors again reuse the file written the first time.
    let written = |p: &std::path::Path| {
        std::fs::read_dir(p)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("stowage-state-dict-")
            })
            .count()
    };
    assert_eq!(
        written(offload.path()),
        2,
        "one file per distinct state dict"
    );

    // Bad tensors name themselves.
    let mut sd = stowage::StateDict::new();
    let e = sd
        .insert("w", DType::F32, &[2, 3], vec![0u8; 20])
        .unwrap_err();
    assert!(
        e.to_string().contains("`w`") && e.to_string().contains("24"),
        "{e}"
    );
    let e = Pretrained::maybe(None)
        .state_dict(stowage::StateDict::new())
        .plan()
        .unwrap_err();
    assert!(e.to_string().contains("no tensors"), "{e}");
}

/// T5 in f16 keeps its feed-forward output projections (`wo`) in f32, as transformers'
/// `_keep_in_fp32_modules` does: planned at 4 bytes a value, kept f32 on disk, the rest f16.
#[test]
fn t5_in_f16_keeps_wo_in_f32() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "model_type": "t5", "architectures": ["T5ForConditionalGeneration"],
        "d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4, "num_layers": 2,
        "num_decoder_layers": 2, "vocab_size": 64, "feed_forward_proj": "relu",
        "relative_attention_num_buckets": 8, "tie_word_embeddings": true,
    });
    write_from_config(dir.path(), &config, DType::F32).unwrap();
    let offload = tempfile::tempdir().unwrap();
    let planned = Pretrained::new(dir.path())
        .dtype(DType::F16)
        .device_map(Device::Disk)
        .offload_folder(offload.path())
        .plan()
        .unwrap();
    let inv = &planned.inventory;
    let mut kept = 0;
    let mut want_total = 0;
    for t in inv.tensors.iter().filter(|t| t.tied_to.is_none()) {
        let is_wo = t.name.split('.').any(|s| s == "wo");
        kept += usize::from(is_wo);
        let per_value = if is_wo { 4 } else { 2 };
        assert_eq!(
            inv.bytes_of(t, Some(DType::F16)),
            per_value * t.elems(),
            "{}",
            t.name
        );
        want_total += per_value * t.elems();
    }
    assert_eq!(kept, 4, "2 encoder + 2 decoder layers");
    assert_eq!(planned.plan.total_bytes, want_total);

    let (store, _) = planned.load_store::<B>(&DEV).unwrap();
    for (name, device, stored) in store.iter() {
        assert_eq!(device, Device::Disk);
        let stowage::StoredTensor::Disk(d) = stored else {
            panic!("{name} not on disk")
        };
        let want = if name.split('.').any(|s| s == "wo") {
            DType::F32
        } else {
            DType::F16
        };
        assert_eq!(d.dtype, want, "{name}");
    }
}
