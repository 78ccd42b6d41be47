//! Module-path patterns for `--no-split`.
//!
//! A pattern is matched against whole dotted module paths. `*` matches any run of
//! characters within one segment, `**` matches any number of whole segments. A pattern with
//! no dot and no `**` matches a module whose last segment matches it, wherever it is
//! (`mlp` matches `model.layers.3.mlp`).

use crate::error::{Error, Result};

/// A compiled `--no-split` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segments: Vec<String>,
    anywhere: bool,
}

impl Pattern {
    /// Compiles `pattern`, rejecting empty ones and empty segments.
    pub fn new(pattern: &str) -> Result<Pattern> {
        let invalid = |reason: &str| Error::InvalidPattern {
            pattern: pattern.to_string(),
            reason: reason.to_string(),
        };
        let p = pattern.trim();
        if p.is_empty() {
            return Err(invalid("empty pattern"));
        }
        let segments: Vec<String> = p.split('.').map(str::to_string).collect();
        if segments.iter().any(String::is_empty) {
            return Err(invalid(
                "empty segment (two dots in a row, or a leading or trailing dot)",
            ));
        }
        Ok(Pattern {
            anywhere: segments.len() == 1 && segments[0] != "**",
            segments,
        })
    }

    /// Whether the module at `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        // The segments of `path`; none for the root.
        let mut parts = path.split('.');
        if path.is_empty() {
            parts.next();
        }
        if self.anywhere {
            return parts
                .next_back()
                .is_some_and(|last| glob(&self.segments[0], last));
        }
        match_segments(&self.segments, parts)
    }
}

/// Whether `parts` match `pat`, segment by segment (called once per module, so it walks the
/// path rather than collecting it).
fn match_segments(pat: &[String], mut parts: std::str::Split<'_, char>) -> bool {
    match pat.split_first() {
        None => parts.next().is_none(),
        Some((p, rest)) if p == "**" => loop {
            if match_segments(rest, parts.clone()) {
                return true;
            }
            if parts.next().is_none() {
                return false;
            }
        },
        Some((p, rest)) => parts.next().is_some_and(|s| glob(p, s)) && match_segments(rest, parts),
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pat: &str, s: &str) -> bool {
    match pat.split_once('*') {
        None => pat == s,
        Some((head, tail)) => {
            s.starts_with(head)
                && (head.len()..=s.len()).any(|k| s.is_char_boundary(k) && glob(tail, &s[k..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let p = |s| Pattern::new(s).unwrap();
        assert!(p("model.layers.*.mlp").matches("model.layers.3.mlp"));
        assert!(!p("model.layers.*.mlp").matches("model.layers.3.mlp.up"));
        assert!(p("**.mlp").matches("model.layers.3.mlp"));
        assert!(p("mlp").matches("model.layers.3.mlp"));
        assert!(p("*_proj").matches("a.b.q_proj"));
        assert!(!p("mlp").matches("model.layers.3.mlp2"));
        assert!(p("model.**").matches("model.x.y"));
        assert!(p("model.**").matches("model"));
        assert!(!p("model.**").matches("model2.x"));
        assert!(p("**").matches(""));
        assert!(p("**").matches("a.b"));
        assert!(!p("*").matches(""));
        assert!(!p("a.*").matches("a"));
        assert!(p("a.*").matches("a."));
        assert!(p("**.b.**.d").matches("a.b.c.d"));
        assert!(!p("**.b.**.d").matches("a.b.c.d.e"));
        assert!(p("**.3").matches("model.layers.3"));
        assert!(Pattern::new("").is_err());
        assert!(Pattern::new("a..b").is_err());
    }
}
