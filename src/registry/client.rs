//! HTTP side of the distribution API: auth, retries, manifests, blobs.
//!
//! Why not `oci-client` (the default choice): it was tried first and
//! does the happy path well, but two requirements cannot be met through its
//! API. (1) Retries honouring `Retry-After`: its error for a non-2xx answer
//! (`validate_registry_response`) keeps status, URL and body but drops the
//! headers, so a 429's `Retry-After` is lost. (2) Streaming straight into the
//! store's resumable ingest file with our own digest check: its partial
//! download hands back an unverified stream and leaves verification to the
//! caller anyway. What remains is ~300 lines on reqwest (the HTTP client
//! oci-client itself uses) with oci-spec types throughout.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, RANGE, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use serde::Deserialize;
use tracing::{debug, warn};

use super::auth::{Authorization, Challenge, TokenCache};
use super::config::{Location, RegistriesConfig};
use super::error::{is_tls_failure, RegistryError};
use crate::base::error::chain;
use crate::store::{BlobWriter, Ingest, Store};

/// Everything kboot can read, most preferred first.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.v1+prettyjws;q=0.1";

/// Manifests bigger than this are refused (registries cap them at 4 MiB).
const MAX_MANIFEST: usize = 4 << 20;

/// How often and how patiently to retry transient failures.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    /// The longest single wait, also capping a server's `Retry-After`.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            base: Duration::from_millis(250),
            max_wait: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    fn wait(&self, attempt: u32, err: &RegistryError) -> Duration {
        let backoff = self.base.saturating_mul(1 << attempt.min(8));
        err.retry_after().unwrap_or(backoff).min(self.max_wait)
    }
}

/// Something told about download progress, per blob.
pub trait Progress: Send + Sync {
    fn start(&self, _digest: &str, _total: u64, _already: u64) {}
    fn advance(&self, _digest: &str, _bytes: u64) {}
    /// `downloaded` is false when the blob was already in the store.
    fn finish(&self, _digest: &str, _downloaded: bool) {}
}

/// No progress reporting.
#[derive(Debug, Default)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// A registry client for one `pull` (or one supervisor): HTTP clients per
/// trust setting, the scheme chosen per insecure host, and the token cache.
#[derive(Debug)]
pub struct RegistryClient {
    pub config: RegistriesConfig,
    pub retry: RetryPolicy,
    clients: Mutex<HashMap<String, reqwest::Client>>,
    schemes: Mutex<HashMap<String, &'static str>>,
    tokens: TokenCache,
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or_default())
}

/// Docker Hub's API lives on another host than its name.
fn endpoint(host: &str) -> &str {
    match host {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        h => h,
    }
}

impl RegistryClient {
    pub fn new(config: RegistriesConfig) -> Self {
        Self {
            config,
            retry: RetryPolicy::default(),
            clients: Mutex::new(HashMap::new()),
            schemes: Mutex::new(HashMap::new()),
            tokens: TokenCache::default(),
        }
    }

