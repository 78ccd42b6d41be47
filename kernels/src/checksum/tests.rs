use cubecl::prelude::*;

use super::*;
use crate::testing::{SplitMix, bf16_edges, per_runtime, u16_bytes};
use crate::widen::{FloatFormat, widen};

fn random_words(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix(seed);
    (0..n).map(|_| rng.next_u32()).collect()
}

fn word_bytes(w: &[u32]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Lengths around the cube size, past the point where each unit sums several words, and past
/// the most cubes launched (so the grid-stride loop wraps many times).
fn matches_the_host<R: Runtime>(client: &ComputeClient<R>) {
    let units = CUBE_UNITS as usize;
    let lengths = [
        1,
        2,
        units - 1,
        units,
        units + 1,
        units * WORDS_PER_UNIT + 3,
        units * WORDS_PER_UNIT * MAX_CUBES + 5,
    ];
    for (seed, n) in lengths.into_iter().enumerate() {
        let words = random_words(n, seed as u64);
        let device = checksum_slice(client, &word_bytes(&words)).unwrap();
        assert_eq!(
            device,
            reference::checksum(words.iter().copied()),
            "{n} words"
        );
    }
    assert_eq!(
        checksum_slice(client, &[]).unwrap(),
        reference::checksum([])
    );
}

/// Bytes that end part-way through a word count as zero-padded, on both sides.
fn partial_words<R: Runtime>(client: &ComputeClient<R>) {
    for len in [1usize, 2, 3, 5, 6, 7, 1023] {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        let want = reference::checksum_bytes(&bytes);
        assert_eq!(checksum_slice(client, &bytes).unwrap(), want, "{len} bytes");
        let mut host = HostChecksum::new();
        host.update_bytes(&bytes);
        assert_eq!(host.finish(), want);
    }
}

/// One flipped bit anywhere, or two words swapped, changes the checksum.
fn detects_changes<R: Runtime>(client: &ComputeClient<R>) {
    let words = random_words(5000, 99);
    let base = checksum_slice(client, &word_bytes(&words)).unwrap();
    let mut rng = SplitMix(5);
    for _ in 0..20 {
        let mut changed = words.clone();
        let i = rng.next_u32() as usize % words.len();
        changed[i] ^= 1 << (rng.next_u32() % 32);
        assert_ne!(checksum_slice(client, &word_bytes(&changed)).unwrap(), base);
        let mut swapped = words.clone();
        let j = (i + 1 + rng.next_u32() as usize % 100) % words.len();
        swapped.swap(i, j);
        assert_ne!(checksum_slice(client, &word_bytes(&swapped)).unwrap(), base);
    }
}

/// What the loader does: widen on the device, checksum there, and compare with the host's
/// checksum of the file's bytes widened with `half`, never reading the tensor back.
fn verifies_a_widened_load<R: Runtime>(client: &ComputeClient<R>) {
    let mut bits = bf16_edges();
    bits.extend((0..4097).map(|i| (i * 7919) as u16));
    let bytes = u16_bytes(&bits);
    let on_device = widen(
        client,
        crate::upload(client, &bytes),
        FloatFormat::BF16,
        bits.len(),
    )
    .unwrap();
    let device = checksum(client, on_device, bits.len()).unwrap();
    let mut host = HostChecksum::new();
    for x in reference::widen(&bytes, FloatFormat::BF16) {
        host.push(x.to_bits());
    }
    assert_eq!(device, host.finish());
}

/// A handle shorter than the words asked for is refused.
fn short_handle<R: Runtime>(client: &ComputeClient<R>) {
    let handle = crate::upload(client, &[1, 2, 3, 4]);
    assert!(matches!(
        checksum(client, handle, 2),
        Err(crate::Error::HandleTooSmall {
            expected: 8,
            actual: 4,
            ..
        })
    ));
}

per_runtime!(
    matches_the_host,
    partial_words,
    detects_changes,
    verifies_a_widened_load,
    short_handle
);

/// Streaming on the host, in any slicing, equals the definition.
#[test]
fn host_streaming_matches_the_definition() {
    let words = random_words(1000, 1);
    let mut host = HostChecksum::new();
    host.update(&words[..3]);
    host.update(&words[3..700]);
    for &w in &words[700..] {
        host.push(w);
    }
    assert_eq!(host.finish(), reference::checksum(words.iter().copied()));
    assert_eq!(
        reference::checksum_bytes(&word_bytes(&words)),
        host.finish()
    );
}
