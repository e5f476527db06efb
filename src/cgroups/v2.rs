//! Usage and limits of a container's cgroup on a unified (cgroup v2) host: what the CRI's
//! stats and `UpdateContainerResources` read and write there, in the files runc and
//! containerd use (`cpu.stat`, `memory.current`, `memory.stat`, `pids.current`; `cpu.max`,
//! `cpu.weight`, `memory.max`, `memory.swap.max`, `cpuset.*`, and the CRI's `unified` map).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{keyed, read_u64};

/// A failed cgroup v2 read or write, naming the file and the value.
#[derive(Debug, thiserror::Error)]
pub enum V2Error {
    #[error("write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("{key:?} is not a cgroup v2 file name (the CRI's unified map names files of the container's own cgroup)")]
    BadKey { key: String },
    #[error("the swap limit {memsw} (memory + swap) is below the memory limit {memory}")]
    SwapBelowMemory { memsw: i64, memory: i64 },
}

/// The directory of cgroup `cgroup` (an absolute cgroupfs path) under `root`.
pub fn dir(root: &Path, cgroup: &str) -> PathBuf {
    root.join(cgroup.trim_start_matches('/'))
}

/// A cgroup's usage, each `None` when its file is missing (controller not enabled, or the
/// cgroup is gone).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// `cpu.stat` `usage_usec`, in nanoseconds.
    pub cpu_ns: Option<u64>,
    /// `memory.current`.
    pub memory_bytes: Option<u64>,
    /// `memory.current` less `memory.stat` `inactive_file`, as the kubelet and cAdvisor count it.
    pub working_set_bytes: Option<u64>,
    /// `pids.current`.
    pub pids: Option<u64>,
}

/// Reads the usage of the cgroup at `dir`.
pub fn usage(dir: &Path) -> Usage {
    let memory = read_u64(&dir.join("memory.current"));
    let inactive = keyed(&dir.join("memory.stat"), "inactive_file").unwrap_or(0);
    Usage {
        cpu_ns: keyed(&dir.join("cpu.stat"), "usage_usec").map(|us| us.saturating_mul(1000)),
        memory_bytes: memory,
        working_set_bytes: memory.map(|m| m.saturating_sub(inactive)),
        pids: read_u64(&dir.join("pids.current")),
    }
}

/// A resource update in the CRI's (cgroup v1) terms; zero or empty fields stay as they are.
#[derive(Debug, Default, Clone)]
pub struct Limits {
    pub cpu_period: i64,
    /// Microseconds per period; negative is unlimited.
    pub cpu_quota: i64,
    pub cpu_shares: i64,
    pub memory: i64,
    /// Memory plus swap (v1's `memsw`); -1 is unlimited swap.
    pub memory_swap: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    /// The CRI's `unified` map: cgroup v2 file name → value, written as given.
    pub unified: Vec<(String, String)>,
}

