//! Checks before `kboot run master|worker` touches the host: root, ports, swap, kernel
//! features, cgroup controllers. Every problem is collected and named with its fix, so one
//! run shows everything to repair. `/proc`, `/sys` and `/dev` are parameters, so tests run
//! against fixture trees.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use crate::roles::{NodeConfig, Role};

/// The host as preflight sees it.
#[derive(Debug, Clone)]
pub struct Host {
    pub proc: PathBuf,
    pub sys: PathBuf,
    pub dev: PathBuf,
    pub euid: u32,
    /// cgroup path prefixes of processes kboot started (its containers, the pods its CRI
    /// runs): ports they hold are not conflicts, so a second `run` converges.
    pub own_cgroups: Vec<String>,
    /// Slices whose `kboot-*.scope` children are kboot's containers with the systemd driver
    /// (`/kboot.slice`, or `/kboot.slice/kboot-<hash>.slice` for another root).
    pub own_scopes_in: Vec<String>,
}

impl Default for Host {
    fn default() -> Self {
        Self {
            proc: "/proc".into(),
            sys: "/sys".into(),
            dev: "/dev".into(),
            euid: nix::unistd::geteuid().as_raw(),
            own_cgroups: vec!["/kboot/".into(), "/kubepods".into()],
            own_scopes_in: vec!["/kboot.slice".into()],
        }
    }
}

impl Host {
    /// The running host, owning the cgroups of the kboot installation at `paths`.
    pub fn for_paths(paths: &crate::state::Paths) -> Self {
        let mine = paths.cgroup("x");
        let prefix = mine.strip_suffix('x').unwrap_or(&mine).to_string();
        // The same containers under the systemd driver: scopes in the root's slice.
        let scope = crate::cgroups::Driver::Systemd.fs_dir(&mine);
        let slice = scope.rsplit_once('/').map_or(String::new(), |(dir, _)| dir.to_string());
        Self {
            own_cgroups: vec![prefix, "/kubepods".into()],
            own_scopes_in: vec![slice],
            ..Self::default()
        }
    }
}

/// One thing wrong with the host, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    NotRoot { euid: u32 },
    PortTaken { port: u16, owner: Option<(u32, String)> },
    SwapOn { devices: Vec<String> },
    MissingCgroupControllers { missing: Vec<String>, version: u8 },
    MissingKernelFeature { feature: String, fix: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotRoot { euid } => write!(f, "kboot must run as root to bring up a node (running as uid {euid}): use sudo"),
            Problem::PortTaken { port, owner: Some((pid, comm)) } => {
                write!(f, "port {port} is already in use by {comm} (pid {pid}): stop it first")
            }
            Problem::PortTaken { port, owner: None } => {
                write!(f, "port {port} is already in use (owner not visible; `ss -ltnp 'sport = :{port}'` names it)")
            }
            Problem::SwapOn { devices } => write!(
                f,
                "swap is on ({}): the kubelet refuses to run with swap; turn it off with `swapoff -a` (and remove it from /etc/fstab)",
                devices.join(", ")
            ),
            Problem::MissingCgroupControllers { missing, version } => write!(
                f,
                "cgroup v{version} controllers missing or disabled: {}; enable them (kernel command line `cgroup_enable=…`, or on cgroup v2 `+ctrl` in the parent's cgroup.subtree_control)",
                missing.join(", ")
            ),
            Problem::MissingKernelFeature { feature, fix } => write!(f, "{feature} is missing: {fix}"),
        }
    }
}

/// Everything preflight found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PreflightError(pub Vec<Problem>);

impl fmt::Display for PreflightError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s) on this host:", self.0.len())?;
        for p in &self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// Ports each role's components listen on.
pub fn role_ports(role: Role) -> &'static [u16] {
    match role {
        Role::Master => &[2379, 2380, 6443, 10250],
        Role::Worker => &[10250],
    }
}

/// Runs every check for a node.
pub fn check_node(host: &Host, cfg: &NodeConfig) -> Result<(), PreflightError> {
    let mut problems = Vec::new();
    if host.euid != 0 {
        problems.push(Problem::NotRoot { euid: host.euid });
    }
    problems.extend(check_ports(host, role_ports(cfg.role)));
    problems.extend(check_swap(host));
    problems.extend(check_cgroups(host));
    problems.extend(check_kernel(host, cfg.use_cni));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(PreflightError(problems))
    }
}

/// Turns on IPv4 forwarding, which every Kubernetes node needs (as k3s and k0s do, rather
/// than failing). Preflight still reports it if the write did not take.
pub fn enable_ip_forward(host: &Host) -> std::io::Result<()> {
    let path = host.proc.join("sys/net/ipv4/ip_forward");
    if fs::read_to_string(&path)?.trim() == "1" {
        return Ok(());
    }
    fs::write(&path, "1\n")
}

/// Listening sockets by local port → socket inode, from `/proc/net/tcp` and `tcp6`.
pub fn listening_sockets(proc: &Path) -> BTreeMap<u16, BTreeSet<u64>> {
    const LISTEN: &str = "0A";
    let mut out: BTreeMap<u16, BTreeSet<u64>> = BTreeMap::new();
    for file in ["net/tcp", "net/tcp6"] {
        let Ok(text) = fs::read_to_string(proc.join(file)) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() < 10 || f[3] != LISTEN {
                continue;
            }
            let port = f[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if let (Some(port), Ok(inode)) = (port, f[9].parse::<u64>()) {
                out.entry(port).or_default().insert(inode);
            }
        }
    }
    out
}

