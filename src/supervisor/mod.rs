//! Container lifecycle: plans become container directories (bundle + desired
//! state), one shim per running container, restart policies with backoff,
//! adoption of running shims after a supervisor restart.
//!
//! Entry point for every plan producer (Compose files, the master/worker roles):
//!
//! ```no_run
//! # async fn f(paths: kboot::state::Paths, plan: kboot::plan::Plan) -> Result<(), kboot::supervisor::SupervisorError> {
//! use kboot::supervisor::{run_plan, RunOptions};
//! let report = run_plan(&paths, &plan, &RunOptions { detach: true, ..RunOptions::default() }).await?;
//! for s in &report.services { println!("{} {}", s.name, s.status); }
//! # Ok(()) }
//! ```
//!
//! Everything else (`ps`, `stop`, `start`, `rm`, `down`) is synchronous and works
//! from the records on disk whether or not a supervisor runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;

use crate::base::error::PathIo;
use crate::base::record::{now_ms, RecordError};
use crate::bundle::{self, BundleError, BundleRequest, Host};
use crate::plan::{Plan, PlanFile};
use crate::shim;
use crate::shim::launch::{Internal, SuperviseArgs};

use crate::state::Paths;

mod daemon;
pub mod health;
pub mod records;
pub mod restart;

use crate::bundle::images::{ImageError, ImageSource, LocalImages};
pub use daemon::{supervise, termination, Shutdown, SupervisorOptions};
use records::{read_desired, read_status, write_desired, DesiredRecord, DesiredState};
pub use restart::Backoff;

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("container `{name}` already exists and runs a different service (image `{image}`); remove it first with `kboot rm {name}`")]
    NameCollision { name: String, image: String },
    #[error("no container named `{name}` (see `kboot ps`)")]
    NotFound { name: String },
    #[error("a supervisor is already running for this root (pid {pid})")]
    AlreadyRunning { pid: i32 },
    #[error(
        "the running supervisor (pid {pid}) did not exit after SIGQUIT; stop it (`kill -QUIT {pid}`) and try again"
    )]
    HandOver { pid: i32 },
    #[error(transparent)]
    Io(#[from] PathIo),
    #[error("start the background supervisor")]
    SpawnDaemon(#[source] std::io::Error),
    #[error("the background supervisor exited at once ({status}); see {}", log.display())]
    DaemonExited { status: String, log: PathBuf },
    #[error("timed out after {}s waiting for {names:?} to start; see `kboot ps` and `kboot logs NAME`", timeout.as_secs())]
    Timeout { names: Vec<String>, timeout: Duration },
}

type Result<T> = std::result::Result<T, SupervisorError>;

/// How [`run_plan`] runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Return once every service runs (a background supervisor keeps them
    /// running); otherwise supervise in the foreground until SIGINT/SIGTERM,
    /// or until every service has exited for good, then stop everything (on
    /// SIGQUIT: exit and leave them running, see [`Shutdown`]).
    pub detach: bool,
    /// How long `detach` waits for services to start.
    pub ready_timeout: Duration,
    pub supervisor: SupervisorOptions,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            detach: false,
            ready_timeout: Duration::from_secs(120),
            supervisor: SupervisorOptions::default(),
        }
    }
}

/// Where each service of a plan stands.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub services: Vec<ContainerView>,
}

impl RunReport {
    /// True when no service failed to start or exited with an error.
    pub fn ok(&self) -> bool {
        self.services.iter().all(|s| !s.failed())
    }
}

/// Runs a plan: writes the plan's files, prepares every service's container
/// (image → rootfs → bundle, desired state "running"), then supervises (see
/// [`RunOptions::detach`]). Safe to call again with the same plan: running
/// containers are kept, stopped ones restarted, nothing is duplicated.
pub async fn run_plan(paths: &Paths, plan: &Plan, opts: &RunOptions) -> Result<RunReport> {
    // Unpacking images and writing bundles is blocking file work: keep it off
    // the async workers (the CRI server may share this runtime).
    let (p, pl) = (paths.clone(), plan.clone());
    let names = tokio::task::spawn_blocking(move || apply(&p, &pl, &LocalImages { paths: p.clone() }))
        .await
        .map_err(|e| {
            PathIo::at("prepare the plan's containers under", paths.containers())(std::io::Error::other(e))
        })??;
    if opts.detach || daemon::running_supervisor(paths).is_some() {
        daemon::wake(paths);
        ensure_daemon(paths)?;
        return wait_ready(paths, &names, opts.ready_timeout).await;
    }
    let mut sup = opts.supervisor.clone();
    sup.exit_when_idle = Some(names.clone());
    supervise(paths, &sup, daemon::termination()).await?;
    Ok(RunReport {
        services: names.iter().map(|n| inspect(paths, n)).collect(),
    })
}

