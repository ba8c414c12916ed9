//! Issue 18, item 3: Flow's `run_id` (the wall-clock start of the transaction, RFC 3339
//! with milliseconds) is persisted with the variables, so a re-fire after a reopen
//! repeats it exactly, in waiting and in decoupled delivery.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use triggers::{Clock, ConfigFormat, Triggers, validate};
use triggers_proto::{BindingStats, TriggerParams};
use triggers_receiver::Receiver;
use triggers_runtime::test_support::RawStore as _;
use triggers_runtime::test_support::fixtures::{checkpoint, loopback_shard, materialization};
use triggers_runtime::{DeliveryMode, Durability, Shard, Store, TransactionStats};

/// Bounds every wait, so a regression fails instead of hanging.
const WAIT: Duration = Duration::from_secs(20);

fn triggers(receiver: &Receiver) -> Arc<Triggers> {
    let config = serde_json::json!({"config": [
        {"url": receiver.url("/run"), "payloadTemplate": r#"{"runId": "{{run_id}}", "run": {{json flow_run_id}}}"#},
    ]});
    Arc::new(validate(&config.to_string(), ConfigFormat::Json).expect("valid config"))
}

fn stats() -> Vec<BindingStats> {
    let mut stats = TransactionStats::default();
    stats.add_document(0, Clock::from_unix(1_700_000_100, 0), 64);
    stats.take()
}

/// 2024-01-15T08:30:00.123456789Z: a clock finer than a millisecond.
fn started_at() -> SystemTime {
    UNIX_EPOCH + Duration::new(1_705_307_400, 123_456_789)
}

fn run_ids(receiver: &Receiver) -> Vec<String> {
    receiver
        .requests()
        .iter()
        .map(|r| {
            r.json().expect("JSON")["runId"]
                .as_str()
                .expect("a string")
                .to_string()
        })
        .collect()
}

async fn refire_after_reopen_repeats_the_run_id(mode: DeliveryMode) {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let config = || loopback_shard(materialization(2), triggers(&receiver)).with_delivery(mode);
    {
        let (mut shard, _) = Shard::open(dir.path(), config()).await.expect("opens");
        shard.acknowledged().await.expect("recovery ack");
        let commit = shard
            .start_commit_at(checkpoint(7), &stats(), started_at())
            .await
            .expect("commits");
        assert_eq!(
            commit.variables.expect("persisted").run_id,
            "2024-01-15T08:30:00.123Z"
        );
        // Closed before Acknowledged: the process stops with the webhook undelivered.
        shard.close().await;
    }
    assert!(receiver.requests().is_empty());

    let (mut shard, recovery) = Shard::open(dir.path(), config()).await.expect("reopens");
    assert_eq!(
        recovery.pending.expect("recovered").run_id,
        "2024-01-15T08:30:00.123Z"
    );
    shard.acknowledged().await.expect("re-fires");
    tokio::time::timeout(WAIT, shard.drained())
        .await
        .expect("drains in time")
        .expect("delivered");
    assert_eq!(run_ids(&receiver), ["2024-01-15T08:30:00.123Z"]);
    assert_eq!(
        receiver.requests()[0].header("webhook-reason"),
        Some("recovery-refire")
    );
    shard.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_id_is_persisted_and_a_refire_after_reopen_repeats_it_waiting() {
    refire_after_reopen_repeats_the_run_id(DeliveryMode::Waiting).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_id_is_persisted_and_a_refire_after_reopen_repeats_it_decoupled() {
    refire_after_reopen_repeats_the_run_id(DeliveryMode::Decoupled { backlog_limit: 10 }).await;
}

/// Receivers dedupe on `run_id`: two transactions starting in one millisecond (or on a
/// clock that stepped back) still get distinct, increasing ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_id_of_transactions_starting_in_one_millisecond_are_distinct() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let config = loopback_shard(materialization(2), triggers(&receiver))
        .with_delivery(DeliveryMode::Waiting);
    let (mut shard, _) = Shard::open(dir.path(), config).await.expect("opens");
    shard.acknowledged().await.expect("recovery ack");
    let stepped_back = started_at() - Duration::from_secs(5);
    for (seq, at) in [started_at(), started_at(), stepped_back]
        .into_iter()
        .enumerate()
    {
        shard
            .start_commit_at(checkpoint(seq as i64 + 1), &stats(), at)
            .await
            .expect("commits");
        shard.acknowledged().await.expect("delivers");
    }
    assert_eq!(
        run_ids(&receiver),
        [
            "2024-01-15T08:30:00.123Z",
            "2024-01-15T08:30:00.124Z",
            "2024-01-15T08:30:00.125Z"
        ]
    );
    shard.close().await;
}

/// Params persisted before `run_id` existed (version 2) re-fire with the transaction's
/// `flow_published_at_max` to the millisecond: the same on every re-fire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_id_of_params_stored_before_it_existed_is_derived_from_what_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let params = TriggerParams {
        version: 2,
        run_id: String::new(),
        flow_published_at_max: Some(triggers_proto::Timestamp {
            seconds: 1_705_307_400,
            nanos: 987_654_321,
        }),
        ..triggers::Variables::placeholder().to_params()
    };
    {
        let store = Store::open(dir.path(), Durability::Synced).expect("opens");
        store
            .commit_unchecked(&checkpoint(7), Some(&params))
            .expect("commits");
    }
    let config = loopback_shard(materialization(2), triggers(&receiver))
        .with_delivery(DeliveryMode::Waiting);
    let (mut shard, _) = Shard::open(dir.path(), config).await.expect("opens");
    shard.acknowledged().await.expect("re-fires");
    assert_eq!(run_ids(&receiver), ["2024-01-15T08:30:00.987Z"]);
    shard.close().await;
}
