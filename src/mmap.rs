//! Memory-mapped checkpoint files: tensor bytes straight from the page cache, handed to burn
//! without a copy where the dtype allows, and released once consumed.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A read-only memory map of one checkpoint file, shared by the tensors that borrow from it.
#[derive(Clone)]
pub struct MappedFile {
    path: PathBuf,
    /// The mapping, owned by a refcounted `bytes::Bytes` so zero-copy tensors keep it alive.
    bytes: bytes::Bytes,
    /// Whether `bytes` map the file (else they are in memory, and [`MappedFile::release`]
    /// leaves them be).
    mapped: bool,
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFile")
            .field("path", &self.path)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl MappedFile {
    /// Maps `path` read-only.
    pub fn open(path: &Path) -> Result<MappedFile> {
        let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
        // SAFETY: the map is read-only and private to this process. If another process
        // truncates or rewrites the file while it is mapped, reads may fault or see new bytes;
        // the loader checks each file's fingerprint (length, mtime) before mapping it and the
        // tensor ranges against the length, which is what every mmap loader (safetensors,
        // candle, transformers) relies on too.
        let map = unsafe { memmap2::MmapOptions::new().map(&file) }
            .map_err(|e| Error::io("map", path, e))?;
        Ok(MappedFile {
            path: path.to_path_buf(),
            bytes: bytes::Bytes::from_owner(map),
            mapped: true,
        })
    }

    /// Bytes in memory that stand in for a part of `path` (a strided tensor gathered in
    /// row-major order), served through the same calls as a mapping.
    pub(crate) fn in_memory(path: &Path, bytes: Vec<u8>) -> MappedFile {
        MappedFile {
            path: path.to_path_buf(),
            bytes: bytes::Bytes::from(bytes),
            mapped: false,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The bytes `start..end`, borrowed from the mapping.
    pub fn slice(&self, start: u64, end: u64) -> &[u8] {
        &self.bytes[start as usize..end as usize]
    }

    /// The bytes `start..end` as a refcounted view that keeps the mapping alive (zero copy).
    pub fn shared(&self, start: u64, end: u64) -> bytes::Bytes {
        self.bytes.slice(start as usize..end as usize)
    }

    /// Tells the kernel the pages of `start..end` are no longer needed, so a streaming load
    /// does not keep the whole checkpoint resident as file pages. Views handed out earlier stay
    /// valid: the pages are read again from the page cache or the file if touched.
    pub fn release(&self, start: u64, end: u64) {
        if !self.mapped {
            // Dropping the pages of heap memory would zero them.
            return;
        }
        let page = 4096u64;
        let base = self.bytes.as_ptr() as usize as u64;
        // Only whole pages inside the range are released.
        let first = (base + start).div_ceil(page) * page;
        let last = (base + end) / page * page;
        if last > first {
            // SAFETY: the range lies inside this read-only file mapping (it is derived from a
            // slice of it, rounded inwards to whole pages). MADV_DONTNEED on a clean file
            // mapping only drops page-table entries; later reads fault the same bytes back in.
            unsafe {
                libc::madvise(
                    first as usize as *mut libc::c_void,
                    (last - first) as usize,
                    libc::MADV_DONTNEED,
                );
            }
        }
    }
}
