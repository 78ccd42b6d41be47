//! Explicit device maps, saved plans loaded again, and diffs between plans.

use safetensors::Dtype;

use crate::fixtures::*;
use crate::strategies::json;

fn model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_safetensors(
        &p(dir.path(), "model.safetensors"),
        &llama_tensors(4, 32, Dtype::F32, true),
    );
    std::fs::write(p(dir.path(), "config.json"), llama_config(4, 32, true)).unwrap();
    dir
}

fn with_map(dir: &std::path::Path, map: &str) -> std::process::Output {
    stowage(&[
        "plan",
        s(dir),
        "--gpus",
        "2x1GiB",
        "--max-memory",
        "cpu=1GiB",
        "--max-memory",
        "disk=1GiB",
        "--device-map",
        map,
        "--json",
    ])
}

#[test]
fn a_valid_map_is_used_as_given() {
    let dir = model();
    let map = r#"{"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1, "model.layers.2": 1, "model.layers.3": "cpu", "model.norm": "cpu", "lm_head": 0}"#;
    let v = json(&with_map(dir.path(), map));
    assert_eq!(v["device_map"]["model.layers.3"], "cpu");
    assert_eq!(v["device_map"]["model.layers.1"], 1);
    assert_eq!(v["options"]["explicit_device_map"], true);
    let single = json(&with_map(dir.path(), "cpu"));
    assert_eq!(single["device_map"], serde_json::json!({"": "cpu"}));
    let gpu = json(&with_map(dir.path(), "cuda:1"));
    assert_eq!(gpu["device_map"], serde_json::json!({"": 1}));
}

#[test]
fn bad_maps_are_clear_errors() {
    let dir = model();
    let cases: [(&str, &[&str]); 6] = [
        (r#"{"model": 0}"#, &["lm_head", "no entry"]),
        (
            r#"{"": 0, "model.ghost": 1}"#,
            &["model.ghost", "no module or tensor"],
        ),
        (
            r#"{"": 0, "model.layers.2.mlp": 1}"#,
            &["model.layers.2", "splits"],
        ),
        (
            r#"{"": 0, "lm_head": 1}"#,
            &["lm_head.weight", "tied", "model.embed_tokens.weight"],
        ),
        (r#"{"": 7}"#, &["device 7", "--max-memory 7="]),
        (r#"{"": "tpu"}"#, &["tpu"]),
    ];
    for (map, needles) in cases {
        assert_clean_error(&with_map(dir.path(), map), needles);
    }
    let out = stowage(&[
        "plan",
        s(dir.path()),
        "--gpus",
        "1KiB",
        "--device-map",
        "0",
        "--gpu-overhead",
        "0",
    ]);
    assert_clean_error(&out, &["GPU 0", "budget is 1.00 KiB"]);
}

#[test]
fn a_saved_plan_loads_exactly_as_planned() {
    let dir = model();
    let saved = tempfile::NamedTempFile::new().unwrap();
    let first = stowage(&[
        "plan",
        s(dir.path()),
        "--gpus",
        "40KiB,30KiB",
        "--max-memory",
        "cpu=1MiB",
        "--max-memory",
        "disk=1GiB",
        "--gpu-overhead",
        "1KiB",
        "--max-seq-len",
        "16",
        "--strategy",
        "optimal",
        "--json",
    ]);
    let a = json(&first);
    std::fs::write(saved.path(), stdout(&first)).unwrap();
    // No budgets, no options: everything comes from the file.
    let b = json(&stowage(&["plan", "--plan", s(saved.path()), "--json"]));
    assert_eq!(a["device_map"], b["device_map"]);
    assert_eq!(a["devices"], b["devices"]);
    assert_eq!(a["budgets"], b["budgets"]);
    assert_eq!(b["options"]["max_seq_len"], 16);
    assert!(b["devices"][1]["used_bytes"].as_u64().unwrap() > 1024);
    // A what-if on top of the saved plan: less memory on GPU 1 breaks its map.
    let smaller = stowage(&["plan", "--plan", s(saved.path()), "--max-memory", "1=1KiB"]);
    assert_clean_error(&smaller, &["GPU 1", "budget"]);
}

#[test]
fn diff_shows_moves_and_device_changes() {
    let out = stowage(&[
        "plan",
        "builtin:llama-3-70b",
        "--gpus",
        "2x48GiB",
        "--max-memory",
        "cpu=64GiB",
        "--max-memory",
        "disk=1TiB",
        "--diff",
        "--gpus 3x48GiB",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("cpu → 2"), "{text}");
    assert!(text.contains("0 B → 48.00 GiB"), "{text}");

    let dtype = stowage(&[
        "plan",
        "builtin:llama-3-8b",
        "--gpus",
        "2x8GiB",
        "--max-memory",
        "cpu=64GiB",
        "--diff",
        "--dtype f32 --strategy optimal",
        "--json",
    ]);
    let d = json(&dtype);
    assert_eq!(
        d["options"]["strategy"],
        serde_json::json!(["balanced", "optimal"])
    );
    assert!(!d["moves"].as_array().unwrap().is_empty());

    let bad = stowage(&["plan", "builtin:llama-3-8b", "--diff", "--strategy nope"]);
    assert_clean_error(&bad, &["--diff"]);
}

#[test]
fn diff_of_two_saved_plans() {
    let a = tempfile::NamedTempFile::new().unwrap();
    let b = tempfile::NamedTempFile::new().unwrap();
    let save = |f: &tempfile::NamedTempFile, gpus: &str| {
        let out = stowage(&[
            "plan",
            "builtin:llama-3-8b",
            "--gpus",
            gpus,
            "--max-memory",
            "cpu=64GiB",
            "--json",
        ]);
        assert!(out.status.success());
        std::fs::write(f.path(), stdout(&out)).unwrap();
    };
    save(&a, "8GiB");
    save(&b, "2x8GiB");
    let out = stowage(&["diff", s(a.path()), s(b.path())]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("cpu → 1"), "{}", stdout(&out));
    let bad = stowage(&["diff", s(a.path()), "/no/such/plan.json"]);
    assert_clean_error(&bad, &["/no/such/plan.json"]);
}

/// Found by the parser sweep (a saved plan's `max_seq_len` of 2^64 - 1 with its map): the
/// run-time room of an explicit map saturates and is refused over budget instead of
/// overflowing (a panic, exit 101).
#[test]
fn an_absurd_run_time_room_with_a_map_is_over_budget() {
    let dir = model();
    let map = r#"{"model.embed_tokens": 0, "model.layers": 1, "model.norm": "cpu", "lm_head": 0}"#;
    for len in ["18446744073709551615", "4611686018427387904"] {
        let mut args = vec!["plan", s(dir.path()), "--gpus", "2x1GiB"];
        args.extend(["--max-memory", "cpu=1GiB", "--max-memory", "disk=1GiB"]);
        args.extend(["--device-map", map, "--max-seq-len", len]);
        let out = stowage(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("budget") && !err.contains("overflow"), "{err}");
        eprintln!("{err}");
    }
}
