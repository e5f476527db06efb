//! Link settings for the `kboot` binary only (tests and dependencies are untouched).

fn main() {
    // Pack the binary's ~41 000 relative relocations into a DT_RELR table (glibc ≥ 2.36,
    // GNU ld ≥ 2.38): 1 MB less of `.rela.dyn` read at every start of kboot, which every
    // container's shim pays (about 1.2 MB less shim RSS, bench/README.md `## Containers`).
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
