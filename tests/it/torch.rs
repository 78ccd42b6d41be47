//! PyTorch checkpoints (`pytorch_model.bin`, sharded with `pytorch_model.bin.index.json`):
//! planned from their metadata and loaded exactly as the safetensors checkpoint with the same
//! tensors; hostile and malformed archives refused with errors naming the file.
//!
//! The archives are written by `scripts/torch_save.py` (Python's pickle and zipfile, in the
//! layout torch.save writes) from a safetensors checkpoint the test writes first.

use std::path::Path;
use std::process::Command;

use burn_ndarray::{NdArray, NdArrayDevice};
use stowage::models::token_ids;
use stowage::synthetic::{tiny_config, write_from_config};
use stowage::{DType, Device, Pretrained};

type B = NdArray;
const DEV: NdArrayDevice = NdArrayDevice::Cpu;

/// A tiny Llama in safetensors (`dir/st`) and the same tensors as a torch.save archive
/// (`dir/bin`, with the config), written with `args`.
fn pair(dtype: DType, args: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (st, bin) = (dir.path().join("st"), dir.path().join("bin"));
    std::fs::create_dir_all(&st).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let mut config = tiny_config("llama", 3).unwrap();
    config["torch_dtype"] = if dtype == DType::BF16 {
        "bfloat16"
    } else {
        "float32"
    }
    .into();
    write_from_config(&st, &config, dtype).unwrap();
    std::fs::copy(st.join("config.json"), bin.join("config.json")).unwrap();
    torch_save(&st.join("model.safetensors"), &bin, args);
    dir
}

fn torch_save(src: &Path, out: &Path, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/torch_save.py");
    let status = Command::new("python3")
        .arg(script)
        .arg(src)
        .arg(out)
        .args(args)
        .status()
        .expect("python3 runs");
    assert!(status.success(), "torch_save.py {args:?}");
}

/// Logits of the tiny Llama loaded from `dir` with a block on disk, and the load's checksums.
fn run(dir: &Path, offload: &Path) -> (Vec<f32>, Vec<(String, stowage::Checksum)>) {
    let (llama, _) = Pretrained::new(dir)
        .max_memory_str("cpu=60KiB")
        .max_memory(Device::Disk, 1 << 30)
        .offload_folder(offload)
        .load_llama::<B>(&DEV)
        .unwrap();
    let (logits, trace) = llama.forward(&token_ids::<B>(&[&[4, 5, 6]], &DEV)).unwrap();
    assert!(
        trace
            .units
            .iter()
            .any(|u| u.source == stowage::UnitSource::Disk)
    );
    let (_, report) = Pretrained::new(dir)
        .device_map(Device::Cpu)
        .checksums(true)
        .load_store::<B>(&DEV)
        .unwrap();
    let mut sums = report.checksums;
    sums.sort_by(|a, b| a.0.cmp(&b.0));
    (logits.into_data().to_vec::<f32>().unwrap(), sums)
}

