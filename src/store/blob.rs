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
    /// Bytes already handed to the kernel for writeback (see [`WRITEBACK_STEP`]).
    flushed: u64,
}

/// Start writeback every this many bytes, so the fsync at commit waits only
/// for the tail instead of the whole blob (measured: bench/README.md, Pull).
const WRITEBACK_STEP: u64 = 8 << 20;

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

fn file_of(target: &mut Target) -> &mut File {
    match target {
        Target::Known { lock, .. } => lock,
        Target::Unknown { file } => file,
    }
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
            flushed: 0,
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
            flushed: 0,
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
        self.flushed = 0;
        Ok(())
    }

    fn file_mut(&mut self) -> &mut File {
        file_of(&mut self.target)
    }

    /// Appends bytes, hashing them on the way.
    pub fn write_chunk(&mut self, bytes: &[u8]) -> Result<()> {
        let temp = &self.temp;
        file_of(&mut self.target)
            .write_all(bytes)
            .map_err(|source| StoreError::Write {
                path: temp.clone(),
                source,
            })?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        if self.written - self.flushed >= WRITEBACK_STEP {
            self.start_writeback();
        }
        Ok(())
    }

    /// Asks the kernel to start writing the dirty range out now, without
    /// waiting. Failure only costs speed: commit's fsync still guarantees it.
    fn start_writeback(&mut self) {
        use std::os::fd::AsRawFd;
        let (from, len) = (self.flushed, self.written - self.flushed);
        let fd = file_of(&mut self.target).as_raw_fd();
        // SAFETY: fd is an open file owned by self for the whole call;
        // sync_file_range only reads the arguments and touches no memory of ours.
        let rc = unsafe {
            libc::sync_file_range(
                fd,
                i64::try_from(from).unwrap_or(i64::MAX),
                i64::try_from(len).unwrap_or(0),
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if rc == 0 {
            self.flushed = self.written;
        }
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
        // fdatasync: data plus the size needed to read it back; the rename
        // and the directory fsync below make the name durable.
        self.file_mut()
            .sync_data()
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