/// The process holding socket `inode`: scans `/proc/<pid>/fd`.
pub fn socket_owner(proc: &Path, inodes: &BTreeSet<u64>) -> Option<(u32, String)> {
    let wanted: BTreeSet<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in fs::read_dir(proc).ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .filter_map(|fd| fs::read_link(fd.path()).ok())
            .any(|target| wanted.contains(target.to_string_lossy().as_ref()));
        if holds {
            let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            return Some((pid, comm.trim().to_string()));
        }
    }
    None
}

/// A process kboot started itself (its own containers, or pods its CRI runs): a second
/// `run` on a running node converges instead of failing on its own ports.
fn started_by_kboot(host: &Host, pid: u32) -> bool {
    fs::read_to_string(host.proc.join(pid.to_string()).join("cgroup"))
        .map(|c| {
            c.lines().filter_map(|l| l.splitn(3, ':').nth(2)).any(|path| {
                host.own_cgroups.iter().any(|p| path.starts_with(p.as_str()))
                    || host.own_scopes_in.iter().any(|slice| is_own_scope(path, slice))
            })
        })
        .unwrap_or(false)
}

/// `path` is in (or below) a `kboot-*.scope` directly in `slice`; a nested slice there is
/// another root's.
fn is_own_scope(path: &str, slice: &str) -> bool {
    path.strip_prefix(slice)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.split('/').next())
        .is_some_and(|unit| unit.starts_with("kboot-") && unit.ends_with(".scope"))
}

pub fn check_ports(host: &Host, ports: &[u16]) -> Vec<Problem> {
    let listening = listening_sockets(&host.proc);
    ports
        .iter()
        .filter_map(|port| {
            let inodes = listening.get(port)?;
            let owner = socket_owner(&host.proc, inodes);
            if owner.as_ref().is_some_and(|(pid, _)| started_by_kboot(host, *pid)) {
                return None;
            }
            Some(Problem::PortTaken { port: *port, owner })
        })
        .collect()
}

pub fn check_swap(host: &Host) -> Vec<Problem> {
    let Ok(text) = fs::read_to_string(host.proc.join("swaps")) else {
        return Vec::new();
    };
    let devices: Vec<String> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    if devices.is_empty() {
        Vec::new()
    } else {
        vec![Problem::SwapOn { devices }]
    }
}

/// The controllers the kubelet needs: v1 `cpu cpuacct cpuset memory pids`; on a unified
/// (v2-only) host, `cpu cpuset memory pids` in the root's `cgroup.controllers`.
pub fn check_cgroups(host: &Host) -> Vec<Problem> {
    let unified = host.sys.join("fs/cgroup/cgroup.controllers");
    let (version, needed, have): (u8, &[&str], BTreeSet<String>) = match fs::read_to_string(&unified) {
        Ok(text) => (
            2,
            &["cpu", "cpuset", "memory", "pids"],
            text.split_whitespace().map(String::from).collect(),
        ),
        Err(_) => {
            let text = fs::read_to_string(host.proc.join("cgroups")).unwrap_or_default();
            let enabled = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (f.len() >= 4 && f[3] == "1").then(|| f[0].to_string())
                })
                .collect();
            (1, &["cpu", "cpuacct", "cpuset", "memory", "pids"], enabled)
        }
    };
    let missing: Vec<String> = needed
        .iter()
        .filter(|c| !have.contains(**c))
        .map(|c| c.to_string())
        .collect();
    if missing.is_empty() {
        Vec::new()
    } else {
        vec![Problem::MissingCgroupControllers { missing, version }]
    }
}

pub fn check_kernel(host: &Host, pod_network: bool) -> Vec<Problem> {
    let mut p = Vec::new();
    let missing = |feature: &str, fix: &str| Problem::MissingKernelFeature {
        feature: feature.into(),
        fix: fix.into(),
    };
    for ns in ["mnt", "pid", "net", "ipc", "uts"] {
        if !host.proc.join("self/ns").join(ns).exists() {
            p.push(missing(
                &format!("{ns} namespaces"),
                "use a kernel built with CONFIG_NAMESPACES and this namespace type",
            ));
        }
    }
    if !host.dev.join("kmsg").exists() {
        p.push(missing(
            "/dev/kmsg",
            "the kubelet's OOM watcher reads it; create it with `mknod /dev/kmsg c 1 11`",
        ));
    }
    let forward = fs::read_to_string(host.proc.join("sys/net/ipv4/ip_forward")).unwrap_or_default();
    if forward.trim() != "1" {
        p.push(missing(
            "IPv4 forwarding (net.ipv4.ip_forward=1)",
            "services and pods need it: `sysctl -w net.ipv4.ip_forward=1`",
        ));
    }
    if pod_network {
        if !host.proc.join("sys/net/bridge/bridge-nf-call-iptables").exists() {
            p.push(missing(
                "bridge netfilter (br_netfilter)",
                "pod traffic on the cni0 bridge must pass iptables: `modprobe br_netfilter`",
            ));
        }
        if !host.dev.join("net/tun").exists() {
            p.push(missing(
                "/dev/net/tun",
                "flannel's udp backend needs it: `modprobe tun`",
            ));
        }
    }
    p
}

#[cfg(test)]
mod tests;
