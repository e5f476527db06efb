//! `runtime.v1.ImageService` on kboot's content store: the same images as `kboot pull` and
//! `kboot images`. An image's CRI ID is its config digest; every name in the store that
//! points at that config is one of its repo tags or repo digests.

use std::collections::BTreeMap;
use std::sync::Arc;

use kboot_cri::v1 as cri;
use kboot_cri::v1::image_service_server::ImageService;
use tonic::{Request, Response, Status};

use super::{Cri, CriError};
use crate::registry::auth::Credentials;
use crate::registry::{NoProgress, PullOptions, Puller, RegistriesConfig, RegistryClient};
use crate::store::{normalize_reference, repository_name, Store};

#[derive(Debug)]
pub(crate) struct Images(pub Arc<Cri>);

type Reply<T> = Result<Response<T>, Status>;

/// One image as the CRI sees it, gathered from every store name pointing at its config.
#[derive(Debug, Clone, Default)]
struct CatalogImage {
    id: String,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    /// Normalized store keys, for removal.
    keys: Vec<String>,
    size: u64,
    user: String,
}

impl CatalogImage {
    fn to_cri(&self) -> cri::Image {
        // `uid[:gid]` or `name[:group]`: the CRI reports the user part only.
        let user = self.user.split(':').next().unwrap_or_default();
        let (uid, username) = match user.parse::<i64>() {
            Ok(uid) => (Some(cri::Int64Value { value: uid }), String::new()),
            Err(_) => (None, user.to_owned()),
        };
        cri::Image {
            id: self.id.clone(),
            repo_tags: self.repo_tags.clone(),
            repo_digests: self.repo_digests.clone(),
            size: self.size,
            uid,
            username,
            ..Default::default()
        }
    }
}

/// Every image in the store, grouped by config digest.
fn catalog(store: &Store) -> Result<Vec<CatalogImage>, CriError> {
    let sizes: BTreeMap<String, u64> = store.list()?.into_iter().map(|s| (s.reference, s.size)).collect();
    let mut by_id: BTreeMap<String, CatalogImage> = BTreeMap::new();
    for (key, entry) in store.entries()? {
        let image = match store.load_image(key.clone(), &entry.manifest) {
            Ok(i) => i,
            Err(err) => {
                tracing::warn!(reference = %key, error = %err, "skipping an unreadable image");
                continue;
            }
        };
        let id = image.manifest.config().digest().to_string();
        let c = by_id.entry(id.clone()).or_insert_with(|| CatalogImage {
            id,
            size: sizes.get(&key).copied().unwrap_or_default(),
            user: image
                .config
                .config()
                .as_ref()
                .and_then(|c| c.user().clone())
                .unwrap_or_default(),
            ..Default::default()
        });
        let Ok(parsed) = normalize_reference(&key) else {
            continue;
        };
        if parsed.digest().is_none() {
            if let Some(tag) = parsed.tag() {
                c.repo_tags.push(format!("{}:{tag}", repository_name(&parsed)));
            }
        }
        let digest = entry.index.as_ref().unwrap_or(&entry.manifest);
        let repo_digest = format!("{}@{digest}", repository_name(&parsed));
        if !c.repo_digests.contains(&repo_digest) {
            c.repo_digests.push(repo_digest);
        }
        c.keys.push(key);
    }
    Ok(by_id.into_values().collect())
}

/// Finds an image by ID (`sha256:<hex>`, the hex, or a unique hex prefix), tag or repo digest.
fn lookup(store: &Store, image: &str) -> Result<Option<CatalogImage>, CriError> {
    let all = catalog(store)?;
    if let Ok(found) = store.resolve(image) {
        let id = found.manifest.config().digest().to_string();
        return Ok(all.into_iter().find(|c| c.id == id));
    }
    let hex = image.strip_prefix("sha256:").unwrap_or(image);
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let mut matches = all
        .into_iter()
        .filter(|c| c.id.trim_start_matches("sha256:").starts_with(hex));
    match (matches.next(), matches.next()) {
        (Some(c), None) => Ok(Some(c)),
        (Some(_), Some(_)) => Err(CriError::InvalidArgument(format!(
            "image ID prefix {image:?} is ambiguous"
        ))),
        _ => Ok(None),
    }
}

