//! `kboot load` and `kboot save`: OCI image layouts (directory or tar) and
//! `docker save` tars, plain, gzip or zstd.
//!
//! Loading streams the archive once: blobs go straight into the store
//! (verified against the digest in their file name), small metadata files
//! (`index.json`, `manifest.json`) are kept in memory, and the images are
//! named only after every blob they need is present.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Component, Path};
use std::str::FromStr;

use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::error::{Result, StoreError};
use super::fsutil::{sync_dir, temp_name};
use super::platform::PlatformSpec;
use super::{parse_manifest, IndexEntry, Manifest, Store};

/// OCI annotation naming an image inside a layout.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd/Docker 25+ annotation with the full image name.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Metadata files are small; anything bigger is not what we think it is.
const MAX_METADATA: u64 = 16 * 1024 * 1024;

/// One image an archive named, now in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// Normalized reference, or `None` for an unnamed layout entry.
    pub reference: Option<String>,
    pub manifest_digest: Digest,
}

/// What the single pass over the archive collected.
#[derive(Debug, Default)]
struct Collected {
    /// Small files by normalized path.
    metadata: BTreeMap<String, Vec<u8>>,
    /// docker-save legacy files (layer tars, config JSON) stored by content: path → (digest, size).
    by_path: BTreeMap<String, (Digest, u64)>,
    /// Symlinks: path → target path (normalized, archive-relative).
    links: BTreeMap<String, String>,
    /// Blobs found under `blobs/sha256/`.
    blobs: BTreeSet<String>,
}

/// Strips `./`, leading `/` and `..`-free-checks an archive path.
fn clean(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_string()),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

fn join_link(entry: &str, target: &str) -> Option<String> {
    let base = Path::new(entry).parent().unwrap_or(Path::new(""));
    if target.starts_with('/') {
        clean(Path::new(target))
    } else {
        clean(&base.join(target))
    }
}

impl Collected {
    /// Handles one regular file of the archive.
    fn file(&mut self, store: &Store, archive: &Path, rel: String, size: u64, reader: &mut dyn Read) -> Result<()> {
        let corrupt = |source: io::Error| StoreError::CorruptArchive {
            path: archive.to_path_buf(),
            source,
        };
        let entry_err = |rel: &str, source: StoreError| StoreError::ArchiveEntry {
            path: archive.to_path_buf(),
            entry: rel.to_string(),
            source: Box::new(source),
        };
        if let Some(hex) = rel.strip_prefix("blobs/sha256/") {
            let digest = Digest::from_str(&format!("sha256:{hex}")).map_err(|_| StoreError::NotAnImage {
                path: archive.to_path_buf(),
                why: format!("blob file {rel} is not named by a sha256 digest"),
            })?;
            match store.ingest(&digest).map_err(|e| entry_err(&rel, e))? {
                super::Ingest::Present => {
                    io::copy(reader, &mut io::sink()).map_err(corrupt)?;
                }
                super::Ingest::Write(mut w) => {
                    w.restart().map_err(|e| entry_err(&rel, e))?;
                    w.copy_from(reader, corrupt)?;
                    w.commit().map_err(|e| entry_err(&rel, e))?;
                }
            }
            self.blobs.insert(hex.to_string());
            return Ok(());
        }
        let top_level = !rel.contains('/');
        if top_level && size <= MAX_METADATA && (rel.ends_with(".json") || rel == "oci-layout" || rel == "repositories")
        {
            let mut bytes = Vec::with_capacity(size as usize);
            reader.read_to_end(&mut bytes).map_err(corrupt)?;
            self.metadata.insert(rel.clone(), bytes.clone());
            // A legacy docker-save config is `<hex>.json` at the top level.
            if rel.ends_with(".json") && rel != "manifest.json" && rel != "index.json" {
                let digest = store.write_blob(&bytes, None).map_err(|e| entry_err(&rel, e))?;
                self.by_path.insert(rel, (digest, size));
            }
            return Ok(());
        }
        if rel.ends_with("/layer.tar") {
            let mut w = store.ingest_unknown()?;
            if let Err(e) = w.copy_from(reader, corrupt) {
                w.discard();
                return Err(e);
            }
            let digest = w.commit().map_err(|e| entry_err(&rel, e))?;
            self.by_path.insert(rel, (digest, size));
            return Ok(());
        }
        io::copy(reader, &mut io::sink()).map_err(corrupt)?;
        Ok(())
    }

