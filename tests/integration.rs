//! Tier 0 and tier 4 tests that need no root: the binary as users run it.

#[path = "cli_contract.rs"]
mod cli;
mod common;
mod containers_cli;
mod containers_support;
mod cri;
mod cri_client;
mod portable_binary;
mod registry;
mod roles_cli;
mod rootfs_tools_push;
mod service_cli;
mod shim_attach;
mod store;
mod unpack_cache;
mod unpack_hostile;
mod unpack_model;
mod unpack_util;
