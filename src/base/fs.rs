//! The one way kboot replaces a file: write a temp file in the same directory,
//! then rename it over the destination, so a reader sees the old content or the
//! new, never half of it. How much of that reaches the disk before the call
//! returns is the caller's explicit choice ([`Durability`]).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// What survives a crash (power loss, kernel panic) right after the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Rename only. Readers never see half a file, but after a crash the name
    /// may hold the old content or an empty file. For runtime records under
    /// `/run` and records rebuilt from others: it saves a disk flush.
    Volatile,
    /// fsync the file before the rename: after a crash the name holds the old
    /// or the new content, never a truncated file.
    Synced,
    /// [`Synced`](Self::Synced), then fsync the directory: the new name itself
    /// is on disk when the call returns. For content that is the only copy
    /// (keys, certificates, the image index).
    Durable,
}

/// Replaces `path` with `bytes` through a temp file in the same directory.
///
/// Missing parents are created. `mode` sets the file's exact permissions (the
/// umask does not apply; keys must be exactly 0600); `None` leaves the default
/// (0666 less the umask). On failure the temp file is removed and `path` is
/// untouched.
pub fn write_atomic(path: &Path, bytes: &[u8], durability: Durability, mode: Option<u32>) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let tmp = dir.join(temp_name(path));
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        if let Some(mode) = mode {
            options.mode(mode);
        }
        let mut f = options.open(&tmp)?;
        if let Some(mode) = mode {
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        f.write_all(bytes)?;
        if durability != Durability::Volatile {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    if durability == Durability::Durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes a rename or create in `dir` durable: the entry is on disk once this returns.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// A name for a temp file beside `path`, unique among the processes and
/// threads of this host, hidden (leading dot) so directory listings skip it.
pub fn temp_name(path: &Path) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_content_and_leaves_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("a/b/key.pem");
        for durability in [Durability::Volatile, Durability::Synced, Durability::Durable] {
            write_atomic(&path, b"one", durability, Some(0o600)).unwrap();
            write_atomic(&path, b"two", durability, Some(0o600)).unwrap();
            assert_eq!(fs::read(&path).unwrap(), b"two");
        }
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["key.pem"]);
    }

    #[test]
    fn write_atomic_sets_the_exact_mode_whatever_the_umask() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("key");
        write_atomic(&path, b"k", Durability::Durable, Some(0o600)).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        write_atomic(&path, b"k", Durability::Durable, Some(0o644)).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
    }

    #[test]
    fn write_atomic_failure_keeps_the_old_file_and_no_temp() {
        let d = tempfile::tempdir().unwrap();
        // The destination is a non-empty directory: the rename fails.
        let path = d.path().join("busy");
        fs::create_dir_all(path.join("inside")).unwrap();
        assert!(write_atomic(&path, b"x", Durability::Synced, None).is_err());
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["busy"]);
    }
}
