//! `kboot shim`: one single-threaded process per container, the only caller of
//! libcontainer.
//!
//! It runs in its own session (containers outlive the supervisor), is the
//! subreaper and direct parent of the container's init, turns the container's
//! stdout/stderr pipes into tagged log lines, forwards termination signals,
//! and records how the container ended before deleting it. Everything happens
//! in one `poll` loop over the two pipes and a signalfd: no threads, no tokio
//! (libcontainer clones with raw `clone3` and runs Rust in the child).

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, Pid};
use oci_spec::runtime::Spec;

use crate::state::Paths;

pub mod attach;
mod exec;
pub mod launch;
pub mod log;
mod oom;
mod pages;
pub mod record;

use crate::base::record::{now_ms, RecordError};
use attach::{Attach, StdioMode};
use log::{LogWriter, Stream};
use record::{ExitRecord, ShimRecord};

/// Test-only: when set to `1`, the shim runs the bundle's `process.args` as a
/// plain host process (no namespaces, no cgroups, no libcontainer), so the
/// supervisor, logs and restart policies can be tested without root. Compiled only
/// with the `test-plain-process` feature, which only `cargo test` turns on: a shipped
/// binary has no switch that runs an image's process outside its container.
#[cfg(feature = "test-plain-process")]
pub const TEST_ONLY_PLAIN_PROCESS_ENV: &str = "KBOOT_TEST_ONLY_PLAIN_PROCESS";

/// Whether the test-only plain-process mode is on.
#[cfg(feature = "test-plain-process")]
fn plain_process() -> bool {
    std::env::var(TEST_ONLY_PLAIN_PROCESS_ENV).as_deref() == Ok("1")
}

/// Never, without the feature.
#[cfg(not(feature = "test-plain-process"))]
fn plain_process() -> bool {
    false
}

/// Signals the shim passes on to the container's init.
const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Tells a shim to reopen its log path (the kubelet renamed the file to rotate it and
/// then calls `ReopenContainerLog`). SIGWINCH because nothing else sends it to a shim
/// (it has no terminal), it is not forwarded to the container, and its default action is
/// to be ignored: a shim that does not know it survives it.
pub const REOPEN_LOG_SIGNAL: Signal = Signal::SIGWINCH;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("container `{id}`: read bundle {}", path.display())]
    ReadBundle {
        id: String,
        path: PathBuf,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("container `{id}`: {step}")]
    Sys {
        id: String,
        step: &'static str,
        #[source]
        source: Errno,
    },
    #[error("container `{id}`: {step}")]
    Io {
        id: String,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("container `{id}`: {step}")]
    Libcontainer {
        id: String,
        step: &'static str,
        #[source]
        source: Box<libcontainer::error::LibcontainerError>,
    },
    #[error(transparent)]
    Volume(#[from] crate::bundle::BundleError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("container `{id}` is not running (no shim record); start it with `kboot start {id}`")]
    NotRunning { id: String },
}

type Result<T> = std::result::Result<T, ShimError>;

/// What one shim runs.
#[derive(Debug, Clone)]
pub struct ShimConfig {
    pub id: String,
    pub bundle: PathBuf,
    pub paths: Paths,
    /// 0: never rotate (CRI containers: the kubelet rotates and asks for a reopen).
    pub log_max_bytes: u64,
    /// Where the CRI-format log goes; `None`: `container.log` in the container directory.
    pub log_path: Option<PathBuf>,
    /// Serve the attach socket (`Paths::attach_socket`), with the container's stdin as
    /// given; `None`: no socket, stdin is `/dev/null` (`kboot run` services).
    pub attach: Option<StdioMode>,
    /// The launcher passed a start notice pipe (`--notify-start`, `record::StartNotifier`).
    pub notify_start: bool,
}

impl ShimConfig {
    /// What `kboot shim ARGS` runs, on `paths`.
    pub fn from_args(args: launch::ShimArgs, paths: Paths) -> Self {
        Self {
            id: args.id,
            bundle: args.bundle,
            paths,
            log_max_bytes: args.log_max_bytes,
            log_path: args.log_path,
            attach: args.attach.then_some(StdioMode {
                open: args.stdin,
                once: args.stdin_once,
                tty: args.tty,
            }),
            notify_start: args.notify_start,
        }
    }

    /// The file the shim writes the container's output to.
    pub fn log_file(&self) -> PathBuf {
        self.log_path
            .clone()
            .unwrap_or_else(|| self.paths.container(&self.id).log())
    }
}

