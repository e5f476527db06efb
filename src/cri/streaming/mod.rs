//! The CRI streaming server: `Exec`, `Attach` and `PortForward` answer with a one-time URL on
//! a small HTTP server on loopback; the kubelet (or crictl) connects there, upgrades to
//! SPDY/3.1 or, for exec and attach, to a WebSocket ([`websocket`], chosen by the `Upgrade`
//! header), and the session runs the command or forwards the ports ([`exec`],
//! [`portforward`]); attach joins the container's stdio through its shim ([`attach`]). As the
//! kubelet's own streaming library: a token is valid once and for [`TOKEN_TTL`], at most
//! [`MAX_PENDING`] wait at a time.

mod attach;
mod exec;
mod portforward;
mod spdy;
mod websocket;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kboot_cri::v1 as cri;

use super::{Cri, CriError};

/// How long a URL handed out by `Exec`/`Attach`/`PortForward` stays valid (the kubelet's
/// streaming server uses the same minute).
const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Requests waiting for their client at most; more are refused with `ResourceExhausted`.
const MAX_PENDING: usize = 1000;
/// How long a client may take to open the streams it announced.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";
const ACCEPTED_PROTOCOLS_HEADER: &str = "X-Accepted-Stream-Protocol-Versions";
/// remotecommand v5 differs from v4 only over WebSockets; over SPDY both are v4.
const EXEC_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
const PORT_FORWARD_PROTOCOLS: &[&str] = &["portforward.k8s.io"];

/// A streaming request waiting for its client.
#[derive(Debug)]
pub(crate) enum Pending {
    Exec(cri::ExecRequest),
    Attach(cri::AttachRequest),
    PortForward(cri::PortForwardRequest),
}

impl Pending {
    fn kind(&self) -> &'static str {
        match self {
            Self::Exec(_) => "exec",
            Self::Attach(_) => "attach",
            Self::PortForward(_) => "portforward",
        }
    }

    /// The stdio an exec or attach asks for; `None` for a port-forward.
    fn wanted(&self) -> Option<exec::Wanted> {
        match self {
            Self::Exec(r) => Some(exec::Wanted::new(r.stdin, r.stdout, r.stderr, r.tty)),
            Self::Attach(r) => Some(exec::Wanted::new(r.stdin, r.stdout, r.stderr, r.tty)),
            Self::PortForward(_) => None,
        }
    }

    /// Serves the request on its session, whatever the transport.
    async fn serve(self, cri: Arc<Cri>, session: spdy::Session) {
        match self {
            Self::Exec(r) => exec::serve(cri, session, r).await,
            Self::Attach(r) => attach::serve(cri, session, r).await,
            Self::PortForward(r) => portforward::serve(cri, session, r).await,
        }
    }
}

