//! CRI containers on kboot's shims, their lifecycle: Create prepares image, rootfs and
//! bundle (the translation is [`super::spec`], the record [`super::record`]); Start spawns
//! `kboot shim` (own session: containers outlive the server) and waits for its records;
//! Stop signals through the shim; Remove undoes Create; exec runs `kboot exec`.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use kboot_cri::v1::ContainerConfig;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::error::{CriError, Result};
use super::log::{link_log, log_path_of};
// The streaming handlers name these through this module.
use super::record::ContainerRecord;
pub(crate) use super::record::{CriContainer, Phase};
use super::sandbox::Sandbox;
use super::spec::{adapt_spec, run_user, security_of, service_of};
use crate::bundle::images::{ImageSource, LocalImages};
use crate::bundle::{build_spec, security, write_config, BundleRequest, Host};
use crate::shim::launch::{ExecArgs, Internal, ShimArgs};
use crate::state::Paths;

/// Image, rootfs, spec and bundle for a new container; returns the record.
pub(crate) fn prepare(
    paths: &Paths,
    id: &str,
    image: (String, String),
    config: &ContainerConfig,
    pod: &Sandbox,
) -> Result<ContainerRecord> {
    let dir = paths.container(id);
    let service = service_of(paths, id, &image.0, config, pod)?;
    let userns = super::userns::of_container(config, pod)?;
    let prepared = LocalImages { paths: paths.clone() }.prepare_for(&service, &dir, userns.as_ref())?;
    let parent = pod
        .config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    let cgroups_path = if parent.is_empty() {
        crate::cgroups::Driver::load(&paths.cgroup_driver_file()).container_path(&paths.cgroup(id))
    } else {
        crate::cgroups::driver::under_parent(&parent, id)
    };
    // The record keeps the cgroup's directory (for stats and updates); with the systemd
    // driver systemd places it (`kubepods-….slice/kboot-<id>.scope`).
    let cgroup = crate::cgroups::driver::fs_path(&cgroups_path)
        .map_err(|e| CriError::InvalidArgument(format!("cgroup_parent: {e}")))?;
    let host = Host::probe()?;
    let mut spec = build_spec(
        &BundleRequest {
            service: &service,
            image: &prepared.defaults,
            rootfs: &prepared.rootfs,
            cgroups_path: &cgroups_path,
        },
        &host,
    )?;
    adapt_spec(&mut spec, paths, config, pod)?;
    let user = run_user(&spec, &prepared.rootfs, config)?;
    security::apply(&mut spec, &security_of(config, &user), &host, id)?;
    if let Some(ns) = &userns {
        super::userns::apply(&mut spec, ns, &dir, &service)?;
    }
    let bundle = paths.container(id).bundle();
    fs::create_dir_all(&bundle).map_err(CriError::io("create the bundle directory", &bundle))?;
    write_config(&bundle, &spec)?;
    let log_path = log_path_of(pod, config);
    if let Some(log) = &log_path {
        link_log(&dir, log)?;
    }
    Ok(ContainerRecord {
        cgroup,
        sandbox_id: pod.id.clone(),
        image: image.0,
        image_id: image.1,
        created_at: super::now_nanos(),
        log_path,
        user: Some(user),
    })
}
/// Starts the shim and waits until the container runs or has failed to start.
pub(crate) async fn start(paths: &Paths, c: &CriContainer) -> Result<()> {
    let dir = c.dir(paths);
    let shim_log = dir.shim_log();
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&shim_log)
        .map_err(CriError::io("open", &shim_log))?;
    let log2 = log.try_clone().map_err(CriError::io("open", &shim_log))?;
    let shim = ShimArgs {
        id: c.id.clone(),
        bundle: paths.container(&c.id).bundle(),
        log_path: c.record.log_path.clone(),
        // The kubelet rotates CRI logs itself (rename, then ReopenContainerLog).
        log_max_bytes: if c.record.log_path.is_some() {
            0
        } else {
            crate::shim::log::DEFAULT_MAX_BYTES
        },
        // Every CRI container can be attached to; stdin only when its config asks for one.
        attach: true,
        stdin: c.config.stdin,
        stdin_once: c.config.stdin && c.config.stdin_once,
        tty: c.config.tty,
        notify_start: true,
    };
    let (command, notice) = Internal::shim_with_start_notice(shim, paths)
        .map_err(CriError::io("create the start notice pipe for", &shim_log))?;
    let mut child = tokio::process::Command::from(command)
        // libcontainer's own lines, emitted inside init, would land in the container's stderr.
        .env("KBOOT_LOG", "warn,libcontainer=off,libcgroups=off")
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2)
        .kill_on_drop(false)
        .spawn()
        .map_err(CriError::io("start the shim", Path::new(crate::shim::launch::SELF_EXE)))?;
    // (The command, and with it this process's copy of the notice pipe's write end, is gone.)
    // Reap the shim whenever it ends; its records carry the outcome.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    let notified = match tokio::time::timeout(START_TIMEOUT, notice.wait()).await {
        Ok(Ok(notified)) => notified,
        Ok(Err(e)) => {
            return Err(CriError::io(
                "wait for the start notice of the shim logging to",
                &shim_log,
            )(e))
        }
        Err(_) => {
            return Err(CriError::StartContainer {
                id: c.id.clone(),
                message: format!("the shim did not report a start within {} s", START_TIMEOUT.as_secs()),
            })
        }
    };
    start_outcome(paths, c, notified, &shim_log).await
}

