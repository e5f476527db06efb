//! `UpdateContainerResources` (the running container's cgroup files, v1 here and v2 through
//! [`crate::cgroups::v2`]; the bundle of a created one), and pod sandbox stats summed over the
//! pod's containers.

use std::fs;
use std::path::{Path, PathBuf};

use kboot_cri::v1::{
    ContainerStats, CpuUsage, LinuxContainerResources, LinuxPodSandboxStats, MemoryUsage, NetworkInterfaceUsage,
    NetworkUsage, PodSandboxAttributes, PodSandboxStats, ProcessUsage, UInt64Value,
};

use super::error::{CriError, Result};
use super::record::{CriContainer, Phase};
use super::sandbox::Sandbox;
use crate::cgroups::v2;
use crate::state::Paths;

/// Where the cgroup v1 hierarchies are mounted.
pub(crate) const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// One cgroup file write: controller, file, value.
type Write = (&'static str, &'static str, String);

/// The cgroup v1 writes a resource update makes. Zero (or empty) fields are left as they
/// are, as containerd and runc do: the kubelet sends the whole message.
fn v1_writes(res: &LinuxContainerResources) -> Vec<Write> {
    let mut w = Vec::new();
    // The period first: a quota is checked against the period in force.
    if res.cpu_period > 0 {
        w.push(("cpu", "cpu.cfs_period_us", res.cpu_period.to_string()));
    }
    if res.cpu_quota != 0 {
        w.push(("cpu", "cpu.cfs_quota_us", res.cpu_quota.to_string()));
    }
    if res.cpu_shares > 0 {
        w.push(("cpu", "cpu.shares", res.cpu_shares.to_string()));
    }
    if res.memory_limit_in_bytes > 0 {
        w.push(("memory", "memory.limit_in_bytes", res.memory_limit_in_bytes.to_string()));
    }
    if res.memory_swap_limit_in_bytes > 0 {
        w.push((
            "memory",
            "memory.memsw.limit_in_bytes",
            res.memory_swap_limit_in_bytes.to_string(),
        ));
    }
    if !res.cpuset_cpus.is_empty() {
        w.push(("cpuset", "cpuset.cpus", res.cpuset_cpus.clone()));
    }
    if !res.cpuset_mems.is_empty() {
        w.push(("cpuset", "cpuset.mems", res.cpuset_mems.clone()));
    }
    w
}

fn cgroup_file(root: &Path, controller: &str, cgroup: &str, file: &str) -> PathBuf {
    root.join(controller).join(cgroup.trim_start_matches('/')).join(file)
}

/// Applies `res` to the cgroup `cgroup` under `root` (cgroup v1 layout).
pub(crate) fn apply_v1(root: &Path, cgroup: &str, res: &LinuxContainerResources) -> Result<()> {
    let writes = v1_writes(res);
    if writes.is_empty() {
        return Ok(());
    }
    if !root.join("memory").is_dir() {
        return Err(CriError::FailedPrecondition(format!(
            "UpdateContainerResources needs cgroup v1 hierarchies under {}",
            root.display()
        )));
    }
    let mut pending: Vec<&Write> = writes.iter().collect();
    // memory.limit_in_bytes may not exceed memsw (raising both) and memsw may not go below
    // the limit (lowering both): a write refused for that order succeeds after the other.
    for _ in 0..2 {
        let mut refused = Vec::new();
        for w in pending {
            let path = cgroup_file(root, w.0, cgroup, w.1);
            if let Err(e) = fs::write(&path, &w.2) {
                refused.push((w, path, e));
            }
        }
        if refused.is_empty() {
            return Ok(());
        }
        if refused.len() == writes.len() || refused.iter().any(|(_, _, e)| e.raw_os_error() != Some(libc::EINVAL)) {
            let (w, path, e) = refused.remove(0);
            return Err(CriError::io("write the resource limit to", path)(std::io::Error::new(
                e.kind(),
                format!("{} = {}: {e}", w.1, w.2),
            )));
        }
        pending = refused.into_iter().map(|(w, _, _)| w).collect();
    }
    Err(CriError::FailedPrecondition(
        "the memory and swap limits contradict each other".into(),
    ))
}

