//! The sidecar's gRPC service, served in-process on 127.0.0.1 and on a Unix socket, with
//! a real store and a real receiver.

use std::sync::Arc;
use std::time::Duration;
use tonic::Code;
use triggers::{Clock, ConfigFormat, RetryBackoff, validate};
use triggers_proto::sidecar::{
    AcknowledgedRequest, AttemptOutcome, AwaitDeliveryRequest, AwaitDrainedRequest,
    ConfigFormat as WireFormat, DeliveryMode as WireDeliveryMode, DeliveryRef, DrainMode,
    ListDeliveriesRequest, OpenRequest, PreviewRequest, ReplayDeliveriesRequest, ShardPhase,
    SkipDeliveryRequest, StartCommitRequest, StatusRequest, TestFireRequest, ValidateConfigRequest,
};
use triggers_proto::{BindingStats, Checkpoint, DeliveryState};
use triggers_receiver::{Receiver, Reply};
use triggers_runtime::{DeliveryMode, Durability, ShardConfig};
use triggers_sidecar::{self as sidecar, Listener, Sidecar, SidecarConfig};

use crate::support;
use triggers_runtime::test_support::fixtures::{checkpoint, materialization};

type Client = triggers_sidecar::Client;

/// A sidecar served in-process (also by the `shards` tests).
pub(crate) struct Running {
    pub(crate) client: Client,
    /// As a client dials it.
    pub(crate) address: String,
    /// `http://127.0.0.1:PORT/metrics`.
    pub(crate) metrics: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    pub(crate) _dir: tempfile::TempDir,
}

impl Running {
    /// Stops it (as at SIGTERM) and waits, at most 10 s, for `run` to return.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.server)
            .await
            .expect("stops within the grace period")
            .expect("server task");
    }
}

async fn serve(receiver: &Receiver, address: &str) -> Running {
    serve_with(
        receiver,
        address,
        DeliveryMode::Waiting,
        serde_json::json!({"mode": "ordered"}),
    )
    .await
}

async fn serve_with(
    receiver: &Receiver,
    address: &str,
    delivery: DeliveryMode,
    drain: serde_json::Value,
) -> Running {
    serve_with_grace(receiver, address, delivery, drain, Duration::from_secs(5)).await
}

/// [`serve_with`], with the given shutdown grace.
async fn serve_with_grace(
    receiver: &Receiver,
    address: &str,
    delivery: DeliveryMode,
    drain: serde_json::Value,
    grace: Duration,
) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let template = r#"{"run": "{{flow_run_id}}", "collections": {{json collection_names}}}"#;
    let config = serde_json::json!({"config": [
        {"url": receiver.url("/a"), "payloadTemplate": template, "maxRetries": 1,
         "headers": {"Authorization": "Bearer hunter2"}, "drain": drain},
        {"url": receiver.url("/b"), "payloadTemplate": template, "maxRetries": 1, "drain": drain},
    ]});
    let triggers = validate(&config.to_string(), ConfigFormat::Json).expect("valid");
    serve_triggers(dir, triggers, address, delivery, grace).await
}

/// A sidecar of `triggers` whose store is `store` in `dir`, serving on `address`
/// (`unix` for a socket in `dir`).
async fn serve_triggers(
    dir: tempfile::TempDir,
    triggers: triggers::Triggers,
    address: &str,
    delivery: DeliveryMode,
    grace: Duration,
) -> Running {
    let mut config = SidecarConfig::new(
        dir.path().join("store"),
        ShardConfig::new(materialization(2), Arc::new(triggers))
            .with_backoff(RetryBackoff::new(
                Duration::from_millis(5),
                Duration::from_millis(20),
            ))
            .with_network(triggers::NetworkPolicy::ALLOW_LOOPBACK)
            .with_delivery(delivery),
    );
    config.shutdown_grace = grace;
    serve_config(dir, config, address).await
}

/// A sidecar of `config` in `dir`, serving on `address` (`unix` for a socket in `dir`)
/// with the test token, and its metrics on 127.0.0.1.
pub(crate) async fn serve_config(
    dir: tempfile::TempDir,
    config: SidecarConfig,
    address: &str,
) -> Running {
    let sidecar = Sidecar::new(config);
    let address = if address == "unix" {
        format!("unix:{}", dir.path().join("sidecar.sock").display())
    } else {
        address.to_string()
    };
    let listener = Listener::bind(&address, Some(support::token()))
        .await
        .expect("binds");
    let address = listener.address();
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let metrics = format!(
        "http://{}/metrics",
        metrics_listener.local_addr().expect("address")
    );
    let scraped = sidecar.clone();
    tokio::spawn(async move {
        scraped
            .serve_metrics(metrics_listener, std::future::pending::<()>())
            .await;
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        sidecar::run(sidecar, listener, async move {
            let _ = stopped.await;
        })
        .await
        .expect("serves");
    });
    let client = sidecar::connect(&address, Some(&support::token()))
        .await
        .expect("connects");
    Running {
        client,
        address,
        metrics,
        stop: Some(stop),
        server,
        _dir: dir,
    }
}

/// A decoupled sidecar (both triggers ordered, backlogs of `limit`), opened, with the
/// recovered commit acknowledged.
async fn serve_decoupled_and_open(receiver: &Receiver, limit: usize) -> (Running, Client) {
    let running = serve_with(
        receiver,
        "127.0.0.1:0",
        DeliveryMode::Decoupled {
            backlog_limit: limit,
        },
        serde_json::json!({"mode": "ordered"}),
    )
    .await;
    let mut client = running.client.clone();
    client.open(OpenRequest::default()).await.expect("opens");
    client
        .acknowledged(AcknowledgedRequest {
            wait: true,
            ..Default::default()
        })
        .await
        .expect("recovered ack");
    (running, client)
}

/// StartCommit of transaction `n` (offset `n`), then its Acknowledged.
async fn commit_and_acknowledge(client: &mut Client, n: i64) {
    client
        .start_commit(StartCommitRequest {
            started_at: None,
            checkpoint: Some(checkpoint(n)),
            stats: stats(),
            ..Default::default()
        })
        .await
        .expect("commits");
    client
        .acknowledged(AcknowledgedRequest {
            wait: true,
            ..Default::default()
        })
        .await
        .expect("ack");
}

