//! Command-line types and one handler per subcommand. The only module that prints.

use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::state::paths_from;
use crate::state::Paths;

mod containers;
mod cri;
mod images;
mod progress;
mod roles;
mod service;
mod unpack;

/// Exit code for a command that ran and failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a usage or configuration error.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "kboot",
    version,
    about = "Turn a bare Linux host into a Kubernetes node: no Docker, no containerd"
)]
pub struct Cli {
    /// Persistent data: content store, images, rootfs, containers, PKI.
    #[arg(long, global = true, env = "KBOOT_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Runtime state (sockets, shim records); lost on reboot.
    #[arg(long, global = true, env = "KBOOT_STATE", value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Configuration directory (registries.toml, config.toml).
    #[arg(long, global = true, env = "KBOOT_CONFIG", value_name = "DIR")]
    pub config: Option<PathBuf>,
    /// Log level: error, warn, info, debug, trace (KBOOT_LOG overrides with a filter).
    #[arg(long, global = true, default_value = "warn", value_name = "LEVEL")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pull images from registries into the local store.
    Pull(images::PullArgs),
    /// List images in the local store.
    Images(images::ImagesArgs),
    /// Remove image references.
    Rmi(images::RmiArgs),
    /// Remove blobs and rootfs that no image references.
    Prune(images::PruneArgs),
    /// Import images from a docker-save tar or an OCI layout (dir or tar; plain, gzip or zstd).
    Load(images::LoadArgs),
    /// Export images as an OCI layout tar.
    Save(images::SaveArgs),
    /// Export an image's flattened rootfs into a directory.
    Unpack(unpack::UnpackArgs),
    /// Bring up a role (master, worker) or the services of a Compose-subset file.
    Run(RunArgs),
    /// Print what `run` would do, without doing it.
    Plan(roles::PlanArgs),
    /// List containers.
    Ps(containers::PsArgs),
    /// Show a container's output.
    Logs(containers::LogsArgs),
    /// Run a command inside a running container.
    Exec(crate::shim::launch::ExecArgs),
    /// Stop containers (remembered: they stay stopped).
    Stop(containers::NamesArgs),
    /// Start stopped containers.
    Start(containers::NamesArgs),
    /// Remove containers.
    Rm(containers::NamesArgs),
    /// Stop and remove everything kboot started.
    Down(containers::DownArgs),
    /// Per-container libcontainer wrapper (internal).
    #[command(hide = true)]
    Shim(crate::shim::launch::ShimArgs),
    /// Serve the kubelet's CRI on its own, without running a plan (debugging, tests).
    #[command(hide = true)]
    Cri(cri::CriArgs),
    /// Background supervisor started by `run --detach` and `start` (internal).
    #[command(hide = true)]
    Supervise(crate::shim::launch::SuperviseArgs),
    /// Check certificate expiry or renew leaf certificates of the cluster PKI.
    Certs(roles::CertsArgs),
    /// Print the admin kubeconfig (certificates embedded).
    Kubeconfig(roles::KubeconfigArgs),
    /// Install or remove the boot service (a systemd unit running `kboot run ROLE`).
    Service(service::ServiceArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(service::CompletionsArgs),
    /// Print the man page (roff), or write one per subcommand with --dir.
    Man(service::ManArgs),
}

impl Command {
    /// Commands whose process starts or joins a container, or spawns those that do: they
    /// run from a copy of the binary that a container cannot write (crate::seal).
    fn starts_or_joins_containers(&self) -> bool {
        matches!(
            self,
            Command::Run(_) | Command::Supervise(_) | Command::Shim(_) | Command::Exec(_) | Command::Cri(_)
        )
    }
}

/// What every handler gets: resolved paths and global settings.
#[derive(Debug, Clone)]
pub struct Context {
    pub paths: Paths,
}

impl Context {
    /// Runs a future on a multi-threaded tokio runtime built for this command only:
    /// `kboot shim` never builds one (libcontainer must not clone from a threaded process).
    pub fn block_on<F: std::future::Future>(&self, fut: F) -> anyhow::Result<F::Output> {
        limit_malloc_arenas();
        let rt = tokio::runtime::Builder::new_multi_thread()
            // The supervisor and the CRI server mostly wait on shims, sockets and timers;
            // blocking work (unpacking, bundles) goes to `spawn_blocking` threads. One worker
            // per core (tokio's default) would be 64 idle threads and their stacks on a big host.
            .worker_threads(
                std::thread::available_parallelism()
                    .map_or(1, |n| n.get())
                    .min(MAX_ASYNC_WORKERS),
            )
            .enable_all()
            .build()
            .map_err(|e| anyhow::anyhow!("start the async runtime: {e}"))?;
        Ok(rt.block_on(fut))
    }
}

/// At most this many worker threads in the async runtime (`run`, `supervise`, `cri`, `pull`).
const MAX_ASYNC_WORKERS: usize = 4;

/// At most this many glibc malloc arenas. glibc gives each thread that allocates
/// under contention its own arena, up to 8 per core, and freed memory stays in the
/// arena it came from: with tokio's workers and blocking threads (image pulls, CRI
/// calls) that is RSS growing with the thread count on big hosts. On the 2-core
/// bench host the supervisor under CRI traffic measured the same either way
/// (bench/README.md `## Containers`): the cap costs nothing where it is not needed.
const MALLOC_ARENAS: i32 = 2;

fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator settings; it is called before the runtime
    // starts its threads, and M_ARENA_MAX takes a plain integer.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if cli.command.starts_or_joins_containers() {
        // Before anything else: from here on a container may see this process (seal.rs).
        if let Err(err) = crate::seal::ensure_sealed() {
            return report(&err.into());
        }
    }
    crate::logging::init(&cli.log_level);
    let ctx = Context {
        paths: paths_from(cli.root.clone(), cli.state.clone(), cli.config.clone()),
    };
    match dispatch(&ctx, cli.command) {
        Ok(code) => code,
        Err(err) => report(&err),
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Role to bring up: `master` or `worker` (omit with -f).
    #[arg(value_name = "ROLE")]
    pub role: Option<String>,
    /// A Compose-subset plan file.
    #[arg(short = 'f', long = "file", value_name = "FILE", conflicts_with = "role")]
    pub file: Option<PathBuf>,
    /// Return once every service is running (or failed, with the reason).
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Flags that only apply to `run master|worker`.
    #[command(flatten)]
    pub role_flags: roles::RoleFlags,
}