    fn path_digest(&self, rel: &str) -> Option<&(Digest, u64)> {
        let mut rel = rel.to_string();
        for _ in 0..8 {
            if let Some(found) = self.by_path.get(&rel) {
                return Some(found);
            }
            rel = self.links.get(&rel)?.clone();
        }
        None
    }
}

/// Opens a file, seeing through gzip or zstd compression by its magic bytes.
fn open_decompressed(path: &Path) -> Result<Box<dyn Read>> {
    let file = File::open(path).map_err(|source| StoreError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let magic = reader
        .fill_buf()
        .map_err(|source| StoreError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .to_vec();
    if magic.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(reader)))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let dec = zstd::stream::read::Decoder::with_buffer(reader).map_err(|source| StoreError::CorruptArchive {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Box::new(dec))
    } else {
        Ok(Box::new(reader))
    }
}

fn walk_tar(store: &Store, path: &Path, collected: &mut Collected) -> Result<()> {
    let corrupt = |source: io::Error| StoreError::CorruptArchive {
        path: path.to_path_buf(),
        source,
    };
    let mut archive = tar::Archive::new(open_decompressed(path)?);
    let mut seen_any = false;
    let not_tar = || StoreError::NotAnImage {
        path: path.to_path_buf(),
        why: "it is not a tar archive (plain, gzip or zstd)".into(),
    };
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = match entry {
            Ok(e) => e,
            // A bad first header means this was never a tar; later ones mean damage.
            Err(_) if !seen_any => return Err(not_tar()),
            Err(e) => return Err(corrupt(e)),
        };
        seen_any = true;
        let Some(rel) = clean(&entry.path().map_err(corrupt)?) else {
            continue;
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                collected.file(store, path, rel, size, &mut entry)?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry.link_name().map_err(corrupt)?.unwrap_or_default();
                let target = if entry.header().entry_type() == tar::EntryType::Link {
                    clean(&target)
                } else {
                    join_link(&rel, &target.to_string_lossy())
                };
                if let Some(t) = target {
                    collected.links.insert(rel, t);
                }
            }
            _ => {}
        }
    }
    if !seen_any {
        return Err(not_tar());
    }
    Ok(())
}

