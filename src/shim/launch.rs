//! How kboot starts its own processes (`kboot shim`, `kboot supervise`,
//! `kboot cri pod-holder`, `kboot exec`): the running binary, on the same root,
//! state and config as the process that starts them. The one binary-path policy:
//! every internal process runs [`SELF_EXE`], never a path looked up again.

use std::path::Path;

use crate::state::Paths;

/// The running binary. Even after an upgrade replaced (deleted) the file on
/// disk, this is the binary of the calling process, so a shim or `kboot exec`
/// always matches the server that wrote the bundle.
pub const SELF_EXE: &str = "/proc/self/exe";

/// `kboot --root R --state S --config C`, for the caller to add a subcommand to.
/// `argv[0]` is `kboot`, so `ps` and `pgrep -f` show what runs.
pub fn kboot_command(paths: &Paths) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(Path::new(SELF_EXE));
    command
        .arg0("kboot")
        .arg("--root")
        .arg(paths.root())
        .arg("--state")
        .arg(paths.state())
        .arg("--config")
        .arg(paths.config());
    command
}
