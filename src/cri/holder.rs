//! The process holding a pod's shared PID namespace (`NamespaceOption.pid = POD`).
//!
//! Unlike a network or IPC namespace, a PID namespace cannot be pinned by a bind mount and
//! joined later: once its init exits no process can enter it, and the first process to join
//! an empty one would become its PID 1 (the pod's first container would then see itself as
//! PID 1 and take the pod down when it exits). So a pod sharing its PID namespace gets a
//! tiny holder instead of a pause container: `kboot cri pod-holder`, which starts in a new
//! session, unshares the PID namespace and forks; the child is the namespace's init (it only
//! reaps orphans), the parent prints the child's PID and exits. The server records that PID
//! with its start time (a recycled PID is not mistaken for it) and SIGKILLs it when the pod
//! stops, which ends every process left in the namespace.
//!
//! A pod with its own user namespace (`hostUsers: false`, see [`super::userns`]) always has
//! a holder, and it owns more: a child unshares the user namespace, the holder (still root
//! on the host) writes its uid and gid maps, then the child, now root inside, unshares the
//! PID, network and IPC namespaces and forks the init. Every namespace of the pod is then
//! owned by its user namespace, which its containers join from inside it.
//!
//! The init is PID 1 of a namespace the pod's containers share, so they can reach it
//! (`/proc/1/root`, `/proc/1/cwd`, ptrace where their capabilities allow): before it reaps,
//! it [confines](confine) itself to reach nothing they cannot. Before that, a container
//! given `CAP_SYS_PTRACE` read the host's `/etc/shadow` through `/proc/1/root`.

use std::io;

use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use serde::{Deserialize, Serialize};

use super::error::{CriError, Result};
use crate::base::proc;
use crate::bundle::userns::IdRange;
use crate::state::Paths;

/// A running holder, as recorded in the sandbox state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PidHolder {
    pub pid: i32,
    pub start_ticks: u64,
    /// Whether it owns the pod's user namespace (and with it the network and IPC ones).
    #[serde(default)]
    pub userns: bool,
}

impl PidHolder {
    pub fn alive(&self) -> bool {
        proc::stat(self.pid).is_some_and(|(ticks, state)| ticks == self.start_ticks && state != 'Z')
    }

    /// The namespace containers of the pod join.
    pub fn pid_namespace(&self) -> std::path::PathBuf {
        self.namespace("pid")
    }

    /// One of its namespaces (`user`, `net`, `ipc`, `pid`).
    pub fn namespace(&self, kind: &str) -> std::path::PathBuf {
        format!("/proc/{}/ns/{kind}", self.pid).into()
    }

    /// SIGKILL: the kernel then kills every process left in the namespace.
    pub fn stop(&self) {
        if self.alive() {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }
}

/// Starts a holder (`kboot cri pod-holder`) and returns it once its PID is known.
/// With `userns`, the holder owns a new user namespace with those ranges.
pub(crate) async fn start(paths: &Paths, sandbox: &str, userns: Option<&Ranges>) -> Result<PidHolder> {
    let err = |step| {
        let id = sandbox.to_owned();
        move |source| CriError::Netns { id, step, source }
    };
    let args = crate::shim::launch::PodHolderArgs {
        uid_map: userns.map(|r| r.0),
        gid_map: userns.map(|r| r.1),
    };
    let out = tokio::process::Command::from(crate::shim::launch::Internal::PodHolder(args).command(paths))
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .map_err(err("start the PID namespace holder"))?;
    let pid: i32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| err("read the PID namespace holder's pid")(io::Error::other("no pid printed")))?;
    let (start_ticks, _) =
        proc::stat(pid).ok_or_else(|| err("find the PID namespace holder")(io::ErrorKind::NotFound.into()))?;
    Ok(PidHolder {
        pid,
        start_ticks,
        userns: userns.is_some(),
    })
}

/// A pod's uid and gid ranges in its user namespace.
pub(crate) type Ranges = (IdRange, IdRange);

/// `kboot cri pod-holder` (single-threaded CLI process): returns the PID of the new
/// namespace's init in the parent; the child never returns. With `userns` (uid and gid
/// ranges) the namespaces are made inside a new user namespace.
pub fn spawn_in_new_pid_namespace(userns: Option<(IdRange, IdRange)>) -> io::Result<i32> {
    // Own session: the holder outlives the server, as shims do.
    let _ = nix::unistd::setsid();
    if let Some(ranges) = userns {
        return spawn_in_new_user_namespace(ranges);
    }
    unshare(CloneFlags::CLONE_NEWPID).map_err(io::Error::from)?;
    fork_init(Confine::HostUserNamespace).map(Pid::as_raw)
}

/// Where the init is confined from (see [`confine`]).
#[derive(Clone, Copy)]
enum Confine {
    /// A plain PID holder: root on the host, in the host's other namespaces.
    HostUserNamespace,
    /// The pod's user-namespace holder: its network and IPC namespaces are the pod's.
    PodUserNamespace,
}

