//! Images: layers + config → blobs, manifest, tag; and multi-platform indexes.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{io, Result};
use crate::layer::Layer;
use crate::layout::{Descriptor, OciLayout, Platform};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    None,
    #[default]
    Gzip,
    Zstd,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "gzip" => Ok(Self::Gzip),
            "zstd" => Ok(Self::Zstd),
            _ => Err(format!("unknown compression {s:?}: use gzip, zstd or none")),
        }
    }
}

/// OCI (default) or Docker schema 2 media types for manifests, configs and layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaTypes {
    #[default]
    Oci,
    /// Docker schema 2 (no zstd in Docker's names: zstd layers keep the OCI name).
    Docker,
}

impl MediaTypes {
    fn layer(self, c: Compression) -> &'static str {
        match (self, c) {
            (Self::Oci, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
            (Self::Oci, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
            (_, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
            (Self::Docker, Compression::None) => "application/vnd.docker.image.rootfs.diff.tar",
            (Self::Docker, Compression::Gzip) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        }
    }
    fn manifest(self) -> &'static str {
        match self {
            Self::Oci => OCI_MANIFEST,
            Self::Docker => DOCKER_MANIFEST,
        }
    }
    fn config(self) -> &'static str {
        match self {
            Self::Oci => OCI_CONFIG,
            Self::Docker => DOCKER_CONFIG,
        }
    }
    pub fn index(self) -> &'static str {
        match self {
            Self::Oci => OCI_INDEX,
            Self::Docker => DOCKER_LIST,
        }
    }
}

/// The runtime part of the image config. Empty fields are left out of the JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE`, in order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub platform: Platform,
    /// RFC 3339 creation time; none by default so digests do not depend on the clock.
    pub created: Option<String>,
}

#[derive(Serialize)]
struct ConfigJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<&'a str>,
    architecture: &'a str,
    os: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    config: RuntimeJson<'a>,
    rootfs: RootfsJson<'a>,
}

#[derive(Serialize)]
struct RuntimeJson<'a> {
    #[serde(rename = "User", skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(rename = "Env", skip_serializing_if = "<[String]>::is_empty")]
    env: &'a [String],
    #[serde(rename = "Entrypoint", skip_serializing_if = "Option::is_none")]
    entrypoint: Option<&'a [String]>,
    #[serde(rename = "Cmd", skip_serializing_if = "Option::is_none")]
    cmd: Option<&'a [String]>,
    #[serde(rename = "WorkingDir", skip_serializing_if = "Option::is_none")]
    working_dir: Option<&'a str>,
    #[serde(rename = "Labels", skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct RootfsJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: &'a [String],
}

#[derive(Serialize)]
struct ManifestJson<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: &'a Descriptor,
    layers: &'a [Descriptor],
}

/// One written layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltLayer {
    pub descriptor: Descriptor,
    /// sha256 of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: String,
}

/// The result of writing an image's blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The manifest's descriptor, with `platform` set.
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<BuiltLayer>,
}

impl BuiltImage {
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }
}

/// Layers + config → an image. Deterministic: same inputs, same digests.
#[derive(Debug, Clone, Default)]
pub struct ImageBuilder {
    pub layers: Vec<Layer>,
    pub config: Config,
    pub compression: Compression,
    pub media_types: MediaTypes,
}

impl ImageBuilder {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }
    pub fn entrypoint<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.config.entrypoint = Some(args.into_iter().map(Into::into).collect());
        self
    }
    pub fn cmd<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.config.cmd = Some(args.into_iter().map(Into::into).collect());
        self
    }
    pub fn env(mut self, kv: impl Into<String>) -> Self {
        self.config.env.push(kv.into());
        self
    }
    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.config.working_dir = Some(dir.into());
        self
    }
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.config.user = Some(user.into());
        self
    }
    pub fn label(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.config.labels.insert(k.into(), v.into());
        self
    }
    pub fn platform(mut self, platform: Platform) -> Self {
        self.config.platform = platform;
        self
    }
    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }
    pub fn media_types(mut self, m: MediaTypes) -> Self {
        self.media_types = m;
        self
    }

    /// Writes layers, config and manifest as blobs of `layout` (no tag).
    pub fn write_blobs(&self, layout: &OciLayout) -> Result<BuiltImage> {
        let mut layers = Vec::new();
        for layer in &self.layers {
            layers.push(write_layer(layout, layer, self.compression, self.media_types)?);
        }
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
        let c = &self.config;
        let config_json = ConfigJson {
            created: c.created.as_deref(),
            architecture: &c.platform.architecture,
            os: &c.platform.os,
            variant: c.platform.variant.as_deref(),
            config: RuntimeJson {
                user: c.user.as_deref(),
                env: &c.env,
                entrypoint: c.entrypoint.as_deref(),
                cmd: c.cmd.as_deref(),
                working_dir: c.working_dir.as_deref(),
                labels: &c.labels,
            },
            rootfs: RootfsJson {
                kind: "layers",
                diff_ids: &diff_ids,
            },
        };
        let config = layout.add_blob(
            self.media_types.config(),
            &serde_json::to_vec(&config_json).expect("config serialises"),
        )?;
        let layer_descs: Vec<Descriptor> = layers.iter().map(|l| l.descriptor.clone()).collect();
        let manifest_json = ManifestJson {
            schema_version: 2,
            media_type: self.media_types.manifest(),
            config: &config,
            layers: &layer_descs,
        };
        let mut manifest = layout.add_blob(
            self.media_types.manifest(),
            &serde_json::to_vec(&manifest_json).expect("manifest serialises"),
        )?;
        manifest.platform = Some(c.platform.clone());
        Ok(BuiltImage {
            manifest,
            config,
            layers,
        })
    }

    /// Writes the image into the layout directory `dir` (created or extended) and
    /// tags it `tag` in `index.json`.
    pub fn write_layout(&self, dir: &Path, tag: &str) -> Result<BuiltImage> {
        let layout = OciLayout::create(dir)?;
        let built = self.write_blobs(&layout)?;
        layout.tag(tag, &built.manifest)?;
        Ok(built)
    }

    /// Writes the image as an OCI layout tar at `out` (built in a temp dir beside it).
    pub fn write_tar(&self, out: &Path, tag: &str) -> Result<BuiltImage> {
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = tempdir_in(parent)?;
        let built = self.write_layout(&tmp, tag);
        let result = built.and_then(|b| OciLayout::create(&tmp)?.write_tar(out).map(|()| b));
        let _ = std::fs::remove_dir_all(&tmp);
        result
    }
}

