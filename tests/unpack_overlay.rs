//! Root: each container's writable view of a cached rootfs is an overlay mount whose
//! writes land in the container's own upper dir, never in the shared lower.

use std::path::Path;

use kboot::state::Paths;
use kboot::unpack::RootfsCache;
use rootfs_tools::{Entry, ImageBuilder, Layer};

use crate::common::{require_root, Dir};
use crate::unpack_util::layers_of;

fn mount_type(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = path.to_string_lossy().to_string();
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (f[4] == want).then(|| f[sep + 1].to_string())
    })
}

/// Unmounts on drop so a failing assertion does not leave mounts behind.
struct Release<'a>(&'a RootfsCache, kboot::state::ContainerDir);
impl Drop for Release<'_> {
    fn drop(&mut self) {
        let _ = self.0.release_container_rootfs(&self.1);
    }
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn overlay_views_share_the_lower_and_keep_writes_private() {
    require_root();
    let d = Dir::new();
    let paths = Paths::under(d.path());
    let layout = d.path().join("oci");
    ImageBuilder::new()
        .layer(
            Layer::new()
                .entry(Entry::file("etc/conf", b"v1".to_vec()))
                .entry(Entry::file("bin/app", b"app".to_vec()).mode(0o755)),
        )
        .write_layout(&layout, "t")
        .unwrap();
    let (layers, diff_ids) = layers_of(&layout, "t");
    let cache = RootfsCache::new(&paths);
    let lower = cache.ensure(&layers, &diff_ids).unwrap();
    let (one, two) = (paths.container("one"), paths.container("two"));
    let r1 = cache.container_rootfs(&lower, &one).unwrap();
    let _g1 = Release(&cache, one.clone());
    let r2 = cache.container_rootfs(&lower, &two).unwrap();
    let _g2 = Release(&cache, two.clone());
    assert_eq!(mount_type(&r1).as_deref(), Some("overlay"));
    assert_eq!(mount_type(&r2).as_deref(), Some("overlay"));

    std::fs::write(r1.join("etc/conf"), b"v2").unwrap();
    std::fs::remove_file(r1.join("bin/app")).unwrap();
    std::fs::write(r1.join("new"), b"n").unwrap();
    assert_eq!(std::fs::read(lower.join("etc/conf")).unwrap(), b"v1");
    assert!(lower.join("bin/app").exists());
    assert!(!lower.join("new").exists());
    assert_eq!(std::fs::read(r2.join("etc/conf")).unwrap(), b"v1");
    assert!(r2.join("bin/app").exists());
    assert_eq!(std::fs::read(one.rootfs_upper().join("new")).unwrap(), b"n");

    // Same view when asked again while mounted.
    assert_eq!(cache.container_rootfs(&lower, &one).unwrap(), r1);
    cache.release_container_rootfs(&one).unwrap();
    assert_eq!(mount_type(&r1), None);
    cache.release_container_rootfs(&one).unwrap();
    // Remounting brings the container's changes back.
    let r1 = cache.container_rootfs(&lower, &one).unwrap();
    assert_eq!(std::fs::read(r1.join("etc/conf")).unwrap(), b"v2");
    assert!(!r1.join("bin/app").exists());
}
