//! `kboot cri serve`: the CRI server alone, until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::Context;
use crate::cri::{CniDirs, CriConfig};

#[derive(Debug, Args)]
pub struct CriArgs {
    #[command(subcommand)]
    pub command: CriCommand,
}

#[derive(Debug, Subcommand)]
pub enum CriCommand {
    /// Serve RuntimeService and ImageService on the CRI socket (`<state>/cri.sock`).
    Serve(ServeArgs),
    /// Internal: start the init of a new PID namespace for a pod; prints its PID.
    #[command(hide = true)]
    PodHolder(crate::shim::launch::PodHolderArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory of CNI network configurations (the first file in name order is used).
    #[arg(long, value_name = "DIR", default_value = crate::state::CNI_CONF_DIR)]
    pub cni_conf_dir: PathBuf,
    /// Directory of CNI plugin binaries; repeat to search several, in order.
    #[arg(long, value_name = "DIR", default_values = crate::state::CNI_BIN_DIRS)]
    pub cni_bin_dir: Vec<PathBuf>,
}

pub fn cri(ctx: &Context, args: CriArgs) -> anyhow::Result<ExitCode> {
    let serve = match args.command {
        CriCommand::Serve(serve) => serve,
        CriCommand::PodHolder(a) => {
            let pid = crate::cri::holder::spawn_in_new_pid_namespace(a.uid_map.zip(a.gid_map))
                .map_err(|e| anyhow::anyhow!("start a PID namespace holder: {e}"))?;
            std::io::Write::write_all(&mut std::io::stdout(), format!("{pid}\n").as_bytes())?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    let config = CriConfig {
        paths: ctx.paths.clone(),
        cni: CniDirs {
            conf_dir: serve.cni_conf_dir,
            bin_dirs: serve.cni_bin_dir,
        },
    };
    ctx.block_on(async move {
        let shutdown = async {
            use tokio::signal::unix::{signal, SignalKind};
            match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
                }
                _ => std::future::pending::<()>().await,
            }
        };
        crate::cri::serve_with(config, shutdown).await
    })??;
    Ok(ExitCode::SUCCESS)
}
