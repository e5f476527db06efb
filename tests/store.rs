//! `kboot load`, `images`, `rmi`, `prune`, `save` and the store API, against
//! archives built in the test and by umoci/skopeo.

use std::path::{Path, PathBuf};
use std::process::Command;

use kboot::registry::PlatformSpec;
use kboot::state::Paths;
use kboot::store::{Store, StoreError};

use crate::common::oci_image::{self, docker_save_tar, gzip, sha256, tar_dir, write_layout, Entry, TestImage};
use crate::common::{run_ok, Dir};

fn paths(dir: &Dir) -> Paths {
    Paths::under(dir.path())
}

fn images_json(dir: &Dir) -> Vec<serde_json::Value> {
    let out = run_ok(dir.kboot().args(["images", "--format", "json"]));
    serde_json::from_slice(&out.stdout).expect("images --format json is JSON")
}

fn layout(dir: &Dir, name: &str, entries: &[(&str, Entry)]) -> PathBuf {
    let path = dir.path().join(name);
    write_layout(&path, entries);
    path
}

fn stored_blobs(dir: &Dir) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(paths(dir).blobs().join("sha256"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn load_oci_layout_dir_then_images_lists_it_and_resolve_reads_it() {
    let dir = Dir::new();
    let img = TestImage::small(1);
    let input = layout(&dir, "layout", &[("registry.k8s.io/pause:3.9", Entry::Image(&img))]);
    let out = run_ok(dir.kboot().args(["load", "-i"]).arg(&input));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("registry.k8s.io/pause:3.9@{}", img.manifest_digest())
    );

    let list = images_json(&dir);
    let total: usize = img.blobs().iter().map(|b| b.len()).sum();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["reference"], "registry.k8s.io/pause:3.9");
    assert_eq!(list[0]["digest"], img.manifest_digest());
    assert_eq!(list[0]["size"], total as u64);

    let store = Store::open(&paths(&dir)).unwrap();
    let image = store.resolve("registry.k8s.io/pause:3.9").unwrap();
    assert_eq!(image.manifest_digest.to_string(), img.manifest_digest());
    assert_eq!(image.manifest.layers().len(), 2);
    assert_eq!(image.config.architecture().to_string(), "amd64");
    // by digest, too
    let by_digest = store
        .resolve(&format!("registry.k8s.io/pause@{}", img.manifest_digest()))
        .unwrap();
    assert_eq!(by_digest.manifest_digest, image.manifest_digest);
    for blob in img.blobs() {
        let d = sha256(blob).parse().unwrap();
        assert_eq!(std::fs::read(store.blob_path(&d)).unwrap(), blob);
    }

    let table = run_ok(dir.kboot().arg("images"));
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("REFERENCE"), "{table}");
    assert!(table.contains("registry.k8s.io/pause:3.9"), "{table}");
}

#[test]
fn load_short_name_is_normalized_like_docker() {
    let dir = Dir::new();
    let img = TestImage::small(2);
    let input = layout(&dir, "layout", &[("etcd:3.5", Entry::Image(&img))]);
    run_ok(dir.kboot().args(["load", "-i"]).arg(&input));
    let store = Store::open(&paths(&dir)).unwrap();
    assert_eq!(
        store.resolve("etcd:3.5").unwrap().reference,
        "docker.io/library/etcd:3.5"
    );
    assert_eq!(
        store
            .resolve("docker.io/library/etcd:3.5")
            .unwrap()
            .manifest_digest
            .to_string(),
        img.manifest_digest()
    );
}

#[test]
fn load_tar_plain_gzip_and_zstd_give_the_same_image() {
    let img = TestImage::small(3);
    let src = Dir::new();
    let layout_dir = layout(&src, "layout", &[("example.com/app:1", Entry::Image(&img))]);
    let plain = tar_dir(&layout_dir);
    let variants: [(&str, Vec<u8>); 3] = [
        ("plain.tar", plain.clone()),
        ("img.tar.gz", gzip(&plain)),
        ("img.tar.zst", zstd::encode_all(&plain[..], 3).unwrap()),
    ];
    for (name, bytes) in variants {
        let dir = Dir::new();
        let file = dir.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        run_ok(dir.kboot().args(["load", "-i"]).arg(&file));
        let list = images_json(&dir);
        assert_eq!(list.len(), 1, "{name}");
        assert_eq!(list[0]["digest"], img.manifest_digest(), "{name}");
    }
}

