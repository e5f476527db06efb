//! `kboot pull` against Debian's docker-registry on loopback: plain, Basic,
//! TLS, Bearer; differential with skopeo; faults through a proxy.

use std::process::Output;

use base64::Engine as _;
use std::time::{Duration, Instant};

use kboot::state::Paths;
use kboot::store::Store;

use crate::common::oci_image::{noise, sha256, write_layout, Entry, TestImage};
use crate::common::registry::{Auth, Cdn, Fault, FaultProxy, Registry, PASS, USER};
use crate::common::{run_ok, Dir};

/// An image with three layers (one of 3 MB) pushed to `repo:tag`.
fn push_image(reg: &Registry, dir: &Dir, repo_tag: &str, seed: u64) -> TestImage {
    let big = noise(3 << 20, seed);
    let mid = noise(200_000, seed + 1);
    let img = TestImage::new(
        "amd64",
        None,
        &[
            &[("bin/big", &big)],
            &[("lib/mid", &mid)],
            &[("etc/hostname", b"kboot\n")],
        ],
    );
    let layout = dir.path().join(format!("layout-{seed}"));
    write_layout(&layout, &[("img", Entry::Image(&img))]);
    reg.push(&layout, "img", repo_tag);
    img
}

fn pull(dir: &Dir, args: &[&str]) -> Output {
    dir.kboot().arg("pull").arg("--quiet").args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_pulled(dir: &Dir, out: &Output, reference: &str, img: &TestImage) {
    assert!(out.status.success(), "pull failed: {}", stderr(out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{reference}@{}", img.manifest_digest())
    );
    let store = Store::open(&Paths::under(dir.path())).unwrap();
    for blob in img.blobs() {
        let d = sha256(blob).parse().unwrap();
        assert_eq!(std::fs::read(store.blob_path(&d)).unwrap(), blob, "blob {d}");
    }
}

fn write_config(dir: &Dir, toml: &str) {
    let cfg = dir.path().join("config");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join("registries.toml"), toml).unwrap();
}

#[test]
fn pull_plain_registry_matches_skopeo_byte_for_byte() {
    let reg = Registry::start(Auth::None);
    let dir = Dir::new();
    let img = push_image(&reg, &dir, "test/app:1", 1);
    let reference = format!("{}/test/app:1", reg.host());
    let out = pull(&dir, &["--insecure-registry", &reg.host(), &reference]);
    assert_pulled(&dir, &out, &reference, &img);

    let sk = dir.path().join("skopeo");
    reg.skopeo_pull("test/app:1", &sk);
    let store = Store::open(&Paths::under(dir.path())).unwrap();
    let mut compared = 0;
    for entry in std::fs::read_dir(sk.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let digest = format!("sha256:{}", entry.file_name().to_string_lossy())
            .parse()
            .unwrap();
        if store.blob_path(&digest).exists() {
            assert_eq!(
                std::fs::read(entry.path()).unwrap(),
                std::fs::read(store.blob_path(&digest)).unwrap()
            );
            compared += 1;
        }
    }
    // manifest, config and three layers (skopeo also writes its index.json outside blobs/)
    assert_eq!(compared, 5);

    // A second pull finds everything present and prints the same line.
    let again = pull(&dir, &["--insecure-registry", &reg.host(), &reference]);
    assert_eq!(again.stdout, out.stdout);
    // Without --insecure-registry, plain HTTP is refused (TLS is required).
    let fresh = Dir::new();
    let refused = pull(&fresh, &[&reference]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let hint = format!("--insecure-registry {}", reg.host());
    assert!(stderr(&refused).contains(&hint), "{}", stderr(&refused));
}

#[test]
fn pull_multi_platform_picks_host_then_flag_and_lists_platforms_when_missing() {
    let reg = Registry::start(Auth::None);
    let dir = Dir::new();
    let amd = TestImage::small(20);
    let arm7 = TestImage::new("arm", Some("v7"), &[&[("a", b"arm v7")]]);
    let arm64 = TestImage::new("arm64", Some("v8"), &[&[("a", b"arm64")]]);
    let layout = dir.path().join("multi");
    write_layout(&layout, &[("multi", Entry::Index(vec![&amd, &arm7, &arm64]))]);
    reg.push(&layout, "multi", "test/multi:1");
    let reference = format!("{}/test/multi:1", reg.host());
    let insecure = ["--insecure-registry".to_string(), reg.host()];

    let out = pull(&dir, &[&insecure[0], &insecure[1], &reference]);
    assert_pulled(&dir, &out, &reference, &amd);
    for (platform, img) in [("linux/arm/v7", &arm7), ("linux/arm64", &arm64)] {
        let d = Dir::new();
        let out = pull(&d, &[&insecure[0], &insecure[1], "--platform", platform, &reference]);
        assert_pulled(&d, &out, &reference, img);
    }
    let d = Dir::new();
    let out = pull(
        &d,
        &[&insecure[0], &insecure[1], "--platform", "linux/arm/v6", &reference],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for want in ["linux/arm/v6", "linux/amd64", "linux/arm/v7", "linux/arm64/v8"] {
        assert!(err.contains(want), "missing {want}: {err}");
    }
    let out = pull(&d, &["--platform", "linux", &reference]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn pull_unknown_tag_names_registry_and_reference() {
    let reg = Registry::start(Auth::None);
    let dir = Dir::new();
    let reference = format!("{}/test/missing:9", reg.host());
    let out = pull(&dir, &["--insecure-registry", &reg.host(), &reference]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("not found") && err.contains(&reg.host()) && err.contains("test/missing:9"),
        "{err}"
    );
    let images = run_ok(dir.kboot().args(["images", "--format", "json"]));
    assert_eq!(String::from_utf8_lossy(&images.stdout).trim(), "[]");
}

#[test]
fn pull_basic_auth_uses_flag_file_or_docker_config_and_rejects_wrong_ones() {
    let reg = Registry::start(Auth::Htpasswd);
    let dir = Dir::new();
    let img = push_image(&reg, &dir, "private/app:1", 30);
    let reference = format!("{}/private/app:1", reg.host());
    let host = reg.host();

    let out = pull(&dir, &["--insecure-registry", &host, &reference]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("needs credentials"), "{}", stderr(&out));

    let out = pull(
        &dir,
        &[
            "--insecure-registry",
            &host,
            "--creds",
            &format!("{USER}:wrong"),
            &reference,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("refused the credentials") && !err.contains("wrong"),
        "{err}"
    );

    // Right credentials, with every log line on: no secret may show.
    let out = dir
        .kboot()
        .args(["--log-level", "trace", "pull", "--quiet", "--insecure-registry", &host])
        .args(["--creds", &format!("{USER}:{PASS}"), &reference])
        .output()
        .unwrap();
    assert_pulled(&dir, &out, &reference, &img);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    let err = stderr(&out);
    assert!(err.contains("DEBUG"), "trace logging produced nothing: {err}");
    assert!(
        !err.contains(PASS) && !err.contains(&basic),
        "a secret reached the logs"
    );

    let from_file = Dir::new();
    write_config(
        &from_file,
        &format!("[[registry]]\nhost = \"{host}\"\ninsecure = true\nusername = \"{USER}\"\npassword = \"{PASS}\"\n"),
    );
    let out = pull(&from_file, &[&reference]);
    assert_pulled(&from_file, &out, &reference, &img);

    let from_docker = Dir::new();
    let docker_dir = from_docker.path().join("docker");
    std::fs::create_dir_all(&docker_dir).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    std::fs::write(
        docker_dir.join("config.json"),
        format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    let out = from_docker
        .kboot()
        .env("DOCKER_CONFIG", &docker_dir)
        .args(["pull", "--quiet", "--insecure-registry", &host, &reference])
        .output()
        .unwrap();
    assert_pulled(&from_docker, &out, &reference, &img);
}

#[test]
fn pull_tls_verifies_against_the_configured_ca() {
    let reg = Registry::start(Auth::Tls);
    let dir = Dir::new();
    let img = push_image(&reg, &dir, "tls/app:1", 40);
    let reference = format!("{}/tls/app:1", reg.host());

    let untrusted = Dir::new();
    let out = pull(&untrusted, &[&reference]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("certificate") && err.contains("ca_file"), "{err}");

    let trusted = Dir::new();
    let ca = reg.ca.as_ref().unwrap().ca.display().to_string();
    write_config(
        &trusted,
        &format!("[[registry]]\nhost = \"{}\"\nca_file = \"{ca}\"\n", reg.host()),
    );
    let out = pull(&trusted, &[&reference]);
    assert_pulled(&trusted, &out, &reference, &img);

    let insecure = Dir::new();
    let out = pull(&insecure, &["--insecure-registry", &reg.host(), &reference]);
    assert_pulled(&insecure, &out, &reference, &img);
}

#[test]
fn pull_bearer_token_per_repository_and_wrong_credentials() {
    let reg = Registry::start(Auth::Token);
    let dir = Dir::new();
    let a = push_image(&reg, &dir, "team/a:1", 50);
    let b = push_image(&reg, &dir, "team/b:1", 60);
    let tokens = reg.tokens.as_ref().unwrap();
    let before = tokens.scopes().len();
    let (ra, rb) = (format!("{}/team/a:1", reg.host()), format!("{}/team/b:1", reg.host()));
    let creds = format!("{USER}:{PASS}");
    let out = dir
        .kboot()
        .args([
            "pull",
            "--quiet",
            "--insecure-registry",
            &reg.host(),
            "--creds",
            &creds,
            &ra,
            &rb,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        lines.lines().collect::<Vec<_>>(),
        [
            format!("{ra}@{}", a.manifest_digest()),
            format!("{rb}@{}", b.manifest_digest())
        ]
    );
    // One token per repository, each scoped to pull only, reused for all its blobs.
    let scopes: Vec<String> = tokens.scopes()[before..].to_vec();
    assert_eq!(scopes, ["repository:team/a:pull", "repository:team/b:pull"]);

    let wrong = Dir::new();
    let out = pull(
        &wrong,
        &[
            "--insecure-registry",
            &reg.host(),
            "--creds",
            &format!("{USER}:nope"),
            &ra,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("refused the credentials"), "{}", stderr(&out));
}

fn faulty_pull(fault: Fault, seed: u64) -> (Dir, Output, TestImage, FaultProxy, String, Duration) {
    let reg = Registry::start(Auth::None);
    let dir = Dir::new();
    let img = push_image(&reg, &dir, "faults/app:1", seed);
    let proxy = FaultProxy::start(&reg, fault);
    let reference = format!("{}/faults/app:1", proxy.host());
    let t = Instant::now();
    let out = pull(&dir, &["--insecure-registry", &proxy.host(), &reference]);
    let elapsed = t.elapsed();
    drop(reg);
    (dir, out, img, proxy, reference, elapsed)
}

#[test]
fn pull_resumes_with_range_after_a_cut_mid_blob() {
    let (dir, out, img, proxy, reference, _) = faulty_pull(Fault::CutMidBlob(1), 70);
    assert_pulled(&dir, &out, &reference, &img);
    let ranges = proxy.ranges.lock().unwrap().clone();
    assert!(
        ranges.iter().any(|r| r.starts_with("bytes=") && r != "bytes=0-"),
        "no resumed request: {ranges:?}"
    );
}

#[test]
fn pull_retries_503_and_honours_429_retry_after() {
    let (dir, out, img, _, reference, _) = faulty_pull(Fault::Unavailable(2), 80);
    assert_pulled(&dir, &out, &reference, &img);
    let (dir, out, img, _, reference, elapsed) = faulty_pull(Fault::TooMany(1, 2), 90);
    assert_pulled(&dir, &out, &reference, &img);
    assert!(elapsed >= Duration::from_secs(2), "Retry-After ignored: {elapsed:?}");
}

#[test]
fn pull_corrupted_blob_fails_and_stores_nothing() {
    let (dir, out, img, _, _, _) = faulty_pull(Fault::CorruptByte, 100);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("does not match its digest"), "{err}");
    let store = Store::open(&Paths::under(dir.path())).unwrap();
    for layer in &img.layers[..2] {
        assert!(!store.blob_path(&sha256(layer).parse().unwrap()).exists());
    }
    assert!(store.list().unwrap().is_empty());
}

fn manifest_fault(body: &[u8], content_type: &str) -> String {
    let reg = Registry::start(Auth::None);
    let proxy = FaultProxy::start(&reg, Fault::Manifest(body.to_vec(), content_type.to_string()));
    let dir = Dir::new();
    let out = pull(
        &dir,
        &["--insecure-registry", &proxy.host(), &format!("{}/x/y:1", proxy.host())],
    );
    assert_eq!(out.status.code(), Some(1));
    stderr(&out)
}

#[test]
fn pull_refuses_schema1_malformed_and_unknown_manifests_clearly() {
    let v1 = br#"{"schemaVersion":1,"name":"x/y","tag":"1","architecture":"amd64","fsLayers":[],"history":[]}"#;
    let err = manifest_fault(v1, "application/vnd.docker.distribution.manifest.v1+prettyjws");
    assert!(err.contains("schema 1") && err.contains("re-push"), "{err}");
    let err = manifest_fault(
        b"{\"schemaVersion\": 2, \"config\": ",
        "application/vnd.oci.image.manifest.v1+json",
    );
    assert!(err.contains("not valid JSON"), "{err}");
    let err = manifest_fault(
        br#"{"schemaVersion":2,"mediaType":"application/vnd.example.thing+json"}"#,
        "application/vnd.example.thing+json",
    );
    assert!(
        err.contains("does not support") && err.contains("vnd.example.thing"),
        "{err}"
    );
}

#[test]
fn concurrent_pulls_of_the_same_image_both_succeed() {
    let reg = Registry::start(Auth::None);
    let dir = Dir::new();
    let img = push_image(&reg, &dir, "test/same:1", 110);
    let reference = format!("{}/test/same:1", reg.host());
    let children: Vec<_> = (0..3)
        .map(|_| {
            dir.kboot()
                .args(["pull", "--quiet", "--insecure-registry", &reg.host(), &reference])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_pulled(&dir, &out, &reference, &img);
    }
    let blobs = std::fs::read_dir(Paths::under(dir.path()).blobs().join("sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, img.blobs().len());
}

#[test]
fn pull_killed_mid_download_resumes_without_refetching() {
    let reg = Registry::start(Auth::None);
    let dir = Dir::new();
    let img = push_image(&reg, &dir, "test/kill:1", 120);
    let proxy = FaultProxy::start(&reg, Fault::Slow(64 * 1024));
    let reference = format!("{}/test/kill:1", proxy.host());
    let mut child = dir
        .kboot()
        .args(["pull", "--quiet", "--insecure-registry", &proxy.host(), &reference])
        .spawn()
        .unwrap();
    let ingest = Paths::under(dir.path()).ingest();
    let big = format!("sha256-{}", &sha256(&img.layers[0])[7..]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(ingest.join(&big)).map(|m| m.len()).unwrap_or(0) < 512 * 1024 {
        assert!(Instant::now() < deadline, "download never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial = std::fs::metadata(ingest.join(&big)).unwrap().len();
    *proxy.fault.lock().unwrap() = Fault::None;
    proxy.ranges.lock().unwrap().clear();
    let out = pull(&dir, &["--insecure-registry", &proxy.host(), &reference]);
    assert_pulled(&dir, &out, &reference, &img);
    let ranges = proxy.ranges.lock().unwrap().clone();
    assert!(
        ranges.iter().any(|r| r.starts_with("bytes=")
            && r != "bytes=0-"
            && r.trim_start_matches("bytes=")
                .trim_end_matches('-')
                .parse::<u64>()
                .is_ok_and(|o| o >= partial)),
        "the big layer was not resumed from {partial}: {ranges:?}"
    );
}

#[test]
fn pull_mirror_falls_back_and_rewrite_rules_apply() {
    let reg = Registry::start(Auth::None);
    let dir = Dir::new();
    let img = push_image(&reg, &dir, "library/etcd:3.5", 130);
    let dead = format!("127.0.0.1:{}", crate::common::registry::free_port());
    // docker.io/library/etcd → a dead mirror, then the live one; docker.io itself is never tried.
    write_config(
        &dir,
        &format!(
            "[[registry]]\nhost = \"docker.io\"\nmirrors = [\"{dead}\", \"{live}\"]\nfallback = false\n\n\
             [[registry]]\nhost = \"{dead}\"\ninsecure = true\n\n[[registry]]\nhost = \"{live}\"\ninsecure = true\n\n\
             [[rewrite]]\nfrom = \"old.example/etcd-mirror/\"\nto = \"{live}/library/\"\n",
            live = reg.host()
        ),
    );
    let out = pull(&dir, &["etcd:3.5"]);
    assert_pulled(&dir, &out, "docker.io/library/etcd:3.5", &img);
    let out = pull(&dir, &["old.example/etcd-mirror/etcd:3.5"]);
    assert_pulled(&dir, &out, "old.example/etcd-mirror/etcd:3.5", &img);

    let only_dead = Dir::new();
    write_config(
        &only_dead,
        &format!("[[registry]]\nhost = \"docker.io\"\nmirrors = [\"{dead}\"]\nfallback = false\ninsecure = true\n\n[[registry]]\nhost = \"{dead}\"\ninsecure = true\n"),
    );
    let out = pull(&only_dead, &["etcd:3.5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&dead), "{}", stderr(&out));
}

#[test]
fn pull_follows_blob_redirects_without_sending_credentials_there() {
    let reg = Registry::start(Auth::Htpasswd);
    let dir = Dir::new();
    let img = push_image(&reg, &dir, "redirect/app:1", 140);
    let cdn = Cdn::start(&reg);
    let proxy = FaultProxy::start(&reg, Fault::RedirectBlobs(format!("http://{}", cdn.addr)));
    let reference = format!("{}/redirect/app:1", proxy.host());
    let creds = format!("{USER}:{PASS}");
    let out = pull(
        &dir,
        &["--insecure-registry", &proxy.host(), "--creds", &creds, &reference],
    );
    assert_pulled(&dir, &out, &reference, &img);
    let seen = cdn.seen_auth.lock().unwrap().clone();
    assert_eq!(seen.len(), img.blobs().len() - 1, "config and layers come from the CDN");
    assert!(
        seen.iter().all(Option::is_none),
        "credentials leaked to the CDN: {seen:?}"
    );
}

#[test]
fn pull_progress_goes_to_stderr_as_lines_when_not_a_terminal() {
    let reg = Registry::start(Auth::None);
    let dir = Dir::new();
    let img = push_image(&reg, &dir, "test/progress:1", 150);
    let reference = format!("{}/test/progress:1", reg.host());
    let out = dir
        .kboot()
        .args(["pull", "--insecure-registry", &reg.host(), &reference])
        .output()
        .unwrap();
    assert_pulled(&dir, &out, &reference, &img);
    let err = stderr(&out);
    let big = &sha256(&img.layers[0])[7..19];
    assert!(err.contains(&format!("{big}: downloading 3.1 MB")), "{err}");
    assert!(err.contains(&format!("{big}: done")), "{err}");
    let again = dir
        .kboot()
        .args(["pull", "--insecure-registry", &reg.host(), &reference])
        .output()
        .unwrap();
    assert!(
        stderr(&again).contains(&format!("{big}: already present")),
        "{}",
        stderr(&again)
    );
}

#[test]
fn pull_by_digest_checks_the_content_against_it() {
    let reg = Registry::start(Auth::None);
    let dir = Dir::new();
    let img = push_image(&reg, &dir, "test/pinned:1", 160);
    let by_digest = format!("{}/test/pinned@{}", reg.host(), img.manifest_digest());
    let out = pull(&dir, &["--insecure-registry", &reg.host(), &by_digest]);
    assert_pulled(
        &dir,
        &out,
        &by_digest.replace(&format!("@{}", img.manifest_digest()), ""),
        &img,
    );
    run_ok(dir.kboot().args(["rmi", &by_digest]));
    let images = run_ok(dir.kboot().args(["images", "--format", "json"]));
    assert_eq!(String::from_utf8_lossy(&images.stdout).trim(), "[]");

    // A registry answering the pinned digest with other bytes is caught.
    let other = TestImage::small(161);
    let proxy = FaultProxy::start(
        &reg,
        Fault::Manifest(
            other.manifest.clone(),
            "application/vnd.oci.image.manifest.v1+json".into(),
        ),
    );
    let lying = format!("{}/test/pinned@{}", proxy.host(), img.manifest_digest());
    let fresh = Dir::new();
    let out = pull(&fresh, &["--insecure-registry", &proxy.host(), &lying]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not the requested"), "{}", stderr(&out));
}

#[test]
fn pull_on_a_terminal_draws_progress_bars() {
    let reg = Registry::start(Auth::None);
    let dir = Dir::new();
    let img = push_image(&reg, &dir, "test/tty:1", 170);
    let reference = format!("{}/test/tty:1", reg.host());
    // `script` gives kboot a pseudo-terminal as stdout and stderr.
    let cmd = format!(
        "{} pull --insecure-registry {} {reference}",
        crate::common::kboot_bin().display(),
        reg.host()
    );
    let tty = run_ok(
        std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("KBOOT_ROOT", dir.path().join("root"))
            .env("KBOOT_STATE", dir.path().join("state"))
            .env("KBOOT_CONFIG", dir.path().join("config"))
            .env("TERM", "xterm"),
    );
    let text = String::from_utf8_lossy(&tty.stdout);
    let big = &sha256(&img.layers[0])[7..19];
    assert!(
        text.contains(big) && text.contains("[=") && text.contains("MiB"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{reference}@{}", img.manifest_digest())),
        "{text}"
    );
}

#[test]
fn pull_docker_schema2_manifest_list_like_skopeo() {
    let reg = Registry::start(Auth::None);
    let dir = Dir::new();
    let amd = TestImage::small(180);
    let arm = TestImage::new("arm", Some("v7"), &[&[("a", b"arm")]]);
    let layout = dir.path().join("multi");
    write_layout(&layout, &[("multi", Entry::Index(vec![&amd, &arm]))]);
    reg.push_as(&layout, "multi", "docker/multi:1", Some("v2s2"));
    let reference = format!("{}/docker/multi:1", reg.host());
    let out = pull(&dir, &["--insecure-registry", &reg.host(), &reference]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();

    // The amd64 entry of the manifest list the registry serves.
    let raw = run_ok(std::process::Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]));
    let list: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        list["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    let amd64 = list["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "amd64")
        .unwrap();
    assert_eq!(line, format!("{reference}@{}", amd64["digest"].as_str().unwrap()));
    // skopeo converts the manifest to OCI for an oci: destination, but the
    // config and layers it fetches must be the same bytes as ours.
    let sk = dir.path().join("skopeo");
    reg.skopeo_pull("docker/multi:1", &sk);
    let store = Store::open(&Paths::under(dir.path())).unwrap();
    let image = store.resolve(&reference).unwrap();
    assert_eq!(
        image.manifest.media_type().as_ref().map(|m| m.to_string()).as_deref(),
        Some("application/vnd.docker.distribution.manifest.v2+json")
    );
    assert_eq!(image.config.architecture().to_string(), "amd64");
    for d in std::iter::once(image.manifest.config()).chain(image.manifest.layers()) {
        let theirs = sk.join("blobs/sha256").join(d.digest().digest());
        assert_eq!(
            std::fs::read(theirs).unwrap(),
            std::fs::read(store.blob_path(d.digest())).unwrap()
        );
    }
}
