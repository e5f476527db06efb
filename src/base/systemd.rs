//! Whether the host's systemd is shutting down.
//!
//! At shutdown systemd stops the container scopes and the boot unit at the same time, so a
//! container can exit (SIGTERM from its scope's stop) while the supervisor still runs. A
//! restart then asks systemd for a new scope in a slice being stopped, which it refuses
//! ("Transaction … is destructive"), or D-Bus is already gone (ECONNRESET): the container's
//! record says it failed to start, and `kboot ps` shows that after the reboot. The supervisor
//! asks this before a restart and waits instead.
//!
//! `systemctl is-system-running` is systemd's documented interface for the state; it is run
//! only when a restart falls due (rare), so a process start there costs nothing that matters,
//! and no D-Bus client of our own is needed (libcontainer's is not public).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `systemctl` may take before the answer counts as "not stopping" (a busy
/// systemd must not hold a restart back forever).
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// True when systemd is the running init system (sd_booted(3): `/run/systemd/system`, the
/// test runc, kubeadm and libcontainer make).
pub fn booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// True when systemd is PID 1 and says the system is stopping (shutdown or reboot).
pub fn system_stopping() -> bool {
    if !booted() {
        return false;
    }
    let Ok(mut child) = Command::new("systemctl")
        .arg("is-system-running")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    // Polled, not the `wait-timeout` crate (in the lock file): that one installs a
    // process-wide SIGCHLD handler, and the supervisor that asks runs tokio's beside it.
    let deadline = Instant::now() + ASK_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
    }
    is_stopping(&out)
}

/// `systemctl is-system-running` prints the state: `stopping` during shutdown.
fn is_stopping(state: &str) -> bool {
    state.trim() == "stopping"
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_stopping_state_counts() {
        assert!(super::is_stopping("stopping\n"));
        for other in ["running\n", "degraded\n", "starting\n", "offline\n", ""] {
            assert!(!super::is_stopping(other), "{other:?}");
        }
    }

    #[test]
    fn a_host_that_runs_the_tests_is_not_stopping() {
        // Without systemd as PID 1 (this machine) no systemctl is asked; with it, it says running.
        assert!(!super::system_stopping());
    }
}
