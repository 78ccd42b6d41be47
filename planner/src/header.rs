//! Reading and validating a safetensors header without touching tensor data.
//!
//! A safetensors file is an 8-byte little-endian header length `n`, `n` bytes of JSON, then
//! the data. [`read_header`] reads only the first `8 + n` bytes and checks what safetensors
//! checks: the header size cap, a JSON object of tensor entries, known dtypes, offsets that are
//! contiguous from zero, each range matching dtype × shape, and the data ending exactly at the
//! end of the file. One relaxation: two entries with the very same byte range are accepted as
//! tied tensors sharing storage (the second names the first in [`TensorInfo::tied_to`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::{TensorInfo, TensorSource};

/// The cap safetensors puts on header length (100 MB).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// A parsed safetensors header.
#[derive(Debug, Clone)]
pub struct Header {
    /// The file it was read from.
    pub path: PathBuf,
    /// Tensors in the order of their data offsets, with absolute file offsets.
    pub tensors: Vec<TensorInfo>,
    /// The free-form `__metadata__` map, if any.
    pub metadata: BTreeMap<String, String>,
    /// Length of the whole file in bytes.
    pub file_len: u64,
}

/// Reads and validates the header of the safetensors file at `path`.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("model.safetensors");
/// # let json = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
/// # let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
/// # bytes.extend_from_slice(json);
/// # bytes.extend_from_slice(&[0u8; 8]);
/// # std::fs::write(&path, bytes).unwrap();
/// let header = stowage_planner::read_header(&path)?;
/// assert_eq!(header.tensors[0].name, "w");
/// assert_eq!(header.tensors[0].stored_bytes(), 8);
/// # Ok::<(), stowage_planner::Error>(())
/// ```
pub fn read_header(path: &Path) -> Result<Header> {
    if crate::torch::starts_as_archive(path) {
        return crate::torch::read_archive(path);
    }
    if crate::torch::named_like_torch(path) {
        return Err(Error::TorchArchive {
            path: path.into(),
            reason: "not a zip archive: only the torch.save format of PyTorch 1.6 and later is read (the legacy format needs running its pickle); load it in PyTorch and save it again, or as safetensors"
 .into(),
        });
    }
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut start = [0u8; 8];
    let got = file.read(&mut start).map_err(|e| Error::io(path, e))?;
    let header_len = check_length(path, &start[..got], file_len)?;
    let mut prefix = vec![0u8; 8 + header_len as usize];
    prefix[..8].copy_from_slice(&start);
    file.read_exact(&mut prefix[8..])
        .map_err(|e| Error::io(path, e))?;
    parse_header(path, &prefix, file_len)
}

/// Validates the header of a safetensors file from its first bytes: `file_start` holds at
/// least the 8-byte length and the JSON it announces, `file_len` is the whole file's length
/// (the data must end exactly there). `path` only names the file in errors. [`read_header`]
/// reads a file with it; it also serves headers already in memory (and fuzzing).
///
/// ```
/// # use std::path::Path;
/// let json = br#"{"w":{"dtype":"F16","shape":[3],"data_offsets":[0,6]}}"#;
/// let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
/// bytes.extend_from_slice(json);
/// bytes.extend_from_slice(&[0u8; 6]);
/// let header = stowage_planner::parse_header(Path::new("mem"), &bytes, bytes.len() as u64)?;
/// assert_eq!(header.tensors[0].shape, [3]);
/// assert!(stowage_planner::parse_header(Path::new("mem"), &bytes[..20], 99).is_err());
/// # Ok::<(), stowage_planner::Error>(())
/// ```
pub fn parse_header(path: &Path, file_start: &[u8], file_len: u64) -> Result<Header> {
    let header_len = check_length(path, file_start, file_len)?;
    let json = file_start
        .get(8..8 + header_len as usize)
        .ok_or(Error::HeaderBeyondFile {
            path: path.into(),
            header_len,
            file_len: file_start.len() as u64,
        })?;
    parse_json(path, json, file_len)
}

/// The header length, checked against the cap and the file's length.
fn check_length(path: &Path, start: &[u8], file_len: u64) -> Result<u64> {
    let Some(len_bytes) = start.get(..8) else {
        return Err(Error::HeaderTooShort {
            path: path.into(),
            len: file_len.min(start.len() as u64),
        });
    };
    if file_len < 8 {
        return Err(Error::HeaderTooShort {
            path: path.into(),
            len: file_len,
        });
    }
    let header_len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
    if header_len > MAX_HEADER_BYTES {
        return Err(Error::HeaderTooLarge {
            path: path.into(),
            header_len,
            cap: MAX_HEADER_BYTES,
        });
    }
    if header_len > file_len - 8 {
        return Err(Error::HeaderBeyondFile {
            path: path.into(),
            header_len,
            file_len,
        });
    }
    Ok(header_len)
}