fn walk_dir(store: &Store, root: &Path, dir: &Path, collected: &mut Collected) -> Result<()> {
    let rerr = |p: &Path, source| StoreError::Read {
        path: p.to_path_buf(),
        source,
    };
    for entry in fs::read_dir(dir).map_err(|e| rerr(dir, e))? {
        let entry = entry.map_err(|e| rerr(dir, e))?;
        let path = entry.path();
        let rel = clean(path.strip_prefix(root).unwrap_or(&path)).unwrap_or_default();
        let ft = entry.file_type().map_err(|e| rerr(&path, e))?;
        if ft.is_dir() {
            walk_dir(store, root, &path, collected)?;
        } else if ft.is_file() {
            let size = entry.metadata().map_err(|e| rerr(&path, e))?.len();
            let mut f = File::open(&path).map_err(|e| rerr(&path, e))?;
            collected.file(store, root, rel, size, &mut f)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| rerr(&path, e))?;
            if let Some(t) = join_link(&rel, &target.to_string_lossy()) {
                collected.links.insert(rel, t);
            }
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Turns a layout's `ref.name` into a reference: a full name stays, a bare tag
/// (what `skopeo copy … oci:DIR:TAG` writes) gets `localhost/<archive stem>`.
fn layout_name(annotations: Option<&std::collections::HashMap<String, String>>, archive: &Path) -> Option<String> {
    let annotations = annotations?;
    if let Some(full) = annotations.get(CONTAINERD_NAME) {
        return Some(full.clone());
    }
    let name = annotations.get(REF_NAME)?;
    if name.contains('/') || name.contains(':') || name.contains('@') {
        return Some(name.clone());
    }
    let stem = archive
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem: String = stem
        .split('.')
        .next()
        .unwrap_or("image")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let stem = stem.trim_matches('-');
    let stem = if stem.is_empty() { "image" } else { stem };
    Some(format!("localhost/{stem}:{name}"))
}

impl Store {
    /// Imports every image of an archive (see the module docs); names them in
    /// the index only once all their blobs are stored and verified.
    pub fn load(&self, input: &Path, platform: &PlatformSpec) -> Result<Vec<LoadedImage>> {
        let _writing = self.writer_guard()?;
        let mut collected = Collected::default();
        let meta = fs::metadata(input).map_err(|source| StoreError::Read {
            path: input.to_path_buf(),
            source,
        })?;
        if meta.is_dir() {
            walk_dir(self, input, input, &mut collected)?;
        } else {
            walk_tar(self, input, &mut collected)?;
        }
        if let Some(index) = collected.metadata.get("index.json").cloned() {
            self.load_layout(input, &index, platform)
        } else if let Some(manifest) = collected.metadata.get("manifest.json").cloned() {
            self.load_docker_save(input, &manifest, &collected)
        } else {
            Err(StoreError::NotAnImage {
                path: input.to_path_buf(),
                why: "it has neither index.json (OCI layout) nor manifest.json (docker save)".into(),
            })
        }
    }

    fn check_image_blobs(&self, archive: &Path, manifest_digest: &Digest) -> Result<()> {
        let bytes = self
            .read_blob(manifest_digest)
            .map_err(|_| StoreError::ArchiveMissing {
                path: archive.to_path_buf(),
                what: "manifest",
                digest: manifest_digest.to_string(),
            })?;
        let Manifest::Image(m) = parse_manifest(&bytes, manifest_digest.as_ref())? else {
            return Err(StoreError::NotAnImage {
                path: archive.to_path_buf(),
                why: format!("{manifest_digest} is an index inside an index"),
            });
        };
        let wanted = std::iter::once(("config", m.config())).chain(m.layers().iter().map(|l| ("layer", l)));
        for (what, d) in wanted {
            if !self.has_blob(d.digest()) {
                return Err(StoreError::ArchiveMissing {
                    path: archive.to_path_buf(),
                    what,
                    digest: d.digest().to_string(),
                });
            }
        }
        Ok(())
    }

    fn load_layout(&self, archive: &Path, index_bytes: &[u8], platform: &PlatformSpec) -> Result<Vec<LoadedImage>> {
        let index: ImageIndex = serde_json::from_slice(index_bytes).map_err(|e| StoreError::NotAnImage {
            path: archive.to_path_buf(),
            why: format!("index.json is not an OCI image index: {e}"),
        })?;
        let mut loaded = Vec::new();
        for desc in index.manifests() {
            let top = desc.digest().clone();
            if !self.has_blob(&top) {
                return Err(StoreError::ArchiveMissing {
                    path: archive.to_path_buf(),
                    what: "manifest",
                    digest: top.to_string(),
                });
            }
            let bytes = self.read_blob(&top)?;
            let (manifest_digest, index_digest) = match parse_manifest(&bytes, top.as_ref())? {
                Manifest::Image(_) => (top.clone(), None),
                Manifest::Index(_) => (self.choose_from_index(&top, platform)?, Some(top.clone())),
            };
            self.check_image_blobs(archive, &manifest_digest)?;
            let reference = match layout_name(desc.annotations().as_ref(), archive) {
                Some(name) => Some(self.tag(
                    &name,
                    IndexEntry {
                        manifest: manifest_digest.clone(),
                        index: index_digest,
                    },
                )?),
                None => None,
            };
            loaded.push(LoadedImage {
                reference,
                manifest_digest,
            });
        }
        if loaded.is_empty() {
            return Err(StoreError::NotAnImage {
                path: archive.to_path_buf(),
                why: "its index.json lists no images".into(),
            });
        }
        Ok(loaded)
    }

    /// A legacy `docker save` archive: builds an OCI manifest from
    /// `manifest.json`, the config file and the layer tars.
    fn load_docker_save(&self, archive: &Path, manifest_json: &[u8], c: &Collected) -> Result<Vec<LoadedImage>> {
        let entries: Vec<DockerSaveEntry> =
            serde_json::from_slice(manifest_json).map_err(|e| StoreError::NotAnImage {
                path: archive.to_path_buf(),
                why: format!("manifest.json is not a docker save manifest: {e}"),
            })?;
        let missing = |what, name: &str| StoreError::ArchiveMissing {
            path: archive.to_path_buf(),
            what,
            digest: name.to_string(),
        };
        let mut loaded = Vec::new();
        for entry in entries {
            let config_path = clean(Path::new(&entry.config)).unwrap_or_default();
            let (config_digest, config_size) = c
                .path_digest(&config_path)
                .cloned()
                .or_else(|| blob_in_layout(&config_path, self))
                .ok_or_else(|| missing("config", &entry.config))?;
            let mut layers = Vec::new();
            for layer in &entry.layers {
                let lp = clean(Path::new(layer)).unwrap_or_default();
                let (digest, size) = c
                    .path_digest(&lp)
                    .cloned()
                    .or_else(|| blob_in_layout(&lp, self))
                    .ok_or_else(|| missing("layer", layer))?;
                let media = layer_media_type(&self.blob_path(&digest));
                layers.push(Descriptor::new(media, size, digest));
            }
            let manifest = oci_spec::image::ImageManifestBuilder::default()
                .schema_version(2u32)
                .media_type(MediaType::ImageManifest)
                .config(Descriptor::new(MediaType::ImageConfig, config_size, config_digest))
                .layers(layers)
                .build()
                .expect("all manifest fields are set");
            let bytes = serde_json::to_vec(&manifest).expect("a manifest always serializes");
            let manifest_digest = self.write_blob(&bytes, None)?;
            let tags = entry.repo_tags.unwrap_or_default();
            if tags.is_empty() {
                loaded.push(LoadedImage {
                    reference: None,
                    manifest_digest: manifest_digest.clone(),
                });
            }
            for tag in tags {
                let reference = self.tag(
                    &tag,
                    IndexEntry {
                        manifest: manifest_digest.clone(),
                        index: None,
                    },
                )?;
                loaded.push(LoadedImage {
                    reference: Some(reference),
                    manifest_digest: manifest_digest.clone(),
                });
            }
        }
        Ok(loaded)
    }

    /// Writes the images as one OCI layout tar (readable by `kboot load` and
    /// `skopeo copy oci-archive:FILE:REF`), via a temp file renamed into place.
    pub fn save(&self, references: &[String], output: &Path) -> Result<Vec<String>> {
        let mut images = Vec::new();
        for r in references {
            images.push(self.resolve(r)?);
        }
        let dir = output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(temp_name("save"));
        let result = self.write_layout_tar(&images, &tmp, output);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        fs::rename(&tmp, output).map_err(|source| StoreError::Write {
            path: output.to_path_buf(),
            source,
        })?;
        sync_dir(dir)?;
        Ok(images.into_iter().map(|i| i.reference).collect())
    }

    fn write_layout_tar(&self, images: &[super::Image], tmp: &Path, output: &Path) -> Result<()> {
        let werr = |source: io::Error| StoreError::Write {
            path: output.to_path_buf(),
            source,
        };
        let file = File::create(tmp).map_err(werr)?;
        let mut tar = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, file));
        let mut index_manifests = Vec::new();
        let mut written = BTreeSet::new();
        for image in images {
            let (manifest_bytes, manifest_digest) = match as_oci_manifest(&image.manifest) {
                // Docker schema 2: skopeo's OCI layout reader only sees OCI
                // media types, so the archive gets the OCI form of the same
                // config and layers (a new manifest digest, as skopeo's own
                // conversion gives).
                Some(converted) => {
                    let bytes = serde_json::to_vec(&converted).expect("a manifest always serializes");
                    let digest = super::blob::digest_of_hex(&hex::encode(Sha256::digest(&bytes)));
                    (bytes, digest)
                }
                None => (self.read_blob(&image.manifest_digest)?, image.manifest_digest.clone()),
            };
            let mut desc = Descriptor::new(
                MediaType::ImageManifest,
                manifest_bytes.len() as u64,
                manifest_digest.clone(),
            );
            let mut ann = std::collections::HashMap::new();
            ann.insert(REF_NAME.to_string(), image.reference.clone());
            ann.insert(CONTAINERD_NAME.to_string(), image.reference.clone());
            desc.set_annotations(Some(ann));
            index_manifests.push(desc);
            if written.insert(manifest_digest.to_string()) {
                tar.append_data(
                    &mut tar_header(manifest_bytes.len() as u64),
                    format!("blobs/sha256/{}", manifest_digest.digest()),
                    &manifest_bytes[..],
                )
                .map_err(werr)?;
            }
            let blobs = std::iter::once(image.manifest.config().digest())
                .chain(image.manifest.layers().iter().map(|l| l.digest()));
            for digest in blobs {
                if !written.insert(digest.to_string()) {
                    continue;
                }
                let mut f = self.open_blob(digest)?;
                let len = f.metadata().map_err(werr)?.len();
                let mut header = tar_header(len);
                tar.append_data(&mut header, format!("blobs/sha256/{}", digest.digest()), &mut f)
                    .map_err(werr)?;
            }
        }
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        tar.append_data(&mut tar_header(layout.len() as u64), "oci-layout", &layout[..])
            .map_err(werr)?;
        let index = oci_spec::image::ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(index_manifests)
            .build()
            .expect("all index fields are set");
        let index_bytes = serde_json::to_vec(&index).expect("an index always serializes");
        tar.append_data(
            &mut tar_header(index_bytes.len() as u64),
            "index.json",
            &index_bytes[..],
        )
        .map_err(werr)?;
        let mut inner = tar.into_inner().map_err(werr)?;
        inner.flush().map_err(werr)?;
        inner.get_ref().sync_all().map_err(werr)?;
        Ok(())
    }
}

