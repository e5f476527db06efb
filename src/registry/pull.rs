//! `kboot pull`: reference → locations (rewrites, mirrors) → manifest (index →
//! platform) → config and layers, concurrently, into the store → name.

use std::str::FromStr;

use futures_util::stream::{self, TryStreamExt};
use oci_spec::image::{Descriptor, Digest, MediaType};
use sha2::{Digest as _, Sha256};
use tracing::{info, instrument, warn};

use super::client::{Progress, RegistryClient};
use super::config::Location;
use super::error::RegistryError;
use crate::base::error::chain;
use crate::store::PlatformSpec;
use crate::store::{normalize_reference, parse_manifest, IndexEntry, Manifest, Store, StoreError, DOCKER_CONFIG};

#[derive(Debug, Clone)]
pub struct PullOptions {
    pub platform: PlatformSpec,
    /// Blobs downloaded at once.
    pub concurrency: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            platform: PlatformSpec::host(),
            concurrency: 4,
        }
    }
}

/// A pulled image: the normalized reference and its platform manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub reference: String,
    pub manifest_digest: Digest,
}

impl Pulled {
    /// `REF@sha256:…` as `kboot pull` prints it (any digest in REF replaced).
    pub fn pinned(&self) -> String {
        let base = self.reference.split('@').next().unwrap_or(&self.reference);
        format!("{base}@{}", self.manifest_digest)
    }
}

#[derive(Debug)]
pub struct Puller {
    pub client: RegistryClient,
    pub store: Store,
    pub options: PullOptions,
}

fn sha256_digest(bytes: &[u8]) -> Digest {
    Digest::from_str(&format!("sha256:{}", hex::encode(Sha256::digest(bytes)))).expect("valid sha256 digest")
}

impl Puller {
    /// A puller for this host: the store at `paths`, `registries.toml` and
    /// Docker's config.json for locations and credentials, the host platform.
    pub fn new(paths: &crate::state::Paths) -> Result<Self, RegistryError> {
        Ok(Self {
            client: RegistryClient::new(super::RegistriesConfig::load(&paths.registries_config())?),
            store: Store::open(paths)?,
            options: PullOptions::default(),
        })
    }

    /// Pulls one image; tries each location in turn until one serves the manifest.
    #[instrument(skip(self, progress), fields(platform = %self.options.platform))]
    pub async fn pull(&self, reference: &str, progress: &dyn Progress) -> Result<Pulled, RegistryError> {
        let parsed = normalize_reference(reference)?;
        let normalized = parsed.whole();
        let _writing = {
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.writer_guard())
                .await
                .map_err(|e| RegistryError::Task(e.to_string()))??
        };
        let tag_or_digest = parsed
            .digest()
            .map(str::to_string)
            .or_else(|| parsed.tag().map(str::to_string))
            .unwrap_or_else(|| "latest".into());
        let locations = self.client.config.locations(parsed.registry(), parsed.repository());
        let mut attempts = Vec::new();
        let mut last = None;
        for (i, loc) in locations.iter().enumerate() {
            match self.pull_from(loc, &tag_or_digest, parsed.digest(), progress).await {
                Ok(entry) => {
                    let manifest_digest = entry.manifest.clone();
                    let key = self.store.tag(&normalized, entry)?;
                    info!(reference = %key, digest = %manifest_digest, registry = %loc.registry, "pulled");
                    return Ok(Pulled {
                        reference: key,
                        manifest_digest,
                    });
                }
                // Our own mistakes (the store, the platform) are not the location's fault.
                Err(e @ (RegistryError::Store(_) | RegistryError::Config { .. })) => return Err(e),
                Err(e) => {
                    // The last failure is returned, not logged (it is handled by the caller).
                    if i + 1 < locations.len() {
                        warn!(registry = %loc.registry, error = %chain(&e), "location failed, trying the next");
                    }
                    attempts.push(format!("{}/{}: {e}", loc.registry, loc.repository));
                    last = Some(e);
                }
            }
        }
        match (attempts.len(), last) {
            (1, Some(e)) => Err(e),
            _ => Err(RegistryError::AllLocationsFailed {
                reference: normalized,
                attempts,
            }),
        }
    }

    async fn pull_from(
        &self,
        loc: &Location,
        tag_or_digest: &str,
        pinned: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<IndexEntry, RegistryError> {
        let bad = |detail: String| RegistryError::BadManifest {
            registry: loc.registry.clone(),
            reference: format!("{}:{tag_or_digest}", loc.repository),
            detail,
        };
        let top_bytes = self.client.manifest(loc, tag_or_digest).await?;
        let top_digest = sha256_digest(&top_bytes);
        if let Some(pin) = pinned {
            if top_digest.as_ref() != pin {
                return Err(bad(format!("content has digest {top_digest}, not the requested {pin}")));
            }
        }
        let (manifest_bytes, manifest_digest, index) = match parse_manifest(&top_bytes, top_digest.as_ref())? {
            Manifest::Image(_) => (top_bytes, top_digest, None),
            Manifest::Index(index) => {
                let chosen = self.options.platform.choose(index.manifests()).map_err(|available| {
                    StoreError::PlatformNotFound {
                        digest: format!("{}/{}:{tag_or_digest}", loc.registry, loc.repository),
                        wanted: self.options.platform.to_string(),
                        available,
                    }
                })?;
                let child = chosen.digest().clone();
                let bytes = self.client.manifest(loc, child.as_ref()).await?;
                let actual = sha256_digest(&bytes);
                if actual != child {
                    return Err(bad(format!("manifest {child} has the wrong content (digest {actual})")));
                }
                self.store.write_blob(&top_bytes, Some(&top_digest))?;
                (bytes, child, Some(top_digest))
            }
        };
        let Manifest::Image(manifest) = parse_manifest(&manifest_bytes, manifest_digest.as_ref())? else {
            return Err(bad(format!("{manifest_digest} is an index inside an index")));
        };
        let config = manifest.config();
        let config_ok =
            matches!(config.media_type(), MediaType::ImageConfig) || config.media_type().to_string() == DOCKER_CONFIG;
        if !config_ok {
            return Err(StoreError::UnsupportedMediaType {
                what: "image config",
                digest: config.digest().to_string(),
                media_type: config.media_type().to_string(),
            }
            .into());
        }
        let blobs: Vec<Descriptor> = std::iter::once(config.clone())
            .chain(manifest.layers().iter().cloned())
            .collect();
        stream::iter(blobs.iter().map(Ok::<_, RegistryError>))
            .try_for_each_concurrent(self.options.concurrency.max(1), |d| async move {
                self.client.blob(loc, d.digest(), d.size(), &self.store, progress).await
            })
            .await?;
        // Check the config parses before naming the image, then keep the manifest.
        self.store.write_blob(&manifest_bytes, Some(&manifest_digest))?;
        self.store
            .load_image(format!("{}/{}", loc.registry, loc.repository), &manifest_digest)?;
        Ok(IndexEntry {
            manifest: manifest_digest,
            index,
        })
    }
}
