//! `service install|uninstall`: the boot unit (src/service), `completions` and `man`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, CommandFactory, Subcommand};

use super::roles::RoleFlags;
use super::{Context, UsageError};
use crate::roles::config::Role;
use crate::service::{self, UnitSpec};

#[derive(Debug, Args)]
pub struct ServiceArgs {
    #[command(subcommand)]
    pub command: ServiceCommand,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write a systemd unit that runs `kboot run ROLE` (the command `kboot plan` shows) at boot.
    Install(Box<InstallArgs>),
    /// Disable and remove the unit (the containers keep running: `kboot down` stops them).
    Uninstall(UninstallArgs),
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// `master` or `worker`.
    pub role: String,
    /// Run `kboot down` when the unit stops (also before systemd restarts a supervisor that
    /// died); by default stopping the unit leaves the containers running.
    #[arg(long)]
    pub down_on_stop: bool,
    /// Only print the unit; write nothing.
    #[arg(long)]
    pub print: bool,
    /// Enable and start the unit now (systemd only).
    #[arg(long)]
    pub now: bool,
    /// Where to write the unit.
    #[arg(long, value_name = "FILE", default_value = service::DEFAULT_UNIT_FILE)]
    pub unit_file: PathBuf,
    #[command(flatten)]
    pub role_flags: RoleFlags,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// The unit to remove.
    #[arg(long, value_name = "FILE", default_value = service::DEFAULT_UNIT_FILE)]
    pub unit_file: PathBuf,
}

pub fn service(ctx: &Context, args: ServiceArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ServiceCommand::Install(a) => install(ctx, *a),
        ServiceCommand::Uninstall(a) => uninstall(ctx, a),
    }
}

#[allow(clippy::print_stdout)]
fn install(ctx: &Context, args: InstallArgs) -> anyhow::Result<ExitCode> {
    let role: Role = args.role.parse().map_err(UsageError)?;
    let flags = &args.role_flags;
    if flags.wait_ready || flags.timeout.is_some() {
        return Err(UsageError(
            "--wait-ready and --timeout belong to `run --detach`; the boot unit runs the supervisor in the foreground"
                .into(),
        )
        .into());
    }
    // The same resolution and checks as `plan` and `run`: bad flags fail now, not at the next boot.
    let req = flags.request(role, false);
    let plan = crate::node::plan(&ctx.paths, &req)?;
    let token = match role {
        Role::Worker => Some(crate::node::worker_credentials(&req)?.0),
        Role::Master => None,
    };
    let env_file = token.as_ref().map(|_| ctx.paths.config().join("service.env"));
    let spec = UnitSpec {
        role,
        command: plan.command.clone(),
        down_on_stop: args.down_on_stop,
        environment_file: env_file.clone(),
    };
    let text = service::unit_text(&spec);
    let mut out = std::io::stdout().lock();
    if args.print {
        out.write_all(text.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    if let (Some(path), Some(token)) = (&env_file, &token) {
        // The token is a secret: 0600, and never on the unit's command line.
        service::write_file(
            path,
            &service::environment_text(&[("KBOOT_TOKEN", &token.expose())]),
            0o600,
        )?;
        writeln!(out, "wrote {} (KBOOT_TOKEN, mode 0600)", path.display())?;
    }
    service::write_file(&args.unit_file, &text, 0o644)?;
    writeln!(out, "wrote {}:\n", args.unit_file.display())?;
    out.write_all(text.as_bytes())?;
    writeln!(out)?;
    let name = unit_name(&args.unit_file)?;
    if !crate::base::systemd::booted() {
        writeln!(
            out,
            "systemd is not running on this host: nothing enabled. Run this at boot instead \
             (e.g. from /etc/rc.local or your init system's service):\n  {}",
            plan.command.join(" ")
        )?;
        if let Some(env) = &env_file {
            writeln!(out, "  with the variables of {} in its environment", env.display())?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    service::systemctl(&["daemon-reload"])?;
    let mut enable = vec!["enable"];
    if args.now {
        // A node started by `kboot run … --detach` has a supervisor outside the unit: the
        // unit's `kboot run` would only converge through it and exit, and systemd would start
        // it again every 5 s. So that supervisor hands its containers over (SIGQUIT leaves
        // them running) and the unit's adopts them. A supervisor the unit runs already stays.
        if service::systemctl(&["is-active", "--quiet", &name]).is_err() {
            if let Some(pid) = crate::supervisor::hand_over(&ctx.paths, std::time::Duration::from_secs(30))
                .context("hand the running node over to the unit")?
            {
                writeln!(
                    out,
                    "the supervisor started outside the unit (pid {pid}) left the containers running for {name} to adopt"
                )?;
            }
        }
        enable.push("--now");
    }
    enable.push(&name);
    service::systemctl(&enable)?;
    if args.now {
        writeln!(out, "enabled and started {name}")?;
    } else {
        writeln!(
            out,
            "enabled {name}: it starts at the next boot (`systemctl start {name}` starts it now)"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
fn uninstall(ctx: &Context, args: UninstallArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let name = unit_name(&args.unit_file)?;
    if crate::base::systemd::booted() && args.unit_file.exists() {
        // Stopping the unit leaves the containers running (SIGQUIT), unless it was installed
        // with --down-on-stop.
        service::systemctl(&["disable", "--now", &name])?;
        writeln!(out, "disabled and stopped {name}")?;
    }
    for path in [args.unit_file.clone(), ctx.paths.config().join("service.env")] {
        if service::remove_file(&path)? {
            writeln!(out, "removed {}", path.display())?;
        }
    }
    if crate::base::systemd::booted() {
        service::systemctl(&["daemon-reload"])?;
    }
    writeln!(
        out,
        "the node's containers are left as they are: `kboot down` stops them"
    )?;
    Ok(ExitCode::SUCCESS)
}

fn unit_name(path: &std::path::Path) -> anyhow::Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".service"))
        .with_context(|| format!("{}: a unit file's name ends in .service", path.display()))
        .map_err(|e| UsageError(format!("{e:#}")).into())
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: clap_complete::Shell,
}

/// Prints a completion script generated from the command-line definitions.
pub fn completions(_ctx: &Context, args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = super::Cli::command();
    // Into memory first: clap_complete panics on a write error (`| head` closing the pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "kboot", &mut script);
    std::io::stdout().lock().write_all(&script)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write kboot.1 and a page per subcommand (kboot-run.1, …) into DIR instead of
    /// printing kboot(1).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Prints the kboot(1) man page (roff), or writes every page into a directory, generated
/// from the command-line definitions.
#[allow(clippy::print_stdout)]
pub fn man(_ctx: &Context, args: ManArgs) -> anyhow::Result<ExitCode> {
    let cmd = super::Cli::command();
    match args.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            std::io::stdout().lock().write_all(&page)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir).with_context(|| format!("write man pages into {}", dir.display()))?;
            println!("wrote the man pages into {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
