//! The protocol between a shim and those who start it (the supervisor, the CRI, `ps`):
//! what a shim leaves on disk, a runtime record while it runs
//! (`paths.shims()/<id>.json`, gone on reboot) and the last exit
//! (`paths.container(id)/exit.json`, kept). The shim is the one writer
//! ([`write_running`], [`write_exit`], [`clear_running`]); everyone else reads
//! through [`read_exit`] and [`running`]. The request side is `super::launch`.
//!
//! A launcher that waits for the start (the CRI's StartContainer) is told when to read:
//! the shim writes one byte on the start notice pipe ([`StartNotifier::notify`]) once its
//! records say how the start went, and the launcher waits on the read end
//! ([`StartNotice::wait`]) instead of polling the records.
//!
//! Records are renamed into place but not fsynced: a flush costs 10–15 ms per
//! container on a busy disk (measured, bench/README.md), and a record lost to a
//! power cut only means the container is started again, as a reboot does anyway.

use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::base::proc;
use crate::base::record::{read_json, write_json, Durability, RecordError};
use crate::state::Paths;

/// The shim's record while it runs (written at start and once init runs).
pub fn write_running(paths: &Paths, id: &str, rec: &ShimRecord) -> Result<(), RecordError> {
    write_json(&paths.shim_record(id), rec, Durability::Volatile)
}

/// How the run ended (written before the running record goes).
pub fn write_exit(paths: &Paths, id: &str, exit: &ExitRecord) -> Result<(), RecordError> {
    write_json(&paths.container(id).exit(), exit, Durability::Volatile)
}

/// The running record goes when the shim ends (or is cleaned up after one killed).
pub fn clear_running(paths: &Paths, id: &str) {
    let _ = std::fs::remove_file(paths.shim_record(id));
}

/// The last exit of container `id`, if it ran.
pub fn read_exit(paths: &Paths, id: &str) -> Option<ExitRecord> {
    read_json(&paths.container(id).exit())
}

/// The shim's record as written, alive or not (see [`ShimRecord::is_alive`]).
pub fn read_running(paths: &Paths, id: &str) -> Option<ShimRecord> {
    read_json(&paths.shim_record(id))
}

/// The record of the shim of `id`, if that shim is alive.
pub fn running(paths: &Paths, id: &str) -> Option<ShimRecord> {
    read_running(paths, id).filter(|r| r.is_alive())
}

/// Where a shim started with `--notify-start` finds the write end of its start notice:
/// the first descriptor after stdio.
pub const START_NOTICE_FD: std::os::fd::RawFd = 3;

/// The shim's end of the start notice: the pipe the launcher put at [`START_NOTICE_FD`]
/// (`--notify-start`).
#[derive(Debug)]
pub struct StartNotifier(Option<File>);

impl StartNotifier {
    /// The notice pipe, when the launcher passed one (`enabled`), made close-on-exec so
    /// the container does not inherit it. Taken once, at the start of `super::run`.
    pub fn inherited(enabled: bool) -> Self {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        let fd = START_NOTICE_FD;
        // A descriptor that is not open (a shim started by hand with the flag) is no notice.
        if !enabled || fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).is_err() {
            return Self(None);
        }
        // SAFETY: the launcher put the pipe's write end at this descriptor
        // (`Internal::shim_with_start_notice`); nothing else in this process opened or owns
        // it, and `enabled` comes from the one `--notify-start` flag, taken here once.
        Self(Some(unsafe { File::from_raw_fd(fd) }))
    }

    /// The records now say how the start went (init runs, or a failed start's exit
    /// record is written): one byte to the launcher, then the pipe is closed.
    pub fn notify(&mut self) {
        if let Some(mut pipe) = self.0.take() {
            let _ = pipe.write_all(b"s");
        }
    }
}

/// The launcher's end of the start notice: the read end of the pipe
/// ([`super::launch::Internal::shim_with_start_notice`]).
#[derive(Debug)]
pub struct StartNotice(OwnedFd);

impl StartNotice {
    pub(super) fn new(read: OwnedFd) -> Self {
        Self(read)
    }

    /// Waits until the shim notifies (true) or the pipe closes without a notice (false:
    /// the shim ended first). Either way the records are what to read next.
    pub async fn wait(self) -> std::io::Result<bool> {
        let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(self.0)?;
        let mut byte = [0u8; 1];
        Ok(pipe.read(&mut byte).await? == 1)
    }
}

/// A running shim: enough to signal it and its container, and to tell it from
/// an unrelated process that reused its pid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimRecord {
    pub shim_pid: i32,
    /// Start time of the shim in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub shim_start_ticks: u64,
    /// The container's init process, once created.
    pub init_pid: Option<i32>,
    /// Unix milliseconds when the container started.
    pub started_at_ms: Option<u64>,
}

/// How the last run of a container ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit code, or 128 + signal number when killed by a signal.
    pub exit_code: i32,
    /// Signal name (`SIGKILL`) when killed by a signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// The kernel's OOM killer killed a process in the container's cgroup.
    #[serde(default)]
    pub oom_killed: bool,
    /// The container could not be created or started (it never ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: u64,
}

impl ShimRecord {
    /// True when the recorded shim is still this very process (not a reused
    /// pid) and has not exited.
    pub fn is_alive(&self) -> bool {
        matches!(proc::stat(self.shim_pid), Some((start, state)) if start == self.shim_start_ticks && state != 'Z' && state != 'X')
    }

    /// Resolves when the shim has ended: its pidfd turns readable, so whoever waits (the
    /// CRI's exit watcher, the supervisor for a shim it adopted) reads no file meanwhile.
    /// Polled every second where the kernel has no pidfd (Linux < 5.3).
    pub async fn ended(&self) {
        let Some(pid) = rustix::process::Pid::from_raw(self.shim_pid) else {
            return;
        };
        match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
            // The pidfd pins the process it names: if that is still our shim (start time),
            // its end makes the descriptor readable. Anything else means the shim already ended.
            Ok(fd) if self.is_alive() => {
                // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and names
                // the same pidfd for the AsyncFd's whole life (tokio's condition).
                match unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) } {
                    Ok(fd) => {
                        let _ = fd.readable().await;
                    }
                    Err(_) => self.poll_until_dead().await,
                }
            }
            Ok(_) | Err(rustix::io::Errno::SRCH) => {}
            Err(_) => self.poll_until_dead().await,
        }
    }

    async fn poll_until_dead(&self) {
        while self.is_alive() {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::record::{read_json, write_json, Durability};

    #[test]
    fn exit_record_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x/exit.json");
        let rec = ExitRecord {
            exit_code: 137,
            signal: Some("SIGKILL".into()),
            oom_killed: true,
            ..Default::default()
        };
        write_json(&p, &rec, Durability::Volatile).unwrap();
        assert_eq!(read_json::<ExitRecord>(&p), Some(rec));
    }

    #[test]
    fn shim_record_alive_only_for_the_same_process() {
        let me = std::process::id() as i32;
        let (start, _) = proc::stat(me).unwrap();
        let rec = ShimRecord {
            shim_pid: me,
            shim_start_ticks: start,
            init_pid: None,
            started_at_ms: None,
        };
        assert!(rec.is_alive());
        let reused = ShimRecord {
            shim_start_ticks: start + 1,
            ..rec
        };
        assert!(!reused.is_alive());
    }
}
