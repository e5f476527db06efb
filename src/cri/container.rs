//! CRI containers on kboot's shims. A container is a directory `Paths::container(<id>)`
//! holding the kubelet's config as given (protobuf), kboot's record (JSON), the OCI bundle
//! and a link to the CRI-format log, which the shim writes at `log_path` in the pod's log
//! directory.
//! Create writes the bundle; Start spawns `kboot shim` (own session: containers outlive
//! the server); the shim's records say whether it runs and how it ended.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kboot_cri::v1::{
    Container, ContainerConfig, ContainerFilter, ContainerState, ContainerStatus, ImageSpec, MountPropagation,
    NamespaceMode,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prost::Message;
use serde::{Deserialize, Serialize};

use super::error::{CriError, Result};
use super::sandbox::{labels_match, write_atomic, Sandbox};
use crate::base::record::read_json;
use crate::bundle::images::{ImageSource, LocalImages};
use crate::bundle::{build_spec, security, write_config, BundleRequest, Host, SeccompProfile, Security};
use crate::inroot::{passwd, RootFs};
use crate::plan::{Device, Propagation, Service, Volume};
use crate::shim::record::{ExitRecord, ShimRecord};
use crate::state::{ContainerDir, Paths};

/// kboot's side of a CRI container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ContainerRecord {
    pub sandbox_id: String,
    /// The store reference the image resolved to, and its ID (config digest).
    pub image: String,
    pub image_id: String,
    pub created_at: i64,
    /// `log_directory/log_path`, when the kubelet asked for a log.
    pub log_path: Option<PathBuf>,
    /// The container's cgroup path (cgroupfs), for stats.
    #[serde(default)]
    pub cgroup: String,
    /// The identity its first process runs as (reported in `ContainerStatus.user`).
    #[serde(default)]
    pub user: Option<RunUser>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RunUser {
    pub uid: u32,
    pub gid: u32,
    /// The primary gid first, then the supplementary groups.
    pub groups: Vec<u32>,
}

#[derive(Debug, Clone)]
pub(crate) struct CriContainer {
    pub id: String,
    pub config: ContainerConfig,
    pub record: ContainerRecord,
}

/// What the shim's records say.
#[derive(Debug, Clone)]
pub(crate) enum Phase {
    Created,
    Running(ShimRecord),
    Exited(ExitRecord),
}

fn ms_to_ns(ms: Option<u64>) -> i64 {
    ms.and_then(|m| i64::try_from(m).ok())
        .map_or(0, |m| m.saturating_mul(1_000_000))
}

impl CriContainer {
    pub fn dir(&self, paths: &Paths) -> ContainerDir {
        paths.container(&self.id)
    }

    pub fn phase(&self, paths: &Paths) -> Phase {
        if let Some(exit) = read_json::<ExitRecord>(&paths.container(&self.id).exit()) {
            return Phase::Exited(exit);
        }
        match read_json::<ShimRecord>(&paths.shim_record(&self.id)) {
            Some(rec) if rec.is_alive() => Phase::Running(rec),
            // A shim that died without an exit record (SIGKILL): the container is gone too.
            Some(rec) => Phase::Exited(ExitRecord {
                exit_code: 255,
                error: Some("the shim died without recording the exit".into()),
                started_at_ms: rec.started_at_ms,
                ..Default::default()
            }),
            None => Phase::Created,
        }
    }

    fn state(phase: &Phase) -> ContainerState {
        match phase {
            Phase::Created => ContainerState::ContainerCreated,
            Phase::Running(_) => ContainerState::ContainerRunning,
            Phase::Exited(_) => ContainerState::ContainerExited,
        }
    }

    fn image_spec(&self) -> Option<ImageSpec> {
        Some(ImageSpec {
            image: self.record.image.clone(),
            ..Default::default()
        })
    }

    pub fn summary(&self, paths: &Paths) -> Container {
        Container {
            id: self.id.clone(),
            pod_sandbox_id: self.record.sandbox_id.clone(),
            metadata: self.config.metadata.clone(),
            image: self.image_spec(),
            image_ref: self.record.image_id.clone(),
            state: Self::state(&self.phase(paths)) as i32,
            created_at: self.record.created_at,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            image_id: self.record.image_id.clone(),
        }
    }

