//! OOM kills of a container, counted while it runs.
//!
//! The kernel counts them in the container's memory cgroup (v2 `memory.events`, v1
//! `memory.oom_control`, line `oom_kill N`). Reading that once after init exits is too late
//! with the systemd driver: the container is a transient scope, and systemd removes a scope's
//! cgroup as soon as its last process is gone, often before the shim has reaped init (critest's
//! OOMKilled spec failed that way in the cgroup v2 guest). So, as containerd's shims do, the
//! shim watches `memory.events` with inotify (the kernel signals a change of the file) from the
//! start and keeps the highest count it read; the read after exit still covers cgroupfs and v1,
//! where the directory stays until the shim deletes the container.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

pub(super) struct OomWatch {
    /// The counter files that exist for this container's cgroup (v1 and/or v2 paths).
    files: Vec<PathBuf>,
    inotify: Option<Inotify>,
    seen: u64,
    /// v2: the parent's `memory.events` and its count at the start. Its `oom_kill` is
    /// hierarchical, so it still shows a kill in a scope systemd has already removed.
    parent: Option<(PathBuf, u64)>,
}

impl OomWatch {
    /// Watches the memory cgroup at `cgroup_dir` (relative to the cgroup root, as
    /// `cgroups::driver::fs_path` gives it); `None` watches nothing and counts nothing.
    pub fn new(cgroup_dir: Option<&str>) -> Self {
        let Some(rel) = cgroup_dir.map(|d| d.trim_start_matches('/')) else {
            return Self {
                files: Vec::new(),
                inotify: None,
                seen: 0,
                parent: None,
            };
        };
        let root = Path::new(crate::cgroups::ROOT);
        let events = root.join(rel).join("memory.events");
        // Best effort: without the watch the count after exit is all there is, as before.
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .ok()
            .filter(|i| i.add_watch(&events, AddWatchFlags::IN_MODIFY).is_ok());
        let files = vec![root.join("memory").join(rel).join("memory.oom_control"), events];
        let parent = Path::new(rel)
            .parent()
            .map(|p| root.join(p).join("memory.events"))
            .and_then(|f| read_oom_kills(&f).map(|n| (f, n)));
        let mut watch = Self {
            files,
            inotify,
            seen: 0,
            parent,
        };
        watch.read();
        watch
    }

    /// The descriptor to poll: readable when `memory.events` changed.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.inotify.as_ref().map(|i| i.as_fd())
    }

    /// Reads the counters again if `memory.events` changed since the last look (a
    /// non-blocking read of the inotify queue otherwise): called on every turn of the
    /// shim's loop, before it reaps, so a kill is counted while its cgroup still exists.
    pub fn update(&mut self) {
        let Some(i) = &self.inotify else { return };
        let mut changed = false;
        while matches!(i.read_events(), Ok(events) if !events.is_empty()) {
            changed = true;
        }
        if changed {
            self.read();
        }
    }

    fn read(&mut self) {
        let now = self.files.iter().filter_map(|f| read_oom_kills(f)).max().unwrap_or(0);
        self.seen = self.seen.max(now);
    }

    /// Whether the OOM killer killed in the container: the highest count seen, the cgroup
    /// read once more first. When the cgroup is gone by now (systemd removed the scope) and
    /// nothing was seen, a container killed by SIGKILL counts as OOM-killed if its parent's
    /// hierarchical count rose since the start; a sibling's kill at the same moment is the
    /// one case this gets wrong.
    pub fn oom_killed(&mut self, killed_by_sigkill: bool) -> bool {
        // Pending change notices need no draining now: the counters are read regardless.
        self.read();
        if self.seen > 0 {
            return true;
        }
        let gone = !self.files.iter().any(|f| f.exists());
        killed_by_sigkill
            && gone
            && self
                .parent
                .as_ref()
                .is_some_and(|(f, before)| read_oom_kills(f).is_some_and(|now| now > *before))
    }
}

/// The `oom_kill N` line of a memory cgroup file, if the file is there.
fn read_oom_kills(file: &Path) -> Option<u64> {
    crate::cgroups::keyed(file, "oom_kill")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_reads_the_oom_kill_line_and_a_missing_cgroup_counts_nothing() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("memory.events");
        std::fs::write(&f, "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\noom_group_kill 0\n").unwrap();
        assert_eq!(read_oom_kills(&f), Some(2));
        assert_eq!(read_oom_kills(&d.path().join("gone")), None);
        let mut w = OomWatch::new(None);
        assert!(!w.oom_killed(true));
        assert!(w.fd().is_none());
    }
}
