//! The shard state machine on a real RocksDB in a temp dir, delivering to a real receiver
//! on 127.0.0.1.

use std::sync::Arc;
use std::time::Duration;
use triggers::{Clock, ConfigFormat, Triggers, validate};
use triggers_proto::{BindingStats, Checkpoint, Message as _, TriggerParams};
use triggers_receiver::{Receiver, Reply};
use triggers_runtime::test_support::RawStore as _;
use triggers_runtime::test_support::fixtures::{
    checkpoint, drained, loopback_shard, materialization,
};
use triggers_runtime::{
    BacklogError, Durability, ProtocolError, Shard, ShardConfig, ShardError, Store, StoreError,
    TransactionStats, store::TRIGGER_PARAMS_KEY,
};

/// Two triggers, `/a` and `/b`, echoing every variable.
fn two_triggers(receiver: &Receiver, max_retries: u32) -> Arc<Triggers> {
    let template = r#"{"name": "{{materialization_name}}", "collections": {{json collection_names}}, "image": "{{connector_image}}", "min": "{{flow_published_at_min}}", "max": "{{flow_published_at_max}}", "run": "{{flow_run_id}}"}"#;
    let config = serde_json::json!({"config": [
        {"url": receiver.url("/a"), "payloadTemplate": template, "maxRetries": max_retries,
         "headers": {"Authorization": "Bearer hunter2"}},
        {"url": receiver.url("/b"), "payloadTemplate": template, "maxRetries": max_retries},
    ]});
    Arc::new(validate(&config.to_string(), ConfigFormat::Json).expect("valid config"))
}

fn config(triggers: Arc<Triggers>) -> ShardConfig {
    loopback_shard(materialization(2), triggers)
        .with_delivery(triggers_runtime::DeliveryMode::Waiting)
}

/// A transaction that read three orders and a customer.
fn stats() -> Vec<BindingStats> {
    let mut stats = TransactionStats::default();
    for (binding, seconds, nanos) in [(0, 100, 500), (1, 50, 0), (0, 200, 1_234_500), (0, 150, 0)] {
        stats.add_document(
            binding,
            Clock::from_unix(1_700_000_000 + seconds, nanos),
            64,
        );
    }
    stats.take()
}

async fn open(
    dir: &tempfile::TempDir,
    triggers: Arc<Triggers>,
) -> (Shard, triggers_runtime::Recovery) {
    Shard::open(dir.path(), config(triggers))
        .await
        .expect("opens")
}

#[tokio::test]
async fn happy_path_delivers_two_triggers_then_deletes_the_params() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let (mut shard, recovery) = open(&dir, two_triggers(&receiver, 0)).await;
    assert_eq!(recovery.checkpoint, Checkpoint::default());
    assert_eq!(recovery.pending, None);
    shard
        .acknowledged()
        .await
        .expect("acknowledge the empty recovery");

    let commit = shard
        .start_commit(checkpoint(100), &stats())
        .await
        .expect("commits");
    let variables = commit.variables.expect("documents were read");
    assert!(shard.has_pending_triggers());
    assert!(
        receiver.requests().is_empty(),
        "nothing fires before Acknowledged"
    );

    let ack = shard.acknowledged().await.expect("delivers");
    assert_eq!(ack.delivered.len(), 2);
    assert_eq!(ack.variables.as_ref(), Some(&variables));
    assert!(!shard.has_pending_triggers());

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.header("webhook-reason"), Some("first-send"));
        assert_eq!(
            request.json().expect("JSON"),
            serde_json::json!({
                "name": "acmeCo/orders/postgres",
                "collections": ["acmeCo/orders", "acmeCo/customers"],
                "image": "ghcr.io/estuary/materialize-postgres:v1",
                "min": "2023-11-14T22:14:10Z",
                "max": "2023-11-14T22:16:40.0012345Z",
                "run": variables.flow_run_id,
            })
        );
    }
    drop(shard);
    let store = Store::open(dir.path(), Durability::Synced).expect("reopens");
    assert_eq!(store.trigger_params().expect("reads"), None);
    assert_eq!(store.checkpoint().expect("reads"), checkpoint(100));
}

