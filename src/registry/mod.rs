//! OCI distribution client: references, auth, mirrors, manifests, platform
//! choice, blob streaming with digest check, resume.

pub mod platform;

pub use platform::PlatformSpec;
