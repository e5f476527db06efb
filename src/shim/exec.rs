//! `kboot exec`: a process inside a running container, set up as the container's own
//! process is (what `runc exec` does): its namespaces and cgroups, its user with the
//! supplementary groups, its capability sets, no-new-privileges and seccomp filter, its
//! working directory and environment.
//!
//! libcontainer's tenant builder is not used: it drops the container's seccomp filter and
//! runs as root whatever the container's user. This runs in the single-threaded `kboot exec`
//! process (setns into a mount namespace needs one thread): join the cgroups and the
//! namespaces, fork (the child is then inside the PID namespace), and in the child drop to
//! the container's identity and exec.

use std::convert::Infallible;
use std::ffi::CString;
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use libcontainer::syscall::linux::LinuxSyscall;
use libcontainer::syscall::Syscall;
use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use nix::unistd::{fork, ForkResult, Gid, Uid};
use oci_spec::runtime::{Process, Spec};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use super::{running, Result, ShimError};
use crate::inroot::{passwd, RootFs};
use crate::state::Paths;

/// Namespaces joined, the user namespace first (a pod's other namespaces are owned by it:
/// joining them needs its capabilities, and without it the command would run as the host's
/// root), the mount namespace last (the others are opened through its /proc).
const NAMESPACES: &[(&str, CloneFlags)] = &[
    ("user", CloneFlags::CLONE_NEWUSER),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Runs `args` in the running container `id` with the caller's stdio; returns the exit
/// code (128 + signal when killed; 126/127 when the command cannot be executed).
pub(super) fn exec_in_container(paths: &Paths, id: &str, args: Vec<String>) -> Result<i32> {
    let io = |step: &'static str| {
        let id = id.to_owned();
        move |source| ShimError::Io { id, step, source }
    };
    let not_running = || ShimError::NotRunning { id: id.to_owned() };
    let init = running(paths, id).and_then(|r| r.init_pid).ok_or_else(not_running)?;
    let config = paths.container(id).config_json();
    let spec = Spec::load(&config).map_err(|source| ShimError::ReadBundle {
        id: id.to_owned(),
        path: config.clone(),
        source,
    })?;
    join_cgroups(init);
    // Open every namespace first: after joining the mount namespace, /proc is the container's.
    let mut to_join = Vec::new();
    for (name, flag) in NAMESPACES {
        let theirs = PathBuf::from(format!("/proc/{init}/ns/{name}"));
        let ours = PathBuf::from(format!("/proc/self/ns/{name}"));
        let (Ok(a), Ok(b)) = (fs::metadata(&theirs), fs::metadata(&ours)) else {
            continue;
        };
        if a.ino() != b.ino() || a.dev() != b.dev() {
            to_join.push((
                File::open(&theirs).map_err(io("open the container's namespaces"))?,
                *flag,
            ));
        }
    }
    for (file, flag) in &to_join {
        setns(file, *flag).map_err(|source| ShimError::Sys {
            id: id.to_owned(),
            step: "join the container's namespaces",
            source,
        })?;
    }
    // Blocked before the fork so no SIGCHLD is lost; the child unblocks them before exec.
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        signals.add(s);
    }
    let _ = signals.thread_block();
    // SAFETY: `kboot exec` is single-threaded (no runtime was started), so the child may
    // run arbitrary code until it execs.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let _ = signals.thread_unblock();
            let err = become_container_process(&spec, &args);
            let code = if err.0 == Errno::ENOENT { 127 } else { 126 };
            let msg = format!("kboot exec: {}: {}\n", args[0], err.1);
            let _ = nix::unistd::write(std::io::stderr(), msg.as_bytes());
            // SAFETY: _exit ends the forked child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => Ok(wait_forwarding(child, &signals)),
        Err(source) => Err(ShimError::Sys {
            id: id.to_owned(),
            step: "fork the exec process",
            source,
        }),
    }
}

/// Waits for the command, passing termination signals on to it (a timed-out ExecSync is
/// ended with SIGTERM to `kboot exec`): it returns only once the command is reaped.
fn wait_forwarding(child: nix::unistd::Pid, signals: &SigSet) -> i32 {
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, c)) => return c,
            Ok(WaitStatus::Signaled(_, s, _)) => return 128 + s as i32,
            Err(Errno::EINTR) | Ok(_) => {}
            Err(_) => return 255,
        }
        match signals.wait() {
            Ok(Signal::SIGCHLD) | Err(_) => {}
            Ok(sig) => {
                let _ = nix::sys::signal::kill(child, sig);
            }
        }
    }
}

