//! The CRI server as the kubelet and crictl see it, over its Unix socket. No root: only
//! hostNetwork sandboxes (pod networks need namespaces; see tests/privileged/cri.rs).

use std::collections::HashMap;

use kboot_cri::v1 as cri;
use tonic::Code;

use crate::common::Dir;
use crate::cri_client::Server;

fn pod(name: &str, host_network: bool) -> cri::PodSandboxConfig {
    let mode = if host_network {
        cri::NamespaceMode::Node
    } else {
        cri::NamespaceMode::Pod
    };
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("{name}-uid"),
            namespace: "kube-system".into(),
            attempt: 1,
        }),
        labels: [
            ("io.kubernetes.pod.uid".to_string(), format!("{name}-uid")),
            ("tier".to_string(), "control-plane".to_string()),
        ]
        .into(),
        annotations: [
            ("kubernetes.io/config.hash".to_string(), "0f3a".to_string()),
            (
                "odd key/with.chars".to_string(),
                "value with\nnewline, \"quotes\" and ünïcode".to_string(),
            ),
        ]
        .into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: mode as i32,
                    pid: cri::NamespaceMode::Node as i32,
                    ipc: cri::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn run(config: cri::PodSandboxConfig) -> cri::RunPodSandboxRequest {
    cri::RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    }
}

fn filter(id: &str, state: Option<cri::PodSandboxState>, labels: &[(&str, &str)]) -> cri::ListPodSandboxRequest {
    cri::ListPodSandboxRequest {
        filter: Some(cri::PodSandboxFilter {
            id: id.into(),
            state: state.map(|s| cri::PodSandboxStateValue { state: s as i32 }),
            label_selector: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        }),
    }
}

#[tokio::test]
async fn cri_version_status_and_runtime_config_match_what_the_kubelet_requires() {
    let dir = Dir::new();
    let server = Server::start(&dir, &[], &[]);
    let mut rt = server.runtime().await;
    let v = rt.version(cri::VersionRequest::default()).await.unwrap().into_inner();
    assert_eq!(v.version, "0.1.0", "the kubelet refuses any other version");
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(v.runtime_name, "kboot");
    let rc = rt
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    // No choice recorded: the driver detected on this host (systemd only where it is PID 1
    // on cgroup v2).
    let detected = match kboot::cgroups::Driver::detect(kboot::cgroups::HostCgroups::probe()) {
        kboot::cgroups::Driver::Systemd => cri::CgroupDriver::Systemd,
        kboot::cgroups::Driver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
    };
    assert_eq!(rc.linux.unwrap().cgroup_driver, detected as i32);
    // The choice `kboot run` recorded (`--cgroup-driver`) is what the kubelet is told.
    let paths = kboot::state::Paths::under(dir.path());
    std::fs::write(paths.cgroup_driver_file(), "systemd").unwrap();
    let rc = rt
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rc.linux.unwrap().cgroup_driver, cri::CgroupDriver::Systemd as i32);
    std::fs::remove_file(paths.cgroup_driver_file()).unwrap();
    // The kubelet's connection check on the image endpoint.
    let fs = server
        .images()
        .await
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fs.image_filesystems.len(), 1);
}

