//! Every strategy end to end, the run-time room each device keeps, and offload orders.

use safetensors::Dtype;
use serde_json::Value;

use crate::fixtures::*;

pub fn json(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "stderr: {}", stderr(out));
    serde_json::from_str(&stdout(out)).expect("stdout is one JSON object")
}

/// A 24-layer llama-shaped checkpoint with its config, each layer 82,176 bytes (bf16).
fn llama24() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_safetensors(
        &p(dir.path(), "model.safetensors"),
        &llama_tensors(24, 64, Dtype::BF16, false),
    );
    std::fs::write(p(dir.path(), "config.json"), llama_config(24, 64, false)).unwrap();
    dir
}

/// How many of the 24 layers the device map puts on `device` (resolving each layer through
/// its longest listed prefix).
fn layers_on(v: &Value, device: Value) -> usize {
    let map = v["device_map"].as_object().unwrap();
    (0..24)
        .filter(|i| {
            let mut key = format!("model.layers.{i}");
            loop {
                if let Some(d) = map.get(&key) {
                    return *d == device;
                }
                match key.rsplit_once('.') {
                    Some((parent, _)) => key = parent.to_string(),
                    None => return map.get("") == Some(&device),
                }
            }
        })
        .count()
}

fn plan(dir: &std::path::Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "plan",
        s(dir),
        "--json",
        "--max-seq-len",
        "0",
        "--gpu-overhead",
        "0",
    ];
    args.extend_from_slice(extra);
    json(&stowage(&args))
}

#[test]
fn balanced_spreads_evenly_where_sequential_fills_gpu_0() {
    let dir = llama24();
    let budget = ["--gpus", "2x1.5MiB", "--max-memory", "cpu=64MiB"];
    let seq = plan(
        dir.path(),
        &[&budget[..], &["--strategy", "sequential"]].concat(),
    );
    let bal = plan(
        dir.path(),
        &[&budget[..], &["--strategy", "balanced"]].concat(),
    );
    let auto = plan(dir.path(), &budget);
    assert_eq!(bal["device_map"], auto["device_map"], "auto is balanced");
    let (s0, s1) = (layers_on(&seq, 0.into()), layers_on(&seq, 1.into()));
    let (b0, b1) = (layers_on(&bal, 0.into()), layers_on(&bal, 1.into()));
    assert_eq!(s0 + s1, 24);
    assert_eq!(b0 + b1, 24);
    assert!(s0 > s1 + 4, "sequential fills GPU 0 first: {s0}/{s1}");
    assert!(b0.abs_diff(b1) <= 2, "balanced splits evenly: {b0}/{b1}");
}

#[test]
fn balanced_low_0_keeps_gpu_0_nearly_free() {
    let dir = llama24();
    let v = plan(
        dir.path(),
        &[
            "--gpus",
            "3x2MiB",
            "--max-memory",
            "cpu=64MiB",
            "--strategy",
            "balanced_low_0",
        ],
    );
    let alias = plan(
        dir.path(),
        &[
            "--gpus",
            "3x2MiB",
            "--max-memory",
            "cpu=64MiB",
            "--strategy",
            "balanced-low-0",
        ],
    );
    assert_eq!(v["device_map"], alias["device_map"]);
    let used = |i: usize| v["devices"][i]["used_bytes"].as_u64().unwrap();
    assert!(
        used(0) < used(1) / 2 && used(0) < used(2) / 2,
        "{}",
        v["devices"]
    );
    assert_eq!(v["offloaded_bytes"], 0);
}

#[test]
fn optimal_gives_unequal_gpus_proportional_shares() {
    let dir = llama24();
    let v = plan(
        dir.path(),
        &[
            "--gpus",
            "2MiB,1MiB",
            "--max-memory",
            "cpu=64MiB",
            "--strategy",
            "optimal",
        ],
    );
    let (a, b) = (layers_on(&v, 0.into()), layers_on(&v, 1.into()));
    assert_eq!(a + b, 24);
    assert!(
        (15..=17).contains(&a),
        "about two thirds on the larger GPU: {a}/{b}"
    );
    // Sequential, for contrast, packs GPU 0 as full as it goes.
    let seq = plan(
        dir.path(),
        &[
            "--gpus",
            "2MiB,1MiB",
            "--max-memory",
            "cpu=64MiB",
            "--strategy",
            "sequential",
        ],
    );
    assert!(layers_on(&seq, 0.into()) > a);
}

