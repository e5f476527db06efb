//! Stored images → layers for unpacking, and the chain IDs the cache must keep.

use std::path::Path;

use crate::store::{Image, Store, StoreError};

use super::{chain_id, unpack_verified, Layer, UnpackError};

/// The layer blobs (lowest first) and config diff_ids of a stored image.
pub fn image_layers(store: &Store, image: &Image) -> (Vec<Layer>, Vec<String>) {
    let layers = image
        .manifest
        .layers()
        .iter()
        .map(|d| Layer {
            media_type: d.media_type().clone(),
            path: store.blob_path(d.digest()),
            digest: d.digest().to_string(),
        })
        .collect();
    let diff_ids = image.config.rootfs().diff_ids().clone();
    (layers, diff_ids)
}

/// Flattens a stored image into `target`, checking every layer against its diff_id.
pub fn unpack_image(store: &Store, image: &Image, target: &Path) -> Result<(), UnpackError> {
    let (layers, diff_ids) = image_layers(store, image);
    if layers.len() != diff_ids.len() {
        return Err(UnpackError::LayerCount {
            layers: layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    unpack_verified(&layers, Some(&diff_ids), target)
}

/// Chain IDs of every image in the store: what `RootfsCache::prune` must keep.
pub fn referenced_chain_ids(store: &Store) -> Result<Vec<String>, UnpackError> {
    let store_err = |source: StoreError| UnpackError::Store {
        step: "list images",
        source: Box::new(source),
    };
    let mut out = Vec::new();
    for (reference, entry) in store.entries().map_err(store_err)? {
        let image = store.load_image(reference, &entry.manifest).map_err(store_err)?;
        if let Some(c) = chain_id(image.config.rootfs().diff_ids()) {
            out.push(c);
        }
    }
    Ok(out)
}
