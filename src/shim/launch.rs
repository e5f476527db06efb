//! How kboot starts its own processes (`kboot shim`, `kboot supervise`,
//! `kboot cri pod-holder`, `kboot exec`): one typed [`Internal`] request, whose
//! argv is built by the `to_args` beside each clap struct that parses it (the CLI
//! takes these very structs), run by the running binary on the same root, state
//! and config as the process that starts them.
//!
//! The one binary-path policy: every internal process runs [`SELF_EXE`], never a
//! path looked up again. In a process that starts or joins containers that is the
//! sealed copy `crate::seal` re-executed it from, so its children are sealed too.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Args;
use command_fds::{CommandFdExt, FdMapping};

use crate::bundle::userns::IdRange;
use crate::state::Paths;

/// The running binary. Even after an upgrade replaced (deleted) the file on
/// disk, this is the binary of the calling process, so a shim or `kboot exec`
/// always matches the server that wrote the bundle.
pub const SELF_EXE: &str = "/proc/self/exe";

/// `kboot shim`: runs one container and records its life (`super::record`).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ShimArgs {
    #[arg(long)]
    pub id: String,
    #[arg(long)]
    pub bundle: PathBuf,
    /// Rotate the container log beyond this size; 0 never rotates (the kubelet does).
    #[arg(long, default_value_t = super::log::DEFAULT_MAX_BYTES)]
    pub log_max_bytes: u64,
    /// Write the log there instead of the container directory (CRI `log_directory/log_path`).
    #[arg(long)]
    pub log_path: Option<PathBuf>,
    /// Serve the attach socket (CRI containers).
    #[arg(long)]
    pub attach: bool,
    /// With --attach: give the container a stdin pipe that attach clients write to.
    #[arg(long, requires = "attach")]
    pub stdin: bool,
    /// With --stdin: the first attach client closing its stdin closes the container's.
    #[arg(long, requires = "stdin")]
    pub stdin_once: bool,
    /// With --attach: the container's stdio is a pseudo-terminal.
    #[arg(long, requires = "attach")]
    pub tty: bool,
    /// Write one byte on descriptor 3 (`record::START_NOTICE_FD`) once the records say how the
    /// start went; set by [`Internal::shim_with_start_notice`], never by hand.
    #[arg(long, hide = true)]
    pub notify_start: bool,
}

impl ShimArgs {
    /// A `kboot run` service's shim: its log in the container directory, no attach socket.
    pub fn service(id: &str, bundle: PathBuf, log_max_bytes: u64) -> Self {
        Self {
            id: id.to_owned(),
            bundle,
            log_max_bytes,
            log_path: None,
            attach: false,
            stdin: false,
            stdin_once: false,
            tty: false,
            notify_start: false,
        }
    }

    /// The arguments that parse back into `self`.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec![
            "--id".into(),
            self.id.clone().into(),
            "--bundle".into(),
            self.bundle.clone().into(),
            "--log-max-bytes".into(),
            self.log_max_bytes.to_string().into(),
        ];
        if let Some(p) = &self.log_path {
            out.extend(["--log-path".into(), p.clone().into()]);
        }
        for (set, flag) in [
            (self.attach, "--attach"),
            (self.stdin, "--stdin"),
            (self.stdin_once, "--stdin-once"),
            (self.tty, "--tty"),
            (self.notify_start, "--notify-start"),
        ] {
            if set {
                out.push(flag.into());
            }
        }
        out
    }
}

/// `kboot exec NAME -- CMD…`: runs a command in a running container.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ExecArgs {
    pub name: String,
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl ExecArgs {
    /// The arguments that parse back into `self`.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec![self.name.clone().into(), "--".into()];
        out.extend(self.command.iter().map(OsString::from));
        out
    }
}

/// `kboot cri pod-holder`: the init of a pod's shared PID namespace, inside a new
/// user namespace with these ranges when the pod has one (`hostUsers: false`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct PodHolderArgs {
    /// Make the namespaces inside a new user namespace with this uid range (`C:H:N`).
    #[arg(long, requires = "gid_map")]
    pub uid_map: Option<IdRange>,
    /// Its gid range (`C:H:N`).
    #[arg(long, requires = "uid_map")]
    pub gid_map: Option<IdRange>,
}

impl PodHolderArgs {
    /// The arguments that parse back into `self`.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out = Vec::new();
        for (flag, range) in [("--uid-map", self.uid_map), ("--gid-map", self.gid_map)] {
            if let Some(r) = range {
                out.extend([flag.into(), r.to_string().into()]);
            }
        }
        out
    }
}

/// `kboot supervise`: the background supervisor (it takes no arguments).
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct SuperviseArgs {}

impl SuperviseArgs {
    /// The arguments that parse back into `self` (none).
    pub fn to_args(&self) -> Vec<OsString> {
        Vec::new()
    }
}

/// One of kboot's internal processes, as its parent asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Internal {
    Shim(ShimArgs),
    Supervise(SuperviseArgs),
    PodHolder(PodHolderArgs),
    Exec(ExecArgs),
}