#[tokio::test]
async fn cri_network_ready_follows_cni_config_and_pod_cidr() {
    let dir = Dir::new();
    let bin = dir.path().join("cni-bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("bridge"), "").unwrap();
    let server = Server::start(&dir, &[], &[&bin]);
    let mut rt = server.runtime().await;
    let network_ready = |s: cri::StatusResponse| {
        let c = s.status.unwrap().conditions;
        assert!(c.iter().any(|c| c.r#type == "RuntimeReady" && c.status));
        c.into_iter()
            .find(|c| c.r#type == "NetworkReady")
            .expect("a NetworkReady condition")
    };
    let nr = network_ready(rt.status(cri::StatusRequest::default()).await.unwrap().into_inner());
    assert!(!nr.status);
    assert_eq!(nr.reason, "NetworkPluginNotReady");
    assert!(
        nr.message.contains("net.d"),
        "the message names the directory: {}",
        nr.message
    );

    std::fs::create_dir_all(dir.path().join("net.d")).unwrap();
    std::fs::write(
        dir.path().join("net.d/10-pods.conf"),
        r#"{"cniVersion":"1.0.0","name":"pods","type":"bridge","ipam":{"type":"host-local","subnet":"{{.PodCIDR}}"}}"#,
    )
    .unwrap();
    let nr = network_ready(rt.status(cri::StatusRequest::default()).await.unwrap().into_inner());
    assert!(!nr.status && nr.message.contains("pod CIDR"), "{}", nr.message);
    rt.update_runtime_config(cri::UpdateRuntimeConfigRequest {
        runtime_config: Some(cri::RuntimeConfig {
            network_config: Some(cri::NetworkConfig {
                pod_cidr: "10.244.1.0/24".into(),
            }),
        }),
    })
    .await
    .unwrap();
    let nr = network_ready(rt.status(cri::StatusRequest::default()).await.unwrap().into_inner());
    assert!(nr.status, "{}", nr.message);
}

#[tokio::test]
async fn cri_host_network_sandboxes_echo_labels_and_honour_filters() {
    let dir = Dir::new();
    let server = Server::start(&dir, &[], &[]);
    let mut rt = server.runtime().await;
    let etcd = rt
        .run_pod_sandbox(run(pod("etcd", true)))
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let api = rt
        .run_pod_sandbox(run(pod("apiserver", true)))
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    assert_eq!(etcd.len(), 64);
    assert_ne!(etcd, api);

    let st = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: etcd.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(st.labels, pod("etcd", true).labels);
    assert_eq!(st.annotations, pod("etcd", true).annotations);
    assert_eq!(st.metadata, pod("etcd", true).metadata);
    let ns = st.linux.unwrap().namespaces.unwrap().options.unwrap();
    assert_eq!(ns.network, cri::NamespaceMode::Node as i32);
    assert_eq!(ns.pid, cri::NamespaceMode::Node as i32);

    let ids = |r: cri::ListPodSandboxResponse| {
        let mut v: Vec<String> = r.items.into_iter().map(|s| s.id).collect();
        v.sort();
        v
    };
    let mut both = vec![etcd.clone(), api.clone()];
    both.sort();
    assert_eq!(
        ids(rt.list_pod_sandbox(filter("", None, &[])).await.unwrap().into_inner()),
        both
    );
    assert_eq!(
        ids(rt
            .list_pod_sandbox(filter(&etcd, None, &[]))
            .await
            .unwrap()
            .into_inner()),
        vec![etcd.clone()]
    );
    let by_uid = filter("", None, &[("io.kubernetes.pod.uid", "apiserver-uid")]);
    assert_eq!(
        ids(rt.list_pod_sandbox(by_uid).await.unwrap().into_inner()),
        vec![api.clone()]
    );
    let list = rt.list_pod_sandbox(filter(&api, None, &[])).await.unwrap().into_inner();
    assert_eq!(list.items[0].annotations, pod("apiserver", true).annotations);

    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: etcd.clone(),
    })
    .await
    .unwrap();
    let not_ready = filter("", Some(cri::PodSandboxState::SandboxNotready), &[]);
    assert_eq!(
        ids(rt.list_pod_sandbox(not_ready).await.unwrap().into_inner()),
        vec![etcd.clone()]
    );
    let ready = filter("", Some(cri::PodSandboxState::SandboxReady), &[]);
    assert_eq!(
        ids(rt.list_pod_sandbox(ready).await.unwrap().into_inner()),
        vec![api.clone()]
    );

    for _ in 0..2 {
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: etcd.clone(),
        })
        .await
        .unwrap();
    }
    assert_eq!(
        ids(rt.list_pod_sandbox(filter("", None, &[])).await.unwrap().into_inner()),
        vec![api]
    );
}

