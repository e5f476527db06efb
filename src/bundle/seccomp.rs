//! The seccomp profiles a container can get: `RuntimeDefault` (an allowlist modelled on
//! containerd's and Docker's default profile), `Unconfined` (none) and `Localhost` (a
//! profile file in the OCI / Docker JSON shape, e.g. `{"defaultAction": "SCMP_ACT_ALLOW",
//! "syscalls": [{"names": ["chmod"], "action": "SCMP_ACT_ERRNO"}]}`).
//!
//! Deviation from Docker's profile: `clone` is allowed without its namespace-flag argument
//! filter. libcontainer 0.7 reads the operands of `SCMP_CMP_MASKED_EQ` the other way round
//! from runc, so a filter written for one would deny every `clone` under the other; without
//! CAP_SYS_ADMIN the kernel refuses the privileged namespace flags anyway. `clone3` answers
//! ENOSYS (libc then falls back to `clone`) unless CAP_SYS_ADMIN is held, as in Docker's.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

/// Which profile a container runs under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SeccompProfile {
    /// No filter.
    Unconfined,
    /// [`default_profile`].
    #[default]
    RuntimeDefault,
    /// A profile file on the host.
    Localhost(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("read the seccomp profile {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("seccomp profile {} is not an OCI/Docker seccomp profile (JSON with defaultAction and syscalls)", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The `linux.seccomp` section for `profile`; `None` for unconfined. `caps` are the
/// container's bounding capabilities (the default profile opens syscalls per capability).
pub fn resolve(profile: &SeccompProfile, caps: &[Capability]) -> Result<Option<LinuxSeccomp>, SeccompError> {
    match profile {
        SeccompProfile::Unconfined => Ok(None),
        SeccompProfile::RuntimeDefault => Ok(Some(default_profile(caps))),
        SeccompProfile::Localhost(path) => load(path).map(Some),
    }
}

/// Reads a profile file (Docker's extra keys such as `archMap` are ignored).
pub fn load(path: &Path) -> Result<LinuxSeccomp, SeccompError> {
    let text = std::fs::read_to_string(path).map_err(|source| SeccompError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| SeccompError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Allowed for every container.
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    "accept", "accept4", "access", "adjtimex", "alarm", "arch_prctl", "bind", "brk", "cachestat", "capget",
    "capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64", "clock_getres",
    "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64",
    "clone", "close", "close_range", "connect", "copy_file_range", "creat", "dup", "dup2", "dup3",
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait",
    "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group", "faccessat",
    "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat",
    "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr",
    "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64",
    "fsync", "ftruncate", "ftruncate64", "futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv",
    "futex_wake", "futimesat", "get_robust_list", "get_thread_area", "getcpu", "getcwd", "getdents",
    "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups",
    "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority",
    "getrandom", "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit", "getrusage", "getsid",
    "getsockname", "getsockopt", "gettid", "gettimeofday", "getuid", "getuid32", "getxattr",
    "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "io_destroy",
    "io_getevents", "io_pgetevents", "io_pgetevents_time64", "io_setup", "io_submit", "ioctl", "ioprio_get",
    "ioprio_set", "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self",
    "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr", "_llseek",
    "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise", "map_shadow_stack", "membarrier",
    "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2",
    "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
    "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "mremap", "mseal", "msgctl",
    "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap", "name_to_handle_at", "nanosleep",
    "newfstatat", "_newselect", "open", "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe",
    "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64",
    "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6", "pselect6_time64", "pwrite64", "pwritev",
    "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recv", "recvfrom", "recvmmsg",
    "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "rename", "renameat", "renameat2",
    "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
    "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
    "sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity", "sched_getattr", "sched_getparam",
    "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
    "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl",
    "semget", "semop", "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg",
    "sendmsg", "sendto", "set_robust_list", "set_thread_area", "set_tid_address", "setfsgid", "setfsgid32",
    "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer", "setpgid",
    "setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid",
    "setreuid32", "setrlimit", "setsid", "setsockopt", "setuid", "setuid32", "setxattr", "shmat", "shmctl",
    "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn",
    "socketcall", "socketpair", "splice", "stat", "stat64", "statfs", "statfs64", "statx", "symlink",
    "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create",
    "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64",
    "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times",
    "tkill", "truncate", "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime",
    "utimensat", "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write",
    "writev",
    // Allowed by Docker on kernels >= 4.8, where they no longer bypass the filter.
    "ptrace", "process_vm_readv", "process_vm_writev",
    // Newer calls Docker's profile allows.
    "getxattrat", "listxattrat", "removexattrat", "setxattrat", "listmount", "statmount", "modify_ldt",
    "uretprobe",
];

/// Opened by a capability the container holds.
const BY_CAPABILITY: &[(Capability, &[&str])] = &[
    (
        Capability::SysAdmin,
        &[
            "bpf",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (Capability::SysBoot, &["reboot"]),
    (Capability::SysChroot, &["chroot"]),
    (Capability::SysModule, &["delete_module", "init_module", "finit_module"]),
    (Capability::SysPacct, &["acct"]),
    (Capability::SysPtrace, &["kcmp", "pidfd_getfd", "process_madvise"]),
    (Capability::DacReadSearch, &["open_by_handle_at"]),
    (Capability::SysRawio, &["iopl", "ioperm"]),
    (
        Capability::SysTime,
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    (Capability::SysTtyConfig, &["vhangup"]),
    (
        Capability::SysNice,
        &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
    ),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
];

/// `personality` values Docker's profile allows (Linux, UNAME26, PER_LINUX32, both, query).
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

fn rule(names: Vec<String>, action: LinuxSeccompAction) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names);
    s.set_action(action);
    s
}

/// The RuntimeDefault profile for a container holding `caps`: everything not listed
/// fails with EPERM.
pub fn default_profile(caps: &[Capability]) -> LinuxSeccomp {
    let mut allowed: Vec<String> = ALLOWED.iter().map(|s| s.to_string()).collect();
    for (cap, names) in BY_CAPABILITY {
        if caps.contains(cap) {
            allowed.extend(names.iter().map(|s| s.to_string()));
        }
    }
    allowed.sort();
    allowed.dedup();
    let mut syscalls = vec![rule(allowed, LinuxSeccompAction::ScmpActAllow)];
    for &value in PERSONALITIES {
        let arg = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(value)
            .op(LinuxSeccompOperator::ScmpCmpEq)
            .build()
            .expect("a complete seccomp argument");
        let mut s = rule(vec!["personality".into()], LinuxSeccompAction::ScmpActAllow);
        s.set_args(Some(vec![arg]));
        syscalls.push(s);
    }
    // Any socket but AF_VSOCK (40), as Docker's.
    let not_vsock = LinuxSeccompArgBuilder::default()
        .index(0usize)
        .value(40u64)
        .op(LinuxSeccompOperator::ScmpCmpNe)
        .build()
        .expect("a complete seccomp argument");
    let mut socket = rule(vec!["socket".into()], LinuxSeccompAction::ScmpActAllow);
    socket.set_args(Some(vec![not_vsock]));
    syscalls.push(socket);
    if !caps.contains(&Capability::SysAdmin) {
        // glibc tries clone3 first and falls back to clone on ENOSYS (not on EPERM).
        let s: LinuxSyscall = LinuxSyscallBuilder::default()
            .names(vec!["clone3".to_string()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(ENOSYS)
            .build()
            .expect("a complete seccomp rule");
        syscalls.push(s);
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(EPERM)
        .architectures(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32])
        .syscalls(syscalls)
        .build()
        .expect("a complete seccomp profile")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(p: &LinuxSeccomp, name: &str) -> bool {
        p.syscalls().as_ref().unwrap().iter().any(|s| {
            s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none() && s.names().iter().any(|n| n == name)
        })
    }

    #[test]
    fn default_profile_denies_by_default_and_opens_admin_calls_only_with_sys_admin() {
        let plain = default_profile(&[Capability::Chown]);
        assert_eq!(plain.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert!(allowed(&plain, "read") && allowed(&plain, "execve") && allowed(&plain, "clone"));
        assert!(!allowed(&plain, "mount") && !allowed(&plain, "sethostname") && !allowed(&plain, "clone3"));
        let admin = default_profile(&[Capability::SysAdmin]);
        assert!(allowed(&admin, "mount") && allowed(&admin, "sethostname") && allowed(&admin, "clone3"));
    }

    #[test]
    fn localhost_profile_in_docker_json_shape_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(
            &path,
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "archMap": [],
                "syscalls": [{"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        let p = resolve(&SeccompProfile::Localhost(path), &[]).unwrap().unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(p.syscalls().as_ref().unwrap()[0].names(), &["chmod", "fchmodat"]);
        assert!(resolve(&SeccompProfile::Unconfined, &[]).unwrap().is_none());
        let missing = resolve(&SeccompProfile::Localhost(dir.path().join("nope")), &[]);
        assert!(matches!(missing, Err(SeccompError::Read { .. })));
    }
}
