//! Issue 16 (many shards per process): one sidecar serves every shard of its consumer,
//! each call naming its shard. Real stores on disk, a real receiver on 127.0.0.1, and one
//! real `shard-sidecar` process for the test that a hung shard stalls no other.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;
use triggers::{ConfigFormat, RetryBackoff, validate};
use triggers_proto::sidecar::{
    AcknowledgedRequest, AwaitDeliveryRequest, AwaitDrainedRequest, CloseRequest, DeliveryRef,
    ListDeliveriesRequest, OpenRequest, OpenResponse, ShardPhase, StartCommitRequest,
    StatusRequest, StatusResponse,
};
use triggers_receiver::{Receiver, Reply};
use triggers_runtime::test_support::fixtures::{checkpoint, materialization, stats_at};
use triggers_runtime::{DeliveryMode, Durability, ShardConfig, Store, StoreError};
use triggers_sidecar::SidecarConfig;

use crate::sidecar::{Running, serve_config, stats};
use crate::support;

type Client = triggers_sidecar::Client;

/// Longest a test waits for a webhook or a call: a regression fails instead of hanging.
const WAIT: Duration = Duration::from_secs(20);

const DECOUPLED: DeliveryMode = DeliveryMode::Decoupled { backlog_limit: 10 };

/// A sidecar config in `dir` with one trigger (`/a`, ordered, no name: `0` in metrics),
/// fast retries, loopback allowed and a 5 s shutdown grace.
fn config(receiver: &Receiver, dir: &Path, delivery: DeliveryMode) -> SidecarConfig {
    let triggers = serde_json::json!({"config": [
        {"url": receiver.url("/a"), "payloadTemplate": r#"{"run": "{{flow_run_id}}"}"#,
         "maxRetries": 1, "drain": {"mode": "ordered"}},
    ]});
    let triggers = validate(&triggers.to_string(), ConfigFormat::Json).expect("valid");
    let mut config = SidecarConfig::new(
        dir.join("store"),
        ShardConfig::new(materialization(2), Arc::new(triggers))
            .with_backoff(RetryBackoff::new(
                Duration::from_millis(5),
                Duration::from_millis(20),
            ))
            .with_network(triggers::NetworkPolicy::ALLOW_LOOPBACK)
            .with_delivery(delivery),
    );
    config.shutdown_grace = Duration::from_secs(5);
    config
}

/// Serves [`config`], as `tune` changes it, on a Unix socket.
async fn serve(
    receiver: &Receiver,
    delivery: DeliveryMode,
    tune: impl FnOnce(&mut SidecarConfig),
) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(receiver, dir.path(), delivery);
    tune(&mut config);
    serve_config(dir, config, "unix").await
}

fn store(running: &Running) -> PathBuf {
    running._dir.path().join("store")
}

