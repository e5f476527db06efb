//! CRI security contexts and pod namespaces as seen from inside the containers, through the
//! gRPC API: the container's first process (its log) and an ExecSync'd process must agree
//! (capabilities, no-new-privileges, seccomp, groups, masked and read-only paths), and the
//! pod's shared PID and IPC namespaces must be shared by its containers and released on stop.
//! critest covers each setting alone; these cover what it does not: exec matching init, a
//! combination of settings, seccomp Localhost from the container's own process, the holder.

use std::time::Duration;

use kboot_cri::v1::runtime_service_client::RuntimeServiceClient;
use kboot_cri::v1::security_profile::ProfileType;
use kboot_cri::v1::{
    Capability, ContainerConfig, ContainerMetadata, CreateContainerRequest, ExecSyncRequest, ImageSpec, Int64Value,
    LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest,
    RunPodSandboxRequest, SecurityProfile, StartContainerRequest, StopPodSandboxRequest,
};
use tonic::transport::Channel;

use crate::common::{require_root, Dir};
use crate::containers_support::{load_busybox_image, pid_alive, wait_until};
use crate::cri_client::Server;

const IMAGE: &str = "kboot.test/busybox-sec:1";

fn ns(pid: NamespaceMode, ipc: NamespaceMode) -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: pid as i32,
        ipc: ipc as i32,
        ..Default::default()
    }
}

/// A pod's own network and IPC namespaces in its own user namespace, the kubelet's 65536
/// ids from `host_id`, with `pid` as given.
fn in_user_namespace(pid: NamespaceMode, host_id: u32) -> NamespaceOption {
    let mapping = kboot_cri::v1::IdMapping {
        host_id,
        container_id: 0,
        length: 65536,
    };
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: pid as i32,
        ipc: NamespaceMode::Pod as i32,
        userns_options: Some(kboot_cri::v1::UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids: vec![mapping],
            gids: vec![mapping],
        }),
        ..Default::default()
    }
}

fn pod_config(dir: &Dir, name: &str, options: NamespaceOption) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("{name}-uid"),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: dir.path().join("logs").join(name).display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(options),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

struct Pod<'a> {
    rt: &'a tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
    id: String,
    config: PodSandboxConfig,
}

impl<'a> Pod<'a> {
    fn run(rt: &'a tokio::runtime::Runtime, server: &Server, config: PodSandboxConfig) -> Self {
        let mut client = rt.block_on(server.runtime());
        let id = rt
            .block_on(client.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            }))
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", server.log_text()))
            .into_inner()
            .pod_sandbox_id;
        Self { rt, client, id, config }
    }

    /// Creates and starts a container; returns its ID.
    fn start(&mut self, name: &str, command: &[&str], sc: LinuxContainerSecurityContext) -> String {
        self.start_with(name, command, sc, Vec::new())
    }

    /// [`Pod::start`] with volumes.
    fn start_with(
        &mut self,
        name: &str,
        command: &[&str],
        sc: LinuxContainerSecurityContext,
        mounts: Vec<kboot_cri::v1::Mount>,
    ) -> String {
        let config = ContainerConfig {
            mounts,
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig {
                security_context: Some(sc),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self
            .rt
            .block_on(self.client.create_container(CreateContainerRequest {
                pod_sandbox_id: self.id.clone(),
                config: Some(config),
                sandbox_config: Some(self.config.clone()),
            }))
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}"))
            .into_inner()
            .container_id;
        self.rt
            .block_on(self.client.start_container(StartContainerRequest {
                container_id: id.clone(),
            }))
            .unwrap_or_else(|e| panic!("StartContainer {name}: {e}"));
        id
    }

    /// ExecSync: (exit code, stdout, stderr).
    fn exec(&mut self, id: &str, cmd: &[&str]) -> (i32, String, String) {
        let r = self
            .rt
            .block_on(self.client.exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: 20,
            }))
            .unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {e}"))
            .into_inner();
        (
            r.exit_code,
            String::from_utf8_lossy(&r.stdout).into_owned(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
        )
    }

    /// The container's log once it holds `marker`, as plain output lines.
    fn output(&self, name: &str, marker: &str) -> String {
        let path = std::path::Path::new(&self.config.log_directory).join(format!("{name}.log"));
        let text = || std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            wait_until(Duration::from_secs(20), || text().contains(marker)),
            "{name} never printed {marker:?}: {}",
            text()
        );
        // CRI log lines: `<time> <stream> <tag> <text>`.
        text()
            .lines()
            .filter_map(|l| l.splitn(4, ' ').nth(3))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn stop(&mut self) {
        self.rt
            .block_on(self.client.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: self.id.clone(),
            }))
            .expect("StopPodSandbox");
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        let _ = self
            .rt
            .block_on(self.client.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: self.id.clone(),
            }));
    }
}

