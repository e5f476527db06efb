//! OCI distribution client: references, auth, mirrors, manifests, platform
//! choice, blob streaming with digest check, resume.

pub mod auth;
pub mod client;
pub mod config;
mod error;
mod pull;

pub use crate::store::PlatformSpec;
pub use client::{NoProgress, Progress, RegistryClient, RetryPolicy};
pub use config::RegistriesConfig;
pub use error::RegistryError;
pub use pull::{PullOptions, Pulled, Puller};
