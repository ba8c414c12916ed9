//! The `triggers` binary, run as a real process against configs in a temp dir and a
//! receiver on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use triggers::{AgeIdentity, ConfigFormat, Materialization, validate};
use triggers_receiver::{Receiver, Reply};
use triggers_runtime::{DeliveryMode, ShardConfig};
use triggers_sidecar::{self as sidecar, Listener, Sidecar, SidecarConfig};

use crate::support;

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
        // Keys and tokens come only from what a test passes.
        .env_remove("SOPS_AGE_KEY_FILE")
        .env_remove("SOPS_AGE_KEY")
        .env_remove(sidecar::TOKEN_ENV)
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
    // The URLs are encrypted (they may be credentials); templates stay readable.
    assert!(!out.stdout.contains(&receiver.url("/ok")), "{}", out.stdout);
    assert!(out.stdout.contains("flow_run_id"), "{}", out.stdout);
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

    // Without a key it is validated as a control plane does, without the URLs; with the
    // wrong key it cannot be read.
    let out = triggers(&["validate", "--config", s(&encrypted)]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("valid without keys"), "{}", out.stdout);
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
        ShardConfig::new(
            Materialization {
                name: "acmeCo/orders/postgres".to_string(),
                connector_image: "ghcr.io/estuary/materialize-postgres:v1".to_string(),
                binding_collections: vec!["acmeCo/orders".to_string()],
            },
            Arc::new(triggers_config),
        )
        .with_network(triggers::NetworkPolicy::ALLOW_LOOPBACK)
        .with_delivery(DeliveryMode::Waiting),
    );
    config.shutdown_grace = Duration::from_secs(5);
    let sidecar = Sidecar::new(config);
    let listener = Listener::bind("127.0.0.1:0", Some(support::token()))
        .await
        .expect("binds");
    let token_file = support::token_file(dir.path());
    let token_file = token_file.to_str().expect("UTF-8 path");
    let address = listener.address();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sidecar::run(sidecar, listener, async move {
        let _ = stopped.await;
    }));

    let out = triggers(&[
        "preview",
        "--sidecar",
        &address,
        "--trigger",
        "1",
        "--token-file",
        token_file,
    ])
    .await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out.stdout).expect("JSON"),
        serde_json::json!({"n": 3})
    );
    let out = triggers(&[
        "preview",
        "--sidecar",
        &address,
        "--trigger",
        "7",
        "--token-file",
        token_file,
    ])
    .await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr
            .contains("no trigger 7: the config has 2 trigger(s)"),
        "{}",
        out.stderr
    );

    let out = triggers(&[
        "test-fire",
        "--sidecar",
        &address,
        "--trigger",
        "0",
        "--token-file",
        token_file,
    ])
    .await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("status: 200"), "{}", out.stdout);
    assert!(out.stdout.contains("outcome: delivered"), "{}", out.stdout);
    let out = triggers(&[
        "test-fire",
        "--sidecar",
        &address,
        "--trigger",
        "1",
        "--token-file",
        token_file,
    ])
    .await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stdout.contains("status: 503"), "{}", out.stdout);
    assert!(out.stdout.contains("outcome: retryable"), "{}", out.stdout);
    assert!(out.stdout.contains("body: down"), "{}", out.stdout);
    assert_eq!(receiver.requests().len(), 2);

    // Issue 13, item 1: a test repeated with the same given flow_run_id gets the 409 a
    // receiver like Airflow answers; the sidecar reports what the policy makes of it.
    receiver.script(
        "/ok",
        [Reply::status(409).with_body("DAGRun already exists")],
    );
    let out = triggers(&[
        "test-fire",
        "--sidecar",
        &address,
        "--trigger",
        "0",
        "--token-file",
        token_file,
        "--variables",
        r#"{"flow_run_id": "run-7"}"#,
    ])
    .await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout
            .contains("status: 409: already delivered (the receiver has this webhook)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("outcome: already delivered"),
        "{}",
        out.stdout
    );

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("stops")
        .expect("server task")
        .expect("serves");
}

