//! Benchmark helper for bench/containers.sh (never a timed test): polls a CRI
//! socket the way a kubelet does (Version, Status, list pods, containers,
//! stats and images, image status, image filesystem), from CONNECTIONS clients for SECONDS,
//! so the supervisor's memory can be measured under CRI traffic.
//!
//!     cargo run --example cri_poll -- SOCKET SECONDS CONNECTIONS [IMAGE…]
//!
//! IMAGEs are pulled first through the CRI's PullImage, one after the other as the
//! kubelet does by default.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kboot_cri::v1::image_service_client::ImageServiceClient;
use kboot_cri::v1::runtime_service_client::RuntimeServiceClient;
use kboot_cri::v1::*;
use tonic::transport::{Channel, Endpoint};

async fn channel(socket: PathBuf) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_static("http://kboot.invalid")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await?)
}

/// One kubelet-like client; returns how many requests it made.
async fn poll(socket: PathBuf, until: Instant) -> anyhow::Result<u64> {
    let ch = channel(socket).await?;
    let mut rt = RuntimeServiceClient::new(ch.clone());
    let mut im = ImageServiceClient::new(ch);
    let mut n = 0;
    while Instant::now() < until {
        rt.version(VersionRequest::default()).await?;
        rt.status(StatusRequest::default()).await?;
        rt.list_pod_sandbox(ListPodSandboxRequest::default()).await?;
        rt.list_containers(ListContainersRequest::default()).await?;
        rt.list_container_stats(ListContainerStatsRequest::default()).await?;
        im.list_images(ListImagesRequest::default()).await?;
        // Before each container start the kubelet asks for its image (absent here).
        im.image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: "registry.k8s.io/pause:3.10".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
        im.image_fs_info(ImageFsInfoRequest::default()).await?;
        n += 8;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(n)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, seconds, connections, images @ ..] = &args[..] else {
        anyhow::bail!("usage: cri_poll SOCKET SECONDS CONNECTIONS [IMAGE…]");
    };
    if !images.is_empty() {
        let mut im = ImageServiceClient::new(channel(PathBuf::from(socket)).await?);
        for image in images {
            im.pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?;
        }
        println!("pulled {} images", images.len());
    }
    let until = Instant::now() + Duration::from_secs(seconds.parse()?);
    let tasks: Vec<_> = (0..connections.parse::<usize>()?)
        .map(|_| tokio::spawn(poll(PathBuf::from(socket), until)))
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    println!("{total} CRI requests");
    Ok(())
}