/// Opens `shard` and acknowledges its recovered checkpoint (a consumer's first steps).
async fn open(client: &mut Client, shard: &str) -> OpenResponse {
    let opened = client
        .open(OpenRequest {
            shard: shard.to_string(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|err| panic!("opens {shard:?}: {err}"))
        .into_inner();
    client
        .acknowledged(AcknowledgedRequest {
            wait: true,
            shard: shard.to_string(),
        })
        .await
        .unwrap_or_else(|err| panic!("acknowledges {shard:?}'s recovery: {err}"));
    opened
}

/// StartCommit of transaction `n` (offset `n`) in `shard`, then Acknowledged; `wait` for
/// its outcome (which must be ok).
async fn commit(client: &mut Client, shard: &str, n: i64, wait: bool) {
    client
        .start_commit(StartCommitRequest {
            checkpoint: Some(checkpoint(n)),
            stats: stats(),
            shard: shard.to_string(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|err| panic!("commits in {shard:?}: {err}"));
    let ack = client
        .acknowledged(AcknowledgedRequest {
            wait,
            shard: shard.to_string(),
        })
        .await
        .unwrap_or_else(|err| panic!("acknowledges in {shard:?}: {err}"))
        .into_inner();
    if wait {
        let outcome = ack.outcome.expect("waited");
        assert!(outcome.ok, "{shard:?}: {outcome:?}");
    }
}

async fn status(client: &mut Client, shard: &str) -> StatusResponse {
    client
        .status(StatusRequest {
            shard: shard.to_string(),
        })
        .await
        .expect("status")
        .into_inner()
}

async fn close(client: &mut Client, shard: &str) -> bool {
    client
        .close(CloseRequest {
            shard: shard.to_string(),
        })
        .await
        .unwrap_or_else(|err| panic!("closes {shard:?}: {err}"))
        .into_inner()
        .was_open
}

/// Whether another process could open the store at `dir` right now.
fn store_is_free(dir: &Path) -> bool {
    match Store::open(dir, Durability::Synced) {
        Ok(_) => true,
        Err(StoreError::Locked { .. }) => false,
        Err(err) => panic!("cannot tell whether {} is free: {err}", dir.display()),
    }
}

/// Items 1 and 2: Open, StartCommit, Acknowledged, Status and Close name a shard; each
/// named shard has its own store under `store/shards/` (`/` written as `%2F`) and its
/// own checkpoint, beside the default shard's at `store` itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_and_close_name_a_shard() {
    let receiver = Receiver::start().await.expect("receiver");
    let running = serve(&receiver, DeliveryMode::Waiting, |_| {}).await;
    let mut client = running.client.clone();
    let shards = [("", 5), ("a", 3), ("materialize/acmeCo/x/0011/00-ff", 7)];
    for (shard, n) in shards {
        let opened = open(&mut client, shard).await;
        assert_eq!(
            opened.checkpoint,
            Some(Default::default()),
            "{shard:?} is new"
        );
        commit(&mut client, shard, n, true).await;
    }
    assert_eq!(receiver.wait_for(3, WAIT).await.len(), 3);
    for (shard, _) in shards {
        let status = status(&mut client, shard).await;
        assert!(status.open, "{shard:?}");
        // Deliveries: the recovered checkpoint's (nothing to send), then the commit's.
        assert_eq!(
            (status.commits, status.deliveries),
            (1, 2),
            "{shard:?}: {status:?}"
        );
    }
    let store = store(&running);
    assert!(store.join("shards/a").is_dir());
    assert!(
        store
            .join("shards/materialize%2FacmeCo%2Fx%2F0011%2F00-ff")
            .is_dir()
    );
    assert_eq!(
        std::fs::read_dir(store.join("shards"))
            .expect("lists")
            .count(),
        2
    );

    for (shard, _) in shards {
        assert!(close(&mut client, shard).await, "{shard:?} was open");
        assert!(!close(&mut client, shard).await, "closing twice is OK");
        assert!(!status(&mut client, shard).await.open);
    }
    // Each reopens on its own checkpoint.
    for (shard, n) in shards {
        let opened = open(&mut client, shard).await;
        assert_eq!(opened.checkpoint, Some(checkpoint(n)), "{shard:?}");
    }
    running.stop().await;
}

/// Item 2: an id outside the bound is INVALID_ARGUMENT saying the bound, on every call,
/// and makes no directory anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_ids_outside_the_bound_are_invalid_argument() {
    let receiver = Receiver::start().await.expect("receiver");
    let running = serve(&receiver, DECOUPLED, |_| {}).await;
    let mut client = running.client.clone();
    let before: Vec<_> = walk(running._dir.path());
    let long = "a".repeat(256);
    let slashes = format!("{}a", "a/".repeat(86));
    for id in [
        "/a",
        "a/",
        "a//b",
        ".",
        "..",
        "../../etc",
        "a/../../b",
        "a%2Fb",
        "a b",
        "é",
        long.as_str(),
        slashes.as_str(),
    ] {
        let bound = |err: tonic::Status| {
            assert_eq!(err.code(), Code::InvalidArgument, "{id:?}: {err}");
            assert!(err.message().contains("1 to 255 bytes"), "{id:?}: {err}");
        };
        let shard = id.to_string();
        bound(
            client
                .open(OpenRequest {
                    shard: shard.clone(),
                    ..Default::default()
                })
                .await
                .expect_err("refused"),
        );
        bound(
            client
                .start_commit(StartCommitRequest {
                    checkpoint: Some(checkpoint(1)),
                    shard: shard.clone(),
                    ..Default::default()
                })
                .await
                .expect_err("refused"),
        );
        bound(
            client
                .status(StatusRequest {
                    shard: shard.clone(),
                })
                .await
                .expect_err("refused"),
        );
        bound(
            client
                .close(CloseRequest {
                    shard: shard.clone(),
                })
                .await
                .expect_err("refused"),
        );
        bound(
            client
                .get_delivery(DeliveryRef {
                    shard,
                    ..Default::default()
                })
                .await
                .expect_err("refused"),
        );
    }
    assert_eq!(walk(running._dir.path()), before, "nothing was made");
    running.stop().await;
}

/// Every path under `dir`, sorted (the socket included).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(next) = todo.pop() {
        for entry in std::fs::read_dir(&next).expect("lists") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                todo.push(path.clone());
            }
            paths.push(path);
        }
    }
    paths.sort();
    paths
}

