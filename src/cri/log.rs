//! CRI container logs: the shim writes the CRI-format log straight to the kubelet's
//! `log_directory/log_path`; the container directory links to it; `ReopenContainerLog`
//! has the shim switch to a new file after the kubelet renamed the old one away.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kboot_cri::v1::ContainerConfig;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use super::error::{CriError, Result};
use super::record::{CriContainer, Phase};
use super::sandbox::Sandbox;
use crate::state::{ContainerDir, Paths};

pub(super) fn log_path_of(pod: &Sandbox, config: &ContainerConfig) -> Option<PathBuf> {
    let dir = &pod.config.log_directory;
    (!dir.is_empty() && !config.log_path.is_empty()).then(|| Path::new(dir).join(&config.log_path))
}

/// The shim writes the CRI-format log straight to `log_directory/log_path`, a regular file
/// (the kubelet, often in a container of its own, must be able to read and rename it); the
/// container directory's `container.log` links to it so `kboot logs` finds it too.
pub(super) fn link_log(dir: &ContainerDir, log: &Path) -> Result<()> {
    if let Some(parent) = log.parent() {
        fs::create_dir_all(parent).map_err(CriError::io("create the log directory", parent))?;
    }
    create_log(log)?;
    let link = dir.log();
    match fs::remove_file(&link) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(CriError::io("replace the log link", &link)(e)),
        _ => {}
    }
    std::os::unix::fs::symlink(log, &link).map_err(CriError::io("link the log", &link))
}

fn create_log(log: &Path) -> Result<()> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map(drop)
        .map_err(CriError::io("create the log", log))
}

/// How long `ReopenContainerLog` waits for the shim to switch files.
const REOPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// After the kubelet renamed the log away: creates a new file at the log path and has the
/// shim write there, returning once it does (the kubelet renames the old file back when this
/// fails, so an error loses nothing).
pub(crate) async fn reopen_log(paths: &Paths, c: &CriContainer) -> Result<()> {
    let Phase::Running(rec) = c.phase(paths) else {
        return Err(CriError::FailedPrecondition(format!(
            "container {} is not running",
            c.id
        )));
    };
    let Some(log) = &c.record.log_path else {
        return Ok(());
    };
    create_log(log)?;
    kill(Pid::from_raw(rec.shim_pid), crate::shim::REOPEN_LOG_SIGNAL)
        .map_err(|e| CriError::FailedPrecondition(format!("signal the shim of container {}: {e}", c.id)))?;
    let deadline = Instant::now() + REOPEN_TIMEOUT;
    while !holds_open(rec.shim_pid, log) {
        if Instant::now() > deadline {
            return Err(CriError::FailedPrecondition(format!(
                "the shim of container {} did not reopen {} within {REOPEN_TIMEOUT:?}",
                c.id,
                log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Whether process `pid` has the file now at `path` open.
fn holds_open(pid: i32, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(want) = fs::metadata(path) else { return false };
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .filter_map(|fd| fs::metadata(fd.path()).ok())
        .any(|m| m.dev() == want.dev() && m.ino() == want.ino())
}
