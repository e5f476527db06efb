//! File-descriptor based path handling inside a root: every lookup starts at a
//! directory fd inside the root and never follows a symlink out of it.
//!
//! Why a hand-written walk rather than `openat2(RESOLVE_IN_ROOT)`: the kernel flag
//! silently clamps a symlink that climbs above the root (`d -> ../../..`) to the
//! root, while we must refuse such an entry and name it. Absolute symlink targets
//! (`var/run -> /run`, common in Debian images) are resolved against the root, as
//! they are seen from inside the container.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// Symlinks followed in one lookup before giving up (the kernel's limit).
const MAX_SYMLINKS: usize = 40;

/// Why a lookup inside the root failed.
#[derive(Debug)]
pub(crate) enum WalkError {
    /// `..` (in the name or in a symlink's target) would leave the root.
    Climbs,
    /// Too many symlinks.
    Loop,
    /// A component is neither a directory nor a symlink.
    NotDir(Vec<u8>),
    /// A component does not exist (and `create` was false).
    NotFound(Vec<u8>),
    Io(Errno),
}

pub(crate) fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// `openat` returning an owned fd.
pub(crate) fn open_at(dir: &OwnedFd, name: &[u8], flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
    let fd = openat(Some(dir.as_raw_fd()), os(name), flags | OFlag::O_CLOEXEC, mode)?;
    // SAFETY: openat just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn open_dir_path(dir: &OwnedFd, name: &[u8]) -> nix::Result<OwnedFd> {
    open_at(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
}

/// `lstat` of `name` in `dir`; `None` if it does not exist.
pub(crate) fn lstat_at(dir: &OwnedFd, name: &[u8]) -> nix::Result<Option<FileStat>> {
    match fstatat(
        Some(dir.as_raw_fd()),
        os(name),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// A directory reached inside the root: its fd and its real path relative to the
/// root (symlinks resolved), as `a/b/c` (empty for the root).
#[derive(Debug)]
pub(crate) struct Resolved {
    pub fd: OwnedFd,
    pub path: Vec<u8>,
}

/// Resolves the directory `comps` (already free of `..` and empty components) inside
/// `root`, following symlinks within the root. With `create`, missing directories are
/// made (0755) and reported through `created` with their real path.
pub(crate) fn resolve_dir(
    root: &OwnedFd,
    comps: &[&[u8]],
    create: bool,
    created: &mut dyn FnMut(&[u8]),
) -> Result<Resolved, WalkError> {
    let mut queue: std::collections::VecDeque<Vec<u8>> = comps.iter().map(|c| c.to_vec()).collect();
    // Open directory fds from the root down, with their names, so `..` can pop.
    let mut stack: Vec<(OwnedFd, Vec<u8>)> = Vec::new();
    let mut hops = 0;
    while let Some(comp) = queue.pop_front() {
        if comp.is_empty() || comp == b"." {
            continue;
        }
        if comp == b".." {
            if stack.pop().is_none() {
                return Err(WalkError::Climbs);
            }
            continue;
        }
        let cur = stack.last().map_or(root, |(fd, _)| fd);
        match open_dir_path(cur, &comp) {
            Ok(fd) => stack.push((fd, comp)),
            Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => {
                let st = lstat_at(cur, &comp).map_err(WalkError::Io)?;
                if st.is_none_or(|st| file_type(&st) != SFlag::S_IFLNK) {
                    return Err(WalkError::NotDir(comp));
                }
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(WalkError::Loop);
                }
                let target = readlinkat(Some(cur.as_raw_fd()), os(&comp)).map_err(WalkError::Io)?;
                let target = target.as_bytes();
                if target.starts_with(b"/") {
                    stack.clear();
                }
                for (i, c) in target.split(|b| *b == b'/').enumerate() {
                    queue.insert(i, c.to_vec());
                }
            }
            Err(Errno::ENOENT) if create => {
                match mkdirat(Some(cur.as_raw_fd()), os(&comp), Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(WalkError::Io(e)),
                }
                let fd = open_dir_path(cur, &comp).map_err(WalkError::Io)?;
                stack.push((fd, comp));
                created(&join_path(&stack));
            }
            Err(Errno::ENOENT) => return Err(WalkError::NotFound(comp)),
            Err(e) => return Err(WalkError::Io(e)),
        }
    }
    let path = join_path(&stack);
    let fd = match stack.pop() {
        Some((fd, _)) => fd,
        None => root.try_clone().map_err(|e| WalkError::Io(errno_of(&e)))?,
    };
    Ok(Resolved { fd, path })
}

fn join_path(stack: &[(OwnedFd, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (_, name) in stack {
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(name);
    }
    out
}

pub(crate) fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// `a/b` + `c` → `a/b/c`.
pub(crate) fn child_path(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = parent.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Names in a directory (without `.` and `..`).
pub(crate) fn list_dir(dir: &OwnedFd, name: &[u8]) -> nix::Result<(OwnedFd, Vec<Vec<u8>>)> {
    let fd = open_at(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )?;
    let dup = fd.try_clone().map_err(|e| errno_of(&e))?;
    let mut d = nix::dir::Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(dup))?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    Ok((fd, names))
}

/// Removes `name` in `dir`, recursively if it is a directory, without following
/// symlinks. Missing is fine.
pub(crate) fn remove_all_at(dir: &OwnedFd, name: &[u8]) -> nix::Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    if file_type(&st) == SFlag::S_IFDIR {
        let (fd, children) = list_dir(dir, name)?;
        for child in children {
            remove_all_at(&fd, &child)?;
        }
        unlinkat(Some(dir.as_raw_fd()), os(name), UnlinkatFlags::RemoveDir)
    } else {
        match unlinkat(Some(dir.as_raw_fd()), os(name), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