impl Internal {
    /// The subcommand and its arguments (after kboot's global options).
    pub fn argv(&self) -> Vec<OsString> {
        let (sub, args): (&[&str], _) = match self {
            Internal::Shim(a) => (&["shim"], a.to_args()),
            Internal::Supervise(a) => (&["supervise"], a.to_args()),
            Internal::PodHolder(a) => (&["cri", "pod-holder"], a.to_args()),
            Internal::Exec(a) => (&["exec"], a.to_args()),
        };
        sub.iter().map(OsString::from).chain(args).collect()
    }

    /// [`Internal::command`] for a shim whose start the caller waits for: `--notify-start`
    /// set, the write end of a new pipe at the child's [`super::record::START_NOTICE_FD`], and the read
    /// end returned ([`super::record::StartNotice::wait`]). The parent's copy of the write
    /// end lives in the command: drop it once spawned, so the shim's end closes the pipe.
    pub fn shim_with_start_notice(
        mut args: ShimArgs,
        paths: &Paths,
    ) -> std::io::Result<(std::process::Command, super::record::StartNotice)> {
        args.notify_start = true;
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let mut command = Internal::Shim(args).command(paths);
        command
            .fd_mappings(vec![FdMapping {
                parent_fd: write,
                child_fd: super::record::START_NOTICE_FD,
            }])
            .map_err(std::io::Error::other)?;
        Ok((command, super::record::StartNotice::new(read)))
    }

    /// `kboot --root R --state S --config C <argv>`, for the caller to set stdio,
    /// environment and session on. `argv[0]` is `kboot`, so `ps` and `pgrep -f`
    /// show what runs.
    pub fn command(&self, paths: &Paths) -> std::process::Command {
        let mut command = kboot_command(paths);
        command.args(self.argv());
        command
    }
}

/// The global options that put a child on the caller's root, state and config.
pub fn global_args(paths: &Paths) -> Vec<OsString> {
    vec![
        "--root".into(),
        paths.root().into(),
        "--state".into(),
        paths.state().into(),
        "--config".into(),
        paths.config().into(),
    ]
}

fn kboot_command(paths: &Paths) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(Path::new(SELF_EXE));
    command.arg0("kboot").args(global_args(paths));
    command
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrap<A: Args> {
        #[command(flatten)]
        args: A,
    }

    fn parse<A: Args>(args: Vec<OsString>) -> A {
        Wrap::<A>::try_parse_from(std::iter::once(OsString::from("kboot")).chain(args))
            .unwrap()
            .args
    }

    #[test]
    fn shim_args_round_trip() {
        let plain = ShimArgs::service("web", "/var/lib/kboot/containers/web/bundle".into(), 1234);
        assert_eq!(parse::<ShimArgs>(plain.to_args()), plain);
        let cri = ShimArgs {
            id: "0123abcd".into(),
            bundle: "/b with space/-x".into(),
            log_max_bytes: 0,
            log_path: Some("/var/log/pods/p/c/0.log".into()),
            attach: true,
            stdin: true,
            stdin_once: true,
            tty: true,
            notify_start: true,
        };
        assert_eq!(parse::<ShimArgs>(cri.to_args()), cri);
    }

    #[test]
    fn exec_args_round_trip_with_dashes_in_the_command() {
        let a = ExecArgs {
            name: "web".into(),
            command: vec!["sh".into(), "-c".into(), "--".into(), "--id x".into()],
        };
        assert_eq!(parse::<ExecArgs>(a.to_args()), a);
    }

    #[test]
    fn pod_holder_args_round_trip() {
        assert_eq!(
            parse::<PodHolderArgs>(PodHolderArgs::default().to_args()),
            PodHolderArgs::default()
        );
        let r = |h| IdRange {
            container_id: 0,
            host_id: h,
            size: 65536,
        };
        let userns = PodHolderArgs {
            uid_map: Some(r(65536)),
            gid_map: Some(r(131072)),
        };
        assert_eq!(parse::<PodHolderArgs>(userns.to_args()), userns);
        assert!("0:1".parse::<IdRange>().is_err());
        assert!("0:1:2:3".parse::<IdRange>().is_err());
        assert!("a:1:2".parse::<IdRange>().is_err());
    }

    #[test]
    fn supervise_args_round_trip() {
        assert_eq!(parse::<SuperviseArgs>(SuperviseArgs {}.to_args()), SuperviseArgs {});
    }

    #[test]
    fn the_command_runs_this_binary_on_the_same_paths() {
        let paths = Paths::under(Path::new("/r"));
        let c = Internal::PodHolder(PodHolderArgs::default()).command(&paths);
        assert_eq!(c.get_program(), SELF_EXE);
        let args: Vec<_> = c.get_args().collect();
        assert_eq!(args[..6], global_args(&paths)[..]);
        assert_eq!(args[6..], ["cri", "pod-holder"]);
    }
}
