//! Containers in a user namespace (a pod's `hostUsers: false`): the id mapping, the spec's
//! `user` namespace, and the id-mapped mounts that make the image's files and the volumes
//! look owned as they are on disk to root in the container (who is an unprivileged uid on
//! the host).
//!
//! libcontainer 0.7 joins a user namespace by path and writes mappings for a new one, but
//! refuses `idmap`/`ridmap` mounts ("idmapped mounts are not supported",
//! `container/mount_validation.rs`), so kboot makes the id-mapped mounts itself, outside
//! the container, and hands libcontainer plain bind mounts of them (a bind of an id-mapped
//! mount keeps its mapping): `open_tree(OPEN_TREE_CLONE)`, `mount_setattr(MOUNT_ATTR_IDMAP)`
//! with the pod's user namespace, `move_mount`. rustix has no `mount_setattr`
//! (`not_implemented!`), libcontainer's `Syscall` has it, so that one call goes through
//! libcontainer.
//!
//! The rootfs: overlayfs itself cannot be id-mapped, but since Linux 5.19 its layers can
//! (what containerd 2's overlay snapshotter does with `uidmap`/`gidmap`): the image's cached
//! lower directory is cloned id-mapped, the overlay is mounted on that clone, and the clone
//! is detached again (overlayfs keeps its own reference). The upper directory's root is
//! owned by the mapped root, so `/` is root's inside. Where the overlay mount fails the
//! rootfs is copied through the id-mapped clone (`cp -a` then writes the mapped owners: a
//! chown'd copy).

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Spec};

use crate::state::ContainerDir;

/// One id range: `size` ids from `container_id` inside are `host_id..` outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdRange {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

impl IdRange {
    /// The host id of `id` inside, if it is mapped.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        id.checked_sub(self.container_id)
            .filter(|off| *off < self.size)
            .map(|off| self.host_id + off)
    }

    /// The `/proc/<pid>/uid_map` line.
    pub fn map_line(&self) -> String {
        format!("{} {} {}\n", self.container_id, self.host_id, self.size)
    }
}

/// `C:H:N`, the form `kboot cri pod-holder --uid-map/--gid-map` takes.
impl std::fmt::Display for IdRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.container_id, self.host_id, self.size)
    }
}

impl std::str::FromStr for IdRange {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let mut it = s.split(':').map(str::parse::<u32>);
        match (it.next(), it.next(), it.next(), it.next()) {
            (Some(Ok(container_id)), Some(Ok(host_id)), Some(Ok(size)), None) => Ok(IdRange {
                container_id,
                host_id,
                size,
            }),
            _ => Err(format!("{s:?} is not CONTAINER_ID:HOST_ID:LENGTH")),
        }
    }
}

/// A pod's user namespace as its containers join it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNamespace {
    pub uids: IdRange,
    pub gids: IdRange,
    /// The namespace to join (`/proc/<holder>/ns/user`).
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("user namespace: {what} is not mapped in the pod's user namespace (uids {uids:?}, gids {gids:?}); run the container as an id inside the mapping")]
    Unmapped { what: String, uids: IdRange, gids: IdRange },
    #[error("user namespace: id-mapped mount of {} ({step}): {source}{hint}", path.display())]
    Idmap {
        path: PathBuf,
        step: &'static str,
        hint: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("user namespace: a `dir:` image ({}) is used in place and cannot be id-mapped; use an image from the store", path.display())]
    InPlaceRootfs { path: PathBuf },
}

type Result<T> = std::result::Result<T, UsernsError>;

/// Directory of a container's id-mapped volume clones (unmounted by [`release`]).
fn idmap_dir(dir: &ContainerDir) -> PathBuf {
    dir.path().join("idmap")
}