pub(crate) fn stats() -> Vec<BindingStats> {
    let clock = Clock::from_unix(1_700_000_000, 0).0;
    vec![BindingStats {
        binding: 1,
        docs: 2,
        bytes: 10,
        first_clock: clock,
        last_clock: clock + 160,
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_lifecycle_over_grpc() {
    let receiver = Receiver::start().await.expect("receiver");
    let running = serve(&receiver, "127.0.0.1:0").await;
    let mut client = running.client.clone();

    // Nothing works before Open.
    let err = client
        .start_commit(StartCommitRequest {
            started_at: None,
            checkpoint: Some(checkpoint(1)),
            stats: stats(),
            ..Default::default()
        })
        .await
        .expect_err("not open");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");

    let opened = client
        .open(OpenRequest::default())
        .await
        .expect("opens")
        .into_inner();
    assert_eq!(opened.checkpoint, Some(Checkpoint::default()));
    assert!(!opened.triggers_pending);
    client
        .acknowledged(AcknowledgedRequest {
            wait: true,
            ..Default::default()
        })
        .await
        .expect("recovery ack");

    // Bad input: a StartCommit without a checkpoint, and stats for a binding that
    // does not exist.
    let err = client
        .start_commit(StartCommitRequest {
            started_at: None,
            checkpoint: None,
            stats: stats(),
            ..Default::default()
        })
        .await
        .expect_err("no checkpoint");
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut bad = stats();
    bad[0].binding = 9;
    let err = client
        .start_commit(StartCommitRequest {
            started_at: None,
            checkpoint: Some(checkpoint(1)),
            stats: bad,
            ..Default::default()
        })
        .await
        .expect_err("unknown binding");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("binding 9"), "{}", err.message());

    let commit = client
        .start_commit(StartCommitRequest {
            started_at: None,
            checkpoint: Some(checkpoint(1)),
            stats: stats(),
            ..Default::default()
        })
        .await
        .expect("commits")
        .into_inner();
    assert!(commit.triggers_persisted);

    let started = client
        .acknowledged(AcknowledgedRequest {
            wait: false,
            ..Default::default()
        })
        .await
        .expect("starts delivery")
        .into_inner();
    assert!(started.outcome.is_none());
    let outcome = client
        .await_delivery(AwaitDeliveryRequest {
            delivery_id: started.delivery_id,
            ..Default::default()
        })
        .await
        .expect("awaits")
        .into_inner();
    assert!(outcome.ok, "{}", outcome.error);
    assert_eq!(outcome.flow_run_id, commit.flow_run_id);
    assert_eq!(outcome.triggers.len(), 2);
    assert!(
        outcome
            .triggers
            .iter()
            .all(|t| t.delivered && t.status == 200)
    );
    assert_eq!(receiver.requests().len(), 2);

    let status = client
        .status(StatusRequest::default())
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.phase(), ShardPhase::Idle);
    assert!(!status.triggers_pending);
    assert_eq!((status.commits, status.deliveries), (1, 2));
    assert_eq!(status.last_outcomes.len(), 2);

    // Acknowledged without a commit is refused up front.
    let err = client
        .acknowledged(AcknowledgedRequest {
            wait: true,
            ..Default::default()
        })
        .await
        .expect_err("nothing to acknowledge");
    assert_eq!(err.code(), Code::FailedPrecondition);

    let err = client
        .await_delivery(AwaitDeliveryRequest {
            delivery_id: 999,
            ..Default::default()
        })
        .await
        .expect_err("unknown delivery");
    assert_eq!(err.code(), Code::NotFound);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_reported_and_reopening_fires_it_again() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script(
        "/b",
        [
            Reply::status(403).with_body("forbidden: bad key"),
            Reply::status(409).with_body("DAGRun already exists"),
        ],
    );
    let running = serve(&receiver, "unix").await;
    let mut client = running.client.clone();
    client.open(OpenRequest::default()).await.expect("opens");
    client
        .acknowledged(AcknowledgedRequest {
            wait: true,
            ..Default::default()
        })
        .await
        .expect("recovery ack");
    let commit = client
        .start_commit(StartCommitRequest {
            started_at: None,
            checkpoint: Some(checkpoint(5)),
            stats: stats(),
            ..Default::default()
        })
        .await
        .expect("commits")
        .into_inner();

    let outcome = client
        .acknowledged(AcknowledgedRequest {
            wait: true,
            ..Default::default()
        })
        .await
        .expect("the call itself succeeds")
        .into_inner()
        .outcome
        .expect("waited");
    assert!(!outcome.ok);
    assert!(outcome.error.contains("HTTP 403"), "{}", outcome.error);
    assert!(!outcome.error.contains("hunter2"));
    let failed = &outcome.triggers[1];
    assert_eq!(
        (failed.index, failed.delivered, failed.status),
        (1, false, 403)
    );
    assert!(outcome.triggers[0].delivered);

    let status = client
        .status(StatusRequest::default())
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.phase(), ShardPhase::Failed);
    assert!(
        status.last_error.contains("forbidden: bad key"),
        "{}",
        status.last_error
    );
    let err = client
        .start_commit(StartCommitRequest {
            started_at: None,
            checkpoint: Some(checkpoint(6)),
            stats: stats(),
            ..Default::default()
        })
        .await
        .expect_err("failed shard");
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Reopen, as a restarted shard would: the params are still there and fire again.
    let reopened = client
        .open(OpenRequest::default())
        .await
        .expect("reopens")
        .into_inner();
    assert!(reopened.triggers_pending);
    assert_eq!(reopened.pending_flow_run_id, commit.flow_run_id);
    let outcome = client
        .acknowledged(AcknowledgedRequest {
            wait: true,
            ..Default::default()
        })
        .await
        .expect("acks")
        .into_inner()
        .outcome
        .expect("waited");
    assert!(outcome.ok, "{}", outcome.error);
    // Issue 13, item 1: the re-fire of /b is answered 409, which the response policy
    // counts as delivered, and the outcome and the status say "already delivered".
    let outcomes: Vec<(bool, u32, bool)> = outcome
        .triggers
        .iter()
        .map(|t| (t.delivered, t.status, t.already_delivered))
        .collect();
    assert_eq!(outcomes, [(true, 200, false), (true, 409, true)]);
    let status = client
        .status(StatusRequest::default())
        .await
        .expect("status")
        .into_inner();
    assert!(status.last_outcomes[1].already_delivered, "{status:?}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_config_reports_every_error_with_its_trigger() {
    let receiver = Receiver::start().await.expect("receiver");
    let running = serve(&receiver, "127.0.0.1:0").await;
    let mut client = running.client.clone();
    let reply = client
        .validate_config(ValidateConfigRequest {
            config: "config:\n  - url: ftp://x\n    payloadTemplate: '{}'\n  - url: https://ok.example.com\n    payloadTemplate: '{\"a\": \"{{nope}}\"}'\n".to_string(),
            format: WireFormat::Yaml as i32,
        })
        .await
        .expect("validates")
        .into_inner();
    assert!(!reply.valid);
    let indexes: Vec<i32> = reply.errors.iter().map(|e| e.trigger_index).collect();
    assert_eq!(indexes, [0, 1]);
    assert!(
        reply.errors[1].message.contains("unknown variable `nope`"),
        "{:?}",
        reply.errors
    );

    let reply = client
        .validate_config(ValidateConfigRequest {
            config: "{".to_string(),
            format: WireFormat::Json as i32,
        })
        .await
        .expect("validates")
        .into_inner();
    assert_eq!(reply.errors[0].trigger_index, -1);

    // An out-of-range enum value is treated as the default (JSON), not a panic.
    let reply = client
        .validate_config(ValidateConfigRequest {
            config: "{\"config\": []}".to_string(),
            format: 77,
        })
        .await
        .expect("validates")
        .into_inner();
    assert!(reply.valid);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoupled_status_shows_backpressure_and_await_drained_reports_a_failure() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.set_default(Reply::status(200).after(Duration::from_millis(150)));
    let (running, mut client) = serve_decoupled_and_open(&receiver, 2).await;

    let mut committer = client.clone();
    let commits = tokio::spawn(async move {
        for n in 1..=5 {
            committer
                .start_commit(StartCommitRequest {
                    started_at: None,
                    checkpoint: Some(checkpoint(n)),
                    stats: stats(),
                    ..Default::default()
                })
                .await
                .expect("commits");
            let ack = committer
                .acknowledged(AcknowledgedRequest {
                    wait: true,
                    ..Default::default()
                })
                .await
                .expect("ack")
                .into_inner()
                .outcome
                .expect("outcome");
            assert!(ack.ok && ack.queued, "{ack:?}");
        }
    });
    // The third commit waits for room; Status says so while it waits.
    let mut seen = None;
    for _ in 0..200 {
        let status = client
            .status(StatusRequest::default())
            .await
            .expect("status")
            .into_inner();
        if status.backpressured {
            seen = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = seen.expect("Status showed backpressure");
    assert_eq!(status.delivery_mode(), WireDeliveryMode::Decoupled);
    assert_eq!(status.backlog_limit, 2);
    assert_eq!(status.backlog.len(), 2);
    assert!(
        status
            .backlog
            .iter()
            .any(|q| q.depth == 2 && q.drain() == DrainMode::Ordered),
        "{status:?}"
    );
    commits.await.expect("commits finish");

    let drained = client
        .await_drained(AwaitDrainedRequest::default())
        .await
        .expect("awaits")
        .into_inner();
    assert!(drained.ok, "{drained:?}");
    let status = client
        .status(StatusRequest::default())
        .await
        .expect("status")
        .into_inner();
    assert!(
        status
            .backlog
            .iter()
            .all(|q| q.depth == 0 && q.delivered == 5),
        "{status:?}"
    );
    assert!(status.backpressure_waits > 0);

    // A permanent failure on /b stops delivery; every surface names it.
    receiver.script("/b", [Reply::status(404).with_body("no such hook")]);
    commit_and_acknowledge(&mut client, 6).await;
    let drained = client
        .await_drained(AwaitDrainedRequest::default())
        .await
        .expect("awaits")
        .into_inner();
    assert!(!drained.ok);
    for part in ["trigger 1", "HTTP 404", "no such hook", "backlog"] {
        assert!(
            drained.error.contains(part),
            "{part:?} missing: {}",
            drained.error
        );
    }
    assert!(!drained.error.contains("hunter2"));
    let status = client
        .status(StatusRequest::default())
        .await
        .expect("status")
        .into_inner();
    assert!(status.last_error.contains("HTTP 404"), "{status:?}");
    let refused = client
        .start_commit(StartCommitRequest {
            started_at: None,
            checkpoint: Some(checkpoint(7)),
            stats: stats(),
            ..Default::default()
        })
        .await
        .expect_err("failed shard");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused}");

    // The operator finds the failed delivery in the ledger and skips it; the shard goes on.
    let page = client
        .list_deliveries(ListDeliveriesRequest {
            page_size: 4,
            page_token: String::new(),
            ..Default::default()
        })
        .await
        .expect("lists")
        .into_inner();
    let failed = page
        .deliveries
        .iter()
        .find(|d| d.state() == DeliveryState::Failed)
        .expect("a FAILED delivery")
        .clone();
    assert_eq!((failed.trigger, failed.first_commit_seq), (1, 6));
    assert!(!page.next_page_token.is_empty(), "more than one page");
    let at = DeliveryRef {
        trigger: 1,
        first_commit_seq: 6,
        ..Default::default()
    };
    let err = client
        .skip_delivery(SkipDeliveryRequest {
            delivery: Some(at.clone()),
            reason: String::new(),
        })
        .await
        .expect_err("a reason is required");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let err = client
        .retry_delivery(DeliveryRef {
            trigger: 0,
            first_commit_seq: 1,
            ..Default::default()
        })
        .await
        .expect_err("delivered already");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let skipped = client
        .skip_delivery(SkipDeliveryRequest {
            delivery: Some(at.clone()),
            reason: "hook deleted on the receiver's side".to_string(),
        })
        .await
        .expect("skips")
        .into_inner();
    assert_eq!(skipped.state(), DeliveryState::Cancelled);
    let got = client.get_delivery(at).await.expect("gets").into_inner();
    assert_eq!(got.cancel_reason, "hook deleted on the receiver's side");
    let drained = client
        .await_drained(AwaitDrainedRequest::default())
        .await
        .expect("awaits")
        .into_inner();
    assert!(drained.ok, "{drained:?}");
    client
        .start_commit(StartCommitRequest {
            started_at: None,
            checkpoint: Some(checkpoint(7)),
            stats: stats(),
            ..Default::default()
        })
        .await
        .expect("commits again");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_over_http() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script("/a", [Reply::status(503), Reply::status(200)]);
    let (running, mut client) = serve_decoupled_and_open(&receiver, 10).await;
    for n in 1..=2 {
        commit_and_acknowledge(&mut client, n).await;
    }
    client
        .await_drained(AwaitDrainedRequest::default())
        .await
        .expect("drains");
    // One more, held by /b for a while: it shows in the backlog gauges. Scraped once /b
    // holds it (its seventh request) and its pending age has grown past 0.1 s: polled,
    // not slept, so a loaded machine only makes the wait longer.
    receiver.script("/b", [Reply::status(200).after(Duration::from_secs(3))]);
    commit_and_acknowledge(&mut client, 3).await;
    assert_eq!(receiver.wait_for(7, Duration::from_secs(10)).await.len(), 7);

    let http = reqwest::Client::new();
    let expected = [
        r#"triggers_delivery_attempts_total{trigger="0",outcome="retryable",status_class="5xx"} 1"#,
        r#"triggers_delivery_attempts_total{trigger="0",outcome="delivered",status_class="2xx"} 3"#,
        r#"triggers_delivery_attempts_total{trigger="1",outcome="delivered",status_class="2xx"} 2"#,
        r#"triggers_delivery_attempt_duration_seconds_count{trigger="0"} 4"#,
        "triggers_commits_total 3",
        r#"triggers_backlog_depth{trigger="0"} 0"#,
        r#"triggers_backlog_depth{trigger="1"} 1"#,
        "triggers_backpressured 0",
    ];
    let pending_age = |text: &str| {
        text.lines()
            .find(|l| l.starts_with(r#"triggers_oldest_pending_delivery_age_seconds{trigger="1"}"#))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let mut text = String::new();
    for _ in 0..100 {
        let response = http.get(&running.metrics).send().await.expect("scrapes");
        assert_eq!(response.status(), 200);
        text = response.text().await.expect("body");
        let complete = expected.iter().all(|line| text.contains(line));
        if complete && pending_age(&text).is_some_and(|age| age > 0.1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for line in expected {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    let age = pending_age(&text).expect("age of /b's pending delivery");
    assert!(age > 0.1 && age < 30.0, "{age}: {text}");
    assert!(!text.contains("hunter2"));
    let missing = http
        .get(running.metrics.replace("/metrics", "/other"))
        .send()
        .await
        .expect("answers");
    assert_eq!(missing.status(), 404);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_and_test_fire_need_no_open_shard_and_never_wait_for_it() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script("/b", [Reply::status(503).with_body("down")]);
    let running = serve(&receiver, "127.0.0.1:0").await;
    let mut client = running.client.clone();

    // Before Open.
    let preview = client
        .preview(PreviewRequest {
            trigger: 0,
            variables: Some(r#"{"collection_names": ["acmeCo/orders"]}"#.to_string()),
            ..Default::default()
        })
        .await
        .expect("previews")
        .into_inner();
    let placeholder_run = triggers::Variables::placeholder().flow_run_id;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&preview.payload).expect("JSON"),
        serde_json::json!({"run": placeholder_run, "collections": ["acmeCo/orders"]})
    );
    assert_eq!(
        preview.webhook_id,
        triggers::webhook_id(&placeholder_run, 0)
    );
    assert!(!format!("{preview:?}").contains("hunter2"));

    // Bad input is INVALID_ARGUMENT with a message that says what is wrong.
    for (trigger, variables, expected) in [
        (5, None, "no trigger 5: the config has 2 trigger(s)"),
        (0, Some("{"), "variables are not valid JSON"),
        (
            0,
            Some(r#"{"nope": 1}"#),
            "unknown variable `nope`; the variables are",
        ),
        (
            0,
            Some(r#"{"transaction_count": -1}"#),
            "variable `transaction_count` must be",
        ),
    ] {
        let err = client
            .preview(PreviewRequest {
                trigger,
                variables: variables.map(str::to_string),
                ..Default::default()
            })
            .await
            .expect_err("bad input");
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(err.message().contains(expected), "{}", err.message());
        let err = client
            .test_fire(TestFireRequest {
                trigger,
                variables: variables.map(str::to_string),
                ..Default::default()
            })
            .await
            .expect_err("bad input");
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    }

    // A 503 is reported once, not retried (the trigger allows one retry).
    let fired = client
        .test_fire(TestFireRequest {
            trigger: 1,
            variables: None,
            ..Default::default()
        })
        .await
        .expect("fires")
        .into_inner();
    assert_eq!(
        (fired.status, fired.accepted, fired.outcome()),
        (503, false, AttemptOutcome::Retryable)
    );
    assert_eq!(fired.body_excerpt, "down");
    assert!(fired.error.is_empty(), "{}", fired.error);
    assert_eq!(receiver.requests().len(), 1);

    // While a delivery holds the shard (trigger 0's endpoint answers after 3 s), both
    // still answer at once.
    receiver.script("/a", [Reply::status(200).after(Duration::from_secs(3))]);
    client.open(OpenRequest::default()).await.expect("opens");
    client
        .acknowledged(AcknowledgedRequest {
            wait: true,
            ..Default::default()
        })
        .await
        .expect("recovery ack");
    client
        .start_commit(StartCommitRequest {
            started_at: None,
            checkpoint: Some(checkpoint(1)),
            stats: stats(),
            ..Default::default()
        })
        .await
        .expect("commits");
    let started = client
        .acknowledged(AcknowledgedRequest {
            wait: false,
            ..Default::default()
        })
        .await
        .expect("delivery starts")
        .into_inner();
    receiver.wait_for(3, Duration::from_secs(5)).await;
    let fired = tokio::time::timeout(
        Duration::from_secs(2),
        client.test_fire(TestFireRequest {
            trigger: 1,
            variables: None,
            ..Default::default()
        }),
    )
    .await
    .expect("does not wait for the delivery")
    .expect("fires")
    .into_inner();
    assert_eq!(
        (fired.status, fired.accepted, fired.outcome()),
        (200, true, AttemptOutcome::Delivered)
    );
    tokio::time::timeout(
        Duration::from_secs(2),
        client.preview(PreviewRequest {
            trigger: 1,
            variables: None,
            ..Default::default()
        }),
    )
    .await
    .expect("does not wait for the delivery")
    .expect("previews");
    let outcome = client
        .await_delivery(AwaitDeliveryRequest {
            delivery_id: started.delivery_id,
            ..Default::default()
        })
        .await
        .expect("delivery ends")
        .into_inner();
    assert!(outcome.ok, "{}", outcome.error);
    let reasons: Vec<_> = receiver
        .requests()
        .iter()
        .map(|r| r.header("webhook-reason").unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        reasons.iter().filter(|r| *r == "test-fire").count(),
        2,
        "{reasons:?}"
    );
    running.stop().await;
}

/// Bounds every wait of the tests below, so a regression fails instead of hanging.
const WAIT: Duration = Duration::from_secs(20);

/// Polls Status until a StartCommit waits for backlog room (bounded: 400 × 5 ms).
async fn wait_until_backpressured(client: &mut Client) {
    for _ in 0..400 {
        let status = client
            .status(StatusRequest::default())
            .await
            .expect("status")
            .into_inner();
        if status.backpressured {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("no StartCommit waited for backlog room");
}

/// Issue 12: an AwaitDrained in flight held the old store, so a new Open answered
/// UNAVAILABLE (locked) until that call's deadline. Reopening ends every waiter on the old
/// shard at once with ABORTED: AwaitDrained, and a StartCommit waiting for backlog room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_await_drained_in_flight_does_not_hold_the_old_store_against_a_new_open() {
    let receiver = Receiver::start().await.expect("receiver");
    // Slow enough that the waiters can only have been ended by the reopen.
    receiver.set_default(Reply::status(200).after(Duration::from_secs(3)));
    let (running, mut client) = serve_decoupled_and_open(&receiver, 1).await;
    commit_and_acknowledge(&mut client, 1).await;
    assert_eq!(receiver.wait_for(2, WAIT).await.len(), 2);

    let mut waiter = client.clone();
    let drained =
        tokio::spawn(async move { waiter.await_drained(AwaitDrainedRequest::default()).await });
    // Each backlog is at its limit of one: the next StartCommit waits for room.
    let mut committer = client.clone();
    let committing = tokio::spawn(async move {
        committer
            .start_commit(StartCommitRequest {
                started_at: None,
                checkpoint: Some(checkpoint(2)),
                stats: stats(),
                ..Default::default()
            })
            .await
    });
    wait_until_backpressured(&mut client).await;

    let mut opener = client.clone();
    let reopening = tokio::spawn(async move { opener.open(OpenRequest::default()).await });
    let drained = tokio::time::timeout(WAIT, drained)
        .await
        .expect("AwaitDrained ends with the old shard")
        .expect("task")
        .expect_err("the shard it waited on is gone");
    assert_eq!(drained.code(), Code::Aborted, "{drained}");
    assert!(drained.message().contains("reopened"), "{drained}");
    let committed = tokio::time::timeout(WAIT, committing)
        .await
        .expect("StartCommit ends with the old shard")
        .expect("task")
        .expect_err("the shard it waited on is gone");
    assert_eq!(committed.code(), Code::Aborted, "{committed}");
    // Both ended at once, not when the webhooks were answered.
    assert!(
        receiver.requests().iter().all(|r| r.answered.is_none()),
        "{:?}",
        receiver.requests()
    );

    let reopened = tokio::time::timeout(WAIT, reopening)
        .await
        .expect("Open ends")
        .expect("task")
        .expect("reopens: nothing holds the old store")
        .into_inner();
    assert_eq!(reopened.checkpoint, Some(checkpoint(1)));
    client
        .acknowledged(AcknowledgedRequest {
            wait: true,
            ..Default::default()
        })
        .await
        .expect("recovered ack");
    let drained = client
        .await_drained(AwaitDrainedRequest::default())
        .await
        .expect("drains")
        .into_inner();
    assert!(drained.ok, "{drained:?}");
    running.stop().await;
}

/// Issue 12: Open on a live sidecar (the consumer restarted, its sidecar did not) cut the
/// old workers off and re-sent an ordered webhook whose first request was still open: two
/// requests of one trigger and one webhook-id in flight at once. Open now lets in-flight
/// webhooks finish (within the grace) before it resets interrupted deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_a_live_sidecar_never_sends_an_in_flight_ordered_webhook_twice() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.set_default(Reply::status(200).after(Duration::from_millis(1500)));
    let (running, mut client) = serve_decoupled_and_open(&receiver, 10).await;
    commit_and_acknowledge(&mut client, 1).await;
    assert_eq!(receiver.wait_for(2, WAIT).await.len(), 2);

    let reopened = client
        .open(OpenRequest::default())
        .await
        .expect("reopens")
        .into_inner();
    assert!(
        !reopened.triggers_pending,
        "the in-flight webhooks finished before the reopen: {reopened:?}"
    );
    client
        .acknowledged(AcknowledgedRequest {
            wait: true,
            ..Default::default()
        })
        .await
        .expect("recovered ack");
    let drained = client
        .await_drained(AwaitDrainedRequest::default())
        .await
        .expect("drains")
        .into_inner();
    assert!(drained.ok, "{drained:?}");
    let requests = receiver.requests();
    let mut sent: Vec<_> = requests
        .iter()
        .map(|r| {
            (
                r.path.as_str(),
                r.header("webhook-reason").unwrap_or_default(),
                r.answered,
            )
        })
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        [
            ("/a", "first-send", Some(200)),
            ("/b", "first-send", Some(200))
        ],
        "one request per trigger, each answered"
    );
    running.stop().await;
}

/// Issue 12: three codes disagreed with the README. AwaitDrained before Open answered OK,
/// a StartCommit before the recovered Acknowledged was accepted when nothing was pending,
/// and a StartCommit on a shard whose backlog failed answered ABORTED. Each is
/// FAILED_PRECONDITION, like every other out-of-order call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_agree_with_the_readme() {
    let receiver = Receiver::start().await.expect("receiver");
    let running = serve_with(
        &receiver,
        "127.0.0.1:0",
        DeliveryMode::default(),
        serde_json::json!({"mode": "ordered"}),
    )
    .await;
    let mut client = running.client.clone();

    let err = client
        .await_drained(AwaitDrainedRequest::default())
        .await
        .expect_err("AwaitDrained before Open");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("call Open first"), "{err}");

    // The store held by another handle (another process, in production).
    let held = triggers_runtime::Store::open(running._dir.path().join("store"), Durability::Synced)
        .expect("opens");
    let err = client
        .open(OpenRequest::default())
        .await
        .expect_err("locked");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    drop(held);

    let opened = client
        .open(OpenRequest::default())
        .await
        .expect("opens")
        .into_inner();
    assert!(!opened.triggers_pending);
    let err = client
        .start_commit(StartCommitRequest {
            started_at: None,
            checkpoint: Some(checkpoint(1)),
            stats: stats(),
            ..Default::default()
        })
        .await
        .expect_err("StartCommit before the recovered Acknowledged");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("recovered checkpoint"), "{err}");
    client
        .acknowledged(AcknowledgedRequest {
            wait: true,
            ..Default::default()
        })
        .await
        .expect("recovered ack");

    receiver.script("/b", [Reply::status(404).with_body("no such hook")]);
    commit_and_acknowledge(&mut client, 1).await;
    let drained = client
        .await_drained(AwaitDrainedRequest::default())
        .await
        .expect("awaits")
        .into_inner();
    assert!(!drained.ok, "{drained:?}");
    let err = client
        .start_commit(StartCommitRequest {
            started_at: None,
            checkpoint: Some(checkpoint(2)),
            stats: stats(),
            ..Default::default()
        })
        .await
        .expect_err("StartCommit on a failed backlog");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("HTTP 404"), "{err}");
    running.stop().await;
}

/// Cancel safety: an Open whose caller goes away (its deadline passes while the old
/// shard's requests finish) still completes the reopen, so the sidecar is not left with
/// the old shard closed and no new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_dropped_mid_way_still_reopens_the_shard() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.set_default(Reply::status(200).after(Duration::from_millis(1500)));
    let (running, mut client) = serve_decoupled_and_open(&receiver, 10).await;
    commit_and_acknowledge(&mut client, 1).await;
    assert_eq!(receiver.wait_for(2, WAIT).await.len(), 2);

    let mut open = tonic::Request::new(OpenRequest::default());
    open.set_timeout(Duration::from_millis(100));
    let err = client
        .open(open)
        .await
        .expect_err("the deadline passes first");
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err}"
    );
    // Bounded: 1000 × 10 ms, well past the 1.5 s webhook the reopen waits for.
    let mut reopened = false;
    for _ in 0..1000 {
        let status = client
            .status(StatusRequest::default())
            .await
            .expect("status")
            .into_inner();
        if status.open && status.phase() == ShardPhase::Recovered {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(reopened, "the reopen completed without its caller");
    client
        .acknowledged(AcknowledgedRequest {
            wait: true,
            ..Default::default()
        })
        .await
        .expect("recovered ack");
    let drained = client
        .await_drained(AwaitDrainedRequest::default())
        .await
        .expect("drains")
        .into_inner();
    assert!(drained.ok, "{drained:?}");
    assert_eq!(receiver.requests().len(), 2, "nothing was sent twice");
    running.stop().await;
}

/// Sends raw bytes as a request to `method`, with the test token: how a client that
/// encodes a message wrongly calls.
async fn raw_call(address: &str, method: &'static str, body: Vec<u8>) -> tonic::Status {
    use bytes::{Buf as _, BufMut as _};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Debug, Clone, Default)]
    struct Raw;
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }
    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            buf.put_slice(&item);
            Ok(())
        }
    }
    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
        }
    }

    let channel = tonic::transport::Endpoint::from_shared(address.to_string())
        .expect("an address")
        .connect()
        .await
        .expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(body);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", support::TOKEN).parse().expect("ASCII"),
    );
    grpc.unary(
        request,
        tonic::codegen::http::uri::PathAndQuery::from_static(method),
        Raw,
    )
    .await
    .expect_err("refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_string_field_is_invalid_argument() {
    let receiver = Receiver::start().await.expect("receiver");
    let running = serve(&receiver, "127.0.0.1:0").await;
    // Field 1 (`config`, a string), length 2, bytes that are not UTF-8.
    let status = raw_call(
        &running.address,
        "/triggers.sidecar.ShardSidecar/ValidateConfig",
        vec![0x0a, 0x02, 0xff, 0xfe],
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("UTF-8"), "{status:?}");
    // A truncated message is the caller's error too.
    let status = raw_call(
        &running.address,
        "/triggers.sidecar.ShardSidecar/SkipDelivery",
        vec![0x12, 0x09, b'a'],
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_the_bearer_token_are_unauthenticated() {
    let refused = Listener::bind("127.0.0.1:0", None)
        .await
        .err()
        .expect("TCP without a token");
    assert!(
        matches!(refused, sidecar::BindError::TokenRequired { .. }),
        "{refused}"
    );

    let receiver = Receiver::start().await.expect("receiver");
    let mut running = serve(&receiver, "127.0.0.1:0").await;
    for token in [
        None,
        Some(sidecar::BearerToken::new("not-the-token-0123456789", "test").expect("valid")),
    ] {
        let mut client = sidecar::connect(&running.address, token.as_ref())
            .await
            .expect("connects");
        for status in [
            client
                .status(StatusRequest::default())
                .await
                .expect_err("refused"),
            client
                .open(OpenRequest::default())
                .await
                .expect_err("refused"),
            client
                .test_fire(TestFireRequest {
                    trigger: 0,
                    variables: None,
                    ..Default::default()
                })
                .await
                .expect_err("refused"),
        ] {
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        }
    }
    assert!(receiver.requests().is_empty(), "no test-fire got through");
    running
        .client
        .status(StatusRequest::default())
        .await
        .expect("with the token");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_is_created_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shard.sock");
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777
    };
    let listener = Listener::unix(&path).expect("binds");
    assert_eq!(mode(&path), 0o600);
    assert!(!listener.requires_token());
    assert_eq!(listener.address(), format!("unix:{}", path.display()));
    drop(listener);
    // A stale socket (a killed sidecar's) is replaced, still 0600; nothing else is left.
    let again = Listener::unix(&path).expect("replaces the stale socket");
    assert_eq!(mode(&path), 0o600);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("lists")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["shard.sock"]);
    drop(again);
    // A file that is not a socket is never replaced.
    let file = dir.path().join("precious");
    std::fs::write(&file, "data").expect("writes");
    assert!(matches!(
        Listener::unix(&file),
        Err(sidecar::BindError::NotASocket { .. })
    ));
    assert_eq!(std::fs::read_to_string(&file).expect("reads"), "data");
}

