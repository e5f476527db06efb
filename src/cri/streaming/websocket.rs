//! remotecommand (exec, attach) over WebSocket, as the kubelet's own streaming server serves it
//! (apimachinery's wsstream): one connection, every message one channel's data behind a
//! channel byte (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize). The `base64` protocols send
//! text messages: the channel as an ASCII digit, then the data in base64. The error channel
//! carries the outcome: from v4 on the `metav1.Status` JSON (success too), before v4 only a
//! failure's message. v5 adds one client message, `[255, channel]`: that channel (stdin) is
//! closed, so a command reading its input sees end of file.
//!
//! The channels become the same [`Stream`]s a SPDY session opens, so exec and attach serve both
//! transports with one implementation ([`Session::from_parts`]). The framing is tungstenite's.

use std::collections::HashMap;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use hyper::header::{HeaderMap, HeaderValue, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::exec::Wanted;
use super::spdy::{Frame, Out, Session, Stream, StreamWriter};

/// The subprotocols served, newest first (what the kubelet's streaming server accepts).
pub(super) const PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: the client closes one of its channels (`[STREAM_CLOSE, channel]`).
const STREAM_CLOSE: u8 = 255;

/// A negotiated remotecommand WebSocket protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Protocol {
    /// Text messages, ASCII channel digit and base64 data.
    base64: bool,
    /// The error channel carries the `metav1.Status` JSON (v4, v5), not a bare message.
    status_json: bool,
    /// The client may close its channels (v5).
    close: bool,
}

impl Protocol {
    /// The protocol called `name`; `""` (none asked for) is the oldest, binary one.
    fn named(name: &str) -> Option<Self> {
        let (base64, status_json, close) = match name {
            "v5.channel.k8s.io" => (false, true, true),
            "v4.channel.k8s.io" => (false, true, false),
            "v4.base64.channel.k8s.io" => (true, true, false),
            "channel.k8s.io" | "" => (false, false, false),
            "base64.channel.k8s.io" => (true, false, false),
            _ => return None,
        };
        Some(Self {
            base64,
            status_json,
            close,
        })
    }
}

/// The handshake's answer: the protocol (its name for the response, empty when the client
/// asked for none) and the `Sec-WebSocket-Accept` value; or why the request is refused.
pub(super) fn negotiate(headers: &HeaderMap) -> Result<(String, Protocol, HeaderValue), String> {
    let version = headers.get(SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok());
    if version.map(str::trim) != Some("13") {
        return Err(format!(
            "WebSocket version {version:?} is not supported: send Sec-WebSocket-Version: 13"
        ));
    }
    let key = headers
        .get(SEC_WEBSOCKET_KEY)
        .ok_or("a WebSocket upgrade needs a Sec-WebSocket-Key header")?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let accept = HeaderValue::from_str(&accept).map_err(|e| format!("Sec-WebSocket-Accept: {e}"))?;
    let offered: Vec<&str> = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok((String::new(), Protocol::named("").expect("the bare protocol"), accept));
    }
    // The client's order wins, as in wsstream's handshake.
    offered
        .iter()
        .find_map(|name| Some((name.to_string(), Protocol::named(name)?, accept.clone())))
        .ok_or_else(|| format!("none of the WebSocket protocols {offered:?} is supported; kboot speaks {PROTOCOLS:?}"))
}

/// One message of `channel` carrying `data`, in the protocol's encoding.
fn encode(protocol: Protocol, channel: u8, data: &[u8]) -> Message {
    if protocol.base64 {
        let mut text = String::with_capacity(1 + data.len().div_ceil(3) * 4);
        text.push(char::from(b'0' + channel));
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
        Message::text(text)
    } else {
        let mut bytes = Vec::with_capacity(1 + data.len());
        bytes.push(channel);
        bytes.extend_from_slice(data);
        Message::binary(bytes)
    }
}

