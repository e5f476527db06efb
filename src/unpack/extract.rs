//! One layer tar applied to a root directory: entries, whiteouts, metadata.
//!
//! The image spec's model: a layer's whiteouts (`.wh.NAME`, `.wh..wh..opq`) remove
//! what *lower* layers put there, then the layer's own entries are applied. We stream
//! the tar once, so whiteouts are applied when they are met, and everything this layer
//! already created (tracked in `created`) is kept: that makes the result independent
//! of where the whiteout sits in the tar.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fchmod, fchmodat, mknodat, utimensat, FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, linkat, symlinkat, Gid, Uid};

use super::fs::{
    child_path, file_type, list_dir, lstat_at, open_at, os, remove_all_at, resolve_dir, Resolved, WalkError,
};
use super::UnpackError;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// State shared by the layers of one unpack.
pub(crate) struct Extractor {
    root: OwnedFd,
    /// Whether to apply owners (root only; as a user, files keep the caller's ids).
    chown: bool,
    /// Directory mtimes, applied once at the end (adding children changes them).
    dir_mtimes: HashMap<Vec<u8>, i64>,
    buf: Vec<u8>,
}

/// State of the layer being applied.
struct LayerState<'a> {
    layer: &'a str,
    /// Real paths (relative to the root) this layer created or replaced.
    created: BTreeSet<Vec<u8>>,
    /// Last parent directory looked up: tars list a directory's entries together.
    /// Cleared whenever something is removed or replaced.
    parent_cache: Option<(Vec<u8>, Resolved)>,
}

impl Extractor {
    pub(crate) fn new(root: OwnedFd) -> Self {
        let chown = nix::unistd::geteuid().is_root();
        Self {
            root,
            chown,
            dir_mtimes: HashMap::new(),
            buf: vec![0; 1 << 20],
        }
    }

    /// Applies one layer's tar stream.
    pub(crate) fn apply_layer(&mut self, layer: &str, tar_stream: impl Read) -> Result<(), UnpackError> {
        let mut state = LayerState {
            layer,
            created: BTreeSet::new(),
            parent_cache: None,
        };
        let mut archive = tar::Archive::new(tar_stream);
        let entries = archive.entries().map_err(|source| UnpackError::ReadLayer {
            layer: layer.to_string(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| UnpackError::ReadLayer {
                layer: layer.to_string(),
                source,
            })?;
            self.apply_entry(&mut state, entry)?;
        }
        Ok(())
    }

    /// Sets the directory mtimes recorded while unpacking.
    pub(crate) fn finish(self) -> Result<(), UnpackError> {
        for (path, mtime) in &self.dir_mtimes {
            let comps: Vec<&[u8]> = path.split(|b| *b == b'/').filter(|c| !c.is_empty()).collect();
            let Some((name, parent)) = comps.split_last() else {
                continue;
            };
            // A directory removed by a later layer is simply gone.
            let Ok(dir) = resolve_dir(&self.root, parent, false, &mut |_| {}) else {
                continue;
            };
            let t = TimeSpec::new(*mtime, 0);
            let _ = utimensat(
                Some(dir.fd.as_raw_fd()),
                os(name),
                &t,
                &t,
                UtimensatFlags::NoFollowSymlink,
            );
        }
        Ok(())
    }

    /// One tar entry: its name checked, then the root's metadata, a whiteout, a
    /// directory or another node, each a step of its own below.
    fn apply_entry<R: Read>(&mut self, st: &mut LayerState, mut entry: tar::Entry<R>) -> Result<(), UnpackError> {
        let raw = entry.path_bytes().into_owned();
        let comps = clean_components(&raw).map_err(|r| refused(st, &raw, r.to_string()))?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName
        ) {
            return Ok(());
        }
        let Some((name, parent)) = comps.split_last() else {
            // The root entry ("/" or "./"): its metadata applies to the root itself.
            if kind == tar::EntryType::Directory {
                self.apply_root(st, &raw, &header, &mut entry)?;
            }
            return Ok(());
        };
        let name: &[u8] = name;

        if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(st, &raw, parent, name, target);
        }