/// Runs the container to completion and returns how it ended. The exit is
/// recorded on disk before returning, failures to start included. Records are
/// renamed into place but not fsynced: a flush costs 10–15 ms per container on
/// a busy disk (measured, bench/README.md), and a record lost to a power cut
/// only means the container is started again, as a reboot does anyway.
pub fn run(cfg: &ShimConfig) -> Result<ExitRecord> {
    let mut notice = record::StartNotifier::inherited(cfg.notify_start);
    let mut rec = become_the_containers_parent(cfg)?;
    let sfd = block_signals(cfg)?;
    let mut logw = LogWriter::open(&cfg.log_file(), cfg.log_max_bytes).map_err(|source| ShimError::Io {
        id: cfg.id.clone(),
        step: "open the log file",
        source,
    })?;
    let (stdio, err_r, mut attach) = open_stdio(cfg)?;
    let Stdio {
        stdin,
        out_r,
        out_w,
        err_w,
    } = stdio;
    let tty = cfg.attach.is_some_and(|m| m.tty);

    let started = if plain_process() {
        start_plain(cfg, tty, stdin, out_w, err_w)
    } else {
        start_container(cfg, tty, stdin, out_w, err_w)
    };
    let (pid, container, spec) = match started {
        Ok(s) => s,
        Err(err) => {
            let err = record_start_failure(cfg, &mut logw, err);
            notice.notify();
            return Err(err);
        }
    };
    rec.init_pid = Some(pid.as_raw());
    rec.started_at_ms = Some(now_ms());
    record::write_running(&cfg.paths, &cfg.id, &rec)?;
    notice.notify();
    tracing::info!(container = %cfg.id, pid = pid.as_raw(), "container started");
    // What ran so far (libcontainer, serde, the CLI) is not needed again until the
    // container exits: give its pages back to the page cache (shim RSS, pages.rs).
    let dropped = pages::drop_clean_file_pages();
    pages::trim_heap();
    tracing::debug!(container = %cfg.id, kib = dropped / 1024, "dropped start-up mappings");

    let cgroup_dir = spec
        .as_ref()
        .and_then(cgroups_path_of)
        .and_then(|p| crate::cgroups::driver::fs_path(&p).ok());
    let mut oom = oom::OomWatch::new(cgroup_dir.as_deref());
    let status = supervise(pid, &sfd, &out_r, &err_r, &mut logw, &mut attach, &mut oom);
    drain(&out_r, Stream::Stdout, &mut logw, &mut attach);
    drain(&err_r, Stream::Stderr, &mut logw, &mut attach);
    let _ = logw.flush_partial();
    // Attached clients see end of file only once the last output went out.
    drop(attach);
    let sigkill = matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _));
    record_exit(cfg, &rec, status, container, oom.oom_killed(sigkill))
}

/// The shim's own session (a SIGKILL'd or restarted supervisor, or its terminal, takes
/// no container with it), the subreaper role, and the first shim record (no init yet).
fn become_the_containers_parent(cfg: &ShimConfig) -> Result<ShimRecord> {
    // EPERM means we already lead a session (started by hand with setsid).
    let _ = nix::unistd::setsid();
    nix::sys::prctl::set_child_subreaper(true).map_err(sys_error(&cfg.id, "become the container's subreaper"))?;
    let (start_ticks, _) = crate::base::proc::stat(std::process::id() as i32).unwrap_or((0, 'R'));
    let rec = ShimRecord {
        shim_pid: std::process::id() as i32,
        shim_start_ticks: start_ticks,
        init_pid: None,
        started_at_ms: None,
    };
    record::write_running(&cfg.paths, &cfg.id, &rec)?;
    Ok(rec)
}

/// The signals the shim handles, blocked and read from a signalfd. Blocked before the
/// container exists so no signal is lost in between; the container's init unblocks them
/// before exec (UnblockingExecutor).
fn block_signals(cfg: &ShimConfig) -> Result<SignalFd> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.add(REOPEN_LOG_SIGNAL);
    for s in FORWARDED {
        mask.add(*s);
    }
    mask.thread_block().map_err(sys_error(&cfg.id, "block signals"))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(sys_error(&cfg.id, "create signalfd"))
}

