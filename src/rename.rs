//! Renaming a burn module's parameter paths to the names a checkpoint uses.
//!
//! A burn model and the checkpoint it loads rarely agree on every name: burn's `LayerNorm`
//! calls its parameters `gamma` and `beta` where PyTorch says `weight` and `bias`, and a
//! Hugging Face checkpoint nests the base model under `model.` while the burn struct may not.
//! [`Renames`] is an ordered list of rules, each applied to the result of the one before,
//! from the model path to the checkpoint name:
//! - [`Renames::segment`]: replace a whole path segment (or a run of segments) wherever it
//!   occurs, such as `gamma` → `weight`;
//! - [`Renames::add_prefix`] / [`Renames::strip_prefix`]: add or remove a leading path, such
//!   as model `layers.0.attn.q.weight` ↔ checkpoint `model.layers.0.attn.q.weight`;
//! - [`Renames::prefix`]: replace one leading path by another, for renames that touch only
//!   part of the model (`layers` → `model.layers`, leaving `lm_head` alone).
//!
//! Rules match whole segments only: `beta` does not touch `betas`, and prefix `model` does not
//! touch `modeling.x`.
//!
//! ```
//! use stowage::Renames;
//!
//! let renames = Renames::new()
//!     .segment("gamma", "weight")
//!     .segment("beta", "bias")
//!     .prefix("layers", "model.layers");
//! assert_eq!(renames.apply("layers.0.norm.gamma"), "model.layers.0.norm.weight");
//! assert_eq!(renames.apply("lm_head.weight"), "lm_head.weight");
//! assert_eq!(renames.apply("betas.x"), "betas.x");
//! ```

use std::fmt;

/// One renaming rule (see [`Renames`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rename {
    /// Replace every aligned occurrence of the segments `from` by `to` (both dot paths,
    /// neither empty).
    Segment {
        /// The segment(s) to find, e.g. `gamma` or `self_attn.q`.
        from: String,
        /// What replaces them.
        to: String,
    },
    /// Replace a leading path `from` by `to`. An empty `from` matches every path (`to` is
    /// added in front); an empty `to` strips `from`.
    Prefix {
        /// The leading segments to find (`""` for any path).
        from: String,
        /// What replaces them (`""` to strip).
        to: String,
    },
}

impl Rename {
    /// Applies this rule to `path`.
    pub fn apply(&self, path: &str) -> String {
        match self {
            Rename::Segment { from, to } => replace_segments(path, from, to),
            Rename::Prefix { from, to } => replace_prefix(path, from, to),
        }
    }
}

impl fmt::Display for Rename {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rename::Segment { from, to } => write!(f, "segment `{from}` → `{to}`"),
            Rename::Prefix { from, to } => write!(f, "prefix `{from}` → `{to}`"),
        }
    }
}

/// Ordered renaming rules from a model's parameter paths to checkpoint names.
///
/// The default is no rules: names are used as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renames {
    rules: Vec<Rename>,
}

impl Renames {
    /// No rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rule that replaces the whole segment(s) `from` by `to` wherever they occur.
    ///
    /// # Panics
    ///
    /// If `from` or `to` is empty, or either has an empty segment (`a..b`, `.a`).
    pub fn segment(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        let (from, to) = (from.into(), to.into());
        assert!(
            valid_path(&from) && valid_path(&to),
            "segment renames take non-empty dot paths, got `{from}` → `{to}`"
        );
        self.rules.push(Rename::Segment { from, to });
        self
    }

    /// Adds a rule that puts `prefix` in front of every path (a trailing `.` is optional):
    /// `add_prefix("model")` maps `layers.0.w` to `model.layers.0.w`.
    pub fn add_prefix(self, prefix: impl Into<String>) -> Self {
        self.prefix("", prefix)
    }

    /// Adds a rule that removes a leading `prefix` where present (a trailing `.` is
    /// optional): `strip_prefix("model")` maps `model.layers.0.w` to `layers.0.w`.
    pub fn strip_prefix(self, prefix: impl Into<String>) -> Self {
        self.prefix(prefix, "")
    }

