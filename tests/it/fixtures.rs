//! Real checkpoints written with the `safetensors` crate into temp folders.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::tensor::{Dtype, TensorView};

/// A tensor to write: name, dtype, shape.
pub type Spec = (String, Dtype, Vec<usize>);

fn dtype_bytes(d: Dtype) -> usize {
    d.bitsize() / 8
}

/// Writes `tensors` (zero-filled) as one safetensors file.
pub fn write_safetensors(path: &Path, tensors: &[Spec]) {
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, d, s)| vec![0u8; s.iter().product::<usize>() * dtype_bytes(*d)])
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&data)
        .map(|((n, d, s), bytes)| (n.clone(), TensorView::new(*d, s.clone(), bytes).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// The tensors of a small llama-shaped decoder with `layers` layers.
pub fn llama_tensors(layers: usize, hidden: usize, dtype: Dtype, tied: bool) -> Vec<Spec> {
    let vocab = 256;
    let inter = hidden * 2;
    let t = |n: String, s: &[usize]| (n, dtype, s.to_vec());
    let mut v = vec![t("model.embed_tokens.weight".into(), &[vocab, hidden])];
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        v.push(t(format!("{p}.input_layernorm.weight"), &[hidden]));
        for proj in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            v.push(t(format!("{p}.self_attn.{proj}.weight"), &[hidden, hidden]));
        }
        v.push(t(format!("{p}.post_attention_layernorm.weight"), &[hidden]));
        v.push(t(format!("{p}.mlp.gate_proj.weight"), &[inter, hidden]));
        v.push(t(format!("{p}.mlp.up_proj.weight"), &[inter, hidden]));
        v.push(t(format!("{p}.mlp.down_proj.weight"), &[hidden, inter]));
    }
    v.push(t("model.norm.weight".into(), &[hidden]));
    if !tied {
        v.push(t("lm_head.weight".into(), &[vocab, hidden]));
    }
    v
}

/// A llama `config.json` matching [`llama_tensors`].
pub fn llama_config(layers: usize, hidden: usize, tied: bool) -> String {
    format!(
        r#"{{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":{hidden},
"intermediate_size":{},"num_hidden_layers":{layers},"num_attention_heads":4,"num_key_value_heads":4,
"vocab_size":256,"torch_dtype":"bfloat16","tie_word_embeddings":{tied},"rms_norm_eps":1e-5}}"#,
        hidden * 2
    )
}

/// Writes `tensors` as `shards` shards plus `model.safetensors.index.json`, splitting by count.
pub fn write_sharded(dir: &Path, tensors: &[Spec], shards: usize) {
    let per = tensors.len().div_ceil(shards);
    let mut map = serde_json::Map::new();
    for (k, chunk) in tensors.chunks(per).enumerate() {
        let name = format!("model-{:05}-of-{:05}.safetensors", k + 1, shards);
        write_safetensors(&dir.join(&name), chunk);
        for (t, _, _) in chunk {
            map.insert(t.clone(), name.clone().into());
        }
    }
    let index = serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

/// Writes a raw safetensors file from a header string and a data length.
pub fn write_raw(path: &Path, header: &str, data_len: usize) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + data_len, 0);
    std::fs::write(path, bytes).unwrap();
}

/// Runs the `stowage` binary with `args` and fixed, machine-independent env.
pub fn stowage(args: &[&str]) -> Output {
    stowage_env(args, &[])
}

/// Runs `stowage` with extra environment variables.
pub fn stowage_env(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stowage"));
    cmd.args(args).env("NO_COLOR", "1").env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("stowage runs")
}

/// stdout as a string.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as a string.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a run failed cleanly: exit code 1, no panic, and stderr mentions every needle.
pub fn assert_clean_error(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "expected exit 1, stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks `{n}`: {err}");
    }
}

/// A path as a `&str`.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `dir/name`.
pub fn p(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
