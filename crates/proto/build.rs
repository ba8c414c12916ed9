//! Compiles `proto/*.proto` (messages and the sidecar's gRPC service) with a vendored
//! `protoc`, so a fresh machine needs no system package.
//!
//! Two passes: messages and the server, whose codec answers a request that does not
//! decode with INVALID_ARGUMENT (`src/codec.rs`); then the client alone, with the stock
//! codec, referring to the first pass's messages.
//!
//! Map fields are `BTreeMap`s, so encoded bytes do not depend on hash order.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let protos = [
        std::path::PathBuf::from("proto/triggers.proto"),
        "proto/sidecar.proto".into(),
    ];
    let includes = ["proto".into(), protoc_bin_vendored::include_path()?];
    let config = || -> Result<prost_build::Config, Box<dyn std::error::Error>> {
        let mut config = prost_build::Config::new();
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
        // Every `map<..>` field is a BTreeMap: its entries encode in key order, so the same
        // checkpoint always writes the same bytes (a HashMap's order changes per process).
        config.btree_map(["."]);
        Ok(config)
    };
    tonic_prost_build::configure()
        .build_client(false)
        .codec_path("crate::codec::ServerCodec")
        .compile_with_config(config()?, &protos, &includes)?;
    let client_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("client");
    std::fs::create_dir_all(&client_dir)?;
    tonic_prost_build::configure()
        .build_server(false)
        .out_dir(&client_dir)
        .extern_path(".triggers.sidecar", "crate::sidecar")
        .extern_path(".triggers", "crate")
        .compile_with_config(config()?, &protos, &includes)?;
    Ok(())
}
