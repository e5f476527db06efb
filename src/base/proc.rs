//! Facts about a process from `/proc`, read with the `procfs` crate.

/// Start time (clock ticks since boot) and state letter (`R`, `S`, `Z`, …) of
/// a process, from `/proc/<pid>/stat`; `None` when it does not exist. The
/// start time tells a process from an unrelated one that reused its pid.
pub fn stat(pid: i32) -> Option<(u64, char)> {
    let stat = procfs::process::Process::new(pid).ok()?.stat().ok()?;
    Some((stat.starttime, stat.state))
}

#[cfg(test)]
mod tests {
    #[test]
    fn stat_of_this_process_is_running_and_of_a_missing_pid_is_none() {
        let (start, state) = super::stat(std::process::id() as i32).unwrap();
        assert!(start > 0);
        assert!(matches!(state, 'R' | 'S'), "state {state}");
        // pid_max is at most 2^22: this pid never exists.
        assert_eq!(super::stat(i32::MAX), None);
    }
}
