//! `stowage plan --compat accelerate` against the device maps the real tools computed for the
//! same config and budgets (`tests/fixtures/accelerate/`, written by
//! `scripts/accelerate_fixtures.py` with torch 2.15.0, transformers 5.24.0, accelerate 1.15.0).
//!
//! The maps are compared key for key: in compat mode stowage writes Accelerate's keys,
//! parameterless modules (`model.rotary_emb`, `transformer.drop`) included.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::fixtures::*;

fn fixtures() -> Vec<(PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/accelerate");
    let mut out: Vec<(PathBuf, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

type Map = BTreeMap<String, Value>;

fn plan_json(v: &Value) -> Value {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), v["config"].to_string()).unwrap();
    let mut args: Vec<String> = vec![
        "plan".into(),
        dir.path().to_str().unwrap().into(),
        "--compat".into(),
        "accelerate".into(),
        "--strategy".into(),
        v["strategy"].as_str().unwrap().into(),
        "--dtype".into(),
        v["dtype"].as_str().unwrap().into(),
        "--json".into(),
    ];
    let max_memory = v["max_memory"].as_object().unwrap();
    for (device, bytes) in max_memory {
        args.push("--max-memory".into());
        args.push(format!("{device}={bytes}"));
    }
    // Accelerate never checks the disk budget; stowage's default would be measured.
    if !max_memory.contains_key("disk") {
        args.extend(["--max-memory".into(), "disk=1TiB".into()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = stowage(&args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("stdout is one JSON object")
}

#[test]
fn plans_match_accelerate_fixtures() {
    let all = fixtures();
    assert!(all.len() >= 20, "only {} fixtures", all.len());
    for (path, v) in &all {
        let name = path.file_name().unwrap().to_string_lossy();
        let got: Map = plan_json(v)["device_map"]
            .as_object()
            .unwrap()
            .clone()
            .into_iter()
            .collect();
        let want: Map = v["device_map"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, d)| (k.clone(), d.clone()))
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn optimal_is_refused_under_accelerate_compat() {
    let (_, v) = &fixtures()[0];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), v["config"].to_string()).unwrap();
    let out = stowage(&[
        "plan",
        dir.path().to_str().unwrap(),
        "--compat",
        "accelerate",
        "--strategy",
        "optimal",
        "--max-memory",
        "0=1GiB",
        "--max-memory",
        "cpu=1GiB",
        "--max-memory",
        "disk=1GiB",
    ]);
    assert_clean_error(&out, &["optimal", "no Accelerate equivalent"]);
}
