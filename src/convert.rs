//! Turning checkpoint bytes into the element types a backend stores, in parallel.
//!
//! Safetensors stores little-endian values with no alignment promise, so every conversion
//! reads bytes with `from_le_bytes` (no unsafe casts). Floats become f32 (what burn-ndarray
//! stores), integers i64, booleans `bool`; f32 can be narrowed back to f16/bf16 bytes for the
//! offload folder. Work is split across rayon's threads in chunks of [`CHUNK`] elements.

use half::{bf16, f16};
use rayon::prelude::*;
use stowage_planner::DType;

/// Elements per parallel chunk: large enough to amortise scheduling, small enough to spread
/// a single big tensor over every core.
pub const CHUNK: usize = 1 << 16;

/// Decodes `bytes` of `dtype` into f32. `None` if `dtype` is not a float type stowage reads.
pub fn to_f32(dtype: DType, bytes: &[u8]) -> Option<Vec<f32>> {
    fn run<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> f32 + Sync) -> Vec<f32> {
        let n = bytes.len() / N;
        let mut out = vec![0f32; n];
        out.par_chunks_mut(CHUNK)
            .zip(bytes.par_chunks(CHUNK * N))
            .for_each(|(o, b)| {
                for (x, c) in o.iter_mut().zip(b.chunks_exact(N)) {
                    *x = f(c.try_into().expect("chunks_exact yields N bytes"));
                }
            });
        out
    }
    Some(match dtype {
        DType::F32 => run::<4>(bytes, f32::from_le_bytes),
        DType::BF16 => run::<2>(bytes, |b| bf16::from_le_bytes(b).to_f32()),
        DType::F16 => run::<2>(bytes, |b| f16::from_le_bytes(b).to_f32()),
        DType::F64 => run::<8>(bytes, |b| f64::from_le_bytes(b) as f32),
        _ => return None,
    })
}

/// Decodes `bytes` of an integer `dtype` into i64. `None` for other types.
pub fn to_i64(dtype: DType, bytes: &[u8]) -> Option<Vec<i64>> {
    fn run<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> i64 + Sync) -> Vec<i64> {
        bytes
            .par_chunks(CHUNK * N)
            .flat_map_iter(|b| b.chunks_exact(N).map(|c| f(c.try_into().expect("N bytes"))))
            .collect()
    }
    Some(match dtype {
        DType::I64 => run::<8>(bytes, i64::from_le_bytes),
        DType::I32 => run::<4>(bytes, |b| i32::from_le_bytes(b) as i64),
        DType::I16 => run::<2>(bytes, |b| i16::from_le_bytes(b) as i64),
        DType::I8 => run::<1>(bytes, |b| b[0] as i8 as i64),
        DType::U8 => run::<1>(bytes, |b| b[0] as i64),
        DType::U16 => run::<2>(bytes, |b| u16::from_le_bytes(b) as i64),
        DType::U32 => run::<4>(bytes, |b| u32::from_le_bytes(b) as i64),
        _ => return None,
    })
}

/// Decodes BOOL bytes (one byte each, non-zero is true).
pub fn to_bool(bytes: &[u8]) -> Vec<bool> {
    bytes.iter().map(|&b| b != 0).collect()
}

/// Encodes f32 values as little-endian `dtype` bytes (F32, F16 or BF16), rounding to nearest
/// even. `None` for other targets.
pub fn from_f32(values: &[f32], dtype: DType) -> Option<Vec<u8>> {
    fn run<const N: usize>(values: &[f32], f: impl Fn(f32) -> [u8; N] + Sync) -> Vec<u8> {
        let mut out = vec![0u8; values.len() * N];
        out.par_chunks_mut(CHUNK * N)
            .zip(values.par_chunks(CHUNK))
            .for_each(|(o, v)| {
                for (c, &x) in o.chunks_exact_mut(N).zip(v) {
                    c.copy_from_slice(&f(x));
                }
            });
        out
    }
    Some(match dtype {
        DType::F32 => run::<4>(values, f32::to_le_bytes),
        DType::F16 => run::<2>(values, |x| f16::from_f32(x).to_le_bytes()),
        DType::BF16 => run::<2>(values, |x| bf16::from_f32(x).to_le_bytes()),
        _ => return None,
    })
}

/// `(sum, sum of absolute values)` in f64, the checksums `stowage load --checksums` prints.
pub fn sums_f32(values: &[f32]) -> (f64, f64) {
    values
        .par_chunks(CHUNK)
        .map(|c| {
            c.iter().fold((0f64, 0f64), |(s, a), &x| {
                (s + x as f64, a + (x as f64).abs())
            })
        })
        .reduce(|| (0.0, 0.0), |x, y| (x.0 + y.0, x.1 + y.1))
}

/// [`sums_f32`] for integers.
pub fn sums_i64(values: &[i64]) -> (f64, f64) {
    values.iter().fold((0f64, 0f64), |(s, a), &x| {
        (s + x as f64, a + (x as f64).abs())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_round_trip_through_half_types() {
        let edge = [
            0.0f32,
            -0.0,
            1.0,
            -2.5,
            65504.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e-7,
        ];
        for dt in [DType::F32, DType::F16, DType::BF16] {
            let bytes = from_f32(&edge, dt).unwrap();
            let back = to_f32(dt, &bytes).unwrap();
            for (a, b) in edge.iter().zip(&back) {
                let want = match dt {
                    DType::F16 => f16::from_f32(*a).to_f32(),
                    DType::BF16 => bf16::from_f32(*a).to_f32(),
                    _ => *a,
                };
                assert_eq!(want.to_bits(), b.to_bits(), "{dt} {a}");
            }
        }
        let nan = to_f32(DType::BF16, &bf16::NAN.to_le_bytes()).unwrap();
        assert!(nan[0].is_nan());
    }

    #[test]
    fn large_inputs_use_every_chunk() {
        let n = 3 * CHUNK + 17;
        let values: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let bytes = from_f32(&values, DType::F32).unwrap();
        assert_eq!(to_f32(DType::F32, &bytes).unwrap(), values);
        let (s, a) = sums_f32(&values);
        assert_eq!(s, (n as f64 - 1.0) * n as f64 / 2.0);
        assert_eq!(a, s);
    }

    #[test]
    fn integers() {
        let bytes: Vec<u8> = [-3i32, 7].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(to_i64(DType::I32, &bytes).unwrap(), [-3, 7]);
        assert_eq!(to_i64(DType::U8, &[255]).unwrap(), [255]);
        assert_eq!(to_i64(DType::I8, &[255]).unwrap(), [-1]);
        assert!(to_i64(DType::F32, &bytes).is_none());
        assert_eq!(to_bool(&[0, 2]), [false, true]);
    }
}
