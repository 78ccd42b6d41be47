//! Config overrides ([`crate::Pretrained::config_override`], transformers' `**kwargs` on the
//! config): set keys of `config.json` before planning, and make the inventory agree with the
//! model the new config describes.

use serde_json::Value;
use stowage_planner::{Inventory, InventoryOptions, ModelConfig, TensorSource, arch};

use crate::error::{Error, Result};

/// `inventory` with `overrides` set in its config. An inventory expanded from a config alone
/// is expanded again; one read from a checkpoint keeps the tensors the new config still has
/// (those it drops, such as the layers past a smaller `num_hidden_layers`, are left out and
/// never read) and must not need tensors the checkpoint lacks or has in another shape.
pub(crate) fn apply(
    inventory: Inventory,
    overrides: &[(String, Value)],
    opts: &InventoryOptions,
) -> Result<Inventory> {
    let Some(old) = inventory.config.clone() else {
        return Err(Error::options(
            "config overrides need a config.json beside the weights; this model has none",
        ));
    };
    let mut raw = old.raw.clone();
    for (k, v) in overrides {
        raw.insert(k.clone(), v.clone());
    }
    let new = ModelConfig {
        path: old.path.clone(),
        raw,
    };
    let from_checkpoint = inventory
        .tensors
        .iter()
        .any(|t| matches!(t.source, TensorSource::File { .. }));
    if !from_checkpoint {
        let mut inv = Inventory::from_config(new, opts)?;
        inv.files = inventory.files;
        inv.fingerprints = inventory.fingerprints;
        return Ok(inv);
    }
    let keys: Vec<&str> = overrides.iter().map(|(k, _)| k.as_str()).collect();
    let before = arch::expand(&old, None).map_err(|e| {
        Error::options_from(
            format!(
                "config overrides ({}) need an architecture stowage knows, to tell which tensors the new config has",
                keys.join(", ")
            ),
            e,
        )
    })?;
    let after = arch::expand(&new, None)
        .map_err(|e| Error::options_from(format!("the config with {} set", keys.join(", ")), e))?;
    // The checkpoint may name tensors with a prefix the config's expansion lacks
    // (`bert.encoder…`): match by whole trailing segments.
    let matches = |stored: &str, expanded: &str| {
        stored == expanded
            || stored
                .strip_suffix(expanded)
                .is_some_and(|p| p.ends_with('.'))
    };
    let mut kept = Vec::new();
    for t in inventory.tensors {
        if t.tied_to.is_some() {
            continue; // ties are detected again from the new config
        }
        match after.iter().find(|e| matches(&t.name, &e.name)) {
            Some(e) if e.shape == t.shape => kept.push(t),
            Some(e) => {
                return Err(Error::options(format!(
                    "with {} set, tensor `{}` has shape {:?}, but `{}` holds {:?}: a config override may drop tensors, not reshape them",
                    keys.join(", "),
                    t.name,
                    e.shape,
                    match &t.source {
                        TensorSource::File { path, .. } => path.display().to_string(),
                        TensorSource::Config => "the config".to_string(),
                    },
                    t.shape
                )));
            }
            // A tensor the architecture's expansion does not know is kept unless the old
            // config had it and the new one dropped it.
            None if before.iter().any(|e| matches(&t.name, &e.name)) => {}
            None => kept.push(t),
        }
    }
    if let Some(missing) = after
        .iter()
        .filter(|e| e.tied_to.is_none())
        .find(|e| !kept.iter().any(|t| matches(&t.name, &e.name)))
    {
        return Err(Error::options(format!(
            "with {} set, the model needs tensor `{}`, which the checkpoint lacks",
            keys.join(", "),
            missing.name
        )));
    }
    let mut inv = Inventory::from_tensors(kept, Some(new), opts)?;
    inv.files = inventory.files;
    inv.fingerprints = inventory.fingerprints;
    Ok(inv)
}
