//! Transforms run in a GPU's own memory while a checkpoint loads: the glue between the loader,
//! burn's GPU tensors and the cubecl kernels of `stowage-kernels`.
//!
//! What the loader does on a device rather than on the host:
//! - **widen** ([`DeviceTransforms::widen_on_device`]): a bf16 or f16 tensor that a GPU holds
//!   as f32 ([`PlanOptions::gpu_float`](crate::PlanOptions::gpu_float)) crosses the bus as the
//!   checkpoint stores it, half the bytes, and the widen kernel writes the f32 tensor from them:
//!   the host converts nothing and no half-precision tensor is kept;
//! - **checksum** ([`DeviceTransforms::float_checksum`] and its `int_` and `bool_` twins): the
//!   kernels' checksum of a loaded tensor, taken on the device, which the loader compares with
//!   the same checksum of what the file says the tensor holds
//!   ([`LoadOptions::verify`](crate::LoadOptions::verify)): a load proved bit-exact without
//!   copying the weights back.
//!
//! [`DeviceTransforms`] says what a backend runs on its devices: the CPU backend keeps its
//! defaults (nothing runs on a device; the loader works on the host), and `GpuBackend` runs the
//! kernels on its wgpu and CUDA devices, with burn's own cubecl client, on memory burn then
//! owns. The loader is generic over any backend, with no bound on this trait: it reaches a
//! backend's transforms through the [`Targets`](crate::Targets) it loads onto, which carry
//! them as function pointers ([`Transforms`], attached by
//! [`Targets::with_device_transforms`](crate::Targets::with_device_transforms), which the
//! GPU constructors call). What the checksum covers is defined on [`DeviceTransforms`].

use std::path::Path;

use burn::prelude::Backend;
use burn::tensor::TensorData;
use burn::tensor::ops::{BoolTensor, FloatTensor, IntTensor, QuantizedTensor};
use burn::tensor::quantization::QuantScheme;
use stowage_planner::{DType, Quantize};

use crate::error::{Error, Result};
use crate::store::StoredTensor;

/// Why a kernel run on a device failed: `stowage_kernels::Error` in GPU builds; a build
/// without GPU features runs no kernel, and its error type has no values.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub type KernelError = stowage_kernels::Error;

/// Why a kernel run on a device failed: `stowage_kernels::Error` in GPU builds; a build
/// without GPU features runs no kernel, and its error type has no values.
#[cfg(not(any(feature = "cuda", feature = "wgpu")))]
pub type KernelError = std::convert::Infallible;

/// Transforms a backend runs on its GPUs' memory while a checkpoint is loaded, used by
/// [`crate::load_store`] when attached to the [`Targets`](crate::Targets) it loads onto
/// ([`Targets::with_device_transforms`](crate::Targets::with_device_transforms)).
///
/// Every method has a default that does nothing on a device (`None`), which is what a CPU
/// backend keeps: the loader then converts on the host, and `verify` is refused for a tensor
/// on a GPU of a backend that cannot checksum it. stowage implements it for burn-ndarray's
/// `NdArray` (the defaults) and, with the `wgpu` or `cuda` feature, for `GpuBackend` (the
/// kernels of `stowage-kernels` on its wgpu and CUDA devices), whose GPU targets
/// (`Targets::wgpu`, `Targets::cuda`) attach them.
///
/// # What the checksum covers
///
/// A tensor's elements in row-major order, as the device stores them: the little-endian bytes
/// of its dtype (f32 once widened; f16 and bf16 kept as stored, two values to a 32-bit word;
/// integers in the device's integer type; booleans as the backend stores them, one byte or one
/// word each), read as 32-bit words, the last one zero-padded when the bytes do not fill it.
/// That is the definition of `stowage_kernels::checksum` over those words (a tensor of more
/// than `stowage_kernels::MAX_LAUNCH_ELEMS` words, 2³¹, is taken in parts of that many, each
/// with positions from 0, and the parts' checksums are folded in order). On the device the kernel
/// sums the whole words; the bytes of a partial last word (an odd number of 16-bit values, or
/// of bytes) are read back, at most 3 of them, and added on the host, so the padding never
/// depends on what the device's allocation holds past the tensor.
pub trait DeviceTransforms: Backend {
    /// An f32 tensor on `device`, widened there from `data`: a tensor's bytes as the
    /// checkpoint stores them (`data.dtype` bf16 or f16), copied to the device as they are.
    /// `None` when this backend does not widen on `device` (the CPU, an empty tensor, another
    /// dtype).
    fn widen_on_device(
        data: TensorData,
        device: &Self::Device,
    ) -> Option<std::result::Result<FloatTensor<Self>, KernelError>> {
        let _ = (data, device);
        None
    }

    /// The checksum of a float tensor's elements as its device stores them (see
    /// [`DeviceTransforms`]), taken on the device; `None` when `tensor` is not on a device this
    /// backend checksums.
    fn float_checksum(tensor: &FloatTensor<Self>) -> Option<std::result::Result<u64, KernelError>> {
        let _ = tensor;
        None
    }

    /// [`float_checksum`](Self::float_checksum) of an integer tensor.
    fn int_checksum(tensor: &IntTensor<Self>) -> Option<std::result::Result<u64, KernelError>> {
        let _ = tensor;
        None
    }

    /// [`float_checksum`](Self::float_checksum) of a boolean tensor.
    fn bool_checksum(tensor: &BoolTensor<Self>) -> Option<std::result::Result<u64, KernelError>> {
        let _ = tensor;
        None
    }

    /// A `[rows, cols]` weight quantized on `device` from `data`, its bytes as the checkpoint
    /// stores them (`data.dtype` f32, bf16 or f16), copied to the device as they are: burn's
    /// quantized tensor in `scheme`, the values and scales written by the kernels in
    /// stowage's format ([`crate::quantized`]), bit for bit what
    /// [`QuantizedWeight::quantize`](crate::QuantizedWeight::quantize) computes on the host.
    ///
    /// `None` when this backend does not quantize on `device` (the CPU), or `scheme` is not
    /// one the kernels write: 32-bit packed values (`QuantStore::PackedU32(0)`, `Q8S` for
    /// int8, `Q4S` for int4), f32 scales, blocks of exactly the group size along the rows, and
    /// rows a whole number of groups. The loader then quantizes on the host.
    fn quantize_on_device(
        data: TensorData,
        quantize: Quantize,
        scheme: QuantScheme,
        device: &Self::Device,
    ) -> Option<std::result::Result<QuantizedTensor<Self>, KernelError>> {
        let _ = (data, quantize, scheme, device);
        None
    }

