//! PKI behaviour checked with the tool operators use: `openssl`.

use std::io::Write;
use std::process::Command;

use super::*;

fn id() -> NodeIdentity {
    NodeIdentity::new(Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(203, 0, 113, 5))
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl (apt install openssl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn p(path: PathBuf) -> String {
    path.display().to_string()
}

fn master() -> (tempfile::TempDir, PkiLayout) {
    let tmp = tempfile::tempdir().unwrap();
    let layout = PkiLayout::new(tmp.path().join("pki"));
    ensure_master(&layout, &id()).unwrap();
    (tmp, layout)
}

#[test]
fn ensure_master_every_leaf_verifies_against_its_own_ca_only() {
    let (_tmp, l) = master();
    for spec in leaf_specs(&id()) {
        let ca = p(l.ca_cert(spec.authority));
        let (ok, out) = openssl(&["verify", "-CAfile", &ca, &p(l.cert(&spec.name))]);
        assert!(ok, "{} does not verify against {ca}: {out}", spec.name);
        let other = Authority::ALL.into_iter().find(|a| *a != spec.authority).unwrap();
        let (ok, _) = openssl(&["verify", "-CAfile", &p(l.ca_cert(other)), &p(l.cert(&spec.name))]);
        assert!(!ok, "{} must not verify against the {other:?} CA", spec.name);
    }
}

#[test]
fn ensure_master_apiserver_cert_carries_the_documented_sans() {
    let (_tmp, l) = master();
    let (ok, text) = openssl(&["x509", "-noout", "-text", "-in", &p(l.cert("apiserver"))]);
    assert!(ok, "{text}");
    for san in [
        "IP Address:192.0.2.10",
        "IP Address:203.0.113.5",
        "IP Address:10.0.0.1",
        "IP Address:127.0.0.1",
        "DNS:kubernetes,",
        "DNS:kubernetes.default,",
        "DNS:kubernetes.default.svc,",
        "DNS:kubernetes.default.svc.cluster.local",
        "DNS:localhost",
        "TLS Web Server Authentication",
    ] {
        assert!(text.contains(san), "apiserver cert lacks {san}:\n{text}");
    }
    let (_, etcd) = openssl(&["x509", "-noout", "-text", "-in", &p(l.cert("etcd/server"))]);
    assert!(etcd.contains("IP Address:192.0.2.10") && etcd.contains("TLS Web Client Authentication"));
}

#[test]
fn ensure_master_client_certs_name_the_identities_kubernetes_authorizes() {
    let (_tmp, l) = master();
    for (leaf, subject) in [
        ("admin", "O=system:masters, CN=kubernetes-admin"),
        ("kubelet", "O=system:nodes, CN=system:node:192.0.2.10"),
        ("controller-manager", "CN=system:kube-controller-manager"),
        ("scheduler", "CN=system:kube-scheduler"),
        ("kube-proxy", "CN=system:kube-proxy"),
    ] {
        let (ok, text) = openssl(&[
            "x509",
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253,sep_comma_plus_space",
            "-in",
            &p(l.cert(leaf)),
        ]);
        assert!(ok, "{text}");
        let normalized = text.replace("subject=", "").trim().to_string();
        // RFC 2253 lists the most specific element first.
        let expected: Vec<&str> = subject.split(", ").collect();
        for part in expected {
            assert!(normalized.contains(part), "{leaf}: {normalized} lacks {part}");
        }
        let (ok, text) = openssl(&["x509", "-noout", "-ext", "extendedKeyUsage", "-in", &p(l.cert(leaf))]);
        assert!(
            ok && text.contains("Client Authentication") && !text.contains("Server"),
            "{leaf}: {text}"
        );
    }
}

#[test]
fn ensure_master_keys_are_0600_and_kubeconfigs_embed_a_working_client_cert() {
    let (_tmp, l) = master();
    for path in [
        l.ca_key(Authority::Kubernetes),
        l.key("apiserver"),
        l.sa_key(),
        l.bootstrap_token(),
        l.kubeconfig("admin.conf"),
    ] {
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let dir_mode = fs::metadata(l.dir()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    let admin: serde_json::Value = serde_norway::from_str(&read(&l.kubeconfig("admin.conf")).unwrap()).unwrap();
    assert_eq!(admin["clusters"][0]["cluster"]["server"], "https://203.0.113.5:6443");
    use base64::Engine;
    let cert = base64::engine::general_purpose::STANDARD
        .decode(admin["users"][0]["user"]["client-certificate-data"].as_str().unwrap())
        .unwrap();
    assert_eq!(String::from_utf8(cert).unwrap(), read(&l.cert("admin")).unwrap());
    // The key pair is private and public halves of one key: openssl derives the same public key.
    let (ok, derived) = openssl(&["pkey", "-in", &p(l.sa_key()), "-pubout"]);
    assert!(ok);
    assert_eq!(derived.trim(), read(&l.sa_pub()).unwrap().trim());
}

#[test]
fn ensure_master_twice_keeps_everything_and_refills_gaps() {
    let (_tmp, l) = master();
    let ca = read(&l.ca_cert(Authority::Kubernetes)).unwrap();
    let apiserver = read(&l.cert("apiserver")).unwrap();
    let token = read(&l.bootstrap_token()).unwrap();
    fs::remove_file(l.cert("scheduler")).unwrap();
    let report = ensure_master(&l, &id()).unwrap();
    assert_eq!(report.created, ["scheduler"]);
    assert_eq!(
        read(&l.ca_cert(Authority::Kubernetes)).unwrap(),
        ca,
        "the CA is never regenerated"
    );
    assert_eq!(read(&l.cert("apiserver")).unwrap(), apiserver);
    assert_eq!(read(&l.bootstrap_token()).unwrap(), token);
    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        &p(l.ca_cert(Authority::Kubernetes)),
        &p(l.cert("scheduler")),
    ]);
    assert!(ok, "a refilled leaf is signed by the kept CA: {out}");
}

#[test]
fn ensure_master_refuses_a_ca_without_its_key_and_a_changed_identity() {
    let (_tmp, l) = master();
    let other = NodeIdentity::new(Ipv4Addr::new(192, 0, 2, 99), Ipv4Addr::new(192, 0, 2, 99));
    let err = ensure_master(&l, &other).unwrap_err();
    assert!(matches!(err, PkiError::IdentityChanged { .. }), "{err}");
    fs::remove_file(l.ca_key(Authority::Etcd)).unwrap();
    let err = ensure_master(&l, &id()).unwrap_err();
    assert!(matches!(err, PkiError::MissingKey { .. }), "{err}");
    assert!(
        l.ca_cert(Authority::Etcd).exists(),
        "the orphaned CA cert is left for the operator"
    );
}

#[test]
fn renew_resigns_leaves_with_the_same_ca_and_key_and_rewrites_kubeconfigs() {
    let (_tmp, l) = master();
    let ca = read(&l.ca_cert(Authority::Kubernetes)).unwrap();
    let before = read(&l.cert("admin")).unwrap();
    let key = read(&l.key("admin")).unwrap();
    let kubeconfig = read(&l.kubeconfig("admin.conf")).unwrap();
    let renewed = renew(&l, &["admin".to_string()]).unwrap();
    assert_eq!(renewed, ["admin"]);
    assert_ne!(read(&l.cert("admin")).unwrap(), before, "a new certificate");
    assert_eq!(read(&l.key("admin")).unwrap(), key, "the same key");
    assert_eq!(read(&l.ca_cert(Authority::Kubernetes)).unwrap(), ca, "the same CA");
    assert_ne!(read(&l.kubeconfig("admin.conf")).unwrap(), kubeconfig);
    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        &p(l.ca_cert(Authority::Kubernetes)),
        &p(l.cert("admin")),
    ]);
    assert!(ok, "{out}");
    let all = renew(&l, &[]).unwrap();
    assert_eq!(all.len(), leaf_specs(&id()).len());
    assert!(matches!(renew(&l, &["nope".into()]), Err(PkiError::UnknownCert { .. })));
}

