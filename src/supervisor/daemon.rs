//! The supervisor loop (tokio): level-triggered reconciliation of every
//! container directory against the shims that run. A crash-looping container only
//! ever sets its own restart time, so it cannot starve the others.
//!
//! It reconciles when something happened, not on a fast tick: a shim it started or
//! adopted ended (its child, or a pidfd; `kboot stop` and `rm` end shims this way), a
//! shim reported its start, a healthcheck probe finished, a command asked for a container
//! to run (`kboot run` and `start` send a datagram to `Paths::supervisor_wake`, [`wake`]),
//! or a time it computed came (a due restart, a due probe). Only a container waiting for
//! a dependency's init is polled, briefly. A slow idle tick stays as a safety net.
//! Reconciling every 100 ms read five records per container and was the busiest process
//! of a master under TCG (docs/hosts.md).

use std::collections::HashSet;
use std::fs::{self, File};
use std::future::Future;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc;

use super::health::{read_health, write_health, HealthRecord};
use super::records::{self, read_desired, read_status, write_desired, write_status, DesiredState};
use super::restart::{decide, Backoff, Decision};
use super::{Result, SupervisorError};
use crate::base::error::PathIo;
use crate::base::record::now_ms;
use crate::plan::{Healthcheck, RestartPolicy};
use crate::shim;
use crate::shim::launch::{self, ExecArgs, Internal, ShimArgs};

use crate::state::Paths;

#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    pub backoff: Backoff,
    /// Longest time between two reconciles when nothing happens: a safety net only, since
    /// every change the supervisor must act on wakes it (module docs).
    pub idle_tick: Duration,
    /// How often a container waiting for a dependency's init is looked at again (the
    /// dependency's shim records its init and tells nobody).
    pub dependency_poll: Duration,
    pub log_max_bytes: u64,
    /// SIGTERM → SIGKILL grace when the supervisor stops its containers.
    pub stop_timeout: Duration,
    /// Foreground `run`: return once all of these have exited for good.
    pub exit_when_idle: Option<Vec<String>>,
    /// Serve the kubelet's CRI on `Paths::cri_socket` while supervising (design: the
    /// supervisor is the runtime the kubelet container talks to).
    pub serve_cri: bool,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            idle_tick: idle_tick(),
            dependency_poll: Duration::from_millis(100),
            log_max_bytes: crate::shim::log::DEFAULT_MAX_BYTES,
            stop_timeout: Duration::from_secs(10),
            exit_when_idle: None,
            serve_cri: true,
        }
    }
}

/// The safety-net tick: 2 s. The tests of the supervisor's behaviour stretch it to an
/// hour (`KBOOT_TEST_ONLY_IDLE_TICK_MS`, in what `cargo test` builds only), so a change
/// that reaches the supervisor by no event fails them instead of waiting for the tick.
fn idle_tick() -> Duration {
    #[cfg(feature = "test-plain-process")]
    if let Some(ms) = std::env::var(TEST_ONLY_IDLE_TICK_ENV).ok().and_then(|v| v.parse().ok()) {
        return Duration::from_millis(ms);
    }
    Duration::from_secs(2)
}

/// See [`idle_tick`].
#[cfg(feature = "test-plain-process")]
pub const TEST_ONLY_IDLE_TICK_ENV: &str = "KBOOT_TEST_ONLY_IDLE_TICK_MS";

/// While the host shuts down, a due restart is asked about again this often (the boot unit's
/// SIGQUIT normally ends the supervisor first).
const SHUTDOWN_RECHECK_MS: u64 = 5_000;

/// How a supervisor is asked to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// SIGINT or SIGTERM (Ctrl-C, `kboot down`): stop every container, then exit.
    StopContainers,
    /// SIGQUIT: exit and leave the containers running in their shims; the next supervisor
    /// adopts them. The boot service stops and restarts the supervisor this way, so
    /// `systemctl restart kboot` after replacing the binary keeps the node's containers.
    LeaveRunning,
}

/// Resolves on SIGINT or SIGTERM (stop the containers) or SIGQUIT (leave them running).
pub async fn termination() -> Shutdown {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term), Ok(mut quit)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::quit()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => Shutdown::StopContainers,
        _ = term.recv() => Shutdown::StopContainers,
        _ = quit.recv() => Shutdown::LeaveRunning,
    }
}

