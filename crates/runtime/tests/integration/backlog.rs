//! Decoupled delivery on a real RocksDB in a temp dir, delivering to a real receiver on
//! 127.0.0.1: each drain mode, backpressure, permanent failure, restarts, and stores
//! written by waiting delivery's single-key layout.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use triggers::{AttemptObserver, AttemptOutcome, AttemptRecord, ConfigFormat, Triggers, validate};
use triggers_proto::BindingStats;
use triggers_receiver::{Receiver, Reply};
use triggers_runtime::test_support::RawStore as _;
use triggers_runtime::test_support::fixtures::{
    checkpoint, loopback_shard, materialization, stats_at,
};
use triggers_runtime::{
    BacklogError, DeliveryMode, Durability, Shard, ShardConfig, ShardError, Store,
};

pub(crate) const TEMPLATE: &str = r#"{"run": "{{flow_run_id}}", "id": "{{webhook_id}}", "collections": {{json collection_names}}, "min": "{{flow_published_at_min}}", "max": "{{flow_published_at_max}}", "count": {{transaction_count}}, "first": {{first_commit_seq}}, "last": {{last_commit_seq}}}"#;

/// One trigger per `(path, drain)`.
fn triggers(receiver: &Receiver, drains: &[(&str, serde_json::Value)]) -> Arc<Triggers> {
    triggers_retrying(receiver, drains, 2)
}

/// One trigger per `(path, drain)`, each retrying `max_retries` times.
fn triggers_retrying(
    receiver: &Receiver,
    drains: &[(&str, serde_json::Value)],
    max_retries: u32,
) -> Arc<Triggers> {
    let config = serde_json::json!({"config": drains.iter().map(|(path, drain)| serde_json::json!({
        "url": receiver.url(path),
        "payloadTemplate": TEMPLATE,
        "maxRetries": max_retries,
        "drain": drain,
    })).collect::<Vec<_>>()});
    Arc::new(validate(&config.to_string(), ConfigFormat::Json).expect("valid config"))
}

pub(crate) fn config(triggers: Arc<Triggers>, delivery: DeliveryMode) -> ShardConfig {
    loopback_shard(materialization(3), triggers)
        .with_durability(Durability::Unsynced)
        .with_delivery(delivery)
}

pub(crate) fn decoupled(limit: usize) -> DeliveryMode {
    DeliveryMode::Decoupled {
        backlog_limit: limit,
    }
}

/// Transaction `n` (from 1) reads binding `n % 3` at second `n`.
fn stats(n: u64) -> Vec<BindingStats> {
    stats_at(n, &[(n % 3) as u32])
}

/// Commits and acknowledges transactions `range`.
pub(crate) async fn commit_all(shard: &mut Shard, range: std::ops::RangeInclusive<u64>) {
    for n in range {
        shard
            .start_commit(checkpoint(n as i64), &stats(n))
            .await
            .expect("commits");
        let ack = shard.acknowledged().await.expect("acknowledged");
        assert!(ack.queued.is_some(), "decoupled acknowledgements queue");
    }
}

/// Accepted webhooks of `path`, in arrival order, as (id, first, last, count, body).
pub(crate) fn accepted(
    receiver: &Receiver,
    path: &str,
) -> Vec<(String, u64, u64, u64, serde_json::Value)> {
    receiver
        .requests()
        .into_iter()
        .filter(|r| r.path == path && r.answered.is_some_and(|s| (200..300).contains(&s)))
        .map(|r| {
            let body = r.json().expect("JSON");
            (
                body["id"].as_str().unwrap_or_default().to_string(),
                body["first"].as_u64().unwrap_or_default(),
                body["last"].as_u64().unwrap_or_default(),
                body["count"].as_u64().unwrap_or_default(),
                body,
            )
        })
        .collect()
}

/// Checks that the distinct webhooks of `path` cover transactions 1..=n exactly once, each
/// with a consistent count; returns how many distinct webhooks there were.
fn assert_covers_exactly_once(receiver: &Receiver, path: &str, n: u64) -> usize {
    let mut ranges = BTreeSet::new();
    for (id, first, last, count, _) in accepted(receiver, path) {
        assert_eq!(
            count,
            last - first + 1,
            "{path} {id}: count matches its range"
        );
        ranges.insert((first, last, id));
    }
    let mut next = 1;
    for (first, last, id) in &ranges {
        assert_eq!(
            *first, next,
            "{path}: ranges {ranges:?} leave a gap or overlap at {id}"
        );
        next = last + 1;
    }
    assert_eq!(next, n + 1, "{path}: every transaction covered: {ranges:?}");
    ranges.len()
}

pub(crate) async fn open(dir: &std::path::Path, config: ShardConfig) -> Shard {
    let (mut shard, _) = Shard::open(dir, config).await.expect("opens");
    shard.acknowledged().await.expect("recovered ack");
    shard
}

#[tokio::test]
async fn coalesced_merges_what_commits_during_a_slow_webhook_and_covers_every_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    receiver.set_default(Reply::status(200).after(Duration::from_millis(150)));
    let triggers = triggers(
        &receiver,
        &[("/c", serde_json::json!({"mode": "coalesced"}))],
    );
    let mut shard = open(dir.path(), config(triggers, decoupled(8))).await;

    commit_all(&mut shard, 1..=30).await;
    // All 30 committed while at most a few 150 ms webhooks were answered: commits did
    // not wait on them.
    let answered_by_then = accepted(&receiver, "/c").len();
    assert!(answered_by_then < 30, "{answered_by_then} answered already");
    shard.drained().await.expect("drains");

    let webhooks = assert_covers_exactly_once(&receiver, "/c", 30);
    assert!(webhooks < 30, "merged into fewer webhooks: {webhooks}");
    // The merged variables: collections in commit order, the time range of all of them,
    // the newest transaction's id.
    let all = accepted(&receiver, "/c");
    let (_, first, last, _, body) = all.iter().find(|w| w.3 > 2).expect("a merged webhook");
    let expect_collections: Vec<&str> = {
        let mut seen = Vec::new();
        for n in *first..=*last {
            let name = ["acmeCo/orders", "acmeCo/customers", "acmeCo/refunds"][(n % 3) as usize];
            if !seen.contains(&name) {
                seen.push(name);
            }
        }
        seen
    };
    assert_eq!(body["collections"], serde_json::json!(expect_collections));
    let at = |n: u64| {
        time::OffsetDateTime::from_unix_timestamp(1_750_000_000 + n as i64)
            .expect("valid")
            .format(&time::format_description::well_known::Rfc3339)
            .expect("formats")
    };
    assert_eq!(body["min"], at(*first).as_str());
    assert_eq!(body["max"], at(*last).as_str());

    let status = shard.backlog_status().expect("decoupled");
    assert_eq!(status.depth(), 0);
    assert_eq!(status.queues[0].transactions_delivered, 30);
    assert_eq!(status.backpressure_waits, 0, "coalesced never backs up");
    shard.close().await;
    let store = Store::open(dir.path(), Durability::Synced).expect("reopens");
    assert!(store.backlog().expect("reads").is_empty());
}

