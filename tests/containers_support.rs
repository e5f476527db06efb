//! Helpers shared by the container tests: a busybox rootfs, plan files, `ps` as JSON.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{run_ok, Dir};

/// Debian's busybox-static, with every applet linked in `/bin` (absolute links,
/// resolved inside the rootfs), `/etc/passwd`, `/etc/group` and the usual empty dirs.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root", "var/lib"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("busybox-static is installed (scripts/install-deps.sh)");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("/bin/busybox", root.join("bin").join(applet));
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    root
}

pub fn write_plan(d: &Dir, yaml: &str) -> PathBuf {
    let p = d.path().join("plan.yml");
    std::fs::write(&p, yaml).unwrap();
    p
}

/// A plan of `restart: always` services running `command` in `rootfs`.
pub fn sleepers_plan(d: &Dir, rootfs: &Path, names: &[&str], command: &str) -> PathBuf {
    let mut yaml = String::from("services:\n");
    for n in names {
        yaml.push_str(&format!(
            "  {n}:\n    image: dir:{}\n    command: {command}\n    restart: always\n",
            rootfs.display()
        ));
    }
    write_plan(d, &yaml)
}

/// `kboot ps --format json` as values.
pub fn ps(cmd: &mut Command) -> Vec<serde_json::Value> {
    let out = run_ok(cmd.args(["ps", "--format", "json"]));
    serde_json::from_slice(&out.stdout).expect("ps --format json prints a JSON array")
}

pub fn find<'a>(ps: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    ps.iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in ps: {ps:?}"))
}

/// Polls `f` until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

pub fn pid_alive(pid: i64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

/// Runs `kboot down` when dropped, so a failing test leaves no supervisor or container behind.
pub struct Down<'a> {
    pub dir: &'a Dir,
    pub env: Vec<(&'static str, &'static str)>,
}

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let mut cmd = self.dir.kboot();
        cmd.envs(self.env.iter().copied());
        let _ = cmd.arg("down").output();
    }
}

/// A busybox image built with rootfs-tools (every applet linked in `/bin`,
/// passwd and group), loaded into the test's store under `reference`.
/// `extra` adds entries (an etcd binary, data dirs) and `config` sets the run defaults.
pub fn load_busybox_image(
    d: &Dir,
    reference: &str,
    extra: Vec<rootfs_tools::Entry>,
    config: impl FnOnce(rootfs_tools::ImageBuilder) -> rootfs_tools::ImageBuilder,
) {
    use rootfs_tools::{Entry, ImageBuilder, Layer};
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    let mut layer = Layer::new()
        .entry(Entry::host_file("bin/busybox", "/bin/busybox").mode(0o755))
        .entry(Entry::file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
        ))
        .entry(Entry::file("etc/group", "root:x:0:\nnogroup:x:65534:\n"))
        .entry(Entry::dir("tmp").mode(0o1777));
    for applet in String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .filter(|a| *a != "busybox")
    {
        layer = layer.entry(Entry::symlink(format!("bin/{applet}"), "/bin/busybox"));
    }
    for e in extra {
        layer = layer.entry(e);
    }
    let layout = d.path().join(format!("oci-{}", reference.replace(['/', ':'], "-")));
    config(ImageBuilder::new().layer(layer))
        .write_layout(&layout, reference)
        .expect("build the test image");
    run_ok(d.kboot().args(["load", "-i"]).arg(&layout));
}

/// SIGKILLs the supervisor of the test's root (a simulated crash) and waits until it is gone.
pub fn kill_supervisor(d: &Dir) {
    let sup: i32 = std::fs::read_to_string(d.path().join("state/supervisor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) on the supervisor this test started; no memory is involved.
    assert_eq!(unsafe { libc::kill(sup, libc::SIGKILL) }, 0);
    assert!(wait_until(Duration::from_secs(5), || !pid_alive(i64::from(sup))));
}
