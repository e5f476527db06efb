//! `kboot plan`, `certs`, `kubeconfig` and the worker join checks, as users run them.
//!
//! Golden files: `tests/golden/plan-*.yaml`. After an intended change, regenerate them with
//! `KBOOT_UPDATE_GOLDEN=1 cargo test --test integration roles_cli` and review the diff.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use kboot::pki::{self, NodeIdentity, PkiLayout};
use kboot::roles::config::Key;

use crate::common::{run_ok, Dir};

/// `kboot` with the default host layout (so plans print the real paths), a private config
/// dir, and none of the caller's kube-deploy variables.
pub fn plan_cmd(d: &Dir) -> Command {
    let mut cmd = d.kboot();
    cmd.env("KBOOT_ROOT", "/var/lib/kboot").env("KBOOT_STATE", "/run/kboot");
    for k in Key::ALL {
        cmd.env_remove(k.env());
    }
    cmd.env_remove("KBOOT_TOKEN").env_remove("KBOOT_CA_CERT_HASH");
    cmd
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name)
}

pub fn check_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("KBOOT_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {} ({e}); generate it with KBOOT_UPDATE_GOLDEN=1", path.display()));
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .take(10)
            .map(|(i, (e, a))| format!("line {}:\n  golden: {e}\n  actual: {a}", i + 1))
            .collect();
        panic!(
            "output differs from {} ({} vs {} lines):\n{}\nregenerate with KBOOT_UPDATE_GOLDEN=1 if intended",
            path.display(),
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}

/// (golden name, role, extra flags)
const CASES: &[(&str, &str, &[&str])] = &[
    ("plan-master-modern-v1.34.4.yaml", "master", &[]),
    (
        "plan-master-modern-v1.37.2-cni.yaml",
        "master",
        &[
            "--k8s-version",
            "v1.37.2",
            "--use-cni",
            "--flannel-backend",
            "vxlan",
            "--master",
            "203.0.113.5",
        ],
    ),
    ("plan-worker-modern-v1.34.4.yaml", "worker", &["--master", "192.0.2.1"]),
    (
        "plan-worker-modern-v1.36.3-cni.yaml",
        "worker",
        &[
            "--master",
            "192.0.2.1",
            "--k8s-version",
            "v1.36.3",
            "--use-cni",
            "--restart",
            "always",
        ],
    ),
    (
        "plan-master-hyperkube-v1.3.6.yaml",
        "master",
        &["--k8s-version", "v1.3.6"],
    ),
    (
        "plan-master-hyperkube-v1.3.6-containerized.yaml",
        "master",
        &["--k8s-version", "v1.3.6", "--use-containerized"],
    ),
    (
        "plan-master-hyperkube-v1.10.13.yaml",
        "master",
        &["--k8s-version", "v1.10.13"],
    ),
    (
        "plan-master-hyperkube-v1.18.20.yaml",
        "master",
        &["--k8s-version", "v1.18.20", "--use-cni"],
    ),
    (
        "plan-worker-hyperkube-v1.10.13.yaml",
        "worker",
        &["--k8s-version", "v1.10.13", "--master", "192.0.2.1"],
    ),
    (
        "plan-worker-hyperkube-v1.18.20.yaml",
        "worker",
        &["--k8s-version", "v1.18.20", "--master", "192.0.2.1"],
    ),
];

#[test]
fn plan_golden_master_and_worker_in_both_families_over_several_versions() {
    for (name, role, extra) in CASES {
        let d = Dir::new();
        let out = run_ok(
            plan_cmd(&d)
                .args(["plan", role, "--ip-address", "192.0.2.10", "--arch", "amd64"])
                .args(*extra),
        );
        // `command` names the binary under test and the test's config dir.
        let text = String::from_utf8(out.stdout)
            .unwrap()
            .replace(
                &crate::common::kboot_bin().display().to_string(),
                "/usr/local/bin/kboot",
            )
            .replace(&d.path().display().to_string(), "/TMP");
        check_golden(name, &text);
    }
}

