//! `run master` as root, as far as the components exist here: preflight and PKI run for real;
//! the Kubernetes images are not in the store and no registry is reachable from the test
//! machines, so the run stops at the pull step, naming each image and the air-gap route.

use std::os::unix::fs::PermissionsExt;

use kboot::pki::{Authority, PkiLayout};
use kboot::roles::config::Key;

use crate::common::{require_root, Dir};

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

fn local_ip() -> String {
    kboot::roles::netdetect::host_ipv4_addresses()
        .unwrap()
        .into_iter()
        .map(|(_, a)| a)
        .find(|a| !a.is_loopback())
        .expect("this test needs a host with a non-loopback IPv4 address")
        .to_string()
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn run_master_as_root_makes_the_pki_once_and_names_the_images_it_could_not_pull() {
    require_root();
    let d = Dir::new();
    no_network(&d);
    let ip = local_ip();
    let run = || {
        let mut cmd = d.kboot();
        for k in Key::ALL {
            cmd.env_remove(k.env());
        }
        cmd.args(["run", "master", "--detach", "--ip-address", &ip, "--arch", "amd64"])
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
    let mut cmd = std::process::Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg("--endpoints=https://127.0.0.1:2379")
        .arg(format!("--cacert={}", pki.join("etcd/ca.crt").display()))
        .args(["--dial-timeout=2s", "--command-timeout=3s"]);
    if client_cert {
        cmd.arg(format!("--cert={}", pki.join("etcd/healthcheck-client.crt").display()))
            .arg(format!("--key={}", pki.join("etcd/healthcheck-client.key").display()));
    }
    cmd.args(["endpoint", "health"])
        .output()
        .expect("etcd-client is installed")
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn run_master_with_local_images_serves_etcd_over_mutual_tls_converges_and_goes_down() {
    require_root();
    let d = Dir::new();
    no_network(&d);
    let ip = local_ip();
    // Debian's etcd 3.4 stands in for registry.k8s.io/etcd; the Kubernetes components are not
    // built yet, so stand-ins that stay up (kubelet) or succeed (kubectl) take their names.
    let libs = [
        ("/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"),
        ("/lib64/ld-linux-x86-64.so.2", "/lib64/ld-linux-x86-64.so.2"),
    ];
    let etcd = rootfs(
        &d,
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
    load_image(&d, &etcd, &["registry.k8s.io/etcd:3.6.4-0"]);
    let stub = rootfs(
        &d,
        "stub",
        &[],
        &[
            ("/usr/local/bin/kubelet", "exec sleep 100000"),
            ("/usr/local/bin/kubectl", "exit 0"),
        ],
    );
    load_image(
        &d,
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
    let run = || {
        let mut cmd = d.kboot();
        for k in Key::ALL {
            cmd.env_remove(k.env());
        }
        cmd.args([
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
