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
    // SAFETY: the CLI process is single-threaded here; the child only makes syscalls.
    match unsafe { fork() }.map_err(io::Error::from)? {
        ForkResult::Parent { child } => Ok(child.as_raw()),
        ForkResult::Child => reap_forever(),
    }
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
                // SAFETY: single-threaded, as above.
                match unsafe { fork() }? {
                    ForkResult::Child => {
                        drop(pid_w);
                        reap_forever()
                    }
                    ForkResult::Parent { child } => write(&pid_w, child.as_raw().to_string().as_bytes()).map(drop),
                }
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

fn reap_forever() -> ! {
    // The server reads the parent's stdout to its end: the child must not hold it open.
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..3 {
            let _ = nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd);
        }
    }
    let _ = std::env::set_current_dir("/");
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
