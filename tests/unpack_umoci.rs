//! Differential tests against Debian's `umoci unpack` (root: owners, devices,
//! security.* xattrs). Both unpack the same rootfs-tools image; every path's type,
//! mode, owner, size, content hash, link target, device numbers and xattrs must agree.
//! Directory mtimes are not compared (both tools touch parents while unpacking).

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use kboot::unpack::unpack_layers;
use rootfs_tools::{apt, Compression, Entry, ImageBuilder, Layer};
use sha2::{Digest, Sha256};

use crate::common::require_root;
use crate::unpack_util::layers_of;

/// What is compared for one path.
fn describe(path: &Path) -> String {
    let m = std::fs::symlink_metadata(path).unwrap();
    let ft = m.file_type();
    let what = if ft.is_symlink() {
        format!("symlink -> {}", std::fs::read_link(path).unwrap().display())
    } else if ft.is_dir() {
        "dir".into()
    } else if ft.is_file() {
        format!(
            "file size={} sha256={} nlink={}",
            m.len(),
            hex::encode(Sha256::digest(std::fs::read(path).unwrap())),
            m.nlink()
        )
    } else if ft.is_char_device() || ft.is_block_device() {
        let kind = if ft.is_char_device() { "char" } else { "block" };
        format!("{kind} {}:{}", libc::major(m.rdev()), libc::minor(m.rdev()))
    } else if ft.is_fifo() {
        "fifo".into()
    } else {
        "other".into()
    };
    let mode = if ft.is_symlink() { 0o777 } else { m.mode() & 0o7777 };
    let mut xattrs: Vec<String> = xattr::list(path)
        .map(|names| {
            names
                .map(|n| {
                    let v = xattr::get(path, &n).ok().flatten().unwrap_or_default();
                    format!("{}={}", n.to_string_lossy(), hex::encode(v))
                })
                .collect()
        })
        .unwrap_or_default();
    xattrs.sort();
    format!("{what} mode={mode:o} owner={}:{} xattrs={xattrs:?}", m.uid(), m.gid())
}

fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            out.insert(p.strip_prefix(root).unwrap().to_path_buf(), describe(&p));
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

