use cubecl::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::*;
use crate::reference;
use crate::testing::{
    SplitMix, assert_bits_eq, bf16_edges, f16_edges, f32_bytes, f32_edges, per_runtime, u16_bytes,
};

fn formats() -> Vec<QuantFormat> {
    let mut v = Vec::new();
    for bits in [QuantBits::Int8, QuantBits::Int4] {
        for group in [8, 32, 64, 128, 1024] {
            v.push(QuantFormat::new(bits, group).unwrap());
        }
    }
    v
}

/// Quantizes on the device and with the reference, asserts both agree bit for bit, and
/// returns the result with the f32 values the reference saw.
fn check<R: Runtime>(
    client: &ComputeClient<R>,
    bytes: &[u8],
    source: FloatFormat,
    rows: usize,
    cols: usize,
    format: QuantFormat,
) -> (QuantizedBytes, Vec<f32>) {
    let what = format!(
        "[{rows}, {cols}] {} → {} g{}",
        source.as_str(),
        format.bits.as_str(),
        format.group
    );
    let got = quantize_slice(client, bytes, source, rows, cols, format).unwrap();
    let x = reference::widen(bytes, source);
    let want = reference::quantize(&x, rows, cols, format);
    assert_bits_eq(&got.scales, &want.scales, &format!("{what}: scales"));
    assert_eq!(got.values.len(), want.values.len(), "{what}: value bytes");
    if let Some(i) = (0..got.values.len()).find(|&i| got.values[i] != want.values[i]) {
        let per = 8 / format.bits.bits() as usize;
        let e = i * per;
        panic!(
            "{what}: value byte {i} (elements {e}..{}) is {:#04x}, expected {:#04x}; x = {:?}",
            e + per,
            got.values[i],
            want.values[i],
            &x[e..(e + per).min(x.len())]
        );
    }
    (got, x)
}

/// Asserts `|x - dequantized| ≤ error_bound(scale)` for every finite group, and NaN for the
/// others.
fn assert_within_bound(
    x: &[f32],
    back: &[f32],
    q: &QuantizedBytes,
    cols: usize,
    format: QuantFormat,
) {
    let per_row = format.groups_per_row(cols as u64) as usize;
    for (i, (&x, &y)) in x.iter().zip(back).enumerate() {
        let s = q.scales[(i / cols) * per_row + (i % cols) / format.group as usize];
        match format.error_bound(s) {
            Some(bound) => {
                let err = (f64::from(x) - f64::from(y)).abs();
                assert!(
                    err <= bound || (s == 0.0 && x.abs() < f32::from_bits(MIN_AMAX_BITS)),
                    "element {i}: {x} came back as {y}, error {err} > {bound} (scale {s})"
                );
            }
            None => assert!(y.is_nan(), "element {i}: {y} in a NaN group"),
        }
    }
}

/// Groups made of edge values: NaN, ±inf, the largest finite, subnormal-only, zero and
/// negative-zero groups, exact ties; every group size, rows of a length no group divides.
fn edges<R: Runtime>(client: &ComputeClient<R>) {
    let e = f32_edges();
    let finite: Vec<f32> = e.iter().copied().filter(|x| x.is_finite()).collect();
    let cases: Vec<Vec<f32>> = vec![
        e.clone(),
        finite.clone(),
        vec![f32::MAX, -f32::MAX, 1.0, -1.0, f32::MIN_POSITIVE],
        vec![
            f32::from_bits(1),
            -f32::from_bits(0x7F_FFFF),
            f32::MIN_POSITIVE,
        ],
        vec![0.0; 9],
        vec![-0.0; 3],
        vec![f32::INFINITY, 1.0, 2.0],
        vec![1.0, f32::NAN, 2.0],
        // Exact ties for int4 (amax 7) and int8 (amax 127).
        (0..15).map(|k| k as f32 * 0.5 - 3.5).chain([7.0]).collect(),
        (0..255)
            .map(|k| k as f32 * 0.5 - 63.5)
            .chain([-127.0])
            .collect(),
        // Just below and above 2^-112, the smallest group quantized.
        vec![f32::from_bits(MIN_AMAX_BITS - 1), 1e-40],
        vec![
            f32::from_bits(MIN_AMAX_BITS),
            -f32::from_bits(MIN_AMAX_BITS / 2),
        ],
    ];
    for format in formats() {
        for case in &cases {
            for cols in [case.len(), 1, 3, case.len().div_ceil(2)] {
                let rows = case.len() / cols;
                let x = &case[..rows * cols];
                let (q, x) = check(client, &f32_bytes(x), FloatFormat::F32, rows, cols, format);
                let back = reference::dequantize(&q, rows, cols, format);
                assert_within_bound(&x, &back, &q, cols, format);
            }
        }
    }
}

