//! Pinned namespaces: a pod's network (and IPC) namespace lives on with no process in
//! it, kept alive by a bind mount of its nsfs file (what CRI-O's `pinns` does), so no pause
//! process is needed. (A PID namespace cannot be kept this way: see [`super::holder`].)

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use super::error::{CriError, Result};

/// Creates a new network namespace and bind-mounts it at `path`.
pub(crate) fn pin(id: &str, path: &Path) -> Result<()> {
    pin_new(id, path, CloneFlags::CLONE_NEWNET, "net")
}

/// Creates a new IPC namespace and bind-mounts it at `path`.
pub(crate) fn pin_ipc(id: &str, path: &Path) -> Result<()> {
    pin_new(id, path, CloneFlags::CLONE_NEWIPC, "ipc")
}

/// Bind-mounts an existing namespace (`/proc/<pid>/ns/<kind>`) at `path`: a pod's network
/// and IPC namespaces made by its user-namespace holder ([`super::holder`]).
pub(crate) fn pin_existing(id: &str, path: &Path, ns: &Path) -> Result<()> {
    pin_with(id, path, "bind-mount the holder's namespace", |target| {
        mount(Some(ns), target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(io::Error::from)
    })
}

/// `unshare` of a network or IPC namespace changes only the calling thread, so it runs on
/// a throwaway thread: the server's own threads stay in the host namespaces, and the
/// namespace outlives the thread through the mount.
fn pin_new(id: &str, path: &Path, flag: CloneFlags, kind: &'static str) -> Result<()> {
    pin_with(id, path, "unshare and bind-mount", |target| {
        let target = target.to_owned();
        std::thread::spawn(move || -> io::Result<()> {
            unshare(flag).map_err(io::Error::from)?;
            let own = PathBuf::from(format!("/proc/self/task/{}/ns/{kind}", nix::unistd::gettid()));
            mount(Some(&own), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(io::Error::from)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the pinning thread panicked")))
    })
}

/// Creates the mount point `path`, then lets `bind` mount a namespace there (the point is
/// removed again when it fails).
fn pin_with(id: &str, path: &Path, step: &'static str, bind: impl FnOnce(&Path) -> io::Result<()>) -> Result<()> {
    let err = |step| {
        move |source| CriError::Netns {
            id: id.to_owned(),
            step,
            source,
        }
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err("create the netns directory"))?;
    }
    File::create(path).map_err(err("create the mount point"))?;
    if let Err(source) = bind(path) {
        let _ = fs::remove_file(path);
        return Err(err(step)(source));
    }
    Ok(())
}

/// Unmounts and removes a pinned namespace; a namespace already gone is not an error.
pub(crate) fn unpin(id: &str, path: &Path) -> Result<()> {
    let err = |step| {
        move |source| CriError::Netns {
            id: id.to_owned(),
            step,
            source,
        }
    };
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(err("unmount")(e.into())),
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(err("remove the mount point")(e)),
        _ => Ok(()),
    }
}

/// Whether `path` is a pinned namespace (an nsfs mount), e.g. after a supervisor restart.
pub(crate) fn is_pinned(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}
