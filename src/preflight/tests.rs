//! Preflight against fixture `/proc`, `/sys` and `/dev` trees.

use std::os::unix::fs::symlink;

use super::*;

/// A host tree that passes every check; tests break one thing each.
fn healthy() -> (tempfile::TempDir, Host) {
    let tmp = tempfile::tempdir().unwrap();
    let host = Host {
        proc: tmp.path().join("proc"),
        sys: tmp.path().join("sys"),
        dev: tmp.path().join("dev"),
        euid: 0,
        own_cgroups: vec!["/kboot/".into(), "/kubepods".into()],
        own_scopes_in: vec!["/kboot.slice".into()],
    };
    let w = |rel: &str, text: &str| {
        let path = tmp.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    };
    w(
        "proc/net/tcp",
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n",
    );
    w("proc/swaps", "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n");
    w(
        "proc/cgroups",
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t2\t1\t1\ncpu\t3\t1\t1\ncpuacct\t3\t1\t1\nmemory\t4\t1\t1\npids\t5\t1\t1\nhugetlb\t0\t1\t1\n",
    );
    for ns in ["mnt", "pid", "net", "ipc", "uts"] {
        w(&format!("proc/self/ns/{ns}"), "");
    }
    w("proc/sys/net/ipv4/ip_forward", "1\n");
    w("proc/sys/net/bridge/bridge-nf-call-iptables", "1\n");
    w("dev/kmsg", "");
    w("dev/net/tun", "");
    (tmp, host)
}

fn cfg(role: Role, use_cni: bool) -> NodeConfig {
    use crate::roles::config::Key;
    crate::roles::config::tests::config(
        role,
        &[
            (Key::IpAddress, "192.0.2.10"),
            (Key::MasterIp, "192.0.2.1"),
            (Key::Arch, "amd64"),
            (Key::UseCni, if use_cni { "true" } else { "false" }),
        ],
    )
}

#[test]
fn check_node_healthy_host_passes() {
    let (_t, host) = healthy();
    check_node(&host, &cfg(Role::Master, true)).unwrap();
}

#[test]
fn check_node_not_root_is_reported_with_the_fix() {
    let (_t, mut host) = healthy();
    host.euid = 1000;
    let err = check_node(&host, &cfg(Role::Worker, false)).unwrap_err();
    assert_eq!(err.0, [Problem::NotRoot { euid: 1000 }]);
    assert!(err.to_string().contains("sudo"));
}

/// Adds a LISTEN socket on `port` held by process `pid` (`comm`) in `cgroup`.
fn listen(host: &Host, port: u16, inode: u64, pid: u32, comm: &str, cgroup: &str) {
    let tcp = host.proc.join("net/tcp");
    let mut text = fs::read_to_string(&tcp).unwrap();
    text.push_str(&format!(
        "   0: 00000000:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
    ));
    // An established connection on the same port must not count.
    text.push_str(&format!(
        "   1: 0100007F:{port:04X} 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 999{inode} 1 0000000000000000 100 0 0 10 0\n"
    ));
    fs::write(&tcp, text).unwrap();
    let pdir = host.proc.join(pid.to_string());
    fs::create_dir_all(pdir.join("fd")).unwrap();
    symlink("/dev/null", pdir.join("fd/0")).unwrap();
    symlink(format!("socket:[{inode}]"), pdir.join("fd/7")).unwrap();
    fs::write(pdir.join("comm"), format!("{comm}\n")).unwrap();
    fs::write(pdir.join("cgroup"), cgroup).unwrap();
}

#[test]
fn check_ports_names_the_process_holding_a_port() {
    let (_t, host) = healthy();
    listen(&host, 6443, 4242, 321, "nginx", "0::/system.slice/nginx.service\n");
    let problems = check_ports(&host, role_ports(Role::Master));
    assert_eq!(
        problems,
        [Problem::PortTaken {
            port: 6443,
            owner: Some((321, "nginx".into()))
        }]
    );
    assert!(problems[0].to_string().contains("nginx (pid 321)"));
    assert!(
        check_ports(&host, role_ports(Role::Worker)).is_empty(),
        "a worker does not need 6443"
    );
}

#[test]
fn check_ports_accepts_kboots_own_processes_so_a_second_run_converges() {
    let (_t, host) = healthy();
    listen(&host, 2379, 5151, 77, "etcd", "4:memory:/kboot/etcd\n");
    listen(&host, 10250, 5152, 78, "kubelet", "4:memory:/kboot/kubelet\n");
    listen(
        &host,
        6443,
        5153,
        79,
        "kube-apiserver",
        "4:memory:/kubepods/burstable/pod1/c1\n",
    );
    assert!(check_ports(&host, role_ports(Role::Master)).is_empty());
    // Another installation's containers (a different root) are conflicts.
    let other = Host {
        own_cgroups: Host::for_paths(&crate::state::Paths::under("/elsewhere")).own_cgroups,
        ..host.clone()
    };
    assert_eq!(check_ports(&other, role_ports(Role::Master)).len(), 2);
}