#[tokio::test]
async fn ordered_keeps_commit_order_and_holds_the_backlog_at_its_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    receiver.set_default(Reply::status(200).after(Duration::from_millis(20)));
    // One 503 on the way: the retry keeps the order.
    receiver.script("/o", [Reply::status(200), Reply::status(503)]);
    let triggers = triggers(&receiver, &[("/o", serde_json::json!({"mode": "ordered"}))]);
    let mut shard = open(dir.path(), config(triggers, decoupled(3))).await;
    let handle = shard.backlog_handle().expect("decoupled");

    let watcher = tokio::spawn(async move {
        let mut deepest = 0;
        let mut saw_backpressure = false;
        for _ in 0..400 {
            let status = handle.status();
            deepest = deepest.max(status.depth());
            saw_backpressure |= status.backpressured;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (deepest, saw_backpressure)
    });
    commit_all(&mut shard, 1..=15).await;
    shard.drained().await.expect("drains");
    let (deepest, saw_backpressure) = watcher.await.expect("watcher");

    let firsts: Vec<u64> = accepted(&receiver, "/o").iter().map(|w| w.1).collect();
    assert_eq!(
        firsts,
        (1..=15).collect::<Vec<_>>(),
        "one webhook each, in order"
    );
    assert!(deepest <= 3, "never past its bound: {deepest}");
    let status = shard.backlog_status().expect("decoupled");
    assert!(status.backpressure_waits > 0, "{status:?}");
    assert!(saw_backpressure, "status showed the wait");
    shard.close().await;
}

#[tokio::test]
async fn concurrent_sends_up_to_its_limit_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    receiver.set_default(Reply::status(200).after(Duration::from_millis(200)));
    let triggers = triggers(
        &receiver,
        &[(
            "/n",
            serde_json::json!({"mode": "concurrent", "maxInFlight": 4}),
        )],
    );
    let mut shard = open(dir.path(), config(triggers, decoupled(100))).await;
    commit_all(&mut shard, 1..=8).await;
    let handle = shard.backlog_handle().expect("decoupled");
    let mut most_in_flight = 0;
    // Bounded: 8 webhooks of 200 ms take well under the 4 s this polls for.
    for _ in 0..800 {
        let status = handle.status();
        if status.depth() == 0 {
            break;
        }
        most_in_flight = most_in_flight.max(status.queues[0].in_flight);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(handle);
    shard.drained().await.expect("drains");
    assert_eq!(most_in_flight, 4, "up to maxInFlight at once, never more");
    assert_eq!(assert_covers_exactly_once(&receiver, "/n", 8), 8);
    shard.close().await;
}

#[tokio::test]
async fn a_permanent_failure_fails_the_shard_naming_trigger_status_and_depth_and_refires_after_reopen()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script(
        "/p",
        [Reply::status(200), Reply::status(410).with_body("gone")],
    );
    let drains = [("/p", serde_json::json!({"mode": "ordered"}))];
    let mut shard = open(
        dir.path(),
        config(triggers(&receiver, &drains), decoupled(10)),
    )
    .await;
    commit_all(&mut shard, 1..=4).await;
    let err = shard.drained().await.expect_err("410 is permanent");
    let ShardError::Backlog(BacklogError::Webhook(failure)) = &err else {
        panic!("expected a webhook failure: {err}");
    };
    assert_eq!(failure.failure.trigger.index, 0);
    assert_eq!(failure.depth, 3, "transactions 2, 3 and 4 wait");
    let message = err.to_string();
    for part in [
        "trigger 0",
        "HTTP 410",
        "3 webhook(s) in its backlog",
        "2..=2",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    // The shard refuses to go on.
    let refused = shard
        .start_commit(checkpoint(5), &stats(5))
        .await
        .expect_err("failed shard");
    assert!(matches!(refused, ShardError::Backlog(_)), "{refused}");
    shard.close().await;

    // The endpoint is fixed; reopening re-fires what was left, marked as recovery.
    receiver.set_default(Reply::status(200));
    let (mut shard, recovery) = Shard::open(
        dir.path(),
        config(triggers(&receiver, &drains), decoupled(10)),
    )
    .await
    .expect("reopens");
    assert_eq!(recovery.backlog, 3);
    shard.acknowledged().await.expect("recovered ack");
    shard.drained().await.expect("drains");
    assert_eq!(assert_covers_exactly_once(&receiver, "/p", 4), 4);
    let reasons: Vec<String> = receiver
        .requests()
        .iter()
        .filter(|r| r.answered == Some(200))
        .map(|r| r.header("webhook-reason").unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        reasons,
        [
            "first-send",
            "recovery-refire",
            "recovery-refire",
            "recovery-refire"
        ]
    );
    shard.close().await;
}

#[tokio::test]
async fn nothing_fires_before_acknowledged_and_an_unacknowledged_commit_fires_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let drains = [
        ("/o", serde_json::json!({"mode": "ordered"})),
        ("/c", serde_json::json!({"mode": "coalesced"})),
    ];
    let mut shard = open(
        dir.path(),
        config(triggers(&receiver, &drains), decoupled(10)),
    )
    .await;
    commit_all(&mut shard, 1..=2).await;
    shard.drained().await.expect("drains");
    shard
        .start_commit(checkpoint(3), &stats(3))
        .await
        .expect("commits");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        accepted(&receiver, "/o").iter().all(|w| w.2 < 3),
        "transaction 3 is not acknowledged yet"
    );
    // A crash here: the commit is durable, so it fires after the restart's Acknowledged.
    shard.close().await;
    let shard = open(
        dir.path(),
        config(triggers(&receiver, &drains), decoupled(10)),
    )
    .await;
    shard.drained().await.expect("drains");
    assert_covers_exactly_once(&receiver, "/o", 3);
    assert_covers_exactly_once(&receiver, "/c", 3);
    shard.close().await;
}

#[tokio::test]
async fn a_single_key_store_opens_decoupled_and_a_backlog_opens_waiting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let drains = [
        ("/a", serde_json::json!({"mode": "ordered"})),
        ("/b", serde_json::json!({"mode": "coalesced"})),
    ];
    // Waiting delivery commits transaction 1 and stops before its Acknowledged: its
    // variables sit under the single `trigger-params` key.
    {
        let (mut shard, _) = Shard::open(
            dir.path(),
            config(triggers(&receiver, &drains), DeliveryMode::Waiting),
        )
        .await
        .expect("opens");
        shard.acknowledged().await.expect("ack");
        shard
            .start_commit(checkpoint(1), &stats(1))
            .await
            .expect("commits");
        shard.close().await;
    }
    // Decoupled delivery finds it, queues it for both triggers, and goes on.
    {
        let (mut shard, recovery) = Shard::open(
            dir.path(),
            config(triggers(&receiver, &drains), decoupled(10)),
        )
        .await
        .expect("opens");
        assert_eq!(recovery.backlog, 2, "one entry per trigger");
        shard.acknowledged().await.expect("recovered ack");
        commit_all(&mut shard, 2..=3).await;
        shard.drained().await.expect("drains");
        // Transaction 4 is committed and acknowledged but its webhooks held back...
        receiver.set_default(Reply::status(200).after(Duration::from_secs(30)));
        commit_all(&mut shard, 4..=4).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        shard.close().await;
    }
    // ...and waiting delivery drains that backlog at its recovered Acknowledged.
    receiver.set_default(Reply::status(200));
    let (mut shard, recovery) = Shard::open(
        dir.path(),
        config(triggers(&receiver, &drains), DeliveryMode::Waiting),
    )
    .await
    .expect("opens");
    assert_eq!(recovery.backlog, 2);
    shard.acknowledged().await.expect("drains the backlog");
    assert_covers_exactly_once(&receiver, "/a", 4);
    assert_covers_exactly_once(&receiver, "/b", 4);
    shard
        .start_commit(checkpoint(5), &stats(5))
        .await
        .expect("waiting delivery goes on");
    let ack = shard.acknowledged().await.expect("delivers");
    assert_eq!(ack.delivered.len(), 2);
    assert_eq!(ack.variables.expect("variables").first_commit_seq, 5);
    shard.close().await;
}