/// The processes that deliver decrypt an encrypted config at start, in memory, with an
/// identity from `--identity`, `$SOPS_AGE_KEY_FILE` or `$SOPS_AGE_KEY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_sidecar_and_consumer_start_with_an_encrypted_config() {
    use triggers_proto::sidecar::{AcknowledgedRequest, StartCommitRequest};
    let receiver = Receiver::start().await.expect("receiver");
    let keys = fixture("key1.agekey");
    let keys_text = std::fs::read_to_string(&keys).expect("reads");
    let recipient = AgeIdentity::parse_keys_file(&keys_text).expect("key file")[0].recipient();
    let plain = serde_json::json!({"config": [
        {"url": receiver.url("/sealed"), "headers": {"Authorization": SECRET},
         "payloadTemplate": "{\"run\": \"{{flow_run_id}}\"}"},
    ]});
    let sealed = triggers::encrypt_config(&plain.to_string(), ConfigFormat::Json, &[recipient])
        .expect("encrypts");

    // The sidecar, with the identity from the flag, then from $SOPS_AGE_KEY_FILE.
    let keys_arg = s(&keys).to_string();
    let with_flag = ["--identity", keys_arg.as_str()];
    let with_env = [("SOPS_AGE_KEY_FILE", keys_arg.as_str())];
    let starts = [(&with_flag[..], &[][..]), (&[][..], &with_env[..])];
    for (round, (extra, env)) in starts.into_iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("triggers.sops.json");
        std::fs::write(&config, &sealed).expect("writes");
        let sidecar = support::start_sidecar(dir.path(), &config, extra, env).await;
        assert!(sidecar.address.starts_with("unix:"), "{}", sidecar.address);
        let mut client = support::open_and_acknowledge(&sidecar.address, None).await;
        let mut checkpoint = triggers_proto::Checkpoint::default();
        checkpoint.sources.insert(
            "acmeCo/orders/pivot=00".to_string(),
            triggers_proto::Source {
                read_through: 1,
                producers: vec![],
            },
        );
        client
            .start_commit(StartCommitRequest {
                started_at: None,
                checkpoint: Some(checkpoint),
                stats: vec![triggers_proto::BindingStats {
                    binding: 0,
                    docs: 1,
                    bytes: 10,
                    first_clock: triggers::Clock::from_unix(1_700_000_000, 0).0,
                    last_clock: triggers::Clock::from_unix(1_700_000_000, 0).0,
                }],
                ..Default::default()
            })
            .await
            .expect("commits");
        let outcome = client
            .acknowledged(AcknowledgedRequest {
                wait: true,
                ..Default::default()
            })
            .await
            .expect("ack")
            .into_inner()
            .outcome
            .expect("waited");
        assert!(outcome.ok, "{}", outcome.error);
        let landed = receiver.requests();
        assert_eq!(landed.len(), round + 1);
        assert_eq!(landed[round].header("authorization"), Some(SECRET));
        drop(sidecar);
    }

    // Without an identity the sidecar says why it cannot start.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("triggers.sops.json");
    std::fs::write(&config, &sealed).expect("writes");
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_shard-sidecar"))
        .arg("--store")
        .arg(dir.path().join("store"))
        .arg("--triggers")
        .arg(&config)
        .args([
            "--materialization",
            "m",
            "--connector-image",
            "i",
            "--binding",
            "c",
        ])
        .env_remove("SOPS_AGE_KEY_FILE")
        .env_remove("SOPS_AGE_KEY")
        .kill_on_drop(true)
        .output();
    let refused = tokio::time::timeout(Duration::from_secs(60), refused)
        .await
        .expect("exits")
        .expect("runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("no identity given matches"), "{stderr}");

    // The consumer in-process, with the keys themselves in $SOPS_AGE_KEY.
    let input = dir.path().join("documents.jsonl");
    std::fs::write(
        &input,
        "{\"_meta\": {\"uuid\": \"6dbfa800-e7e5-11f1-8001-0b0000000001\"}, \"collection\": \"acmeCo/orders\"}\n",
    )
    .expect("writes");
    let consumer = tokio::process::Command::new(env!("CARGO_BIN_EXE_consumer"))
        .arg("--input")
        .arg(&input)
        .arg("--store")
        .arg(dir.path().join("consumer-store"))
        .arg("--triggers")
        .arg(&config)
        .args([
            "--binding",
            "acmeCo/orders",
            "--docs-per-txn",
            "1",
            "--delivery",
            "waiting",
            "--allow-loopback",
        ])
        .env_remove("SOPS_AGE_KEY_FILE")
        .env("SOPS_AGE_KEY", &keys_text)
        .kill_on_drop(true)
        .output();
    let consumer = tokio::time::timeout(Duration::from_secs(60), consumer)
        .await
        .expect("exits")
        .expect("runs");
    assert!(
        consumer.status.success(),
        "{}",
        String::from_utf8_lossy(&consumer.stderr)
    );
    let landed = receiver.requests();
    assert_eq!(landed.len(), 3, "the consumer's transaction fired");
    assert_eq!(landed[2].header("authorization"), Some(SECRET));
    for output in [&consumer.stdout, &consumer.stderr, &refused.stderr] {
        assert!(!String::from_utf8_lossy(output).contains("hunter2"));
    }
}

