//! Layers: what goes into one tar, in the order given, and how it is written.
//!
//! Entries are written in exactly the order they were added (directory trees are
//! walked in sorted order), so the same inputs always give the same bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{io, BuildError, Result};

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file with these contents.
    File(Vec<u8>),
    /// A regular file whose contents are read (streamed) from the host at write time.
    HostFile(PathBuf),
    Dir,
    /// A symlink to this target (written as given, never resolved).
    Symlink(String),
    /// A hardlink to another path of the image (same or lower layer).
    Hardlink(String),
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// One tar entry. Defaults: owner 0:0, mode 0644 for files and 0755 for directories,
/// 0777 for symlinks, mtime = the layer's mtime (0 unless set), no xattrs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: EntryKind,
    pub mode: Option<u32>,
    pub uid: u64,
    pub gid: u64,
    pub mtime: Option<u64>,
    /// Extended attributes (PAX `SCHILY.xattr.*`), e.g. `security.capability`.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Entry {
    pub fn new(path: impl Into<String>, kind: EntryKind) -> Self {
        Self {
            path: path.into(),
            kind,
            mode: None,
            uid: 0,
            gid: 0,
            mtime: None,
            xattrs: BTreeMap::new(),
        }
    }
    pub fn file(path: impl Into<String>, contents: impl Into<Vec<u8>>) -> Self {
        Self::new(path, EntryKind::File(contents.into()))
    }
    pub fn host_file(path: impl Into<String>, src: impl Into<PathBuf>) -> Self {
        Self::new(path, EntryKind::HostFile(src.into()))
    }
    pub fn dir(path: impl Into<String>) -> Self {
        Self::new(path, EntryKind::Dir)
    }
    pub fn symlink(path: impl Into<String>, target: impl Into<String>) -> Self {
        Self::new(path, EntryKind::Symlink(target.into()))
    }
    pub fn hardlink(path: impl Into<String>, target: impl Into<String>) -> Self {
        Self::new(path, EntryKind::Hardlink(target.into()))
    }
    pub fn char_device(path: impl Into<String>, major: u32, minor: u32) -> Self {
        Self::new(path, EntryKind::CharDevice { major, minor })
    }
    pub fn block_device(path: impl Into<String>, major: u32, minor: u32) -> Self {
        Self::new(path, EntryKind::BlockDevice { major, minor })
    }
    pub fn fifo(path: impl Into<String>) -> Self {
        Self::new(path, EntryKind::Fifo)
    }
    /// `DIR/.wh.NAME`: deletes `DIR/NAME` from lower layers.
    pub fn whiteout(path: &str) -> Self {
        let (dir, name) = split_parent(path);
        Self::file(format!("{dir}.wh.{name}"), Vec::new())
    }
    /// `DIR/.wh..wh..opq`: hides everything lower layers put in `DIR`.
    pub fn opaque(dir: &str) -> Self {
        let dir = dir.trim_end_matches('/');
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        Self::file(format!("{prefix}.wh..wh..opq"), Vec::new())
    }

    /// Permission bits including setuid/setgid/sticky (`0o7777` mask).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode & 0o7777);
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, secs: u64) -> Self {
        self.mtime = Some(secs);
        self
    }
    pub fn xattr(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.xattrs.insert(name.into(), value.into());
        self
    }
}

fn split_parent(path: &str) -> (String, &str) {
    let path = path.trim_end_matches('/');
    match path.rfind('/') {
        Some(i) => (path[..=i].to_string(), &path[i + 1..]),
        None => (String::new(), path),
    }
}

/// Where the contents of a layer come from, in order.
#[derive(Debug, Clone)]
enum Source {
    Entry(Entry),
    /// A host file, directory tree or symlink copied to `dst`.
    Host(HostAdd),
    /// The data.tar of a `.deb`.
    Deb(PathBuf),
}

/// `--add SRC:DST[:MODE[:UID:GID]]`: a host path copied into the image.
/// `mode` applies to SRC itself (for a directory, its entries keep their host
/// permission bits); `uid:gid` apply to everything copied (default 0:0, never the
/// host's owners, so builds do not depend on who runs them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAdd {
    pub src: PathBuf,
    pub dst: String,
    pub mode: Option<u32>,
    pub uid: u64,
    pub gid: u64,
}

