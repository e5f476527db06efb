//! The server side of SPDY/3.1, as far as Kubernetes' streaming protocols use it: frames,
//! zlib-compressed header blocks, and a session that hands each stream the client opens to
//! the caller with its headers, a receiver for its data and a writer.
//!
//! Written here rather than taken from a crate: the one SPDY/3.1 crate found (`spdy-mux`,
//! 0.1, 2026) is a client-side multiplexer over WebSocket transports, and the rest are
//! unmaintained or stubs. The subset needed is small: the Go peer (moby/spdystream) ignores
//! flow control (WINDOW_UPDATE), so neither side sends it, and only the client opens streams.

use std::collections::HashMap;
use std::io;
use std::sync::OnceLock;

use flate2::{Compress, Compression, FlushCompress};
use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

const VERSION: u16 = 3;
const FLAG_FIN: u8 = 0x01;
/// Largest DATA payload this side sends (the format allows 2^24 - 1).
const MAX_DATA: usize = 32 * 1024;
/// Largest frame accepted: a DATA frame of the format's maximum plus its header.
const MAX_FRAME: usize = (1 << 24) + 8;
/// A header block larger than this after decompression is refused (a zlib bomb).
const MAX_HEADER_BLOCK: usize = 1 << 20;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status: the stream was refused (SPDY/3 §2.4.2).
pub(super) const REFUSED_STREAM: u32 = 3;

/// SPDY/3 header names and values, in order (names are lowercase on the wire). A value with
/// several entries joins them with NUL.
pub(super) type Headers = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// Entries are `(flags, id, value)`; this side neither needs nor sends any.
    Settings(Vec<(u8, u32, u32)>),
    Ping(u32),
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Vec<u8>,
    },
    /// A control frame type this side ignores (SPDY says: ignore unknown types).
    Unknown(u16),
}

#[derive(Debug, thiserror::Error)]
pub(super) enum SpdyError {
    #[error("read a SPDY frame")]
    Read(#[source] io::Error),
    #[error("SPDY version {0} is not supported (only 3)")]
    Version(u16),
    #[error("SPDY frame of {0} bytes is too large")]
    TooLarge(usize),
    #[error("malformed SPDY {what} frame")]
    Malformed { what: &'static str },
    #[error("SPDY header block: {0}")]
    HeaderBlock(String),
}

/// The SPDY/3 header compression dictionary (SPDY/3 draft §2.6.10.1): common header names,
/// each as a 4-byte big-endian length and the name, then a run of common values.
fn dictionary() -> &'static [u8] {
    const NAMES: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const VALUES: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
        "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
        "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
        "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        let mut d = Vec::with_capacity(1423);
        for name in NAMES {
            d.extend_from_slice(&u32::try_from(name.len()).unwrap_or(0).to_be_bytes());
            d.extend_from_slice(name.as_bytes());
        }
        d.extend_from_slice(VALUES.as_bytes());
        d
    })
}

/// This side's header compression: one zlib stream for the whole session, flushed (SYNC)
/// after each header block. It does not use the SPDY dictionary: flate2's default backend
/// cannot set one, and a zlib stream without the FDICT flag is valid for the peer (Go's zlib
/// reader uses the dictionary only when the stream asks for it).
pub(super) struct Encoder {
    deflate: Compress,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("spdy::Encoder")
    }
}

impl Encoder {
    pub(super) fn new() -> Self {
        Self {
            deflate: Compress::new(Compression::default(), true),
        }
    }

