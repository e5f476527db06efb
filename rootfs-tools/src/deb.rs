//! `.deb` files without dpkg: an `ar` archive whose `data.tar.{gz,xz,zst}` member
//! holds the files. Maintainer scripts are not run.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use crate::error::{io, BuildError, Result};
use crate::layer::Hdr;

/// Calls `f` for every entry of the package's data.tar, streaming (nothing is held
/// in memory beyond one tar block).
pub(crate) fn for_each_data_entry(path: &Path, mut f: impl FnMut(Hdr, &mut dyn Read) -> Result<()>) -> Result<()> {
    let bad = |reason: String| BuildError::Deb {
        path: path.to_path_buf(),
        reason,
    };
    let mut r = BufReader::new(File::open(path).map_err(io("open", path))?);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(io("read", path))?;
    if &magic != b"!<arch>\n" {
        return Err(bad("no ar magic".into()));
    }
    loop {
        let mut h = [0u8; 60];
        match r.read_exact(&mut h) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(bad("no data.tar member".into())),
            Err(e) => return Err(io("read", path)(e)),
        }
        let name = String::from_utf8_lossy(&h[0..16])
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        let size: u64 = String::from_utf8_lossy(&h[48..58])
            .trim()
            .parse()
            .map_err(|_| bad(format!("bad ar size for member {name}")))?;
        if let Some(comp) = name.strip_prefix("data.tar") {
            let member = (&mut r).take(size);
            let reader: Box<dyn Read + '_> = match comp {
                "" => Box::new(member),
                ".gz" => Box::new(flate2::read::GzDecoder::new(member)),
                ".xz" => Box::new(xz2::read::XzDecoder::new(member)),
                ".zst" => Box::new(zstd::stream::read::Decoder::new(member).map_err(io("zstd", path))?),
                other => return Err(bad(format!("unsupported data.tar compression {other:?}"))),
            };
            return each_entry(path, reader, &mut f);
        }
        // Members are padded to an even size.
        io::copy(&mut (&mut r).take(size + size % 2), &mut io::sink()).map_err(io("read", path))?;
    }
}

fn each_entry(path: &Path, reader: impl Read, f: &mut impl FnMut(Hdr, &mut dyn Read) -> Result<()>) -> Result<()> {
    let mut ar = tar::Archive::new(reader);
    for entry in ar.entries().map_err(io("read data.tar of", path))? {
        let mut entry = entry.map_err(io("read data.tar entry of", path))?;
        let h = entry.header().clone();
        let kind = h.entry_type();
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let hdr = Hdr {
            path: entry.path_bytes().into_owned(),
            kind,
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            uid: h.uid().unwrap_or(0),
            gid: h.gid().unwrap_or(0),
            mtime: h.mtime().unwrap_or(0),
            size: entry.size(),
            link,
            dev: (
                h.device_major().ok().flatten().unwrap_or(0),
                h.device_minor().ok().flatten().unwrap_or(0),
            ),
            xattrs: Vec::new(),
        };
        f(hdr, &mut entry)?;
    }
    Ok(())
}
