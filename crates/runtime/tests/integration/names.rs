//! Issue 18, item 2: triggers are keyed by name in the store, so reordering, adding or
//! removing triggers never moves a pending webhook to another trigger nor changes
//! another trigger's webhook ids; a store written with index keys migrates at open; the
//! entries of a removed trigger are kept, reported and skippable.

use std::sync::Arc;
use triggers::{ConfigFormat, Triggers, trigger_webhook_id, validate, webhook_id};
use triggers_proto::DeliveryState;
use triggers_receiver::Receiver;
use triggers_runtime::test_support::RawStore as _;
use triggers_runtime::test_support::fixtures::{
    checkpoint, drained, loopback_shard, materialization, stats_at,
};
use triggers_runtime::{DeliveryMode, Durability, LedgerError, Shard, ShardConfig, Store};

/// A list config: one trigger per `(name, path)`, in that order (`None`: no name).
fn triggers(receiver: &Receiver, entries: &[(Option<&str>, &str)]) -> Arc<Triggers> {
    let config = serde_json::json!({"config": entries.iter().map(|(name, path)| {
        let mut trigger = serde_json::json!({
            "url": receiver.url(path),
            "payloadTemplate": r#"{"run": {{json flow_run_id}}, "id": {{json webhook_id}}}"#,
            "drain": {"mode": "ordered"},
        });
        if let Some(name) = name {
            trigger["name"] = serde_json::json!(name);
        }
        trigger
    }).collect::<Vec<_>>()});
    Arc::new(validate(&config.to_string(), ConfigFormat::Json).expect("valid config"))
}

fn config(triggers: Arc<Triggers>) -> ShardConfig {
    loopback_shard(materialization(1), triggers)
        .with_durability(Durability::Unsynced)
        .with_delivery(DeliveryMode::default())
}

/// Commits transaction 1 and closes before its Acknowledged: its webhooks stay pending.
/// Returns its `flow_run_id`.
async fn commit_and_stop(dir: &std::path::Path, triggers: Arc<Triggers>) -> String {
    let (mut shard, _) = Shard::open(dir, config(triggers)).await.expect("opens");
    shard.acknowledged().await.expect("recovered ack");
    let commit = shard
        .start_commit(checkpoint(1), &stats_at(1, &[0]))
        .await
        .expect("commits");
    shard.close().await;
    commit.variables.expect("persisted").flow_run_id
}