    fn header_block(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let mut raw = Vec::new();
        let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
        raw.extend_from_slice(&len(headers.len()));
        for (name, value) in headers {
            raw.extend_from_slice(&len(name.len()));
            raw.extend_from_slice(name.to_ascii_lowercase().as_bytes());
            raw.extend_from_slice(&len(value.len()));
            raw.extend_from_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let start = self.deflate.total_in();
        loop {
            out.reserve(256);
            let consumed = usize::try_from(self.deflate.total_in() - start).unwrap_or(usize::MAX);
            self.deflate
                .compress_vec(&raw[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::HeaderBlock(e.to_string()))?;
            let consumed = usize::try_from(self.deflate.total_in() - start).unwrap_or(usize::MAX);
            // Done once all input is in and the flush left room to spare in the output.
            if consumed == raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// The frame's bytes on the wire.
    pub(super) fn encode(&mut self, frame: &Frame) -> Result<Vec<u8>, SpdyError> {
        let control = |kind: u16, flags: u8, body: Vec<u8>| {
            let mut out = Vec::with_capacity(body.len() + 8);
            out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.push(flags);
            out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_be_bytes()[1..]);
            out.extend_from_slice(&body);
            out
        };
        let fin = |f: bool| if f { FLAG_FIN } else { 0 };
        let id = |i: u32| (i & 0x7fff_ffff).to_be_bytes();
        Ok(match frame {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                fin: f,
                headers,
            } => {
                let mut body = id(*stream_id).to_vec();
                body.extend_from_slice(&id(*associated_to));
                body.push((priority & 0x07) << 5);
                body.push(0);
                body.extend(self.header_block(headers)?);
                control(TYPE_SYN_STREAM, fin(*f), body)
            }
            Frame::SynReply {
                stream_id,
                fin: f,
                headers,
            }
            | Frame::Headers {
                stream_id,
                fin: f,
                headers,
            } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    TYPE_SYN_REPLY
                } else {
                    TYPE_HEADERS
                };
                let mut body = id(*stream_id).to_vec();
                body.extend(self.header_block(headers)?);
                control(kind, fin(*f), body)
            }
            Frame::RstStream { stream_id, status } => {
                let mut body = id(*stream_id).to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                control(TYPE_RST_STREAM, 0, body)
            }
            Frame::Settings(entries) => {
                let mut body = u32::try_from(entries.len()).unwrap_or(0).to_be_bytes().to_vec();
                for (flags, key, value) in entries {
                    body.push(*flags);
                    body.extend_from_slice(&key.to_be_bytes()[1..]);
                    body.extend_from_slice(&value.to_be_bytes());
                }
                control(TYPE_SETTINGS, 0, body)
            }
            Frame::Ping(ping) => control(TYPE_PING, 0, ping.to_be_bytes().to_vec()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                let mut body = id(*last_good_stream_id).to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                control(TYPE_GOAWAY, 0, body)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut body = id(*stream_id).to_vec();
                body.extend_from_slice(&id(*delta));
                control(TYPE_WINDOW_UPDATE, 0, body)
            }
            Frame::Data {
                stream_id,
                fin: f,
                data,
            } => {
                if data.len() >= 1 << 24 {
                    return Err(SpdyError::TooLarge(data.len()));
                }
                let mut out = Vec::with_capacity(data.len() + 8);
                out.extend_from_slice(&id(*stream_id));
                out.push(fin(*f));
                out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(0).to_be_bytes()[1..]);
                out.extend_from_slice(data);
                out
            }
            Frame::Unknown(kind) => control(*kind, 0, Vec::new()),
        })
    }
}

/// The peer's header blocks: one zlib stream for the session, which Go's SPDY framer
/// primes with the SPDY dictionary (FDICT). miniz_oxide's low-level inflater takes a preset
/// dictionary the way zlib does it underneath: as output already in the window, here a
/// buffer that starts with the dictionary and keeps the last 32 KiB inflated.
pub(super) struct Decoder {
    inflate: Box<DecompressorOxide>,
    /// The zlib header (2 bytes, 6 with a dictionary ID) until it is complete.
    zlib_header: Vec<u8>,
    started: bool,
    window: Vec<u8>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("spdy::Decoder")
    }
}

/// What deflate back-references may reach.
const WINDOW: usize = 32 * 1024;

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    b << 16 | a
}

impl Decoder {
    pub(super) fn new() -> Self {
        Self {
            inflate: Box::default(),
            zlib_header: Vec::with_capacity(6),
            started: false,
            window: Vec::new(),
        }
    }