impl HostAdd {
    pub fn new(src: impl Into<PathBuf>, dst: impl Into<String>) -> Self {
        Self {
            src: src.into(),
            dst: dst.into(),
            mode: None,
            uid: 0,
            gid: 0,
        }
    }

    /// Parses `SRC:DST[:MODE[:UID:GID]]` (MODE in octal).
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |reason: &str| BuildError::AddSpec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = spec.split(':').collect();
        if !(parts.len() == 2 || parts.len() == 3 || parts.len() == 5) {
            return Err(bad("wrong number of ':' fields"));
        }
        if parts[0].is_empty() || parts[1].is_empty() {
            return Err(bad("SRC and DST must not be empty"));
        }
        let mut add = Self::new(parts[0], parts[1]);
        if parts.len() >= 3 && !parts[2].is_empty() {
            add.mode = Some(u32::from_str_radix(parts[2], 8).map_err(|_| bad("MODE is not octal"))?);
        }
        if parts.len() == 5 {
            add.uid = parts[3].parse().map_err(|_| bad("UID is not a number"))?;
            add.gid = parts[4].parse().map_err(|_| bad("GID is not a number"))?;
        }
        Ok(add)
    }
}

/// One layer: entries, host paths and `.deb` contents, written in the order added.
#[derive(Debug, Clone)]
pub struct Layer {
    sources: Vec<Source>,
    checked: bool,
    mtime: u64,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    /// A normal layer: paths are normalised (leading `/` and `./` dropped), `..` is
    /// refused, and missing parent directories are added (0755, 0:0) before their
    /// first child.
    pub fn new() -> Self {
        Self {
            sources: Vec::new(),
            checked: true,
            mtime: 0,
        }
    }
    /// A hostile layer for tests: names and link targets are written byte for byte as
    /// given (`../x`, `/abs`, …), nothing is added or checked.
    pub fn unchecked() -> Self {
        Self {
            checked: false,
            ..Self::new()
        }
    }
    /// mtime (seconds since the epoch) for entries that set none. Default 0.
    pub fn with_mtime(mut self, secs: u64) -> Self {
        self.mtime = secs;
        self
    }
    pub fn entry(mut self, entry: Entry) -> Self {
        self.sources.push(Source::Entry(entry));
        self
    }
    pub fn entries(mut self, entries: impl IntoIterator<Item = Entry>) -> Self {
        self.sources.extend(entries.into_iter().map(Source::Entry));
        self
    }
    /// A host file, symlink or directory tree (walked in sorted order; hardlinked
    /// files inside it stay hardlinks; sockets are skipped; host xattrs are not copied).
    pub fn host(mut self, add: HostAdd) -> Self {
        self.sources.push(Source::Host(add));
        self
    }
    /// Everything under `dir` becomes the layer's root contents.
    pub fn dir_contents(self, dir: impl Into<PathBuf>) -> Self {
        self.host(HostAdd::new(dir, "/"))
    }
    /// The files of a `.deb` (its data.tar, gz/xz/zst/none), without running scripts.
    pub fn deb(mut self, path: impl Into<PathBuf>) -> Self {
        self.sources.push(Source::Deb(path.into()));
        self
    }

    /// Streams the layer as an uncompressed tar into `out`.
    pub fn write_tar<W: Write>(&self, out: W) -> Result<W> {
        let mut w = TarWriter {
            out: tar::Builder::new(out),
            checked: self.checked,
            mtime: self.mtime,
            seen: BTreeSet::new(),
        };
        for source in &self.sources {
            match source {
                Source::Entry(e) => w.put_entry(e)?,
                Source::Host(add) => w.put_host(add)?,
                Source::Deb(path) => crate::deb::for_each_data_entry(path, |hdr, data| w.put(hdr, data))?,
            }
        }
        w.out.into_inner().map_err(io("finish tar", "layer"))
    }
}

