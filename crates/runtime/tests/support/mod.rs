//! Fixtures shared by the runtime's test binaries (each uses what it needs).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use triggers_runtime::sidecar::BearerToken;

/// The bearer token test sidecars on TCP require.
pub const TOKEN: &str = "test-token-5b0c1e2f9a8d7364";

/// [`TOKEN`] as a token.
pub fn token() -> BearerToken {
    BearerToken::new(TOKEN, "the tests").expect("a valid token")
}

/// Writes [`TOKEN`] (with a trailing newline, as `echo` would) to `dir/token`.
pub fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).expect("writes the token");
    path
}

/// Connects to the sidecar at `address`, opens its shard and acknowledges the recovered
/// checkpoint (delivering what a crash left pending): every consumer's first steps.
pub async fn open_and_acknowledge(
    address: &str,
    token: Option<&BearerToken>,
) -> triggers_runtime::sidecar::Client {
    use triggers_proto::sidecar::{AcknowledgedRequest, OpenRequest};
    let mut client = triggers_runtime::sidecar::connect(address, token)
        .await
        .expect("connects");
    client.open(OpenRequest {}).await.expect("opens");
    client
        .acknowledged(AcknowledgedRequest { wait: true })
        .await
        .expect("recovered ack");
    client
}

/// A `shard-sidecar` process, killed when dropped.
pub struct SidecarProcess {
    /// The process; its log goes to `dir/sidecar.log`.
    pub child: tokio::process::Child,
    /// What it printed after `listening on `.
    pub address: String,
}

/// Starts `shard-sidecar` for a one-binding shard (`acmeCo/orders`) with its store in
/// `dir/store`, the config `triggers`, waiting delivery and loopback allowed, plus
/// `extra` flags and `env`; returns once it prints its address (within 60 s). Its
/// further stdout is not read (it prints nothing more).
pub async fn start_sidecar(
    dir: &Path,
    triggers: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> SidecarProcess {
    use tokio::io::AsyncBufReadExt as _;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_shard-sidecar"));
    command
        .arg("--store")
        .arg(dir.join("store"))
        .arg("--triggers")
        .arg(triggers)
        .args([
            "--materialization",
            "acmeCo/orders/postgres",
            "--connector-image",
            "ghcr.io/estuary/materialize-postgres:v1",
            "--binding",
            "acmeCo/orders",
            "--delivery",
            "waiting",
            "--allow-loopback",
        ])
        .args(extra)
        .env_remove(triggers_runtime::sidecar::TOKEN_ENV)
        .env_remove("SOPS_AGE_KEY_FILE")
        .env_remove("SOPS_AGE_KEY")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.join("sidecar.log")).expect("creates the log"))
        .kill_on_drop(true);
    let mut child = command.spawn().expect("shard-sidecar starts");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let listening = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(address) = line.strip_prefix("listening on ") {
                return Some(address.to_string());
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    let Some(address) = listening else {
        let _ = child.start_kill();
        let _ = child.wait().await;
        panic!(
            "shard-sidecar did not start: {}",
            std::fs::read_to_string(dir.join("sidecar.log")).unwrap_or_default()
        );
    };
    SidecarProcess { child, address }
}
