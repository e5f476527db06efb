//! Container log files: one line per output line, in the CRI format the kubelet
//! also reads: `<RFC 3339 nanos> <stdout|stderr> <F|P> <text>`. `P` marks a
//! piece of a line longer than [`MAX_LINE`], and output that ends without a
//! newline (`echo -n DONE`): the kubelet ends every `F` line's text with a
//! newline, so an unterminated last line tagged `F` would gain one it never
//! had (a termination message read from the log, `kubectl logs`). Files rotate by size:
//! `container.log` → `container.log.1` (one generation kept), unless the
//! kubelet rotates them (CRI containers): then the writer only reopens its
//! path when told to ([`LogWriter::reopen`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Longest line kept whole; longer output is split into `P` pieces.
pub const MAX_LINE: usize = 16 * 1024;
/// Default rotation size.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;

fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Appends tagged lines; keeps each stream's unfinished line until its newline.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    /// `None`: never rotate (someone else does, and asks for a reopen).
    max_bytes: Option<u64>,
    pending: [Vec<u8>; 2],
}

impl LogWriter {
    /// Appends to `path`, rotating beyond `max_bytes` (at least 1 KiB); 0 never rotates.
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            file,
            size,
            max_bytes: (max_bytes > 0).then(|| max_bytes.max(1024)),
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// Opens the path again (creating it), after someone renamed the file away: later
    /// lines go to the new file. On failure the old file is kept, so no line is lost.
    pub fn reopen(&mut self) -> io::Result<()> {
        let file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = file;
        Ok(())
    }

