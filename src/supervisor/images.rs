//! The seam between containers and images: a service's image becomes a
//! writable root filesystem and the image's run defaults.

use std::path::{Path, PathBuf};

use crate::bundle::ImageDefaults;
use crate::plan::Service;
use crate::state::Paths;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("service `{service}`: image `{image}`: rootfs directory {} does not exist", path.display())]
    MissingDir {
        service: String,
        image: String,
        path: PathBuf,
    },
    #[error("service `{service}`: image `{image}` is not in the local store; run `kboot pull {image}` or `kboot load -i FILE` first")]
    NotFound { service: String, image: String },
    #[error("service `{service}`: image `{image}`: {step}")]
    Prepare {
        service: String,
        image: String,
        step: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A service's image, ready to run.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    /// The container's root filesystem (writable, private to the container
    /// except for `dir:` images, which are used in place).
    pub rootfs: PathBuf,
    pub defaults: ImageDefaults,
}

/// Turns an image reference into a root filesystem for one container.
pub trait ImageSource {
    fn prepare(&self, service: &Service, container_dir: &Path) -> Result<PreparedImage, ImageError>;
    /// Undoes `prepare` when the container is removed.
    fn release(&self, container_dir: &Path);
}

/// `dir:/path/to/rootfs` runs a directory in place (an extension of the
/// Compose subset for rootfs built by hand, tests and benchmarks); any other
/// reference comes from the local image store.
#[derive(Debug, Clone)]
pub struct LocalImages {
    pub paths: Paths,
}

impl ImageSource for LocalImages {
    fn prepare(&self, service: &Service, _container_dir: &Path) -> Result<PreparedImage, ImageError> {
        if let Some(dir) = service.image.strip_prefix("dir:") {
            let path = PathBuf::from(dir);
            if !path.is_dir() {
                return Err(ImageError::MissingDir {
                    service: service.name.clone(),
                    image: service.image.clone(),
                    path,
                });
            }
            return Ok(PreparedImage {
                rootfs: path,
                defaults: ImageDefaults::default(),
            });
        }
        Err(ImageError::NotFound {
            service: service.name.clone(),
            image: service.image.clone(),
        })
    }

    fn release(&self, _container_dir: &Path) {}
}
