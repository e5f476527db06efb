//! Tier 4 (no root): the shim's attach socket, with the container run as a plain host
//! process (test-only `KBOOT_TEST_ONLY_PLAIN_PROCESS`): what CRI `Attach` is built on.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Dir;

fn bundle(d: &Dir, args: &[&str]) -> std::path::PathBuf {
    let dir = d.path().join("bundle");
    std::fs::create_dir_all(dir.join("rootfs")).unwrap();
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": args, "user": {"uid": 0, "gid": 0}, "env": ["PATH=/usr/bin:/bin"], "cwd": "/"},
        "root": {"path": "rootfs"},
    });
    std::fs::write(dir.join("config.json"), spec.to_string()).unwrap();
    dir
}

/// A long container ID (a CRI ID has 64 characters), so that the socket's path exceeds the
/// 108 bytes of a socket address as it does under a test's deep state directory.
const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef-attach-test";

fn socket(d: &Dir) -> std::path::PathBuf {
    let sock = d.path().join("state/attach").join(format!("{ID}.sock"));
    assert!(sock.as_os_str().len() >= 108, "{}", sock.display());
    sock
}

fn shim(d: &Dir, args: &[&str], extra: &[&str]) -> Child {
    let mut cmd: Command = d.kboot();
    cmd.env("KBOOT_TEST_ONLY_PLAIN_PROCESS", "1")
        .arg("shim")
        .arg("--id")
        .arg(ID)
        .arg("--bundle")
        .arg(bundle(d, args))
        .arg("--log-path")
        .arg(d.path().join("c1.log"))
        .args(["--log-max-bytes", "0", "--attach"])
        .args(extra)
        .stdin(Stdio::null());
    cmd.spawn().expect("start the shim")
}

fn connect(sock: &Path) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let connected = kboot::shim::attach::short_path(sock).and_then(|(_dir, short)| UnixStream::connect(short));
        match connected {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                return s;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("connect {}: {e}", sock.display()),
        }
    }
}

/// The next output frame: (tag, bytes), or None at end of file.
fn frame(s: &mut UnixStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    match s.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
        Err(e) => panic!("read a frame: {e}"),
    }
    let mut data = vec![0u8; u32::from_be_bytes(head[1..].try_into().unwrap()) as usize];
    s.read_exact(&mut data).unwrap();
    Some((head[0], data))
}

#[test]
fn shim_attach_feeds_stdin_streams_live_output_and_stdin_once_ends_the_container() {
    let d = Dir::new();
    let sock = socket(&d);
    // Each line comes back on stdout and on stderr, to tell the two frame tags apart.
    let script = "while read l; do echo \"out:$l\"; echo \"$l\" >&2; done";
    let mut child = shim(&d, &["/bin/sh", "-c", script], &["--stdin", "--stdin-once"]);
    let mut a = connect(&sock);
    let mut watcher = connect(&sock);
    // Both clients are registered once the shim has accepted them; the watcher only reads.
    std::thread::sleep(Duration::from_millis(200));
    a.write_all(b"hello\n").unwrap();
    let mut got = [Vec::new(), Vec::new()];
    let deadline = Instant::now() + Duration::from_secs(10);
    while (got[0] != b"out:hello\n" || got[1] != b"hello\n") && Instant::now() < deadline {
        let (tag, data) = frame(&mut watcher).expect("output before the end");
        got[usize::from(tag) - 1].extend_from_slice(&data);
    }
    assert_eq!(got[0], b"out:hello\n", "stdout frames");
    assert_eq!(got[1], b"hello\n", "stderr frames");

    // stdin_once: the client closing its sending side ends the container's stdin.
    a.shutdown(std::net::Shutdown::Write).unwrap();
    let status = wait(&mut child, Duration::from_secs(10)).expect("the container ends after stdin closes");
    assert!(status.success(), "{status}");
    while frame(&mut a).is_some() {}
    assert!(frame(&mut watcher).is_none(), "clients see end of file");
    assert!(!sock.exists(), "the socket is removed with the container");
    let log = std::fs::read_to_string(d.path().join("c1.log")).unwrap();
    assert!(log.contains(" stdout F out:hello\n"), "{log}");
}

#[test]
fn shim_attach_without_stdin_once_keeps_the_container_running_between_clients() {
    let d = Dir::new();
    let sock = socket(&d);
    let mut child = shim(&d, &["/bin/cat"], &["--stdin"]);
    for word in ["one", "two"] {
        let mut c = connect(&sock);
        std::thread::sleep(Duration::from_millis(100));
        c.write_all(format!("{word}\n").as_bytes()).unwrap();
        assert_eq!(frame(&mut c), Some((1, format!("{word}\n").into_bytes())));
        c.shutdown(std::net::Shutdown::Write).unwrap();
        drop(c);
    }
    assert!(wait(&mut child, Duration::from_millis(300)).is_none(), "cat still runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(wait(&mut child, Duration::from_secs(10)).is_some());
}

fn wait(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn shim_attach_with_a_tty_gives_the_container_a_terminal_and_stdin_once_types_end_of_file() {
    let d = Dir::new();
    let sock = socket(&d);
    let script = "test -t 0 && test -t 1 && echo on-a-tty; while read l; do echo got:$l; done; echo eof";
    let mut child = shim(&d, &["/bin/sh", "-c", script], &["--stdin", "--stdin-once", "--tty"]);
    let mut c = connect(&sock);
    std::thread::sleep(Duration::from_millis(200));
    c.write_all(b"x\n").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let status = wait(&mut child, Duration::from_secs(10)).expect("end of file ends the loop");
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(d.path().join("c1.log")).unwrap();
    // Everything comes through the terminal as stdout, with its CRLF line ends.
    assert!(log.contains(" stdout F on-a-tty\r\n"), "{log}");
    assert!(log.contains(" stdout F got:x\r\n"), "{log}");
    assert!(log.contains("eof"), "{log}");
    assert!(!log.contains(" stderr "), "{log}");
    let mut out = Vec::new();
    while let Some((tag, data)) = frame(&mut c) {
        assert_eq!(tag, 1);
        out.extend_from_slice(&data);
    }
    assert!(
        String::from_utf8_lossy(&out).contains("got:x"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}
