//! `unpack REF DIR`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use super::Context;
use crate::store::Store;
use crate::unpack::unpack_image;

#[derive(Debug, Args)]
pub struct UnpackArgs {
    /// Image in the local store.
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Directory to create the flattened rootfs in (must be missing or empty).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

pub fn unpack(ctx: &Context, args: UnpackArgs) -> anyhow::Result<ExitCode> {
    if let Ok(mut entries) = std::fs::read_dir(&args.dir) {
        if entries.next().is_some() {
            anyhow::bail!(
                "{} is not empty: unpack into a new or empty directory",
                args.dir.display()
            );
        }
    }
    let store = Store::open(&ctx.paths).context("open the image store")?;
    let image = store
        .resolve(&args.reference)
        .with_context(|| format!("find image {} (pull or load it first)", args.reference))?;
    unpack_image(&store, &image, &args.dir)
        .with_context(|| format!("unpack {} into {}", image.reference, args.dir.display()))?;
    writeln!(
        std::io::stdout().lock(),
        "{}@{} unpacked into {}",
        image.reference,
        image.manifest_digest,
        args.dir.display()
    )?;
    Ok(ExitCode::SUCCESS)
}