    pub fn status(&self, paths: &Paths) -> ContainerStatus {
        let phase = self.phase(paths);
        let mut st = ContainerStatus {
            id: self.id.clone(),
            metadata: self.config.metadata.clone(),
            state: Self::state(&phase) as i32,
            created_at: self.record.created_at,
            image: self.image_spec(),
            image_ref: self.record.image_id.clone(),
            image_id: self.record.image_id.clone(),
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            mounts: self.config.mounts.clone(),
            log_path: self
                .record
                .log_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            user: self.record.user.as_ref().map(|u| kboot_cri::v1::ContainerUser {
                linux: Some(kboot_cri::v1::LinuxContainerUser {
                    uid: i64::from(u.uid),
                    gid: i64::from(u.gid),
                    supplemental_groups: u.groups.iter().map(|g| i64::from(*g)).collect(),
                }),
            }),
            ..Default::default()
        };
        match phase {
            Phase::Created => {}
            Phase::Running(rec) => st.started_at = ms_to_ns(rec.started_at_ms),
            Phase::Exited(exit) => {
                st.started_at = ms_to_ns(exit.started_at_ms);
                st.finished_at = ms_to_ns(Some(exit.finished_at_ms));
                st.exit_code = exit.exit_code;
                st.reason = if exit.oom_killed {
                    "OOMKilled"
                } else if exit.error.is_some() {
                    "StartError"
                } else if exit.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .into();
                st.message = exit.error.unwrap_or_default();
            }
        }
        st
    }

    /// CPU and memory from the container's cgroup files, v1 or v2 (zero before it starts).
    pub fn stats(&self, paths: &Paths) -> kboot_cri::v1::ContainerStats {
        use kboot_cri::v1::{
            ContainerAttributes, CpuUsage, FilesystemIdentifier, FilesystemUsage, MemoryUsage, UInt64Value,
        };
        let root = Path::new(crate::cgroups::ROOT);
        let (cpu, usage, working_set) = if crate::cgroups::Layout::probe().is_unified() {
            let u = crate::cgroups::v2::usage(&crate::cgroups::v2::dir(root, &self.record.cgroup));
            (
                u.cpu_ns.unwrap_or(0),
                u.memory_bytes.unwrap_or(0),
                u.working_set_bytes.unwrap_or(0),
            )
        } else {
            let v1 = |ctrl: &str| root.join(ctrl).join(self.record.cgroup.trim_start_matches('/'));
            let read = |ctrl: &str, file: &str| -> u64 {
                fs::read_to_string(v1(ctrl).join(file))
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(0)
            };
            let inactive_file = fs::read_to_string(v1("memory").join("memory.stat"))
                .ok()
                .and_then(|t| {
                    t.lines().find_map(|l| {
                        l.strip_prefix("total_inactive_file ")
                            .and_then(|v| v.trim().parse::<u64>().ok())
                    })
                })
                .unwrap_or(0);
            let usage = read("memory", "memory.usage_in_bytes");
            (
                read("cpuacct", "cpuacct.usage"),
                usage,
                usage.saturating_sub(inactive_file),
            )
        };
        let now = super::now_nanos();
        kboot_cri::v1::ContainerStats {
            attributes: Some(ContainerAttributes {
                id: self.id.clone(),
                metadata: self.config.metadata.clone(),
                labels: self.config.labels.clone(),
                annotations: self.config.annotations.clone(),
            }),
            cpu: Some(CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: Some(UInt64Value { value: cpu }),
                ..Default::default()
            }),
            memory: Some(MemoryUsage {
                timestamp: now,
                working_set_bytes: Some(UInt64Value { value: working_set }),
                usage_bytes: Some(UInt64Value { value: usage }),
                ..Default::default()
            }),
            writable_layer: Some(FilesystemUsage {
                timestamp: now,
                fs_id: Some(FilesystemIdentifier {
                    mountpoint: self.dir(paths).path().display().to_string(),
                }),
                used_bytes: Some(UInt64Value { value: 0 }),
                inodes_used: Some(UInt64Value { value: 0 }),
            }),
            ..Default::default()
        }
    }

    pub fn matches(&self, paths: &Paths, f: &ContainerFilter) -> bool {
        (f.id.is_empty() || self.id.starts_with(&f.id))
            && (f.pod_sandbox_id.is_empty() || self.record.sandbox_id.starts_with(&f.pod_sandbox_id))
            && f.state
                .as_ref()
                .is_none_or(|s| s.state == Self::state(&self.phase(paths)) as i32)
            && labels_match(&self.config.labels, &f.label_selector)
    }

    pub fn save(&self, paths: &Paths) -> Result<()> {
        let dir = self.dir(paths);
        fs::create_dir_all(&dir).map_err(CriError::io("create the container directory", dir.path()))?;
        write_atomic(&dir.cri_config(), &self.config.encode_to_vec())?;
        let rec = serde_json::to_vec_pretty(&self.record).map_err(|e| CriError::DecodeRecord {
            path: dir.cri_record(),
            source: e.into(),
        })?;
        write_atomic(&dir.cri_record(), &rec)
    }

    /// Every CRI container on disk (directories without a CRI record belong to plans).
    pub fn load_all(paths: &Paths) -> Vec<Self> {
        let Ok(entries) = fs::read_dir(paths.containers()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let dir = paths.container(&id);
            let (Ok(cfg), Ok(rec)) = (fs::read(dir.cri_config()), fs::read(dir.cri_record())) else {
                continue;
            };
            match (ContainerConfig::decode(cfg.as_slice()), serde_json::from_slice(&rec)) {
                (Ok(config), Ok(record)) => out.push(Self { id, config, record }),
                _ => tracing::warn!(container = %id, "skipping an unreadable CRI container record"),
            }
        }
        out
    }
}

