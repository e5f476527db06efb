//! `pull`, `images`, `rmi`, `prune`, `load`, `save`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::{not_yet, Context};

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum ListFormat {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Platform to pick from a multi-platform image: OS/ARCH[/VARIANT] (default: this host).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Allow plain HTTP or unverified TLS for this registry (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,
    /// Registry credentials.
    #[arg(long, value_name = "USER:PASS", env = "KBOOT_CREDS", hide_env_values = true)]
    pub creds: Option<String>,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
    /// Images to pull: `etcd`, `registry.k8s.io/pause:3.9`, `name@sha256:…`.
    #[arg(required = true, value_name = "REF")]
    pub refs: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    #[arg(required = true, value_name = "REF")]
    pub refs: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// docker-save tar, OCI layout directory or tar; plain, gzip or zstd.
    #[arg(short = 'i', long = "input", value_name = "FILE")]
    pub input: PathBuf,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Where to write the OCI layout tar.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    #[arg(required = true, value_name = "REF")]
    pub refs: Vec<String>,
}

pub fn pull(_ctx: &Context, _args: PullArgs) -> anyhow::Result<ExitCode> {
    not_yet("pull", 2)
}
pub fn images(_ctx: &Context, _args: ImagesArgs) -> anyhow::Result<ExitCode> {
    not_yet("images", 2)
}
pub fn rmi(_ctx: &Context, _args: RmiArgs) -> anyhow::Result<ExitCode> {
    not_yet("rmi", 2)
}
pub fn prune(_ctx: &Context, _args: PruneArgs) -> anyhow::Result<ExitCode> {
    not_yet("prune", 2)
}
pub fn load(_ctx: &Context, _args: LoadArgs) -> anyhow::Result<ExitCode> {
    not_yet("load", 2)
}
pub fn save(_ctx: &Context, _args: SaveArgs) -> anyhow::Result<ExitCode> {
    not_yet("save", 2)
}