/// Forks the namespace's init, which confines itself and then reaps forever; returns its
/// PID once it is confined, or the errno of the step that failed.
fn fork_init(how: Confine) -> io::Result<Pid> {
    use nix::unistd::{pipe, read, write};
    let (r, w) = pipe()?;
    // SAFETY: the CLI process is single-threaded here; the child only makes syscalls.
    match unsafe { fork() }.map_err(io::Error::from)? {
        ForkResult::Child => {
            drop(r);
            null_stdio();
            if let Err(e) = confine(how) {
                // SAFETY: leave the forked child without running the parent's destructors.
                unsafe { libc::_exit(e as i32) }
            }
            let _ = write(&w, b"c");
            drop(w);
            // Nothing inherited stays open (the user-namespace holder's pid pipe: its reader
            // waits for the end of it).
            // SAFETY: close_range on descriptors this process no longer uses.
            unsafe { libc::syscall(libc::SYS_close_range, 3, u32::MAX, 0) };
            reap_forever()
        }
        ForkResult::Parent { child } => {
            drop(w);
            if read(std::os::fd::AsRawFd::as_raw_fd(&r), &mut [0u8; 1])? == 1 {
                return Ok(child);
            }
            let errno = match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => code,
                _ => libc::EIO,
            };
            Err(io::Error::new(
                io::Error::from_raw_os_error(errno).kind(),
                format!(
                    "the namespace's init could not confine itself (private mount namespace, empty root, no capabilities): {}",
                    io::Error::from_raw_os_error(errno)
                ),
            ))
        }
    }
}

/// Leaves the init nothing of the host a pod's container could reach through it: a private
/// mount namespace whose root is an empty read-only tmpfs (over `/proc`, which every host
/// has, in that namespace only), no capabilities in any set, no new privileges. The plain
/// holder also leaves the host's network, IPC and UTS namespaces, and is made non-dumpable:
/// without capabilities it would otherwise be ptrace-able by any root container of the pod
/// (the kernel then checks only that the tracer's capabilities include the target's). The
/// user-namespace holder stays dumpable (its containers open its PID namespace from inside
/// the pod's user namespace, which a non-dumpable target refuses) and stays host uid 0, so
/// that only a container given CAP_SYS_PTRACE could trace it, into an empty root without
/// capabilities.
fn confine(how: Confine) -> nix::Result<()> {
    use nix::mount::{mount, MsFlags};
    let mut flags = CloneFlags::CLONE_NEWNS;
    if matches!(how, Confine::HostUserNamespace) {
        flags |= CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
    }
    unshare(flags)?;
    // Private first: the tmpfs must not propagate to the host's `/proc`.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    mount(
        Some("tmpfs"),
        "/proc",
        Some("tmpfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=4k,mode=0555"),
    )?;
    nix::unistd::chdir("/proc")?;
    nix::unistd::chroot(".")?;
    nix::unistd::chdir("/")?;
    if matches!(how, Confine::HostUserNamespace) {
        nix::sys::prctl::set_dumpable(false)?;
    }
    nix::sys::prctl::set_no_new_privs()?;
    let fail = |_| nix::errno::Errno::EPERM;
    caps::clear(None, caps::CapSet::Bounding).map_err(fail)?;
    caps::clear(None, caps::CapSet::Ambient).map_err(fail)?;
    for set in [
        caps::CapSet::Inheritable,
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(fail)?;
    }
    Ok(())
}

/// The user-namespace variant: see the module comment for the steps.
fn spawn_in_new_user_namespace((uids, gids): (IdRange, IdRange)) -> io::Result<i32> {
    use nix::unistd::{pipe, read, write};
    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let (pid_r, pid_w) = pipe()?;
    // SAFETY: the CLI process is single-threaded here; the child only makes syscalls.
    match unsafe { fork() }.map_err(io::Error::from)? {
        ForkResult::Child => {
            drop((ready_r, go_w, pid_r));
            let made = (|| -> nix::Result<()> {
                unshare(CloneFlags::CLONE_NEWUSER)?;
                write(&ready_w, b"u")?;
                // The parent writes the maps, then says go (or closes the pipe on failure).
                if read(std::os::fd::AsRawFd::as_raw_fd(&go_r), &mut [0u8; 1])? != 1 {
                    return Err(nix::errno::Errno::EPERM);
                }
                unshare(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC)?;
                let child = fork_init(Confine::PodUserNamespace).map_err(|e| {
                    e.raw_os_error()
                        .map_or(nix::errno::Errno::EIO, nix::errno::Errno::from_raw)
                })?;
                write(&pid_w, child.as_raw().to_string().as_bytes()).map(drop)
            })();
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(i32::from(made.is_err())) }
        }
        ForkResult::Parent { child } => {
            drop((ready_w, go_r, pid_w));
            let mut b = [0u8; 1];
            if read(std::os::fd::AsRawFd::as_raw_fd(&ready_r), &mut b)? != 1 {
                let _ = waitpid(child, None);
                return Err(io::Error::other("the child could not unshare a user namespace"));
            }
            let proc = format!("/proc/{child}");
            let mapped = std::fs::write(format!("{proc}/uid_map"), uids.map_line())
                .and_then(|()| std::fs::write(format!("{proc}/gid_map"), gids.map_line()));
            if let Err(e) = mapped {
                drop(go_w);
                let _ = waitpid(child, None);
                return Err(io::Error::new(
                    e.kind(),
                    format!("write the user namespace's id maps: {e}"),
                ));
            }
            write(&go_w, b"g")?;
            let mut out = Vec::new();
            let mut buf = [0u8; 32];
            loop {
                match read(std::os::fd::AsRawFd::as_raw_fd(&pid_r), &mut buf)? {
                    0 => break,
                    n => out.extend_from_slice(&buf[..n]),
                }
            }
            let _ = waitpid(child, None);
            String::from_utf8_lossy(&out)
                .parse()
                .map_err(|_| io::Error::other("the namespaces could not be made inside the user namespace"))
        }
    }
}

/// The server reads the holder's stdout to its end: the init must not hold it open.
fn null_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..3 {
            let _ = nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd);
        }
    }
}

fn reap_forever() -> ! {
    // SIGCHLD blocked, so it stays pending until waited for: no wakeup is lost.
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    let _ = set.thread_block();
    loop {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = set.wait();
    }
}
