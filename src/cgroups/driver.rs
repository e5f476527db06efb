//! The cgroup driver: whether kboot's containers get cgroupfs paths it makes itself
//! (`/kboot/<name>`, the kubelet's `/kubepods/...`) or systemd units (libcontainer's `systemd`
//! feature: a transient scope per container, in `kboot.slice` or the kubelet's
//! `kubepods-….slice`), as runc and kubeadm choose: systemd where it is PID 1 on a unified
//! host, cgroupfs elsewhere.
//!
//! The OCI spec's `cgroupsPath` says which: absolute for cgroupfs, `slice:prefix:name` for
//! systemd (runtime-spec config-linux.md "Cgroups path"). The files of a systemd-managed
//! cgroup are still read and written under `/sys/fs/cgroup` ([`fs_path`]).

use std::fmt;
use std::path::Path;

use super::Layout;

/// The unit prefix of kboot's scopes (`kboot-<name>.scope`), as runc's is `runc` and
/// containerd's CRI's `cri-containerd`.
pub const SCOPE_PREFIX: &str = "kboot";

/// Who creates container cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Cgroupfs,
    Systemd,
}

/// A driver that cannot be used on this host, or a malformed systemd cgroups path.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{0:?} is not a cgroup driver: use cgroupfs or systemd")]
    Unknown(String),
    #[error(
        "the systemd cgroup driver needs systemd as PID 1 (no /run/systemd/system on this host): \
         use --cgroup-driver cgroupfs"
    )]
    NoSystemd,
    #[error(
        "the systemd cgroup driver needs a cgroup v2 (unified) host; this one has cgroup v1 \
         hierarchies: use --cgroup-driver cgroupfs"
    )]
    NotUnified,
    #[error("{path:?} is not a systemd cgroups path (slice:prefix:name with a slice such as kubepods.slice)")]
    BadSystemdPath { path: String },
}

/// What the choice depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCgroups {
    /// systemd is PID 1: `/run/systemd/system` exists (sd_booted(3), the test runc, kubeadm
    /// and libcontainer make).
    pub systemd: bool,
    /// cgroup v2 only at `/sys/fs/cgroup`.
    pub unified: bool,
}

impl HostCgroups {
    pub fn probe() -> Self {
        Self {
            systemd: crate::base::systemd::booted(),
            unified: Layout::probe().is_unified(),
        }
    }
}

impl Driver {
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Cgroupfs => "cgroupfs",
            Driver::Systemd => "systemd",
        }
    }

    /// The driver kboot uses when none is asked for, as runc and kubeadm choose: systemd
    /// where it is PID 1 on a unified host, cgroupfs elsewhere (no systemd, or cgroup v1
    /// hierarchies, where libcontainer's systemd manager cannot work).
    ///
    /// In the Debian 12 guest (v2 + systemd) `kboot run master` reaches Ready with either
    /// driver (docs/hosts.md); systemd is the one that keeps the host's cgroup tree systemd's.
    pub fn detect(host: HostCgroups) -> Driver {
        if host.systemd && host.unified {
            Driver::Systemd
        } else {
            Driver::Cgroupfs
        }
    }

    /// [`Self::detect`] on this host, probed once per process: the CRI falls back to it on
    /// every container it creates when no choice is recorded (a standalone `kboot cri`).
    pub fn detected() -> Driver {
        static DETECTED: std::sync::OnceLock<Driver> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| Self::detect(HostCgroups::probe()))
    }

    /// `self` if `host` can use it: systemd needs systemd as PID 1 and cgroup v2.
    pub fn check(self, host: HostCgroups) -> Result<Self, DriverError> {
        match self {
            Driver::Systemd if !host.systemd => Err(DriverError::NoSystemd),
            Driver::Systemd if !host.unified => Err(DriverError::NotUnified),
            d => Ok(d),
        }
    }

    /// The recorded choice of the installation (`file`, written by `kboot run`), else
    /// [`Self::detected`]: what the supervisor and the CRI use.
    pub fn load(file: &Path) -> Self {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(Self::detected)
    }

    /// The OCI `cgroupsPath` of one of kboot's own containers whose cgroupfs path is
    /// `cgroupfs` (`/kboot/<name>`, `/kboot-<hash>/<name>`). systemd: the parent directories
    /// become a slice, `-`-joined as systemd nests them (`kboot-<hash>.slice` lives in
    /// `kboot.slice`), the name a `kboot-<name>.scope` in it.
    pub fn container_path(self, cgroupfs: &str) -> String {
        match self {
            Driver::Cgroupfs => cgroupfs.to_owned(),
            Driver::Systemd => {
                let trimmed = cgroupfs.trim_matches('/');
                let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
                let slice = if parent.is_empty() {
                    "-.slice".to_owned()
                } else {
                    format!("{}.slice", parent.replace('/', "-"))
                };
                format!("{slice}:{SCOPE_PREFIX}:{name}")
            }
        }
    }

    /// [`fs_path`] of [`Self::container_path`]: where the container's cgroup files are.
    pub fn fs_dir(self, cgroupfs: &str) -> String {
        fs_path(&self.container_path(cgroupfs)).unwrap_or_else(|_| cgroupfs.to_owned())
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Driver {
    type Err = DriverError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cgroupfs" => Ok(Driver::Cgroupfs),
            "systemd" => Ok(Driver::Systemd),
            _ => Err(DriverError::Unknown(s.to_owned())),
        }
    }
}

