//! Compiles `syncline/v1/*.proto` with protox (no system `protoc`), then generates prost
//! types, tonic clients and servers, and serde impls following protobuf's canonical JSON
//! mapping (pbjson).
//!
//! Two choices differ from the generators' defaults:
//! - Servers decode requests with `crate::grpc_codec::ServerCodec`, which answers an
//!   undecodable request (bad bytes, invalid UTF-8) with INVALID_ARGUMENT where tonic's codec
//!   says INTERNAL; clients keep tonic's codec, since an undecodable response is the server's
//!   fault.
//! - `syncline.v1.Value` gets hand-written serde impls (`src/value.rs`): pbjson writes a
//!   non-finite double as `null`, not as the canonical `"NaN"`, `"Infinity"`, `"-Infinity"`.

use std::path::PathBuf;

use prost::Message;

const PROTO_FILES: &[&str] = &[
    "syncline/v1/common.proto",
    "syncline/v1/device.proto",
    "syncline/v1/ingest.proto",
    "syncline/v1/channel.proto",
    "syncline/v1/rpc.proto",
];

/// The codec of generated servers (see the module docs).
const SERVER_CODEC: &str = "crate::grpc_codec::ServerCodec";

/// Messages whose JSON mapping is written by hand rather than by pbjson.
const HAND_WRITTEN_JSON: &[&str] = &[".syncline.v1.Value"];

/// Generates each service's client with one tonic generator and its server with another, so
/// that the two can use different codecs.
struct ClientsAndServers {
    clients: Box<dyn prost_build::ServiceGenerator>,
    servers: Box<dyn prost_build::ServiceGenerator>,
}

impl prost_build::ServiceGenerator for ClientsAndServers {
    fn generate(&mut self, service: prost_build::Service, buf: &mut String) {
        self.clients.generate(service.clone(), buf);
        self.servers.generate(service, buf);
    }

    fn finalize(&mut self, buf: &mut String) {
        self.clients.finalize(buf);
        self.servers.finalize(buf);
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        self.clients.finalize_package(package, buf);
        self.servers.finalize_package(package, buf);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = protox::compile(PROTO_FILES, ["."])?;
    let descriptor_bytes = descriptors.encode_to_vec();
    std::fs::write(out_dir.join("syncline_descriptor.bin"), &descriptor_bytes)?;

    let services = ClientsAndServers {
        clients: tonic_prost_build::configure().build_server(false).service_generator(),
        servers: tonic_prost_build::configure().build_client(false).codec_path(SERVER_CODEC).service_generator(),
    };
    prost_build::Config::new()
        // Deterministic field order: equal records encode to equal bytes.
        .btree_map(["."])
        // Rarely set, and kept out of line so that BulkReady does not grow every ServerFrame.
        .boxed(".syncline.v1.BulkReady.error")
        .service_generator(Box::new(services))
        .compile_fds(descriptors)?;

    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .btree_map(["."])
        .exclude(HAND_WRITTEN_JSON.iter().copied())
        // Newer clients may send fields this server does not know; ignore them as the
        // binary encoding does.
        .ignore_unknown_fields()
        .build(&[".syncline"])?;
    Ok(())
}