/// The pid of the supervisor holding this root's lock, if one runs.
pub fn running_supervisor(paths: &Paths) -> Option<i32> {
    let file = File::open(paths.supervisor_lock()).ok()?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_unlocked_on_drop) => None,
        Err(_) => fs::read_to_string(paths.supervisor_pid()).ok()?.trim().parse().ok(),
    }
}

/// Tells the running supervisor, if any, that what is wanted changed, so it reconciles
/// now rather than at its idle tick. Nobody listening is no error: a supervisor that
/// starts later reads every record anyway.
pub fn wake(paths: &Paths) {
    if let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() {
        let _ = sock.set_nonblocking(true);
        let _ = sock.send_to(b"w", paths.supervisor_wake());
    }
}

/// The socket [`wake`] writes to, bound while the supervisor holds its lock (a stale one
/// from a killed supervisor is replaced), readable by root only.
fn bind_wake(paths: &Paths) -> Result<tokio::net::UnixDatagram> {
    use std::os::unix::fs::PermissionsExt;
    let path = paths.supervisor_wake();
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(PathIo::at("remove the stale wake socket", &path)(e).into())
        }
        _ => {}
    }
    let sock = tokio::net::UnixDatagram::bind(&path).map_err(PathIo::at("bind the wake socket", &path))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
        .map_err(PathIo::at("restrict the wake socket", &path))?;
    Ok(sock)
}

/// Holds the supervisor lock for the life of the loop.
fn lock(paths: &Paths) -> Result<Flock<File>> {
    fs::create_dir_all(paths.state()).map_err(PathIo::at("create", paths.state()))?;
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(paths.supervisor_lock())
        .map_err(PathIo::at("open", paths.supervisor_lock()))?;
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| SupervisorError::AlreadyRunning {
        pid: fs::read_to_string(paths.supervisor_pid())
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0),
    })?;
    fs::write(paths.supervisor_pid(), std::process::id().to_string())
        .map_err(PathIo::at("write", paths.supervisor_pid()))?;
    Ok(lock)
}

/// Runs the supervisor until `shutdown` resolves (then stops every container it manages,
/// unless told to leave them running) or, with `exit_when_idle`, until those containers are
/// done.
pub async fn supervise(
    paths: &Paths,
    opts: &SupervisorOptions,
    shutdown: impl Future<Output = Shutdown>,
) -> Result<()> {
    let _lock = lock(paths)?;
    let wake = bind_wake(paths)?;
    restart_always_on_start(paths);
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let (adopted_tx, mut adopted_rx) = mpsc::unbounded_channel::<String>();
    let (health_tx, mut health_rx) = mpsc::unbounded_channel::<ProbeResult>();
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<()>();
    let mut sup = Supervisor {
        paths: paths.clone(),
        opts: opts.clone(),
        own: HashSet::new(),
        adopted: HashSet::new(),
        probing: HashSet::new(),
        next_due_ms: None,
        tx,
        adopted_tx,
        health_tx,
        started_tx,
    };
    tracing::info!(root = %paths.root().display(), pid = std::process::id(), "supervisor started");
    // The CRI server runs beside the reconcile loop. A failure to serve it is logged, not
    // fatal: plan containers (`run -f`) do not need it, and the kubelet reports it clearly.
    let (cri_stop, cri_stopped) = tokio::sync::oneshot::channel::<()>();
    let cri_task = opts.serve_cri.then(|| {
        let paths = paths.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = cri_stopped.await;
            };
            if let Err(err) = crate::cri::serve(paths, shutdown).await {
                tracing::error!(error = %err, "the CRI server stopped");
            }
        })
    });
    tokio::pin!(shutdown);
    let mut wake_buf = [0u8; 16];
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            how = &mut shutdown => {
                match how {
                    Shutdown::StopContainers => sup.stop_all().await,
                    Shutdown::LeaveRunning => tracing::info!("leaving the containers running for the next supervisor"),
                }
                break;
            }
            Some(name) = rx.recv() => { sup.own.remove(&name); }
            Some(name) = adopted_rx.recv() => { sup.adopted.remove(&name); }
            Some(probe) = health_rx.recv() => sup.record_probe(probe),
            Some(()) = started_rx.recv() => {}
            _ = wake.recv(&mut wake_buf) => {}
            _ = tokio::time::sleep_until(next) => {}
        }
        let now = now_ms();
        sup.reconcile(now);
        let wait = sup
            .next_due_ms
            .map_or(opts.idle_tick, |due| Duration::from_millis(due.saturating_sub(now)))
            .min(opts.idle_tick);
        next = tokio::time::Instant::now() + wait;
        if let Some(names) = &opts.exit_when_idle {
            if names.iter().all(|n| sup.settled(n)) {
                break;
            }
        }
    }
    let _ = cri_stop.send(());
    if let Some(task) = cri_task {
        // The server gives open connections a short grace period, then closes them.
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let _ = fs::remove_file(paths.supervisor_pid());
    tracing::info!("supervisor stopped");
    Ok(())
}