    /// The HTTP client for `host`: system roots plus its `ca_file`, or no
    /// verification at all for an insecure host.
    fn http(&self, host: &str) -> Result<reqwest::Client, RegistryError> {
        let insecure = self.config.is_insecure(host);
        let ca = self.config.ca_file(host).map(|p| p.to_path_buf());
        let key = format!(
            "{insecure}|{}",
            ca.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
        );
        let mut clients = self.clients.lock().map_err(|e| RegistryError::Task(e.to_string()))?;
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("kboot/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            // reqwest drops Authorization when a redirect leaves the host, so
            // blob redirects to a CDN never carry our credentials.
            .redirect(reqwest::redirect::Policy::limited(10))
            .danger_accept_invalid_certs(insecure);
        if let Some(path) = &ca {
            let cfg_err = |detail: String| RegistryError::Config {
                path: path.display().to_string(),
                detail,
            };
            let pem = std::fs::read(path).map_err(|e| cfg_err(e.to_string()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| cfg_err(e.to_string()))? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|source| RegistryError::Http {
            method: "BUILD",
            url: host.to_string(),
            source,
        })?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// `https`, unless the host is insecure and does not speak TLS.
    async fn scheme(&self, host: &str) -> Result<&'static str, RegistryError> {
        if !self.config.is_insecure(host) {
            return Ok("https");
        }
        if let Some(s) = self.schemes.lock().ok().and_then(|m| m.get(host).copied()) {
            return Ok(s);
        }
        let probe = format!("https://{}/v2/", endpoint(host));
        let scheme = match self
            .http(host)?
            .get(&probe)
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(_) => "https",
            Err(e) => {
                debug!(host, error = %e, "no TLS on insecure registry, using plain HTTP");
                "http"
            }
        };
        if let Ok(mut m) = self.schemes.lock() {
            m.insert(host.to_string(), scheme);
        }
        Ok(scheme)
    }

    /// GET `/v2/<repo>/<path>` with auth and retries; returns a 2xx response.
    pub async fn get(&self, loc: &Location, path: &str, headers: HeaderMap) -> Result<Response, RegistryError> {
        let mut attempt = 0;
        loop {
            match self.get_once(loc, path, &headers).await {
                Ok(r) => return Ok(r),
                Err(e) if e.is_transient() && attempt + 1 < self.retry.attempts => {
                    let wait = self.retry.wait(attempt, &e);
                    warn!(registry = %loc.registry, path, error = %chain(&e), wait_ms = wait.as_millis() as u64, "retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn send(&self, loc: &Location, url: &str, headers: &HeaderMap) -> Result<Response, RegistryError> {
        let mut req = self.http(&loc.registry)?.get(url).headers(headers.clone());
        match self.tokens.get(&loc.registry, &loc.repository) {
            Some(Authorization::Bearer(t)) => req = req.bearer_auth(t),
            Some(Authorization::Basic(c)) => req = req.basic_auth(c.username, Some(c.password)),
            None => {}
        }
        req.send().await.map_err(|source| {
            if url.starts_with("https:") && is_tls_failure(&source) {
                RegistryError::Tls {
                    host: loc.registry.clone(),
                    detail: chain(&source),
                }
            } else {
                RegistryError::Http {
                    method: "GET",
                    url: url.to_string(),
                    source,
                }
            }
        })
    }

    async fn get_once(&self, loc: &Location, path: &str, headers: &HeaderMap) -> Result<Response, RegistryError> {
        let scheme = self.scheme(&loc.registry).await?;
        let url = format!("{scheme}://{}/v2/{}/{path}", endpoint(&loc.registry), loc.repository);
        let mut resp = self.send(loc, &url, headers).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let had_auth = self.tokens.get(&loc.registry, &loc.repository).is_some();
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|h| h.to_str().ok())
                .and_then(Challenge::parse);
            self.tokens.forget(&loc.registry, &loc.repository);
            if let (Some(challenge), false) = (challenge, had_auth) {
                self.authorize(loc, challenge).await?;
                resp = self.send(loc, &url, headers).await?;
            }
            if resp.status() == StatusCode::UNAUTHORIZED {
                self.tokens.forget(&loc.registry, &loc.repository);
                return Err(self.unauthorized(loc, 401));
            }
        }
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        if status == 403 {
            return Err(self.unauthorized(loc, 403));
        }
        let retry_after = parse_retry_after(resp.headers());
        let body = resp.text().await.unwrap_or_default();
        Err(RegistryError::Status {
            url,
            status,
            body: body.chars().take(300).collect::<String>().trim().to_string(),
            retry_after,
        })
    }

    fn unauthorized(&self, loc: &Location, status: u16) -> RegistryError {
        if self.config.credentials(&loc.registry).is_some() {
            RegistryError::BadCredentials {
                registry: loc.registry.clone(),
                repository: loc.repository.clone(),
                status,
            }
        } else {
            RegistryError::CredentialsRequired {
                registry: loc.registry.clone(),
                repository: loc.repository.clone(),
            }
        }
    }

    /// Answers a challenge: Basic with our credentials, or a Bearer token for
    /// `repository:<repo>:pull` from the realm (with Basic credentials if any).
    async fn authorize(&self, loc: &Location, challenge: Challenge) -> Result<(), RegistryError> {
        let creds = self.config.credentials(&loc.registry);
        match challenge {
            Challenge::Basic => {
                let Some(c) = creds else {
                    return Err(self.unauthorized(loc, 401));
                };
                self.tokens
                    .put(&loc.registry, &loc.repository, Authorization::Basic(c), None);
                Ok(())
            }
            Challenge::Bearer { realm, service, .. } => {
                let scope = format!("repository:{}:pull", loc.repository);
                let mut query = vec![("scope", scope.as_str())];
                if let Some(s) = &service {
                    query.push(("service", s.as_str()));
                }
                let token_err = |detail: String| RegistryError::Token {
                    registry: loc.registry.clone(),
                    realm: realm.clone(),
                    detail,
                };
                let mut req = self.http(&loc.registry)?.get(&realm).query(&query);
                if let Some(c) = &creds {
                    req = req.basic_auth(&c.username, Some(&c.password));
                }
                let resp = req.send().await.map_err(|e| token_err(e.to_string()))?;
                match resp.status() {
                    s if s.is_success() => {}
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                        return Err(self.unauthorized(loc, resp.status().as_u16()))
                    }
                    s => return Err(token_err(format!("HTTP {s}"))),
                }
                let bytes = resp.bytes().await.map_err(|e| token_err(e.to_string()))?;
                let body: TokenResponse = serde_json::from_slice(&bytes).map_err(|e| token_err(e.to_string()))?;
                let token = body
                    .token
                    .or(body.access_token)
                    .ok_or_else(|| token_err("no token in the answer".into()))?;
                // The spec's default lifetime when the server does not say.
                let lifetime = Duration::from_secs(body.expires_in.unwrap_or(60).max(1));
                self.tokens.put(
                    &loc.registry,
                    &loc.repository,
                    Authorization::Bearer(token),
                    Some(lifetime),
                );
                Ok(())
            }
        }
    }

    /// Fetches a manifest or index by tag or digest; returns its bytes. A body
    /// cut short is fetched again (the request itself retries inside `get`).
    pub async fn manifest(&self, loc: &Location, tag_or_digest: &str) -> Result<Vec<u8>, RegistryError> {
        let mut attempt = 0;
        loop {
            match self.manifest_once(loc, tag_or_digest).await {
                Err(e @ RegistryError::Interrupted { .. }) if attempt + 1 < self.retry.attempts => {
                    warn!(registry = %loc.registry, error = %chain(&e), "manifest body interrupted, retrying");
                    tokio::time::sleep(self.retry.wait(attempt, &e)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn manifest_once(&self, loc: &Location, tag_or_digest: &str) -> Result<Vec<u8>, RegistryError> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        let reference = format!("{}/{}:{tag_or_digest}", loc.registry, loc.repository);
        let resp = match self.get(loc, &format!("manifests/{tag_or_digest}"), headers).await {
            Err(RegistryError::Status { status: 404, body, .. }) => {
                return Err(RegistryError::NotFound {
                    registry: loc.registry.clone(),
                    reference,
                    detail: body,
                })
            }
            other => other?,
        };
        let url = resp.url().to_string();
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| RegistryError::Interrupted {
                url: url.clone(),
                got: body.len() as u64,
                source,
            })?;
            body.extend_from_slice(&chunk);
            if body.len() > MAX_MANIFEST {
                return Err(RegistryError::BadManifest {
                    registry: loc.registry.clone(),
                    reference,
                    detail: format!("larger than {MAX_MANIFEST} bytes"),
                });
            }
        }
        Ok(body)
    }

    /// Downloads one blob into the store: resumes a partial file with a Range
    /// request, retries transient failures from where it stopped, and lands
    /// the blob only if its bytes match `digest`.
    pub async fn blob(
        &self,
        loc: &Location,
        digest: &oci_spec::image::Digest,
        size: u64,
        store: &Store,
        progress: &dyn Progress,
    ) -> Result<(), RegistryError> {
        let id = digest.to_string();
        let ingest = {
            let (store, digest) = (store.clone(), digest.clone());
            tokio::task::spawn_blocking(move || store.ingest(&digest))
                .await
                .map_err(|e| RegistryError::Task(e.to_string()))??
        };
        let mut writer: Box<BlobWriter> = match ingest {
            Ingest::Present => {
                progress.finish(&id, false);
                return Ok(());
            }
            Ingest::Write(w) => w,
        };
        if writer.offset() > size {
            writer.restart()?;
        }
        progress.start(&id, size, writer.offset());
        let mut attempt = 0;
        while writer.offset() < size || size == 0 {
            match self.blob_attempt(loc, &id, size, &mut writer, progress).await {
                Ok(()) => break,
                Err(e) if e.is_transient() && attempt + 1 < self.retry.attempts => {
                    let wait = self.retry.wait(attempt, &e);
                    warn!(blob = %id, offset = writer.offset(), error = %chain(&e), "blob download interrupted, resuming");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
        tokio::task::spawn_blocking(move || writer.commit())
            .await
            .map_err(|e| RegistryError::Task(e.to_string()))??;
        progress.finish(&id, true);
        Ok(())
    }

    async fn blob_attempt(
        &self,
        loc: &Location,
        id: &str,
        size: u64,
        writer: &mut BlobWriter,
        progress: &dyn Progress,
    ) -> Result<(), RegistryError> {
        let mut headers = HeaderMap::new();
        let offset = writer.offset();
        if offset > 0 {
            let range = HeaderValue::from_str(&format!("bytes={offset}-")).expect("a range is a valid header");
            headers.insert(RANGE, range);
        }
        let resp = self.get(loc, &format!("blobs/{id}"), headers).await?;
        if resp.status() != StatusCode::PARTIAL_CONTENT && writer.offset() > 0 {
            debug!(blob = id, "server ignored the Range request; starting over");
            writer.restart()?;
            progress.start(id, size, 0);
        }
        let url = resp.url().to_string();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| RegistryError::Interrupted {
                url: url.clone(),
                got: writer.offset(),
                source,
            })?;
            if writer.offset() + chunk.len() as u64 > size {
                // More bytes than declared: never store it; start clean next time.
                writer.restart()?;
                return Err(RegistryError::TooLarge { url, expected: size });
            }
            writer.write_chunk(&chunk)?;
            progress.advance(id, chunk.len() as u64);
        }
        if writer.offset() < size {
            return Err(RegistryError::Truncated {
                url,
                got: writer.offset(),
                expected: size,
            });
        }
        Ok(())
    }
}
