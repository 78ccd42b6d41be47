//! Writing a checkpoint again as safetensors: [`save_safetensors`], what `stowage convert`
//! does. Convert a `pytorch_model.bin` once, and every later load maps it zero-copy.
//!
//! Tensors are streamed from the mapped source files straight into the output, one at a time
//! (nothing is held but the tensor being copied, whose pages are released after). Each output
//! file is a safetensors file as `safetensors.torch.save_file` writes one: the header lists the
//! tensors in the order that function lays them out (larger dtypes first, then by name), with
//! `__metadata__ {"format": "pt"}`, padded with spaces to a multiple of 8 bytes; each tensor's
//! data are its bytes in the source, so they are byte-identical to what it writes for the same
//! tensors. A model over `max_shard_bytes` is split in module order into
//! `model-0000i-of-0000n.safetensors` with a `model.safetensors.index.json`, as
//! `save_pretrained` names them. Tied tensors are written once (the owner), as `save_pretrained`
//! does; [`SaveReport::tied`] lists those left out.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use stowage_planner::{Inventory, TensorInfo, TensorSource};

use crate::error::{Error, Result};
use crate::mmap::MappedFile;

/// What [`save_safetensors`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaveReport {
    /// The files written (weights, then the index if sharded), in order.
    pub files: Vec<PathBuf>,
    /// Tensors written.
    pub tensors: usize,
    /// Bytes of tensor data written.
    pub bytes: u64,
    /// `(tensor, owner)`: tied tensors left out, their owner written.
    pub tied: Vec<(String, String)>,
}

/// The default largest shard, as `save_pretrained` uses: 5 GB.
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// Writes the tensors of `inventory` into `out` as safetensors (sharded above
/// `max_shard_bytes`), copying the model's `config.json` beside them; `progress` is called
/// with bytes done and bytes in all.
///
/// # Errors
///
/// A tensor expanded from a config (no weights to write), a source file that cannot be read,
/// or an output that cannot be written (naming the file). Files are written under a temporary
/// name and renamed into place, so an interrupted run leaves no partial file under a final name.
pub fn save_safetensors(
    inventory: &Inventory,
    out: &Path,
    max_shard_bytes: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<SaveReport> {
    std::fs::create_dir_all(out).map_err(|e| Error::io("create", out, e))?;
    let mut report = SaveReport::default();
    let mut owned: Vec<&TensorInfo> = Vec::new();
    for t in &inventory.tensors {
        match &t.tied_to {
            Some(owner) => report.tied.push((t.name.clone(), owner.clone())),
            None => owned.push(t),
        }
    }
    if let Some(t) = owned
        .iter()
        .find(|t| matches!(t.source, TensorSource::Config))
    {
        return Err(Error::options(format!(
            "tensor `{}` comes from a config, not a checkpoint: there are no weights to convert",
            t.name
        )));
    }
    // Shards in module order.
    let mut shards: Vec<Vec<&TensorInfo>> = vec![Vec::new()];
    let mut size = 0u64;
    for t in owned {
        let b = t.stored_bytes();
        if size > 0 && size + b > max_shard_bytes {
            shards.push(Vec::new());
            size = 0;
        }
        size += b;
        shards.last_mut().expect("one").push(t);
    }
    let total: u64 = shards.iter().flatten().map(|t| t.stored_bytes()).sum();
    let n = shards.len();
    let mut weight_map = Map::new();
    let mut files = std::collections::HashMap::<PathBuf, MappedFile>::new();
    let mut done = 0u64;
    for (i, mut shard) in shards.into_iter().enumerate() {
        let name = if n == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", i + 1)
        };
        // safetensors.torch.save_file's layout: larger dtypes first, then by name.
        shard.sort_by(|a, b| b.dtype.cmp(&a.dtype).then(a.name.cmp(&b.name)));
        let path = out.join(&name);
        write_file(&path, &shard, &mut files, &mut |b| {
            done += b;
            progress(done, total);
        })?;
        for t in &shard {
            weight_map.insert(t.name.clone(), json!(name));
        }
        report.tensors += shard.len();
        report.files.push(path);
    }
    report.bytes = total;
    if n > 1 {
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        let path = out.join("model.safetensors.index.json");
        write_atomically(&path, |f| {
            f.write_all(
                serde_json::to_string_pretty(&index)
                    .expect("json")
                    .as_bytes(),
            )
        })?;
        report.files.push(path);
    }
    if let Some(config) = inventory.config.as_ref().map(|c| c.path.clone())
        && config.is_file()
    {
        let to = out.join("config.json");
        if config != to {
            std::fs::copy(&config, &to).map_err(|e| Error::io("copy", &to, e))?;
        }
    }
    Ok(report)
}

/// One safetensors file of `tensors`, in that order.
fn write_file(
    path: &Path,
    tensors: &[&TensorInfo],
    files: &mut std::collections::HashMap<PathBuf, MappedFile>,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let mut header = Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut at = 0u64;
    for t in tensors {
        let end = at + t.stored_bytes();
        header.insert(
            t.name.clone(),
            json!({"dtype": t.dtype.as_str(), "shape": t.shape, "data_offsets": [at, end]}),
        );
        at = end;
    }
    let mut json = serde_json::to_vec(&Value::Object(header)).expect("json");
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    // Source files are mapped once each.
    for t in tensors {
        if let TensorSource::File { path: src, .. } = &t.source
            && !files.contains_key(src)
        {
            files.insert(src.clone(), MappedFile::open(src)?);
        }
    }
    write_atomically(path, |f| {
        f.write_all(&(json.len() as u64).to_le_bytes())?;
        f.write_all(&json)?;
        for t in tensors {
            let TensorSource::File {
                path: src,
                start,
                end,
                ..
            } = &t.source
            else {
                unreachable!("checked: every tensor comes from a file")
            };
            let file = &files[src];
            // A strided view (a PyTorch tensor saved without `.contiguous()`) is written in
            // row-major order, as safetensors holds every tensor.
            f.write_all(&t.contiguous(file.slice(*start, *end)))?;
            file.release(*start, *end);
            progress(t.stored_bytes());
        }
        Ok(())
    })
}

/// Writes `path` through `write` under a temporary name beside it, synced, then renamed.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp-{}", path.display(), std::process::id()));
    let result = (|| {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        write(&mut f)?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io("write", path, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, e))
}