fn dispatch(ctx: &Context, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Pull(a) => images::pull(ctx, a),
        Command::Images(a) => images::images(ctx, a),
        Command::Rmi(a) => images::rmi(ctx, a),
        Command::Prune(a) => images::prune(ctx, a),
        Command::Load(a) => images::load(ctx, a),
        Command::Save(a) => images::save(ctx, a),
        Command::Unpack(a) => unpack::unpack(ctx, a),
        Command::Run(a) => match a.role.clone() {
            Some(role) => roles::run_role(ctx, &role, &a),
            None => containers::run(ctx, a),
        },
        Command::Plan(a) => roles::plan(ctx, a),
        Command::Ps(a) => containers::ps(ctx, a),
        Command::Logs(a) => containers::logs(ctx, a),
        Command::Exec(a) => containers::exec(ctx, a),
        Command::Stop(a) => containers::stop(ctx, a),
        Command::Start(a) => containers::start(ctx, a),
        Command::Rm(a) => containers::rm(ctx, a),
        Command::Down(a) => containers::down(ctx, a),
        Command::Shim(a) => containers::shim(ctx, a),
        Command::Cri(a) => cri::cri(ctx, a),
        Command::Supervise(a) => containers::supervise(ctx, a),
        Command::Certs(a) => roles::certs(ctx, a),
        Command::Kubeconfig(a) => roles::kubeconfig(ctx, a),
        Command::Service(a) => service::service(ctx, a),
        Command::Completions(a) => service::completions(ctx, a),
        Command::Man(a) => service::man(ctx, a),
    }
}

/// A usage or configuration mistake: exit 2 instead of 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Prints `kboot: <error chain>` and picks the exit code. A closed stdout
/// (`kboot images | head -1`) is not a failure.
#[allow(clippy::print_stderr)]
fn report(err: &anyhow::Error) -> ExitCode {
    if err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == ErrorKind::BrokenPipe)
    }) {
        return ExitCode::SUCCESS;
    }
    eprintln!("kboot: {err:#}");
    if err.chain().any(|c| {
        c.downcast_ref::<UsageError>().is_some()
            || c.downcast_ref::<crate::node::NodeError>().is_some_and(|e| e.is_usage())
    }) {
        ExitCode::from(EXIT_USAGE)
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shim::launch::{global_args, ExecArgs, Internal, PodHolderArgs, ShimArgs, SuperviseArgs};
    use crate::state::Paths;

    /// What a parent asks for is what the child's CLI parses: paths and the request.
    #[test]
    fn every_internal_launch_parses_back_into_its_request() {
        let paths = Paths::under("/r");
        let shim = ShimArgs {
            id: "c".into(),
            bundle: "/r/b".into(),
            log_max_bytes: 0,
            log_path: Some("/l/0.log".into()),
            attach: true,
            stdin: true,
            stdin_once: false,
            tty: true,
            notify_start: false,
        };
        let exec = ExecArgs {
            name: "c".into(),
            command: vec!["ls".into(), "-l".into()],
        };
        for launch in [
            Internal::Shim(shim),
            Internal::Supervise(SuperviseArgs {}),
            Internal::PodHolder(PodHolderArgs {
                uid_map: Some("0:65536:65536".parse().unwrap()),
                gid_map: Some("0:65536:65536".parse().unwrap()),
            }),
            Internal::Exec(exec),
        ] {
            let argv = std::iter::once("kboot".into())
                .chain(global_args(&paths))
                .chain(launch.argv());
            let cli = Cli::try_parse_from(argv).unwrap();
            assert_eq!(
                (cli.root.as_deref(), cli.state.as_deref(), cli.config.as_deref()),
                (Some(paths.root()), Some(paths.state()), Some(paths.config()))
            );
            let parsed = match cli.command {
                Command::Shim(a) => Internal::Shim(a),
                Command::Supervise(a) => Internal::Supervise(a),
                Command::Exec(a) => Internal::Exec(a),
                Command::Cri(cri::CriArgs {
                    command: cri::CriCommand::PodHolder(a),
                }) => Internal::PodHolder(a),
                other => panic!("{launch:?} parsed as {other:?}"),
            };
            assert_eq!(parsed, launch);
        }
    }
}
