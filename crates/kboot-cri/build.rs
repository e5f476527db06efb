//! Generates the CRI client and server code from the vendored protos.
//!
//! The protos are parsed by `protox`, a protobuf compiler written in Rust, and its
//! descriptors go to tonic's code generator: the build needs no `protoc` on the host
//! (issue 15: a fresh machine's `cargo build` failed here). Chosen over committing the
//! generated code: the protos stay the only source, nothing can drift from them, and there
//! is no second file set to regenerate and check. The generated code is what `protoc` 3.21
//! gave, line for line (compared when this was switched), except the per-type
//! `#[allow(clippy::all)]` tonic adds on its protoc path only; lib.rs allows it crate-wide.

fn main() {
    for proto in ["proto/v1.proto", "proto/v1alpha2.proto"] {
        println!("cargo:rerun-if-changed={proto}");
        let fds =
            protox::compile([proto], ["proto/"]).unwrap_or_else(|e| panic!("parse the CRI protos in {proto}: {e}"));
        if let Err(e) = tonic_prost_build::configure()
            // Credentials must never reach a log: `AuthConfig` gets a redacting Debug in lib.rs.
            .skip_debug([".runtime.v1.AuthConfig", ".runtime.v1alpha2.AuthConfig"])
            .compile_fds(fds)
        {
            panic!("generate CRI code from {proto}: {e}");
        }
    }
}
