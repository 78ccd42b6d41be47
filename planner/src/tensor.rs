//! One tensor of a model: its name, dtype, shape, and where its bytes live.

use std::borrow::Cow;
use std::path::PathBuf;

use crate::dtype::DType;

/// Where a tensor's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TensorSource {
    /// A byte range of a checkpoint file (safetensors, or a torch.save archive, whose entries
    /// are stored uncompressed); offsets are absolute within the file.
    File {
        /// The file (a shard, for sharded checkpoints).
        path: PathBuf,
        /// First byte of the tensor's data (of its first element), from the start of the file.
        start: u64,
        /// One past the last byte.
        end: u64,
        /// `None` for a row-major contiguous tensor, as safetensors holds every tensor. For a
        /// non-contiguous view (a PyTorch tensor saved without `.contiguous()`: a transpose, a
        /// slice of a wider storage), the step in elements along each dimension: element
        /// `[i, j, ..]` lies `(i * strides[0] + j * strides[1] + ..) * element size` bytes
        /// after `start`, and `start..end` spans every element. [`TensorInfo::contiguous`]
        /// gathers such a tensor's bytes in row-major order.
        strides: Option<Vec<u64>>,
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

    /// Whether the bytes are row-major contiguous in the file (every safetensors tensor is;
    /// a PyTorch tensor may be a strided view), so `start..end` can be used as it is.
    pub fn is_contiguous(&self) -> bool {
        !matches!(
            self.source,
            TensorSource::File {
                strides: Some(_),
                ..
            }
        )
    }

    /// The tensor's bytes in row-major order, from `span`, the file's bytes `start..end`:
    /// `span` itself when the tensor is contiguous, else its elements gathered along the
    /// strides into a new buffer (one tensor's bytes).
    ///
    /// # Panics
    ///
    /// If `span` is shorter than the strides reach; the readers that set strides check them
    /// against the file.
    pub fn contiguous<'a>(&self, span: &'a [u8]) -> Cow<'a, [u8]> {
        match &self.source {
            TensorSource::File {
                strides: Some(strides),
                ..
            } => Cow::Owned(gather_strided(
                span,
                &self.shape,
                strides,
                self.dtype.bits() / 8,
            )),
            _ => Cow::Borrowed(span),
        }
    }
}

/// The elements of a strided view, `elem` bytes each, in row-major order: element `[i, j, ..]`
/// of the view is at byte `(i * strides[0] + j * strides[1] + ..) * elem` of `span`. Runs along
/// the innermost dimension are copied whole when its stride is 1.
///
/// # Panics
///
/// If an element lies past the end of `span`, or `shape` and `strides` differ in length.
pub fn gather_strided(span: &[u8], shape: &[u64], strides: &[u64], elem: u64) -> Vec<u8> {
    assert_eq!(shape.len(), strides.len(), "one stride per dimension");
    let elem = elem as usize;
    let n: u64 = shape.iter().product();
    let mut out = Vec::with_capacity(n as usize * elem);
    let Some((&inner, outer)) = shape.split_last() else {
        out.extend_from_slice(&span[..elem]);
        return out;
    };
    if n == 0 {
        return out;
    }
    let (inner, step) = (inner as usize, strides[outer.len()] as usize * elem);
    let mut index = vec![0u64; outer.len()];
    loop {
        let base = index.iter().zip(strides).map(|(i, s)| i * s).sum::<u64>() as usize * elem;
        if step == elem {
            out.extend_from_slice(&span[base..base + inner * elem]);
        } else {
            for j in 0..inner {
                let at = base + j * step;
                out.extend_from_slice(&span[at..at + elem]);
            }
        }
        // The next index over the outer dimensions, last fastest.
        let mut k = outer.len();
        loop {
            if k == 0 {
                return out;
            }
            k -= 1;
            index[k] += 1;
            if index[k] < outer[k] {
                break;
            }
            index[k] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::gather_strided;

    /// The reference: each element's offset computed on its own.
    fn naive(span: &[u8], shape: &[u64], strides: &[u64], elem: usize) -> Vec<u8> {
        let n: u64 = shape.iter().product();
        let mut out = Vec::new();
        for flat in 0..n {
            let (mut rest, mut at) = (flat, 0u64);
            for (d, s) in shape.iter().zip(strides).rev() {
                at += (rest % d) * s;
                rest /= d;
            }
            let at = at as usize * elem;
            out.extend_from_slice(&span[at..at + elem]);
        }
        out
    }

    #[test]
    fn gather_matches_element_by_element_offsets() {
        let span: Vec<u8> = (0..=255).collect();
        for (shape, strides, elem) in [
            (vec![3u64, 4], vec![1u64, 3], 2usize), // transposed
            (vec![3, 4], vec![6, 1], 4),            // rows of a wider storage
            (vec![2, 3, 2], vec![1, 2, 6], 1),      // permuted
            (vec![4], vec![3], 4),                  // every third element
            (vec![2, 3], vec![0, 1], 2),            // expanded (stride 0)
            (vec![3, 0], vec![1, 3], 4),            // empty
            (vec![], vec![], 8),                    // scalar
        ] {
            assert_eq!(
                gather_strided(&span, &shape, &strides, elem as u64),
                naive(&span, &shape, &strides, elem),
                "{shape:?} {strides:?}"
            );
        }
        // A transpose gathered is the transpose.
        let m: Vec<u8> = vec![1, 2, 3, 4, 5, 6]; // 2x3 row-major
        assert_eq!(
            gather_strided(&m, &[3, 2], &[1, 3], 1),
            vec![1, 4, 2, 5, 3, 6]
        );
    }
}
