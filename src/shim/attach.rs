//! The attach socket: how CRI `Attach` reaches a running container's stdio.
//!
//! The shim owns the container's stdio, so it is the one place that can hand it out: it
//! listens on `Paths::attach_socket(id)` (a directory only root can enter) and, in its
//! single `poll` loop, copies
//! - the container's output to every connected client, framed as
//!   `[stream: u8][length: u32 BE][bytes]` ([`STDOUT`], [`STDERR`]), live only (what was
//!   written before a client connected is in the log, not replayed), and
//! - what clients send to the container's stdin (a pipe the shim holds the write end of),
//!   when the container was created with `stdin`. With `stdin_once`, the first client to
//!   close its sending side closes the container's stdin, so the container sees end of file.
//!   With `tty` the container's stdio is a pseudo-terminal the shim allocates: input goes to
//!   its master, output comes from it (as stdout), and closing stdin types end-of-file (^D).
//!
//! Nothing here blocks the shim: sockets and the stdin pipe are non-blocking; a client
//! whose socket buffer is full misses output and is disconnected (a frame is never split),
//! and while the container does not read its stdin the shim stops reading clients.

use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{send, MsgFlags};

use super::log::Stream;

/// Frame tag of the container's stdout.
pub const STDOUT: u8 = 1;
/// Frame tag of the container's stderr.
pub const STDERR: u8 = 2;
/// Bytes before a frame's payload: the tag and the big-endian length.
pub const FRAME_HEADER: usize = 5;

/// The container's stdio as its CRI `ContainerConfig` asks (`stdin`, `stdin_once`, `tty`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StdioMode {
    /// The container gets a stdin pipe fed by attach clients (else `/dev/null`).
    pub open: bool,
    /// The first attach client closing its stdin closes the container's.
    pub once: bool,
    /// The container's stdin, stdout and stderr are a pseudo-terminal (its controlling one).
    pub tty: bool,
}

/// What a terminal's line discipline reads as end of file (^D).
const EOT: u8 = 0x04;

struct Client {
    sock: UnixStream,
    /// Still reading what the client sends (false after its end of file).
    reading: bool,
}

/// The shim's attach state: the listener, the clients and the stdin pipe.
pub(super) struct Attach {
    path: PathBuf,
    listener: UnixListener,
    clients: Vec<Client>,
    /// Write end of the container's stdin, non-blocking; `None` once closed or never open.
    stdin: Option<OwnedFd>,
    /// Client input the stdin pipe did not take yet.
    pending: Vec<u8>,
    once: bool,
    /// Stdin is a terminal: closing it means typing [`EOT`] (the terminal stays the output).
    tty: bool,
    /// `stdin_once` fired: close stdin once `pending` is written.
    closing: bool,
}

/// Which descriptor a poll slot belongs to.
#[derive(Debug, Clone, Copy)]
pub(super) enum Slot {
    Listener,
    Stdin,
    Client(usize),
}

