//! Layer tar → rootfs, exactly as the OCI image spec's layer rules say, without any
//! entry being able to touch a file outside the target root.
//!
//! - `unpack_layers` flattens layers in order into a directory (whiteouts delete).
//! - `RootfsCache` keeps one read-only flattened rootfs per chain ID and gives each
//!   container its own writable view of it (overlayfs, or a copy).
//!
//! Containment: every write goes through a directory fd reached by `fs::resolve_dir`,
//! which follows symlinks only inside the root; the final component is always
//! created, replaced or removed with `*at` calls that never follow it. Entry names
//! and hardlink targets containing `..` or starting with `/` are refused, and so is a
//! symlink whose target climbs above the root.

mod cache;
mod extract;
mod fs;
mod image;

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use sha2::{Digest, Sha256};

pub use cache::{RootfsCache, ViewMode};
pub use image::{image_layers, referenced_chain_ids, unpack_image};

/// One layer blob and how it is compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub media_type: oci_spec::image::MediaType,
    pub path: PathBuf,
    /// The blob digest (`sha256:…`), used to name the layer in errors and logs.
    pub digest: String,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer {layer}: media type {media_type} is not a layer kboot can unpack (tar, tar+gzip, tar+zstd)")]
    UnsupportedMediaType { layer: String, media_type: String },
    #[error("layer {layer}: cannot open blob {}: {source}", path.display())]
    OpenLayer {
        layer: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("layer {layer}: cannot read the tar stream (corrupt or truncated blob?): {source}")]
    ReadLayer {
        layer: String,
        #[source]
        source: io::Error,
    },
    #[error("layer {layer}: entry {entry:?} refused: {reason}")]
    Refused {
        layer: String,
        entry: String,
        reason: String,
    },
    #[error("layer {layer}: entry {entry:?}: {step} failed: {source}")]
    Write {
        layer: String,
        entry: String,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("layer {layer}: uncompressed content is {actual}, but the image config says {expected}: the blob does not belong to this image (pull it again)")]
    DiffIdMismatch {
        layer: String,
        expected: String,
        actual: String,
    },
    #[error("{} layers but {} diff_ids in the image config", layers, diff_ids)]
    LayerCount { layers: usize, diff_ids: usize },
    #[error("{step} {}: {source}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mount overlay on {}: {source}", path.display())]
    Mount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{step}: {source}")]
    Store {
        step: &'static str,
        #[source]
        source: Box<crate::store::StoreError>,
    },
    #[error("copy {} to {}: {reason}", from.display(), to.display())]
    Copy { from: PathBuf, to: PathBuf, reason: String },
}

type Result<T, E = UnpackError> = std::result::Result<T, E>;

pub(crate) fn io_err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> UnpackError + 'a {
    move |source| UnpackError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// Flattens `layers`, lowest first, into `target` (created if missing; may already
/// hold files, which the layers then modify).
pub fn unpack_layers(layers: &[Layer], target: &Path) -> Result<()> {
    unpack_verified(layers, None, target)
}

