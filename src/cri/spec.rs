//! The CRI container config in kboot's terms: a plan service (so the bundle module builds
//! the spec as for a plan's), then what a service cannot say set on the spec (the pod's
//! namespaces, hostname, sysctls, `rro` mounts), the user and groups it runs as and the
//! security context.

use std::path::{Path, PathBuf};

use kboot_cri::v1::{ContainerConfig, MountPropagation, NamespaceMode};

use super::error::{CriError, Result};
use super::record::RunUser;
use super::sandbox::Sandbox;
use crate::bundle::{SeccompProfile, Security};
use crate::inroot::{passwd, RootFs};
use crate::plan::{Device, Propagation, Service, Volume};
use crate::state::Paths;

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

/// The security context in spec terms (see `bundle::security` for the defaults).
pub(super) fn security_of(c: &ContainerConfig, user: &RunUser) -> Security {
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
pub(super) fn run_user(spec: &oci_spec::runtime::Spec, rootfs: &Path, c: &ContainerConfig) -> Result<RunUser> {
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
        RootFs::open(rootfs).and_then(|r| passwd::supplementary_groups(&r, uid))?
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
pub(super) fn adapt_spec(
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
#[cfg(test)]
mod tests {
    use super::*;
    use kboot_cri::v1::security_profile::ProfileType;
    use kboot_cri::v1::{Int64Value, LinuxContainerConfig, LinuxContainerSecurityContext, SecurityProfile};
    use std::fs;

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
