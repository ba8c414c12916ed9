//! Issue 18, item 5: a trigger's `collections` filter in the runtime. A transaction that
//! read none of a trigger's collections does not fire it; `collection_names` holds only
//! the matching ones; a coalesced trigger merges only matching transactions; a filter
//! that no binding matches is refused at open.

use std::sync::Arc;
use std::time::Duration;
use triggers::{ConfigFormat, Triggers, validate};
use triggers_receiver::{Receiver, Reply};
use triggers_runtime::test_support::fixtures::{
    checkpoint, drained, loopback_shard, materialization, stats_at,
};
use triggers_runtime::{DeliveryMode, Durability, Shard, ShardConfig, ShardError};

/// Bounds every wait, so a regression fails instead of hanging.
const WAIT: Duration = Duration::from_secs(20);

/// The bindings each transaction reads (indexes into the fixtures' `COLLECTIONS`:
/// orders, customers, refunds), from transaction 1.
const READS: [&[u32]; 5] = [&[0], &[1], &[0, 2], &[1], &[2]];

/// Triggers `orders` (ordered, exact name), `people` (coalesced, exact name and a prefix)
/// and `all` (ordered, no filter).
fn triggers(receiver: &Receiver, bindings: &[&str]) -> Arc<Triggers> {
    let template = r#"{"collections": {{json collection_names}}, "count": {{transaction_count}}, "first": {{first_commit_seq}}, "last": {{last_commit_seq}}}"#;
    let config = serde_json::json!({"config": {
        "orders": {
            "url": receiver.url("/orders"),
            "payloadTemplate": template,
            "collections": [bindings[0]],
            "drain": {"mode": "ordered"},
        },
        "people": {
            "url": receiver.url("/people"),
            "payloadTemplate": template,
            "collections": bindings[1..].to_vec(),
            "drain": {"mode": "coalesced"},
        },
        "all": {
            "url": receiver.url("/all"),
            "payloadTemplate": template,
            "drain": {"mode": "ordered"},
        },
    }});
    Arc::new(validate(&config.to_string(), ConfigFormat::Json).expect("valid config"))
}

fn config(triggers: Arc<Triggers>, delivery: DeliveryMode) -> ShardConfig {
    loopback_shard(materialization(3), triggers)
        .with_durability(Durability::Unsynced)
        .with_delivery(delivery)
}

