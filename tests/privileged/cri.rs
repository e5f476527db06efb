//! The CRI as crictl drives it, as root: pod networks through real CNI plugins (Debian's
//! containernetworking-plugins) on a test-only bridge inside a network namespace the test
//! creates (`unshare --net` around the server), and containers through kboot's shims.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::{require_root, Dir};
use crate::containers_support::{load_busybox_image, wait_until};
use crate::cri_client::Server;

const CRICTL: &str = "/var/cache/kboot-build/cri-tools-v1.34.0/bin/crictl";
const CNI_BIN: &str = "/usr/lib/cni";

fn crictl_bin() -> &'static str {
    assert!(
        Path::new(CRICTL).exists(),
        "{CRICTL} missing: run scripts/build-k8s.sh --only cri-tools (install-deps does)"
    );
    assert!(
        Path::new(CNI_BIN).join("bridge").exists(),
        "CNI plugins missing: apt-get install containernetworking-plugins"
    );
    CRICTL
}

pub(crate) struct Crictl {
    pub socket: PathBuf,
    /// A network namespace to run crictl in (streaming URLs are on the server's loopback).
    pub netns: Option<String>,
}

impl Crictl {
    pub(crate) fn command(&self) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={ns}")).arg("--").arg(crictl_bin());
                c
            }
            None => Command::new(crictl_bin()),
        };
        let endpoint = format!("unix://{}", self.socket.display());
        cmd.args(["--runtime-endpoint", &endpoint, "--image-endpoint", &endpoint]);
        // crictl's default of 2 s bounds the connection and each call: under qemu TCG (the
        // VM tier) the streaming tests' crictl gave up connecting ("validate service
        // connection: DeadlineExceeded") 2-3 s after it started. It does not bound the
        // streams themselves.
        cmd.args(["--timeout", "30s"]);
        cmd
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run crictl")
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "crictl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub(crate) fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).expect("crictl JSON")
    }
}