/// The CRI's resources in [`v2::Limits`] terms (the CRI keeps v1's units).
fn v2_limits(res: &LinuxContainerResources) -> v2::Limits {
    let mut unified: Vec<(String, String)> = res.unified.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    unified.sort();
    v2::Limits {
        cpu_period: res.cpu_period,
        cpu_quota: res.cpu_quota,
        cpu_shares: res.cpu_shares,
        memory: res.memory_limit_in_bytes,
        memory_swap: res.memory_swap_limit_in_bytes,
        cpuset_cpus: res.cpuset_cpus.clone(),
        cpuset_mems: res.cpuset_mems.clone(),
        unified,
    }
}

/// Records `res` in a created container's bundle, so its start applies them.
fn apply_bundle(paths: &Paths, id: &str, res: &LinuxContainerResources) -> Result<()> {
    use oci_spec::runtime::{LinuxCpu, LinuxResources};
    let bundle = paths.container(id).bundle();
    let config = crate::state::config_json(&bundle);
    let mut spec = oci_spec::runtime::Spec::load(&config).map_err(|source| CriError::LoadSpec {
        path: config.clone(),
        source,
    })?;
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut resources = linux.resources().clone().unwrap_or_else(LinuxResources::default);
    let mut cpu = resources.cpu().clone().unwrap_or_else(LinuxCpu::default);
    if res.cpu_period > 0 {
        cpu.set_period(u64::try_from(res.cpu_period).ok());
    }
    if res.cpu_quota != 0 {
        cpu.set_quota(Some(res.cpu_quota));
    }
    if res.cpu_shares > 0 {
        cpu.set_shares(u64::try_from(res.cpu_shares).ok());
    }
    if !res.cpuset_cpus.is_empty() {
        cpu.set_cpus(Some(res.cpuset_cpus.clone()));
    }
    if !res.cpuset_mems.is_empty() {
        cpu.set_mems(Some(res.cpuset_mems.clone()));
    }
    let mut memory = (*resources.memory()).unwrap_or_default();
    if res.memory_limit_in_bytes > 0 {
        memory.set_limit(Some(res.memory_limit_in_bytes));
    }
    if res.memory_swap_limit_in_bytes > 0 {
        memory.set_swap(Some(res.memory_swap_limit_in_bytes));
    }
    resources.set_cpu(Some(cpu)).set_memory(Some(memory));
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
    crate::bundle::write_config(&bundle, &spec)?;
    Ok(())
}

/// `UpdateContainerResources`: a running container's cgroup, or a created one's bundle.
pub(crate) fn update(paths: &Paths, c: &CriContainer, res: &LinuxContainerResources) -> Result<()> {
    match c.phase(paths) {
        Phase::Running(_) if crate::cgroups::Layout::probe().is_unified() => {
            let dir = v2::dir(Path::new(CGROUP_ROOT), &c.record.cgroup);
            Ok(v2::apply(&dir, &v2_limits(res))?)
        }
        Phase::Running(_) => apply_v1(Path::new(CGROUP_ROOT), &c.record.cgroup, res),
        Phase::Created => apply_bundle(paths, &c.id, res),
        Phase::Exited(_) => Err(CriError::FailedPrecondition(format!(
            "container {} has exited; its resources cannot change",
            c.id
        ))),
    }
}

