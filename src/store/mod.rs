//! Content store: content-addressed blobs, the image name index, garbage
//! collection, and `load`/`save` of air-gap archives.
//!
//! Layout (all from [`Paths`]): blobs at `content/blobs/sha256/<hex>`, partial
//! writes in `content/ingest/`, the name index at `images/index.json`. Every
//! blob is verified against its digest before it becomes visible, and lands by
//! rename, so a reader never sees a partial or wrong blob.

mod archive;
mod blob;
mod error;
mod fsutil;
mod index;
pub mod platform;
mod reference;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::path::PathBuf;

use oci_spec::distribution::Reference;
use oci_spec::image::{Digest, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::Serialize;

use crate::state::Paths;

pub use archive::LoadedImage;
pub use blob::{BlobWriter, Ingest};
pub use error::StoreError;
pub use fsutil::LockGuard;
pub use index::IndexEntry;
pub use platform::PlatformSpec;

use blob::sha256_hex;
use error::Result;
use fsutil::{create_dir, lock, read_file};
use index::IndexFile;

/// Docker's media types, which are the same JSON shape as OCI's.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_MANIFEST_V1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The content store on disk.
#[derive(Debug, Clone)]
pub struct Store {
    paths: Paths,
    index: std::sync::Arc<IndexFile>,
}

/// A named image, resolved to its platform manifest and config.
#[derive(Debug, Clone)]
pub struct Image {
    /// Normalized: `docker.io/library/etcd:latest`.
    pub reference: String,
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
}

/// One line of `kboot images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageSummary {
    pub reference: String,
    pub digest: String,
    /// Manifest + config + compressed layers, in bytes.
    pub size: u64,
}

/// What `prune` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    pub blobs_removed: usize,
    pub bytes_freed: u64,
}

/// What a manifest blob turned out to be.
#[derive(Debug)]
pub enum Manifest {
    Image(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

/// Normalizes a reference as users write it: `etcd` → `docker.io/library/etcd:latest`.
pub fn normalize_reference(reference: &str) -> Result<Reference> {
    reference::parse(reference.trim()).map_err(|source| StoreError::InvalidReference {
        reference: reference.to_string(),
        source,
    })
}

/// The reference without tag or digest: `docker.io/library/etcd`.
pub fn repository_name(reference: &Reference) -> String {
    format!("{}/{}", reference.registry(), reference.repository())
}

/// Parses a manifest or index blob, refusing schema 1 and unknown media types.
pub fn parse_manifest(bytes: &[u8], digest: &str) -> Result<Manifest> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u32>,
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|source| StoreError::ParseJson {
        what: "manifest",
        digest: digest.to_string(),
        source,
    })?;
    let media_type = probe.media_type.clone().unwrap_or_default();
    if probe.schema_version == Some(1) || media_type == DOCKER_MANIFEST_V1 || media_type == DOCKER_MANIFEST_V1_SIGNED {
        return Err(StoreError::UnsupportedMediaType {
            what: "manifest",
            digest: digest.to_string(),
            media_type: "Docker schema 1 (unsupported, re-push the image with a current Docker or skopeo)".into(),
        });
    }
    let is_index = match media_type.as_str() {
        "application/vnd.oci.image.index.v1+json" | DOCKER_MANIFEST_LIST => true,
        "application/vnd.oci.image.manifest.v1+json" | DOCKER_MANIFEST => false,
        "" => probe.manifests.is_some(),
        other => {
            return Err(StoreError::UnsupportedMediaType {
                what: "manifest",
                digest: digest.to_string(),
                media_type: other.to_string(),
            })
        }
    };
    let json_err = |source| StoreError::ParseJson {
        what: if is_index { "image index" } else { "image manifest" },
        digest: digest.to_string(),
        source,
    };
    if is_index {
        serde_json::from_slice(bytes)
            .map(|i| Manifest::Index(Box::new(i)))
            .map_err(json_err)
    } else {
        serde_json::from_slice(bytes)
            .map(|m| Manifest::Image(Box::new(m)))
            .map_err(json_err)
    }
}

/// Whether a descriptor's media type names an index rather than a manifest.
pub fn is_index_media_type(media_type: &MediaType) -> bool {
    matches!(media_type, MediaType::ImageIndex) || media_type.to_string() == DOCKER_MANIFEST_LIST
}

