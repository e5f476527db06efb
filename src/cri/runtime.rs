//! `runtime.v1.RuntimeService`: thin gRPC glue over [`Cri`]; the logic lives there.

use std::sync::Arc;
use std::time::Duration;

use kboot_cri::v1 as cri;
use kboot_cri::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use super::streaming::{Pending, Streams};
use super::{Cri, CriError};

/// The kubelet refuses any other value (`kuberuntime_manager.go`).
const KUBELET_API_VERSION: &str = "0.1.0";

#[derive(Debug)]
pub(crate) struct Runtime {
    pub cri: Arc<Cri>,
    pub streams: Arc<Streams>,
}

type Reply<T> = Result<Response<T>, Status>;

impl Runtime {
    /// What `Exec` and `Attach` check before handing out a URL: some stdio asked for, no
    /// stderr beside a TTY (it goes to stdout there), a running container.
    async fn check_stream(&self, id: &str, [stdin, stdout, stderr]: [bool; 3], tty: bool) -> Result<(), CriError> {
        if !(stdin || stdout || stderr) {
            return Err(CriError::InvalidArgument(
                "one of stdin, stdout and stderr must be set".into(),
            ));
        }
        if tty && stderr {
            return Err(CriError::InvalidArgument("tty and stderr cannot both be set".into()));
        }
        let inner = self.cri.inner.lock().await;
        let c = Cri::resolve_container(&inner, id)?;
        if !matches!(c.phase(&self.cri.config.paths), super::record::Phase::Running(_)) {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        Ok(())
    }
}

/// Runs a change to the end even when the kubelet gives up on the call (its deadline drops
/// the request's future): a sandbox or container half made, or a name left reserved in
/// `Inner::making`, would otherwise outlive the request.
async fn to_the_end<T, Fut>(cri: &Arc<Cri>, change: impl FnOnce(Arc<Cri>) -> Fut) -> Result<T, CriError>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = Result<T, CriError>> + Send + 'static,
{
    tokio::spawn(change(Arc::clone(cri)))
        .await
        .map_err(|e| CriError::Unavailable(format!("the request's task failed: {e}")))?
}

fn unsupported<T>(what: &'static str) -> Reply<T> {
    Err(CriError::Unsupported(what).into())
}

#[tonic::async_trait]
impl RuntimeService for Runtime {
    async fn version(&self, _: Request<cri::VersionRequest>) -> Reply<cri::VersionResponse> {
        Ok(Response::new(cri::VersionResponse {
            version: KUBELET_API_VERSION.into(),
            runtime_name: "kboot".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn run_pod_sandbox(&self, req: Request<cri::RunPodSandboxRequest>) -> Reply<cri::RunPodSandboxResponse> {
        let req = req.into_inner();
        let config = req
            .config
            .ok_or_else(|| CriError::InvalidArgument("RunPodSandboxRequest.config is required".into()))?;
        let handler = req.runtime_handler;
        let pod_sandbox_id = to_the_end(&self.cri, |cri| async move { cri.run_sandbox(config, handler).await }).await?;
        Ok(Response::new(cri::RunPodSandboxResponse { pod_sandbox_id }))
    }

    async fn stop_pod_sandbox(&self, req: Request<cri::StopPodSandboxRequest>) -> Reply<cri::StopPodSandboxResponse> {
        self.cri.stop_sandbox(&req.into_inner().pod_sandbox_id).await?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> Reply<cri::RemovePodSandboxResponse> {
        self.cri.remove_sandbox(&req.into_inner().pod_sandbox_id).await?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> Reply<cri::PodSandboxStatusResponse> {
        let id = req.into_inner().pod_sandbox_id;
        let inner = self.cri.inner.lock().await;
        let status = Cri::resolve_sandbox(&inner, &id)?.status();
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(status),
            ..Default::default()
        }))
    }

    async fn list_pod_sandbox(&self, req: Request<cri::ListPodSandboxRequest>) -> Reply<cri::ListPodSandboxResponse> {
        let filter = req.into_inner().filter.unwrap_or_default();
        let inner = self.cri.inner.lock().await;
        let items = inner
            .sandboxes
            .values()
            .filter(|s| s.matches(&filter))
            .map(|s| s.summary())
            .collect();
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn create_container(&self, req: Request<cri::CreateContainerRequest>) -> Reply<cri::CreateContainerResponse> {
        let req = req.into_inner();
        let config = req
            .config
            .ok_or_else(|| CriError::InvalidArgument("CreateContainerRequest.config is required".into()))?;
        let pod = req.pod_sandbox_id;
        let container_id = to_the_end(&self.cri, |cri| async move { cri.create_container(&pod, config).await }).await?;
        Ok(Response::new(cri::CreateContainerResponse { container_id }))
    }

    async fn start_container(&self, req: Request<cri::StartContainerRequest>) -> Reply<cri::StartContainerResponse> {
        let id = req.into_inner().container_id;
        to_the_end(&self.cri, |cri| async move { cri.start_container(&id).await }).await?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(&self, req: Request<cri::StopContainerRequest>) -> Reply<cri::StopContainerResponse> {
        let req = req.into_inner();
        let timeout = Duration::from_secs(u64::try_from(req.timeout).unwrap_or(0));
        self.cri.stop_container(&req.container_id, timeout).await?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(&self, req: Request<cri::RemoveContainerRequest>) -> Reply<cri::RemoveContainerResponse> {
        // Removing what does not exist succeeds: the kubelet retries removals.
        self.cri.remove_container(&req.into_inner().container_id).await?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(&self, req: Request<cri::ListContainersRequest>) -> Reply<cri::ListContainersResponse> {
        let filter = req.into_inner().filter.unwrap_or_default();
        let paths = &self.cri.config.paths;
        let inner = self.cri.inner.lock().await;
        let containers = inner
            .containers
            .values()
            .filter_map(|c| {
                let phase = inner.phase(paths, c);
                c.matches(&phase, &filter).then(|| c.summary(&phase))
            })
            .collect();
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    async fn container_status(&self, req: Request<cri::ContainerStatusRequest>) -> Reply<cri::ContainerStatusResponse> {
        let id = req.into_inner().container_id;
        let inner = self.cri.inner.lock().await;
        let c = Cri::resolve_container(&inner, &id)?;
        let status = Cri::full_status(&inner, &self.cri.config.paths, c);
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(status),
            ..Default::default()
        }))
    }

    async fn update_container_resources(
        &self,
        req: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Reply<cri::UpdateContainerResourcesResponse> {
        let req = req.into_inner();
        let Some(update) = req.linux else {
            // Windows resources, or nothing: nothing this runtime applies.
            Cri::resolve_container(&*self.cri.inner.lock().await, &req.container_id)?;
            return Ok(Response::new(cri::UpdateContainerResourcesResponse {}));
        };
        let paths = &self.cri.config.paths;
        let mut inner = self.cri.inner.lock().await;
        let mut c = Cri::resolve_container(&inner, &req.container_id)?.clone();
        super::resources::update(paths, &c, &update)?;
        // Remembered, so ContainerStatus reports the limits in force (and after a restart).
        let linux = c.config.linux.get_or_insert_with(Default::default);
        let current = linux.resources.clone().unwrap_or_default();
        linux.resources = Some(super::resources::merged(&current, &update));
        c.save(paths)?;
        inner.containers.insert(c.id.clone(), c);
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<cri::ReopenContainerLogRequest>,
    ) -> Reply<cri::ReopenContainerLogResponse> {
        let id = req.into_inner().container_id;
        let c = Cri::resolve_container(&*self.cri.inner.lock().await, &id)?.clone();
        super::log::reopen_log(&self.cri.config.paths, &c).await?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(&self, req: Request<cri::ExecSyncRequest>) -> Reply<cri::ExecSyncResponse> {
        let req = req.into_inner();
        let c = Cri::resolve_container(&*self.cri.inner.lock().await, &req.container_id)?.clone();
        let timeout = Duration::from_secs(u64::try_from(req.timeout).unwrap_or(0));
        let (stdout, stderr, exit_code) =
            super::container::exec_sync(&self.cri.config.paths, &c, &req.cmd, timeout).await?;
        Ok(Response::new(cri::ExecSyncResponse {
            stdout,
            stderr,
            exit_code,
        }))
    }

    async fn exec(&self, req: Request<cri::ExecRequest>) -> Reply<cri::ExecResponse> {
        let req = req.into_inner();
        if req.cmd.is_empty() {
            return Err(CriError::InvalidArgument("ExecRequest.cmd is required".into()).into());
        }
        self.check_stream(&req.container_id, [req.stdin, req.stdout, req.stderr], req.tty)
            .await?;
        let url = self.streams.url(Pending::Exec(req))?;
        Ok(Response::new(cri::ExecResponse { url }))
    }

    async fn attach(&self, req: Request<cri::AttachRequest>) -> Reply<cri::AttachResponse> {
        let req = req.into_inner();
        self.check_stream(&req.container_id, [req.stdin, req.stdout, req.stderr], req.tty)
            .await?;
        let url = self.streams.url(Pending::Attach(req))?;
        Ok(Response::new(cri::AttachResponse { url }))
    }

    async fn port_forward(&self, req: Request<cri::PortForwardRequest>) -> Reply<cri::PortForwardResponse> {
        let req = req.into_inner();
        Cri::resolve_sandbox(&*self.cri.inner.lock().await, &req.pod_sandbox_id)?;
        let url = self.streams.url(Pending::PortForward(req))?;
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    async fn container_stats(&self, req: Request<cri::ContainerStatsRequest>) -> Reply<cri::ContainerStatsResponse> {
        let id = req.into_inner().container_id;
        let c = Cri::resolve_container(&*self.cri.inner.lock().await, &id)?.clone();
        let paths = self.cri.config.paths.clone();
        let stats = super::blocking(move || Ok(c.stats(&paths))).await?;
        Ok(Response::new(cri::ContainerStatsResponse { stats: Some(stats) }))
    }

    async fn list_container_stats(
        &self,
        req: Request<cri::ListContainerStatsRequest>,
    ) -> Reply<cri::ListContainerStatsResponse> {
        let f = req.into_inner().filter.unwrap_or_default();
        let filter = cri::ContainerFilter {
            id: f.id,
            pod_sandbox_id: f.pod_sandbox_id,
            label_selector: f.label_selector,
            state: None,
        };
        let paths = self.cri.config.paths.clone();
        // Picked under the lock, their cgroup files read outside it.
        let picked: Vec<_> = {
            let inner = self.cri.inner.lock().await;
            inner
                .containers
                .values()
                .filter(|c| c.matches(&inner.phase(&paths, c), &filter))
                .cloned()
                .collect()
        };
        let stats = super::blocking(move || Ok(picked.iter().map(|c| c.stats(&paths)).collect())).await?;
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<cri::PodSandboxStatsRequest>,
    ) -> Reply<cri::PodSandboxStatsResponse> {
        let id = req.into_inner().pod_sandbox_id;
        let picked = {
            let inner = self.cri.inner.lock().await;
            vec![Cri::pod_members(&inner, Cri::resolve_sandbox(&inner, &id)?)]
        };
        let paths = self.cri.config.paths.clone();
        let stats = super::blocking(move || Ok(super::resources::pods_stats(&paths, &picked)))
            .await?
            .pop();
        Ok(Response::new(cri::PodSandboxStatsResponse { stats }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Reply<cri::ListPodSandboxStatsResponse> {
        let f = req.into_inner().filter.unwrap_or_default();
        let filter = cri::PodSandboxFilter {
            id: f.id,
            label_selector: f.label_selector,
            state: None,
        };
        let picked: Vec<_> = {
            let inner = self.cri.inner.lock().await;
            inner
                .sandboxes
                .values()
                .filter(|s| s.matches(&filter))
                .map(|s| Cri::pod_members(&inner, s))
                .collect()
        };
        let paths = self.cri.config.paths.clone();
        let stats = super::blocking(move || Ok(super::resources::pods_stats(&paths, &picked))).await?;
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
    }

    async fn update_runtime_config(
        &self,
        req: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Reply<cri::UpdateRuntimeConfigResponse> {
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        if !cidr.is_empty() {
            self.cri.set_pod_cidr(cidr);
        }
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn status(&self, _: Request<cri::StatusRequest>) -> Reply<cri::StatusResponse> {
        let (network_ready, why) = self.cri.network_ready().await;
        let condition = |r#type: &str, status: bool, reason: &str, message: String| cri::RuntimeCondition {
            r#type: r#type.into(),
            status,
            reason: reason.into(),
            message,
        };
        let conditions = vec![
            condition("RuntimeReady", true, "", String::new()),
            if network_ready {
                condition("NetworkReady", true, "", String::new())
            } else {
                condition("NetworkReady", false, "NetworkPluginNotReady", why)
            },
        ];
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus { conditions }),
            // Groups are computed from the image's /etc/group unless the policy is Strict.
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: true,
            }),
            // The default (and only) handler mounts `recursive_read_only` volumes with `rro`,
            // and gives pods a user namespace where this host can (probed once).
            runtime_handlers: vec![cri::RuntimeHandler {
                name: String::new(),
                features: Some(cri::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: true,
                    user_namespaces: super::userns::support(&self.cri.config.paths).await.is_ok(),
                }),
            }],
            ..Default::default()
        }))
    }

    async fn checkpoint_container(
        &self,
        _: Request<cri::CheckpointContainerRequest>,
    ) -> Reply<cri::CheckpointContainerResponse> {
        unsupported("CheckpointContainer")
    }

    type GetContainerEventsStream = super::events::EventStream;

    async fn get_container_events(&self, _: Request<cri::GetEventsRequest>) -> Reply<Self::GetContainerEventsStream> {
        Ok(Response::new(self.cri.subscribe_events()))
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Reply<cri::ListMetricDescriptorsResponse> {
        Ok(Response::new(cri::ListMetricDescriptorsResponse::default()))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Reply<cri::ListPodSandboxMetricsResponse> {
        Ok(Response::new(cri::ListPodSandboxMetricsResponse::default()))
    }

    /// Kubelets from v1.31 take their cgroup driver from this answer (KubeletCgroupDriverFromCRI)
    /// and name pod cgroups accordingly: slices with systemd, directories with cgroupfs.
    async fn runtime_config(&self, _: Request<cri::RuntimeConfigRequest>) -> Reply<cri::RuntimeConfigResponse> {
        let driver = match crate::cgroups::Driver::load(&self.cri.config.paths.cgroup_driver_file()) {
            crate::cgroups::Driver::Systemd => cri::CgroupDriver::Systemd,
            crate::cgroups::Driver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
        };
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }))
    }

    async fn update_pod_sandbox_resources(
        &self,
        _: Request<cri::UpdatePodSandboxResourcesRequest>,
    ) -> Reply<cri::UpdatePodSandboxResourcesResponse> {
        unsupported("UpdatePodSandboxResources")
    }
}
