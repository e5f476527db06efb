//! The CRI at the kubelet's default node size (110 pods), as root, without a kubelet: the
//! calls a kubelet makes when a 110-replica Deployment lands on the node, all at once.

use std::time::Duration;

use std::time::Instant;

use futures_util::future::join_all;
use kboot_cri::v1 as cri;
use kboot_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

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

/// Runs `writes` while PodSandboxStatus of `pod`, ListPodSandbox and ListContainers are
/// called one after the other; returns what `writes` returned, how long it took, and the
/// longest of those reads. A read that waits behind the writes (a server lock held across
/// them, an executor thread blocked by their file work) takes nearly as long as they do.
async fn reads_meanwhile<T>(
    c: &RuntimeServiceClient<Channel>,
    pod: &str,
    writes: impl std::future::Future<Output = T>,
) -> (T, Duration, Duration, usize) {
    let done = std::sync::atomic::AtomicBool::new(false);
    let reader = async {
        let (mut c, mut longest, mut reads) = (c.clone(), Duration::ZERO, 0);
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            let t = Instant::now();
            c.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod.to_owned(),
                verbose: false,
            })
            .await
            .unwrap();
            sandboxes(&c).await;
            containers(&c).await;
            longest = longest.max(t.elapsed());
            reads += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (longest, reads)
    };
    let t = Instant::now();
    let writer = async {
        let out = writes.await;
        let took = t.elapsed();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (out, took)
    };
    let ((out, took), (longest, reads)) = tokio::join!(writer, reader);
    (out, took, longest, reads)
}

/// The reads a kubelet makes every second answered while 110 pods changed: none waited for
/// half of the changes (with the server lock held across each stop, the first read waited
/// for all of them; with the changes' file work on the server's executor threads, or all 110
/// at once, reads waited seconds behind them).
fn assert_reads_did_not_wait(what: &str, took: Duration, longest: Duration, reads: usize) {
    assert!(reads >= 2, "{what}: only {reads} reads were made meanwhile ({took:?})");
    assert!(
        longest * 2 < took,
        "{what} took {took:?}; a status and two lists made meanwhile waited up to {longest:?}"
    );
}

/// `change` on every pod but `watched` at once, with reads of `watched` meanwhile (see
/// [`assert_reads_did_not_wait`]), then on `watched`; every call succeeds.
async fn change_all<F, Fut>(what: &str, c: &RuntimeServiceClient<Channel>, watched: &str, pods: &[String], change: F)
where
    F: Fn(RuntimeServiceClient<Channel>, String) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let others = pods.iter().filter(|p| *p != watched);
    let (done, took, longest, reads) =
        reads_meanwhile(c, watched, join_all(others.map(|pod| change(c.clone(), pod.clone())))).await;
    assert!(
        done.iter().all(Result::is_ok),
        "{what}: {:?}",
        done.iter().find(|r| r.is_err())
    );
    assert_reads_did_not_wait(&format!("{what} {} pods", done.len()), took, longest, reads);
    change(c.clone(), watched.to_owned()).await.unwrap();
}

async fn sandboxes(c: &RuntimeServiceClient<Channel>) -> Vec<cri::PodSandbox> {
    let req = cri::ListPodSandboxRequest::default();
    c.clone().list_pod_sandbox(req).await.unwrap().into_inner().items
}

async fn containers(c: &RuntimeServiceClient<Channel>) -> Vec<cri::Container> {
    let req = cri::ListContainersRequest::default();
    c.clone().list_containers(req).await.unwrap().into_inner().containers
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
/// a bounded number of descriptors and one process per container (no per-pod process),
/// stopping them all leaves no process and nothing mounted (before any removal: the kubelet
/// removes stopped pods only in its garbage collection, up to a minute later), removing
/// them leaves no record, and the kubelet's reads are answered throughout.
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
        let sleeper = || container("sleeper", &["sleep", "3600"], "sleeper/0.log");
        // One pod first, for the reads to ask about while the others come and go.
        let (watched, _) = run_one(&mut c.clone(), host_pod(&dir, "p000"), sleeper()).await;
        let (mut started, took, longest, reads) = reads_meanwhile(
            &c,
            &watched,
            join_all((1..PODS).map(|i| {
                let mut c = c.clone();
                let pod = host_pod(&dir, &format!("p{i:03}"));
                async move { run_one(&mut c, pod, sleeper()).await }
            })),
        )
        .await;
        assert_reads_did_not_wait("starting 109 pods", took, longest, reads);
        started.push((watched.clone(), String::new()));
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
        assert_eq!(
            sandboxes(&c1)
                .await
                .iter()
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

        let pods: Vec<String> = started.iter().map(|(pod, _)| pod.clone()).collect();
        change_all("stopping", &c, &watched, &pods, |mut c, pod| async move {
            c.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod })
                .await
                .map(drop)
        })
        .await;
        assert!(
            wait_until(Duration::from_secs(30), || shims_of(&dir) == 0),
            "shims left after StopPodSandbox: {}",
            shims_of(&dir)
        );
        assert_eq!(
            mounts_under(&dir),
            0,
            "mounts left under the test's directory by stopped pods (rootfs views, namespaces)"
        );
        assert!(sandboxes(&c1)
            .await
            .iter()
            .all(|p| p.state == cri::PodSandboxState::SandboxNotready as i32));
        let exited = containers(&c1).await;
        assert_eq!(exited.len(), PODS);
        assert!(
            exited
                .iter()
                .all(|c| c.state == cri::ContainerState::ContainerExited as i32),
            "every container of a stopped pod is reported exited at once"
        );

        change_all("removing", &c, &watched, &pods, |mut c, pod| async move {
            c.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod })
                .await
                .map(drop)
        })
        .await;
        assert!(sandboxes(&c1).await.is_empty());
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
