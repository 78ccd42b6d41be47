//! One tensor of a model: its name, dtype, shape, and where its bytes live.

use std::path::PathBuf;

use crate::dtype::DType;

/// Where a tensor's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TensorSource {
    /// A byte range of a safetensors file; offsets are absolute within the file.
    File {
        /// The safetensors file (a shard, for sharded checkpoints).
        path: PathBuf,
        /// First byte of the tensor's data, from the start of the file.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// Expanded from a `config.json`; there are no bytes yet.
    Config,
}

/// A tensor as the inventory describes it, without its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Dot path exactly as stored in the checkpoint (`model.layers.0.mlp.up_proj.weight`).
    pub name: String,
    /// Element type as stored.
    pub dtype: DType,
    /// Dimensions, outermost first.
    pub shape: Vec<u64>,
    /// Where the bytes are.
    pub source: TensorSource,
    /// When this tensor is tied to another (it shares that tensor's storage), the name of the
    /// tensor that owns the bytes. Tied tensors count zero bytes and go where their owner goes.
    pub tied_to: Option<String>,
}

impl TensorInfo {
    /// Number of elements (the product of the shape; 1 for a scalar).
    pub fn elems(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Bytes as stored in the checkpoint.
    pub fn stored_bytes(&self) -> u64 {
        self.dtype.bytes_for(self.elems()).unwrap_or(u64::MAX)
    }

    /// Bytes this tensor adds to a device once loaded with `target` requested
    /// (see [`DType::sized_as`]); zero for a tied tensor, whose owner carries the bytes.
    pub fn bytes_as(&self, target: Option<DType>) -> u64 {
        if self.tied_to.is_some() {
            return 0;
        }
        self.dtype
            .sized_as(target)
            .bytes_for(self.elems())
            .unwrap_or(u64::MAX)
    }

    /// The module path holding this tensor: the name without its last segment (`""` at the root).
    pub fn module(&self) -> &str {
        self.name.rsplit_once('.').map_or("", |(m, _)| m)
    }
}
