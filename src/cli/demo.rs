//! `stowage demo`: the whole pipeline with nothing downloaded. Writes a realistic sharded
//! checkpoint (llama-shaped, bf16, about 1 GiB by default), plans it with a RAM budget that
//! forces part of it to disk, loads it, and prints the plan, the load report and peak memory
//! against the model's size.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use rayon::prelude::*;
use serde_json::{Value, json};
use stowage::planner::InventoryOptions;
use stowage::{BudgetOverrides, DType, Device, Inventory, LoadOptions, PlanOptions, format_bytes};

use super::Output;

/// Arguments of `stowage demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Size of the checkpoint to write (bf16 weights)
    #[arg(long, default_value = "1GiB")]
    size: String,

    /// Folder to write it into (default: a temporary folder, removed afterwards)
    #[arg(long)]
    dir: Option<PathBuf>,

    /// RAM budget for the plan [default: the checkpoint's size, so about half of the model,
    /// widened to f32 on the CPU, goes to disk]
    #[arg(long, value_name = "SIZE")]
    cpu: Option<String>,
}

/// Llama-shaped dimensions: TinyLlama-1.1B's widths, with as many layers as the size allows.
const HIDDEN: usize = 2048;
const INTER: usize = 5632;
const KV: usize = 256;
const VOCAB: usize = 32000;

fn tensors(layers: usize) -> Vec<(String, Vec<usize>)> {
    let mut t = vec![("model.embed_tokens.weight".to_string(), vec![VOCAB, HIDDEN])];
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        t.push((format!("{p}.input_layernorm.weight"), vec![HIDDEN]));
        t.push((format!("{p}.self_attn.q_proj.weight"), vec![HIDDEN, HIDDEN]));
        t.push((format!("{p}.self_attn.k_proj.weight"), vec![KV, HIDDEN]));
        t.push((format!("{p}.self_attn.v_proj.weight"), vec![KV, HIDDEN]));
        t.push((format!("{p}.self_attn.o_proj.weight"), vec![HIDDEN, HIDDEN]));
        t.push((format!("{p}.post_attention_layernorm.weight"), vec![HIDDEN]));
        t.push((format!("{p}.mlp.gate_proj.weight"), vec![INTER, HIDDEN]));
        t.push((format!("{p}.mlp.up_proj.weight"), vec![INTER, HIDDEN]));
        t.push((format!("{p}.mlp.down_proj.weight"), vec![HIDDEN, INTER]));
    }
    t.push(("model.norm.weight".to_string(), vec![HIDDEN]));
    t.push(("lm_head.weight".to_string(), vec![VOCAB, HIDDEN]));
    t
}

/// Deterministic bf16 values in about ±0.1, generated in parallel.
fn values(seed: u64, elems: usize) -> Vec<u8> {
    let mut out = vec![0u8; elems * 2];
    out.par_chunks_mut(1 << 17)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ (c as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
            for v in chunk.chunks_exact_mut(2) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let f = ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2;
                v.copy_from_slice(&half::bf16::from_f32(f).to_le_bytes());
            }
        });
    out
}

