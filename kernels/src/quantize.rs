//! Symmetric blockwise quantization to int8 or int4 on the device, from the checkpoint's own
//! bytes (f32, bf16 or f16), for the weights of linear layers.
//!
//! Ways to quantize:
//! - [`quantize`]: a handle holding the checkpoint's bytes in, [`Quantized`] handles out
//!   (values and scales, what the loader keeps on the device);
//! - [`quantize_slice`]: host bytes in, [`QuantizedBytes`] out (tests, small tensors);
//! - [`reference::quantize`](crate::reference::quantize): the same on the host.
//!
//! The format is spelled out in the [crate docs](crate#quantization-format). Three launches do
//! the work, one unit per item each: the largest magnitude of each group (as f32 bits, in the
//! scales buffer), the packed values (one unit per 32-bit word, so groups may share a word),
//! then each group's scale in place of its largest magnitude. All but the scale are integer
//! arithmetic on the f32 bits, so the result is the same on every device.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::device::{check_handle, check_len, elementwise, read_bytes, read_words, upload};
use crate::error::{Error, Result};
use crate::widen::{FloatFormat, load_f32_bits};

/// Bits per quantized value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantBits {
    /// 8-bit two's complement values in `[-127, 127]`, one byte each.
    Int8,
    /// 4-bit two's complement values in `[-7, 7]`, two per byte, the first in the low nibble.
    Int4,
}

impl QuantBits {
    /// Bits per value: 8 or 4.
    pub fn bits(self) -> u32 {
        match self {
            QuantBits::Int8 => 8,
            QuantBits::Int4 => 4,
        }
    }

    /// The largest value: 127 or 7 (the range is symmetric; -128 and -8 are never written).
    pub fn qmax(self) -> u32 {
        (1 << (self.bits() - 1)) - 1
    }

    /// Values per 32-bit word: 4 or 8.
    pub fn per_word(self) -> usize {
        32 / self.bits() as usize
    }

    /// `int8` or `int4`.
    pub fn as_str(self) -> &'static str {
        match self {
            QuantBits::Int8 => "int8",
            QuantBits::Int4 => "int4",
        }
    }

    /// `1 / qmax` rounded to f32: a group's scale is its largest magnitude times this.
    pub fn scale_factor(self) -> f32 {
        1.0 / self.qmax() as f32
    }
}

/// A quantization format: bits per value and values per scale. See the
/// [crate docs](crate#quantization-format) for the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuantFormat {
    /// Bits per value.
    pub bits: QuantBits,
    /// Values per scale along a row (the last, contiguous dimension).
    pub group: u32,
}

impl QuantFormat {
    /// The group size used when none is given.
    pub const DEFAULT_GROUP: u32 = 128;
    /// The smallest group size.
    pub const MIN_GROUP: u32 = 8;
    /// The largest group size.
    pub const MAX_GROUP: u32 = 1024;

    /// A format, checking the group size: a power of two from [`Self::MIN_GROUP`] to
    /// [`Self::MAX_GROUP`].
    pub fn new(bits: QuantBits, group: u32) -> Result<QuantFormat> {
        let format = QuantFormat { bits, group };
        format.check()?;
        Ok(format)
    }

    /// int8 with groups of `group` values.
    pub fn int8(group: u32) -> Result<QuantFormat> {
        Self::new(QuantBits::Int8, group)
    }

    /// int4 with groups of `group` values.
    pub fn int4(group: u32) -> Result<QuantFormat> {
        Self::new(QuantBits::Int4, group)
    }

    fn check(&self) -> Result<()> {
        let g = self.group;
        if !(Self::MIN_GROUP..=Self::MAX_GROUP).contains(&g) || !g.is_power_of_two() {
            return Err(Error::GroupSize {
                group: g,
                min: Self::MIN_GROUP,
                max: Self::MAX_GROUP,
            });
        }
        Ok(())
    }

    /// Groups (and scales) per row of `cols` values: the last one is shorter when `group`
    /// does not divide `cols`.
    pub fn groups_per_row(&self, cols: u64) -> u64 {
        cols.div_ceil(u64::from(self.group))
    }