#[test]
fn load_docker_save_tar_builds_a_manifest_over_the_layer_tars() {
    let dir = Dir::new();
    let img = TestImage::small(4);
    let file = dir.path().join("busybox.tar");
    std::fs::write(&file, docker_save_tar(&img, "busybox:1.36")).unwrap();
    run_ok(dir.kboot().args(["load", "-i"]).arg(&file));
    let store = Store::open(&paths(&dir)).unwrap();
    let image = store.resolve("busybox:1.36").unwrap();
    assert_eq!(image.reference, "docker.io/library/busybox:1.36");
    let layer_digests: Vec<String> = image.manifest.layers().iter().map(|l| l.digest().to_string()).collect();
    let expected: Vec<String> = img.layer_tars.iter().map(|t| sha256(t)).collect();
    assert_eq!(layer_digests, expected);
    assert_eq!(image.manifest.config().digest().to_string(), sha256(&img.config));
    assert_eq!(image.config.architecture().to_string(), "amd64");
}

#[test]
fn load_multi_platform_layout_picks_host_platform_or_the_asked_one() {
    let dir = Dir::new();
    let amd = TestImage::small(5);
    let arm = TestImage::new("arm", Some("v7"), &[&[("a", b"arm")]]);
    let input = layout(
        &dir,
        "layout",
        &[("example.com/multi:1", Entry::Index(vec![&amd, &arm]))],
    );
    let store = Store::open(&paths(&dir)).unwrap();
    let loaded = store.load(&input, &PlatformSpec::host()).unwrap();
    assert_eq!(loaded[0].manifest_digest.to_string(), amd.manifest_digest());
    let loaded = store.load(&input, &"linux/arm/v7".parse().unwrap()).unwrap();
    assert_eq!(loaded[0].manifest_digest.to_string(), arm.manifest_digest());
    let err = store
        .load(&input, &"linux/arm/v6".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("linux/arm/v6") && err.contains("linux/amd64") && err.contains("linux/arm/v7"),
        "{err}"
    );
}

#[test]
fn load_corrupt_blob_fails_and_names_nothing() {
    let dir = Dir::new();
    let img = TestImage::small(6);
    let input = layout(&dir, "layout", &[("example.com/bad:1", Entry::Image(&img))]);
    let layer = sha256(&img.layers[1]);
    let path = input.join("blobs/sha256").join(layer.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let out = dir.kboot().args(["load", "-i"]).arg(&input).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not match its digest") && err.contains(&layer),
        "{err}"
    );
    assert!(images_json(&dir).is_empty());
    assert!(!stored_blobs(&dir).contains(&layer.trim_start_matches("sha256:").to_string()));
}

#[test]
fn load_truncated_or_non_image_archives_fail_clearly() {
    let dir = Dir::new();
    let img = TestImage::small(7);
    let layout_dir = layout(&dir, "layout", &[("example.com/x:1", Entry::Image(&img))]);
    let full = gzip(&tar_dir(&layout_dir));
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "truncated.tar.gz",
            full[..full.len() / 2].to_vec(),
            "corrupt or truncated",
        ),
        ("random.bin", oci_image::noise(10_000, 1), "not an image archive"),
        ("empty.tar", Vec::new(), "not an image archive"),
        (
            "files.tar",
            oci_image::tar_of(&[("hello.txt", b"hi")]),
            "neither index.json",
        ),
    ];
    for (name, bytes, want) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        let out = dir.kboot().args(["load", "-i"]).arg(&file).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(want) && err.contains(name), "{name}: {err}");
    }
    assert!(images_json(&dir).is_empty());
}

