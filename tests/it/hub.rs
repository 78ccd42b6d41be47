//! `ORG/NAME[@rev]` resolved offline from a Hugging Face cache laid out as the hub does.

use safetensors::Dtype;

use crate::fixtures::*;

/// Lays out `models--org--tiny` with a snapshot for `sha` and `refs/main` → `sha`.
fn cache_with_model(root: &std::path::Path, sha: &str) -> std::path::PathBuf {
    let base = root.join("models--org--tiny");
    let snap = base.join("snapshots").join(sha);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(base.join("refs")).unwrap();
    std::fs::write(base.join("refs").join("main"), sha).unwrap();
    snap
}

#[test]
fn resolves_refs_to_snapshots_with_subfolder_and_variant() {
    let cache = tempfile::tempdir().unwrap();
    let snap = cache_with_model(cache.path(), "abc123");
    write_safetensors(
        &snap.join("model.safetensors"),
        &llama_tensors(2, 16, Dtype::F32, false),
    );
    std::fs::create_dir_all(snap.join("text")).unwrap();
    write_safetensors(
        &snap.join("text").join("model.fp16.safetensors"),
        &llama_tensors(3, 16, Dtype::F16, false),
    );

    let env = [("HF_HUB_CACHE", cache.path())];
    let out = stowage_env(&["plan", "org/tiny", "--json"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["no_split"].as_array().unwrap().len(), 2);

    let out = stowage_env(
        &[
            "plan",
            "org/tiny@abc123",
            "--subfolder",
            "text",
            "--variant",
            "fp16",
            "--json",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["dtype"], "f16");
    assert_eq!(v["no_split"].as_array().unwrap().len(), 3);
}

#[test]
fn hf_home_is_honoured() {
    let home = tempfile::tempdir().unwrap();
    let snap = cache_with_model(&home.path().join("hub"), "feed");
    write_safetensors(
        &snap.join("model.safetensors"),
        &llama_tensors(1, 16, Dtype::F32, false),
    );
    let out = stowage_env(&["plan", "org/tiny", "--json"], &[("HF_HOME", home.path())]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn missing_model_lists_the_paths_tried() {
    let cache = tempfile::tempdir().unwrap();
    let out = stowage_env(
        &["plan", "org/absent@v2"],
        &[("HF_HUB_CACHE", cache.path())],
    );
    assert_clean_error(
        &out,
        &[
            "org/absent@v2",
            "never downloads",
            "models--org--absent",
            "refs/v2",
        ],
    );
}
