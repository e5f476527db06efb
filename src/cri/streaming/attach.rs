//! `Attach` over a SPDY session or a WebSocket (remotecommand, the same streams as exec): connects to
//! the container's shim on its attach socket ([`crate::shim::attach`]), sends the client's
//! stdin there and the container's live stdout/stderr back. The session ends when the
//! container exits (the shim closes the socket; the error stream then reports success, as
//! the kubelet's runtimes do) or when the client goes away (the container keeps running).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use kboot_cri::v1 as cri;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

use super::exec::{closed, finish, open_streams, resize_terminal, Streams, Wanted};
use super::spdy::{copy_to, Session, StreamWriter};
use crate::cri::Cri;
use crate::shim::attach::{FRAME_HEADER, STDERR, STDOUT};

pub(super) async fn serve(cri: Arc<Cri>, session: Session, req: cri::AttachRequest) {
    let wanted = Wanted::new(req.stdin, req.stdout, req.stderr, req.tty);
    let Some((mut session, mut streams)) = open_streams(session, wanted).await else {
        return;
    };
    let outcome = match connect(&cri, &req.container_id).await {
        Ok((sock, init)) => {
            let _resize = streams
                .resize
                .take()
                .and_then(|r| Some((r, terminal_of(init?)?)))
                .map(|(r, fd)| AbortOnDrop(tokio::spawn(resize_terminal(r, fd))));
            tokio::select! {
                r = pump(sock, &mut streams, req.tty) => r.map(|()| 0),
                () = closed(&mut session) => Err("the client closed the connection".into()),
            }
        }
        Err(e) => Err(e),
    };
    if let Err(e) = &outcome {
        tracing::debug!(container = %req.container_id, error = %e, "attach ended");
    }
    finish(streams, session, &outcome).await;
}

/// The container's terminal, opened anew through its init's stdin (the shim allocated it;
/// `None` when that stdin is no terminal): the client's resize messages are applied to it.
fn terminal_of(init: i32) -> Option<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(format!("/proc/{init}/fd/0"))
        .ok()?;
    nix::unistd::isatty(f.as_raw_fd()).ok()?.then(|| f.into())
}

/// Aborts the task when the session ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The attach socket of the container `id`, connected, and the container's init pid.
async fn connect(cri: &Cri, id: &str) -> Result<(UnixStream, Option<i32>), String> {
    let (id, init) = {
        let inner = cri.inner.lock().await;
        let c = Cri::resolve_container(&inner, id).map_err(|e| e.to_string())?;
        let init = match c.phase(&cri.config.paths) {
            crate::cri::container::Phase::Running(rec) => rec.init_pid,
            _ => None,
        };
        (c.id.clone(), init)
    };
    let path = cri.config.paths.attach_socket(&id);
    let short = crate::shim::attach::short_path(&path);
    let connected = match &short {
        Ok((_dir, short)) => UnixStream::connect(short).await,
        Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
    };
    let sock = connected.map_err(|e| {
        format!(
            "container {id} cannot be attached to ({}: {e}); is it running?",
            path.display()
        )
    })?;
    Ok((sock, init))
}

/// Copies stdin to the shim and its output frames to the client until the shim closes.
async fn pump(sock: UnixStream, streams: &mut Streams, tty: bool) -> Result<(), String> {
    let (mut from_shim, to_shim) = sock.into_split();
    let mut input = tokio::task::JoinSet::new();
    if let Some(mut stdin) = streams.stdin.take() {
        input.spawn(async move { copy_to(&mut stdin.data, to_shim).await });
    }
    // With a TTY the client opens no stderr stream: stderr joins stdout, as on a terminal.
    let stdout = streams.stdout.as_ref().map(|s| s.out.clone());
    let stderr = match (&streams.stderr, tty) {
        (Some(s), _) => Some(s.out.clone()),
        (None, true) => stdout.clone(),
        (None, false) => None,
    };
    let result = copy_frames(&mut from_shim, stdout.as_ref(), stderr.as_ref()).await;
    input.abort_all();
    result
}

/// Reads `[tag][length][bytes]` frames until end of file.
async fn copy_frames(
    from: &mut (impl AsyncReadExt + Unpin),
    stdout: Option<&StreamWriter>,
    stderr: Option<&StreamWriter>,
) -> Result<(), String> {
    let mut header = [0u8; FRAME_HEADER];
    let mut data = Vec::new();
    loop {
        match from.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("read from the container's shim: {e}")),
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        data.resize(len, 0);
        from.read_exact(&mut data)
            .await
            .map_err(|e| format!("read from the container's shim: {e}"))?;
        let to = match header[0] {
            STDOUT => stdout,
            STDERR => stderr,
            _ => None,
        };
        if let Some(to) = to {
            if !to.write(&data).await {
                return Err("the client closed the connection".into());
            }
        }
    }
}
