//! The shared rootfs cache: one read-only flattened rootfs per chain ID, and each
//! container's private writable view of it.
//!
//! Completeness without a marker file: a rootfs is unpacked into
//! `rootfs/.tmp-<chain>-<pid>-<n>/`, flushed with `syncfs`, then renamed to
//! `rootfs/<chain>/`. A directory under its chain ID name is therefore always complete;
//! a crash leaves only a `.tmp-*` directory, which `ensure` never returns and `prune`
//! removes. Two processes unpacking the same image race harmlessly: the second
//! rename fails (the name exists) and that process uses the winner's copy.
//!
//! Writable view: overlayfs (lower = the cached rootfs, upper/work in the container
//! directory) costs one mount regardless of image size; a copy costs time and space
//! proportional to the image (see bench/README.md, "Unpack"). Overlay is used whenever
//! the mount works; the copy is the fallback (no overlay module, or no privilege).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::{chain_id, io_err, unpack_verified, Layer, Result, UnpackError};
use crate::state::{ContainerDir, Paths};

const TMP_PREFIX: &str = ".tmp-";

/// How containers get a writable rootfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewMode {
    /// overlayfs when it mounts, else a copy.
    Auto,
    /// Always a full copy (`cp -a`).
    Copy,
}

#[derive(Debug, Clone)]
pub struct RootfsCache {
    dir: PathBuf,
    mode: ViewMode,
}

impl RootfsCache {
    pub fn new(paths: &Paths) -> Self {
        Self {
            dir: paths.rootfs_cache(),
            mode: ViewMode::Auto,
        }
    }

    /// Chooses how `container_rootfs` makes writable views (default `Auto`).
    pub fn with_view_mode(mut self, mode: ViewMode) -> Self {
        self.mode = mode;
        self
    }

    /// The read-only shared rootfs for an image, keyed by chain ID (computed from the
    /// config's diff_ids), unpacked once under `paths.rootfs(chain_id)` and reused.
    /// Each layer's uncompressed sha256 is checked against its diff_id.
    pub fn ensure(&self, layers: &[Layer], diff_ids: &[String]) -> Result<PathBuf> {
        if layers.len() != diff_ids.len() {
            return Err(UnpackError::LayerCount {
                layers: layers.len(),
                diff_ids: diff_ids.len(),
            });
        }
        let chain = chain_id(diff_ids).unwrap_or_else(|| EMPTY_CHAIN.to_string());
        let hex = chain.strip_prefix("sha256:").unwrap_or(&chain).to_string();
        let final_dir = self.dir.join(&hex);
        if final_dir.is_dir() {
            tracing::debug!(chain = %chain, "rootfs cache hit");
            return Ok(final_dir);
        }
        fs::create_dir_all(&self.dir).map_err(io_err("create", &self.dir))?;
        let tmp = self
            .dir
            .join(format!("{TMP_PREFIX}{hex}-{}-{}", std::process::id(), next()));
        let result = unpack_verified(layers, Some(diff_ids), &tmp).and_then(|()| {
            let f = fs::File::open(&tmp).map_err(io_err("open", &tmp))?;
            nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)).map_err(|e| io_err("syncfs", &tmp)(e.into()))
        });
        if let Err(e) = result {
            let _ = remove_tree(&tmp);
            return Err(e);
        }
        match fs::rename(&tmp, &final_dir) {
            Ok(()) => {
                tracing::info!(chain = %chain, path = %final_dir.display(), "rootfs unpacked");
                Ok(final_dir)
            }
            // Another process finished the same rootfs first.
            Err(e) if final_dir.is_dir() => {
                tracing::debug!(chain = %chain, error = %e, "rootfs unpacked concurrently; using the other copy");
                let _ = remove_tree(&tmp);
                Ok(final_dir)
            }
            Err(e) => {
                let _ = remove_tree(&tmp);
                Err(io_err("rename unpacked rootfs to", &final_dir)(e))
            }
        }
    }

    /// A container's private writable view of a cached rootfs under `container_dir`
    /// (overlayfs upper/work/merged, or a copy if overlay is unavailable). Returns the
    /// rootfs path to put in config.json. Calling it again returns the same view.
    pub fn container_rootfs(&self, lower: &Path, container_dir: &ContainerDir) -> Result<PathBuf> {
        let merged = container_dir.rootfs();
        fs::create_dir_all(&merged).map_err(io_err("create", &merged))?;
        if is_mount_point(&merged, container_dir.path())? || container_dir.rootfs_copied().exists() {
            return Ok(merged);
        }
        if self.mode == ViewMode::Auto {
            match mount_overlay(lower, container_dir, &merged) {
                Ok(()) => return Ok(merged),
                Err(e) => tracing::warn!(error = %e, "overlay mount failed; copying the rootfs instead"),
            }
        }
        copy_tree(lower, &merged)?;
        touch(&container_dir.rootfs_copied())?;
        Ok(merged)
    }

    /// Unmounts a container's overlay view. Idempotent; a copied view is left for the
    /// caller to delete with the container directory.
    pub fn release_container_rootfs(&self, container_dir: &ContainerDir) -> Result<()> {
        let merged = container_dir.rootfs();
        match umount2(&merged, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(io_err("unmount", &merged)(e.into())),
        }
    }

    /// Removes every cached rootfs whose chain ID is not in `keep_chain_ids`
    /// (`sha256:<hex>` or `<hex>`) and leftovers of interrupted unpacks. Chain IDs of
    /// images in use by containers must be in `keep_chain_ids`. Returns bytes freed.
    pub fn prune(&self, keep_chain_ids: &[String]) -> Result<u64> {
        let keep: std::collections::HashSet<&str> = keep_chain_ids
            .iter()
            .map(|c| c.strip_prefix("sha256:").unwrap_or(c))
            .collect();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err("read", &self.dir)(e)),
        };
        let mut freed = 0;
        for entry in entries {
            let entry = entry.map_err(io_err("read", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let remove = match name.strip_prefix(TMP_PREFIX) {
                Some(rest) => !unpack_in_progress(rest),
                None => !keep.contains(name.as_str()),
            };
            if remove {
                let path = entry.path();
                freed += tree_size(&path);
                remove_tree(&path)?;
                tracing::info!(path = %path.display(), "pruned rootfs");
            }
        }
        Ok(freed)
    }
}

