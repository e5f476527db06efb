//! The kboot binary that containers can reach cannot be written (the CVE-2019-5736 class).
//!
//! Processes that start or join a container (the shim and the container's init, which is
//! a clone of it; `kboot exec`; the pod PID holder; and the supervisor and CRI server whose
//! children they are) run the kboot binary. Until it execs the container's program, such a
//! process is visible inside the container, and its `/proc/<pid>/exe` (or `/proc/self/exe`
//! as a `#!` interpreter of a file the container planted) leads to that binary: a container
//! that can open it for writing replaces the host's kboot with its own code, which the next
//! `kboot` run as root executes. So these processes re-execute themselves first from a
//! copy that cannot be written, and their `/proc/self/exe` is that copy.
//!
//! The copy is runc's (1.2) rather than pentacle's by default: a read-only overlayfs over
//! the binary's directory, never attached to any mount tree (`fsopen`/`fsmount`), opened
//! `O_PATH` and executed with `execveat`. A write through it fails (`EROFS`: the overlay
//! has no upper layer), and it costs no copy: the pages are the binary's own page cache.
//! pentacle (youki's choice) copies the binary into a sealed memfd in every process: 24 MB
//! of unreclaimable shmem per supervisor, shim and exec with a release build, 289 MB with a
//! debug one, which took 0.6–1.3 s to copy here (bench/README.md `## Sealed binary`); the
//! overlay re-exec measured a few ms. The memfd copy is
//! kept as the fallback where overlayfs or the mount API is missing (before Linux 6.8 for
//! `lowerdir+`), written here with nix in a few lines rather than adding pentacle for it.
//!
//! A process already running from either kind of copy (a shim the sealed supervisor
//! started through `/proc/self/exe`) is not re-executed again. Without root nothing is
//! sealed: no container can be started or joined then (the test-only plain-process mode
//! runs host processes), and neither mount nor the copy would change that.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use rustix::mount::{fsconfig_create, fsconfig_set_string, fsmount, fsopen, FsMountFlags, FsOpenFlags, MountAttrFlags};

/// The binary could not be made unwritable; the process does not go on to run containers.
#[derive(Debug, thiserror::Error)]
#[error(
    "re-execute kboot from a copy a container cannot write (overlayfs: {overlay}; memfd: {source}); \
     kboot needs overlayfs with the new mount API (Linux 6.8+) or memfd_create"
)]
pub struct SealError {
    overlay: io::Error,
    #[source]
    source: io::Error,
}

/// Whether this process runs from a copy that cannot be written: a memfd with a write
/// seal, or a file on a read-only overlayfs.
pub fn is_sealed() -> bool {
    let Ok(exe) = File::open("/proc/self/exe") else {
        return false;
    };
    if let Ok(seals) = fcntl(exe.as_raw_fd(), FcntlArg::F_GET_SEALS) {
        if SealFlag::from_bits_truncate(seals).contains(SealFlag::F_SEAL_WRITE) {
            return true;
        }
    }
    let (Ok(fs), Ok(vfs)) = (nix::sys::statfs::fstatfs(&exe), nix::sys::statvfs::fstatvfs(&exe)) else {
        return false;
    };
    fs.filesystem_type() == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC
        && vfs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY)
}

/// Re-executes this process from an unwritable copy of its binary unless it already runs
/// from one (or is not root). Returns only when nothing needed doing, or with the error.
pub fn ensure_sealed() -> Result<(), SealError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    if is_sealed() {
        // Executed from a descriptor, the process is named after its number: name it again.
        // Only the name `ps` shows: a failure changes nothing else.
        let _ = nix::sys::prctl::set_name(c"kboot");
        return Ok(());
    }
    let exe = match overlay_copy() {
        Ok(fd) => fd,
        Err(overlay) => memfd_copy().map_err(|source| SealError { overlay, source })?,
    };
    let argv = cstrings(std::env::args_os());
    let envp = cstrings(std::env::vars_os().map(|(k, v)| {
        let mut kv = k;
        kv.push("=");
        kv.push(v);
        kv
    }));
    // Returns only on failure; the new image runs `main` again and finds itself sealed.
    let err = nix::unistd::fexecve(exe.as_raw_fd(), &argv, &envp).unwrap_err();
    Err(SealError {
        overlay: io::Error::other("not tried again"),
        source: io::Error::other(format!("execveat the sealed copy: {err}")),
    })
}

/// The running binary, opened through a private read-only overlayfs mount of its directory.
fn overlay_copy() -> io::Result<OwnedFd> {
    let path = std::fs::read_link("/proc/self/exe")?;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::other(format!("no directory in {}", path.display())));
    };
    // Without an upper layer overlayfs needs two lower ones: the second is an empty
    // tmpfs that, like the overlay, is never attached anywhere.
    let tmpfs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)?;
    fsconfig_create(&tmpfs)?;
    let empty = fsmount(&tmpfs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::MOUNT_ATTR_RDONLY)?;
    let overlay = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    fsconfig_set_string(&overlay, "lowerdir+", dir)?;
    fsconfig_set_string(
        &overlay,
        "lowerdir+",
        PathBuf::from(format!("/proc/self/fd/{}", empty.as_raw_fd())),
    )?;
    fsconfig_create(&overlay)?;
    let mnt = fsmount(
        &overlay,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NODEV | MountAttrFlags::MOUNT_ATTR_NOSUID,
    )?;
    rustix::fs::openat(
        mnt.as_fd(),
        name,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// The running binary copied into a memfd sealed against writing, growing and shrinking.
fn memfd_copy() -> io::Result<OwnedFd> {
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    let mut src = File::open("/proc/self/exe")?;
    let fd = memfd_create(
        c"kboot",
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )?;
    let mut copy = File::from(fd);
    io::copy(&mut src, &mut copy)?;
    let seals = SealFlag::F_SEAL_SEAL | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE;
    fcntl(copy.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals))?;
    Ok(copy.into())
}

fn cstrings(items: impl Iterator<Item = OsString>) -> Vec<CString> {
    // An argument or variable cannot hold a NUL byte (the kernel passes C strings).
    items.filter_map(|s| CString::new(s.into_vec()).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_binary_on_disk_is_not_sealed() {
        assert!(!is_sealed());
    }
}