/// The store reference and image ID a container's `image` names (reference or ID).
pub(crate) fn resolve_for_container(store: &Store, image: &str) -> Result<(String, String), CriError> {
    match lookup(store, image)? {
        Some(found) => Ok((found.keys.first().cloned().unwrap_or_default(), found.id)),
        None => Err(CriError::NotFound {
            kind: "image",
            id: image.to_owned(),
        }),
    }
}

/// Credentials from a PullImage request: username/password, or Docker's base64 `auth`.
fn request_credentials(auth: Option<&cri::AuthConfig>) -> Option<Credentials> {
    let auth = auth?;
    if !auth.username.is_empty() {
        return Some(Credentials {
            username: auth.username.clone(),
            password: auth.password.clone(),
        });
    }
    if !auth.auth.is_empty() {
        return Credentials::from_docker_auth(&auth.auth);
    }
    None
}

fn image_spec(spec: Option<cri::ImageSpec>) -> Result<String, CriError> {
    let image = spec.map(|s| s.image).unwrap_or_default();
    if image.trim().is_empty() {
        return Err(CriError::InvalidArgument("ImageSpec.image is required".into()));
    }
    Ok(image)
}

impl Images {
    fn store(&self) -> Result<Store, CriError> {
        Ok(Store::open(&self.0.config.paths)?)
    }
}

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(&self, req: Request<cri::ListImagesRequest>) -> Reply<cri::ListImagesResponse> {
        let wanted = req
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .unwrap_or_default();
        let store = self.store()?;
        let images = super::blocking(move || {
            Ok(if wanted.is_empty() {
                catalog(&store)?.iter().map(CatalogImage::to_cri).collect()
            } else {
                lookup(&store, &wanted)?.iter().map(CatalogImage::to_cri).collect()
            })
        })
        .await?;
        Ok(Response::new(cri::ListImagesResponse { images }))
    }

    async fn image_status(&self, req: Request<cri::ImageStatusRequest>) -> Reply<cri::ImageStatusResponse> {
        let image = image_spec(req.into_inner().image)?;
        // Absent is an empty answer, not an error: the kubelet then pulls. The store's files
        // are read on a blocking thread: a kubelet asks for every pod it starts.
        let store = self.store()?;
        let found = super::blocking(move || lookup(&store, &image)).await?;
        Ok(Response::new(cri::ImageStatusResponse {
            image: found.as_ref().map(CatalogImage::to_cri),
            info: Default::default(),
        }))
    }

    async fn pull_image(&self, req: Request<cri::PullImageRequest>) -> Reply<cri::PullImageResponse> {
        let req = req.into_inner();
        let image = image_spec(req.image)?;
        normalize_reference(&image).map_err(CriError::from)?;
        let paths = &self.0.config.paths;
        let mut config = RegistriesConfig::load(&paths.registries_config()).map_err(CriError::Registries)?;
        if let Some(creds) = request_credentials(req.auth.as_ref()) {
            config.creds = Some(creds);
        }
        let puller = Puller {
            client: RegistryClient::new(config),
            store: self.store()?,
            options: PullOptions::default(),
        };
        let pulled = puller
            .pull(&image, &NoProgress)
            .await
            .map_err(|source| CriError::Pull {
                image: image.clone(),
                source,
            })?;
        let store = self.store()?;
        let id = store
            .resolve(&pulled.reference)
            .map_err(CriError::from)?
            .manifest
            .config()
            .digest()
            .to_string();
        tracing::info!(image = %image, id = %id, "pulled for the CRI");
        Ok(Response::new(cri::PullImageResponse { image_ref: id }))
    }

    async fn remove_image(&self, req: Request<cri::RemoveImageRequest>) -> Reply<cri::RemoveImageResponse> {
        let image = image_spec(req.into_inner().image)?;
        let store = self.store()?;
        // Every name of the image goes, as containerd does; an absent image is already removed.
        super::blocking(move || {
            if let Some(found) = lookup(&store, &image)? {
                store.remove(&found.keys).map_err(CriError::from)?;
                tracing::info!(image = %image, id = %found.id, names = ?found.keys, "image removed");
            }
            Ok(())
        })
        .await?;
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(&self, _: Request<cri::ImageFsInfoRequest>) -> Reply<cri::ImageFsInfoResponse> {
        let paths = self.0.config.paths.clone();
        let usage = super::blocking(move || Ok(Cri::fs_usage(&paths))).await?;
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![usage],
            container_filesystems: vec![],
        }))
    }
}
