//! PyTorch/transformers side by side, when the Python on `PATH` (or `STOWAGE_BENCH_PYTHON`)
//! has them: `from_pretrained(low_cpu_mem_usage=True)` loading the same checkpoints as f32, in
//! a fresh Python process per run (`torch_load.py`). Without torch the scenarios are skipped
//! with a printed note and `skipped` in the JSON; torch is never installed by the bench.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The script each run executes.
const SCRIPT: &str = include_str!("torch_load.py");

/// The Python interpreter to use.
pub fn python() -> String {
    std::env::var("STOWAGE_BENCH_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// `Ok("torch X, transformers Y")` when both import, else why not.
pub fn probe() -> Result<String, String> {
    let py = python();
    let out = Command::new(&py)
        .args([
            "-c",
            "import torch, transformers; print(f'torch {torch.__version__}, \
             transformers {transformers.__version__}')",
        ])
        .output()
        .map_err(|e| format!("`{py}` did not start: {e}"))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or("no error message").trim();
    Err(format!(
        "`{py} -c 'import torch, transformers'` failed: {last}"
    ))
}

/// Writes the script into `dir` and returns its path.
pub fn install(dir: &Path) -> PathBuf {
    let path = dir.join("torch_load.py");
    std::fs::write(&path, SCRIPT).unwrap();
    path
}

/// The command for one run of the checkpoint in `checkpoint`.
pub fn command(script: &Path, checkpoint: &Path) -> Command {
    let mut c = Command::new(python());
    c.arg(script).arg(checkpoint);
    c
}