#[tokio::test]
async fn a_receiver_failing_then_succeeding_is_retried_within_one_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script("/a", [Reply::status(503), Reply::status(500)]);
    let (mut shard, _) = open(&dir, two_triggers(&receiver, 3)).await;
    shard.acknowledged().await.expect("recovery ack");
    shard
        .start_commit(checkpoint(1), &stats())
        .await
        .expect("commits");
    let ack = shard.acknowledged().await.expect("delivers after retries");
    let attempts: Vec<u32> = ack.delivered.iter().map(|d| d.attempts).collect();
    assert_eq!(attempts, [3, 1]);
}

#[tokio::test]
async fn recovery_after_a_drop_between_start_commit_and_acknowledged_fires_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let committed = {
        let (mut shard, _) = open(&dir, two_triggers(&receiver, 0)).await;
        shard.acknowledged().await.expect("recovery ack");
        let commit = shard
            .start_commit(checkpoint(7), &stats())
            .await
            .expect("commits");
        commit.variables.expect("has variables")
        // Dropped here: the process "crashes" before Acknowledged.
    };
    assert!(receiver.requests().is_empty());

    let (mut shard, recovery) = open(&dir, two_triggers(&receiver, 0)).await;
    assert_eq!(recovery.checkpoint, checkpoint(7));
    assert_eq!(recovery.pending.as_ref(), Some(&committed));
    assert!(shard.has_pending_triggers());

    // The recovered params must be delivered before a new commit could overwrite them.
    let err = shard
        .start_commit(checkpoint(8), &stats())
        .await
        .expect_err("refused");
    assert!(matches!(
        err,
        ShardError::Protocol(ProtocolError::CommitBeforeRecoveryAcknowledged)
    ));

    let ack = shard
        .acknowledged()
        .await
        .expect("fires the recovered params");
    assert_eq!(ack.variables.as_ref(), Some(&committed));
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2, "fired once per trigger");
    for request in requests {
        assert_eq!(
            request.json().expect("JSON")["run"],
            committed.flow_run_id.as_str()
        );
        // Receivers learn this may be a duplicate.
        assert_eq!(request.header("webhook-reason"), Some("recovery-refire"));
    }

    // The next transaction proceeds normally.
    shard
        .start_commit(checkpoint(8), &stats())
        .await
        .expect("commits");
    shard.acknowledged().await.expect("delivers");
    assert_eq!(receiver.requests().len(), 4);
}

#[tokio::test]
async fn reopening_after_delivery_does_not_fire_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    {
        let (mut shard, _) = open(&dir, two_triggers(&receiver, 0)).await;
        shard.acknowledged().await.expect("recovery ack");
        shard
            .start_commit(checkpoint(3), &stats())
            .await
            .expect("commits");
        shard.acknowledged().await.expect("delivers");
    }
    assert_eq!(receiver.requests().len(), 2);

    let (mut shard, recovery) = open(&dir, two_triggers(&receiver, 0)).await;
    assert_eq!(recovery.pending, None);
    assert_eq!(recovery.checkpoint, checkpoint(3));
    let ack = shard.acknowledged().await.expect("nothing to deliver");
    assert!(ack.delivered.is_empty());
    assert_eq!(receiver.requests().len(), 2, "no second firing");
}

