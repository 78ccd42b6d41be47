//! `stowage plan` end to end on real files.

use safetensors::Dtype;
use serde_json::Value;

use crate::fixtures::*;

fn json(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "stderr: {}", stderr(out));
    serde_json::from_str(&stdout(out)).expect("stdout is one JSON object")
}

/// Device rank along the placement order: GPUs by index, then cpu, then disk.
fn rank(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(s) if s == "cpu" => 1000,
        Value::String(s) if s == "disk" => 1001,
        other => panic!("not a device: {other}"),
    }
}

#[test]
fn sharded_llama_over_two_gpus_cpu_and_disk() {
    let dir = tempfile::tempdir().unwrap();
    let tensors = llama_tensors(32, 64, Dtype::BF16, false);
    write_sharded(dir.path(), &tensors, 4);
    std::fs::write(p(dir.path(), "config.json"), llama_config(32, 64, false)).unwrap();
    // Each layer is 4·64² + 3·64·128 + 2·64 bf16 values = 82,176 bytes.
    let out = stowage(&[
        "plan",
        s(dir.path()),
        "--max-memory",
        "0=600KiB",
        "--max-memory",
        "1=700KiB",
        "--max-memory",
        "cpu=1MiB",
        "--max-memory",
        "disk=1GiB",
        "--strategy",
        "sequential",
        "--json",
        "--max-seq-len",
        "0",
        "--gpu-overhead",
        "0",
    ]);
    let v = json(&out);
    let map = v["device_map"].as_object().unwrap();
    let keys: Vec<&str> = map.keys().map(String::as_str).collect();
    assert_eq!(keys[0], "model.embed_tokens");
    assert_eq!(*keys.last().unwrap(), "lm_head");
    // Layers appear in numeric order and devices never go backwards.
    let layer_keys: Vec<u64> = keys
        .iter()
        .filter_map(|k| k.strip_prefix("model.layers.")?.parse().ok())
        .collect();
    assert_eq!(layer_keys, (0..32).collect::<Vec<u64>>());
    let ranks: Vec<u64> = map.values().map(rank).collect();
    assert!(
        ranks.windows(2).all(|w| w[0] <= w[1]),
        "devices go backwards: {map:?}"
    );
    // All four devices are used.
    for d in [
        serde_json::json!(0),
        serde_json::json!(1),
        "cpu".into(),
        "disk".into(),
    ] {
        assert!(map.values().any(|x| *x == d), "{d} unused: {map:?}");
    }
    // Budgets hold, reserve included, and every byte is placed exactly once.
    let mut used = 0;
    for d in v["devices"].as_array().unwrap() {
        let (b, u, r) = (
            d["budget_bytes"].as_u64().unwrap(),
            d["used_bytes"].as_u64().unwrap(),
            d["reserved_bytes"].as_u64().unwrap(),
        );
        assert!(u + r <= b, "{d}");
        used += u;
    }
    // Every weight is bf16; cpu holds them as f32 (what the CPU backend stores), twice the size.
    let cpu = v["devices"][2]["used_bytes"].as_u64().unwrap();
    assert_eq!(v["devices"][2]["device"], "cpu");
    assert_eq!(used - cpu / 2, v["total_bytes"].as_u64().unwrap());
    let gpu0 = &v["devices"][0];
    assert_eq!(
        gpu0["reserved_bytes"].as_u64().unwrap(),
        82_176,
        "room for one offloaded layer"
    );
    assert_eq!(v["dtype"], "bf16");
}

#[test]
fn whole_model_on_one_device_is_the_empty_key() {
    let dir = tempfile::tempdir().unwrap();
    write_safetensors(
        &p(dir.path(), "model.safetensors"),
        &llama_tensors(2, 16, Dtype::F32, false),
    );
    let v = json(&stowage(&[
        "plan",
        s(dir.path()),
        "--gpus",
        "1GiB",
        "--json",
    ]));
    assert_eq!(v["device_map"], serde_json::json!({"": 0}));
    assert_eq!(
        v["devices"][0]["reserved_bytes"], 0,
        "nothing offloaded, nothing reserved"
    );
}

#[test]
fn table_names_devices_and_layer_ranges() {
    let dir = tempfile::tempdir().unwrap();
    write_safetensors(
        &p(dir.path(), "model.safetensors"),
        &llama_tensors(8, 64, Dtype::BF16, false),
    );
    let out = stowage(&[
        "plan",
        s(dir.path()),
        "--gpus",
        "400KiB",
        "--max-memory",
        "cpu=100MiB",
        "--gpu-overhead",
        "0",
        "--strategy",
        "sequential",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.contains("planned GPU"), "{table}");
    assert!(table.contains("model.layers.0–"), "{table}");
    assert!(table.contains("offloaded to cpu"), "{table}");
    assert!(table.contains("lm_head"), "{table}");
}

#[test]
fn default_plans_the_builtin_without_a_gpu() {
    let out = stowage(&["plan"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.contains("LlamaForCausalLM"), "{table}");
    assert!(table.contains("8.030 B parameters"), "{table}");
}

#[test]
fn builtins_plan_from_config_alone() {
    for (name, params) in [
        ("llama-3-70b", 70_553_706_496u64),
        ("mixtral-8x7b", 46_702_792_704),
    ] {
        let v = json(&stowage(&[
            "plan",
            &format!("builtin:{name}"),
            "--gpus",
            "2x80GiB",
            "--max-memory",
            "cpu=64GiB",
            "--json",
        ]));
        assert_eq!(v["param_count"].as_u64().unwrap(), params, "{name}");
        assert_eq!(v["dtype"], "bf16");
    }
}

#[test]
fn no_gpu_is_said_plainly() {
    let dir = tempfile::tempdir().unwrap();
    write_safetensors(
        &p(dir.path(), "model.safetensors"),
        &llama_tensors(1, 16, Dtype::F32, false),
    );
    let out = stowage(&["plan", s(dir.path())]);
    assert!(out.status.success());
    if std::path::Path::new("/proc/driver/nvidia").exists() {
        // On a GPU machine the measured GPU 0 is planned, with its driver's name.
        let table = stdout(&out);
        assert!(
            table.contains("│ 0 ") && !table.contains("planned GPU"),
            "{table}"
        );
    } else {
        assert!(
            stderr(&out).contains("planning for cpu and disk"),
            "{}",
            stderr(&out)
        );
    }
}

/// The README's first command says where its checkpoint went and removes it, unless `--keep`.
#[test]
fn demo_says_where_it_wrote_and_removes_it_unless_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let out = stowage_env(&["demo", "--size", "24MiB"], &[("TMPDIR", tmp.path())]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    let removed = text
        .lines()
        .find_map(|l| l.strip_prefix("removed "))
        .unwrap_or_else(|| panic!("no `removed` line in:\n{text}"));
    let path = removed.split(" (").next().unwrap();
    assert!(path.starts_with(s(tmp.path())), "{path}");
    assert!(text.contains(&format!("to {path} in ")), "{text}");
    assert!(
        !std::path::Path::new(path).exists(),
        "{path} is still there"
    );
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);

    let out = stowage_env(
        &["demo", "--size", "24MiB", "--keep"],
        &[("TMPDIR", tmp.path())],
    );
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    let kept = text
        .lines()
        .find_map(|l| l.strip_prefix("kept "))
        .unwrap_or_else(|| panic!("no `kept` line in:\n{text}"));
    let path = std::path::Path::new(kept.split(" (").next().unwrap());
    assert!(
        path.join("model.safetensors.index.json").is_file(),
        "{}",
        path.display()
    );
}
