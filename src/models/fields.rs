//! Checked reads of the `config.json` fields a reference architecture needs: a missing size,
//! a zero head count or a number where a string belongs is an error naming the file and the
//! field, never a panic or a silent default.

use serde_json::Value;
use stowage_planner::ModelConfig;

use crate::error::{Error, Result};

/// The fields of one config.
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a>(pub(crate) &'a ModelConfig);

impl<'a> Fields<'a> {
    /// A `ConfigInvalid` error for this config.
    pub(crate) fn invalid(&self, reason: impl Into<String>) -> Error {
        stowage_planner::Error::ConfigInvalid {
            path: self.0.path.clone(),
            reason: reason.into(),
        }
        .into()
    }

    /// The value of `key`, `None` when absent or `null`.
    pub(crate) fn value(&self, key: &str) -> Option<&'a Value> {
        self.0.raw.get(key).filter(|v| !v.is_null())
    }

    /// A required size, at least 1.
    pub(crate) fn dim(&self, key: &str) -> Result<usize> {
        self.opt_dim(key)?
            .ok_or_else(|| self.invalid(format!("missing field `{key}`")))
    }

    /// A size that may be absent or `null`, at least 1 when present.
    pub(crate) fn opt_dim(&self, key: &str) -> Result<Option<usize>> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        match v.as_u64().and_then(|d| usize::try_from(d).ok()) {
            Some(0) => Err(self.invalid(format!("field `{key}` is 0; it must be at least 1"))),
            Some(d) if d <= 1 << 32 => Ok(Some(d)),
            _ => Err(self.invalid(format!(
                "field `{key}` must be a size (a positive integer up to 2^32), got {v}"
            ))),
        }
    }

    /// A size with a default for when it is absent or `null`.
    pub(crate) fn dim_or(&self, key: &str, default: usize) -> Result<usize> {
        Ok(self.opt_dim(key)?.unwrap_or(default))
    }

    /// A positive finite number with a default for when it is absent or `null`.
    pub(crate) fn positive_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.value(key) {
            None => Ok(default),
            Some(v) => self.positive_in(key, v),
        }
    }

    /// `v`, the value of field `key`, as a positive finite number.
    pub(crate) fn positive_in(&self, key: &str, v: &Value) -> Result<f64> {
        match v.as_f64() {
            Some(x) if x > 0.0 && x.is_finite() => Ok(x),
            _ => Err(self.invalid(format!("field `{key}` must be a positive number, got {v}"))),
        }
    }

    /// A boolean with a default for when it is absent or `null`.
    pub(crate) fn flag(&self, key: &str, default: bool) -> Result<bool> {
        match self.value(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.invalid(format!("field `{key}` must be true or false, got {v}"))),
        }
    }

    /// A string with a default for when it is absent or `null`.
    pub(crate) fn text_or(&self, key: &str, default: &'a str) -> Result<&'a str> {
        match self.value(key) {
            None => Ok(default),
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(self.invalid(format!("field `{key}` must be a string, got {v}"))),
        }
    }

    /// `hidden / heads` for the size of one attention head, which must divide exactly.
    pub(crate) fn head_dim(&self, hidden: usize, heads: usize) -> Result<usize> {
        if hidden.is_multiple_of(heads) {
            Ok(hidden / heads)
        } else {
            Err(self.invalid(format!(
                "`hidden_size` ({hidden}) is not a multiple of `num_attention_heads` ({heads})"
            )))
        }
    }
}
