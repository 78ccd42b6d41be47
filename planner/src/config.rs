//! A model's `config.json`: architecture, dtype, tied embeddings, and the sizes that
//! [`crate::arch`] expands into a tensor list.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::dtype::DType;
use crate::error::{Error, Result};

/// A parsed `config.json` (Hugging Face transformers layout).
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// The file it came from (used in error messages).
    pub path: PathBuf,
    /// The whole JSON object.
    pub raw: Map<String, Value>,
}

impl ModelConfig {
    /// Reads `config.json` from `path`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(path, &text)
    }

    /// Parses config JSON; `path` is only used to name the file in errors.
    pub fn from_json_str(path: &Path, text: &str) -> Result<Self> {
        let invalid = |reason: String| Error::ConfigInvalid {
            path: path.into(),
            reason,
        };
        let value: Value =
            serde_json::from_str(text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        match value {
            Value::Object(raw) => Ok(ModelConfig {
                path: path.into(),
                raw,
            }),
            _ => Err(invalid("expected a JSON object".into())),
        }
    }

    /// `model_type` (`"llama"`, `"gpt2"`, …), if present.
    pub fn model_type(&self) -> Option<&str> {
        self.raw.get("model_type").and_then(Value::as_str)
    }

    /// The first entry of `architectures` (`"LlamaForCausalLM"`), if present.
    pub fn architecture(&self) -> Option<&str> {
        self.raw.get("architectures")?.as_array()?.first()?.as_str()
    }

    /// The dtype the weights were saved in: `torch_dtype`, or `dtype` (newer transformers).
    pub fn torch_dtype(&self) -> Option<DType> {
        ["torch_dtype", "dtype"].iter().find_map(|k| {
            self.raw
                .get(*k)
                .and_then(Value::as_str)
                .and_then(DType::from_user)
        })
    }

    /// `tie_word_embeddings`, or `default` when the config does not say.
    pub fn tie_word_embeddings(&self, default: bool) -> bool {
        self.bool_or("tie_word_embeddings", default)
    }

    /// A required integer field; an error naming the file and the field when absent.
    pub fn u64(&self, key: &str) -> Result<u64> {
        self.opt_u64(key).ok_or_else(|| Error::ConfigInvalid {
            path: self.path.clone(),
            reason: format!("missing or non-integer field `{key}`"),
        })
    }

    /// The first of `keys` that is present as an integer (configs name the same thing
    /// differently: `n_embd` / `hidden_size`).
    pub fn u64_any(&self, keys: &[&str]) -> Result<u64> {
        keys.iter()
            .find_map(|k| self.opt_u64(k))
            .ok_or_else(|| Error::ConfigInvalid {
                path: self.path.clone(),
                reason: format!("missing integer field `{}`", keys.join("` or `")),
            })
    }

    /// An optional integer field (absent or `null` gives `None`).
    pub fn opt_u64(&self, key: &str) -> Option<u64> {
        self.raw.get(key).and_then(Value::as_u64)
    }

    /// An integer field with a default for when it is absent or `null`.
    pub fn u64_or(&self, key: &str, default: u64) -> u64 {
        self.opt_u64(key).unwrap_or(default)
    }

    /// A boolean field with a default.
    pub fn bool_or(&self, key: &str, default: bool) -> bool {
        self.raw
            .get(key)
            .and_then(Value::as_bool)
            .unwrap_or(default)
    }

    /// A string field, if present.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.raw.get(key).and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dtype_and_fields() {
        let c = ModelConfig::from_json_str(
            Path::new("config.json"),
            r#"{"model_type":"llama","architectures":["LlamaForCausalLM"],"torch_dtype":"bfloat16","hidden_size":4096}"#,
        )
        .unwrap();
        assert_eq!(c.model_type(), Some("llama"));
        assert_eq!(c.architecture(), Some("LlamaForCausalLM"));
        assert_eq!(c.torch_dtype(), Some(DType::BF16));
        assert_eq!(c.u64("hidden_size").unwrap(), 4096);
        let err = c.u64("num_hidden_layers").unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("num_hidden_layers"),
            "{err}"
        );
        assert!(!c.tie_word_embeddings(false));
    }

    #[test]
    fn not_json_names_the_file() {
        let err = ModelConfig::from_json_str(Path::new("/x/config.json"), "{nope").unwrap_err();
        assert!(err.to_string().contains("/x/config.json"), "{err}");
    }
}