/// A second sidecar for the same socket path is refused while the first still listens
/// (it would otherwise take the path over, and the first's callers with it); a stale
/// socket, whose listener is gone, is still replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_the_unix_socket_never_takes_over_a_live_sidecars_socket() {
    let receiver = Receiver::start().await.expect("receiver");
    let first = serve(&receiver, "unix").await;
    let path = first
        .address
        .strip_prefix("unix:")
        .expect("a unix address")
        .to_string();
    let err = match Listener::unix(&path) {
        Ok(_) => panic!("took over the live socket at {path}"),
        Err(err) => err,
    };
    assert!(
        matches!(&err, sidecar::BindError::InUse { path: p } if p.as_os_str() == path.as_str()),
        "{err:?}"
    );
    assert!(err.to_string().contains(&path), "{err}");
    // The first sidecar still answers on its path, over a new connection.
    let mut again = sidecar::connect(&first.address, Some(&support::token()))
        .await
        .expect("connects");
    again
        .status(StatusRequest::default())
        .await
        .expect("the first sidecar still answers");
    first.stop().await;

    // A stale socket (its listener dropped) is replaced.
    let dir = tempfile::tempdir().expect("tempdir");
    let stale = dir.path().join("stale.sock");
    drop(Listener::unix(&stale).expect("binds"));
    assert!(stale.exists(), "a dropped listener leaves its socket");
    Listener::unix(&stale).expect("replaces the stale socket");
}