    /// Adds a rule that replaces the leading path `from` by `to`; paths not starting with
    /// `from` are left alone. Trailing dots are ignored.
    ///
    /// # Panics
    ///
    /// If `from` or `to` (when not empty) has an empty segment.
    pub fn prefix(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        let trim = |s: String| s.trim_end_matches('.').to_string();
        let (from, to) = (trim(from.into()), trim(to.into()));
        assert!(
            (from.is_empty() || valid_path(&from)) && (to.is_empty() || valid_path(&to)),
            "prefix renames take dot paths, got `{from}` → `{to}`"
        );
        self.rules.push(Rename::Prefix { from, to });
        self
    }

    /// Adds a rule.
    pub fn with(mut self, rule: Rename) -> Self {
        self.rules.push(rule);
        self
    }

    /// The rules, in the order they apply.
    pub fn rules(&self) -> &[Rename] {
        &self.rules
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The checkpoint name of the model path `path`: every rule in order.
    pub fn apply(&self, path: &str) -> String {
        self.rules
            .iter()
            .fold(path.to_string(), |name, rule| rule.apply(&name))
    }
}

fn valid_path(p: &str) -> bool {
    !p.is_empty() && p.split('.').all(|s| !s.is_empty())
}

/// Replaces each aligned run of `from`'s segments in `path` by `to`, left to right, without
/// overlapping.
fn replace_segments(path: &str, from: &str, to: &str) -> String {
    let segs: Vec<&str> = path.split('.').collect();
    let pat: Vec<&str> = from.split('.').collect();
    let mut out: Vec<&str> = Vec::with_capacity(segs.len());
    let mut i = 0;
    while i < segs.len() {
        if segs.get(i..i + pat.len()) == Some(&pat[..]) {
            out.push(to);
            i += pat.len();
        } else {
            out.push(segs[i]);
            i += 1;
        }
    }
    out.join(".")
}

/// Replaces the leading path `from` of `path` by `to` (segment-aligned).
fn replace_prefix(path: &str, from: &str, to: &str) -> String {
    let rest = if from.is_empty() {
        Some(path)
    } else if path == from {
        Some("")
    } else {
        path.strip_prefix(from).and_then(|r| r.strip_prefix('.'))
    };
    match rest {
        None => path.to_string(),
        Some(rest) => match (to.is_empty(), rest.is_empty()) {
            (true, _) => rest.to_string(),
            (false, true) => to.to_string(),
            (false, false) => format!("{to}.{rest}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_match_whole_segments_only() {
        let r = Renames::new().segment("gamma", "weight");
        assert_eq!(r.apply("norm.gamma"), "norm.weight");
        assert_eq!(r.apply("gammas.gamma_x"), "gammas.gamma_x");
        assert_eq!(r.apply("gamma.gamma"), "weight.weight");
    }

    #[test]
    fn multi_segment_runs() {
        let r = Renames::new().segment("attn.q", "self_attn.q_proj");
        assert_eq!(
            r.apply("layers.0.attn.q.weight"),
            "layers.0.self_attn.q_proj.weight"
        );
        assert_eq!(r.apply("layers.0.attn.k.weight"), "layers.0.attn.k.weight");
        assert_eq!(r.apply("attn.q"), "self_attn.q_proj");
    }

    #[test]
    fn prefixes() {
        let add = Renames::new().add_prefix("model.");
        assert_eq!(add.apply("layers.0.w"), "model.layers.0.w");
        let strip = Renames::new().strip_prefix("model");
        assert_eq!(strip.apply("model.layers.0.w"), "layers.0.w");
        assert_eq!(strip.apply("modeling.w"), "modeling.w");
        assert_eq!(strip.apply("model"), "");
        let scoped = Renames::new().prefix("layers", "model.layers");
        assert_eq!(scoped.apply("layers.1.w"), "model.layers.1.w");
        assert_eq!(scoped.apply("lm_head.weight"), "lm_head.weight");
        assert_eq!(scoped.apply("layers"), "model.layers");
    }

    #[test]
    fn rules_apply_in_order() {
        let r = Renames::new().add_prefix("model").segment("model", "base");
        assert_eq!(r.apply("w"), "base.w");
        let r = Renames::new().segment("model", "base").add_prefix("model");
        assert_eq!(r.apply("w"), "model.w");
        assert_eq!(r.rules().len(), 2);
        assert_eq!(r.rules()[0].to_string(), "segment `model` → `base`");
    }

    #[test]
    #[should_panic(expected = "non-empty dot paths")]
    fn empty_segment_rule_panics() {
        let _ = Renames::new().segment("", "weight");
    }
}