/// A fully resolved tar entry, before encoding.
#[derive(Debug, Clone)]
pub(crate) struct Hdr {
    pub path: Vec<u8>,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub size: u64,
    pub link: Option<Vec<u8>>,
    pub dev: (u32, u32),
    pub xattrs: Vec<(String, Vec<u8>)>,
}

struct TarWriter<W: Write> {
    out: tar::Builder<W>,
    checked: bool,
    mtime: u64,
    /// Paths already written (checked layers), to add missing parents once.
    seen: BTreeSet<Vec<u8>>,
}

impl<W: Write> TarWriter<W> {
    fn put_entry(&mut self, e: &Entry) -> Result<()> {
        let (kind, default_mode, link, dev) = match &e.kind {
            EntryKind::File(_) | EntryKind::HostFile(_) => (tar::EntryType::Regular, 0o644, None, (0, 0)),
            EntryKind::Dir => (tar::EntryType::Directory, 0o755, None, (0, 0)),
            EntryKind::Symlink(t) => (tar::EntryType::Symlink, 0o777, Some(t.clone()), (0, 0)),
            EntryKind::Hardlink(t) => (tar::EntryType::Link, 0o644, Some(t.clone()), (0, 0)),
            EntryKind::CharDevice { major, minor } => (tar::EntryType::Char, 0o600, None, (*major, *minor)),
            EntryKind::BlockDevice { major, minor } => (tar::EntryType::Block, 0o600, None, (*major, *minor)),
            EntryKind::Fifo => (tar::EntryType::Fifo, 0o644, None, (0, 0)),
        };
        let link = link.map(String::into_bytes);
        let mut hdr = Hdr {
            path: e.path.clone().into_bytes(),
            kind,
            mode: e.mode.unwrap_or(default_mode),
            uid: e.uid,
            gid: e.gid,
            mtime: e.mtime.unwrap_or(self.mtime),
            size: 0,
            link,
            dev,
            xattrs: e.xattrs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        match &e.kind {
            EntryKind::File(data) => {
                hdr.size = data.len() as u64;
                self.put(hdr, &mut data.as_slice())
            }
            EntryKind::HostFile(src) => {
                let mut f = File::open(src).map_err(io("open", src))?;
                hdr.size = f.metadata().map_err(io("stat", src))?.len();
                self.put(hdr, &mut f)
            }
            _ => self.put(hdr, &mut io::empty()),
        }
    }

    fn put_host(&mut self, add: &HostAdd) -> Result<()> {
        let meta = std::fs::symlink_metadata(&add.src).map_err(io("stat", &add.src))?;
        let mut links: HashMap<(u64, u64), String> = HashMap::new();
        self.put_host_path(
            add,
            &add.src,
            add.dst.trim_end_matches('/'),
            &meta,
            add.mode,
            &mut links,
        )
    }

    fn put_host_path(
        &mut self,
        add: &HostAdd,
        src: &Path,
        dst: &str,
        meta: &std::fs::Metadata,
        mode: Option<u32>,
        links: &mut HashMap<(u64, u64), String>,
    ) -> Result<()> {
        let ft = meta.file_type();
        let mode = mode.unwrap_or(meta.mode() & 0o7777);
        let base = |kind| Entry {
            path: dst.to_string(),
            kind,
            mode: Some(mode),
            uid: add.uid,
            gid: add.gid,
            mtime: None,
            xattrs: BTreeMap::new(),
        };
        if ft.is_dir() {
            if !dst.is_empty() {
                self.put_entry(&base(EntryKind::Dir))?;
            }
            let mut children: Vec<_> = std::fs::read_dir(src)
                .map_err(io("read directory", src))?
                .map(|r| r.map(|d| d.file_name()))
                .collect::<io::Result<_>>()
                .map_err(io("read directory", src))?;
            children.sort();
            for name in children {
                let child = src.join(&name);
                let child_meta = std::fs::symlink_metadata(&child).map_err(io("stat", &child))?;
                let child_dst = format!("{dst}/{}", name.to_string_lossy());
                self.put_host_path(add, &child, &child_dst, &child_meta, None, links)?;
            }
            return Ok(());
        }
        let kind = if ft.is_symlink() {
            let target = std::fs::read_link(src).map_err(io("read link", src))?;
            EntryKind::Symlink(target.to_string_lossy().into_owned())
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                    return self.put_entry(&base(EntryKind::Hardlink(first.clone())));
                }
                links.insert((meta.dev(), meta.ino()), dst.to_string());
            }
            EntryKind::HostFile(src.to_path_buf())
        } else if ft.is_char_device() || ft.is_block_device() {
            let (major, minor) = (libc_major(meta.rdev()), libc_minor(meta.rdev()));
            if ft.is_char_device() {
                EntryKind::CharDevice { major, minor }
            } else {
                EntryKind::BlockDevice { major, minor }
            }
        } else if ft.is_fifo() {
            EntryKind::Fifo
        } else {
            return Ok(()); // sockets have no place in an image
        };
        self.put_entry(&base(kind))
    }

    /// Encodes one entry: optional GNU long-name/long-link and PAX xattr records, the
    /// header, the data.
    pub(crate) fn put(&mut self, mut hdr: Hdr, data: &mut dyn Read) -> Result<()> {
        if self.checked {
            let path = normalize(&String::from_utf8_lossy(&hdr.path))?;
            if path.is_empty() {
                return Ok(()); // the root itself
            }
            self.add_parents(&path)?;
            self.seen.insert(path.clone().into_bytes());
            hdr.path = path.into_bytes();
            if hdr.kind == tar::EntryType::Link {
                if let Some(link) = &hdr.link {
                    hdr.link = Some(normalize(&String::from_utf8_lossy(link))?.into_bytes());
                }
            }
            if hdr.kind == tar::EntryType::Directory {
                hdr.path.push(b'/');
            }
        }
        if !hdr.xattrs.is_empty() {
            let mut pax = Vec::new();
            for (k, v) in &hdr.xattrs {
                pax_record(&mut pax, &format!("SCHILY.xattr.{k}"), v);
            }
            self.special(tar::EntryType::XHeader, b"././@PaxHeader", &pax)?;
        }
        let mut h = tar::Header::new_gnu();
        if hdr.path.len() > 100 {
            let mut long = hdr.path.clone();
            long.push(0);
            self.special(tar::EntryType::GNULongName, b"././@LongLink", &long)?;
        }
        set_name(&mut h, &hdr.path);
        if let Some(link) = &hdr.link {
            if link.len() > 100 {
                let mut long = link.clone();
                long.push(0);
                self.special(tar::EntryType::GNULongLink, b"././@LongLink", &long)?;
            }
            let n = link.len().min(100);
            if let Some(g) = h.as_gnu_mut() {
                g.linkname[..n].copy_from_slice(&link[..n]);
            }
        }
        h.set_entry_type(hdr.kind);
        h.set_mode(hdr.mode);
        h.set_uid(hdr.uid);
        h.set_gid(hdr.gid);
        h.set_mtime(hdr.mtime);
        h.set_size(if hdr.kind == tar::EntryType::Regular {
            hdr.size
        } else {
            0
        });
        if matches!(hdr.kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(hdr.dev.0)
                .map_err(io("set device major", lossy(&hdr.path)))?;
            h.set_device_minor(hdr.dev.1)
                .map_err(io("set device minor", lossy(&hdr.path)))?;
        }
        h.set_cksum();
        let size = h.size().unwrap_or(0);
        let mut limited = data.take(size);
        let mut counted = CountingReader {
            inner: &mut limited,
            n: 0,
        };
        self.out
            .append(&h, &mut counted)
            .map_err(io("write tar entry", lossy(&hdr.path)))?;
        if counted.n != size {
            return Err(BuildError::Io {
                step: "read contents (file changed size while being added)",
                path: lossy(&hdr.path).into(),
                source: io::ErrorKind::UnexpectedEof.into(),
            });
        }
        Ok(())
    }

    fn special(&mut self, kind: tar::EntryType, name: &[u8], data: &[u8]) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        set_name(&mut h, name);
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        h.set_cksum();
        self.out.append(&h, data).map_err(io("write tar entry", lossy(name)))
    }

    fn add_parents(&mut self, path: &str) -> Result<()> {
        let mut prefix = String::new();
        let comps: Vec<&str> = path.split('/').collect();
        for comp in &comps[..comps.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
            if !self.seen.contains(prefix.as_bytes()) {
                let hdr = Hdr {
                    path: prefix.clone().into_bytes(),
                    kind: tar::EntryType::Directory,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    mtime: self.mtime,
                    size: 0,
                    link: None,
                    dev: (0, 0),
                    xattrs: Vec::new(),
                };
                self.put(hdr, &mut io::empty())?;
            }
        }
        Ok(())
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn set_name(h: &mut tar::Header, name: &[u8]) {
    let n = name.len().min(100);
    if let Some(g) = h.as_gnu_mut() {
        g.name = [0; 100];
        g.name[..n].copy_from_slice(&name[..n]);
    }
}

/// A PAX record: `"<len> <key>=<value>\n"` where len counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// `/a//./b/` → `a/b`; `..` is refused.
pub(crate) fn normalize(path: &str) -> Result<String> {
    let mut parts = Vec::new();
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                return Err(BuildError::InvalidPath {
                    path: path.to_string(),
                    reason: "contains `..`",
                })
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

fn libc_major(dev: u64) -> u32 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)) as u32
}
fn libc_minor(dev: u64) -> u32 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)) as u32
}