/// The CRI config as a plan service, so the bundle module builds the spec the same way for
/// both; what a service cannot say (the pod's network namespace, hostname, read-only root)
/// is set on the spec afterwards.
pub(crate) fn service_of(paths: &Paths, id: &str, image: &str, c: &ContainerConfig, pod: &Sandbox) -> Result<Service> {
    let linux = c.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let res = linux.resources.clone().unwrap_or_default();
    let ns = sc.namespace_options.clone().unwrap_or_default();
    if sc.run_as_group.is_some() && sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
        // containerd's rule: a group alone would silently run as the image's user.
        return Err(CriError::InvalidArgument(
            "security_context.run_as_group needs run_as_user or run_as_username".into(),
        ));
    }
    let user = match (&sc.run_as_user, sc.run_as_username.as_str(), &sc.run_as_group) {
        (Some(uid), _, Some(gid)) => Some(format!("{}:{}", uid.value, gid.value)),
        (Some(uid), _, None) => Some(uid.value.to_string()),
        (None, name, gid) if !name.is_empty() => {
            Some(gid.as_ref().map_or(name.to_owned(), |g| format!("{name}:{}", g.value)))
        }
        _ => None,
    };
    let volumes = c
        .mounts
        .iter()
        .map(|m| {
            if m.host_path.is_empty() || m.container_path.is_empty() {
                return Err(CriError::InvalidArgument(
                    "a mount needs host_path and container_path".into(),
                ));
            }
            Ok(Volume {
                source: m.host_path.clone().into(),
                target: m.container_path.clone().into(),
                read_only: m.readonly,
                propagation: match MountPropagation::try_from(m.propagation) {
                    Ok(MountPropagation::PropagationBidirectional) => Propagation::Shared,
                    Ok(MountPropagation::PropagationHostToContainer) => Propagation::Slave,
                    _ => Propagation::Private,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut volumes = volumes;
    let resolv = paths.sandbox(&pod.id).resolv_conf();
    if resolv.exists() && !volumes.iter().any(|v| v.target == Path::new("/etc/resolv.conf")) {
        volumes.push(Volume {
            source: resolv,
            target: "/etc/resolv.conf".into(),
            read_only: false,
            propagation: Propagation::Private,
        });
    }
    let cpus = (res.cpu_quota > 0 && res.cpu_period > 0).then(|| res.cpu_quota as f64 / res.cpu_period as f64);
    Ok(Service {
        name: id.to_owned(),
        image: image.to_owned(),
        entrypoint: (!c.command.is_empty()).then(|| c.command.clone()),
        command: (!c.args.is_empty()).then(|| c.args.clone()),
        environment: c.envs.iter().map(|e| (e.key.clone(), e.value.clone())).collect(),
        volumes,
        network_host: pod.host_network(),
        pid_host: ns.pid == NamespaceMode::Node as i32 || pod.namespace_options().pid == NamespaceMode::Node as i32,
        privileged: sc.privileged,
        cap_add: sc
            .capabilities
            .as_ref()
            .map(|caps| {
                caps.add_capabilities
                    .iter()
                    .map(|c| c.trim_start_matches("CAP_").to_ascii_uppercase())
                    .collect()
            })
            .unwrap_or_default(),
        devices: c
            .devices
            .iter()
            .map(|d| Device {
                host: d.host_path.clone().into(),
                container: d.container_path.clone().into(),
                permissions: if d.permissions.is_empty() {
                    "rwm".into()
                } else {
                    d.permissions.clone()
                },
            })
            .collect(),
        user,
        working_dir: (!c.working_dir.is_empty()).then(|| c.working_dir.clone()),
        mem_limit: u64::try_from(res.memory_limit_in_bytes).ok().filter(|m| *m > 0),
        cpus,
        ..Default::default()
    })
}

/// Image, rootfs, spec and bundle for a new container; returns the record.
pub(crate) fn prepare(
    paths: &Paths,
    id: &str,
    image: (String, String),
    config: &ContainerConfig,
    pod: &Sandbox,
) -> Result<ContainerRecord> {
    let dir = paths.container(id);
    let service = service_of(paths, id, &image.0, config, pod)?;
    let userns = super::userns::of_container(config, pod)?;
    let prepared = LocalImages { paths: paths.clone() }
        .prepare_for(&service, &dir, userns.as_ref())
        .map_err(|e| CriError::FailedPrecondition(e.to_string()))?;
    let parent = pod
        .config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    let cgroup = if parent.is_empty() {
        paths.cgroup(id)
    } else {
        format!("/{}/kboot-{id}", parent.trim_matches('/'))
    };
    let host = Host::probe()?;
    let mut spec = build_spec(
        &BundleRequest {
            service: &service,
            image: &prepared.defaults,
            rootfs: &prepared.rootfs,
            cgroups_path: &cgroup,
        },
        &host,
    )?;
    adapt_spec(&mut spec, paths, config, pod)?;
    let user = run_user(&spec, &prepared.rootfs, config)?;
    security::apply(&mut spec, &security_of(config, &user), &host, id)?;
    if let Some(ns) = &userns {
        super::userns::apply(&mut spec, ns, &dir, &service)?;
    }
    let bundle = paths.container(id).bundle();
    fs::create_dir_all(&bundle).map_err(CriError::io("create the bundle directory", &bundle))?;
    write_config(&bundle, &spec)?;
    let log_path = log_path_of(pod, config);
    if let Some(log) = &log_path {
        link_log(&dir, log)?;
    }
    Ok(ContainerRecord {
        cgroup,
        sandbox_id: pod.id.clone(),
        image: image.0,
        image_id: image.1,
        created_at: super::now_nanos(),
        log_path,
        user: Some(user),
    })
}

/// The security context in spec terms (see `bundle::security` for the defaults).
fn security_of(c: &ContainerConfig, user: &RunUser) -> Security {
    let sc = c
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default();
    let caps = sc.capabilities.clone().unwrap_or_default();
    let names = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|c| c.trim_start_matches("CAP_").to_ascii_uppercase())
            .collect()
    };
    Security {
        privileged: sc.privileged,
        cap_add: names(&caps.add_capabilities),
        cap_drop: names(&caps.drop_capabilities),
        masked_paths: sc.masked_paths.clone(),
        readonly_paths: sc.readonly_paths.clone(),
        no_new_privileges: sc.no_new_privs,
        seccomp: seccomp_of(&sc),
        // The primary gid is implied; libcontainer sets the list as given.
        additional_gids: user.groups.clone(),
        readonly_rootfs: sc.readonly_rootfs,
    }
}

/// CRI's profile: the `seccomp` field, else the deprecated path string; neither means
/// unconfined (what the kubelet's `Unconfined` and an absent profile both send).
fn seccomp_of(sc: &kboot_cri::v1::LinuxContainerSecurityContext) -> SeccompProfile {
    use kboot_cri::v1::security_profile::ProfileType;
    if let Some(p) = &sc.seccomp {
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => SeccompProfile::RuntimeDefault,
            Ok(ProfileType::Localhost) => SeccompProfile::Localhost(p.localhost_ref.clone().into()),
            _ => SeccompProfile::Unconfined,
        };
    }
    // Deprecated, but what kubelets before v1.19 send.
    #[allow(deprecated)]
    let path = sc.seccomp_profile_path.as_str();
    match path {
        "runtime/default" | "docker/default" => SeccompProfile::RuntimeDefault,
        p if p.starts_with("localhost/") => SeccompProfile::Localhost(p["localhost/".len()..].into()),
        _ => SeccompProfile::Unconfined,
    }
}

/// Who the container runs as: the spec's uid and gid (resolved from the request or the
/// image), then as containerd: the primary gid, the image's groups naming the user (unless
/// the policy is `Strict`) and the request's supplemental groups, without repeats.
fn run_user(spec: &oci_spec::runtime::Spec, rootfs: &Path, c: &ContainerConfig) -> Result<RunUser> {
    use kboot_cri::v1::SupplementalGroupsPolicy;
    let sc = c
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default();
    let (uid, gid) = spec
        .process()
        .as_ref()
        .map_or((0, 0), |p| (p.user().uid(), p.user().gid()));
    let strict = sc.supplemental_groups_policy == SupplementalGroupsPolicy::Strict as i32;
    let image = if strict {
        Vec::new()
    } else {
        // Read inside the rootfs: a hostile image's /etc/group is a clear error, never a host file.
        RootFs::open(rootfs)
            .and_then(|r| passwd::supplementary_groups(&r, uid))
            .map_err(|e| CriError::InvalidArgument(e.to_string()))?
    };
    let requested = sc.supplemental_groups.iter().filter_map(|g| u32::try_from(*g).ok());
    let mut groups = vec![gid];
    for g in image.into_iter().chain(requested) {
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    Ok(RunUser { uid, gid, groups })
}

/// What the Compose-shaped service cannot say: the pod's namespaces (its pinned network
/// and IPC namespaces, its shared PID namespace or a target container's) and hostname.
fn adapt_spec(
    spec: &mut oci_spec::runtime::Spec,
    paths: &Paths,
    config: &ContainerConfig,
    pod: &Sandbox,
) -> Result<()> {
    use oci_spec::runtime::LinuxNamespaceType as Ns;
    let own = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let pod_ns = pod.namespace_options();
    let node = NamespaceMode::Node as i32;
    let ipc = if pod_ns.ipc == node || own.ipc == node {
        Join::Host
    } else {
        pod.state.ipcns.clone().map_or(Join::New, Join::Path)
    };
    let pid = match NamespaceMode::try_from(own.pid) {
        // Host PID is already a service-level setting (no namespace in the spec).
        Ok(NamespaceMode::Node) => Join::Keep,
        Ok(NamespaceMode::Target) => {
            let init = crate::shim::running(paths, &own.target_id)
                .and_then(|r| r.init_pid)
                .ok_or_else(|| {
                    CriError::FailedPrecondition(format!(
                        "target container {:?} of the PID namespace is not running",
                        own.target_id
                    ))
                })?;
            Join::Path(format!("/proc/{init}/ns/pid").into())
        }
        // A user-namespace holder is there for every such pod: its PID namespace is
        // joined only when the pod shares one.
        Ok(NamespaceMode::Pod) if pod_ns.pid != node => match pod
            .state
            .pid_holder
            .as_ref()
            .filter(|h| !h.userns || pod_ns.pid == NamespaceMode::Pod as i32)
        {
            Some(h) if h.alive() => Join::Path(h.pid_namespace()),
            Some(_) => {
                return Err(CriError::FailedPrecondition(format!(
                    "the PID namespace of pod {} is gone; recreate the pod",
                    pod.id
                )))
            }
            // The pod does not share one (kubelet's default): a namespace of its own.
            None => Join::New,
        },
        _ => Join::Keep,
    };
    let net = pod.state.netns.clone().map_or(Join::Keep, Join::Path);
    recursive_read_only(spec, config)?;
    if let Some(linux) = spec.linux_mut().as_mut() {
        let mut namespaces = linux.namespaces().clone().unwrap_or_default();
        for (typ, how) in [(Ns::Network, net), (Ns::Ipc, ipc), (Ns::Pid, pid)] {
            how.apply(&mut namespaces, typ);
        }
        linux.set_namespaces(Some(namespaces));
    }
    if !pod.config.hostname.is_empty() && !pod.host_network() {
        spec.set_hostname(Some(pod.config.hostname.clone()));
    }
    // The pod's sysctls, set in each container (they name namespaced settings the
    // containers share, so setting them again is idempotent); the kubelet vets them.
    let sysctls = pod.config.linux.as_ref().map(|l| l.sysctls.clone()).unwrap_or_default();
    if let (false, Some(linux)) = (sysctls.is_empty(), spec.linux_mut().as_mut()) {
        linux.set_sysctl(Some(sysctls));
    }
    Ok(())
}

/// `recursive_read_only` mounts get libcontainer's `rro` option (mount_setattr with
/// AT_RECURSIVE: submounts are read-only too). As containerd, only read-only private mounts
/// may ask for it.
fn recursive_read_only(spec: &mut oci_spec::runtime::Spec, config: &ContainerConfig) -> Result<()> {
    for m in config.mounts.iter().filter(|m| m.recursive_read_only) {
        if !m.readonly {
            return Err(CriError::InvalidArgument(format!(
                "mount {}: recursive_read_only needs readonly",
                m.container_path
            )));
        }
        if m.propagation != MountPropagation::PropagationPrivate as i32 {
            return Err(CriError::InvalidArgument(format!(
                "mount {}: recursive_read_only needs private propagation",
                m.container_path
            )));
        }
        let target = Path::new(&m.container_path);
        for mount in spec.mounts_mut().iter_mut().flatten() {
            if mount.destination() == target {
                let mut options = mount.options().clone().unwrap_or_default();
                options.push("rro".into());
                mount.set_options(Some(options));
            }
        }
    }
    Ok(())
}

/// How a container gets one kind of namespace.
enum Join {
    /// As `build_spec` decided.
    Keep,
    /// The host's: no namespace of that kind in the spec.
    Host,
    /// A new one.
    New,
    /// An existing one (a pinned file or `/proc/<pid>/ns/<kind>`).
    Path(PathBuf),
}

impl Join {
    fn apply(
        self,
        namespaces: &mut Vec<oci_spec::runtime::LinuxNamespace>,
        typ: oci_spec::runtime::LinuxNamespaceType,
    ) {
        use oci_spec::runtime::LinuxNamespaceBuilder;
        let path = match self {
            Join::Keep => return,
            Join::Host => None,
            Join::New => Some(None),
            Join::Path(p) => Some(Some(p)),
        };
        namespaces.retain(|n| n.typ() != typ);
        if let Some(path) = path {
            let mut b = LinuxNamespaceBuilder::default().typ(typ);
            if let Some(p) = path {
                b = b.path(p);
            }
            namespaces.extend(b.build().ok());
        }
    }
}

fn log_path_of(pod: &Sandbox, config: &ContainerConfig) -> Option<PathBuf> {
    let dir = &pod.config.log_directory;
    (!dir.is_empty() && !config.log_path.is_empty()).then(|| Path::new(dir).join(&config.log_path))
}

/// The shim writes the CRI-format log straight to `log_directory/log_path`, a regular file
/// (the kubelet, often in a container of its own, must be able to read and rename it); the
/// container directory's `container.log` links to it so `kboot logs` finds it too.
fn link_log(dir: &ContainerDir, log: &Path) -> Result<()> {
    if let Some(parent) = log.parent() {
        fs::create_dir_all(parent).map_err(CriError::io("create the log directory", parent))?;
    }
    create_log(log)?;
    let link = dir.log();
    match fs::remove_file(&link) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(CriError::io("replace the log link", &link)(e)),
        _ => {}
    }
    std::os::unix::fs::symlink(log, &link).map_err(CriError::io("link the log", &link))
}

fn create_log(log: &Path) -> Result<()> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map(drop)
        .map_err(CriError::io("create the log", log))
}

