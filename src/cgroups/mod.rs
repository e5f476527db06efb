//! The host's cgroup layout, and what a container sees of its own cgroup.
//!
//! kboot's containers get their cgroups from libcontainer (cgroupfs paths under
//! `/sys/fs/cgroup`, or systemd scopes: [`driver`]); this module answers the layout questions around them: v1 (legacy or
//! hybrid, one hierarchy per controller) or v2 (unified), which hierarchies a container's
//! `/sys/fs/cgroup` is made of, and (in [`v2`]) usage and limits on a unified host.

pub mod driver;
pub mod v2;

pub use driver::{Driver, DriverError, HostCgroups};

use std::fs;
use std::path::Path;

use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};

/// Where the host's cgroup filesystems are mounted.
pub const ROOT: &str = "/sys/fs/cgroup";

/// A single-value cgroup file (`memory.current`, v1 `memory.usage_in_bytes`), if it is there.
pub fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed cgroup file (`key value` lines: v2 `cpu.stat`,
/// `memory.stat`, `memory.events`; v1 `memory.stat`, `memory.oom_control`), if it is there.
pub fn keyed(path: &Path, key: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The host's cgroup layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v2 only: one cgroup2 filesystem at `/sys/fs/cgroup` (every current
    /// distribution with systemd).
    Unified,
    /// cgroup v1 hierarchies under `/sys/fs/cgroup` (legacy, or hybrid with a cgroup2 beside
    /// them): the directory names of those with controllers libcontainer manages, e.g.
    /// `memory`, `cpu,cpuacct`. Named hierarchies (`name=systemd`) and the hybrid cgroup2
    /// are left out: no container cgroup is made there.
    V1 { hierarchies: Vec<String> },
}

/// Controllers libcontainer's v1 manager creates container cgroups in (libcgroups 0.7's
/// `v1::CONTROLLERS`: every container gets a directory in each of these that is mounted;
/// not in `rdma` or `misc`, so a bind of those would have no source).
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "net_cls",
    "net_prio",
    "perf_event",
    "hugetlb",
];

impl Layout {
    /// The running host's layout: `/sys/fs/cgroup` is a cgroup2 filesystem on unified hosts
    /// (the test libcontainer's `get_cgroup_setup` makes too), else the v1 hierarchies from
    /// `/proc/self/mountinfo`.
    pub fn probe() -> Self {
        if statfs(ROOT).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC) {
            return Self::Unified;
        }
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Self::V1 {
            hierarchies: v1_hierarchies(&mountinfo, Path::new(ROOT)),
        }
    }

    pub fn is_unified(&self) -> bool {
        matches!(self, Self::Unified)
    }
}

/// The directory names under `root` of the v1 hierarchies (mountinfo filesystem type
/// `cgroup`) holding at least one controller of [`V1_CONTROLLERS`].
fn v1_hierarchies(mountinfo: &str, root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for mi in mountinfo
        .lines()
        .filter_map(|l| procfs::process::MountInfo::from_line(l).ok())
    {
        if mi.fs_type != "cgroup" || mi.mount_point.parent() != Some(root) {
            continue;
        }
        let managed = mi.super_options.keys().any(|o| V1_CONTROLLERS.contains(&o.as_str()));
        if let (true, Some(name)) = (managed, mi.mount_point.file_name().and_then(|n| n.to_str())) {
            out.push(name.to_owned());
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's hybrid layout (v1 controllers, name=systemd, cgroup2 holding hugetlb)
    /// and a comounted `cpu,cpuacct` as most distributions mount it.
    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
35 30 0:31 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,pids
36 25 0:31 /x /elsewhere/pids rw,relatime shared:15 - cgroup cgroup rw,pids
37 30 0:32 / /sys/fs/cgroup/rdma rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,rdma
";

    #[test]
    fn v1_hierarchies_are_the_controller_mounts_under_the_root() {
        assert_eq!(
            v1_hierarchies(HYBRID, Path::new(ROOT)),
            ["cpu,cpuacct", "memory", "pids"]
        );
    }
}
