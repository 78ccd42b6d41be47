//! Every bad input gets a clear error naming the file (and tensor), exit code 1, no panic.

use safetensors::Dtype;

use crate::fixtures::*;

fn plan(path: &std::path::Path) -> std::process::Output {
    stowage(&[
        "plan",
        s(path),
        "--max-memory",
        "cpu=1GiB",
        "--max-memory",
        "disk=1GiB",
    ])
}

#[test]
fn truncated_shard() {
    let dir = tempfile::tempdir().unwrap();
    write_sharded(dir.path(), &llama_tensors(4, 32, Dtype::BF16, false), 2);
    let shard = p(dir.path(), "model-00002-of-00002.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 10]).unwrap();
    let out = plan(dir.path());
    assert_clean_error(&out, &["model-00002-of-00002.safetensors", "truncated"]);
}

#[test]
fn header_length_larger_than_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = p(dir.path(), "model.safetensors");
    let mut bytes = 5000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(&path, bytes).unwrap();
    assert_clean_error(&plan(&path), &["model.safetensors", "5000", "truncated"]);
}

#[test]
fn header_length_above_cap() {
    let dir = tempfile::tempdir().unwrap();
    let path = p(dir.path(), "model.safetensors");
    std::fs::write(&path, u64::MAX.to_le_bytes()).unwrap();
    assert_clean_error(&plan(&path), &["model.safetensors", "cap"]);
}

#[test]
fn file_shorter_than_length_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let path = p(dir.path(), "model.safetensors");
    std::fs::write(&path, b"abc").unwrap();
    assert_clean_error(&plan(&path), &["model.safetensors", "3 bytes"]);
}

#[test]
fn header_not_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = p(dir.path(), "model.safetensors");
    write_raw(&path, "{\"a\": not json", 0);
    assert_clean_error(
        &plan(&path),
        &["model.safetensors", "not valid safetensors JSON"],
    );
}

#[test]
fn overlapping_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let path = p(dir.path(), "model.safetensors");
    let header = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#;
    write_raw(&path, header, 24);
    assert_clean_error(&plan(&path), &["model.safetensors", "`b`", "contiguous"]);
}

#[test]
fn offsets_out_of_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let path = p(dir.path(), "model.safetensors");
    let header = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    write_raw(&path, header, 8);
    assert_clean_error(&plan(&path), &["model.safetensors", "truncated"]);
}

#[test]
fn size_that_lies_about_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = p(dir.path(), "model.safetensors");
    let header = r#"{"w":{"dtype":"BF16","shape":[3,3],"data_offsets":[0,16]}}"#;
    write_raw(&path, header, 16);
    assert_clean_error(&plan(&path), &["model.safetensors", "`w`", "18"]);
}

#[test]
fn unknown_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let path = p(dir.path(), "model.safetensors");
    let header = r#"{"w":{"dtype":"Q4_K","shape":[4],"data_offsets":[0,4]}}"#;
    write_raw(&path, header, 4);
    assert_clean_error(&plan(&path), &["model.safetensors", "`w`", "Q4_K"]);
}

#[test]
fn index_names_a_missing_shard() {
    let dir = tempfile::tempdir().unwrap();
    write_sharded(dir.path(), &llama_tensors(4, 32, Dtype::BF16, false), 3);
    std::fs::remove_file(p(dir.path(), "model-00003-of-00003.safetensors")).unwrap();
    let out = plan(dir.path());
    assert_clean_error(
        &out,
        &[
            "model.safetensors.index.json",
            "model-00003-of-00003.safetensors",
        ],
    );
}

#[test]
fn index_names_a_tensor_absent_from_its_shard() {
    let dir = tempfile::tempdir().unwrap();
    write_sharded(dir.path(), &llama_tensors(2, 32, Dtype::BF16, false), 2);
    let index_path = p(dir.path(), "model.safetensors.index.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    index["weight_map"]["model.layers.0.mlp.ghost.weight"] =
        "model-00001-of-00002.safetensors".into();
    std::fs::write(&index_path, index.to_string()).unwrap();
    let out = plan(dir.path());
    assert_clean_error(
        &out,
        &[
            "model.safetensors.index.json",
            "model-00001-of-00002.safetensors",
            "model.layers.0.mlp.ghost.weight",
        ],
    );
}

#[test]
fn index_not_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        p(dir.path(), "model.safetensors.index.json"),
        "{\"weight_map\": [",
    )
    .unwrap();
    assert_clean_error(&plan(dir.path()), &["model.safetensors.index.json"]);
}

