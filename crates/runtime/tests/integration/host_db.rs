//! Issue 15, item 1 (first step): a shard inside a RocksDB its host opened, with the
//! host's own options and merge operator and keys, under a keyspace of its own.

use rocksdb::{DB, MergeOperands, Options};
use std::sync::Arc;
use std::time::Duration;
use triggers::{ConfigFormat, validate};
use triggers_receiver::Receiver;
use triggers_runtime::test_support::fixtures::{
    checkpoint, loopback_shard, materialization, stats_at,
};
use triggers_runtime::{Durability, Keyspace, Shard, ShardConfig, Store};

/// Bounds every wait, so a regression fails instead of hanging.
const WAIT: Duration = Duration::from_secs(20);

/// The host's merge operator: appends operands, comma-separated (a stand-in for Flow's
/// JSON merge-patch of `connector-state`).
fn append(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let mut value = existing.map(<[u8]>::to_vec).unwrap_or_default();
    for operand in operands {
        if !value.is_empty() {
            value.push(b',');
        }
        value.extend_from_slice(operand);
    }
    Some(value)
}

/// The host's DB: its own options and merge operator.
fn host_db(dir: &std::path::Path) -> Arc<DB> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.set_merge_operator_associative("host-append", append);
    Arc::new(DB::open(&options, dir).expect("the host opens its DB"))
}

fn config(receiver: &Receiver) -> ShardConfig {
    let config = serde_json::json!({"config": {"onCommit": {
        "url": receiver.url("/hook"),
        "payloadTemplate": r#"{"run": {{json flow_run_id}}}"#,
    }}});
    let triggers = validate(&config.to_string(), ConfigFormat::Json).expect("valid");
    loopback_shard(materialization(1), Arc::new(triggers))
}

#[tokio::test]
async fn a_shard_in_the_hosts_db_keeps_to_its_keyspace_and_recovers_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let keyspace = || Keyspace::prefixed(&b"triggers/"[..]).expect("valid");
    let run = {
        let db = host_db(dir.path());
        db.put(b"checkpoint", b"the host's checkpoint")
            .expect("host writes");
        db.merge(b"connector-state", b"a").expect("host merges");
        let store = Store::in_host_db(db.clone(), keyspace(), Durability::Synced);
        let (mut shard, recovery) = Shard::open_in(store, config(&receiver))
            .await
            .expect("opens");
        assert_eq!(recovery.backlog, 0);
        shard.acknowledged().await.expect("recovered ack");
        let commit = shard
            .start_commit(checkpoint(1), &stats_at(1, &[0]))
            .await
            .expect("commits");
        db.merge(b"connector-state", b"b").expect("host merges");
        // Stopped before Acknowledged: the webhook pends in the host's DB.
        shard.close().await;
        assert_eq!(
            db.get(b"connector-state").expect("reads").as_deref(),
            Some(&b"a,b"[..]),
            "the host's merge operator still applies"
        );
        assert_eq!(
            db.get(b"checkpoint").expect("reads").as_deref(),
            Some(&b"the host's checkpoint"[..])
        );
        let ours = db
            .iterator(rocksdb::IteratorMode::Start)
            .map(|item| item.expect("reads").0)
            .filter(|key| key.starts_with(b"triggers/"))
            .count();
        assert!(ours >= 3, "checkpoint, commit-seq and the backlog entry");
        commit.variables.expect("persisted").flow_run_id
    };
    assert!(
        receiver.requests().is_empty(),
        "nothing before Acknowledged"
    );

    // The host restarts and opens its DB again: the pending webhook fires.
    let db = host_db(dir.path());
    let store = Store::in_host_db(db.clone(), keyspace(), Durability::Synced);
    let (mut shard, recovery) = Shard::open_in(store, config(&receiver))
        .await
        .expect("reopens");
    assert_eq!(recovery.checkpoint, checkpoint(1));
    assert_eq!(recovery.backlog, 1);
    shard.acknowledged().await.expect("recovered ack");
    tokio::time::timeout(WAIT, shard.drained())
        .await
        .expect("drains in time")
        .expect("drains");
    let bodies: Vec<serde_json::Value> = receiver
        .requests()
        .iter()
        .map(|r| r.json().expect("JSON"))
        .collect();
    assert_eq!(bodies, [serde_json::json!({"run": run})]);
    shard.close().await;
    assert_eq!(
        db.get(b"connector-state").expect("reads").as_deref(),
        Some(&b"a,b"[..])
    );
}
