//! The `triggers` binary, run as a real process against configs in a temp dir and a
//! receiver on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use triggers::receiver::{Receiver, Reply};
use triggers::{AgeIdentity, ConfigFormat, Materialization, RetryBackoff, validate};
use triggers_runtime::sidecar::{self, Listener, Sidecar, SidecarConfig};
use triggers_runtime::{DeliveryMode, Durability, ShardConfig};

/// Header value that must never appear in any output.
const SECRET: &str = "Bearer hunter2";

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Output {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `triggers ARGS`; killed if it takes more than 30 s.
async fn triggers(args: &[&str]) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_triggers"))
        .args(args)
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), child)
        .await
        .expect("exits within 30 s")
        .expect("runs");
    Output {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A two-trigger YAML config for `receiver` (`/ok`, `/down`), the first with a secret header.
fn write_config(dir: &Path, receiver: &Receiver) -> PathBuf {
    let path = dir.join("triggers.yaml");
    let text = format!(
        r#"config:
  - url: {ok}
    headers:
      Authorization: {SECRET}
    maxRetries: 3
    payloadTemplate: |
      {{"run": "{{{{flow_run_id}}}}", "collections": {{{{json collection_names}}}}, "id": "{{{{webhook_id}}}}"}}
  - url: {down}
    maxRetries: 3
    payloadTemplate: '{{"n": {{{{transaction_count}}}}}}'
"#,
        ok = receiver.url("/ok"),
        down = receiver.url("/down"),
    );
    std::fs::write(&path, text).expect("writes config");
    path
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../triggers/tests/fixtures/sops")
        .join(name)
}

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

#[tokio::test]
async fn schema_prints_the_config_schema() {
    let out = triggers(&["schema"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let printed: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(printed, triggers::config_schema());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_accepts_a_good_config_and_names_every_error_of_a_bad_one() {
    let receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write_config(dir.path(), &receiver);
    let out = triggers(&["validate", "--config", s(&good)]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("valid, 2 trigger(s)"), "{}", out.stdout);

    let bad = dir.path().join("bad.json");
    let config = serde_json::json!({"config": [
        {"url": "https://example.com/a", "timeoutSecs": 0, "headers": {"Authorization": SECRET},
         "payloadTemplate": "{\n  \"name\": \"{{materialisation_name}}\"\n}"},
    ]});
    std::fs::write(&bad, config.to_string()).expect("writes");
    let out = triggers(&["validate", "--config", s(&bad)]).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let text = out.all();
    for expected in [
        "invalid, 2 error(s)",
        "trigger 0 (https://example.com): `timeoutSecs` is 0",
        "trigger 0 (https://example.com): `payloadTemplate`: unknown variable `materialisation_name` at line 2",
        "the variables are: materialization_name",
    ] {
        assert!(text.contains(expected), "{expected:?} not in {text}");
    }
    assert!(!text.contains("hunter2"), "{text}");

    let out = triggers(&["validate", "--config", "/nonexistent/triggers.yaml"]).await;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("reading trigger config"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypt_then_validate_and_preview_with_the_identity() {
    let receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = write_config(dir.path(), &receiver);
    let keys = fixture("key1.agekey");
    let identity = AgeIdentity::parse_keys_file(&std::fs::read_to_string(&keys).expect("reads"))
        .expect("key file")
        .remove(0);
    let other = AgeIdentity::generate();
    let (recipient, other_recipient) = (
        identity.recipient().to_string(),
        other.recipient().to_string(),
    );

    let out = triggers(&[
        "encrypt",
        "--config",
        s(&plain),
        "--recipient",
        &recipient,
        "--recipient",
        &other_recipient,
    ])
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("ENC[AES256_GCM,"), "{}", out.stdout);
    assert!(!out.stdout.contains("hunter2"), "{}", out.stdout);
    // Non-secret fields stay readable.
    assert!(out.stdout.contains(&receiver.url("/ok")), "{}", out.stdout);
    let encrypted = dir.path().join("triggers.sops.yaml");
    std::fs::write(&encrypted, &out.stdout).expect("writes");

    let out = triggers(&[
        "validate",
        "--config",
        s(&encrypted),
        "--identity",
        s(&keys),
    ])
    .await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("valid, 2 trigger(s)"), "{}", out.stdout);

    // Without a key, or with the wrong one, it cannot be read.
    let out = triggers(&["validate", "--config", s(&encrypted)]).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let out = triggers(&[
        "validate",
        "--config",
        s(&encrypted),
        "--identity",
        s(&fixture("unrelated.agekey")),
    ])
    .await;
    assert_eq!(out.code, Some(1), "{}", out.all());

    let out = triggers(&[
        "preview",
        "--config",
        s(&encrypted),
        "--identity",
        s(&keys),
        "--trigger",
        "0",
    ])
    .await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(!out.all().contains("hunter2"), "{}", out.all());
    let payload: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(
        payload["run"],
        triggers::Variables::placeholder().flow_run_id.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_prints_every_payload_and_never_a_header_secret() {
    let receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &receiver);

    let out = triggers(&["preview", "--config", s(&config)]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(!out.all().contains("hunter2"), "{}", out.all());
    let payloads: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&out.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("a stream of JSON documents");
    assert_eq!(payloads.len(), 2, "{}", out.stdout);
    assert_eq!(
        payloads[0]["collections"],
        serde_json::json!(["acmeCo/example/collection-a", "acmeCo/example/collection-b"])
    );
    assert_eq!(payloads[1], serde_json::json!({"n": 3}));
    assert!(
        out.stderr
            .contains(&format!("trigger 1 (http://{})", receiver.addr())),
        "{}",
        out.stderr
    );

    // Given variables, inline and from a file, override the placeholders.
    let out = triggers(&[
        "preview",
        "--config",
        s(&config),
        "--trigger",
        "1",
        "--variables",
        r#"{"transaction_count": 1}"#,
    ])
    .await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out.stdout).expect("JSON"),
        serde_json::json!({"n": 1})
    );
    let file = dir.path().join("vars.json");
    std::fs::write(&file, r#"{"collection_names": ["acmeCo/orders"]}"#).expect("writes");
    let out = triggers(&[
        "preview",
        "--config",
        s(&config),
        "--trigger",
        "0",
        "--variables",
        &format!("@{}", file.display()),
    ])
    .await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let payload: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(payload["collections"], serde_json::json!(["acmeCo/orders"]));

    // An unknown variable names the variables that exist.
    let out = triggers(&[
        "preview",
        "--config",
        s(&config),
        "--variables",
        r#"{"materialisation_name": "x"}"#,
    ])
    .await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains(
            "unknown variable `materialisation_name`; the variables are: materialization_name"
        ),
        "{}",
        out.stderr
    );
    assert!(receiver.requests().is_empty(), "preview sends nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_fire_reports_200_and_503_once_each() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script("/ok", [Reply::status(200).with_body("thanks")]);
    receiver.script(
        "/down",
        [Reply::status(503).with_body("down for maintenance")],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &receiver);

    let out = triggers(&[
        "test-fire",
        "--config",
        s(&config),
        "--trigger",
        "0",
        "--allow-loopback",
    ])
    .await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("status: 200"), "{}", out.stdout);
    assert!(out.stdout.contains("latency: "), "{}", out.stdout);
    assert!(out.stdout.contains("body: thanks"), "{}", out.stdout);
    assert!(!out.all().contains("hunter2"), "{}", out.all());

    let out = triggers(&[
        "test-fire",
        "--config",
        s(&config),
        "--trigger",
        "1",
        "--allow-loopback",
    ])
    .await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stdout.contains("status: 503"), "{}", out.stdout);
    assert!(
        out.stdout.contains("body: down for maintenance"),
        "{}",
        out.stdout
    );

    // One request each (the 503 is not retried, though the trigger allows 3 retries),
    // both marked as tests.
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|r| r.header("webhook-reason") == Some("test-fire"))
    );
    assert_eq!(requests[0].header("authorization"), Some(SECRET));

    // Without --allow-loopback the network policy refuses 127.0.0.1.
    let out = triggers(&["test-fire", "--config", s(&config), "--trigger", "0"]).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stdout.contains("status: no answer"), "{}", out.stdout);
    assert!(out.stdout.contains("loopback"), "{}", out.stdout);
    assert_eq!(receiver.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_and_test_fire_through_a_sidecar() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script("/down", [Reply::status(503).with_body("down")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &receiver);
    let triggers_config = validate(
        &std::fs::read_to_string(&config).expect("reads"),
        ConfigFormat::Yaml,
    )
    .expect("valid");
    let mut config = SidecarConfig::new(
        dir.path().join("store"),
        ShardConfig {
            materialization: Materialization {
                name: "acmeCo/orders/postgres".to_string(),
                connector_image: "ghcr.io/estuary/materialize-postgres:v1".to_string(),
                binding_collections: vec!["acmeCo/orders".to_string()],
            },
            triggers: Arc::new(triggers_config),
            durability: Durability::Synced,
            backoff: RetryBackoff::default(),
            network: triggers::NetworkPolicy::ALLOW_LOOPBACK,
            delivery: DeliveryMode::Waiting,
            ledger: triggers_runtime::LedgerRetention::default(),
            attempt_observer: None,
        },
    );
    config.shutdown_grace = Duration::from_secs(5);
    let sidecar = Sidecar::new(config);
    let listener = Listener::bind("127.0.0.1:0").await.expect("binds");
    let address = listener.address();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sidecar::run(sidecar, listener, async move {
        let _ = stopped.await;
    }));

    let out = triggers(&["preview", "--sidecar", &address, "--trigger", "1"]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out.stdout).expect("JSON"),
        serde_json::json!({"n": 3})
    );
    let out = triggers(&["preview", "--sidecar", &address, "--trigger", "7"]).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr
            .contains("no trigger 7: the config has 2 trigger(s)"),
        "{}",
        out.stderr
    );

    let out = triggers(&["test-fire", "--sidecar", &address, "--trigger", "0"]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("status: 200"), "{}", out.stdout);
    let out = triggers(&["test-fire", "--sidecar", &address, "--trigger", "1"]).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stdout.contains("status: 503"), "{}", out.stdout);
    assert!(out.stdout.contains("body: down"), "{}", out.stdout);
    assert_eq!(receiver.requests().len(), 2);

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("stops")
        .expect("server task")
        .expect("serves");
}