#[tokio::test]
async fn a_coalesced_minimum_interval_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let drains = [(
        "/i",
        serde_json::json!({"mode": "coalesced", "minIntervalSecs": 2}),
    )];
    let mut shard = open(
        dir.path(),
        config(triggers(&receiver, &drains), decoupled(10)),
    )
    .await;
    commit_all(&mut shard, 1..=1).await;
    shard.drained().await.expect("drains");
    let first_sent = Instant::now();
    // Within the interval: these merge into one webhook, held until the interval passes.
    commit_all(&mut shard, 2..=4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(accepted(&receiver, "/i").len(), 1, "held by the interval");
    shard.close().await;

    let shard = open(
        dir.path(),
        config(triggers(&receiver, &drains), decoupled(10)),
    )
    .await;
    shard.drained().await.expect("drains");
    let waited = first_sent.elapsed();
    assert!(
        waited >= Duration::from_millis(1900),
        "the restart kept the interval: second webhook after {waited:?}"
    );
    let all = accepted(&receiver, "/i");
    assert_eq!(
        all.iter().map(|w| (w.1, w.2)).collect::<Vec<_>>(),
        [(1, 1), (2, 4)]
    );
    shard.close().await;
}

// The delivery ledger.

use triggers_proto::{DeliveryRecord, DeliveryState};
use triggers_runtime::{LedgerError, LedgerRetention};

pub(crate) fn states(records: &[DeliveryRecord]) -> Vec<(u64, DeliveryState)> {
    records
        .iter()
        .map(|r| (r.first_commit_seq, r.state()))
        .collect()
}

#[tokio::test]
async fn the_ledger_lists_deliveries_newest_first_in_pages_with_their_attempts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script("/o", [Reply::status(503), Reply::status(200)]);
    let drains = [("/o", serde_json::json!({"mode": "ordered"}))];
    let mut shard = open(
        dir.path(),
        config(triggers(&receiver, &drains), decoupled(10)),
    )
    .await;
    commit_all(&mut shard, 1..=3).await;
    shard.drained().await.expect("drains");
    let ledger = shard.backlog_handle().expect("decoupled");

    let (first, token) = ledger.deliveries(2, "").await.expect("lists");
    assert_eq!(
        states(&first),
        [(3, DeliveryState::Success), (2, DeliveryState::Success)]
    );
    let (rest, last) = ledger.deliveries(2, &token).await.expect("lists");
    assert_eq!(states(&rest), [(1, DeliveryState::Success)]);
    assert!(last.is_empty(), "last page");

    let one = ledger.delivery("0", 1).await.expect("gets");
    let attempts: Vec<(u32, u32, &str)> = one
        .attempts
        .iter()
        .map(|a| (a.number, a.status, a.reason.as_str()))
        .collect();
    assert_eq!(attempts, [(1, 503, "first-send"), (2, 200, "retry")]);
    assert!(one.attempts[0].error.contains("HTTP 503"), "{one:?}");
    assert!(one.committed_at.is_some() && one.updated_at.is_some());
    assert!(matches!(
        ledger.delivery("0", 99).await,
        Err(LedgerError::NotFound { .. })
    ));
    assert!(matches!(
        ledger.deliveries(1, "garbage").await,
        Err(LedgerError::Invalid(_))
    ));
    drop(ledger);
    shard.close().await;
}

#[tokio::test]
async fn an_operator_skips_a_poisoned_webhook_and_the_shard_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script(
        "/o",
        [
            Reply::status(200),
            Reply::status(422).with_body("bad payload"),
        ],
    );
    let drains = [("/o", serde_json::json!({"mode": "ordered"}))];
    let mut shard = open(
        dir.path(),
        config(triggers(&receiver, &drains), decoupled(10)),
    )
    .await;
    commit_all(&mut shard, 1..=3).await;
    shard.drained().await.expect_err("422 is permanent");
    let ledger = shard.backlog_handle().expect("decoupled");
    let failed = ledger.delivery("0", 2).await.expect("gets");
    assert_eq!(failed.state(), DeliveryState::Failed);
    assert!(failed.error.contains("HTTP 422"), "{failed:?}");
    assert!(
        shard.start_commit(checkpoint(4), &stats(4)).await.is_err(),
        "stopped"
    );

    // Illegal transitions are refused with the reason.
    let err = ledger.skip("0", 2, "  ").await.expect_err("needs a reason");
    assert!(matches!(err, LedgerError::Invalid(_)), "{err}");
    let err = ledger.skip("0", 1, "why not").await.expect_err("delivered");
    assert!(
        err.to_string().contains("it is SUCCESS; it was delivered"),
        "{err}"
    );
    let err = ledger.retry("0", 3).await.expect_err("pending");
    assert!(err.to_string().contains("it is PENDING"), "{err}");

    let skipped = ledger
        .skip(
            "0",
            2,
            "the receiver rejects this payload for good (ticket 42)",
        )
        .await
        .expect("skips");
    assert_eq!(skipped.state(), DeliveryState::Cancelled);
    assert!(skipped.cancel_reason.contains("ticket 42"));
    let err = ledger
        .skip("0", 2, "again")
        .await
        .expect_err("already cancelled");
    assert!(
        matches!(err, LedgerError::IllegalTransition { .. }),
        "{err}"
    );

    // The backlog resumes without a reopen, and the shard commits again.
    shard.drained().await.expect("drains after the skip");
    commit_all(&mut shard, 4..=4).await;
    shard.drained().await.expect("drains");
    let (all, _) = ledger.deliveries(10, "").await.expect("lists");
    assert_eq!(
        states(&all),
        [
            (4, DeliveryState::Success),
            (3, DeliveryState::Success),
            (2, DeliveryState::Cancelled),
            (1, DeliveryState::Success)
        ]
    );
    let firsts: Vec<u64> = accepted(&receiver, "/o").iter().map(|w| w.1).collect();
    assert_eq!(firsts, [1, 3, 4], "the skipped webhook was never accepted");
    drop(ledger);
    shard.close().await;
    let store = Store::open(dir.path(), Durability::Synced).expect("reopens");
    assert!(
        store.backlog().expect("reads").is_empty(),
        "no entry left behind"
    );
}

#[tokio::test]
async fn an_operator_retries_a_failed_delivery_now_and_a_running_one_cannot_be_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let drains = [("/r", serde_json::json!({"mode": "ordered"}))];
    let config_text = serde_json::json!({"config": [{
        "url": receiver.url("/r"), "payloadTemplate": TEMPLATE, "maxRetries": 0,
        "drain": {"mode": "ordered"},
    }]});
    let no_retries =
        Arc::new(validate(&config_text.to_string(), ConfigFormat::Json).expect("valid"));
    receiver.script("/r", [Reply::status(500)]);
    let mut shard = open(dir.path(), config(no_retries, decoupled(10))).await;
    commit_all(&mut shard, 1..=1).await;
    shard
        .drained()
        .await
        .expect_err("500 with no retries fails");
    let ledger = shard.backlog_handle().expect("decoupled");

    // The endpoint now holds the next request open: the retried delivery is RUNNING.
    receiver.script("/r", [Reply::status(200).after(Duration::from_millis(400))]);
    let retried = ledger.retry("0", 1).await.expect("retries");
    assert_eq!(retried.state(), DeliveryState::Pending);
    let mut running = None;
    for _ in 0..100 {
        let now = ledger.delivery("0", 1).await.expect("gets");
        if now.state() == DeliveryState::Running {
            running = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(running.is_some(), "the retry runs");
    let err = ledger.skip("0", 1, "too late").await.expect_err("running");
    assert!(err.to_string().contains("it is RUNNING"), "{err}");

    shard.drained().await.expect("delivered on retry");
    let done = ledger.delivery("0", 1).await.expect("gets");
    assert_eq!(done.state(), DeliveryState::Success);
    let statuses: Vec<u32> = done.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [500, 200], "both runs' attempts are on record");
    drop((drains, ledger));
    shard.close().await;
}