/// The container's stdio pipes, the stderr pipe's read end, and the attach socket when
/// the config asks for one.
fn open_stdio(cfg: &ShimConfig) -> Result<(Stdio, OwnedFd, Option<Attach>)> {
    let (out_r, out_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_error(&cfg.id, "create the stdout pipe"))?;
    let (err_r, err_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_error(&cfg.id, "create the stderr pipe"))?;
    let mut stdio = Stdio {
        stdin: None,
        out_r,
        out_w,
        err_w,
    };
    let attach = match cfg.attach {
        Some(mode) => open_attach(cfg, mode, &mut stdio)?,
        None => None,
    };
    Ok((stdio, err_r, attach))
}

/// A container that did not start: the error goes to its log (`kboot logs` is where users
/// look) and into its exit record (code 127), and the shim record goes.
fn record_start_failure(cfg: &ShimConfig, logw: &mut LogWriter, err: ShimError) -> ShimError {
    let message = crate::base::error::chain(&err);
    let _ = logw.write(Stream::Stderr, format!("kboot: {message}\n").as_bytes());
    let exit = ExitRecord {
        exit_code: 127,
        error: Some(message),
        finished_at_ms: now_ms(),
        ..Default::default()
    };
    if let Err(e) = record::write_exit(&cfg.paths, &cfg.id, &exit) {
        return e.into();
    }
    record::clear_running(&cfg.paths, &cfg.id);
    err
}

/// How the container ended (code, signal, OOM kill) into its exit record; the stopped
/// container is deleted and the shim record goes.
fn record_exit(
    cfg: &ShimConfig,
    rec: &ShimRecord,
    status: WaitStatus,
    container: Option<Container>,
    oom_killed: bool,
) -> Result<ExitRecord> {
    let mut exit = ExitRecord {
        started_at_ms: rec.started_at_ms,
        finished_at_ms: now_ms(),
        ..Default::default()
    };
    match status {
        WaitStatus::Exited(_, code) => exit.exit_code = code,
        WaitStatus::Signaled(_, sig, _) => {
            exit.exit_code = 128 + sig as i32;
            exit.signal = Some(sig.as_str().to_owned());
        }
        _ => {}
    }
    exit.oom_killed = oom_killed;
    if let Some(mut c) = container {
        if let Err(err) = c.delete(true) {
            tracing::warn!(container = %cfg.id, %err, "delete the stopped container");
        }
    }
    record::write_exit(&cfg.paths, &cfg.id, &exit)?;
    record::clear_running(&cfg.paths, &cfg.id);
    tracing::info!(container = %cfg.id, code = exit.exit_code, "container exited");
    Ok(exit)
}

/// Maps a failed system call of `step` for container `id`.
fn sys_error(id: &str, step: &'static str) -> impl FnOnce(Errno) -> ShimError {
    let id = id.to_owned();
    move |source| ShimError::Sys { id, step, source }
}

/// The container's stdio: what it gets (`stdin`, `None` for `/dev/null`; `out_w`, `err_w`)
/// and where the shim reads its output (`out_r`; stderr's pipe is read separately).
struct Stdio {
    stdin: Option<OwnedFd>,
    out_r: OwnedFd,
    out_w: OwnedFd,
    err_w: OwnedFd,
}

/// Sets up the container's stdin (a pipe, or with a TTY a pseudo-terminal for all three,
/// whose master replaces the stdout pipe) and binds the attach socket. A socket that cannot
/// be bound costs attaching, not the container: it still starts.
fn open_attach(cfg: &ShimConfig, mode: StdioMode, stdio: &mut Stdio) -> Result<Option<Attach>> {
    let sys = |step: &'static str| sys_error(&cfg.id, step);
    let dup = |fd: &OwnedFd| {
        fd.try_clone().map_err(|source| ShimError::Io {
            id: cfg.id.clone(),
            step: "duplicate the terminal",
            source,
        })
    };
    let input = if mode.tty {
        let pty = nix::pty::openpty(None, None).map_err(sys("allocate a terminal"))?;
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .map_err(sys("allocate a terminal"))?;
        }
        stdio.stdin = Some(dup(&pty.slave)?);
        stdio.out_w = dup(&pty.slave)?;
        // The stderr pipe's write end goes unused: its reader sees end of file at once.
        stdio.err_w = pty.slave;
        stdio.out_r = dup(&pty.master)?;
        Some(pty.master).filter(|_| mode.open)
    } else if mode.open {
        let (r, w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("create the stdin pipe"))?;
        stdio.stdin = Some(r);
        Some(w)
    } else {
        None
    };
    let path = cfg.paths.attach_socket(&cfg.id);
    match Attach::bind(&path, input, mode) {
        Ok(a) => Ok(Some(a)),
        Err(err) => {
            tracing::warn!(container = %cfg.id, path = %path.display(), %err, "bind the attach socket; attaching will fail");
            Ok(None)
        }
    }
}

