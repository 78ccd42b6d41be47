//! What a file looked like when it was read: its length and modification time, so a load can
//! tell that a checkpoint changed since it was planned.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::error::{Error, Result};

/// A file's identity for "has it changed?" checks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// The file.
    pub path: PathBuf,
    /// Its length in bytes.
    pub len: u64,
    /// Its modification time, in nanoseconds since the Unix epoch (0 if unknown).
    pub mtime_ns: u128,
}

impl Fingerprint {
    /// Reads the fingerprint of `path` now.
    pub fn of(path: &Path) -> Result<Fingerprint> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Ok(Fingerprint {
            path: path.to_path_buf(),
            len: meta.len(),
            mtime_ns,
        })
    }

    /// Fails with [`Error::FileChanged`] unless the file still has this fingerprint.
    pub fn check(&self) -> Result<()> {
        let now = Fingerprint::of(&self.path)?;
        if now != *self {
            return Err(Error::FileChanged {
                path: self.path.clone(),
                then: (self.len, self.mtime_ns),
                now: (now.len, now.mtime_ns),
            });
        }
        Ok(())
    }
}