    /// Consumes the zlib header at the start of the session's stream; true once it is all in.
    fn zlib_header(&mut self, input: &mut &[u8]) -> Result<bool, SpdyError> {
        let bad = |m: &str| SpdyError::HeaderBlock(m.into());
        let wanted = |h: &[u8]| if h.len() >= 2 && h[1] & 0x20 != 0 { 6 } else { 2 };
        while self.zlib_header.len() < wanted(&self.zlib_header) {
            let Some((&first, rest)) = input.split_first() else {
                return Ok(false);
            };
            self.zlib_header.push(first);
            *input = rest;
        }
        let h = &self.zlib_header;
        if h[0] & 0x0f != 8 || (u16::from(h[0]) << 8 | u16::from(h[1])) % 31 != 0 {
            return Err(bad("not a zlib stream"));
        }
        if h.len() == 6 {
            if u32::from_be_bytes([h[2], h[3], h[4], h[5]]) != adler32(dictionary()) {
                return Err(bad("compressed with a dictionary other than SPDY/3's"));
            }
            self.window.extend_from_slice(dictionary());
        }
        self.started = true;
        Ok(true)
    }

    fn header_block(&mut self, mut input: &[u8]) -> Result<Headers, SpdyError> {
        let bad = |m: String| SpdyError::HeaderBlock(m);
        if !self.started && !self.zlib_header(&mut input)? {
            return Err(bad("the header block ends inside the zlib header".into()));
        }
        let start = self.window.len();
        let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF | inflate_flags::TINFL_FLAG_HAS_MORE_INPUT;
        loop {
            let pos = self.window.len();
            if pos - start > MAX_HEADER_BLOCK {
                return Err(bad("larger than 1 MiB".into()));
            }
            self.window.resize(pos + 4096, 0);
            let (status, consumed, written) = decompress(&mut self.inflate, input, &mut self.window, pos, flags);
            self.window.truncate(pos + written);
            input = &input[consumed..];
            match status {
                TINFLStatus::NeedsMoreInput | TINFLStatus::Done => break,
                TINFLStatus::HasMoreOutput if consumed + written > 0 => {}
                other => return Err(bad(format!("inflate: {other:?}"))),
            }
        }
        let raw = self.window[start..].to_vec();
        // Only the last 32 KiB can still be referred to.
        if self.window.len() > 2 * WINDOW {
            self.window.drain(..self.window.len() - WINDOW);
        }
        parse_header_block(&raw).ok_or_else(|| bad("truncated name/value block".into()))
    }

