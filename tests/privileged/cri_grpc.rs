//! The CRI through its gRPC clients, as root, on hostNetwork pods (no CNI): container logs
//! the kubelet can read and rotate, resource updates and pod stats.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::Duration;

use kboot_cri::v1 as cri;
use kboot_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use crate::common::{require_root, Dir};
use crate::containers_support::{load_busybox_image, wait_until, Down};
use crate::cri_client::Server;

pub(crate) const BUSYBOX: &str = "kboot.test/busybox:1";

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A hostNetwork pod config logging under `dir/pod-logs/<name>`.
pub(crate) fn host_pod(dir: &Dir, name: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("{name}-uid"),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: dir.path().join("pod-logs").join(name).display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    // What the kubelet sends unless shareProcessNamespace is set.
                    pid: cri::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn container(name: &str, command: &[&str], log_path: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: BUSYBOX.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: log_path.into(),
        ..Default::default()
    }
}

/// A CRI server on `dir` with the busybox image loaded. Keep the pair as it is returned: the
/// server stops first, then `Down` runs `kboot down`, which removes what a failure left running.
pub(crate) fn busybox_server(dir: &Dir) -> (Server, Down<'_>) {
    load_busybox_image(dir, BUSYBOX, vec![], |b| b);
    let down = Down { dir, env: vec![] };
    (Server::start(dir, &[], &[]), down)
}

