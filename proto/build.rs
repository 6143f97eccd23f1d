//! Compiles `syncline/v1/*.proto` with protox (no system `protoc`), then generates prost
//! types, tonic clients and servers, and serde impls following protobuf's canonical JSON
//! mapping (pbjson).

use std::path::PathBuf;

use prost::Message;

const PROTO_FILES: &[&str] = &[
    "syncline/v1/common.proto",
    "syncline/v1/device.proto",
    "syncline/v1/ingest.proto",
    "syncline/v1/channel.proto",
    "syncline/v1/rpc.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = protox::compile(PROTO_FILES, ["."])?;
    let descriptor_bytes = descriptors.encode_to_vec();
    std::fs::write(out_dir.join("syncline_descriptor.bin"), &descriptor_bytes)?;

    tonic_prost_build::configure()
        // Deterministic field order: equal records encode to equal bytes.
        .btree_map(".")
        .compile_fds(descriptors)?;

    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .btree_map(["."])
        // Newer clients may send fields this server does not know; ignore them as the
        // binary encoding does.
        .ignore_unknown_fields()
        .build(&[".syncline"])?;
    Ok(())
}