    /// Reads one frame; `None` at a clean end of the connection.
    pub(super) async fn read<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<Option<Frame>, SpdyError> {
        let mut head = [0u8; 8];
        match r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(SpdyError::Read(e)),
        }
        let len = usize::from(head[5]) << 16 | usize::from(head[6]) << 8 | usize::from(head[7]);
        if len + 8 > MAX_FRAME {
            return Err(SpdyError::TooLarge(len));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await.map_err(SpdyError::Read)?;
        let flags = head[4];
        let fin = flags & FLAG_FIN != 0;
        let word = |b: &[u8], at: usize| -> Option<u32> {
            b.get(at..at + 4).map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
        };
        if head[0] & 0x80 == 0 {
            let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
            return Ok(Some(Frame::Data {
                stream_id,
                fin,
                data: body,
            }));
        }
        let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let malformed = |what| SpdyError::Malformed { what };
        let id_at = |at| word(&body, at).map(|w| w & 0x7fff_ffff);
        Ok(Some(match kind {
            TYPE_SYN_STREAM => {
                let (Some(stream_id), Some(associated_to), Some(&prio)) = (id_at(0), id_at(4), body.get(8)) else {
                    return Err(malformed("SYN_STREAM"));
                };
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority: prio >> 5,
                    fin,
                    headers: self.header_block(body.get(10..).unwrap_or_default())?,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                let Some(stream_id) = id_at(0) else {
                    return Err(malformed("SYN_REPLY/HEADERS"));
                };
                let headers = self.header_block(&body[4..])?;
                if kind == TYPE_SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        fin,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => match (id_at(0), word(&body, 4)) {
                (Some(stream_id), Some(status)) => Frame::RstStream { stream_id, status },
                _ => return Err(malformed("RST_STREAM")),
            },
            TYPE_SETTINGS => {
                let n = word(&body, 0).ok_or(malformed("SETTINGS"))?;
                let entries = (0..usize::try_from(n).unwrap_or(usize::MAX))
                    .map(|i| {
                        let at = 4 + i * 8;
                        let key = word(&body, at)? & 0x00ff_ffff;
                        Some((body[at], key, word(&body, at + 4)?))
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or(malformed("SETTINGS"))?;
                Frame::Settings(entries)
            }
            TYPE_PING => Frame::Ping(word(&body, 0).ok_or(malformed("PING"))?),
            TYPE_GOAWAY => match (id_at(0), word(&body, 4)) {
                (Some(last_good_stream_id), status) => Frame::GoAway {
                    last_good_stream_id,
                    // SPDY/3 added the status; tolerate its absence.
                    status: status.unwrap_or(0),
                },
                _ => return Err(malformed("GOAWAY")),
            },
            TYPE_WINDOW_UPDATE => match (id_at(0), id_at(4)) {
                (Some(stream_id), Some(delta)) => Frame::WindowUpdate { stream_id, delta },
                _ => return Err(malformed("WINDOW_UPDATE")),
            },
            other => Frame::Unknown(other),
        }))
    }
}

fn parse_header_block(raw: &[u8]) -> Option<Headers> {
    let mut at = 0usize;
    let mut next = |n: usize| {
        let s = raw.get(at..at.checked_add(n)?)?;
        at += n;
        Some(s)
    };
    let u32_at = |s: &[u8]| usize::try_from(u32::from_be_bytes([s[0], s[1], s[2], s[3]])).ok();
    let count = u32_at(next(4)?)?;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let n = u32_at(next(4)?)?;
        let name = String::from_utf8_lossy(next(n)?).into_owned();
        let n = u32_at(next(4)?)?;
        let value = String::from_utf8_lossy(next(n)?).into_owned();
        headers.push((name, value));
    }
    Some(headers)
}

/// A stream the client opened: its headers, the data it sends (the receiver ends at its FIN
/// or a reset) and the way back.
#[derive(Debug)]
pub(super) struct Stream {
    pub headers: Headers,
    pub data: mpsc::Receiver<Vec<u8>>,
    pub out: StreamWriter,
}

impl Stream {
    /// The first value of header `name` (case-insensitive).
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split('\0').next().unwrap_or_default())
    }
}

/// Writes what the client sends on a stream (`data`) to `to` until the client half-closes
/// it, then shuts `to` down so its reader sees end of file.
pub(super) async fn copy_to(data: &mut mpsc::Receiver<Vec<u8>>, mut to: impl AsyncWrite + Unpin) {
    while let Some(buf) = data.recv().await {
        if to.write_all(&buf).await.is_err() {
            return;
        }
        let _ = to.flush().await;
    }
    let _ = to.shutdown().await;
}

/// What goes to a session's writer task.
pub(super) enum Out {
    Frame(Frame),
    /// Flush, close the write side, and stop writing.
    Close,
}

/// Writes to one stream; cheap to clone. Writes after the session closed are dropped.
#[derive(Clone)]
pub(super) struct StreamWriter {
    pub id: u32,
    tx: mpsc::Sender<Out>,
}

impl std::fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamWriter({})", self.id)
    }
}

impl StreamWriter {
    /// A writer for stream `id` of a session whose writer task reads `tx`.
    pub(super) fn new(id: u32, tx: mpsc::Sender<Out>) -> Self {
        Self { id, tx }
    }

