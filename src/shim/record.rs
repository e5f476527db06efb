//! The protocol between a shim and those who start it (the supervisor, the CRI, `ps`):
//! what a shim leaves on disk, a runtime record while it runs
//! (`paths.shims()/<id>.json`, gone on reboot) and the last exit
//! (`paths.container(id)/exit.json`, kept). The shim is the one writer
//! ([`write_running`], [`write_exit`], [`clear_running`]); everyone else reads
//! through [`read_exit`] and [`running`]. The request side is `super::launch`.
//!
//! Records are renamed into place but not fsynced: a flush costs 10–15 ms per
//! container on a busy disk (measured, bench/README.md), and a record lost to a
//! power cut only means the container is started again, as a reboot does anyway.

use serde::{Deserialize, Serialize};

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
