//! The binary needs nothing but the C library (issue 15): libseccomp is linked in
//! (`.cargo/config.toml`), so kboot runs on a host without libseccomp2. Checked on the binary
//! under test, which cargo links with the same settings as the release binary;
//! `KBOOT_PORTABLE_BIN=target/release/kboot` checks another build the same way.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{kboot_bin, Dir};

/// What a Linux glibc host has whatever else is installed: the C library (with libm and the
/// loader) and libgcc_s (Rust's unwinder), both in Debian's `required` set.
const BASE_LIBS: &[&str] = &["libc.so.6", "libm.so.6", "libgcc_s.so.1", "ld-linux"];

fn binary() -> PathBuf {
    std::env::var_os("KBOOT_PORTABLE_BIN").map_or_else(kboot_bin, PathBuf::from)
}

/// The libraries `ldd` resolves for `bin`, as absolute paths.
fn ldd(bin: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(bin).output().expect("run ldd (libc-bin)");
    assert!(
        out.status.success(),
        "ldd {}: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')).map(PathBuf::from))
        .collect()
}

#[test]
fn portable_binary_links_no_libseccomp_and_runs_in_a_root_with_only_the_c_library() {
    let bin = binary();
    let out = Command::new("readelf")
        .arg("-d")
        .arg(&bin)
        .output()
        .expect("run readelf (binutils, part of build-essential)");
    let dynamic = String::from_utf8_lossy(&out.stdout);
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(
        !needed.is_empty(),
        "readelf -d {} shows no NEEDED entries:\n{dynamic}",
        bin.display()
    );
    let extra: Vec<&&str> = needed
        .iter()
        .filter(|n| !BASE_LIBS.iter().any(|b| n.starts_with(b)))
        .collect();
    assert!(
        extra.is_empty(),
        "{} needs {extra:?} beyond the C library (all: {needed:?}); libseccomp must be linked statically",
        bin.display()
    );

    // A root filesystem holding the binary and exactly the libraries it loads: no
    // libseccomp, no /proc, no /etc.
    let d = Dir::new();
    let root = d.path().join("rootfs");
    let libs = ldd(&bin);
    assert!(
        !libs.iter().any(|l| l.to_string_lossy().contains("seccomp")),
        "{libs:?}"
    );
    for lib in &libs {
        let to = root.join(lib.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(lib, &to).unwrap_or_else(|e| panic!("copy {}: {e}", lib.display()));
    }
    std::fs::copy(&bin, root.join("kboot")).unwrap();
    let in_root = |args: &[&str]| {
        // A user namespace makes chroot work without root; as root it works the same.
        // By path: the cleared environment has no PATH to find it with.
        let out = Command::new("/usr/bin/unshare")
            .args(["--user", "--map-root-user", "--root"])
            .arg(&root)
            .arg("/kboot")
            .args(args)
            .env_clear()
            .env("PATH", "/")
            .output()
            .expect("run unshare (util-linux)");
        assert!(
            out.status.success(),
            "kboot {args:?} in a root with only {libs:?}: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let version = in_root(&["--version"]);
    assert_eq!(version.trim(), format!("kboot {}", env!("CARGO_PKG_VERSION")));
    let plan = in_root(&[
        "--root",
        "/var/lib/kboot",
        "plan",
        "master",
        "--ip-address",
        "192.0.2.10",
        "--arch",
        "amd64",
    ]);
    assert!(
        plan.contains("role: master") && plan.contains("registry.k8s.io/etcd"),
        "{plan}"
    );
}
