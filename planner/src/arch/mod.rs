//! Expanding a `config.json` of a known architecture into its exact tensor list, so a model
//! can be planned without downloading its weights.
//!
//! Each architecture lives in its own file and produces the tensors of the Hugging Face
//! checkpoint of its usual head class, with the names, shapes and execution order those
//! checkpoints use. Tied tensors (e.g. `lm_head.weight` when `tie_word_embeddings`) are
//! listed with [`TensorInfo::tied_to`] set, so they count zero bytes.

use crate::config::ModelConfig;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::{TensorInfo, TensorSource};

/// The `model_type`s that [`expand`] understands.
pub const KNOWN: &[&str] = &[];

/// Expands `config` into its tensors, in execution order, stored as `dtype` for floating
/// tensors (the config's `torch_dtype` when `None`, else F32).
pub fn expand(config: &ModelConfig, dtype: Option<DType>) -> Result<Vec<TensorInfo>> {
    let _ = dtype;
    Err(unknown(config))
}

/// Pairs `(tied, owner)` of tensors this architecture ties when the config says so, with
/// canonical checkpoint names; used to detect ties in checkpoints that omit the tied tensor.
pub fn tied_pairs(config: &ModelConfig) -> Vec<(String, String)> {
    let _ = config;
    Vec::new()
}

fn unknown(config: &ModelConfig) -> Error {
    Error::UnknownArchitecture {
        path: config.path.clone(),
        model_type: config.model_type().unwrap_or("(no model_type)").to_string(),
        known: KNOWN.to_vec(),
    }
}

/// Builds a config-sourced tensor.
#[allow(dead_code)]
pub(crate) fn tensor(name: impl Into<String>, dtype: DType, shape: &[u64]) -> TensorInfo {
    TensorInfo {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
        source: TensorSource::Config,
        tied_to: None,
    }
}