    /// The largest single allocation `device` makes, in bytes: a tensor larger than this
    /// cannot be held there. `None` when there is no such limit to ask (the CPU).
    fn max_allocation(device: &Self::Device) -> Option<u64> {
        let _ = device;
        None
    }

    /// The checksum of a quantized tensor as its device stores it: the checksum of its packed
    /// values' 32-bit words and that of its scales' (f32 bits), folded in that order (see
    /// [`DeviceTransforms`] for how parts fold); `None` when `tensor` is not on a device this
    /// backend checksums, or is not stored as packed words.
    fn quantized_checksum(
        tensor: &QuantizedTensor<Self>,
    ) -> Option<std::result::Result<u64, KernelError>> {
        let _ = tensor;
        None
    }
}

/// The CPU backend: nothing runs on a device.
impl DeviceTransforms for burn_ndarray::NdArray {}

/// The result of a transform, or `None` where it does not run.
type Ran<T> = Option<std::result::Result<T, KernelError>>;

/// [`DeviceTransforms::quantize_on_device`] as a function pointer.
type QuantizeFn<B> =
    fn(TensorData, Quantize, QuantScheme, &burn::tensor::Device<B>) -> Ran<QuantizedTensor<B>>;

/// A backend's [`DeviceTransforms`] as function pointers, which [`Targets`](crate::Targets)
/// carries to the loader: the loader takes any backend, so it cannot ask for the trait.
/// (Builds without GPU features take no checksum: `verify` is refused before they are read.)
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))]
pub(crate) struct Transforms<B: Backend> {
    /// [`DeviceTransforms::widen_on_device`].
    pub widen: fn(TensorData, &B::Device) -> Ran<FloatTensor<B>>,
    /// [`DeviceTransforms::float_checksum`].
    pub float_checksum: fn(&FloatTensor<B>) -> Ran<u64>,
    /// [`DeviceTransforms::int_checksum`].
    pub int_checksum: fn(&IntTensor<B>) -> Ran<u64>,
    /// [`DeviceTransforms::bool_checksum`].
    pub bool_checksum: fn(&BoolTensor<B>) -> Ran<u64>,
    /// [`DeviceTransforms::quantize_on_device`].
    pub quantize: QuantizeFn<B>,
    /// [`DeviceTransforms::quantized_checksum`].
    pub quantized_checksum: fn(&QuantizedTensor<B>) -> Ran<u64>,
    /// [`DeviceTransforms::max_allocation`].
    pub max_allocation: fn(&B::Device) -> Option<u64>,
}

impl<B: Backend> Transforms<B> {
    /// None: every transform is `None`, and the loader works on the host.
    pub fn none() -> Self {
        Transforms {
            widen: |_, _| None,
            float_checksum: |_| None,
            int_checksum: |_| None,
            bool_checksum: |_| None,
            quantize: |_, _, _, _| None,
            quantized_checksum: |_| None,
            max_allocation: |_| None,
        }
    }

    /// `B`'s own.
    pub fn of() -> Self
    where
        B: DeviceTransforms,
    {
        Transforms {
            widen: B::widen_on_device,
            float_checksum: B::float_checksum,
            int_checksum: B::int_checksum,
            bool_checksum: B::bool_checksum,
            quantize: B::quantize_on_device,
            quantized_checksum: B::quantized_checksum,
            max_allocation: B::max_allocation,
        }
    }
}

impl<B: Backend> Clone for Transforms<B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for Transforms<B> {}

impl<B: Backend> std::fmt::Debug for Transforms<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transforms")
    }
}

/// What a tensor loaded onto a GPU must hold, from the file's bytes: what `verify` checksums
/// on the host.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))]
pub(crate) enum Expected<'a> {
    /// The file's bytes, as stored.
    Bytes(&'a [u8]),
    /// The file's float bytes, stored as `from`, converted to `to` as the loader converts
    /// them: to f32 with `half` (which the widen kernel matches bit for bit), or `as f32` from
    /// f64; then to f16 or bf16 rounding to nearest even.
    Converted {
        /// The file's bytes.
        bytes: &'a [u8],
        /// Their dtype.
        from: DType,
        /// The dtype the device holds.
        to: DType,
    },
    /// These integers, each as the device's integer type stores it.
    Ints(&'a [i64]),
    /// The file's booleans (one byte each, non-zero is true), as the device stores them.
    Bools(&'a [u8]),
    /// The file's float weight quantized on the host, as a device holds it in burn's
    /// 32-bit packed store: values packed into words, then one scale per block of `block`
    /// values (see [`DeviceTransforms::quantized_checksum`]).
    Quantized {
        /// The weight, quantized by the host's rule.
        weight: &'a crate::quantized::QuantizedWeight,
        /// burn's block size.
        block: usize,
    },
}

/// Where a tensor was loaded, for errors.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))]
pub(crate) struct Site<'a> {
    /// The checkpoint file.
    pub path: &'a Path,
    /// The tensor.
    pub tensor: &'a str,
    /// The GPU.
    pub index: u32,
}

impl Site<'_> {
    /// A kernel failure while `what` (`widening`, `checksumming`) this tensor.
    pub fn kernel(&self, what: &'static str, source: KernelError) -> Error {
        Error::Kernel {
            path: self.path.to_path_buf(),
            tensor: self.tensor.to_string(),
            index: self.index,
            what,
            source: Box::new(source),
        }
    }
}

/// A build without GPU features has no device to verify on.
#[cfg(not(any(feature = "cuda", feature = "wgpu")))]
pub(crate) fn verify<B: Backend>(
    stored: &StoredTensor<B>,
    expected: Expected<'_>,
    site: Site<'_>,
    transforms: &Transforms<B>,
) -> Result<()> {
    let _ = (stored, expected, transforms);
    Err(Error::VerifyUnsupported {
        path: site.path.to_path_buf(),
        tensor: site.tensor.to_string(),
        index: site.index,
    })
}