#[tokio::test]
async fn a_transaction_without_documents_fires_nothing_and_writes_no_params() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let (mut shard, _) = open(&dir, two_triggers(&receiver, 0)).await;
    shard.acknowledged().await.expect("recovery ack");
    let idle = [BindingStats {
        binding: 1,
        ..Default::default()
    }];
    let commit = shard
        .start_commit(checkpoint(9), &idle)
        .await
        .expect("commits");
    assert_eq!(commit.variables, None);
    assert!(!shard.has_pending_triggers());
    let ack = shard.acknowledged().await.expect("acks");
    assert!(ack.delivered.is_empty());
    drop(shard);

    let store = Store::open(dir.path(), Durability::Synced).expect("reopens");
    assert_eq!(store.trigger_params().expect("reads"), None);
    assert_eq!(store.checkpoint().expect("reads"), checkpoint(9));
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn a_permanent_failure_keeps_the_params_and_a_fixed_config_delivers_them_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script("/a", [Reply::status(401).with_body("bad credentials")]);
    let committed = {
        let (mut shard, _) = open(&dir, two_triggers(&receiver, 3)).await;
        shard.acknowledged().await.expect("recovery ack");
        let commit = shard
            .start_commit(checkpoint(5), &stats())
            .await
            .expect("commits");
        let err = shard.acknowledged().await.expect_err("401 is permanent");
        let text = err.to_string();
        assert!(text.contains("trigger 0 (http://127.0.0.1:"), "{text}");
        assert!(
            text.contains("HTTP 401") && text.contains("bad credentials"),
            "{text}"
        );
        assert!(text.contains("stay in the store"), "{text}");
        assert!(!text.contains("hunter2") && !format!("{err:?}").contains("hunter2"));
        // The shard is failed: it must be reopened.
        assert!(matches!(
            shard.start_commit(checkpoint(6), &stats()).await,
            Err(ShardError::Protocol(ProtocolError::Failed))
        ));
        commit.variables.expect("has variables")
    };

    // The credential is fixed (here: the receiver now accepts); the persisted variables,
    // not a stale rendered payload, fire again with the current config.
    let before = receiver.requests().len();
    let (mut shard, recovery) = open(&dir, two_triggers(&receiver, 3)).await;
    assert_eq!(recovery.pending.as_ref(), Some(&committed));
    shard.acknowledged().await.expect("delivered now");
    let refired = &receiver.requests()[before..];
    assert_eq!(refired.len(), 2);
    assert!(
        refired
            .iter()
            .all(|r| r.json().expect("JSON")["run"] == committed.flow_run_id.as_str())
    );
}

#[tokio::test]
async fn misuse_is_a_typed_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let (mut shard, _) = open(&dir, two_triggers(&receiver, 0)).await;
    shard.acknowledged().await.expect("recovery ack");
    assert!(matches!(
        shard.acknowledged().await,
        Err(ShardError::Protocol(
            ProtocolError::AcknowledgedWithoutCommit
        ))
    ));
    shard
        .start_commit(checkpoint(1), &[])
        .await
        .expect("commits");
    assert!(matches!(
        shard.start_commit(checkpoint(2), &[]).await,
        Err(ShardError::Protocol(
            ProtocolError::CommitBeforeAcknowledged
        ))
    ));
    // Stats naming a binding that does not exist: refused, nothing written.
    shard.acknowledged().await.expect("acks");
    let bad = [BindingStats {
        binding: 7,
        docs: 1,
        bytes: 1,
        first_clock: 1,
        last_clock: 1,
    }];
    assert!(matches!(
        shard.start_commit(checkpoint(3), &bad).await,
        Err(ShardError::Stats(_))
    ));
    shard
        .start_commit(checkpoint(3), &stats())
        .await
        .expect("still usable");
}

#[tokio::test]
async fn without_triggers_nothing_is_persisted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let none = Arc::new(validate("config: []", ConfigFormat::Yaml).expect("valid"));
    let (mut shard, _) = open(&dir, none).await;
    shard.acknowledged().await.expect("recovery ack");
    let commit = shard
        .start_commit(checkpoint(1), &stats())
        .await
        .expect("commits");
    assert_eq!(commit.variables, None);
    drop(shard);
    let store = Store::open(dir.path(), Durability::Synced).expect("reopens");
    assert_eq!(store.trigger_params().expect("reads"), None);
}