impl Store {
    /// Opens the store at `paths`, creating its directories.
    pub fn open(paths: &Paths) -> Result<Store, StoreError> {
        for dir in [
            paths.blobs().join("sha256"),
            paths.ingest(),
            paths.images(),
            paths.locks(),
        ] {
            create_dir(&dir)?;
        }
        Ok(Store {
            paths: paths.clone(),
            index: std::sync::Arc::new(IndexFile::new(&paths.images(), &paths.locks())),
        })
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Where a blob lives (whether or not it is there).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.paths.blob(digest.algorithm().as_ref(), digest.digest())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                StoreError::MissingBlob {
                    digest: digest.to_string(),
                    path,
                }
            } else {
                StoreError::OpenBlob {
                    digest: digest.to_string(),
                    path,
                    source,
                }
            }
        })
    }

    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        if !path.is_file() {
            return Err(StoreError::MissingBlob {
                digest: digest.to_string(),
                path,
            });
        }
        read_file(&path)
    }

    /// Starts writing the blob `digest`, or says it is already here. Waits
    /// while another process writes the same blob; resumes a partial file.
    pub fn ingest(&self, digest: &Digest) -> Result<Ingest> {
        let blob_path = self.blob_path(digest);
        if blob_path.is_file() {
            return Ok(Ingest::Present);
        }
        BlobWriter::open_known(&self.paths.ingest(), &self.paths.blobs(), &blob_path, digest)
    }

    /// Starts writing a blob whose digest is computed from its content.
    pub fn ingest_unknown(&self) -> Result<BlobWriter> {
        BlobWriter::open_unknown(&self.paths.ingest(), &self.paths.blobs())
    }

    /// Stores small content (manifests, configs), verified against `expected` when given.
    pub fn write_blob(&self, bytes: &[u8], expected: Option<&Digest>) -> Result<Digest> {
        let mut writer = match expected {
            Some(d) => match self.ingest(d)? {
                Ingest::Present => return Ok(d.clone()),
                Ingest::Write(mut w) => {
                    w.restart()?;
                    *w
                }
            },
            None => self.ingest_unknown()?,
        };
        writer.write_chunk(bytes)?;
        writer.commit()
    }

    /// Held (shared) by writers while they add blobs not yet named in the
    /// index, and (exclusive) by `prune`, so prune never deletes a blob that a
    /// running pull or load is about to reference.
    pub fn writer_guard(&self) -> Result<LockGuard> {
        lock(&self.paths.locks().join("gc.lock"), false)
    }

    /// Names an image: `reference` (any form) → the manifest `entry`.
    pub fn tag(&self, reference: &str, entry: IndexEntry) -> Result<String> {
        let key = normalize_reference(reference)?.whole();
        let name = key.clone();
        self.index.update(move |idx| {
            idx.images.insert(name, entry);
        })?;
        Ok(key)
    }

    /// Removes the names; returns the normalized references removed. Unknown names are NotFound
    /// (and nothing is removed).
    pub fn remove(&self, references: &[String]) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        for r in references {
            keys.push(self.resolve_key(r)?.0);
        }
        self.index.update(|idx| {
            for k in &keys {
                idx.images.remove(k);
            }
        })?;
        Ok(keys)
    }

    /// Finds the index key and entry a user reference means.
    fn resolve_key(&self, reference: &str) -> Result<(String, IndexEntry)> {
        let parsed = normalize_reference(reference)?;
        let key = parsed.whole();
        let index = self.index.read()?;
        if let Some(entry) = index.images.get(&key) {
            return Ok((key, entry.clone()));
        }
        // `name@sha256:…` also finds an image stored under a tag of the same
        // repository whose manifest (or index) has that digest.
        if let Some(digest) = parsed.digest() {
            let repo = repository_name(&parsed);
            for (k, entry) in &index.images {
                let same_repo = normalize_reference(k)
                    .map(|r| repository_name(&r) == repo)
                    .unwrap_or(false);
                let same_digest =
                    entry.manifest.as_ref() == digest || entry.index.as_ref().is_some_and(|d| d.as_ref() == digest);
                if same_repo && same_digest {
                    return Ok((k.clone(), entry.clone()));
                }
            }
        }
        Err(StoreError::NotFound { reference: key })
    }

    /// Looks an image up by any reference form and loads its manifest and config.
    pub fn resolve(&self, reference: &str) -> Result<Image, StoreError> {
        let (key, entry) = self.resolve_key(reference)?;
        self.load_image(key, &entry.manifest)
    }

    /// Reads and checks an image manifest and its config from blobs.
    pub fn load_image(&self, reference: String, manifest_digest: &Digest) -> Result<Image> {
        let bytes = self.read_blob(manifest_digest)?;
        let manifest = match parse_manifest(&bytes, manifest_digest.as_ref())? {
            Manifest::Image(m) => *m,
            Manifest::Index(_) => {
                return Err(StoreError::UnsupportedMediaType {
                    what: "image",
                    digest: manifest_digest.to_string(),
                    media_type: "an image index where an image manifest was expected".into(),
                })
            }
        };
        let config_digest = manifest.config().digest().clone();
        let config_bytes = self.read_blob(&config_digest)?;
        let config: ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(|source| StoreError::ParseJson {
                what: "image config",
                digest: config_digest.to_string(),
                source,
            })?;
        Ok(Image {
            reference,
            manifest_digest: manifest_digest.clone(),
            manifest,
            config,
        })
    }

    /// Picks `platform`'s manifest from an index blob already in the store.
    pub fn choose_from_index(&self, index_digest: &Digest, platform: &PlatformSpec) -> Result<Digest> {
        let bytes = self.read_blob(index_digest)?;
        match parse_manifest(&bytes, index_digest.as_ref())? {
            Manifest::Index(index) => {
                platform
                    .choose(index.manifests())
                    .map(|d| d.digest().clone())
                    .map_err(|available| StoreError::PlatformNotFound {
                        digest: index_digest.to_string(),
                        wanted: platform.to_string(),
                        available,
                    })
            }
            Manifest::Image(_) => Ok(index_digest.clone()),
        }
    }

    /// Every named image with its total size.
    pub fn list(&self) -> Result<Vec<ImageSummary>, StoreError> {
        let index = self.index.read()?;
        let mut out = Vec::new();
        for (reference, entry) in index.images {
            let size = match self.read_blob(&entry.manifest) {
                Ok(bytes) => {
                    let manifest_size = bytes.len() as u64;
                    match parse_manifest(&bytes, entry.manifest.as_ref()) {
                        Ok(Manifest::Image(m)) => {
                            manifest_size + m.config().size() + m.layers().iter().map(|l| l.size()).sum::<u64>()
                        }
                        _ => manifest_size,
                    }
                }
                Err(_) => 0,
            };
            out.push(ImageSummary {
                reference,
                digest: entry.manifest.to_string(),
                size,
            });
        }
        Ok(out)
    }

    /// All index entries (normalized reference → entry).
    pub fn entries(&self) -> Result<Vec<(String, IndexEntry)>> {
        Ok(self.index.read()?.images.into_iter().collect())
    }

    /// Digests every named image needs: index, manifest, config, layers.
    fn live_blobs(&self) -> Result<BTreeSet<String>> {
        let mut live = BTreeSet::new();
        for (_, entry) in self.entries()? {
            live.insert(entry.manifest.digest().to_string());
            if let Some(i) = &entry.index {
                live.insert(i.digest().to_string());
            }
            if let Ok(bytes) = self.read_blob(&entry.manifest) {
                if let Ok(Manifest::Image(m)) = parse_manifest(&bytes, entry.manifest.as_ref()) {
                    live.insert(m.config().digest().digest().to_string());
                    for l in m.layers() {
                        live.insert(l.digest().digest().to_string());
                    }
                }
            }
        }
        Ok(live)
    }

    /// Deletes blobs no named image references, and stale partial files no
    /// writer holds. Waits for running pulls and loads to finish first.
    pub fn prune(&self) -> Result<PruneReport> {
        let _gc = lock(&self.paths.locks().join("gc.lock"), true)?;
        let live = self.live_blobs()?;
        let mut report = PruneReport::default();
        let dir = self.paths.blobs().join("sha256");
        let entries = fs::read_dir(&dir).map_err(|source| StoreError::Read {
            path: dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if live.contains(&name) {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if fsutil::remove_file(&entry.path())? {
                report.blobs_removed += 1;
                report.bytes_freed += size;
            }
        }
        // Partial downloads: only those nobody is writing (their lock is free).
        let ingest = self.paths.ingest();
        if let Ok(entries) = fs::read_dir(&ingest) {
            for entry in entries.flatten() {
                let path = entry.path();
                if let Some(_held) = fsutil::lock_file(&path, true, false)? {
                    let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    if fsutil::remove_file(&path)? {
                        report.bytes_freed += size;
                    }
                }
            }
        }
        Ok(report)
    }

    /// The sha256 hex of a digest, refusing other algorithms.
    pub fn hex_of(digest: &Digest) -> Result<&str> {
        sha256_hex(digest)
    }
}

#[cfg(test)]
mod tests;
