//! Host-side preparation of volumes: missing sources are created (as Docker
//! does) and `:shared` sources are made shared mounts, so mounts made in the
//! container under them reach the host (the kubelet's `/var/lib/kubelet`).

use std::fs;
use std::path::Path;

use nix::mount::{mount, MsFlags};

use super::{BundleError, Result};
use crate::base::mountinfo;
use oci_spec::runtime::Spec;

/// Creates missing bind sources and makes `rshared` ones shared mounts.
/// Needs root; called by the shim just before the container is created.
pub fn prepare_volumes(spec: &Spec) -> Result<()> {
    for m in spec.mounts().iter().flatten() {
        let (Some(source), Some(opts)) = (m.source(), m.options()) else {
            continue;
        };
        // /sys, and the container's own cgroups (libcontainer creates those: made here they
        // would exist before the v1 cpuset controller initialises them).
        if m.typ().as_deref() != Some("bind") || source == Path::new("/sys") || source.starts_with(crate::cgroups::ROOT)
        {
            continue;
        }
        if !source.exists() {
            fs::create_dir_all(source).map_err(|e| BundleError::Volume {
                path: source.clone(),
                step: "create the missing source directory",
                source: e,
            })?;
        }
        if opts.iter().any(|o| o == "rshared" || o == "shared") {
            ensure_shared(source)?;
        }
    }
    Ok(())
}

/// Makes `path` a shared mount point: bind it onto itself first when it is not
/// a mount point (all mounts on these hosts are private, `/` included).
pub fn ensure_shared(path: &Path) -> Result<()> {
    let verr = |step, source| BundleError::Volume {
        path: path.to_owned(),
        step,
        source,
    };
    let path = fs::canonicalize(path).map_err(|e| verr("resolve the path", e))?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| verr("read /proc/self/mountinfo", e))?;
    match mount_state(&mountinfo, &path) {
        MountState::Shared => return Ok(()),
        MountState::NotMounted => {
            mount(
                Some(&path),
                &path,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| verr("bind-mount the source onto itself", e.into()))?;
        }
        MountState::Private => {}
    }
    mount(None::<&str>, &path, None::<&str>, MsFlags::MS_SHARED, None::<&str>)
        .map_err(|e| verr("make the source a shared mount", e.into()))
}

#[derive(Debug, PartialEq, Eq)]
enum MountState {
    NotMounted,
    Private,
    Shared,
}

/// The propagation of the topmost mount at exactly `path` in a mountinfo text.
fn mount_state(mountinfo: &str, path: &Path) -> MountState {
    let top = mountinfo::parse(mountinfo).into_iter().rfind(|m| m.mount_point == path);
    match top {
        None => MountState::NotMounted,
        Some(m) if mountinfo::is_shared(&m) => MountState::Shared,
        Some(_) => MountState::Private,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 253:0 / / rw,relatime - ext4 /dev/vda rw
90 27 253:0 /var/lib/k /var/lib/k rw,relatime shared:5 - ext4 /dev/vda rw
91 27 253:0 /a\\040b /a\\040b rw,relatime - ext4 /dev/vda rw
";

    #[test]
    fn mount_state_reads_propagation_of_the_exact_mount_point() {
        assert_eq!(mount_state(INFO, Path::new("/var/lib/k")), MountState::Shared);
        assert_eq!(mount_state(INFO, Path::new("/a b")), MountState::Private);
        assert_eq!(mount_state(INFO, Path::new("/var/lib")), MountState::NotMounted);
    }
}