/// `unpack_layers`, checking each layer's uncompressed sha256 against `diff_ids`.
pub(crate) fn unpack_verified(layers: &[Layer], diff_ids: Option<&[String]>, target: &Path) -> Result<()> {
    std::fs::create_dir_all(target).map_err(io_err("create", target))?;
    let root = nix::fcntl::open(
        target,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("open", target)(e.into()))?;
    // SAFETY: open just returned this fd; nothing else owns it.
    let root = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(root) };
    let mut ex = extract::Extractor::new(root);
    for (i, layer) in layers.iter().enumerate() {
        let span = tracing::debug_span!("layer", digest = %layer.digest);
        let _guard = span.enter();
        let stream = open_layer(layer)?;
        let mut hashed = HashingReader {
            inner: stream,
            hash: Sha256::new(),
        };
        ex.apply_layer(&layer.digest, &mut hashed)?;
        // The tar ends with zero blocks the reader may not have consumed.
        io::copy(&mut hashed, &mut io::sink()).map_err(|source| UnpackError::ReadLayer {
            layer: layer.digest.clone(),
            source,
        })?;
        if let Some(expected) = diff_ids.and_then(|d| d.get(i)) {
            let actual = format!("sha256:{}", hex::encode(hashed.hash.finalize()));
            if &actual != expected {
                return Err(UnpackError::DiffIdMismatch {
                    layer: layer.digest.clone(),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
    }
    ex.finish()
}

/// The layer's uncompressed tar stream.
fn open_layer(layer: &Layer) -> Result<Box<dyn Read>> {
    let media = layer.media_type.to_string();
    let file = File::open(&layer.path).map_err(|source| UnpackError::OpenLayer {
        layer: layer.digest.clone(),
        path: layer.path.clone(),
        source,
    })?;
    let file = BufReader::with_capacity(1 << 20, file);
    Ok(match compression_of(&media) {
        Some(Compression::None) => Box::new(file),
        Some(Compression::Gzip) => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
        Some(Compression::Zstd) => {
            Box::new(
                zstd::stream::read::Decoder::with_buffer(file).map_err(|source| UnpackError::ReadLayer {
                    layer: layer.digest.clone(),
                    source,
                })?,
            )
        }
        None => {
            return Err(UnpackError::UnsupportedMediaType {
                layer: layer.digest.clone(),
                media_type: media,
            })
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

/// OCI (`…layer.v1.tar[+gzip|+zstd]`, also nondistributable) and Docker
/// (`…rootfs.diff.tar[.gzip]`, `…rootfs.foreign.diff.tar.gzip`) layer media types.
fn compression_of(media: &str) -> Option<Compression> {
    let oci = [
        "application/vnd.oci.image.layer.v1.",
        "application/vnd.oci.image.layer.nondistributable.v1.",
    ];
    let docker = [
        "application/vnd.docker.image.rootfs.diff.",
        "application/vnd.docker.image.rootfs.foreign.diff.",
    ];
    if let Some(rest) = oci.iter().find_map(|p| media.strip_prefix(p)) {
        return match rest {
            "tar" => Some(Compression::None),
            "tar+gzip" => Some(Compression::Gzip),
            "tar+zstd" => Some(Compression::Zstd),
            _ => None,
        };
    }
    if let Some(rest) = docker.iter().find_map(|p| media.strip_prefix(p)) {
        return match rest {
            "tar" => Some(Compression::None),
            "tar.gzip" => Some(Compression::Gzip),
            "tar.zstd" => Some(Compression::Zstd),
            _ => None,
        };
    }
    None
}

/// The chain ID of a stack of diff IDs (image spec, config.md):
/// `ChainID(L0) = DiffID(L0)`, `ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))`.
pub fn chain_id(diff_ids: &[String]) -> Option<String> {
    let mut iter = diff_ids.iter();
    let mut chain = iter.next()?.clone();
    for d in iter {
        chain = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(format!("{chain} {d}").as_bytes()))
        );
    }
    Some(chain)
}

struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_follows_the_image_spec() {
        let a = "sha256:aaaa".to_string();
        let b = "sha256:bbbb".to_string();
        assert_eq!(chain_id(std::slice::from_ref(&a)).unwrap(), a);
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(b"sha256:aaaa sha256:bbbb")));
        assert_eq!(chain_id(&[a, b]).unwrap(), expected);
        assert_eq!(chain_id(&[]), None);
    }

    #[test]
    fn docker_and_oci_layer_media_types_are_recognised() {
        for (m, c) in [
            ("application/vnd.oci.image.layer.v1.tar", Compression::None),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Compression::Gzip),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Compression::Zstd),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Compression::Gzip,
            ),
            ("application/vnd.docker.image.rootfs.diff.tar", Compression::None),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", Compression::Gzip),
            ("application/vnd.docker.image.rootfs.diff.tar.zstd", Compression::Zstd),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Compression::Gzip,
            ),
        ] {
            assert_eq!(compression_of(m), Some(c), "{m}");
        }
        assert_eq!(compression_of("application/vnd.oci.image.config.v1+json"), None);
    }
}
