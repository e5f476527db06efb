//! rootfs-tools as its users call it: images other tools read, same bytes twice.

use std::path::Path;
use std::process::Command;

use rootfs_tools::{write_index, Compression, Entry, ImageBuilder, Layer, MediaTypes, OciLayout, Platform};

fn sample(c: Compression) -> ImageBuilder {
    ImageBuilder::new()
        .layer(
            Layer::new()
                .entry(Entry::file("etc/motd", b"hello\n".to_vec()).mode(0o640).owner(1, 2))
                .entry(Entry::symlink("bin/sh", "busybox"))
                .entry(Entry::hardlink("etc/motd2", "etc/motd")),
        )
        .layer(Layer::new().entry(Entry::whiteout("etc/motd2")))
        .cmd(["/bin/sh"])
        .env("PATH=/bin")
        .label("b", "2")
        .label("a", "1")
        .compression(c)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn same_inputs_give_the_same_digests_and_tar_bytes() {
    for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let d = tempfile::tempdir().unwrap();
        let a = sample(c).write_tar(&d.path().join("a.tar"), "t").unwrap();
        let b = sample(c).write_tar(&d.path().join("b.tar"), "t").unwrap();
        assert_eq!(a, b, "{c:?}");
        assert_eq!(read(&d.path().join("a.tar")), read(&d.path().join("b.tar")), "{c:?}");
    }
    let d = tempfile::tempdir().unwrap();
    let gz = sample(Compression::Gzip).write_layout(d.path(), "gz").unwrap();
    let zs = sample(Compression::Zstd).write_layout(d.path(), "zs").unwrap();
    assert_eq!(gz.diff_ids(), zs.diff_ids(), "compression must not change the tar");
    assert_ne!(gz.manifest.digest, zs.manifest.digest);
}

#[test]
fn umoci_unpacks_what_we_build() {
    let d = tempfile::tempdir().unwrap();
    let layout = d.path().join("oci");
    sample(Compression::Gzip).write_layout(&layout, "t").unwrap();
    let bundle = d.path().join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:t", layout.display()))
        .arg(&bundle)
        .output()
        .expect("umoci (Debian package umoci) runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let root = bundle.join("rootfs");
    assert_eq!(read(&root.join("etc/motd")), b"hello\n");
    assert_eq!(std::fs::read_link(root.join("bin/sh")).unwrap(), Path::new("busybox"));
    assert!(
        !root.join("etc/motd2").exists(),
        "whiteout of layer 2 must delete the hardlink"
    );
    let config: serde_json::Value = serde_json::from_slice(&read(&bundle.join("config.json"))).unwrap();
    assert_eq!(config["process"]["args"][0], "/bin/sh");
}

#[test]
fn deb_files_become_layer_entries_for_every_compression() {
    let d = tempfile::tempdir().unwrap();
    let pkg = d.path().join("pkg");
    std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(pkg.join("usr/bin")).unwrap();
    std::fs::write(
        pkg.join("DEBIAN/control"),
        "Package: t\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n",
    )
    .unwrap();
    std::fs::write(pkg.join("usr/bin/tool"), b"#!/bin/sh\necho tool\n").unwrap();
    for z in ["gzip", "xz", "zstd", "none"] {
        let deb = d.path().join(format!("t-{z}.deb"));
        let out = Command::new("dpkg-deb")
            .args(["--root-owner-group", &format!("-Z{z}"), "--build"])
            .arg(&pkg)
            .arg(&deb)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let tar = Layer::new().deb(&deb).write_tar(Vec::new()).unwrap();
        let mut ar = tar::Archive::new(tar.as_slice());
        let mut found = false;
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().into_owned();
            assert!(!path.starts_with("./") && !path.is_absolute(), "{path:?}");
            if path == Path::new("usr/bin/tool") {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                assert_eq!(s, "#!/bin/sh\necho tool\n");
                assert_eq!(e.header().uid().unwrap(), 0);
                found = true;
            }
        }
        assert!(found, "usr/bin/tool missing from the {z} deb layer");
    }
}

#[test]
fn multi_platform_index_lists_each_platform() {
    let d = tempfile::tempdir().unwrap();
    let layout = OciLayout::create(d.path()).unwrap();
    let mut built = Vec::new();
    for p in ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"] {
        let img = ImageBuilder::new()
            .layer(Layer::new().entry(Entry::file("arch", p.as_bytes().to_vec())))
            .platform(Platform::parse(p).unwrap());
        built.push(img.write_blobs(&layout).unwrap());
    }
    let index = write_index(&layout, &built, "multi", MediaTypes::Oci).unwrap();
    let raw: serde_json::Value = serde_json::from_slice(&read(&layout.blob_path(&index.digest))).unwrap();
    let platforms: Vec<String> = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let mut s = format!("{}/{}", p["os"].as_str().unwrap(), p["architecture"].as_str().unwrap());
            if let Some(v) = p["variant"].as_str() {
                s = format!("{s}/{v}");
            }
            s
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"]);
    let tags = layout.manifests().unwrap();
    assert_eq!(tags.len(), 1);
    assert_eq!(tags[0].digest, index.digest);
    // skopeo picks the arm64 manifest out of our index.
    let out = Command::new("skopeo")
        .args(["--override-arch", "arm64", "inspect"])
        .arg(format!("oci:{}:multi", d.path().display()))
        .output()
        .expect("skopeo runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["Architecture"], "arm64");
}

#[test]
fn unchecked_layers_refuse_nothing_and_checked_layers_refuse_dotdot() {
    let hostile = Layer::unchecked().entry(Entry::file("/abs/../../x", b"x".to_vec()));
    assert!(hostile.write_tar(Vec::new()).is_ok());
    let checked = Layer::new().entry(Entry::file("a/../../x", b"x".to_vec()));
    assert!(checked.write_tar(Vec::new()).is_err());
}