type Started = (Pid, Option<Container>, Option<Spec>);

fn load_spec(cfg: &ShimConfig) -> Result<Spec> {
    let config = crate::state::config_json(&cfg.bundle);
    Spec::load(&config).map_err(|source| ShimError::ReadBundle {
        id: cfg.id.clone(),
        path: config,
        source,
    })
}

/// Maps a libcontainer failure of `step` for container `id`.
fn lc_error(id: &str, step: &'static str) -> impl FnOnce(libcontainer::error::LibcontainerError) -> ShimError {
    let id = id.to_owned();
    move |source| ShimError::Libcontainer {
        id,
        step,
        source: Box::new(source),
    }
}

fn start_container(
    cfg: &ShimConfig,
    tty: bool,
    stdin: Option<OwnedFd>,
    out_w: OwnedFd,
    err_w: OwnedFd,
) -> Result<Started> {
    let id = cfg.id.clone();
    let lc = |step| lc_error(&id, step);
    let spec = load_spec(cfg)?;
    crate::bundle::prepare_volumes(&spec)?;
    let root = cfg.paths.runtime_root();
    fs::create_dir_all(&root).map_err(|source| ShimError::Io {
        id: id.clone(),
        step: "create the runtime state directory",
        source,
    })?;
    // A shim killed mid-run leaves libcontainer state (and cgroups) behind: clear it
    // so the next start converges instead of failing with "already exists".
    if root.join(&id).exists() {
        if let Ok(mut stale) = Container::load(root.join(&id)) {
            let _ = stale.delete(true);
        }
        let _ = fs::remove_dir_all(root.join(&id));
    }
    let stdin = match stdin {
        Some(fd) => fd,
        None => File::open("/dev/null")
            .map_err(|source| ShimError::Io {
                id: id.clone(),
                step: "open /dev/null for stdin",
                source,
            })?
            .into(),
    };
    let mut container = ContainerBuilder::new(id.clone(), SyscallType::default())
        .with_root_path(&root)
        .map_err(lc("use the runtime state directory"))?
        .with_stdin(stdin)
        .with_stdout(out_w)
        .with_stderr(err_w)
        .with_executor(UnblockingExecutor { tty })
        .as_init(&cfg.bundle)
        // A `slice:prefix:name` cgroupsPath (the systemd driver, src/cgroups/driver.rs) is a
        // scope systemd creates over D-Bus; an absolute one is made on cgroupfs.
        .with_systemd(cgroups_path_of(&spec).is_some_and(|p| crate::cgroups::driver::is_systemd_path(&p)))
        .with_detach(false)
        .build()
        .map_err(lc("create the container"))?;
    if let Err(e) = systemd_scope_devices(&spec) {
        let _ = container.delete(true);
        return Err(ShimError::Io {
            id: id.clone(),
            step: "load the device rules into the container's systemd scope",
            source: std::io::Error::other(e),
        });
    }
    if let Err(source) = container.start() {
        let _ = container.delete(true);
        return Err(lc("start the container")(source));
    }
    let pid = container.pid().ok_or_else(|| ShimError::Io {
        id: id.clone(),
        step: "read the container's pid",
        source: std::io::Error::other("libcontainer reported no pid"),
    })?;
    Ok((pid, Some(container), Some(spec)))
}

#[cfg(not(feature = "test-plain-process"))]
fn start_plain(_: &ShimConfig, _: bool, _: Option<OwnedFd>, _: OwnedFd, _: OwnedFd) -> Result<Started> {
    unreachable!("plain_process() is false without the test-plain-process feature")
}