#[test]
fn plan_json_is_the_same_plan_as_yaml() {
    let d = Dir::new();
    let args = ["plan", "master", "--ip-address", "192.0.2.10", "--arch", "amd64"];
    let yaml = run_ok(plan_cmd(&d).args(args)).stdout;
    let json = run_ok(plan_cmd(&d).args(args).args(["--format", "json"])).stdout;
    let from_yaml: serde_json::Value = serde_norway::from_slice(&yaml).unwrap();
    let from_json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(from_yaml, from_json);
    let names: Vec<&str> = from_json["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["etcd", "kubelet", "kube-bootstrap"], "start order");
}

#[test]
fn plan_needs_no_root_and_writes_nothing() {
    let d = Dir::new();
    let mut cmd = d.kboot();
    for k in Key::ALL {
        cmd.env_remove(k.env());
    }
    run_ok(cmd.args(["plan", "master", "--ip-address", "192.0.2.10", "--arch", "amd64"]));
    assert!(!d.path().join("root").exists() && !d.path().join("state").exists());
}

#[test]
fn plan_precedence_flag_over_env_over_config_file() {
    let d = Dir::new();
    std::fs::create_dir_all(d.path().join("config")).unwrap();
    std::fs::write(
        d.path().join("config/config.toml"),
        "k8s_version = \"v1.35.4\"\nflannel_backend = \"vxlan\"\nuse_cni = true\n",
    )
    .unwrap();
    let out = run_ok(
        plan_cmd(&d)
            .env("FLANNEL_BACKEND", "host-gw")
            .env("ETCD_VERSION", "3.6.5-0")
            .args([
                "plan",
                "master",
                "--format",
                "json",
                "--ip-address",
                "192.0.2.10",
                "--arch",
                "amd64",
            ])
            .args(["--etcd-version", "3.6.6-0"]),
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &plan["config"];
    assert_eq!(c["k8s_version"], "v1.35.4");
    assert_eq!(c["sources"]["K8S_VERSION"], "file");
    assert_eq!(c["flannel_backend"], "host-gw");
    assert_eq!(c["sources"]["FLANNEL_BACKEND"], "env");
    assert_eq!(c["etcd_version"], "3.6.6-0");
    assert_eq!(c["sources"]["ETCD_VERSION"], "flag");
    assert_eq!(c["use_cni"], true);
    let images: Vec<&str> = plan["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["image"].as_str().unwrap())
        .collect();
    assert!(images.contains(&"registry.k8s.io/etcd:3.6.6-0"), "{images:?}");
    assert!(images.contains(&"ghcr.io/siderolabs/kubelet:v1.35.4"), "{images:?}");
}

fn plan_fails(d: &Dir, args: &[&str]) -> String {
    let out = plan_cmd(d).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?} should be a usage error");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn plan_bad_input_is_a_usage_error_that_says_what_to_do() {
    let d = Dir::new();
    let base = ["plan", "master", "--ip-address", "192.0.2.10", "--arch", "amd64"];
    let err = plan_fails(&d, &[&base[..], &["--k8s-version", "v1.25.3"]].concat());
    assert!(
        err.contains("v1.25.3") && err.contains("modern: v1.34.x to v1.37.x"),
        "{err}"
    );
    let err = plan_fails(
        &d,
        &[&base[..], &["--k8s-version", "v1.18.20", "--family", "modern"]].concat(),
    );
    assert!(err.contains("modern image family does not cover"), "{err}");
    let err = plan_fails(&d, &["plan", "worker", "--ip-address", "192.0.2.10", "--arch", "amd64"]);
    assert!(err.contains("--master"), "{err}");
    let err = plan_fails(
        &d,
        &[
            "plan",
            "worker",
            "--master",
            "192.0.2.1",
            "--k8s-version",
            "v1.6.13",
            "--arch",
            "amd64",
            "--ip-address",
            "192.0.2.10",
        ],
    );
    assert!(err.contains("cannot join securely before v1.10"), "{err}");
    let err = plan_fails(&d, &["plan", "boss"]);
    assert!(err.contains("master or worker"), "{err}");
    let err = plan_cmd(&d)
        .env("RESTART_POLICY", "sometimes")
        .args(base)
        .output()
        .unwrap();
    let text = String::from_utf8(err.stderr).unwrap();
    assert!(text.contains("RESTART_POLICY") && text.contains("Env"), "{text}");
}

#[test]
fn plan_hyperkube_before_cri_warns_that_pods_need_docker() {
    let d = Dir::new();
    let out = run_ok(plan_cmd(&d).args([
        "plan",
        "master",
        "--k8s-version",
        "v1.3.6",
        "--ip-address",
        "192.0.2.10",
        "--arch",
        "amd64",
        "--format",
        "json",
    ]));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = plan["warnings"].to_string();
    assert!(warnings.contains("Docker API"), "{warnings}");
    let kubelet = &plan["services"][1];
    assert_eq!(kubelet["image"], "registry.k8s.io/hyperkube-amd64:v1.3.6");
    let args = kubelet["entrypoint"].to_string();
    assert!(
        args.contains("--config=/etc/kubernetes/manifests") && args.contains("--api-servers=https://192.0.2.10:6443"),
        "{args}"
    );
}

/// A master PKI made through the library, under the test's root.
fn master_pki(d: &Dir) -> PkiLayout {
    let layout = PkiLayout::new(d.path().join("root/pki"));
    pki::ensure_master(
        &layout,
        &NodeIdentity::new(Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 10)),
    )
    .unwrap();
    layout
}

#[test]
fn certs_check_prints_an_aligned_table_and_json() {
    let d = Dir::new();
    master_pki(&d);
    let out = run_ok(d.kboot().args(["certs", "check"]));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("EXPIRES") && lines[0].contains("RESIDUAL"),
        "{text}"
    );
    let col = lines[0].find("EXPIRES").unwrap();
    for l in &lines[1..] {
        assert_eq!(
            l.find(char::is_numeric).map(|i| i >= col),
            Some(true),
            "misaligned: {l}"
        );
    }
    assert!(lines.iter().any(|l| l.starts_with("etcd/server ")), "{text}");
    let out = run_ok(d.kboot().args(["certs", "check", "--format", "json"]));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), lines.len() - 1);
    assert!(list[0]["days_left"].as_i64().unwrap() > 300);
}