#[tokio::test]
async fn corrupt_or_future_params_on_disk_fail_open_with_a_typed_error() {
    let receiver = Receiver::start().await.expect("receiver");

    let dir = tempfile::tempdir().expect("tempdir");
    Store::open(dir.path(), Durability::Synced)
        .expect("opens")
        .put_raw_for_tests(TRIGGER_PARAMS_KEY, b"\xff\xff\xff\xff")
        .expect("plants garbage");
    let err = Shard::open(dir.path(), config(two_triggers(&receiver, 0)))
        .await
        .expect_err("corrupt");
    assert!(
        matches!(err, ShardError::Store(StoreError::Corrupt { .. })),
        "{err}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let future = TriggerParams {
        version: triggers_proto::TRIGGER_PARAMS_VERSION + 1,
        ..Default::default()
    };
    Store::open(dir.path(), Durability::Synced)
        .expect("opens")
        .put_raw_for_tests(TRIGGER_PARAMS_KEY, &future.encode_to_vec())
        .expect("plants a future version");
    let err = Shard::open(dir.path(), config(two_triggers(&receiver, 0)))
        .await
        .expect_err("newer version");
    assert!(err.to_string().contains("upgrade the runtime"), "{err}");
}

#[tokio::test]
async fn unsynced_durability_still_commits_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let mut unsynced = config(two_triggers(&receiver, 0));
    unsynced.durability = Durability::Unsynced;
    {
        let (mut shard, _) = Shard::open(dir.path(), unsynced).await.expect("opens");
        shard.acknowledged().await.expect("recovery ack");
        shard
            .start_commit(checkpoint(11), &stats())
            .await
            .expect("commits");
    }
    let (_, recovery) = open(&dir, two_triggers(&receiver, 0)).await;
    assert_eq!(recovery.checkpoint, checkpoint(11));
    assert!(recovery.pending.is_some());
}

/// Run as a child process by `a_second_process_opening_the_store_gets_a_clear_error`;
/// does nothing otherwise.
#[test]
fn child_opens_store() {
    let Ok(path) = std::env::var("TRIGGERS_TEST_CHILD_STORE") else {
        return;
    };
    match Store::open(&path, Durability::Synced) {
        Ok(_) => println!("CHILD: opened"),
        Err(err) => println!("CHILD: {err}"),
    }
}

#[test]
fn a_second_process_opening_the_store_gets_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _store = Store::open(dir.path(), Durability::Synced).expect("opens");
    // The child's test name within this binary: its module path without the crate's.
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let child = format!("{module}::child_opens_store");
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", &child, "--nocapture", "--test-threads=1"])
        .env("TRIGGERS_TEST_CHILD_STORE", dir.path())
        .output()
        .expect("child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("CHILD: store") && stdout.contains("already open by another process"),
        "{stdout}"
    );
}

/// Bounds every wait of the tests below, so a regression fails instead of hanging.
const WAIT: Duration = Duration::from_secs(20);

fn decoupled(triggers: Arc<Triggers>) -> ShardConfig {
    config(triggers).with_delivery(triggers_runtime::DeliveryMode::Decoupled { backlog_limit: 10 })
}