/// Compares the checksum of `stored`, just loaded onto GPU `site.index`, taken on its device,
/// with the same checksum of `expected` on the host.
///
/// # Errors
///
/// [`Error::VerifyMismatch`] when they differ, [`Error::VerifyUnsupported`] when the backend
/// cannot checksum the tensor on its device, [`Error::Kernel`] when the kernel fails.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub(crate) fn verify<B: Backend>(
    stored: &StoredTensor<B>,
    expected: Expected<'_>,
    site: Site<'_>,
    transforms: &Transforms<B>,
) -> Result<()> {
    use burn::tensor::{TensorMetadata, TensorPrimitive};
    let (device, dtype) = match stored {
        StoredTensor::Float {
            tensor: TensorPrimitive::Float(t),
            ..
        } => ((transforms.float_checksum)(t), t.dtype()),
        StoredTensor::Int { tensor, .. } => ((transforms.int_checksum)(tensor), tensor.dtype()),
        StoredTensor::Bool { tensor, .. } => ((transforms.bool_checksum)(tensor), tensor.dtype()),
        StoredTensor::Float {
            tensor: TensorPrimitive::QFloat(t),
            ..
        } => ((transforms.quantized_checksum)(t), burn::tensor::DType::U32),
        StoredTensor::Disk(_) => (None, burn::tensor::DType::U8),
    };
    let unsupported = || Error::VerifyUnsupported {
        path: site.path.to_path_buf(),
        tensor: site.tensor.to_string(),
        index: site.index,
    };
    let device = device
        .ok_or_else(unsupported)?
        .map_err(|e| site.kernel("checksumming", e))?;
    let host = host_checksum(expected, dtype.size());
    compare(device, host, site)
}

/// `Ok` when the device's checksum is the host's, else [`Error::VerifyMismatch`].
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn compare(device: u64, host: u64, site: Site<'_>) -> Result<()> {
    if device == host {
        return Ok(());
    }
    Err(Error::VerifyMismatch {
        path: site.path.to_path_buf(),
        tensor: site.tensor.to_string(),
        index: site.index,
        device,
        host,
    })
}

/// Folds the checksums of a tensor's parts, in order, into one; one part is its own checksum.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn combine(parts: impl IntoIterator<Item = u64>) -> u64 {
    let mut parts = parts.into_iter();
    let first = parts
        .next()
        .unwrap_or_else(|| stowage_kernels::reference::checksum([]));
    parts.fold(first, |h, p| {
        h.rotate_left(17) ^ p.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    })
}

/// Adds a word's terms to a checksum (`b << 32 | a`).
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn add_terms(sum: u64, (a, b): (u32, u32)) -> u64 {
    let lo = (sum as u32).wrapping_add(a);
    let hi = ((sum >> 32) as u32).wrapping_add(b);
    u64::from(hi) << 32 | u64::from(lo)
}

/// The checksum of `words` words, word `i` being `word(i)`, in parts of at most
/// `MAX_LAUNCH_ELEMS` words (in parallel: the checksum is a sum of per-position terms).
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn words_checksum(words: usize, word: impl Fn(usize) -> u32 + Sync) -> u64 {
    use rayon::prelude::*;
    use stowage_kernels::reference::checksum_terms;
    let max = stowage_kernels::MAX_LAUNCH_ELEMS as usize;
    let part = |lo: usize, hi: usize| {
        let (a, b) = (lo..hi)
            .into_par_iter()
            .with_min_len(crate::convert::CHUNK)
            .map(|i| checksum_terms((i - lo) as u32, word(i)))
            .reduce(
                || (0, 0),
                |x, y| (x.0.wrapping_add(y.0), x.1.wrapping_add(y.1)),
            );
        u64::from(b) << 32 | u64::from(a)
    };
    combine((0..words.div_ceil(max).max(1)).map(|p| part(p * max, ((p + 1) * max).min(words))))
}

/// The checksum of `expected` held in elements of `elem_bytes` bytes (the device tensor's
/// dtype size, which integers and booleans are written in).
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub(crate) fn host_checksum(expected: Expected<'_>, elem_bytes: usize) -> u64 {
    use half::{bf16, f16};
    /// Word `i` of little-endian bytes, zero-padded.
    fn word_of(bytes: &[u8], i: usize) -> u32 {
        let mut w = [0u8; 4];
        let chunk = bytes.get(4 * i..).unwrap_or(&[]);
        let n = chunk.len().min(4);
        w[..n].copy_from_slice(&chunk[..n]);
        u32::from_le_bytes(w)
    }
    /// Word `i` of `len` bytes given one by one.
    fn word_from(len: usize, byte: impl Fn(usize) -> u8, i: usize) -> u32 {
        (0..4).fold(0u32, |w, k| {
            let j = 4 * i + k;
            let b = if j < len { byte(j) } else { 0 };
            w | u32::from(b) << (8 * k)
        })
    }
    let elem_bytes = elem_bytes.max(1);
    match expected {
        Expected::Bytes(bytes) => words_checksum(bytes.len().div_ceil(4), |i| word_of(bytes, i)),
        Expected::Converted { bytes, from, to } => {
            let size = from.bytes_for(1).unwrap_or(1).max(1) as usize;
            let n = bytes.len() / size;
            // Element `i` of the file as f32, as `convert::to_f32` reads it.
            let value = |i: usize| {
                let b = &bytes[size * i..size * (i + 1)];
                match from {
                    DType::BF16 => bf16::from_le_bytes([b[0], b[1]]).to_f32(),
                    DType::F16 => f16::from_le_bytes([b[0], b[1]]).to_f32(),
                    DType::F64 => f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
                    _ => f32::from_le_bytes(b.try_into().expect("4 bytes")),
                }
            };
            // Element `i` as `to` stores it; zero past the end (the padding of a last word).
            let half = |i: usize| -> u32 {
                if i >= n {
                    return 0;
                }
                match to {
                    DType::BF16 => u32::from(bf16::from_f32(value(i)).to_bits()),
                    _ => u32::from(f16::from_f32(value(i)).to_bits()),
                }
            };
            match to {
                DType::F16 | DType::BF16 => {
                    words_checksum(n.div_ceil(2), |w| half(2 * w) | half(2 * w + 1) << 16)
                }
                _ => words_checksum(n, |i| value(i).to_bits()),
            }
        }
        Expected::Ints(values) => {
            let len = values.len() * elem_bytes;
            let byte = |j: usize| values[j / elem_bytes].to_le_bytes()[(j % elem_bytes).min(7)];
            words_checksum(len.div_ceil(4), |i| word_from(len, byte, i))
        }
        Expected::Bools(bytes) => {
            let len = bytes.len() * elem_bytes;
            let byte =
                |j: usize| u8::from(j.is_multiple_of(elem_bytes) && bytes[j / elem_bytes] != 0);
            words_checksum(len.div_ceil(4), |i| word_from(len, byte, i))
        }
        Expected::Quantized { weight, block } => {
            let words = weight.packed_words();
            let scales = weight.block_scales(block);
            combine([
                words_checksum(words.len(), |i| words[i]),
                words_checksum(scales.len(), |i| scales[i].to_bits()),
            ])
        }
    }
}