/// The default socket lies beside the store, never in it, however the store is spelt:
/// `--store .` (run from inside the store) once gave `..sock` inside the store. A store
/// with no name to put a socket beside (`/`) is refused, asking for `--listen`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_socket_is_beside_the_store_however_it_is_spelt() {
    use tokio::io::AsyncBufReadExt as _;
    let receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    let config = write_config(&root, &receiver);
    let store = root.join("shard");
    std::fs::create_dir_all(store.join("sub")).expect("creates the store dir");
    // `store` as `--store` spells it, from the working directory `cwd`: what the
    // sidecar prints after `listening on ` (or its stderr, if it exits first).
    let listen = |store: &'static str, cwd: PathBuf| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_shard-sidecar"));
        command
            .current_dir(cwd)
            .args(["--store", store, "--triggers"])
            .arg(&config)
            .args(["--materialization", "m", "--connector-image", "i"])
            .args(["--binding", "acmeCo/orders"])
            .env_remove(sidecar::TOKEN_ENV)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        async move {
            let mut child = command.spawn().expect("shard-sidecar starts");
            let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
            let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .expect("prints or exits within 60 s")
                .expect("reads stdout");
            match first {
                Some(line) => {
                    child.kill().await.expect("kills");
                    Ok(line
                        .strip_prefix("listening on unix:")
                        .unwrap_or_else(|| panic!("not a unix socket: {line}"))
                        .to_string())
                }
                None => {
                    let output =
                        tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
                            .await
                            .expect("exits")
                            .expect("waits");
                    assert!(!output.status.success());
                    Err(String::from_utf8_lossy(&output.stderr).into_owned())
                }
            }
        }
    };
    let beside = root.join("shard.sock");
    for (spelt, cwd) in [
        (".", store.clone()),
        ("./", store.clone()),
        ("sub/..", store.clone()),
        ("../shard/.", store.clone()),
        ("shard/", root.clone()),
        ("shard", root.clone()),
    ] {
        let socket = listen(spelt, cwd.clone())
            .await
            .unwrap_or_else(|stderr| panic!("--store {spelt} from {}: {stderr}", cwd.display()));
        assert_eq!(
            Path::new(&socket),
            beside,
            "--store {spelt} from {}",
            cwd.display()
        );
        std::fs::remove_file(&socket).expect("the socket was there");
    }
    assert_eq!(
        std::fs::read_dir(&store).expect("lists").count(),
        1,
        "nothing but `sub` landed in the store"
    );
    let stderr = listen("/", root.clone())
        .await
        .expect_err("no socket beside /");
    assert!(stderr.contains("--listen"), "{stderr}");
}

