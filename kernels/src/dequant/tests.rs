use cubecl::prelude::*;

use super::*;
use crate::quantize::{QuantBits, quantize_slice};
use crate::reference;
use crate::testing::{SplitMix, assert_bits_eq, f32_bytes, f32_edges, per_runtime};
use crate::widen::FloatFormat;

fn check<R: Runtime>(
    client: &ComputeClient<R>,
    q: &QuantizedBytes,
    rows: usize,
    cols: usize,
    format: QuantFormat,
) -> Vec<f32> {
    let got = dequantize_slice(client, q, rows, cols, format).unwrap();
    let want = reference::dequantize(q, rows, cols, format);
    let what = format!(
        "[{rows}, {cols}] {} g{}",
        format.bits.as_str(),
        format.group
    );
    assert_bits_eq(&got, &want, &what);
    got
}

/// Every packed value, -128 and -8 included, with scales of every kind: normal, the smallest
/// the format writes, the largest finite, zero, NaN.
fn every_value<R: Runtime>(client: &ComputeClient<R>) {
    let mut rng = SplitMix(3);
    let scales = [
        1.0f32,
        f32::from_bits(crate::MIN_AMAX_BITS) / 127.0,
        f32::MAX / 127.0,
        0.0,
        f32::NAN,
        0.123,
    ];
    for bits in [QuantBits::Int8, QuantBits::Int4] {
        for group in [8, 32, 128] {
            let format = QuantFormat::new(bits, group).unwrap();
            for cols in [1usize, 7, 130, 256] {
                let rows = 9;
                let groups = rows * format.groups_per_row(cols as u64) as usize;
                let values: Vec<u8> = (0..format.values_bytes(rows as u64, cols as u64))
                    .map(|_| rng.next_u32() as u8)
                    .collect();
                let q = QuantizedBytes {
                    values,
                    scales: (0..groups).map(|g| scales[g % scales.len()]).collect(),
                };
                check(client, &q, rows, cols, format);
            }
        }
    }
}

/// Quantize then dequantize on the device: the bound holds and NaN groups stay NaN.
fn round_trip<R: Runtime>(client: &ComputeClient<R>) {
    let mut rng = SplitMix(11);
    let mut x: Vec<f32> = (0..3 * 301).map(|_| rng.weight()).collect();
    x.extend(f32_edges().into_iter().filter(|v| v.is_finite()));
    let (rows, cols) = (1, x.len());
    for bits in [QuantBits::Int8, QuantBits::Int4] {
        for group in [32, 64, 128] {
            let format = QuantFormat::new(bits, group).unwrap();
            let q = quantize_slice(client, &f32_bytes(&x), FloatFormat::F32, rows, cols, format)
                .unwrap();
            let back = check(client, &q, rows, cols, format);
            for (i, (&a, &b)) in x.iter().zip(&back).enumerate() {
                let s = q.scales[i / group as usize];
                let bound = format.error_bound(s).unwrap();
                let err = (f64::from(a) - f64::from(b)).abs();
                assert!(
                    err <= bound || s == 0.0,
                    "{i}: {a} → {b}, error {err} > {bound}"
                );
            }
        }
    }
}

/// Scales that do not match the shape, and an empty tensor.
fn bad_input<R: Runtime>(client: &ComputeClient<R>) {
    let format = QuantFormat::int8(8).unwrap();
    let q = QuantizedBytes {
        values: vec![0; 4],
        scales: vec![1.0],
    };
    assert!(matches!(
        dequantize_slice(client, &q, 2, 3, format),
        Err(Error::ShapeMismatch {
            expected: 2,
            actual: 1,
            ..
        })
    ));
    let empty = QuantizedBytes {
        values: vec![],
        scales: vec![],
    };
    assert!(
        dequantize_slice(client, &empty, 0, 3, format)
            .unwrap()
            .is_empty()
    );
}

per_runtime!(every_value, round_trip, bad_input);
