//! `run master` as root, as far as the components exist here: preflight and PKI run for real;
//! the Kubernetes images are not in the store and no registry is reachable from the test
//! machines, so the run stops at the pull step, naming each image and the air-gap route.

use std::os::unix::fs::PermissionsExt;

use kboot::pki::{Authority, PkiLayout};
use kboot::roles::config::Key;
use nix::sys::signal::Signal;

use crate::common::{require_root, Dir};

/// A host runs one role (/etc/kubernetes, /var/lib/kubelet do not move with --root), and the
/// test harness runs these tests on parallel threads of one process: each holds this lock
/// for its whole life, so a role never meets another test's role and is refused.
static HOST_ROLE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn host_role() -> std::sync::MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next one still needs the host to itself.
    HOST_ROLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends every registry the roles use to a closed loopback port, never to the network.
fn no_network(d: &Dir) {
    let mut toml = String::new();
    for host in ["registry.k8s.io", "ghcr.io", "docker.io", "quay.io"] {
        toml.push_str(&format!(
            "[[registry]]\nhost = \"{host}\"\nmirrors = [\"127.0.0.1:9\"]\nfallback = false\ninsecure = true\n\n"
        ));
    }
    std::fs::create_dir_all(d.path().join("config")).unwrap();
    std::fs::write(d.path().join("config/registries.toml"), toml).unwrap();
}

/// `kboot` on the test's dirs, without the caller's kube-deploy variables.
fn kboot_clean_env(d: &Dir) -> std::process::Command {
    let mut cmd = d.kboot();
    for k in Key::ALL {
        cmd.env_remove(k.env());
    }
    cmd
}

/// What every role test starts with: root, the host's role directories to itself, its own
/// kboot dirs with registries sent nowhere, and this host's address.
fn role_host() -> (std::sync::MutexGuard<'static, ()>, Dir, String) {
    require_root();
    let host = host_role();
    let d = Dir::new();
    no_network(&d);
    (host, d, crate::common::local_ip().to_string())
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn run_master_as_root_makes_the_pki_once_and_names_the_images_it_could_not_pull() {
    let (_host, d, ip) = role_host();
    let run = || {
        kboot_clean_env(&d)
            .args(["run", "master", "--detach", "--ip-address", &ip, "--arch", "amd64"])
            .output()
            .unwrap()
    };
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("could not pull") && err.contains("registry.k8s.io/etcd:3.6.4-0") && err.contains("kboot load"),
        "{err}"
    );
    let layout = PkiLayout::new(d.path().join("root/pki"));
    let ca = std::fs::read(layout.ca_cert(Authority::Kubernetes)).expect("the PKI was created");
    let mode = std::fs::metadata(layout.key("apiserver")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(d.path().join("root/pki/bootstrap/10-bootstrap-token.yaml").exists());

    // A second run converges: same CA, nothing regenerated.
    let out = run();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read(layout.ca_cert(Authority::Kubernetes)).unwrap(), ca);
}

/// An OCI layout holding `rootfs`, loaded into the test's store under each of `names`.
fn load_image(d: &Dir, rootfs: &std::path::Path, names: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        let layout = d
            .path()
            .join(format!("oci-{}-{i}", rootfs.file_name().unwrap().to_string_lossy()));
        rootfs_tools::ImageBuilder::new()
            .layer(rootfs_tools::Layer::new().dir_contents(rootfs))
            .env("PATH=/usr/local/bin:/usr/bin:/bin")
            .write_layout(&layout, name)
            .unwrap();
        crate::common::run_ok(d.kboot().arg("load").arg("-i").arg(&layout));
    }
}