/// Any local process reaches a TCP port: the sidecar will not listen on one unguarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_sidecar_refuses_tcp_without_a_token_and_takes_none_from_a_flag() {
    let receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &receiver);
    let run = |extra: &'static [&'static str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_shard-sidecar"));
        command
            .arg("--store")
            .arg(dir.path().join("store"))
            .arg("--triggers")
            .arg(&config)
            .args(["--materialization", "m", "--connector-image", "i"])
            .args(["--binding", "acmeCo/orders", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove(sidecar::TOKEN_ENV)
            .kill_on_drop(true);
        async move {
            tokio::time::timeout(Duration::from_secs(60), command.output())
                .await
                .expect("exits")
                .expect("runs")
        }
    };
    let refused = run(&[]).await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("needs a bearer token"), "{stderr}");
    // There is no flag that takes the token itself.
    let refused = run(&["--token", "test-token-5b0c1e2f9a8d7364"]).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("unexpected argument"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// Issue 12: `triggers validate` aborted (stack overflow) on a 120-byte recursive
/// partial and on 10k nested `#if`, panicked on 40,000 headers, took minutes on deep
/// YAML, accepted a 10 MB header value and echoed a numeric one. Each is now an invalid
/// config (exit 1) with an error naming its bound, and no value is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_refuses_the_configs_that_aborted_it_naming_each_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trigger = |fields: serde_json::Value| {
        let mut one = serde_json::json!({"url": "https://x.example.com", "payloadTemplate": "{}"});
        one.as_object_mut()
            .expect("object")
            .extend(fields.as_object().expect("object").clone());
        serde_json::json!({"config": [one]}).to_string()
    };
    let nested = format!(
        "{}{{}}{}",
        "{{#if a}}".repeat(10_000),
        "{{/if}}".repeat(10_000)
    );
    let headers: serde_json::Map<String, serde_json::Value> = (0..40_000)
        .map(|i| (format!("h{i}"), serde_json::json!("v")))
        .collect();
    let cases = [
        (
            "partial.json",
            trigger(serde_json::json!({"payloadTemplate": "{{#*inline \"p\"}}{{> p}}{{/inline}}{{> p}}"})),
            "partials and decorators (`{{#*inline}}`, `{{* …}}`) are not supported",
        ),
        (
            "nested.json",
            trigger(serde_json::json!({"payloadTemplate": nested})),
            "the template is ",
        ),
        (
            "nested800.json",
            trigger(serde_json::json!({"payloadTemplate": format!("{}{{}}{}", "{{#if materialization_name}}".repeat(800), "{{/if}}".repeat(800))})),
            "blocks and subexpressions nest more than 16 deep",
        ),
        (
            "headers.json",
            trigger(serde_json::json!({"headers": headers})),
            "`headers` has 40000 headers, but at most 64 are allowed",
        ),
        (
            "value.json",
            trigger(serde_json::json!({"headers": {"X-Big": "s3cr3t".repeat(2000)}})),
            "the value of header \"X-Big\" is 12000 bytes, but at most 8192",
        ),
        (
            "numeric.json",
            r#"{"config": [{"url": "https://x", "payloadTemplate": "{}", "headers": {"A": 839201938475}}]}"#.to_string(),
            "header values and signing secrets must be strings",
        ),
        (
            "deep.yaml",
            format!("config: {}{}", "[".repeat(100_000), "]".repeat(100_000)),
            "nests arrays or objects more than 32 deep",
        ),
    ];
    for (name, text, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("writes");
        let out = triggers(&["validate", "--config", s(&path)]).await;
        let all = out.all();
        assert_eq!(out.code, Some(1), "{name}: {all}");
        assert!(all.contains(expected), "{name}: {expected:?} not in {all}");
        for secret in ["839201938475", "s3cr3t"] {
            assert!(!all.contains(secret), "{name}: {all}");
        }
    }
    // A file past the document bound is refused having read no more than the bound.
    let huge = dir.path().join("huge.yaml");
    std::fs::write(&huge, "#".repeat(triggers::MAX_CONFIG_BYTES * 3)).expect("writes");
    let out = triggers(&["validate", "--config", s(&huge)]).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("larger than 1048576 bytes"),
        "{}",
        out.stderr
    );
}

