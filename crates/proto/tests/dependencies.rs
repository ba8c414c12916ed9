//! What each crate compiles: the sidecar's gRPC service (tonic) only behind the `grpc`
//! feature, so `triggers` (pure logic) and the fuzz targets build without it; and the
//! library a reactor links (`triggers-runtime`) without any gRPC, CLI, server or test
//! receiver dependency, which live in `triggers-sidecar`.

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
    let sidecar = normal_dependencies("triggers-sidecar");
    assert!(
        sidecar.iter().any(|name| name == "tonic-prost"),
        "{sidecar:?}"
    );
}

/// Issue 14 (the library separated from the sidecar and tools): a reactor linking
/// `triggers-runtime` compiles none of the sidecar's server, CLI or test dependencies.
#[test]
fn the_library_builds_without_cli_or_server_dependencies() {
    let runtime = normal_dependencies("triggers-runtime");
    // (anyhow, hyper-util and tower come in anyway, through prost-derive and reqwest.)
    let sidecar_only = [
        "axum",
        "clap",
        "prometheus-client",
        "tonic",
        "tonic-prost",
        "tracing-subscriber",
        "triggers-receiver",
        "triggers-sidecar",
    ];
    let found: Vec<_> = runtime
        .iter()
        .filter(|name| sidecar_only.contains(&name.as_str()))
        .collect();
    assert!(found.is_empty(), "triggers-runtime depends on {found:?}");
    let sidecar = normal_dependencies("triggers-sidecar");
    assert!(sidecar.iter().any(|name| name == "clap"), "{sidecar:?}");
}
