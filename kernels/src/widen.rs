//! Widening bf16 and f16 to f32 on the device, from the checkpoint's own bytes.
//!
//! Ways to widen:
//! - [`widen`]: a handle holding the checkpoint's bytes in, a handle of f32 out (what the
//!   loader uses: the compact bytes cross the bus, the f32 tensor is written once, and no
//!   half-precision tensor is kept);
//! - [`widen_slice`]: host bytes in, `Vec<f32>` out (tests, small tensors);
//! - [`reference::widen`](crate::reference::widen): the same on the host, with `half`.
//!
//! The conversion works on bits, in integer arithmetic: every bf16 and f16 value has an exact
//! f32, so the result is exact, subnormals and signed zeros included. NaNs keep their sign and
//! payload and are made quiet (the top mantissa bit set), exactly as `half` converts them.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::device::{check_handle, check_len, elementwise, read_words, upload};
use crate::error::{Error, Result};

/// How a checkpoint stores a floating tensor: what the kernels read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloatFormat {
    /// IEEE binary32, 4 bytes.
    F32,
    /// IEEE binary16, 2 bytes.
    F16,
    /// bfloat16 (the top half of an f32), 2 bytes.
    BF16,
}

impl FloatFormat {
    /// Bytes per element.
    pub fn elem_bytes(self) -> usize {
        match self {
            FloatFormat::F32 => 4,
            FloatFormat::F16 | FloatFormat::BF16 => 2,
        }
    }

    /// The lower-case name (`f32`, `f16`, `bf16`).
    pub fn as_str(self) -> &'static str {
        match self {
            FloatFormat::F32 => "f32",
            FloatFormat::F16 => "f16",
            FloatFormat::BF16 => "bf16",
        }
    }

    /// 32-bit words holding `elems` elements: two halves per word, the last word's upper half
    /// unused when `elems` is odd.
    pub fn words_for(self, elems: usize) -> usize {
        match self {
            FloatFormat::F32 => elems,
            FloatFormat::F16 | FloatFormat::BF16 => elems.div_ceil(2),
        }
    }

    /// The number of elements in `bytes`, which must hold a whole number of them.
    pub(crate) fn elems_in(self, bytes: &[u8]) -> Result<usize> {
        let elem_bytes = self.elem_bytes();
        if !bytes.len().is_multiple_of(elem_bytes) {
            return Err(Error::PartialElement {
                len: bytes.len(),
                format: self.as_str(),
                elem_bytes,
            });
        }
        Ok(bytes.len() / elem_bytes)
    }
}

/// bf16 bits (the low 16 bits of `h`) to f32 bits, as `half` converts them: NaNs made quiet.
#[cube]
pub(crate) fn bf16_to_f32_bits(h: u32) -> u32 {
    let mut bits = h << 16u32;
    if (h & 0x7FFFu32) > 0x7F80u32 {
        bits = (h | 0x40u32) << 16u32;
    }
    bits
}

/// f16 bits (the low 16 bits of `h`) to f32 bits, as `half` converts them: subnormals
/// normalised, NaNs made quiet with their payload shifted up.
#[cube]
pub(crate) fn f16_to_f32_bits(h: u32) -> u32 {
    let sign = (h & 0x8000u32) << 16u32;
    let exp = (h >> 10u32) & 0x1Fu32;
    let man = h & 0x3FFu32;
    let mut bits = sign;
    if exp == 0x1Fu32 {
        if man == 0u32 {
            bits = sign | 0x7F80_0000u32;
        } else {
            bits = sign | 0x7FC0_0000u32 | (man << 13u32);
        }
    } else if exp != 0u32 {
        bits = sign | ((exp + 112u32) << 23u32) | (man << 13u32);
    } else if man != 0u32 {
        // man × 2^-24 with its top bit at `top`: exponent top - 24, the rest the mantissa.
        let top = 31u32 - u32::leading_zeros(man);
        bits = sign | ((top + 103u32) << 23u32) | ((man << (23u32 - top)) & 0x7F_FFFFu32);
    }
    bits
}