#[tokio::test]
async fn a_delivery_interrupted_by_a_stop_is_pending_again_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    receiver.set_default(Reply::status(200).after(Duration::from_secs(30)));
    let drains = [("/h", serde_json::json!({"mode": "ordered"}))];
    let mut shard = open(
        dir.path(),
        config(triggers(&receiver, &drains), decoupled(10)),
    )
    .await;
    commit_all(&mut shard, 1..=1).await;
    let ledger = shard.backlog_handle().expect("decoupled");
    for _ in 0..100 {
        if ledger.delivery("0", 1).await.expect("gets").state() == DeliveryState::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(ledger);
    shard.close().await;
    {
        let store = Store::open(dir.path(), Durability::Synced).expect("reopens");
        let stored = store.delivery("0", 1).expect("reads").expect("recorded");
        assert_eq!(
            stored.state(),
            DeliveryState::Running,
            "as the stop left it"
        );
    }
    receiver.set_default(Reply::status(200));
    let (mut shard, _) = Shard::open(
        dir.path(),
        config(triggers(&receiver, &drains), decoupled(10)),
    )
    .await
    .expect("reopens");
    let ledger = shard.backlog_handle().expect("decoupled");
    assert_eq!(
        ledger.delivery("0", 1).await.expect("gets").state(),
        DeliveryState::Pending
    );
    shard.acknowledged().await.expect("recovered ack");
    shard.drained().await.expect("drains");
    assert_eq!(
        ledger.delivery("0", 1).await.expect("gets").state(),
        DeliveryState::Success
    );
    drop(ledger);
    shard.close().await;
}

#[tokio::test]
async fn retention_collects_terminal_records_by_count_and_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let drains = [("/g", serde_json::json!({"mode": "ordered"}))];
    let mut config = config(triggers(&receiver, &drains), decoupled(100));
    config.ledger = LedgerRetention::new(5, Duration::from_secs(3600));
    let mut shard = open(dir.path(), config.clone()).await;
    commit_all(&mut shard, 1..=40).await;
    shard.drained().await.expect("drains");
    let ledger = shard.backlog_handle().expect("decoupled");
    // A pass ran by itself after 32 terminal transitions; another one now.
    ledger.collect().await.expect("collects");
    let (kept, _) = ledger.deliveries(100, "").await.expect("lists");
    assert_eq!(
        kept.iter().map(|r| r.first_commit_seq).collect::<Vec<_>>(),
        [40, 39, 38, 37, 36],
        "the newest five"
    );
    drop(ledger);
    shard.close().await;

    config.ledger = LedgerRetention::new(5, Duration::ZERO);
    let shard = open(dir.path(), config).await;
    let ledger = shard.backlog_handle().expect("decoupled");
    assert_eq!(
        ledger.collect().await.expect("collects"),
        5,
        "all older than zero"
    );
    assert!(
        ledger
            .deliveries(100, "")
            .await
            .expect("lists")
            .0
            .is_empty()
    );
    drop(ledger);
    shard.close().await;
}

/// Records, for every `attempt` span, its fields and those of every span around it.
#[derive(Clone, Default)]
struct AttemptSpans(Arc<std::sync::Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl<S> tracing_subscriber::Layer<S> for AttemptSpans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields(format!("{}: ", attrs.metadata().name()));
        attrs.record(&mut fields);
        let Some(span) = ctx.span(id) else { return };
        span.extensions_mut().insert(fields.0.clone());
        if attrs.metadata().name() == "attempt" {
            let chain: Vec<String> = span
                .scope()
                .filter_map(|s| s.extensions().get::<String>().cloned())
                .collect();
            self.0.lock().expect("lock").push(chain.join("| "));
        }
    }
}

#[tokio::test]
async fn each_attempt_has_a_span_naming_shard_transaction_and_trigger() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let spans = AttemptSpans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    // While it is the only dispatch in the process, a callsite first reached on another
    // test's thread (which has none) caches "never" for every thread, this one included
    // (tokio-rs/tracing#3611), and the attempt spans go missing now and then. A second
    // live dispatch makes tracing ask every registered one instead.
    let _second = tracing::Dispatch::new(tracing_subscriber::registry());

    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script("/s", [Reply::status(503), Reply::status(200)]);
    let drains = [("/s", serde_json::json!({"mode": "ordered"}))];
    let mut shard = open(
        dir.path(),
        config(triggers(&receiver, &drains), decoupled(10)),
    )
    .await;
    commit_all(&mut shard, 1..=1).await;
    shard.drained().await.expect("drains");
    let run = accepted(&receiver, "/s")[0].4["run"]
        .as_str()
        .expect("run id")
        .to_string();
    shard.close().await;

    let recorded = spans.0.lock().expect("lock").clone();
    assert_eq!(recorded.len(), 2, "one span per attempt: {recorded:#?}");
    for (number, chain) in recorded.iter().enumerate() {
        for part in [
            format!("attempt: number={} ", number + 1),
            "trigger=0".to_string(),
            format!("flow_run_id={run}"),
            format!("shard={}", dir.path().display()),
            "first_commit_seq=1".to_string(),
        ] {
            assert!(chain.contains(&part), "{part:?} missing from {chain}");
        }
    }
}

// Hardening: the backlog never loses track of a stored entry, whatever fails, whoever
// gives up waiting, however the clock moves.

use triggers_runtime::BacklogHandle;

/// Polls the ledger until delivery `(trigger, seq)` is in `state` (for at most 10 s).
pub(crate) async fn await_state(
    ledger: &BacklogHandle,
    trigger: &str,
    seq: u64,
    state: DeliveryState,
) -> DeliveryRecord {
    let mut last = None;
    for _ in 0..2000 {
        let record = ledger.delivery(trigger, seq).await.expect("gets");
        if record.state() == state {
            return record;
        }
        last = Some(record);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("delivery {trigger}/{seq} never became {state:?}: {last:?}");
}

/// The (trigger, first commit seq) of every FAILED delivery.
async fn failed_deliveries(ledger: &BacklogHandle) -> Vec<(String, u64)> {
    let (all, _) = ledger.deliveries(100, "").await.expect("lists");
    let mut failed: Vec<(String, u64)> = all
        .iter()
        .filter(|r| r.state() == DeliveryState::Failed)
        .map(|r| (r.trigger_name.clone(), r.first_commit_seq))
        .collect();
    failed.sort_unstable();
    failed
}

#[tokio::test]
async fn two_ordered_triggers_failing_at_once_are_both_tracked_and_operable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script("/a", [Reply::status(400)]);
    receiver.script("/b", [Reply::status(400)]);
    let drains = [
        ("/a", serde_json::json!({"mode": "ordered"})),
        ("/b", serde_json::json!({"mode": "ordered"})),
    ];
    let triggers = triggers_retrying(&receiver, &drains, 0);
    let mut shard = open(dir.path(), config(triggers, decoupled(10))).await;
    commit_all(&mut shard, 1..=2).await;
    let ledger = shard.backlog_handle().expect("decoupled");
    await_state(&ledger, "0", 1, DeliveryState::Failed).await;
    await_state(&ledger, "1", 1, DeliveryState::Failed).await;
    let err = shard.drained().await.expect_err("both failed");
    assert!(err.to_string().contains("2 of them failed"), "{err}");
    assert_eq!(shard.backlog_status().expect("decoupled").depth(), 4);

    // Retrying one sends it alone: the other failure keeps the backlog stopped.
    ledger.retry("0", 1).await.expect("retries trigger 0");
    await_state(&ledger, "0", 1, DeliveryState::Success).await;
    let err = shard.drained().await.expect_err("trigger 1 still failed");
    let ShardError::Backlog(BacklogError::Webhook(failure)) = &err else {
        panic!("expected a webhook failure: {err}");
    };
    assert_eq!(
        (failure.failure.trigger.index, failure.first_commit_seq),
        (1, 1)
    );
    assert_eq!(failed_deliveries(&ledger).await, [("1".to_string(), 1)]);
    assert_eq!(
        ledger.delivery("0", 2).await.expect("gets").state(),
        DeliveryState::Pending,
        "not sent while another delivery is FAILED"
    );
    assert_eq!(shard.backlog_status().expect("decoupled").depth(), 3);
    assert!(
        shard.start_commit(checkpoint(3), &stats(3)).await.is_err(),
        "still stopped"
    );

    // The other one is still operable: skipping it resumes the backlog.
    let skipped = ledger
        .skip("1", 1, "the receiver refuses it for good")
        .await
        .expect("skips the other failure");
    assert_eq!(skipped.state(), DeliveryState::Cancelled);
    shard.drained().await.expect("drains");
    let firsts = |path| -> Vec<u64> { accepted(&receiver, path).iter().map(|w| w.1).collect() };
    assert_eq!(firsts("/a"), [1, 2], "in commit order");
    assert_eq!(firsts("/b"), [2]);
    commit_all(&mut shard, 3..=3).await;
    shard.drained().await.expect("drains");
    drop(ledger);
    shard.close().await;
    let store = Store::open(dir.path(), Durability::Synced).expect("reopens");
    assert!(store.backlog().expect("reads").is_empty());
}