#[test]
fn empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = plan(dir.path());
    assert_clean_error(
        &out,
        &["no model found", "model.safetensors", "config.json"],
    );
}

#[test]
fn config_of_unknown_architecture_without_weights() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        p(dir.path(), "config.json"),
        r#"{"model_type":"frobnicator","hidden_size":8}"#,
    )
    .unwrap();
    let out = plan(dir.path());
    assert_clean_error(&out, &["config.json", "frobnicator", "llama"]);
}

#[test]
fn config_missing_a_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        p(dir.path(), "config.json"),
        r#"{"model_type":"llama","hidden_size":8}"#,
    )
    .unwrap();
    assert_clean_error(&plan(dir.path()), &["config.json", "missing field"]);
}

#[test]
fn missing_path() {
    let out = stowage(&["plan", "/definitely/not/here/model.safetensors"]);
    assert_clean_error(&out, &["/definitely/not/here/model.safetensors"]);
}

#[test]
fn size_in_bits_is_a_usage_hint() {
    let out = stowage(&["plan", "--max-memory", "cpu=10gb"]);
    assert_clean_error(&out, &["10gb", "bits", "10GB", "10GiB"]);
}

#[test]
fn model_that_does_not_fit_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    write_safetensors(
        &p(dir.path(), "model.safetensors"),
        &llama_tensors(4, 64, Dtype::F32, false),
    );
    let out = stowage(&[
        "plan",
        s(dir.path()),
        "--max-memory",
        "cpu=10KiB",
        "--max-memory",
        "disk=20KiB",
    ]);
    assert_clean_error(&out, &["does not fit", "needs", "--max-memory"]);
}

#[test]
fn index_with_an_empty_weight_map() {
    let dir = tempfile::tempdir().unwrap();
    let index = p(dir.path(), "model.safetensors.index.json");
    std::fs::write(&index, r#"{"metadata":{},"weight_map":{}}"#).unwrap();
    let needles = ["model.safetensors.index.json", "`weight_map` is empty"];
    assert_clean_error(&plan(dir.path()), &needles);
    assert_clean_error(&plan(&index), &needles);
    let load = stowage(&["load", s(dir.path()), "--max-memory", "cpu=1GiB"]);
    assert_clean_error(&load, &needles);
}

#[test]
fn checkpoint_with_no_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = p(dir.path(), "model.safetensors");
    for header in ["{}", r#"{"__metadata__":{"format":"pt"}}"#] {
        write_raw(&path, header, 0);
        assert_clean_error(&plan(&path), &["model.safetensors", "holds no tensors"]);
        let load = stowage(&["load", s(&path), "--max-memory", "cpu=1GiB"]);
        assert_clean_error(&load, &["model.safetensors", "holds no tensors"]);
    }
}

/// Absurd run-time options (a context of 2^64 - 1 tokens, a batch as large) with every
/// strategy, with and without GPUs and offload: the run-time room saturates, so the plan is a
/// clear "does not fit" (or fits where nothing needs room), never an overflow (exit 101).
#[test]
fn absurd_run_time_options_never_overflow() {
    let dir = tempfile::tempdir().unwrap();
    write_safetensors(
        &p(dir.path(), "model.safetensors"),
        &llama_tensors(4, 32, Dtype::F32, false),
    );
    std::fs::write(p(dir.path(), "config.json"), llama_config(4, 32, false)).unwrap();
    let max = u64::MAX.to_string();
    let half = (1u64 << 63).to_string();
    for strategy in ["balanced", "balanced_low_0", "sequential", "optimal"] {
        for gpus in ["2x1GiB", "3x16777215TiB", "1KiB"] {
            for run in [
                ["--max-seq-len", &max, "--batch", "1"],
                ["--max-seq-len", &half, "--batch", &half],
                ["--max-seq-len", "4096", "--batch", &max],
            ] {
                let mut args = vec!["plan", s(dir.path()), "--strategy", strategy];
                args.extend(["--gpus", gpus, "--max-memory", "cpu=1GiB"]);
                args.extend(["--max-memory", "disk=1GiB"]);
                args.extend(run);
                let out = stowage(&args);
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    matches!(out.status.code(), Some(0 | 1)) && !err.contains("panicked"),
                    "{args:?}: {err}"
                );
            }
        }
    }
}
