//! # stowage-kernels
//!
//! The device-side transforms stowage's loader applies while it streams a checkpoint onto a
//! GPU, written once in [cubecl](https://github.com/tracel-ai/cubecl) 0.10 (the version
//! burn 0.21 uses) and run on any of its runtimes:
//!
//! - **widen** bf16 and f16 to f32 ([`widen`]): the checkpoint's compact bytes cross the bus
//!   and become the f32 tensor in one pass, with no half-precision copy kept;
//! - **quantize** linear-layer weights to int8 or int4 with one f32 scale per group of values
//!   ([`quantize`]), from the checkpoint's own f32, bf16 or f16 bytes;
//! - **dequantize** them back to f32 ([`dequantize`]);
//! - **checksum** a loaded tensor on the device ([`checksum()`]) and compare it with the same
//!   checksum of the file's bytes taken on the host ([`HostChecksum`]), proving a load
//!   bit-exact without copying the weights back.
//!
//! Each launcher is generic over the runtime (`R: cubecl::Runtime`), takes the runtime's
//! `&ComputeClient<R>` and cubecl [`Handle`]s, and returns handles (the checksum returns its
//! `u64`): the loader can call them on burn's own client, on memory burn already owns. Each has a `…_slice` twin taking and
//! returning host data, for tests and small tensors, and a plain-Rust twin in [`reference`](mod@reference)
//! that the tests compare it with, bit for bit.
//!
//! ```no_run
//! // no_run: it needs a device (`cargo test --features wgpu` runs it, as `quick_start`).
//! use cubecl::Runtime;
//! use cubecl::wgpu::{WgpuDevice, WgpuRuntime};
//! use stowage_kernels::*;
//!
//! // Any cubecl client: here wgpu, which runs on Mesa's lavapipe when there is no GPU.
//! let client = WgpuRuntime::client(&WgpuDevice::DefaultDevice);
//!
//! // Three bf16 values as a checkpoint stores them: 1.0, -2.5, the smallest subnormal.
//! let bytes: Vec<u8> = [0x3F80u16, 0xC020, 0x0001].iter().flat_map(|h| h.to_le_bytes()).collect();
//! let handle = upload(&client, &bytes);
//! let widened = widen(&client, handle, FloatFormat::BF16, 3)?;
//! assert_eq!(checksum(&client, widened, 3)?, reference::checksum([
//!     1.0f32.to_bits(), (-2.5f32).to_bits(), 0x0001_0000,
//! ]));
//!
//! // Quantize a [2, 3] weight to int4 in groups of 8 (one short group per row).
//! let w = [0.5f32, -1.0, 0.25, 7.0, 0.0, -3.5];
//! let w_bytes: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
//! let format = QuantFormat::int4(8)?;
//! let q = quantize_slice(&client, &w_bytes, FloatFormat::F32, 2, 3, format)?;
//! assert_eq!(q.scales, [1.0 / 7.0, 1.0]);
//! let back = dequantize_slice(&client, &q, 2, 3, format)?;
//! assert_eq!(back[3..], [7.0, 0.0, -4.0]); // -3.5 / 1.0 rounds away from zero
//! # Ok::<(), Error>(())
//! ```
//!
//! ## Quantization format
//!
//! Symmetric, blockwise, one scale per group of `G` consecutive values along the last
//! dimension of a row-major `[rows, cols]` tensor (for a PyTorch `nn.Linear` weight,
//! `[out_features, in_features]`, groups run along the input dimension; a tensor of higher
//! rank is taken as `[product of the leading dimensions, last dimension]`).
//!
//! - **Group size** `G`: a power of two from 8 to 1024; 128 by default
//!   ([`QuantFormat::DEFAULT_GROUP`]), 64 and 32 for finer scales. Each row has
//!   `⌈cols / G⌉` groups; when `G` does not divide `cols`, the last group of every row is
//!   shorter (`cols mod G` values). Groups never span two rows.
//! - **Scales**: f32, one per group, `[rows, ⌈cols / G⌉]` row-major, `4 × rows × ⌈cols / G⌉`
//!   bytes. With `amax` the group's largest magnitude and `qmax` = 127 (int8) or 7 (int4),
//!   `scale = amax × fl(1 / qmax)`, rounded to f32 ([`QuantBits::scale_factor`]).
//! - **Values**: `q = round(qmax × |x| / amax)` with the sign of `x`, rounding **half away
//!   from zero**, computed exactly (integer arithmetic on the f32 bits on the device; the
//!   exact rational, not the rounded scale, decides). So `q ∈ [-qmax, qmax]`: -128 and -8
//!   are never written.
//! - **Packing**: two's complement, in flat row-major element order with no padding between
//!   rows. int8: element `i` is byte `i`. int4: element `i` is in byte `i / 2`, the **low
//!   nibble first** (`i` even: bits 0–3, `i` odd: bits 4–7). As 32-bit little-endian words,
//!   element `i` sits at bits `(i mod k) × b` of word `i / k` (`k` = 4 or 8 values per word,
//!   `b` = 8 or 4 bits). The values buffer is zero-padded to a whole number of words:
//!   `4 × ⌈rows × cols / k⌉` bytes ([`QuantFormat::values_bytes`]). The planner sizes a
//!   quantized tensor as values plus scales, exactly this ([`QuantFormat::bytes`]).
//! - **Dequantized**: `x' = fl(q × scale)`. Within a finite group,
//!   `|x − x'| ≤ scale × (1/2 + 2⁻¹⁴)` ([`QuantFormat::error_bound`]): half a step, plus
//!   the f32 rounding of the scale and of the product (no f32 computation can promise
//!   `scale / 2` itself).
//! - **Zeros**: an all-zero group has scale 0 and values 0. So does a group whose `amax` is
//!   below 2⁻¹¹² ([`MIN_AMAX_BITS`]): its scale would be near or below f32's subnormal range,
//!   which some devices flush to zero. The sign of a zero is not kept.
//! - **NaN and infinities**: a group holding a NaN or an infinity has the scale NaN
//!   (`0x7FC0_0000`) and values 0, and dequantizes to NaN throughout: a broken weight stays
//!   visibly broken instead of being scaled away.
//!
//! Widening is exact: every bf16 and f16 value has an f32, and NaNs keep sign and payload,
//! made quiet, as `half` converts them. The checksum is defined in [`checksum()`]'s module
//! docs.
//!
//! ## Feature flags
//!
//! The library compiles no runtime by default: it needs none, since the caller brings its
//! client. Enable one to reach it through `cubecl::…` in the same build:
//!
//! - `wgpu`: cubecl's wgpu runtime (Vulkan, Metal, DX12; Mesa's lavapipe on a machine with no
//!   GPU, which is how CI runs every kernel test).
//! - `cuda`: cubecl's CUDA runtime. Builds without a CUDA toolkit or driver (the driver is
//!   loaded at run time); with it, every kernel test also runs on CUDA device 0 and fails if
//!   there is none.
#![deny(missing_docs)]

mod checksum;
mod dequant;
mod device;
mod error;
mod quantize;
pub mod reference;
mod widen;

#[cfg(test)]
#[cfg_attr(
    not(any(feature = "wgpu", feature = "cuda")),
    allow(dead_code, unused_imports)
)]
mod testing;

#[cfg(test)]
#[cfg_attr(
    not(any(feature = "wgpu", feature = "cuda")),
    allow(dead_code, unused_imports)
)]
mod quick_start;

pub use checksum::{HostChecksum, checksum, checksum_slice};
pub use cubecl::server::Handle;
pub use dequant::{dequantize, dequantize_slice};
pub use device::{MAX_LAUNCH_ELEMS, upload};
pub use error::{Error, Result};
pub use quantize::{
    MIN_AMAX_BITS, QuantBits, QuantFormat, Quantized, QuantizedBytes, quantize, quantize_into,
    quantize_slice,
};
pub use widen::{FloatFormat, widen, widen_slice};
