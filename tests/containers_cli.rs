//! Tier 4: `run -f`, `ps`, `logs`, `stop`, `start`, `rm`, `down` and restart
//! policies as users drive them, without root: the shim runs the bundle's
//! process as a plain host process (test-only `KBOOT_TEST_ONLY_PLAIN_PROCESS`).

use std::time::Duration;

use crate::common::{run_ok, Dir};
use crate::containers_support::{
    busybox_rootfs, find, kill_supervisor, pid_alive, ps, sleepers_plan, wait_until, write_plan, Down,
};

const PLAIN: (&str, &str) = ("KBOOT_TEST_ONLY_PLAIN_PROCESS", "1");
/// The supervisor's safety-net tick stretched to an hour: every start, stop, restart,
/// adoption and probe below must reach it as an event (src/supervisor/daemon.rs).
const NO_IDLE_TICK: (&str, &str) = ("KBOOT_TEST_ONLY_IDLE_TICK_MS", "3600000");

fn kb(d: &Dir) -> std::process::Command {
    let mut c = d.kboot();
    c.env(PLAIN.0, PLAIN.1).env(NO_IDLE_TICK.0, NO_IDLE_TICK.1);
    c
}

fn guard(d: &Dir) -> Down<'_> {
    Down {
        dir: d,
        env: vec![PLAIN, NO_IDLE_TICK],
    }
}

#[test]
fn containers_run_detach_then_ps_logs_stop_start_rm() {
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    let plan = write_plan(
        &d,
        &format!(
            "services:\n  web:\n    image: dir:{r}\n    command: [\"/bin/sh\", \"-c\", \"echo started; echo warn >&2; exec sleep 1000\"]\n    restart: unless-stopped\n  once:\n    image: dir:{r}\n    command: /bin/sh -c 'echo done'\n",
            r = rootfs.display()
        ),
    );
    let out = run_ok(kb(&d).args(["run", "-d", "-f"]).arg(&plan));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("web") && text.contains("running"), "{text}");

    let list = ps(&mut kb(&d));
    let web = find(&list, "web");
    assert_eq!(web["status"], "running");
    assert!(pid_alive(web["pid"].as_i64().unwrap()));
    assert_eq!(web["image"], format!("dir:{}", rootfs.display()));
    assert!(wait_until(Duration::from_secs(5), || find(&ps(&mut kb(&d)), "once")
        ["exit_code"]
        == 0));
    for key in ["name", "image", "status", "pid", "restarts", "exit_code"] {
        assert!(web.get(key).is_some(), "ps json lacks {key}: {web}");
    }

    assert!(wait_until(Duration::from_secs(5), || {
        let out = kb(&d).args(["logs", "web"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout) == "started\n" && String::from_utf8_lossy(&out.stderr) == "warn\n"
    }));
    let raw = std::fs::read_to_string(d.path().join("root/containers/web/container.log")).unwrap();
    assert!(raw.lines().any(|l| l.contains(" stdout F started")), "{raw}");
    assert!(raw.lines().any(|l| l.contains(" stderr F warn")), "{raw}");

    let table = String::from_utf8(run_ok(kb(&d).arg("ps")).stdout).unwrap();
    assert!(table.starts_with("NAME"), "{table}");

    run_ok(kb(&d).args(["stop", "-t", "2", "web"]));
    let web = find(&ps(&mut kb(&d)), "web").clone();
    assert_eq!(web["status"], "stopped");
    assert_eq!(web["exit_code"], 143, "SIGTERM reached the process: {web}");
    // unless-stopped: a stopped container stays stopped.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(find(&ps(&mut kb(&d)), "web")["status"], "stopped");

    run_ok(kb(&d).args(["start", "web"]));
    assert_eq!(find(&ps(&mut kb(&d)), "web")["status"], "running");

    run_ok(kb(&d).args(["rm", "-t", "2", "web"]));
    let list = ps(&mut kb(&d));
    assert!(list.iter().all(|c| c["name"] != "web"), "{list:?}");
    assert!(!d.path().join("root/containers/web").exists());
}