/// Prepares every service of the plan and marks it wanted; returns the names in start order.
pub fn apply(paths: &Paths, plan: &Plan, images: &dyn ImageSource) -> Result<Vec<String>> {
    for f in &plan.files {
        write_plan_file(f)?;
    }
    let host = Host::probe()?;
    let driver = crate::cgroups::Driver::load(&paths.cgroup_driver_file());
    let mut names = Vec::new();
    for svc in &plan.services {
        let dir = paths.container(&svc.name);
        let running = shim::running(paths, &svc.name).is_some();
        if let Some(old) = read_desired(paths, &svc.name) {
            if old.service != *svc && running {
                return Err(SupervisorError::NameCollision {
                    name: svc.name.clone(),
                    image: old.service.image,
                });
            }
        }
        if !running {
            let prepared = images.prepare(svc, &dir)?;
            let cgroup = driver.container_path(&paths.cgroup(&svc.name));
            let spec = bundle::build_spec(
                &BundleRequest {
                    service: svc,
                    image: &prepared.defaults,
                    rootfs: &prepared.rootfs,
                    cgroups_path: &cgroup,
                },
                &host,
            )?;
            bundle::write_config(&paths.container(&svc.name).bundle(), &spec)?;
        }
        write_desired(
            paths,
            &DesiredRecord {
                service: svc.clone(),
                state: DesiredState::Running,
                stopped_by_user: false,
                requested_at_ms: now_ms(),
            },
        )?;
        names.push(svc.name.clone());
    }
    Ok(names)
}

fn write_plan_file(f: &PlanFile) -> Result<()> {
    use crate::base::fs::{write_atomic, Durability};
    write_atomic(&f.path, f.content.as_bytes(), Durability::Synced, Some(f.mode))
        .map_err(PathIo::at("write", &f.path))?;
    Ok(())
}

/// One row of `kboot ps`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    /// `running`, `starting`, `restarting`, `exited`, `stopped`, `failed` or `created`
    /// (and `blocked` in a run report: waiting on a dependency that will not run).
    pub status: String,
    pub pid: Option<i32>,
    pub restarts: u32,
    pub exit_code: Option<i32>,
    /// Why it is not running: `OOMKilled`, a signal name, a start error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `starting`, `healthy` or `unhealthy` for a running container with a healthcheck.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
}

impl ContainerView {
    /// Failed to start, exited non-zero for good, or crash-looping.
    pub fn failed(&self) -> bool {
        self.status == "failed" || self.status == "restarting" || (self.status == "exited" && self.exit_code != Some(0))
    }
}