/// Builds `image` into a layout, unpacks it with umoci and with kboot, compares.
/// Returns the number of paths compared.
fn compare(image: ImageBuilder) -> usize {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    image.write_layout(&layout, "t").unwrap();
    let bundle = tmp.path().join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:t", layout.display()))
        .arg(&bundle)
        .output()
        .expect("umoci (Debian package umoci) runs");
    assert!(out.status.success(), "umoci: {}", String::from_utf8_lossy(&out.stderr));
    let (layers, _) = layers_of(&layout, "t");
    let ours = tmp.path().join("kboot");
    unpack_layers(&layers, &ours).unwrap();
    let theirs = tree(&bundle.join("rootfs"));
    let mine = tree(&ours);
    let mut diffs = Vec::new();
    for (p, t) in &theirs {
        match mine.get(p) {
            Some(m) if m == t => {}
            Some(m) => diffs.push(format!("{}:\n  umoci: {t}\n  kboot: {m}", p.display())),
            None => diffs.push(format!("{}: only in umoci ({t})", p.display())),
        }
    }
    for (p, m) in &mine {
        if !theirs.contains_key(p) {
            diffs.push(format!("{}: only in kboot ({m})", p.display()));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs[..diffs.len().min(30)].join("\n")
    );
    theirs.len()
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn crafted_stack_with_whiteouts_links_devices_and_xattrs_matches_umoci() {
    require_root();
    // security.capability v2 for cap_net_raw (as setcap writes it).
    let cap: Vec<u8> = vec![0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let l1 = Layer::new()
        .entry(Entry::dir("etc").mode(0o755))
        .entry(Entry::file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n".to_vec()))
        .entry(
            Entry::file("etc/shadow", b"root:*:1::::::\n".to_vec())
                .mode(0o640)
                .owner(0, 42),
        )
        .entry(Entry::dir("tmp").mode(0o1777))
        .entry(
            Entry::file("bin/ping", b"ping".to_vec())
                .mode(0o4755)
                .xattr("security.capability", cap),
        )
        .entry(Entry::file("bin/sgid", b"sgid".to_vec()).mode(0o2755).owner(0, 5))
        .entry(Entry::file("bin/tagged", b"t".to_vec()).xattr("user.kboot.test", b"v1".to_vec()))
        .entry(Entry::symlink("bin/sh", "busybox"))
        .entry(Entry::dir("dev"))
        .entry(Entry::char_device("dev/null", 1, 3).mode(0o666))
        .entry(Entry::block_device("dev/loop0", 7, 0).mode(0o660).owner(0, 6))
        .entry(Entry::fifo("run/fifo").mode(0o620))
        .entry(Entry::dir("opq"))
        .entry(Entry::file("opq/lower", b"l".to_vec()))
        .entry(Entry::dir("opq/sub"))
        .entry(Entry::file("opq/sub/lower", b"l".to_vec()))
        .entry(Entry::file("gone", b"g".to_vec()))
        .entry(Entry::dir("gonedir"))
        .entry(Entry::file("gonedir/f", b"f".to_vec()))
        .entry(
            Entry::file("home/user/data", b"d".to_vec())
                .owner(1000, 1000)
                .mode(0o600),
        )
        .entry(Entry::dir("home/user").owner(1000, 1000).mode(0o700));
    let l2 = Layer::new()
        .entry(Entry::hardlink("bin/ping2", "bin/ping"))
        .entry(Entry::hardlink("etc/passwd-", "etc/passwd"))
        .entry(Entry::whiteout("gone"))
        .entry(Entry::whiteout("gonedir"))
        .entry(Entry::opaque("opq"))
        .entry(Entry::file("opq/upper", b"u".to_vec()))
        .entry(Entry::file("etc/passwd", b"root:x:0:0::/root:/bin/ash\n".to_vec()))
        .entry(Entry::dir("tmp").mode(0o1777).owner(0, 0))
        .entry(Entry::file("dev", b"now a file".to_vec()).owner(3, 3));
    let l3 = Layer::new()
        .entry(Entry::dir("gone").mode(0o711))
        .entry(Entry::hardlink("opq/upper-link", "opq/upper"))
        .entry(
            Entry::file("home/user/data", b"changed".to_vec())
                .owner(1000, 1000)
                .mode(0o644),
        );
    let stack = |c| {
        ImageBuilder::new()
            .layer(l1.clone())
            .layer(l2.clone())
            .layer(l3.clone())
            .compression(c)
    };
    for c in [Compression::Gzip, Compression::None] {
        let n = compare(stack(c));
        assert!(n > 20, "only {n} paths compared");
    }
    // umoci 0.4.7 cannot read zstd layers: the zstd image must unpack to the same
    // tree as the gzip one umoci agreed with.
    let tmp = tempfile::tempdir().unwrap();
    let mut trees = Vec::new();
    for (c, name) in [(Compression::Gzip, "gz"), (Compression::Zstd, "zst")] {
        let layout = tmp.path().join(name);
        stack(c).write_layout(&layout, "t").unwrap();
        let (layers, _) = layers_of(&layout, "t");
        unpack_layers(&layers, &tmp.path().join(format!("root-{name}"))).unwrap();
        trees.push(tree(&tmp.path().join(format!("root-{name}"))));
    }
    assert_eq!(trees[0], trees[1]);
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn busybox_image_matches_umoci() {
    require_root();
    let out = Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .expect("busybox-static installed");
    let mut layer = Layer::new().entry(Entry::host_file("bin/busybox", "/bin/busybox").mode(0o755));
    for applet in String::from_utf8(out.stdout).unwrap().lines() {
        if applet != "bin/busybox" {
            layer = layer.entry(Entry::hardlink(applet, "bin/busybox"));
        }
    }
    let n = compare(ImageBuilder::new().layer(layer));
    assert!(n > 200, "only {n} paths compared");
}

/// `.deb` files of real Debian packages, downloaded once per target dir.
fn debs(names: &[&str]) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("unpack-debs");
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let opts = apt::AptOptions {
        no_deps: true,
        exclude: Vec::new(),
    };
    apt::download(&names, &opts, &dir).expect("apt-get download (needs apt lists: apt-get update)")
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn debian_packages_image_with_thousands_of_files_matches_umoci() {
    require_root();
    let base = debs(&["libc6", "coreutils", "perl-base", "busybox-static"]);
    let more = debs(&["perl-modules-5.36"]);
    let mut l1 = Layer::new();
    for d in &base {
        l1 = l1.deb(d);
    }
    let mut l2 = Layer::new();
    for d in &more {
        l2 = l2.deb(d);
    }
    // A third layer as a package upgrade would make one: files replaced, removed, a
    // directory emptied.
    let l3 = Layer::new()
        .entry(Entry::whiteout("usr/bin/yes"))
        .entry(Entry::opaque("usr/share/doc"))
        .entry(Entry::file("usr/share/doc/README", b"docs removed\n".to_vec()))
        .entry(Entry::file("usr/bin/true", b"#!/bin/sh\nexit 0\n".to_vec()).mode(0o755));
    let n = compare(ImageBuilder::new().layer(l1).layer(l2).layer(l3));
    assert!(n > 2000, "only {n} paths compared");
}
