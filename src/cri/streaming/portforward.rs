//! `PortForward` over a SPDY session (`portforward.k8s.io`): for each connection the client
//! forwards it opens an `error` and a `data` stream with the same `requestid` and a `port`
//! header; kboot connects to that port on the pod's loopback, inside the pod's network
//! namespace (the host's for a hostNetwork pod), and copies both ways.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kboot_cri::v1 as cri;
use tokio::net::TcpStream;

use super::spdy::{copy_to, Session, Stream};
use crate::cri::Cri;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The error and data streams of one forwarded connection, as they arrive.
#[derive(Debug, Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
}

pub(super) async fn serve(cri: Arc<Cri>, mut session: Session, req: cri::PortForwardRequest) {
    // The pod's network namespace (None: the host's), or why there is none to forward to.
    let netns: Result<Option<PathBuf>, String> = {
        let inner = cri.inner.lock().await;
        match Cri::resolve_sandbox(&inner, &req.pod_sandbox_id) {
            Ok(s) if !s.state.ready => Err(format!("pod sandbox {} is not ready", s.id)),
            Ok(s) => Ok(s.state.netns.clone()),
            Err(e) => Err(e.to_string()),
        }
    };
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut forwards = tokio::task::JoinSet::new();
    while let Some(stream) = session.next_stream().await {
        let port = stream
            .header("port")
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p > 0);
        let kind = stream.header("streamtype").unwrap_or_default().to_owned();
        let Some(port) = port else {
            tracing::debug!("port-forward: stream without a valid port header; closing it");
            stream.out.close().await;
            continue;
        };
        // Clients older than the requestid header open error then data with consecutive
        // IDs (the kubelet's same guess).
        let request = stream.header("requestid").map(str::to_owned).unwrap_or_else(|| {
            let id = stream.out.id;
            if kind == "data" { id.saturating_sub(2) } else { id }.to_string()
        });
        tracing::debug!(
            request,
            kind,
            port,
            stream = stream.out.id,
            "port-forward: stream opened"
        );
        let pair = pairs.entry(request.clone()).or_default();
        match kind.as_str() {
            "error" if pair.error.is_none() => pair.error = Some(stream),
            "data" if pair.data.is_none() => pair.data = Some(stream),
            _ => {
                tracing::debug!(
                    request,
                    kind,
                    "port-forward: unexpected or duplicate stream; closing it"
                );
                stream.out.close().await;
                continue;
            }
        }
        if pair.error.is_some() && pair.data.is_some() {
            if let Some(Pair {
                error: Some(error),
                data: Some(data),
            }) = pairs.remove(&request)
            {
                forwards.spawn(forward(netns.clone(), port, data, error));
            }
        }
    }
    // The client closed the connection: every forward ends with it.
    forwards.abort_all();
    session.finish().await;
}

async fn forward(netns: Result<Option<PathBuf>, String>, port: u16, mut data: Stream, error: Stream) {
    let connected = match netns {
        Ok(ns) => connect(ns, port).await.map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match connected {
        Ok(tcp) => {
            tracing::debug!(port, "port-forward: connected");
            let (from_pod, to_pod) = tcp.into_split();
            // The client done sending: the pod sees end of file, and may still answer.
            let up = tokio::spawn(async move { copy_to(&mut data.data, to_pod).await });
            // Done when the pod closes its side.
            data.out.copy_from(from_pod).await;
            up.abort();
            data.out.close().await;
            tracing::debug!(port, "port-forward: the pod closed the connection");
        }
        Err(message) => {
            tracing::info!(port, error = %message, "port-forward: cannot connect");
            // The kubelet's format: the client shows the message and closes the connection.
            let body = serde_json::json!({
                "closeConnection": true,
                "message": format!("error forwarding port {port} to pod: {message}"),
            });
            error.out.write(body.to_string().as_bytes()).await;
            data.out.close().await;
        }
    }
    error.out.close().await;
}

/// Connects to `port` on the loopback of network namespace `netns` (the host's when None):
/// IPv4 first, then IPv6, as `localhost` would.
async fn connect(netns: Option<PathBuf>, port: u16) -> io::Result<TcpStream> {
    let addrs = [
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
    ];
    let Some(ns) = netns else {
        return tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addrs[..]))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?;
    };
    // A socket belongs to the namespace it was created in: create it on a thread of its own
    // that enters the pod's namespace (never a pooled thread, which others would reuse).
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("kboot-portfwd".into())
        .spawn(move || {
            let connected = (|| {
                let file = std::fs::File::open(&ns)?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                for addr in &addrs {
                    match std::net::TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
                        Ok(s) => {
                            s.set_nonblocking(true)?;
                            return Ok(s);
                        }
                        Err(e) => last = e,
                    }
                }
                Err(last)
            })();
            let _ = tx.send(connected);
        })?;
    let stream = rx
        .await
        .map_err(|_| io::Error::other("the connecting thread ended without an answer"))??;
    TcpStream::from_std(stream)
}
