//! Checked reads of the `config.json` fields that size a model: a missing field, a zero head
//! count or a hidden size that does not split into heads is an error naming the file and the
//! field, never a panic or a silent default.

use serde_json::Value;

use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// Largest size one field may give (2³²): products of two sizes then always fit in 64 bits.
const MAX_DIM: u64 = 1 << 32;

/// The fields of one config.
#[derive(Clone, Copy)]
pub(super) struct Fields<'a>(pub(super) &'a ModelConfig);

impl<'a> Fields<'a> {
    /// A `ConfigInvalid` error for this config.
    pub(super) fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::ConfigInvalid {
            path: self.0.path.clone(),
            reason: reason.into(),
        }
    }

    /// A required size, at least 1.
    pub(super) fn dim(&self, key: &str) -> Result<u64> {
        self.opt_dim(key)?
            .ok_or_else(|| self.invalid(format!("missing field `{key}`")))
    }

    /// A size that may be absent or `null`.
    pub(super) fn opt_dim(&self, key: &str) -> Result<Option<u64>> {
        match self.opt_count(key)? {
            Some(0) => Err(self.invalid(format!("field `{key}` is 0; it must be at least 1"))),
            d => Ok(d),
        }
    }

    /// A size with a default for when it is absent or `null`.
    pub(super) fn dim_or(&self, key: &str, default: u64) -> Result<u64> {
        Ok(self.opt_dim(key)?.unwrap_or(default))
    }

    /// A count that may be 0, with a default for when it is absent or `null`.
    pub(super) fn count_or(&self, key: &str, default: u64) -> Result<u64> {
        Ok(self.opt_count(key)?.unwrap_or(default))
    }

    /// A required count that may be 0.
    pub(super) fn count(&self, key: &str) -> Result<u64> {
        self.opt_count(key)?
            .ok_or_else(|| self.invalid(format!("missing field `{key}`")))
    }

    /// A boolean with a default for when it is absent or `null`.
    pub(super) fn flag(&self, key: &str, default: bool) -> Result<bool> {
        match self.value(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.invalid(format!("field `{key}` must be true or false, got {v}"))),
        }
    }

    /// A string with a default for when it is absent or `null`.
    pub(super) fn text_or(&self, key: &str, default: &'a str) -> Result<&'a str> {
        match self.value(key) {
            None => Ok(default),
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(self.invalid(format!("field `{key}` must be a string, got {v}"))),
        }
    }

    /// `tie_word_embeddings`, with the default of the architecture's transformers config.
    pub(super) fn tied(&self, default: bool) -> Result<bool> {
        self.flag("tie_word_embeddings", default)
    }

    /// The size of one attention head: `hidden / heads`, which must divide exactly.
    pub(super) fn split(
        &self,
        hidden_key: &str,
        hidden: u64,
        heads_key: &str,
        heads: u64,
    ) -> Result<u64> {
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(self.invalid(format!(
                "`{hidden_key}` ({hidden}) is not divisible by `{heads_key}` ({heads})"
            )));
        }
        Ok(hidden / heads)
    }

    /// `a * b`, for sizes derived from two fields (`num_attention_heads * head_dim`).
    pub(super) fn mul(&self, what: &str, a: u64, b: u64) -> Result<u64> {
        a.checked_mul(b)
            .ok_or_else(|| self.invalid(format!("{what} ({a} × {b}) is too large")))
    }

    /// `architectures[0]`, the head class, if the config names one.
    pub(super) fn architecture(&self) -> Option<&'a str> {
        self.0.architecture()
    }

    /// The error for a head class this architecture does not expand.
    pub(super) fn unknown_head(&self, arch: &str, known: &[&str]) -> Error {
        let model_type = self.0.model_type().unwrap_or("?");
        self.invalid(format!(
            "`architectures[0]` is `{arch}`, a `{model_type}` head stowage cannot expand \
             (known: {})",
            known.join(", ")
        ))
    }

    fn opt_count(&self, key: &str) -> Result<Option<u64>> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(d) if d <= MAX_DIM => Ok(Some(d)),
                Some(d) => Err(self.invalid(format!(
                    "field `{key}` is {d}, larger than any model has ({MAX_DIM} at most)"
                ))),
                None => Err(self.invalid(format!(
                    "field `{key}` must be a non-negative integer, got {v}"
                ))),
            },
        }
    }

    /// The field's value; `null` counts as absent.
    fn value(&self, key: &str) -> Option<&'a Value> {
        self.0.raw.get(key).filter(|v| !v.is_null())
    }
}