/// Issue 13: a trigger with `auth`: preview says where the token goes and fetches none;
/// test-fire fetches it and sends it; neither prints the password or the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_and_test_fire_of_a_trigger_with_token_authentication() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script(
        "/token",
        [Reply::json(
            201,
            &serde_json::json!({"access_token": "t0ken-from-airflow"}),
        )],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("auth.yaml");
    let text = format!(
        "config:\n  - url: {hook}\n    payloadTemplate: '{{}}'\n    auth:\n      type: tokenEndpoint\n      url: {token}\n      username: admin\n      password: pa55-hunter2\n",
        hook = receiver.url("/hook"),
        token = receiver.url("/token"),
    );
    std::fs::write(&config, text).expect("writes config");

    let out = triggers(&["preview", "--config", s(&config)]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stderr.contains(&format!(
            "Authorization: Bearer <token from http://{}>",
            receiver.addr()
        )),
        "{}",
        out.stderr
    );
    assert!(!out.all().contains("hunter2"), "{}", out.all());
    assert!(receiver.requests().is_empty(), "preview fetches no token");

    // Through a sidecar (on its Unix socket) too.
    let sidecar = support::start_sidecar(dir.path(), &config, &[], &[]).await;
    let out = triggers(&["preview", "--sidecar", &sidecar.address, "--trigger", "0"]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stderr.contains(&format!(
            "Authorization: Bearer <token from http://{}>",
            receiver.addr()
        )),
        "{}",
        out.stderr
    );
    assert!(!out.all().contains("hunter2"), "{}", out.all());
    assert!(receiver.requests().is_empty(), "preview fetches no token");
    drop(sidecar);

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
    let paths: Vec<(String, Option<String>)> = receiver
        .requests()
        .iter()
        .map(|r| {
            (
                r.path.clone(),
                r.header("authorization").map(str::to_string),
            )
        })
        .collect();
    assert_eq!(
        paths,
        [
            ("/token".to_string(), None),
            (
                "/hook".to_string(),
                Some("Bearer t0ken-from-airflow".to_string())
            )
        ]
    );
    assert!(!out.all().contains("hunter2"), "{}", out.all());
    assert!(!out.all().contains("t0ken-from-airflow"), "{}", out.all());
}

/// Issue 18: `--trigger` takes a trigger's name (a map config's key, a list entry's
/// `name`) or, when a number, its position; an unknown name lists those there are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_picks_a_trigger_by_name_or_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("named.yaml");
    std::fs::write(
        &config,
        "config:\n  slack:\n    url: https://hooks.example.com/s\n    payloadTemplate: '{\"to\": \"slack\"}'\n  \
         dbt:\n    url: https://cloud.example.com/d\n    payloadTemplate: '{\"to\": \"dbt\"}'\n",
    )
    .expect("writes");
    let preview = |trigger: &'static str| {
        let config = config.clone();
        async move { triggers(&["preview", "--config", s(&config), "--trigger", trigger]).await }
    };
    let out = preview("slack").await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let payload: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(payload, serde_json::json!({"to": "slack"}));
    let webhook_id =
        triggers::trigger_webhook_id(&triggers::Variables::placeholder().flow_run_id, "slack");
    assert!(
        out.stderr.contains(&format!("webhook-id {webhook_id}")),
        "{}",
        out.stderr
    );
    // A map's triggers are in name order: dbt is at position 0.
    let out = preview("0").await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("dbt"), "{}", out.stdout);
    let out = preview("teams").await;
    assert_ne!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stderr
            .contains(r#"no trigger of that name; it has ["dbt", "slack"]"#),
        "{}",
        out.stderr
    );
}

/// Issue 18, item 5: given the bindings, `validate` checks each `collections` entry
/// against them; `shard-sidecar` refuses to start with a filter no binding matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collections_filter_naming_no_binding_is_refused_where_bindings_are_known() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("filtered.yaml");
    std::fs::write(
        &config,
        "config:\n  orders:\n    url: https://hooks.example.com/o\n    payloadTemplate: '{}'\n    \
         collections: [acmeCo/orders, acmeCo/legacy/]\n",
    )
    .expect("writes");
    let validate = |bindings: &'static [&'static str]| {
        let config = config.clone();
        async move {
            let mut args = vec!["validate", "--config", s(&config)];
            for binding in bindings {
                args.extend(["--binding", binding]);
            }
            triggers(&args).await
        }
    };
    let out = validate(&[]).await;
    assert_eq!(
        out.code,
        Some(0),
        "without bindings nothing to check: {}",
        out.all()
    );
    let out = validate(&["acmeCo/orders", "acmeCo/legacy/v1"]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let out = validate(&["acmeCo/orders", "acmeCo/customers"]).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stdout.contains("acmeCo/legacy/") && out.stdout.contains("acmeCo/customers"),
        "names the entry and the bindings: {}",
        out.stdout
    );

    let sidecar = tokio::process::Command::new(env!("CARGO_BIN_EXE_shard-sidecar"))
        .args(["--store", s(&dir.path().join("store"))])
        .args(["--triggers", s(&config)])
        .args(["--materialization", "acmeCo/orders/postgres"])
        .args([
            "--connector-image",
            "ghcr.io/estuary/materialize-postgres:v1",
        ])
        .args([
            "--binding",
            "acmeCo/orders",
            "--binding",
            "acmeCo/customers",
        ])
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(30), sidecar)
        .await
        .expect("exits in time")
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("acmeCo/legacy/"), "{stderr}");
    assert!(
        !dir.path().join("store").exists(),
        "refused before opening the store"
    );
}

