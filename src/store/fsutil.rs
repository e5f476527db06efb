//! Small filesystem helpers: atomic writes, directory fsync, advisory locks.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};

use super::error::{Result, StoreError};

pub(crate) fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|source| StoreError::CreateDir {
        path: path.to_path_buf(),
        source,
    })
}

/// A name unique within this host for a temp file next to its destination.
pub(crate) fn temp_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        ".{prefix}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Makes a rename durable: the directory entry is on disk once this returns.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

/// Writes `bytes` to `path` via temp file → fsync → rename → fsync(dir).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_dir(dir)?;
    let tmp = dir.join(temp_name("tmp"));
    let werr = |source: io::Error| StoreError::Write {
        path: tmp.clone(),
        source,
    };
    let result = (|| {
        let mut f = File::create(&tmp).map_err(werr)?;
        f.write_all(bytes).map_err(werr)?;
        f.sync_all().map_err(werr)?;
        fs::rename(&tmp, path).map_err(|source| StoreError::Write {
            path: path.to_path_buf(),
            source,
        })
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir)
}

/// An advisory lock file under `locks/`, held until dropped.
#[derive(Debug)]
pub struct LockGuard {
    _lock: Flock<File>,
}

pub(crate) fn lock(path: &Path, exclusive: bool) -> Result<LockGuard> {
    lock_file(path, exclusive, true).map(|l| l.expect("blocking lock always returns a lock"))
}

/// Opens read-write, creating it empty if missing, keeping existing content.
pub(crate) fn open_existing_or_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
}

/// Opens (creating) and locks `path`; `None` when `blocking` is false and someone else holds it.
pub(crate) fn lock_file(path: &Path, exclusive: bool, blocking: bool) -> Result<Option<LockGuard>> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    let lerr = |source: io::Error| StoreError::Lock {
        path: path.to_path_buf(),
        source,
    };
    let file = open_existing_or_new(path).map_err(lerr)?;
    let arg = match (exclusive, blocking) {
        (true, true) => FlockArg::LockExclusive,
        (true, false) => FlockArg::LockExclusiveNonblock,
        (false, true) => FlockArg::LockShared,
        (false, false) => FlockArg::LockSharedNonblock,
    };
    match Flock::lock(file, arg) {
        Ok(lock) => Ok(Some(LockGuard { _lock: lock })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) if !blocking => Ok(None),
        Err((_, errno)) => Err(lerr(errno.into())),
    }
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| StoreError::Read {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn remove_file(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(StoreError::Write {
            path: PathBuf::from(path),
            source,
        }),
    }
}