    /// Feeds raw output of one stream.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> io::Result<()> {
        let idx = stream as usize;
        let mut buf = std::mem::take(&mut self.pending[idx]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
            let line = buf[start..start + nl].to_vec();
            self.emit(stream, 'F', &line)?;
            start += nl + 1;
        }
        while buf.len() - start > MAX_LINE {
            let piece = buf[start..start + MAX_LINE].to_vec();
            self.emit(stream, 'P', &piece)?;
            start += MAX_LINE;
        }
        self.pending[idx] = buf[start..].to_vec();
        Ok(())
    }

    /// Writes out unfinished lines (at exit) as partial (`P`) lines: the output had no
    /// newline there, and a reader must not add one.
    pub fn flush_partial(&mut self) -> io::Result<()> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut self.pending[stream as usize]);
            if !rest.is_empty() {
                self.emit(stream, 'P', &rest)?;
            }
        }
        Ok(())
    }

    fn emit(&mut self, stream: Stream, tag: char, text: &[u8]) -> io::Result<()> {
        let ts = humantime::format_rfc3339_nanos(SystemTime::now());
        let mut line = format!("{ts} {} {tag} ", stream.as_str()).into_bytes();
        line.extend_from_slice(text);
        line.push(b'\n');
        if self
            .max_bytes
            .is_some_and(|max| self.size > 0 && self.size + line.len() as u64 > max)
        {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        fs::rename(&self.path, rotated(&self.path))?;
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// One parsed log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub timestamp: String,
    pub stream: Stream,
    /// False for a `P` piece: the text continues in the next line of the same stream.
    pub complete: bool,
    pub text: String,
}

pub fn parse_line(line: &str) -> Option<LogLine> {
    let mut it = line.splitn(4, ' ');
    let timestamp = it.next()?.to_owned();
    let stream = match it.next()? {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    let complete = match it.next()? {
        "F" => true,
        "P" => false,
        _ => return None,
    };
    Some(LogLine {
        timestamp,
        stream,
        complete,
        text: it.next().unwrap_or("").to_owned(),
    })
}

/// All lines of a container's log, oldest first (rotated file included).
pub fn read_all(path: &Path) -> io::Result<Vec<LogLine>> {
    read_files(&[rotated(path), path.to_owned()])
}

/// The lines of the rotated generation (`container.log.1`) only.
pub fn read_rotated(path: &Path) -> io::Result<Vec<LogLine>> {
    read_files(&[rotated(path)])
}

fn read_files(files: &[PathBuf]) -> io::Result<Vec<LogLine>> {
    let mut out = Vec::new();
    for p in files {
        match File::open(p) {
            Ok(f) => {
                for line in BufReader::new(f).lines() {
                    if let Some(l) = parse_line(&line?) {
                        out.push(l);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Reads lines appended after a position, following rotation (`logs -f`).
#[derive(Debug)]
pub struct LogFollower {
    path: PathBuf,
    inode: u64,
    offset: u64,
}

impl LogFollower {
    /// Starts at the beginning of the current file: the first `poll` returns
    /// what is there, later ones what was appended, nothing twice.
    pub fn at_start(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            inode: fs::metadata(path).map(|m| m.ino()).unwrap_or(0),
            offset: 0,
        }
    }

    /// Starts at the current end of the file.
    pub fn at_end(path: &Path) -> Self {
        let meta = fs::metadata(path).ok();
        Self {
            path: path.to_owned(),
            inode: meta.as_ref().map(|m| m.ino()).unwrap_or(0),
            offset: meta.map(|m| m.len()).unwrap_or(0),
        }
    }

    /// New complete lines since the last call.
    pub fn poll(&mut self) -> io::Result<Vec<LogLine>> {
        let mut out = Vec::new();
        let Ok(meta) = fs::metadata(&self.path) else {
            return Ok(out);
        };
        if meta.ino() != self.inode {
            // Rotated: finish the old file (now `.1`), then start the new one from 0.
            if self.inode != 0 {
                self.read_from(&rotated(&self.path), &mut out)?;
            }
            self.inode = meta.ino();
            self.offset = 0;
        }
        let path = self.path.clone();
        self.read_from(&path, &mut out)?;
        Ok(out)
    }

    fn read_from(&mut self, path: &Path, out: &mut Vec<LogLine>) -> io::Result<()> {
        let Ok(mut f) = File::open(path) else { return Ok(()) };
        f.seek(SeekFrom::Start(self.offset))?;
        let mut r = BufReader::new(f);
        let mut line = String::new();
        loop {
            line.clear();
            let n = r.read_line(&mut line)?;
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            self.offset += n as u64;
            if let Some(l) = parse_line(line.trim_end_matches('\n')) {
                out.push(l);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_tagged_and_split_per_stream() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("container.log");
        let mut w = LogWriter::open(&p, DEFAULT_MAX_BYTES).unwrap();
        w.write(Stream::Stdout, b"hel").unwrap();
        w.write(Stream::Stderr, b"oops\n").unwrap();
        w.write(Stream::Stdout, b"lo\nwor").unwrap();
        w.flush_partial().unwrap();
        let lines = read_all(&p).unwrap();
        let got: Vec<_> = lines.iter().map(|l| (l.stream, l.text.as_str())).collect();
        assert_eq!(
            got,
            [
                (Stream::Stderr, "oops"),
                (Stream::Stdout, "hello"),
                (Stream::Stdout, "wor")
            ]
        );
        assert!(humantime::parse_rfc3339(&lines[0].timestamp).is_ok());
        let complete: Vec<_> = lines.iter().map(|l| l.complete).collect();
        assert_eq!(complete, [true, true, false], "no newline after `wor`: a partial line");
    }

    #[test]
    fn log_output_without_a_final_newline_stays_without_one() {
        // `echo -n DONE`: the CRI format's `P` tag, so the kubelet reads `DONE`, not `DONE\n`.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("0.log");
        let mut w = LogWriter::open(&p, 0).unwrap();
        w.write(Stream::Stdout, b"DONE").unwrap();
        w.flush_partial().unwrap();
        let raw = fs::read_to_string(&p).unwrap();
        let fields: Vec<_> = raw.trim_end_matches('\n').splitn(4, ' ').collect();
        assert_eq!(fields[1..], ["stdout", "P", "DONE"], "{raw}");
        // A line longer than the limit: pieces and the unterminated rest are all partial.
        let mut w = LogWriter::open(&p, 0).unwrap();
        w.write(Stream::Stderr, &vec![b'y'; 2 * MAX_LINE + 5]).unwrap();
        w.flush_partial().unwrap();
        let tags: Vec<_> = read_all(&p).unwrap()[1..]
            .iter()
            .map(|l| (l.complete, l.text.len()))
            .collect();
        assert_eq!(tags, [(false, MAX_LINE), (false, MAX_LINE), (false, 5)]);
    }

    #[test]
    fn log_long_lines_become_partial_pieces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("container.log");
        let mut w = LogWriter::open(&p, DEFAULT_MAX_BYTES).unwrap();
        let long = vec![b'x'; MAX_LINE + 10];
        w.write(Stream::Stdout, &long).unwrap();
        w.write(Stream::Stdout, b"\n").unwrap();
        let lines = read_all(&p).unwrap();
        assert_eq!(lines.len(), 2);
        assert!(!lines[0].complete && lines[1].complete);
        assert_eq!(lines[0].text.len() + lines[1].text.len(), MAX_LINE + 10);
    }

    #[test]
    fn log_rotates_by_size_and_readers_see_both_generations() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("container.log");
        let mut w = LogWriter::open(&p, 2048).unwrap();
        let mut follow = LogFollower::at_end(&p);
        for i in 0..100 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes()).unwrap();
        }
        assert!(rotated(&p).exists());
        assert!(fs::metadata(&p).unwrap().len() <= 2048);
        let all = read_all(&p).unwrap();
        assert_eq!(all.last().unwrap().text, "line 99");
        let followed = follow.poll().unwrap();
        assert_eq!(followed.last().unwrap().text, "line 99");
    }

    #[test]
    fn log_without_limit_never_rotates_and_reopen_starts_a_new_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("0.log");
        let mut w = LogWriter::open(&p, 0).unwrap();
        for i in 0..200 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes()).unwrap();
        }
        assert!(!rotated(&p).exists());
        // The kubelet's rotation: rename, then ask for a reopen.
        let old = d.path().join("0.log.20261128");
        fs::rename(&p, &old).unwrap();
        w.write(Stream::Stdout, b"before").unwrap();
        w.reopen().unwrap();
        w.write(Stream::Stdout, b" reopen\nafter\n").unwrap();
        let texts = |path: &Path| -> Vec<String> {
            read_files(&[path.to_owned()])
                .unwrap()
                .into_iter()
                .map(|l| l.text)
                .collect()
        };
        assert_eq!(texts(&old).len(), 200);
        assert_eq!(texts(&p), ["before reopen", "after"]);
    }

    #[test]
    fn log_reopen_failure_keeps_writing_the_old_file() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("pod");
        fs::create_dir(&sub).unwrap();
        let p = sub.join("0.log");
        let mut w = LogWriter::open(&p, 0).unwrap();
        let kept = d.path().join("kept.log");
        fs::rename(&p, &kept).unwrap();
        fs::remove_dir(&sub).unwrap();
        assert!(w.reopen().is_err());
        w.write(Stream::Stderr, b"still here\n").unwrap();
        let lines = read_files(&[kept]).unwrap();
        assert_eq!(lines.last().unwrap().text, "still here");
    }
}
