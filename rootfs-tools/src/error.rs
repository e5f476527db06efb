//! The one error type of the library: every variant names the step and the thing.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{step} {}: {source}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid path {path:?} in a layer: {reason} (use Layer::unchecked() to write hostile names on purpose)")]
    InvalidPath { path: String, reason: &'static str },
    #[error("bad --add spec {spec:?}: {reason}; expected SRC:DST[:MODE[:UID:GID]]")]
    AddSpec { spec: String, reason: String },
    #[error("{}: not a Debian package: {reason}", path.display())]
    Deb { path: PathBuf, reason: String },
    #[error("apt: {reason}")]
    Apt { reason: String },
    #[error("{}: {reason}", path.display())]
    Layout { path: PathBuf, reason: String },
    #[error("push to {target} failed: {reason}")]
    Push { target: String, reason: String },
}

pub type Result<T, E = BuildError> = std::result::Result<T, E>;

/// `map_err` helper: `.map_err(io("open", &path))`.
pub(crate) fn io<'a>(
    step: &'static str,
    path: impl Into<PathBuf> + 'a,
) -> impl FnOnce(std::io::Error) -> BuildError + 'a {
    move |source| BuildError::Io {
        step,
        path: path.into(),
        source,
    }
}