/// The resources after an update: set fields of `update` replace those of `current`.
pub(crate) fn merged(current: &LinuxContainerResources, update: &LinuxContainerResources) -> LinuxContainerResources {
    let mut out = current.clone();
    let pick_i = |new: i64, old: i64| if new != 0 { new } else { old };
    out.cpu_period = pick_i(update.cpu_period, current.cpu_period);
    out.cpu_quota = pick_i(update.cpu_quota, current.cpu_quota);
    out.cpu_shares = pick_i(update.cpu_shares, current.cpu_shares);
    out.memory_limit_in_bytes = pick_i(update.memory_limit_in_bytes, current.memory_limit_in_bytes);
    out.memory_swap_limit_in_bytes = pick_i(update.memory_swap_limit_in_bytes, current.memory_swap_limit_in_bytes);
    for (new, old) in [
        (&update.cpuset_cpus, &mut out.cpuset_cpus),
        (&update.cpuset_mems, &mut out.cpuset_mems),
    ] {
        if !new.is_empty() {
            old.clone_from(new);
        }
    }
    out
}

fn sum(values: impl Iterator<Item = Option<u64>>) -> Option<UInt64Value> {
    let mut total = None;
    for v in values.flatten() {
        *total.get_or_insert(0u64) += v;
    }
    total.map(|value| UInt64Value { value })
}

/// Interface counters of a network namespace as `/proc/<pid>/net/dev` shows them (loopback
/// left out), the first one as the default.
fn network_of(pid: i32, timestamp: i64) -> Option<NetworkUsage> {
    let text = fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    let mut interfaces: Vec<NetworkInterfaceUsage> = text
        .lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            let n: Vec<u64> = counters.split_whitespace().filter_map(|v| v.parse().ok()).collect();
            (name != "lo" && n.len() >= 11).then(|| NetworkInterfaceUsage {
                name: name.to_owned(),
                rx_bytes: Some(UInt64Value { value: n[0] }),
                rx_errors: Some(UInt64Value { value: n[2] }),
                tx_bytes: Some(UInt64Value { value: n[8] }),
                tx_errors: Some(UInt64Value { value: n[10] }),
            })
        })
        .collect();
    // The CNI's interface is eth0 by convention; take it as the default when present.
    interfaces.sort_by_key(|i| i.name != "eth0");
    let default_interface = interfaces.first().cloned();
    Some(NetworkUsage {
        timestamp,
        default_interface,
        interfaces: interfaces.into_iter().skip(1).collect(),
    })
}

/// The pod's stats: CPU, memory and process counts summed over its containers' cgroups,
/// each container's own stats, and the pod network's counters (not for hostNetwork pods,
/// whose interfaces are the node's).
pub(crate) fn pod_stats(paths: &Paths, pod: &Sandbox, containers: &[&CriContainer]) -> PodSandboxStats {
    let timestamp = super::now_nanos();
    let stats: Vec<ContainerStats> = containers.iter().map(|c| c.stats(paths)).collect();
    let cpu = CpuUsage {
        timestamp,
        usage_core_nano_seconds: sum(stats.iter().map(|s| {
            s.cpu
                .as_ref()
                .and_then(|c| c.usage_core_nano_seconds.as_ref().map(|v| v.value))
        })),
        ..Default::default()
    };
    let memory_field = |f: fn(&MemoryUsage) -> Option<&UInt64Value>| {
        sum(stats
            .iter()
            .map(|s| s.memory.as_ref().and_then(|m| f(m).map(|v| v.value))))
    };
    let memory = MemoryUsage {
        timestamp,
        working_set_bytes: memory_field(|m| m.working_set_bytes.as_ref()),
        usage_bytes: memory_field(|m| m.usage_bytes.as_ref()),
        ..Default::default()
    };
    let running: Vec<i32> = containers
        .iter()
        .filter_map(|c| match c.phase(paths) {
            Phase::Running(rec) => rec.init_pid,
            _ => None,
        })
        .collect();
    let unified = crate::cgroups::Layout::probe().is_unified();
    let process_count = sum(containers.iter().map(|c| {
        let file = if unified {
            v2::dir(Path::new(CGROUP_ROOT), &c.record.cgroup).join("pids.current")
        } else {
            cgroup_file(Path::new(CGROUP_ROOT), "pids", &c.record.cgroup, "pids.current")
        };
        fs::read_to_string(file).ok().and_then(|t| t.trim().parse().ok())
    }));
    let network = if pod.host_network() {
        None
    } else {
        running.first().and_then(|pid| network_of(*pid, timestamp))
    };
    PodSandboxStats {
        attributes: Some(PodSandboxAttributes {
            id: pod.id.clone(),
            metadata: pod.config.metadata.clone(),
            labels: pod.config.labels.clone(),
            annotations: pod.config.annotations.clone(),
        }),
        linux: Some(LinuxPodSandboxStats {
            cpu: Some(cpu),
            memory: Some(memory),
            network,
            process: Some(ProcessUsage {
                timestamp,
                process_count,
            }),
            containers: stats,
            ..Default::default()
        }),
        windows: None,
    }
}