        let (key, dir) = self.parent(st, &raw, parent, true)?.expect("created on demand");
        let rel = child_path(&dir.path, name);
        let made = if kind == tar::EntryType::Directory {
            let fd = self.make_dir(st, &raw, &dir, name)?;
            self.set_fd_metadata(st, &raw, fd, &header, &mut entry)?;
            self.dir_mtimes.insert(rel.clone(), mtime(&header));
            true
        } else {
            self.make_node(st, &raw, &dir, name, &mut entry)?
        };
        if made {
            st.created.insert(rel);
            Self::keep_parent(st, key, dir);
        }
        Ok(())
    }

    /// The root entry's owner, mode and xattrs, set on the root directory.
    fn apply_root<R: Read>(
        &self,
        st: &LayerState,
        raw: &[u8],
        header: &tar::Header,
        entry: &mut tar::Entry<R>,
    ) -> Result<(), UnpackError> {
        let root = self
            .root
            .try_clone()
            .map_err(|e| self.write_err(st, raw, "open root", e))?;
        let dir = open_at(&root, b".", OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())
            .map_err(|e| self.write_err(st, raw, "open root", e.into()))?;
        self.set_fd_metadata(st, raw, dir, header, entry)
    }

    /// A directory entry: made unless one is there (anything else at the name is
    /// replaced), and opened for its metadata; its mtime is set at the end ([`Self::finish`]).
    fn make_dir(&self, st: &LayerState, raw: &[u8], dir: &Resolved, name: &[u8]) -> Result<OwnedFd, UnpackError> {
        let mkdir = || nix::sys::stat::mkdirat(Some(dir.fd.as_raw_fd()), os(name), Mode::from_bits_truncate(0o700));
        match mkdir() {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                let existing = lstat_at(&dir.fd, name).map_err(|e| self.write_err(st, raw, "stat", e.into()))?;
                if existing.is_none_or(|s| file_type(&s) != SFlag::S_IFDIR) {
                    self.remove(st, raw, &dir.fd, name)?;
                    mkdir().map_err(|e| self.write_err(st, raw, "mkdir", e.into()))?;
                }
            }
            Err(e) => return Err(self.write_err(st, raw, "mkdir", e.into())),
        }
        open_at(
            &dir.fd,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| self.write_err(st, raw, "open directory", e.into()))
    }

    /// Any entry but a directory: a file, symlink, hardlink, device or fifo, made at
    /// `name` (whatever is there is replaced). False when the entry was skipped (an
    /// unsupported type); a hardlink to itself is made by leaving it.
    fn make_node<R: Read>(
        &mut self,
        st: &LayerState,
        raw: &[u8],
        dir: &Resolved,
        name: &[u8],
        entry: &mut tar::Entry<R>,
    ) -> Result<bool, UnpackError> {
        let header = &entry.header().clone();
        let kind = header.entry_type();
        // A hardlink's target is resolved before anything is replaced (it may be this
        // very path).
        let link_target = if kind == tar::EntryType::Link {
            match self.hardlink_target(st, raw, entry, &child_path(&dir.path, name))? {
                Some(target) => Some(target),
                None => return Ok(true), // a link to itself: nothing to do
            }
        } else {
            None
        };
        // Create; if the name exists (any type), remove it and create again.
        let create = |f: &mut dyn FnMut() -> nix::Result<()>| -> Result<(), UnpackError> {
            match f() {
                Err(Errno::EEXIST) => {
                    self.remove(st, raw, &dir.fd, name)?;
                    f().map_err(|e| self.write_err(st, raw, "create", e.into()))
                }
                other => other.map_err(|e| self.write_err(st, raw, "create", e.into())),
            }
        };
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mut fd = None;
                create(&mut || {
                    fd = Some(open_at(
                        &dir.fd,
                        name,
                        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
                        Mode::from_bits_truncate(0o600),
                    )?);
                    Ok(())
                })?;
                let mut file = File::from(fd.expect("created"));
                copy(entry, &mut file, &mut self.buf).map_err(|e| self.write_err(st, raw, "write file", e))?;
                self.set_fd_metadata(st, raw, file.into(), header, entry)?;
                self.set_mtime(st, raw, &dir.fd, name, header)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refused(st, raw, "symlink without a target".into()))?
                    .into_owned();
                create(&mut || symlinkat(os(&target), Some(dir.fd.as_raw_fd()), os(name)))?;
                self.set_at_metadata(st, raw, dir, name, header, entry, false)?;
            }
            tar::EntryType::Link => {
                let (tdir, tname) = link_target.expect("resolved above");
                create(&mut || {
                    linkat(
                        Some(tdir.fd.as_raw_fd()),
                        os(&tname),
                        Some(dir.fd.as_raw_fd()),
                        os(name),
                        AtFlags::empty(),
                    )
                })?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (sflag, dev) = match kind {
                    tar::EntryType::Char => (SFlag::S_IFCHR, device(header)),
                    tar::EntryType::Block => (SFlag::S_IFBLK, device(header)),
                    _ => (SFlag::S_IFIFO, 0),
                };
                create(&mut || {
                    mknodat(
                        Some(dir.fd.as_raw_fd()),
                        os(name),
                        sflag,
                        Mode::from_bits_truncate(0o600),
                        dev,
                    )
                })?;
                self.set_at_metadata(st, raw, dir, name, header, entry, true)?;
            }
            other => {
                tracing::warn!(layer = st.layer, entry = %lossy(raw), kind = ?other, "unsupported tar entry type; skipped");
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A hardlink's target, inside the root and not a directory: its directory and
    /// name, or `None` when it is the link's own path `rel`.
    fn hardlink_target<R: Read>(
        &self,
        st: &LayerState,
        raw: &[u8],
        entry: &tar::Entry<R>,
        rel: &[u8],
    ) -> Result<Option<(Resolved, Vec<u8>)>, UnpackError> {
        let refuse = |reason: String| refused(st, raw, reason);
        let target = entry
            .link_name_bytes()
            .ok_or_else(|| refuse("hardlink without a target".into()))?
            .into_owned();
        let tcomps = clean_components(&target).map_err(|r| refuse(format!("hardlink target: {r}")))?;
        let Some((tname, tparent)) = tcomps.split_last() else {
            return Err(refuse("hardlink to the root directory".into()));
        };
        let tdir = resolve_dir(&self.root, tparent, false, &mut |_| {})
            .map_err(|e| refuse(format!("hardlink target {}: {}", lossy(&target), walk_reason(&e))))?;
        let tst = lstat_at(&tdir.fd, tname)
            .map_err(|e| self.write_err(st, raw, "stat hardlink target", e.into()))?
            .ok_or_else(|| refuse(format!("hardlink target {} does not exist", lossy(&target))))?;
        if file_type(&tst) == SFlag::S_IFDIR {
            return Err(refuse("hardlink to a directory".into()));
        }
        if child_path(&tdir.path, tname) == rel {
            return Ok(None);
        }
        Ok(Some((tdir, tname.to_vec())))
    }

    /// `.wh.NAME` or `.wh..wh..opq` in `parent`.
    fn whiteout(
        &mut self,
        st: &mut LayerState,
        raw: &[u8],
        parent: &[&[u8]],
        name: &[u8],
        target: &[u8],
    ) -> Result<(), UnpackError> {
        let opaque = name == OPAQUE;
        if !opaque && (target.is_empty() || target == b"." || target == b"..") {
            return Err(UnpackError::Refused {
                layer: st.layer.to_string(),
                entry: lossy(raw),
                reason: "whiteout names no sibling".into(),
            });
        }
        // Nothing below a missing directory to hide.
        let Some((_, dir)) = self.parent(st, raw, parent, false)? else {
            return Ok(());
        };
        let result = if opaque {
            list_dir(&dir.fd, b".").and_then(|(fd, children)| {
                children
                    .iter()
                    .try_for_each(|c| remove_lower(&fd, c, &child_path(&dir.path, c), &st.created))
            })
        } else {
            remove_lower(&dir.fd, target, &child_path(&dir.path, target), &st.created)
        };
        result.map_err(|e| self.write_err(st, raw, "apply whiteout", e.into()))
    }

    /// The parent directory of an entry, created if missing (`create`), or `None` if
    /// missing and not created. Taken out of the one-entry cache when it matches; the
    /// caller puts it back with `keep_parent`.
    fn parent(
        &self,
        st: &mut LayerState,
        raw: &[u8],
        comps: &[&[u8]],
        create: bool,
    ) -> Result<Option<(Vec<u8>, Resolved)>, UnpackError> {
        let key = comps.join(&b'/');
        if let Some((k, r)) = st.parent_cache.take() {
            if k == key {
                return Ok(Some((k, r)));
            }
        }
        let mut made = Vec::new();
        let resolved = match resolve_dir(&self.root, comps, create, &mut |p| made.push(p.to_vec())) {
            Ok(r) => r,
            Err(WalkError::NotFound(_)) if !create => return Ok(None),
            Err(WalkError::NotDir(_)) if !create => return Ok(None),
            Err(WalkError::Io(e)) => return Err(self.write_err(st, raw, "open parent directory", e.into())),
            Err(e) => return Err(refused(st, raw, walk_reason(&e))),
        };
        st.created.extend(made);
        Ok(Some((key, resolved)))
    }

    /// Puts a parent directory back in the cache. Safe after replacing one of its
    /// children: the cache only ever holds the parent of the last entry, and an entry
    /// only removes or replaces that parent's children, never the parent itself.
    fn keep_parent(st: &mut LayerState, key: Vec<u8>, dir: Resolved) {
        st.parent_cache = Some((key, dir));
    }

    fn remove(&self, st: &LayerState, raw: &[u8], dir: &OwnedFd, name: &[u8]) -> Result<(), UnpackError> {
        remove_all_at(dir, name).map_err(|e| self.write_err(st, raw, "replace existing", e.into()))
    }

    /// Owner, mode, xattrs through an open fd (files and directories).
    fn set_fd_metadata<R: Read>(
        &self,
        st: &LayerState,
        raw: &[u8],
        fd: OwnedFd,
        header: &tar::Header,
        entry: &mut tar::Entry<R>,
    ) -> Result<(), UnpackError> {
        let file = File::from(fd);
        if self.chown {
            std::os::unix::fs::fchown(&file, Some(uid(header)), Some(gid(header)))
                .map_err(|e| self.write_err(st, raw, "chown", e))?;
        }
        // After chown: chown clears setuid/setgid.
        fchmod(file.as_raw_fd(), Mode::from_bits_truncate(mode(header)))
            .map_err(|e| self.write_err(st, raw, "chmod", e.into()))?;
        for (k, v) in xattrs(entry) {
            use xattr::FileExt;
            if let Err(e) = file.set_xattr(&k, &v) {
                self.xattr_failed(st, raw, &k, e)?;
            }
        }
        Ok(())
    }

    /// Owner, mode, xattrs, mtime by name (symlinks, devices, fifos).
    #[allow(clippy::too_many_arguments)]
    fn set_at_metadata<R: Read>(
        &self,
        st: &LayerState,
        raw: &[u8],
        dir: &Resolved,
        name: &[u8],
        header: &tar::Header,
        entry: &mut tar::Entry<R>,
        chmod: bool,
    ) -> Result<(), UnpackError> {
        if self.chown {
            fchownat(
                Some(dir.fd.as_raw_fd()),
                os(name),
                Some(Uid::from_raw(uid(header))),
                Some(Gid::from_raw(gid(header))),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.write_err(st, raw, "chown", e.into()))?;
        }
        if chmod {
            // Only for device nodes and fifos we just created: never a symlink.
            fchmodat(
                Some(dir.fd.as_raw_fd()),
                os(name),
                Mode::from_bits_truncate(mode(header)),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| self.write_err(st, raw, "chmod", e.into()))?;
        }
        let xs = xattrs(entry);
        if !xs.is_empty() {
            let mut proc_path = format!("/proc/self/fd/{}/", dir.fd.as_raw_fd()).into_bytes();
            proc_path.extend_from_slice(name);
            for (k, v) in xs {
                // lsetxattr: never follows the final symlink.
                if let Err(e) = xattr::set(os(&proc_path), &k, &v) {
                    self.xattr_failed(st, raw, &k, e)?;
                }
            }
        }
        self.set_mtime(st, raw, &dir.fd, name, header)
    }

    fn set_mtime(
        &self,
        st: &LayerState,
        raw: &[u8],
        dir: &OwnedFd,
        name: &[u8],
        header: &tar::Header,
    ) -> Result<(), UnpackError> {
        let t = TimeSpec::new(mtime(header), 0);
        utimensat(Some(dir.as_raw_fd()), os(name), &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| self.write_err(st, raw, "set mtime", e.into()))
    }

    /// As a user, `trusted.*`/`security.*` xattrs cannot be set: skipped with a warning.
    /// As root every failure is an error.
    fn xattr_failed(&self, st: &LayerState, raw: &[u8], key: &str, e: io::Error) -> Result<(), UnpackError> {
        if !self.chown && e.raw_os_error() == Some(libc::EPERM) {
            tracing::warn!(layer = st.layer, entry = %lossy(raw), xattr = key, "cannot set xattr without root; skipped");
            return Ok(());
        }
        Err(self.write_err(st, raw, "set xattr", e))
    }

    fn write_err(&self, st: &LayerState, raw: &[u8], step: &'static str, source: io::Error) -> UnpackError {
        UnpackError::Write {
            layer: st.layer.to_string(),
            entry: lossy(raw),
            step,
            source,
        }
    }
}

