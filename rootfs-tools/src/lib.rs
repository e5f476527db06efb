//! Deterministic OCI image building from directories, files and Debian packages.
//!
//! ```no_run
//! use rootfs_tools::{Entry, ImageBuilder, Layer};
//! let built = ImageBuilder::new()
//!     .layer(Layer::new().entry(Entry::file("etc/motd", b"hi\n".to_vec())))
//!     .cmd(["/bin/sh"])
//!     .write_layout(std::path::Path::new("/tmp/oci"), "latest")
//!     .unwrap();
//! println!("{}", built.manifest.digest);
//! ```
//! Same inputs, same bytes: entries keep the order given, mtimes are fixed (0)
//! unless set, owners are 0:0 unless set, gzip headers carry no time or name, JSON
//! has a fixed key order. See README.md for the whole API.

pub mod apt;
mod deb;
mod error;
mod image;
mod layer;
mod layout;
mod push;

pub use error::{BuildError, Result};
pub use image::{
    write_index, BuiltImage, BuiltLayer, Compression, Config, ImageBuilder, MediaTypes, DOCKER_CONFIG, DOCKER_LIST,
    DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST,
};
pub use layer::{Entry, EntryKind, HostAdd, Layer};
pub use layout::{Descriptor, OciLayout, Platform, REF_NAME};
pub use push::push;
