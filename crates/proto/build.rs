//! Compiles `proto/*.proto` (messages and the sidecar's gRPC service) with a vendored
//! `protoc`, so a fresh machine needs no system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let protos = [
        std::path::PathBuf::from("proto/triggers.proto"),
        "proto/sidecar.proto".into(),
    ];
    let includes = ["proto".into(), protoc_bin_vendored::include_path()?];
    tonic_prost_build::configure().compile_with_config(config, &protos, &includes)?;
    Ok(())
}