/// How long StartContainer waits for the shim's notice (libcontainer's create and start).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What the records say once the shim has notified its start, or closed the notice pipe
/// without one: then it is ending, and its records settle within moments (the dead shim's
/// record reads as an exit).
async fn start_outcome(paths: &Paths, c: &CriContainer, notified: bool, shim_log: &Path) -> Result<()> {
    let settle = Instant::now()
        + if notified {
            Duration::ZERO
        } else {
            Duration::from_secs(2)
        };
    loop {
        match c.phase(paths) {
            Phase::Running(rec) if rec.init_pid.is_some() => return Ok(()),
            Phase::Exited(exit) => {
                return match exit.error {
                    Some(err) => Err(CriError::StartContainer {
                        id: c.id.clone(),
                        message: err,
                    }),
                    None => Ok(()),
                }
            }
            _ if Instant::now() >= settle => {
                return Err(CriError::StartContainer {
                    id: c.id.clone(),
                    message: format!("the shim ended without reporting a start; see {}", shim_log.display()),
                })
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// SIGTERM through the shim (it forwards to init), SIGKILL to init after `timeout`.
pub(crate) async fn stop(paths: &Paths, c: &CriContainer, timeout: Duration) -> Result<()> {
    let Phase::Running(rec) = c.phase(paths) else {
        return Ok(());
    };
    let exited = || matches!(c.phase(paths), Phase::Exited(_));
    if !timeout.is_zero() {
        let _ = kill(Pid::from_raw(rec.shim_pid), Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        while !exited() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if !exited() {
        if let Some(pid) = rec.init_pid {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !exited() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if exited() {
        Ok(())
    } else {
        Err(CriError::FailedPrecondition(format!(
            "container {} did not stop after SIGKILL",
            c.id
        )))
    }
}

/// Unmounts what a stopped container still has mounted, its rootfs view and id-mapped
/// volumes, keeping the files (its writable layer stays until [`remove`]). Idempotent.
pub(crate) fn release_rootfs(paths: &Paths, c: &CriContainer) -> Result<()> {
    let dir = c.dir(paths);
    crate::bundle::userns::release(&dir).map_err(CriError::io("unmount the id-mapped volumes in", dir.path()))?;
    LocalImages { paths: paths.clone() }.release(&dir);
    Ok(())
}

/// Removes what Create and Start made: the rootfs view, the log, the directory, the attach
/// socket.
pub(crate) fn remove(paths: &Paths, c: &CriContainer) -> Result<()> {
    let dir = c.dir(paths);
    // Before anything is deleted: the directory holds id-mapped mounts of volumes.
    release_rootfs(paths, c)?;
    if let Some(log) = &c.record.log_path {
        let _ = fs::remove_file(log);
    }
    let _ = fs::remove_file(paths.container(&c.id).exit());
    // Left behind only by a shim killed with SIGKILL (a shim removes its socket on exit).
    let _ = fs::remove_file(paths.attach_socket(&c.id));
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(CriError::io("remove the container directory", dir.path())(e))
        }
        _ => Ok(()),
    }
}

/// Runs `cmd` in the container as its own processes run (`kboot exec`: namespaces,
/// cgroups, user and groups, capabilities, no-new-privileges, seccomp), collecting its output.
pub(crate) async fn exec_sync(
    paths: &Paths,
    c: &CriContainer,
    cmd: &[String],
    timeout: Duration,
) -> Result<(Vec<u8>, Vec<u8>, i32)> {
    let (mut command, pid) = enter_command(paths, c, cmd)?;
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Its own group, so a command that ignores SIGTERM can be killed with all it started.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(CriError::io("run kboot exec for", format!("/proc/{pid}")))?;
    let exec_pid = child.id().and_then(|p| i32::try_from(p).ok());
    let stdout = tokio::spawn(read_all(child.stdout.take()));
    let stderr = tokio::spawn(read_all(child.stderr.take()));
    let io_err = CriError::io("run kboot exec for", format!("/proc/{pid}"));
    let status = if timeout.is_zero() {
        child.wait().await.map_err(io_err)?
    } else {
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => status.map_err(io_err)?,
            Err(_) => {
                // `kboot exec` passes SIGTERM to the command and returns once it has reaped
                // it, so nothing of the command is left when the caller hears of the timeout.
                if let Some(p) = exec_pid {
                    let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
                }
                if tokio::time::timeout(Duration::from_secs(2), child.wait())
                    .await
                    .is_err()
                {
                    if let Some(g) = exec_pid {
                        let _ = nix::sys::signal::killpg(Pid::from_raw(g), Signal::SIGKILL);
                    }
                    let _ = child.wait().await;
                }
                return Err(CriError::DeadlineExceeded(format!(
                    "command {cmd:?} timed out after {timeout:?}"
                )));
            }
        }
    };
    let out = std::process::Output {
        status,
        stdout: stdout.await.unwrap_or_default(),
        stderr: stderr.await.unwrap_or_default(),
    };
    Ok((out.stdout, out.stderr, exit_code(&out.status)))
}

/// The exit code a shell would report: the code, or 128 + the signal that ended it.
pub(crate) fn exit_code(status: &std::process::ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or(128 + std::os::unix::process::ExitStatusExt::signal(status).unwrap_or(0))
}

/// A command running `cmd` in the running container `c` through `kboot exec`: the container's
/// namespaces, root, cgroups, user and groups, capabilities, no-new-privileges and seccomp
/// filter (see `shim::exec`). `kboot exec` passes SIGTERM, SIGINT, SIGHUP and SIGQUIT on to
/// the command. The caller sets stdio. Returns it with the container's init PID.
pub(crate) fn enter_command(paths: &Paths, c: &CriContainer, cmd: &[String]) -> Result<(tokio::process::Command, i32)> {
    let Phase::Running(rec) = c.phase(paths) else {
        return Err(CriError::FailedPrecondition(format!(
            "container {} is not running",
            c.id
        )));
    };
    let init = rec.init_pid.unwrap_or_default();
    if cmd.is_empty() {
        return Err(CriError::InvalidArgument("exec needs a command".into()));
    }
    let exec = Internal::Exec(ExecArgs {
        name: c.id.clone(),
        command: cmd.to_vec(),
    });
    let mut command = tokio::process::Command::from(exec.command(paths));
    command.env("KBOOT_LOG", "error,libcontainer=off,libcgroups=off");
    Ok((command, init))
}

/// Everything a pipe yields until its end (nothing when there is no pipe).
async fn read_all<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut p) = pipe {
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut p, &mut buf).await;
    }
    buf
}