    /// Sends `data` in DATA frames; false once the connection is gone.
    pub(super) async fn write(&self, data: &[u8]) -> bool {
        for chunk in data.chunks(MAX_DATA) {
            let frame = Frame::Data {
                stream_id: self.id,
                fin: false,
                data: chunk.to_vec(),
            };
            if self.tx.send(Out::Frame(frame)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Copies `from` to the stream until `from` ends or fails (a terminal whose command
    /// is gone reads EIO: the same end of output) or the connection is gone.
    pub(super) async fn copy_from(&self, mut from: impl AsyncRead + Unpin) {
        let mut buf = vec![0u8; MAX_DATA];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !self.write(&buf[..n]).await {
                        break;
                    }
                }
            }
        }
    }

    /// Half-closes the stream (an empty DATA frame with FIN).
    pub(super) async fn close(&self) {
        let frame = Frame::Data {
            stream_id: self.id,
            fin: true,
            data: Vec::new(),
        };
        let _ = self.tx.send(Out::Frame(frame)).await;
    }
}

/// The writer task of a session: encodes what arrives on `out_rx` until [`Out::Close`] or
/// the connection fails, flushing whenever nothing more is queued.
async fn write_frames(mut wr: impl AsyncWrite + Unpin, mut out_rx: mpsc::Receiver<Out>) {
    let mut encoder = Encoder::new();
    while let Some(item) = out_rx.recv().await {
        let Out::Frame(frame) = item else { break };
        let bytes = match encoder.encode(&frame) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "SPDY frame not sent");
                continue;
            }
        };
        if let Err(e) = wr.write_all(&bytes).await {
            tracing::debug!(error = %e, "SPDY connection closed while writing");
            break;
        }
        if out_rx.is_empty() {
            let _ = wr.flush().await;
        }
    }
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
}

/// The reader task's state: the client's frames to streams.
struct Demux {
    to_writer: mpsc::Sender<Out>,
    new_streams: mpsc::Sender<Stream>,
    /// The streams the client may still send data on.
    open: HashMap<u32, mpsc::Sender<Vec<u8>>>,
}

impl Demux {
    /// Reads frames until the client goes away, says GOAWAY, or the writer is gone.
    async fn read_frames(mut self, mut rd: impl AsyncRead + Unpin) {
        let mut decoder = Decoder::new();
        loop {
            let frame = match decoder.read(&mut rd).await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "SPDY connection ends");
                    break;
                }
            };
            if !self.frame(frame).await {
                break;
            }
        }
    }

    /// One frame from the client; false when the session ends.
    async fn frame(&mut self, frame: Frame) -> bool {
        match frame {
            Frame::SynStream {
                stream_id,
                fin,
                headers,
                ..
            } => return self.new_stream(stream_id, fin, headers).await,
            Frame::Data { stream_id, fin, data } => {
                if !data.is_empty() {
                    if let Some(tx) = self.open.get(&stream_id) {
                        if tx.send(data).await.is_err() {
                            self.open.remove(&stream_id);
                        }
                    }
                }
                if fin {
                    self.open.remove(&stream_id);
                }
            }
            Frame::Headers {
                stream_id, fin: true, ..
            }
            | Frame::SynReply {
                stream_id, fin: true, ..
            }
            | Frame::RstStream { stream_id, .. } => {
                self.open.remove(&stream_id);
            }
            // The client's pings (odd IDs) are answered with the same frame.
            Frame::Ping(id) => {
                let _ = self.to_writer.send(Out::Frame(Frame::Ping(id))).await;
            }
            Frame::GoAway { .. } => return false,
            Frame::Settings(_)
            | Frame::WindowUpdate { .. }
            | Frame::Headers { .. }
            | Frame::SynReply { .. }
            | Frame::Unknown(_) => {}
        }
        true
    }

    /// SYN_STREAM: reply, then hand the stream to the session's owner (or refuse it when
    /// nobody takes streams any more); false when the writer is gone.
    async fn new_stream(&mut self, stream_id: u32, fin: bool, headers: Headers) -> bool {
        // Reply first: the peer drops data for streams it has no reply for.
        let reply = Frame::SynReply {
            stream_id,
            fin: false,
            headers: Vec::new(),
        };
        if self.to_writer.send(Out::Frame(reply)).await.is_err() {
            return false;
        }
        let (tx, data) = mpsc::channel(16);
        if !fin {
            self.open.insert(stream_id, tx);
        }
        let stream = Stream {
            headers,
            data,
            out: StreamWriter::new(stream_id, self.to_writer.clone()),
        };
        if self.new_streams.send(stream).await.is_err() {
            // Nobody takes new streams any more: refuse it.
            let _ = self
                .to_writer
                .send(Out::Frame(Frame::RstStream {
                    stream_id,
                    status: REFUSED_STREAM,
                }))
                .await;
        }
        true
    }
}