/// Item 2 (state in the consumer): each shard has its own in-memory state; opening one
/// never replaces another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_shard_in_the_consumer_has_its_own_state() {
    let receiver = Receiver::start().await.expect("receiver");
    let running = serve(&receiver, DeliveryMode::Waiting, |config| {
        config.state_in_consumer = true;
    })
    .await;
    let mut client = running.client.clone();
    open(&mut client, "a").await;
    let committed = client
        .start_commit(StartCommitRequest {
            checkpoint: Some(checkpoint(1)),
            stats: stats(),
            shard: "a".to_string(),
            ..Default::default()
        })
        .await
        .expect("commits")
        .into_inner();
    assert!(
        committed.triggers_persisted && !committed.state_ops.is_empty(),
        "{committed:?}"
    );
    let other = open(&mut client, "b").await;
    assert!(
        !other.triggers_pending,
        "b has a state of its own: {other:?}"
    );
    assert!(status(&mut client, "a").await.triggers_pending);
    // a's consumer holds a's writes: reopening a with them recovers its transaction.
    let state = committed
        .state_ops
        .iter()
        .filter(|op| !op.delete)
        .map(|op| triggers_proto::sidecar::StateEntry {
            key: op.key.clone(),
            value: op.value.clone(),
        })
        .collect();
    let reopened = client
        .open(OpenRequest {
            state,
            shard: "a".to_string(),
        })
        .await
        .expect("reopens")
        .into_inner();
    assert_eq!(reopened.pending_flow_run_id, committed.flow_run_id);
    assert!(!status(&mut client, "b").await.triggers_pending);
    assert!(
        walk(running._dir.path())
            .iter()
            .all(|path| !path.starts_with(store(&running))),
        "nothing is written under --store"
    );
    running.stop().await;
}

/// Item 3: every shard sends with one HTTP client. Three shards' webhooks, one after
/// another, to one receiver reuse one connection (a client per shard opened three).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_shards_share_one_http_client() {
    let receiver = Receiver::start().await.expect("receiver");
    let running = serve(&receiver, DeliveryMode::Waiting, |_| {}).await;
    let mut client = running.client.clone();
    for (n, shard) in ["a", "b", "c"].into_iter().enumerate() {
        open(&mut client, shard).await;
        commit(&mut client, shard, n as i64 + 1, true).await;
    }
    assert_eq!(receiver.wait_for(3, WAIT).await.len(), 3);
    assert_eq!(
        receiver.connections(),
        1,
        "one connection pool for all shards"
    );
    running.stop().await;
}

