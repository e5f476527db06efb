//! Pushing a layout's tag to a registry, through skopeo (Debian package `skopeo`).

use std::path::Path;
use std::process::Command;

use crate::error::{BuildError, Result};

/// Copies `layout_dir:tag` to `docker://target` (`REGISTRY/REPO:TAG`), all platforms.
/// `insecure` allows plain HTTP / unverified TLS (loopback test registries).
pub fn push(layout_dir: &Path, tag: &str, target: &str, insecure: bool) -> Result<()> {
    let out = Command::new("skopeo")
        .args(["copy", "--all", "--quiet"])
        .arg(format!("--dest-tls-verify={}", !insecure))
        .arg(format!("oci:{}:{tag}", layout_dir.display()))
        .arg(format!("docker://{target}"))
        .output()
        .map_err(|e| BuildError::Push {
            target: target.into(),
            reason: format!("cannot run skopeo (install the skopeo package): {e}"),
        })?;
    if !out.status.success() {
        return Err(BuildError::Push {
            target: target.into(),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}