#[tokio::test]
async fn two_failures_of_one_concurrent_trigger_are_both_tracked_and_operable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    // Slow failures: every entry is likely in flight when the first one fails.
    let slow_400 = Reply::status(400).after(Duration::from_millis(200));
    receiver.script("/n", [slow_400.clone(), slow_400]);
    let drains = [(
        "/n",
        serde_json::json!({"mode": "concurrent", "maxInFlight": 4}),
    )];
    let triggers = triggers_retrying(&receiver, &drains, 0);
    let mut shard = open(dir.path(), config(triggers, decoupled(10))).await;
    commit_all(&mut shard, 1..=3).await;
    let ledger = shard.backlog_handle().expect("decoupled");
    let mut failed = Vec::new();
    for _ in 0..2000 {
        failed = failed_deliveries(&ledger).await;
        if failed.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(failed.len(), 2, "both failures on record: {failed:?}");
    let err = shard.drained().await.expect_err("failed");
    assert!(err.to_string().contains("2 of them failed"), "{err}");

    let (retried, skipped) = (failed[0].clone(), failed[1].clone());
    ledger.retry(&retried.0, retried.1).await.expect("retries");
    await_state(&ledger, &retried.0, retried.1, DeliveryState::Success).await;
    shard
        .drained()
        .await
        .expect_err("the other failure still stops the backlog");
    assert_eq!(
        ledger
            .delivery(&skipped.0, skipped.1)
            .await
            .expect("gets")
            .state(),
        DeliveryState::Failed
    );
    ledger
        .skip(&skipped.0, skipped.1, "poisoned")
        .await
        .expect("skips the other failure");
    shard.drained().await.expect("drains");
    let mut delivered: Vec<u64> = accepted(&receiver, "/n").iter().map(|w| w.1).collect();
    delivered.sort_unstable();
    let expected: Vec<u64> = (1..=3).filter(|n| *n != skipped.1).collect();
    assert_eq!(delivered, expected);
    drop(ledger);
    shard.close().await;
}

#[tokio::test]
async fn an_operator_retry_is_sent_as_operator_replay_and_goes_on_counting_attempts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script("/r", [Reply::status(500), Reply::status(503)]);
    let drains = [("/r", serde_json::json!({"mode": "ordered"}))];
    let mut shard = open(
        dir.path(),
        config(triggers_retrying(&receiver, &drains, 1), decoupled(10)),
    )
    .await;
    commit_all(&mut shard, 1..=1).await;
    shard
        .drained()
        .await
        .expect_err("500, then 503: retries spent");
    let ledger = shard.backlog_handle().expect("decoupled");
    ledger.retry("0", 1).await.expect("retries");
    shard.drained().await.expect("delivered on retry");

    let sent: Vec<(String, String)> = receiver
        .requests()
        .iter()
        .map(|r| {
            (
                r.header("webhook-reason").unwrap_or_default().to_string(),
                r.header("webhook-attempt").unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expected = [
        ("first-send", "1"),
        ("retry", "2"),
        ("operator-replay", "3"),
    ]
    .map(|(reason, attempt)| (reason.to_string(), attempt.to_string()));
    assert_eq!(sent, expected);
    let done = ledger.delivery("0", 1).await.expect("gets");
    let attempts: Vec<(u32, &str)> = done
        .attempts
        .iter()
        .map(|a| (a.number, a.reason.as_str()))
        .collect();
    assert_eq!(
        attempts,
        [(1, "first-send"), (2, "retry"), (3, "operator-replay")]
    );
    drop(ledger);
    shard.close().await;
}

#[tokio::test]
async fn a_last_send_time_in_the_future_does_not_stall_a_coalesced_trigger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let drains = [
        (
            "/z",
            serde_json::json!({"mode": "coalesced", "minIntervalSecs": 0}),
        ),
        (
            "/i",
            serde_json::json!({"mode": "coalesced", "minIntervalSecs": 1}),
        ),
    ];
    // A clock a day ahead recorded these send times; it is right again now.
    {
        let store = Store::open(dir.path(), Durability::Synced).expect("opens");
        let ahead = std::time::SystemTime::now() + Duration::from_secs(24 * 3600);
        let ahead_ms = ahead
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64;
        for trigger in 0..2 {
            let record = DeliveryRecord {
                trigger,
                state: DeliveryState::Success as i32,
                ..Default::default()
            };
            store
                .write_delivery_unchecked(&record, false, Some(ahead_ms))
                .expect("writes");
        }
    }
    let mut shard = open(
        dir.path(),
        config(triggers(&receiver, &drains), decoupled(10)),
    )
    .await;
    commit_all(&mut shard, 1..=2).await;
    tokio::time::timeout(Duration::from_secs(20), shard.drained())
        .await
        .expect("not stalled by a send time in the future")
        .expect("drains");
    assert_covers_exactly_once(&receiver, "/z", 2);
    assert_covers_exactly_once(&receiver, "/i", 2);
    shard.close().await;
}

#[tokio::test]
async fn a_start_commit_dropped_while_waiting_for_room_leaves_no_backpressure_and_the_shard_intact()
{
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    receiver.set_default(Reply::status(200).after(Duration::from_secs(2)));
    let drains = [("/o", serde_json::json!({"mode": "ordered"}))];
    let mut shard = open(
        dir.path(),
        config(triggers(&receiver, &drains), decoupled(1)),
    )
    .await;
    commit_all(&mut shard, 1..=1).await;
    let handle = shard.backlog_handle().expect("decoupled");
    {
        // The backlog is full: this StartCommit waits for room, and its caller gives up.
        let stats = stats(2);
        let commit = shard.start_commit(checkpoint(2), &stats);
        tokio::pin!(commit);
        let mut waiting = false;
        for _ in 0..500 {
            tokio::select! {
                done = &mut commit => panic!("the commit did not wait: {done:?}"),
                () = tokio::time::sleep(Duration::from_millis(2)) => {}
            }
            if handle.status().backpressured {
                waiting = true;
                break;
            }
        }
        assert!(waiting, "the commit waits for room");
    }
    let status = handle.status();
    assert!(!status.backpressured, "{status:?}");
    assert_eq!(status.backpressure_waits, 1);
    // Nothing was written: the shard takes the same transaction again.
    commit_all(&mut shard, 2..=2).await;
    shard.drained().await.expect("drains");
    assert_covers_exactly_once(&receiver, "/o", 2);
    drop(handle);
    shard.close().await;
}

#[tokio::test]
async fn a_coalesced_backlog_stays_within_two_entries_across_restarts_and_never_waits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    // Nothing is answered before each stop: every run re-fires what the last one left.
    receiver.set_default(Reply::status(200).after(Duration::from_secs(5)));
    let drains = [("/c", serde_json::json!({"mode": "coalesced"}))];
    // A bound of one: a coalesced trigger never waits for room, whatever the bound.
    let config = config(triggers(&receiver, &drains), decoupled(1));
    let mut next = 1;
    for run in 0..5 {
        let (mut shard, recovery) = Shard::open(dir.path(), config.clone())
            .await
            .expect("opens");
        assert!(
            recovery.backlog <= 2,
            "run {run}: {} entries recovered",
            recovery.backlog
        );
        shard.acknowledged().await.expect("recovered ack");
        commit_all(&mut shard, next..=next + 2).await;
        next += 3;
        let status = shard.backlog_status().expect("decoupled");
        assert!(status.depth() <= 2, "run {run}: {status:?}");
        assert_eq!(status.backpressure_waits, 0, "run {run}: {status:?}");
        shard.close().await;
    }
    receiver.set_default(Reply::status(200));
    let (mut shard, recovery) = Shard::open(dir.path(), config).await.expect("opens");
    assert!(recovery.backlog <= 2, "{} entries", recovery.backlog);
    shard.acknowledged().await.expect("recovered ack");
    shard.drained().await.expect("drains");
    // Every transaction once, and every re-fire repeated exactly what was sent before it.
    assert_covers_exactly_once(&receiver, "/c", next - 1);
    shard.close().await;
}

