//! Compiles `proto/*.proto` with a vendored `protoc`, so a fresh machine needs no system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    prost_build::Config::new()
        .protoc_executable(protoc_bin_vendored::protoc_bin_path()?)
        .compile_protos(
            &["proto/triggers.proto"],
            &["proto".into(), protoc_bin_vendored::include_path()?],
        )?;
    Ok(())
}