#[test]
fn containers_restart_policies_with_a_crash_loop_beside_a_healthy_service() {
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    let plan = write_plan(
        &d,
        &format!(
            "services:\n  flaky:\n    image: dir:{r}\n    command: /bin/sh -c 'echo try; exit 3'\n    restart: on-failure:2\n  looping:\n    image: dir:{r}\n    command: /bin/sh -c 'exit 1'\n    restart: always\n  steady:\n    image: dir:{r}\n    command: /bin/sleep 1000\n    restart: always\n",
            r = rootfs.display()
        ),
    );
    // `looping` fails, so `run -d` may report failure: only the states matter here.
    let _ = kb(&d).args(["run", "-d", "-f"]).arg(&plan).output().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let f = find(&ps(&mut kb(&d)), "flaky").clone();
            f["restarts"] == 2 && f["status"] == "exited"
        }),
        "on-failure:2 restarts twice then stays exited: {:?}",
        ps(&mut kb(&d))
    );
    let list = ps(&mut kb(&d));
    assert_eq!(find(&list, "flaky")["exit_code"], 3);
    let out = run_ok(kb(&d).args(["logs", "flaky"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "try\ntry\ntry\n");
    // The crash loop keeps being restarted (with backoff) and the steady service is unaffected.
    assert!(
        wait_until(Duration::from_secs(10), || find(&ps(&mut kb(&d)), "looping")
            ["restarts"]
            .as_u64()
            .unwrap()
            >= 3),
        "{list:?}"
    );
    let list = ps(&mut kb(&d));
    let steady = find(&list, "steady");
    assert_eq!(steady["status"], "running");
    assert_eq!(steady["restarts"], 0);
}

#[test]
fn containers_always_restarts_a_stopped_container_with_the_next_supervisor_unless_stopped_does_not() {
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    let plan = write_plan(
        &d,
        &format!(
            "services:
  always:
    image: dir:{r}
    command: /bin/sleep 1000
    restart: always
  unless:
    image: dir:{r}
    command: /bin/sleep 1000
    restart: unless-stopped
",
            r = rootfs.display()
        ),
    );
    run_ok(kb(&d).args(["run", "-d", "-f"]).arg(&plan));
    run_ok(kb(&d).args(["stop", "-t", "2", "always", "unless"]));
    // Stopped by the user: both stay stopped while this supervisor runs.
    std::thread::sleep(Duration::from_millis(500));
    let list = ps(&mut kb(&d));
    assert!(list.iter().all(|c| c["status"] == "stopped"), "{list:?}");

    // A new supervisor (started here by a plan that names neither) is Docker's daemon restart.
    kill_supervisor(&d);
    let other = d.path().join("other.yml");
    std::fs::write(
        &other,
        format!(
            "services:
  other:
    image: dir:{}
    command: /bin/sleep 1000
",
            rootfs.display()
        ),
    )
    .unwrap();
    run_ok(kb(&d).args(["run", "-d", "-f"]).arg(&other));
    assert!(
        wait_until(Duration::from_secs(10), || find(&ps(&mut kb(&d)), "always")["status"]
            == "running"),
        "{:?}",
        ps(&mut kb(&d))
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(find(&ps(&mut kb(&d)), "unless")["status"], "stopped");
}

#[test]
fn containers_survive_a_killed_supervisor_and_are_adopted_without_duplicates() {
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    let plan = sleepers_plan(&d, &rootfs, &["a", "b", "c"], "/bin/sleep 1000");
    run_ok(kb(&d).args(["run", "-d", "-f"]).arg(&plan));
    let before = ps(&mut kb(&d));
    let pids: Vec<i64> = before.iter().map(|c| c["pid"].as_i64().unwrap()).collect();
    kill_supervisor(&d);

    // ps works without a supervisor, and the containers kept running.
    let during = ps(&mut kb(&d));
    assert!(during.iter().all(|c| c["status"] == "running"), "{during:?}");
    assert!(pids.iter().all(|p| pid_alive(*p)));

    // The next `run` adopts them: same pids, nothing started twice.
    run_ok(kb(&d).args(["run", "-d", "-f"]).arg(&plan));
    std::thread::sleep(Duration::from_millis(500));
    let after = ps(&mut kb(&d));
    let again: Vec<i64> = after.iter().map(|c| c["pid"].as_i64().unwrap()).collect();
    assert_eq!(pids, again);
    // Exactly one live shim per container for this root: nothing was started twice.
    let root = d.path().join("root").to_string_lossy().into_owned();
    let shims = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            args.contains(&&b"shim"[..]) && args.contains(&root.as_bytes())
        })
        .filter(|e| pid_alive(e.file_name().to_string_lossy().parse().unwrap_or(-1)))
        .count();
    assert_eq!(shims, 3);

    // The adopting supervisor applies the restart policy to adopted containers.
    // SAFETY: kill(2) on a container process this test started.
    assert_eq!(unsafe { libc::kill(pids[0] as i32, libc::SIGKILL) }, 0);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let a = find(&ps(&mut kb(&d)), "a").clone();
            a["status"] == "running" && a["pid"] != pids[0] && a["restarts"] == 1
        }),
        "{:?}",
        ps(&mut kb(&d))
    );

    run_ok(kb(&d).arg("down"));
    assert!(ps(&mut kb(&d)).is_empty());
    assert!(wait_until(Duration::from_secs(5), || pids
        .iter()
        .all(|p| !pid_alive(*p))));
    assert!(!d.path().join("state/supervisor.pid").exists());
}

