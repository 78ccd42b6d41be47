//! `state_dict`: tensors the caller already holds in memory, loaded as a checkpoint
//! ([`crate::Pretrained::state_dict`]).
//!
//! stowage plans from a checkpoint's inventory and streams tensors from mapped files, so a
//! state dict is written once as a safetensors file — into the offload folder, named by a hash
//! of its contents, so the same tensors reuse it — and then planned and loaded as any
//! checkpoint: disk offload, checksums, the report and split models work unchanged. That costs
//! one write of the tensors' bytes; the caller's buffers are only read (shared, not copied,
//! when handed over as [`bytes::Bytes`]).
//!
//! ```
//! use stowage::{DType, StateDict};
//! let mut sd = StateDict::new();
//! sd.insert_f32("layers.0.w.weight", &[2, 2], &[1.0, 2.0, 3.0, 4.0])?;
//! sd.insert("layers.0.w.bias", DType::BF16, &[2], vec![0u8; 4])?;
//! assert_eq!(sd.len(), 2);
//! assert!(sd.insert_f32("layers.0.w.weight", &[1], &[0.0]).is_err()); // a name twice
//! # Ok::<(), stowage::Error>(())
//! ```

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use stowage_planner::DType;

use crate::error::{Error, Result};

/// Named tensors in memory, in the order given: names, dtypes, shapes and bytes
/// (little-endian, row-major, as safetensors stores them).
#[derive(Clone, Default)]
pub struct StateDict {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for StateDict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDict")
            .field("tensors", &self.entries.len())
            .field("bytes", &self.bytes())
            .finish()
    }
}

#[derive(Clone)]
struct Entry {
    name: String,
    dtype: DType,
    shape: Vec<u64>,
    data: bytes::Bytes,
}

impl StateDict {
    /// An empty state dict.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name` with `dtype`, `shape` and its bytes.
    ///
    /// # Errors
    ///
    /// A name given twice, an empty name, or bytes whose length is not what `dtype` and
    /// `shape` take (the error names the tensor and both lengths).
    pub fn insert(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        shape: &[u64],
        data: impl Into<bytes::Bytes>,
    ) -> Result<&mut Self> {
        let name = name.into();
        let data = data.into();
        let bad = |why: String| Error::options(format!("state_dict tensor `{name}`: {why}"));
        if name.is_empty() {
            return Err(bad("an empty name".into()));
        }
        if self.entries.iter().any(|e| e.name == name) {
            return Err(bad("given twice".into()));
        }
        let elems = shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
        let want = dtype.bytes_for(elems).ok_or_else(|| {
            bad(format!(
                "{} values of {} are not whole bytes",
                elems,
                dtype.as_str()
            ))
        })?;
        if want != data.len() as u64 {
            return Err(bad(format!(
                "{} bytes, but {} {shape:?} takes {want}",
                data.len(),
                dtype.as_str()
            )));
        }
        self.entries.push(Entry {
            name,
            dtype,
            shape: shape.to_vec(),
            data,
        });
        Ok(self)
    }

    /// Adds `name` as f32 `values` of `shape`.
    ///
    /// # Errors
    ///
    /// As [`StateDict::insert`].
    pub fn insert_f32(
        &mut self,
        name: impl Into<String>,
        shape: &[u64],
        values: &[f32],
    ) -> Result<&mut Self> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.insert(name, DType::F32, shape, bytes)
    }

    /// Adds `name` from a burn tensor (its data is read back to the host once).
    ///
    /// # Errors
    ///
    /// A dtype safetensors has no name for (quantized tensors), or as [`StateDict::insert`].
    pub fn insert_tensor<B: Backend, const D: usize, K>(
        &mut self,
        name: impl Into<String>,
        tensor: Tensor<B, D, K>,
    ) -> Result<&mut Self>
    where
        K: burn::tensor::TensorKind<B> + burn::tensor::BasicOps<B>,
    {
        let name = name.into();
        let shape: Vec<u64> = tensor.dims().iter().map(|&d| d as u64).collect();
        let data = tensor.into_data();
        use burn::tensor::DType as B_;
        let dtype = match data.dtype {
            B_::F64 => DType::F64,
            B_::F32 | B_::Flex32 => DType::F32,
            B_::F16 => DType::F16,
            B_::BF16 => DType::BF16,
            B_::I64 => DType::I64,
            B_::I32 => DType::I32,
            B_::I16 => DType::I16,
            B_::I8 => DType::I8,
            B_::U64 => DType::U64,
            B_::U32 => DType::U32,
            B_::U16 => DType::U16,
            B_::U8 => DType::U8,
            B_::Bool(_) => DType::BOOL,
            other => {
                return Err(Error::options(format!(
                    "state_dict tensor `{name}`: burn dtype {other:?} has no safetensors name"
                )));
            }
        };
        let bytes = data.into_bytes().to_vec();
        self.insert(name, dtype, &shape, bytes)
    }

    /// How many tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    /// Bytes of all tensors.
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.data.len() as u64).sum()
    }

    /// A hash of names, dtypes, shapes and bytes: what names the file [`Self::write_into`]
    /// writes.
    pub fn content_hash(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for e in &self.entries {
            (&e.name, e.dtype.as_str(), &e.shape).hash(&mut h);
            h.write(&e.data);
        }
        h.finish()
    }

    /// The safetensors header (the JSON, padded with spaces to a multiple of 8 bytes).
    fn header(&self) -> Vec<u8> {
        let mut map = serde_json::Map::new();
        map.insert(
            "__metadata__".into(),
            serde_json::json!({"format": "pt", "written_by": "stowage state_dict"}),
        );
        let mut at = 0u64;
        for e in &self.entries {
            let end = at + e.data.len() as u64;
            map.insert(
                e.name.clone(),
                serde_json::json!({"dtype": e.dtype.as_str(), "shape": e.shape, "data_offsets": [at, end]}),
            );
            at = end;
        }
        let mut json = serde_json::to_vec(&serde_json::Value::Object(map)).expect("json");
        while !json.len().is_multiple_of(8) {
            json.push(b' ');
        }
        json
    }

    /// Writes the tensors as a safetensors file at `path` (to a temporary name beside it,
    /// then renamed into place, so a reader never sees half a file).
    ///
    /// # Errors
    ///
    /// The file cannot be written (a full disk, a folder that cannot be created), naming it.
    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        }
        let tmp = PathBuf::from(format!("{}.tmp-{}", path.display(), std::process::id()));
        let written = (|| -> std::io::Result<()> {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            let header = self.header();
            f.write_all(&(header.len() as u64).to_le_bytes())?;
            f.write_all(&header)?;
            for e in &self.entries {
                f.write_all(&e.data)?;
            }
            f.into_inner().map_err(|e| e.into_error())?.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io("write", &tmp, e));
        }
        std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, e))
    }

    /// Writes the tensors into `folder` as `stowage-state-dict-<hash>.safetensors`, unless a
    /// file of that name and length is already there; returns its path.
    ///
    /// # Errors
    ///
    /// As [`StateDict::write`]; an empty state dict.
    pub fn write_into(&self, folder: &Path) -> Result<PathBuf> {
        if self.is_empty() {
            return Err(Error::options("state_dict: no tensors"));
        }
        let path = folder.join(format!(
            "stowage-state-dict-{:016x}.safetensors",
            self.content_hash()
        ));
        let len = 8 + self.header().len() as u64 + self.bytes();
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == len) {
            return Ok(path);
        }
        self.write(&path)?;
        Ok(path)
    }
}