/// Chain ID used for an image without layers.
const EMPTY_CHAIN: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn next() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// `.tmp-<hex>-<pid>-<n>`: in progress while that process lives.
fn unpack_in_progress(rest: &str) -> bool {
    let mut parts = rest.rsplit('-');
    let _n = parts.next();
    let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
    pid.is_some_and(|p| p != std::process::id() && Path::new(&format!("/proc/{p}")).exists())
}

fn touch(path: &Path) -> Result<()> {
    fs::write(path, b"").map_err(io_err("write", path))
}

fn is_mount_point(path: &Path, parent: &Path) -> Result<bool> {
    let a = fs::metadata(path).map_err(io_err("stat", path))?;
    let b = fs::metadata(parent).map_err(io_err("stat", parent))?;
    Ok(a.dev() != b.dev())
}

fn mount_overlay(lower: &Path, container_dir: &ContainerDir, merged: &Path) -> Result<()> {
    let upper = container_dir.rootfs_upper();
    let work = container_dir.rootfs_work();
    for d in [&upper, &work] {
        fs::create_dir_all(d).map_err(io_err("create", d))?;
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    // overlayfs splits its options on ',' and lowerdir on ':'.
    if [lower, &upper, &work]
        .iter()
        .any(|p| p.to_string_lossy().contains([',', ':']))
    {
        return Err(UnpackError::Mount {
            path: merged.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains ',' or ':'"),
        });
    }
    mount(
        Some("overlay"),
        merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| UnpackError::Mount {
        path: merged.to_path_buf(),
        source: e.into(),
    })
}

/// `cp -a` keeps owners, modes, hardlinks, devices, xattrs and times.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let out = Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .output()
        .map_err(|e| UnpackError::Copy {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            reason: format!("cannot run cp: {e}"),
        })?;
    if !out.status.success() {
        return Err(UnpackError::Copy {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| tree_size(&e.path())).sum())
        .unwrap_or(0)
}

/// `remove_dir_all`, first making directories writable (an image may ship 0555 dirs,
/// which a non-root caller could not empty).
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    fn open_up(path: &Path) {
        if let Ok(meta) = fs::symlink_metadata(path) {
            if meta.is_dir() {
                let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
                if let Ok(rd) = fs::read_dir(path) {
                    for e in rd.flatten() {
                        open_up(&e.path());
                    }
                }
            }
        }
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            open_up(path);
            fs::remove_dir_all(path).map_err(io_err("remove", path))
        }
    }
}
