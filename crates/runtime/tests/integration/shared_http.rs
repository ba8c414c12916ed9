//! Issue 16 (first step): the shards of one process share one HTTP client and its
//! connection pool when their configs are given the same `Deliverer`, instead of one pool
//! (and so one connection to a shared endpoint) per shard.

use std::sync::Arc;
use triggers::{ConfigFormat, Deliverer, NetworkPolicy, validate};
use triggers_receiver::Receiver;
use triggers_runtime::test_support::fixtures::{
    checkpoint, drained, fast_backoff, loopback_shard, materialization, stats_at,
};
use triggers_runtime::{Durability, Shard, ShardConfig};

const SHARDS: usize = 12;

/// Runs `SHARDS` shards one after the other, each delivering one webhook to `receiver`,
/// with `shared` as their deliverer if given; returns the connections the receiver saw.
async fn run_shards(receiver: &Receiver, shared: Option<Deliverer>) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = serde_json::json!({"config": [
        {"url": receiver.url("/hook"), "payloadTemplate": r#"{"run": {{json flow_run_id}}}"#},
    ]});
    let triggers = Arc::new(validate(&config.to_string(), ConfigFormat::Json).expect("valid"));
    let before = receiver.connections();
    for n in 0..SHARDS {
        let mut config: ShardConfig = loopback_shard(materialization(1), triggers.clone())
            .with_durability(Durability::Unsynced);
        if let Some(shared) = &shared {
            config = config.with_deliverer(shared.clone());
        }
        let (mut shard, _) = Shard::open(dir.path().join(n.to_string()), config)
            .await
            .expect("opens");
        shard.acknowledged().await.expect("recovered ack");
        shard
            .start_commit(checkpoint(1), &stats_at(1, &[0]))
            .await
            .expect("commits");
        shard.acknowledged().await.expect("acknowledged");
        drained(&shard).await;
        shard.close().await;
    }
    receiver.connections() - before
}

#[tokio::test]
async fn shards_given_one_deliverer_share_one_connection_pool() {
    let receiver = Receiver::start().await.expect("receiver");
    let own = run_shards(&receiver, None).await;
    let shared =
        Deliverer::with_policy(fast_backoff(), NetworkPolicy::ALLOW_LOOPBACK).expect("client");
    let pooled = run_shards(&receiver, Some(shared)).await;
    println!("{SHARDS} shards: {own} connections with a pool each, {pooled} with one pool");
    assert_eq!(
        receiver.requests().len(),
        2 * SHARDS,
        "every webhook arrived"
    );
    assert_eq!(own, SHARDS, "a pool per shard: a connection per shard");
    assert!(
        pooled <= 2,
        "one pool for every shard: its kept-alive connection is reused ({pooled} connections)"
    );
}
