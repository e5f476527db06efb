//! Small filesystem helpers with store errors: directories, advisory locks.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

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
    crate::base::fs::temp_name(Path::new(prefix))
}

/// Makes a rename durable: the directory entry is on disk once this returns.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    crate::base::fs::sync_dir(dir).map_err(|source| StoreError::Write {
        path: dir.to_path_buf(),
        source,
    })
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
