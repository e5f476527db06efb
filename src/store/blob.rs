//! Writing blobs: stream into `ingest/`, hash while writing, verify, fsync, rename.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};

use super::error::{Result, StoreError};
use super::fsutil::{create_dir, open_existing_or_new, sync_dir};

/// The destination of a blob write: where it lands and how it is checked.
#[derive(Debug)]
enum Target {
    /// Digest known in advance: the ingest file is named after it (resumable)
    /// and locked, so two writers of the same blob take turns.
    Known { digest: Digest, lock: Flock<File> },
    /// Digest learned from the content (docker-save layers).
    Unknown { file: File },
}

/// An open blob write. Bytes go to disk as they come; [`BlobWriter::commit`]
/// verifies the digest and moves the file into `blobs/` atomically.
#[derive(Debug)]
pub struct BlobWriter {
    target: Target,
    temp: PathBuf,
    blobs: PathBuf,
    hasher: Sha256,
    written: u64,
}

/// The result of asking to write a blob whose digest is known.
#[derive(Debug)]
pub enum Ingest {
    /// The blob is already in the store.
    Present,
    /// Write (or continue writing, from [`BlobWriter::offset`]) here.
    Write(Box<BlobWriter>),
}

pub(crate) fn sha256_hex(digest: &Digest) -> Result<&str> {
    match digest.algorithm() {
        oci_spec::image::DigestAlgorithm::Sha256 => Ok(digest.digest()),
        _ => Err(StoreError::UnsupportedDigest {
            digest: digest.to_string(),
        }),
    }
}

pub(crate) fn digest_of_hex(hex: &str) -> Digest {
    Digest::from_str(&format!("sha256:{hex}")).expect("a sha256 hex string is a valid digest")
}

impl BlobWriter {
    /// Opens `ingest/sha256-<hex>` for the blob `digest`, waiting for any other
    /// writer of the same blob. Existing bytes (an interrupted download) are
    /// kept and re-hashed so the write resumes from [`Self::offset`].
    pub(crate) fn open_known(ingest: &Path, blobs: &Path, blob_path: &Path, digest: &Digest) -> Result<Ingest> {
        let hex = sha256_hex(digest)?;
        create_dir(ingest)?;
        let temp = ingest.join(format!("sha256-{hex}"));
        let werr = |source: io::Error| StoreError::Write {
            path: temp.clone(),
            source,
        };
        let file = open_existing_or_new(&temp).map_err(werr)?;
        let mut lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| StoreError::Lock {
            path: temp.clone(),
            source: e.into(),
        })?;
        // Checked under the lock: whoever held it before us may have just finished.
        if blob_path.exists() {
            return Ok(Ingest::Present);
        }
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        lock.seek(SeekFrom::Start(0)).map_err(werr)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = lock.read(&mut buf).map_err(werr)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            written += n as u64;
        }
        Ok(Ingest::Write(Box::new(BlobWriter {
            target: Target::Known {
                digest: digest.clone(),
                lock,
            },
            temp,
            blobs: blobs.to_path_buf(),
            hasher,
            written,
        })))
    }

    pub(crate) fn open_unknown(ingest: &Path, blobs: &Path) -> Result<BlobWriter> {
        create_dir(ingest)?;
        let temp = ingest.join(super::fsutil::temp_name("load"));
        let file = File::create(&temp).map_err(|source| StoreError::Write {
            path: temp.clone(),
            source,
        })?;
        Ok(BlobWriter {
            target: Target::Unknown { file },
            temp,
            blobs: blobs.to_path_buf(),
            hasher: Sha256::new(),
            written: 0,
        })
    }

    /// Bytes already written (where a resumed download starts).
    pub fn offset(&self) -> u64 {
        self.written
    }

    /// Throws away what was written, for a server that ignored our Range request.
    pub fn restart(&mut self) -> Result<()> {
        let temp = self.temp.clone();
        let file = self.file_mut();
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .map_err(|source| StoreError::Write { path: temp, source })?;
        self.hasher = Sha256::new();
        self.written = 0;
        Ok(())
    }

    fn file_mut(&mut self) -> &mut File {
        match &mut self.target {
            Target::Known { lock, .. } => lock,
            Target::Unknown { file } => file,
        }
    }

    /// Appends bytes, hashing them on the way.
    pub fn write_chunk(&mut self, bytes: &[u8]) -> Result<()> {
        let temp = self.temp.clone();
        self.file_mut()
            .write_all(bytes)
            .map_err(|source| StoreError::Write { path: temp, source })?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Copies a whole reader into the blob; a read error is reported as `read_err`.
    pub fn copy_from(&mut self, reader: &mut dyn Read, read_err: impl Fn(io::Error) -> StoreError) -> Result<()> {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(e)),
            };
            self.write_chunk(&buf[..n])?;
        }
    }

    /// Verifies the digest and moves the blob into the store (fsync, rename,
    /// fsync the directory). On a mismatch the partial file is deleted, so the
    /// next attempt starts clean and nothing bad is ever stored.
    pub fn commit(mut self) -> Result<Digest> {
        let actual_hex = hex::encode(self.hasher.clone().finalize());
        let actual = digest_of_hex(&actual_hex);
        if let Target::Known { digest, .. } = &self.target {
            if digest != &actual {
                let expected = digest.to_string();
                let _ = fs::remove_file(&self.temp);
                return Err(StoreError::DigestMismatch {
                    expected,
                    actual: actual.to_string(),
                    size: self.written,
                });
            }
        }
        let temp = self.temp.clone();
        self.file_mut()
            .sync_all()
            .map_err(|source| StoreError::Write { path: temp, source })?;
        let dir = self.blobs.join("sha256");
        create_dir(&dir)?;
        let dest = dir.join(&actual_hex);
        fs::rename(&self.temp, &dest).map_err(|source| StoreError::Write {
            path: dest.clone(),
            source,
        })?;
        sync_dir(&dir)?;
        Ok(actual)
    }

    /// Removes the partial file of an abandoned write (not for resumable ones).
    pub fn discard(self) {
        if matches!(self.target, Target::Unknown { .. }) {
            let _ = fs::remove_file(&self.temp);
        }
    }
}