/// Item 3: a shard not open here answers FAILED_PRECONDITION naming it, on every
/// per-shard call; Status answers it closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_not_open_answers_failed_precondition_naming_it() {
    let receiver = Receiver::start().await.expect("receiver");
    let running = serve(&receiver, DECOUPLED, |_| {}).await;
    let mut client = running.client.clone();
    open(&mut client, "open").await;
    let shard = || "nope".to_string();
    let not_open = |err: tonic::Status| {
        assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
        assert!(
            err.message().contains("shard \"nope\" is not open here"),
            "{err}"
        );
    };
    not_open(
        client
            .start_commit(StartCommitRequest {
                checkpoint: Some(checkpoint(1)),
                shard: shard(),
                ..Default::default()
            })
            .await
            .expect_err("not open"),
    );
    not_open(
        client
            .acknowledged(AcknowledgedRequest {
                wait: true,
                shard: shard(),
            })
            .await
            .expect_err("not open"),
    );
    not_open(
        client
            .await_delivery(AwaitDeliveryRequest {
                delivery_id: 1,
                shard: shard(),
            })
            .await
            .expect_err("not open"),
    );
    not_open(
        client
            .await_drained(AwaitDrainedRequest { shard: shard() })
            .await
            .expect_err("not open"),
    );
    not_open(
        client
            .list_deliveries(ListDeliveriesRequest {
                shard: shard(),
                ..Default::default()
            })
            .await
            .expect_err("not open"),
    );
    not_open(
        client
            .retry_delivery(DeliveryRef {
                shard: shard(),
                ..Default::default()
            })
            .await
            .expect_err("not open"),
    );
    let closed = status(&mut client, "nope").await;
    assert!(!closed.open);
    assert_eq!(closed.phase(), ShardPhase::Closed);
    // Nothing of it was made, and the default shard is still the one of old.
    assert!(!store(&running).join("shards/nope").exists());
    let err = client
        .start_commit(StartCommitRequest {
            checkpoint: Some(checkpoint(1)),
            ..Default::default()
        })
        .await
        .expect_err("not open");
    assert_eq!(err.message(), "the shard is not open: call Open first");
    running.stop().await;
}

/// Item 3: past `max_shards` named shards an Open is RESOURCE_EXHAUSTED; the default
/// shard is not counted, a reopen needs no new place, and a Close (or a failed Open)
/// frees one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_past_max_shards_is_resource_exhausted() {
    let receiver = Receiver::start().await.expect("receiver");
    let running = serve(&receiver, DECOUPLED, |config| config.max_shards = 2).await;
    let mut client = running.client.clone();
    open(&mut client, "a").await;
    open(&mut client, "b").await;
    let err = client
        .open(OpenRequest {
            shard: "c".to_string(),
            ..Default::default()
        })
        .await
        .expect_err("past max_shards");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(!store(&running).join("shards/c").exists());
    open(&mut client, "").await;
    open(&mut client, "a").await;
    assert!(close(&mut client, "b").await);
    open(&mut client, "c").await;
    running.stop().await;
}

