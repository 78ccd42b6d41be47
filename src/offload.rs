//! The offload folder: disk-placed tensors that cannot be read in place (their dtype differs
//! from the one asked for) are converted once and written here in safetensors form.
//!
//! Layout: `stowage-offload.safetensors` (the tensors) and `stowage-offload.json`, the
//! manifest: what they were made from (each source file's length and mtime, each tensor's
//! source range, dtype and shape), the data file's length, and one checksum per tensor of the
//! bytes written ([`crate::checksum`], XXH3-64).
//!
//! A load reuses the folder when the manifest matches its sources and tensors and the data
//! file has the header and length that describes; it then hashes every tensor, and a tensor
//! whose bytes fail their checksum is converted again from the source and rewritten in place,
//! with a warning on stderr naming it. Anything else is written afresh: the data and the
//! manifest each go to a locked temp file ([`crate::temp_file`]), are fsynced and renamed into
//! place, so a crash, a kill or a full disk leaves the previous folder as it was (still good
//! for the load that made it) plus at most one temp file, which the next load in the folder
//! removes once no live process holds it.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use stowage_planner::{DType, Fingerprint};

use crate::checksum;
use crate::convert;
use crate::error::{Error, Result};
use crate::mmap::MappedFile;
use crate::store::DiskTensor;
use crate::temp_file::{self, TempFile};

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
    /// The strides in elements when the source holds a non-contiguous view (see
    /// [`stowage_planner::TensorSource::File`]): its elements are gathered in row-major order
    /// when written. `None` for contiguous bytes.
    pub strides: Option<Vec<u64>>,
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
    /// Each tensor's checksum (XXH3-64 of its bytes in the folder), in the same order.
    pub hashes: Vec<u64>,
    /// Whether a matching folder was reused instead of written.
    pub reused: bool,
    /// Bytes written (0 when reused and every checksum held).
    pub written_bytes: u64,
    /// Tensors of a reused folder that failed their checksum and were rewritten.
    pub repaired: Vec<String>,
    /// Temp files left by killed loads, removed: path and length.
    pub removed_leftovers: Vec<(PathBuf, u64)>,
}

fn folder_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    let hint = match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
            "; the disk is full: free space or choose another --offload-folder"
        }
        Some(libc::EFBIG) => {
            "; the file size limit was reached: raise it (`ulimit -f`) or choose another --offload-folder"
        }
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

/// The layout [`prepare`] writes for `tensors`: the file's first bytes (length prefix and
/// header) and each tensor's data range, relative to the end of the header.
struct Layout {
    head: Vec<u8>,
    offsets: Vec<(u64, u64)>,
    data_len: u64,
}

impl Layout {
    fn of(tensors: &[OffloadTensor]) -> Layout {
        let mut offsets = Vec::with_capacity(tensors.len());
        let mut at = 0u64;
        let mut header = serde_json::Map::new();
        for t in tensors {
            let elems: u64 = t.shape.iter().map(|&d| d as u64).product();
            let len = t.target.bytes_for(elems).unwrap_or(0);
            offsets.push((at, at + len));
            header.insert(
                t.name.clone(),
                json!({"dtype": t.target.as_str(), "shape": t.shape, "data_offsets": [at, at + len]}),
            );
            at += len;
        }
        let mut header_bytes =
            serde_json::to_vec(&Value::Object(header)).expect("JSON of strings and numbers");
        header_bytes.resize(header_bytes.len().div_ceil(8) * 8, b' ');
        let mut head = (header_bytes.len() as u64).to_le_bytes().to_vec();
        head.extend_from_slice(&header_bytes);
        Layout {
            head,
            offsets,
            data_len: at,
        }
    }

    fn data_start(&self) -> u64 {
        self.head.len() as u64
    }

    fn file_len(&self) -> u64 {
        self.data_start() + self.data_len
    }

    /// Tensor `i`'s absolute byte range in the data file.
    fn range(&self, i: usize) -> (u64, u64) {
        let (s, e) = self.offsets[i];
        (self.data_start() + s, self.data_start() + e)
    }
}

/// What a manifest records beyond its key: the data file's length and each tensor's hash.
fn manifest(key: &Value, layout: &Layout, hashes: &[u64]) -> Value {
    let mut m = key.clone();
    let o = m.as_object_mut().expect("the key is an object");
    o.insert("data_len".into(), json!(layout.file_len()));
    o.insert("checksum".into(), json!(checksum::ALGORITHM));
    o.insert(
        "hashes".into(),
        json!(
            hashes
                .iter()
                .map(|&h| checksum::to_hex(h))
                .collect::<Vec<_>>()
        ),
    );
    m
}