/// The entry `raw` of this layer is refused (it would escape the root, or makes no sense).
fn refused(st: &LayerState, raw: &[u8], reason: String) -> UnpackError {
    UnpackError::Refused {
        layer: st.layer.to_string(),
        entry: lossy(raw),
        reason,
    }
}

/// Removes what lower layers put at `name` (in `dir`, real path `rel`), keeping what
/// this layer created: a whiteout never hides a same-layer sibling.
fn remove_lower(dir: &OwnedFd, name: &[u8], rel: &[u8], created: &BTreeSet<Vec<u8>>) -> nix::Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    let is_dir = file_type(&st) == SFlag::S_IFDIR;
    let keep_self = created.contains(rel);
    if !is_dir {
        return if keep_self { Ok(()) } else { remove_all_at(dir, name) };
    }
    let mut prefix = rel.to_vec();
    prefix.push(b'/');
    let has_new_children = created
        .range(prefix.clone()..)
        .next()
        .is_some_and(|p| p.starts_with(&prefix));
    if !keep_self && !has_new_children {
        return remove_all_at(dir, name);
    }
    let (fd, children) = list_dir(dir, name)?;
    for c in children {
        remove_lower(&fd, &c, &child_path(rel, &c), created)?;
    }
    Ok(())
}

/// Splits an entry name into components: `./` and a leading `/` root entry are fine,
/// `..` and absolute names are refused.
fn clean_components(raw: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    if raw.contains(&0) {
        return Err("name contains a NUL byte");
    }
    let is_root = raw.iter().all(|b| *b == b'/' || *b == b'.') && !raw.windows(2).any(|w| w == b"..");
    if raw.starts_with(b"/") && !is_root {
        return Err("absolute name");
    }
    let mut comps = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("name contains `..`"),
            c => comps.push(c),
        }
    }
    Ok(comps)
}