#[cfg(feature = "test-plain-process")]
fn start_plain(cfg: &ShimConfig, tty: bool, stdin: Option<OwnedFd>, out_w: OwnedFd, err_w: OwnedFd) -> Result<Started> {
    use std::os::unix::process::CommandExt;
    let id = cfg.id.clone();
    let spec = load_spec(cfg)?;
    let process = spec.process().clone().unwrap_or_default();
    let args = process.args().clone().unwrap_or_default();
    let env: HashMap<String, String> = process
        .env()
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let (k, v) = e.split_once('=').unwrap_or((e, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let mut cmd = std::process::Command::new(args.first().cloned().unwrap_or_default());
    cmd.args(args.iter().skip(1))
        .env_clear()
        .envs(env)
        .stdin(stdin.map_or_else(std::process::Stdio::null, std::process::Stdio::from))
        .stdout(std::process::Stdio::from(out_w))
        .stderr(std::process::Stdio::from(err_w));
    // SAFETY: the closure only calls sigprocmask, setsid and ioctl, which are
    // async-signal-safe and allocate nothing.
    unsafe {
        cmd.pre_exec(move || {
            SigSet::all().thread_unblock().map_err(std::io::Error::from)?;
            if tty {
                libc::setsid();
                take_terminal();
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| ShimError::Io {
        id,
        step: "start the test-only plain process",
        source,
    })?;
    let pid = Pid::from_raw(child.id() as i32);
    // Reaped by `supervise` through waitpid(-1); the handle is not needed.
    drop(child);
    Ok((pid, None, None))
}

/// Wraps libcontainer's default executor: the shim blocks signals for its
/// signalfd, and a blocked mask survives exec, so init unblocks them first.
/// With a TTY, init (a session leader: libcontainer calls setsid) also makes the terminal
/// on its stdin its controlling one, so ^C and job control reach it.
#[derive(Clone)]
struct UnblockingExecutor {
    tty: bool,
}

/// Makes the terminal on fd 0 the caller's controlling terminal; a failure leaves the
/// terminal usable as plain stdio, so it is ignored.
fn take_terminal() {
    // SAFETY: TIOCSCTTY takes an integer argument and touches no memory.
    unsafe {
        libc::ioctl(0, libc::TIOCSCTTY, 0);
    }
}

impl Executor for UnblockingExecutor {
    fn exec(&self, spec: &Spec) -> std::result::Result<(), ExecutorError> {
        SigSet::all()
            .thread_unblock()
            .map_err(|e| ExecutorError::Other(format!("unblock signals: {e}")))?;
        if self.tty {
            take_terminal();
        }
        DefaultExecutor {}.exec(spec)
    }
    fn validate(&self, spec: &Spec) -> std::result::Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
    fn setup_envs(&self, envs: HashMap<String, String>) -> std::result::Result<(), ExecutorSetEnvsError> {
        DefaultExecutor {}.setup_envs(envs)
    }
}

/// Pumps output into the log and forwards signals until init exits.
fn supervise(
    pid: Pid,
    sfd: &SignalFd,
    out_r: &OwnedFd,
    err_r: &OwnedFd,
    logw: &mut LogWriter,
    attach: &mut Option<Attach>,
    oom: &mut oom::OomWatch,
) -> WaitStatus {
    let mut open = [true, true];
    loop {
        // Count an OOM kill before reaping its victim (oom.rs: the cgroup may go with it).
        oom.update();
        // Reap first: SIGCHLD may have arrived before the signalfd existed.
        if let Some(status) = reap(pid) {
            return status;
        }
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let streams: Vec<(usize, &OwnedFd)> = [(0, out_r), (1, err_r)].into_iter().filter(|(i, _)| open[*i]).collect();
        for (_, fd) in &streams {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
        }
        let attach_fds = attach.as_ref().map(Attach::poll_fds).unwrap_or_default();
        let slots: Vec<attach::Slot> = attach_fds.iter().map(|(s, _)| *s).collect();
        fds.extend(attach_fds.into_iter().map(|(_, fd)| fd));
        // Last, so the indexes above stay as they are; its readiness is read by `update`.
        if let Some(fd) = oom.fd() {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(err) => {
                tracing::error!(%err, "poll failed; waiting for the container without logging");
                return wait_blocking(pid);
            }
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        let ready_slots: Vec<attach::Slot> = slots
            .iter()
            .zip(&ready[1 + streams.len()..])
            .filter(|(_, r)| **r)
            .map(|(s, _)| *s)
            .collect();
        if let Some(a) = attach.as_mut() {
            a.ready(&ready_slots);
        }
        for (n, (i, fd)) in streams.iter().enumerate() {
            if ready[n + 1] {
                let stream = if *i == 0 { Stream::Stdout } else { Stream::Stderr };
                if !pump(fd, stream, logw, attach) {
                    open[*i] = false;
                }
            }
        }
        if ready[0] {
            while let Ok(Some(info)) = sfd.read_signal() {
                let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                    continue;
                };
                if sig == REOPEN_LOG_SIGNAL {
                    if let Err(err) = logw.reopen() {
                        tracing::warn!(%err, "reopen the log file; still writing the old one");
                    }
                } else if sig != Signal::SIGCHLD {
                    let _ = kill(pid, sig);
                }
            }
        }
    }
}

/// Reaps every exited child (orphans re-parented to us included); returns
/// init's status once it is among them.
fn reap(pid: Pid) -> Option<WaitStatus> {
    let mut init = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return init,
            Ok(s) => {
                if s.pid() == Some(pid) && matches!(s, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
                    init = Some(s);
                }
            }
        }
    }
}

fn wait_blocking(pid: Pid) -> WaitStatus {
    loop {
        match waitpid(pid, None) {
            Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return s,
            Err(Errno::EINTR) | Ok(_) => {}
            Err(_) => return WaitStatus::Exited(pid, 255),
        }
    }
}

/// Reads what is available; false at end of file.
fn pump(fd: &OwnedFd, stream: Stream, logw: &mut LogWriter, attach: &mut Option<Attach>) -> bool {
    let mut buf = [0u8; 8192];
    match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
        Ok(0) => false,
        Ok(n) => {
            let _ = logw.write(stream, &buf[..n]);
            if let Some(a) = attach.as_mut() {
                a.broadcast(stream, &buf[..n]);
            }
            true
        }
        Err(Errno::EINTR | Errno::EAGAIN) => true,
        Err(_) => false,
    }
}

/// After init exited: take what is still buffered, without waiting for
/// processes that escaped (a daemon in the host PID namespace may hold the pipe).
fn drain(fd: &OwnedFd, stream: Stream, logw: &mut LogWriter, attach: &mut Option<Attach>) {
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(n) if n > 0 => {
                if !pump(fd, stream, logw, attach) {
                    return;
                }
            }
            _ => return,
        }
    }
}

