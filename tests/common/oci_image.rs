//! Builds small OCI images in memory for tests: gzip layers, config, manifest,
//! multi-platform indexes, OCI layouts and docker-save tars. Used until
//! rootfs-tools exposes its builder; the bytes are real image-spec content.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use oci_spec::image::{
    ConfigBuilder, Descriptor, Digest, ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder, MediaType,
    PlatformBuilder, RootFsBuilder,
};
use sha2::{Digest as _, Sha256};

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn digest(bytes: &[u8]) -> Digest {
    sha256(bytes).parse().unwrap()
}

/// Deterministic incompressible bytes (xorshift), so layer sizes stay honest.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An uncompressed tar of (path, content) regular files.
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// One single-platform image, all blobs in memory.
#[derive(Debug, Clone)]
pub struct TestImage {
    pub arch: String,
    pub variant: Option<String>,
    /// Uncompressed layer tars (docker-save uses these).
    pub layer_tars: Vec<Vec<u8>>,
    /// gzip layers as the manifest lists them.
    pub layers: Vec<Vec<u8>>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

impl TestImage {
    /// An image whose layers hold these files (one inner slice per layer).
    pub fn new(arch: &str, variant: Option<&str>, layers: &[&[(&str, &[u8])]]) -> Self {
        let layer_tars: Vec<Vec<u8>> = layers.iter().map(|files| tar_of(files)).collect();
        let gz: Vec<Vec<u8>> = layer_tars.iter().map(|t| gzip(t)).collect();
        let diff_ids: Vec<String> = layer_tars.iter().map(|t| sha256(t)).collect();
        let mut cfg = ImageConfigurationBuilder::default()
            .architecture(arch)
            .os("linux")
            .config(
                ConfigBuilder::default()
                    .cmd(vec!["/bin/sh".to_string()])
                    .env(vec!["PATH=/bin".to_string()])
                    .build()
                    .unwrap(),
            )
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(diff_ids)
                    .build()
                    .unwrap(),
            );
        if let Some(v) = variant {
            cfg = cfg.variant(v);
        }
        let config = serde_json::to_vec(&cfg.build().unwrap()).unwrap();
        let layer_descs: Vec<Descriptor> = gz
            .iter()
            .map(|l| Descriptor::new(MediaType::ImageLayerGzip, l.len() as u64, digest(l)))
            .collect();
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(Descriptor::new(
                MediaType::ImageConfig,
                config.len() as u64,
                digest(&config),
            ))
            .layers(layer_descs)
            .build()
            .unwrap();
        Self {
            arch: arch.to_string(),
            variant: variant.map(str::to_string),
            layer_tars,
            layers: gz,
            config,
            manifest: serde_json::to_vec(&manifest).unwrap(),
        }
    }

    /// A one-layer amd64 image with a file whose content depends on `seed`.
    pub fn small(seed: u64) -> Self {
        let data = noise(4096, seed);
        Self::new("amd64", None, &[&[("etc/hostname", b"test\n")], &[("bin/data", &data)]])
    }

    pub fn manifest_digest(&self) -> String {
        sha256(&self.manifest)
    }

    /// All blobs: manifest, config, layers.
    pub fn blobs(&self) -> Vec<&[u8]> {
        let mut v: Vec<&[u8]> = vec![&self.manifest, &self.config];
        v.extend(self.layers.iter().map(|l| l.as_slice()));
        v
    }

    pub fn descriptor(&self) -> Descriptor {
        let mut d = Descriptor::new(
            MediaType::ImageManifest,
            self.manifest.len() as u64,
            digest(&self.manifest),
        );
        let mut p = PlatformBuilder::default().os("linux").architecture(self.arch.as_str());
        if let Some(v) = &self.variant {
            p = p.variant(v.as_str());
        }
        d.set_platform(Some(p.build().unwrap()));
        d
    }
}

/// A multi-platform OCI index over these images.
pub fn index_of(images: &[&TestImage]) -> Vec<u8> {
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(images.iter().map(|i| i.descriptor()).collect::<Vec<_>>())
        .build()
        .unwrap();
    serde_json::to_vec(&index).unwrap()
}

/// What a layout's `index.json` entry points at.
pub enum Entry<'a> {
    Image(&'a TestImage),
    /// A multi-platform index over these images.
    Index(Vec<&'a TestImage>),
}

/// Writes an OCI image layout directory with `(ref.name, entry)` pairs.
pub fn write_layout(dir: &Path, entries: &[(&str, Entry)]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = sha256(bytes);
        std::fs::write(blobs.join(d.trim_start_matches("sha256:")), bytes).unwrap();
    };
    let mut descs = Vec::new();
    for (name, entry) in entries {
        let mut desc = match entry {
            Entry::Image(img) => {
                img.blobs().into_iter().for_each(put);
                img.descriptor()
            }
            Entry::Index(imgs) => {
                imgs.iter().for_each(|i| i.blobs().into_iter().for_each(put));
                let idx = index_of(imgs);
                put(&idx);
                Descriptor::new(MediaType::ImageIndex, idx.len() as u64, digest(&idx))
            }
        };
        desc.set_annotations(Some(HashMap::from([(
            "org.opencontainers.image.ref.name".to_string(),
            name.to_string(),
        )])));
        descs.push(desc);
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .manifests(descs)
        .build()
        .unwrap();
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Packs a directory tree into an uncompressed tar (paths relative to `dir`).
pub fn tar_dir(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap()
}

/// A legacy `docker save` tar: manifest.json, `<hex>.json` config, `<n>/layer.tar`.
pub fn docker_save_tar(image: &TestImage, repo_tag: &str) -> Vec<u8> {
    let config_name = format!("{}.json", sha256(&image.config).trim_start_matches("sha256:"));
    let layer_names: Vec<String> = (0..image.layer_tars.len())
        .map(|i| format!("layer{i}/layer.tar"))
        .collect();
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [repo_tag],
        "Layers": layer_names,
    }]);
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let mut files: Vec<(&str, &[u8])> = vec![("manifest.json", &manifest), (&config_name, &image.config)];
    for (name, data) in layer_names.iter().zip(&image.layer_tars) {
        files.push((name, data));
    }
    tar_of(&files)
}
