//! `run`, `ps`, `logs`, `exec`, `stop`, `start`, `rm`, `down`, and the hidden `shim`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::images::ListFormat;
use super::{not_yet, Context};

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
    pub role_flags: super::roles::RoleFlags,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub name: String,
    /// Keep printing new output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    pub name: String,
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// Also remove data: etcd data, images, PKI.
    #[arg(long)]
    pub purge: bool,
}

#[derive(Debug, Args)]
pub struct ShimArgs {
    #[arg(long)]
    pub id: String,
    #[arg(long)]
    pub bundle: PathBuf,
}

pub fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<ExitCode> {
    if let Some(role) = &args.role {
        return super::roles::run_role(ctx, role, &args);
    }
    not_yet("run -f", 4)
}
pub fn ps(_ctx: &Context, _args: PsArgs) -> anyhow::Result<ExitCode> {
    not_yet("ps", 4)
}
pub fn logs(_ctx: &Context, _args: LogsArgs) -> anyhow::Result<ExitCode> {
    not_yet("logs", 4)
}
pub fn exec(_ctx: &Context, _args: ExecArgs) -> anyhow::Result<ExitCode> {
    not_yet("exec", 4)
}
pub fn stop(_ctx: &Context, _args: NamesArgs) -> anyhow::Result<ExitCode> {
    not_yet("stop", 4)
}
pub fn start(_ctx: &Context, _args: NamesArgs) -> anyhow::Result<ExitCode> {
    not_yet("start", 4)
}
pub fn rm(_ctx: &Context, _args: NamesArgs) -> anyhow::Result<ExitCode> {
    not_yet("rm", 4)
}
pub fn down(_ctx: &Context, _args: DownArgs) -> anyhow::Result<ExitCode> {
    not_yet("down", 4)
}
pub fn shim(_ctx: &Context, _args: ShimArgs) -> anyhow::Result<ExitCode> {
    not_yet("shim", 4)
}
