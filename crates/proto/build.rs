//! Compiles `proto/cccgate/v1/*.proto` with protox (pure Rust, no system `protoc`) and
//! generates the prost types and tonic client and server stubs. The encoded descriptor set is
//! written next to them for server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = root.join("cccgate/v1/cccgate.proto");
    // tonic-prost-build prints no rerun-if-changed for descriptor sets: say it ourselves.
    println!("cargo:rerun-if-changed={}", root.display());
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let encoded = protox::prost::Message::encode_to_vec(&fds);
    std::fs::write(out.join("cccgate_descriptor.bin"), encoded)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
