//! Compiles `proto/*.proto` with a vendored `protoc`, so a fresh machine needs no system
//! package.
//!
//! The messages are one prost pass, the same with or without the `grpc` feature. With it,
//! two more passes generate the sidecar's gRPC service, referring to those messages: the
//! server (in `server/`), whose codec answers a request that does not decode with
//! INVALID_ARGUMENT (`src/codec.rs`), and the client (in `client/`) with the stock codec.
//!
//! Map fields are `BTreeMap`s, so encoded bytes do not depend on hash order.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let protos = [
        PathBuf::from("proto/triggers.proto"),
        "proto/sidecar.proto".into(),
    ];
    let includes = [PathBuf::from("proto"), protoc_bin_vendored::include_path()?];
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Every `map<..>` field is a BTreeMap: its entries encode in key order, so the same
    // checkpoint always writes the same bytes (a HashMap's order changes per process).
    config.btree_map(["."]);
    // As tonic-prost-build marks generated types, so the messages are what they were
    // when tonic generated them.
    config.type_attribute(".", "#[allow(clippy::all)]");
    config.compile_protos(&protos, &includes)?;
    #[cfg(feature = "grpc")]
    service(&protos, &includes)?;
    Ok(())
}

/// The gRPC server and client of `sidecar.proto`, each in its own directory of `OUT_DIR`,
/// referring to the messages of the first pass (`extern_path`), so none is generated twice.
#[cfg(feature = "grpc")]
fn service(protos: &[PathBuf], includes: &[PathBuf]) -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    for (dir, server) in [("server", true), ("client", false)] {
        let dir = out_dir.join(dir);
        std::fs::create_dir_all(&dir)?;
        let mut config = prost_build::Config::new();
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
        let builder = tonic_prost_build::configure()
            .build_server(server)
            .build_client(!server)
            .out_dir(&dir)
            .extern_path(".triggers.sidecar", "crate::sidecar")
            .extern_path(".triggers", "crate");
        let builder = if server {
            builder.codec_path("crate::codec::ServerCodec")
        } else {
            builder
        };
        builder.compile_with_config(config, protos, includes)?;
    }
    Ok(())
}
