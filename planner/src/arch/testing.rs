//! What every architecture's tests check: the shipped configs, the parameter count, and the
//! invariants of an expanded list (unique names, ties, layers in numeric order).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::config::ModelConfig;
use crate::tensor::TensorInfo;

/// A config shipped in the repository's `configs/` folder.
pub(super) fn load(file: &str) -> ModelConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(file);
    ModelConfig::from_file(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// A config given inline, named `test/config.json` in errors.
pub(super) fn parse(json: &str) -> ModelConfig {
    ModelConfig::from_json_str(Path::new("test/config.json"), json).unwrap()
}

/// Parameters: elements of the tensors that own their storage.
pub(super) fn params(tensors: &[TensorInfo]) -> u64 {
    tensors
        .iter()
        .filter(|t| t.tied_to.is_none())
        .map(TensorInfo::elems)
        .sum()
}

/// Checks the invariants of `tensors`, expanded from `config`:
/// - names are unique, and [`super::expand`] dispatches `config` to the same names;
/// - every tied tensor's owner is listed, owns its storage, comes first and has its shape;
/// - the tied tensors are exactly [`super::tied_pairs`];
/// - for each `(prefix, n)` in `stacks`, the tensors named `{prefix}{i}.…` form one run in the
///   list, with `i` going through `0..n` in numeric order (`2` before `10`).
pub(super) fn check(config: &ModelConfig, tensors: &[TensorInfo], stacks: &[(&str, u64)]) {
    let mut seen = HashSet::new();
    for t in tensors {
        assert!(seen.insert(t.name.as_str()), "`{}` listed twice", t.name);
    }
    let dispatched = super::expand(config, None).unwrap();
    assert!(
        dispatched
            .iter()
            .map(|t| &t.name)
            .eq(tensors.iter().map(|t| &t.name)),
        "expand() dispatches to another layout"
    );

    let mut tied = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        let Some(owner) = &t.tied_to else { continue };
        let o = tensors[..i].iter().find(|o| &o.name == owner);
        let o = o.unwrap_or_else(|| panic!("`{}` tied to `{owner}`, not listed before it", t.name));
        assert!(o.tied_to.is_none(), "owner `{owner}` is itself tied");
        assert_eq!(
            o.shape, t.shape,
            "`{}` and its owner differ in shape",
            t.name
        );
        tied.push((t.name.clone(), owner.clone()));
    }
    let mut pairs = super::tied_pairs(config);
    pairs.sort();
    tied.sort();
    assert_eq!(pairs, tied, "tied_pairs() disagrees with the tied tensors");

    for &(prefix, n) in stacks {
        let run: Vec<(usize, u64)> = tensors
            .iter()
            .enumerate()
            .filter_map(|(pos, t)| {
                let rest = t.name.strip_prefix(prefix)?;
                let index = rest.split('.').next()?.parse().ok()?;
                Some((pos, index))
            })
            .collect();
        let (first, last) = (run.first().unwrap().0, run.last().unwrap().0);
        assert_eq!(
            last - first + 1,
            run.len(),
            "`{prefix}N` tensors are not one run"
        );
        let mut order: Vec<u64> = run.iter().map(|&(_, i)| i).collect();
        order.dedup();
        assert_eq!(
            order,
            (0..n).collect::<Vec<_>>(),
            "`{prefix}N` not in numeric order"
        );
    }
}