#[test]
fn check_lists_every_certificate_with_its_expiry() {
    let (_tmp, l) = master();
    let list = check(&l).unwrap();
    let names: Vec<&str> = list.iter().map(|c| c.name.as_str()).collect();
    assert!(
        names.contains(&"ca") && names.contains(&"etcd/server") && names.contains(&"apiserver"),
        "{names:?}"
    );
    assert_eq!(list.len(), 3 + leaf_specs(&id()).len());
    let ca = list.iter().find(|c| c.name == "ca").unwrap();
    assert!(ca.is_ca && (3640..=3650).contains(&ca.days_left), "{ca:?}");
    let leaf = list.iter().find(|c| c.name == "apiserver").unwrap();
    assert!(!leaf.is_ca && (363..=365).contains(&leaf.days_left), "{leaf:?}");
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        check(&PkiLayout::new(empty.path())),
        Err(PkiError::NotInitialised { .. })
    ));
}

#[test]
fn ca_cert_hash_matches_openssl_over_the_subject_public_key_info() {
    let (_tmp, l) = master();
    let ca = p(l.ca_cert(Authority::Kubernetes));
    // kubeadm's documented recipe: the DER SubjectPublicKeyInfo, hashed with SHA-256.
    let spki = Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in", &ca])
        .output()
        .unwrap();
    let mut child = Command::new("openssl")
        .args(["pkey", "-pubin", "-outform", "der"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&spki.stdout).unwrap();
    let der = child.wait_with_output().unwrap().stdout;
    let expected = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&der)));
    assert_eq!(
        ca_cert_hash(&read(&l.ca_cert(Authority::Kubernetes)).unwrap()).unwrap(),
        expected
    );
}