struct CountingReader<R> {
    inner: R,
    n: u64,
}
impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let mut out = Vec::new();
        pax_record(&mut out, "SCHILY.xattr.user.a", b"xyz");
        let text = String::from_utf8(out.clone()).unwrap();
        let len: usize = text.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(len, out.len());
    }

    #[test]
    fn normalize_refuses_dotdot_and_strips_roots() {
        assert_eq!(normalize("/./usr//bin/").unwrap(), "usr/bin");
        assert!(normalize("a/../../etc").is_err());
    }

    #[test]
    fn add_spec_parses_mode_and_owner() {
        let a = HostAdd::parse("/bin/busybox:/bin/sh:4755:1:2").unwrap();
        assert_eq!((a.mode, a.uid, a.gid), (Some(0o4755), 1, 2));
        assert!(HostAdd::parse("a:b:9").is_err());
        assert!(HostAdd::parse("a").is_err());
    }

    #[test]
    fn checked_layer_adds_parents_and_reads_back() {
        let layer = Layer::new()
            .entry(
                Entry::file("/usr/bin/x", b"hi".to_vec())
                    .mode(0o4755)
                    .xattr("user.k", b"v".to_vec()),
            )
            .entry(Entry::symlink("bin", "usr/bin"));
        let bytes = layer.write_tar(Vec::new()).unwrap();
        let mut ar = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let xattrs: Vec<String> = match e.pax_extensions().unwrap() {
                Some(exts) => exts.map(|p| p.unwrap().key().unwrap().to_string()).collect(),
                None => vec![],
            };
            seen.push((
                e.path().unwrap().display().to_string(),
                e.header().mode().unwrap(),
                xattrs,
            ));
        }
        assert_eq!(
            seen,
            vec![
                ("usr/".into(), 0o755, vec![]),
                ("usr/bin/".into(), 0o755, vec![]),
                ("usr/bin/x".into(), 0o4755, vec!["SCHILY.xattr.user.k".to_string()]),
                ("bin".into(), 0o777, vec![]),
            ]
        );
    }

    #[test]
    fn unchecked_layer_keeps_hostile_names() {
        let layer = Layer::unchecked()
            .entry(Entry::file("../escape", b"x".to_vec()))
            .entry(Entry::hardlink("h", "../../etc/passwd"));
        let bytes = layer.write_tar(Vec::new()).unwrap();
        let mut ar = tar::Archive::new(bytes.as_slice());
        let names: Vec<Vec<u8>> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path_bytes().into_owned())
            .collect();
        assert_eq!(names, vec![b"../escape".to_vec(), b"h".to_vec()]);
    }
}
