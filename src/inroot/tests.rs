use std::fs;
use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

use super::*;

/// `<tmp>/root` is the rootfs; `<tmp>/secret` sits next to it, as a host file would.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(d.path().join("secret"), "host secret\n").unwrap();
    (d, root)
}

fn read(root: &Path, path: &str) -> Result<Option<String>> {
    RootFs::open(root)?.read_to_string(Path::new(path), 1 << 20)
}

#[test]
fn read_a_regular_file_through_relative_and_absolute_links() {
    let (_d, root) = setup();
    fs::create_dir_all(root.join("usr/share")).unwrap();
    fs::write(root.join("usr/share/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
    symlink("../usr/share/passwd", root.join("etc/passwd")).unwrap();
    symlink("/usr/share/passwd", root.join("etc/group")).unwrap();
    assert_eq!(read(&root, "/etc/passwd").unwrap().unwrap(), "root:x:0:0::/:/bin/sh\n");
    assert_eq!(read(&root, "etc/group").unwrap().unwrap(), "root:x:0:0::/:/bin/sh\n");
}

#[test]
fn an_absolute_link_to_a_host_file_resolves_inside_the_rootfs() {
    let (d, root) = setup();
    let host_file = d.path().join("secret");
    symlink(&host_file, root.join("etc/passwd")).unwrap();
    // The host path does not exist inside the rootfs: not found, never the host's file.
    assert_eq!(read(&root, "/etc/passwd").unwrap(), None);
    // Once the same path exists inside, that file is what is read.
    let inside = root.join(host_file.strip_prefix("/").unwrap());
    fs::create_dir_all(inside.parent().unwrap()).unwrap();
    fs::write(&inside, "the image's own\n").unwrap();
    assert_eq!(read(&root, "/etc/passwd").unwrap().unwrap(), "the image's own\n");
}

#[test]
fn dot_dot_never_leaves_the_rootfs() {
    let (_d, root) = setup();
    symlink("../../../../../../../../secret", root.join("etc/passwd")).unwrap();
    assert_eq!(read(&root, "/etc/passwd").unwrap(), None);
    assert_eq!(read(&root, "../secret").unwrap(), None);
    assert_eq!(read(&root, "/etc/../../secret").unwrap(), None);
    fs::write(root.join("secret"), "inside\n").unwrap();
    assert_eq!(read(&root, "/etc/passwd").unwrap().unwrap(), "inside\n");
}

#[test]
fn a_link_to_dev_zero_is_the_rootfs_dev_zero_not_the_hosts() {
    let (_d, root) = setup();
    symlink("/dev/zero", root.join("etc/passwd")).unwrap();
    assert_eq!(read(&root, "/etc/passwd").unwrap(), None);
}

#[test]
fn a_magic_link_is_not_followed() {
    let (_d, root) = setup();
    // /proc/self/root inside the rootfs is the rootfs's own (absent) /proc, never the host's.
    symlink("/proc/self/root/etc/hostname", root.join("etc/passwd")).unwrap();
    assert_eq!(read(&root, "/etc/passwd").unwrap(), None);
}

#[test]
fn a_fifo_is_refused_at_once() {
    let (_d, root) = setup();
    nix::unistd::mkfifo(
        &root.join("etc/passwd"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let t = Instant::now();
    let err = read(&root, "/etc/passwd").unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(matches!(err, InRootError::NotRegular { kind: "FIFO", .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("/etc/passwd") && msg.contains(&root.display().to_string()),
        "{msg}"
    );
}

#[test]
fn a_directory_or_socket_is_refused() {
    let (_d, root) = setup();
    fs::create_dir(root.join("etc/passwd")).unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(root.join("etc/group")).unwrap();
    assert!(matches!(
        read(&root, "/etc/passwd").unwrap_err(),
        InRootError::NotRegular { kind: "directory", .. }
    ));
    assert!(matches!(
        read(&root, "/etc/group").unwrap_err(),
        InRootError::NotRegular { kind: "socket", .. }
    ));
}

#[test]
fn a_link_loop_is_an_error_naming_the_path() {
    let (_d, root) = setup();
    symlink("/etc/b", root.join("etc/a")).unwrap();
    symlink("/etc/a", root.join("etc/b")).unwrap();
    symlink("/etc/a", root.join("etc/passwd")).unwrap();
    let err = read(&root, "/etc/passwd").unwrap_err();
    assert!(matches!(err, InRootError::Resolve { .. }), "{err}");
    assert!(err.to_string().contains("Too many levels of symbolic links"), "{err}");
    assert!(err.to_string().contains("/etc/passwd"), "{err}");
}

#[test]
fn a_huge_sparse_file_is_refused_without_reading_it() {
    let (_d, root) = setup();
    let f = fs::File::create(root.join("etc/passwd")).unwrap();
    f.set_len(10 << 30).unwrap();
    let t = Instant::now();
    let err = read(&root, "/etc/passwd").unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(err, InRootError::TooLarge { size, limit, .. } if size == 10 << 30 && limit == 1 << 20),
        "{err}"
    );
}

#[test]
fn metadata_follows_links_inside_and_reports_missing() {
    let (_d, root) = setup();
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("bin/busybox"), b"").unwrap();
    fs::set_permissions(
        root.join("bin/busybox"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    symlink("/bin/busybox", root.join("bin/sh")).unwrap();
    let r = RootFs::open(&root).unwrap();
    let st = r.metadata(Path::new("/bin/sh")).unwrap().unwrap();
    assert!(st.is_file() && st.is_executable());
    assert!(r.metadata(Path::new("/etc")).unwrap().unwrap().is_dir());
    assert_eq!(r.metadata(Path::new("/bin/missing")).unwrap(), None);
    assert_eq!(r.metadata(Path::new("/bin/busybox/x")).unwrap(), None);
}