#[cfg(any(feature = "cuda", feature = "wgpu"))]
mod gpu {
    //! `GpuBackend` (burn's `Dispatch`): the kernels on the cubecl client of each wgpu and
    //! CUDA device, on the `CubeTensor`s behind burn's dispatch tensors.

    use burn::tensor::ops::{BoolTensor, FloatTensor, IntTensor, QuantizedTensor};
    use burn::tensor::quantization::{
        QParamTensor, QuantLevel, QuantMode, QuantParam, QuantScheme, QuantStore, QuantValue,
        params_shape,
    };
    use burn::tensor::{DType as BurnDType, TensorData};
    use burn_cubecl::CubeRuntime;
    use burn_cubecl::tensor::{CubeTensor, QParams};
    use burn_dispatch::{BackendTensor, DispatchDevice, DispatchTensor, DispatchTensorKind};
    use cubecl::server::{MemoryLayout, MemoryLayoutDescriptor, MemoryLayoutStrategy};
    use cubecl::zspace::metadata::Metadata;
    use stowage_kernels::{
        FloatFormat, MAX_LAUNCH_ELEMS, QuantBits, QuantFormat, Quantized, reference,
    };
    use stowage_planner::Quantize;

    use super::{DeviceTransforms, KernelError, add_terms, combine};
    use crate::backend::GpuBackend;

    impl DeviceTransforms for GpuBackend {
        fn widen_on_device(
            data: TensorData,
            device: &DispatchDevice,
        ) -> Option<Result<FloatTensor<Self>, KernelError>> {
            let format = match data.dtype {
                BurnDType::BF16 => FloatFormat::BF16,
                BurnDType::F16 => FloatFormat::F16,
                _ => return None,
            };
            if data.num_elements() == 0 {
                return None;
            }
            match device {
                #[cfg(feature = "wgpu")]
                DispatchDevice::Wgpu(d) => Some(
                    widen::<cubecl::wgpu::WgpuRuntime>(data, format, d)
                        .map(|t| wrap(DispatchTensorKind::Wgpu(BackendTensor::Float(t)))),
                ),
                #[cfg(feature = "cuda")]
                DispatchDevice::Cuda(d) => Some(
                    widen::<cubecl::cuda::CudaRuntime>(data, format, d)
                        .map(|t| wrap(DispatchTensorKind::Cuda(BackendTensor::Float(t)))),
                ),
                _ => None,
            }
        }

        fn float_checksum(tensor: &FloatTensor<Self>) -> Option<Result<u64, KernelError>> {
            dispatch_checksum(tensor)
        }

        fn int_checksum(tensor: &IntTensor<Self>) -> Option<Result<u64, KernelError>> {
            dispatch_checksum(tensor)
        }

        fn bool_checksum(tensor: &BoolTensor<Self>) -> Option<Result<u64, KernelError>> {
            dispatch_checksum(tensor)
        }

        fn quantize_on_device(
            data: TensorData,
            quantize: Quantize,
            scheme: QuantScheme,
            device: &DispatchDevice,
        ) -> Option<Result<QuantizedTensor<Self>, KernelError>> {
            let source = match data.dtype {
                BurnDType::F32 => FloatFormat::F32,
                BurnDType::BF16 => FloatFormat::BF16,
                BurnDType::F16 => FloatFormat::F16,
                _ => return None,
            };
            let (bits, value, group) = match quantize {
                Quantize::Int8 { group } => (QuantBits::Int8, QuantValue::Q8S, group),
                Quantize::Int4 { group } => (QuantBits::Int4, QuantValue::Q4S, group),
                Quantize::None => return None,
            };
            let &[rows, cols] = data.shape.as_slice() else {
                return None;
            };
            let block = match scheme.level {
                QuantLevel::Block(size) => size.to_dim_vec(2),
                QuantLevel::Tensor => return None,
            };
            let fits = scheme.store == QuantStore::PackedU32(0)
                && scheme.value == value
                && scheme.param == QuantParam::F32
                && scheme.mode == QuantMode::Symmetric
                && block.as_slice() == [1, group as u8].as_slice()
                && group as usize <= usize::from(u8::MAX)
                && rows * cols > 0
                && cols.is_multiple_of(group as usize);
            if !fits {
                return None;
            }
            let format = QuantFormat { bits, group };
            match device {
                #[cfg(feature = "wgpu")]
                DispatchDevice::Wgpu(d) => Some(
                    quantize_cube::<cubecl::wgpu::WgpuRuntime>(data, source, format, scheme, d)
                        .map(|t| wrap(DispatchTensorKind::Wgpu(BackendTensor::Quantized(t)))),
                ),
                #[cfg(feature = "cuda")]
                DispatchDevice::Cuda(d) => Some(
                    quantize_cube::<cubecl::cuda::CudaRuntime>(data, source, format, scheme, d)
                        .map(|t| wrap(DispatchTensorKind::Cuda(BackendTensor::Quantized(t)))),
                ),
                _ => None,
            }
        }