fn status_fields(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            ["CapEff:", "CapBnd:", "NoNewPrivs:", "Seccomp:"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn setup() -> (Dir, Server, tokio::runtime::Runtime) {
    let dir = Dir::new();
    load_busybox_image(
        &dir,
        IMAGE,
        vec![rootfs_tools::Entry::file("etc/secret", "s3cret\n")],
        |b| b.cmd(["sleep", "300"]),
    );
    let server = Server::start(&dir, &[], &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (dir, server, rt)
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn cri_security_context_holds_for_the_first_process_and_for_exec() {
    require_root();
    let (dir, server, rt) = setup();
    let mut pod = Pod::run(
        &rt,
        &server,
        pod_config(&dir, "sec", ns(NamespaceMode::Container, NamespaceMode::Pod)),
    );
    let probe = "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; id -G; echo probed; exec sleep 300";
    let locked = pod.start(
        "locked",
        &["sh", "-c", probe],
        LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                add_capabilities: vec!["NET_BIND_SERVICE".into()],
                drop_capabilities: vec!["ALL".into()],
                ..Default::default()
            }),
            run_as_user: Some(Int64Value { value: 0 }),
            supplemental_groups: vec![1234, 5678],
            no_new_privs: true,
            seccomp: Some(SecurityProfile {
                profile_type: ProfileType::RuntimeDefault as i32,
                ..Default::default()
            }),
            masked_paths: vec!["/etc/secret".into()],
            readonly_paths: vec!["/tmp".into()],
            ..Default::default()
        },
    );
    let first = pod.output("locked", "probed");
    // Only NET_BIND_SERVICE (bit 10) is left; root keeps it effective.
    let expected = [
        "CapEff: 0000000000000400",
        "CapBnd: 0000000000000400",
        "NoNewPrivs: 1",
        "Seccomp: 2",
    ];
    assert_eq!(status_fields(&first), expected, "init's view:\n{first}");
    assert!(first.lines().any(|l| l == "0 1234 5678"), "groups of init:\n{first}");
    let (code, out, err) = pod.exec(
        &locked,
        &[
            "sh",
            "-c",
            "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; id -G",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(status_fields(&out), expected, "exec's view:\n{out}");
    assert!(out.lines().any(|l| l == "0 1234 5678"), "groups of exec:\n{out}");
    let (_, secret, _) = pod.exec(&locked, &["cat", "/etc/secret"]);
    assert_eq!(secret, "", "a masked file reads empty");
    let (code, _, err) = pod.exec(&locked, &["touch", "/tmp/x"]);
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");

    // Localhost profile: mkdir refused inside, for init and for exec alike.
    let profile = dir.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let custom = pod.start(
        "custom",
        &["sh", "-c", "mkdir /tmp/d || echo refused; echo probed; exec sleep 300"],
        LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile {
                profile_type: ProfileType::Localhost as i32,
                localhost_ref: profile.display().to_string(),
            }),
            ..Default::default()
        },
    );
    assert!(pod.output("custom", "probed").contains("refused"));
    let (code, _, err) = pod.exec(&custom, &["mkdir", "/tmp/e"]);
    assert_ne!(code, 0);
    assert!(err.contains("Operation not permitted"), "{err}");

    // No profile at all is unconfined; the default capability set is containerd's.
    let plain = pod.start("plain", &["sleep", "300"], LinuxContainerSecurityContext::default());
    let (_, out, _) = pod.exec(&plain, &["grep", "-E", "^(CapEff|Seccomp):", "/proc/self/status"]);
    assert_eq!(status_fields(&out), ["CapEff: 00000000a80425fb", "Seccomp: 0"], "{out}");
    let (_, home, _) = pod.exec(&plain, &["sh", "-c", "echo $HOME"]);
    assert_eq!(
        home, "/root\n",
        "HOME from the image's passwd, as the container's init has it"
    );
    pod.stop();
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn cri_pod_shares_pid_and_ipc_namespaces_and_releases_them_on_stop() {
    require_root();
    let (dir, server, rt) = setup();
    let shared = ns(NamespaceMode::Pod, NamespaceMode::Pod);
    let mut pod = Pod::run(&rt, &server, pod_config(&dir, "share", shared.clone()));
    let pod_sc = || LinuxContainerSecurityContext {
        namespace_options: Some(shared.clone()),
        ..Default::default()
    };
    let a = pod.start("a", &["sleep", "301"], pod_sc());
    let b = pod.start("b", &["sleep", "302"], pod_sc());
    let ns_of = |pod: &mut Pod, id: &str| pod.exec(id, &["readlink", "/proc/self/ns/pid", "/proc/self/ns/ipc"]).1;
    let (in_a, in_b) = (ns_of(&mut pod, &a), ns_of(&mut pod, &b));
    assert_eq!(in_a, in_b, "both containers are in the pod's PID and IPC namespaces");
    let host = format!(
        "{}\n{}\n",
        std::fs::read_link("/proc/self/ns/pid").unwrap().display(),
        std::fs::read_link("/proc/self/ns/ipc").unwrap().display()
    );
    assert!(
        in_a.lines().zip(host.lines()).all(|(x, y)| x != y),
        "{in_a} vs host {host}"
    );
    // PID 1 is kboot's holder, not a container's process; each sees the other's sleep.
    let (_, init, _) = pod.exec(&b, &["cat", "/proc/1/cmdline"]);
    assert!(init.contains("pod-holder"), "pid 1 is {init:?}");
    let (_, ps, _) = pod.exec(&b, &["ps", "-o", "args"]);
    assert!(ps.contains("sleep 301") && ps.contains("sleep 302"), "{ps}");
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("root/sandboxes").join(&pod.id).join("state.json")).unwrap(),
    )
    .unwrap();
    let holder = state["pid_holder"]["pid"]
        .as_i64()
        .expect("a PID namespace holder is recorded");
    assert!(pid_alive(holder));
    let pin = dir.path().join("state/netns").join(format!("{}.ipc", pod.id));
    assert!(pin.exists(), "the IPC namespace is pinned at {}", pin.display());
    pod.stop();
    assert!(!pin.exists(), "the IPC namespace is released on stop");
    assert!(
        wait_until(Duration::from_secs(5), || !pid_alive(holder)),
        "the holder ends with the pod"
    );

    // hostIPC: the container is in the host's IPC namespace, and nothing is pinned.
    let host_ipc = ns(NamespaceMode::Container, NamespaceMode::Node);
    let mut pod = Pod::run(&rt, &server, pod_config(&dir, "hostipc", host_ipc.clone()));
    let c = pod.start(
        "c",
        &["sleep", "303"],
        LinuxContainerSecurityContext {
            namespace_options: Some(host_ipc),
            ..Default::default()
        },
    );
    let (_, ipc, _) = pod.exec(&c, &["readlink", "/proc/self/ns/ipc"]);
    assert_eq!(ipc.trim(), host.lines().nth(1).unwrap());
    pod.stop();
}

