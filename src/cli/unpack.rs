//! `unpack REF DIR`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{not_yet, Context};

#[derive(Debug, Args)]
pub struct UnpackArgs {
    /// Image in the local store.
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Directory to create the flattened rootfs in.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

pub fn unpack(_ctx: &Context, _args: UnpackArgs) -> anyhow::Result<ExitCode> {
    not_yet("unpack", 3)
}