/// Issue 12: closing or reopening a shard ends every waiter on the old one at once, with
/// an error (a `drained` waiter on a backlog handle used to wait forever, holding the
/// store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_shard_ends_every_drained_waiter_at_once_with_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    // Never answered while the test runs.
    receiver.set_default(Reply::status(200).after(Duration::from_secs(60)));
    let triggers = two_triggers(&receiver, 0);
    let (mut shard, _) = Shard::open(dir.path(), decoupled(triggers.clone()))
        .await
        .expect("opens");
    shard.acknowledged().await.expect("recovery ack");
    shard
        .start_commit(checkpoint(1), &stats())
        .await
        .expect("commits");
    shard.acknowledged().await.expect("queues");
    assert_eq!(receiver.wait_for(2, WAIT).await.len(), 2);
    let handle = shard.backlog_handle().expect("decoupled");
    let waiter = tokio::spawn({
        let handle = handle.clone();
        async move { handle.drained().await }
    });

    shard.close().await;
    let ended = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("the waiter ends with its shard")
        .expect("task");
    let err = ended.expect_err("the backlog did not drain");
    assert!(matches!(err, BacklogError::Closed), "{err}");
    drop(handle);

    // The webhooks cut off stay persisted and fire again.
    let (_, recovery) = Shard::open(dir.path(), decoupled(triggers))
        .await
        .expect("reopens");
    assert_eq!(recovery.backlog, 2);
}

/// Issue 12: a StartCommit before the recovered Acknowledged was accepted when nothing
/// was pending; it is a protocol error whatever the store holds.
#[tokio::test]
async fn a_start_commit_before_the_recovered_acknowledged_is_refused_even_with_nothing_pending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let (mut shard, recovery) = open(&dir, two_triggers(&receiver, 0)).await;
    assert_eq!(recovery.pending, None);
    let err = shard
        .start_commit(checkpoint(1), &stats())
        .await
        .expect_err("refused");
    assert!(
        matches!(
            err,
            ShardError::Protocol(ProtocolError::CommitBeforeRecoveryAcknowledged)
        ),
        "{err}"
    );
    // Refused before anything was written: the shard is intact.
    shard.acknowledged().await.expect("recovery ack");
    shard
        .start_commit(checkpoint(1), &stats())
        .await
        .expect("commits");
    shard.acknowledged().await.expect("delivers");
    assert_eq!(receiver.requests().len(), 2);
}

/// Cancel safety: an `open` dropped at its await (the store work already queued) leaves
/// the store closed and reopenable at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_dropped_mid_way_leaves_the_store_reopenable_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let triggers = two_triggers(&receiver, 0);
    for _ in 0..3 {
        let mut opening = Box::pin(Shard::open(dir.path(), decoupled(triggers.clone())));
        // One poll queues the store work; the drop comes while it runs.
        assert!(futures::poll!(opening.as_mut()).is_pending());
        drop(opening);
    }
    let (mut shard, _) = Shard::open(dir.path(), decoupled(triggers))
        .await
        .expect("reopens at once");
    shard.acknowledged().await.expect("recovery ack");
    shard.close().await;
}

/// Cancel safety: a dropped `drained` leaves the shard as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_drained_leaves_the_shard_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script("/a", [Reply::status(200).after(Duration::from_millis(300))]);
    let (mut shard, _) = Shard::open(dir.path(), decoupled(two_triggers(&receiver, 0)))
        .await
        .expect("opens");
    shard.acknowledged().await.expect("recovery ack");
    shard
        .start_commit(checkpoint(1), &stats())
        .await
        .expect("commits");
    shard.acknowledged().await.expect("queues");
    assert!(
        tokio::time::timeout(Duration::from_millis(10), shard.drained())
            .await
            .is_err(),
        "the slow webhook is still in flight"
    );
    shard
        .start_commit(checkpoint(2), &stats())
        .await
        .expect("commits after the drop");
    shard.acknowledged().await.expect("queues");
    drained(&shard).await;
    assert_eq!(receiver.requests().len(), 4);
    shard.close().await;
}