/// Item 4: Open of a shard open here reopens it alone: another shard's webhook in flight
/// and its AwaitDrained go on (not ABORTED), and the reopened one recovers its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_of_an_open_shard_reopens_it_alone() {
    let receiver = Receiver::start().await.expect("receiver");
    let running = serve(&receiver, DECOUPLED, |_| {}).await;
    let mut client = running.client.clone();
    open(&mut client, "a").await;
    commit(&mut client, "a", 4, true).await;
    assert_eq!(receiver.wait_for(1, WAIT).await.len(), 1);
    open(&mut client, "b").await;
    // b's webhook is held for 2 s (less than the grace).
    receiver.script("/a", [Reply::status(200).after(Duration::from_secs(2))]);
    commit(&mut client, "b", 9, true).await;
    assert_eq!(receiver.wait_for(2, WAIT).await.len(), 2);
    let mut waiter = client.clone();
    let drained = tokio::spawn(async move {
        waiter
            .await_drained(AwaitDrainedRequest {
                shard: "b".to_string(),
            })
            .await
    });

    let reopened = open(&mut client, "a").await;
    assert_eq!(reopened.checkpoint, Some(checkpoint(4)));
    let drained = tokio::time::timeout(WAIT, drained)
        .await
        .expect("b drains")
        .expect("joins")
        .expect("b's waiter was not ended by a's reopen")
        .into_inner();
    assert!(drained.ok, "{drained:?}");
    assert_eq!(status(&mut client, "b").await.backlog[0].delivered, 1);
    running.stop().await;
}

/// Item 4: Open of a shard whose store another process holds answers UNAVAILABLE (as
/// the default shard always has: call again once it lets go), naming the shard and the
/// store; the failed Open holds no place, and once the store is free it opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_of_a_shard_another_process_holds_is_unavailable() {
    let receiver = Receiver::start().await.expect("receiver");
    let running = serve(&receiver, DECOUPLED, |config| config.max_shards = 1).await;
    let mut client = running.client.clone();
    let dir = store(&running).join("shards/x");
    std::fs::create_dir_all(&dir).expect("makes the directory");
    // Another process, in production.
    let held = Store::open(&dir, Durability::Synced).expect("opens");
    let err = client
        .open(OpenRequest {
            shard: "x".to_string(),
            ..Default::default()
        })
        .await
        .expect_err("held elsewhere");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(
        err.message().starts_with("shard \"x\": ")
            && err.message().contains("already open by another process"),
        "{err}"
    );
    assert!(!status(&mut client, "x").await.open);
    // The failed Open left no slot behind: the one place is free.
    open(&mut client, "y").await;
    assert!(close(&mut client, "y").await);
    drop(held);
    open(&mut client, "x").await;
    running.stop().await;
}

/// Item 4: Open of a named shard whose waiting delivery outlasts the grace answers
/// UNAVAILABLE within the grace, as the default shard's does, leaving the shard open and
/// its delivery going on (the clean-up of a failed Open must not wait for the delivery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_a_waiting_delivery_outlasts_answers_within_the_grace() {
    let receiver = Receiver::start().await.expect("receiver");
    let running = serve(&receiver, DeliveryMode::Waiting, |config| {
        config.shutdown_grace = Duration::from_millis(300);
    })
    .await;
    let mut client = running.client.clone();
    open(&mut client, "a").await;
    receiver.script("/a", [Reply::status(200).after(Duration::from_secs(10))]);
    commit(&mut client, "a", 1, false).await;
    assert_eq!(receiver.wait_for(1, WAIT).await.len(), 1);
    let err = client
        .open(OpenRequest {
            shard: "a".to_string(),
            ..Default::default()
        })
        .await
        .expect_err("the delivery outlasts the grace");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    let held = status(&mut client, "a").await;
    assert!(held.open, "{held:?}");
    assert_eq!(
        held.phase(),
        ShardPhase::Delivering,
        "Open answered while the delivery still runs: {held:?}"
    );
    running.stop().await;
}

