//! Moving bytes to and from a device, and sizing launches: what every launcher shares.
//!
//! Every kernel reads and writes 32-bit words, the one element type every runtime has (no
//! half-precision, 8-bit or 64-bit buffer types are needed), so a handle must hold a whole
//! number of words: [`upload`] pads the host bytes with zeros to the next multiple of 4.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::error::{Error, Result};

/// Units per cube in every launch of this crate.
pub(crate) const CUBE_UNITS: u32 = 256;

/// The most elements (or words) one launch takes: 2³¹ (8 GiB of f32). Positions are 32-bit
/// on the device; the headroom above keeps every derived position (a packed word's last
/// value, a unit's next stride) from wrapping.
pub const MAX_LAUNCH_ELEMS: u64 = 1 << 31;

/// Copies `bytes` to the device, zero-padded to a whole number of 4-byte words.
///
/// The kernels read their inputs as 32-bit words; checkpoint bytes of a bf16 or f16 tensor
/// with an odd element count end half-way through a word, so they need the padding.
pub fn upload<R: Runtime>(client: &ComputeClient<R>, bytes: &[u8]) -> Handle {
    if bytes.len().is_multiple_of(4) {
        return client.create_from_slice(bytes);
    }
    let mut padded = Vec::with_capacity(bytes.len().next_multiple_of(4));
    padded.extend_from_slice(bytes);
    padded.resize(bytes.len().next_multiple_of(4), 0);
    client.create_from_slice(&padded)
}

/// Reads a handle back as little-endian 32-bit words.
pub(crate) fn read_words<R: Runtime>(
    client: &ComputeClient<R>,
    handle: Handle,
    what: &'static str,
) -> Result<Vec<u32>> {
    let bytes = client
        .read_one(handle)
        .map_err(|source| Error::ReadBack { what, source })?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Reads a handle back as raw bytes.
pub(crate) fn read_bytes<R: Runtime>(
    client: &ComputeClient<R>,
    handle: Handle,
    what: &'static str,
) -> Result<Vec<u8>> {
    let bytes = client
        .read_one(handle)
        .map_err(|source| Error::ReadBack { what, source })?;
    Ok(bytes.to_vec())
}

/// Fails unless `handle` holds at least `expected` bytes: what makes the unchecked launches
/// sound, since every kernel guards its positions against the lengths given with the handles.
pub(crate) fn check_handle(handle: &Handle, what: &'static str, expected: u64) -> Result<()> {
    let actual = handle.size_in_used();
    if actual < expected {
        return Err(Error::HandleTooSmall {
            what,
            expected,
            actual,
        });
    }
    Ok(())
}

/// Fails when `elems` positions cannot be indexed by one launch.
pub(crate) fn check_len(elems: u64) -> Result<()> {
    if elems > MAX_LAUNCH_ELEMS {
        return Err(Error::TooLarge {
            elems,
            max: MAX_LAUNCH_ELEMS,
        });
    }
    Ok(())
}

/// The cube count and dimension for one unit per item: `units` at least, spread over the
/// device's cube-count limits (cubes past the end find nothing to do).
pub(crate) fn elementwise<R: Runtime>(
    client: &ComputeClient<R>,
    units: usize,
) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new_1d(CUBE_UNITS);
    (
        cubecl::calculate_cube_count_elemwise(client, units, dim),
        dim,
    )
}