/// Open in waiting delivery waits for the delivery in flight at most the shutdown grace,
/// then answers UNAVAILABLE, leaving the delivery and the old shard as they were; Open
/// succeeds once the delivery finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_in_waiting_delivery_is_bounded_by_the_shutdown_grace() {
    let receiver = Receiver::start().await.expect("receiver");
    let running = serve_with_grace(
        &receiver,
        "127.0.0.1:0",
        DeliveryMode::Waiting,
        serde_json::json!({"mode": "ordered"}),
        Duration::from_millis(200),
    )
    .await;
    let mut client = running.client.clone();
    client.open(OpenRequest::default()).await.expect("opens");
    client
        .acknowledged(AcknowledgedRequest {
            wait: true,
            ..Default::default()
        })
        .await
        .expect("recovered ack");
    receiver.set_default(Reply::status(200).after(Duration::from_secs(3)));
    client
        .start_commit(StartCommitRequest {
            started_at: None,
            checkpoint: Some(checkpoint(1)),
            stats: stats(),
            ..Default::default()
        })
        .await
        .expect("commits");
    let delivery_id = client
        .acknowledged(AcknowledgedRequest {
            wait: false,
            ..Default::default()
        })
        .await
        .expect("ack")
        .into_inner()
        .delivery_id;
    assert!(
        !receiver.wait_for(1, WAIT).await.is_empty(),
        "a webhook in flight"
    );

    let err = client
        .open(OpenRequest::default())
        .await
        .expect_err("the delivery outlasts the grace");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("shutdown grace"), "{err}");

    let outcome = client
        .await_delivery(AwaitDeliveryRequest {
            delivery_id,
            ..Default::default()
        })
        .await
        .expect("the delivery went on")
        .into_inner();
    assert!(outcome.ok, "{outcome:?}");
    client
        .open(OpenRequest::default())
        .await
        .expect("opens once the delivery finished");
    running.stop().await;
}