#[test]
fn check_ports_accepts_kboots_own_systemd_scopes_and_not_another_roots() {
    let (_t, host) = healthy();
    // The default root, systemd driver: its containers are scopes directly in kboot.slice.
    let host = Host {
        own_scopes_in: Host::for_paths(&crate::state::Paths::default()).own_scopes_in,
        ..host
    };
    assert_eq!(host.own_scopes_in, ["/kboot.slice"]);
    listen(&host, 2379, 5151, 77, "etcd", "0::/kboot.slice/kboot-etcd.scope\n");
    listen(
        &host,
        10250,
        5152,
        78,
        "kubelet",
        "0::/kboot.slice/kboot-kubelet.scope\n",
    );
    listen(
        &host,
        6443,
        5153,
        79,
        "kube-apiserver",
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/kboot-c1.scope\n",
    );
    assert!(check_ports(&host, role_ports(Role::Master)).is_empty());
    // Another root's scopes sit in a nested slice: conflicts.
    listen(
        &host,
        2380,
        5154,
        80,
        "etcd",
        "0::/kboot.slice/kboot-0123456789ab.slice/kboot-etcd.scope\n",
    );
    assert_eq!(check_ports(&host, role_ports(Role::Master)).len(), 1);
    let other = Host::for_paths(&crate::state::Paths::under("/elsewhere"));
    assert!(
        other.own_scopes_in[0].starts_with("/kboot.slice/kboot-"),
        "{:?}",
        other.own_scopes_in
    );
}

#[test]
fn check_ports_owner_unknown_still_reports_the_port() {
    let (_t, host) = healthy();
    listen(&host, 10250, 6000, 55, "x", "");
    fs::remove_file(host.proc.join("55/fd/7")).unwrap();
    let problems = check_ports(&host, &[10250]);
    assert_eq!(
        problems,
        [Problem::PortTaken {
            port: 10250,
            owner: None
        }]
    );
    assert!(problems[0].to_string().contains("ss -ltnp"));
}

#[test]
fn check_swap_lists_the_swap_devices() {
    let (_t, host) = healthy();
    fs::write(
        host.proc.join("swaps"),
        "Filename\tType\tSize\tUsed\tPriority\n/dev/sda2   partition\t1000\t0\t-2\n/swapfile file 10 0 -3\n",
    )
    .unwrap();
    let p = check_swap(&host);
    assert_eq!(
        p,
        [Problem::SwapOn {
            devices: vec!["/dev/sda2".into(), "/swapfile".into()]
        }]
    );
    assert!(p[0].to_string().contains("swapoff -a"));
}

#[test]
fn check_cgroups_v1_says_which_controllers_are_missing_or_disabled() {
    let (_t, host) = healthy();
    fs::write(
        host.proc.join("cgroups"),
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t2\t1\t1\ncpu\t3\t1\t1\ncpuacct\t3\t1\t1\nmemory\t0\t1\t0\n",
    )
    .unwrap();
    let p = check_cgroups(&host);
    assert_eq!(
        p,
        [Problem::MissingCgroupControllers {
            missing: vec!["memory".into(), "pids".into()],
            version: 1
        }]
    );
}

#[test]
fn check_cgroups_v2_reads_the_unified_root() {
    let (_t, host) = healthy();
    let root = host.sys.join("fs/cgroup");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
    assert!(check_cgroups(&host).is_empty(), "v2 has no cpuacct and needs none");
    fs::write(root.join("cgroup.controllers"), "io pids\n").unwrap();
    let p = check_cgroups(&host);
    assert_eq!(
        p,
        [Problem::MissingCgroupControllers {
            missing: vec!["cpu".into(), "cpuset".into(), "memory".into()],
            version: 2
        }]
    );
}

#[test]
fn check_kernel_names_each_missing_feature() {
    let (_t, host) = healthy();
    fs::remove_file(host.dev.join("kmsg")).unwrap();
    fs::write(host.proc.join("sys/net/ipv4/ip_forward"), "0\n").unwrap();
    fs::remove_file(host.proc.join("sys/net/bridge/bridge-nf-call-iptables")).unwrap();
    let without_network = check_kernel(&host, false);
    let text: Vec<String> = without_network.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(
        text[0].contains("/dev/kmsg") && text[1].contains("ip_forward"),
        "{text:?}"
    );
    let with_network = check_kernel(&host, true);
    assert!(with_network.iter().any(|p| p.to_string().contains("br_netfilter")));
}

#[test]
fn check_node_collects_every_problem_in_one_error() {
    let (_t, mut host) = healthy();
    host.euid = 1;
    fs::write(host.proc.join("swaps"), "Filename\n/swapfile file 1 0 -1\n").unwrap();
    let err = check_node(&host, &cfg(Role::Master, false)).unwrap_err();
    assert_eq!(err.0.len(), 2);
    assert!(err.to_string().starts_with("2 problem(s)"));
}

#[test]
fn check_ports_on_the_real_proc_finds_a_loopback_listener_and_names_this_process() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let host = Host {
        euid: 0,
        ..Host::default()
    };
    let problems = check_ports(&host, &[port]);
    let me = std::process::id();
    assert!(
        matches!(&problems[..], [Problem::PortTaken { port: p, owner: Some((pid, _)) }] if *p == port && *pid == me),
        "{problems:?}"
    );
}

#[test]
fn enable_ip_forward_turns_it_on_so_preflight_passes() {
    let (_t, host) = healthy();
    fs::write(host.proc.join("sys/net/ipv4/ip_forward"), "0\n").unwrap();
    assert_eq!(check_kernel(&host, false).len(), 1);
    enable_ip_forward(&host).unwrap();
    assert!(check_kernel(&host, false).is_empty());
}
