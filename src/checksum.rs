//! Checksums of what stowage writes to the offload folder: one XXH3-64 hash per tensor
//! (`xxhash-rust`), taken as the bytes are written, kept in the folder's manifest, checked
//! whenever a load reuses the folder and, under `verify`, whenever an offloaded tensor is read.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// The hash's name, as the manifest records it.
pub(crate) const ALGORITHM: &str = "xxh3-64";

/// Bytes hashed per read when a tensor is hashed from its file.
const CHUNK: usize = 4 << 20;

/// The hash of `bytes`.
pub(crate) fn of(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// The hash of bytes `start..end` of `file`, read a few MiB at a time into `buf`.
pub(crate) fn of_range(file: &File, start: u64, end: u64, buf: &mut Vec<u8>) -> io::Result<u64> {
    let mut hasher = Xxh3::new();
    let mut at = start;
    while at < end {
        let n = (end - at).min(CHUNK as u64) as usize;
        buf.resize(n, 0);
        file.read_exact_at(&mut buf[..n], at)?;
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(hasher.digest())
}

/// The hash as the manifest writes it: 16 lowercase hex digits.
pub(crate) fn to_hex(hash: u64) -> String {
    format!("{hash:016x}")
}

/// A hash the manifest wrote, or `None` if `text` is not one.
pub(crate) fn from_hex(text: &str) -> Option<u64> {
    (text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_other_text() {
        for h in [0, 1, u64::MAX, 0x0123_4567_89ab_cdef] {
            assert_eq!(from_hex(&to_hex(h)), Some(h));
        }
        for bad in [
            "",
            "12",
            "+123456789abcdef",
            "0123456789abcdeg",
            "00000000000000000",
        ] {
            assert_eq!(from_hex(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_range_hashes_as_its_bytes_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..(CHUNK * 2 + 77))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let mut buf = Vec::new();
        for (s, e) in [
            (0, bytes.len()),
            (5, 5),
            (3, CHUNK + 9),
            (CHUNK, bytes.len()),
        ] {
            let got = of_range(&file, s as u64, e as u64, &mut buf).unwrap();
            assert_eq!(got, of(&bytes[s..e]), "{s}..{e}");
        }
        assert!(of_range(&file, 0, bytes.len() as u64 + 1, &mut buf).is_err());
    }
}