/// Docker's `always` on a daemon start: a container the user stopped runs again
/// when a supervisor starts, while `unless-stopped` keeps it stopped (the only
/// difference between the two policies).
fn restart_always_on_start(paths: &Paths) {
    for name in records::container_names(paths) {
        let Some(mut desired) = read_desired(paths, &name) else {
            continue;
        };
        if desired.state != DesiredState::Stopped
            || !desired.stopped_by_user
            || desired.service.restart != RestartPolicy::Always
        {
            continue;
        }
        desired.state = DesiredState::Running;
        desired.stopped_by_user = false;
        desired.requested_at_ms = now_ms();
        match write_desired(paths, &desired) {
            Ok(()) => {
                tracing::info!(container = %name, "restart: always starts a user-stopped container with the supervisor")
            }
            Err(err) => tracing::error!(container = %name, %err, "mark a restart: always container wanted"),
        }
    }
}

struct Supervisor {
    paths: Paths,
    opts: SupervisorOptions,
    /// Shims this supervisor spawned and has not seen exit.
    own: HashSet<String>,
    /// Shims found running (from a previous supervisor), logged once.
    adopted: HashSet<String>,
    /// Containers with a healthcheck probe in flight.
    probing: HashSet<String>,
    /// The earliest time (Unix ms) the last reconcile found something due: a restart, a
    /// probe, a dependency to look at again.
    next_due_ms: Option<u64>,
    /// Shims this supervisor started, by name, when they end.
    tx: mpsc::UnboundedSender<String>,
    /// Adopted shims, by name, when they end (apart from `tx`: the end of an adopted shim
    /// must not clear a shim of the same name this supervisor started since).
    adopted_tx: mpsc::UnboundedSender<String>,
    health_tx: mpsc::UnboundedSender<ProbeResult>,
    /// A shim this supervisor started reported how its start went.
    started_tx: mpsc::UnboundedSender<()>,
}

/// The outcome of one healthcheck probe.
#[derive(Debug)]
struct ProbeResult {
    name: String,
    run_started_at_ms: u64,
    ok: bool,
    at_ms: u64,
}

impl Supervisor {
    fn is_running(&self, name: &str) -> bool {
        self.own.contains(name) || shim::running(&self.paths, name).is_some()
    }

    /// Something is due at `at_ms`: the loop wakes by then.
    fn due_at(&mut self, at_ms: u64) {
        self.next_due_ms = Some(self.next_due_ms.map_or(at_ms, |t| t.min(at_ms)));
    }

    /// Brings every container toward its desired state; never blocks on one.
    fn reconcile(&mut self, now: u64) {
        self.next_due_ms = None;
        for name in records::container_names(&self.paths) {
            if let Err(err) = self.reconcile_one(&name, now) {
                tracing::error!(container = %name, err = %err, "reconcile failed");
            }
        }
    }