/// Item 4: concurrent Opens and Closes of one shard are serialized: every Open
/// succeeds (none finds the store locked by another Open of the same shard), and
/// whenever the calls are done the store is held exactly when Status says it is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_and_closes_of_one_shard_never_leave_its_store_held() {
    let receiver = Receiver::start().await.expect("receiver");
    let running = serve(&receiver, DECOUPLED, |_| {}).await;
    let mut client = running.client.clone();
    let dir = store(&running).join("shards/a");
    for round in 0..24 {
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let mut client = client.clone();
                tokio::spawn(async move {
                    let shard = "a".to_string();
                    if (i + round) % 3 == 2 {
                        client.close(CloseRequest { shard }).await.map(|_| ())
                    } else {
                        client
                            .open(OpenRequest {
                                shard,
                                ..Default::default()
                            })
                            .await
                            .map(|_| ())
                    }
                })
            })
            .collect();
        for call in calls {
            tokio::time::timeout(WAIT, call)
                .await
                .expect("in time")
                .expect("joins")
                .unwrap_or_else(|err| panic!("round {round}: {err}"));
        }
        let open = status(&mut client, "a").await.open;
        assert_eq!(store_is_free(&dir), !open, "round {round}: open {open}");
    }
    running.stop().await;
}

/// Item 5: Close releases the store at once (another process may open it the moment
/// Close returns); a second Close is OK; the shard's calls then answer not open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_releases_the_store_at_once() {
    let receiver = Receiver::start().await.expect("receiver");
    let running = serve(&receiver, DECOUPLED, |_| {}).await;
    let mut client = running.client.clone();
    let dir = store(&running).join("shards/a");
    open(&mut client, "a").await;
    open(&mut client, "b").await;
    commit(&mut client, "a", 2, true).await;
    assert!(!store_is_free(&dir), "held while open");
    assert!(close(&mut client, "a").await);
    let reopened = Store::open(&dir, Durability::Synced).expect("free at once");
    assert_eq!(reopened.checkpoint().expect("reads"), checkpoint(2));
    drop(reopened);
    assert!(!close(&mut client, "a").await, "idempotent");
    let err = client
        .acknowledged(AcknowledgedRequest {
            wait: true,
            shard: "a".to_string(),
        })
        .await
        .expect_err("closed");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(status(&mut client, "b").await.open, "b is untouched");
    running.stop().await;
}

/// Item 5: a shard closed with a webhook in flight (the receiver holding it past the
/// grace) keeps its entry persisted, and fires it again when reopened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_closed_with_a_webhook_in_flight_fires_again_when_reopened() {
    let receiver = Receiver::start().await.expect("receiver");
    let running = serve(&receiver, DECOUPLED, |config| {
        config.shutdown_grace = Duration::from_millis(300);
    })
    .await;
    let mut client = running.client.clone();
    open(&mut client, "a").await;
    receiver.script("/a", [Reply::status(200).after(Duration::from_secs(60))]);
    commit(&mut client, "a", 1, true).await;
    let first = receiver.wait_for(1, WAIT).await;
    assert_eq!(first.len(), 1);
    assert!(close(&mut client, "a").await, "closes within the grace");
    assert!(store_is_free(&store(&running).join("shards/a")));

    let reopened = open(&mut client, "a").await;
    assert_eq!(reopened.checkpoint, Some(checkpoint(1)));
    let drained = client
        .await_drained(AwaitDrainedRequest {
            shard: "a".to_string(),
        })
        .await
        .expect("drains")
        .into_inner();
    assert!(drained.ok, "{drained:?}");
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2, "fired again");
    assert_eq!(
        requests[1].header("webhook-id"),
        first[0].header("webhook-id"),
        "the same webhook"
    );
    running.stop().await;
}

/// Item 5: stopping the sidecar (process shutdown) closes every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_sidecar_closes_every_shard() {
    let receiver = Receiver::start().await.expect("receiver");
    let running = serve(&receiver, DECOUPLED, |_| {}).await;
    let mut client = running.client.clone();
    let store = store(&running);
    let dirs = [
        store.clone(),
        store.join("shards/a"),
        store.join("shards/b"),
    ];
    for shard in ["", "a", "b"] {
        open(&mut client, shard).await;
    }
    assert!(dirs.iter().all(|dir| !store_is_free(dir)));
    // The stores outlive the sidecar: its temp dir is kept here.
    let mut running = running;
    let kept = std::mem::replace(&mut running._dir, tempfile::tempdir().expect("tempdir"));
    running.stop().await;
    for dir in dirs {
        assert!(store_is_free(&dir), "{} released", dir.display());
    }
    drop(kept);
}