/// A stopped shard's store with three deliveries of trigger `0` (ordered, its receiver
/// refusing the second for good): 1 SUCCESS, 2 FAILED, 3 PENDING.
async fn stopped_store(dir: &Path, receiver: &Receiver) -> PathBuf {
    receiver.script(
        "/d",
        [
            Reply::status(200),
            // Late enough that all three commits land before the backlog stops.
            Reply::status(422)
                .with_body("bad payload")
                .after(Duration::from_millis(500)),
        ],
    );
    let config = serde_json::json!({"config": [
        {"url": receiver.url("/d"), "payloadTemplate": "{}", "maxRetries": 0,
         "drain": {"mode": "ordered"}, "headers": {"Authorization": SECRET}},
    ]});
    let triggers = Arc::new(validate(&config.to_string(), ConfigFormat::Json).expect("valid"));
    let store = dir.join("store");
    let config = triggers_runtime::test_support::fixtures::loopback_shard(
        triggers_runtime::test_support::fixtures::materialization(1),
        triggers,
    )
    .with_delivery(DeliveryMode::Decoupled { backlog_limit: 10 });
    let (mut shard, _) = triggers_runtime::Shard::open(&store, config)
        .await
        .expect("opens");
    shard.acknowledged().await.expect("recovered ack");
    for n in 1..=3 {
        shard
            .start_commit(
                triggers_runtime::test_support::fixtures::checkpoint(n),
                &triggers_runtime::test_support::fixtures::stats_at(n as u64, &[0]),
            )
            .await
            .expect("commits");
        shard.acknowledged().await.expect("acknowledged");
    }
    shard.drained().await.expect_err("2 fails for good");
    shard.close().await;
    store
}

