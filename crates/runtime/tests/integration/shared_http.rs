//! Issue 16 (first step): the shards of one process share one HTTP client and its
//! connection pool when their configs are given the same `Deliverer`, instead of one pool
//! (and so one connection to a shared endpoint) per shard.

use std::sync::Arc;
use std::time::Duration;
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

/// Issue 16: shards delivering to one endpoint at once hold at most the deliverer's
/// bound of requests (and so connections) to it, however many they are; the rest wait
/// their turn and every webhook arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_at_once_hold_at_most_the_bound_of_connections_to_one_origin() {
    const AT_ONCE: usize = 24;
    const BOUND: usize = 4;
    let receiver = Receiver::start().await.expect("receiver");
    receiver.set_default(triggers_receiver::Reply::status(200).after(Duration::from_millis(100)));
    let shared = Deliverer::with_policy(fast_backoff(), NetworkPolicy::ALLOW_LOOPBACK)
        .expect("client")
        .with_max_in_flight_per_origin(BOUND);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = serde_json::json!({"config": [
        {"url": receiver.url("/hook"), "payloadTemplate": r#"{"run": {{json flow_run_id}}}"#},
    ]});
    let triggers = Arc::new(validate(&config.to_string(), ConfigFormat::Json).expect("valid"));
    let shards = (0..AT_ONCE).map(|n| {
        let config = loopback_shard(materialization(1), triggers.clone())
            .with_durability(Durability::Unsynced)
            .with_deliverer(shared.clone());
        let path = dir.path().join(n.to_string());
        tokio::spawn(async move {
            let (mut shard, _) = Shard::open(path, config).await.expect("opens");
            shard.acknowledged().await.expect("recovered ack");
            shard
                .start_commit(checkpoint(1), &stats_at(1, &[0]))
                .await
                .expect("commits");
            shard.acknowledged().await.expect("acknowledged");
            drained(&shard).await;
            shard.close().await;
        })
    });
    for joined in futures::future::join_all(shards).await {
        joined.expect("a shard's task");
    }
    assert_eq!(receiver.requests().len(), AT_ONCE, "every webhook arrived");
    assert!(
        receiver.connections() <= BOUND,
        "{} connections for a bound of {BOUND}",
        receiver.connections()
    );
}

/// Issue 16: a shard whose endpoint hangs never stalls the others, even with one HTTP
/// client for them all: its backlog fills and only its StartCommit waits, while the other
/// shards commit and deliver every transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_whose_endpoint_hangs_stalls_no_other() {
    const OTHERS: usize = 99;
    const TRANSACTIONS: u64 = 20;
    let (live, hanging) = (
        Receiver::start().await.expect("receiver"),
        Receiver::start().await.expect("receiver"),
    );
    hanging.set_default(triggers_receiver::Reply::status(200).after(Duration::from_secs(120)));
    let dir = tempfile::tempdir().expect("tempdir");
    let shared =
        Deliverer::with_policy(fast_backoff(), NetworkPolicy::ALLOW_LOOPBACK).expect("client");
    let config = |receiver: &Receiver| {
        let config = serde_json::json!({"config": [{
            "url": receiver.url("/hook"),
            "payloadTemplate": r#"{"run": {{json flow_run_id}}}"#,
            "drain": {"mode": "ordered"},
        }]});
        let triggers = Arc::new(validate(&config.to_string(), ConfigFormat::Json).expect("valid"));
        loopback_shard(materialization(1), triggers)
            .with_durability(Durability::Unsynced)
            .with_delivery(triggers_runtime::DeliveryMode::Decoupled { backlog_limit: 2 })
            .with_deliverer(shared.clone())
    };
    // The hanging shard: its first webhook never finishes, so its third commit waits.
    let (mut stuck, _) = Shard::open(dir.path().join("stuck"), config(&hanging))
        .await
        .expect("opens");
    stuck.acknowledged().await.expect("recovered ack");
    let mut stuck_commits = Box::pin(async {
        for n in 1..=TRANSACTIONS {
            stuck
                .start_commit(checkpoint(n as i64), &stats_at(n, &[0]))
                .await
                .expect("commits");
            stuck.acknowledged().await.expect("acknowledged");
        }
    });
    let others = (0..OTHERS).map(|i| {
        let config = config(&live);
        let path = dir.path().join(i.to_string());
        tokio::spawn(async move {
            let (mut shard, _) = Shard::open(path, config).await.expect("opens");
            shard.acknowledged().await.expect("recovered ack");
            for n in 1..=TRANSACTIONS {
                shard
                    .start_commit(checkpoint(n as i64), &stats_at(n, &[0]))
                    .await
                    .expect("commits");
                shard.acknowledged().await.expect("acknowledged");
            }
            drained(&shard).await;
            shard.close().await;
        })
    });
    let all_others = futures::future::join_all(others);
    let finished = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::select! {
            joined = all_others => joined,
            () = &mut stuck_commits => panic!("the hanging shard committed every transaction"),
        }
    })
    .await
    .expect("the other shards finish while one endpoint hangs");
    finished
        .into_iter()
        .for_each(|joined| joined.expect("a shard's task"));
    assert_eq!(
        live.requests().len(),
        OTHERS * TRANSACTIONS as usize,
        "every other shard delivered every transaction"
    );
    // The hanging shard's StartCommit waits for room in its own backlog; dropped there,
    // it leaves the shard as it was, which then closes (its request is cut off).
    drop(stuck_commits);
    let status = stuck.backlog_status().expect("decoupled");
    assert_eq!(
        (status.depth(), status.backpressure_waits),
        (2, 1),
        "its backlog is full (one sent, hanging; one queued) and its third commit waited"
    );
    stuck.close_within(Duration::ZERO).await;
}