/// Item 6: per-trigger backlog gauges of a named shard carry its `shard` label; the
/// default shard's series are unlabelled as before; a closed shard's series leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_shards_backlog_gauges_carry_a_shard_label() {
    let receiver = Receiver::start().await.expect("receiver");
    let running = serve(&receiver, DECOUPLED, |_| {}).await;
    let mut client = running.client.clone();
    open(&mut client, "").await;
    open(&mut client, "m/1").await;
    receiver.script("/a", [Reply::status(200).after(Duration::from_secs(60))]);
    commit(&mut client, "m/1", 1, true).await;
    assert_eq!(receiver.wait_for(1, WAIT).await.len(), 1);
    let scrape = || async {
        reqwest::get(&running.metrics)
            .await
            .expect("scrapes")
            .text()
            .await
            .expect("body")
    };
    let metrics = scrape().await;
    assert!(
        metrics.contains("\ntriggers_backlog_depth{shard=\"m/1\",trigger=\"0\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\ntriggers_backlog_depth{trigger=\"0\"} 0\n"),
        "{metrics}"
    );
    assert!(close(&mut client, "m/1").await);
    let metrics = scrape().await;
    assert!(!metrics.contains("shard=\"m/1\""), "{metrics}");
    assert!(
        metrics.contains("\ntriggers_commits_total 1\n"),
        "{metrics}"
    );
    running.stop().await;
}

/// Item 7 (and the issue's own test): one named shard's endpoint hangs (the receiver
/// holds its request) while 99 other shards of the same `shard-sidecar` process each
/// commit three transactions back to back and get their webhooks delivered: a shard that
/// fails never stalls the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_shard_never_stalls_the_others() {
    const OTHERS: u64 = 99;
    const TRANSACTIONS: u64 = 3;
    let receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("triggers.json");
    let triggers = serde_json::json!({"config": [
        {"url": receiver.url("/a"), "payloadTemplate": "{\"run\": \"{{flow_run_id}}\"}",
         "timeoutSecs": 300},
    ]});
    std::fs::write(&config, triggers.to_string()).expect("writes");
    let sidecar = support::start_sidecar(dir.path(), &config, &[], &[]).await;
    let mut client = triggers_sidecar::connect(&sidecar.address, None)
        .await
        .expect("connects");
    // Opens `shard` and commits transactions `first..first + count`, each acknowledged
    // (waiting for its outcome when `wait`); the outcomes.
    let drive = |mut client: Client, shard: String, first: u64, count: u64, wait: bool| async move {
        client
            .open(OpenRequest {
                shard: shard.clone(),
                ..Default::default()
            })
            .await?;
        client
            .acknowledged(AcknowledgedRequest {
                wait: true,
                shard: shard.clone(),
            })
            .await?;
        let mut outcomes = Vec::new();
        for n in first..first + count {
            client
                .start_commit(StartCommitRequest {
                    checkpoint: Some(checkpoint(n as i64)),
                    stats: stats_at(n, &[0]),
                    shard: shard.clone(),
                    ..Default::default()
                })
                .await?;
            let ack = client
                .acknowledged(AcknowledgedRequest {
                    wait,
                    shard: shard.clone(),
                })
                .await?
                .into_inner();
            outcomes.extend(ack.outcome);
        }
        Ok::<_, tonic::Status>(outcomes)
    };

    // The hung shard's webhook is held far longer than the test runs.
    receiver.script("/a", [Reply::status(200).after(Duration::from_secs(600))]);
    drive(client.clone(), "hung".to_string(), 1, 1, false)
        .await
        .expect("the hung shard commits");
    assert_eq!(receiver.wait_for(1, WAIT).await.len(), 1);

    let others: Vec<_> = (0..OTHERS)
        .map(|i| {
            let client = client.clone();
            let first = 10 + i * TRANSACTIONS;
            tokio::spawn(drive(
                client,
                format!("other/{i}"),
                first,
                TRANSACTIONS,
                true,
            ))
        })
        .collect();
    for (i, other) in others.into_iter().enumerate() {
        let outcomes = tokio::time::timeout(WAIT, other)
            .await
            .unwrap_or_else(|_| panic!("shard other/{i} stalled"))
            .expect("joins")
            .unwrap_or_else(|err| panic!("other/{i}: {err}"));
        assert_eq!(outcomes.len() as u64, TRANSACTIONS, "other/{i}");
        for outcome in outcomes {
            assert!(outcome.ok, "other/{i}: {outcome:?}");
            assert_eq!(
                outcome.triggers.len(),
                1,
                "other/{i} delivered: {outcome:?}"
            );
        }
    }
    assert_eq!(
        receiver.requests().len() as u64,
        1 + OTHERS * TRANSACTIONS,
        "one webhook per transaction"
    );
    let hung = status(&mut client, "hung").await;
    assert_eq!(hung.phase(), ShardPhase::Delivering, "still held: {hung:?}");
    assert_eq!(
        hung.deliveries, 1,
        "only its recovered checkpoint's finished"
    );
}

