//! Generates the v1alpha1 gRPC code from `proto/v1alpha1/service.proto`.
//!
//! protoc comes from the `protoc-bin-vendored` crate, so a machine with only
//! the Rust toolchain can build coffer.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // File contents and request attributes carry secrets and tokens:
        // their Debug impls are written by hand in src/grpc.rs.
        .skip_debug(["v1alpha1.MountRequest", "v1alpha1.File"])
        .compile_with_config(config, &["proto/v1alpha1/service.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/v1alpha1/service.proto");
    Ok(())
}