#[test]
fn certs_renew_then_kubeconfig_prints_the_renewed_admin_credentials() {
    let d = Dir::new();
    let layout = master_pki(&d);
    let before = run_ok(d.kboot().arg("kubeconfig")).stdout;
    let out = run_ok(d.kboot().args(["certs", "renew", "admin"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("renewed admin"));
    let after = run_ok(d.kboot().arg("kubeconfig")).stdout;
    assert_ne!(before, after);
    let kc: serde_json::Value = serde_norway::from_slice(&after).unwrap();
    assert_eq!(kc["current-context"], "kubernetes-admin@kubernetes");
    assert_eq!(kc["clusters"][0]["cluster"]["server"], "https://192.0.2.10:6443");
    assert!(layout.cert("admin").exists());
    let out = d.kboot().args(["certs", "renew", "ca"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a CA is not a leaf");
}

#[test]
fn certs_and_kubeconfig_without_pki_say_to_run_the_master_first() {
    let d = Dir::new();
    for args in [&["certs", "check"][..], &["kubeconfig"][..]] {
        let out = d.kboot().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("kboot run master"),
            "{args:?}"
        );
    }
}

/// `run worker` against the master at 192.0.2.10, as this host (`ip`), with `token`.
fn run_worker(worker: &Dir, ip: &str, token: &str) -> std::process::Command {
    let mut cmd = worker.kboot();
    cmd.args([
        "run",
        "worker",
        "--master",
        "192.0.2.10",
        "--ip-address",
        ip,
        "--token",
        token,
    ]);
    cmd
}

#[test]
fn run_worker_refuses_a_master_ca_that_does_not_match_the_hash_before_touching_the_host() {
    let master = Dir::new();
    let layout = master_pki(&master);
    let impostor = Dir::new();
    let impostor_ca = master_pki(&impostor).ca_cert(pki::Authority::Kubernetes);
    let ca_pem = std::fs::read_to_string(layout.ca_cert(pki::Authority::Kubernetes)).unwrap();
    let hash = pki::ca_cert_hash(&ca_pem).unwrap();
    let token = std::fs::read_to_string(layout.bootstrap_token()).unwrap();

    let worker = Dir::new();
    let ip = crate::common::local_ip().to_string();
    let out = run_worker(&worker, &ip, token.trim())
        .args(["--ca-cert-hash", &hash, "--ca-cert"])
        .arg(&impostor_ca)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("does not match --ca-cert-hash") && err.contains("refusing to join"),
        "{err}"
    );
    assert!(
        !worker.path().join("root/pki").exists(),
        "nothing written for a wrong CA"
    );

    let out = run_worker(&worker, &ip, "not-a-token")
        .args(["--ca-cert-hash", &hash])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("abcdef.0123456789abcdef"));
}

#[test]
fn vendor_images_lists_every_image_of_the_golden_plans() {
    let catalog = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor-images.md")).unwrap();
    let mut checked = 0;
    for (name, _, _) in CASES {
        let plan = std::fs::read_to_string(golden_path(name)).unwrap();
        for image in plan.lines().filter_map(|l| l.trim().strip_prefix("image: ")) {
            // The catalog writes per-arch repositories with ARCH and versions as V.
            let repo = image
                .rsplit_once(':')
                .map_or(image, |(r, _)| r)
                .replace("-amd64", "-ARCH");
            assert!(
                catalog.contains(&format!("`{repo}:")),
                "vendor-images.md does not list {repo} (used by {name})"
            );
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} images found in the golden plans");
}
