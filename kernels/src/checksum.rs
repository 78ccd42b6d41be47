//! A checksum of a tensor's 32-bit words, computed on the device and on the host alike, to
//! prove a load bit-exact without copying the weights back.
//!
//! Ways to take it:
//! - [`checksum`]: of a handle on the device (reads back 8 bytes per cube, at most 8 KiB);
//! - [`checksum_slice`]: of host bytes, uploaded and summed on the device (tests);
//! - [`HostChecksum`]: on the host, streaming, word by word or slice by slice (what the loader
//!   computes from the file's bytes, widened the way the device widens them);
//! - [`reference::checksum`](crate::reference::checksum): the definition, in plain Rust.
//!
//! # Definition
//!
//! For words `w_i` at positions `i = 0, 1, …` (both `u32`, all arithmetic wrapping mod 2³²):
//!
//! ```text
//! a = Σ w_i × (2i + 1)
//! b = Σ fmix32(w_i ^ (i × 0x9E37_79B9))
//! checksum = b << 32 | a          (a u64)
//! ```
//!
//! `fmix32` is MurmurHash3's finaliser. `a` catches any change to one word (its weight is
//! odd, so invertible mod 2³²) and depends on position; `b` is non-linear, so changes that
//! cancel in `a` rarely cancel in it. Both are sums, so the device adds them in any order —
//! per unit, per cube, then the cubes' partials on the host — and gets the same result as
//! the host's loop: the checksum is defined by positions, not by the order of the adding.
//! Only `u32` arithmetic is used: no f64 or u64 is needed on the device. One launch takes
//! up to [`MAX_LAUNCH_ELEMS`](crate::MAX_LAUNCH_ELEMS) words (8 GiB); a larger tensor is
//! checksummed in parts, each part its own checksum with positions from 0.
//!
//! Bytes that do not fill the last word are checksummed as if padded with zeros: a tensor of
//! `n` bytes is `⌈n / 4⌉` words on both sides.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::device::{CUBE_UNITS, check_handle, check_len, read_words, upload};
use crate::error::Result;
use crate::reference;

/// The most cubes a checksum launches: partials read back are at most 8 bytes × this.
const MAX_CUBES: usize = 1024;

/// Words each unit sums, at least, before another cube is added.
const WORDS_PER_UNIT: usize = 16;

/// MurmurHash3's 32-bit finaliser.
#[cube]
fn fmix32(x: u32) -> u32 {
    let mut h = x;
    h ^= h >> 16u32;
    h *= 0x85EB_CA6Bu32;
    h ^= h >> 13u32;
    h *= 0xC2B2_AE35u32;
    h ^= h >> 16u32;
    h
}

/// Each unit sums the words at its position and every `units` after it; each cube adds its
/// units' sums and writes them as two words of `partials` (a, then b).
#[cube(launch_unchecked)]
fn checksum_kernel(words: &Array<u32>, partials: &mut Array<u32>) {
    let mut shared = SharedMemory::<u32>::new(comptime![2 * CUBE_UNITS as usize]);
    let stride = CUBE_COUNT * (CUBE_DIM as usize);
    let mut i = ABSOLUTE_POS;
    let mut a = 0u32;
    let mut b = 0u32;
    while i < words.len() {
        let w = words[i];
        let pos = u32::cast_from(i);
        a += w * (2u32 * pos + 1u32);
        b += fmix32(w ^ (pos * 0x9E37_79B9u32));
        i += stride;
    }
    let u = UNIT_POS as usize;
    shared[2 * u] = a;
    shared[2 * u + 1] = b;
    sync_cube();
    if UNIT_POS == 0 {
        let mut sa = 0u32;
        let mut sb = 0u32;
        for j in 0..CUBE_DIM as usize {
            sa += shared[2 * j];
            sb += shared[2 * j + 1];
        }
        partials[2 * CUBE_POS] = sa;
        partials[2 * CUBE_POS + 1] = sb;
    }
}

