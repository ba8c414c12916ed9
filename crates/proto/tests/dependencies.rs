//! What a crate linking the messages compiles: the sidecar's gRPC service (tonic) only
//! behind the `grpc` feature, so `triggers` (pure logic) and the fuzz targets build
//! without it.

use std::process::Command;

/// The normal (non-dev, non-build) dependencies of `package` under its default features,
/// one crate name per line, from `cargo tree` on the checked-in lock file.
fn normal_dependencies(package: &str) -> Vec<String> {
    let output = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--locked",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(["--format", "{p}", "-p", package])
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Issue 14 (the gRPC service behind a feature): without `grpc`, neither the proto crate
/// nor `triggers` depends on tonic; the sidecar's crate enables it.
#[test]
fn grpc_service_behind_a_feature() {
    for package in ["triggers-proto", "triggers"] {
        let tonic: Vec<_> = normal_dependencies(package)
            .into_iter()
            .filter(|name| name.starts_with("tonic"))
            .collect();
        assert!(tonic.is_empty(), "{package} depends on {tonic:?}");
    }
    let runtime = normal_dependencies("triggers-runtime");
    assert!(
        runtime.iter().any(|name| name == "tonic-prost"),
        "{runtime:?}"
    );
}
