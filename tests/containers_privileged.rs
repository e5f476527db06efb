//! Tier 3: real containers through libcontainer (root only): etcd, the
//! kubelet's mount contract, a differential probe against runc, supervisor
//! restarts and faults.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{require_root, run_ok, Dir};
use crate::containers_support::{
    busybox_rootfs, find, kill_supervisor, load_busybox_image, pid_alive, ps, sleepers_plan, wait_until, write_plan,
    Down,
};

fn guard(d: &Dir) -> Down<'_> {
    Down {
        dir: d,
        env: Vec::new(),
    }
}

/// A port per test process and purpose, so parallel tests never collide.
fn port(offset: u16) -> u16 {
    20000 + (std::process::id() % 4000) as u16 * 4 + offset
}

/// The directory of container `name`'s cgroup under a hierarchy: its cgroupfs path, or with
/// the systemd driver (detected on systemd hosts with cgroup v2) the scope systemd made.
fn cgroup_dir(paths: &kboot::state::Paths, name: &str) -> String {
    kboot::cgroups::Driver::load(&paths.cgroup_driver_file()).fs_dir(&paths.cgroup(name))
}

fn cgroup_procs(d: &Dir, name: &str) -> Vec<i64> {
    let cg = cgroup_dir(&kboot::state::Paths::under(d.path()), name);
    let hierarchy = if kboot::cgroups::Layout::probe().is_unified() {
        ""
    } else {
        "/memory"
    };
    std::fs::read_to_string(format!("/sys/fs/cgroup{hierarchy}{cg}/cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn containers_busybox_runs_isolated_with_logs_exec_stop_and_clean_down() {
    require_root();
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    let plan = write_plan(
        &d,
        &format!(
            "services:\n  box:\n    image: dir:{}\n    command: [\"/bin/sh\", \"-c\", \"echo host=$(hostname) pid=$$; exec sleep 1000\"]\n    environment: {{GREETING: hi}}\n    mem_limit: 64m\n    restart: unless-stopped\n",
            rootfs.display()
        ),
    );
    run_ok(d.kboot().args(["run", "-d", "-f"]).arg(&plan));
    let list = ps(&mut d.kboot());
    let pid = find(&list, "box")["pid"].as_i64().unwrap();
    assert!(pid_alive(pid));
    assert_eq!(
        cgroup_procs(&d, "box"),
        [pid],
        "the container's init is the only process of its cgroup"
    );
    assert!(wait_until(Duration::from_secs(5), || {
        String::from_utf8_lossy(&d.kboot().args(["logs", "box"]).output().unwrap().stdout) == "host=box pid=1\n"
    }));

    let out = run_ok(d.kboot().args([
        "exec",
        "box",
        "--",
        "/bin/sh",
        "-c",
        "echo $GREETING; cat /proc/1/cmdline; cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || true",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("hi\nsleep"), "{text}");
    let out = d
        .kboot()
        .args(["exec", "box", "--", "/bin/sh", "-c", "exit 7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    // exec joins the container's cgroup, not just its namespaces.
    let cg = cgroup_dir(&kboot::state::Paths::under(d.path()), "box");
    let out = run_ok(d.kboot().args(["exec", "box", "--", "cat", "/proc/self/cgroup"]));
    let text = String::from_utf8_lossy(&out.stdout);
    if kboot::cgroups::Layout::probe().is_unified() {
        // Inside the container's cgroup namespace its own cgroup is the root; a process
        // left outside it would show a `/..` path.
        assert_eq!(text, "0::/\n");
    } else {
        assert!(
            text.lines().any(|l| l.contains(":memory:") && l.ends_with(&cg)),
            "{text}"
        );
    }

    run_ok(d.kboot().args(["stop", "-t", "1", "box"]));
    let b = find(&ps(&mut d.kboot()), "box").clone();
    assert_eq!(b["status"], "stopped");
    // `sleep` as PID 1 ignores SIGTERM: the stop escalated to SIGKILL.
    assert_eq!(b["exit_code"], 137);
    assert!(!pid_alive(pid));

    run_ok(d.kboot().arg("down"));
    let paths = kboot::state::Paths::under(d.path());
    let cg = cgroup_dir(&paths, "box");
    let parent = Path::new(&cg).parent().unwrap().to_string_lossy().into_owned();
    let left = match (
        kboot::cgroups::Layout::probe().is_unified(),
        kboot::cgroups::driver::is_systemd_path(
            &kboot::cgroups::Driver::load(&paths.cgroup_driver_file()).container_path(&paths.cgroup("box")),
        ),
    ) {
        (false, _) => format!("/sys/fs/cgroup/memory{parent}"),
        // systemd removes the scope; the slice is its to keep or collect.
        (true, true) => format!("/sys/fs/cgroup{cg}"),
        (true, false) => format!("/sys/fs/cgroup{parent}"),
    };
    assert!(!Path::new(&left).exists(), "cgroup {left} left after down");
    assert_eq!(
        std::fs::read_dir(paths.runtime_root()).map(|r| r.count()).unwrap_or(0),
        0
    );
}

/// etcd from Debian's etcd-server (dynamically linked: libc and the loader
/// come along), on busybox, as an image built with rootfs-tools and loaded.
fn load_etcd_image(d: &Dir) {
    use rootfs_tools::Entry;
    let extra = [
        "/usr/bin/etcd",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/ld-linux-x86-64.so.2",
    ]
    .iter()
    .map(|f| {
        Entry::host_file(
            f.trim_start_matches('/'),
            std::fs::canonicalize(f).expect("etcd-server is installed"),
        )
        .mode(0o755)
    })
    .chain([
        Entry::file("etc/hosts", "127.0.0.1 localhost\n"),
        Entry::dir("var/lib/etcd"),
    ])
    .collect();
    load_busybox_image(d, "kboot.test/etcd:3.4", extra, |b| b.entrypoint(["/usr/bin/etcd"]));
}

fn etcdctl(client: u16, args: &[&str]) -> std::process::Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=http://127.0.0.1:{client}"))
        .arg("--dial-timeout=1s")
        .arg("--command-timeout=2s")
        .args(args)
        .output()
        .expect("etcd-client is installed")
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn containers_etcd_serves_restarts_after_kill_and_stays_stopped_after_stop() {
    require_root();
    let d = Dir::new();
    let _down = guard(&d);
    load_etcd_image(&d);
    let data = d.path().join("etcd-data");
    let (client, peer) = (port(0), port(1));
    let plan = write_plan(
        &d,
        &format!(
            "services:
  etcd:
    image: kboot.test/etcd:3.4
    command: --name n1 --data-dir /var/lib/etcd/data --listen-client-urls http://127.0.0.1:{client} --advertise-client-urls http://127.0.0.1:{client} --listen-peer-urls http://127.0.0.1:{peer} --initial-advertise-peer-urls http://127.0.0.1:{peer} --initial-cluster n1=http://127.0.0.1:{peer}
    network_mode: host
    volumes: [\"{data}:/var/lib/etcd\"]
    restart: unless-stopped
",
            data = data.display()
        ),
    );
    run_ok(d.kboot().args(["run", "-d", "-f"]).arg(&plan));
    let healthy = || etcdctl(client, &["endpoint", "health"]).status.success();
    assert!(
        wait_until(Duration::from_secs(30), healthy),
        "etcd never became healthy"
    );
    assert!(etcdctl(client, &["put", "kboot", "works"]).status.success());
    let get = etcdctl(client, &["get", "kboot", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "works");

    let pid = find(&ps(&mut d.kboot()), "etcd")["pid"].as_i64().unwrap();
    // SAFETY: kill(2) on the etcd process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    assert!(wait_until(Duration::from_secs(10), || {
        let e = find(&ps(&mut d.kboot()), "etcd").clone();
        e["status"] == "running" && e["pid"] != pid && e["restarts"] == 1
    }));
    assert!(
        wait_until(Duration::from_secs(30), healthy),
        "etcd not healthy after restart"
    );
    let get = etcdctl(client, &["get", "kboot", "--print-value-only"]);
    assert_eq!(
        String::from_utf8_lossy(&get.stdout).trim(),
        "works",
        "the key survived the restart"
    );

    run_ok(d.kboot().args(["stop", "etcd"]));
    let e = find(&ps(&mut d.kboot()), "etcd").clone();
    assert_eq!(e["status"], "stopped");
    // etcd as PID 1 of its namespace shuts down cleanly on SIGTERM (0); not killed (137).
    assert!(e["exit_code"] == 0 || e["exit_code"] == 143, "{e}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        find(&ps(&mut d.kboot()), "etcd")["status"],
        "stopped",
        "unless-stopped keeps it stopped"
    );
    assert!(!healthy());

    run_ok(d.kboot().arg("down"));
    assert!(data.join("data/member").is_dir(), "down keeps volume data");
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn containers_shared_volume_propagates_mounts_both_ways() {
    require_root();
    let d = Dir::new();
    let rootfs = busybox_rootfs(d.path());
    let kubelet = d.path().join("kubelet");
    std::fs::create_dir_all(&kubelet).unwrap();
    let cleanup = scopeguard_umount(&kubelet);
    let _down = guard(&d);
    let plan = write_plan(
        &d,
        &format!(
            "services:\n  kubelet:\n    image: dir:{}\n    privileged: true\n    network_mode: host\n    pid: host\n    volumes: [\"{k}:/var/lib/kubelet:shared\"]\n    command: [\"/bin/sh\", \"-c\", \"mkdir -p /var/lib/kubelet/inner && mount -t tmpfs tmpfs /var/lib/kubelet/inner && echo from-container > /var/lib/kubelet/inner/f && exec sleep 1000\"]\n",
            rootfs.display(),
            k = kubelet.display()
        ),
    );
    run_ok(d.kboot().args(["run", "-d", "-f"]).arg(&plan));
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(
            kubelet.join("inner/f")
        )
        .is_ok_and(|s| s == "from-container\n")),
        "a mount made in the container is visible on the host"
    );
    std::fs::create_dir_all(kubelet.join("fromhost")).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(kubelet.join("fromhost")),
    );
    std::fs::write(kubelet.join("fromhost/g"), "from-host\n").unwrap();
    let out = run_ok(
        d.kboot()
            .args(["exec", "kubelet", "--", "cat", "/var/lib/kubelet/fromhost/g"]),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from-host\n",
        "a host mount made after start is visible inside"
    );
    run_ok(d.kboot().arg("down"));
    drop(cleanup);
}

/// Unmounts everything under `dir` (lazily) when dropped.
fn scopeguard_umount(dir: &Path) -> impl Drop {
    struct U(PathBuf);
    impl Drop for U {
        fn drop(&mut self) {
            for sub in ["inner", "fromhost", ""] {
                let _ = Command::new("umount").arg("-l").arg(self.0.join(sub)).output();
            }
        }
    }
    U(dir.to_owned())
}

/// A busybox script reporting what a process sees, normalised so two runs of
/// the same bundle compare equal: namespaces as host/private, mount peer
/// groups as their kind, cgroup paths and limits as read.
const PROBE: &str = r#"
echo "== caps"; grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status
echo "== ns"; for n in cgroup ipc mnt net pid uts; do echo "$n $(readlink /proc/self/ns/$n)"; done
echo "== user"; id
echo "== hostname"; hostname
echo "== env"; env | grep -v '^PWD=\|^SHLVL=' | sort
echo "== cgroup"; sort /proc/self/cgroup
echo "== limits"
m=$(grep ':memory:' /proc/self/cgroup | cut -d: -f3); cat /sys/fs/cgroup/memory$m/memory.limit_in_bytes
c=$(grep -E ':cpu(,cpuacct)?:' /proc/self/cgroup | cut -d: -f3)
for d in /sys/fs/cgroup/cpu /sys/fs/cgroup/cpu,cpuacct; do [ -f $d$c/cpu.cfs_quota_us ] && cat $d$c/cpu.cfs_quota_us; done
echo "== devices"; ls -ln /dev | grep '^[cb]' | awk '{print $1, $5, $6, $NF}' | sort -k4
echo "== mounts"
awk '{ prop="private"; for (i=7; $i!="-"; i++) { if ($i ~ /^shared/) prop="shared"; if ($i ~ /^master/) prop=prop "+slave" }; for (j=i; j<=NF; j++) if ($j=="-") break; split($6, o, ","); print $5, $(j+1), o[1], prop }' /proc/self/mountinfo | sort
"#;

fn normalise(report: &str) -> String {
    let host_ns: Vec<(String, String)> = ["cgroup", "ipc", "mnt", "net", "pid", "uts"]
        .iter()
        .map(|n| {
            (
                n.to_string(),
                std::fs::read_link(format!("/proc/self/ns/{n}"))
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            )
        })
        .collect();
    report
        .lines()
        .map(
            |l| match host_ns.iter().find(|(n, _)| l.starts_with(&format!("{n} "))) {
                Some((n, id)) if l.contains(id.as_str()) => format!("{n} host"),
                Some((n, _)) if l.contains(":[") => format!("{n} private"),
                _ => l.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the probe under kboot, then `runc run` on the very bundle kboot wrote.
fn probe_both(d: &Dir, name: &str, extra: &str) -> (String, String) {
    let rootfs = busybox_rootfs(d.path());
    std::fs::write(rootfs.join("probe.sh"), PROBE).unwrap();
    let plan = write_plan(
        d,
        &format!(
            "services:\n  {name}:\n    image: dir:{}\n    command: [\"/bin/sh\", \"/probe.sh\"]\n    environment: {{PROBE: \"1\"}}\n    mem_limit: 128m\n    cpus: 0.5\n{extra}",
            rootfs.display()
        ),
    );
    run_ok(d.kboot().args(["run", "-f"]).arg(&plan));
    let out = run_ok(d.kboot().args(["logs", name]));
    let ours = String::from_utf8(out.stdout).unwrap();
    let bundle = d.path().join("root/containers").join(name).join("bundle");
    let runc = run_ok(
        Command::new("runc")
            .arg("--root")
            .arg(d.path().join("runc"))
            .args(["run", "-b"])
            .arg(&bundle)
            .arg(format!("{name}-runc")),
    );
    (normalise(&ours), normalise(&String::from_utf8(runc.stdout).unwrap()))
}

/// Lines in one report and not the other, each prefixed `kboot:` or `runc:`.
fn differences(ours: &str, theirs: &str) -> Vec<String> {
    let a: Vec<&str> = ours.lines().collect();
    let b: Vec<&str> = theirs.lines().collect();
    let mut out: Vec<String> = a
        .iter()
        .filter(|l| !b.contains(l))
        .map(|l| format!("kboot: {l}"))
        .collect();
    out.extend(b.iter().filter(|l| !a.contains(l)).map(|l| format!("runc: {l}")));
    out
}

/// Differences between libcontainer 0.7 and runc 1.1.5 on the same bundle,
/// documented in bench/README.md ("Containers"): on this hybrid host runc also
/// moves the process into the named `name=systemd` hierarchy and the cgroup2
/// mount (`0::`); libcontainer's v1 manager leaves both alone.
fn documented(line: &str) -> bool {
    let l = line.split_once(": ").map_or(line, |(_, l)| l);
    l.starts_with("0::") || l.contains(":name=systemd:")
}

/// Fails with both reports unless they differ only in documented ways.
fn assert_same_as_runc(ours: &str, theirs: &str) {
    let diff: Vec<String> = differences(ours, theirs)
        .into_iter()
        .filter(|l| !documented(l))
        .collect();
    assert!(
        diff.is_empty(),
        "kboot and runc disagree:\n{}\n--- kboot\n{ours}\n--- runc\n{theirs}",
        diff.join("\n")
    );
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn containers_probe_matches_runc_on_the_same_privileged_bundle() {
    require_root();
    let d = Dir::new();
    let _down = guard(&d);
    let vol = d.path().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    let (ours, theirs) = probe_both(
        &d,
        "probe",
        &format!(
            "    privileged: true\n    network_mode: host\n    pid: host\n    volumes: [\"{}:/data:ro\"]\n",
            vol.display()
        ),
    );
    assert!(
        ours.contains("net host") && ours.contains("pid host") && ours.contains("mnt private"),
        "{ours}"
    );
    assert!(ours.contains("CapEff:\t000001fffeffffff"), "{ours}");
    assert!(ours.contains("134217728") && ours.contains("50000"), "limits: {ours}");
    assert_same_as_runc(&ours, &theirs);
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn containers_probe_matches_runc_on_the_same_default_bundle() {
    require_root();
    let d = Dir::new();
    let _down = guard(&d);
    let (ours, theirs) = probe_both(&d, "plain", "    user: \"65534:65534\"\n");
    assert!(ours.contains("net private") && ours.contains("pid private"), "{ours}");
    assert!(ours.contains("uid=65534"), "{ours}");
    assert_same_as_runc(&ours, &theirs);
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn containers_killed_supervisor_leaves_containers_running_and_the_next_adopts_them() {
    require_root();
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    let plan = sleepers_plan(&d, &rootfs, &["a", "b", "c"], "sleep 1000");
    run_ok(d.kboot().args(["run", "-d", "-f"]).arg(&plan));
    let pids: Vec<i64> = ps(&mut d.kboot()).iter().map(|c| c["pid"].as_i64().unwrap()).collect();
    kill_supervisor(&d);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        pids.iter().all(|p| pid_alive(*p)),
        "containers died with the supervisor"
    );

    run_ok(d.kboot().args(["run", "-d", "-f"]).arg(&plan));
    std::thread::sleep(Duration::from_millis(500));
    let again: Vec<i64> = ps(&mut d.kboot()).iter().map(|c| c["pid"].as_i64().unwrap()).collect();
    assert_eq!(pids, again, "adopted, not restarted");
    for (n, p) in ["a", "b", "c"].iter().zip(&pids) {
        assert_eq!(cgroup_procs(&d, n), [*p], "no duplicate in {n}'s cgroup");
    }
    // SAFETY: kill(2) on a container process this test started.
    assert_eq!(unsafe { libc::kill(pids[1] as i32, libc::SIGKILL) }, 0);
    assert!(wait_until(Duration::from_secs(5), || {
        let b = find(&ps(&mut d.kboot()), "b").clone();
        b["status"] == "running" && b["restarts"] == 1
    }));
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn containers_supervisor_killed_mid_start_and_lost_state_converge_without_duplicates() {
    require_root();
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    let plan = sleepers_plan(&d, &rootfs, &["a", "b", "c"], "sleep 1000");
    let mut first = d.kboot().args(["run", "-d", "-f"]).arg(&plan).spawn().unwrap();
    let pid_file = d.path().join("state/supervisor.pid");
    assert!(wait_until(Duration::from_secs(5), || pid_file.exists()));
    let sup: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap_or(0);
    // SAFETY: kill(2) on the supervisor this test started.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    // The client would wait for services its supervisor never started.
    let _ = first.kill();
    let _ = first.wait();

    run_ok(d.kboot().args(["run", "-d", "-f"]).arg(&plan));
    for n in ["a", "b", "c"] {
        let c = find(&ps(&mut d.kboot()), n).clone();
        assert_eq!(c["status"], "running", "{c}");
        assert_eq!(cgroup_procs(&d, n), [c["pid"].as_i64().unwrap()]);
    }

    // A reboot: every process gone, the state dir (under /run) gone, the records kept.
    let sup: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    // SAFETY: kill(2) on processes this test started.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    for n in ["a", "b", "c"] {
        for p in cgroup_procs(&d, n) {
            // SAFETY: as above.
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
    }
    for shim in std::fs::read_dir(d.path().join("state/shims")).unwrap().flatten() {
        let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(shim.path()).unwrap()).unwrap();
        // SAFETY: as above.
        unsafe { libc::kill(rec["shim_pid"].as_i64().unwrap() as i32, libc::SIGKILL) };
    }
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_dir_all(d.path().join("state")).unwrap();
    run_ok(d.kboot().args(["run", "-d", "-f"]).arg(&plan));
    for n in ["a", "b", "c"] {
        let c = find(&ps(&mut d.kboot()), n).clone();
        assert_eq!(c["status"], "running", "{c}");
        assert_eq!(cgroup_procs(&d, n), [c["pid"].as_i64().unwrap()]);
    }
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn containers_oom_kill_and_port_conflict_are_reported() {
    require_root();
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    let p = port(2);
    let plan = write_plan(
        &d,
        &format!(
            "services:
  hog:
    image: dir:{r}
    command: dd if=/dev/zero of=/dev/null bs=256M count=1
    mem_limit: 32m
  first:
    image: dir:{r}
    network_mode: host
    command: nc -l -p {p}
  second:
    image: dir:{r}
    network_mode: host
    command: nc -l -p {p}
    depends_on: [first]
",
            r = rootfs.display()
        ),
    );
    let _ = d.kboot().args(["run", "-d", "-f"]).arg(&plan).output().unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        let list = ps(&mut d.kboot());
        find(&list, "hog")["status"] == "exited" && find(&list, "second")["status"] == "exited"
    }));
    let list = ps(&mut d.kboot());
    let hog = find(&list, "hog");
    assert_eq!(hog["exit_code"], 137);
    assert_eq!(hog["reason"], "OOMKilled", "{hog}");
    let table = String::from_utf8(run_ok(d.kboot().arg("ps")).stdout).unwrap();
    assert!(table.contains("OOMKilled"), "{table}");
    assert_eq!(find(&list, "first")["status"], "running");
    let out = d.kboot().args(["logs", "second"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Address in use") || err.contains("Address already in use"),
        "{err}"
    );
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn containers_store_image_runs_with_its_config_and_a_private_writable_rootfs() {
    require_root();
    let d = Dir::new();
    let _down = guard(&d);
    load_busybox_image(
        &d,
        "kboot.test/busybox:1",
        vec![rootfs_tools::Entry::dir("data").owner(1000, 1000)],
        |b| {
            b.entrypoint(["/bin/sh", "-c"])
                .cmd(["echo $GREETING from $(pwd) as $(id -u):$(id -g); echo x > /data/f; exec sleep 1000"])
                .env("PATH=/bin")
                .env("GREETING=hello")
                .working_dir("/data")
                .user("1000:1000")
        },
    );
    let plan = write_plan(
        &d,
        "services:\n  one:\n    image: kboot.test/busybox:1\n  two:\n    image: kboot.test/busybox:1\n    environment: {GREETING: hi}\n",
    );
    run_ok(d.kboot().args(["run", "-d", "-f"]).arg(&plan));
    for (name, greeting) in [("one", "hello"), ("two", "hi")] {
        assert!(
            wait_until(Duration::from_secs(5), || String::from_utf8_lossy(
                &d.kboot().args(["logs", name]).output().unwrap().stdout
            ) == format!(
                "{greeting} from /data as 1000:1000\n"
            )),
            "{name}: {:?}",
            d.kboot().args(["logs", name]).output().unwrap()
        );
    }
    // Each container writes to its own view; the shared unpacked image stays untouched.
    run_ok(
        d.kboot()
            .args(["exec", "one", "--", "/bin/sh", "-c", "echo mine > /data/g"]),
    );
    let out = d
        .kboot()
        .args(["exec", "two", "--", "cat", "/data/g"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "two sees one's file");
    let cache = d.path().join("root/rootfs");
    for chain in std::fs::read_dir(&cache).unwrap().flatten() {
        assert!(!chain.path().join("data/f").exists() && !chain.path().join("data/g").exists());
    }
    let merged = d.path().join("root/containers/one/rootfs");
    run_ok(d.kboot().args(["rm", "-t", "1", "one"]));
    assert!(!merged.exists(), "rm removes the container's rootfs");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&merged.to_string_lossy().into_owned()),
        "overlay left mounted"
    );
}

/// After a crash a pod's rootfs view can stay mounted with no record left to find it;
/// `down` must still leave nothing mounted under the root so `--purge` can delete it.
#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn containers_down_unmounts_leftover_views_without_records() {
    require_root();
    let d = Dir::new();
    let ghost = d.path().join("root/containers/ghost/rootfs");
    std::fs::create_dir_all(&ghost).unwrap();
    run_ok(Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(&ghost));
    let mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(ghost.to_str().unwrap()))
    };
    assert!(mounted(), "test setup: the tmpfs is not mounted");
    run_ok(d.kboot().arg("down").arg("--purge"));
    let still = mounted();
    if still {
        let _ = Command::new("umount").arg("-l").arg(&ghost).status();
    }
    assert!(!still, "`kboot down` left {} mounted", ghost.display());
    assert!(
        !d.path().join("root/containers").exists(),
        "`--purge` left the containers dir"
    );
}

/// A block device of the host that this (root) process can open: a disk (`/sys/block`)
/// when one opens, else a loop or ram device (these build machines' own root may not open
/// their disk). Its name and `major:minor`.
fn host_disk() -> (String, String) {
    let mut disks: Vec<(bool, String, String)> = std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let dev = std::fs::read_to_string(e.path().join("dev")).ok()?;
            std::fs::File::open(Path::new("/dev").join(&name)).ok()?;
            let virtual_dev = name.starts_with("loop") || name.starts_with("ram") || name.starts_with("zram");
            Some((virtual_dev, name, dev.trim().to_owned()))
        })
        .collect();
    disks.sort();
    let (_, name, dev) = disks
        .into_iter()
        .next()
        .expect("a block device root can open in /sys/block");
    (name, dev)
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn containers_unprivileged_cannot_open_a_host_disk_it_mknods_privileged_can() {
    require_root();
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    let (disk, dev) = host_disk();
    let (major, minor) = dev.split_once(':').unwrap();
    // CAP_MKNOD is in the default set (as Docker's): the node is made (one per service: a
    // `dir:` image is the same rootfs for both); only the devices
    // cgroup (v1) or its eBPF program (v2) stands between the container and the disk.
    let script = format!(
        "exec 2>&1; n=/tmp/disk-$(hostname); mknod $n b {major} {minor} && if head -c 512 $n > /dev/null 2> $n.err; then echo opened; else echo refused: $(cat $n.err); fi"
    );
    let plan = write_plan(
        &d,
        &format!(
            "services:\n  plain:\n    image: dir:{r}\n    command: [\"/bin/sh\", \"-c\", {s:?}]\n  priv:\n    image: dir:{r}\n    privileged: true\n    command: [\"/bin/sh\", \"-c\", {s:?}]\n",
            r = rootfs.display(),
            s = script
        ),
    );
    run_ok(d.kboot().args(["run", "-d", "-f"]).arg(&plan));
    let logs =
        |name: &str| String::from_utf8_lossy(&d.kboot().args(["logs", name]).output().unwrap().stdout).into_owned();
    assert!(
        wait_until(Duration::from_secs(20), || !logs("plain").is_empty()
            && !logs("priv").is_empty()),
        "no output: {:?} {:?}",
        logs("plain"),
        logs("priv")
    );
    let plain = logs("plain");
    assert!(
        plain.contains("refused") && plain.contains("Operation not permitted"),
        "{disk} {dev}: {plain}"
    );
    assert_eq!(
        logs("priv"),
        "opened\n",
        "{disk} {dev}: a privileged container may open it"
    );
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn containers_see_their_own_cgroup_limits_read_only_at_sys_fs_cgroup() {
    require_root();
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    let plan = write_plan(
        &d,
        &format!(
            "services:\n  box:\n    image: dir:{}\n    command: [\"/bin/sh\", \"-c\", \"exec sleep 1000\"]\n    mem_limit: 64m\n    cpus: 0.5\n",
            rootfs.display()
        ),
    );
    run_ok(d.kboot().args(["run", "-d", "-f"]).arg(&plan));
    let sh = |cmd: &str| {
        d.kboot()
            .args(["exec", "box", "--", "/bin/sh", "-c", cmd])
            .output()
            .unwrap()
    };
    let (memory, cpu) = if kboot::cgroups::Layout::probe().is_unified() {
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/cpu.max")
    } else {
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
        )
    };
    let out = run_ok(d.kboot().args(["exec", "box", "--", "cat", memory, cpu]));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("67108864"), "{text}");
    assert!(lines.next().is_some_and(|l| l.starts_with("50000")), "{text}");
    // Its own limits are not its to raise.
    let out = sh(&format!("echo 1073741824 > {memory}"));
    assert!(!out.status.success(), "raising its own memory limit succeeded");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_ok(d.kboot().args(["exec", "box", "--", "cat", memory]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "67108864\n");
}