/// A busybox rootfs with `files` (host path → path in the image) and `scripts` (path → sh body).
fn rootfs(d: &Dir, name: &str, files: &[(&str, &str)], scripts: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = d.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let root = crate::containers_support::busybox_rootfs(&dir);
    for (src, dst) in files {
        let to = root.join(dst.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(src, &to).unwrap_or_else(|e| panic!("copy {src}: {e} (scripts/install-deps.sh installs it)"));
    }
    for (dst, body) in scripts {
        let to = root.join(dst.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(&to, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    root
}

fn etcdctl(pki: &std::path::Path, client_cert: bool) -> std::process::Output {
    etcdctl_cmd(pki, client_cert)
        .args(["endpoint", "health"])
        .output()
        .expect("etcd-client is installed")
}

/// `etcdctl` against the master's etcd, with the health-check client certificate or without.
fn etcdctl_cmd(pki: &std::path::Path, client_cert: bool) -> std::process::Command {
    let mut cmd = std::process::Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg("--endpoints=https://127.0.0.1:2379")
        .arg(format!("--cacert={}", pki.join("etcd/ca.crt").display()))
        .args(["--dial-timeout=2s", "--command-timeout=3s"]);
    if client_cert {
        cmd.arg(format!("--cert={}", pki.join("etcd/healthcheck-client.crt").display()))
            .arg(format!("--key={}", pki.join("etcd/healthcheck-client.key").display()));
    }
    cmd
}

/// Debian's etcd 3.4 stands in for registry.k8s.io/etcd; the Kubernetes components are not
/// built on every test machine, so stand-ins that stay up (kubelet) or succeed (kubectl) take
/// their names.
fn load_master_images(d: &Dir) {
    let libs = [
        ("/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"),
        ("/lib64/ld-linux-x86-64.so.2", "/lib64/ld-linux-x86-64.so.2"),
    ];
    let etcd = rootfs(
        d,
        "etcd",
        &[
            &libs[..],
            &[
                ("/usr/bin/etcd", "/usr/local/bin/etcd"),
                ("/usr/bin/etcdctl", "/usr/local/bin/etcdctl"),
            ],
        ]
        .concat(),
        &[],
    );
    load_image(d, &etcd, &["registry.k8s.io/etcd:3.6.4-0"]);
    let stub = rootfs(
        d,
        "stub",
        &[],
        &[
            ("/usr/local/bin/kubelet", "exec sleep 100000"),
            ("/usr/local/bin/kubectl", "exit 0"),
        ],
    );
    load_image(
        d,
        &stub,
        &[
            "ghcr.io/siderolabs/kubelet:v1.34.4",
            "registry.k8s.io/kubectl:v1.34.4",
            "registry.k8s.io/kube-apiserver:v1.34.4",
            "registry.k8s.io/kube-controller-manager:v1.34.4",
            "registry.k8s.io/kube-scheduler:v1.34.4",
            "registry.k8s.io/kube-proxy:v1.34.4",
            "registry.k8s.io/coredns/coredns:v1.12.1",
        ],
    );
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn run_master_with_local_images_serves_etcd_over_mutual_tls_converges_and_goes_down() {
    let (_host, d, ip) = role_host();
    load_master_images(&d);
    let run = || {
        kboot_clean_env(&d)
            .args([
                "run",
                "master",
                "--detach",
                "--timeout",
                "90s",
                "--ip-address",
                &ip,
                "--arch",
                "amd64",
            ])
            .output()
            .unwrap()
    };
    let paths = kboot::state::Paths::under(d.path());
    let mut guard = scopeguard_down(&d, &paths);
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("kboot run worker --master") && stdout.contains("--ca-cert-hash sha256:"),
        "{stdout}"
    );

    let pki = paths.pki();
    let healthy = etcdctl(&pki, true);
    assert!(
        healthy.status.success(),
        "etcd is not healthy over TLS: {}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    assert!(
        !etcdctl(&pki, false).status.success(),
        "etcd must require a client certificate"
    );
    let data_mode = std::fs::metadata(paths.etcd_data()).unwrap().permissions().mode() & 0o777;
    assert_eq!(data_mode, 0o700);

    let pid_of = |name: &str| {
        let out = crate::common::run_ok(d.kboot().args(["ps", "--format", "json"]));
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        list.iter().find(|c| c["name"] == name).map(|c| c["pid"].clone())
    };
    let etcd_pid = pid_of("etcd");
    assert!(etcd_pid.as_ref().is_some_and(|p| p.is_i64()), "{etcd_pid:?}");
    let out = run();
    assert!(
        out.status.success(),
        "a second run converges: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pid_of("etcd"), etcd_pid, "nothing started twice");

    // One role per host: another root is refused before it touches anything.
    let other = Dir::new();
    no_network(&other);
    let out = other
        .kboot()
        .args(["run", "master", "--detach", "--ip-address", &ip, "--arch", "amd64"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&paths.root().display().to_string()) && err.contains("down --purge"),
        "{err}"
    );
    assert!(!other.path().join("root/pki").exists(), "the refused root made no PKI");

    // down: containers gone, the kubelet's shared mount gone, etcd data and PKI kept;
    // then --purge semantics remove them and the files the plan wrote.
    guard.done = true;
    crate::common::run_ok(d.kboot().arg("down"));
    let report = kboot::roles::down_role_host(&paths, false);
    assert!(report.errors.is_empty(), "{report:?}");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(kboot::roles::cleanup::mounts_under(&mountinfo, std::path::Path::new("/var/lib/kubelet")).is_empty());
    assert!(!etcdctl(&pki, true).status.success(), "etcd is stopped");
    assert!(
        paths.etcd_data().join("member").exists() && pki.join("ca.key").exists(),
        "kept without purge"
    );
    let report = kboot::roles::down_role_host(&paths, true);
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(!paths.etcd_data().exists() && !pki.exists());
    assert!(!std::path::Path::new("/etc/kubernetes/manifests/kube-apiserver.yaml").exists());
}

/// `kboot down` then the role cleanup, even when the test fails halfway.
struct DownGuard<'a> {
    d: &'a Dir,
    paths: kboot::state::Paths,
    /// Set once the test has cleaned up itself (and asserted on it).
    done: bool,
}

fn scopeguard_down<'a>(d: &'a Dir, paths: &kboot::state::Paths) -> DownGuard<'a> {
    DownGuard {
        d,
        paths: paths.clone(),
        done: false,
    }
}

impl Drop for DownGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.d.kboot().arg("down").output();
            let _ = kboot::roles::down_role_host(&self.paths, true);
        }
    }
}