fn write_shard(path: &Path, tensors: &[(String, Vec<usize>)], seed: u64) -> anyhow::Result<()> {
    let mut header = serde_json::Map::new();
    let mut at = 0usize;
    for (name, shape) in tensors {
        let len = shape.iter().product::<usize>() * 2;
        header.insert(
            name.clone(),
            json!({"dtype": "BF16", "shape": shape, "data_offsets": [at, at + len]}),
        );
        at += len;
    }
    let mut header = serde_json::to_vec(&Value::Object(header))?;
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let file = std::fs::File::create(path)
        .with_context(|| format!("cannot create `{}`", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(8 << 20, file);
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(&header)?;
    for (k, (_, shape)) in tensors.iter().enumerate() {
        w.write_all(&values(seed + k as u64, shape.iter().product()))?;
    }
    w.flush()?;
    Ok(())
}

/// Writes the checkpoint (shards of about 256 MiB, an index and a llama config) into `dir`.
fn write_checkpoint(dir: &Path, bytes: u64) -> anyhow::Result<usize> {
    let layer_bytes =
        2 * (2 * HIDDEN * HIDDEN + 2 * KV * HIDDEN + 3 * HIDDEN * INTER + 2 * HIDDEN) as u64;
    let ends = 2 * (2 * VOCAB * HIDDEN + HIDDEN) as u64;
    let layers = (bytes.saturating_sub(ends) / layer_bytes).max(1) as usize;
    let all = tensors(layers);
    let mut shards: Vec<Vec<(String, Vec<usize>)>> = vec![Vec::new()];
    let mut size = 0u64;
    for t in all {
        let b = 2 * t.1.iter().product::<usize>() as u64;
        if size + b > (256 << 20) && !shards.last().expect("one shard").is_empty() {
            shards.push(Vec::new());
            size = 0;
        }
        size += b;
        shards.last_mut().expect("one shard").push(t);
    }
    let n = shards.len();
    let mut map = serde_json::Map::new();
    for (k, shard) in shards.iter().enumerate() {
        let name = format!("model-{:05}-of-{n:05}.safetensors", k + 1);
        write_shard(&dir.join(&name), shard, (k as u64) << 20)?;
        for (t, _) in shard {
            map.insert(t.clone(), name.clone().into());
        }
    }
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        json!({"metadata": {}, "weight_map": map}).to_string(),
    )?;
    let config = json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16",
        "hidden_size": HIDDEN, "intermediate_size": INTER, "num_hidden_layers": layers,
        "num_attention_heads": 32, "num_key_value_heads": KV / 64, "vocab_size": VOCAB,
        "tie_word_embeddings": false, "rms_norm_eps": 1e-5,
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    Ok(n)
}

pub fn run(args: DemoArgs, out: Output) -> anyhow::Result<ExitCode> {
    let size = stowage::parse_size(&args.size)?;
    let temp = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("cannot create a temporary folder")?),
    };
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.as_ref().expect("temp").path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let mut stdout = std::io::stdout().lock();

    let started = std::time::Instant::now();
    let shards = write_checkpoint(&dir, size)?;
    let inventory = Inventory::from_spec(
        dir.to_str().context("non-UTF-8 path")?,
        &InventoryOptions::default(),
    )?;
    let model_bytes = inventory.total_bytes(None);
    writeln!(
        stdout,
        "wrote {} ({} shards, {}) to {} in {:.1} s",
        inventory.describe(),
        shards,
        format_bytes(model_bytes),
        dir.display(),
        started.elapsed().as_secs_f64()
    )?;

    // No GPU in this build: plan for cpu and disk, with RAM for about half the model.
    let cpu = match &args.cpu {
        Some(c) => stowage::parse_size(c)?,
        None => model_bytes,
    };
    let offload_folder = dir.join("offload");
    let overrides = BudgetOverrides {
        gpus: Some(Vec::new()),
        max_memory: vec![(Device::Cpu, cpu)],
    };
    let budgets = stowage::probe(&offload_folder).budgets(&overrides)?;
    let options = PlanOptions {
        cpu_float: Some(DType::F32),
        ..PlanOptions::default()
    };
    let plan = stowage::plan(&inventory, &budgets, &options)?;
    writeln!(stdout)?;
    super::table::write_plan(
        &mut stdout,
        &dir.display().to_string(),
        &inventory,
        &plan,
        out.color,
    )?;

    let opts = LoadOptions {
        offload_folder,
        ..LoadOptions::default()
    };
    let (store, report) = stowage::load_store::<burn_ndarray::NdArray>(
        &inventory,
        &plan,
        &burn_ndarray::NdArrayDevice::Cpu,
        &opts,
    )?;
    writeln!(stdout)?;
    super::load::write_report(&mut stdout, &dir.display().to_string(), &report)?;
    let on_cpu = report
        .devices
        .iter()
        .find(|d| d.device == Device::Cpu)
        .map_or(0, |d| d.actual_bytes);
    writeln!(
        stdout,
        "peak RSS {} = {:.2}x the {} the cpu holds (f32), {:.2}x the {} checkpoint; {} tensors loaded",
        format_bytes(report.memory.peak_bytes),
        report.memory.peak_bytes as f64 / on_cpu.max(1) as f64,
        format_bytes(on_cpu),
        report.memory.peak_bytes as f64 / model_bytes.max(1) as f64,
        format_bytes(model_bytes),
        store.len(),
    )?;
    drop(temp);
    Ok(ExitCode::SUCCESS)
}
