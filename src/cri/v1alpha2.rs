//! `runtime.v1alpha2` (kubelets up to v1.18) on the same implementation as `runtime.v1`.
//!
//! The two packages share every message they both have with the same field numbers and
//! types; v1 only adds fields, messages and enums (checked against the vendored protos: e.g.
//! `ContainerStatus.image_id`/`user`/`stop_signal`, `Mount.recursive_read_only`,
//! `StatusResponse.features`). So a protobuf round trip converts: v1alpha2 → v1 leaves the
//! added fields at their defaults, v1 → v1alpha2 drops them as unknown fields. The only
//! answer that differs in meaning is `Version.runtime_api_version`.

use kboot_cri::v1;
use kboot_cri::v1::image_service_server::ImageService as _;
use kboot_cri::v1::runtime_service_server::RuntimeService as _;
use kboot_cri::v1alpha2 as alpha;
use prost::Message;
use tonic::{Request, Response, Status};

use super::image::Images;
use super::runtime::Runtime;

/// The v1alpha2 RuntimeService, answering through the v1 one.
#[derive(Debug)]
pub(crate) struct RuntimeAlpha(pub Runtime);

/// The v1alpha2 ImageService, answering through the v1 one.
#[derive(Debug)]
pub(crate) struct ImagesAlpha(pub Images);

/// Re-encodes a message as its twin in the other package.
fn convert<A: Message, B: Message + Default>(from: &A) -> Result<B, Status> {
    B::decode(from.encode_to_vec().as_slice())
        .map_err(|e| Status::internal(format!("convert a CRI message between v1alpha2 and v1: {e}")))
}

/// Converts the request, calls the v1 method, converts the answer back; metadata and
/// extensions pass through.
macro_rules! forward {
    ($trait:ident for $ty:ty { $($method:ident($req:ident) -> $resp:ident;)* } $($extra:tt)*) => {
        #[tonic::async_trait]
        impl $trait for $ty {
            $(
                async fn $method(&self, req: Request<alpha::$req>) -> Result<Response<alpha::$resp>, Status> {
                    let (meta, ext, msg) = req.into_parts();
                    let req = Request::from_parts(meta, ext, convert::<_, v1::$req>(&msg)?);
                    let (meta, msg, ext) = self.0.$method(req).await?.into_parts();
                    Ok(Response::from_parts(meta, convert(&msg)?, ext))
                }
            )*
            $($extra)*
        }
    };
}

use alpha::image_service_server::ImageService;
use alpha::runtime_service_server::RuntimeService;

forward! { RuntimeService for RuntimeAlpha {
    run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse;
    stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse;
    remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse;
    pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse;
    list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse;
    create_container(CreateContainerRequest) -> CreateContainerResponse;
    start_container(StartContainerRequest) -> StartContainerResponse;
    stop_container(StopContainerRequest) -> StopContainerResponse;
    remove_container(RemoveContainerRequest) -> RemoveContainerResponse;
    list_containers(ListContainersRequest) -> ListContainersResponse;
    container_status(ContainerStatusRequest) -> ContainerStatusResponse;
    update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse;
    reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse;
    exec_sync(ExecSyncRequest) -> ExecSyncResponse;
    exec(ExecRequest) -> ExecResponse;
    attach(AttachRequest) -> AttachResponse;
    port_forward(PortForwardRequest) -> PortForwardResponse;
    container_stats(ContainerStatsRequest) -> ContainerStatsResponse;
    list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse;
    pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse;
    list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse;
    update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse;
    status(StatusRequest) -> StatusResponse;
}
    async fn version(&self, req: Request<alpha::VersionRequest>) -> Result<Response<alpha::VersionResponse>, Status> {
        let (meta, ext, msg) = req.into_parts();
        let req = Request::from_parts(meta, ext, convert::<_, v1::VersionRequest>(&msg)?);
        let (meta, msg, ext) = self.0.version(req).await?.into_parts();
        let mut msg: alpha::VersionResponse = convert(&msg)?;
        msg.runtime_api_version = "v1alpha2".into();
        Ok(Response::from_parts(meta, msg, ext))
    }
}

forward! { ImageService for ImagesAlpha {
    list_images(ListImagesRequest) -> ListImagesResponse;
    image_status(ImageStatusRequest) -> ImageStatusResponse;
    pull_image(PullImageRequest) -> PullImageResponse;
    remove_image(RemoveImageRequest) -> RemoveImageResponse;
    image_fs_info(ImageFsInfoRequest) -> ImageFsInfoResponse;
}}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1alpha2_container_config_reaches_v1_whole() {
        let alpha = alpha::ContainerConfig {
            metadata: Some(alpha::ContainerMetadata {
                name: "web".into(),
                attempt: 2,
            }),
            image: Some(alpha::ImageSpec {
                image: "busybox:1".into(),
                annotations: [("a".to_owned(), "b".to_owned())].into(),
            }),
            command: vec!["sh".into()],
            log_path: "web/2.log".into(),
            mounts: vec![alpha::Mount {
                container_path: "/data".into(),
                host_path: "/srv".into(),
                readonly: true,
                propagation: alpha::MountPropagation::PropagationHostToContainer as i32,
                ..Default::default()
            }],
            linux: Some(alpha::LinuxContainerConfig {
                resources: Some(alpha::LinuxContainerResources {
                    memory_limit_in_bytes: 1 << 20,
                    ..Default::default()
                }),
                security_context: Some(alpha::LinuxContainerSecurityContext {
                    privileged: true,
                    run_as_user: Some(alpha::Int64Value { value: 7 }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let v1: v1::ContainerConfig = convert(&alpha).unwrap();
        assert_eq!(v1.metadata.as_ref().unwrap().attempt, 2);
        assert_eq!(v1.image.as_ref().unwrap().annotations["a"], "b");
        assert_eq!(v1.log_path, "web/2.log");
        assert_eq!(
            v1.mounts[0].propagation,
            v1::MountPropagation::PropagationHostToContainer as i32
        );
        let linux = v1.linux.as_ref().unwrap();
        assert_eq!(linux.resources.as_ref().unwrap().memory_limit_in_bytes, 1 << 20);
        let sc = linux.security_context.as_ref().unwrap();
        assert!(sc.privileged);
        assert_eq!(sc.run_as_user.as_ref().unwrap().value, 7);
        // And back: nothing v1alpha2 knows is lost.
        assert_eq!(convert::<_, alpha::ContainerConfig>(&v1).unwrap(), alpha);
    }

    #[test]
    fn v1_only_fields_are_dropped_on_the_way_to_v1alpha2() {
        let v1 = v1::ContainerStatus {
            id: "c1".into(),
            state: v1::ContainerState::ContainerExited as i32,
            exit_code: 137,
            image_id: "sha256:abc".into(),
            stop_signal: v1::Signal::Sigkill as i32,
            log_path: "/var/log/pods/x/0.log".into(),
            ..Default::default()
        };
        let alpha: alpha::ContainerStatus = convert(&v1).unwrap();
        assert_eq!(
            (alpha.id.as_str(), alpha.state, alpha.exit_code, alpha.log_path.as_str()),
            (
                "c1",
                alpha::ContainerState::ContainerExited as i32,
                137,
                "/var/log/pods/x/0.log"
            )
        );
        // Re-encoding the v1alpha2 message carries no trace of the v1-only fields.
        let back: v1::ContainerStatus = convert(&alpha).unwrap();
        assert_eq!((back.image_id.as_str(), back.stop_signal), ("", 0));
    }
}
