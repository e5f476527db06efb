//! End to end: an image built by the rootfs-tools binary, pushed to Debian's
//! docker-registry on loopback, pulled and unpacked by kboot.

use std::process::Command;

use crate::common::registry::{Auth, Registry};
use crate::common::{run_ok, Dir};

#[test]
fn built_pushed_pulled_and_unpacked_image_has_our_files() {
    let reg = Registry::start(Auth::None);
    let dir = Dir::new();
    let src = dir.path().join("hello");
    std::fs::write(&src, b"#!/bin/sh\necho hello\n").unwrap();
    let target = format!("{}/test/hello:1", reg.host());
    let out = run_ok(
        Command::new(rootfs_tools_bin())
            .args(["build", "--add"])
            .arg(format!("{}:/bin/hello:755:10:20", src.display()))
            .args(["--cmd", "/bin/hello", "--compression", "zstd", "--tag", "1", "-o"])
            .arg(dir.path().join("oci"))
            .args(["--push", &target, "--insecure"]),
    );
    let digest = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");

    let pulled = run_ok(
        dir.kboot()
            .args(["pull", "--quiet", "--insecure-registry", &reg.host(), &target]),
    );
    assert!(
        String::from_utf8_lossy(&pulled.stdout).contains(&digest),
        "pulled another manifest"
    );
    let rootfs = dir.path().join("rootfs");
    run_ok(dir.kboot().args(["unpack", &target]).arg(&rootfs));
    assert_eq!(
        std::fs::read(rootfs.join("bin/hello")).unwrap(),
        b"#!/bin/sh\necho hello\n"
    );
    let meta = std::fs::metadata(rootfs.join("bin/hello")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
        0o755
    );
}

/// The rootfs-tools binary, built next to kboot in the same target dir.
fn rootfs_tools_bin() -> std::path::PathBuf {
    let kboot = crate::common::kboot_bin();
    let bin = kboot.with_file_name("rootfs-tools");
    if !bin.exists() {
        run_ok(Command::new(env!("CARGO")).args(["build", "-q", "-p", "rootfs-tools"]));
    }
    bin
}