#[test]
fn containers_foreground_run_returns_when_services_exit_with_their_status() {
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    let plan = write_plan(
        &d,
        &format!(
            "services:\n  job:\n    image: dir:{}\n    command: /bin/sh -c 'echo out; exit 4'\n",
            rootfs.display()
        ),
    );
    let out = kb(&d).args(["run", "-f"]).arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("exit code 4") && text.contains("kboot logs job"),
        "{text}"
    );
    let out = run_ok(kb(&d).args(["logs", "--tail", "1", "job"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
}

#[test]
fn containers_bad_plans_exit_2_and_name_service_key_and_line() {
    let d = Dir::new();
    let plan = write_plan(&d, "services:\n  etcd:\n    image: x\n    ports: [\"2379:2379\"]\n");
    let out = d.kboot().args(["run", "-f"]).arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("service `etcd`, key `ports` (line 4)"), "{err}");

    let plan = write_plan(&d, "services:\n  etcd:\n    image: x\n    volumes: [\"/data\"]\n");
    let out = d.kboot().args(["run", "-f"]).arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("key `volumes`"));
}

#[test]
fn containers_missing_image_and_entrypoint_fail_before_anything_starts() {
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    let plan = write_plan(&d, "services:\n  etcd:\n    image: registry.k8s.io/etcd:3.6.4-0\n");
    let out = kb(&d).args(["run", "-d", "-f"]).arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`registry.k8s.io/etcd:3.6.4-0` is not in the local store") && err.contains("kboot pull"),
        "{err}"
    );

    let plan = write_plan(
        &d,
        &format!(
            "services:\n  etcd:\n    image: dir:{}\n    entrypoint: etcd\n",
            rootfs.display()
        ),
    );
    let out = kb(&d).args(["run", "-d", "-f"]).arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("service `etcd`: entrypoint `etcd` not found in the image"),
        "{err}"
    );
    assert!(ps(&mut kb(&d)).is_empty());
}

#[test]
fn containers_name_collision_with_a_running_container_is_refused() {
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    let yaml = |cmd: &str| {
        format!(
            "services:\n  x:\n    image: dir:{}\n    command: {cmd}\n",
            rootfs.display()
        )
    };
    run_ok(
        kb(&d)
            .args(["run", "-d", "-f"])
            .arg(write_plan(&d, &yaml("/bin/sleep 1000"))),
    );
    let out = kb(&d)
        .args(["run", "-d", "-f"])
        .arg(write_plan(&d, &yaml("/bin/sleep 999")))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("container `x` already exists"));
}

#[test]
fn containers_foreground_run_stops_everything_on_sigint_and_down_purge_clears_the_root() {
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    let plan = write_plan(
        &d,
        &format!(
            "services:\n  svc:\n    image: dir:{}\n    command: /bin/sleep 1000\n    restart: always\n",
            rootfs.display()
        ),
    );
    let mut fg = kb(&d).args(["run", "-f"]).arg(&plan).spawn().unwrap();
    assert!(wait_until(Duration::from_secs(5), || ps(&mut kb(&d))
        .iter()
        .any(|c| c["name"] == "svc" && c["status"] == "running")));
    let pid = find(&ps(&mut kb(&d)), "svc")["pid"].as_i64().unwrap();
    // SAFETY: kill(2) on the foreground supervisor this test started.
    assert_eq!(unsafe { libc::kill(fg.id() as i32, libc::SIGINT) }, 0);
    let status = fg.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!pid_alive(pid), "the foreground supervisor stops its containers");
    assert_eq!(find(&ps(&mut kb(&d)), "svc")["status"], "stopped");

    run_ok(kb(&d).args(["down", "--purge"]));
    assert_eq!(std::fs::read_dir(d.path().join("root")).unwrap().count(), 0);
}