impl super::Cri {
    /// `pod` with its containers, copied under the server lock for [`pod_stats`], which
    /// reads their cgroup files outside it.
    pub(super) fn pod_members(inner: &super::Inner, pod: &Sandbox) -> (Sandbox, Vec<CriContainer>) {
        let containers = inner
            .containers
            .values()
            .filter(|c| c.record.sandbox_id == pod.id)
            .cloned()
            .collect();
        (pod.clone(), containers)
    }
}

/// [`pod_stats`] of pods copied by [`super::Cri::pod_members`].
pub(crate) fn pods_stats(paths: &Paths, pods: &[(Sandbox, Vec<CriContainer>)]) -> Vec<PodSandboxStats> {
    pods.iter()
        .map(|(pod, members)| pod_stats(paths, pod, &members.iter().collect::<Vec<_>>()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake cgroup v1 tree: every file the writes touch, with a starting value.
    fn fake_tree(cg: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (ctrl, files) in [
            ("cpu", &["cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.shares"][..]),
            ("memory", &["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"][..]),
            ("cpuset", &["cpuset.cpus", "cpuset.mems"][..]),
        ] {
            let dir = root.path().join(ctrl).join(cg);
            fs::create_dir_all(&dir).unwrap();
            for f in files {
                fs::write(dir.join(f), "-1").unwrap();
            }
        }
        root
    }

    fn read(root: &Path, ctrl: &str, cg: &str, file: &str) -> String {
        fs::read_to_string(root.join(ctrl).join(cg).join(file)).unwrap()
    }

    #[test]
    fn resources_update_writes_set_fields_and_leaves_zero_ones() {
        let root = fake_tree("kubepods/pod1/kboot-c1");
        let res = LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0".into(),
            ..Default::default()
        };
        apply_v1(root.path(), "/kubepods/pod1/kboot-c1", &res).unwrap();
        let cg = "kubepods/pod1/kboot-c1";
        assert_eq!(read(root.path(), "cpu", cg, "cpu.cfs_period_us"), "100000");
        assert_eq!(read(root.path(), "cpu", cg, "cpu.cfs_quota_us"), "50000");
        assert_eq!(read(root.path(), "memory", cg, "memory.limit_in_bytes"), "67108864");
        assert_eq!(read(root.path(), "cpuset", cg, "cpuset.cpus"), "0");
        // Zero means "unchanged".
        assert_eq!(read(root.path(), "cpu", cg, "cpu.shares"), "-1");
        assert_eq!(read(root.path(), "memory", cg, "memory.memsw.limit_in_bytes"), "-1");
    }

    #[test]
    fn resources_update_of_a_missing_cgroup_names_the_file() {
        let root = fake_tree("other");
        let res = LinuxContainerResources {
            memory_limit_in_bytes: 1 << 20,
            ..Default::default()
        };
        let err = apply_v1(root.path(), "/gone", &res).unwrap_err().to_string();
        assert!(err.contains("memory/gone/memory.limit_in_bytes"), "{err}");
    }

    #[test]
    fn resources_update_without_cgroup_v1_is_a_failed_precondition() {
        let root = tempfile::tempdir().unwrap();
        let res = LinuxContainerResources {
            cpu_shares: 512,
            ..Default::default()
        };
        let err = apply_v1(root.path(), "/x", &res).unwrap_err();
        assert!(matches!(err, CriError::FailedPrecondition(_)), "{err}");
    }
}
