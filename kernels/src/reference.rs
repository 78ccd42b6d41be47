//! Plain-Rust references of every kernel: what each computes, element by element, on the host.
//!
//! The device tests compare the kernels with these bit for bit. They are written
//! independently of the kernels' integer tricks where they can be: widening goes through
//! `half`, and the quantized value through an f64 division (exact enough to decide every
//! rounding: see [`quantize`]).

use half::{bf16, f16};

use crate::quantize::{MIN_AMAX_BITS, QuantFormat, QuantizedBytes};
use crate::widen::FloatFormat;

/// Widens little-endian `bytes` stored as `format` to f32 with `half` (a trailing partial
/// element is ignored).
pub fn widen(bytes: &[u8], format: FloatFormat) -> Vec<f32> {
    match format {
        FloatFormat::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        FloatFormat::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        FloatFormat::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    }
}

/// The largest magnitude of a group, by f32 bits: a NaN anywhere gives NaN, else an
/// infinity gives infinity.
fn group_amax(group: &[f32]) -> f32 {
    if group.iter().any(|x| x.is_nan()) {
        return f32::NAN;
    }
    group.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

/// A group's scale from its largest magnitude: NaN when it is not finite, 0 below
/// [`MIN_AMAX_BITS`], else `amax × (1 / qmax)` rounded to f32.
pub fn scale(amax: f32, format: QuantFormat) -> f32 {
    if !amax.is_finite() {
        f32::from_bits(0x7FC0_0000)
    } else if amax.to_bits() < MIN_AMAX_BITS {
        0.0
    } else {
        amax * format.bits.scale_factor()
    }
}

/// The quantized value of `x` in a group whose largest magnitude is `amax`:
/// `round(qmax × |x| / amax)`, ties away from zero, with the sign of `x`.
///
/// The f64 quotient decides every rounding exactly: `qmax × |x|` is exact in f64, and a
/// quotient `qmax·mx / (ma·2^d)` of 24-bit significands that is not a tie lies at least
/// `1 / (2·ma·2^d) ≥ 2⁻³⁴` from one (quotients near a half-integer have `d ≤ 9`), far more
/// than the f64 division's error (at most `2⁻⁴⁶` at 127).
pub fn quantize_value(x: f32, amax: f32, format: QuantFormat) -> i32 {
    if !amax.is_finite() || amax.to_bits() < MIN_AMAX_BITS || x == 0.0 {
        return 0;
    }
    let qmax = f64::from(format.bits.qmax());
    let q = (qmax * f64::from(x.abs()) / f64::from(amax) + 0.5).floor() as i32;
    if x.is_sign_negative() { -q } else { q }
}

/// Quantizes a row-major `[rows, cols]` tensor of f32 values.
///
/// # Panics
///
/// When `values.len() != rows × cols`.
pub fn quantize(values: &[f32], rows: usize, cols: usize, format: QuantFormat) -> QuantizedBytes {
    assert_eq!(
        values.len(),
        rows * cols,
        "values of a [{rows}, {cols}] tensor"
    );
    let per_row = format.groups_per_row(cols as u64) as usize;
    let group = format.group as usize;
    let mut scales = Vec::with_capacity(rows * per_row);
    let mut amaxes = Vec::with_capacity(rows * per_row);
    for row in values.chunks(cols.max(1)).take(rows) {
        for g in row.chunks(group) {
            let amax = group_amax(g);
            amaxes.push(amax);
            scales.push(scale(amax, format));
        }
    }
    let bits = format.bits.bits();
    let mask = (1u32 << bits) - 1;
    let mut words = vec![0u32; format.values_bytes(rows as u64, cols as u64) as usize / 4];
    for (i, &x) in values.iter().enumerate() {
        let (row, col) = (i / cols, i % cols);
        let q = quantize_value(x, amaxes[row * per_row + col / group], format);
        let per = format.bits.per_word();
        words[i / per] |= (q as u32 & mask) << ((i % per) as u32 * bits);
    }
    QuantizedBytes {
        values: words.iter().flat_map(|w| w.to_le_bytes()).collect(),
        scales,
    }
}

/// Value `i` of packed quantized values, sign-extended.
pub fn unpack(values: &[u8], i: usize, format: QuantFormat) -> i32 {
    match format.bits {
        crate::QuantBits::Int8 => values[i] as i8 as i32,
        crate::QuantBits::Int4 => {
            let byte = values[i / 2];
            let nibble = if i.is_multiple_of(2) {
                byte & 0x0F
            } else {
                byte >> 4
            };
            ((nibble << 4) as i8 >> 4) as i32
        }
    }
}

/// Dequantizes a row-major `[rows, cols]` tensor: `q × scale`, the canonical quiet NaN for a
/// NaN scale.
pub fn dequantize(q: &QuantizedBytes, rows: usize, cols: usize, format: QuantFormat) -> Vec<f32> {
    let per_row = format.groups_per_row(cols as u64) as usize;
    let group = format.group as usize;
    (0..rows * cols)
        .map(|i| {
            let s = q.scales[(i / cols) * per_row + (i % cols) / group];
            if s.is_nan() {
                f32::from_bits(0x7FC0_0000)
            } else {
                unpack(&q.values, i, format) as f32 * s
            }
        })
        .collect()
}

/// MurmurHash3's 32-bit finaliser.
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^= h >> 16;
    h
}

/// What word `w` at position `pos` adds to the checksum's two halves `(a, b)`.
pub fn checksum_terms(pos: u32, w: u32) -> (u32, u32) {
    (
        w.wrapping_mul(pos.wrapping_mul(2).wrapping_add(1)),
        fmix32(w ^ pos.wrapping_mul(0x9E37_79B9)),
    )
}

/// The checksum of `words` (see [`checksum`](crate::checksum()) for the definition).
pub fn checksum(words: impl IntoIterator<Item = u32>) -> u64 {
    let (mut a, mut b) = (0u32, 0u32);
    for (pos, w) in words.into_iter().enumerate() {
        let (ta, tb) = checksum_terms(pos as u32, w);
        a = a.wrapping_add(ta);
        b = b.wrapping_add(tb);
    }
    u64::from(b) << 32 | u64::from(a)
}

/// The checksum of little-endian bytes, the last word zero-padded.
pub fn checksum_bytes(bytes: &[u8]) -> u64 {
    checksum(bytes.chunks(4).map(|c| {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        u32::from_le_bytes(w)
    }))
}
