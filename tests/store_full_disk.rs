//! Root only: the store on a nearly full filesystem (a small tmpfs).

use std::process::Command;

use kboot::state::Paths;

use crate::common::oci_image::{noise, write_layout, Entry, TestImage};
use crate::common::{require_root, run_ok, Dir};

/// Unmounts on drop, so a failing assertion does not leave the mount behind.
struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn load_on_a_full_disk_fails_clearly_and_names_nothing() {
    require_root();
    let dir = Dir::new();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "kboot-test-full"])
            .arg(&root),
    );
    let _mount = Mount(root.clone());

    let big = noise(4 << 20, 1);
    let img = TestImage::new("amd64", None, &[&[("small", b"s")], &[("big", &big)]]);
    let layout = dir.path().join("layout");
    write_layout(&layout, &[("example.com/full:1", Entry::Image(&img))]);
    let out = dir.kboot().args(["load", "-i"]).arg(&layout).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left on device"), "{err}");

    let out = run_ok(dir.kboot().args(["images", "--format", "json"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let big_layer = crate::common::oci_image::sha256(&img.layers[1]);
    let paths = Paths::under(dir.path());
    assert!(
        !paths.blob("sha256", &big_layer[7..]).exists(),
        "a partial blob became visible"
    );
    // prune clears the partial file, and the store works again.
    run_ok(dir.kboot().arg("prune"));
    let small = TestImage::small(2);
    let layout2 = dir.path().join("layout2");
    write_layout(&layout2, &[("example.com/small:1", Entry::Image(&small))]);
    run_ok(dir.kboot().args(["load", "-i"]).arg(&layout2));
}