/// runc's and libcgroups' conversion of v1 `cpu.shares` (2..262144) to v2 `cpu.weight`
/// (1..10000).
pub fn weight_of_shares(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// The file writes (file name, value) `limits` makes, in order, given the cgroup's current
/// `cpu.max` (`"max 100000"` when unset).
pub fn writes(limits: &Limits, current_cpu_max: &str) -> Result<Vec<(String, String)>, V2Error> {
    let mut w: Vec<(String, String)> = Vec::new();
    if limits.cpu_quota != 0 || limits.cpu_period > 0 {
        let mut cur = current_cpu_max.split_whitespace();
        let (cur_quota, cur_period) = (cur.next().unwrap_or("max"), cur.next().unwrap_or("100000"));
        let quota = match limits.cpu_quota {
            0 => cur_quota.to_owned(),
            q if q < 0 => "max".to_owned(),
            q => q.to_string(),
        };
        let period = if limits.cpu_period > 0 {
            limits.cpu_period.to_string()
        } else {
            cur_period.to_owned()
        };
        w.push(("cpu.max".into(), format!("{quota} {period}")));
    }
    if let Ok(shares @ 1..) = u64::try_from(limits.cpu_shares) {
        w.push(("cpu.weight".into(), weight_of_shares(shares).to_string()));
    }
    if limits.memory > 0 {
        w.push(("memory.max".into(), limits.memory.to_string()));
    }
    // v1's memsw counts memory and swap together; v2's swap.max is the swap alone (runc's
    // ConvertMemorySwapToCgroupV2Value).
    match limits.memory_swap {
        -1 => w.push(("memory.swap.max".into(), "max".into())),
        memsw if memsw > 0 && limits.memory > 0 => {
            if memsw < limits.memory {
                return Err(V2Error::SwapBelowMemory {
                    memsw,
                    memory: limits.memory,
                });
            }
            w.push(("memory.swap.max".into(), (memsw - limits.memory).to_string()));
        }
        _ => {}
    }
    if !limits.cpuset_cpus.is_empty() {
        w.push(("cpuset.cpus".into(), limits.cpuset_cpus.clone()));
    }
    if !limits.cpuset_mems.is_empty() {
        w.push(("cpuset.mems".into(), limits.cpuset_mems.clone()));
    }
    for (key, value) in &limits.unified {
        // A file of this cgroup, nothing else: no path separators, no `cgroup.*` core files.
        let ok = !key.is_empty()
            && !key.contains('/')
            && key != "."
            && key != ".."
            && key.contains('.')
            && !key.starts_with("cgroup.");
        if !ok {
            return Err(V2Error::BadKey { key: key.clone() });
        }
        w.push((key.clone(), value.clone()));
    }
    Ok(w)
}

/// Applies `limits` to the cgroup at `dir`.
pub fn apply(dir: &Path, limits: &Limits) -> Result<(), V2Error> {
    let cpu_max = fs::read_to_string(dir.join("cpu.max")).unwrap_or_default();
    for (file, value) in writes(limits, &cpu_max)? {
        let path = dir.join(&file);
        fs::write(&path, &value).map_err(|source| V2Error::Write { path, value, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_map_to_weights_as_runc_maps_them() {
        // The kubelet's 1024 shares (one CPU) and the bounds.
        assert_eq!(weight_of_shares(1024), 39);
        assert_eq!(weight_of_shares(2), 1);
        assert_eq!(weight_of_shares(262_144), 10_000);
    }

    #[test]
    fn a_quota_keeps_the_current_period_and_memsw_becomes_swap_alone() {
        let limits = Limits {
            cpu_quota: 25_000,
            memory: 64 << 20,
            memory_swap: 96 << 20,
            ..Default::default()
        };
        assert_eq!(
            writes(&limits, "max 50000\n").unwrap(),
            [
                ("cpu.max".into(), "25000 50000".into()),
                ("memory.max".into(), (64u64 << 20).to_string()),
                ("memory.swap.max".into(), (32u64 << 20).to_string()),
            ]
        );
        let unlimited = Limits {
            cpu_quota: -1,
            cpu_period: 100_000,
            ..Default::default()
        };
        assert_eq!(
            writes(&unlimited, "25000 50000").unwrap(),
            [("cpu.max".into(), "max 100000".into())]
        );
    }

    #[test]
    fn swap_below_memory_and_paths_in_the_unified_map_are_refused() {
        let bad_swap = Limits {
            memory: 100,
            memory_swap: 50,
            ..Default::default()
        };
        assert!(matches!(writes(&bad_swap, ""), Err(V2Error::SwapBelowMemory { .. })));
        for key in ["../memory.max", "cgroup.procs", "x/memory.max", ""] {
            let limits = Limits {
                unified: vec![(key.into(), "1".into())],
                ..Default::default()
            };
            assert!(matches!(writes(&limits, ""), Err(V2Error::BadKey { .. })), "{key}");
        }
    }

    #[test]
    fn usage_reads_cpu_memory_working_set_and_pids() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
        fs::write(d.path().join("memory.current"), "1000000\n").unwrap();
        fs::write(d.path().join("memory.stat"), "anon 5\ninactive_file 250000\n").unwrap();
        fs::write(d.path().join("pids.current"), "3\n").unwrap();
        assert_eq!(
            usage(d.path()),
            Usage {
                cpu_ns: Some(1_500_000),
                memory_bytes: Some(1_000_000),
                working_set_bytes: Some(750_000),
                pids: Some(3),
            }
        );
        assert_eq!(usage(&d.path().join("gone")), Usage::default());
    }
}