/// The `cgroupsPath` of a CRI container `name` in the pod cgroup `parent` the kubelet gave
/// (`LinuxPodSandboxConfig.cgroup_parent`): the kubelet's systemd driver names a slice, and
/// the container becomes a scope in it; its cgroupfs driver names a directory
/// (`/kubepods/burstable/pod<uid>`).
///
/// The kubelet sends the slice expanded to its path
/// (`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`: its
/// `CgroupName.ToSystemd` ends in libcontainer's `ExpandSlice`), so the slice is the last
/// component, as containerd's CRI takes it (`getCgroupsPath`: `path.Base` ending in `.slice`).
/// Taken whole, that path made each container a cgroupfs directory inside systemd's slice,
/// outside any unit systemd knows of.
pub fn under_parent(parent: &str, name: &str) -> String {
    let trimmed = parent.trim_end_matches('/');
    let last = trimmed.rsplit('/').next().unwrap_or(trimmed);
    if last.ends_with(".slice") {
        format!("{last}:{SCOPE_PREFIX}:{name}")
    } else {
        format!("/{}/{SCOPE_PREFIX}-{name}", parent.trim_matches('/'))
    }
}

/// True for a systemd `cgroupsPath` (`slice:prefix:name`), false for a cgroupfs one (absolute).
pub fn is_systemd_path(cgroups_path: &str) -> bool {
    !cgroups_path.starts_with('/') && cgroups_path.contains(':')
}

