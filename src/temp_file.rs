//! Temporary files in the offload folder, each held under an exclusive lock by the process
//! writing it for as long as that process lives. The kernel drops the lock when the writer
//! exits, however it exits (SIGKILL included), so the next load can tell a dead writer's
//! leftovers (unlocked: removed) from a live writer's file (locked: left alone), whatever the
//! process ids and namespaces involved.
//!
//! Names are `<final name>.tmp-<pid>-<n>`, unique within a process and across live ones.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Tells apart the temp files of one process (threads may load into one folder at once).
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A locked temp file, removed when dropped unless [`TempFile::persist`]ed.
#[derive(Debug)]
pub(crate) struct TempFile {
    file: File,
    path: PathBuf,
    persisted: bool,
}

impl TempFile {
    /// Creates and locks `<folder>/<name>.tmp-<pid>-<n>`.
    pub(crate) fn create(folder: &Path, name: &str) -> io::Result<TempFile> {
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = folder.join(format!("{name}.tmp-{}-{n}", std::process::id()));
            let file = match File::create_new(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            };
            file.lock()?;
            // Between the create and the lock, another load may have taken the file for a
            // dead writer's and removed it: then start again under a new name.
            let ours = file.metadata()?;
            match std::fs::metadata(&path) {
                Ok(m) if m.dev() == ours.dev() && m.ino() == ours.ino() => {
                    return Ok(TempFile {
                        file,
                        path,
                        persisted: false,
                    });
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The open file.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Renames the file to `dest` (still locked, so no other load takes it for a leftover).
    pub(crate) fn persist(mut self, dest: &Path) -> io::Result<()> {
        std::fs::rename(&self.path, dest)?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes the temp files in `folder` whose names start with one of `names` followed by
/// `.tmp-` and that no live process holds; returns each one removed with its length. Files
/// that cannot be opened or locked are left as they are.
pub(crate) fn remove_stale(folder: &Path, names: &[&str]) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        if !names.iter().any(|n| {
            file_name
                .strip_prefix(n)
                .is_some_and(|r| r.starts_with(".tmp-"))
        }) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if file.try_lock().is_err() {
            continue; // a live writer holds it (or this filesystem has no locks)
        }
        let Ok(held) = file.metadata() else { continue };
        // Remove it only if the name still is the file just locked.
        if std::fs::metadata(&path).is_ok_and(|m| m.dev() == held.dev() && m.ino() == held.ino())
            && std::fs::remove_file(&path).is_ok()
        {
            removed.push((path, held.len()));
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_temp_file_is_kept_and_a_dead_ones_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let live = TempFile::create(dir.path(), "data").unwrap();
        std::fs::write(&live.path, b"in flight").unwrap();
        // What a killed writer leaves: a temp name nobody holds.
        let dead = dir.path().join("data.tmp-999999999-0");
        std::fs::write(&dead, b"left by a killed load").unwrap();
        let other = dir.path().join("unrelated.tmp-1");
        std::fs::write(&other, b"not ours").unwrap();

        let removed = remove_stale(dir.path(), &["data"]);
        assert_eq!(removed, vec![(dead.clone(), 21)]);
        assert!(live.path.exists() && other.exists() && !dead.exists());

        let final_path = dir.path().join("data");
        let tmp = live.path.clone();
        live.persist(&final_path).unwrap();
        assert!(final_path.exists() && !tmp.exists());
        assert!(remove_stale(dir.path(), &["data"]).is_empty());
    }

    #[test]
    fn a_dropped_temp_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let t = TempFile::create(dir.path(), "x").unwrap();
        let path = t.path.clone();
        assert!(path.exists());
        drop(t);
        assert!(!path.exists());
    }
}