    fn reconcile_one(&mut self, name: &str, now: u64) -> Result<()> {
        let Some(desired) = read_desired(&self.paths, name) else {
            return Ok(());
        };
        let running = shim::running(&self.paths, name);
        let started = running.as_ref().and_then(|r| r.started_at_ms);
        if let (Some(check), Some(started)) = (&desired.service.healthcheck, started) {
            self.maybe_probe(name, check, started, now);
        }
        if self.own.contains(name) {
            return Ok(());
        }
        if let Some(rec) = running {
            if self.adopted.insert(name.to_owned()) {
                tracing::info!(container = %name, shim = rec.shim_pid, pid = ?rec.init_pid, "adopted running container");
                let (tx, name) = (self.adopted_tx.clone(), name.to_owned());
                tokio::spawn(async move {
                    rec.ended().await;
                    let _ = tx.send(name);
                });
            }
            return Ok(());
        }
        if desired.state == DesiredState::Stopped {
            return Ok(());
        }
        let exit = shim::record::read_exit(&self.paths, name);
        let Some(exit) = exit.filter(|e| e.finished_at_ms >= desired.requested_at_ms) else {
            // Wanted and not yet run since it was asked for.
            if self.deps_ready(&desired.service.depends_on) {
                let mut status = read_status(&self.paths, name);
                status.spawned_at_ms = now;
                write_status(&self.paths, name, &status)?;
                self.spawn(name)?;
            } else {
                self.due_at(now + self.dependency_poll_ms());
            }
            return Ok(());
        };
        let mut status = read_status(&self.paths, name);
        if exit.finished_at_ms > status.handled_exit_ms {
            let ran_for = Duration::from_millis(
                exit.finished_at_ms
                    .saturating_sub(exit.started_at_ms.unwrap_or(exit.finished_at_ms)),
            );
            let decision = decide(
                desired.service.restart,
                &exit,
                ran_for,
                desired.stopped_by_user,
                &mut status.restart,
                &self.opts.backoff,
            );
            status.handled_exit_ms = exit.finished_at_ms;
            status.restart_at_ms = match decision {
                Decision::Restart(d) => Some(now + u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                Decision::Stay => None,
            };
            tracing::info!(container = %name, code = exit.exit_code, ?decision, restarts = status.restart.restarts, "container exited");
            write_status(&self.paths, name, &status)?;
        }
        match status.restart_at_ms {
            Some(t) if now < t => self.due_at(t),
            Some(_) if crate::base::systemd::system_stopping() => {
                // The host is shutting down (base::systemd): the scope would be refused and
                // the container recorded as failed; the supervisor is stopped next anyway.
                tracing::info!(container = %name, "the host is shutting down: restart held back");
                self.due_at(now + SHUTDOWN_RECHECK_MS);
            }
            Some(_) if self.deps_ready(&desired.service.depends_on) => {
                status.restart_at_ms = None;
                status.spawned_at_ms = now;
                write_status(&self.paths, name, &status)?;
                self.spawn(name)?;
            }
            Some(_) => self.due_at(now + self.dependency_poll_ms()),
            None => {}
        }
        Ok(())
    }

    fn dependency_poll_ms(&self) -> u64 {
        u64::try_from(self.opts.dependency_poll.as_millis()).unwrap_or(u64::MAX)
    }

    /// Starts a healthcheck probe (`kboot exec NAME -- TEST…`) when one is due.
    fn maybe_probe(&mut self, name: &str, check: &Healthcheck, run_started_at_ms: u64, now: u64) {
        if self.probing.contains(name) {
            return;
        }
        let rec = read_health(&self.paths, name)
            .filter(|h| h.run_started_at_ms == run_started_at_ms)
            .unwrap_or_else(|| HealthRecord::new(run_started_at_ms));
        let due = rec.next_check_ms(check);
        if now < due {
            self.due_at(due);
            return;
        }
        let exec = Internal::Exec(ExecArgs {
            name: name.to_owned(),
            command: check.test.clone(),
        });
        let mut cmd = tokio::process::Command::from(exec.command(&self.paths));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        self.probing.insert(name.to_owned());
        let tx = self.health_tx.clone();
        let timeout = check.timeout;
        let name = name.to_owned();
        tokio::spawn(async move {
            let ok = match cmd.spawn() {
                Ok(mut child) => matches!(
                    tokio::time::timeout(timeout, child.wait()).await,
                    Ok(Ok(status)) if status.success()
                ),
                Err(_) => false,
            };
            let _ = tx.send(ProbeResult {
                name,
                run_started_at_ms,
                ok,
                at_ms: now_ms(),
            });
        });
    }

    fn record_probe(&mut self, probe: ProbeResult) {
        self.probing.remove(&probe.name);
        let Some(check) = read_desired(&self.paths, &probe.name).and_then(|d| d.service.healthcheck) else {
            return;
        };
        let mut rec = read_health(&self.paths, &probe.name)
            .filter(|h| h.run_started_at_ms == probe.run_started_at_ms)
            .unwrap_or_else(|| HealthRecord::new(probe.run_started_at_ms));
        let before = rec.status;
        rec.record(&check, probe.ok, probe.at_ms);
        if rec.status != before {
            tracing::info!(container = %probe.name, health = ?rec.status, "health changed");
        }
        if let Err(err) = write_health(&self.paths, &probe.name, &rec) {
            tracing::error!(container = %probe.name, %err, "record health");
        }
    }

    fn deps_ready(&self, deps: &[String]) -> bool {
        deps.iter().all(|d| records::started_since_requested(&self.paths, d))
    }

    /// True when the container runs no more and will not be restarted.
    fn settled(&self, name: &str) -> bool {
        if self.is_running(name) {
            return false;
        }
        let Some(desired) = read_desired(&self.paths, name) else {
            return true;
        };
        if desired.state == DesiredState::Stopped {
            return true;
        }
        let exit = shim::record::read_exit(&self.paths, name);
        let status = read_status(&self.paths, name);
        exit.is_some_and(|e| e.finished_at_ms >= desired.requested_at_ms && status.handled_exit_ms >= e.finished_at_ms)
            && status.restart_at_ms.is_none()
    }

    fn spawn(&mut self, name: &str) -> Result<()> {
        let dir = self.paths.container(name);
        let shim_log = dir.shim_log();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&shim_log)
            .map_err(PathIo::at("open", &shim_log))?;
        let log2 = log.try_clone().map_err(PathIo::at("open", &shim_log))?;
        // The start notice tells the loop when the shim's records say how the start went
        // (init runs: dependents may start, probes count from then).
        let args = ShimArgs::service(name, self.paths.container(name).bundle(), self.opts.log_max_bytes);
        let (command, notice) = Internal::shim_with_start_notice(args, &self.paths).map_err(PathIo::at(
            "create the start notice pipe for the shim logging to",
            &shim_log,
        ))?;
        // libcontainer's own log lines, emitted inside init, would land in the container's stderr (P9).
        let mut child = tokio::process::Command::from(command)
            .env("KBOOT_LOG", "warn,libcontainer=off,libcgroups=off")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(false)
            .spawn()
            .map_err(PathIo::at("start the shim", launch::SELF_EXE))?;
        // (The command, and with it this process's copy of the notice pipe's write end, is gone.)
        let started = self.started_tx.clone();
        tokio::spawn(async move {
            let _ = notice.wait().await;
            let _ = started.send(());
        });
        tracing::info!(container = %name, shim = ?child.id(), "starting");
        self.own.insert(name.to_owned());
        let tx = self.tx.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            let _ = child.wait().await;
            let _ = tx.send(name);
        });
        Ok(())
    }

    /// Stops every running container (SIGTERM through its shim, SIGKILL after
    /// the grace period) and marks them stopped (not by the user).
    async fn stop_all(&mut self) {
        let mut waiting = Vec::new();
        for name in records::container_names(&self.paths) {
            if let Some(mut d) = read_desired(&self.paths, &name) {
                if d.state == DesiredState::Running {
                    d.state = DesiredState::Stopped;
                    let _ = write_desired(&self.paths, &d);
                }
            }
            if let Some(rec) = shim::running(&self.paths, &name) {
                let _ = kill(Pid::from_raw(rec.shim_pid), Signal::SIGTERM);
                waiting.push(rec);
            }
        }
        let deadline = Instant::now() + self.opts.stop_timeout;
        while waiting.iter().any(|r| r.is_alive()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for r in waiting.iter().filter(|r| r.is_alive()) {
            if let Some(pid) = r.init_pid {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while waiting.iter().any(|r| r.is_alive()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
