//! `stowage plan --quantize`: linear-layer weights sized as the GPUs hold them once
//! quantized, so a model that does not fit in bf16 fits in int4.

use serde_json::Value;

use crate::fixtures::*;

/// Plans builtin Llama-3-70B on two planned 48 GiB GPUs with fixed cpu and disk budgets.
fn plan_70b(extra: &[&str]) -> Value {
    let mut args = vec![
        "plan",
        "builtin:llama-3-70b",
        "--gpus",
        "2x48GiB",
        "--max-memory",
        "cpu=64GiB",
        "--max-memory",
        "disk=1TiB",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = stowage(&args);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("one JSON object")
}

fn offloaded(v: &Value) -> u64 {
    v["offloaded_bytes"].as_u64().unwrap()
}

/// Llama-3-70B's weights with its linear layers quantized to int4 in groups of 128, by hand:
/// every projection's dimensions are multiples of 128, so a weight of `n` values takes
/// `n / 2` bytes of values and `n / 128 × 4` of scales; embeddings, head and norms stay bf16.
fn expected_int4_total() -> u64 {
    let (hidden, inter, kv, vocab, layers) = (8192u64, 28672u64, 1024u64, 128256u64, 80u64);
    let linear = 2 * hidden * hidden + 2 * kv * hidden + 3 * inter * hidden;
    let int4 = |n: u64| n / 2 + n / 128 * 4;
    let per_layer = int4(linear) + 2 * hidden * 2;
    layers * per_layer + 2 * vocab * hidden * 2 + hidden * 2
}

#[test]
fn int4_fits_where_bf16_does_not() {
    let bf16 = plan_70b(&[]);
    let int8 = plan_70b(&["--quantize", "int8"]);
    let int4 = plan_70b(&["--quantize", "int4"]);
    assert!(offloaded(&bf16) > 0, "bf16 should not fit on 2 × 48 GiB");
    assert_eq!(offloaded(&int4), 0, "int4 should fit on 2 × 48 GiB");
    assert!(offloaded(&int8) <= offloaded(&bf16));
    assert!(offloaded(&int4) < offloaded(&bf16));
    assert_eq!(int4["total_bytes"].as_u64().unwrap(), expected_int4_total());
    assert!(int8["total_bytes"].as_u64() > int4["total_bytes"].as_u64());
    assert!(int8["total_bytes"].as_u64() < bf16["total_bytes"].as_u64());
    // Without the flag, the options say nothing about quantization (snapshots are unchanged).
    assert!(bf16["options"].get("quantize").is_none());
    assert_eq!(int4["options"]["quantize"], "int4");
    assert_eq!(int4["options"]["quantize_group"], 128);
    // Every device on the GPUs, and what each GPU holds adds up to the quantized total.
    let gpu_used: u64 = int4["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["device"].is_u64())
        .map(|d| d["used_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(gpu_used, expected_int4_total());
}

/// A smaller group means more scales; the table says how weights are held.
#[test]
fn group_size_and_table() {
    let g128 = plan_70b(&["--quantize", "int4"]);
    let g32 = plan_70b(&["--quantize", "int4", "--quantize-group", "32"]);
    let extra = g32["total_bytes"].as_u64().unwrap() - g128["total_bytes"].as_u64().unwrap();
    // Groups of 32 instead of 128: n/32 - n/128 more scales for a weight of n values, 4 bytes
    // each.
    let (hidden, inter, kv) = (8192u64, 28672u64, 1024u64);
    let linear = 80 * (2 * hidden * hidden + 2 * kv * hidden + 3 * inter * hidden);
    assert_eq!(extra, (linear / 32 - linear / 128) * 4);

    let out = stowage(&[
        "plan",
        "builtin:llama-3-70b",
        "--gpus",
        "2x48GiB",
        "--max-memory",
        "cpu=64GiB",
        "--max-memory",
        "disk=1TiB",
        "--quantize",
        "int4",
    ]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert!(
        stdout(&out).contains("linear weights on GPUs as int4 (groups of 128)"),
        "{}",
        stdout(&out)
    );
}

/// A saved plan keeps its quantization when loaded again with `--plan`.
#[test]
fn saved_plan_reloads_quantization() {
    let dir = tempfile::tempdir().unwrap();
    let saved = plan_70b(&["--quantize", "int8", "--quantize-group", "64"]);
    let path = p(dir.path(), "plan.json");
    std::fs::write(&path, serde_json::to_string(&saved).unwrap()).unwrap();
    let out = stowage(&["plan", "--plan", s(&path), "--json"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let again: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(again["options"]["quantize"], "int8");
    assert_eq!(again["options"]["quantize_group"], 64);
    assert_eq!(again["total_bytes"], saved["total_bytes"]);
    assert_eq!(again["device_map"], saved["device_map"]);
}

#[test]
fn bad_quantization_options() {
    let out = stowage(&[
        "plan",
        "builtin:llama-3-8b",
        "--quantize",
        "int4",
        "--quantize-group",
        "100",
    ]);
    assert_clean_error(&out, &["group size 100", "power of two"]);
    let out = stowage(&["plan", "builtin:llama-3-8b", "--quantize-group", "64"]);
    assert_clean_error(&out, &["--quantize-group needs --quantize"]);
}

/// Weights are quantized as they go to a GPU: a load with no GPU in its plan quantizes
/// nothing, says so, and loads as planned (cpu f32).
#[test]
fn load_quantizes_nothing_without_a_gpu_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    crate::load::write_valued(
        &crate::fixtures::p(dir.path(), "model.safetensors"),
        &crate::load::llama_valued(1, safetensors::Dtype::F32),
    );
    let o = crate::fixtures::stowage(&[
        "load",
        crate::fixtures::s(dir.path()),
        "--quantize",
        "int8",
        "--device-map",
        "cpu",
        "--json",
    ]);
    assert!(o.status.success(), "{}", crate::fixtures::stderr(&o));
    let err = crate::fixtures::stderr(&o);
    assert!(
        err.contains("--quantize int8") && err.contains("nothing is quantized"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_str(&crate::fixtures::stdout(&o)).unwrap();
    assert!(v.get("quantized").is_none(), "{v}");
    for d in v["devices"].as_array().unwrap() {
        assert_eq!(d["planned_bytes"], d["actual_bytes"], "{d}");
    }
}