/// An upgraded connection speaking SPDY/3.1: new streams arrive on [`Session::next_stream`].
pub(super) struct Session {
    streams: mpsc::Receiver<Stream>,
    out: mpsc::Sender<Out>,
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("spdy::Session")
    }
}

/// How long [`Session::finish`] waits for the client to close after this side is done.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

impl Session {
    /// Serves `io` as a SPDY session: one task writes the frames sent on `out`, one reads
    /// the client's frames and hands new streams to [`Session::next_stream`].
    pub(super) fn new<IO>(io: IO) -> Self
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out, out_rx) = mpsc::channel::<Out>(64);
        let writer = tokio::spawn(write_frames(wr, out_rx));
        let (new_streams, streams) = mpsc::channel::<Stream>(16);
        let demux = Demux {
            to_writer: out.clone(),
            new_streams,
            open: HashMap::new(),
        };
        let reader = tokio::spawn(demux.read_frames(rd));
        Self {
            streams,
            out,
            reader,
            writer,
        }
    }

    /// A session another transport drives (WebSocket channels, [`super::websocket`]):
    /// `streams` yields its streams and ends when the client goes; `writer` turns what
    /// arrives on `out`'s receiver into that transport's messages and stops at [`Out::Close`].
    pub(super) fn from_parts(
        streams: mpsc::Receiver<Stream>,
        out: mpsc::Sender<Out>,
        reader: tokio::task::JoinHandle<()>,
        writer: tokio::task::JoinHandle<()>,
    ) -> Self {
        Self {
            streams,
            out,
            reader,
            writer,
        }
    }

    /// The next stream the client opens; `None` once the connection is closed.
    pub(super) async fn next_stream(&mut self) -> Option<Stream> {
        self.streams.recv().await
    }

    /// Ends the session: GOAWAY, flush, close the write side, then wait (briefly) for the
    /// client to close its side, so that nothing it still sends turns the close into a reset
    /// that could discard data it has not read yet.
    pub(super) async fn finish(self) {
        let Self {
            streams,
            out,
            mut reader,
            writer,
        } = self;
        drop(streams);
        let _ = out
            .send(Out::Frame(Frame::GoAway {
                last_good_stream_id: 0,
                status: 0,
            }))
            .await;
        let _ = out.send(Out::Close).await;
        drop(out);
        let _ = writer.await;
        if tokio::time::timeout(CLOSE_GRACE, &mut reader).await.is_err() {
            reader.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // The ID a zlib stream primed with it carries in its header (FDICT).
        assert_eq!(adler32(d), 0xe3c6_a7c2);
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn header_blocks_compressed_with_the_spdy_dictionary_inflate() {
        // Two consecutive blocks of one zlib stream made with the SPDY/3 dictionary, as Go's
        // framer sends them (produced with zlib's deflateSetDictionary, level 9, SYNC flush).
        // The second refers back into the first.
        let first = unhex(
            "78f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c6061606100a4398b20d198094ade8c0600000000ffff",
        );
        let second = unhex("c2aa19540e2512d60b000000ffff");
        let mut dec = Decoder::new();
        let want = |kind: &str| headers(&[("streamtype", kind), ("port", "8080"), ("requestid", "0")]);
        assert_eq!(dec.header_block(&first).unwrap(), want("error"));
        assert_eq!(dec.header_block(&second).unwrap(), want("data"));
        // A stream primed with another dictionary is refused.
        let mut other = first.clone();
        other[2] ^= 1;
        assert!(Decoder::new().header_block(&other).is_err());
    }

    #[tokio::test]
    async fn frames_round_trip_with_a_shared_compression_context() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                fin: false,
                headers: headers(&[("streamtype", "error"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 2,
                fin: true,
                headers: headers(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynReply {
                stream_id: 3,
                fin: false,
                headers: Vec::new(),
            },
            Frame::Data {
                stream_id: 3,
                fin: false,
                data: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
            },
            Frame::Data {
                stream_id: 3,
                fin: true,
                data: Vec::new(),
            },
            Frame::RstStream {
                stream_id: 5,
                status: REFUSED_STREAM,
            },
            Frame::Settings(vec![(0, 7, 65536)]),
            Frame::Ping(7),
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 1024,
            },
            Frame::Headers {
                stream_id: 1,
                fin: true,
                headers: headers(&[("a", "b\0c")]),
            },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: 0,
            },
        ];
        let mut enc = Encoder::new();
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(enc.encode(f).unwrap());
        }
        let mut dec = Decoder::new();
        let mut r = &wire[..];
        let mut back = Vec::new();
        while let Some(f) = dec.read(&mut r).await.unwrap() {
            back.push(f);
        }
        assert_eq!(back, frames);
    }

    #[tokio::test]
    async fn malformed_input_is_an_error_not_a_panic() {
        let mut dec = Decoder::new();
        // A SYN_STREAM whose header block is not zlib.
        let mut bad = vec![0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0e];
        bad.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        assert!(dec.read(&mut &bad[..]).await.is_err());
        // SPDY/2.
        let v2 = [0x80, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1];
        assert!(matches!(
            Decoder::new().read(&mut &v2[..]).await,
            Err(SpdyError::Version(2))
        ));
        // Truncated body.
        let short = [0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0];
        assert!(Decoder::new().read(&mut &short[..]).await.is_err());
        assert!(parse_header_block(&[0, 0, 0, 2, 0, 0, 0, 1, b'a']).is_none());
    }

    #[tokio::test]
    async fn session_replies_to_new_streams_and_delivers_their_data() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut session = Session::new(server);
        let (mut crd, mut cwr) = tokio::io::split(client);
        let mut enc = Encoder::new();
        let syn = Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            fin: false,
            headers: headers(&[("streamtype", "stdin")]),
        };
        let data = Frame::Data {
            stream_id: 1,
            fin: true,
            data: b"hello".to_vec(),
        };
        for f in [&syn, &Frame::Ping(1), &data] {
            cwr.write_all(&enc.encode(f).unwrap()).await.unwrap();
        }
        let mut stream = session.next_stream().await.unwrap();
        assert_eq!(stream.header("StreamType"), Some("stdin"));
        assert_eq!(stream.data.recv().await.unwrap(), b"hello");
        assert!(stream.data.recv().await.is_none(), "FIN ends the stream's data");
        stream.out.write(b"out").await;
        stream.out.close().await;
        let mut dec = Decoder::new();
        let reply = dec.read(&mut crd).await.unwrap().unwrap();
        assert!(matches!(reply, Frame::SynReply { stream_id: 1, .. }));
        assert_eq!(dec.read(&mut crd).await.unwrap().unwrap(), Frame::Ping(1));
        assert_eq!(
            dec.read(&mut crd).await.unwrap().unwrap(),
            Frame::Data {
                stream_id: 1,
                fin: false,
                data: b"out".to_vec()
            }
        );
        let finished = tokio::spawn(session.finish());
        assert!(matches!(
            dec.read(&mut crd).await.unwrap().unwrap(),
            Frame::Data { fin: true, .. }
        ));
        assert!(matches!(
            dec.read(&mut crd).await.unwrap().unwrap(),
            Frame::GoAway { .. }
        ));
        assert_eq!(dec.read(&mut crd).await.unwrap(), None, "then the write side closes");
        drop((crd, cwr));
        finished.await.unwrap();
    }
}