/// Cancel safety: a StartCommit dropped at its store write (a caller's deadline) leaves
/// the shard failed with a clear error, not wedged; the write itself runs to its end, and
/// a reopen recovers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_commit_dropped_at_its_write_fails_the_shard_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let triggers = two_triggers(&receiver, 0);
    let (mut shard, _) = open(&dir, triggers.clone()).await;
    shard.acknowledged().await.expect("recovery ack");
    {
        let stats = stats();
        let mut committing = Box::pin(shard.start_commit(checkpoint(1), &stats));
        // One poll queues the write on the store thread; the drop comes while it runs.
        assert!(futures::poll!(committing.as_mut()).is_pending());
    }
    let err = shard
        .start_commit(checkpoint(2), &stats())
        .await
        .expect_err("the shard does not know whether the write landed");
    assert!(
        matches!(err, ShardError::Protocol(ProtocolError::Failed)),
        "{err}"
    );
    assert!(err.to_string().contains("reopened"), "{err}");
    shard.close().await;

    let (mut shard, recovery) = open(&dir, triggers).await;
    assert_eq!(
        recovery.checkpoint,
        checkpoint(1),
        "the write ran to its end"
    );
    assert!(recovery.pending.is_some());
    shard
        .acknowledged()
        .await
        .expect("fires the recovered params");
    assert_eq!(receiver.requests().len(), 2);
}

/// `close_within` lets the requests in flight finish within the grace and cuts off only
/// those still running after it: they stay persisted and re-fire at the next open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_within_lets_in_flight_webhooks_finish_and_cuts_off_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script("/a", [Reply::status(200).after(Duration::from_millis(300))]);
    // Still running when the grace ends.
    receiver.script("/b", [Reply::status(200).after(Duration::from_secs(60))]);
    let triggers = two_triggers(&receiver, 0);
    let (mut shard, _) = Shard::open(dir.path(), decoupled(triggers.clone()))
        .await
        .expect("opens");
    shard.acknowledged().await.expect("recovery ack");
    shard
        .start_commit(checkpoint(1), &stats())
        .await
        .expect("commits");
    shard.acknowledged().await.expect("queues");
    assert_eq!(receiver.wait_for(2, WAIT).await.len(), 2);

    tokio::time::timeout(WAIT, shard.close_within(Duration::from_secs(3)))
        .await
        .expect("the grace bounds the close");
    let (mut shard, recovery) = Shard::open(dir.path(), decoupled(triggers))
        .await
        .expect("reopens at once");
    assert_eq!(recovery.backlog, 1, "only /b's webhook was cut off");
    shard.acknowledged().await.expect("recovery ack");
    shard.drained().await.expect("drains");
    let b: Vec<_> = receiver
        .requests()
        .into_iter()
        .filter(|r| r.path == "/b")
        .map(|r| r.header("webhook-reason").unwrap_or_default().to_string())
        .collect();
    assert_eq!(b, ["first-send", "recovery-refire"]);
    assert_eq!(
        receiver
            .requests()
            .iter()
            .filter(|r| r.path == "/a")
            .count(),
        1,
        "/a finished within the grace and is not sent again"
    );
    shard.close().await;
}

/// The store's raw writers are the runtime's own; tests reach them only through the
/// unstable `__test-support` feature (`test_support::RawStore`), and what they plant is
/// what the state machine then reads.
#[tokio::test]
async fn narrow_public_surface_raw_writers_are_test_support_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let params = TriggerParams {
        flow_run_id: "planted".into(),
        ..triggers::Variables::placeholder().to_params()
    };
    {
        let store = Store::open(dir.path(), Durability::Synced).expect("opens");
        store
            .commit_unchecked(&checkpoint(7), Some(&params))
            .expect("commits");
        assert_eq!(store.trigger_params().expect("reads"), Some(params.clone()));
        store.clear_trigger_params_unchecked().expect("clears");
        assert_eq!(store.trigger_params().expect("reads"), None);
        store
            .commit_unchecked(&checkpoint(8), Some(&params))
            .expect("commits");
    }
    let none = Arc::new(validate("config: []", ConfigFormat::Yaml).expect("valid"));
    let (shard, recovery) = Shard::open(dir.path(), config(none)).await.expect("opens");
    assert_eq!(recovery.checkpoint, checkpoint(8));
    assert_eq!(
        recovery.pending.map(|v| v.flow_run_id),
        Some("planted".to_string())
    );
    shard.close().await;
}