/// The running streaming server: its address and the tokens handed out.
#[derive(Debug)]
pub(crate) struct Streams {
    /// Where it listens, or why it does not.
    addr: Result<SocketAddr, String>,
    pending: Mutex<HashMap<String, (Pending, Instant)>>,
    accept: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Streams {
    /// Binds a random loopback port and serves it until [`Streams::stop`]. Without a
    /// loopback to bind (a network namespace whose `lo` is down), the rest of the CRI still
    /// serves and the streaming calls say why they cannot.
    pub(crate) async fn start(cri: Arc<Cri>) -> Arc<Self> {
        let bound = match tokio::net::TcpListener::bind(("127.0.0.1", 0)).await {
            Ok(l) => l.local_addr().map(|a| (l, a)),
            Err(e) => Err(e),
        };
        let (listener, addr) = match bound {
            Ok(b) => b,
            Err(e) => {
                let why = format!("the streaming server could not listen on 127.0.0.1: {e}");
                tracing::warn!("{why}; Exec and PortForward will fail");
                return Arc::new(Self {
                    addr: Err(why),
                    pending: Mutex::new(HashMap::new()),
                    accept: Mutex::new(None),
                });
            }
        };
        let streams = Arc::new(Self {
            addr: Ok(addr),
            pending: Mutex::new(HashMap::new()),
            accept: Mutex::new(None),
        });
        let server = streams.clone();
        let task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "streaming server: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (server, cri) = (server.clone(), cri.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (server, cri) = (server.clone(), cri.clone());
                        async move { Ok::<_, Infallible>(server.handle(cri, req)) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        // A client that connects and never sends its request is dropped.
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(STREAM_CREATION_TIMEOUT)
                        .serve_connection(TokioIo::new(tcp), service)
                        .with_upgrades();
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "streaming connection ended");
                    }
                });
            }
        });
        *streams.accept.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        tracing::info!(%addr, "CRI streaming server listening");
        streams
    }

    /// Stops accepting connections (sessions under way finish on their own).
    pub(crate) fn stop(&self) {
        if let Some(task) = self.accept.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }

    /// A one-time URL for `request`.
    pub(crate) fn url(&self, request: Pending) -> Result<String, CriError> {
        let addr = self.addr.as_ref().map_err(|why| CriError::Unavailable(why.clone()))?;
        let token = hex::encode(rand::random::<[u8; 16]>());
        let kind = request.kind();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        pending.retain(|_, (_, at)| now.duration_since(*at) < TOKEN_TTL);
        if pending.len() >= MAX_PENDING {
            return Err(CriError::ResourceExhausted(format!(
                "{MAX_PENDING} streaming requests are already waiting for their client; retry later"
            )));
        }
        pending.insert(token.clone(), (request, now));
        Ok(format!("http://{addr}/{kind}/{token}"))
    }

    /// Takes the request behind `token` if it is of `kind` and still valid.
    fn take(&self, kind: &str, token: &str) -> Option<Pending> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (request, at) = pending.remove(token)?;
        if request.kind() != kind || at.elapsed() >= TOKEN_TTL {
            return None;
        }
        Some(request)
    }

    fn handle(&self, cri: Arc<Cri>, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
        let mut parts = req.uri().path().trim_matches('/').splitn(2, '/');
        let (kind, token) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        if !matches!(*req.method(), hyper::Method::GET | hyper::Method::POST) {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST");
        }
        let Some(request) = self.take(kind, token) else {
            return plain(StatusCode::NOT_FOUND, "unknown or expired streaming token");
        };
        let headers = req.headers();
        let has_token = |name, want: &str| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(want))
        };
        if has_token(CONNECTION, "upgrade") && has_token(UPGRADE, "websocket") {
            return Self::websocket(cri, req, request);
        }
        if !has_token(CONNECTION, "upgrade") || !has_token(UPGRADE, "SPDY/3.1") {
            return plain(
                StatusCode::BAD_REQUEST,
                "kboot streams over SPDY/3.1 or WebSocket: send Connection: Upgrade and Upgrade: SPDY/3.1 \
                 (or Upgrade: websocket for exec and attach)",
            );
        }
        let supported = match request {
            Pending::Exec(_) | Pending::Attach(_) => EXEC_PROTOCOLS,
            Pending::PortForward(_) => PORT_FORWARD_PROTOCOLS,
        };
        let offered: Vec<String> = headers
            .get_all(PROTOCOL_HEADER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        // The client's order wins, as in apimachinery's httpstream.Handshake.
        let protocol = offered.iter().find(|p| supported.contains(&p.as_str()));
        let protocol = match (protocol, &request) {
            (Some(p), _) => Some(p.clone()),
            // Port forwarding predates negotiation; exec needs v4's status on the error stream.
            (None, Pending::PortForward(_)) if offered.is_empty() => None,
            _ => {
                let mut r = plain(
                    StatusCode::FORBIDDEN,
                    &format!("none of the stream protocols {offered:?} is supported; kboot speaks {supported:?}"),
                );
                for p in supported {
                    r.headers_mut()
                        .append(ACCEPTED_PROTOCOLS_HEADER, HeaderValue::from_static(p));
                }
                return r;
            }
        };
        tracing::debug!(kind, protocol = ?protocol, "streaming session starts");
        let mut response = switch_protocols(&mut req, "SPDY/3.1", move |io| async move {
            request.serve(cri, spdy::Session::new(io)).await;
        });
        if let Some(p) = protocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
            response.headers_mut().insert(PROTOCOL_HEADER, p);
        }
        response
    }
}

impl Streams {
    /// An exec or attach over a WebSocket: the remotecommand channel protocols the kubelet's
    /// own streaming server speaks ([`websocket::PROTOCOLS`]).
    fn websocket(cri: Arc<Cri>, mut req: Request<Incoming>, request: Pending) -> Response<Full<Bytes>> {
        let Some(wanted) = request.wanted() else {
            return plain(
                StatusCode::BAD_REQUEST,
                "kboot forwards ports over SPDY/3.1 only: send Upgrade: SPDY/3.1",
            );
        };
        let (name, protocol, accept) = match websocket::negotiate(req.headers()) {
            Ok(n) => n,
            Err(why) => return plain(StatusCode::BAD_REQUEST, &why),
        };
        tracing::debug!(kind = request.kind(), protocol = %name, "WebSocket streaming session starts");
        let mut response = switch_protocols(&mut req, "websocket", move |io| async move {
            request.serve(cri, websocket::session(io, protocol, wanted).await).await;
        });
        let h = response.headers_mut();
        h.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, accept);
        if let Ok(p) = HeaderValue::from_str(&name) {
            if !name.is_empty() {
                h.insert(hyper::header::SEC_WEBSOCKET_PROTOCOL, p);
            }
        }
        response
    }
}

/// Answers `101 Switching Protocols` to `upgrade` and runs `serve` on the connection once
/// hyper hands it over.
fn switch_protocols<F, Fut>(req: &mut Request<Incoming>, upgrade: &'static str, serve: F) -> Response<Full<Bytes>>
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let on = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match on.await {
            Ok(io) => serve(TokioIo::new(io)).await,
            Err(e) => tracing::warn!(error = %e, upgrade, "streaming upgrade failed"),
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static(upgrade));
    response
}