/// `kboot run`: an unprivileged service runs under the default seccomp profile and Docker's
/// capability set, a privileged one under neither, and `kboot exec` gets the same as the
/// service's own process.
#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn run_unprivileged_service_gets_default_seccomp_privileged_none() {
    use crate::common::run_ok;
    use crate::containers_support::{busybox_rootfs, write_plan, Down};
    require_root();
    let d = Dir::new();
    let _down = Down {
        dir: &d,
        env: Vec::new(),
    };
    let rootfs = busybox_rootfs(d.path());
    let service = |name: &str, privileged: bool| {
        format!(
            "  {name}:\n    image: dir:{}\n    command: [\"/bin/sh\", \"-c\", \"grep -E '^(CapEff|Seccomp):' /proc/self/status; exec sleep 1000\"]\n    privileged: {privileged}\n",
            rootfs.display()
        )
    };
    let plan = write_plan(
        &d,
        &format!("services:\n{}{}", service("plain", false), service("admin", true)),
    );
    run_ok(d.kboot().args(["run", "-d", "-f"]).arg(&plan));
    let exec = |name: &str| {
        let out = run_ok(d.kboot().args([
            "exec",
            name,
            "--",
            "grep",
            "-E",
            "^(CapEff|Seccomp):",
            "/proc/self/status",
        ]));
        status_fields(&String::from_utf8_lossy(&out.stdout))
    };
    let logs = |name: &str| {
        let text = || String::from_utf8_lossy(&d.kboot().args(["logs", name]).output().unwrap().stdout).into_owned();
        assert!(
            wait_until(Duration::from_secs(10), || text().contains("Seccomp")),
            "{name}: {}",
            text()
        );
        status_fields(&text())
    };
    let plain = ["CapEff: 00000000a80425fb", "Seccomp: 2"];
    assert_eq!(logs("plain"), plain);
    assert_eq!(exec("plain"), plain);
    // Every capability of the host's bounding set (root here lacks CAP_SYS_RESOURCE).
    let host = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = host
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_owned();
    let admin = [format!("CapEff: {bounding}"), "Seccomp: 0".to_owned()];
    assert_eq!(logs("admin"), admin);
    assert_eq!(exec("admin"), admin);
}