/// The spec's device rules on a systemd-managed cgroup, before the container's process runs.
/// libcgroups 0.7's systemd manager sets cpu, memory, pids and io through systemd but no
/// device rules (it has no DeviceAllow= and skips its own eBPF program), so without this an
/// unprivileged container could open any device node it makes (a host disk, with CAP_MKNOD).
/// runc's systemd driver does the same: unit properties, then the cgroupfs manager's rules.
/// On cgroupfs paths libcontainer's v2 manager loads the program itself.
fn systemd_scope_devices(spec: &Spec) -> std::result::Result<(), String> {
    let Some(path) = cgroups_path_of(spec).filter(|p| crate::cgroups::driver::is_systemd_path(p)) else {
        return Ok(());
    };
    let dir = crate::cgroups::driver::fs_path(&path).map_err(|e| e.to_string())?;
    let rules = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().clone());
    let full = Path::new(crate::cgroups::ROOT).join(dir.trim_start_matches('/'));
    libcgroups::v2::devices::Devices::apply_devices(&full, &rules).map_err(|e| format!("{}: {e}", full.display()))
}

fn cgroups_path_of(spec: &Spec) -> Option<String> {
    let p = spec.linux().as_ref()?.cgroups_path().clone()?;
    Some(p.to_string_lossy().into_owned())
}

/// `kboot exec`: runs `args` inside the running container `id` (its namespaces,
/// cgroups and security settings, see [`exec`]) with the caller's stdio, and returns
/// its exit code. Called from a single-threaded CLI process, like the shim.
pub fn exec(paths: &Paths, id: &str, args: Vec<String>) -> Result<i32> {
    #[cfg(feature = "test-plain-process")]
    if plain_process() {
        // Test-only: the "container" is a host process, so is the exec.
        let status = std::process::Command::new(&args[0])
            .args(&args[1..])
            .status()
            .map_err(|source| ShimError::Io {
                id: id.to_owned(),
                step: "run the test-only plain exec",
                source,
            })?;
        return Ok(status.code().unwrap_or(255));
    }
    if args.is_empty() {
        return Err(ShimError::Io {
            id: id.to_owned(),
            step: "exec: no command given",
            source: std::io::ErrorKind::InvalidInput.into(),
        });
    }
    exec::exec_in_container(paths, id, args)
}

pub use record::running;