    /// Bytes of the values of a `[rows, cols]` tensor: packed in row-major order with no
    /// padding between rows, the whole padded with zeros to a multiple of 4 bytes.
    pub fn values_bytes(&self, rows: u64, cols: u64) -> u64 {
        let elems = rows.saturating_mul(cols);
        elems
            .div_ceil(self.bits.per_word() as u64)
            .saturating_mul(4)
    }

    /// Bytes of the scales of a `[rows, cols]` tensor: one f32 per group.
    pub fn scales_bytes(&self, rows: u64, cols: u64) -> u64 {
        rows.saturating_mul(self.groups_per_row(cols))
            .saturating_mul(4)
    }

    /// Bytes of a quantized `[rows, cols]` tensor on the device: values and scales.
    pub fn bytes(&self, rows: u64, cols: u64) -> u64 {
        self.values_bytes(rows, cols)
            .saturating_add(self.scales_bytes(rows, cols))
    }

    /// The documented bound on `|x - dequantized(x)|` for a group with this scale:
    /// `scale × (1/2 + 2⁻¹⁴)` (the half step, plus f32 rounding of the scale and product).
    /// `None` when the scale is NaN (the group held a NaN or an infinity).
    pub fn error_bound(&self, scale: f32) -> Option<f64> {
        (!scale.is_nan()).then(|| f64::from(scale) * (0.5 + 2f64.powi(-14)))
    }
}

/// A quantized tensor on the device.
#[derive(Debug, Clone)]
pub struct Quantized {
    /// The packed values ([`QuantFormat::values_bytes`]).
    pub values: Handle,
    /// The f32 scales, `[rows, groups_per_row]` row-major ([`QuantFormat::scales_bytes`]).
    pub scales: Handle,
    /// Rows of the tensor (the product of every dimension but the last).
    pub rows: usize,
    /// Columns (the last dimension).
    pub cols: usize,
    /// The format.
    pub format: QuantFormat,
}

/// A quantized tensor on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedBytes {
    /// The packed values, padded to a multiple of 4 bytes.
    pub values: Vec<u8>,
    /// One scale per group, `[rows, groups_per_row]` row-major.
    pub scales: Vec<f32>,
}

/// f32 bits of the smallest largest-magnitude a group can have and still be quantized:
/// 2⁻¹¹², so the scale (and every product with it) stays a normal f32, out of reach of
/// devices that flush subnormals. Groups below it are stored as zeros with scale 0.
pub const MIN_AMAX_BITS: u32 = 15 << 23;

/// One unit per group: the largest magnitude, as f32 bits (NaN bits compare above infinity's,
/// so a NaN anywhere in the group shows as a value above `0x7F80_0000`).
#[cube(launch_unchecked)]
fn group_amax_kernel(
    input: &Array<u32>,
    amax: &mut Array<u32>,
    cols: usize,
    groups_per_row: usize,
    #[comptime] group: usize,
    #[comptime] source: FloatFormat,
) {
    let g = ABSOLUTE_POS;
    if g < amax.len() {
        let row = g / groups_per_row;
        let start = (g % groups_per_row) * group;
        let mut end = start + group;
        if end > cols {
            end = cols;
        }
        let base = row * cols;
        let mut m = 0u32;
        for c in start..end {
            let a = load_f32_bits(input, base + c, source) & 0x7FFF_FFFFu32;
            if a > m {
                m = a;
            }
        }
        amax[g] = m;
    }
}

