//! The offload folder: disk-placed tensors that cannot be read in place (their dtype differs
//! from the one asked for) are converted once and written here in safetensors form.
//!
//! Layout: `stowage-offload.safetensors` (the tensors) and `stowage-offload.json` (what they
//! were made from: each source file's length and mtime, each tensor's source range, dtype and
//! shape). A folder whose index matches exactly is reused; anything else is rewritten. Writes
//! are atomic: the old index is removed first, the data goes to a temp name, is fsynced and
//! renamed, then the new index the same way, so a crash or a full disk never leaves an index
//! that vouches for data it does not describe.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use stowage_planner::{DType, Fingerprint};

use crate::convert;
use crate::error::{Error, Result};
use crate::mmap::MappedFile;
use crate::store::DiskTensor;

const DATA: &str = "stowage-offload.safetensors";
const INDEX: &str = "stowage-offload.json";

/// One tensor to offload: where it comes from and what to write.
#[derive(Debug, Clone)]
pub struct OffloadTensor {
    /// Tensor name.
    pub name: String,
    /// The mapped source file.
    pub file: MappedFile,
    /// Byte range in the source.
    pub start: u64,
    /// End of that range.
    pub end: u64,
    /// Stored dtype.
    pub stored: DType,
    /// dtype to write.
    pub target: DType,
    /// Dimensions.
    pub shape: Vec<usize>,
}

/// What [`prepare`] did.
#[derive(Debug, Clone)]
pub struct Offloaded {
    /// Each tensor's place in the folder, in the order given.
    pub tensors: Vec<(String, DiskTensor)>,
    /// Whether a matching folder was reused instead of written.
    pub reused: bool,
    /// Bytes written (0 when reused).
    pub written_bytes: u64,
}

fn folder_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    let hint = match e.raw_os_error() {
        Some(libc::ENOSPC) => "; the disk is full: free space or choose another --offload-folder",
        Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) => {
            "; it is not writable: choose another --offload-folder"
        }
        _ => "",
    };
    Error::OffloadFolder {
        path: path.to_path_buf(),
        reason: format!("cannot {what}: {e}{hint}"),
    }
}

/// Makes sure `folder` holds `tensors`, converted, reusing what is there when it matches.
pub fn prepare(
    folder: &Path,
    sources: &[Fingerprint],
    tensors: &[OffloadTensor],
) -> Result<Offloaded> {
    let data_path = folder.join(DATA);
    let index_path = folder.join(INDEX);
    // Offsets in the data section, in order.
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut at = 0u64;
    for t in tensors {
        let elems: u64 = t.shape.iter().map(|&d| d as u64).product();
        let len = t.target.bytes_for(elems).unwrap_or(0);
        offsets.push((at, at + len));
        at += len;
    }
    let mut header = serde_json::Map::new();
    for (t, &(s, e)) in tensors.iter().zip(&offsets) {
        header.insert(
            t.name.clone(),
            json!({"dtype": t.target.as_str(), "shape": t.shape, "data_offsets": [s, e]}),
        );
    }
    let mut header_bytes =
        serde_json::to_vec(&Value::Object(header)).expect("JSON of strings and numbers");
    header_bytes.resize(header_bytes.len().div_ceil(8) * 8, b' ');
    let data_start = 8 + header_bytes.len() as u64;
    let key = json!({
        "sources": sources.iter().map(|f| json!({"path": f.path, "len": f.len, "mtime_ns": f.mtime_ns.to_string()})).collect::<Vec<_>>(),
        "tensors": tensors.iter().map(|t| json!({"name": t.name, "from": [t.file.path(), t.start, t.end, t.stored.as_str()], "dtype": t.target.as_str(), "shape": t.shape})).collect::<Vec<_>>(),
    });
    let placed = |folder_data: &Path| -> Vec<(String, DiskTensor)> {
        tensors
            .iter()
            .zip(&offsets)
            .map(|(t, &(s, e))| {
                let disk = DiskTensor {
                    path: folder_data.to_path_buf(),
                    start: data_start + s,
                    end: data_start + e,
                    dtype: t.target,
                    shape: t.shape.clone(),
                };
                (t.name.clone(), disk)
            })
            .collect()
    };

    // Reuse a folder made from exactly these sources and tensors.
    if let Ok(text) = std::fs::read_to_string(&index_path)
        && serde_json::from_str::<Value>(&text).ok().as_ref() == Some(&key)
        && std::fs::metadata(&data_path).is_ok_and(|m| m.len() == data_start + at)
    {
        return Ok(Offloaded {
            tensors: placed(&data_path),
            reused: true,
            written_bytes: 0,
        });
    }

    std::fs::create_dir_all(folder).map_err(|e| folder_error(folder, "create it", e))?;
    match std::fs::remove_file(&index_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(folder_error(folder, "remove its stale index", e)),
    }
    let tmp = folder.join(format!("{DATA}.tmp-{}", std::process::id()));
    let written = write_data(&tmp, &header_bytes, tensors).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    std::fs::rename(&tmp, &data_path)
        .map_err(|e| folder_error(folder, "rename its data file", e))?;
    let index_tmp = folder.join(format!("{INDEX}.tmp-{}", std::process::id()));
    write_synced(&index_tmp, &serde_json::to_vec_pretty(&key).expect("JSON"))
        .and_then(|()| std::fs::rename(&index_tmp, &index_path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&index_tmp);
            folder_error(folder, "write its index", e)
        })?;
    if let Ok(dir) = std::fs::File::open(folder) {
        let _ = dir.sync_all();
    }
    Ok(Offloaded {
        tensors: placed(&data_path),
        reused: false,
        written_bytes: written,
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn write_data(path: &PathBuf, header: &[u8], tensors: &[OffloadTensor]) -> Result<u64> {
    let folder = path.parent().unwrap_or(Path::new("."));
    let io = |e| folder_error(folder, "write its data file", e);
    let file = std::fs::File::create(path).map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(8 << 20, file);
    w.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    w.write_all(header).map_err(io)?;
    let mut written = 8 + header.len() as u64;
    for t in tensors {
        let src = t.file.slice(t.start, t.end);
        let values = convert::to_f32(t.stored, src).ok_or_else(|| Error::UnsupportedDType {
            path: t.file.path().to_path_buf(),
            tensor: t.name.clone(),
            dtype: t.stored,
        })?;
        let bytes =
            convert::from_f32(&values, t.target).ok_or_else(|| Error::UnsupportedDType {
                path: t.file.path().to_path_buf(),
                tensor: t.name.clone(),
                dtype: t.target,
            })?;
        w.write_all(&bytes).map_err(io)?;
        written += bytes.len() as u64;
        t.file.release(t.start, t.end);
    }
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(written)
}