/// Webhooks accepted on `path`, as (collections, count, first, last), in arrival order.
fn received(receiver: &Receiver, path: &str) -> Vec<(Vec<String>, u64, u64, u64)> {
    receiver
        .requests()
        .iter()
        .filter(|r| r.path == path)
        .map(|r| {
            let body = r.json().expect("JSON");
            (
                serde_json::from_value(body["collections"].clone()).expect("names"),
                body["count"].as_u64().unwrap_or_default(),
                body["first"].as_u64().unwrap_or_default(),
                body["last"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(ToString::to_string).collect()
}

/// Waits until `path` has had `n` requests (answered or not).
async fn arrived(receiver: &Receiver, path: &str, n: usize) {
    tokio::time::timeout(WAIT, async {
        while receiver
            .requests()
            .iter()
            .filter(|r| r.path == path)
            .count()
            < n
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the webhook arrives in time");
}

/// Waits until trigger `name`'s backlog is empty.
async fn queue_empty(shard: &Shard, name: &str) {
    tokio::time::timeout(WAIT, async {
        loop {
            let status = shard.backlog_status().expect("decoupled");
            if status.queues.iter().any(|q| q.name == name && q.depth == 0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the queue drains in time");
}

/// Opens a shard, commits and acknowledges every transaction of [`READS`], and drains.
/// In decoupled delivery, transactions 2..=5 commit while `people`'s first webhook (of
/// transaction 1) is in flight.
async fn run(receiver: &Receiver, delivery: DeliveryMode) {
    let dir = tempfile::tempdir().expect("tempdir");
    let filters = ["acmeCo/orders", "acmeCo/customers", "acmeCo/ref/"];
    // "acmeCo/ref/" is a prefix of none of the bindings: refused at open (below). The
    // run uses a prefix that matches.
    let triggers = triggers(receiver, &[filters[0], filters[1], "acmeCo/"]);
    let (mut shard, _) = Shard::open(dir.path(), config(triggers, delivery))
        .await
        .expect("opens");
    shard.acknowledged().await.expect("recovered ack");
    for (n, reads) in (1..).zip(READS) {
        shard
            .start_commit(checkpoint(n as i64), &stats_at(n, reads))
            .await
            .expect("commits");
        shard.acknowledged().await.expect("acknowledged");
        if n == 1 && delivery != DeliveryMode::Waiting {
            arrived(receiver, "/people", 1).await;
        }
    }
    drained(&shard).await;
    shard.close().await;

    let reopened = Shard::open(
        dir.path(),
        config(triggers_with_prefix(receiver, filters[2]), delivery),
    )
    .await;
    let Err(refused) = reopened else {
        panic!("a filter no binding matches opens");
    };
    assert!(
        matches!(refused, ShardError::Config(_))
            && refused.to_string().contains("acmeCo/ref/")
            && refused.to_string().contains("acmeCo/refunds"),
        "{refused}"
    );
}

/// The config of [`triggers`], `people` filtering on `prefix` alone.
fn triggers_with_prefix(receiver: &Receiver, prefix: &str) -> Arc<Triggers> {
    triggers(receiver, &["acmeCo/orders", prefix])
}

#[tokio::test]
async fn a_trigger_fires_only_for_its_collections_and_sees_only_them_in_decoupled_delivery() {
    let receiver = Receiver::start().await.expect("receiver");
    // Slow enough that transactions 2..=5 pile up behind people's first webhook and merge.
    receiver.script(
        "/people",
        [Reply::status(200).after(Duration::from_millis(300))],
    );
    run(&receiver, DeliveryMode::default()).await;

    assert_eq!(
        received(&receiver, "/orders"),
        [
            (names(&["acmeCo/orders"]), 1, 1, 1),
            (names(&["acmeCo/orders"]), 1, 3, 3),
        ],
        "transactions 1 and 3 read orders, and it sees only orders"
    );
    // people: customers exactly, and every acmeCo/ collection by prefix, so all five
    // transactions; it coalesces what arrives while its first webhook is held.
    let people = received(&receiver, "/people");
    assert_eq!(people[0], (names(&["acmeCo/orders"]), 1, 1, 1));
    let covered: u64 = people.iter().map(|w| w.1).sum();
    assert_eq!(covered, 5, "{people:?}");
    let all = received(&receiver, "/all");
    assert_eq!(all.len(), 5, "no filter: every transaction, {all:?}");
    assert_eq!(all[2].0, names(&["acmeCo/orders", "acmeCo/refunds"]));
}

/// A coalesced trigger merges only the transactions it fires for: those in between do
/// not count, and its collections are only its own.
#[tokio::test]
async fn a_coalesced_trigger_merges_only_matching_transactions() {
    let receiver = Receiver::start().await.expect("receiver");
    // Long enough that the four commits after the first land while it is held, even on
    // a loaded machine.
    receiver.script(
        "/people",
        [Reply::status(200).after(Duration::from_secs(2))],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    // people fires for customers only: transactions 2 and 4.
    let triggers = triggers(&receiver, &["acmeCo/orders", "acmeCo/customers"]);
    let (mut shard, _) = Shard::open(dir.path(), config(triggers, DeliveryMode::default()))
        .await
        .expect("opens");
    shard.acknowledged().await.expect("recovered ack");
    // Transaction 1 reads customers and is sent (held 2 s); 2..=5 commit meanwhile.
    let reads: [&[u32]; 5] = [&[1], &[0], &[1], &[2], &[1]];
    for (n, reads) in (1..).zip(reads) {
        shard
            .start_commit(checkpoint(n as i64), &stats_at(n, reads))
            .await
            .expect("commits");
        shard.acknowledged().await.expect("acknowledged");
        if n == 1 {
            arrived(&receiver, "/people", 1).await;
        }
    }
    drained(&shard).await;
    shard.close().await;
    let people = received(&receiver, "/people");
    assert_eq!(people[0], (names(&["acmeCo/customers"]), 1, 1, 1));
    // 3 and 5 merged (2 and 4 are not its): two transactions from 3 to 5.
    assert_eq!(
        people[1..],
        [(names(&["acmeCo/customers"]), 2, 3, 5)],
        "{people:?}"
    );
}

#[tokio::test]
async fn waiting_delivery_sends_each_trigger_only_its_collections() {
    let receiver = Receiver::start().await.expect("receiver");
    run(&receiver, DeliveryMode::Waiting).await;
    let orders = received(&receiver, "/orders");
    assert_eq!(
        orders
            .iter()
            .map(|w| (w.0.clone(), w.2))
            .collect::<Vec<_>>(),
        [
            (names(&["acmeCo/orders"]), 1),
            (names(&["acmeCo/orders"]), 3)
        ]
    );
    assert_eq!(received(&receiver, "/people").len(), 5);
    assert_eq!(received(&receiver, "/all").len(), 5);
}

/// A trigger's full backlog holds back only the commits it fires for.
#[tokio::test]
async fn a_full_backlog_of_a_filtered_trigger_does_not_hold_back_other_collections() {
    let receiver = Receiver::start().await.expect("receiver");
    // orders' first webhook hangs (for longer than this test waits).
    receiver.script(
        "/orders",
        [Reply::status(200).after(Duration::from_secs(60))],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let triggers = triggers(&receiver, &["acmeCo/orders", "acmeCo/customers"]);
    let delivery = DeliveryMode::Decoupled { backlog_limit: 1 };
    let (mut shard, _) = Shard::open(dir.path(), config(triggers, delivery))
        .await
        .expect("opens");
    shard.acknowledged().await.expect("recovered ack");
    // orders' queue holds transaction 1 (in flight, hanging): it is full.
    shard
        .start_commit(checkpoint(1), &stats_at(1, &[0]))
        .await
        .expect("commits");
    shard.acknowledged().await.expect("acknowledged");
    arrived(&receiver, "/orders", 1).await;
    // Customers only from here: orders gets nothing of these, so they do not wait for
    // it. (all's ordered queue has room: each waits for it to drain.)
    for n in 2..=4 {
        queue_empty(&shard, "all").await;
        let done = tokio::time::timeout(
            WAIT,
            shard.start_commit(checkpoint(n), &stats_at(n as u64, &[1])),
        )
        .await
        .expect("a commit orders does not fire for does not wait for its backlog");
        done.expect("commits");
        shard.acknowledged().await.expect("acknowledged");
    }
    let status = shard.backlog_status().expect("decoupled");
    let orders = status
        .queues
        .iter()
        .find(|q| q.name == "orders")
        .expect("orders");
    assert_eq!((orders.depth, status.backpressure_waits), (1, 0));
    shard.close_within(Duration::ZERO).await;
}