/// The state of one container, from records only (no supervisor needed).
pub fn inspect(paths: &Paths, name: &str) -> ContainerView {
    let desired = read_desired(paths, name);
    let status = read_status(paths, name);
    let exit = shim::record::read_exit(paths, name);
    let shim = shim::running(paths, name);
    // Spawned, but the shim has not written its record yet (or died before it could).
    let spawning = status.spawned_at_ms > exit.as_ref().map_or(0, |e| e.finished_at_ms)
        && now_ms().saturating_sub(status.spawned_at_ms) < 10_000;
    let (state, pid) = match (&shim, &desired) {
        (Some(s), _) if s.init_pid.is_some() => ("running", s.init_pid),
        (Some(_), _) => ("starting", None),
        (None, Some(d)) if d.state == DesiredState::Running && spawning => ("starting", None),
        (None, Some(d)) if d.state == DesiredState::Stopped => ("stopped", None),
        (None, Some(_)) if status.restart_at_ms.is_some() => ("restarting", None),
        (None, _) => match &exit {
            Some(e) if e.error.is_some() => ("failed", None),
            Some(_) => ("exited", None),
            None => ("created", None),
        },
    };
    let reason = exit.as_ref().filter(|_| state != "running").and_then(|e| {
        if e.oom_killed {
            Some("OOMKilled".to_owned())
        } else {
            e.error.clone().or_else(|| e.signal.clone())
        }
    });
    let health = match (&shim, desired.as_ref().and_then(|d| d.service.healthcheck.as_ref())) {
        (Some(s), Some(_)) if state == "running" => Some(
            health::read_health(paths, name)
                .filter(|h| Some(h.run_started_at_ms) == s.started_at_ms)
                .map_or(health::Health::Starting, |h| h.status),
        ),
        _ => None,
    }
    .map(|h| {
        serde_json::to_value(h)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    });
    ContainerView {
        name: name.to_owned(),
        image: desired.map(|d| d.service.image).unwrap_or_default(),
        health,
        status: state.to_owned(),
        pid,
        restarts: status.restart.restarts,
        exit_code: exit.map(|e| e.exit_code),
        reason,
    }
}

/// Every container, sorted by name.
pub fn list(paths: &Paths) -> Vec<ContainerView> {
    records::container_names(paths)
        .iter()
        .map(|n| inspect(paths, n))
        .collect()
}

/// Waits until each named container runs, or has settled without running
/// (failed, exited for good).
pub async fn wait_ready(paths: &Paths, names: &[String], timeout: Duration) -> Result<RunReport> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut views: Vec<ContainerView> = names.iter().map(|n| inspect(paths, n)).collect();
        // `names` is in start order, so one pass also catches dependencies of dependencies.
        let mut down_for_good: Vec<String> = Vec::new();
        let mut settled = true;
        for v in views.iter_mut() {
            let desired = read_desired(paths, &v.name);
            let fresh = desired.as_ref().map(|d| d.requested_at_ms).unwrap_or(0);
            let exit = shim::record::read_exit(paths, &v.name);
            // An exit counts once the supervisor applied the policy to it (restart or not).
            let handled = exit.as_ref().is_some_and(|e| {
                e.finished_at_ms >= fresh && read_status(paths, &v.name).handled_exit_ms >= e.finished_at_ms
            });
            // A dependency that started and ended still lets its dependents start
            // (`records::started_since_requested`; with no shim running, that is its exit);
            // one that never started blocks them.
            let never_started = !(desired.is_some() && exit.as_ref().is_some_and(|e| records::ran_since(e, fresh)));
            let blocked_by = desired
                .iter()
                .flat_map(|d| d.service.depends_on.iter())
                .find(|dep| down_for_good.contains(dep))
                .cloned();
            let done = match v.status.as_str() {
                "running" | "stopped" => true,
                "failed" | "exited" => {
                    if handled && never_started {
                        down_for_good.push(v.name.clone());
                    }
                    handled
                }
                "restarting" => handled,
                "created" if blocked_by.is_some() => {
                    // It would wait for a dependency that will not run again.
                    v.status = "blocked".into();
                    v.reason = blocked_by.map(|d| format!("dependency `{d}` is not running"));
                    down_for_good.push(v.name.clone());
                    true
                }
                _ => false,
            };
            settled &= done;
        }
        if settled {
            return Ok(RunReport { services: views });
        }
        if Instant::now() >= deadline {
            return Err(SupervisorError::Timeout {
                names: views
                    .iter()
                    .filter(|v| v.status != "running")
                    .map(|v| v.name.clone())
                    .collect(),
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a background supervisor (`kboot supervise`, its own session) unless one runs.
pub fn ensure_daemon(paths: &Paths) -> Result<()> {
    if daemon::running_supervisor(paths).is_some() {
        return Ok(());
    }
    use std::os::unix::process::CommandExt;
    fs::create_dir_all(paths.root()).map_err(PathIo::at("create", paths.root()))?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.supervisor_log())
        .map_err(PathIo::at("open", paths.supervisor_log()))?;
    let log2 = log.try_clone().map_err(SupervisorError::SpawnDaemon)?;
    let mut cmd = Internal::Supervise(SuperviseArgs {}).command(paths);
    cmd.stdin(std::process::Stdio::null()).stdout(log).stderr(log2);
    // SAFETY: setsid is async-signal-safe; the closure touches no shared state.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
    }
    let mut child = cmd.spawn().map_err(SupervisorError::SpawnDaemon)?;
    // Return only once it holds the lock: callers then see its pid, and a
    // `stop`/`down` racing with it cannot miss it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if daemon::running_supervisor(paths) == Some(child.id() as i32) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(SupervisorError::DaemonExited {
                status: status.to_string(),
                log: paths.supervisor_log(),
            });
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // A daemon that keeps running is re-parented when this short-lived client exits.
    std::thread::spawn(move || child.wait());
    Ok(())
}