fn walk_reason(e: &WalkError) -> String {
    match e {
        WalkError::Climbs => "a symlink in its path climbs out of the root".into(),
        WalkError::Loop => "too many symlinks in its path".into(),
        WalkError::NotDir(c) => format!("{} in its path is not a directory", lossy(c)),
        WalkError::NotFound(c) => format!("{} in its path does not exist", lossy(c)),
        WalkError::Io(e) => e.to_string(),
    }
}

fn xattrs<R: Read>(entry: &mut tar::Entry<R>) -> Vec<(String, Vec<u8>)> {
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return Vec::new();
    };
    exts.filter_map(Result::ok)
        .filter_map(|e| {
            let key = e.key().ok()?;
            let name = key.strip_prefix("SCHILY.xattr.")?;
            Some((name.to_string(), e.value_bytes().to_vec()))
        })
        .collect()
}

fn mode(h: &tar::Header) -> u32 {
    h.mode().unwrap_or(0o644) & 0o7777
}
fn uid(h: &tar::Header) -> u32 {
    u32::try_from(h.uid().unwrap_or(0)).unwrap_or(u32::MAX)
}
fn gid(h: &tar::Header) -> u32 {
    u32::try_from(h.gid().unwrap_or(0)).unwrap_or(u32::MAX)
}
fn mtime(h: &tar::Header) -> i64 {
    i64::try_from(h.mtime().unwrap_or(0)).unwrap_or(i64::MAX)
}
fn device(h: &tar::Header) -> libc::dev_t {
    let major = h.device_major().ok().flatten().unwrap_or(0);
    let minor = h.device_minor().ok().flatten().unwrap_or(0);
    libc::makedev(major, minor)
}

pub(crate) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn copy(r: &mut impl Read, w: &mut File, buf: &mut [u8]) -> io::Result<()> {
    loop {
        let n = match r.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_dotdot_or_absolute_are_refused_roots_are_not() {
        assert!(clean_components(b"a/../b").is_err());
        assert!(clean_components(b"/etc/passwd").is_err());
        assert!(clean_components(b"..").is_err());
        assert_eq!(clean_components(b"/").unwrap(), Vec::<&[u8]>::new());
        assert_eq!(clean_components(b"./").unwrap(), Vec::<&[u8]>::new());
        assert_eq!(clean_components(b"./usr//bin/").unwrap(), vec![&b"usr"[..], b"bin"]);
    }
}
