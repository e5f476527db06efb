//! Helpers for the unpack tests: layer blobs from rootfs-tools layers, tree snapshots.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kboot::unpack::Layer;
use sha2::{Digest, Sha256};

/// Writes `layer` as an uncompressed tar blob in `dir` and describes it.
pub fn blob(dir: &Path, layer: &rootfs_tools::Layer) -> Layer {
    let bytes = layer.write_tar(Vec::new()).expect("layer tar");
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    let path = dir.join(digest.replace(':', "-"));
    std::fs::write(&path, &bytes).unwrap();
    Layer {
        media_type: kboot::oci_spec::image::MediaType::ImageLayer,
        path,
        digest,
    }
}

/// Every path under `root` with type, mode, owner, size, mtime, content hash or link
/// target: two equal snapshots mean the tree was not touched.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, path: &Path, out: &mut BTreeMap<PathBuf, String>) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    let rel = path.strip_prefix(root).unwrap().to_path_buf();
    let what = if meta.file_type().is_symlink() {
        format!("link {}", std::fs::read_link(path).unwrap().display())
    } else if meta.is_file() {
        format!("file {}", hex::encode(Sha256::digest(std::fs::read(path).unwrap())))
    } else {
        "dir".to_string()
    };
    out.insert(
        rel,
        format!(
            "{what} mode={:o} {}:{} size={} mtime={} ino={} nlink={}",
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.len(),
            meta.mtime(),
            meta.ino(),
            meta.nlink()
        ),
    );
    if meta.is_dir() {
        let mut children: Vec<_> = std::fs::read_dir(path).unwrap().map(|e| e.unwrap().path()).collect();
        children.sort();
        for c in children {
            walk(root, &c, out);
        }
    }
}

/// The layers and diff_ids of `tag` in an OCI layout directory.
pub fn layers_of(layout: &Path, tag: &str) -> (Vec<Layer>, Vec<String>) {
    let read_json = |p: PathBuf| -> serde_json::Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let blob_path = |digest: &str| layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let index = read_json(layout.join("index.json"));
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .expect("tag in index.json")
        .clone();
    let manifest = read_json(blob_path(desc["digest"].as_str().unwrap()));
    let config = read_json(blob_path(manifest["config"]["digest"].as_str().unwrap()));
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let digest = l["digest"].as_str().unwrap().to_string();
            Layer {
                media_type: l["mediaType"].as_str().unwrap().into(),
                path: blob_path(&digest),
                digest,
            }
        })
        .collect();
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    (layers, diff_ids)
}