/// Makes `target` an id-mapped clone of the mount tree at `src`, mapped through the user
/// namespace at `userns`. `target` is created (a directory or an empty file, as `src`).
pub fn idmapped_clone(src: &Path, userns: &Path, target: &Path) -> Result<()> {
    let fail = |step: &'static str, hint: &'static str| {
        move |source: io::Error| UsernsError::Idmap {
            path: src.to_owned(),
            step,
            hint,
            source,
        }
    };
    let tree = detached_idmapped(src, userns).map_err(|(step, hint, e)| fail(step, hint)(e))?;
    let meta = fs::metadata(src).map_err(fail("stat the source", ""))?;
    if meta.is_dir() {
        fs::create_dir_all(target).map_err(fail("create the mount point", ""))?;
    } else {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(fail("create the mount point", ""))?;
        }
        fs::File::create(target).map_err(fail("create the mount point", ""))?;
    }
    rustix::mount::move_mount(
        tree.as_fd(),
        "",
        rustix::fs::CWD,
        target,
        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| fail("move_mount", "")(e.into()))
}

type Step = (&'static str, &'static str, io::Error);

/// A detached, id-mapped clone of the mount tree at `src` (gone when the fd is closed).
/// The probe calls it alone: it is exactly what a pod needs of a filesystem.
pub fn detached_idmapped(src: &Path, userns: &Path) -> std::result::Result<std::os::fd::OwnedFd, Step> {
    use rustix::mount::{open_tree, OpenTreeFlags};
    let tree = open_tree(
        rustix::fs::CWD,
        src,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC | OpenTreeFlags::AT_RECURSIVE,
    )
    .map_err(|e| ("open_tree(OPEN_TREE_CLONE)", " (open_tree needs Linux 5.2)", e.into()))?;
    let ns = fs::File::open(userns).map_err(|e| ("open the user namespace", "", e))?;
    let attr = libcontainer::syscall::linux::MountAttr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: std::os::fd::AsRawFd::as_raw_fd(&ns) as u64,
    };
    libcontainer::syscall::syscall::create_syscall()
        .mount_setattr(
            tree.as_fd(),
            Path::new(""),
            libcontainer::syscall::linux::AT_EMPTY_PATH | libcontainer::syscall::linux::AT_RECURSIVE,
            &attr,
            std::mem::size_of::<libcontainer::syscall::linux::MountAttr>(),
        )
        .map_err(|e| {
            let errno = match e {
                libcontainer::syscall::SyscallError::Nix(n) => n as i32,
                _ => libc::EINVAL,
            };
            (
                "mount_setattr(MOUNT_ATTR_IDMAP)",
                " (id-mapped mounts need Linux 5.12 and a filesystem that supports them: ext4, xfs, btrfs since 5.12, tmpfs since 6.3, overlayfs layers since 5.19)",
                io::Error::from_raw_os_error(errno),
            )
        })?;
    Ok(tree)
}

/// The container's writable rootfs over the image's cached `lower`, seen through the pod's
/// mapping; `view` makes the overlay (or copy) over the directory it is given.
pub fn idmapped_rootfs(
    lower: &Path,
    dir: &ContainerDir,
    ns: &UserNamespace,
    view: impl FnOnce(&Path) -> std::result::Result<PathBuf, crate::unpack::UnpackError>,
) -> std::result::Result<PathBuf, Box<dyn std::error::Error + Send + Sync>> {
    // The upper directory's root is the merged root's owner: the mapped root.
    let upper = dir.rootfs_upper();
    fs::create_dir_all(&upper)?;
    let root = (ns.uids.to_host(0), ns.gids.to_host(0));
    nix::unistd::chown(
        &upper,
        root.0.map(nix::unistd::Uid::from_raw),
        root.1.map(nix::unistd::Gid::from_raw),
    )?;
    let clone = dir.path().join("lower-idmap");
    idmapped_clone(lower, &ns.path, &clone)?;
    let merged = view(&clone);
    // overlayfs holds its own reference to the layer; a copy is done: the clone can go.
    let _ = nix::mount::umount2(&clone, nix::mount::MntFlags::MNT_DETACH);
    let _ = fs::remove_dir(&clone);
    Ok(merged?)
}

