//! `runtime.v1.ImageService` on kboot's content store.

use std::sync::Arc;

use kboot_cri::v1 as cri;
use kboot_cri::v1::image_service_server::ImageService;
use tonic::{Request, Response, Status};

use super::{Cri, CriError};

#[derive(Debug)]
pub(crate) struct Images(pub Arc<Cri>);

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(&self, _: Request<cri::ListImagesRequest>) -> Reply<cri::ListImagesResponse> {
        Ok(Response::new(cri::ListImagesResponse::default()))
    }

    async fn image_status(&self, _: Request<cri::ImageStatusRequest>) -> Reply<cri::ImageStatusResponse> {
        // Absent is an empty answer, not an error (the kubelet then pulls).
        Ok(Response::new(cri::ImageStatusResponse::default()))
    }

    async fn pull_image(&self, _: Request<cri::PullImageRequest>) -> Reply<cri::PullImageResponse> {
        Err(CriError::Unsupported("PullImage (the store is not wired in yet)").into())
    }

    async fn remove_image(&self, _: Request<cri::RemoveImageRequest>) -> Reply<cri::RemoveImageResponse> {
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(&self, _: Request<cri::ImageFsInfoRequest>) -> Reply<cri::ImageFsInfoResponse> {
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![self.0.fs_usage()],
            container_filesystems: vec![],
        }))
    }
}
