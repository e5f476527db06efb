use std::time::Duration;

use crate::store::StoreError;

/// What went wrong talking to a registry, naming the registry and the thing.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("image {reference} not found on {registry}: {detail}")]
    NotFound {
        registry: String,
        reference: String,
        detail: String,
    },
    #[error("{registry} refused the credentials for {repository} (HTTP {status}); check --creds, registries.toml or ~/.docker/config.json")]
    BadCredentials {
        registry: String,
        repository: String,
        status: u16,
    },
    #[error("{registry} needs credentials for {repository}; pass --creds USER:PASS or add them to registries.toml")]
    CredentialsRequired { registry: String, repository: String },
    #[error("token service {realm} for {registry} failed: {detail}")]
    Token {
        registry: String,
        realm: String,
        detail: String,
    },
    #[error("TLS with {host} failed: {detail}; if it serves plain HTTP or a certificate from a private CA, pass --insecure-registry {host} or set `ca_file` for it in registries.toml")]
    Tls { host: String, detail: String },
    #[error("{method} {url}")]
    Http {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered HTTP {status}{}: {body}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    Status {
        url: String,
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    #[error("{url}: the connection broke after {got} bytes")]
    Interrupted {
        url: String,
        got: u64,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: the body ended after {got} of {expected} bytes")]
    Truncated { url: String, got: u64, expected: u64 },
    #[error("{url}: the body is larger than the {expected} bytes the manifest declares")]
    TooLarge { url: String, expected: u64 },
    #[error("manifest {reference} from {registry}: {detail}")]
    BadManifest {
        registry: String,
        reference: String,
        detail: String,
    },
    #[error("{reference}: every location failed: {}", attempts.join("; "))]
    AllLocationsFailed { reference: String, attempts: Vec<String> },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("configuration {path}: {detail}")]
    Config { path: String, detail: String },
    #[error("background task failed: {0}")]
    Task(String),
}

impl RegistryError {
    /// Errors worth another attempt at the same place (network, 5xx, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Http { source, .. } => {
                source.is_connect() || source.is_timeout() || source.is_body() || source.is_request()
            }
            RegistryError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            RegistryError::Truncated { .. } | RegistryError::Interrupted { .. } => true,
            _ => false,
        }
    }

    /// How long the server asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RegistryError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// TLS failures (untrusted certificate, a plain-HTTP server) reach us as an
/// `InvalidData` I/O error somewhere in the chain. Asking again cannot fix them.
pub(crate) fn is_tls_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        // hyper-util wraps rustls's io::Error in another io::Error, whose
        // source() skips the inner one; look inside with get_ref().
        let mut io = e.downcast_ref::<std::io::Error>();
        while let Some(i) = io {
            if i.kind() == std::io::ErrorKind::InvalidData {
                return true;
            }
            io = i.get_ref().and_then(|inner| inner.downcast_ref::<std::io::Error>());
        }
        current = e.source();
    }
    false
}
