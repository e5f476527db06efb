//! The name → manifest digest index: `images/index.json`, rewritten atomically
//! under `locks/images.lock`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::image::Digest;
use serde::{Deserialize, Serialize};

use super::error::{Result, StoreError};
use super::fsutil::{lock, LockGuard};
use crate::base::fs::{write_atomic, Durability};

/// One named image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// The platform's image manifest.
    pub manifest: Digest,
    /// The multi-platform index it was chosen from, if any (kept so `save`
    /// and `name@<index digest>` keep working).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Digest>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ImageIndexFile {
    pub images: BTreeMap<String, IndexEntry>,
}

#[derive(Debug)]
pub(crate) struct IndexFile {
    path: PathBuf,
    lock_path: PathBuf,
}

impl IndexFile {
    pub(crate) fn new(images_dir: &Path, locks_dir: &Path) -> Self {
        Self {
            path: images_dir.join("index.json"),
            lock_path: locks_dir.join("images.lock"),
        }
    }

    pub(crate) fn read(&self) -> Result<ImageIndexFile> {
        let _guard = lock(&self.lock_path, false)?;
        self.read_unlocked()
    }

    fn read_unlocked(&self) -> Result<ImageIndexFile> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::CorruptIndex {
                path: self.path.clone(),
                source,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ImageIndexFile::default()),
            Err(source) => Err(StoreError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Read-modify-write under the exclusive lock; the new file replaces the
    /// old one by rename, so readers see either version, never a mix.
    pub(crate) fn update<T>(&self, change: impl FnOnce(&mut ImageIndexFile) -> T) -> Result<T> {
        let _guard: LockGuard = lock(&self.lock_path, true)?;
        let mut index = self.read_unlocked()?;
        let out = change(&mut index);
        let bytes = serde_json::to_vec_pretty(&index).expect("the index always serializes");
        write_atomic(&self.path, &bytes, Durability::Durable, None).map_err(|source| StoreError::Write {
            path: self.path.clone(),
            source,
        })?;
        Ok(out)
    }
}
