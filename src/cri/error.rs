//! CRI errors and their gRPC codes, mapped in one place.

use std::io;
use std::path::PathBuf;

use tonic::{Code, Status};

use super::cni::CniError;
use crate::bundle::images::ImageError;
use crate::cgroups::v2::V2Error;
use crate::inroot::InRootError;
use crate::registry::RegistryError;

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
    /// Store errors are Internal, as they were before they were typed, except a bad
    /// reference (InvalidArgument).
    #[error("image store")]
    Store(#[from] crate::store::StoreError),
    /// NotFound and PermissionDenied where the registry says so, Internal otherwise.
    #[error("pull {image}")]
    Pull {
        image: String,
        #[source]
        source: crate::registry::RegistryError,
    },
    #[error("registries configuration")]
    Registries(#[source] crate::registry::RegistryError),
    /// The container's image: FailedPrecondition when it is missing, Internal when
    /// preparing its rootfs failed.
    #[error("container image")]
    ContainerImage(#[from] crate::bundle::images::ImageError),
    /// Reading the image's users and groups: InvalidArgument when the image is at fault.
    #[error("users and groups of the container image")]
    ImageFiles(#[from] crate::inroot::InRootError),
    /// InvalidArgument for limits the request got wrong, Internal for a failed write.
    #[error("cgroup v2 limits")]
    CgroupV2(#[from] crate::cgroups::v2::V2Error),
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
    /// FailedPrecondition when the node's network configuration or plugins are missing
    /// or wrong (nothing the request can change), Internal when a plugin run fails.
    #[error(transparent)]
    Cni(#[from] super::cni::CniError),
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
            Self::Store(crate::store::StoreError::InvalidReference { .. }) => Code::InvalidArgument,
            Self::Pull { source, .. } => match source {
                RegistryError::NotFound { .. } => Code::NotFound,
                RegistryError::CredentialsRequired { .. } | RegistryError::BadCredentials { .. } => {
                    Code::PermissionDenied
                }
                _ => Code::Internal,
            },
            Self::ContainerImage(ImageError::NotFound { .. } | ImageError::MissingDir { .. }) => {
                Code::FailedPrecondition
            }
            Self::ImageFiles(
                InRootError::Resolve { .. } | InRootError::NotRegular { .. } | InRootError::TooLarge { .. },
            ) => Code::InvalidArgument,
            Self::CgroupV2(V2Error::BadKey { .. } | V2Error::SwapBelowMemory { .. }) => Code::InvalidArgument,
            Self::Cni(
                CniError::NoConfig { .. }
                | CniError::NoPodCidr { .. }
                | CniError::ParseConfig { .. }
                | CniError::BadConfig { .. }
                | CniError::PluginMissing { .. }
                | CniError::PluginNotFound { .. },
            ) => Code::FailedPrecondition,
            // Everything else, I/O above all, is the server's failure.
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

    #[test]
    fn the_nodes_cni_setup_is_a_failed_precondition_a_failing_plugin_internal() {
        use super::super::cni::CniError;
        let none = CriError::from(CniError::NoConfig {
            dir: "/etc/cni/net.d".into(),
        });
        assert_eq!(Status::from(none).code(), Code::FailedPrecondition);
        let early = Status::from(CriError::from(CniError::NoPodCidr {
            path: "/etc/cni/net.d/10-flannel.conflist".into(),
        }));
        assert_eq!(early.code(), Code::FailedPrecondition);
        assert!(
            early.message().contains("uses {{.PodCIDR}} but no pod CIDR"),
            "{}",
            early.message()
        );
        let spawn = CriError::from(CniError::Run {
            command: "ADD",
            plugin: "bridge".into(),
            step: "run the plugin",
            source: io_err(),
        });
        let status = Status::from(spawn);
        assert_eq!(status.code(), Code::Internal);
        assert!(
            status
                .message()
                .starts_with("CNI ADD with plugin bridge: run the plugin: "),
            "{}",
            status.message()
        );
    }

    fn code_of(e: impl Into<CriError>) -> Code {
        Status::from(e.into()).code()
    }

    fn io_err() -> io::Error {
        io::Error::from(io::ErrorKind::PermissionDenied)
    }

    #[test]
    fn store_errors_are_internal_but_a_bad_reference() {
        let bad = crate::store::normalize_reference("UPPER/Case:!").unwrap_err();
        assert_eq!(code_of(bad), Code::InvalidArgument);
        let read = crate::store::StoreError::Read {
            path: "/s/index.json".into(),
            source: io_err(),
        };
        assert_eq!(code_of(read), Code::Internal);
    }

    #[test]
    fn pull_errors_say_not_found_and_permission_denied_where_the_registry_does() {
        let pull = |source| CriError::Pull {
            image: "r/i:1".into(),
            source,
        };
        let missing = RegistryError::NotFound {
            registry: "r".into(),
            reference: "i:1".into(),
            detail: "manifest unknown".into(),
        };
        assert_eq!(code_of(pull(missing)), Code::NotFound);
        let denied = RegistryError::CredentialsRequired {
            registry: "r".into(),
            repository: "i".into(),
        };
        assert_eq!(code_of(pull(denied)), Code::PermissionDenied);
        let token = RegistryError::Token {
            registry: "r".into(),
            realm: "https://auth".into(),
            detail: "timeout".into(),
        };
        assert_eq!(code_of(pull(token)), Code::Internal);
    }

    #[test]
    fn a_missing_container_image_is_a_failed_precondition_a_failed_unpack_internal() {
        let missing = ImageError::NotFound {
            service: "c".into(),
            image: "i".into(),
        };
        assert_eq!(code_of(missing), Code::FailedPrecondition);
        let unpack = ImageError::Prepare {
            service: "c".into(),
            image: "i".into(),
            step: "unpack",
            source: Box::new(io_err()),
        };
        assert_eq!(code_of(unpack), Code::Internal);
    }

    #[test]
    fn image_files_the_image_got_wrong_are_invalid_argument_io_is_not() {
        let fifo = InRootError::NotRegular {
            rootfs: "/r".into(),
            path: "/etc/group".into(),
            kind: "fifo",
        };
        assert_eq!(code_of(fifo), Code::InvalidArgument);
        let read = InRootError::Read {
            rootfs: "/r".into(),
            path: "/etc/group".into(),
            source: io_err(),
        };
        assert_eq!(code_of(read), Code::Internal);
    }

    #[test]
    fn cgroup_limits_the_request_got_wrong_are_invalid_argument_a_failed_write_is_not() {
        assert_eq!(code_of(V2Error::BadKey { key: "../x".into() }), Code::InvalidArgument);
        let write = V2Error::Write {
            path: "/sys/fs/cgroup/k/memory.max".into(),
            value: "1".into(),
            source: io_err(),
        };
        assert_eq!(code_of(write), Code::Internal);
        let io = CriError::io("read", "/x")(io_err());
        assert_eq!(code_of(io), Code::Internal);
    }
}
