//! `Exec` over a SPDY session (remotecommand v4) or a WebSocket ([`super::websocket`], whose
//! channels arrive as the same streams): the client opens `error`, `stdin`,
//! `stdout`, `stderr` and, with a TTY, `resize` streams; the command runs in the container
//! (as `ExecSync` does, [`container::enter_command`]) with pipes or a pseudo-terminal; its
//! exit status goes back on the error stream as a `metav1.Status`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use kboot_cri::v1 as cri;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::spdy::{copy_to, Session, Stream};
use super::{status_json, STREAM_CREATION_TIMEOUT};
use crate::cri::{container, Cri};

/// After the command exits, how long its output may still drain (a background process that
/// kept the terminal or a pipe open would otherwise hold the session forever).
const DRAIN: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub(super) struct Streams {
    pub error: Option<Stream>,
    pub stdin: Option<Stream>,
    pub stdout: Option<Stream>,
    pub stderr: Option<Stream>,
    pub resize: Option<Stream>,
}

/// The stdio a remotecommand request (exec or attach) asks for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Wanted {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Wanted {
    pub(super) fn new(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Self {
        Self {
            stdin,
            stdout,
            stderr,
            tty,
        }
    }
}

/// Collects the streams the request announced, as the kubelet does: one per requested
/// stdio, the error stream, and the resize stream with a TTY.
async fn wait_for_streams(session: &mut Session, req: Wanted) -> Option<Streams> {
    let stderr = req.stderr && !req.tty;
    let expected = 1 + usize::from(req.stdin) + usize::from(req.stdout) + usize::from(stderr) + usize::from(req.tty);
    let mut got = Streams::default();
    let mut received = 0;
    let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
    tokio::pin!(deadline);
    while received < expected {
        let stream = tokio::select! {
            s = session.next_stream() => s?,
            () = &mut deadline => {
                tracing::warn!(expected, received, "the client did not open its streams in time");
                return None;
            }
        };
        let slot = match stream.header("streamtype").unwrap_or_default() {
            "error" => &mut got.error,
            "stdin" => &mut got.stdin,
            "stdout" => &mut got.stdout,
            "stderr" => &mut got.stderr,
            "resize" => &mut got.resize,
            other => {
                tracing::debug!(stream_type = other, "ignoring a stream of unknown type");
                continue;
            }
        };
        *slot = Some(stream);
        received += 1;
    }
    Some(got)
}

/// The streams of an exec or attach, opened; `None` once the session is finished because
/// the client did not open them.
pub(super) async fn open_streams(mut session: Session, wanted: Wanted) -> Option<(Session, Streams)> {
    match wait_for_streams(&mut session, wanted).await {
        Some(streams) => Some((session, streams)),
        None => {
            session.finish().await;
            None
        }
    }
}

pub(super) async fn serve(cri: Arc<Cri>, session: Session, req: cri::ExecRequest) {
    let wanted = Wanted::new(req.stdin, req.stdout, req.stderr, req.tty);
    let Some((mut session, mut streams)) = open_streams(session, wanted).await else {
        return;
    };
    let outcome = run(&cri, &req, &mut streams, &mut session).await;
    if let Err(e) = &outcome {
        tracing::warn!(container = %req.container_id, error = %e, "exec failed");
    }
    finish(streams, session, &outcome).await;
}

/// Ends an exec or attach session: closes the output streams, reports the outcome on the
/// error stream (remotecommand's status), and closes the connection.
pub(super) async fn finish(streams: Streams, session: Session, outcome: &Result<i32, String>) {
    for s in [&streams.stdout, &streams.stderr].into_iter().flatten() {
        s.out.close().await;
    }
    if let Some(error) = &streams.error {
        error.out.write(&status_json(outcome)).await;
        error.out.close().await;
    }
    drop(streams);
    session.finish().await;
}

