//! Reading files inside a container's root filesystem: the one way kboot looks at a
//! path an image controls.
//!
//! Every path in a rootfs belongs to the image: `/etc/passwd` may be a symlink to
//! `/etc/shadow` (the host's, when the link is followed on the host), to `/dev/zero` (a
//! read that never ends), a FIFO (an open or read that never returns), a directory, a
//! loop of links or a 10 GB sparse file. So a path is never joined onto the rootfs and
//! opened on the host. [`RootFs`] resolves it *inside* the rootfs as the kernel would
//! after a `chroot`: symlinks (absolute ones restart at the rootfs), `..` clamped at the
//! rootfs, magic links (`/proc/<pid>/root`) refused. The result is checked on an `O_PATH`
//! handle before anything is opened (only a regular file is, and with `O_NONBLOCK`), and
//! read with a size limit. Errors name the rootfs, the path and what to change.
//!
//! Why `pathrs` (already built through libcontainer) and not `safe-path` or raw openat2:
//! `pathrs::Root` resolves with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` and
//! falls back to an emulation with the same clamping on kernels without openat2 (before
//! 5.6), and it hands back a file descriptor; `safe_path::scoped_join` hands back a host
//! path that is opened later, so a link swapped in between is followed on the host. Its
//! `reopen` turns the checked `O_PATH` handle into a readable file without resolving
//! the path a second time.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use pathrs::flags::OpenFlags;

pub mod passwd;

/// A path inside a rootfs could not be read safely.
#[derive(Debug, thiserror::Error)]
pub enum InRootError {
    #[error("open the container root filesystem {}", rootfs.display())]
    OpenRoot {
        rootfs: PathBuf,
        #[source]
        source: pathrs::error::Error,
    },
    #[error(
        "{} in the container root filesystem {} cannot be resolved inside it ({reason}): \
         fix the image's links so that they stay inside the image",
        path.display(),
        rootfs.display()
    )]
    Resolve {
        rootfs: PathBuf,
        path: PathBuf,
        /// What went wrong, in a few words (pathrs's own message names only its step).
        reason: String,
        #[source]
        source: pathrs::error::Error,
    },
    #[error(
        "{} in the container root filesystem {} is a {kind}, not a regular file: \
         kboot reads only regular files from an image; make it one in the image",
        path.display(),
        rootfs.display()
    )]
    NotRegular {
        rootfs: PathBuf,
        path: PathBuf,
        kind: &'static str,
    },
    #[error(
        "{} in the container root filesystem {} is larger than kboot reads for it \
         ({size} bytes, limit {limit}): make the file smaller in the image",
        path.display(),
        rootfs.display()
    )]
    TooLarge {
        rootfs: PathBuf,
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("read {} in the container root filesystem {}", path.display(), rootfs.display())]
    Read {
        rootfs: PathBuf,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, InRootError>;

/// What [`RootFs::metadata`] reports about a path inside the rootfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// `st_mode`: file type and permission bits.
    pub mode: u32,
    pub size: u64,
}

impl Stat {
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
    /// Any of the execute bits is set.
    pub fn is_executable(&self) -> bool {
        self.mode & 0o111 != 0
    }
    fn kind(&self) -> &'static str {
        match self.mode & libc::S_IFMT {
            libc::S_IFREG => "regular file",
            libc::S_IFDIR => "directory",
            libc::S_IFCHR => "character device",
            libc::S_IFBLK => "block device",
            libc::S_IFIFO => "FIFO",
            libc::S_IFSOCK => "socket",
            libc::S_IFLNK => "symbolic link",
            _ => "special file",
        }
    }
}

/// A container's root filesystem, opened once; every lookup is resolved inside it.
#[derive(Debug)]
pub struct RootFs {
    root: pathrs::Root,
    dir: PathBuf,
}