/// Issue 17, item 1: `triggers deliveries` on a stopped shard's store: a table, JSON,
/// filters, show, skip with a reason, retry and replay, and the exit statuses (1 refused,
/// 3 a store another process holds); never a header's secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_lists_and_acts_on_a_stopped_shards_store() {
    let receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = stopped_store(dir.path(), &receiver).await;
    let store = s(&store);

    let out = triggers(&["deliveries", "list", "--store", store]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert!(lines[0].starts_with("TRIGGER"), "{}", out.stdout);
    assert!(
        lines[1].contains("PENDING") && lines[1].contains(" 3 "),
        "{}",
        out.stdout
    );
    assert!(
        lines[2].contains("FAILED") && lines[2].contains("HTTP 422"),
        "{}",
        out.stdout
    );
    assert!(lines[3].contains("SUCCESS"), "{}", out.stdout);

    let out = triggers(&[
        "deliveries",
        "list",
        "--store",
        store,
        "--state",
        "failed",
        "--json",
    ])
    .await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let listed: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(
        listed["deliveries"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(listed["deliveries"][0]["first_commit_seq"], 2);
    assert_eq!(listed["deliveries"][0]["attempts"][0]["status"], 422);

    let out = triggers(&["deliveries", "list", "--store", store, "--limit", "2"]).await;
    assert!(
        out.stdout.contains("next page: --page-token '2/0'"),
        "{}",
        out.stdout
    );
    let out = triggers(&[
        "deliveries",
        "list",
        "--store",
        store,
        "--page-token",
        "2/0",
        "--json",
    ])
    .await;
    let rest: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(rest["deliveries"][0]["first_commit_seq"], 1, "{rest}");

    let out = triggers(&["deliveries", "show", "0", "2", "--store", store]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.contains("state FAILED") && out.stdout.contains("#1"),
        "{}",
        out.stdout
    );

    // Refused: exit status 1, saying why.
    let out = triggers(&["deliveries", "retry", "0", "1", "--store", store]).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains("it is SUCCESS"), "{}", out.stderr);
    let out = triggers(&["deliveries", "show", "0", "9", "--store", store]).await;
    assert_eq!(out.code, Some(1), "{}", out.all());

    let out = triggers(&[
        "deliveries",
        "skip",
        "0",
        "2",
        "--reason",
        "bad payload, ticket 7",
        "--store",
        store,
        "--json",
    ])
    .await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let skipped: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(skipped["state"], "CANCELLED");
    assert_eq!(skipped["cancel_reason"], "bad payload, ticket 7");
    let out = triggers(&[
        "deliveries",
        "replay",
        "0",
        "--commits",
        "1..1",
        "--store",
        store,
    ])
    .await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.starts_with("1 delivery(ies) to be sent again"),
        "{}",
        out.stdout
    );
    let out = triggers(&[
        "deliveries",
        "replay",
        "0",
        "--commits",
        "x",
        "--store",
        store,
    ])
    .await;
    assert_eq!(out.code, Some(1), "{}", out.all());

    // Held by another process (here: this one): 3.
    let held = triggers_runtime::StoppedShard::open(store).expect("opens");
    let out = triggers(&["deliveries", "list", "--store", store]).await;
    assert_eq!(out.code, Some(3), "{}", out.all());
    assert!(out.stderr.contains("use --sidecar"), "{}", out.stderr);
    drop(held);
    // Neither target: a usage error.
    let out = triggers(&["deliveries", "list"]).await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    // The trigger's Authorization header is in no record, so in no output.
    let out = triggers(&["deliveries", "show", "0", "2", "--store", store, "--json"]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(!out.all().contains("hunter2"), "{}", out.all());
}

/// Issue 17, item 1: `triggers deliveries` against a running sidecar on TCP (with its
/// token), and what a sidecar that is not there gives (3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_through_a_running_sidecar() {
    let receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = stopped_store(dir.path(), &receiver).await;
    let config = serde_json::json!({"config": [
        {"url": receiver.url("/d"), "payloadTemplate": "{}", "maxRetries": 0,
         "drain": {"mode": "ordered"}},
    ]});
    let triggers_config = validate(&config.to_string(), ConfigFormat::Json).expect("valid");
    let mut config = SidecarConfig::new(
        &store,
        triggers_runtime::test_support::fixtures::loopback_shard(
            triggers_runtime::test_support::fixtures::materialization(1),
            Arc::new(triggers_config),
        )
        .with_delivery(DeliveryMode::Decoupled { backlog_limit: 10 }),
    );
    config.shutdown_grace = Duration::from_secs(5);
    let sidecar = Sidecar::new(config);
    let listener = Listener::bind("127.0.0.1:0", Some(support::token()))
        .await
        .expect("binds");
    let token_file = support::token_file(dir.path());
    let token_file = s(&token_file);
    let address = listener.address();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sidecar::run(sidecar, listener, async move {
        let _ = stopped.await;
    }));
    // Before Open, the shard is not open: refused.
    let out = triggers(&[
        "deliveries",
        "list",
        "--sidecar",
        &address,
        "--token-file",
        token_file,
    ])
    .await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let mut client = sidecar::connect(&address, Some(&support::token()))
        .await
        .expect("connects");
    client
        .open(triggers_proto::sidecar::OpenRequest::default())
        .await
        .expect("opens");

    let out = triggers(&[
        "deliveries",
        "list",
        "--sidecar",
        &address,
        "--token-file",
        token_file,
        "--json",
    ])
    .await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let listed: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(
        listed["deliveries"].as_array().map(Vec::len),
        Some(3),
        "{listed}"
    );
    let out = triggers(&[
        "deliveries",
        "skip",
        "0",
        "2",
        "--reason",
        "never",
        "--sidecar",
        &address,
        "--token-file",
        token_file,
    ])
    .await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("state CANCELLED"), "{}", out.stdout);
    // Without the token: the sidecar refuses it (UNAUTHENTICATED), which is not a refusal
    // of the ledger's.
    let out = triggers(&["deliveries", "list", "--sidecar", &address]).await;
    assert_eq!(out.code, Some(3), "{}", out.all());

    let _ = stop.send(());
    server.await.expect("server task").expect("serves");
    let out = triggers(&[
        "deliveries",
        "list",
        "--sidecar",
        &address,
        "--token-file",
        token_file,
    ])
    .await;
    assert_eq!(out.code, Some(3), "{}", out.all());
}
