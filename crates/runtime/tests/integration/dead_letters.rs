//! Issue 17: a trigger whose `onFailure` is `deadLetter` goes on past a webhook that
//! fails for good (a dead letter, kept in the ledger with what it sends), and an operator
//! sends one again (retry) or sends delivered webhooks again (replay), on a real RocksDB
//! and a real receiver on 127.0.0.1.

use super::backlog::{
    TEMPLATE, accepted, await_state, commit_all, config, decoupled, open, states,
};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use triggers::{ConfigFormat, Triggers, validate};
use triggers_proto::DeliveryState;
use triggers_receiver::{Receiver, Reply};
use triggers_runtime::{LedgerError, ReplayRange};

/// One trigger posting to `path` of `receiver`, draining `drain`, never retrying, whose
/// failures do `on_failure`.
fn trigger(
    receiver: &Receiver,
    path: &str,
    drain: serde_json::Value,
    on_failure: &str,
) -> Arc<Triggers> {
    let config = serde_json::json!({"config": [{
        "url": receiver.url(path),
        "payloadTemplate": TEMPLATE,
        "maxRetries": 0,
        "drain": drain,
        "onFailure": on_failure,
    }]});
    Arc::new(validate(&config.to_string(), ConfigFormat::Json).expect("valid config"))
}

/// The first commit sequence number of each webhook `path` accepted, in arrival order.
fn firsts(receiver: &Receiver, path: &str) -> Vec<u64> {
    accepted(receiver, path).iter().map(|w| w.1).collect()
}

#[tokio::test]
async fn a_dead_letter_lets_an_ordered_backlog_go_on_in_order_and_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script(
        "/d",
        [
            Reply::status(200),
            Reply::status(422).with_body("bad payload"),
        ],
    );
    let triggers = trigger(
        &receiver,
        "/d",
        serde_json::json!({"mode": "ordered"}),
        "deadLetter",
    );
    let mut shard = open(dir.path(), config(triggers.clone(), decoupled(10))).await;
    commit_all(&mut shard, 1..=4).await;
    shard
        .drained()
        .await
        .expect("a dead letter does not stop the backlog");
    assert_eq!(firsts(&receiver, "/d"), [1, 3, 4], "the rest, in order");
    let status = shard.backlog_status().expect("decoupled");
    assert_eq!(status.queues[0].dead_letters, 1);
    assert_eq!(status.failure, None, "nothing stopped");
    assert_eq!(status.depth(), 0, "its entry left the backlog");

    let ledger = shard.backlog_handle().expect("decoupled");
    let dead = ledger.delivery("0", 2).await.expect("gets");
    assert_eq!(dead.state(), DeliveryState::Failed);
    assert!(dead.dead_letter, "{dead:?}");
    assert!(dead.error.contains("HTTP 422"), "{dead:?}");
    let kept = dead
        .entry
        .as_ref()
        .and_then(|e| e.params.as_ref())
        .expect("kept");
    assert_eq!((kept.first_commit_seq, kept.last_commit_seq), (2, 2));
    // The shard goes on committing.
    commit_all(&mut shard, 5..=5).await;
    shard.drained().await.expect("drains");
    drop(ledger);
    shard.close().await;

    // A reopen does not make a dead letter PENDING again (a stopped one would be).
    let shard = open(dir.path(), config(triggers, decoupled(10))).await;
    shard.drained().await.expect("nothing to send");
    assert_eq!(firsts(&receiver, "/d"), [1, 3, 4, 5]);
    let ledger = shard.backlog_handle().expect("decoupled");
    let (all, _) = ledger.deliveries(10, "").await.expect("lists");
    assert_eq!(
        states(&all),
        [
            (5, DeliveryState::Success),
            (4, DeliveryState::Success),
            (3, DeliveryState::Success),
            (2, DeliveryState::Failed),
            (1, DeliveryState::Success),
        ]
    );
    drop(ledger);
    shard.close().await;
}