/// Webhooks `receiver` accepted on `path`, as (flow_run_id, webhook-id header, body id).
fn received(receiver: &Receiver, path: &str) -> Vec<(String, String, String)> {
    receiver
        .requests()
        .iter()
        .filter(|r| r.path == path)
        .map(|r| {
            let body = r.json().expect("JSON");
            (
                body["run"].as_str().unwrap_or_default().to_string(),
                r.header("webhook-id").unwrap_or_default().to_string(),
                body["id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Reopens with `triggers`, acknowledges the recovered checkpoint and waits for the drain.
async fn recover_and_drain(dir: &std::path::Path, triggers: Arc<Triggers>) -> Shard {
    let (mut shard, _) = Shard::open(dir, config(triggers)).await.expect("reopens");
    shard.acknowledged().await.expect("recovered ack");
    drained(&shard).await;
    shard
}

#[tokio::test]
async fn reordered_triggers_keep_their_pending_webhooks_and_their_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let run = commit_and_stop(
        dir.path(),
        triggers(&receiver, &[(Some("orders"), "/a"), (Some("slack"), "/b")]),
    )
    .await;
    // The config is reordered (and a trigger added in front) while the webhooks pend.
    let reordered = triggers(
        &receiver,
        &[
            (Some("audit"), "/c"),
            (Some("slack"), "/b"),
            (Some("orders"), "/a"),
        ],
    );
    let shard = recover_and_drain(dir.path(), reordered).await;
    for (path, name) in [("/a", "orders"), ("/b", "slack")] {
        let id = trigger_webhook_id(&run, name);
        assert_eq!(
            received(&receiver, path),
            [(run.clone(), id.clone(), id)],
            "{path} gets {name}'s webhook, once, with {name}'s id"
        );
    }
    assert!(
        received(&receiver, "/c").is_empty(),
        "a new trigger inherits nothing"
    );
    shard.close().await;
}

/// Receivers dedupe on webhook ids: a store of an earlier build (index keys) whose config
/// keeps its order and has no names delivers its pending webhooks with the ids that build
/// gave them, to the same triggers.
#[tokio::test]
async fn an_index_keyed_store_migrates_and_keeps_the_webhook_ids_of_an_unnamed_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let unnamed = || triggers(&receiver, &[(None, "/a"), (None, "/b")]);
    let run = commit_and_stop(dir.path(), unnamed()).await;
    {
        let store = Store::open(dir.path(), Durability::Synced).expect("opens");
        let moved = store
            .downgrade_to_index_keys(&["0", "1"])
            .expect("rewrites");
        assert_eq!(moved, 2, "one backlog entry per trigger");
    }
    let shard = recover_and_drain(dir.path(), unnamed()).await;
    for (index, path) in [(0, "/a"), (1, "/b")] {
        let id = webhook_id(&run, index);
        assert_eq!(received(&receiver, path), [(run.clone(), id.clone(), id)]);
    }
    // Nothing is left to migrate or send.
    let handle = shard.backlog_handle().expect("decoupled");
    let (records, _) = handle.deliveries(10, "").await.expect("lists");
    let names: Vec<(&str, DeliveryState)> = records
        .iter()
        .map(|r| (r.trigger_name.as_str(), r.state()))
        .collect();
    assert_eq!(
        names,
        [("1", DeliveryState::Success), ("0", DeliveryState::Success)]
    );
    drop(handle);
    shard.close().await;
}

/// An index-keyed store opened with a named config: each index becomes the name of the
/// trigger at that position (the trigger the index meant), and its ledger record too.
#[tokio::test]
async fn an_index_keyed_store_opened_with_names_maps_each_index_to_the_trigger_at_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let run = commit_and_stop(
        dir.path(),
        triggers(&receiver, &[(None, "/a"), (None, "/b")]),
    )
    .await;
    {
        let store = Store::open(dir.path(), Durability::Synced).expect("opens");
        store
            .downgrade_to_index_keys(&["0", "1"])
            .expect("rewrites");
    }
    let named = triggers(&receiver, &[(Some("orders"), "/a"), (Some("slack"), "/b")]);
    let shard = recover_and_drain(dir.path(), named).await;
    for (path, name) in [("/a", "orders"), ("/b", "slack")] {
        let id = trigger_webhook_id(&run, name);
        assert_eq!(received(&receiver, path), [(run.clone(), id.clone(), id)]);
    }
    shard.close().await;
}

#[tokio::test]
async fn a_removed_triggers_webhooks_are_kept_reported_and_skippable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await.expect("receiver");
    let both = || triggers(&receiver, &[(Some("orders"), "/a"), (Some("slack"), "/b")]);
    let run = commit_and_stop(dir.path(), both()).await;

    // "slack" is removed while its webhook pends: "orders" delivers; "slack"'s waits.
    let only_orders = || triggers(&receiver, &[(Some("orders"), "/a")]);
    let shard = recover_and_drain(dir.path(), only_orders()).await;
    assert_eq!(received(&receiver, "/a").len(), 1);
    assert!(received(&receiver, "/b").is_empty(), "nothing sends it");
    let status = shard.backlog_status().expect("decoupled");
    assert_eq!(status.depth(), 0, "it holds nothing back");
    let orphaned: Vec<(&str, usize, u64)> = status
        .orphaned
        .iter()
        .map(|o| (o.name.as_str(), o.depth, o.oldest_pending_seq))
        .collect();
    assert_eq!(orphaned, [("slack", 1, 1)]);
    let handle = shard.backlog_handle().expect("decoupled");
    let pending = handle.delivery("slack", 1).await.expect("listed");
    assert_eq!(
        (
            pending.state(),
            pending.trigger,
            pending.flow_run_id.as_str()
        ),
        (DeliveryState::Pending, u32::MAX, run.as_str())
    );
    let err = handle.retry("slack", 1).await.expect_err("cannot be sent");
    assert!(
        matches!(err, LedgerError::IllegalTransition { .. })
            && err.to_string().contains("no longer in the config"),
        "{err}"
    );
    drop(handle);
    shard.close().await;

    // Brought back, the trigger sends it, with its own id.
    let shard = recover_and_drain(dir.path(), both()).await;
    let id = trigger_webhook_id(&run, "slack");
    assert_eq!(received(&receiver, "/b"), [(run.clone(), id.clone(), id)]);
    shard.close().await;

    // Removed again with a new pending webhook: an operator skips it for good.
    let run = commit_and_stop(dir.path(), both()).await;
    let shard = recover_and_drain(dir.path(), only_orders()).await;
    let handle = shard.backlog_handle().expect("decoupled");
    let seq = shard.backlog_status().expect("decoupled").orphaned[0].oldest_pending_seq;
    let skipped = handle
        .skip("slack", seq, "the Slack channel is gone")
        .await
        .expect("skips");
    assert_eq!(
        (skipped.state(), skipped.flow_run_id.as_str()),
        (DeliveryState::Cancelled, run.as_str())
    );
    assert!(
        shard
            .backlog_status()
            .expect("decoupled")
            .orphaned
            .is_empty()
    );
    drop(handle);
    shard.close().await;
    let shard = recover_and_drain(dir.path(), both()).await;
    assert_eq!(
        received(&receiver, "/b").len(),
        1,
        "the skipped webhook is never sent, even with its trigger back"
    );
    shard.close().await;
}