/// The threads named `shard-store` a process has now, from `/proc/<pid>/task`: the store
/// pool's, and RocksDB's timer thread, which the first store open (on a pool thread)
/// starts without a name of its own, so it inherits that one.
fn store_threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("lists the process's threads")
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.trim() == "shard-store")
        })
        .count()
}

/// Issue 16: `TRIGGERS_STORE_THREADS` bounds a real sidecar's store threads however many
/// of its shards commit at once; a value out of its bounds is refused with a warning
/// naming the variable, and the default serves. 24 shards commit (synced, so their
/// store calls wait on the disk together) at once, which fills the default's 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_thread_bound_comes_from_the_environment() {
    const SHARDS: i64 = 24;
    for (value, bound) in [(Some("2"), 2), (Some("many"), 8), (None, 8)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("triggers.json");
        std::fs::write(&config, r#"{"config": []}"#).expect("writes");
        let env: Vec<(&str, &str)> = value
            .map(|value| ("TRIGGERS_STORE_THREADS", value))
            .into_iter()
            .collect();
        let sidecar = support::start_sidecar(dir.path(), &config, &[], &env).await;
        let pid = sidecar.child.id().expect("running");
        let client = triggers_sidecar::connect(&sidecar.address, None)
            .await
            .expect("connects");
        let shards: Vec<_> = (0..SHARDS)
            .map(|i| {
                let mut client = client.clone();
                tokio::spawn(async move {
                    let shard = format!("shard/{i}");
                    open(&mut client, &shard).await;
                    for n in 1..=5 {
                        commit(&mut client, &shard, i * 10 + n, true).await;
                    }
                })
            })
            .collect();
        let mut most = 0;
        for shard in shards {
            tokio::time::timeout(WAIT, shard)
                .await
                .expect("the shard commits")
                .expect("joins");
            most = most.max(store_threads_of(pid));
        }
        let threads = store_threads_of(pid);
        assert!(
            threads >= 2 && most.max(threads) <= bound + 1,
            "TRIGGERS_STORE_THREADS={value:?}: {threads} threads named shard-store ({most} at \
             most seen), for a bound of {bound} and RocksDB's timer"
        );
        if bound > 2 {
            // The same load with the default bound takes more than 2: the test can tell.
            assert!(most > 3, "{value:?}: only {most} threads named shard-store");
        }
        let log = std::fs::read_to_string(dir.path().join("sidecar.log")).expect("reads the log");
        assert_eq!(
            log.contains("TRIGGERS_STORE_THREADS is not a number"),
            value == Some("many"),
            "{value:?}: {log}"
        );
    }
}
