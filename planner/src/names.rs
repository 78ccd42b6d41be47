//! Short lists of module names for people: `model.layers.0–17, model.norm, lm_head`.

/// Compresses names: names that differ only in their last numeric segment are listed once
/// with the numbers as ranges (`model.layers.0–17`, `model.layers.3–5,9.mlp.experts`), in the
/// order each shape first appears; lists longer than six parts are cut with a count.
///
/// ```
/// use stowage_planner::summarize_names;
/// let names = ["model.embed_tokens", "model.layers.0", "model.layers.0.mlp.experts",
///              "model.layers.1", "model.layers.1.mlp.experts", "model.layers.3", "lm_head"];
/// assert_eq!(
///     summarize_names(names),
///     "model.embed_tokens, model.layers.0–1,3, model.layers.0–1.mlp.experts, lm_head"
/// );
/// ```
pub fn summarize_names<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    const MAX: usize = 6;
    // (prefix, suffix) of the last numeric segment → numbers, in first-appearance order.
    let mut shapes: Vec<((&str, &str), Vec<u64>)> = Vec::new();
    for name in names {
        let key_num = numbered(name);
        let (key, n) = match key_num {
            Some((prefix, n, suffix)) => ((prefix, suffix), Some(n)),
            None => ((name, "\u{0}"), None),
        };
        match shapes.iter_mut().find(|(k, _)| *k == key) {
            Some((_, nums)) => nums.extend(n),
            None => shapes.push((key, n.into_iter().collect())),
        }
    }
    let mut parts: Vec<String> = shapes
        .into_iter()
        .map(|((prefix, suffix), nums)| {
            if suffix == "\u{0}" {
                return prefix.to_string();
            }
            let ranges = ranges(nums);
            if suffix.is_empty() {
                format!("{prefix}.{ranges}")
            } else {
                format!("{prefix}.{ranges}.{suffix}")
            }
        })
        .collect();
    if parts.len() > MAX {
        let more = parts.len() - MAX;
        parts.truncate(MAX);
        parts.push(format!("… (+{more} more)"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// Splits `a.b.12.c` into (`a.b`, 12, `c`) at the last numeric segment.
fn numbered(name: &str) -> Option<(&str, u64, &str)> {
    let segments: Vec<&str> = name.split('.').collect();
    let i = segments
        .iter()
        .rposition(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()))?;
    if i == 0 {
        return None;
    }
    let n = segments[i].parse().ok()?;
    let start = segments[..i].iter().map(|s| s.len() + 1).sum::<usize>();
    let prefix = &name[..start - 1];
    let after = start + segments[i].len();
    let suffix = if after < name.len() {
        &name[after + 1..]
    } else {
        ""
    };
    Some((prefix, n, suffix))
}

fn ranges(mut nums: Vec<u64>) -> String {
    nums.sort_unstable();
    nums.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < nums.len() {
        let mut j = i;
        while j + 1 < nums.len() && nums[j + 1] == nums[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            nums[i].to_string()
        } else {
            format!("{}–{}", nums[i], nums[j])
        });
        i = j + 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_ranges() {
        assert_eq!(
            summarize_names(["h.0", "h.1", "h.2", "ln_f"]),
            "h.0–2, ln_f"
        );
        assert_eq!(summarize_names(["a.5"]), "a.5");
        assert_eq!(summarize_names(Vec::<&str>::new()), "-");
        assert_eq!(summarize_names(["0", "1"]), "0, 1");
        let many: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
        assert!(summarize_names(many.iter().map(String::as_str)).ends_with("… (+4 more)"));
    }
}