impl Attach {
    /// Binds the socket at `path` (replacing a stale one). `stdin` is the write end of the
    /// container's stdin pipe when it has one.
    pub(super) fn bind(path: &Path, stdin: Option<OwnedFd>, mode: StdioMode) -> std::io::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let (_dir, short) = short_path(path)?;
        let listener = UnixListener::bind(&short)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        if let Some(fd) = &stdin {
            nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            )
            .map_err(std::io::Error::from)?;
        }
        Ok(Self {
            path: path.to_owned(),
            listener,
            clients: Vec::new(),
            stdin,
            pending: Vec::new(),
            once: mode.once,
            tty: mode.tty,
            closing: false,
        })
    }

    /// The descriptors to poll, with what each waits for.
    pub(super) fn poll_fds(&self) -> Vec<(Slot, PollFd<'_>)> {
        let mut fds = vec![(Slot::Listener, PollFd::new(self.listener.as_fd(), PollFlags::POLLIN))];
        if let (Some(fd), false) = (&self.stdin, self.pending.is_empty()) {
            fds.push((Slot::Stdin, PollFd::new(fd.as_fd(), PollFlags::POLLOUT)));
        }
        // Input waits while the container has not taken the previous bytes; hang-ups are
        // reported whatever the flags.
        let take_input = self.pending.is_empty();
        for (i, c) in self.clients.iter().enumerate() {
            let flags = if c.reading && take_input {
                PollFlags::POLLIN
            } else {
                PollFlags::empty()
            };
            fds.push((Slot::Client(i), PollFd::new(c.sock.as_fd(), flags)));
        }
        fds
    }

    /// Handles the slots `poll` reported ready.
    pub(super) fn ready(&mut self, slots: &[Slot]) {
        let mut gone = Vec::new();
        for slot in slots {
            match *slot {
                Slot::Listener => self.accept(),
                Slot::Stdin => self.flush_stdin(),
                Slot::Client(i) => {
                    if !self.read_client(i) {
                        gone.push(i);
                    }
                }
            }
        }
        self.drop_clients(gone);
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((sock, _)) => {
                    if sock.set_nonblocking(true).is_ok() {
                        tracing::debug!(path = %self.path.display(), "attach client connected");
                        self.clients.push(Client { sock, reading: true });
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Reads what client `i` sent; false once it is gone.
    fn read_client(&mut self, i: usize) -> bool {
        let client = &mut self.clients[i];
        if !client.reading {
            // Polled with no flags: it hung up or failed.
            return false;
        }
        let mut buf = [0u8; 8192];
        match client.sock.read(&mut buf) {
            Ok(0) => {
                client.reading = false;
                if self.once && self.stdin.is_some() && !self.closing {
                    if self.tty {
                        self.pending.push(EOT);
                    }
                    self.closing = true;
                    self.flush_stdin();
                }
                true
            }
            Ok(n) => {
                if self.stdin.is_some() && !self.closing {
                    self.pending.extend_from_slice(&buf[..n]);
                    self.flush_stdin();
                }
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => true,
            Err(_) => false,
        }
    }

    /// Writes pending input to the container's stdin as far as the pipe takes it.
    fn flush_stdin(&mut self) {
        let Some(fd) = &self.stdin else {
            self.pending.clear();
            return;
        };
        while !self.pending.is_empty() {
            match nix::unistd::write(fd, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                // The container closed its stdin: nothing more can go there.
                Err(_) => {
                    self.stdin = None;
                    self.pending.clear();
                    return;
                }
            }
        }
        if self.closing {
            tracing::debug!(path = %self.path.display(), "attach client closed stdin; closing the container's");
            self.stdin = None;
        }
    }

    /// Sends `data` from `stream` to every client; a client that cannot take the whole
    /// frame now is disconnected.
    pub(super) fn broadcast(&mut self, stream: Stream, data: &[u8]) {
        if self.clients.is_empty() || data.is_empty() {
            return;
        }
        let tag = match stream {
            Stream::Stdout => STDOUT,
            Stream::Stderr => STDERR,
        };
        let mut frame = Vec::with_capacity(FRAME_HEADER + data.len());
        frame.push(tag);
        frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
        frame.extend_from_slice(data);
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        let gone: Vec<usize> = (0..self.clients.len())
            .filter(|&i| {
                let fd = self.clients[i].sock.as_raw_fd();
                !matches!(send(fd, &frame, flags), Ok(n) if n == frame.len())
            })
            .collect();
        self.drop_clients(gone);
    }

    fn drop_clients(&mut self, mut gone: Vec<usize>) {
        gone.sort_unstable();
        gone.dedup();
        for i in gone.into_iter().rev() {
            self.clients.remove(i);
            tracing::debug!(path = %self.path.display(), "attach client left");
        }
    }
}

/// A path to `path` that fits a socket address (108 bytes) whatever the length of its
/// directory (a test's temporary root easily exceeds it): through `/proc/self/fd` and an open
/// descriptor of the directory, which the caller keeps open while it uses the path.
pub fn short_path(path: &Path) -> std::io::Result<(std::fs::File, PathBuf)> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            "a socket path needs a directory and a name",
        ));
    };
    let dir = std::fs::File::open(dir)?;
    let short = Path::new("/proc/self/fd").join(dir.as_raw_fd().to_string()).join(name);
    Ok((dir, short))
}

impl Drop for Attach {
    /// The container is gone: clients see end of file, and the socket goes away.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