        fn max_allocation(device: &DispatchDevice) -> Option<u64> {
            use cubecl::Runtime;
            match device {
                #[cfg(feature = "wgpu")]
                DispatchDevice::Wgpu(d) => Some(
                    cubecl::wgpu::WgpuRuntime::client(d)
                        .properties()
                        .memory
                        .max_page_size,
                ),
                #[cfg(feature = "cuda")]
                DispatchDevice::Cuda(d) => Some(
                    cubecl::cuda::CudaRuntime::client(d)
                        .properties()
                        .memory
                        .max_page_size,
                ),
                _ => None,
            }
        }

        fn quantized_checksum(tensor: &QuantizedTensor<Self>) -> Option<Result<u64, KernelError>> {
            match view(tensor) {
                #[cfg(feature = "wgpu")]
                DispatchTensorKind::Wgpu(BackendTensor::Quantized(t)) => quantized_checksum(t),
                #[cfg(feature = "cuda")]
                DispatchTensorKind::Cuda(BackendTensor::Quantized(t)) => quantized_checksum(t),
                _ => None,
            }
        }
    }

    /// `data` (a `[rows, cols]` float weight as the checkpoint stores it) copied to `device`
    /// as it is and quantized there into a new tensor of burn's quantized kind, laid out as
    /// burn lays out one it uploads itself (`q_from_data`): one allocation, the packed values
    /// `[rows, cols / k]` then the scales `[rows, cols / group]`, both contiguous. The caller
    /// checked that `scheme` is `format` in burn's terms (packed u32 words, f32 scales, blocks
    /// of the group size) and that the rows are whole groups.
    fn quantize_cube<R: CubeRuntime>(
        data: TensorData,
        source: FloatFormat,
        format: QuantFormat,
        scheme: QuantScheme,
        device: &R::Device,
    ) -> Result<CubeTensor<R>, KernelError> {
        let client = R::client(device);
        let shape = data.shape.clone();
        let (rows, cols) = (shape[0], shape[1]);
        let input = if data.bytes.len().is_multiple_of(4) {
            client.create(data.bytes)
        } else {
            stowage_kernels::upload(&client, &data.bytes)
        };
        let per_word = format.bits.per_word();
        let scales_shape = params_shape(&shape, scheme.level);
        let mut layouts = client.empty_tensors(vec![
            MemoryLayoutDescriptor::new(
                MemoryLayoutStrategy::Contiguous,
                [rows, cols / per_word].into(),
                size_of::<u32>(),
            ),
            MemoryLayoutDescriptor::new(
                MemoryLayoutStrategy::Contiguous,
                scales_shape.clone(),
                size_of::<f32>(),
            ),
        ]);
        let MemoryLayout {
            memory: scales,
            strides: scales_strides,
        } = layouts.remove(1);
        let MemoryLayout {
            memory: values,
            strides,
        } = layouts.remove(0);
        let out = Quantized {
            values: values.clone(),
            scales: scales.clone(),
            rows,
            cols,
            format,
        };
        stowage_kernels::quantize_into(&client, input, source, &out)?;
        let qparams = QParams {
            scales: QParamTensor {
                offset_start: scales.offset_start.unwrap_or(0) as usize,
                offset_end: scales.offset_end.unwrap_or(0) as usize,
                metadata: Metadata::new(scales_shape, scales_strides),
                dtype: BurnDType::F32,
            },
        };
        Ok(CubeTensor::new_quantized(
            client,
            values,
            shape,
            device.clone(),
            strides,
            BurnDType::QFloat(scheme),
            qparams,
        ))
    }

    /// [`DeviceTransforms::quantized_checksum`] of a cubecl tensor: `None` unless its values
    /// are packed into u32 words.
    fn quantized_checksum<R: CubeRuntime>(
        tensor: &CubeTensor<R>,
    ) -> Option<Result<u64, KernelError>> {
        let BurnDType::QFloat(scheme) = tensor.dtype else {
            return None;
        };
        if !matches!(scheme.store, QuantStore::PackedU32(_)) {
            return None;
        }
        let (values, scales) = tensor.quantized_handles()?;
        Some((|| Ok(combine([checksum(&values)?, checksum(&scales)?])))())
    }

    /// The checksum of a dispatch tensor on a wgpu or CUDA device; `None` on the CPU.
    fn dispatch_checksum(tensor: &DispatchTensor) -> Option<Result<u64, KernelError>> {
        match view(tensor) {
            #[cfg(feature = "wgpu")]
            DispatchTensorKind::Wgpu(
                BackendTensor::Float(t) | BackendTensor::Int(t) | BackendTensor::Bool(t),
            ) => Some(checksum(t)),
            #[cfg(feature = "cuda")]
            DispatchTensorKind::Cuda(
                BackendTensor::Float(t) | BackendTensor::Int(t) | BackendTensor::Bool(t),
            ) => Some(checksum(t)),
            _ => None,
        }
    }

    /// `data` (bf16 or f16 as stored, not empty) copied to `device` as it is and widened there
    /// into a new f32 tensor, contiguous, of `data`'s shape. The mapped file's bytes go to the
    /// device without a host copy unless they end half-way through a 32-bit word (an odd
    /// number of values), when they are padded first.
    pub(super) fn widen<R: CubeRuntime>(
        data: TensorData,
        format: FloatFormat,
        device: &R::Device,
    ) -> Result<CubeTensor<R>, KernelError> {
        let client = R::client(device);
        let elems = data.num_elements();
        let shape = data.shape.clone();
        let input = if data.bytes.len().is_multiple_of(4) {
            client.create(data.bytes)
        } else {
            stowage_kernels::upload(&client, &data.bytes)
        };
        let output = stowage_kernels::widen(&client, input, format, elems)?;
        let strides = contiguous_strides(&shape);
        Ok(CubeTensor::new(
            client,
            output,
            Metadata::new(shape, strides),
            device.clone(),
            BurnDType::F32,
        ))
    }