#[cfg(feature = "failpoints")]
#[tokio::test]
async fn a_start_commit_dropped_at_its_store_write_leaves_its_entries_sendable_and_skippable() {
    use triggers_runtime::crash::shard_point_name;
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    // Slow enough that transaction 1 is still in flight when 3 commits.
    receiver.set_default(Reply::status(200).after(Duration::from_secs(3)));
    let drains = [
        ("/c", serde_json::json!({"mode": "coalesced"})),
        ("/d", serde_json::json!({"mode": "coalesced"})),
        ("/e", serde_json::json!({"mode": "ordered"})),
    ];
    let config = config(triggers(&receiver, &drains), decoupled(10));
    let mut shard = open(dir.path(), config.clone()).await;
    // Transaction 1 is in flight on every trigger; 2 waits in each coalesced one's tail,
    // which 3 merges into, and behind it on the ordered one, which queues 3.
    commit_all(&mut shard, 1..=1).await;
    let ledger = shard.backlog_handle().expect("decoupled");
    await_state(&ledger, "0", 1, DeliveryState::Running).await;
    await_state(&ledger, "1", 1, DeliveryState::Running).await;
    commit_all(&mut shard, 2..=2).await;

    // Hold the store thread at the next commit's write until released.
    let point = shard_point_name("start_commit.store_write", dir.path());
    let (reached_tx, reached) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    fail::cfg_callback(point.clone(), move || {
        let _ = reached_tx.send(());
        let _ = release_rx
            .lock()
            .expect("lock")
            .recv_timeout(Duration::from_secs(10));
    })
    .expect("arms");
    {
        let stats = stats(3);
        let commit = shard.start_commit(checkpoint(3), &stats);
        tokio::pin!(commit);
        let mut at_write = false;
        for _ in 0..2000 {
            tokio::select! {
                done = &mut commit => panic!("the commit passed its write point: {done:?}"),
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
            if reached.try_recv().is_ok() {
                at_write = true;
                break;
            }
        }
        assert!(at_write, "the commit reached its store write");
    } // Dropped there, as a gRPC deadline drops it.
    fail::remove(&point);
    release.send(()).expect("releases the store thread");

    // The write landed: each tail now covers 2..=3, as on disk, and is not stuck.
    let tail = ledger.delivery("1", 2).await.expect("gets");
    assert_eq!(
        (tail.state(), tail.last_commit_seq),
        (DeliveryState::Pending, 3)
    );
    let queued = ledger.delivery("2", 3).await.expect("queued in memory too");
    assert_eq!(queued.state(), DeliveryState::Pending);
    let err = tokio::time::timeout(Duration::from_secs(10), shard.drained())
        .await
        .expect("AwaitDrained answers")
        .expect_err("the shard must be reopened");
    assert!(err.to_string().contains("StartCommit"), "{err}");
    assert!(!shard.backlog_status().expect("decoupled").backpressured);
    ledger
        .skip("1", 2, "an operator gives up on it")
        .await
        .expect("the merged tail can be skipped");
    let refused = shard
        .start_commit(checkpoint(4), &stats(4))
        .await
        .expect_err("the shard failed");
    assert!(
        matches!(refused, ShardError::Protocol(_)),
        "a clear error: {refused}"
    );
    drop(ledger);
    shard.close().await;

    // After a reopen, what the write stored is sent.
    receiver.set_default(Reply::status(200));
    let (mut shard, recovery) = Shard::open(dir.path(), config).await.expect("reopens");
    assert_eq!(recovery.checkpoint, checkpoint(3), "the write landed");
    shard.acknowledged().await.expect("recovered ack");
    shard.drained().await.expect("drains");
    assert_covers_exactly_once(&receiver, "/c", 3);
    assert_covers_exactly_once(&receiver, "/e", 3);
    let d: Vec<(u64, u64)> = accepted(&receiver, "/d")
        .iter()
        .map(|w| (w.1, w.2))
        .collect();
    assert!(
        !d.is_empty() && d.iter().all(|w| *w == (1, 1)),
        "/d: only transaction 1, its tail skipped: {d:?}"
    );
    shard.close().await;
}

#[tokio::test]
async fn a_coalesced_triggers_never_sent_entries_merge_at_open_and_the_oldest_stays_as_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    receiver.set_default(Reply::status(200).after(Duration::from_secs(5)));
    // Drained in order first: transaction 1 is sent (and cut off by the stop), 2 to 4
    // wait behind it, never sent.
    let ordered = [("/t", serde_json::json!({"mode": "ordered"}))];
    let mut shard = open(
        dir.path(),
        config(triggers(&receiver, &ordered), decoupled(10)),
    )
    .await;
    commit_all(&mut shard, 1..=1).await;
    let ledger = shard.backlog_handle().expect("decoupled");
    await_state(&ledger, "0", 1, DeliveryState::Running).await;
    commit_all(&mut shard, 2..=4).await;
    let first_sent = receiver.wait_for(1, Duration::from_secs(10)).await[0]
        .json()
        .expect("JSON");
    drop(ledger);
    shard.close().await;

    // Coalesced now: 2..=4 become one entry; 1 is re-fired exactly as it was sent.
    receiver.set_default(Reply::status(200));
    let coalesced = [("/t", serde_json::json!({"mode": "coalesced"}))];
    let config = config(triggers(&receiver, &coalesced), decoupled(10));
    let (mut shard, recovery) = Shard::open(dir.path(), config.clone())
        .await
        .expect("reopens");
    assert_eq!(recovery.backlog, 2, "the sent entry and the merged rest");
    shard.acknowledged().await.expect("recovered ack");
    shard.drained().await.expect("drains");
    let all = accepted(&receiver, "/t");
    assert_eq!(all[0].4, first_sent, "the re-fire repeats the first send");
    assert_eq!(
        all.iter().map(|w| (w.1, w.2, w.3)).collect::<Vec<_>>(),
        [(1, 1, 1), (2, 4, 3)]
    );
    shard.close().await;
    let store = Store::open(dir.path(), Durability::Synced).expect("reopens");
    assert!(store.backlog().expect("reads").is_empty());
}