/// The quantized value of `x` (f32 bits) in a group whose largest magnitude is `m` (f32
/// bits): `round(qmax × |x| / m)`, ties away from zero, with the sign of `x`, computed exactly
/// in integer arithmetic; 0 when the group is not finite or below [`MIN_AMAX_BITS`].
#[cube]
fn quantize_value(x: u32, m: u32, #[comptime] qmax: u32) -> i32 {
    let ax = x & 0x7FFF_FFFFu32;
    let mut q = 0u32;
    // Finite groups at or above the smallest quantized, non-zero x.
    let finite = m < 0x7F80_0000u32;
    if finite && m >= 0x0780_0000u32 && ax != 0u32 {
        // x = mx × 2^(ex - 150), m = ma × 2^(ea - 150), ex ≤ ea since |x| ≤ m.
        let ea = m >> 23u32;
        let ma = (m & 0x7F_FFFFu32) | 0x80_0000u32;
        let xe = ax >> 23u32;
        let mut ex = xe;
        let mut mx = (ax & 0x7F_FFFFu32) | 0x80_0000u32;
        if xe == 0u32 {
            ex = 1u32;
            mx = ax & 0x7F_FFFFu32;
        }
        let d = ea - ex;
        // qmax × |x| / m = (n / ma) / 2^d with n < 2^31; n / ma = a + r / ma.
        let n = qmax * mx;
        let a = n / ma;
        if d == 0u32 {
            let r = n - a * ma;
            q = a;
            if 2u32 * r >= ma {
                q = a + 1u32;
            }
        } else if d < 16u32 {
            // a < 256 here; adding r / ma < 1 to the integer a + 2^(d-1) cannot
            // reach the next multiple of 2^d, so the floor needs only a.
            q = (a + (1u32 << (d - 1u32))) >> d;
        }
    }
    let mut s = i32::cast_from(q);
    if (x >> 31u32) == 1u32 {
        s = -s;
    }
    s
}

/// One unit per 32-bit word of values: quantizes and packs its 4 (int8) or 8 (int4) values.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn quantize_kernel(
    input: &Array<u32>,
    amax: &Array<u32>,
    values: &mut Array<u32>,
    elems: usize,
    cols: usize,
    groups_per_row: usize,
    #[comptime] group: usize,
    #[comptime] bits: u32,
    #[comptime] source: FloatFormat,
) {
    let w = ABSOLUTE_POS;
    if w < values.len() {
        let per = comptime![(32 / bits) as usize];
        let qmax = comptime![(1u32 << (bits - 1)) - 1];
        let mask = comptime![(1u32 << bits) - 1];
        let mut word = 0u32;
        #[unroll]
        for k in 0..per {
            let i = w * per + k;
            if i < elems {
                let row = i / cols;
                let col = i % cols;
                let m = amax[row * groups_per_row + col / group];
                let q = quantize_value(load_f32_bits(input, i, source), m, qmax);
                word |= (u32::reinterpret(q) & mask) << ((k as u32) * bits);
            }
        }
        values[w] = word;
    }
}

/// One unit per group: its largest magnitude (f32 bits) to its scale (f32 bits), in place.
#[cube(launch_unchecked)]
fn scale_kernel(scales: &mut Array<u32>, factor: f32) {
    let g = ABSOLUTE_POS;
    if g < scales.len() {
        let m = scales[g];
        let mut s = 0u32;
        if m >= 0x7F80_0000u32 {
            s = 0x7FC0_0000u32;
        } else if m >= 0x0780_0000u32 {
            s = u32::reinterpret(f32::reinterpret(m) * factor);
        }
        scales[g] = s;
    }
}

/// Quantizes a row-major `[rows, cols]` tensor stored as `source` in `input` (the
/// checkpoint's bytes, padded to whole 4-byte words: see [`upload`](crate::upload)).
///
/// Groups run along `cols`, the last dimension: for a PyTorch `nn.Linear` weight
/// (`[out_features, in_features]`) that is the input dimension. A tensor of higher rank is
/// quantized as `[product of the leading dimensions, last dimension]`.
pub fn quantize<R: Runtime>(
    client: &ComputeClient<R>,
    input: Handle,
    source: FloatFormat,
    rows: usize,
    cols: usize,
    format: QuantFormat,
) -> Result<Quantized> {
    format.check()?;
    let values = client.empty(format.values_bytes(rows as u64, cols as u64) as usize);
    let scales = client.empty(format.scales_bytes(rows as u64, cols as u64) as usize);
    let quantized = Quantized {
        values,
        scales,
        rows,
        cols,
        format,
    };
    quantize_into(client, input, source, &quantized)?;
    Ok(quantized)
}