/// `kboot stop`: remembered (a stopped container is not restarted), then the
/// container gets SIGTERM through its shim and SIGKILL after `timeout`.
pub fn stop(paths: &Paths, name: &str, timeout: Duration) -> Result<ContainerView> {
    let mut desired = read_desired(paths, name).ok_or_else(|| SupervisorError::NotFound { name: name.into() })?;
    desired.state = DesiredState::Stopped;
    desired.stopped_by_user = true;
    write_desired(paths, &desired)?;
    terminate(paths, name, timeout);
    Ok(inspect(paths, name))
}

/// Stops the running container of `name`, if any, and waits for its shim to finish.
fn terminate(paths: &Paths, name: &str, timeout: Duration) {
    let Some(rec) = shim::running(paths, name) else { return };
    let _ = kill(Pid::from_raw(rec.shim_pid), Signal::SIGTERM);
    let deadline = Instant::now() + timeout;
    while rec.is_alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if rec.is_alive() {
        // The shim forwards only catchable signals; SIGKILL goes to init directly
        // (re-read: init may have been created after we looked).
        if let Some(pid) = shim::running(paths, name).and_then(|r| r.init_pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while rec.is_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// `kboot start`: wanted again; a supervisor is started if none runs.
pub async fn start(paths: &Paths, names: &[String], timeout: Duration) -> Result<RunReport> {
    for name in names {
        let mut desired = read_desired(paths, name).ok_or_else(|| SupervisorError::NotFound { name: name.clone() })?;
        desired.state = DesiredState::Running;
        desired.stopped_by_user = false;
        desired.requested_at_ms = now_ms();
        write_desired(paths, &desired)?;
    }
    daemon::wake(paths);
    ensure_daemon(paths)?;
    wait_ready(paths, names, timeout).await
}

/// `kboot rm`: stops the container and removes its directory (bundle, records,
/// logs, writable layer). Volume data on the host stays.
pub fn remove(paths: &Paths, name: &str, images: &dyn ImageSource, timeout: Duration) -> Result<()> {
    if read_desired(paths, name).is_none() && !paths.container(name).exists() {
        return Err(SupervisorError::NotFound { name: name.into() });
    }
    if let Some(mut d) = read_desired(paths, name) {
        d.state = DesiredState::Stopped;
        write_desired(paths, &d)?;
    }
    terminate(paths, name, timeout);
    let dir = paths.container(name);
    images.release(&dir);
    let _ = fs::remove_file(paths.shim_record(name));
    fs::remove_dir_all(&dir).map_err(PathIo::at("remove container directory", dir.path()))?;
    Ok(())
}

/// Asks the running supervisor, if any, to exit and leave the containers running (SIGQUIT,
/// as the boot unit's stop does), so another one (the boot unit's) can adopt them; waits up
/// to `timeout` for it to go. Returns its pid.
pub fn hand_over(paths: &Paths, timeout: Duration) -> Result<Option<i32>> {
    match signal_and_wait(paths, Signal::SIGQUIT, timeout) {
        None => Ok(None),
        Some((pid, true)) => Ok(Some(pid)),
        Some((pid, false)) => Err(SupervisorError::HandOver { pid }),
    }
}

/// Sends `signal` to the running supervisor, if any, and waits up to `timeout` for it to
/// go: its pid and whether it went.
fn signal_and_wait(paths: &Paths, signal: Signal, timeout: Duration) -> Option<(i32, bool)> {
    let pid = daemon::running_supervisor(paths)?;
    let _ = kill(Pid::from_raw(pid), signal);
    let deadline = Instant::now() + timeout;
    loop {
        if daemon::running_supervisor(paths).is_none() {
            return Some((pid, true));
        }
        if Instant::now() >= deadline {
            return Some((pid, false));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `kboot down`: stops the supervisor, then stops and removes every container,
/// then the (now empty) kboot cgroups. Volume data, images and PKI stay.
pub fn down(paths: &Paths, images: &dyn ImageSource, timeout: Duration) -> Result<Vec<String>> {
    // SIGTERM: the supervisor stops its containers; one still there after that is left to
    // the removals below.
    let _ = signal_and_wait(paths, Signal::SIGTERM, timeout + Duration::from_secs(5));
    let names = records::container_names(paths);
    for name in &names {
        remove(paths, name, images, timeout)?;
    }
    remove_cgroup_parents(paths);
    Ok(names)
}

/// `kboot down --purge`, after [`down`]: removes everything under the root
/// (images, content, rootfs cache, PKI, data kept there). Host volume
/// directories outside the root stay.
pub fn purge(paths: &Paths) -> Result<()> {
    let Ok(entries) = fs::read_dir(paths.root()) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let path = e.path();
        let res = if path.is_dir() && !path.is_symlink() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        res.map_err(PathIo::at("remove", path))?;
    }
    Ok(())
}

/// Removes `/sys/fs/cgroup/<controller>/<kboot parent>` directories left after
/// libcontainer deleted the containers' leaf cgroups (only empty ones: rmdir).
pub fn remove_cgroup_parents(paths: &Paths) {
    let probe = paths.cgroup("x");
    let Some(parent) = Path::new(&probe).parent().map(|p| p.to_path_buf()) else {
        return;
    };
    let rel = parent.strip_prefix("/").unwrap_or(&parent).to_path_buf();
    let mut dirs = vec![Path::new("/sys/fs/cgroup").join(&rel)];
    for e in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        dirs.push(e.path().join(&rel));
    }
    for d in dirs {
        if d.is_dir() {
            let _ = fs::remove_dir(&d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shim::record::ExitRecord;

    #[test]
    fn plan_files_are_written_with_their_mode_and_replaced_atomically() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = PlanFile {
            path: d.path().join("etc/kubernetes/manifests/etcd.yaml"),
            mode: 0o600,
            content: "kind: Pod\n".into(),
        };
        write_plan_file(&f).unwrap();
        write_plan_file(&PlanFile {
            content: "kind: Pod # v2\n".into(),
            ..f.clone()
        })
        .unwrap();
        assert_eq!(fs::read_to_string(&f.path).unwrap(), "kind: Pod # v2\n");
        assert_eq!(fs::metadata(&f.path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(
            fs::read_dir(f.path.parent().unwrap()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn inspect_reports_oom_and_start_errors_as_reasons() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::under(d.path());
        let svc = crate::plan::Service {
            name: "x".into(),
            image: "img".into(),
            ..Default::default()
        };
        records::write_desired(
            &paths,
            &DesiredRecord {
                service: svc,
                state: DesiredState::Running,
                stopped_by_user: false,
                requested_at_ms: 1,
            },
        )
        .unwrap();
        assert_eq!(inspect(&paths, "x").status, "created");
        let record_exit = |exit: &ExitRecord| shim::record::write_exit(&paths, "x", exit).unwrap();
        let exit = ExitRecord {
            exit_code: 137,
            signal: Some("SIGKILL".into()),
            oom_killed: true,
            finished_at_ms: 2,
            ..Default::default()
        };
        record_exit(&exit);
        let v = inspect(&paths, "x");
        assert_eq!(
            (v.status.as_str(), v.exit_code, v.reason.as_deref()),
            ("exited", Some(137), Some("OOMKilled"))
        );
        assert!(v.failed());
        let exit = ExitRecord {
            exit_code: 127,
            error: Some("create the container: no such file".into()),
            finished_at_ms: 3,
            ..Default::default()
        };
        record_exit(&exit);
        let v = inspect(&paths, "x");
        assert_eq!(v.status, "failed");
        assert!(v.reason.unwrap().contains("no such file"));
        assert_eq!(list(&paths).len(), 1);
    }
}