    /// Row-major strides of `shape`.
    fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
        let mut strides = vec![1usize; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1];
        }
        strides
    }

    /// The checksum of a tensor's elements as its device stores them (module docs of
    /// [`super`]): whole words on the device, a partial last word read back and added here.
    pub(super) fn checksum<R: CubeRuntime>(tensor: &CubeTensor<R>) -> Result<u64, KernelError> {
        let t = burn_cubecl::kernel::into_contiguous(tensor.clone());
        let bytes = t.meta.num_elements() * t.dtype.size();
        let whole = bytes / 4;
        let words = bytes.div_ceil(4);
        let max = MAX_LAUNCH_ELEMS as usize;
        let mut parts = Vec::with_capacity(words.div_ceil(max).max(1));
        for lo in (0..words.max(1)).step_by(max) {
            let hi = (lo + max).min(words);
            let dense = hi.min(whole);
            let mut sum = if dense > lo {
                let handle = t.handle.clone().offset_start(4 * lo as u64);
                stowage_kernels::checksum(&t.client, handle, dense - lo)?
            } else {
                reference::checksum([])
            };
            if hi > whole {
                let tail = t.handle.clone().offset_start(4 * whole as u64);
                let read = t
                    .client
                    .read_one(tail)
                    .map_err(|source| KernelError::ReadBack {
                        what: "tensor's last partial word",
                        source,
                    })?;
                let mut word = [0u8; 4];
                let n = bytes - 4 * whole;
                word[..n].copy_from_slice(&read[..n]);
                let terms =
                    reference::checksum_terms((whole - lo) as u32, u32::from_le_bytes(word));
                sum = add_terms(sum, terms);
            }
            parts.push(sum);
        }
        Ok(combine(parts))
    }

    // burn-dispatch 0.21 has no public way to build a `DispatchTensor` from a backend's tensor,
    // nor to reach the backend tensor inside one: its one field, `kind: DispatchTensorKind`,
    // is `pub(crate)`. Without burn-dispatch's `autodiff` feature (which stowage does not
    // enable, and which adds a second field) the struct is that field alone; these two
    // functions rely on it, and the assertion below stops the build if sizes or alignments
    // ever differ.
    const _: () = assert!(
        size_of::<DispatchTensor>() == size_of::<DispatchTensorKind>()
            && align_of::<DispatchTensor>() == align_of::<DispatchTensorKind>()
    );

    /// The backend tensor inside a dispatch tensor.
    #[allow(unsafe_code)]
    fn view(tensor: &DispatchTensor) -> &DispatchTensorKind {
        // SAFETY: `DispatchTensor` is a struct whose only field is a `DispatchTensorKind`
        // (burn-dispatch 0.21 without `autodiff`): same size and alignment (asserted above),
        // the field at offset 0, so a reference to the struct is one to its field, valid
        // for as long.
        unsafe { &*std::ptr::from_ref(tensor).cast::<DispatchTensorKind>() }
    }

    /// A dispatch tensor holding `kind`.
    #[allow(unsafe_code)]
    fn wrap(kind: DispatchTensorKind) -> DispatchTensor {
        // SAFETY: as in `view`: the struct is its one field; `transmute` also checks the
        // sizes at compile time, and moves `kind` (nothing is dropped twice).
        unsafe { std::mem::transmute::<DispatchTensorKind, DispatchTensor>(kind) }
    }

    #[cfg(all(test, feature = "wgpu"))]
    mod tests {
        use burn::tensor::ops::{BoolTensorOps, FloatTensorOps, IntTensorOps};
        use burn::tensor::{TensorData, TensorMetadata};
        use burn_dispatch::{BackendTensor, DispatchDevice, DispatchTensorKind};
        use burn_wgpu::WgpuDevice;
        use half::{bf16, f16};
        use stowage_kernels::reference;

        use super::*;

        fn wgpu() -> DispatchDevice {
            DispatchDevice::Wgpu(WgpuDevice::DefaultDevice)
        }

        /// The layout `view` and `wrap` rely on: a tensor burn made is seen as the wgpu
        /// `CubeTensor` it holds, and one wrapped is a dispatch tensor burn reads back.
        #[test]
        fn view_and_wrap_round_trip() {
            let data = TensorData::new(vec![1.5f32, -2.0, 3.25], [3]);
            let t = GpuBackend::float_from_data(data.clone(), &wgpu());
            let DispatchTensorKind::Wgpu(BackendTensor::Float(cube)) = view(&t) else {
                panic!("a float tensor on wgpu");
            };
            assert_eq!(cube.meta.shape().to_vec(), [3]);
            let back = wrap(DispatchTensorKind::Wgpu(BackendTensor::Float(cube.clone())));
            assert_eq!(back.shape().to_vec(), [3]);
            assert_eq!(GpuBackend::float_device(&back), wgpu());
            let read = read_back(back);
            assert_eq!(read.to_vec::<f32>().unwrap(), [1.5, -2.0, 3.25]);
            // The CPU is not a device to checksum.
            let cpu = GpuBackend::float_from_data(data, &crate::Targets::<GpuBackend>::host());
            assert!(dispatch_checksum(&cpu).is_none());
        }

        fn read_back(t: FloatTensor<GpuBackend>) -> TensorData {
            burn::tensor::Tensor::<GpuBackend, 1>::from_primitive(
                burn::tensor::TensorPrimitive::Float(t),
            )
            .into_data()
        }

        /// Widened on the device from an odd number of bf16 values (padded on upload) and an
        /// even number of f16 ones (straight from the bytes): `half`'s values, and the
        /// checksum of the result is the host's.
        #[test]
        fn widen_and_checksum_match_the_host() {
            for (format, n) in [(FloatFormat::BF16, 7usize), (FloatFormat::F16, 6)] {
                let values: Vec<f32> = (0..n).map(|i| i as f32 * 0.75 - 2.0).collect();
                let (bytes, dtype): (Vec<u8>, _) = match format {
                    FloatFormat::BF16 => (
                        values
                            .iter()
                            .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
                            .collect(),
                        BurnDType::BF16,
                    ),
                    _ => (
                        values
                            .iter()
                            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
                            .collect(),
                        BurnDType::F16,
                    ),
                };
                let data = TensorData::from_bytes_vec(bytes.clone(), [n], dtype);
                let t = GpuBackend::widen_on_device(data, &wgpu()).unwrap().unwrap();
                assert_eq!(t.dtype(), BurnDType::F32);
                let want = reference::widen(&bytes, format);
                let sum = GpuBackend::float_checksum(&t).unwrap().unwrap();
                let host_dtype = match format {
                    FloatFormat::BF16 => stowage_planner::DType::BF16,
                    _ => stowage_planner::DType::F16,
                };
                let expected = super::super::Expected::Converted {
                    bytes: &bytes,
                    from: host_dtype,
                    to: stowage_planner::DType::F32,
                };
                assert_eq!(sum, super::super::host_checksum(expected, 4));
                assert_eq!(sum, reference::checksum(want.iter().map(|x| x.to_bits())));
                assert_eq!(read_back(t).to_vec::<f32>().unwrap(), want);
            }
        }

        /// A tensor burn uploaded as f16, with an odd number of values: the device sums the
        /// whole words and the last half-word is read back; equal to the checksum of the
        /// file's bytes zero-padded.
        #[test]
        fn odd_f16_tensor_checksums_as_padded_bytes() {
            let bytes: Vec<u8> = [1.0f32, -0.5, 3.0]
                .iter()
                .flat_map(|&x| f16::from_f32(x).to_le_bytes())
                .collect();
            let data = TensorData::from_bytes_vec(bytes.clone(), [3], BurnDType::F16);
            let t = GpuBackend::float_from_data(data, &wgpu());
            let sum = GpuBackend::float_checksum(&t).unwrap().unwrap();
            assert_eq!(sum, reference::checksum_bytes(&bytes));
            // Booleans and integers, as the device stores them.
            let store = burn::tensor::get_device_settings::<GpuBackend>(&wgpu()).bool_dtype;
            let dtype = BurnDType::Bool(store);
            let mut values = vec![0u8; 3 * dtype.size()];
            values[0] = 1;
            values[2 * dtype.size()] = 1;
            let b =
                GpuBackend::bool_from_data(TensorData::from_bytes_vec(values, [3], dtype), &wgpu());
            let store = b.dtype().size();
            let got = GpuBackend::bool_checksum(&b).unwrap().unwrap();
            let file = [1u8, 0, 7];
            assert_eq!(
                got,
                super::super::host_checksum(super::super::Expected::Bools(&file), store)
            );
            let i = GpuBackend::int_from_data(TensorData::new(vec![5i32, -1, 7], [3]), &wgpu());
            let got = GpuBackend::int_checksum(&i).unwrap().unwrap();
            assert_eq!(
                got,
                super::super::host_checksum(super::super::Expected::Ints(&[5, -1, 7]), 4)
            );
        }

        /// Quantized on the device from f32, bf16 and f16 bytes: the host rule's values and
        /// scales, which burn dequantizes as the host does; the checksum taken on the device
        /// is the host's of that weight, and not that of a weight one value apart. Schemes
        /// the kernels do not write are declined (`None`), for the host to quantize.
        #[test]
        fn quantized_on_the_device_is_the_hosts_and_checksums_as_it() {
            use crate::quantized::{QuantizedWeight, burn_block, holding};
            use burn::tensor::{Tensor, TensorPrimitive};
            use stowage_planner::Quantize;
            let (rows, cols) = (4, 48);
            let values: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 37) % 29) as f32 / 7.0 - 2.0)
                .collect();
            let encodings: [(BurnDType, Vec<u8>); 3] = [
                (
                    BurnDType::F32,
                    values.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
                (
                    BurnDType::BF16,
                    values
                        .iter()
                        .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
                        .collect(),
                ),
                (
                    BurnDType::F16,
                    values
                        .iter()
                        .flat_map(|&x| f16::from_f32(x).to_le_bytes())
                        .collect(),
                ),
            ];
            for quantize in [Quantize::Int8 { group: 16 }, Quantize::Int4 { group: 8 }] {
                let scheme = holding::<GpuBackend>(&wgpu(), quantize, cols).unwrap();
                let block = burn_block(&scheme).unwrap();
                for (dtype, bytes) in &encodings {
                    let file: Vec<f32> = match dtype {
                        BurnDType::BF16 => {
                            values.iter().map(|&x| bf16::from_f32(x).to_f32()).collect()
                        }
                        BurnDType::F16 => {
                            values.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
                        }
                        _ => values.clone(),
                    };
                    let host = QuantizedWeight::quantize(&file, rows, cols, quantize).unwrap();
                    let data = TensorData::from_bytes_vec(bytes.clone(), [rows, cols], *dtype);
                    let q = GpuBackend::quantize_on_device(data, quantize, scheme, &wgpu())
                        .expect("quantized on the device")
                        .unwrap();
                    let sum = GpuBackend::quantized_checksum(&q).unwrap().unwrap();
                    let t = Tensor::<GpuBackend, 2>::from_primitive(TensorPrimitive::QFloat(q));
                    assert_eq!(
                        QuantizedWeight::from_tensor(&t, quantize).as_ref(),
                        Some(&host),
                        "{quantize} {dtype:?}"
                    );
                    let back: Vec<f32> = t.dequantize().into_data().to_vec().unwrap();
                    assert!(
                        back.iter()
                            .zip(host.dequantize())
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{quantize} {dtype:?}"
                    );
                    let expected = super::super::Expected::Quantized {
                        weight: &host,
                        block,
                    };
                    assert_eq!(sum, super::super::host_checksum(expected, 4));
                    let mut other = host.clone();
                    other.values[5] = if other.values[5] == 0 { 1 } else { 0 };
                    let expected = super::super::Expected::Quantized {
                        weight: &other,
                        block,
                    };
                    assert_ne!(sum, super::super::host_checksum(expected, 4));
                }
                // Rows that are not whole groups, or blocks other than the group: declined.
                let f32s = &encodings[0].1;
                let data = |c: usize| {
                    TensorData::from_bytes_vec(
                        f32s[..4 * rows * c].to_vec(),
                        [rows, c],
                        BurnDType::F32,
                    )
                };
                let group = quantize.group().unwrap() as usize;
                assert!(
                    GpuBackend::quantize_on_device(data(group + 4), quantize, scheme, &wgpu())
                        .is_none()
                );
                let other_scheme = holding::<GpuBackend>(&wgpu(), quantize, 2 * cols).unwrap();
                let bigger = match quantize {
                    Quantize::Int8 { .. } => Quantize::Int8 { group: 32 },
                    _ => Quantize::Int4 { group: 16 },
                };
                assert!(
                    GpuBackend::quantize_on_device(data(cols), bigger, other_scheme, &wgpu())
                        .is_none()
                );
            }
        }

        /// A tensor on the device that is not what the file holds (one bit apart) fails
        /// `verify` with the tensor, the file and the GPU named; the file's own bytes pass.
        #[test]
        fn verify_catches_a_device_tensor_that_is_not_the_files() {
            use crate::store::StoredTensor;
            use burn::tensor::TensorPrimitive;
            let file: Vec<u8> = (0..64u32).flat_map(|x| (x as f32).to_le_bytes()).collect();
            let data = TensorData::from_bytes_vec(file.clone(), [8, 8], BurnDType::F32);
            let stored = StoredTensor::<GpuBackend>::Float {
                tensor: TensorPrimitive::Float(GpuBackend::float_from_data(data, &wgpu())),
                shape: vec![8, 8],
            };
            let site = super::super::Site {
                path: std::path::Path::new("/m/model-00002-of-00002.safetensors"),
                tensor: "lm_head.weight",
                index: 0,
            };
            let transforms = super::super::Transforms::of();
            super::super::verify(
                &stored,
                super::super::Expected::Bytes(&file),
                site,
                &transforms,
            )
            .unwrap();
            for bit in [0usize, 31, 300, 511] {
                let mut other = file.clone();
                other[bit / 8] ^= 1 << (bit % 8);
                let expected = super::super::Expected::Bytes(&other);
                let err = super::super::verify(&stored, expected, site, &transforms).unwrap_err();
                assert!(matches!(err, crate::Error::VerifyMismatch { .. }), "{err}");
                let msg = err.to_string();
                assert!(
                    msg.contains("lm_head.weight")
                        && msg.contains("model-00002-of-00002.safetensors")
                        && msg.contains("GPU 0"),
                    "{msg}"
                );
            }
        }
    }
}