/// A server in a network namespace of its own with the bridge plugin on `subnet`: pods
/// with their own network namespace (user-namespace pods always have one).
fn pod_network_setup(subnet: &str) -> (Dir, Server, tokio::runtime::Runtime) {
    let dir = Dir::new();
    crate::cri::cni_config(&dir, subnet);
    load_busybox_image(&dir, IMAGE, vec![], |b| b.cmd(["sleep", "300"]));
    let server = Server::start(
        &dir,
        &["unshare", "--net", "--"],
        &[std::path::Path::new("/usr/lib/cni")],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (dir, server, rt)
}

/// `hostUsers: false`: the pod's containers run in its user namespace with the kubelet's
/// mapping; root inside is an unprivileged uid on the host; the image's files look root's
/// inside (id-mapped rootfs); a volume is id-mapped (its root-owned files are root's inside,
/// a file of a host uid outside the mapping stays out of reach); removing the pod unmounts
/// the id-mapped volume and leaves its contents alone.
#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn cri_pod_in_a_user_namespace_is_not_root_on_the_host() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    require_root();
    let (dir, server, rt) = pod_network_setup("10.231.9.0/24");
    let vol = dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("roots"), "root's\n").unwrap();
    let outside = vol.join("outside");
    std::fs::write(&outside, "not for the pod\n").unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o600)).unwrap();
    nix::unistd::chown(&outside, Some(70000.into()), Some(70000.into())).unwrap();

    let options = in_user_namespace(NamespaceMode::Container, 200_000);
    let mut pod = Pod::run(&rt, &server, pod_config(&dir, "userns", options.clone()));
    let sc = || LinuxContainerSecurityContext {
        namespace_options: Some(options.clone()),
        ..Default::default()
    };
    let volume = kboot_cri::v1::Mount {
        container_path: "/vol".into(),
        host_path: vol.display().to_string(),
        ..Default::default()
    };
    let a = pod.start_with("a", &["sleep", "347"], sc(), vec![volume]);
    let b = pod.start("b", &["sleep", "348"], sc());

    // Inside: the kubelet's mapping, the same user namespace in both containers.
    let (code, map, _) = pod.exec(&a, &["cat", "/proc/self/uid_map"]);
    assert_eq!(code, 0);
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", "200000", "65536"],
        "{map}"
    );
    let userns = |pod: &mut Pod, id: &str| pod.exec(id, &["readlink", "/proc/self/ns/user"]).1;
    let (in_a, in_b) = (userns(&mut pod, &a), userns(&mut pod, &b));
    assert_eq!(in_a, in_b, "the pod's containers share its user namespace");
    assert_ne!(
        in_a.trim(),
        std::fs::read_link("/proc/self/ns/user").unwrap().display().to_string()
    );
    // Seen from the host, the container's root is uid 200000.
    let host_uid = (|| {
        for e in std::fs::read_dir("/proc").ok()?.flatten() {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if cmdline == b"sleep\x00347\x00" {
                let status = std::fs::read_to_string(e.path().join("status")).ok()?;
                return status.lines().find(|l| l.starts_with("Uid:")).map(str::to_owned);
            }
        }
        None
    })()
    .expect("container a's sleep is visible from the host");
    assert_eq!(
        host_uid.split_whitespace().collect::<Vec<_>>(),
        ["Uid:", "200000", "200000", "200000", "200000"]
    );
    // The image's files (on disk root's) are root's inside; a file made inside is the
    // mapped root's on the host.
    let (_, owners, _) = pod.exec(&a, &["stat", "-c", "%u:%g", "/", "/bin/busybox", "/etc"]);
    assert_eq!(owners.lines().collect::<Vec<_>>(), ["0:0"; 3], "{owners}");
    let (code, _, err) = pod.exec(&a, &["touch", "/made-inside"]);
    assert_eq!(code, 0, "{err}");
    let made = walk_find(&dir.path().join("root"), "made-inside").expect("the file in the container's upper dir");
    assert_eq!(std::fs::metadata(&made).unwrap().uid(), 200_000, "{}", made.display());
    // The volume is id-mapped: root's file is root's inside, and a file the container's root
    // writes there is root's on disk; a host uid outside the mapping is out of reach.
    let (_, owners, _) = pod.exec(&a, &["stat", "-c", "%u", "/vol/roots", "/vol/outside"]);
    assert_eq!(owners.lines().collect::<Vec<_>>(), ["0", "65534"], "{owners}");
    let (code, _, _) = pod.exec(&a, &["sh", "-c", "echo from-pod > /vol/written"]);
    assert_eq!(code, 0);
    assert_eq!(std::fs::metadata(vol.join("written")).unwrap().uid(), 0);
    for cmd in ["cat /vol/outside", "echo x >> /vol/outside", "chown 0 /vol/outside"] {
        let (code, _, err) = pod.exec(&a, &["sh", "-c", cmd]);
        assert_ne!(code, 0, "{cmd} must fail for the pod's root: {err}");
    }
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "not for the pod\n");

    let pod_id = pod.id.clone();
    pod.stop();
    drop(pod);
    // This test's mounts only: other tests' pods may be running.
    let mine = dir.path().display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(&pod_id) || (l.contains("/idmap/") && l.contains(&mine)))
        .collect();
    assert!(left.is_empty(), "id-mapped mounts are gone with the pod: {left:?}");
    assert_eq!(std::fs::read_to_string(vol.join("roots")).unwrap(), "root's\n");
    assert!(
        vol.join("written").exists(),
        "removing the pod leaves the volume's contents"
    );
}

