//! Sharded checkpoints: `model.safetensors.index.json` and the shards it names.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::header::read_header;
use crate::tensor::TensorInfo;

/// Reads a sharded checkpoint's index and the header of every shard it names, and returns the
/// indexed tensors (shard by shard, each in offset order).
///
/// Errors name the index and the shard: a shard that does not exist ([`Error::ShardMissing`]),
/// a tensor the index maps to a shard that lacks it ([`Error::TensorNotInShard`]), or any
/// problem in a shard's header. Tensors a shard holds but the index does not list are left
/// out, as transformers leaves them out.
pub fn read_index(index: &Path) -> Result<Vec<TensorInfo>> {
    let invalid = |reason: String| Error::IndexInvalid {
        path: index.into(),
        reason,
    };
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let weight_map = value
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("missing object `weight_map`".into()))?;
    if weight_map.is_empty() {
        return Err(invalid(
            "`weight_map` is empty: the index maps no tensor to a shard".into(),
        ));
    }
    let dir = index.parent().unwrap_or(Path::new("."));

    // Shard file → tensor names the index assigns to it, shards in first-mention order.
    let mut shards: BTreeMap<usize, (PathBuf, Vec<&str>)> = BTreeMap::new();
    let mut order: HashMap<&str, usize> = HashMap::new();
    for (tensor, shard) in weight_map {
        let shard = shard
            .as_str()
            .ok_or_else(|| invalid(format!("`weight_map[\"{tensor}\"]` is not a file name")))?;
        if shard.contains("..") || Path::new(shard).is_absolute() {
            return Err(invalid(format!(
                "shard name `{shard}` leaves the checkpoint folder"
            )));
        }
        let next = order.len();
        let slot = *order.entry(shard).or_insert(next);
        shards
            .entry(slot)
            .or_insert_with(|| (dir.join(shard), Vec::new()))
            .1
            .push(tensor);
    }

    let mut tensors = Vec::with_capacity(weight_map.len());
    for (shard, names) in shards.into_values() {
        if !shard.is_file() {
            return Err(Error::ShardMissing {
                index: index.into(),
                shard,
                tensor: names[0].to_string(),
            });
        }
        let header = read_header(&shard)?;
        let wanted: HashSet<&str> = names.iter().copied().collect();
        let present: HashSet<&str> = header.tensors.iter().map(|t| t.name.as_str()).collect();
        if let Some(absent) = names.iter().find(|n| !present.contains(*n)) {
            return Err(Error::TensorNotInShard {
                index: index.into(),
                shard,
                tensor: absent.to_string(),
            });
        }
        tensors.extend(
            header
                .tensors
                .into_iter()
                .filter(|t| wanted.contains(t.name.as_str())),
        );
    }
    Ok(tensors)
}
