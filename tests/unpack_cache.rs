//! The rootfs cache (keyed by chain ID, never half-complete, pruned) and
//! `kboot unpack REF DIR` on an image loaded from a rootfs-tools archive.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kboot::state::Paths;
use kboot::unpack::{chain_id, RootfsCache, UnpackError, ViewMode};
use rootfs_tools::{Compression, Entry, ImageBuilder, Layer};

use crate::common::{run_ok, Dir};
use crate::unpack_util::layers_of;

fn image() -> ImageBuilder {
    ImageBuilder::new()
        .layer(Layer::new().entry(Entry::file("etc/hostname", b"base\n".to_vec())))
        .layer(
            Layer::new()
                .entry(Entry::file("bin/tool", b"#!/bin/sh\n".to_vec()).mode(0o755))
                .entry(Entry::whiteout("etc/hostname")),
        )
        .cmd(["/bin/tool"])
        .compression(Compression::Zstd)
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn ensure_unpacks_once_per_chain_id_and_reuses_it() {
    let d = Dir::new();
    let paths = Paths::under(d.path());
    let layout = d.path().join("oci");
    image().write_layout(&layout, "t").unwrap();
    let (layers, diff_ids) = layers_of(&layout, "t");
    let cache = RootfsCache::new(&paths);
    let first = cache.ensure(&layers, &diff_ids).unwrap();
    let hex = chain_id(&diff_ids).unwrap().trim_start_matches("sha256:").to_string();
    assert_eq!(first, paths.rootfs(&hex));
    assert!(first.join("bin/tool").is_file());
    assert!(!first.join("etc/hostname").exists());
    let ino = std::fs::metadata(first.join("bin/tool")).unwrap().ino();
    // Second call: same tree, not unpacked again (same inode), even with the blobs gone.
    for l in &layers {
        std::fs::remove_file(&l.path).unwrap();
    }
    let again = cache.ensure(&layers, &diff_ids).unwrap();
    assert_eq!(again, first);
    assert_eq!(std::fs::metadata(again.join("bin/tool")).unwrap().ino(), ino);
    assert_eq!(leftovers(&paths.rootfs_cache()), vec![hex]);
}

#[test]
fn a_failed_unpack_leaves_nothing_that_looks_complete() {
    let d = Dir::new();
    let paths = Paths::under(d.path());
    let layout = d.path().join("oci");
    image().write_layout(&layout, "t").unwrap();
    let (layers, mut diff_ids) = layers_of(&layout, "t");
    let cache = RootfsCache::new(&paths);

    // A layer whose content is not what the config says.
    let good = diff_ids[1].clone();
    diff_ids[1] = diff_ids[0].clone();
    let err = cache.ensure(&layers, &diff_ids).unwrap_err();
    assert!(matches!(err, UnpackError::DiffIdMismatch { .. }), "{err}");
    assert!(leftovers(&paths.rootfs_cache()).is_empty());

    // A truncated blob.
    diff_ids[1] = good;
    let blob = std::fs::read(&layers[1].path).unwrap();
    std::fs::write(&layers[1].path, &blob[..blob.len() / 2]).unwrap();
    let err = cache.ensure(&layers, &diff_ids).unwrap_err();
    assert!(err.to_string().contains(&layers[1].digest), "{err}");
    assert!(leftovers(&paths.rootfs_cache()).is_empty());

    // Layer count and diff_ids disagree.
    assert!(matches!(
        cache.ensure(&layers, &diff_ids[..1]),
        Err(UnpackError::LayerCount { .. })
    ));
}

#[test]
fn prune_keeps_referenced_rootfs_and_removes_the_rest_and_stale_temps() {
    let d = Dir::new();
    let paths = Paths::under(d.path());
    let cache = RootfsCache::new(&paths);
    let mut ids = Vec::new();
    for (i, tag) in ["a", "b"].iter().enumerate() {
        let layout = d.path().join(tag);
        ImageBuilder::new()
            .layer(Layer::new().entry(Entry::file("f", vec![b'x'; 1000 * (i + 1)])))
            .write_layout(&layout, "t")
            .unwrap();
        let (layers, diff_ids) = layers_of(&layout, "t");
        cache.ensure(&layers, &diff_ids).unwrap();
        ids.push(chain_id(&diff_ids).unwrap());
    }
    // An interrupted unpack by a process that no longer exists.
    let stale = paths.rootfs_cache().join(".tmp-dead-999999999-0");
    std::fs::create_dir_all(stale.join("x")).unwrap();
    let freed = cache.prune(&ids[..1]).unwrap();
    assert_eq!(freed, 2000);
    let left = leftovers(&paths.rootfs_cache());
    assert_eq!(left, vec![ids[0].trim_start_matches("sha256:").to_string()]);
    assert_eq!(cache.prune(&ids[..1]).unwrap(), 0);
}

#[test]
fn copy_views_are_private_and_leave_the_cache_untouched() {
    let d = Dir::new();
    let paths = Paths::under(d.path());
    let layout = d.path().join("oci");
    image().write_layout(&layout, "t").unwrap();
    let (layers, diff_ids) = layers_of(&layout, "t");
    let cache = RootfsCache::new(&paths).with_view_mode(ViewMode::Copy);
    let lower = cache.ensure(&layers, &diff_ids).unwrap();
    let c1 = cache.container_rootfs(&lower, &paths.container("one")).unwrap();
    let c2 = cache.container_rootfs(&lower, &paths.container("two")).unwrap();
    std::fs::write(c1.join("bin/tool"), b"changed").unwrap();
    std::fs::write(c1.join("new"), b"n").unwrap();
    assert_eq!(std::fs::read(lower.join("bin/tool")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(std::fs::read(c2.join("bin/tool")).unwrap(), b"#!/bin/sh\n");
    assert!(!lower.join("new").exists());
    // Asking again gives the same view, with its changes.
    assert_eq!(cache.container_rootfs(&lower, &paths.container("one")).unwrap(), c1);
    assert_eq!(std::fs::read(c1.join("bin/tool")).unwrap(), b"changed");
    cache.release_container_rootfs(&paths.container("one")).unwrap();
    cache.release_container_rootfs(&paths.container("one")).unwrap();
}

#[test]
fn kboot_unpack_exports_a_loaded_image() {
    let d = Dir::new();
    let archive = d.path().join("img.tar");
    image().write_tar(&archive, "example.test/tool:1").unwrap();
    run_ok(d.kboot().arg("load").arg("-i").arg(&archive));
    let out_dir = d.path().join("out");
    let out = run_ok(d.kboot().args(["unpack", "example.test/tool:1"]).arg(&out_dir));
    assert!(String::from_utf8_lossy(&out.stdout).contains("unpacked into"));
    assert_eq!(std::fs::read(out_dir.join("bin/tool")).unwrap(), b"#!/bin/sh\n");
    assert!(!out_dir.join("etc/hostname").exists());
    // Refuses to merge into a directory that already has files.
    let out = d
        .kboot()
        .args(["unpack", "example.test/tool:1"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    // An unknown image is an error naming it.
    let out = d
        .kboot()
        .args(["unpack", "example.test/nope:1"])
        .arg(d.path().join("o2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("example.test/nope:1"));
}