/// How long `ReopenContainerLog` waits for the shim to switch files.
const REOPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// After the kubelet renamed the log away: creates a new file at the log path and has the
/// shim write there, returning once it does (the kubelet renames the old file back when this
/// fails, so an error loses nothing).
pub(crate) async fn reopen_log(paths: &Paths, c: &CriContainer) -> Result<()> {
    let Phase::Running(rec) = c.phase(paths) else {
        return Err(CriError::FailedPrecondition(format!(
            "container {} is not running",
            c.id
        )));
    };
    let Some(log) = &c.record.log_path else {
        return Ok(());
    };
    create_log(log)?;
    kill(Pid::from_raw(rec.shim_pid), crate::shim::REOPEN_LOG_SIGNAL)
        .map_err(|e| CriError::FailedPrecondition(format!("signal the shim of container {}: {e}", c.id)))?;
    let deadline = Instant::now() + REOPEN_TIMEOUT;
    while !holds_open(rec.shim_pid, log) {
        if Instant::now() > deadline {
            return Err(CriError::FailedPrecondition(format!(
                "the shim of container {} did not reopen {} within {REOPEN_TIMEOUT:?}",
                c.id,
                log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Whether process `pid` has the file now at `path` open.
fn holds_open(pid: i32, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(want) = fs::metadata(path) else { return false };
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .filter_map(|fd| fs::metadata(fd.path()).ok())
        .any(|m| m.dev() == want.dev() && m.ino() == want.ino())
}

/// This kboot on the same root, state and config (see [`crate::shim::launch`]).
fn kboot_command(paths: &Paths) -> tokio::process::Command {
    crate::shim::launch::kboot_command(paths).into()
}

/// Starts the shim and waits until the container runs or has failed to start.
pub(crate) async fn start(paths: &Paths, c: &CriContainer) -> Result<()> {
    let dir = c.dir(paths);
    let shim_log = dir.shim_log();
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&shim_log)
        .map_err(CriError::io("open", &shim_log))?;
    let log2 = log.try_clone().map_err(CriError::io("open", &shim_log))?;
    let mut command = kboot_command(paths);
    command
        .arg("shim")
        .arg("--id")
        .arg(&c.id)
        .arg("--bundle")
        .arg(paths.container(&c.id).bundle());
    // The kubelet rotates CRI logs itself (rename, then ReopenContainerLog).
    if let Some(log) = &c.record.log_path {
        command.arg("--log-path").arg(log).arg("--log-max-bytes").arg("0");
    }
    // Every CRI container can be attached to; stdin only when its config asks for one.
    command.arg("--attach");
    if c.config.stdin {
        command.arg("--stdin");
        if c.config.stdin_once {
            command.arg("--stdin-once");
        }
    }
    if c.config.tty {
        command.arg("--tty");
    }
    let mut child = command
        // libcontainer's own lines, emitted inside init, would land in the container's stderr.
        .env("KBOOT_LOG", "warn,libcontainer=off,libcgroups=off")
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2)
        .kill_on_drop(false)
        .spawn()
        .map_err(CriError::io("start the shim", Path::new(crate::shim::launch::SELF_EXE)))?;
    // Reap the shim whenever it ends; its records carry the outcome.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match c.phase(paths) {
            Phase::Running(rec) if rec.init_pid.is_some() => return Ok(()),
            Phase::Exited(exit) => {
                return match exit.error {
                    Some(err) => Err(CriError::StartContainer {
                        id: c.id.clone(),
                        message: err,
                    }),
                    None => Ok(()),
                }
            }
            _ if Instant::now() > deadline => {
                return Err(CriError::StartContainer {
                    id: c.id.clone(),
                    message: "the shim did not report a start within 60 s".into(),
                })
            }
            // Short: the shim's start takes 10–30 ms, and this wait is the whole latency
            // of StartContainer beyond it (a poll reads two small files and /proc).
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

/// SIGTERM through the shim (it forwards to init), SIGKILL to init after `timeout`.
pub(crate) async fn stop(paths: &Paths, c: &CriContainer, timeout: Duration) -> Result<()> {
    let Phase::Running(rec) = c.phase(paths) else {
        return Ok(());
    };
    let exited = || matches!(c.phase(paths), Phase::Exited(_));
    if !timeout.is_zero() {
        let _ = kill(Pid::from_raw(rec.shim_pid), Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        while !exited() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if !exited() {
        if let Some(pid) = rec.init_pid {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !exited() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if exited() {
        Ok(())
    } else {
        Err(CriError::FailedPrecondition(format!(
            "container {} did not stop after SIGKILL",
            c.id
        )))
    }
}

/// Removes what Create and Start made: the rootfs view, the log, the directory, the attach
/// socket.
pub(crate) fn remove(paths: &Paths, c: &CriContainer) -> Result<()> {
    let dir = c.dir(paths);
    // Before anything is deleted: the directory holds id-mapped mounts of volumes.
    crate::bundle::userns::release(&dir).map_err(CriError::io("unmount the id-mapped volumes in", dir.path()))?;
    LocalImages { paths: paths.clone() }.release(&dir);
    if let Some(log) = &c.record.log_path {
        let _ = fs::remove_file(log);
    }
    let _ = fs::remove_file(paths.container(&c.id).exit());
    // Left behind only by a shim killed with SIGKILL (a shim removes its socket on exit).
    let _ = fs::remove_file(paths.attach_socket(&c.id));
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(CriError::io("remove the container directory", dir.path())(e))
        }
        _ => Ok(()),
    }
}

/// Runs `cmd` in the container as its own processes run (`kboot exec`: namespaces,
/// cgroups, user and groups, capabilities, no-new-privileges, seccomp), collecting its output.
pub(crate) async fn exec_sync(
    paths: &Paths,
    c: &CriContainer,
    cmd: &[String],
    timeout: Duration,
) -> Result<(Vec<u8>, Vec<u8>, i32)> {
    let (mut command, pid) = enter_command(paths, c, cmd)?;
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Its own group, so a command that ignores SIGTERM can be killed with all it started.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(CriError::io("run kboot exec for", format!("/proc/{pid}")))?;
    let exec_pid = child.id().and_then(|p| i32::try_from(p).ok());
    let stdout = tokio::spawn(read_all(child.stdout.take()));
    let stderr = tokio::spawn(read_all(child.stderr.take()));
    let io_err = CriError::io("run kboot exec for", format!("/proc/{pid}"));
    let status = if timeout.is_zero() {
        child.wait().await.map_err(io_err)?
    } else {
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => status.map_err(io_err)?,
            Err(_) => {
                // `kboot exec` passes SIGTERM to the command and returns once it has reaped
                // it, so nothing of the command is left when the caller hears of the timeout.
                if let Some(p) = exec_pid {
                    let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
                }
                if tokio::time::timeout(Duration::from_secs(2), child.wait())
                    .await
                    .is_err()
                {
                    if let Some(g) = exec_pid {
                        let _ = nix::sys::signal::killpg(Pid::from_raw(g), Signal::SIGKILL);
                    }
                    let _ = child.wait().await;
                }
                return Err(CriError::DeadlineExceeded(format!(
                    "command {cmd:?} timed out after {timeout:?}"
                )));
            }
        }
    };
    let out = std::process::Output {
        status,
        stdout: stdout.await.unwrap_or_default(),
        stderr: stderr.await.unwrap_or_default(),
    };
    Ok((out.stdout, out.stderr, exit_code(&out.status)))
}

/// The exit code a shell would report: the code, or 128 + the signal that ended it.
pub(crate) fn exit_code(status: &std::process::ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or(128 + std::os::unix::process::ExitStatusExt::signal(status).unwrap_or(0))
}

/// A command running `cmd` in the running container `c` through `kboot exec`: the container's
/// namespaces, root, cgroups, user and groups, capabilities, no-new-privileges and seccomp
/// filter (see `shim::exec`). `kboot exec` passes SIGTERM, SIGINT, SIGHUP and SIGQUIT on to
/// the command. The caller sets stdio. Returns it with the container's init PID.
pub(crate) fn enter_command(paths: &Paths, c: &CriContainer, cmd: &[String]) -> Result<(tokio::process::Command, i32)> {
    let Phase::Running(rec) = c.phase(paths) else {
        return Err(CriError::FailedPrecondition(format!(
            "container {} is not running",
            c.id
        )));
    };
    let init = rec.init_pid.unwrap_or_default();
    if cmd.is_empty() {
        return Err(CriError::InvalidArgument("exec needs a command".into()));
    }
    let mut command = kboot_command(paths);
    command
        .args(["exec", &c.id, "--"])
        .args(cmd)
        .env("KBOOT_LOG", "error,libcontainer=off,libcgroups=off");
    Ok((command, init))
}

/// Everything a pipe yields until its end (nothing when there is no pipe).
async fn read_all<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut p) = pipe {
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut p, &mut buf).await;
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use kboot_cri::v1::security_profile::ProfileType;
    use kboot_cri::v1::{Int64Value, LinuxContainerConfig, LinuxContainerSecurityContext, SecurityProfile};

    fn config(sc: LinuxContainerSecurityContext) -> ContainerConfig {
        ContainerConfig {
            linux: Some(LinuxContainerConfig {
                security_context: Some(sc),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn run_as_group_without_a_user_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let pod = Sandbox {
            id: "p".into(),
            config: Default::default(),
            state: Default::default(),
        };
        let c = config(LinuxContainerSecurityContext {
            run_as_group: Some(Int64Value { value: 1002 }),
            ..Default::default()
        });
        let err = service_of(&Paths::under(tmp.path()), "c", "img", &c, &pod).unwrap_err();
        assert!(matches!(err, CriError::InvalidArgument(m) if m.contains("run_as_group")));
        let named = config(LinuxContainerSecurityContext {
            run_as_group: Some(Int64Value { value: 1002 }),
            run_as_username: "www-data".into(),
            ..Default::default()
        });
        let svc = service_of(&Paths::under(tmp.path()), "c", "img", &named, &pod).unwrap();
        assert_eq!(svc.user.as_deref(), Some("www-data:1002"));
    }

    #[test]
    fn seccomp_profile_comes_from_the_field_then_the_deprecated_path() {
        let with = |profile_type: ProfileType, r: &str| LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile {
                profile_type: profile_type as i32,
                localhost_ref: r.into(),
            }),
            ..Default::default()
        };
        assert_eq!(
            seccomp_of(&with(ProfileType::RuntimeDefault, "")),
            SeccompProfile::RuntimeDefault
        );
        assert_eq!(
            seccomp_of(&with(ProfileType::Localhost, "/p.json")),
            SeccompProfile::Localhost("/p.json".into())
        );
        assert_eq!(
            seccomp_of(&with(ProfileType::Unconfined, "")),
            SeccompProfile::Unconfined
        );
        assert_eq!(
            seccomp_of(&LinuxContainerSecurityContext::default()),
            SeccompProfile::Unconfined
        );
        #[allow(deprecated)]
        let old = LinuxContainerSecurityContext {
            seccomp_profile_path: "localhost//etc/p.json".into(),
            ..Default::default()
        };
        assert_eq!(seccomp_of(&old), SeccompProfile::Localhost("/etc/p.json".into()));
    }

    #[test]
    fn groups_merge_the_image_groups_unless_strict() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("etc")).unwrap();
        fs::write(tmp.path().join("etc/passwd"), "u:x:1000:1000::/:/bin/sh\n").unwrap();
        fs::write(tmp.path().join("etc/group"), "u:x:1000:\nextra:x:50000:u\n").unwrap();
        let mut spec = oci_spec::runtime::Spec::default();
        let mut process = spec.process().clone().unwrap();
        let mut user = process.user().clone();
        user.set_uid(1000);
        user.set_gid(1000);
        process.set_user(user);
        spec.set_process(Some(process));
        let sc = |strict: bool| LinuxContainerSecurityContext {
            supplemental_groups: vec![1234, 1000],
            supplemental_groups_policy: if strict {
                kboot_cri::v1::SupplementalGroupsPolicy::Strict as i32
            } else {
                0
            },
            ..Default::default()
        };
        let merge = run_user(&spec, tmp.path(), &config(sc(false))).unwrap();
        assert_eq!(
            (merge.uid, merge.gid, merge.groups),
            (1000, 1000, vec![1000, 50000, 1234])
        );
        let strict = run_user(&spec, tmp.path(), &config(sc(true))).unwrap();
        assert_eq!(strict.groups, vec![1000, 1234]);
    }
}
