//! Dequantizing int8 and int4 values back to f32 on the device.
//!
//! Ways to dequantize:
//! - [`dequantize`]: [`Quantized`] handles in, a handle of f32 out;
//! - [`dequantize_slice`]: [`QuantizedBytes`] in, `Vec<f32>` out (tests, small tensors);
//! - [`reference::dequantize`](crate::reference::dequantize): the same on the host.
//!
//! Each value becomes `q × scale`, one f32 multiplication (exact for the integer, correctly
//! rounded for the product, so every device agrees); a NaN scale gives the canonical quiet NaN
//! `0x7FC0_0000` for every value of its group.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::device::{check_handle, check_len, elementwise, read_words, upload};
use crate::error::{Error, Result};
use crate::quantize::{QuantFormat, Quantized, QuantizedBytes};

/// One unit per 32-bit word of values: unpacks its 4 (int8) or 8 (int4) values.
#[cube(launch_unchecked)]
fn dequant_kernel(
    values: &Array<u32>,
    scales: &Array<u32>,
    output: &mut Array<u32>,
    cols: usize,
    groups_per_row: usize,
    #[comptime] group: usize,
    #[comptime] bits: u32,
) {
    let w = ABSOLUTE_POS;
    if w < values.len() {
        let per = comptime![(32 / bits) as usize];
        let sign_shift = comptime![(32 - bits) as i32];
        let word = values[w];
        #[unroll]
        for k in 0..per {
            let i = w * per + k;
            if i < output.len() {
                let row = i / cols;
                let col = i % cols;
                let s = scales[row * groups_per_row + col / group];
                let mut out = 0x7FC0_0000u32;
                if (s & 0x7FFF_FFFFu32) <= 0x7F80_0000u32 {
                    // Value k sits at bits k × bits: move it to the top, shift back signed.
                    let top = word << (32u32 - bits - (k as u32) * bits);
                    let q = i32::reinterpret(top) >> sign_shift;
                    out = u32::reinterpret(f32::cast_from(q) * f32::reinterpret(s));
                }
                output[i] = out;
            }
        }
    }
}

/// Dequantizes `q` to a new handle of `rows × cols` f32 (row-major, little-endian).
#[allow(unsafe_code)]
pub fn dequantize<R: Runtime>(client: &ComputeClient<R>, q: &Quantized) -> Result<Handle> {
    let format = QuantFormat::new(q.format.bits, q.format.group)?;
    let (rows, cols) = (q.rows as u64, q.cols as u64);
    let elems = q.rows.saturating_mul(q.cols);
    check_len(elems as u64)?;
    let value_words = format.values_bytes(rows, cols) as usize / 4;
    let groups = format.scales_bytes(rows, cols) as usize / 4;
    check_handle(&q.values, "values", value_words as u64 * 4)?;
    check_handle(&q.scales, "scales", groups as u64 * 4)?;
    let output = client.empty(elems * 4);
    if elems == 0 {
        return Ok(output);
    }
    let (count, dim) = elementwise(client, value_words);
    // SAFETY: `values` and `scales` hold at least `value_words` and `groups` words (checked
    // above), `output` was just allocated with `elems` words. The kernel guards the word and
    // the element position, and an element below rows × cols lies in group
    // `row × groups_per_row + col / group`, below `groups`.
    unsafe {
        dequant_kernel::launch_unchecked::<R>(
            client,
            count,
            dim,
            ArrayArg::from_raw_parts(q.values.clone(), value_words),
            ArrayArg::from_raw_parts(q.scales.clone(), groups),
            ArrayArg::from_raw_parts(output.clone(), elems),
            q.cols,
            format.groups_per_row(cols) as usize,
            format.group as usize,
            format.bits.bits(),
        );
    }
    Ok(output)
}

/// Dequantizes host data of a `[rows, cols]` tensor on the device and reads the f32 values
/// back.
pub fn dequantize_slice<R: Runtime>(
    client: &ComputeClient<R>,
    q: &QuantizedBytes,
    rows: usize,
    cols: usize,
    format: QuantFormat,
) -> Result<Vec<f32>> {
    let format = QuantFormat::new(format.bits, format.group)?;
    let groups = format.scales_bytes(rows as u64, cols as u64) as usize / 4;
    if q.scales.len() != groups {
        return Err(Error::ShapeMismatch {
            what: "scales",
            rows,
            cols,
            expected: groups,
            actual: q.scales.len(),
        });
    }
    let elems = rows.saturating_mul(cols);
    if elems == 0 {
        return Ok(Vec::new());
    }
    let scale_bytes: Vec<u8> = q.scales.iter().flat_map(|s| s.to_le_bytes()).collect();
    let quantized = Quantized {
        values: upload(client, &q.values),
        scales: client.create_from_slice(&scale_bytes),
        rows,
        cols,
        format,
    };
    let output = dequantize(client, &quantized)?;
    let words = read_words(client, output, "dequantized tensor")?;
    Ok(words[..elems].iter().map(|&w| f32::from_bits(w)).collect())
}

// The per-runtime tests run with `--features wgpu` (lavapipe without a GPU) or `cuda`.
#[cfg(test)]
#[cfg_attr(
    not(any(feature = "wgpu", feature = "cuda")),
    allow(dead_code, unused_imports)
)]
mod tests;