fn parse_json(path: &Path, json: &[u8], file_len: u64) -> Result<Header> {
    let not_json = |reason: String| Error::HeaderNotJson {
        path: path.into(),
        reason,
    };
    let text = std::str::from_utf8(json).map_err(|e| not_json(format!("not UTF-8 ({e})")))?;
    let value: Value =
        serde_json::from_str(text.trim_end_matches(' ')).map_err(|e| not_json(e.to_string()))?;
    let Value::Object(entries) = value else {
        return Err(not_json("the header must be a JSON object".into()));
    };

    let mut metadata = BTreeMap::new();
    let mut ranges = Vec::with_capacity(entries.len());
    for (name, entry) in entries {
        if name == "__metadata__" {
            metadata = parse_metadata(path, entry)?;
            continue;
        }
        ranges.push(parse_entry(path, name, entry)?);
    }

    // Validate as safetensors does: sorted by offsets, contiguous from zero, sizes matching.
    ranges.sort_by_key(|r| (r.start, r.end));
    let data_start = 8 + json.len() as u64;
    let mut expected_start = 0u64;
    let mut previous: Option<(u64, u64, String)> = None;
    let mut tensors = Vec::with_capacity(ranges.len());
    for r in ranges {
        let size_overflow = || Error::SizeOverflow {
            path: path.into(),
            tensor: r.name.clone(),
        };
        let elems = r
            .shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(size_overflow)?;
        let bits = elems
            .checked_mul(r.dtype.bits())
            .ok_or_else(size_overflow)?;
        let expected_bytes = bits.div_ceil(8);
        if bits % 8 != 0 || r.end < r.start || r.end - r.start != expected_bytes {
            return Err(Error::TensorSizeMismatch {
                path: path.into(),
                tensor: r.name,
                expected_bytes,
                actual_bytes: r.end.saturating_sub(r.start),
            });
        }
        let tied_to = match &previous {
            Some((s, e, owner)) if *s == r.start && *e == r.end && r.start != r.end => {
                Some(owner.clone())
            }
            _ if r.start != expected_start => {
                return Err(Error::OffsetsNotContiguous {
                    path: path.into(),
                    tensor: r.name,
                    start: r.start,
                    end: r.end,
                    expected_start,
                });
            }
            _ => None,
        };
        if tied_to.is_none() {
            previous = Some((r.start, r.end, r.name.clone()));
        }
        expected_start = r.end;
        let abs = |off: u64| data_start.checked_add(off).ok_or_else(size_overflow);
        tensors.push(TensorInfo {
            source: TensorSource::File {
                path: path.into(),
                start: abs(r.start)?,
                end: abs(r.end)?,
                strides: None,
            },
            name: r.name,
            dtype: r.dtype,
            shape: r.shape,
            tied_to,
        });
    }
    let data_len = file_len - data_start;
    if expected_start != data_len {
        return Err(Error::DataLengthMismatch {
            path: path.into(),
            data_end: expected_start,
            data_len,
        });
    }
    Ok(Header {
        path: path.into(),
        tensors,
        metadata,
        file_len,
    })
}

struct RawEntry {
    name: String,
    dtype: DType,
    shape: Vec<u64>,
    start: u64,
    end: u64,
}

fn parse_entry(path: &Path, name: String, entry: Value) -> Result<RawEntry> {
    let invalid = |reason: &str| Error::TensorEntryInvalid {
        path: path.into(),
        tensor: name.clone(),
        reason: reason.to_string(),
    };
    let Value::Object(fields) = entry else {
        return Err(invalid(
            "expected an object with dtype, shape and data_offsets",
        ));
    };
    let dtype_str = fields
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("missing string `dtype`"))?;
    let dtype = DType::from_header(dtype_str).ok_or_else(|| Error::UnknownDType {
        path: path.into(),
        tensor: name.clone(),
        dtype: dtype_str.to_string(),
    })?;
    let shape = fields
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("missing array `shape`"))?
        .iter()
        .map(Value::as_u64)
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(|| invalid("`shape` must hold non-negative integers"))?;
    let offsets = fields
        .get("data_offsets")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("missing array `data_offsets`"))?;
    let (start, end) = match offsets.as_slice() {
        [s, e] => match (s.as_u64(), e.as_u64()) {
            (Some(s), Some(e)) => (s, e),
            _ => return Err(invalid("`data_offsets` must be two non-negative integers")),
        },
        _ => return Err(invalid("`data_offsets` must be [start, end]")),
    };
    Ok(RawEntry {
        name,
        dtype,
        shape,
        start,
        end,
    })
}

fn parse_metadata(path: &Path, entry: Value) -> Result<BTreeMap<String, String>> {
    let invalid = || Error::HeaderNotJson {
        path: path.into(),
        reason: "`__metadata__` must map strings to strings".into(),
    };
    match entry {
        Value::Null => Ok(BTreeMap::new()),
        Value::Object(map) => map
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k, s)),
                _ => Err(invalid()),
            })
            .collect(),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, json: &str, data_len: usize) -> PathBuf {
        let path = dir.join("t.safetensors");
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(json.as_bytes());
        bytes.resize(bytes.len() + data_len, 0);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn sorted_by_offset_with_absolute_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let json = r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[2,2],"data_offsets":[8,16]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let path = write(dir.path(), json, 16);
        let h = read_header(&path).unwrap();
        assert_eq!(
            h.tensors
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        let start = 8 + json.len() as u64;
        assert_eq!(
            h.tensors[1].source,
            TensorSource::File {
                path: path.clone(),
                start: start + 8,
                end: start + 16,
                strides: None,
            }
        );
        assert_eq!(h.metadata["format"], "pt");
    }

    #[test]
    fn identical_ranges_are_tied_not_overlapping() {
        let dir = tempfile::tempdir().unwrap();
        let json = r#"{"emb":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"head":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let h = read_header(&write(dir.path(), json, 8)).unwrap();
        assert_eq!(h.tensors[1].tied_to.as_deref(), Some("emb"));
        assert_eq!(h.tensors[1].bytes_as(None), 0);
    }

    #[test]
    fn partial_overlap_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let json = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
        let err = read_header(&write(dir.path(), json, 12)).unwrap_err();
        assert!(
            matches!(err, Error::OffsetsNotContiguous { ref tensor, .. } if tensor == "b"),
            "{err}"
        );
    }

    #[test]
    fn scalar_and_empty_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let json = r#"{"s":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"e":{"dtype":"F32","shape":[0,3],"data_offsets":[8,8]}}"#;
        let h = read_header(&write(dir.path(), json, 8)).unwrap();
        assert_eq!(h.tensors.len(), 2);
    }
}
