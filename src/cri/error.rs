//! CRI errors and their gRPC codes, mapped in one place.

use std::io;
use std::path::PathBuf;

use tonic::{Code, Status};

/// What the CRI server can fail at. Caller mistakes (`NotFound`, `InvalidArgument`,
/// `FailedPrecondition`) are separate variants so they map to the code the kubelet expects.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("image store: {0}")]
    Image(String),
    /// A bundle could not be made: InvalidArgument when the request is at fault
    /// ([`BundleError::is_bad_request`]), Internal otherwise.
    #[error("OCI bundle")]
    Bundle(#[from] crate::bundle::BundleError),
    #[error("load the runtime spec {}", path.display())]
    LoadSpec {
        path: PathBuf,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("start container {id}: {message}")]
    StartContainer { id: String, message: String },
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0} is not supported by kboot")]
    Unsupported(&'static str),
    #[error("bind the CRI socket {}", path.display())]
    BindSocket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("serve gRPC on {}", path.display())]
    Serve {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("decode the record {}", path.display())]
    DecodeRecord {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("namespaces of sandbox {id}: {step}")]
    Netns {
        id: String,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("CNI {command} with plugin {plugin}: {message}")]
    Cni {
        command: &'static str,
        plugin: String,
        message: String,
    },
    #[error("CNI configuration {}: {message}", path.display())]
    CniConfig { path: PathBuf, message: String },
}

impl CriError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { what, path, source }
    }

    fn code(&self) -> Code {
        match self {
            Self::NotFound { .. } => Code::NotFound,
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Self::ResourceExhausted(_) => Code::ResourceExhausted,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Unsupported(_) => Code::Unimplemented,
            Self::Bundle(e) if e.is_bad_request() => Code::InvalidArgument,
            _ => Code::Internal,
        }
    }
}

impl From<CriError> for Status {
    fn from(err: CriError) -> Self {
        // The full chain, so crictl and the kubelet's events show the cause.
        Status::new(err.code(), crate::base::error::chain(&err))
    }
}

pub(crate) type Result<T, E = CriError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::BundleError;

    #[test]
    fn bundle_errors_are_invalid_argument_only_when_the_request_is_at_fault() {
        let bad = Status::from(CriError::from(BundleError::UnknownUser {
            service: "web".into(),
            user: "nobody2".into(),
        }));
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(
            bad.message().starts_with("OCI bundle: service `web`: user `nobody2`"),
            "{}",
            bad.message()
        );
        let io = Status::from(CriError::from(BundleError::Write {
            path: "/x/config.json".into(),
            source: io::Error::from(io::ErrorKind::StorageFull),
        }));
        assert_eq!(io.code(), Code::Internal);
        assert!(
            io.message().starts_with("OCI bundle: write /x/config.json: "),
            "{}",
            io.message()
        );
    }
}
