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

pub fn plan(_ctx: &Context, _args: PlanArgs) -> anyhow::Result<ExitCode> {
    not_yet("plan", 5)
}