#[tokio::test]
async fn cri_sandboxes_survive_a_server_restart() {
    let dir = Dir::new();
    let server = Server::start(&dir, &[], &[]);
    let id = server
        .runtime()
        .await
        .run_pod_sandbox(run(pod("etcd", true)))
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    server.stop();
    let server = Server::start(&dir, &[], &[]);
    let mut rt = server.runtime().await;
    let list = rt.list_pod_sandbox(filter("", None, &[])).await.unwrap().into_inner();
    assert_eq!(list.items.len(), 1, "nothing lost, nothing doubled");
    assert_eq!(list.items[0].id, id);
    assert_eq!(list.items[0].state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(list.items[0].labels, pod("etcd", true).labels);
}

#[tokio::test]
async fn cri_bad_requests_get_the_right_codes_and_change_nothing() {
    let dir = Dir::new();
    let server = Server::start(&dir, &[], &[]);
    let mut rt = server.runtime().await;
    let code = |r: Result<tonic::Response<cri::RunPodSandboxResponse>, tonic::Status>| r.unwrap_err().code();

    let empty = cri::RunPodSandboxRequest::default();
    assert_eq!(code(rt.run_pod_sandbox(empty).await), Code::InvalidArgument);
    let no_meta = cri::PodSandboxConfig {
        metadata: None,
        ..pod("x", true)
    };
    assert_eq!(code(rt.run_pod_sandbox(run(no_meta)).await), Code::InvalidArgument);
    let handler = cri::RunPodSandboxRequest {
        runtime_handler: "kata".into(),
        ..run(pod("x", true))
    };
    let err = rt.run_pod_sandbox(handler).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("kata"), "{}", err.message());
    // hostUsers: false with the host's network (the kubelet's validation forbids it) is
    // refused before anything is made: a pod's user namespace cannot use host namespaces.
    let mut userns = pod("x", true);
    let mapping = cri::IdMapping {
        host_id: 100_000,
        container_id: 0,
        length: 65_536,
    };
    userns
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
        .unwrap()
        .userns_options = Some(cri::UserNamespace {
        mode: cri::NamespaceMode::Pod as i32,
        uids: vec![mapping],
        gids: vec![mapping],
    });
    let err = rt.run_pod_sandbox(run(userns.clone())).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("hostUsers"), "{}", err.message());
    assert!(err.message().contains("network"), "{}", err.message());
    // A mode kboot does not give (TARGET, CONTAINER) is named.
    let options = userns
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
        .unwrap();
    options.network = cri::NamespaceMode::Pod as i32;
    options.userns_options = Some(cri::UserNamespace {
        mode: cri::NamespaceMode::Target as i32,
        ..Default::default()
    });
    let err = rt.run_pod_sandbox(run(userns)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("mode TARGET"), "{}", err.message());
    // A pod network with no CNI configuration: refused with the reason.
    let err = rt.run_pod_sandbox(run(pod("x", false))).await.unwrap_err();
    assert!(err.message().contains("net.d"), "{}", err.message());

    let unknown = "0".repeat(64);
    let st = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: unknown.clone(),
            verbose: false,
        })
        .await;
    assert_eq!(st.unwrap_err().code(), Code::NotFound);
    // Stop and remove are idempotent: what is gone is stopped and removed.
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: unknown.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: unknown.clone(),
    })
    .await
    .unwrap();
    let start = rt
        .start_container(cri::StartContainerRequest {
            container_id: unknown.clone(),
        })
        .await;
    assert_eq!(start.unwrap_err().code(), Code::NotFound);
    let create = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: unknown.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "c".into(),
                    attempt: 0,
                }),
                image: Some(cri::ImageSpec {
                    image: "busybox".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: None,
        })
        .await;
    assert_eq!(
        create.unwrap_err().code(),
        Code::NotFound,
        "a container in a sandbox that does not exist"
    );
    let st = rt.pod_sandbox_status(cri::PodSandboxStatusRequest::default()).await;
    assert_eq!(st.unwrap_err().code(), Code::InvalidArgument);
    // Attach: no stdio asked for, stderr beside a TTY, an unknown container.
    let attach = |stdin, stderr, tty| cri::AttachRequest {
        container_id: unknown.clone(),
        stdin,
        tty,
        stdout: false,
        stderr,
    };
    for (req, want) in [
        (attach(false, false, false), Code::InvalidArgument),
        (attach(true, true, true), Code::InvalidArgument),
        (attach(true, false, false), Code::NotFound),
    ] {
        assert_eq!(rt.attach(req).await.unwrap_err().code(), want);
    }
    let cs = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: unknown,
            verbose: false,
        })
        .await;
    assert_eq!(cs.unwrap_err().code(), Code::NotFound);
    assert!(rt
        .list_pod_sandbox(filter("", None, &[]))
        .await
        .unwrap()
        .into_inner()
        .items
        .is_empty());
    assert!(std::fs::read_dir(dir.path().join("root/sandboxes")).map_or(true, |mut d| d.next().is_none()));
}

#[tokio::test]
async fn cri_concurrent_runs_of_the_same_pod_make_exactly_one_sandbox() {
    let dir = Dir::new();
    let server = Server::start(&dir, &[], &[]);
    let calls = (0..8).map(|_| {
        let socket = server.socket.clone();
        tokio::spawn(async move {
            let mut rt = kboot_cri::v1::runtime_service_client::RuntimeServiceClient::new(
                crate::cri_client::channel(&socket).await,
            );
            rt.run_pod_sandbox(run(pod("etcd", true))).await
        })
    });
    let mut ok = 0;
    for call in calls.collect::<Vec<_>>() {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.code(), Code::AlreadyExists, "{e}"),
        }
    }
    assert_eq!(ok, 1);
    let list = server
        .runtime()
        .await
        .list_pod_sandbox(filter("", None, &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.items.len(), 1);
}

mod images {
    use kboot_cri::v1 as cri;
    use tonic::Code;

    use crate::common::oci_image::{sha256, write_layout, Entry, TestImage};
    use crate::common::registry::{Auth, Registry};
    use crate::common::Dir;
    use crate::cri_client::Server;

