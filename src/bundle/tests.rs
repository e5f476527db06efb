use std::os::unix::fs::{symlink, PermissionsExt};

use oci_spec::runtime::{Capability, LinuxNamespaceType};

use super::*;
use crate::plan::{Device, Volume};

fn rootfs() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("bin")).unwrap();
    fs::create_dir_all(d.path().join("etc")).unwrap();
    fs::write(d.path().join("bin/busybox"), b"").unwrap();
    fs::set_permissions(d.path().join("bin/busybox"), fs::Permissions::from_mode(0o755)).unwrap();
    // Absolute links, as Debian's busybox install makes them: they must resolve inside the rootfs.
    symlink("/bin/busybox", d.path().join("bin/sh")).unwrap();
    fs::create_dir_all(d.path().join("usr")).unwrap();
    symlink("../bin", d.path().join("usr/bin")).unwrap();
    fs::write(
        d.path().join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\netcd:x:998:997::/var/lib/etcd:/bin/false\n",
    )
    .unwrap();
    fs::write(d.path().join("etc/group"), "root:x:0:\nkvm:x:105:\n").unwrap();
    d
}

fn host() -> Host {
    Host {
        bounding_caps: caps_from_status("CapBnd:\t000001fffeffffff\n"),
        devices: vec![LinuxDeviceBuilder::default()
            .path("/dev/kvm")
            .typ(LinuxDeviceType::C)
            .major(10)
            .minor(232)
            .build()
            .unwrap()],
        cgroups: crate::cgroups::Layout::V1 {
            hierarchies: vec!["cpu,cpuacct".into(), "memory".into()],
        },
    }
}

fn spec_for(svc: &Service, image: &ImageDefaults, root: &Path) -> Result<Spec> {
    spec_on(svc, image, root, &host())
}

fn spec_on(svc: &Service, image: &ImageDefaults, root: &Path, host: &Host) -> Result<Spec> {
    build_spec(
        &BundleRequest {
            service: svc,
            image,
            rootfs: root,
            cgroups_path: "/kboot/t",
        },
        host,
    )
}

