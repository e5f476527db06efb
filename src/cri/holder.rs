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

use std::io;

use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use serde::{Deserialize, Serialize};

use super::error::{CriError, Result};
use crate::base::proc;
use crate::state::Paths;

/// A running holder, as recorded in the sandbox state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PidHolder {
    pub pid: i32,
    pub start_ticks: u64,
}

impl PidHolder {
    pub fn alive(&self) -> bool {
        proc::stat(self.pid).is_some_and(|(ticks, state)| ticks == self.start_ticks && state != 'Z')
    }

    /// The namespace containers of the pod join.
    pub fn pid_namespace(&self) -> std::path::PathBuf {
        format!("/proc/{}/ns/pid", self.pid).into()
    }

    /// SIGKILL: the kernel then kills every process left in the namespace.
    pub fn stop(&self) {
        if self.alive() {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }
}

/// Starts a holder (`kboot cri pod-holder`) and returns it once its PID is known.
pub(crate) async fn start(paths: &Paths, sandbox: &str) -> Result<PidHolder> {
    let err = |step| {
        let id = sandbox.to_owned();
        move |source| CriError::Netns { id, step, source }
    };
    let out = tokio::process::Command::from(crate::shim::launch::Internal::PodHolder.command(paths))
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
    Ok(PidHolder { pid, start_ticks })
}

/// `kboot cri pod-holder` (single-threaded CLI process): returns the PID of the new
/// namespace's init in the parent; the child never returns.
pub fn spawn_in_new_pid_namespace() -> io::Result<i32> {
    // Own session: the holder outlives the server, as shims do.
    let _ = nix::unistd::setsid();
    unshare(CloneFlags::CLONE_NEWPID).map_err(io::Error::from)?;
    // SAFETY: the CLI process is single-threaded here; the child only makes syscalls.
    match unsafe { fork() }.map_err(io::Error::from)? {
        ForkResult::Parent { child } => Ok(child.as_raw()),
        ForkResult::Child => reap_forever(),
    }
}

fn reap_forever() -> ! {
    // The server reads the parent's stdout to its end: the child must not hold it open.
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this single-threaded process.
            unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) };
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