/// A bridge network on `kbcri<n>` with host-local IPAM state inside the test dir.
pub(crate) fn cni_config(dir: &Dir, subnet: &str) {
    let net_d = dir.path().join("net.d");
    std::fs::create_dir_all(&net_d).unwrap();
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "kboot-test",
        "plugins": [
            {"type": "bridge", "bridge": "kbcri0", "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": dir.path().join("ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    std::fs::write(net_d.join("10-test.conflist"), conf.to_string()).unwrap();
}

pub(crate) fn write_json(dir: &Dir, name: &str, value: serde_json::Value) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, value.to_string()).unwrap();
    p.display().to_string()
}

pub(crate) fn pod_json(dir: &Dir, name: &str) -> String {
    write_json(
        dir,
        &format!("{name}-pod.json"),
        serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid"), "attempt": 0},
            "hostname": name,
            "log_directory": dir.path().join("pod-logs").join(name),
            "labels": {"app": name},
            "annotations": {"kboot.test/a": "x y"},
            // A PID namespace per container: what the kubelet sends unless the pod sets
            // shareProcessNamespace.
            "linux": {"security_context": {"namespace_options": {"pid": 1}}}
        }),
    )
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn cri_crictl_pod_network_container_exec_logs_stop_and_remove() {
    require_root();
    let dir = Dir::new();
    cni_config(&dir, "10.231.7.0/24");
    load_busybox_image(&dir, "kboot.test/busybox:1", vec![], |b| {
        b.cmd(["sh", "-c", "trap '' TERM; echo hello; echo oops >&2; exec sleep 300"])
    });
    let server = Server::start(&dir, &["unshare", "--net", "--"], &[Path::new(CNI_BIN)]);
    let c = Crictl {
        socket: server.socket.clone(),
        netns: None,
    };
    let _cleanup = RemovePods(&c);

    let pod = c.ok(&["runp", &pod_json(&dir, "web")]);
    let st = c.json(&["inspectp", "-o", "json", &pod]);
    let ip = st["status"]["network"]["ip"].as_str().unwrap().to_owned();
    assert!(ip.starts_with("10.231.7."), "pod IP {ip} from the test subnet");
    assert_eq!(st["status"]["state"], "SANDBOX_READY");
    assert_eq!(st["status"]["annotations"]["kboot.test/a"], "x y");
    let netns = dir.path().join("state/netns").join(&pod);
    let addr = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-4", "-o", "addr"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&addr.stdout).contains(&format!("{ip}/24")),
        "{}",
        String::from_utf8_lossy(&addr.stdout)
    );

    let ctr_json = write_json(
        &dir,
        "ctr.json",
        serde_json::json!({"metadata": {"name": "main"}, "image": {"image": "kboot.test/busybox:1"}, "log_path": "main/0.log", "labels": {"role": "main"}}),
    );
    let ctr = c.ok(&["create", &pod, &ctr_json, &pod_json(&dir, "web")]);
    assert_eq!(
        c.json(&["inspect", "-o", "json", &ctr])["status"]["state"],
        "CONTAINER_CREATED"
    );
    c.ok(&["start", &ctr]);
    assert_eq!(
        c.json(&["inspect", "-o", "json", &ctr])["status"]["state"],
        "CONTAINER_RUNNING"
    );

    // Stats come from the container's cgroup.
    let stats = c.json(&["stats", "-o", "json", &ctr]);
    let one = &stats["stats"][0];
    assert_eq!(one["attributes"]["id"], ctr.as_str(), "{stats}");
    let memory = one["memory"]["workingSetBytes"]["value"]
        .as_str()
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        memory.is_some_and(|m| m > 0),
        "a running container uses memory: {stats}"
    );

    // The container shares the pod's network namespace and hostname.
    assert!(c.ok(&["exec", "-s", &ctr, "ip", "-4", "addr"]).contains(&ip));
    assert_eq!(c.ok(&["exec", "-s", &ctr, "hostname"]), "web");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let exec = rt.block_on(async {
        let req = kboot_cri::v1::ExecSyncRequest {
            container_id: ctr.clone(),
            cmd: ["sh", "-c", "echo out; echo err >&2; exit 7"]
                .map(String::from)
                .to_vec(),
            timeout: 10,
        };
        server.runtime().await.exec_sync(req).await.unwrap().into_inner()
    });
    assert_eq!(
        (exec.exit_code, &exec.stdout[..], &exec.stderr[..]),
        (7, &b"out\n"[..], &b"err\n"[..])
    );

    // Logs: CRI format at log_directory/log_path, readable by crictl logs.
    let log = dir.path().join("pod-logs/web/main/0.log");
    assert!(wait_until(Duration::from_secs(10), || std::fs::read_to_string(&log)
        .is_ok_and(|l| l.contains("oops"))));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().any(|l| l.ends_with(" stdout F hello")), "{text}");
    assert!(text.lines().any(|l| l.ends_with(" stderr F oops")), "{text}");
    let out = c.run(&["logs", &ctr]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello"));

    // Output that ends without a newline (`echo -n DONE`, a termination message the kubelet
    // reads from the log) is a partial line, which no reader ends with a newline.
    let done_json = write_json(
        &dir,
        "done.json",
        serde_json::json!({"metadata": {"name": "done"}, "image": {"image": "kboot.test/busybox:1"},
                           "command": ["sh", "-c", "echo -n DONE"], "log_path": "done/0.log"}),
    );
    let done = c.ok(&["create", &pod, &done_json, &pod_json(&dir, "web")]);
    c.ok(&["start", &done]);
    assert!(wait_until(Duration::from_secs(10), || c
        .json(&["inspect", "-o", "json", &done])["status"]["state"]
        == "CONTAINER_EXITED"));
    let text = std::fs::read_to_string(dir.path().join("pod-logs/web/done/0.log")).unwrap();
    assert!(
        text.ends_with(" stdout P DONE\n") && text.lines().count() == 1,
        "{text:?}"
    );
    assert_eq!(c.run(&["logs", &done]).stdout, b"DONE", "crictl logs adds no newline");
    c.ok(&["rm", &done]);

    assert_eq!(c.ok(&["ps", "-q", "--label", "role=main"]), ctr);
    assert_eq!(c.ok(&["ps", "-q", "--label", "role=other"]), "");

    c.ok(&["stop", "--timeout", "2", &ctr]);
    let st = c.json(&["inspect", "-o", "json", &ctr]);
    assert_eq!(st["status"]["state"], "CONTAINER_EXITED");
    assert_eq!(
        st["status"]["exitCode"], 137,
        "sleep ignores SIGTERM (inherited from the trap), so SIGKILL after the grace period"
    );
    c.ok(&["rm", &ctr]);
    assert_eq!(c.ok(&["ps", "-a", "-q"]), "");

    c.ok(&["stopp", &pod]);
    assert!(!netns.exists(), "the pinned namespace is released on stop");
    c.ok(&["rmp", &pod]);
    assert_eq!(c.ok(&["pods", "-q"]), "");
    let reserved = std::fs::read_dir(dir.path().join("ipam/kboot-test"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name() == ip.as_str());
    assert!(!reserved, "host-local released {ip}");
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn cri_running_pod_and_container_survive_a_server_restart() {
    require_root();
    let dir = Dir::new();
    cni_config(&dir, "10.231.8.0/24");
    load_busybox_image(&dir, "kboot.test/busybox:1", vec![], |b| b.cmd(["sleep", "300"]));
    // The network namespace the server runs in must outlive the first server process.
    let (_kill_holder, ns) = private_netns();
    let join = format!("--net={ns}");
    let server = Server::start(&dir, &["nsenter", &join, "--"], &[Path::new(CNI_BIN)]);
    let c = Crictl {
        socket: server.socket.clone(),
        netns: None,
    };
    let _cleanup = RemovePods(&c);
    let pod = c.ok(&["runp", &pod_json(&dir, "db")]);
    let ctr_json = write_json(
        &dir,
        "ctr.json",
        serde_json::json!({"metadata": {"name": "db"}, "image": {"image": "kboot.test/busybox:1"}}),
    );
    let ctr = c.ok(&["create", &pod, &ctr_json, &pod_json(&dir, "db")]);
    c.ok(&["start", &ctr]);
    let ip = c.json(&["inspectp", "-o", "json", &pod])["status"]["network"]["ip"].clone();
    let started = c.json(&["inspect", "-o", "json", &ctr])["status"]["startedAt"].clone();
    server.stop();

    let server = Server::start(&dir, &["nsenter", &join, "--"], &[Path::new(CNI_BIN)]);
    let c = Crictl {
        socket: server.socket.clone(),
        netns: None,
    };
    let _cleanup_after_restart = RemovePods(&c);
    let st = c.json(&["inspectp", "-o", "json", &pod]);
    assert_eq!(
        st["status"]["state"],
        "SANDBOX_READY",
        "CNI CHECK passed after the restart:\n{}",
        server.log_text()
    );
    assert_eq!(st["status"]["network"]["ip"], ip);
    let st = c.json(&["inspect", "-o", "json", &ctr]);
    assert_eq!(st["status"]["state"], "CONTAINER_RUNNING", "the container kept running");
    assert_eq!(st["status"]["startedAt"], started, "and was not started again");
    c.ok(&["stopp", &pod]);
    c.ok(&["rmp", &pod]);
    assert_eq!(c.ok(&["ps", "-a", "-q"]), "");
}

/// A network namespace of the test's own, held by a `sleep` (killed on drop), and its
/// `/proc/PID/ns/net` path.
pub(crate) fn private_netns() -> (KillOnDrop, String) {
    let holder = Command::new("unshare")
        .args(["--net", "--", "sleep", "300"])
        .spawn()
        .unwrap();
    // Join only once the holder has its own namespace: before `unshare` runs, its
    // /proc/PID/ns/net is still the host's, and the bridge would land on the host.
    let ns = format!("/proc/{}/ns/net", holder.id());
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    let holder = KillOnDrop(holder);
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_link(&ns)
            .is_ok_and(|l| l != own)),
        "the holder never entered its own network namespace"
    );
    (holder, ns)
}

/// Force-removes every pod (and so its containers, namespace and addresses) when a test
/// ends, passing or not, so a failure leaves nothing running.
pub(crate) struct RemovePods<'a>(pub &'a Crictl);

impl Drop for RemovePods<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["rmp", "--force", "--all"]);
    }
}

pub(crate) struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