/// (destination, type, source, options) of the mounts at or under `/sys/fs/cgroup`.
fn cgroup_mounts_of(spec: &Spec) -> Vec<(String, String, String, Vec<String>)> {
    spec.mounts()
        .iter()
        .flatten()
        .filter(|m| m.destination().starts_with("/sys/fs/cgroup"))
        .map(|m| {
            (
                m.destination().display().to_string(),
                m.typ().clone().unwrap_or_default(),
                m.source().as_ref().map(|s| s.display().to_string()).unwrap_or_default(),
                m.options().clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn unprivileged_containers_see_their_own_cgroup_read_only_on_v1_and_v2() {
    let r = rootfs();
    let image = ImageDefaults {
        entrypoint: vec!["/bin/sh".into()],
        ..Default::default()
    };
    // v1: the container's own directory of each hierarchy, read-only, no cgroup namespace.
    let spec = spec_for(&svc(), &image, r.path()).unwrap();
    let mounts = cgroup_mounts_of(&spec);
    assert_eq!(mounts[0].0, "/sys/fs/cgroup");
    assert_eq!(mounts[0].1, "tmpfs");
    let binds: Vec<(&str, &str, bool)> = mounts[1..]
        .iter()
        .map(|m| {
            (
                m.0.as_str(),
                m.2.as_str(),
                m.1 == "bind" && m.3.iter().any(|o| o == "ro"),
            )
        })
        .collect();
    assert_eq!(
        binds,
        [
            ("/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct/kboot/t", true),
            ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/memory/kboot/t", true),
        ]
    );
    assert!(!ns_types(&spec).contains(&LinuxNamespaceType::Cgroup));

    // v2: a cgroup namespace and a read-only cgroup2 of its own.
    let v2 = Host {
        cgroups: crate::cgroups::Layout::Unified,
        ..host()
    };
    let spec = spec_on(&svc(), &image, r.path(), &v2).unwrap();
    let mounts = cgroup_mounts_of(&spec);
    assert_eq!(mounts.len(), 1);
    assert_eq!((mounts[0].1.as_str(), mounts[0].2.as_str()), ("cgroup", "cgroup"));
    assert!(mounts[0].3.iter().any(|o| o == "ro"), "{mounts:?}");
    assert!(ns_types(&spec).contains(&LinuxNamespaceType::Cgroup));

    // Privileged: the host's /sys (with every cgroup) and no cgroup namespace, on both.
    let mut p = svc();
    p.privileged = true;
    for host in [host(), v2] {
        let spec = spec_on(&p, &image, r.path(), &host).unwrap();
        assert!(cgroup_mounts_of(&spec).is_empty());
        assert!(!ns_types(&spec).contains(&LinuxNamespaceType::Cgroup));
    }
}

/// The test rootfs and a service running its `/bin/sh`.
fn sh_service() -> (tempfile::TempDir, Service) {
    let mut s = svc();
    s.command = Some(vec!["/bin/sh".into()]);
    (rootfs(), s)
}

/// The spec of `s` on rootfs `r` with the image's defaults empty.
fn spec_of(s: &Service, r: &tempfile::TempDir) -> Result<Spec> {
    spec_for(s, &ImageDefaults::default(), r.path())
}

fn svc() -> Service {
    Service {
        name: "t".into(),
        image: "img".into(),
        ..Default::default()
    }
}

fn ns_types(spec: &Spec) -> Vec<LinuxNamespaceType> {
    spec.linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect()
}

#[test]
fn caps_from_status_follow_the_bounding_set_without_sys_resource() {
    let caps = caps_from_status("Name:\tx\nCapBnd:\t000001fffeffffff\n");
    assert!(!caps.contains(&Capability::SysResource));
    assert!(caps.contains(&Capability::SysAdmin) && caps.contains(&Capability::Bpf));
    assert_eq!(caps.len(), 40);
}

#[test]
fn bundle_command_follows_compose_override_rules() {
    let r = rootfs();
    let image = ImageDefaults {
        entrypoint: vec!["/bin/sh".into()],
        cmd: vec!["-c".into(), "echo image".into()],
        env: vec!["PATH=/bin".into(), "A=image".into()],
        working_dir: Some("/etc".into()),
        user: None,
    };
    let spec = spec_for(&svc(), &image, r.path()).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.args().as_ref().unwrap(), &["/bin/sh", "-c", "echo image"]);
    assert_eq!(p.cwd(), Path::new("/etc"));

    let mut s = svc();
    s.command = Some(vec!["-c".into(), "echo svc".into()]);
    s.environment.insert("A".into(), "svc".into());
    let spec = spec_for(&s, &image, r.path()).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.args().as_ref().unwrap(), &["/bin/sh", "-c", "echo svc"]);
    assert_eq!(p.env().as_ref().unwrap(), &["PATH=/bin", "A=svc"]);

    s.entrypoint = Some(vec!["sh".into()]);
    s.command = None;
    let spec = spec_for(&s, &image, r.path()).unwrap();
    // A service entrypoint drops the image's cmd; `sh` is found through PATH and two symlinks.
    assert_eq!(spec.process().as_ref().unwrap().args().as_ref().unwrap(), &["sh"]);
}

#[test]
fn bundle_missing_entrypoint_names_service_and_program() {
    let r = rootfs();
    let mut s = svc();
    s.entrypoint = Some(vec!["etcd".into()]);
    let err = spec_of(&s, &r).unwrap_err().to_string();
    assert!(err.contains("service `t`") && err.contains("`etcd` not found"), "{err}");
    s.entrypoint = None;
    let err = spec_of(&s, &r).unwrap_err().to_string();
    assert!(err.contains("no command"), "{err}");
}

#[test]
fn bundle_user_resolves_names_from_the_image() {
    let (r, mut s) = sh_service();
    for (user, want) in [
        ("etcd", (998, 997)),
        ("1000:kvm", (1000, 105)),
        ("998", (998, 997)),
        ("5:6", (5, 6)),
    ] {
        s.user = Some(user.into());
        let spec = spec_of(&s, &r).unwrap();
        let u = spec.process().as_ref().unwrap().user();
        assert_eq!((u.uid(), u.gid()), want, "{user}");
    }
    s.user = Some("nobody".into());
    assert!(matches!(spec_of(&s, &r), Err(BundleError::UnknownUser { .. })));
}

#[test]
fn bundle_default_is_isolated_and_unprivileged() {
    let (r, mut s) = sh_service();
    s.cap_add = vec!["NET_ADMIN".into(), "SYS_RESOURCE".into()];
    let spec = spec_of(&s, &r).unwrap();
    let ns = ns_types(&spec);
    assert!(ns.contains(&LinuxNamespaceType::Pid) && ns.contains(&LinuxNamespaceType::Network));
    let caps = spec.process().as_ref().unwrap().capabilities().as_ref().unwrap();
    let eff = caps.effective().as_ref().unwrap();
    assert!(eff.contains(&Capability::NetAdmin) && eff.contains(&Capability::Chown));
    assert!(!eff.contains(&Capability::SysAdmin));
    // Not in the host's bounding set: asking for it must not make the container fail to start.
    assert!(!eff.contains(&Capability::SysResource));
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux
        .masked_paths()
        .as_ref()
        .unwrap()
        .iter()
        .any(|p| p == "/proc/kcore"));
    let rules = linux.resources().as_ref().unwrap().devices().as_ref().unwrap();
    assert!(!rules[0].allow());
    assert!(linux.devices().as_ref().is_none_or(|d| d.is_empty()));
    let sys = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/sys"))
        .unwrap();
    assert_eq!(sys.typ().as_deref(), Some("sysfs"));
    assert!(sys.options().as_ref().unwrap().contains(&"ro".to_owned()));
}

#[test]
fn bundle_privileged_host_namespaces_match_the_kubelet_contract() {
    let (r, mut s) = sh_service();
    s.privileged = true;
    s.network_host = true;
    s.pid_host = true;
    s.volumes = vec![
        Volume {
            source: "/var/lib/kubelet".into(),
            target: "/var/lib/kubelet".into(),
            read_only: false,
            propagation: Propagation::Shared,
        },
        Volume {
            source: "/etc/ssl".into(),
            target: "/etc/ssl".into(),
            read_only: true,
            propagation: Propagation::Private,
        },
    ];
    s.mem_limit = Some(256 << 20);
    s.cpus = Some(1.5);
    let spec = spec_of(&s, &r).unwrap();
    assert_eq!(
        ns_types(&spec),
        [
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts
        ]
    );
    let caps = spec.process().as_ref().unwrap().capabilities().as_ref().unwrap();
    assert_eq!(caps.bounding().as_ref().unwrap().len(), 40);
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.masked_paths().as_ref().unwrap().is_empty());
    assert!(linux.readonly_paths().as_ref().unwrap().is_empty());
    assert_eq!(linux.rootfs_propagation().as_deref(), Some("shared"));
    assert_eq!(linux.cgroups_path().as_deref(), Some(Path::new("/kboot/t")));
    assert!(linux.resources().as_ref().unwrap().devices().as_ref().unwrap()[0].allow());
    assert_eq!(linux.devices().as_ref().unwrap()[0].path(), Path::new("/dev/kvm"));
    let res = linux.resources().as_ref().unwrap();
    assert_eq!(res.memory().as_ref().unwrap().limit(), Some(256 << 20));
    assert_eq!(res.cpu().as_ref().unwrap().quota(), Some(150_000));
    let mounts = spec.mounts().as_ref().unwrap();
    let find = |d: &str| mounts.iter().find(|m| m.destination() == Path::new(d)).unwrap();
    assert_eq!(find("/dev").typ().as_deref(), Some("tmpfs"));
    let sys = find("/sys").options().as_ref().unwrap();
    assert!(sys.contains(&"rbind".to_owned()) && sys.contains(&"rw".to_owned()));
    let kubelet = find("/var/lib/kubelet").options().as_ref().unwrap();
    assert!(kubelet.contains(&"rbind".to_owned()) && kubelet.contains(&"rshared".to_owned()));
    assert!(find("/etc/ssl").options().as_ref().unwrap().contains(&"ro".to_owned()));
}

