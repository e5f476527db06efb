//! The seam between containers and images: a service's image becomes a
//! writable root filesystem and the image's run defaults, the two inputs of a
//! bundle. Used by the supervisor and the CRI alike.

use std::path::{Path, PathBuf};

use super::ImageDefaults;
use crate::plan::Service;
use crate::state::{ContainerDir, Paths};
use crate::store::{Store, StoreError};
use crate::unpack::{image_layers, RootfsCache};

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
    fn prepare(&self, service: &Service, container_dir: &ContainerDir) -> Result<PreparedImage, ImageError>;
    /// Undoes `prepare` when the container is removed.
    fn release(&self, container_dir: &ContainerDir);
}

/// Any reference comes from the local image store: resolved to its manifest
/// and config, unpacked once into the shared rootfs cache, then given a
/// writable view in the container directory. `dir:/path/to/rootfs` instead runs
/// a directory in place (an extension of the Compose subset for rootfs built by
/// hand, tests and benchmarks; it has no image config and is shared, not copied).
#[derive(Debug, Clone)]
pub struct LocalImages {
    pub paths: Paths,
}

impl ImageSource for LocalImages {
    fn prepare(&self, service: &Service, container_dir: &ContainerDir) -> Result<PreparedImage, ImageError> {
        self.prepare_for(service, container_dir, None)
    }

    fn release(&self, container_dir: &ContainerDir) {
        if let Err(err) = RootfsCache::new(&self.paths).release_container_rootfs(container_dir) {
            tracing::warn!(dir = %container_dir.path().display(), %err, "release the container's rootfs");
        }
    }
}

impl LocalImages {
    /// [`ImageSource::prepare`], with the rootfs seen through a user namespace's mapping
    /// when `userns` is given (see [`super::userns`]).
    pub fn prepare_for(
        &self,
        service: &Service,
        container_dir: &ContainerDir,
        userns: Option<&super::userns::UserNamespace>,
    ) -> Result<PreparedImage, ImageError> {
        if let Some(dir) = service.image.strip_prefix("dir:") {
            if userns.is_some() {
                return Err(ImageError::Prepare {
                    service: service.name.clone(),
                    image: service.image.clone(),
                    step: "map the rootfs into the user namespace",
                    source: super::userns::refuse_in_place(Path::new(dir)).into(),
                });
            }
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
        let fail = |step: &'static str| {
            move |e: Box<dyn std::error::Error + Send + Sync>| ImageError::Prepare {
                service: service.name.clone(),
                image: service.image.clone(),
                step,
                source: e,
            }
        };
        let store = Store::open(&self.paths).map_err(|e| fail("open the image store")(e.into()))?;
        let image = match store.resolve(&service.image) {
            Ok(image) => image,
            Err(StoreError::NotFound { .. }) => {
                return Err(ImageError::NotFound {
                    service: service.name.clone(),
                    image: service.image.clone(),
                })
            }
            Err(e) => return Err(fail("resolve the image")(e.into())),
        };
        let (layers, diff_ids) = image_layers(&store, &image);
        let cache = RootfsCache::new(&self.paths);
        let lower = cache
            .ensure(&layers, &diff_ids)
            .map_err(|e| fail("unpack the image")(e.into()))?;
        let rootfs = match userns {
            None => cache
                .container_rootfs(&lower, container_dir)
                .map_err(|e| fail("make the container's writable rootfs")(e.into()))?,
            Some(ns) => {
                super::userns::idmapped_rootfs(&lower, container_dir, ns, |l| cache.container_rootfs(l, container_dir))
                    .map_err(fail("make the container's id-mapped writable rootfs"))?
            }
        };
        Ok(PreparedImage {
            rootfs,
            defaults: ImageDefaults::from(&image.config),
        })
    }
}