/// A client message's channel and data; `None` for what carries none (control messages,
/// the other encoding, bad base64: wsstream ignores those too).
fn decode(protocol: Protocol, message: Message) -> Option<(u8, Vec<u8>)> {
    match message {
        Message::Binary(b) if !protocol.base64 => {
            let (&channel, data) = b.split_first()?;
            Some((channel, data.to_vec()))
        }
        Message::Text(t) if protocol.base64 => {
            let (&digit, data) = t.as_bytes().split_first()?;
            let data = base64::engine::general_purpose::STANDARD.decode(data).ok()?;
            Some((digit.checked_sub(b'0')?, data))
        }
        _ => None,
    }
}

/// What the error channel says before v4: nothing on success, the failure's message otherwise.
fn v1_status(json: &[u8]) -> Option<Vec<u8>> {
    let status: serde_json::Value = serde_json::from_slice(json).ok()?;
    if status["status"] == "Success" {
        return None;
    }
    Some(status["message"].as_str().unwrap_or("failed").as_bytes().to_vec())
}

/// Serves the upgraded connection `io` as a session of the channels `wanted` asks for.
pub(super) async fn session<IO>(io: IO, protocol: Protocol, wanted: Wanted) -> Session
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let (sink, messages) = ws.split();
    let (out, out_rx) = mpsc::channel::<Out>(64);
    let (new_streams, streams) = mpsc::channel::<Stream>(8);
    let inputs = open_channels(wanted, &new_streams, &out).await;
    let writer = tokio::spawn(write_messages(sink, protocol, first_channel(wanted), out_rx));
    let reader = tokio::spawn(read_messages(messages, protocol, inputs, new_streams));
    Session::from_parts(streams, out, reader, writer)
}

/// The channels the request opens, as the SPDY streams exec and attach expect (stderr joins
/// stdout on a terminal, and only a terminal is resized), sent on `new_streams`; returns the
/// senders of the client's channels (stdin, resize).
async fn open_channels(
    wanted: Wanted,
    new_streams: &mpsc::Sender<Stream>,
    out: &mpsc::Sender<Out>,
) -> HashMap<u8, mpsc::Sender<Vec<u8>>> {
    let mut inputs = HashMap::new();
    let kinds = [
        (ERROR, "error", true),
        (STDIN, "stdin", wanted.stdin),
        (STDOUT, "stdout", wanted.stdout),
        (STDERR, "stderr", wanted.stderr && !wanted.tty),
        (RESIZE, "resize", wanted.tty),
    ];
    for (channel, kind, _) in kinds.into_iter().filter(|k| k.2) {
        let (tx, data) = mpsc::channel(16);
        if matches!(channel, STDIN | RESIZE) {
            inputs.insert(channel, tx);
        }
        let stream = Stream {
            headers: vec![("streamtype".to_owned(), kind.to_owned())],
            data,
            out: StreamWriter::new(u32::from(channel), out.clone()),
        };
        // Fewer streams than the channel holds: this cannot wait.
        let _ = new_streams.send(stream).await;
    }
    inputs
}

/// The client learns the connection is up from an empty message on the lowest channel it
/// reads (wsstream does the same).
fn first_channel(wanted: Wanted) -> u8 {
    if wanted.stdout {
        STDOUT
    } else if wanted.stderr && !wanted.tty {
        STDERR
    } else {
        ERROR
    }
}

/// The writer task: the first empty message, then each stream's data as messages of its
/// channel (the error channel in the protocol's form), then a normal close.
async fn write_messages<S>(mut sink: S, protocol: Protocol, first: u8, mut out_rx: mpsc::Receiver<Out>)
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    if sink.send(encode(protocol, first, &[])).await.is_err() {
        return;
    }
    while let Some(item) = out_rx.recv().await {
        let (channel, data) = match item {
            // An empty DATA frame is a stream's FIN: WebSocket channels have none.
            Out::Frame(Frame::Data { stream_id, data, .. }) if !data.is_empty() => (stream_id as u8, data),
            Out::Frame(_) => continue,
            Out::Close => break,
        };
        let data = if channel == ERROR && !protocol.status_json {
            match v1_status(&data) {
                Some(message) => message,
                None => continue,
            }
        } else {
            data
        };
        if let Err(e) = sink.send(encode(protocol, channel, &data)).await {
            tracing::debug!(error = %e, "WebSocket connection closed while writing");
            return;
        }
    }
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(close))).await;
}

