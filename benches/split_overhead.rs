//! What a split model's forward pass spends on bookkeeping for each offloaded block: matching
//! the block's parameters to the checkpoint, cutting the plan down to it, mapping its file,
//! building the block — everything but reading and computing.
//!
//! Run: `cargo bench --bench split_overhead` (about a minute). It writes a tiny llama-shaped
//! f32 checkpoint with many layers (`STOWAGE_BENCH_LAYERS`, default 64; hidden 64, so each
//! layer is 150 KiB and reading or computing it takes microseconds), then times, as the median
//! of `STOWAGE_BENCH_RUNS` passes (default 15) after one warm-up, a forward pass of 4 tokens:
//! - `resident`: every layer loaded once on the CPU;
//! - `disk`: every layer on disk, brought in when reached (`prefetch 0`, so nothing overlaps).
//!
//! `(disk − resident) / layers` is the cost of bringing one block in; with blocks this small it
//! is nearly all fixed per-block work, not bytes. Results go to stdout and to
//! `target/bench/split_overhead.json`.

#[path = "common/env.rs"]
mod env;

use std::time::Instant;

use burn_ndarray::{NdArray, NdArrayDevice};
use env::{env_or, median};
use safetensors::tensor::{Dtype, TensorView};
use stowage::models::{LlamaConfig, token_ids};
use stowage::planner::{InventoryOptions, RuntimeOptions};
use stowage::{Budgets, DType, Device, Inventory, PlanOptions, SplitModel, SplitOptions};

type B = NdArray;
const DEV: NdArrayDevice = NdArrayDevice::Cpu;
const HIDDEN: usize = 64;
const INTER: usize = 128;
const VOCAB: usize = 64;

fn write_checkpoint(dir: &std::path::Path, layers: usize) {
    let mut shapes = vec![("model.embed_tokens.weight".to_string(), vec![VOCAB, HIDDEN])];
    for i in 0..layers {
        for (name, shape) in [
            ("input_layernorm.weight", vec![HIDDEN]),
            ("self_attn.q_proj.weight", vec![HIDDEN, HIDDEN]),
            ("self_attn.k_proj.weight", vec![HIDDEN / 2, HIDDEN]),
            ("self_attn.v_proj.weight", vec![HIDDEN / 2, HIDDEN]),
            ("self_attn.o_proj.weight", vec![HIDDEN, HIDDEN]),
            ("post_attention_layernorm.weight", vec![HIDDEN]),
            ("mlp.gate_proj.weight", vec![INTER, HIDDEN]),
            ("mlp.up_proj.weight", vec![INTER, HIDDEN]),
            ("mlp.down_proj.weight", vec![HIDDEN, INTER]),
        ] {
            shapes.push((format!("model.layers.{i}.{name}"), shape));
        }
    }
    shapes.push(("model.norm.weight".to_string(), vec![HIDDEN]));
    shapes.push(("lm_head.weight".to_string(), vec![VOCAB, HIDDEN]));
    let bytes: Vec<Vec<u8>> = shapes
        .iter()
        .enumerate()
        .map(|(k, (_, s))| {
            (0..s.iter().product::<usize>())
                .flat_map(|i| (((i * 37 + k * 11) % 23) as f32 / 230.0 - 0.05).to_le_bytes())
                .collect()
        })
        .collect();
    let views: Vec<(String, TensorView)> = shapes
        .iter()
        .zip(&bytes)
        .map(|((n, s), b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float32",
        "hidden_size": HIDDEN, "intermediate_size": INTER, "num_hidden_layers": layers,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": VOCAB,
        "tie_word_embeddings": false, "rms_norm_eps": 1e-5,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

fn main() {
    // `cargo test` runs bench targets without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let layers: usize = env_or("STOWAGE_BENCH_LAYERS", 64);
    let runs: usize = env_or("STOWAGE_BENCH_RUNS", 15);
    let dir = tempfile::tempdir().expect("temp dir");
    write_checkpoint(dir.path(), layers);
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
    let resident = stowage::plan(&inv, &budgets, &opts).expect("plan");
    let mut disk = resident.clone();
    for (t, d) in inv.tensors.iter().zip(disk.tensor_devices.iter_mut()) {
        if t.name.starts_with("model.layers.") {
            *d = Device::Disk;
        }
    }
    let ids = token_ids::<B>(&[&[1, 2, 3, 4]], &DEV);
    let time = |plan: &stowage::Plan| -> (f64, Vec<f32>) {
        let options = SplitOptions {
            prefetch: 0,
            ..SplitOptions::default()
        };
        let (split, _) =
            SplitModel::<B, _>::load(|d| config.init::<B>(d), &inv, plan, &DEV, &options)
                .expect("load");
        let (logits, _) = split.forward(&ids).expect("forward");
        let mut times = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let _ = split.forward(&ids).expect("forward");
            times.push(t.elapsed().as_secs_f64());
        }
        (median(times), logits.into_data().to_vec::<f32>().unwrap())
    };
    let (t_resident, a) = time(&resident);
    let (t_disk, b) = time(&disk);
    assert_eq!(a, b, "a split run computes what a resident one does");
    let per_block = (t_disk - t_resident) / layers as f64;
    println!("| run | forward ms | per block ms |");
    println!("|---|---:|---:|");
    println!(
        "| resident | {:.2} | {:.3} |",
        t_resident * 1e3,
        t_resident * 1e3 / layers as f64
    );
    println!(
        "| disk, prefetch 0 | {:.2} | {:.3} |",
        t_disk * 1e3,
        t_disk * 1e3 / layers as f64
    );
    println!(
        "bringing one block in costs {:.3} ms ({layers} layers, median of {runs})",
        per_block * 1e3
    );
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let json = serde_json::json!({
        "layers": layers, "runs": runs, "resident_s": t_resident, "disk_s": t_disk,
        "per_block_s": per_block,
    });
    std::fs::write(out.join("split_overhead.json"), json.to_string()).unwrap();
}
