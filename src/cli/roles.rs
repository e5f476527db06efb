//! `plan master|worker` (and, later, the role half of `run`).

use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::{not_yet, Context};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PlanFormat {
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// `master` or `worker`.
    pub role: String,
    #[arg(long, value_enum, default_value_t = PlanFormat::Yaml)]
    pub format: PlanFormat,
}

/// `run master|worker` flags (kube-deploy's variables are read from the environment too).
#[derive(Debug, Default, Args)]
pub struct RoleFlags {}

pub fn run_role(_ctx: &Context, _role: &str, _args: &super::containers::RunArgs) -> anyhow::Result<ExitCode> {
    not_yet("run master|worker", 5)
}

pub fn plan(_ctx: &Context, _args: PlanArgs) -> anyhow::Result<ExitCode> {
    not_yet("plan", 5)
}
