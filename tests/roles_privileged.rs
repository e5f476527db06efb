//! `run master` as root, as far as the components exist here: preflight and PKI run for real;
//! the Kubernetes images are not in the store and no registry is reachable from the test
//! machines, so the run stops at the pull step, naming each image and the air-gap route.

use std::os::unix::fs::PermissionsExt;

use kboot::pki::{Authority, PkiLayout};
use kboot::roles::config::Key;

use crate::common::{require_root, Dir};

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