/// Runs a pod with one started container; returns their IDs.
pub(crate) async fn run_one(
    c: &mut RuntimeServiceClient<Channel>,
    pod_config: cri::PodSandboxConfig,
    config: cri::ContainerConfig,
) -> (String, String) {
    let pod = c
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let id = c
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(config),
            sandbox_config: Some(pod_config),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    c.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    (pod, id)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn cri_log_is_a_regular_file_at_log_path_and_reopen_moves_the_shim_to_a_new_file() {
    require_root();
    let dir = Dir::new();
    load_busybox_image(&dir, BUSYBOX, vec![], |b| b);
    // Dropped after the server: `kboot down` removes the pods a failure left running.
    let _down = Down { dir: &dir, env: vec![] };
    let server = Server::start(&dir, &[], &[]);
    let rt = rt();
    rt.block_on(async {
        let mut c = server.runtime().await;
        let cmd = [
            "sh",
            "-c",
            "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.05; done",
        ];
        let (pod, id) = run_one(
            &mut c,
            host_pod(&dir, "logs"),
            container("talker", &cmd, "talker/0.log"),
        )
        .await;

        let log = dir.path().join("pod-logs/logs/talker/0.log");
        let meta = std::fs::symlink_metadata(&log).unwrap();
        assert!(
            meta.file_type().is_file() && !meta.file_type().is_symlink() && !meta.file_type().is_fifo(),
            "the kubelet needs a regular file it can read from its own container: {:?}",
            meta.file_type()
        );
        assert!(wait_until(Duration::from_secs(10), || lines(&log).len() >= 3));
        let first = lines(&log)[0].clone();
        assert!(first.ends_with(" stdout F line 0"), "{first}");
        let stamp = first.split(' ').next().unwrap();
        assert!(humantime::parse_rfc3339(stamp).is_ok(), "RFC 3339 timestamp: {first}");

        // `kboot logs` reads the same file.
        let out = dir.kboot().args(["logs", &id]).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("line 0\n"));

        // The kubelet's rotation: rename, then ReopenContainerLog; the new file must exist
        // when the call returns and get the next lines, the old one must stop growing.
        let rotated = dir.path().join("pod-logs/logs/talker/0.log.20261128-000000");
        std::fs::rename(&log, &rotated).unwrap();
        c.reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
        assert!(log.is_file(), "a new file at log_path once ReopenContainerLog returns");
        let old_len = lines(&rotated).len();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(lines(&rotated).len(), old_len, "the rotated file no longer grows");
        let new = lines(&log);
        assert!(new.len() >= 3, "the new file gets the output: {new:?}");
        let number = |l: &str| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap();
        assert_eq!(
            number(&new[0]),
            number(lines(&rotated).last().unwrap()) + 1,
            "no line lost or repeated across the switch"
        );

        // A second rotation works as well, and an unknown container is NotFound.
        std::fs::rename(&log, dir.path().join("pod-logs/logs/talker/0.log.2")).unwrap();
        c.reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
        assert!(wait_until(Duration::from_secs(5), || !lines(&log).is_empty()));
        let err = c
            .reopen_container_log(cri::ReopenContainerLogRequest {
                container_id: "nope".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

        // After stop, there is nothing to reopen.
        c.stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
        let err = c
            .reopen_container_log(cri::ReopenContainerLogRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        c.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod })
            .await
            .unwrap();
    });
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn cri_v1alpha2_clients_run_a_host_network_pod_on_the_same_socket() {
    use kboot_cri::v1alpha2 as alpha;
    use kboot_cri::v1alpha2::image_service_client::ImageServiceClient;
    use kboot_cri::v1alpha2::runtime_service_client::RuntimeServiceClient;
    require_root();
    let dir = Dir::new();
    load_busybox_image(&dir, BUSYBOX, vec![], |b| b);
    let _down = Down { dir: &dir, env: vec![] };
    let server = Server::start(&dir, &[], &[]);
    rt().block_on(async {
        let mut c = RuntimeServiceClient::new(crate::cri_client::channel(&server.socket).await);
        let mut images = ImageServiceClient::new(crate::cri_client::channel(&server.socket).await);
        let v = c
            .version(alpha::VersionRequest {
                version: "0.1.0".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (
                v.version.as_str(),
                v.runtime_name.as_str(),
                v.runtime_api_version.as_str()
            ),
            ("0.1.0", "kboot", "v1alpha2")
        );

        // The v1 config, re-encoded: the v1alpha2 messages are its subset.
        use prost::Message;
        let pod_config = alpha::PodSandboxConfig::decode(host_pod(&dir, "old").encode_to_vec().as_slice()).unwrap();
        let pod = c
            .run_pod_sandbox(alpha::RunPodSandboxRequest {
                config: Some(pod_config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        let st = c
            .pod_sandbox_status(alpha::PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        assert_eq!(st.state, alpha::PodSandboxState::SandboxReady as i32);
        assert_eq!(st.metadata.unwrap().name, "old");

        let config = alpha::ContainerConfig::decode(
            container("app", &["sh", "-c", "echo from-v1alpha2; exec sleep 300"], "app/0.log")
                .encode_to_vec()
                .as_slice(),
        )
        .unwrap();
        let id = c
            .create_container(alpha::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(config),
                sandbox_config: Some(pod_config),
            })
            .await
            .unwrap()
            .into_inner()
            .container_id;
        c.start_container(alpha::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
        let listed = c
            .list_containers(alpha::ListContainersRequest {
                filter: Some(alpha::ContainerFilter {
                    pod_sandbox_id: pod.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, id);
        assert_eq!(listed[0].state, alpha::ContainerState::ContainerRunning as i32);
        assert_eq!(listed[0].metadata.as_ref().unwrap().name, "app");
        let log = dir.path().join("pod-logs/old/app/0.log");
        assert!(wait_until(Duration::from_secs(10), || lines(&log)
            .iter()
            .any(|l| l.ends_with(" stdout F from-v1alpha2"))));

        c.stop_container(alpha::StopContainerRequest {
            container_id: id.clone(),
            timeout: 1,
        })
        .await
        .unwrap();
        let st = c
            .container_status(alpha::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        assert_eq!(st.state, alpha::ContainerState::ContainerExited as i32);
        assert_eq!(st.exit_code, 137, "sleep as PID 1 ignores SIGTERM: killed after 1 s");
        assert_eq!(st.log_path, log.display().to_string());
        c.remove_container(alpha::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
        let err = c
            .container_status(alpha::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

        let listed = images
            .list_images(alpha::ListImagesRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .images;
        assert!(
            listed
                .iter()
                .any(|i| i.repo_tags.iter().any(|t| t.contains("kboot.test/busybox:1"))),
            "{listed:?}"
        );
        c.stop_pod_sandbox(alpha::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
        c.remove_pod_sandbox(alpha::RemovePodSandboxRequest { pod_sandbox_id: pod })
            .await
            .unwrap();
        let pods = c
            .list_pod_sandbox(alpha::ListPodSandboxRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .items;
        assert!(pods.is_empty(), "{pods:?}");
    });
}

/// The memory limit's file on a cgroup v1 host.
const MEM_V1: &str = "memory/memory.limit_in_bytes";

/// The container's cgroup file: `v1` (`controller/file`) on a cgroup v1 host, `v2` on a
/// unified one, found through its init's `/proc/PID/cgroup` (the shim record names the init).
fn cgroup_value(dir: &Dir, id: &str, v1: &str, v2: &str) -> String {
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(format!("state/shims/{id}.json"))).unwrap()).unwrap();
    let pid = rec["init_pid"].as_i64().expect("a running container has an init pid");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let unified = kboot::cgroups::Layout::probe().is_unified();
    let (controller, file) = if unified { ("", v2) } else { v1.split_once('/').unwrap() };
    let path = cgroups
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (h, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            let found = if unified {
                h == "0"
            } else {
                ctrls.split(',').any(|c| c == controller)
            };
            found.then(|| path.to_owned())
        })
        .unwrap_or_else(|| panic!("no {v1} / {v2} cgroup in {cgroups}"));
    let dir = if unified {
        String::new()
    } else {
        format!("/{controller}")
    };
    std::fs::read_to_string(format!("/sys/fs/cgroup{dir}{path}/{file}"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn cri_update_container_resources_changes_the_running_cgroup_and_pod_stats_sum_containers() {
    require_root();
    let dir = Dir::new();
    load_busybox_image(&dir, BUSYBOX, vec![], |b| b);
    // A CNI bridge inside a network namespace of the test's own, for the pod's network stats.
    let net_d = dir.path().join("net.d");
    std::fs::create_dir_all(&net_d).unwrap();
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "kboot-stats", "plugins": [
        {"type": "bridge", "bridge": "kbstats0", "isGateway": true, "ipMasq": false,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.231.9.0/24"}]], "dataDir": dir.path().join("ipam")}}]});
    std::fs::write(net_d.join("10-stats.conflist"), conf.to_string()).unwrap();
    let _down = Down { dir: &dir, env: vec![] };
    let server = Server::start(&dir, &["unshare", "--net", "--"], &[Path::new("/usr/lib/cni")]);
    rt().block_on(async {
        let mut c = server.runtime().await;
        let mut pod_config = host_pod(&dir, "stats");
        pod_config.linux = None;
        pod_config.labels = [("app".to_owned(), "stats".to_owned())].into();
        let mut config = container("busy", &["sh", "-c", "sleep 300 & sleep 300 & wait"], "busy/0.log");
        config.linux = Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 128 << 20,
                ..Default::default()
            }),
            ..Default::default()
        });
        let (pod, id) = run_one(&mut c, pod_config, config).await;
        assert_eq!(cgroup_value(&dir, &id, MEM_V1, "memory.max"), "134217728");

        c.update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 512,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(cgroup_value(&dir, &id, MEM_V1, "memory.max"), "67108864");
        if kboot::cgroups::Layout::probe().is_unified() {
            assert_eq!(cgroup_value(&dir, &id, "", "cpu.max"), "50000 100000");
            // 512 shares in cpu.weight, as runc converts them.
            assert_eq!(cgroup_value(&dir, &id, "", "cpu.weight"), "20");
        } else {
            assert_eq!(cgroup_value(&dir, &id, "cpu/cpu.cfs_quota_us", ""), "50000");
            assert_eq!(cgroup_value(&dir, &id, "cpu/cpu.cfs_period_us", ""), "100000");
            assert_eq!(cgroup_value(&dir, &id, "cpu/cpu.shares", ""), "512");
        }
        let st = c
            .container_status(cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        let res = st.resources.unwrap().linux.unwrap();
        assert_eq!((res.memory_limit_in_bytes, res.cpu_quota), (64 << 20, 50_000));

        // On v1 a limit below what the container uses (no swap to reclaim into) is refused,
        // and the old one stays. (On v2 the kernel takes it and OOM-kills instead, as under
        // runc and containerd.)
        if !kboot::cgroups::Layout::probe().is_unified() {
            let err = c
                .update_container_resources(cri::UpdateContainerResourcesRequest {
                    container_id: id.clone(),
                    linux: Some(cri::LinuxContainerResources {
                        memory_limit_in_bytes: 4096,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert!(err.message().contains("memory.limit_in_bytes"), "{err:?}");
            assert_eq!(cgroup_value(&dir, &id, MEM_V1, "memory.max"), "67108864");
        }
        let err = c
            .update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: "nope".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);

        // Stats of the pod: its one container's, its three processes, its eth0.
        let stats = c
            .pod_sandbox_stats(cri::PodSandboxStatsRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
        assert_eq!(stats.attributes.as_ref().unwrap().id, pod);
        let linux = stats.linux.unwrap();
        assert_eq!(linux.containers.len(), 1);
        assert_eq!(linux.containers[0].attributes.as_ref().unwrap().id, id);
        let mem = linux.memory.unwrap().working_set_bytes.unwrap().value;
        assert!(mem > 0, "a running pod uses memory");
        assert!(linux.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
        assert_eq!(
            linux.process.unwrap().process_count.unwrap().value,
            3,
            "sh and two sleeps"
        );
        let net = linux.network.expect("a CNI pod has network stats");
        let eth0 = net.default_interface.unwrap();
        assert_eq!(eth0.name, "eth0");
        assert!(eth0.tx_bytes.is_some() && eth0.rx_bytes.is_some());

        for (app, count) in [("stats", 1), ("other", 0)] {
            let listed = c
                .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
                    filter: Some(cri::PodSandboxStatsFilter {
                        label_selector: [("app".to_owned(), app.to_owned())].into(),
                        ..Default::default()
                    }),
                })
                .await
                .unwrap()
                .into_inner()
                .stats;
            assert_eq!(listed.len(), count, "pods labelled app={app}");
        }
        let err = c
            .pod_sandbox_stats(cri::PodSandboxStatsRequest {
                pod_sandbox_id: "nope".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        c.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
        c.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod })
            .await
            .unwrap();
    });
}

/// The kubelet's evented PLEG: `GetContainerEvents` streams each change of a pod and its
/// container in the order it happened, with the sandbox's status and the containers' statuses
/// as they were right after it (a container exiting on its own included).
#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn cri_container_events_follow_a_container_lifecycle_in_order() {
    use cri::ContainerEventType as E;
    require_root();
    let dir = Dir::new();
    let (server, _down) = busybox_server(&dir);
    let rt = rt();
    rt.block_on(async {
        let mut c = server.runtime().await;
        let mut events = c
            .get_container_events(cri::GetEventsRequest {})
            .await
            .unwrap()
            .into_inner();
        // Exits on its own after a moment: its STOPPED comes from the shim's end.
        let (pod, id) = run_one(
            &mut c,
            host_pod(&dir, "events"),
            container("short", &["sh", "-c", "sleep 1; exit 3"], "short/0.log"),
        )
        .await;
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(next_event(&mut events).await);
        }
        let kinds: Vec<(String, E)> = seen
            .iter()
            .map(|e| (e.container_id.clone(), E::try_from(e.container_event_type).unwrap()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (pod.clone(), E::ContainerCreatedEvent),
                (pod.clone(), E::ContainerStartedEvent),
                (id.clone(), E::ContainerCreatedEvent),
                (id.clone(), E::ContainerStartedEvent),
                (id.clone(), E::ContainerStoppedEvent),
            ]
        );
        for e in &seen {
            let s = e
                .pod_sandbox_status
                .as_ref()
                .expect("every event carries the sandbox status");
            assert_eq!(s.id, pod);
            assert_eq!(s.metadata.as_ref().unwrap().uid, "events-uid");
        }
        assert!(seen.windows(2).all(|w| w[0].created_at <= w[1].created_at));
        let state = |e: &cri::ContainerEventResponse| {
            let st = e
                .containers_statuses
                .iter()
                .find(|s| s.id == id)
                .expect("the container's status");
            (cri::ContainerState::try_from(st.state).unwrap(), st.exit_code)
        };
        assert_eq!(
            seen[1].containers_statuses.len(),
            0,
            "no container yet when the sandbox started"
        );
        assert_eq!(state(&seen[2]).0, cri::ContainerState::ContainerCreated);
        assert_eq!(state(&seen[3]).0, cri::ContainerState::ContainerRunning);
        assert_eq!(state(&seen[4]), (cri::ContainerState::ContainerExited, 3));

        c.remove_container(cri::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
        let e = expect_event(&mut events, &id, E::ContainerDeletedEvent).await;
        assert!(
            e.containers_statuses.is_empty(),
            "the removed container is gone from the statuses"
        );
        c.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
        let e = expect_event(&mut events, &pod, E::ContainerStoppedEvent).await;
        assert_eq!(
            e.pod_sandbox_status.unwrap().state,
            cri::PodSandboxState::SandboxNotready as i32
        );
        c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
        let e = expect_event(&mut events, &pod, E::ContainerDeletedEvent).await;
        assert_eq!(
            e.pod_sandbox_status.unwrap().id,
            pod,
            "the last status names the pod that went away"
        );
    });
}

/// The next event, which must be `kind` for `id`.
async fn expect_event(
    events: &mut tonic::Streaming<cri::ContainerEventResponse>,
    id: &str,
    kind: cri::ContainerEventType,
) -> cri::ContainerEventResponse {
    let e = next_event(events).await;
    assert_eq!((e.container_id.as_str(), e.container_event_type), (id, kind as i32));
    e
}

async fn next_event(events: &mut tonic::Streaming<cri::ContainerEventResponse>) -> cri::ContainerEventResponse {
    tokio::time::timeout(Duration::from_secs(20), events.message())
        .await
        .expect("an event within 20 s")
        .unwrap()
        .expect("the stream stays open")
}