/// Element `i` of `input`, stored as `source`, as f32 bits.
#[cube]
pub(crate) fn load_f32_bits(input: &Array<u32>, i: usize, #[comptime] source: FloatFormat) -> u32 {
    if comptime![source == FloatFormat::F32] {
        input[i]
    } else {
        let word = input[i / 2];
        let h = (word >> (16u32 * u32::cast_from(i % 2))) & 0xFFFFu32;
        if comptime![source == FloatFormat::BF16] {
            bf16_to_f32_bits(h)
        } else {
            f16_to_f32_bits(h)
        }
    }
}

/// One unit per input word: its two halves to two f32 words (the second only when it exists).
#[cube(launch_unchecked)]
fn widen_kernel(input: &Array<u32>, output: &mut Array<u32>, #[comptime] source: FloatFormat) {
    let w = ABSOLUTE_POS;
    if w < input.len() {
        let word = input[w];
        let lo = 2 * w;
        if comptime![source == FloatFormat::BF16] {
            output[lo] = bf16_to_f32_bits(word & 0xFFFFu32);
            if lo + 1 < output.len() {
                output[lo + 1] = bf16_to_f32_bits(word >> 16u32);
            }
        } else {
            output[lo] = f16_to_f32_bits(word & 0xFFFFu32);
            if lo + 1 < output.len() {
                output[lo + 1] = f16_to_f32_bits(word >> 16u32);
            }
        }
    }
}

/// Widens `elems` elements stored as `format` in `input` to a new handle of `elems` f32
/// (4 × `elems` bytes, little-endian, as burn's f32 tensors hold them).
///
/// `input` holds the checkpoint's bytes, padded to whole 4-byte words (see
/// [`upload`](crate::upload)); a handle shorter than that is an error. For
/// [`FloatFormat::F32`] there is nothing to do and `input` itself is returned.
#[allow(unsafe_code)]
pub fn widen<R: Runtime>(
    client: &ComputeClient<R>,
    input: Handle,
    format: FloatFormat,
    elems: usize,
) -> Result<Handle> {
    check_len(elems as u64)?;
    let words = format.words_for(elems);
    check_handle(&input, "input", words as u64 * 4)?;
    if format == FloatFormat::F32 {
        return Ok(input);
    }
    let output = client.empty(elems * 4);
    if elems == 0 {
        return Ok(output);
    }
    let (count, dim) = elementwise(client, words);
    // SAFETY: `input` holds at least `words` words (checked above) and `output` was just
    // allocated with `elems` words; the kernel reads and writes only below those lengths.
    unsafe {
        widen_kernel::launch_unchecked::<R>(
            client,
            count,
            dim,
            ArrayArg::from_raw_parts(input, words),
            ArrayArg::from_raw_parts(output.clone(), elems),
            format,
        );
    }
    Ok(output)
}

/// Widens host bytes (little-endian, as a checkpoint stores them) on the device and reads the
/// f32 values back.
pub fn widen_slice<R: Runtime>(
    client: &ComputeClient<R>,
    bytes: &[u8],
    format: FloatFormat,
) -> Result<Vec<f32>> {
    let elems = format.elems_in(bytes)?;
    if elems == 0 {
        return Ok(Vec::new());
    }
    let output = widen(client, upload(client, bytes), format, elems)?;
    let words = read_words(client, output, "widened tensor")?;
    Ok(words[..elems].iter().map(|&w| f32::from_bits(w)).collect())
}

// The per-runtime tests run with `--features wgpu` (lavapipe without a GPU) or `cuda`.
#[cfg(test)]
#[cfg_attr(
    not(any(feature = "wgpu", feature = "cuda")),
    allow(dead_code, unused_imports)
)]
mod tests;
