//! `hostUsers: false`: what the kubelet asks for (`NamespaceOption.userns_options`), checked
//! here; whether this host can give it, probed once. The pod's holder (`super::holder`)
//! owns the user namespace and the pod's network, IPC and PID namespaces made inside it
//! (a namespace owned by the host's user namespace cannot be joined, nor sysfs or mqueue
//! mounted for it, from inside the pod's); `bundle::userns` maps the rootfs and volumes.
//!
//! As containerd and CRI-O: mode `POD` only (every container of the pod shares the
//! sandbox's user namespace), one uid and one gid range starting at container id 0 (the
//! kubelet sends 65536 ids), `NODE` means no user namespace, `CONTAINER` and `TARGET` are
//! refused.

use kboot_cri::v1::{ContainerConfig, IdMapping, NamespaceMode, NamespaceOption, UserNamespace};
use tokio::sync::OnceCell;

use super::error::{CriError, Result};
use super::holder;
use super::sandbox::Sandbox;
use crate::bundle::userns::{self as mapping, IdRange};
use crate::state::Paths;

use holder::Ranges;

fn bad(msg: String) -> CriError {
    CriError::InvalidArgument(format!("user namespace (hostUsers: false): {msg}"))
}

/// The one range of `ids` (uids or gids), checked.
fn range(kind: &str, ids: &[IdMapping]) -> Result<IdRange> {
    let [m] = ids else {
        return Err(bad(format!(
            "{} {kind} mappings given; exactly one is supported (the kubelet sends one)",
            ids.len()
        )));
    };
    if m.container_id != 0 {
        return Err(bad(format!(
            "the {kind} mapping starts at container id {}; it must map container id 0",
            m.container_id
        )));
    }
    if m.length == 0 || m.host_id.checked_add(m.length).is_none() {
        return Err(bad(format!(
            "the {kind} mapping of {} ids from host id {} is empty or past the last id",
            m.length, m.host_id
        )));
    }
    if m.host_id == 0 {
        return Err(bad(format!(
            "the {kind} mapping includes host id 0: root in the pod would be the host's root"
        )));
    }
    Ok(IdRange {
        container_id: m.container_id,
        host_id: m.host_id,
        size: m.length,
    })
}

/// The pod's ranges when it asks for its own user namespace; `None` for the host's.
pub(crate) fn of_options(ns: Option<&NamespaceOption>) -> Result<Option<Ranges>> {
    let Some(u) = ns.and_then(|n| n.userns_options.as_ref()) else {
        return Ok(None);
    };
    match NamespaceMode::try_from(u.mode) {
        Ok(NamespaceMode::Node) if u.uids.is_empty() && u.gids.is_empty() => Ok(None),
        Ok(NamespaceMode::Node) => Err(bad("mode NODE (the host's user namespace) takes no mappings".into())),
        Ok(NamespaceMode::Pod) => {
            let ns = ns.expect("userns_options came from it");
            let node = NamespaceMode::Node as i32;
            for (kind, mode) in [("network", ns.network), ("PID", ns.pid), ("IPC", ns.ipc)] {
                if mode == node {
                    return Err(bad(format!(
                        "the host's {kind} namespace cannot be used from a pod's user namespace (hostNetwork, hostPID and hostIPC need hostUsers: true)"
                    )));
                }
            }
            Ok(Some((range("uid", &u.uids)?, range("gid", &u.gids)?)))
        }
        Ok(mode) => Err(bad(format!(
            "mode {} is not supported: a pod's containers share its user namespace (mode POD) or use the host's (NODE)",
            mode.as_str_name()
        ))),
        Err(_) => Err(bad(format!("unknown mode {}", u.mode))),
    }
}

/// A container's own `userns_options` must say what its pod's say (the kubelet copies them).
pub(crate) fn check_container(own: Option<&UserNamespace>, pod: Option<&UserNamespace>) -> Result<()> {
    let node = |u: Option<&UserNamespace>| u.is_none_or(|u| u.mode == NamespaceMode::Node as i32);
    match (own, pod) {
        (None, _) => Ok(()),
        (Some(_), _) if node(own) && node(pod) => Ok(()),
        (Some(o), Some(p)) if o == p => Ok(()),
        _ => Err(bad(
            "the container's userns_options differ from its pod's; every container shares the pod's user namespace"
                .into(),
        )),
    }
}

/// The user namespace a container of `pod` joins, if the pod has one.
pub(crate) fn of_container(config: &ContainerConfig, pod: &Sandbox) -> Result<Option<mapping::UserNamespace>> {
    let pod_ns = pod.namespace_options();
    let own = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|n| n.userns_options.as_ref());
    check_container(own, pod_ns.userns_options.as_ref())?;
    let Some((uids, gids)) = of_options(Some(&pod_ns))? else {
        return Ok(None);
    };
    let holder = pod.state.pid_holder.filter(|h| h.userns && h.alive()).ok_or_else(|| {
        CriError::FailedPrecondition(format!(
            "the user namespace of pod {} is gone; recreate the pod",
            pod.id
        ))
    })?;
    Ok(Some(mapping::UserNamespace {
        uids,
        gids,
        path: holder.namespace("user"),
    }))
}

