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