impl RootFs {
    /// Opens the rootfs directory `dir` (a host path kboot chose, not the image).
    pub fn open(dir: &Path) -> Result<Self> {
        let root = pathrs::Root::open(dir).map_err(|source| InRootError::OpenRoot {
            rootfs: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            root,
            dir: dir.to_path_buf(),
        })
    }

    /// The host directory this rootfs was opened from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What `path` (inside the rootfs, links followed inside it) is; `None` when it does
    /// not exist there. Nothing is opened but an `O_PATH` handle.
    pub fn metadata(&self, path: &Path) -> Result<Option<Stat>> {
        Ok(self.resolve(path)?.map(|(_, st)| st))
    }

    /// The contents of the regular file `path` inside the rootfs, at most `limit` bytes;
    /// `None` when it does not exist. Anything else (a device, FIFO, socket, directory,
    /// a link leaving the rootfs through a magic link, a loop, a larger file) is an error.
    pub fn read(&self, path: &Path, limit: u64) -> Result<Option<Vec<u8>>> {
        let Some((handle, st)) = self.resolve(path)? else {
            return Ok(None);
        };
        if !st.is_file() {
            return Err(InRootError::NotRegular {
                rootfs: self.dir.clone(),
                path: path.to_path_buf(),
                kind: st.kind(),
            });
        }
        let too_large = |size| InRootError::TooLarge {
            rootfs: self.dir.clone(),
            path: path.to_path_buf(),
            size,
            limit,
        };
        if st.size > limit {
            return Err(too_large(st.size));
        }
        let read_err = |source| InRootError::Read {
            rootfs: self.dir.clone(),
            path: path.to_path_buf(),
            source,
        };
        // The handle pins the inode checked above: reopening it cannot land on a device or
        // FIFO swapped in since. O_NONBLOCK all the same, as a second guard against a hang.
        let file = handle
            .reopen(OpenFlags::O_RDONLY | OpenFlags::O_NONBLOCK)
            .map_err(|e| read_err(std::io::Error::other(e)))?;
        let mut buf = Vec::with_capacity(usize::try_from(st.size).unwrap_or(0));
        // One byte over the limit tells a file that grew since the fstat.
        file.take(limit.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(read_err)?;
        if buf.len() as u64 > limit {
            return Err(too_large(buf.len() as u64));
        }
        Ok(Some(buf))
    }

    /// [`read`](Self::read), as text (invalid UTF-8 replaced: the callers parse
    /// colon-separated text files and only compare ASCII names and numbers).
    pub fn read_to_string(&self, path: &Path, limit: u64) -> Result<Option<String>> {
        Ok(self
            .read(path, limit)?
            .map(|b| String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())))
    }

    /// An `O_PATH` handle on `path` resolved inside the rootfs, and what it is; `None`
    /// when a component does not exist.
    fn resolve(&self, path: &Path) -> Result<Option<(pathrs::Handle, Stat)>> {
        let handle = match self.root.resolve(path) {
            Ok(h) => h,
            Err(e)
                if matches!(
                    e.kind(),
                    pathrs::error::ErrorKind::OsError(Some(libc::ENOENT | libc::ENOTDIR))
                ) =>
            {
                return Ok(None)
            }
            Err(source) => {
                let reason = match source.kind() {
                    pathrs::error::ErrorKind::OsError(Some(errno)) => {
                        std::io::Error::from_raw_os_error(errno).to_string()
                    }
                    pathrs::error::ErrorKind::SafetyViolation => "a link leaves the root filesystem".to_owned(),
                    _ => source.to_string(),
                };
                return Err(InRootError::Resolve {
                    rootfs: self.dir.clone(),
                    path: path.to_path_buf(),
                    reason,
                    source,
                });
            }
        };
        let st = nix::sys::stat::fstat(handle.as_fd().as_raw_fd()).map_err(|e| InRootError::Read {
            rootfs: self.dir.clone(),
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Some((
            handle,
            Stat {
                mode: st.st_mode,
                size: u64::try_from(st.st_size).unwrap_or(0),
            },
        )))
    }
}

#[cfg(test)]
mod tests;
