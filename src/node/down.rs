//! `kboot down`: everything kboot started goes, in order: its containers, the kubelet's
//! pods, leftover mounts, a role's host state and, with `purge`, the data.

use std::time::Duration;

use super::NodeError;
use crate::bundle::LocalImages;
use crate::state::Paths;
use crate::supervisor;

/// How long a container gets after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What `down` removed.
#[derive(Debug, Default)]
pub struct DownReport {
    /// kboot's own containers, by name.
    pub containers: Vec<String>,
    /// The CRI's pod sandboxes, by ID.
    pub pods: Vec<String>,
}

/// Stops and removes everything; `removed` hears each container as it goes (so a later
/// step's failure does not hide what was already removed).
pub async fn down(paths: &Paths, purge: bool, removed: &mut (dyn FnMut(&str) + Send)) -> Result<DownReport, NodeError> {
    let images = LocalImages { paths: paths.clone() };
    let containers = supervisor::down(paths, &images, STOP_TIMEOUT)?;
    for name in &containers {
        removed(name);
    }
    // The kubelet's pods (CRI sandboxes and containers) go with the node.
    let pods = crate::cri::remove_all(paths.clone())
        .await
        .map_err(NodeError::RemovePods)?;
    if !pods.is_empty() {
        tracing::info!(count = pods.len(), "removed CRI pod sandboxes");
    }
    // Whatever is still mounted under kboot's container and netns directories (views of
    // pods whose records a crash lost) goes too: `down` leaves nothing mounted, and
    // `purge` can then delete the tree.
    unmount_leftovers(paths)?;
    role_cleanup(paths, purge)?;
    if purge {
        supervisor::purge(paths)?;
    }
    Ok(DownReport { containers, pods })
}

/// Detaches every mount at or below the containers and netns directories, deepest first.
fn unmount_leftovers(paths: &Paths) -> Result<(), NodeError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(NodeError::ReadMountinfo)?;
    for dir in [paths.containers(), paths.netns_dir()] {
        for m in crate::roles::cleanup::mounts_under(&info, &dir) {
            match nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) => tracing::info!(path = %m.display(), "unmounted a leftover mount"),
                // Gone already, with its parent or its propagated twin.
                Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
                Err(source) => return Err(NodeError::Unmount { path: m, source }),
            }
        }
    }
    Ok(())
}

/// A role's host state (kubelet mounts, CNI links, kboot's iptables chains); nothing when
/// no role ran on this root, so `down` after `run -f` never touches the host.
fn role_cleanup(paths: &Paths, purge: bool) -> Result<(), NodeError> {
    let Some(report) = crate::roles::down_role_if_any(paths, purge) else {
        return Ok(());
    };
    for err in &report.errors {
        tracing::warn!(error = %err, "role cleanup");
    }
    if report.errors.is_empty() {
        return Ok(());
    }
    Err(NodeError::RoleCleanup { errors: report.errors })
}
