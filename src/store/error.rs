use std::io;
use std::path::PathBuf;

/// What went wrong in the content store, naming the step and the thing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("image {reference} is not in the store: run `kboot pull {reference}` or `kboot load -i FILE` first")]
    NotFound { reference: String },
    #[error("invalid image reference {reference:?} ({source}); write it like `etcd`, `registry.k8s.io/pause:3.9` or `name@sha256:<64 hex>`")]
    InvalidReference {
        reference: String,
        #[source]
        source: oci_spec::distribution::ParseError,
    },
    #[error("create directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("lock {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("blob {digest} is not in the store ({}); pull or load the image again", path.display())]
    MissingBlob { digest: String, path: PathBuf },
    #[error("open blob {digest} at {}", path.display())]
    OpenBlob {
        digest: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("content does not match its digest: expected {expected}, got {actual} ({size} bytes); nothing was stored")]
    DigestMismatch {
        expected: String,
        actual: String,
        size: u64,
    },
    #[error("{what} {digest} is not valid JSON of its kind")]
    ParseJson {
        what: &'static str,
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("unsupported digest {digest}: only sha256 is supported")]
    UnsupportedDigest { digest: String },
    #[error("{what} {digest} has media type {media_type}, which kboot does not support")]
    UnsupportedMediaType {
        what: &'static str,
        digest: String,
        media_type: String,
    },
    #[error("image index {digest} has no manifest for {wanted}; it has: {}", available.join(", "))]
    PlatformNotFound {
        digest: String,
        wanted: String,
        available: Vec<String>,
    },
    #[error("image index file {} is corrupt; fix or remove it", path.display())]
    CorruptIndex {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} is not an image archive: {why}", path.display())]
    NotAnImage { path: PathBuf, why: String },
    #[error("archive {} is corrupt or truncated", path.display())]
    CorruptArchive {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("archive {} is incomplete: it lacks {what} {digest}", path.display())]
    ArchiveMissing {
        path: PathBuf,
        what: &'static str,
        digest: String,
    },
    #[error("archive {}: entry {entry}", path.display())]
    ArchiveEntry {
        path: PathBuf,
        entry: String,
        #[source]
        source: Box<StoreError>,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