#[test]
fn bundle_devices_are_created_and_allowed() {
    let (r, mut s) = sh_service();
    s.devices = vec![Device {
        host: "/dev/null".into(),
        container: "/dev/mynull".into(),
        permissions: "rw".into(),
    }];
    let spec = spec_of(&s, &r).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    let d = &linux.devices().as_ref().unwrap()[0];
    assert_eq!(
        (d.path().as_path(), d.major(), d.minor()),
        (Path::new("/dev/mynull"), 1, 3)
    );
    let rule = &linux.resources().as_ref().unwrap().devices().as_ref().unwrap()[1];
    assert!(rule.allow() && rule.major() == Some(1) && rule.access().as_deref() == Some("rw"));
    s.devices[0].host = "/dev/no-such-device".into();
    assert!(matches!(spec_of(&s, &r), Err(BundleError::Device { .. })));
}

#[test]
fn bundle_config_json_round_trips() {
    let (r, s) = sh_service();
    let spec = spec_of(&s, &r).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &spec).unwrap();
    let back: Spec = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    assert_eq!(back, spec);
}

#[test]
fn an_unchanged_bundle_is_not_rewritten() {
    use std::os::unix::fs::MetadataExt;
    let (r, s) = sh_service();
    let spec = spec_of(&s, &r).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &spec).unwrap();
    let inode = fs::metadata(&path).unwrap().ino();
    // The same spec built again: its capability sets iterate in another order.
    let again: Spec = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    write_config(dir.path(), &again).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().ino(), inode, "unchanged: kept as it was");
    let mut changed = spec.clone();
    changed.set_hostname(Some("other".into()));
    write_config(dir.path(), &changed).unwrap();
    assert_ne!(fs::metadata(&path).unwrap().ino(), inode, "changed: replaced");
    let back: Spec = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(back, changed);
}

