//! The CRI at the kubelet's default node size (110 pods), as root, without a kubelet: the
//! calls a kubelet makes when a 110-replica Deployment lands on the node, all at once.

use std::time::Duration;

use futures_util::future::join_all;
use kboot_cri::v1 as cri;

use crate::common::{require_root, Dir};
use crate::containers_support::wait_until;
use crate::cri_grpc::{busybox_server, container, host_pod, rt, run_one};

const PODS: usize = 110;

fn shims_of(dir: &Dir) -> usize {
    let state = format!("--state {} ", dir.path().join("state").display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&state) && c.contains(" shim "))
        .count()
}

fn mounts_under(dir: &Dir) -> usize {
    let d = format!(" {}/", dir.path().display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&d))
        .count()
}

/// 110 pods with a container each, created and started concurrently: all run, every list,
/// status and stats call sees them, the event stream carries every change, the server holds
/// a bounded number of descriptors and one process per container (no per-pod process), and
/// removing them all leaves no process, mount or record.
#[test]
#[ignore = "privileged: run as root with --include-ignored (scripts/test.sh)"]
fn cri_110_pods_started_at_once_all_run_and_leave_nothing_behind() {
    require_root();
    let dir = Dir::new();
    let (server, _down) = busybox_server(&dir);
    let rt = rt();
    rt.block_on(async {
        let c = server.runtime().await;
        let mut events = c
            .clone()
            .get_container_events(cri::GetEventsRequest {})
            .await
            .unwrap()
            .into_inner();
        let started = join_all((0..PODS).map(|i| {
            let mut c = c.clone();
            let name = format!("p{i:03}");
            let pod = host_pod(&dir, &name);
            async move { run_one(&mut c, pod, container("sleeper", &["sleep", "3600"], "sleeper/0.log")).await }
        }))
        .await;
        assert_eq!(started.len(), PODS);

        let mut c1 = c.clone();
        let running = c1
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    state: Some(cri::ContainerStateValue {
                        state: cri::ContainerState::ContainerRunning as i32,
                    }),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert_eq!(running.len(), PODS, "every container runs");
        let pods = c1
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items;
        assert_eq!(
            pods.iter()
                .filter(|p| p.state == cri::PodSandboxState::SandboxReady as i32)
                .count(),
            PODS
        );
        let stats = c1
            .list_container_stats(cri::ListContainerStatsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .stats;
        assert_eq!(stats.len(), PODS);
        assert!(
            stats.iter().all(|s| s
                .memory
                .as_ref()
                .and_then(|m| m.usage_bytes.as_ref())
                .is_some_and(|u| u.value > 0)),
            "each running container has its cgroup's memory usage"
        );
        // Two per pod and two per container: CREATED and STARTED.
        for _ in 0..4 * PODS {
            tokio::time::timeout(Duration::from_secs(30), events.message())
                .await
                .expect("every event of the start arrives")
                .unwrap()
                .expect("the stream stays open");
        }

        assert_eq!(shims_of(&dir), PODS, "one process per container, none per pod");
        let fds = std::fs::read_dir(format!("/proc/{}/fd", server.pid())).unwrap().count();
        assert!(
            fds < 4 * PODS + 64,
            "the server holds {fds} descriptors for {PODS} containers (the default soft limit is 1024)"
        );

        let removed = join_all(started.iter().map(|(pod, _)| {
            let mut c = c.clone();
            let pod = pod.clone();
            async move {
                c.stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                })
                .await?;
                c.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod })
                    .await
            }
        }))
        .await;
        assert!(
            removed.iter().all(Result::is_ok),
            "{:?}",
            removed.iter().find(|r| r.is_err())
        );
    });
    assert!(
        wait_until(Duration::from_secs(30), || shims_of(&dir) == 0),
        "shims left: {}",
        shims_of(&dir)
    );
    assert_eq!(mounts_under(&dir), 0, "mounts left under the test's directory");
    let left = std::fs::read_dir(dir.path().join("root/containers")).map_or(0, |d| d.count());
    assert_eq!(left, 0, "container directories left");
}