/// Arms the per-shard failpoint `point` of the shard in `dir` so that the first time it is
/// reached it reports on the returned receiver and holds there until the returned sender
/// sends (or 10 s pass), then does `then`; later passes go straight through.
#[cfg(feature = "failpoints")]
fn hold_once_at(
    point: &str,
    dir: &std::path::Path,
    then: impl Fn() + Send + Sync + 'static,
) -> (
    String,
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    let point = triggers_runtime::crash::shard_point_name(point, dir);
    let (reached_tx, reached) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    let first = std::sync::atomic::AtomicBool::new(true);
    fail::cfg_callback(point.clone(), move || {
        if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            let _ = reached_tx.send(());
            let _ = release_rx
                .lock()
                .expect("lock")
                .recv_timeout(Duration::from_secs(10));
            then();
        }
    })
    .expect("arms");
    (point, reached, release)
}

/// Issue-12 review, item 1: the store-thread job recording a finished delivery panics
/// (or never runs). Whoever waits for the drain or for room must hear that delivery
/// stopped, not hang.
#[cfg(feature = "failpoints")]
#[tokio::test]
async fn a_finished_delivery_job_that_fails_wakes_await_drained_and_a_start_commit_waiting_for_room()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let drains = [("/o", serde_json::json!({"mode": "ordered"}))];
    let (point, reached, release) = hold_once_at("backlog.finish", dir.path(), || {
        panic!("injected: recording the finished delivery panics")
    });
    let mut shard = open(
        dir.path(),
        config(triggers(&receiver, &drains), decoupled(1)),
    )
    .await;
    commit_all(&mut shard, 1..=1).await;
    let handle = shard.backlog_handle().expect("decoupled");
    let (committed, drained) = {
        let drained = handle.drained();
        tokio::pin!(drained);
        let stats = stats(2);
        let commit = shard.start_commit(checkpoint(2), &stats);
        tokio::pin!(commit);
        // Both wait: the drain for transaction 1, the commit for room behind it, while the
        // store thread is held just before recording transaction 1's delivery.
        let mut held = false;
        for _ in 0..2000 {
            tokio::select! {
                done = &mut commit => panic!("the commit did not wait: {done:?}"),
                done = &mut drained => panic!("the drain did not wait: {done:?}"),
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
            if handle.status().backpressured && reached.try_recv().is_ok() {
                held = true;
                break;
            }
        }
        assert!(held, "the commit waits for room and the job is held");
        release.send(()).expect("releases the store thread");
        tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(&mut commit, &mut drained)
        })
        .await
        .expect("both hear that delivery stopped, instead of hanging")
    };
    fail::remove(&point);
    let err = drained.expect_err("delivery stopped");
    assert!(
        matches!(err, BacklogError::Stopped { .. }) && err.to_string().contains("panicked"),
        "{err}"
    );
    // The store work's own error is kept as the cause, not only copied into the text.
    let cause = std::error::Error::source(&err).expect("a cause");
    assert!(cause.to_string().contains("panicked"), "{cause}");
    committed.expect_err("the commit fails rather than waiting");
    drop(handle);
    shard.close().await;
}

/// Issue-12 review, item 2: close begins while a worker is between its own look at the
/// closing flag and picking: it must pick nothing, so nothing new is sent.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_picks_nothing_once_close_begins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let drains = [("/o", serde_json::json!({"mode": "ordered"}))];
    let mut shard = open(
        dir.path(),
        config(triggers(&receiver, &drains), decoupled(10)),
    )
    .await;
    // The worker's next pick holds (on a runtime thread) before taking its queue's lock.
    let (point, reached, release) = hold_once_at("backlog.pick", dir.path(), || ());
    commit_all(&mut shard, 1..=1).await;
    let mut held = false;
    for _ in 0..2000 {
        if reached.try_recv().is_ok() {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(held, "the worker reached its pick");
    let handle = shard.backlog_handle().expect("decoupled");
    let watch = handle.clone();
    let release_after_close_began = async move {
        let err = tokio::time::timeout(Duration::from_secs(10), watch.drained())
            .await
            .expect("the drain answers once close begins")
            .expect_err("transaction 1 is still queued");
        assert!(matches!(err, BacklogError::Closed), "{err}");
        release.send(()).expect("releases the worker");
    };
    tokio::join!(
        shard.close_within(Duration::from_secs(10)),
        release_after_close_began
    );
    fail::remove(&point);
    let sent = receiver.requests();
    assert!(sent.is_empty(), "sent after close began: {sent:?}");
    // It stays persisted and goes at the next start.
    drop(handle);
    let shard = open(
        dir.path(),
        config(triggers(&receiver, &drains), decoupled(10)),
    )
    .await;
    shard.drained().await.expect("drains");
    assert_covers_exactly_once(&receiver, "/o", 1);
    shard.close().await;
}

/// A receiver path that holds its first request (the receiver has it, its answer never
/// comes) and answers every later one 409, as Airflow answers a second POST of one
/// `dag_run_id`.
fn airflow_like(receiver: &Receiver, path: &str) {
    receiver.script(
        path,
        [
            Reply::status(200).after(Duration::from_secs(60)),
            Reply::status(409).with_body("DAGRun already exists"),
        ],
    );
}

/// Every attempt an observer is told of, in order.
#[derive(Default)]
struct RecordedAttempts(std::sync::Mutex<Vec<AttemptRecord>>);

impl AttemptObserver for RecordedAttempts {
    fn attempt_finished(&self, record: &AttemptRecord) {
        self.0.lock().expect("not poisoned").push(record.clone());
    }
}

/// Issue 13, item 1 (response policy per trigger), decoupled delivery: the shard stops
/// with a request in flight that the receiver has; after reopening, the re-fire is
/// answered 409. That is "already delivered": the backlog goes on (later commits
/// deliver), and the ledger, the status and the metrics say so, distinctly from a
/// plain success.
#[tokio::test]
async fn response_policy_a_refire_answered_409_after_reopen_is_already_delivered_and_the_shard_goes_on()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    airflow_like(&receiver, "/dagRuns");
    let drains = [("/dagRuns", serde_json::json!({"mode": "ordered"}))];
    let mut shard = open(
        dir.path(),
        config(triggers(&receiver, &drains), decoupled(10)),
    )
    .await;
    commit_all(&mut shard, 1..=1).await;
    assert_eq!(receiver.wait_for(1, Duration::from_secs(10)).await.len(), 1);
    shard.close().await;

    let attempts = Arc::new(RecordedAttempts::default());
    let mut reopened = config(triggers(&receiver, &drains), decoupled(10));
    reopened.attempt_observer = Some(attempts.clone());
    let mut shard = open(dir.path(), reopened).await;
    shard
        .drained()
        .await
        .expect("the 409 re-fire counts as delivered");
    receiver.set_default(Reply::status(200));
    commit_all(&mut shard, 2..=3).await;
    shard.drained().await.expect("later commits deliver");

    let ledger = shard.backlog_handle().expect("decoupled");
    let refired = ledger.delivery("0", 1).await.expect("gets");
    assert_eq!(refired.state(), DeliveryState::Success);
    assert!(refired.already_delivered, "{refired:?}");
    let last = refired.attempts.last().expect("attempts kept");
    assert_eq!(
        (last.status, last.reason.as_str(), last.already_delivered),
        (409, "recovery-refire", true)
    );
    // The attempt's trace context, as the receiver saw it in `traceparent`.
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let seen = receiver.requests();
    let traceparent = seen
        .iter()
        .find(|r| r.header("webhook-reason") == Some("recovery-refire"))
        .and_then(|r| r.header("traceparent"))
        .expect("the re-fire carried a traceparent");
    assert_eq!(
        traceparent,
        format!("00-{}-{}-01", hex(&last.trace_id), hex(&last.span_id))
    );
    for seq in [2, 3] {
        let record = ledger.delivery("0", seq).await.expect("gets");
        assert_eq!(record.state(), DeliveryState::Success);
        assert!(!record.already_delivered, "{record:?}");
        assert!(record.attempts.iter().all(|a| !a.already_delivered));
    }
    let status = shard.backlog_status().expect("decoupled");
    assert_eq!(
        (
            status.queues[0].delivered,
            status.queues[0].already_delivered
        ),
        (3, 1)
    );
    // What an attempt observer (the sidecar's metrics) is told: the 409 as
    // `already_delivered`, the later ones as `delivered`.
    let seen: Vec<_> = attempts
        .0
        .lock()
        .expect("not poisoned")
        .iter()
        .map(|a| (a.status, a.outcome))
        .collect();
    assert_eq!(
        seen,
        [
            (Some(409), AttemptOutcome::AlreadyDelivered),
            (Some(200), AttemptOutcome::Delivered),
            (Some(200), AttemptOutcome::Delivered)
        ]
    );
    drop(ledger);
    shard.close().await;
}