#[tokio::test]
async fn an_operator_retries_a_dead_letter_as_operator_replay_and_skips_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script(
        "/d",
        [Reply::status(400), Reply::status(400), Reply::status(200)],
    );
    let triggers = trigger(
        &receiver,
        "/d",
        serde_json::json!({"mode": "coalesced"}),
        "deadLetter",
    );
    let mut shard = open(dir.path(), config(triggers, decoupled(10))).await;
    // Each commit drains before the next, so each is its own delivery.
    for n in 1..=3 {
        commit_all(&mut shard, n..=n).await;
        shard.drained().await.expect("drains");
    }
    let ledger = shard.backlog_handle().expect("decoupled");
    assert!(ledger.delivery("0", 1).await.expect("gets").dead_letter);
    assert!(ledger.delivery("0", 2).await.expect("gets").dead_letter);

    let retried = ledger.retry("0", 1).await.expect("retries a dead letter");
    assert_eq!(retried.state(), DeliveryState::Pending);
    assert!(!retried.dead_letter);
    await_state(&ledger, "0", 1, DeliveryState::Success).await;
    let last = receiver.requests().pop().expect("sent");
    assert_eq!(last.header("webhook-reason"), Some("operator-replay"));
    assert_eq!(last.json().expect("JSON")["first"], 1);

    let err = ledger.skip("0", 2, " ").await.expect_err("needs a reason");
    assert!(matches!(err, LedgerError::Invalid(_)), "{err}");
    let skipped = ledger
        .skip("0", 2, "the receiver will never take it")
        .await
        .expect("skips a dead letter");
    assert_eq!(skipped.state(), DeliveryState::Cancelled);
    assert!(!skipped.dead_letter);
    let err = ledger.retry("0", 2).await.expect_err("cancelled");
    assert!(
        matches!(err, LedgerError::IllegalTransition { .. }),
        "{err}"
    );
    // A coalesced trigger never merged a new transaction into the retried one.
    commit_all(&mut shard, 4..=4).await;
    shard.drained().await.expect("drains");
    assert_eq!(firsts(&receiver, "/d"), [3, 1, 4]);
    drop(ledger);
    shard.close().await;
}

#[tokio::test]
async fn a_stopping_trigger_still_stops_and_its_failure_is_no_dead_letter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script("/s", [Reply::status(422).after(Duration::from_millis(500))]);
    let triggers = trigger(
        &receiver,
        "/s",
        serde_json::json!({"mode": "ordered"}),
        "stop",
    );
    let mut shard = open(dir.path(), config(triggers, decoupled(10))).await;
    commit_all(&mut shard, 1..=2).await;
    shard.drained().await.expect_err("stops");
    let ledger = shard.backlog_handle().expect("decoupled");
    let failed = ledger.delivery("0", 1).await.expect("gets");
    assert_eq!(failed.state(), DeliveryState::Failed);
    assert!(!failed.dead_letter);
    assert_eq!(
        shard.backlog_status().expect("decoupled").queues[0].dead_letters,
        0
    );
    assert!(firsts(&receiver, "/s").is_empty(), "nothing after it went");
    drop(ledger);
    shard.close().await;
}

#[tokio::test]
async fn replay_sends_delivered_webhooks_again_with_their_ids_oldest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    receiver.set_default(Reply::status(200));
    let triggers = trigger(
        &receiver,
        "/r",
        serde_json::json!({"mode": "ordered"}),
        "stop",
    );
    let mut shard = open(dir.path(), config(triggers, decoupled(10))).await;
    let before_commits = SystemTime::now() - Duration::from_secs(1);
    commit_all(&mut shard, 1..=4).await;
    shard.drained().await.expect("drains");
    let ledger = shard.backlog_handle().expect("decoupled");
    let first_ids: Vec<String> = accepted(&receiver, "/r").into_iter().map(|w| w.0).collect();

    let replayed = ledger
        .replay("0", ReplayRange::Commits { first: 2, last: 3 })
        .await
        .expect("replays");
    assert_eq!(
        states(&replayed),
        [(2, DeliveryState::Pending), (3, DeliveryState::Pending)]
    );
    shard.drained().await.expect("drains");
    let sent = accepted(&receiver, "/r");
    assert_eq!(sent.len(), 6);
    assert_eq!((sent[4].1, sent[5].1), (2, 3), "the replays, oldest first");
    assert_eq!(sent[4].0, first_ids[1], "a replay keeps its webhook-id");
    let reasons: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("webhook-reason").unwrap_or_default().to_string())
        .collect();
    assert_eq!(reasons[4..], ["operator-replay", "operator-replay"]);
    for seq in [2, 3] {
        let record = ledger.delivery("0", seq).await.expect("gets");
        assert_eq!(record.state(), DeliveryState::Success);
        assert_eq!(record.attempts.len(), 2, "its first send and the replay");
    }

    // By commit time: every delivery committed since the commits began.
    let replayed = ledger
        .replay(
            "0",
            ReplayRange::CommittedBetween {
                from: before_commits,
                to: SystemTime::now(),
            },
        )
        .await
        .expect("replays");
    assert_eq!(replayed.len(), 4);
    shard.drained().await.expect("drains");
    assert_eq!(accepted(&receiver, "/r").len(), 10);

    // A range that selects nothing replays nothing; one that ends before it starts, or a
    // trigger the config does not have, is refused.
    let none = ledger
        .replay(
            "0",
            ReplayRange::Commits {
                first: 50,
                last: 60,
            },
        )
        .await
        .expect("replays nothing");
    assert!(none.is_empty());
    let err = ledger
        .replay("0", ReplayRange::Commits { first: 3, last: 2 })
        .await
        .expect_err("backwards");
    assert!(matches!(err, LedgerError::Invalid(_)), "{err}");
    let err = ledger
        .replay("gone", ReplayRange::Commits { first: 1, last: 2 })
        .await
        .expect_err("no such trigger");
    assert!(err.to_string().contains("not in the config"), "{err}");
    drop(ledger);
    shard.close().await;
}