/// The reader task: the client's messages to the input channels, until it closes.
/// `new_streams` is held until then: exec and attach see the end of the session there.
async fn read_messages<M>(
    mut messages: M,
    protocol: Protocol,
    mut inputs: HashMap<u8, mpsc::Sender<Vec<u8>>>,
    new_streams: mpsc::Sender<Stream>,
) where
    M: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let _open = new_streams;
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(Message::Close(_)) => break,
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket connection ends");
                break;
            }
        };
        let Some((channel, data)) = decode(protocol, message) else {
            continue;
        };
        if protocol.close && channel == STREAM_CLOSE {
            if let Some(closed) = data.first() {
                inputs.remove(closed);
            }
            continue;
        }
        if data.is_empty() {
            continue;
        }
        if let Some(tx) = inputs.get(&channel) {
            if tx.send(data).await.is_err() {
                inputs.remove(&channel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                hyper::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn handshake_picks_the_clients_first_supported_protocol() {
        // RFC 6455's example key and answer.
        let base = [
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        let with = |protocols: &str| {
            let mut h = base.to_vec();
            h.push(("sec-websocket-protocol", protocols));
            negotiate(&headers(&h))
        };
        let (name, p, accept) = with("v6.channel.k8s.io, v5.channel.k8s.io, v4.channel.k8s.io").unwrap();
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(
            (name.as_str(), p.close, p.status_json),
            ("v5.channel.k8s.io", true, true)
        );
        let (name, p, _) = with("base64.channel.k8s.io,channel.k8s.io").unwrap();
        assert_eq!(
            (name.as_str(), p.base64, p.status_json),
            ("base64.channel.k8s.io", true, false)
        );
        let (name, p, _) = negotiate(&headers(&base)).unwrap();
        assert_eq!(
            (name.as_str(), p.base64),
            ("", false),
            "no protocol asked: the binary one"
        );
        let refused = with("v2.channel.k8s.io").unwrap_err();
        assert!(refused.contains("v5.channel.k8s.io"), "{refused}");
        assert!(negotiate(&headers(&base[1..]))
            .unwrap_err()
            .contains("Sec-WebSocket-Version"));
        assert!(negotiate(&headers(&base[..1]))
            .unwrap_err()
            .contains("Sec-WebSocket-Key"));
    }

    #[test]
    fn channels_are_framed_as_wsstream_frames_them() {
        let binary = Protocol::named("v4.channel.k8s.io").unwrap();
        let text = Protocol::named("v4.base64.channel.k8s.io").unwrap();
        assert_eq!(encode(binary, STDOUT, b"hi"), Message::binary(vec![1, b'h', b'i']));
        assert_eq!(encode(text, STDERR, b"hi"), Message::text("2aGk="));
        assert_eq!(encode(text, ERROR, b""), Message::text("3"));
        assert_eq!(
            decode(binary, Message::binary(vec![0, b'x'])),
            Some((STDIN, b"x".to_vec()))
        );
        assert_eq!(decode(text, Message::text("0eA==")), Some((STDIN, b"x".to_vec())));
        assert_eq!(decode(text, Message::text("0!!")), None, "bad base64 is dropped");
        assert_eq!(
            decode(binary, Message::text("0eA==")),
            None,
            "the other encoding is ignored"
        );
        assert_eq!(decode(binary, Message::binary(Vec::new())), None);
    }

    #[test]
    fn before_v4_the_error_channel_carries_only_a_failures_message() {
        let ok = super::super::status_json(&Ok(0));
        assert_eq!(v1_status(&ok), None);
        let failed = super::super::status_json(&Ok(3));
        let message = String::from_utf8(v1_status(&failed).unwrap()).unwrap();
        assert_eq!(message, "command terminated with non-zero exit code: exit status 3");
    }
}