#[test]
fn a_bin_checkpoint_plans_and_loads_as_its_safetensors() {
    // Non-contiguous views (a transpose, rows of a wider storage at an offset), on the CPU and
    // in the disk block, gathered as the file's bytes in row-major order.
    let views = [
        "--transpose",
        "model.layers.0.mlp.up_proj.weight",
        "--transpose",
        "model.layers.2.self_attn.q_proj.weight",
        "--padded",
        "model.layers.1.mlp.down_proj.weight",
        "--padded",
        "model.layers.2.mlp.gate_proj.weight",
        "--transpose",
        "lm_head.weight",
    ];
    for (dtype, args) in [
        (DType::F32, vec![]),
        (DType::BF16, vec![]),
        (DType::F32, vec!["--shards", "2"]),
        (DType::F32, views.to_vec()),
        (DType::BF16, [&["--shards", "2"][..], &views].concat()),
    ] {
        let dir = pair(dtype, &args);
        let (st, bin) = (dir.path().join("st"), dir.path().join("bin"));
        let plan = |d: &Path| {
            let p = Pretrained::new(d)
                .gpus(&[96 << 10])
                .max_memory_str("cpu=64KiB")
                .max_memory(Device::Disk, 1 << 30)
                .plan()
                .unwrap();
            let map = p.plan.device_map(&p.inventory);
            (p.inventory.describe(), map, p.plan.total_bytes)
        };
        assert_eq!(plan(&st), plan(&bin), "{dtype:?} {args:?}");
        let names = |d: &Path| {
            let p = Pretrained::new(d).plan().unwrap();
            let mut v: Vec<_> = p
                .inventory
                .tensors
                .iter()
                .map(|t| (t.name.clone(), t.dtype, t.shape.clone()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&st), names(&bin));
        let strided = Pretrained::new(&bin)
            .plan()
            .unwrap()
            .inventory
            .tensors
            .iter()
            .filter(|t| !t.is_contiguous())
            .count();
        assert_eq!(
            strided,
            args.len() / 2 - args.iter().filter(|a| **a == "--shards").count()
        );
        let offload = tempfile::tempdir().unwrap();
        let (a, sums_a) = run(&st, &offload.path().join("st"));
        let (b, sums_b) = run(&bin, &offload.path().join("bin"));
        assert_eq!(a, b, "{dtype:?} {args:?}: same logits");
        assert_eq!(sums_a, sums_b, "{dtype:?} {args:?}: same tensors");
    }
}

#[test]
fn safetensors_is_preferred_ties_share_storage_and_variants_pick_their_file() {
    let dir = pair(
        DType::F32,
        &["--tie", "lm_head.weight=model.embed_tokens.weight"],
    );
    let bin = dir.path().join("bin");
    let inv = Pretrained::new(&bin).plan().unwrap().inventory;
    let head = &inv.tensors[inv.find("lm_head.weight").unwrap()];
    assert_eq!(head.tied_to.as_deref(), Some("model.embed_tokens.weight"));
    let (store, _) = Pretrained::new(&bin)
        .device_map(Device::Cpu)
        .load_store::<B>(&DEV)
        .unwrap();
    assert_eq!(
        store.float::<2>("lm_head.weight").unwrap().into_data(),
        store
            .float::<2>("model.embed_tokens.weight")
            .unwrap()
            .into_data()
    );

    // Both formats in one folder: safetensors, as transformers picks.
    std::fs::copy(
        dir.path().join("st/model.safetensors"),
        bin.join("model.safetensors"),
    )
    .unwrap();
    let files = |d: &Path, variant: Option<&str>| {
        let mut p = Pretrained::new(d);
        if let Some(v) = variant {
            p = p.variant(v);
        }
        p.plan().unwrap().inventory.files.clone()
    };
    assert!(files(&bin, None)[0].ends_with("model.safetensors"));
    // A variant of the PyTorch file.
    std::fs::rename(
        bin.join("pytorch_model.bin"),
        bin.join("pytorch_model.fp16.bin"),
    )
    .unwrap();
    assert!(files(&bin, Some("fp16"))[0].ends_with("pytorch_model.fp16.bin"));
}

#[test]
fn hostile_and_malformed_archives_are_clear_errors() {
    let marker = Path::new("/tmp/stowage-pwned");
    let _ = std::fs::remove_file(marker);
    let err = |args: &[&str]| {
        let dir = pair(DType::F32, args);
        let bin = dir.path().join("bin");
        let e = Pretrained::new(&bin).plan().unwrap_err().to_string();
        assert!(e.contains("pytorch_model"), "names the file: {e}");
        e
    };
    let e = err(&["--global", "os.system"]);
    assert!(e.contains("`os.system`") && e.contains("refused"), "{e}");
    assert!(!marker.exists(), "nothing in the pickle ran");
    let e = err(&["--global", "builtins.eval"]);
    // Protocol 2 names builtins `__builtin__`, as Python 2 did.
    assert!(e.contains("builtin__.eval`"), "{e}");
    let e = err(&["--expand", "model.layers.0.mlp.up_proj.weight"]);
    assert!(
        e.contains("repeats elements") && e.contains("up_proj"),
        "{e}"
    );
    let e = err(&["--compress"]);
    assert!(e.contains("compressed"), "{e}");

    // Truncated archives, cut at every tenth of the file: errors, never panics.
    let dir = pair(DType::F32, &[]);
    let bin = dir.path().join("bin/pytorch_model.bin");
    let bytes = std::fs::read(&bin).unwrap();
    for tenth in 0..10 {
        std::fs::write(&bin, &bytes[..bytes.len() * tenth / 10]).unwrap();
        let r = Pretrained::new(&bin).plan();
        assert!(r.is_err(), "cut at {tenth}/10 planned");
    }
    // A storage offset past its entry: one byte of the pickle changed is caught or harmless.
    std::fs::write(&bin, &bytes).unwrap();
    let pkl = bytes.windows(8).position(|w| w == b"data.pkl").unwrap();
    for i in (pkl..(pkl + 600).min(bytes.len())).step_by(7) {
        let mut b = bytes.clone();
        b[i] ^= 0x5a;
        std::fs::write(&bin, &b).unwrap();
        let _ = Pretrained::new(&bin).plan(); // must not panic
    }

    // A sharded index naming a shard that is not there.
    let dir = pair(DType::F32, &["--shards", "2"]);
    let bin = dir.path().join("bin");
    std::fs::remove_file(bin.join("pytorch_model-00002-of-00002.bin")).unwrap();
    let e = Pretrained::new(&bin).plan().unwrap_err().to_string();
    assert!(e.contains("pytorch_model-00002-of-00002.bin"), "{e}");
}

/// `stowage convert` writes the .bin again as safetensors: the very bytes the safetensors
/// library (the core of `safetensors.torch.save_file`) writes for the same tensors; sharded
/// above `--max-shard-size`, loading to the same logits.
#[test]
fn convert_writes_what_safetensors_writes() {
    use crate::fixtures::{stderr, stowage};
    let dir = pair(
        DType::BF16,
        &[
            "--shards",
            "2",
            "--transpose",
            "model.layers.1.self_attn.o_proj.weight",
            "--padded",
            "model.embed_tokens.weight",
        ],
    );
    let (st, bin, out) = (
        dir.path().join("st"),
        dir.path().join("bin"),
        dir.path().join("out"),
    );
    let o = stowage(&["convert", bin.to_str().unwrap(), out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let original = std::fs::read(st.join("model.safetensors")).unwrap();
    let views = safetensors::SafeTensors::deserialize(&original).unwrap();
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let want = safetensors::serialize(views.tensors(), Some(metadata)).unwrap();
    let got = std::fs::read(out.join("model.safetensors")).unwrap();
    assert!(got == want, "not the bytes safetensors writes");
    assert!(out.join("config.json").is_file());

    let sharded = dir.path().join("sharded");
    let o = stowage(&[
        "convert",
        bin.to_str().unwrap(),
        sharded.to_str().unwrap(),
        "--max-shard-size",
        "40KiB",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(sharded.join("model.safetensors.index.json").is_file());
    let offload = tempfile::tempdir().unwrap();
    assert_eq!(
        run(&sharded, &offload.path().join("a")).0,
        run(&st, &offload.path().join("b")).0
    );
}