/// Puts the container in the pod's user namespace and turns the service's bind volumes
/// (`sources`) into id-mapped ones. Checks that the process's ids are mapped.
pub fn apply(spec: &mut Spec, ns: &UserNamespace, dir: &ContainerDir, sources: &[PathBuf]) -> Result<()> {
    let unmapped = |what: String| UsernsError::Unmapped {
        what,
        uids: ns.uids,
        gids: ns.gids,
    };
    if let Some(user) = spec.process().as_ref().map(|p| p.user()) {
        if ns.uids.to_host(user.uid()).is_none() {
            return Err(unmapped(format!("uid {}", user.uid())));
        }
        for gid in std::iter::once(user.gid()).chain(user.additional_gids().clone().unwrap_or_default()) {
            if ns.gids.to_host(gid).is_none() {
                return Err(unmapped(format!("gid {gid}")));
            }
        }
    }
    let mut n = 0;
    for m in spec.mounts_mut().iter_mut().flatten() {
        let Some(src) = m.source().clone() else { continue };
        if m.typ().as_deref() != Some("bind") || !sources.contains(&src) {
            continue;
        }
        let target = idmap_dir(dir).join(n.to_string());
        n += 1;
        idmapped_clone(&src, &ns.path, &target)?;
        m.set_source(Some(target));
    }
    if let Some(linux) = spec.linux_mut().as_mut() {
        let mut namespaces = linux.namespaces().clone().unwrap_or_default();
        namespaces.retain(|n| n.typ() != LinuxNamespaceType::User);
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::User)
                .path(ns.path.clone())
                .build()
                .expect("a namespace with a type and a path"),
        );
        linux.set_namespaces(Some(namespaces));
        // Informational for readers of config.json: libcontainer joins the namespace by
        // path and writes no mapping then.
        let map = |r: IdRange| {
            LinuxIdMappingBuilder::default()
                .container_id(r.container_id)
                .host_id(r.host_id)
                .size(r.size)
                .build()
                .expect("an id mapping")
        };
        linux.set_uid_mappings(Some(vec![map(ns.uids)]));
        linux.set_gid_mappings(Some(vec![map(ns.gids)]));
    }
    Ok(())
}

/// Unmounts the container's id-mapped volume clones. An error leaves the directory for the
/// caller not to delete: removing it recursively would go through a mount into a volume.
pub fn release(dir: &ContainerDir) -> io::Result<()> {
    let idmap = idmap_dir(dir);
    let entries = match fs::read_dir(&idmap) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        r => r?,
    };
    let parent_dev = fs::metadata(dir.path())?.dev();
    for e in entries {
        let path = e?.path();
        match nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        // Still a mount (stacked twice)? Then it is not safe to delete.
        if fs::symlink_metadata(&path).is_ok_and(|m| m.dev() != parent_dev) {
            return Err(io::Error::other(format!("{} is still mounted", path.display())));
        }
    }
    Ok(())
}

/// Refuses a `dir:` image (used in place, shared) for a container in a user namespace.
pub fn refuse_in_place(path: &Path) -> UsernsError {
    UsernsError::InPlaceRootfs { path: path.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_map_only_the_ids_inside() {
        let r = IdRange {
            container_id: 0,
            host_id: 65536,
            size: 65536,
        };
        assert_eq!(r.to_host(0), Some(65536));
        assert_eq!(r.to_host(65535), Some(131071));
        assert_eq!(r.to_host(65536), None);
        let shifted = IdRange {
            container_id: 10,
            host_id: 1000,
            size: 5,
        };
        assert_eq!(shifted.to_host(9), None);
        assert_eq!(shifted.to_host(14), Some(1004));
        assert_eq!(shifted.map_line(), "10 1000 5\n");
    }
}