/// [`mapping::apply`] for a CRI container: its volumes become id-mapped.
pub(crate) fn apply(
    spec: &mut oci_spec::runtime::Spec,
    ns: &mapping::UserNamespace,
    dir: &crate::state::ContainerDir,
    service: &crate::plan::Service,
) -> Result<()> {
    let sources: Vec<_> = service.volumes.iter().map(|v| v.source.clone()).collect();
    mapping::apply(spec, ns, dir, &sources).map_err(|e| match e {
        mapping::UsernsError::Unmapped { .. } => CriError::InvalidArgument(e.to_string()),
        _ => CriError::FailedPrecondition(e.to_string()),
    })
}

static SUPPORT: OnceCell<std::result::Result<(), String>> = OnceCell::const_new();

/// Whether pods can have a user namespace here: a holder in a new user namespace starts and
/// the rootfs cache's filesystem takes an id-mapped mount. Probed once per process, the
/// outcome logged; the error names what is missing.
pub(crate) async fn support(paths: &Paths) -> &'static std::result::Result<(), String> {
    SUPPORT
        .get_or_init(|| async {
            let r = probe(paths).await;
            match &r {
                Ok(()) => tracing::info!("user namespaces: supported (a holder's namespace id-maps the rootfs cache)"),
                Err(why) => {
                    tracing::warn!(%why, "user namespaces: not supported; pods with hostUsers: false are refused")
                }
            }
            r
        })
        .await
}

async fn probe(paths: &Paths) -> std::result::Result<(), String> {
    // Any unprivileged range: nothing runs in it but the holder.
    let r = IdRange {
        container_id: 0,
        host_id: 1 << 30,
        size: 65536,
    };
    let h = holder::start(paths, "userns-probe", Some(&(r, r)))
        .await
        .map_err(|e| format!("a process in a new user namespace could not start: {e}"))?;
    let dir = paths.rootfs_cache();
    let outcome = std::fs::create_dir_all(&dir)
        .map_err(|e| format!("create {}: {e}", dir.display()))
        .and_then(|()| {
            mapping::detached_idmapped(&dir, &h.namespace("user"))
                .map(drop)
                .map_err(|(step, hint, e)| format!("{}: {step}: {e}{hint}", dir.display()))
        })
        .and_then(|()| reachable_by_pods(paths));
    h.stop();
    outcome
}

/// A pod's containers reach their rootfs, their id-mapped volumes and the pod's pinned
/// namespaces by path from inside the pod's user namespace, where root is an unprivileged
/// host uid: libcontainer switches to it before its init opens the namespaces and
/// bind-mounts the rootfs. So every directory from `/` down to kboot's container and
/// namespace directories must let others search it, and kboot's umask must leave them that
/// for the directories it makes per container; otherwise the container fails at start with
/// a bare EACCES (a `--root` under a `mktemp -d` directory did). Mode bits only: an ACL that
/// grants search would satisfy the kernel but not this check, which then refuses clearly
/// instead of failing later.
fn reachable_by_pods(paths: &Paths) -> std::result::Result<(), String> {
    for dir in [paths.containers(), paths.netns_dir()] {
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        if let Some((blocked, mode)) = first_unsearchable(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            return Err(format!(
                "{} (mode {mode:04o}) cannot be searched by a pod's root, an unprivileged host uid, and {} is below it; make it searchable by others (chmod o+x {}; containerd keeps its root 0711)",
                blocked.display(),
                dir.display(),
                blocked.display()
            ));
        }
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let umask = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|m| u32::from_str_radix(m.trim(), 8).ok());
    if let Some(umask) = umask.filter(|m| m & 0o001 != 0) {
        return Err(format!(
            "kboot's umask {umask:04o} takes others' search permission from the directories it makes for each container, which a pod's root must pass; start kboot with umask 022"
        ));
    }
    Ok(())
}

/// The first directory from `/` down to `dir` (symlinks resolved) that others may not search.
fn first_unsearchable(dir: &std::path::Path) -> std::io::Result<Option<(std::path::PathBuf, u32)>> {
    use std::os::unix::fs::MetadataExt;
    let real = std::fs::canonicalize(dir)?;
    let mut chain: Vec<&std::path::Path> = real.ancestors().collect();
    chain.reverse();
    for d in chain {
        let mode = std::fs::metadata(d)?.mode() & 0o7777;
        if mode & 0o001 == 0 {
            return Ok(Some((d.to_owned(), mode)));
        }
    }
    Ok(None)
}