    const BUSYBOX: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";

    fn spec(image: &str) -> Option<cri::ImageSpec> {
        Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        })
    }

    /// registry.k8s.io served by a local docker-registry through kboot's mirror rules, as
    /// the critest setup does: images keep their original names.
    fn mirror(dir: &Dir, reg: &Registry) {
        let cfg = dir.path().join("config");
        std::fs::create_dir_all(&cfg).unwrap();
        std::fs::write(
            cfg.join("registries.toml"),
            format!(
                "[[registry]]\nhost = \"registry.k8s.io\"\nmirrors = [\"{r}\"]\nfallback = false\n\n\
                 [[registry]]\nhost = \"{r}\"\ninsecure = true\n",
                r = reg.host()
            ),
        )
        .unwrap();
    }

    async fn status(
        c: &mut kboot_cri::v1::image_service_client::ImageServiceClient<tonic::transport::Channel>,
        image: &str,
    ) -> Option<cri::Image> {
        c.image_status(cri::ImageStatusRequest {
            image: spec(image),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
    }

    #[tokio::test]
    async fn cri_images_pull_through_mirror_then_status_list_and_remove_by_every_name() {
        let reg = Registry::start(Auth::None);
        let dir = Dir::new();
        let img = TestImage::small(61);
        let layout = dir.path().join("layout");
        write_layout(&layout, &[("img", Entry::Image(&img))]);
        reg.push(&layout, "img", "e2e-test-images/busybox:1.29-2");
        reg.push(&layout, "img", "e2e-test-images/busybox:other");
        mirror(&dir, &reg);
        let server = Server::start(&dir, &[], &[]);
        let mut c = server.images().await;

        assert!(status(&mut c, BUSYBOX).await.is_none(), "absent is empty, not an error");
        let pulled = c
            .pull_image(cri::PullImageRequest {
                image: spec(BUSYBOX),
                ..Default::default()
            })
            .await
            .unwrap();
        let id = pulled.into_inner().image_ref;
        assert_eq!(id, sha256(&img.config), "the image ID is the config digest");
        let repo_digest = format!("registry.k8s.io/e2e-test-images/busybox@{}", img.manifest_digest());
        for name in [BUSYBOX, id.as_str(), &id[7..19], repo_digest.as_str()] {
            let found = status(&mut c, name).await.unwrap_or_else(|| panic!("lookup by {name}"));
            assert_eq!(found.id, id, "lookup by {name}");
            assert_eq!(found.repo_tags, vec![BUSYBOX.to_string()]);
            assert_eq!(found.repo_digests, vec![repo_digest.clone()]);
        }

        let other = "registry.k8s.io/e2e-test-images/busybox:other";
        c.pull_image(cri::PullImageRequest {
            image: spec(other),
            ..Default::default()
        })
        .await
        .unwrap();
        let list = c
            .list_images(cri::ListImagesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .images;
        assert_eq!(list.len(), 1, "one image under two tags: {list:?}");
        let mut tags = list[0].repo_tags.clone();
        tags.sort();
        assert_eq!(tags, vec![BUSYBOX.to_string(), other.to_string()]);
        assert!(list[0].size > 0);

        for _ in 0..2 {
            c.remove_image(cri::RemoveImageRequest { image: spec(&id) })
                .await
                .unwrap();
        }
        assert!(status(&mut c, BUSYBOX).await.is_none());
        assert!(status(&mut c, other).await.is_none());
        assert!(c
            .list_images(cri::ListImagesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .images
            .is_empty());
    }

    #[tokio::test]
    async fn cri_images_bad_requests_get_the_right_codes() {
        let reg = Registry::start(Auth::None);
        let dir = Dir::new();
        mirror(&dir, &reg);
        let server = Server::start(&dir, &[], &[]);
        let mut c = server.images().await;
        let missing = c
            .pull_image(cri::PullImageRequest {
                image: spec("registry.k8s.io/nope:1"),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound, "{missing}");
        assert!(missing.message().contains("nope"), "{}", missing.message());
        let empty = c.pull_image(cri::PullImageRequest::default()).await.unwrap_err();
        assert_eq!(empty.code(), Code::InvalidArgument);
        let bad = c
            .pull_image(cri::PullImageRequest {
                image: spec("UPPER/Case::x"),
                ..Default::default()
            })
            .await;
        assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);
        let st = c
            .image_status(cri::ImageStatusRequest {
                image: None,
                verbose: false,
            })
            .await;
        assert_eq!(st.unwrap_err().code(), Code::InvalidArgument);
        assert!(c
            .list_images(cri::ListImagesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .images
            .is_empty());
    }
}