/// critest's `NamespaceMode_POD` spec failed with a bare EACCES at container start when the
/// server's `--root` and `--state` were under a 0700 directory (`mktemp -d` makes one): the
/// container's init, the pod's root and so an unprivileged host uid, opens the pod's pinned
/// namespaces and bind-mounts its rootfs by path. Such a layout is refused up front, naming
/// the directory and the fix, and reported as no user-namespace support; a directory others
/// may only search (0711, as containerd's root) is enough.
#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn cri_user_namespace_pods_need_a_root_the_pods_root_can_reach() {
    use std::os::unix::fs::PermissionsExt;
    require_root();
    let dir = Dir::new();
    crate::cri::cni_config(&dir, "10.231.10.0/24");
    load_busybox_image(&dir, IMAGE, vec![], |b| b.cmd(["sleep", "300"]));
    let mode = |m: u32| std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(m)).unwrap();
    let options = in_user_namespace(NamespaceMode::Pod, 300_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let supported = |server: &Server| {
        rt.block_on(async {
            let status = server
                .runtime()
                .await
                .status(kboot_cri::v1::StatusRequest { verbose: false })
                .await
                .expect("Status")
                .into_inner();
            status.runtime_handlers[0].features.unwrap().user_namespaces
        })
    };

    mode(0o700);
    let server = Server::start(
        &dir,
        &["unshare", "--net", "--"],
        &[std::path::Path::new("/usr/lib/cni")],
    );
    assert!(!supported(&server), "user namespaces reported under a 0700 directory");
    let refused = rt
        .block_on(async {
            server
                .runtime()
                .await
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(pod_config(&dir, "reach", options.clone())),
                    runtime_handler: String::new(),
                })
                .await
        })
        .map(|r| r.into_inner().pod_sandbox_id)
        .expect_err("a user-namespace pod under a 0700 directory must be refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    let msg = refused.message();
    assert!(
        msg.contains(&format!("{} (mode 0700)", dir.path().display())) && msg.contains("chmod o+x"),
        "the refusal names the directory and the fix: {msg}"
    );
    server.stop();

    // Search-only for others is enough: the container starts and runs as the mapped root.
    mode(0o711);
    let server = Server::start(
        &dir,
        &["unshare", "--net", "--"],
        &[std::path::Path::new("/usr/lib/cni")],
    );
    assert!(supported(&server), "{}", server.log_text());
    let mut pod = Pod::run(&rt, &server, pod_config(&dir, "reach", options.clone()));
    let sc = LinuxContainerSecurityContext {
        namespace_options: Some(options),
        ..Default::default()
    };
    let c = pod.start("c", &["sleep", "349"], sc);
    let (code, map, err) = pod.exec(&c, &["cat", "/proc/self/uid_map"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(map.split_whitespace().collect::<Vec<_>>(), ["0", "300000", "65536"]);
    pod.stop();
}

/// PID 1 of a pod that shares its PID namespace is kboot's holder, which every container of
/// the pod can see. Before the holder confined itself, a container given CAP_SYS_PTRACE
/// read the host's `/etc/shadow` through `/proc/1/root` (the holder ran in the host's mount
/// namespace), and listed the host's `/` from a pod in a user namespace. Now its root is an
/// empty tmpfs, it has no capabilities, and the plain holder is in no host namespace but
/// the user namespace.
#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn cri_pod_pid_1_reaches_nothing_of_the_host() {
    require_root();
    let (dir, server, rt) = pod_network_setup("10.231.11.0/24");
    let host_ns = |kind: &str| {
        std::fs::read_link(format!("/proc/self/ns/{kind}"))
            .unwrap()
            .display()
            .to_string()
    };
    let probe = "ls -a /proc/1/root/; head -c 4 /proc/1/root/etc/shadow; grep -E '^Cap(Prm|Eff|Bnd)' /proc/1/status; readlink /proc/1/ns/mnt /proc/1/ns/uts";
    for (name, options) in [
        ("plain", ns(NamespaceMode::Pod, NamespaceMode::Pod)),
        ("userns", in_user_namespace(NamespaceMode::Pod, 400_000)),
    ] {
        let mut pod = Pod::run(&rt, &server, pod_config(&dir, name, options.clone()));
        let sc = LinuxContainerSecurityContext {
            namespace_options: Some(options),
            capabilities: Some(Capability {
                add_capabilities: vec!["SYS_PTRACE".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = pod.start("c", &["sleep", "350"], sc);
        let (_, init, _) = pod.exec(&c, &["cat", "/proc/1/cmdline"]);
        assert!(init.contains("pod-holder"), "{name}: pid 1 is {init:?}");
        let (_, out, err) = pod.exec(&c, &["sh", "-c", probe]);
        let listed: Vec<&str> = out
            .lines()
            .take_while(|l| !l.starts_with("Cap"))
            .filter(|l| !l.starts_with("mnt:") && !l.starts_with("uts:"))
            .collect();
        assert!(
            listed.iter().all(|l| *l == "." || *l == ".."),
            "{name}: /proc/1/root lists {listed:?}"
        );
        assert!(err.contains("/proc/1/root/etc/shadow"), "{name}: {out}{err}");
        for set in ["CapPrm", "CapEff", "CapBnd"] {
            assert!(out.contains(&format!("{set}:\t0000000000000000")), "{name}: {out}");
        }
        assert!(
            !out.contains(&host_ns("mnt")),
            "{name}: pid 1 is in the host's mount namespace"
        );
        if name == "plain" {
            assert!(
                !out.contains(&host_ns("uts")),
                "{name}: pid 1 is in the host's UTS namespace"
            );
        }
        pod.stop();
    }
}

fn walk_find(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let ft = e.file_type().ok()?;
        if e.file_name() == name {
            return Some(e.path());
        }
        if ft.is_dir() && !ft.is_symlink() {
            if let Some(p) = walk_find(&e.path(), name) {
                return Some(p);
            }
        }
    }
    None
}
