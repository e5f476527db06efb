//! CRI streaming (`Exec`, `PortForward`) as crictl uses it, as root: the server and crictl
//! share a network namespace the test creates (the streaming URL is on the server's
//! loopback), the pod gets its network through Debian's CNI plugins.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::common::{require_root, Dir};
use crate::containers_support::{load_busybox_image, wait_until};
use crate::cri::{cni_config, pod_json, private_netns, write_json, Crictl, KillOnDrop, RemovePods};
use crate::cri_client::Server;

const CNI_BIN: &str = "/usr/lib/cni";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// `crictl exec` (streaming, not `-s`) with `stdin` piped in.
fn exec(c: &Crictl, flags: &[&str], ctr: &str, cmd: &[&str], stdin: &[u8]) -> Output {
    let args: Vec<&str> = std::iter::once("exec")
        .chain(flags.iter().copied())
        .chain([ctr])
        .chain(cmd.iter().copied())
        .collect();
    crictl_with_input(c, &args, stdin)
}

/// `crictl ARGS` with `stdin` piped in (then closed), to its end.
fn crictl_with_input(c: &Crictl, args: &[&str], stdin: &[u8]) -> Output {
    let mut child: Child = c
        .command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run crictl");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn kill_and_read_stderr(child: &mut Child) -> String {
    let _ = child.kill();
    let _ = child.wait();
    let mut said = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut said);
    }
    said
}

/// `crictl exec -it CTR sh -c SCRIPT` on a pseudo-terminal of 45 rows and 123 columns,
/// typing `input`.
fn exec_tty(c: &Crictl, ctr: &str, script: &str, input: &[u8]) -> Output {
    on_a_terminal(c, &["exec", "-it", ctr, "sh", "-c", script], input)
}

