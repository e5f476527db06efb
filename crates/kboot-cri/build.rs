//! Generates the CRI client and server code. Needs `protoc` (Debian `protobuf-compiler`);
//! this is the only crate in the workspace that does.

fn main() {
    for proto in ["proto/v1.proto", "proto/v1alpha2.proto"] {
        println!("cargo:rerun-if-changed={proto}");
        if let Err(e) = tonic_prost_build::configure()
            // Credentials must never reach a log: `AuthConfig` gets a redacting Debug in lib.rs.
            .skip_debug([".runtime.v1.AuthConfig", ".runtime.v1alpha2.AuthConfig"])
            .compile_protos(&[proto], &["proto/"])
        {
            panic!("generate CRI code from {proto} (is protoc installed? apt-get install protobuf-compiler): {e}");
        }
    }
}
