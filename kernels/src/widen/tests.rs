use cubecl::prelude::*;

use super::*;
use crate::reference;
use crate::testing::{assert_bits_eq, bf16_edges, f16_edges, per_runtime, u16_bytes};

fn check<R: Runtime>(client: &ComputeClient<R>, bits: &[u16], format: FloatFormat) {
    let bytes = u16_bytes(bits);
    let got = widen_slice(client, &bytes, format).unwrap();
    let want = reference::widen(&bytes, format);
    assert_bits_eq(
        &got,
        &want,
        &format!("{} × {}", bits.len(), format.as_str()),
    );
}

/// Signed zeros, subnormals, infinities, NaN payloads, largest finite: an even and an odd
/// count of each.
fn edges<R: Runtime>(client: &ComputeClient<R>) {
    for (format, values) in [
        (FloatFormat::BF16, bf16_edges()),
        (FloatFormat::F16, f16_edges()),
    ] {
        check(client, &values, format);
        check(client, &values[..values.len() - 1], format);
        check(client, &values[..1], format);
    }
}

/// Every one of the 65 536 bit patterns, then all but the last (an odd count).
fn exhaustive<R: Runtime>(client: &ComputeClient<R>) {
    let all: Vec<u16> = (0..=u16::MAX).collect();
    for format in [FloatFormat::BF16, FloatFormat::F16] {
        check(client, &all, format);
        check(client, &all[..all.len() - 1], format);
    }
}

/// f32 needs no work: the same handle comes back.
fn f32_is_a_no_op<R: Runtime>(client: &ComputeClient<R>) {
    let handle = crate::upload(client, &1.5f32.to_le_bytes());
    let out = widen(client, handle.clone(), FloatFormat::F32, 1).unwrap();
    assert_eq!(format!("{:?}", out.memory), format!("{:?}", handle.memory));
    let got = widen_slice(client, &(-0.0f32).to_le_bytes(), FloatFormat::F32).unwrap();
    assert_eq!(got[0].to_bits(), 0x8000_0000);
}

/// Empty input, a partial element, and a handle shorter than the elements it is said to hold.
fn bad_and_empty_input<R: Runtime>(client: &ComputeClient<R>) {
    assert!(
        widen_slice(client, &[], FloatFormat::BF16)
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        widen_slice(client, &[1, 2, 3], FloatFormat::F16),
        Err(Error::PartialElement { len: 3, .. })
    ));
    let handle = crate::upload(client, &[0u8; 4]);
    let err = widen(client, handle, FloatFormat::BF16, 3).unwrap_err();
    assert!(
        matches!(
            err,
            Error::HandleTooSmall {
                expected: 8,
                actual: 4,
                ..
            }
        ),
        "{err}"
    );
}

per_runtime!(edges, exhaustive, f32_is_a_no_op, bad_and_empty_input);