/// The hashes a manifest vouches for, if it was made for `key` and describes `layout`.
fn trusted_hashes(text: &str, key: &Value, layout: &Layout, count: usize) -> Option<Vec<u64>> {
    let m: Value = serde_json::from_str(text).ok()?;
    if m.get("sources") != key.get("sources")
        || m.get("tensors") != key.get("tensors")
        || m.get("data_len").and_then(Value::as_u64) != Some(layout.file_len())
        || m.get("checksum").and_then(Value::as_str) != Some(checksum::ALGORITHM)
    {
        return None;
    }
    let hashes: Vec<u64> = m
        .get("hashes")?
        .as_array()?
        .iter()
        .map(|h| h.as_str().and_then(checksum::from_hex))
        .collect::<Option<_>>()?;
    (hashes.len() == count).then_some(hashes)
}

/// Makes sure `folder` holds `tensors`, converted, reusing what is there when it matches and
/// its checksums hold (a tensor that fails its checksum is rewritten and named on stderr).
pub fn prepare(
    folder: &Path,
    sources: &[Fingerprint],
    tensors: &[OffloadTensor],
) -> Result<Offloaded> {
    let data_path = folder.join(DATA);
    let index_path = folder.join(INDEX);
    let layout = Layout::of(tensors);
    let key = json!({
        "sources": sources.iter().map(|f| json!({"path": f.path, "len": f.len, "mtime_ns": f.mtime_ns.to_string()})).collect::<Vec<_>>(),
        "tensors": tensors.iter().map(|t| json!({"name": t.name, "from": [t.file.path(), t.start, t.end, t.stored.as_str(), t.strides], "dtype": t.target.as_str(), "shape": t.shape})).collect::<Vec<_>>(),
    });
    let placed = || -> Vec<(String, DiskTensor)> {
        tensors
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let (start, end) = layout.range(i);
                let disk = DiskTensor {
                    path: data_path.clone(),
                    start,
                    end,
                    dtype: t.target,
                    shape: t.shape.clone(),
                };
                (t.name.clone(), disk)
            })
            .collect()
    };

    // What killed loads left: temp files no live process holds.
    let removed_leftovers = temp_file::remove_stale(folder, &[DATA, INDEX]);
    for (path, len) in &removed_leftovers {
        tracing::info!(
            "removed `{}` ({len} bytes), left by a load that did not finish",
            path.display()
        );
    }

    // Reuse a folder made from exactly these sources and tensors, checking every tensor.
    if let Ok(text) = std::fs::read_to_string(&index_path)
        && let Some(hashes) = trusted_hashes(&text, &key, &layout, tensors.len())
        && let Some(file) = open_matching(&data_path, &layout)
    {
        let (repaired, written_bytes, hashes) =
            check_and_repair(folder, &file, &layout, tensors, hashes)?;
        if repaired.iter().any(|(_, changed)| *changed) {
            write_manifest(folder, &index_path, &manifest(&key, &layout, &hashes))?;
        }
        return Ok(Offloaded {
            tensors: placed(),
            hashes,
            reused: true,
            written_bytes,
            repaired: repaired.into_iter().map(|(n, _)| n).collect(),
            removed_leftovers,
        });
    }

    std::fs::create_dir_all(folder).map_err(|e| folder_error(folder, "create it", e))?;
    let tmp = TempFile::create(folder, DATA)
        .map_err(|e| folder_error(folder, "create its data file", e))?;
    let (written, hashes) = write_data(folder, tmp.file(), &layout.head, tensors)?;
    let index_tmp = TempFile::create(folder, INDEX)
        .map_err(|e| folder_error(folder, "write its manifest", e))?;
    write_synced(index_tmp.file(), &manifest(&key, &layout, &hashes))
        .map_err(|e| folder_error(folder, "write its manifest", e))?;
    // Data first: until the manifest follows, the old one describes another header (or
    // checksums that fail), so nothing is trusted that was not written for it.
    tmp.persist(&data_path)
        .map_err(|e| folder_error(folder, "rename its data file", e))?;
    index_tmp
        .persist(&index_path)
        .map_err(|e| folder_error(folder, "rename its manifest", e))?;
    if let Ok(dir) = std::fs::File::open(folder) {
        let _ = dir.sync_all();
    }
    Ok(Offloaded {
        tensors: placed(),
        hashes,
        reused: false,
        written_bytes: written,
        repaired: Vec::new(),
        removed_leftovers,
    })
}

/// The data file, open for reading (and writing, where allowed, for repairs), if it has the
/// length and header `layout` describes.
fn open_matching(path: &Path, layout: &Layout) -> Option<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .or_else(|_| std::fs::File::open(path))
        .ok()?;
    if file.metadata().ok()?.len() != layout.file_len() {
        return None;
    }
    let mut head = vec![0u8; layout.head.len()];
    file.read_exact_at(&mut head, 0).ok()?;
    (head == layout.head).then_some(file)
}