fn tempdir_in(parent: &Path) -> Result<std::path::PathBuf> {
    let dir = parent.join(format!(".rootfs-tools-{}-{}", std::process::id(), nanos()));
    std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    Ok(dir)
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A multi-platform index of already written images, stored as a blob of `layout`
/// and tagged `tag`. Returns the index descriptor.
pub fn write_index(
    layout: &OciLayout,
    images: &[BuiltImage],
    tag: &str,
    media_types: MediaTypes,
) -> Result<Descriptor> {
    #[derive(Serialize)]
    struct IndexJson<'a> {
        #[serde(rename = "schemaVersion")]
        schema_version: u32,
        #[serde(rename = "mediaType")]
        media_type: &'a str,
        manifests: Vec<&'a Descriptor>,
    }
    let index = IndexJson {
        schema_version: 2,
        media_type: media_types.index(),
        manifests: images.iter().map(|i| &i.manifest).collect(),
    };
    let desc = layout.add_blob(
        media_types.index(),
        &serde_json::to_vec(&index).expect("index serialises"),
    )?;
    layout.tag(tag, &desc)?;
    Ok(desc)
}

/// Hashes everything written through it.
struct HashWriter<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W> HashWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hash: Sha256::new(),
            len: 0,
        }
    }
    fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            format!("sha256:{}", hex::encode(self.hash.finalize())),
            self.len,
        )
    }
}

enum Compressor<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::None(w) => w.write(buf),
            Self::Gzip(w) => w.write(buf),
            Self::Zstd(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::None(w) => w.flush(),
            Self::Gzip(w) => w.flush(),
            Self::Zstd(w) => w.flush(),
        }
    }
}

impl<W: Write> Compressor<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            Self::None(w) => Ok(w),
            Self::Gzip(w) => w.finish(),
            Self::Zstd(w) => w.finish(),
        }
    }
}

/// Streams one layer into a blob, hashing the tar (diff_id) and the compressed
/// bytes (digest) on the way.
fn write_layer(layout: &OciLayout, layer: &Layer, c: Compression, m: MediaTypes) -> Result<BuiltLayer> {
    let (tmp, file) = layout.temp_blob()?;
    let result = (|| {
        let blob = HashWriter::new(BufWriter::with_capacity(1 << 20, file));
        let compressor = match c {
            Compression::None => Compressor::None(blob),
            // GzBuilder writes mtime 0 and no file name: the bytes depend only on the tar.
            Compression::Gzip => Compressor::Gzip(flate2::GzBuilder::new().write(blob, flate2::Compression::default())),
            Compression::Zstd => {
                Compressor::Zstd(zstd::stream::write::Encoder::new(blob, 3).map_err(io("zstd", &tmp))?)
            }
        };
        let tar = layer.write_tar(HashWriter::new(compressor))?;
        let (compressor, diff_id, _) = tar.finish();
        let blob = compressor.finish().map_err(io("compress", &tmp))?;
        let (buf, digest, size) = blob.finish();
        let file = buf.into_inner().map_err(|e| io("write", &tmp)(e.into_error()))?;
        file.sync_all().map_err(io("fsync", &tmp))?;
        layout.commit_blob(&tmp, &digest)?;
        Ok(BuiltLayer {
            descriptor: Descriptor::new(m.layer(c), digest, size),
            diff_id,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