#[test]
fn host_devices_lists_nodes_but_not_libcontainer_defaults() {
    let devs = host_devices(Path::new("/dev"));
    assert!(devs.iter().all(|d| d.path() != Path::new("/dev/null")));
    assert!(devs.iter().all(|d| !d.path().starts_with("/dev/pts")));
}

#[test]
fn bundle_unprivileged_gets_default_seccomp_privileged_none() {
    let (r, mut s) = sh_service();
    let spec = spec_of(&s, &r).unwrap();
    let sc = spec.linux().as_ref().unwrap().seccomp().as_ref().unwrap();
    assert_eq!(sc.default_action(), oci_spec::runtime::LinuxSeccompAction::ScmpActErrno);
    // Set, libcontainer would load the filter after dropping CAP_SYS_ADMIN and fail.
    assert_eq!(spec.process().as_ref().unwrap().no_new_privileges(), None);
    let caps = spec.process().as_ref().unwrap().capabilities().as_ref().unwrap();
    assert!(caps.ambient().as_ref().is_none_or(|a| a.is_empty()));
    s.privileged = true;
    let spec = spec_of(&s, &r).unwrap();
    assert!(spec.linux().as_ref().unwrap().seccomp().is_none());
}

fn caps_of(add: &[&str], drop: &[&str]) -> Vec<Capability> {
    let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    security::capability_set(false, &v(add), &v(drop), &host())
}

#[test]
fn security_capabilities_follow_containerd_add_drop_rules() {
    let default = caps_of(&[], &[]);
    assert_eq!(default.len(), security::DEFAULT_CAPS.len());
    assert!(default.contains(&Capability::NetRaw));
    assert!(!caps_of(&[], &["NET_RAW"]).contains(&Capability::NetRaw));
    assert!(caps_of(&[], &["ALL"]).is_empty());
    assert_eq!(caps_of(&[], &["ALL"]).len(), 0);
    assert_eq!(caps_of(&["SYS_ADMIN"], &["ALL"]), vec![Capability::SysAdmin]);
    let all_but_chown = caps_of(&["ALL"], &["CHOWN"]);
    assert_eq!(all_but_chown.len(), 39);
    assert!(!all_but_chown.contains(&Capability::Chown));
    // Not in the host's bounding set: never asked for, whatever the request says.
    assert!(!caps_of(&["SYS_RESOURCE"], &[]).contains(&Capability::SysResource));
}

#[test]
fn security_apply_sets_paths_nnp_groups_seccomp_and_readonly_root() {
    let (r, s) = sh_service();
    let base = spec_of(&s, &r).unwrap();
    let mut spec = base.clone();
    let sec = Security {
        cap_drop: vec!["ALL".into()],
        masked_paths: vec!["/bin/ls".into()],
        readonly_paths: vec!["/tmp".into()],
        no_new_privileges: true,
        seccomp: SeccompProfile::Unconfined,
        additional_gids: vec![1234, 5678],
        readonly_rootfs: true,
        ..Default::default()
    };
    security::apply(&mut spec, &sec, &host(), "t").unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.no_new_privileges(), Some(true));
    assert_eq!(p.user().additional_gids().as_deref(), Some(&[1234, 5678][..]));
    assert!(p
        .capabilities()
        .as_ref()
        .unwrap()
        .bounding()
        .as_ref()
        .unwrap()
        .is_empty());
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(linux.masked_paths().as_deref(), Some(&["/bin/ls".to_string()][..]));
    assert_eq!(linux.readonly_paths().as_deref(), Some(&["/tmp".to_string()][..]));
    assert!(linux.seccomp().is_none());
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));

    // Empty lists keep the defaults; privileged clears them and ignores any profile.
    let mut spec = base.clone();
    security::apply(&mut spec, &Security::default(), &host(), "t").unwrap();
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux
        .masked_paths()
        .as_ref()
        .unwrap()
        .contains(&"/proc/kcore".to_string()));
    assert!(linux.seccomp().is_some());
    let mut spec = base;
    let privileged = Security {
        privileged: true,
        seccomp: SeccompProfile::Localhost("/nonexistent".into()),
        ..Default::default()
    };
    security::apply(&mut spec, &privileged, &host(), "t").unwrap();
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.masked_paths().as_ref().unwrap().is_empty() && linux.seccomp().is_none());
}