/// What [`check_and_repair`] did: the repaired tensors (with whether the fresh bytes' hash
/// differs from the one recorded), the bytes written and the hashes now true of the file.
type Repair = (Vec<(String, bool)>, u64, Vec<u64>);

/// Hashes every tensor of a reused data file; a tensor that fails is converted again and
/// written in place. Returns the repaired tensors (with whether the fresh bytes' hash differs
/// from the one recorded), the bytes written and the hashes now true of the file.
fn check_and_repair(
    folder: &Path,
    file: &std::fs::File,
    layout: &Layout,
    tensors: &[OffloadTensor],
    mut hashes: Vec<u64>,
) -> Result<Repair> {
    let mut buf = Vec::new();
    let mut repaired = Vec::new();
    let mut written = 0;
    for (i, t) in tensors.iter().enumerate() {
        let (start, end) = layout.range(i);
        let got = checksum::of_range(file, start, end, &mut buf).map_err(|e| {
            folder_error(
                folder,
                &format!("read tensor `{}` from its data file", t.name),
                e,
            )
        })?;
        if got == hashes[i] {
            continue;
        }
        tracing::warn!(
            "offload folder `{}`: tensor `{}` failed its checksum ({} {}, {} recorded): rewriting it from `{}`",
            folder.display(),
            t.name,
            checksum::ALGORITHM,
            checksum::to_hex(got),
            checksum::to_hex(hashes[i]),
            t.file.path().display()
        );
        let bytes = converted(t)?;
        file.write_all_at(&bytes, start).map_err(|e| {
            folder_error(
                folder,
                &format!("rewrite tensor `{}` in its data file", t.name),
                e,
            )
        })?;
        let fresh = checksum::of(&bytes);
        repaired.push((t.name.clone(), fresh != hashes[i]));
        hashes[i] = fresh;
        written += bytes.len() as u64;
    }
    if !repaired.is_empty() {
        file.sync_all()
            .map_err(|e| folder_error(folder, "sync its data file", e))?;
    }
    Ok((repaired, written, hashes))
}

/// `t`'s bytes as the folder holds them: read from its source and converted.
fn converted(t: &OffloadTensor) -> Result<Vec<u8>> {
    let span = t.file.slice(t.start, t.end);
    let src = match &t.strides {
        Some(strides) => std::borrow::Cow::Owned(stowage_planner::gather_strided(
            span,
            &t.shape.iter().map(|&d| d as u64).collect::<Vec<_>>(),
            strides,
            t.stored.bits() / 8,
        )),
        None => std::borrow::Cow::Borrowed(span),
    };
    let values = convert::to_f32(t.stored, &src).ok_or_else(|| Error::UnsupportedDType {
        path: t.file.path().to_path_buf(),
        tensor: t.name.clone(),
        dtype: t.stored,
    })?;
    let bytes = convert::from_f32(&values, t.target).ok_or_else(|| Error::UnsupportedDType {
        path: t.file.path().to_path_buf(),
        tensor: t.name.clone(),
        dtype: t.target,
    })?;
    t.file.release(t.start, t.end);
    Ok(bytes)
}

fn write_synced(mut file: &std::fs::File, manifest: &Value) -> std::io::Result<()> {
    use std::io::Write;
    file.write_all(&serde_json::to_vec_pretty(manifest).expect("JSON"))?;
    file.sync_all()
}

/// Replaces the manifest (after a repair changed a hash), through a temp file.
fn write_manifest(folder: &Path, index_path: &Path, manifest: &Value) -> Result<()> {
    TempFile::create(folder, INDEX)
        .and_then(|t| write_synced(t.file(), manifest).map(|()| t))
        .and_then(|t| t.persist(index_path))
        .map_err(|e| folder_error(folder, "write its manifest", e))
}

/// Writes the data file: the head, then each tensor converted, one write per tensor so that a
/// failure names the tensor it hit. Returns the bytes written and each tensor's hash.
fn write_data(
    folder: &Path,
    mut file: &std::fs::File,
    head: &[u8],
    tensors: &[OffloadTensor],
) -> Result<(u64, Vec<u64>)> {
    use std::io::Write;
    file.write_all(head)
        .map_err(|e| folder_error(folder, "write the header of its data file", e))?;
    let mut written = head.len() as u64;
    let mut hashes = Vec::with_capacity(tensors.len());
    for t in tensors {
        let bytes = converted(t)?;
        file.write_all(&bytes).map_err(|e| {
            folder_error(
                folder,
                &format!("write tensor `{}` to its data file", t.name),
                e,
            )
        })?;
        hashes.push(checksum::of(&bytes));
        written += bytes.len() as u64;
    }
    file.sync_all()
        .map_err(|e| folder_error(folder, "sync its data file", e))?;
    Ok((written, hashes))
}
