//! Fixtures shared by the runtime's test binaries (each uses what it needs).
#![allow(dead_code)]

pub mod airflow;
pub mod webdriver;

use std::path::{Path, PathBuf};
use triggers::{Clock, Materialization, Variables};
use triggers_runtime::TransactionStats;
use triggers_sidecar::BearerToken;
use triggers_sidecar::consumer::parse_documents;

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
) -> triggers_sidecar::Client {
    use triggers_proto::sidecar::{AcknowledgedRequest, OpenRequest};
    let mut client = triggers_sidecar::connect(address, token)
        .await
        .expect("connects");
    client.open(OpenRequest::default()).await.expect("opens");
    client
        .acknowledged(AcknowledgedRequest {
            wait: true,
            ..Default::default()
        })
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
    /// What it printed before that line (`console on ADDRESS`, say).
    pub printed: Vec<String>,
}

/// Starts `shard-sidecar` for a one-binding shard (`acmeCo/orders`) with its store in
/// `dir/store`, the config `triggers`, waiting delivery (unless `extra` names another)
/// and loopback allowed, plus `extra` flags and `env`; returns once it prints its address (within 60 s). Its
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
            "--allow-loopback",
        ])
        .args(extra)
        .env_remove(triggers_sidecar::TOKEN_ENV)
        .env_remove("SOPS_AGE_KEY_FILE")
        .env_remove("SOPS_AGE_KEY")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.join("sidecar.log")).expect("creates the log"))
        .kill_on_drop(true);
    if !extra.contains(&"--delivery") {
        command.args(["--delivery", "waiting"]);
    }
    let mut child = command.spawn().expect("shard-sidecar starts");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut printed = Vec::new();
    let listening = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(address) = line.strip_prefix("listening on ") {
                return Some(address.to_string());
            }
            printed.push(line);
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
    SidecarProcess {
        child,
        address,
        printed,
    }
}

pub use triggers_runtime::test_support::fixtures::COLLECTIONS;

/// One committed transaction as its webhook must announce it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// `collection_names`.
    pub collections: Vec<String>,
    /// `flow_published_at_min`.
    pub min: String,
    /// `flow_published_at_max`.
    pub max: String,
}

/// The reference consumer's JSON-lines input, written to a file, and what each of its
/// transactions must announce.
pub struct Input {
    /// The file.
    pub path: PathBuf,
    /// Its length in bytes (the checkpoint's final offset).
    pub len: i64,
    /// Per transaction of `docs_per_txn` documents, in commit order.
    pub expected: Vec<Expected>,
}

impl Input {
    /// `documents` documents with strictly increasing clocks over [`COLLECTIONS`] (seconds
    /// apart, sub-second parts that use all seven digits), in `dir/input.jsonl`.
    pub fn write(dir: &Path, documents: usize, docs_per_txn: usize) -> Self {
        let mut text = String::new();
        for i in 0..documents as u64 {
            let collection = COLLECTIONS[(i * 7 % 5 % 3) as usize];
            let clock = Clock::from_unix(1_750_000_000 + i * 3, (i as u32 * 7_919) % 1_000_000_000);
            let uuid = clock.to_uuid([0x0b, 0, 0, 0, 0, (i % 2) as u8 + 1], 1);
            text.push_str(&format!(
                "{{\"_meta\":{{\"uuid\":\"{uuid}\"}},\"collection\":\"{collection}\",\"n\":{i}}}\n"
            ));
        }
        let path = dir.join("input.jsonl");
        std::fs::write(&path, &text).expect("write input");

        // What every committed transaction must announce, computed from the whole input.
        let bindings: Vec<String> = COLLECTIONS.iter().map(ToString::to_string).collect();
        let parsed = parse_documents(&text, &bindings).expect("parses");
        let materialization = Materialization {
            name: "acmeCo/test/materialize".to_string(),
            connector_image: "ghcr.io/estuary/materialize-example:v1".to_string(),
            binding_collections: bindings,
        };
        let expected = parsed
            .chunks(docs_per_txn)
            .map(|txn| {
                let mut stats = TransactionStats::default();
                for doc in txn {
                    stats.add_document(doc.binding, doc.clock, doc.bytes);
                }
                let v = Variables::from_stats(&materialization, &stats.take(), String::new())
                    .expect("valid")
                    .expect("documents");
                let json = serde_json::to_value(&v).expect("serialises");
                let field = |name: &str| json[name].as_str().unwrap_or_default().to_string();
                Expected {
                    min: field("flow_published_at_min"),
                    max: field("flow_published_at_max"),
                    collections: v.collection_names,
                }
            })
            .collect();
        Self {
            path,
            len: text.len() as i64,
            expected,
        }
    }

    /// `--binding` arguments for [`COLLECTIONS`].
    pub fn binding_args() -> Vec<String> {
        COLLECTIONS
            .iter()
            .flat_map(|c| ["--binding".to_string(), c.to_string()])
            .collect()
    }
}