/// Starts a foreground `run -f PLAN` and asserts that its supervisor adopted `name`'s running
/// container (the same pid) instead of starting a second; returns the run for the caller to stop.
fn foreground_run_adopting(d: &Dir, plan: &std::path::Path, name: &str, pid: i64) -> std::process::Child {
    let fg = kb(d).args(["run", "-f"]).arg(plan).spawn().unwrap();
    let pid_file = d.path().join("state/supervisor.pid");
    assert!(wait_until(Duration::from_secs(5), || pid_file.exists()));
    std::thread::sleep(Duration::from_millis(500));
    let running = ps(&mut kb(d))
        .iter()
        .find(|c| c["name"] == name && c["status"] == "running")
        .and_then(|c| c["pid"].as_i64());
    assert_eq!(
        running,
        Some(pid),
        "the next supervisor adopts the container, never starts a second"
    );
    fg
}

/// The boot service's stop and restart (`KillSignal=SIGQUIT`, `KillMode=process`): the
/// supervisor exits, its containers keep running, and the next foreground run adopts them.
#[test]
fn containers_foreground_run_leaves_containers_on_sigquit_and_the_next_run_adopts_them() {
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    let plan = sleepers_plan(&d, &rootfs, &["svc"], "/bin/sleep 1000");
    let running_pid = |d: &Dir| {
        ps(&mut kb(d))
            .iter()
            .find(|c| c["name"] == "svc" && c["status"] == "running")
            .and_then(|c| c["pid"].as_i64())
    };
    let mut fg = kb(&d).args(["run", "-f"]).arg(&plan).spawn().unwrap();
    assert!(wait_until(Duration::from_secs(5), || running_pid(&d).is_some()));
    let pid = running_pid(&d).unwrap();
    // SAFETY: kill(2) on the foreground supervisor this test started.
    assert_eq!(unsafe { libc::kill(fg.id() as i32, libc::SIGQUIT) }, 0);
    let status = fg.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(pid_alive(pid), "SIGQUIT leaves the container running");
    assert_eq!(running_pid(&d), Some(pid));

    let mut fg = foreground_run_adopting(&d, &plan, "svc", pid);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(fg.id() as i32, libc::SIGINT) }, 0);
    assert!(fg.wait().unwrap().success());
    assert!(
        wait_until(Duration::from_secs(5), || !pid_alive(pid)),
        "SIGINT still stops everything"
    );
}

/// `kboot service install --now` on a node started with `run --detach`: the detached
/// supervisor hands over (exits on SIGQUIT, containers left running) so the unit's can adopt.
#[test]
fn containers_detached_supervisor_hands_over_and_leaves_its_containers_running() {
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    let plan = sleepers_plan(&d, &rootfs, &["svc"], "/bin/sleep 1000");
    run_ok(kb(&d).args(["run", "-d", "-f"]).arg(&plan));
    let paths = kboot::state::Paths::under(d.path());
    let pid = find(&ps(&mut kb(&d)), "svc")["pid"].as_i64().unwrap();
    let supervisor = std::fs::read_to_string(d.path().join("state/supervisor.pid")).unwrap();
    let handed = kboot::supervisor::hand_over(&paths, Duration::from_secs(10)).unwrap();
    assert_eq!(handed.map(|p| p.to_string()), Some(supervisor.trim().to_string()));
    assert!(!pid_alive(supervisor.trim().parse().unwrap()), "the supervisor is gone");
    assert!(pid_alive(pid), "its container still runs");
    assert_eq!(
        kboot::supervisor::hand_over(&paths, Duration::from_secs(1)).unwrap(),
        None
    );

    let mut fg = foreground_run_adopting(&d, &plan, "svc", pid);
    // SAFETY: kill(2) on the foreground supervisor this test started.
    assert_eq!(unsafe { libc::kill(fg.id() as i32, libc::SIGINT) }, 0);
    assert!(fg.wait().unwrap().success());
}