/// A Python interpreter with grpcio and grpcio-tools, or why there is none.
fn python_with_grpcio() -> Result<(), String> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import grpc, grpc_tools.protoc"])
        .output()
        .map_err(|err| format!("python3: {err}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_calls_the_sidecar_over_tcp_and_the_unix_socket() {
    if let Err(why) = python_with_grpcio() {
        assert!(
            std::env::var_os("TRIGGERS_REQUIRE_GRPCIO").is_none(),
            "TRIGGERS_REQUIRE_GRPCIO is set but python3 cannot import grpcio: {why}"
        );
        eprintln!("python3 with grpcio and grpcio-tools not found: skipping ({why})");
        return;
    }
    let receiver = Receiver::start().await.expect("receiver");
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/proto");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpcio_client.py");
    for transport in ["tcp", "unix"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("triggers.json");
        let triggers = serde_json::json!({"config": [
            {"url": receiver.url(&format!("/{transport}")), "payloadTemplate": "{\"run\": \"{{flow_run_id}}\"}"},
        ]});
        std::fs::write(&config, triggers.to_string()).expect("writes");
        let token_file = support::token_file(dir.path());
        // The sidecar reads its token from the environment here (tests/cli.rs gives
        // --token-file), the client from a file.
        let (extra, env): (&[&str], &[(&str, &str)]) = match transport {
            "tcp" => (
                &["--listen", "127.0.0.1:0"],
                &[(sidecar::TOKEN_ENV, support::TOKEN)],
            ),
            _ => (&[], &[]),
        };
        let sidecar = support::start_sidecar(dir.path(), &config, extra, env).await;
        // grpcio dials `127.0.0.1:PORT` or `unix:/path`, as its users write them.
        let target = sidecar
            .address
            .strip_prefix("http://")
            .unwrap_or(&sidecar.address)
            .to_string();
        let mut python = tokio::process::Command::new("python3");
        python
            .arg(script)
            .arg(proto_dir)
            .arg(&target)
            .arg(Clock::from_unix(1_700_000_000, 0).0.to_string());
        if transport == "tcp" {
            python.arg(&token_file);
        }
        let output =
            tokio::time::timeout(Duration::from_secs(120), python.kill_on_drop(true).output())
                .await
                .expect("the Python client finishes")
                .expect("runs");
        assert!(
            output.status.success(),
            "{transport}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let seen: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("the client prints JSON");
        assert_eq!(seen["recovered_offset"], 0, "{transport}: {seen}");
        assert_eq!(seen["persisted"], true, "{transport}: {seen}");
        assert_eq!(seen["ack_ok"], true, "{transport}: {seen}");
        assert_eq!(
            seen["delivered"],
            serde_json::json!([true]),
            "{transport}: {seen}"
        );
        assert_eq!(seen["commits"], 1, "{transport}: {seen}");
        assert_eq!(seen["open"], true, "{transport}: {seen}");
        let landed = by_path_requests(&receiver, &format!("/{transport}"));
        assert_eq!(landed.len(), 1, "{transport}");
        assert_eq!(
            landed[0].json().expect("JSON")["run"],
            seen["flow_run_id"],
            "{transport}"
        );
        if transport == "tcp" {
            assert_eq!(seen["without_token"], "UNAUTHENTICATED", "{seen}");
        }
        drop(sidecar);
    }
}

fn by_path_requests(receiver: &Receiver, path: &str) -> Vec<triggers_receiver::Request> {
    receiver
        .requests()
        .into_iter()
        .filter(|r| r.path == path)
        .collect()
}

/// A costly config to validate: eight triggers, each with as many expressions as a
/// template may have (about a second of work in a debug build; a config of the most
/// triggers that fit in the document costs five times that).
fn costly_config() -> String {
    let template = format!(
        "[{}0]",
        "{{json flow_run_id}},".repeat(triggers::MAX_EXPRESSIONS)
    );
    let one = serde_json::json!({"url": "https://x.example.com", "payloadTemplate": template});
    serde_json::json!({"config": vec![one; 8]}).to_string()
}

/// Issue 12: ValidateConfig ran inline on the async workers, so two slow calls made
/// Status miss its deadline. On a one-thread runtime (server and client alike), Status
/// now answers while costly validations are still running on the blocking pool; inline,
/// it could only answer once they had all finished.
#[tokio::test(flavor = "current_thread")]
async fn validate_config_and_preview_run_off_the_async_workers() {
    let receiver = Receiver::start().await.expect("receiver");
    let running = serve(&receiver, "127.0.0.1:0").await;
    let config = costly_config();
    let validations: Vec<_> = (0..3)
        .map(|_| {
            let mut client = running.client.clone();
            let config = config.clone();
            tokio::spawn(async move {
                client
                    .validate_config(ValidateConfigRequest {
                        config,
                        format: WireFormat::Json as i32,
                    })
                    .await
            })
        })
        .collect();
    // Let the server take the validations up (inline, they would hold this thread).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut client = running.client.clone();
    client
        .status(StatusRequest::default())
        .await
        .expect("Status answers");
    let pending = validations.iter().filter(|v| !v.is_finished()).count();
    assert!(pending > 0, "Status waited for every validation");
    for validation in validations {
        let reply = validation
            .await
            .expect("task")
            .expect("validates")
            .into_inner();
        assert!(reply.valid, "{:?}", reply.errors);
    }
    // Preview goes the same way, and still answers.
    client
        .preview(PreviewRequest {
            trigger: 0,
            variables: None,
            ..Default::default()
        })
        .await
        .expect("previews");
    running.stop().await;
}

/// Issue 18, item 3 (`run_id`), through the sidecar as a Go consumer drives it: the
/// `started_at` a client gives in StartCommit is the webhook's `run_id` to the
/// millisecond; one outside the documented years 1970 to 9999 is ignored for the time
/// StartCommit arrived, and a start not later than the previous one still gets a
/// `run_id` of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_id_is_the_started_at_a_consumer_gives_and_out_of_range_ones_are_ignored() {
    let receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = serde_json::json!({"config": [
        {"url": receiver.url("/run"), "payloadTemplate": r#"{"run_id": "{{run_id}}"}"#},
    ]});
    let triggers = validate(&config.to_string(), ConfigFormat::Json).expect("valid");
    let sidecar = Sidecar::new(SidecarConfig::new(
        dir.path().join("store"),
        ShardConfig::new(materialization(2), Arc::new(triggers))
            .with_network(triggers::NetworkPolicy::ALLOW_LOOPBACK)
            .with_delivery(DeliveryMode::Waiting),
    ));
    let address = format!("unix:{}", dir.path().join("sidecar.sock").display());
    let listener = Listener::bind(&address, None).await.expect("binds");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sidecar::run(sidecar, listener, async move {
        let _ = stopped.await;
    }));
    let mut client = sidecar::connect(&address, None).await.expect("connects");
    client.open(OpenRequest::default()).await.expect("opens");
    client
        .acknowledged(AcknowledgedRequest {
            wait: true,
            ..Default::default()
        })
        .await
        .expect("recovered ack");

    let before = std::time::SystemTime::now();
    let starts = [
        // 2024-05-06T07:08:09.123456Z: kept, to the millisecond.
        Some(triggers_proto::Timestamp {
            seconds: 1_714_979_289,
            nanos: 123_456_000,
        }),
        // Before 1970, and past 9999: ignored for the arrival time.
        Some(triggers_proto::Timestamp {
            seconds: -5,
            nanos: 0,
        }),
        Some(triggers_proto::Timestamp {
            seconds: 253_402_300_800,
            nanos: 0,
        }),
    ];
    for (n, started_at) in starts.into_iter().enumerate() {
        client
            .start_commit(StartCommitRequest {
                checkpoint: Some(checkpoint(n as i64 + 1)),
                stats: stats(),
                started_at,
                ..Default::default()
            })
            .await
            .expect("commits");
        client
            .acknowledged(AcknowledgedRequest {
                wait: true,
                ..Default::default()
            })
            .await
            .expect("delivers");
    }
    let run_ids: Vec<String> = receiver
        .wait_for(3, Duration::from_secs(10))
        .await
        .iter()
        .map(|r| {
            r.json().expect("JSON")["run_id"]
                .as_str()
                .expect("a string")
                .to_string()
        })
        .collect();
    assert_eq!(run_ids.len(), 3, "{run_ids:?}");
    assert_eq!(run_ids[0], "2024-05-06T07:08:09.123Z");
    let parse = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|err| panic!("{s}: {err}"))
    };
    let before = time::OffsetDateTime::from(before) - time::Duration::milliseconds(1);
    let now = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    for ignored in &run_ids[1..] {
        let at = parse(ignored);
        assert!(
            before <= at && at <= now,
            "{ignored} is not the arrival time"
        );
        assert_eq!(ignored.len(), "2024-05-06T07:08:09.123Z".len(), "{ignored}");
    }
    assert_ne!(run_ids[1], run_ids[2], "two transactions share a run_id");
    let _ = stop.send(());
    server.await.expect("task").expect("serves");
}

