//! What a shim leaves on disk for the supervisor, `ps` and the next supervisor:
//! a runtime record while it runs (`paths.shims()/<id>.json`, gone on reboot)
//! and the last exit (`paths.container(id)/exit.json`, kept).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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

/// The record could not be written.
#[derive(Debug, thiserror::Error)]
#[error("write record {}", path.display())]
pub struct RecordError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Serialises `value` to `path`: temp file → fsync → rename, so readers never
/// see half a record and it survives a crash.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RecordError> {
    write_json_inner(path, value, true)
}

/// Like [`write_json`] without the fsync, for runtime records under the state
/// directory: they are meaningless after a reboot anyway, and the rename alone
/// keeps readers from seeing half a record. Saves a disk flush per container
/// start where `/run` is not a tmpfs.
pub fn write_json_volatile<T: Serialize>(path: &Path, value: &T) -> Result<(), RecordError> {
    write_json_inner(path, value, false)
}

fn write_json_inner<T: Serialize>(path: &Path, value: &T, durable: bool) -> Result<(), RecordError> {
    let err = |source| RecordError {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(err)?;
    let json = serde_json::to_vec_pretty(value).map_err(|e| err(std::io::Error::other(e)))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = fs::File::create(&tmp).map_err(err)?;
    f.write_all(&json).map_err(err)?;
    if durable {
        f.sync_all().map_err(err)?;
    }
    fs::rename(&tmp, path).map_err(err)
}

/// Reads a JSON record; a missing or unreadable one is `None` (records are
/// hints rebuilt from the desired state, never the only copy of user data).
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(err) => {
            tracing::warn!(path = %path.display(), %err, "ignoring unreadable record");
            None
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Start time (clock ticks since boot) and state letter of a process, from
/// `/proc/<pid>/stat`; `None` when it does not exist.
pub fn proc_stat(pid: i32) -> Option<(u64, char)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

impl ShimRecord {
    /// True when the recorded shim is still this very process (not a reused
    /// pid) and has not exited.
    pub fn is_alive(&self) -> bool {
        matches!(proc_stat(self.shim_pid), Some((start, state)) if start == self.shim_start_ticks && state != 'Z' && state != 'X')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_missing_is_none() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x/exit.json");
        let rec = ExitRecord {
            exit_code: 137,
            signal: Some("SIGKILL".into()),
            oom_killed: true,
            ..Default::default()
        };
        write_json(&p, &rec).unwrap();
        assert_eq!(read_json::<ExitRecord>(&p), Some(rec));
        assert_eq!(read_json::<ExitRecord>(&d.path().join("none")), None);
    }

    #[test]
    fn shim_record_alive_only_for_the_same_process() {
        let me = std::process::id() as i32;
        let (start, _) = proc_stat(me).unwrap();
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
