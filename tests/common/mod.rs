//! Shared test utilities: a temp kboot root per test and the binary under test.
#![allow(dead_code)]

pub mod oci_image;
pub mod registry;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Panics unless running as root: a privileged test must fail loudly, not pass, without root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (run the privileged suite as root: see README)"
    );
}

/// A unique directory holding a kboot root, state and config for one test.
pub struct Dir {
    pub tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Self {
        Self {
            tmp: tempfile::Builder::new()
                .prefix("kboot-test-")
                .tempdir()
                .expect("create temp dir"),
        }
    }
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }
    /// `kboot` with `--root`, `--state`, `--config` pointing inside this dir.
    pub fn kboot(&self) -> Command {
        let mut cmd = Command::new(kboot_bin());
        cmd.env_remove("KBOOT_LOG")
            .env("KBOOT_ROOT", self.path().join("root"))
            .env("KBOOT_STATE", self.path().join("state"))
            .env("KBOOT_CONFIG", self.path().join("config"));
        cmd
    }
}

impl Drop for Dir {
    /// Removes the root's parent cgroup in every hierarchy, as `kboot down` does: tests that
    /// end without `down` (CRI tests, shim tests) would otherwise leave one empty
    /// `kboot-<hash>` directory per test in each controller. Only empty directories go;
    /// without root this does nothing.
    fn drop(&mut self) {
        kboot::supervisor::remove_cgroup_parents(&kboot::state::Paths::under(self.path()));
    }
}

/// A non-loopback address of this host, for `run master|worker` (which checks that
/// IP_ADDRESS is local).
pub fn local_ip() -> std::net::Ipv4Addr {
    kboot::roles::netdetect::host_ipv4_addresses()
        .unwrap()
        .into_iter()
        .map(|(_, a)| a)
        .find(|a| !a.is_loopback())
        .expect("this test needs a host with a non-loopback IPv4 address")
}

pub fn kboot_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kboot"))
}

/// Runs a command and returns its output, with stdout and stderr in the panic message on failure.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn command");
    assert!(
        out.status.success(),
        "command {cmd:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