/// The OCI form of a Docker schema 2 manifest (same blobs, OCI media
/// types), or `None` when it already is OCI.
fn as_oci_manifest(manifest: &ImageManifest) -> Option<ImageManifest> {
    if manifest.media_type().as_ref().map(|m| m.to_string()).as_deref() != Some(super::DOCKER_MANIFEST) {
        return None;
    }
    let map = |d: &Descriptor| -> Descriptor {
        let media = match d.media_type().to_string().as_str() {
            super::DOCKER_CONFIG => MediaType::ImageConfig,
            "application/vnd.docker.image.rootfs.diff.tar.gzip" => MediaType::ImageLayerGzip,
            "application/vnd.docker.image.rootfs.diff.tar" => MediaType::ImageLayer,
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => MediaType::ImageLayerNonDistributableGzip,
            _ => d.media_type().clone(),
        };
        let mut out = d.clone();
        out.set_media_type(media);
        out
    };
    let mut oci = manifest.clone();
    oci.set_media_type(Some(MediaType::ImageManifest));
    oci.set_config(map(manifest.config()));
    oci.set_layers(manifest.layers().iter().map(map).collect());
    Some(oci)
}

fn tar_header(len: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(len);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

/// Docker 25+ archives name layers `blobs/sha256/<hex>` in manifest.json.
fn blob_in_layout(rel: &str, store: &Store) -> Option<(Digest, u64)> {
    let hex = rel.strip_prefix("blobs/sha256/")?;
    let digest = Digest::from_str(&format!("sha256:{hex}")).ok()?;
    let size = fs::metadata(store.blob_path(&digest)).ok()?.len();
    Some((digest, size))
}

/// A docker-save layer may be a plain or a compressed tar; look at its magic.
fn layer_media_type(path: &Path) -> MediaType {
    let mut magic = [0u8; 4];
    let n = File::open(path).and_then(|mut f| f.read(&mut magic)).unwrap_or(0);
    if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        MediaType::ImageLayerGzip
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        MediaType::ImageLayerZstd
    } else {
        MediaType::ImageLayer
    }
}