#[cfg(all(test, any(feature = "cuda", feature = "wgpu")))]
mod tests {
    use super::*;

    fn site() -> Site<'static> {
        Site {
            path: Path::new("/models/m/model.safetensors"),
            tensor: "model.layers.0.mlp.up_proj.weight",
            index: 1,
        }
    }

    /// A one-bit difference anywhere is a mismatch naming the tensor, the file and the GPU.
    #[test]
    fn a_flipped_bit_is_a_mismatch_naming_tensor_and_file() {
        let file: Vec<u8> = (0..64u8).collect();
        let host = host_checksum(Expected::Bytes(&file), 2);
        assert!(compare(host, host, site()).is_ok());
        for bit in [0, 7, 100, 511] {
            let mut loaded = file.clone();
            loaded[bit / 8] ^= 1 << (bit % 8);
            let device = stowage_kernels::reference::checksum_bytes(&loaded);
            let err = compare(device, host, site()).unwrap_err().to_string();
            assert!(
                err.contains("model.layers.0.mlp.up_proj.weight")
                    && err.contains("/models/m/model.safetensors")
                    && err.contains("GPU 1"),
                "{err}"
            );
        }
    }

    /// The host's checksums are the kernels' definition over the words the device holds.
    #[test]
    fn host_checksums_follow_the_definition() {
        use stowage_kernels::reference::{checksum, checksum_bytes};
        let odd = [1u8, 2, 3, 4, 5, 6];
        assert_eq!(
            host_checksum(Expected::Bytes(&odd), 2),
            checksum_bytes(&odd)
        );
        let f = [1.0f32, -2.5, f32::MIN_POSITIVE];
        let f_bytes: Vec<u8> = f.iter().flat_map(|x| x.to_le_bytes()).collect();
        let as_is = |to| Expected::Converted {
            bytes: &f_bytes,
            from: DType::F32,
            to,
        };
        assert_eq!(
            host_checksum(as_is(DType::F32), 4),
            checksum(f.iter().map(|x| x.to_bits()))
        );
        // Narrowed to f16: 1.0, -2.5, 0 (f32's smallest normal is below f16's range).
        assert_eq!(
            host_checksum(as_is(DType::F16), 2),
            checksum([0xC100_3C00, 0x0000_0000])
        );
        // bf16 1.0, -2.5, the smallest subnormal, widened: f32 bits.
        let bf16: Vec<u8> = [0x3F80u16, 0xC020, 0x0001]
            .iter()
            .flat_map(|h| h.to_le_bytes())
            .collect();
        let widened = Expected::Converted {
            bytes: &bf16,
            from: DType::BF16,
            to: DType::F32,
        };
        assert_eq!(
            host_checksum(widened, 4),
            checksum([0x3F80_0000, 0xC020_0000, 0x0001_0000])
        );
        // Integers as i64 and narrowed to i32; booleans as bytes and as words.
        let ints = [-1i64, 2, 3];
        let as_i64: Vec<u8> = ints.iter().flat_map(|v| v.to_le_bytes()).collect();
        let as_i32: Vec<u8> = ints
            .iter()
            .flat_map(|&v| (v as i32).to_le_bytes())
            .collect();
        assert_eq!(
            host_checksum(Expected::Ints(&ints), 8),
            checksum_bytes(&as_i64)
        );
        assert_eq!(
            host_checksum(Expected::Ints(&ints), 4),
            checksum_bytes(&as_i32)
        );
        let bools = [0u8, 3, 1];
        assert_eq!(
            host_checksum(Expected::Bools(&bools), 1),
            checksum_bytes(&[0, 1, 1])
        );
        assert_eq!(
            host_checksum(Expected::Bools(&bools), 4),
            checksum([0, 1, 1])
        );
        assert_eq!(host_checksum(Expected::Bytes(&[]), 4), checksum([]));
    }

    /// Parts fold in order: one part is its own checksum, and swapped parts differ.
    #[test]
    fn parts_combine_in_order() {
        assert_eq!(combine([42]), 42);
        assert_ne!(combine([1, 2]), combine([2, 1]));
        assert_eq!(add_terms(0, (1, 2)), 2 << 32 | 1);
    }
}