/// Issue 17, item 1: a stopped shard's deliveries, on disk, with nothing sent: listed,
/// a stopped one skipped, a delivered one replayed, a dead letter retried; refused while
/// another holds the store; the next open sends what they made PENDING as
/// `operator-replay`.
#[tokio::test]
async fn a_stopped_shards_deliveries_are_skipped_replayed_and_retried_on_disk() {
    use triggers_runtime::{StoppedShard, StoreError};
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    // The refusal comes late enough that all three commits land before the backlog stops.
    receiver.script(
        "/s",
        [
            Reply::status(200),
            Reply::status(422).after(Duration::from_millis(500)),
        ],
    );
    let stops = trigger(
        &receiver,
        "/s",
        serde_json::json!({"mode": "ordered"}),
        "stop",
    );
    let mut shard = open(dir.path(), config(stops.clone(), decoupled(10))).await;
    commit_all(&mut shard, 1..=3).await;
    shard.drained().await.expect_err("2 stops the backlog");
    let err = StoppedShard::open(dir.path()).expect_err("the shard holds its store");
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    shard.close().await;

    let stopped = StoppedShard::open(dir.path()).expect("opens a stopped shard");
    let (all, next) = stopped.deliveries(10, "").expect("lists");
    assert!(next.is_empty());
    assert_eq!(
        states(&all),
        [
            (3, DeliveryState::Pending),
            (2, DeliveryState::Failed),
            (1, DeliveryState::Success),
        ]
    );
    let (first_page, next) = stopped.deliveries(2, "").expect("pages");
    assert_eq!(first_page.len(), 2);
    let (rest, _) = stopped.deliveries(2, &next).expect("pages");
    assert_eq!(states(&rest), [(1, DeliveryState::Success)]);
    let err = stopped.skip("0", 1, "no").expect_err("delivered");
    assert!(err.to_string().contains("it was delivered"), "{err}");
    let skipped = stopped
        .skip("0", 2, "the receiver rejects it for good")
        .expect("skips");
    assert_eq!(skipped.state(), DeliveryState::Cancelled);
    let replayed = stopped
        .replay("0", ReplayRange::Commits { first: 1, last: 1 })
        .expect("replays");
    assert_eq!(states(&replayed), [(1, DeliveryState::Pending)]);
    assert_eq!(receiver.requests().len(), 2, "nothing sent on disk");
    drop(stopped);

    let shard = open(dir.path(), config(stops, decoupled(10))).await;
    shard.drained().await.expect("drains");
    let sent: Vec<(u64, String)> = receiver.requests()[2..]
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
    assert_eq!(
        sent,
        [
            (1, "operator-replay".to_string()),
            (3, "recovery-refire".to_string()),
        ],
        "the replay first (oldest), then what the stop held"
    );
    shard.close().await;

    // A dead letter, retried on disk, goes at the next open as operator-replay.
    let dead_dir = tempfile::tempdir().expect("tempdir");
    receiver.script("/d", [Reply::status(422)]);
    let dead = trigger(
        &receiver,
        "/d",
        serde_json::json!({"mode": "ordered"}),
        "deadLetter",
    );
    let mut shard = open(dead_dir.path(), config(dead.clone(), decoupled(10))).await;
    commit_all(&mut shard, 1..=1).await;
    shard.drained().await.expect("a dead letter stops nothing");
    shard.close().await;
    let stopped = StoppedShard::open(dead_dir.path()).expect("opens");
    let retried = stopped.retry("0", 1).expect("retries the dead letter");
    assert_eq!(retried.state(), DeliveryState::Pending);
    let err = stopped.retry("0", 1).expect_err("pending now");
    assert!(
        matches!(err, LedgerError::IllegalTransition { .. }),
        "{err}"
    );
    drop(stopped);
    let shard = open(dead_dir.path(), config(dead, decoupled(10))).await;
    shard.drained().await.expect("drains");
    let last = receiver.requests().pop().expect("sent");
    assert_eq!(last.path, "/d");
    assert_eq!(last.header("webhook-reason"), Some("operator-replay"));
    assert_eq!(
        shard
            .backlog_handle()
            .expect("decoupled")
            .delivery("0", 1)
            .await
            .expect("gets")
            .state(),
        DeliveryState::Success
    );
    shard.close().await;
}