/// The cgroup directory (relative to `/sys/fs/cgroup`, with a leading `/`) of an OCI
/// `cgroupsPath`: a cgroupfs path as it is; a systemd one as libcontainer's systemd manager
/// places it for the system instance (control group root `/`): the slice expanded
/// (`a-b.slice` → `/a.slice/a-b.slice`), then `prefix-name.scope`.
pub fn fs_path(cgroups_path: &str) -> Result<String, DriverError> {
    if !is_systemd_path(cgroups_path) {
        return Ok(cgroups_path.to_owned());
    }
    let bad = || DriverError::BadSystemdPath {
        path: cgroups_path.to_owned(),
    };
    let parts: Vec<&str> = cgroups_path.split(':').collect();
    let (slice, prefix, name) = match parts[..] {
        [slice, prefix, name] => (slice, prefix, name),
        [prefix, name] => ("", prefix, name),
        _ => return Err(bad()),
    };
    // libcontainer's default parent for root (`ensure_parent_unit`).
    let slice = if slice.is_empty() { "system.slice" } else { slice };
    let stem = slice
        .strip_suffix(".slice")
        .filter(|s| !s.is_empty() && !s.contains('/'))
        .ok_or_else(bad)?;
    let mut out = String::new();
    if stem != "-" {
        let mut acc = String::new();
        for part in stem.split('-') {
            if part.is_empty() {
                return Err(bad());
            }
            acc.push_str(part);
            out.push_str(&format!("/{acc}.slice"));
            acc.push('-');
        }
    }
    if name.ends_with(".slice") {
        out.push_str(&format!("/{name}"));
    } else {
        out.push_str(&format!("/{prefix}-{name}.scope"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSTEMD_V2: HostCgroups = HostCgroups {
        systemd: true,
        unified: true,
    };
    const SYSTEMD_V1: HostCgroups = HostCgroups {
        systemd: true,
        unified: false,
    };
    /// This build machine: hybrid v1, no systemd.
    const PLAIN_V1: HostCgroups = HostCgroups {
        systemd: false,
        unified: false,
    };
    const PLAIN_V2: HostCgroups = HostCgroups {
        systemd: false,
        unified: true,
    };

    #[test]
    fn systemd_is_detected_only_where_it_is_pid_1_on_a_unified_host() {
        assert_eq!(Driver::detect(SYSTEMD_V2), Driver::Systemd);
        for host in [SYSTEMD_V1, PLAIN_V1, PLAIN_V2] {
            assert_eq!(Driver::detect(host), Driver::Cgroupfs, "{host:?}");
        }
        // Whatever is detected works where it is detected.
        for host in [SYSTEMD_V2, SYSTEMD_V1, PLAIN_V1, PLAIN_V2] {
            assert!(Driver::detect(host).check(host).is_ok(), "{host:?}");
        }
    }

    #[test]
    fn asking_for_systemd_where_it_cannot_work_says_why_and_what_to_use() {
        let e = Driver::Systemd.check(PLAIN_V2).unwrap_err().to_string();
        assert!(
            e.contains("/run/systemd/system") && e.contains("--cgroup-driver cgroupfs"),
            "{e}"
        );
        let e = Driver::Systemd.check(SYSTEMD_V1).unwrap_err().to_string();
        assert!(e.contains("cgroup v2"), "{e}");
        assert_eq!(Driver::Systemd.check(SYSTEMD_V2).unwrap(), Driver::Systemd);
        assert_eq!(Driver::Cgroupfs.check(SYSTEMD_V2).unwrap(), Driver::Cgroupfs);
        let e = "docker".parse::<Driver>().unwrap_err().to_string();
        assert!(e.contains("cgroupfs or systemd"), "{e}");
    }

    #[test]
    fn kboots_own_containers_get_a_scope_in_kboot_slice() {
        assert_eq!(Driver::Cgroupfs.container_path("/kboot/etcd"), "/kboot/etcd");
        assert_eq!(Driver::Systemd.container_path("/kboot/etcd"), "kboot.slice:kboot:etcd");
        assert_eq!(
            Driver::Systemd.container_path("/kboot-0123456789ab/etcd"),
            "kboot-0123456789ab.slice:kboot:etcd"
        );
        // A root of its own nests under kboot.slice, as systemd nests dashed slices.
        assert_eq!(
            Driver::Systemd.fs_dir("/kboot-0123456789ab/etcd"),
            "/kboot.slice/kboot-0123456789ab.slice/kboot-etcd.scope"
        );
        assert_eq!(Driver::Systemd.fs_dir("/kboot/etcd"), "/kboot.slice/kboot-etcd.scope");
        assert_eq!(Driver::Cgroupfs.fs_dir("/kboot/etcd"), "/kboot/etcd");
    }

    #[test]
    fn cri_containers_follow_the_form_of_the_kubelets_pod_cgroup() {
        let slice = "kubepods-burstable-pod1234_5678.slice";
        let scope = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice/kboot-c1.scope";
        assert_eq!(under_parent(slice, "c1"), format!("{slice}:kboot:c1"));
        assert_eq!(fs_path(&under_parent(slice, "c1")).unwrap(), scope);
        // What a v1.34 kubelet with `cgroupDriver: systemd` sends: the slice expanded to its
        // path. The container is still a scope of that slice, not a directory inside it.
        let expanded = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice";
        assert_eq!(under_parent(expanded, "c1"), format!("{slice}:kboot:c1"));
        assert_eq!(fs_path(&under_parent(expanded, "c1")).unwrap(), scope);
        assert_eq!(
            under_parent("/kubepods.slice/kubepods-pod12.slice/", "c1"),
            "kubepods-pod12.slice:kboot:c1"
        );
        assert_eq!(
            under_parent("/kubepods/burstable/pod12/", "c1"),
            "/kubepods/burstable/pod12/kboot-c1"
        );
        assert_eq!(under_parent("kubepods/pod12", "c1"), "/kubepods/pod12/kboot-c1");
    }

    #[test]
    fn systemd_paths_expand_as_libcontainer_places_them() {
        // libcgroups 0.7's own cases (systemd/manager.rs tests).
        assert_eq!(
            fs_path("test-a-b.slice:docker:foo").unwrap(),
            "/test.slice/test-a.slice/test-a-b.slice/docker-foo.scope"
        );
        assert_eq!(
            fs_path("machine.slice:libpod:foo").unwrap(),
            "/machine.slice/libpod-foo.scope"
        );
        assert_eq!(fs_path(":docker:foo").unwrap(), "/system.slice/docker-foo.scope");
        assert_eq!(fs_path("-.slice:kboot:x").unwrap(), "/kboot-x.scope");
        assert_eq!(fs_path("/kubepods/pod1/c").unwrap(), "/kubepods/pod1/c");
        for bad in ["a:b:c:d", "kubepods:kboot:x", "a--b.slice:kboot:x", ".slice:kboot:x"] {
            let e = fs_path(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }
}