/// Issue 18, item 2: a pending webhook whose trigger left the config is reported in
/// Status by name and skipped over gRPC by `trigger_name` (the only way to name it: it
/// has no position); the rest of the shard commits and delivers meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_triggers_webhook_is_in_status_and_skipped_by_name() {
    let receiver = Receiver::start().await.expect("receiver");
    let named = |names: &[&str]| {
        let config = serde_json::json!({"config": names.iter().map(|name| serde_json::json!({
            "name": name,
            "url": receiver.url(&format!("/{name}")),
            "payloadTemplate": r#"{"run": "{{flow_run_id}}"}"#,
        })).collect::<Vec<_>>()});
        validate(&config.to_string(), ConfigFormat::Json).expect("valid")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // Committed with both triggers, stopped before its Acknowledged.
    {
        let config = ShardConfig::new(materialization(2), Arc::new(named(&["orders", "slack"])))
            .with_network(triggers::NetworkPolicy::ALLOW_LOOPBACK);
        let (mut shard, _) = triggers_runtime::Shard::open(dir.path().join("store"), config)
            .await
            .expect("opens");
        shard.acknowledged().await.expect("recovered ack");
        shard
            .start_commit(checkpoint(1), &stats())
            .await
            .expect("commits");
        shard.close().await;
    }
    let decoupled = DeliveryMode::default();
    let running = serve_triggers(
        dir,
        named(&["orders"]),
        "127.0.0.1:0",
        decoupled,
        Duration::from_secs(5),
    )
    .await;
    let mut client = running.client.clone();
    client.open(OpenRequest::default()).await.expect("opens");
    client
        .acknowledged(AcknowledgedRequest {
            wait: true,
            ..Default::default()
        })
        .await
        .expect("recovered ack");
    commit_and_acknowledge(&mut client, 2).await;
    let drained = client
        .await_drained(AwaitDrainedRequest::default())
        .await
        .expect("awaits")
        .into_inner();
    assert!(drained.ok, "the orphan holds nothing back: {drained:?}");
    let status = client
        .status(StatusRequest::default())
        .await
        .expect("status")
        .into_inner();
    let queues: Vec<(&str, u64)> = status
        .backlog
        .iter()
        .map(|q| (q.trigger_name.as_str(), q.delivered))
        .collect();
    assert_eq!(queues, [("orders", 2)]);
    let orphaned: Vec<(&str, u64, u64)> = status
        .orphaned
        .iter()
        .map(|o| (o.trigger_name.as_str(), o.depth, o.oldest_pending_seq))
        .collect();
    assert_eq!(orphaned, [("slack", 1, 1)]);
    let scrape = || async {
        reqwest::get(&running.metrics)
            .await
            .expect("scrapes")
            .text()
            .await
            .expect("text")
    };
    let metrics = scrape().await;
    assert!(
        metrics.contains("\ntriggers_orphaned_backlog_entries{trigger=\"slack\"} 1\n"),
        "{metrics}"
    );

    let slack = DeliveryRef {
        trigger_name: "slack".to_string(),
        first_commit_seq: 1,
        ..Default::default()
    };
    let pending = client
        .get_delivery(slack.clone())
        .await
        .expect("gets")
        .into_inner();
    assert_eq!(pending.state(), DeliveryState::Pending);
    let refused = client
        .retry_delivery(slack.clone())
        .await
        .expect_err("no trigger to send it");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused}");
    // By position there is no such trigger: a clear NOT_FOUND.
    let by_position = client
        .get_delivery(DeliveryRef {
            trigger: 1,
            first_commit_seq: 1,
            ..Default::default()
        })
        .await
        .expect_err("no trigger at position 1");
    assert_eq!(by_position.code(), Code::NotFound, "{by_position}");
    assert!(
        by_position.message().contains("trigger_name"),
        "{by_position}"
    );
    let skipped = client
        .skip_delivery(SkipDeliveryRequest {
            delivery: Some(slack),
            reason: "Slack is gone".to_string(),
        })
        .await
        .expect("skips")
        .into_inner();
    assert_eq!(
        (skipped.state(), skipped.trigger_name.as_str()),
        (DeliveryState::Cancelled, "slack")
    );
    let status = client
        .status(StatusRequest::default())
        .await
        .expect("status")
        .into_inner();
    assert!(status.orphaned.is_empty(), "{status:?}");
    let metrics = scrape().await;
    assert!(
        !metrics.contains("triggers_orphaned_backlog_entries{"),
        "a skipped orphan leaves the gauge: {metrics}"
    );
    assert!(receiver.requests().iter().all(|r| r.path == "/orders"));
    running.stop().await;
}