#[test]
fn containers_healthcheck_reports_unhealthy_then_healthy_in_ps() {
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    let marker = d.path().join("healthy");
    let plan = write_plan(
        &d,
        &format!(
            "services:\n  svc:\n    image: dir:{}\n    command: /bin/sleep 1000\n    healthcheck:\n      test: [\"CMD\", \"/bin/test\", \"-f\", \"{}\"]\n      interval: 100ms\n      timeout: 2s\n      retries: 2\n",
            rootfs.display(),
            marker.display()
        ),
    );
    run_ok(kb(&d).args(["run", "-d", "-f"]).arg(&plan));
    let health = |d: &Dir| find(&ps(&mut kb(d)), "svc")["health"].clone();
    assert!(
        wait_until(Duration::from_secs(10), || health(&d) == "unhealthy"),
        "{}",
        health(&d)
    );
    std::fs::write(&marker, "").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || health(&d) == "healthy"),
        "{}",
        health(&d)
    );
    let table = String::from_utf8(run_ok(kb(&d).arg("ps")).stdout).unwrap();
    assert!(table.contains("running (healthy)"), "{table}");
}

#[test]
fn containers_logs_follow_prints_new_lines_until_the_container_exits() {
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    let plan = write_plan(
        &d,
        &format!(
            "services:\n  talk:\n    image: dir:{}\n    command: /bin/sh -c 'echo one; sleep 1; echo two; sleep 1; echo three'\n",
            rootfs.display()
        ),
    );
    run_ok(kb(&d).args(["run", "-d", "-f"]).arg(&plan));
    let out = run_ok(kb(&d).args(["logs", "-f", "talk"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\nthree\n");
    let out = run_ok(kb(&d).args(["logs", "--tail", "2", "talk"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "two\nthree\n");
}

/// `run -d` of `db` (running `db_command`) and `app`, which depends on it; `run`'s output.
fn run_db_and_app(d: &Dir, rootfs: &std::path::Path, db_command: &str) -> std::process::Output {
    let plan = write_plan(
        d,
        &format!(
            "services:\n  db:\n    image: dir:{r}\n    command: {db_command}\n  app:\n    image: dir:{r}\n    command: /bin/sleep 1000\n    depends_on: [db]\n",
            r = rootfs.display()
        ),
    );
    kb(d).args(["run", "-d", "-f"]).arg(&plan).output().unwrap()
}

#[test]
fn containers_run_detach_reports_a_dependent_of_a_failed_service_as_blocked() {
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    // In the image but not on the host: the plan's entrypoint check passes, and the
    // test-only plain process (a host process) cannot start, so `db` never runs.
    let db = rootfs.join("bin/kboot-test-db-only-in-the-image");
    std::fs::write(&db, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&db, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = run_db_and_app(&d, &rootfs, "/bin/kboot-test-db-only-in-the-image");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("db") && text.contains("failed"), "{text}");
    assert!(
        text.contains("blocked") && text.contains("dependency `db` is not running"),
        "{text}"
    );
}

/// `depends_on` waits until the dependency has started, as compose's short form does: a
/// dependency that starts and then exits does not hold its dependent back (the supervisor
/// hears of the start at once, from the shim's start notice).
#[test]
fn containers_a_dependent_starts_once_its_dependency_has_started() {
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    let out = run_db_and_app(&d, &rootfs, "/bin/sh -c 'exit 2'");
    assert_eq!(out.status.code(), Some(1), "db failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("exit code 2"), "{text}");
    assert_eq!(find(&ps(&mut kb(&d)), "app")["status"], "running", "{text}");
}

#[test]
fn containers_detached_supervisor_serves_the_kubelets_cri_until_down() {
    let d = Dir::new();
    let _down = guard(&d);
    let rootfs = busybox_rootfs(d.path());
    let plan = sleepers_plan(&d, &rootfs, &["a"], "sleep 1000");
    run_ok(kb(&d).args(["run", "-d", "-f"]).arg(&plan));
    let socket = d.path().join("state/cri.sock");
    assert!(
        wait_until(Duration::from_secs(10), || socket.exists()),
        "the supervisor does not serve the CRI at {}",
        socket.display()
    );
    // The kubelet's first call: Version must say 0.1.0 / v1.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let version = rt.block_on(async {
        let channel = crate::cri_client::channel(&socket).await;
        kboot_cri::v1::runtime_service_client::RuntimeServiceClient::new(channel)
            .version(kboot_cri::v1::VersionRequest::default())
            .await
            .expect("CRI Version over the supervisor's socket")
            .into_inner()
    });
    assert_eq!(
        (version.version.as_str(), version.runtime_api_version.as_str()),
        ("0.1.0", "v1")
    );
    run_ok(kb(&d).arg("down"));
    assert!(!socket.exists(), "the CRI socket outlived `kboot down`");
}