/// The checksum of the first `words` 32-bit words of `handle`, computed on the device; only
/// the cubes' partial sums come back (at most 8 KiB).
#[allow(unsafe_code)]
pub fn checksum<R: Runtime>(
    client: &ComputeClient<R>,
    handle: Handle,
    words: usize,
) -> Result<u64> {
    check_len(words as u64)?;
    check_handle(&handle, "words", words as u64 * 4)?;
    if words == 0 {
        return Ok(HostChecksum::new().finish());
    }
    let cubes = words
        .div_ceil(CUBE_UNITS as usize * WORDS_PER_UNIT)
        .clamp(1, MAX_CUBES);
    let partials = client.empty(cubes * 8);
    // SAFETY: `handle` holds at least `words` words (checked above) and `partials` was just
    // allocated with 2 × `cubes` words; units read only positions below `words`, and each
    // cube writes the two words at 2 × its position, below 2 × `cubes` since exactly `cubes`
    // cubes of `CUBE_UNITS` units are launched, as the shared memory is sized.
    unsafe {
        checksum_kernel::launch_unchecked::<R>(
            client,
            CubeCount::Static(cubes as u32, 1, 1),
            CubeDim::new_1d(CUBE_UNITS),
            ArrayArg::from_raw_parts(handle, words),
            ArrayArg::from_raw_parts(partials.clone(), 2 * cubes),
        );
    }
    let p = read_words(client, partials, "checksum partials")?;
    let (mut a, mut b) = (0u32, 0u32);
    for pair in p.chunks_exact(2).take(cubes) {
        a = a.wrapping_add(pair[0]);
        b = b.wrapping_add(pair[1]);
    }
    Ok(u64::from(b) << 32 | u64::from(a))
}

/// The checksum of host bytes (zero-padded to whole words), computed on the device.
pub fn checksum_slice<R: Runtime>(client: &ComputeClient<R>, bytes: &[u8]) -> Result<u64> {
    let words = bytes.len().div_ceil(4);
    if words == 0 {
        return Ok(HostChecksum::new().finish());
    }
    checksum(client, upload(client, bytes), words)
}

/// The same checksum on the host, fed word by word or slice by slice in position order.
///
/// ```
/// use stowage_kernels::{HostChecksum, reference};
/// let words = [1u32, 2, 3, 0xDEAD_BEEF];
/// let mut sum = HostChecksum::new();
/// sum.update(&words[..1]);
/// sum.update(&words[1..]);
/// assert_eq!(sum.finish(), reference::checksum(words));
/// ```
#[derive(Debug, Clone, Default)]
pub struct HostChecksum {
    pos: u32,
    a: u32,
    b: u32,
}

impl HostChecksum {
    /// A checksum of no words yet.
    pub fn new() -> HostChecksum {
        HostChecksum::default()
    }

    /// Adds the next word.
    pub fn push(&mut self, word: u32) {
        let (a, b) = reference::checksum_terms(self.pos, word);
        self.a = self.a.wrapping_add(a);
        self.b = self.b.wrapping_add(b);
        self.pos = self.pos.wrapping_add(1);
    }

    /// Adds the next words.
    pub fn update(&mut self, words: &[u32]) {
        for &w in words {
            self.push(w);
        }
    }

    /// Adds the next bytes, which must fill whole words except at the very end (the last
    /// word is then zero-padded, and no more may follow).
    pub fn update_bytes(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(4);
        for c in &mut chunks {
            self.push(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 4];
            last[..rest.len()].copy_from_slice(rest);
            self.push(u32::from_le_bytes(last));
        }
    }

    /// The checksum of the words so far.
    pub fn finish(&self) -> u64 {
        u64::from(self.b) << 32 | u64::from(self.a)
    }
}

// The per-runtime tests run with `--features wgpu` (lavapipe without a GPU) or `cuda`.
#[cfg(test)]
#[cfg_attr(
    not(any(feature = "wgpu", feature = "cuda")),
    allow(dead_code, unused_imports)
)]
mod tests;