#[test]
fn load_layout_missing_a_blob_names_it() {
    let dir = Dir::new();
    let img = TestImage::small(8);
    let input = layout(&dir, "layout", &[("example.com/x:1", Entry::Image(&img))]);
    let config = sha256(&img.config);
    std::fs::remove_file(input.join("blobs/sha256").join(config.trim_start_matches("sha256:"))).unwrap();
    let store = Store::open(&paths(&dir)).unwrap();
    let err = store.load(&input, &PlatformSpec::host()).unwrap_err();
    assert!(matches!(err, StoreError::ArchiveMissing { .. }), "{err}");
    assert!(err.to_string().contains(&config), "{err}");
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn concurrent_loads_of_the_same_image_both_succeed_and_store_it_once() {
    let dir = Dir::new();
    let big = oci_image::noise(8 << 20, 9);
    let img = TestImage::new("amd64", None, &[&[("big", &big)], &[("small", b"x")]]);
    let input = layout(&dir, "layout", &[("example.com/same:1", Entry::Image(&img))]);
    let children: Vec<_> = (0..4)
        .map(|_| {
            dir.kboot()
                .args(["load", "-i"])
                .arg(&input)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a concurrent load failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(images_json(&dir).len(), 1);
    let mut want: Vec<String> = img.blobs().iter().map(|b| sha256(b)[7..].to_string()).collect();
    want.sort();
    assert_eq!(stored_blobs(&dir), want);
    let leftovers: Vec<_> = std::fs::read_dir(paths(&dir).ingest())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !n.to_string_lossy().starts_with("sha256-"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn rmi_then_prune_frees_only_unshared_blobs() {
    let dir = Dir::new();
    let shared = [("etc/os-release", &b"ID=test\n"[..])];
    let a = TestImage::new("amd64", None, &[&shared, &[("a", b"only a")]]);
    let b = TestImage::new("amd64", None, &[&shared, &[("b", b"only b")]]);
    let input = layout(
        &dir,
        "layout",
        &[
            ("example.com/a:1", Entry::Image(&a)),
            ("example.com/b:1", Entry::Image(&b)),
        ],
    );
    run_ok(dir.kboot().args(["load", "-i"]).arg(&input));
    run_ok(dir.kboot().args(["rmi", "example.com/a:1"]));
    let out = run_ok(dir.kboot().arg("prune"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed 3 blobs"));
    let mut want: Vec<String> = b.blobs().iter().map(|x| sha256(x)[7..].to_string()).collect();
    want.sort();
    assert_eq!(stored_blobs(&dir), want);
    let store = Store::open(&paths(&dir)).unwrap();
    assert!(matches!(
        store.resolve("example.com/a:1"),
        Err(StoreError::NotFound { .. })
    ));
    store.resolve("example.com/b:1").unwrap();

    let out = dir.kboot().args(["rmi", "example.com/nope:1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("example.com/nope:1"));
}

#[test]
fn save_then_load_into_a_fresh_root_round_trips() {
    let src = Dir::new();
    let a = TestImage::small(10);
    let input = layout(&src, "layout", &[("example.com/round:1", Entry::Image(&a))]);
    run_ok(src.kboot().args(["load", "-i"]).arg(&input));
    let archive = src.path().join("out.tar");
    run_ok(
        src.kboot()
            .args(["save", "-o"])
            .arg(&archive)
            .arg("example.com/round:1"),
    );

    let dst = Dir::new();
    let out = run_ok(dst.kboot().args(["load", "-i"]).arg(&archive));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("example.com/round:1@{}", a.manifest_digest())
    );
    assert_eq!(stored_blobs(&src), stored_blobs(&dst));
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn blobs_of_layout(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn save_output_is_read_by_skopeo_byte_for_byte() {
    assert!(have("skopeo"), "skopeo is needed (scripts/install-deps.sh installs it)");
    let dir = Dir::new();
    let img = TestImage::small(11);
    let input = layout(&dir, "layout", &[("example.com/sk:2", Entry::Image(&img))]);
    run_ok(dir.kboot().args(["load", "-i"]).arg(&input));
    let archive = dir.path().join("saved.tar");
    run_ok(dir.kboot().args(["save", "-o"]).arg(&archive).arg("example.com/sk:2"));
    let copied = dir.path().join("copied");
    run_ok(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        &format!("oci-archive:{}:example.com/sk:2", archive.display()),
        &format!("oci:{}:x", copied.display()),
    ]));
    let mut want: Vec<(String, Vec<u8>)> = img
        .blobs()
        .iter()
        .map(|b| (sha256(b)[7..].to_string(), b.to_vec()))
        .collect();
    want.sort();
    assert_eq!(blobs_of_layout(&copied), want);
}

#[test]
fn load_reads_what_umoci_and_skopeo_write() {
    assert!(have("umoci") && have("skopeo"), "umoci and skopeo are needed");
    let dir = Dir::new();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/motd"), "umoci test\n").unwrap();
    let oci = dir.path().join("umoci-layout");
    let image = format!("{}:v1", oci.display());
    run_ok(Command::new("umoci").args(["init", "--layout"]).arg(&oci));
    run_ok(Command::new("umoci").args(["new", "--image", &image]));
    run_ok(
        Command::new("umoci")
            .args(["insert", "--image", &image])
            .arg(&rootfs)
            .arg("/"),
    );
    run_ok(Command::new("umoci").args(["config", "--image", &image, "--architecture", "amd64", "--os", "linux"]));
    // A tag-only name gets `localhost/<layout dir name>`; skopeo writes the tar variant.
    let out = run_ok(dir.kboot().args(["load", "-i"]).arg(&oci));
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(line.starts_with("localhost/umoci-layout:v1@sha256:"), "{line}");
    let archive = dir.path().join("skopeo.tar");
    run_ok(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        &format!("oci:{image}"),
        &format!("oci-archive:{}:quay.io/test/motd:v1", archive.display()),
    ]));
    let out = run_ok(dir.kboot().args(["load", "-i"]).arg(&archive));
    let digest = line.split('@').nth(1).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("quay.io/test/motd:v1@{digest}")
    );
    let store = Store::open(&paths(&dir)).unwrap();
    let image = store.resolve("quay.io/test/motd:v1").unwrap();
    let layer_digest = image.manifest.layers()[0].digest().clone();
    let expected = blobs_of_layout(&oci)
        .into_iter()
        .find(|(hex, _)| hex == layer_digest.digest())
        .unwrap()
        .1;
    assert_eq!(std::fs::read(store.blob_path(&layer_digest)).unwrap(), expected);
}