/// Issue 13, item 1, waiting delivery: an Acknowledged dropped while the receiver holds
/// its request leaves the params persisted; after reopening, the recovery re-fire is
/// answered 409, which delivers them (the shard goes on) and says "already delivered".
#[tokio::test]
async fn response_policy_a_waiting_refire_answered_409_after_reopen_is_already_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    airflow_like(&receiver, "/dagRuns");
    let drains = [("/dagRuns", serde_json::json!({"mode": "ordered"}))];
    {
        let mut shard = open(
            dir.path(),
            config(triggers(&receiver, &drains), DeliveryMode::Waiting),
        )
        .await;
        shard
            .start_commit(checkpoint(1), &stats(1))
            .await
            .expect("commits");
        let acknowledged = shard.acknowledged();
        tokio::pin!(acknowledged);
        tokio::select! {
            _ = &mut acknowledged => panic!("the receiver holds the request"),
            requests = receiver.wait_for(1, Duration::from_secs(10)) => {
                assert_eq!(requests.len(), 1);
            }
        }
        // Dropped here with the request in flight: the process "crashes".
    }

    let (mut shard, recovery) = Shard::open(
        dir.path(),
        config(triggers(&receiver, &drains), DeliveryMode::Waiting),
    )
    .await
    .expect("reopens");
    assert!(recovery.pending.is_some(), "the params stay persisted");
    let ack = shard
        .acknowledged()
        .await
        .expect("the 409 re-fire delivers");
    assert_eq!(ack.delivered.len(), 1);
    assert_eq!(
        (ack.delivered[0].status, ack.delivered[0].already_delivered),
        (409, true)
    );
    receiver.set_default(Reply::status(200));
    shard
        .start_commit(checkpoint(2), &stats(2))
        .await
        .expect("commits");
    let ack = shard.acknowledged().await.expect("delivers");
    assert_eq!(
        (ack.delivered[0].status, ack.delivered[0].already_delivered),
        (200, false)
    );
    let reasons: Vec<Option<String>> = receiver
        .requests()
        .iter()
        .map(|r| r.header("webhook-reason").map(str::to_string))
        .collect();
    assert_eq!(
        reasons,
        [
            Some("first-send"),
            Some("recovery-refire"),
            Some("first-send")
        ]
        .map(|r| r.map(str::to_string))
    );
    shard.close().await;
}

/// Issue 13, item 1: an entry re-fired after a reopen counts a 409 as "already
/// delivered" only if it may have been sent before the stop (on the ledger's record, or
/// its trigger's oldest). One that waited behind it was never sent: a 409 to it is the
/// receiver's idempotency key colliding, a permanent failure, never a silent delivery.
#[tokio::test]
async fn response_policy_a_refired_entry_that_was_never_sent_answered_409_fails_for_good() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    airflow_like(&receiver, "/dagRuns");
    let drains = [("/dagRuns", serde_json::json!({"mode": "ordered"}))];
    let mut shard = open(
        dir.path(),
        config(triggers(&receiver, &drains), decoupled(10)),
    )
    .await;
    // Transaction 1 is in flight (the receiver has it), 2 waits behind it, never sent.
    commit_all(&mut shard, 1..=2).await;
    assert_eq!(receiver.wait_for(1, Duration::from_secs(10)).await.len(), 1);
    shard.close().await;

    receiver.set_default(Reply::status(409).with_body("DAGRun already exists"));
    let shard = open(
        dir.path(),
        config(triggers(&receiver, &drains), decoupled(10)),
    )
    .await;
    let err = shard
        .drained()
        .await
        .expect_err("a 409 to a webhook never sent stops the backlog");
    assert!(err.to_string().contains("never sent before"), "{err}");
    let ledger = shard.backlog_handle().expect("decoupled");
    let first = ledger.delivery("0", 1).await.expect("gets");
    assert_eq!(first.state(), DeliveryState::Success);
    assert!(first.already_delivered, "{first:?}");
    let second = ledger.delivery("0", 2).await.expect("gets");
    assert_eq!(second.state(), DeliveryState::Failed, "{second:?}");
    assert!(second.error.contains("never sent before"), "{second:?}");
    assert_eq!(second.attempts.len(), 1, "{second:?}");
    assert!(!second.attempts[0].already_delivered);
    drop(ledger);
    shard.close().await;
}

/// One name per thing: names-as-strings are `as_str()` (phase, mode, drain, ledger state),
/// a trigger's index is a `u32` in status as on disk and in the ledger, and a delivery is
/// keyed by its `first_commit_seq` everywhere.
#[tokio::test]
async fn names_one_spelling_one_type_one_number() {
    let receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let triggers = triggers(&receiver, &[("/a", serde_json::json!({"mode": "ordered"}))]);
    let mut shard = open(dir.path(), config(triggers, decoupled(10))).await;
    assert_eq!(shard.phase(), triggers_runtime::Phase::Idle);
    assert_eq!(shard.delivery_mode().as_str(), "decoupled");
    assert_eq!(DeliveryMode::Waiting.as_str(), "waiting");
    let committed = shard
        .start_commit(checkpoint(1), &stats(1))
        .await
        .expect("commits");
    assert_eq!(shard.phase().as_str(), "committed");
    shard.acknowledged().await.expect("acknowledged");
    shard.drained().await.expect("drains");

    let status = shard.backlog_status().expect("a backlog");
    let queue = &status.queues[0];
    assert_eq!(
        (queue.trigger, queue.drain),
        (0_u32, triggers::Drain::Ordered)
    );
    let first_commit_seq = committed.variables.expect("variables").first_commit_seq;
    let handle = shard.backlog_handle().expect("a backlog");
    let record = handle
        .delivery(&queue.name, first_commit_seq)
        .await
        .expect("on record");
    assert_eq!(
        (record.trigger, record.first_commit_seq),
        (0, first_commit_seq)
    );
    assert_eq!(record.state().as_str(), "SUCCESS");
    drop(handle);
    shard.close().await;
}