fn plain(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{message}\n"))));
    *r.status_mut() = status;
    r
}

/// A `metav1.Status` as the remotecommand v4 error stream carries it: success, or a failure
/// with a reason and, for a command that exited non-zero, its code as an `ExitCode` cause.
fn status_json(outcome: &Result<i32, String>) -> Vec<u8> {
    let status = match outcome {
        Ok(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Ok(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(message) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "InternalError",
            "code": 500,
        }),
    };
    serde_json::to_vec(&status).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_reaches_the_client_as_remotecommand_v4_expects() {
        let ok: serde_json::Value = serde_json::from_slice(&status_json(&Ok(0))).unwrap();
        assert_eq!(ok["status"], "Success");
        let failed: serde_json::Value = serde_json::from_slice(&status_json(&Ok(3))).unwrap();
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        let broken: serde_json::Value = serde_json::from_slice(&status_json(&Err("container is gone".into()))).unwrap();
        assert_eq!(broken["reason"], "InternalError");
        assert_eq!(broken["message"], "container is gone");
    }

    /// Sends a bare HTTP request for `url` with `headers`; the response head.
    async fn ask(url: &str, headers: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rest = url.strip_prefix("http://").unwrap();
        let (addr, path) = rest.split_once('/').unwrap();
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("POST /{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n{headers}\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).await.unwrap() == 1 {
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap().to_ascii_lowercase()
    }

    #[tokio::test]
    async fn handshake_upgrades_to_spdy_and_refuses_what_it_cannot_serve() {
        let tmp = tempfile::tempdir().unwrap();
        let cri = Arc::new(Cri::open(crate::cri::CriConfig::new(crate::state::Paths::under(
            tmp.path(),
        ))));
        let streams = Streams::start(cri).await;
        let exec = || Pending::Exec(cri::ExecRequest::default());
        let spdy = "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n";

        let url = streams.url(exec()).unwrap();
        // Another last character than the token's own (a token may end in `0`).
        let last = if url.ends_with('0') { '1' } else { '0' };
        let bogus = format!("{}{last}", &url[..url.len() - 1]);
        assert!(ask(&bogus, spdy).await.starts_with("http/1.1 404"));
        assert!(ask(&url, "").await.starts_with("http/1.1 400"), "no upgrade asked");

        let url = streams.url(exec()).unwrap();
        let old_only = format!("{spdy}X-Stream-Protocol-Version: v2.channel.k8s.io\r\n");
        let refused = ask(&url, &old_only).await;
        assert!(refused.starts_with("http/1.1 403"), "{refused}");
        assert!(
            refused.contains("x-accepted-stream-protocol-versions: v5.channel.k8s.io"),
            "{refused}"
        );

        let url = streams.url(exec()).unwrap();
        let offered = format!(
            "{spdy}X-Stream-Protocol-Version: v4.channel.k8s.io\r\nX-Stream-Protocol-Version: v3.channel.k8s.io\r\n"
        );
        let upgraded = ask(&url, &offered).await;
        assert!(upgraded.starts_with("http/1.1 101"), "{upgraded}");
        assert!(upgraded.contains("upgrade: spdy/3.1"), "{upgraded}");
        assert!(
            upgraded.contains("x-stream-protocol-version: v4.channel.k8s.io"),
            "{upgraded}"
        );
        assert!(
            ask(&url, &offered).await.starts_with("http/1.1 404"),
            "a token serves once"
        );

        // Port forwarding from clients that negotiate nothing is accepted.
        let url = streams.url(Pending::PortForward(Default::default())).unwrap();
        assert!(ask(&url, spdy).await.starts_with("http/1.1 101"));
        streams.stop();
    }

    #[test]
    fn tokens_are_single_use_and_typed() {
        let streams = Streams {
            addr: Ok("127.0.0.1:1".parse().unwrap()),
            pending: Mutex::new(HashMap::new()),
            accept: Mutex::new(None),
        };
        let url = streams.url(Pending::PortForward(Default::default())).unwrap();
        let token = url.rsplit('/').next().unwrap().to_owned();
        assert!(url.starts_with("http://127.0.0.1:1/portforward/"));
        assert_eq!(token.len(), 32);
        assert!(
            streams.take("exec", &token).is_none(),
            "a token is for its own kind only"
        );
        let url = streams.url(Pending::PortForward(Default::default())).unwrap();
        let token = url.rsplit('/').next().unwrap().to_owned();
        assert!(streams.take("portforward", &token).is_some());
        assert!(streams.take("portforward", &token).is_none(), "and valid once");
        let unbound = Streams {
            addr: Err("no loopback".into()),
            ..streams
        };
        assert!(matches!(
            unbound.url(Pending::PortForward(Default::default())),
            Err(CriError::Unavailable(why)) if why == "no loopback"
        ));
    }
}