/// The boot unit's `ExecStart`, started as systemd starts it: its own session, `/` as working
/// directory, stdin from /dev/null, and systemd's environment (PATH only), so nothing of the
/// test's environment (KBOOT_ROOT, …) helps it.
fn start_as_systemd(exec: &[String], log: &std::path::Path) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log).unwrap();
    let mut cmd = std::process::Command::new(&exec[0]);
    cmd.args(&exec[1..])
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
    }
    cmd.spawn().unwrap()
}

/// Sends `sig` to a process this test started (or one of its node's); one already gone is fine.
fn signal(pid: i32, sig: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// Every process of a root's containers (memory cgroup subtree) and their shims (records).
fn node_pids(paths: &kboot::state::Paths) -> Vec<i32> {
    let parent = std::path::PathBuf::from(paths.cgroup("x"));
    let parent = parent.parent().unwrap().strip_prefix("/").unwrap().to_path_buf();
    let mut pids = Vec::new();
    for cg in std::fs::read_dir(std::path::Path::new("/sys/fs/cgroup/memory").join(parent))
        .into_iter()
        .flatten()
        .flatten()
    {
        let procs = std::fs::read_to_string(cg.path().join("cgroup.procs")).unwrap_or_default();
        pids.extend(procs.lines().filter_map(|l| l.parse::<i32>().ok()));
    }
    for rec in std::fs::read_dir(paths.state().join("shims"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(rec.path()).unwrap()).unwrap_or_default();
        pids.extend(rec["shim_pid"].as_i64().map(|p| p as i32));
    }
    pids
}

fn etcd_pid(d: &Dir) -> Option<i64> {
    let out = crate::common::run_ok(d.kboot().args(["ps", "--format", "json"]));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    list.iter()
        .find(|c| c["name"] == "etcd" && c["status"] == "running")
        .and_then(|c| c["pid"].as_i64())
}

fn wait_for(what: &str, timeout: std::time::Duration, ok: impl FnMut() -> bool) {
    wait_for_or(what, timeout, ok, String::new)
}

/// `wait_for` that adds `diagnose()` (the node's log and containers) to the timeout's message.
fn wait_for_or(what: &str, timeout: std::time::Duration, mut ok: impl FnMut() -> bool, diagnose: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + timeout;
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}",
            diagnose()
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// Issue 15: the boot unit's command, run as systemd runs it after a reboot (every process
/// killed, the state dir under /run gone, every mount gone), brings the master back with the
/// same PKI and the same etcd data; stopping the unit as systemd does (`KillMode=process`,
/// `KillSignal=SIGQUIT`) leaves the containers running, and the next start adopts them.
#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn boot_service_brings_the_master_back_after_a_reboot_with_the_same_pki_and_etcd_data() {
    let (_host, d, ip) = role_host();
    load_master_images(&d);
    let paths = kboot::state::Paths::under(d.path());
    let _guard = scopeguard_down(&d, &paths);
    let unit = crate::common::run_ok(kboot_clean_env(&d).args([
        "service",
        "install",
        "master",
        "--print",
        "--ip-address",
        &ip,
    ]));
    let unit = String::from_utf8(unit.stdout).unwrap();
    assert!(
        unit.contains("KillMode=process\n") && unit.contains("KillSignal=SIGQUIT\n"),
        "{unit}"
    );
    let exec: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .split(' ')
        .map(String::from)
        .collect();
    let log = d.path().join("service.log");
    let diagnose = || {
        let ps = d.kboot().arg("ps").output().unwrap();
        format!(
            "--- the unit's log ({}):\n{}\n--- kboot ps:\n{}{}",
            log.display(),
            std::fs::read_to_string(&log).unwrap_or_default(),
            String::from_utf8_lossy(&ps.stdout),
            String::from_utf8_lossy(&ps.stderr)
        )
    };
    // The unit's process exiting (a preflight failure, say) ends the wait at once, with its log.
    let up = |d: &Dir, sup: &mut std::process::Child| {
        wait_for_or(
            "etcd over TLS",
            std::time::Duration::from_secs(90),
            || {
                if let Some(status) = sup.try_wait().unwrap() {
                    panic!(
                        "the unit's command exited ({status}) before etcd came up\n{}",
                        diagnose()
                    );
                }
                etcdctl(&paths.pki(), true).status.success()
            },
            diagnose,
        );
        wait_for("etcd in ps", std::time::Duration::from_secs(10), || {
            etcd_pid(d).is_some()
        });
    };
    let pki = paths.pki();
    let mut sup = start_as_systemd(&exec, &log);
    up(&d, &mut sup);
    crate::common::run_ok(etcdctl_cmd(&pki, true).args(["put", "issue-15", "kept across the reboot"]));
    let layout = PkiLayout::new(&pki);
    let ca = std::fs::read(layout.ca_key(Authority::Kubernetes)).unwrap();
    let etcd_ca = std::fs::read(layout.ca_key(Authority::Etcd)).unwrap();

    // The reboot: every process goes at once, /run is empty, nothing is mounted.
    signal(sup.id() as i32, Signal::SIGKILL);
    let _ = sup.wait();
    for pid in node_pids(&paths) {
        signal(pid, Signal::SIGKILL);
    }
    wait_for(
        "the node's processes to die",
        std::time::Duration::from_secs(10),
        || {
            node_pids(&paths)
                .iter()
                .all(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).map_or(true, |s| s.contains(") Z ")))
        },
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for dir in [d.path(), std::path::Path::new("/var/lib/kubelet")] {
        for m in kboot::roles::cleanup::mounts_under(&mountinfo, dir) {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    std::fs::remove_dir_all(paths.state()).unwrap();
    assert!(!etcdctl(&pki, true).status.success(), "etcd is down");

    let mut sup = start_as_systemd(&exec, &log);
    up(&d, &mut sup);
    let got = crate::common::run_ok(etcdctl_cmd(&pki, true).args(["get", "issue-15", "--print-value-only"]));
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        "kept across the reboot",
        "same etcd data"
    );
    assert_eq!(
        std::fs::read(layout.ca_key(Authority::Kubernetes)).unwrap(),
        ca,
        "same cluster CA"
    );
    assert_eq!(
        std::fs::read(layout.ca_key(Authority::Etcd)).unwrap(),
        etcd_ca,
        "same etcd CA"
    );

    // `systemctl restart kboot` (an upgrade): SIGQUIT to the supervisor alone, then ExecStart.
    let etcd = etcd_pid(&d).unwrap();
    signal(sup.id() as i32, Signal::SIGQUIT);
    let status = sup.wait().unwrap();
    assert!(status.success(), "the supervisor exits cleanly on SIGQUIT: {status}");
    assert!(
        etcdctl(&pki, true).status.success(),
        "etcd kept running without its supervisor"
    );
    let mut sup = start_as_systemd(&exec, &log);
    wait_for("the new supervisor", std::time::Duration::from_secs(10), || {
        paths.supervisor_pid().exists()
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        etcd_pid(&d),
        Some(etcd),
        "the new supervisor adopted etcd, it did not start another"
    );
    signal(sup.id() as i32, Signal::SIGTERM);
    let _ = sup.wait();
}
