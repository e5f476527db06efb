//! The supervisor's records under `paths.container(name)/`: what the user wants
//! (`desired.json`, written by `run`, `stop`, `start`) and the restart
//! bookkeeping (`status.json`, written only by the supervisor). Both survive a
//! reboot; together with the shim's `exit.json` they decide every restart.

use std::fs;

use serde::{Deserialize, Serialize};

use super::restart::RestartState;
use crate::base::record::{read_json, write_json, Durability, RecordError};
use crate::plan::Service;
use crate::state::Paths;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    Running,
    Stopped,
}

/// What should be running, as last asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredRecord {
    pub service: Service,
    pub state: DesiredState,
    /// Stopped by `kboot stop` (stays stopped under `unless-stopped`), as opposed
    /// to stopped because its foreground supervisor ended.
    #[serde(default)]
    pub stopped_by_user: bool,
    /// Unix ms of the last `run`/`start`: an exit older than this is from a
    /// previous life and does not count against the restart policy.
    pub requested_at_ms: u64,
}

/// The supervisor's bookkeeping for one container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    #[serde(default)]
    pub restart: RestartState,
    /// `finished_at_ms` of the last exit the policy was applied to.
    #[serde(default)]
    pub handled_exit_ms: u64,
    /// When a decided restart is due (Unix ms); kept on disk so a supervisor
    /// killed during the backoff still restarts the container.
    #[serde(default)]
    pub restart_at_ms: Option<u64>,
    /// When the supervisor last spawned a shim (Unix ms): until the shim writes
    /// its record, the container is "starting", not still "exited".
    #[serde(default)]
    pub spawned_at_ms: u64,
}

pub fn read_desired(paths: &Paths, name: &str) -> Option<DesiredRecord> {
    read_json(&paths.container(name).desired())
}
pub fn write_desired(paths: &Paths, rec: &DesiredRecord) -> Result<(), RecordError> {
    write_json(&paths.container(&rec.service.name).desired(), rec, Durability::Synced)
}
pub fn read_status(paths: &Paths, name: &str) -> StatusRecord {
    read_json(&paths.container(name).status()).unwrap_or_default()
}
/// Not fsynced: after a crash the worst case is one restart decision applied
/// again (the shim's `exit.json`, which is durable, is the source of truth).
pub fn write_status(paths: &Paths, name: &str, rec: &StatusRecord) -> Result<(), RecordError> {
    write_json(&paths.container(name).status(), rec, Durability::Volatile)
}

/// Whether `name` has started since it was last asked to run: its init runs, or its last
/// exit ends a run that started after the request. `depends_on` waits for this (compose's
/// "started"): a check at one instant would miss a dependency that starts and exits at once.
pub fn started_since_requested(paths: &Paths, name: &str) -> bool {
    if crate::shim::running(paths, name).is_some_and(|r| r.init_pid.is_some()) {
        return true;
    }
    let Some(desired) = read_desired(paths, name) else {
        return false;
    };
    crate::shim::record::read_exit(paths, name).is_some_and(|e| ran_since(&e, desired.requested_at_ms))
}

/// Whether `exit` ends a run that started (its init ran) after the request at `requested_at_ms`.
pub fn ran_since(exit: &crate::shim::record::ExitRecord, requested_at_ms: u64) -> bool {
    exit.started_at_ms.is_some() && exit.finished_at_ms >= requested_at_ms
}

/// Names of every container kboot manages (directories with a desired record), sorted.
pub fn container_names(paths: &Paths) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(paths.containers())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| paths.container(n).desired().exists())
        .collect();
    names.sort();
    names
}