/// bf16 and f16 sources, edge values included, read straight from their 16-bit words.
fn half_sources<R: Runtime>(client: &ComputeClient<R>) {
    let mut rng = SplitMix(7);
    for (source, edges) in [
        (FloatFormat::BF16, bf16_edges()),
        (FloatFormat::F16, f16_edges()),
    ] {
        let random: Vec<u16> = (0..999).map(|_| rng.next_u32() as u16 & 0xFBFF).collect();
        for bits in [edges, random] {
            for format in formats() {
                for cols in [bits.len(), 7, 33] {
                    let rows = bits.len() / cols;
                    let b = u16_bytes(&bits[..rows * cols]);
                    check(client, &b, source, rows, cols, format);
                }
            }
        }
    }
}

/// Seeded random weights over many magnitudes, in shapes no group divides, and a bound check
/// of the round trip.
fn random<R: Runtime>(client: &ComputeClient<R>) {
    let mut rng = SplitMix(42);
    for (rows, cols) in [(1, 1), (3, 37), (17, 128), (5, 200), (64, 257), (2, 4099)] {
        let x: Vec<f32> = (0..rows * cols).map(|_| rng.weight()).collect();
        for format in formats() {
            let (q, x) = check(client, &f32_bytes(&x), FloatFormat::F32, rows, cols, format);
            let back = reference::dequantize(&q, rows, cols, format);
            assert_within_bound(&x, &back, &q, cols, format);
        }
    }
}

/// Property: any shape, group and data (finite) agrees with the reference and stays in bound.
fn property<R: Runtime>(client: &ComputeClient<R>) {
    let mut runner = TestRunner::new(Config::with_cases(24));
    let input = (1usize..6, 1usize..300, 0usize..10, any::<u64>());
    runner
        .run(&input, |(rows, cols, f, seed)| {
            let format = formats()[f];
            let mut rng = SplitMix(seed);
            let x: Vec<f32> = (0..rows * cols).map(|_| rng.weight()).collect();
            let (q, x) = check(client, &f32_bytes(&x), FloatFormat::F32, rows, cols, format);
            let back = reference::dequantize(&q, rows, cols, format);
            assert_within_bound(&x, &back, &q, cols, format);
            Ok(())
        })
        .unwrap();
}

/// The handles the kernels produce are the size the planner gives a quantized tensor.
fn sizes_match_the_planner<R: Runtime>(client: &ComputeClient<R>) {
    use stowage_planner::{DType, Quantize, TensorInfo, TensorSource};
    for (rows, cols) in [(1, 1), (3, 37), (5, 200), (11, 4099), (4096, 128)] {
        for format in formats() {
            let planner = match format.bits {
                QuantBits::Int8 => Quantize::Int8 {
                    group: format.group,
                },
                QuantBits::Int4 => Quantize::Int4 {
                    group: format.group,
                },
            };
            let tensor = TensorInfo {
                name: "model.layers.0.mlp.up_proj.weight".into(),
                dtype: DType::BF16,
                shape: vec![rows as u64, cols as u64],
                source: TensorSource::Config,
                tied_to: None,
            };
            let input = client.empty(FloatFormat::BF16.words_for(rows * cols) * 4);
            let q = quantize(client, input, FloatFormat::BF16, rows, cols, format).unwrap();
            let device = q.values.size_in_used() + q.scales.size_in_used();
            assert_eq!(device, format.bytes(rows as u64, cols as u64));
            assert_eq!(
                planner.tensor_bytes(&tensor, None),
                device,
                "[{rows}, {cols}] {format:?}"
            );
        }
    }
}

/// Group sizes outside the format, a short input handle, a shape that does not match.
fn bad_input<R: Runtime>(client: &ComputeClient<R>) {
    for group in [0, 4, 48, 2048] {
        assert!(matches!(
            QuantFormat::int8(group),
            Err(Error::GroupSize { .. })
        ));
    }
    let bad = QuantFormat {
        bits: QuantBits::Int4,
        group: 100,
    };
    let bytes = f32_bytes(&[1.0; 4]);
    assert!(matches!(
        quantize_slice(client, &bytes, FloatFormat::F32, 2, 2, bad),
        Err(Error::GroupSize { group: 100, .. })
    ));
    let format = QuantFormat::int8(8).unwrap();
    assert!(matches!(
        quantize_slice(client, &bytes, FloatFormat::F32, 2, 3, format),
        Err(Error::ShapeMismatch {
            expected: 6,
            actual: 4,
            ..
        })
    ));
    let short = crate::upload(client, &bytes);
    assert!(matches!(
        quantize(client, short, FloatFormat::F32, 2, 3, format),
        Err(Error::HandleTooSmall { .. })
    ));
    let empty = quantize_slice(client, &[], FloatFormat::BF16, 0, 5, format).unwrap();
    assert!(empty.values.is_empty() && empty.scales.is_empty());
}

per_runtime!(
    edges,
    half_sources,
    random,
    property,
    sizes_match_the_planner,
    bad_input
);