/// Moves this process into the cgroups of `pid` (best effort: the exec still runs when a
/// controller is missing, only its accounting differs).
fn join_cgroups(pid: i32) {
    let me = std::process::id().to_string();
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return;
    };
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        let dirs: Vec<PathBuf> = if ctrls.is_empty() {
            vec![
                Path::new("/sys/fs/cgroup/unified").join(rel),
                Path::new("/sys/fs/cgroup").join(rel),
            ]
        } else {
            let ctrl = ctrls.strip_prefix("name=").unwrap_or(ctrls);
            vec![Path::new("/sys/fs/cgroup").join(ctrl).join(rel)]
        };
        for dir in dirs {
            if fs::write(dir.join("cgroup.procs"), &me).is_ok() {
                break;
            }
        }
    }
}

/// In the forked child: become the container's process and exec. Returns only on failure.
fn become_container_process(spec: &Spec, args: &[String]) -> (Errno, String) {
    let process = spec.process().clone().unwrap_or_default();
    // Looked up while still root, in the container's mount namespace (so `/` is its root),
    // through the in-rootfs reader: the container may have made /etc/passwd a FIFO or a
    // link to /dev/zero since it started. As libcontainer does for init: the user's home
    // from the image, else `/` (also when the file is unreadable that way).
    let home = RootFs::open(Path::new("/"))
        .and_then(|r| passwd::home_of(&r, process.user().uid()))
        .ok()
        .flatten()
        .unwrap_or_else(|| "/".to_owned());
    match drop_to(spec, &process) {
        Err(e) => e,
        Ok(()) => match exec(&process, &home, args) {
            Err(e) => e,
            Ok(never) => match never {},
        },
    }
}

fn drop_to(spec: &Spec, process: &Process) -> std::result::Result<(), (Errno, String)> {
    let fail = |what: &str| {
        let what = what.to_owned();
        move |e: Errno| (e, format!("{what}: {e}"))
    };
    let sys = LinuxSyscall;
    let user = process.user();
    if nix::unistd::chdir(process.cwd()).is_err() {
        nix::unistd::chdir("/").map_err(fail("chdir"))?;
    }
    let groups: Vec<Gid> = user
        .additional_gids()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(Gid::from_raw)
        .collect();
    nix::unistd::setgroups(&groups).map_err(fail("set the supplementary groups"))?;
    sys.set_id(Uid::from_raw(user.uid()), Gid::from_raw(user.gid()))
        .map_err(|e| (Errno::EPERM, format!("set the user: {e}")))?;
    let nnp = process.no_new_privileges() == Some(true);
    if nnp {
        nix::sys::prctl::set_no_new_privs().map_err(fail("set no_new_privs"))?;
    }
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    let load = |sc: &oci_spec::runtime::LinuxSeccomp| {
        libcontainer::seccomp::initialize_seccomp(sc)
            .map(|_| ())
            .map_err(|e| (Errno::EPERM, format!("load the seccomp filter: {e}")))
    };
    // As the container's init: without NNP the filter needs CAP_SYS_ADMIN, so it goes on
    // before the capabilities are dropped; with NNP as late as possible.
    if let (Some(sc), false) = (&seccomp, nnp) {
        load(sc)?;
    }
    libcontainer::capabilities::reset_effective(&sys)
        .map_err(|e| (Errno::EPERM, format!("reset capabilities: {e}")))?;
    if let Some(caps) = process.capabilities() {
        libcontainer::capabilities::drop_privileges(caps, &sys)
            .map_err(|e| (Errno::EPERM, format!("drop capabilities: {e}")))?;
    }
    if let (Some(sc), true) = (&seccomp, nnp) {
        load(sc)?;
    }
    Ok(())
}

fn exec(process: &Process, home: &str, args: &[String]) -> std::result::Result<Infallible, (Errno, String)> {
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={home}"));
    }
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let program = if args[0].contains('/') {
        PathBuf::from(&args[0])
    } else {
        path_var
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(&args[0]))
            .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
            .ok_or((Errno::ENOENT, "executable file not found in $PATH".to_owned()))?
    };
    let cstr = |s: &str| CString::new(s).map_err(|_| (Errno::EINVAL, "argument contains a NUL byte".to_owned()));
    let argv = args
        .iter()
        .map(|a| cstr(a))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let envp = env
        .iter()
        .map(|e| cstr(e))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let prog = cstr(&program.to_string_lossy())?;
    nix::unistd::execve(&prog, &argv, &envp).map_err(|e| (e, e.desc().to_owned()))
}
