//! Error chains as one line of text, and the I/O error every module names a path with.

use std::path::PathBuf;

/// An I/O step that failed on a path ("create /var/lib/kboot: Permission denied").
/// Modules whose errors are mostly this wrap it as `Io(#[from] PathIo)`.
#[derive(Debug, thiserror::Error)]
#[error("{step} {}", path.display())]
pub struct PathIo {
    pub step: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl PathIo {
    /// The error of `step` on `path`, for `map_err`: `.map_err(PathIo::at("create", dir))?`
    /// (a module error that wraps it `#[from]` takes it through `?`).
    pub fn at(step: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> PathIo {
        let path = path.into();
        move |source| PathIo { step, path, source }
    }
}

/// The error and all its causes, `: `-separated, for logs, records and gRPC
/// messages that must show the cause (`{err:#}` does this only for anyhow).
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("open config")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_joins_every_cause() {
        let err = Outer(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"));
        assert_eq!(super::chain(&err), "open config: no such file");
    }

    #[test]
    fn path_io_names_the_step_and_the_path() {
        let err =
            super::PathIo::at("create", "/var/lib/kboot")(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert_eq!(super::chain(&err), "create /var/lib/kboot: permission denied");
    }
}