/// [`quantize`] into handles the caller allocated: `output.values` must hold
/// [`QuantFormat::values_bytes`] and `output.scales` [`QuantFormat::scales_bytes`] of
/// `[output.rows, output.cols]` (more is left as it was). The handles may be two ranges of one
/// allocation (`offset_start` / `offset_end`), as burn keeps a quantized tensor's values and
/// scales.
///
/// # Errors
///
/// [`Error::HandleTooSmall`] when a handle is smaller than that, [`Error::GroupSize`] for a
/// group outside the supported sizes, [`Error::TooLarge`] for a tensor one launch cannot
/// index.
#[allow(unsafe_code)]
pub fn quantize_into<R: Runtime>(
    client: &ComputeClient<R>,
    input: Handle,
    source: FloatFormat,
    output: &Quantized,
) -> Result<()> {
    let Quantized {
        rows, cols, format, ..
    } = *output;
    format.check()?;
    let elems = rows.saturating_mul(cols);
    check_len(elems as u64)?;
    let in_words = source.words_for(elems);
    check_handle(&input, "input", in_words as u64 * 4)?;
    let groups_per_row = format.groups_per_row(cols as u64) as usize;
    let groups = rows * groups_per_row;
    let value_words = format.values_bytes(rows as u64, cols as u64) as usize / 4;
    check_handle(&output.values, "values", value_words as u64 * 4)?;
    check_handle(&output.scales, "scales", groups as u64 * 4)?;
    let (values, scales) = (output.values.clone(), output.scales.clone());
    if elems == 0 {
        return Ok(());
    }
    let group = format.group as usize;
    let bits = format.bits.bits();
    // SAFETY (all three launches): `input` holds at least `in_words` words, `values` at least
    // `value_words` and `scales` at least `groups` (all checked above). Each
    // kernel guards its unit's position against these lengths, and every index it derives
    // from a position below them is below them too: an element below `elems` = rows × cols
    // lies in input word `i` or `i / 2`, and in group `row × groups_per_row + col / group`.
    let (count, dim) = elementwise(client, groups);
    unsafe {
        group_amax_kernel::launch_unchecked::<R>(
            client,
            count,
            dim,
            ArrayArg::from_raw_parts(input.clone(), in_words),
            ArrayArg::from_raw_parts(scales.clone(), groups),
            cols,
            groups_per_row,
            group,
            source,
        );
    }
    let (count, dim) = elementwise(client, value_words);
    unsafe {
        quantize_kernel::launch_unchecked::<R>(
            client,
            count,
            dim,
            ArrayArg::from_raw_parts(input, in_words),
            ArrayArg::from_raw_parts(scales.clone(), groups),
            ArrayArg::from_raw_parts(values, value_words),
            elems,
            cols,
            groups_per_row,
            group,
            bits,
            source,
        );
    }
    let (count, dim) = elementwise(client, groups);
    unsafe {
        scale_kernel::launch_unchecked::<R>(
            client,
            count,
            dim,
            ArrayArg::from_raw_parts(scales, groups),
            format.bits.scale_factor(),
        );
    }
    Ok(())
}

/// Quantizes host bytes (little-endian, as a checkpoint stores them) of a `[rows, cols]`
/// tensor on the device and reads values and scales back.
pub fn quantize_slice<R: Runtime>(
    client: &ComputeClient<R>,
    bytes: &[u8],
    source: FloatFormat,
    rows: usize,
    cols: usize,
    format: QuantFormat,
) -> Result<QuantizedBytes> {
    let elems = source.elems_in(bytes)?;
    if elems != rows.saturating_mul(cols) {
        return Err(Error::ShapeMismatch {
            what: "input",
            rows,
            cols,
            expected: rows.saturating_mul(cols),
            actual: elems,
        });
    }
    format.check()?;
    if elems == 0 {
        return Ok(QuantizedBytes {
            values: Vec::new(),
            scales: Vec::new(),
        });
    }
    let q = quantize(client, upload(client, bytes), source, rows, cols, format)?;
    let values = read_bytes(client, q.values, "quantized values")?;
    let scales = read_words(client, q.scales, "quantization scales")?;
    Ok(QuantizedBytes {
        values,
        scales: scales.into_iter().map(f32::from_bits).collect(),
    })
}

// The per-runtime tests run with `--features wgpu` (lavapipe without a GPU) or `cuda`.
#[cfg(test)]
#[cfg_attr(
    not(any(feature = "wgpu", feature = "cuda")),
    allow(dead_code, unused_imports)
)]
mod tests;
