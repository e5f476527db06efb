//! OCI image layout directories (`oci-layout`, `index.json`, `blobs/sha256/`) and
//! their tar form.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{io, BuildError, Result};

/// The annotation that names a tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Default for Platform {
    fn default() -> Self {
        Self::new("linux", "amd64", None)
    }
}

impl Platform {
    pub fn new(os: &str, arch: &str, variant: Option<&str>) -> Self {
        Self {
            architecture: arch.into(),
            os: os.into(),
            variant: variant.map(Into::into),
        }
    }
    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Some(Self::new(os, arch, None)),
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => Some(Self::new(os, arch, Some(v))),
            _ => None,
        }
    }
}

/// A content descriptor (media type, digest, size, optional platform and annotations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: String, size: u64) -> Self {
        Self {
            media_type: media_type.into(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }
    /// The hex part of `sha256:<hex>`.
    pub fn hex(&self) -> &str {
        self.digest.split_once(':').map_or(&self.digest, |(_, h)| h)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct IndexJson {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    manifests: Vec<Descriptor>,
}

/// An OCI image layout directory being written.
#[derive(Debug, Clone)]
pub struct OciLayout {
    dir: PathBuf,
}

impl OciLayout {
    /// Opens `dir` as a layout, creating `oci-layout`, `index.json` and `blobs/sha256/`
    /// if missing. Existing blobs and tags are kept.
    pub fn create(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(io("create", &blobs))?;
        let layout = Self { dir };
        let marker = layout.dir.join("oci-layout");
        if !marker.exists() {
            write_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !layout.dir.join("index.json").exists() {
            layout.write_index(&IndexJson {
                schema_version: 2,
                media_type: Some(crate::image::OCI_INDEX.into()),
                manifests: Vec::new(),
            })?;
        }
        Ok(layout)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `blobs/sha256/<hex>` for a `sha256:<hex>` digest.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join("blobs/sha256").join(hex)
    }

    /// Stores `data` as a blob and returns its descriptor.
    pub fn add_blob(&self, media_type: &str, data: &[u8]) -> Result<Descriptor> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(data)));
        let path = self.blob_path(&digest);
        if !path.exists() {
            write_atomic(&path, data)?;
        }
        Ok(Descriptor::new(media_type, digest, data.len() as u64))
    }

    /// A temp file inside `blobs/` for streaming a blob; `commit_blob` renames it.
    pub(crate) fn temp_blob(&self) -> Result<(PathBuf, File)> {
        let path = self
            .dir
            .join("blobs/sha256")
            .join(format!(".tmp-{}-{}", std::process::id(), unique()));
        let f = File::create(&path).map_err(io("create", &path))?;
        Ok((path, f))
    }

    pub(crate) fn commit_blob(&self, tmp: &Path, digest: &str) -> Result<()> {
        let dst = self.blob_path(digest);
        fs::rename(tmp, &dst).map_err(io("rename blob into", &dst))
    }

    /// Points tag `tag` at `desc` in `index.json` (replacing an older entry of that tag).
    pub fn tag(&self, tag: &str, desc: &Descriptor) -> Result<()> {
        let mut index = self.read_index()?;
        index
            .manifests
            .retain(|d| d.annotations.get(REF_NAME).map(String::as_str) != Some(tag));
        let mut desc = desc.clone();
        desc.annotations.insert(REF_NAME.into(), tag.into());
        index.manifests.push(desc);
        self.write_index(&index)
    }

    /// The descriptors listed in `index.json`.
    pub fn manifests(&self) -> Result<Vec<Descriptor>> {
        Ok(self.read_index()?.manifests)
    }

    fn read_index(&self) -> Result<IndexJson> {
        let path = self.dir.join("index.json");
        let bytes = fs::read(&path).map_err(io("read", &path))?;
        serde_json::from_slice(&bytes).map_err(|e| BuildError::Layout {
            path,
            reason: format!("index.json is not valid: {e}"),
        })
    }

    fn write_index(&self, index: &IndexJson) -> Result<()> {
        let bytes = serde_json::to_vec(index).expect("index serialises");
        write_atomic(&self.dir.join("index.json"), &bytes)
    }

    /// Writes the layout as a tar (`oci-layout`, `index.json`, `blobs/…`), sorted,
    /// with mtime 0 and owner 0:0 so the same layout gives the same bytes.
    pub fn write_tar(&self, out: &Path) -> Result<()> {
        let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
        let file = File::create(&tmp).map_err(io("create", &tmp))?;
        let mut b = tar::Builder::new(io::BufWriter::new(file));
        let mut files = vec![PathBuf::from("oci-layout"), PathBuf::from("index.json")];
        let mut blobs: Vec<_> = fs::read_dir(self.dir.join("blobs/sha256"))
            .map_err(io("read", self.dir.join("blobs/sha256")))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .filter(|n| !n.to_string_lossy().starts_with(".tmp-"))
            .collect();
        blobs.sort();
        for dir in ["blobs", "blobs/sha256"] {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            h.set_mtime(0);
            b.append_data(&mut h, dir, io::empty()).map_err(io("write", &tmp))?;
        }
        files.extend(blobs.into_iter().map(|n| Path::new("blobs/sha256").join(n)));
        for rel in files {
            let src = self.dir.join(&rel);
            let mut f = File::open(&src).map_err(io("open", &src))?;
            let len = f.metadata().map_err(io("stat", &src))?.len();
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(len);
            h.set_mtime(0);
            b.append_data(&mut h, &rel, &mut f).map_err(io("write", &tmp))?;
        }
        let mut w = b.into_inner().map_err(io("finish", &tmp))?;
        w.flush().map_err(io("write", &tmp))?;
        let file = w.into_inner().map_err(|e| io("write", &tmp)(e.into_error()))?;
        file.sync_all().map_err(io("fsync", &tmp))?;
        fs::rename(&tmp, out).map_err(io("rename to", out))
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// temp file → fsync → rename.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(format!(".tmp-{}-{}", std::process::id(), unique()));
    let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(data).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("fsync", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename to", path))
}