#[test]
fn kv_cache_activations_and_overhead_are_line_items() {
    // Llama-3-8B: 32 layers × 4096 tokens × (2 × 8 heads × 128) × 2 bytes of KV cache, and
    // 4096 × (2 × 4096 + 3 × 14336) × 2 bytes of activations plus 128256 f32 logits.
    let v = json(&stowage(&[
        "plan",
        "builtin:llama-3-8b",
        "--gpus",
        "80GiB",
        "--json",
    ]));
    let gpu = &v["devices"][0];
    assert_eq!(gpu["kv_cache_bytes"], 32u64 * 4096 * 2 * 8 * 128 * 2);
    assert_eq!(
        gpu["activation_bytes"],
        4096u64 * (2 * 4096 + 3 * 14336) * 2 + 128_256 * 4
    );
    assert_eq!(gpu["overhead_bytes"], 512u64 << 20);
    assert_eq!(gpu["reserved_bytes"], 0);
    let sum: u64 = [
        "used_bytes",
        "kv_cache_bytes",
        "activation_bytes",
        "overhead_bytes",
        "reserved_bytes",
        "free_bytes",
    ]
    .iter()
    .map(|k| gpu[k].as_u64().unwrap())
    .sum();
    assert_eq!(sum, 80u64 << 30, "line items add up to the budget");
    // Batch 2 doubles the cache; --max-seq-len 0 and --gpu-overhead 0 turn it all off.
    let v2 = json(&stowage(&[
        "plan",
        "builtin:llama-3-8b",
        "--gpus",
        "80GiB",
        "--json",
        "--batch",
        "2",
    ]));
    assert_eq!(
        v2["devices"][0]["kv_cache_bytes"],
        2 * gpu["kv_cache_bytes"].as_u64().unwrap()
    );
    let off = json(&stowage(&[
        "plan",
        "builtin:llama-3-8b",
        "--gpus",
        "80GiB",
        "--json",
        "--max-seq-len",
        "0",
        "--gpu-overhead",
        "0",
    ]));
    for k in ["kv_cache_bytes", "activation_bytes", "overhead_bytes"] {
        assert_eq!(off["devices"][0][k], 0, "{k}");
    }
}

#[test]
fn runtime_room_moves_layers_off_a_tight_gpu() {
    // 16 GiB of weights on a 17 GiB GPU fit with no run-time room, but not with it.
    let tight = [
        "plan",
        "builtin:llama-3-8b",
        "--gpus",
        "15.5GiB",
        "--max-memory",
        "cpu=64GiB",
        "--json",
    ];
    let with = json(&stowage(&tight));
    let without = json(&stowage(
        &[&tight[..], &["--max-seq-len", "0", "--gpu-overhead", "0"]].concat(),
    ));
    assert_eq!(without["offloaded_bytes"], 0);
    assert!(with["offloaded_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn unknown_architecture_says_no_runtime_reserve() {
    let dir = tempfile::tempdir().unwrap();
    write_safetensors(
        &p(dir.path(), "model.safetensors"),
        &llama_tensors(2, 16, Dtype::F32, false),
    );
    let out = stowage(&["plan", s(dir.path()), "--gpus", "1GiB"]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("no KV-cache or activation reserve"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn experts_first_offloads_only_experts() {
    let v = json(&stowage(&[
        "plan",
        "builtin:mixtral-8x7b",
        "--gpus",
        "2x24GiB",
        "--max-memory",
        "cpu=64GiB",
        "--max-memory",
        "disk=1TiB",
        "--strategy",
        "optimal",
        "--offload-order",
        "experts-first",
        "--json",
    ]));
    let on_cpu: Vec<&str> = v["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["device"] == "cpu")
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert!(!on_cpu.is_empty());
    assert!(
        on_cpu
            .iter()
            .all(|n| n.ends_with(".block_sparse_moe.experts")),
        "{on_cpu:?}"
    );
    // Every layer's attention stays on a GPU.
    let map = v["device_map"].as_object().unwrap();
    for (k, d) in map {
        if k.contains("self_attn") {
            assert!(d.is_number(), "{k} on {d}");
        }
    }
    let last = json(&stowage(&[
        "plan",
        "builtin:mixtral-8x7b",
        "--gpus",
        "2x24GiB",
        "--max-memory",
        "cpu=64GiB",
        "--max-memory",
        "disk=1TiB",
        "--strategy",
        "optimal",
        "--json",
    ]));
    assert!(
        !last["device_map"]["lm_head"].is_number(),
        "by default the head leaves the GPUs first: {}",
        last["device_map"]
    );
    let err = stowage(&[
        "plan",
        "builtin:mixtral-8x7b",
        "--offload-order",
        "experts-first",
    ]);
    assert_clean_error(&err, &["--strategy optimal"]);
}

#[test]
fn explain_gives_reasons() {
    let out = stowage(&[
        "plan",
        "builtin:llama-3-70b",
        "--gpus",
        "2x24GiB",
        "--max-memory",
        "cpu=64GiB",
        "--max-memory",
        "disk=1TiB",
        "--strategy",
        "sequential",
        "--explain",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("why:"), "{text}");
    assert!(text.contains("→ 1: GPU 0 had"), "{text}");
    assert!(text.contains("→ cpu: GPU 1 had"), "{text}");
    assert!(
        text.contains("keeps") && text.contains("largest offloaded unit"),
        "{text}"
    );
}