/// Runs the command with the streams attached; its exit code, or why it could not run.
async fn run(cri: &Cri, req: &cri::ExecRequest, streams: &mut Streams, session: &mut Session) -> Result<i32, String> {
    let c = {
        let inner = cri.inner.lock().await;
        Cri::resolve_container(&inner, &req.container_id)
            .map_err(|e| e.to_string())?
            .clone()
    };
    let (mut command, _) = container::enter_command(&cri.config.paths, &c, &req.cmd).map_err(|e| e.to_string())?;
    let stdin = streams.stdin.take();
    let stdout = streams.stdout.as_ref().map(|s| s.out.clone());
    let stderr = streams.stderr.as_ref().map(|s| s.out.clone());
    // Output copies end with the command; input copies follow the client.
    let (mut outputs, mut inputs) = (tokio::task::JoinSet::new(), tokio::task::JoinSet::new());
    let mut child = if req.tty {
        let pty = nix::pty::openpty(None, None).map_err(|e| format!("allocate a terminal: {e}"))?;
        let (master, slave) = (pty.master, pty.slave);
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| format!("duplicate the terminal: {e}"));
        command.stdin(Stdio::from(dup(&slave)?));
        command.stdout(Stdio::from(dup(&slave)?));
        command.stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe and allocate nothing.
        unsafe {
            command.pre_exec(|| {
                // A session of its own with the terminal as its controlling one, so that
                // job control and ^C reach the command.
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("run nsenter: {e}"))?;
        // The command holds the terminal's other end: dropping it here lets the terminal
        // report end of output once the command and its children are gone.
        drop(command);
        if let Some(resize) = streams.resize.take() {
            let fd = dup(&master)?;
            inputs.spawn(resize_terminal(resize, fd));
        }
        let reader = tokio::fs::File::from_std(std::fs::File::from(dup(&master)?));
        if let Some(out) = stdout {
            outputs.spawn(async move { out.copy_from(reader).await });
        }
        if let Some(input) = stdin {
            let terminal = tokio::fs::File::from_std(std::fs::File::from(master));
            inputs.spawn(async move { copy_to(&mut { input }.data, terminal).await });
        }
        // Without stdin the terminal stays open until the command ends.
        child
    } else {
        let pipe = |wanted: bool| if wanted { Stdio::piped() } else { Stdio::null() };
        command
            .stdin(pipe(stdin.is_some()))
            .stdout(pipe(stdout.is_some()))
            .stderr(pipe(stderr.is_some()))
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| format!("run nsenter: {e}"))?;
        if let (Some(out), Some(pipe)) = (stdout, child.stdout.take()) {
            outputs.spawn(async move { out.copy_from(pipe).await });
        }
        if let (Some(out), Some(pipe)) = (stderr, child.stderr.take()) {
            outputs.spawn(async move { out.copy_from(pipe).await });
        }
        if let (Some(input), Some(pipe)) = (stdin, child.stdin.take()) {
            inputs.spawn(async move { copy_to(&mut { input }.data, pipe).await });
        }
        child
    };
    let group = child.id().and_then(|p| i32::try_from(p).ok());
    // The client going away ends the command, as the kubelet's runtimes do.
    let status = tokio::select! {
        status = child.wait() => status.map_err(|e| format!("wait for the command: {e}"))?,
        () = closed(session) => {
            if let Some(g) = group {
                let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
            }
            return Err("the client closed the connection".into());
        }
    };
    // Output still in the pipes or the terminal goes out before the status.
    let _ = tokio::time::timeout(DRAIN, async { while outputs.join_next().await.is_some() {} }).await;
    outputs.abort_all();
    inputs.abort_all();
    Ok(container::exit_code(&status))
}

/// Completes when the client closes the connection (no more streams and no reader).
pub(super) async fn closed(session: &mut Session) {
    while session.next_stream().await.is_some() {}
}

/// Applies the client's `{"Width":..,"Height":..}` messages to the terminal.
pub(super) async fn resize_terminal(mut from: Stream, terminal: OwnedFd) {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Size {
        width: u16,
        height: u16,
    }
    let mut pending = Vec::new();
    while let Some(data) = from.data.recv().await {
        pending.extend_from_slice(&data);
        let mut sizes = serde_json::Deserializer::from_slice(&pending).into_iter::<Size>();
        let mut last = None;
        for size in sizes.by_ref() {
            match size {
                Ok(s) => last = Some(s),
                Err(e) if e.is_eof() => break,
                Err(_) => return,
            }
        }
        let used = sizes.byte_offset();
        pending.drain(..used);
        if let Some(s) = last {
            let ws = libc::winsize {
                ws_row: s.height,
                ws_col: s.width,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ reads one winsize from the pointer, valid for the call.
            unsafe {
                libc::ioctl(terminal.as_raw_fd(), libc::TIOCSWINSZ, &ws);
            }
        }
    }
}