/// FailedPrecondition naming what this host lacks, when it lacks it.
pub(crate) async fn require(paths: &Paths) -> Result<()> {
    support(paths).await.clone().map_err(|why| {
        CriError::FailedPrecondition(format!(
            "user namespaces (hostUsers: false) are not available on this host: {why}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(mode: NamespaceMode, uids: Vec<IdMapping>) -> NamespaceOption {
        NamespaceOption {
            userns_options: Some(UserNamespace {
                mode: mode as i32,
                gids: uids.clone(),
                uids,
            }),
            ..Default::default()
        }
    }

    fn m(container_id: u32, host_id: u32, length: u32) -> IdMapping {
        IdMapping {
            container_id,
            host_id,
            length,
        }
    }

    fn err(ns: NamespaceOption) -> String {
        match of_options(Some(&ns)) {
            Err(CriError::InvalidArgument(msg)) => msg,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn the_kubelets_pod_mapping_is_taken() {
        let r = of_options(Some(&pod(NamespaceMode::Pod, vec![m(0, 65536, 65536)])))
            .unwrap()
            .unwrap();
        assert_eq!(r.0.to_host(0), Some(65536));
        assert_eq!(r.1.size, 65536);
    }

    #[test]
    fn no_options_and_node_mean_the_hosts_namespace() {
        assert_eq!(of_options(None).unwrap(), None);
        assert_eq!(of_options(Some(&NamespaceOption::default())).unwrap(), None);
        assert_eq!(of_options(Some(&pod(NamespaceMode::Node, vec![]))).unwrap(), None);
        assert!(err(pod(NamespaceMode::Node, vec![m(0, 1000, 10)])).contains("NODE"));
    }

    #[test]
    fn what_critest_and_the_kubelet_never_send_is_refused_by_name() {
        let two = err(pod(NamespaceMode::Pod, vec![m(0, 1000, 100000), m(0, 2000, 100000)]));
        assert!(two.contains("2 uid mappings"), "{two}");
        let not_zero = err(pod(NamespaceMode::Pod, vec![m(1, 1000, 100000)]));
        assert!(not_zero.contains("container id 0"), "{not_zero}");
        assert!(err(pod(NamespaceMode::Container, vec![])).contains("mode CONTAINER"));
        assert!(err(pod(NamespaceMode::Target, vec![])).contains("mode TARGET"));
        assert!(err(pod(NamespaceMode::Pod, vec![])).contains("0 uid mappings"));
        assert!(err(pod(NamespaceMode::Pod, vec![m(0, 0, 65536)])).contains("host's root"));
        assert!(err(pod(NamespaceMode::Pod, vec![m(0, u32::MAX - 10, 65536)])).contains("past the last id"));
        assert!(err(pod(NamespaceMode::Pod, vec![m(0, 1000, 0)])).contains("empty"));
        let mut host_net = pod(NamespaceMode::Pod, vec![m(0, 65536, 65536)]);
        host_net.network = NamespaceMode::Node as i32;
        assert!(err(host_net).contains("network"));
    }

    #[test]
    fn the_first_directory_others_cannot_search_is_named() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let set =
            |p: &std::path::Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("a/b"));
        std::fs::create_dir_all(b.join("c")).unwrap();
        set(tmp.path(), 0o755);
        set(&a, 0o711);
        set(&b, 0o700);
        assert_eq!(first_unsearchable(&b.join("c")).unwrap(), Some((b.clone(), 0o700)));
        // Through a symlink: the directory it leads to is the one checked.
        std::os::unix::fs::symlink(&b, tmp.path().join("link")).unwrap();
        assert_eq!(
            first_unsearchable(&tmp.path().join("link/c")).unwrap(),
            Some((b.clone(), 0o700))
        );
        set(&b, 0o751);
        assert_eq!(first_unsearchable(&b.join("c")).unwrap(), None);
    }

    #[test]
    fn a_container_shares_its_pods_user_namespace() {
        let p = pod(NamespaceMode::Pod, vec![m(0, 65536, 65536)]).userns_options;
        let other = pod(NamespaceMode::Pod, vec![m(0, 131072, 65536)]).userns_options;
        let node = pod(NamespaceMode::Node, vec![]).userns_options;
        assert!(check_container(None, p.as_ref()).is_ok());
        assert!(check_container(p.as_ref(), p.as_ref()).is_ok());
        assert!(check_container(node.as_ref(), None).is_ok());
        assert!(check_container(other.as_ref(), p.as_ref()).is_err());
        assert!(check_container(node.as_ref(), p.as_ref()).is_err());
        assert!(check_container(p.as_ref(), None).is_err());
    }
}