/// `crictl ARGS` on a pseudo-terminal of 45 rows and 123 columns, typing `input` after 2 s.
fn on_a_terminal(c: &Crictl, args: &[&str], input: &[u8]) -> Output {
    let mut crictl = c.command();
    crictl.args(args);
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
    let line: Vec<String> = std::iter::once(crictl.get_program())
        .chain(crictl.get_args())
        .map(quote)
        .collect();
    let mut child = Command::new("script")
        .args([
            "-qec",
            &format!("stty rows 45 cols 123; {}", line.join(" ")),
            "/dev/null",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script");
    let mut stdin = child.stdin.take().unwrap();
    // Typed once the command waits for it; stdin stays open until it has answered.
    std::thread::sleep(Duration::from_secs(2));
    stdin.write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    out
}

/// A CRI server and crictl in a network namespace of the test's own (its loopback up).
struct Netns {
    _holder: KillOnDrop,
    /// `--net=<path>` for nsenter.
    join: String,
    server: Server,
    crictl: Crictl,
}

fn serve_in_netns(dir: &Dir) -> Netns {
    let (holder, ns): (KillOnDrop, String) = private_netns();
    let join = format!("--net={ns}");
    let lo = Command::new("nsenter")
        .arg(&join)
        .args(["--", "ip", "link", "set", "lo", "up"])
        .status();
    assert!(lo.unwrap().success(), "bring up the namespace's loopback");
    let server = Server::start(dir, &["nsenter", &join, "--"], &[Path::new(CNI_BIN)]);
    let crictl = Crictl {
        socket: server.socket.clone(),
        netns: Some(ns),
    };
    Netns {
        _holder: holder,
        join,
        server,
        crictl,
    }
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn cri_streaming_exec_and_port_forward_through_crictl() {
    require_root();
    let dir = Dir::new();
    cni_config(&dir, "10.231.9.0/24");
    load_busybox_image(&dir, "kboot.test/busybox:1", vec![], |b| {
        b.cmd([
            "sh",
            "-c",
            "mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p 8080 -h /www",
        ])
    });
    let env = serve_in_netns(&dir);
    let (c, join, server) = (&env.crictl, &env.join, &env.server);
    let _cleanup = RemovePods(c);
    let pod = c.ok(&["runp", &pod_json(&dir, "stream")]);
    let ctr_json = write_json(
        &dir,
        "ctr.json",
        serde_json::json!({"metadata": {"name": "web"}, "image": {"image": "kboot.test/busybox:1"}}),
    );
    let ctr = c.ok(&["create", &pod, &ctr_json, &pod_json(&dir, "stream")]);
    c.ok(&["start", &ctr]);

    // Output, both streams, and the exit code the command ended with (crictl 1.34 exits 1
    // and names the code client-go decoded from the status; kubectl exits with the code).
    let out = exec(c, &[], &ctr, &["sh", "-c", "hostname; echo oops >&2; exit 3"], b"");
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("command terminated with exit code 3"),
        "{}",
        show(&out)
    );
    assert_eq!(text(&out.stdout), "stream\n", "{}", show(&out));
    assert!(text(&out.stderr).contains("oops"), "{}", show(&out));
    let out = exec(c, &[], &ctr, &["cat", "/www/index.html"], b"");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(text(&out.stdout), "hello-from-pod\n");

    // The command runs in the container's cgroups, as its init does.
    let own = exec(c, &[], &ctr, &["cat", "/proc/self/cgroup"], b"");
    let init = exec(c, &[], &ctr, &["cat", "/proc/1/cgroup"], b"");
    assert!(own.status.success() && init.status.success(), "{}", show(&own));
    assert!(!own.stdout.is_empty());
    assert_eq!(text(&own.stdout), text(&init.stdout));

    // Stdin reaches the command, and its end is the command's end of file.
    let input: Vec<u8> = (0..20_000).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
    let out = exec(c, &["-i"], &ctr, &["sh", "-c", "cat; echo done"], &input);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(out.stdout.len(), input.len() + 5, "{}", text(&out.stderr));
    assert!(out.stdout.starts_with(&input) && out.stdout.ends_with(b"done\n"));

    // With a terminal (crictl insists on one: `script` gives it a pseudo-terminal): the
    // command sees a TTY of the client's size, reads what is typed, and the exit code
    // still comes back.
    let out = exec_tty(
        c,
        &ctr,
        "test -t 0 && test -t 1 && echo on-a-tty; sleep 1; echo size:$(stty size); read line; echo got:$line; exit 4",
        b"typed\n",
    );
    assert!(text(&out.stdout).contains("size:45 123"), "{}", show(&out));
    assert!(text(&out.stdout).contains("on-a-tty"), "{}", show(&out));
    assert!(text(&out.stdout).contains("got:typed"), "{}", show(&out));
    assert!(text(&out.stdout).contains("exit code 4"), "{}", show(&out));

    // A container that is not running refuses.
    let out = exec(c, &[], "0000nope", &["true"], b"");
    assert!(!out.status.success());

    // Port forward: crictl listens in the test's namespace, kboot connects to the pod's
    // loopback inside the pod's own namespace.
    let forward_pod = |pod: &str, ports: &str| {
        KillOnDrop(
            c.command()
                .args(["port-forward", pod, ports])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    };
    let get = |port: u16| {
        Command::new("nsenter")
            .arg(join)
            .args([
                "--",
                "curl",
                "-sS",
                "--max-time",
                "5",
                &format!("http://127.0.0.1:{port}/"),
            ])
            .output()
            .unwrap()
    };
    let forward = |ports: &str| forward_pod(&pod, ports);
    let mut web = forward("18080:8080");
    if !wait_until(Duration::from_secs(10), || get(18080).status.success()) {
        let said = kill_and_read_stderr(&mut web.0);
        panic!(
            "port-forward never answered: {}\n{}\ncrictl: {said}",
            show(&get(18080)),
            server.log_text()
        );
    }
    // Several connections over the one forwarding session.
    for _ in 0..3 {
        let out = get(18080);
        assert_eq!(text(&out.stdout), "hello-from-pod\n", "{}", show(&out));
    }
    drop(web);
    // A port nobody listens on: the client hears about it.
    let mut refused = forward("18081:9");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!get(18081).status.success());
    let crictl_said = kill_and_read_stderr(&mut refused.0);
    assert!(
        crictl_said.contains("refused"),
        "crictl port-forward said: {crictl_said}"
    );

    c.ok(&["stopp", &pod]);
    c.ok(&["rmp", &pod]);

    // A hostNetwork pod: the forward connects on the node's own loopback (here, the
    // namespace the server runs in).
    let host_pod_json = write_json(
        &dir,
        "host-pod.json",
        serde_json::json!({
            "metadata": {"name": "hostnet", "namespace": "default", "uid": "hostnet-uid", "attempt": 0},
            "linux": {"security_context": {"namespace_options": {"network": 2}}}
        }),
    );
    let host_pod = c.ok(&["runp", &host_pod_json]);
    let host_ctr_json = write_json(
        &dir,
        "host-ctr.json",
        serde_json::json!({
            "metadata": {"name": "web"},
            "image": {"image": "kboot.test/busybox:1"},
            "command": ["sh", "-c", "mkdir -p /www && echo hello-from-host > /www/index.html && exec httpd -f -p 18090 -h /www"]
        }),
    );
    let host_ctr = c.ok(&["create", &host_pod, &host_ctr_json, &host_pod_json]);
    c.ok(&["start", &host_ctr]);
    let _web = forward_pod(&host_pod, "18091:18090");
    assert!(
        wait_until(Duration::from_secs(10), || text(&get(18091).stdout)
            == "hello-from-host\n"),
        "{}",
        show(&get(18091))
    );
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn cri_streaming_attach_through_crictl() {
    require_root();
    let dir = Dir::new();
    cni_config(&dir, "10.231.10.0/24");
    load_busybox_image(&dir, "kboot.test/busybox:1", vec![], |b| b.cmd(["sh"]));
    let env = serve_in_netns(&dir);
    let c = &env.crictl;
    let _cleanup = RemovePods(c);
    let pod = c.ok(&["runp", &pod_json(&dir, "attach")]);
    let ctr_json = write_json(
        &dir,
        "ctr.json",
        serde_json::json!({
            "metadata": {"name": "echo"},
            "image": {"image": "kboot.test/busybox:1"},
            "command": ["sh", "-c", "echo before; while read l; do echo got:$l; echo err:$l >&2; done; echo bye"],
            "stdin": true,
            "stdin_once": true,
            "log_path": "echo/0.log",
        }),
    );
    let pod_config = pod_json(&dir, "attach");
    let run = |config: &str| {
        let ctr = c.ok(&["create", &pod, config, &pod_config]);
        c.ok(&["start", &ctr]);
        ctr
    };
    let exited = |ctr: &str| {
        let state = || c.ok(&["inspect", "-o", "go-template", "--template", "{{.status.state}}", ctr]);
        wait_until(Duration::from_secs(10), || state() == "CONTAINER_EXITED")
    };
    let ctr = run(&ctr_json);
    assert!(
        wait_until(Duration::from_secs(10), || c.ok(&["logs", &ctr]).contains("before")),
        "the container never started"
    );

    // What is typed reaches the container's stdin; its live stdout and stderr come back
    // (not what it wrote before the attach); closing stdin (stdin_once) closes the
    // container's, which ends it and the attach.
    let out = crictl_with_input(c, &["attach", "-i", &ctr], b"hello\nworld\n");
    assert!(out.status.success(), "{}\n{}", show(&out), env.server.log_text());
    assert_eq!(text(&out.stdout), "got:hello\ngot:world\nbye\n", "{}", show(&out));
    assert!(text(&out.stderr).contains("err:hello\nerr:world\n"), "{}", show(&out));

    assert!(exited(&ctr), "the container ends with its stdin");
    let logs = c.ok(&["logs", &ctr]);
    assert!(logs.contains("got:world") && logs.contains("bye"), "{logs}");
    // An exited container cannot be attached to.
    let out = c.command().args(["attach", &ctr]).output().unwrap();
    assert!(!out.status.success(), "{}", show(&out));

    // With `tty`: the container's stdio is a terminal (its controlling one), sized as the
    // client's; what is typed is echoed and answered (through /dev/tty, which only a
    // controlling terminal opens), all on stdout.
    let tty_json = write_json(
        &dir,
        "tty.json",
        serde_json::json!({
            "metadata": {"name": "shell"},
            "image": {"image": "kboot.test/busybox:1"},
            "command": ["sh", "-c", "while read l; do [ $l = quit ] && exit 0; test -t 0 && echo tty:$l:$(stty size) >/dev/tty; done"],
            "stdin": true,
            "tty": true,
            "log_path": "shell/0.log",
        }),
    );
    let tty_ctr = run(&tty_json);
    let out = on_a_terminal(c, &["attach", "-it", &tty_ctr], b"typed\nquit\n");
    assert!(text(&out.stdout).contains("tty:typed:45 123"), "{}", show(&out));
    assert!(exited(&tty_ctr), "quit ends the container");
}

/// Runs `cmd` in `ctr` through the CRI's `Exec` and a WebSocket client of this test's own
/// (tungstenite) speaking `protocol`, from inside the server's network namespace (the URL
/// is on its loopback): the negotiated protocol and every message as (channel, data).
fn exec_over_websocket(env: &Netns, ctr: &str, cmd: &[&str], protocol: &str) -> (String, Vec<(u8, Vec<u8>)>) {
    use base64::Engine as _;
    use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, Message};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = rt.block_on(async {
        let req = kboot_cri::v1::ExecRequest {
            container_id: ctr.to_owned(),
            cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        env.server.runtime().await.exec(req).await.unwrap().into_inner().url
    });
    let ns = env.join.trim_start_matches("--net=").to_owned();
    let protocol = protocol.to_owned();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&ns).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("join the server's namespace");
        let mut req = url.replacen("http://", "ws://", 1).into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        let (mut ws, response) = tungstenite::connect(req).expect("WebSocket handshake");
        let chosen = response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let mut got = Vec::new();
        loop {
            match ws.read() {
                Ok(Message::Binary(b)) => got.push((b[0], b[1..].to_vec())),
                Ok(Message::Text(t)) => {
                    let data = base64::engine::general_purpose::STANDARD
                        .decode(&t.as_bytes()[1..])
                        .unwrap();
                    got.push((t.as_bytes()[0] - b'0', data));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        (chosen, got)
    })
    .join()
    .unwrap()
}

/// The data of one channel, joined.
fn channel(got: &[(u8, Vec<u8>)], n: u8) -> String {
    let data: Vec<u8> = got
        .iter()
        .filter(|(c, _)| *c == n)
        .flat_map(|(_, d)| d.clone())
        .collect();
    text(&data)
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn cri_streaming_exec_and_attach_over_websocket() {
    require_root();
    let dir = Dir::new();
    cni_config(&dir, "10.231.11.0/24");
    load_busybox_image(&dir, "kboot.test/busybox:1", vec![], |b| {
        b.cmd(["sh", "-c", "echo ready; while read l; do echo got:$l; done; echo bye"])
    });
    let env = serve_in_netns(&dir);
    let c = &env.crictl;
    let _cleanup = RemovePods(c);
    let pod = c.ok(&["runp", &pod_json(&dir, "ws")]);
    let ctr_json = write_json(
        &dir,
        "ctr.json",
        serde_json::json!({"metadata": {"name": "main"}, "image": {"image": "kboot.test/busybox:1"},
                           "stdin": true, "stdin_once": true, "log_path": "main/0.log"}),
    );
    let ctr = c.ok(&["create", &pod, &ctr_json, &pod_json(&dir, "ws")]);
    c.ok(&["start", &ctr]);
    let ws = ["--transport", "websocket"];

    // client-go's WebSocket executor (remotecommand v5, what kubectl speaks): both output
    // channels, the exit code from the status channel, and stdin whose end (v5's close
    // message) is the command's end of file.
    let out = exec(c, &ws, &ctr, &["sh", "-c", "echo out; echo oops >&2; exit 3"], b"");
    assert!(
        text(&out.stderr).contains("command terminated with exit code 3"),
        "{}\n{}",
        show(&out),
        env.server.log_text()
    );
    assert_eq!(text(&out.stdout), "out\n", "{}", show(&out));
    assert!(text(&out.stderr).contains("oops"), "{}", show(&out));
    let out = exec(
        c,
        &["-i", ws[0], ws[1]],
        &ctr,
        &["sh", "-c", "cat; echo done"],
        b"hello\nworld\n",
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(text(&out.stdout), "hello\nworld\ndone\n", "{}", show(&out));

    // The older protocols, by hand: v4 (JSON status), its base64 text form, and the
    // original channel.k8s.io (only a failure's message) the conformance test uses.
    let script = ["sh", "-c", "echo remote execution test; echo oops >&2; exit 3"];
    for protocol in ["v4.channel.k8s.io", "v4.base64.channel.k8s.io", "channel.k8s.io"] {
        let (chosen, got) = exec_over_websocket(&env, &ctr, &script, protocol);
        assert_eq!(chosen, protocol);
        assert_eq!(
            got.first(),
            Some(&(1, Vec::new())),
            "{protocol}: an empty stdout message opens"
        );
        assert_eq!(channel(&got, 1), "remote execution test\n", "{protocol}: {got:?}");
        assert_eq!(channel(&got, 2), "oops\n", "{protocol}: {got:?}");
        let status = channel(&got, 3);
        if protocol.starts_with("v4") {
            let status: serde_json::Value = serde_json::from_str(&status).unwrap();
            assert_eq!(status["reason"], "NonZeroExitCode", "{protocol}: {status}");
            assert_eq!(status["details"]["causes"][0]["message"], "3", "{protocol}: {status}");
        } else {
            assert!(status.contains("non-zero exit code"), "{protocol}: {status:?}");
        }
    }
    let (_, got) = exec_over_websocket(&env, &ctr, &["true"], "channel.k8s.io");
    assert_eq!(channel(&got, 3), "", "success says nothing before v4: {got:?}");
    let (_, got) = exec_over_websocket(&env, &ctr, &["true"], "v4.channel.k8s.io");
    assert!(channel(&got, 3).contains("\"Success\""), "{got:?}");

    // Attach over the same transport: typed lines reach the container, its answers come back,
    // and closing stdin (v5) ends it.
    let out = crictl_with_input(c, &["attach", "-i", ws[0], ws[1], &ctr], b"one\n");
    assert!(out.status.success(), "{}\n{}", show(&out), env.server.log_text());
    assert_eq!(text(&out.stdout), "got:one\nbye\n", "{}", show(&out));
}