#[test]
fn write_worker_bootstrap_refuses_a_ca_that_does_not_match_the_hash() {
    let (_tmp, master_pki) = master();
    let (_tmp2, other_pki) = master();
    let ca = read(&master_pki.ca_cert(Authority::Kubernetes)).unwrap();
    let impostor = read(&other_pki.ca_cert(Authority::Kubernetes)).unwrap();
    let hash = ca_cert_hash(&ca).unwrap();
    let token: BootstrapToken = read(&master_pki.bootstrap_token()).unwrap().parse().unwrap();

    let worker = tempfile::tempdir().unwrap();
    let wl = PkiLayout::new(worker.path());
    let err = write_worker_bootstrap(&wl, &impostor, &hash, "https://192.0.2.10:6443", &token).unwrap_err();
    assert!(matches!(err, PkiError::CaHashMismatch { .. }), "{err}");
    assert!(err.to_string().contains("refusing to join"));
    assert!(!wl.bootstrap_kubeconfig().exists(), "nothing is written for a wrong CA");
    assert!(matches!(
        write_worker_bootstrap(&wl, &ca, "sha256:zz", "https://192.0.2.10:6443", &token),
        Err(PkiError::BadCaHash(_))
    ));

    write_worker_bootstrap(
        &wl,
        &ca,
        &hash.to_uppercase().replace("SHA256", "sha256"),
        "https://192.0.2.10:6443",
        &token,
    )
    .unwrap();
    let kc: serde_json::Value = serde_norway::from_str(&read(&wl.bootstrap_kubeconfig()).unwrap()).unwrap();
    assert_eq!(kc["users"][0]["user"]["token"], token.expose());
    assert_eq!(kc["clusters"][0]["cluster"]["server"], "https://192.0.2.10:6443");
    let mode = fs::metadata(wl.bootstrap_kubeconfig()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn write_atomic_replaces_content_and_leaves_no_temp_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("a/b/key");
    write_atomic(&path, b"one", 0o600).unwrap();
    write_atomic(&path, b"two", 0o600).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"two");
    let names: Vec<_> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["key"]);
}
