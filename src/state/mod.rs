//! Locations on disk, records and locks. Every path kboot touches comes from
//! one [`Paths`] value, so tests can point the whole program at a temp dir.

mod paths;

pub use paths::{config_json, ContainerDir, Paths, SandboxDir, CNI_BIN_DIR, CNI_BIN_DIRS, CNI_CONF_DIR};

use std::path::PathBuf;

/// Resolves `--root`, `--state`, `--config` (or their env vars) against the defaults.
pub fn paths_from(root: Option<PathBuf>, state: Option<PathBuf>, config: Option<PathBuf>) -> Paths {
    Paths::new(
        root.unwrap_or_else(|| paths::DEFAULT_ROOT.into()),
        state.unwrap_or_else(|| paths::DEFAULT_STATE.into()),
        config.unwrap_or_else(|| paths::DEFAULT_CONFIG.into()),
    )
}
