//! Synthetic checkpoints for demos and benchmarks: llama-shaped, sharded like the Hub shards,
//! deterministic values, written without any other tool.

use std::io::Write;
use std::path::Path;

use rayon::prelude::*;
use serde_json::{Value, json};
use stowage_planner::DType;

use crate::error::{Error, Result};

/// Llama-shaped widths (TinyLlama-1.1B's), with as many layers as the size allows.
const HIDDEN: usize = 2048;
const INTER: usize = 5632;
const KV: usize = 256;
const VOCAB: usize = 32000;

/// The tensors of a llama-shaped decoder with `layers` layers, in execution order.
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

/// Deterministic values in about ±0.1 as little-endian `dtype` bytes, generated in parallel.
fn values(seed: u64, elems: usize, dtype: DType) -> Vec<u8> {
    let width = (dtype.bits() / 8) as usize;
    let mut out = vec![0u8; elems * width];
    out.par_chunks_mut(width << 16)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ (c as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
            for v in chunk.chunks_exact_mut(width) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let f = ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2;
                match width {
                    4 => v.copy_from_slice(&f.to_le_bytes()),
                    _ if dtype == DType::F16 => {
                        v.copy_from_slice(&half::f16::from_f32(f).to_le_bytes())
                    }
                    _ => v.copy_from_slice(&half::bf16::from_f32(f).to_le_bytes()),
                }
            }
        });
    out
}

fn write_shard(
    path: &Path,
    tensors: &[(String, Vec<usize>)],
    seed: u64,
    dtype: DType,
) -> Result<()> {
    let io = |e| Error::io("write", path, e);
    let width = (dtype.bits() / 8) as usize;
    let mut header = serde_json::Map::new();
    let mut at = 0usize;
    for (name, shape) in tensors {
        let len = shape.iter().product::<usize>() * width;
        header.insert(
            name.clone(),
            json!({"dtype": dtype.as_str(), "shape": shape, "data_offsets": [at, at + len]}),
        );
        at += len;
    }
    let mut header = serde_json::to_vec(&Value::Object(header)).expect("JSON");
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let file = std::fs::File::create(path).map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(8 << 20, file);
    w.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    w.write_all(&header).map_err(io)?;
    for (k, (_, shape)) in tensors.iter().enumerate() {
        w.write_all(&values(seed + k as u64, shape.iter().product(), dtype))
            .map_err(io)?;
    }
    w.flush().map_err(io)?;
    Ok(())
}

/// Writes a llama-shaped checkpoint of about `bytes` (at least one layer) into `dir`, in
/// `dtype` (F32, F16 or BF16): shards of about 256 MiB, `model.safetensors.index.json` and a
/// llama `config.json`. Returns the number of shards.
pub fn write_llama(dir: &Path, bytes: u64, dtype: DType) -> Result<usize> {
    let width = dtype.bits() / 8;
    let layer_elems =
        (2 * HIDDEN * HIDDEN + 2 * KV * HIDDEN + 3 * HIDDEN * INTER + 2 * HIDDEN) as u64;
    let end_elems = (2 * VOCAB * HIDDEN + HIDDEN) as u64;
    let layers = (bytes.saturating_sub(end_elems * width) / (layer_elems * width)).max(1) as usize;
    let mut shards: Vec<Vec<(String, Vec<usize>)>> = vec![Vec::new()];
    let mut size = 0u64;
    for t in tensors(layers) {
        let b = width * t.1.iter().product::<usize>() as u64;
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
        write_shard(&dir.join(&name), shard, (k as u64) << 20, dtype)?;
        for (t, _) in shard {
            map.insert(t.clone(), name.clone().into());
        }
    }
    let index = dir.join("model.safetensors.index.json");
    std::fs::write(
        &index,
        json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .map_err(|e| Error::io("write", &index, e))?;
    let torch_dtype = match dtype {
        DType::F32 => "float32",
        DType::F16 => "float16",
        _ => "bfloat16",
    };
    let config = json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": torch_dtype,
        "hidden_size": HIDDEN, "intermediate_size": INTER, "num_hidden_layers": layers,
        "num_attention_heads": 32, "num_key_value_heads": KV / 64, "vocab_size": VOCAB,
        "tie_word_embeddings": false, "rms_norm_eps": 1e-5,
    });
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config).expect("JSON"))
        .map_err(|e| Error::io("write", &path, e))?;
    Ok(n)
}

/// The config of a tiny model of a shipped architecture (`bert` or `llama`): a few layers of
/// width 32, for doctests, examples and tests; `None` for another `model_type`.
pub fn tiny_config(model_type: &str, layers: u64) -> Option<Value> {
    match model_type {
        "bert" => Some(json!({
            "architectures": ["BertModel"], "model_type": "bert", "torch_dtype": "float32",
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": layers,
            "num_attention_heads": 4, "vocab_size": 128, "max_position_embeddings": 64,
            "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
        })),
        "llama" => Some(json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float32",
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": layers,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
            "tie_word_embeddings": false, "rms_norm_eps": 1e-5,
        })),
        _ => None,
    }
}

/// Writes `config` as `dir/config.json` and every tensor its architecture has (as the
/// planner expands it, [`stowage_planner::arch::expand`]; tied ones once) into
/// `dir/model.safetensors`, in `dtype` (F32, F16 or BF16) with deterministic values in about
/// ±0.1. Returns the tensor names written.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let config = stowage::synthetic::tiny_config("bert", 2).unwrap();
/// let names = stowage::synthetic::write_from_config(dir.path(), &config, stowage::DType::F32)?;
/// assert!(names.contains(&"encoder.layer.1.output.dense.weight".to_string()));
/// # Ok::<(), stowage::Error>(())
/// ```
///
/// # Errors
///
/// A config of an architecture the planner does not know, a dtype that is not a float, and
/// write errors naming the file.
pub fn write_from_config(dir: &Path, config: &Value, dtype: DType) -> Result<Vec<String>> {
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        return Err(Error::options(format!(
            "synthetic checkpoints are f32, f16 or bf16, not {dtype}"
        )));
    }
    let path = dir.join("config.json");
    let text = serde_json::to_string_pretty(config).expect("JSON");
    std::fs::write(&path, &text).map_err(|e| Error::io("write", &path, e))?;
    let parsed = stowage_planner::ModelConfig::from_json_str(&path, &text)?;
    let tensors: Vec<(String, Vec<usize>)> = stowage_planner::arch::expand(&parsed, Some(dtype))?
        .into_iter()
        .filter(|t| t.tied_to.is_none())
        .map(|t| (t.name, t.shape.iter().map(|&d| d as usize).collect()))
        .collect();
    write_shard(&dir.join("model.safetensors"), &tensors, 7, dtype)?;
    Ok(tensors.into_iter().map(|(n, _)| n).collect())
}
