//! Well-known model configs shipped inside stowage, so `stowage plan` works with nothing
//! downloaded: `stowage plan builtin:llama-3-70b`, or no model at all for [`DEFAULT`].

use std::path::PathBuf;

use stowage_planner::{ModelConfig, Result};

/// The builtin planned when `stowage plan` is given no model.
pub const DEFAULT: &str = "llama-3-8b";

/// Name, what it is, and the config JSON.
pub const CONFIGS: &[(&str, &str, &str)] = &[
    (
        "llama-3-8b",
        "Meta-Llama-3-8B (8.0 B parameters, bf16)",
        include_str!("../configs/llama-3-8b.json"),
    ),
    (
        "llama-3-70b",
        "Meta-Llama-3-70B (70.6 B parameters, bf16)",
        include_str!("../configs/llama-3-70b.json"),
    ),
    (
        "mixtral-8x7b",
        "Mixtral-8x7B-v0.1 (46.7 B parameters, bf16)",
        include_str!("../configs/mixtral-8x7b.json"),
    ),
    (
        "kimi-k2",
        "Kimi-K2-Instruct (≈1 T-parameter MoE, fp8 weights)",
        include_str!("../configs/kimi-k2.json"),
    ),
];

/// The prefix that names a builtin on the command line.
pub const PREFIX: &str = "builtin:";

/// Parses the builtin config called `name`; `None` if there is no such builtin.
pub fn config(name: &str) -> Option<Result<ModelConfig>> {
    let (_, _, json) = CONFIGS.iter().find(|(n, _, _)| *n == name)?;
    Some(ModelConfig::from_json_str(
        &PathBuf::from(format!("{PREFIX}{name}")),
        json,
    ))
}

/// The names of all builtins.
pub fn names() -> Vec<&'static str> {
    CONFIGS.iter().map(|(n, _, _)| *n).collect()
}
