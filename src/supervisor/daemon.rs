//! The supervisor loop (tokio): level-triggered reconciliation of every
//! container directory against the shims that run. It wakes on a shim it
//! started exiting, and on a short tick for everything else (adopted shims,
//! `kboot start`, due restarts). A crash-looping container only ever sets its
//! own restart time, so it cannot starve the others.

use std::collections::HashSet;
use std::fs::{self, File};
use std::future::Future;
use std::path::PathBuf;
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
    /// How often records are re-read (adopted shims, `kboot start`, due restarts).
    pub tick: Duration,
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
            tick: Duration::from_millis(100),
            log_max_bytes: crate::shim::log::DEFAULT_MAX_BYTES,
            stop_timeout: Duration::from_secs(10),
            exit_when_idle: None,
            serve_cri: true,
        }
    }
}

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

/// Holds the supervisor lock for the life of the loop.
fn lock(paths: &Paths) -> Result<Flock<File>> {
    let io = |step, path: PathBuf| move |source| SupervisorError::Io(PathIo { step, path, source });
    fs::create_dir_all(paths.state()).map_err(io("create", paths.state().to_owned()))?;
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(paths.supervisor_lock())
        .map_err(io("open", paths.supervisor_lock()))?;
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| SupervisorError::AlreadyRunning {
        pid: fs::read_to_string(paths.supervisor_pid())
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0),
    })?;
    fs::write(paths.supervisor_pid(), std::process::id().to_string()).map_err(io("write", paths.supervisor_pid()))?;
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
    restart_always_on_start(paths);
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let (health_tx, mut health_rx) = mpsc::unbounded_channel::<ProbeResult>();
    let mut sup = Supervisor {
        paths: paths.clone(),
        opts: opts.clone(),
        own: HashSet::new(),
        adopted: HashSet::new(),
        probing: HashSet::new(),
        tx,
        health_tx,
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
    let mut tick = tokio::time::interval(opts.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
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
            Some(probe) = health_rx.recv() => sup.record_probe(probe),
            _ = tick.tick() => {}
        }
        sup.reconcile(now_ms());
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
    tx: mpsc::UnboundedSender<String>,
    health_tx: mpsc::UnboundedSender<ProbeResult>,
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

    /// Brings every container toward its desired state; never blocks on one.
    fn reconcile(&mut self, now: u64) {
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
            }
            return Ok(());
        }
        self.adopted.remove(name);
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
        if status.restart_at_ms.is_some_and(|t| now >= t) && self.deps_ready(&desired.service.depends_on) {
            status.restart_at_ms = None;
            status.spawned_at_ms = now;
            write_status(&self.paths, name, &status)?;
            self.spawn(name)?;
        }
        Ok(())
    }

    /// Starts a healthcheck probe (`kboot exec NAME -- TEST…`) when one is due.
    fn maybe_probe(&mut self, name: &str, check: &Healthcheck, run_started_at_ms: u64, now: u64) {
        if self.probing.contains(name) {
            return;
        }
        let rec = read_health(&self.paths, name)
            .filter(|h| h.run_started_at_ms == run_started_at_ms)
            .unwrap_or_else(|| HealthRecord::new(run_started_at_ms));
        if now < rec.next_check_ms(check) {
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
        deps.iter()
            .all(|d| shim::running(&self.paths, d).is_some_and(|r| r.init_pid.is_some()))
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
        let io = |step, path: PathBuf| move |source| SupervisorError::Io(PathIo { step, path, source });
        let shim_log = dir.shim_log();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&shim_log)
            .map_err(io("open", shim_log.clone()))?;
        let log2 = log.try_clone().map_err(io("open", shim_log))?;
        let shim = Internal::Shim(ShimArgs::service(
            name,
            self.paths.container(name).bundle(),
            self.opts.log_max_bytes,
        ));
        let mut cmd = tokio::process::Command::from(shim.command(&self.paths));
        // libcontainer's own log lines, emitted inside init, would land in the container's stderr (P9).
        cmd.env("KBOOT_LOG", "warn,libcontainer=off,libcgroups=off")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(false);
        let mut child = cmd
            .spawn()
            .map_err(io("start the shim", PathBuf::from(launch::SELF_EXE)))?;
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
