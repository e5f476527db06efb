//! Tier 3: root-only integration tests. Each test calls `common::require_root()`,
//! which panics (never skips) without euid 0. CI runs them as root.

mod common;
mod containers_privileged;
mod containers_support;
#[path = "privileged/cri.rs"]
mod cri;
#[path = "cri_client.rs"]
mod cri_client;
#[path = "privileged/cri_grpc.rs"]
mod cri_grpc;
#[path = "privileged/cri_scale.rs"]
mod cri_scale;
#[path = "privileged/cri_security.rs"]
mod cri_security;
#[path = "privileged/cri_streaming.rs"]
mod cri_streaming;
mod hostile_images;
mod roles_privileged;
mod store_full_disk;
mod unpack_overlay;
mod unpack_umoci;
mod unpack_util;