/// Issue 17: over gRPC, a dead-lettering trigger's failure shows in Status and in the
/// metrics and stops nothing, RetryDelivery sends the dead letter again, and
/// ReplayDeliveries sends delivered webhooks again (its bad ranges are INVALID_ARGUMENT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_show_in_status_and_metrics_and_replay_goes_over_grpc() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script("/d", [Reply::status(200), Reply::status(422)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let template = r#"{"run": "{{flow_run_id}}", "first": {{first_commit_seq}}}"#;
    let config = serde_json::json!({"config": [
        {"url": receiver.url("/d"), "payloadTemplate": template, "maxRetries": 0,
         "drain": {"mode": "ordered"}, "onFailure": "deadLetter"},
    ]});
    let triggers = validate(&config.to_string(), ConfigFormat::Json).expect("valid");
    let running = serve_triggers(
        dir,
        triggers,
        "127.0.0.1:0",
        DeliveryMode::Decoupled { backlog_limit: 10 },
        Duration::from_secs(5),
    )
    .await;
    let mut client = running.client.clone();
    client.open(OpenRequest::default()).await.expect("opens");
    client
        .acknowledged(AcknowledgedRequest {
            wait: true,
            ..Default::default()
        })
        .await
        .expect("recovered ack");
    for n in 1..=3 {
        commit_and_acknowledge(&mut client, n).await;
    }
    let drained = client
        .await_drained(AwaitDrainedRequest::default())
        .await
        .expect("drains")
        .into_inner();
    assert!(drained.ok, "a dead letter stops nothing: {drained:?}");
    let status = client
        .status(StatusRequest::default())
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.backlog[0].dead_letters, 1, "{status:?}");
    let metrics = reqwest::get(&running.metrics)
        .await
        .expect("scrapes")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("triggers_dead_letters_total{trigger=\"0\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("triggers_backlog_stopped{} 0"),
        "{metrics}"
    );

    let dead = client
        .get_delivery(DeliveryRef {
            first_commit_seq: 2,
            ..Default::default()
        })
        .await
        .expect("gets")
        .into_inner();
    assert!(
        dead.dead_letter && dead.state() == DeliveryState::Failed,
        "{dead:?}"
    );
    client
        .retry_delivery(DeliveryRef {
            first_commit_seq: 2,
            ..Default::default()
        })
        .await
        .expect("retries the dead letter");
    let replayed = client
        .replay_deliveries(ReplayDeliveriesRequest {
            first_commit_seq: 1,
            last_commit_seq: 1,
            ..Default::default()
        })
        .await
        .expect("replays")
        .into_inner();
    assert_eq!(replayed.replayed.len(), 1);
    assert_eq!(replayed.replayed[0].state(), DeliveryState::Pending);
    let drained = client
        .await_drained(AwaitDrainedRequest::default())
        .await
        .expect("drains")
        .into_inner();
    assert!(drained.ok, "{drained:?}");
    let mut firsts: Vec<(u64, String)> = by_path_requests(&receiver, "/d")
        .iter()
        .map(|r| {
            (
                r.json().expect("JSON")["first"]
                    .as_u64()
                    .unwrap_or_default(),
                r.header("webhook-reason").unwrap_or_default().to_string(),
            )
        })
        .collect();
    // The retried dead letter and the replay may go in either order.
    firsts[3..].sort();
    assert_eq!(
        firsts,
        [
            (1, "first-send".to_string()),
            (2, "first-send".to_string()),
            (3, "first-send".to_string()),
            (1, "operator-replay".to_string()),
            (2, "operator-replay".to_string()),
        ]
    );
    for (asked, why) in [
        (ReplayDeliveriesRequest::default(), "no range"),
        (
            ReplayDeliveriesRequest {
                first_commit_seq: 3,
                last_commit_seq: 2,
                ..Default::default()
            },
            "backwards",
        ),
        (
            ReplayDeliveriesRequest {
                first_commit_seq: 1,
                last_commit_seq: 2,
                committed_from: Some(triggers_proto::Timestamp::default()),
                ..Default::default()
            },
            "both ranges",
        ),
    ] {
        let err = client.replay_deliveries(asked).await.expect_err(why);
        assert_eq!(err.code(), Code::InvalidArgument, "{why}: {err}");
    }
    running.stop().await;
}
