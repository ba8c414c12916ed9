//! Issue 15, item 1 (first step): a shard inside a RocksDB its host opened, with the
//! host's own options and merge operator and keys, under a keyspace of its own.

use rocksdb::{DB, MergeOperands, Options};
use std::sync::Arc;
use triggers::{ConfigFormat, validate};
use triggers_receiver::Receiver;
use triggers_runtime::test_support::fixtures::{
    checkpoint, drained, loopback_shard, materialization, stats_at,
};
use triggers_runtime::{DeliveryMode, Durability, Keyspace, Shard, ShardConfig, Store};

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
        let store = Store::in_host_db(db.clone(), keyspace(), Durability::Synced)
            .expect("the keyspace is free");
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
    let store = Store::in_host_db(db.clone(), keyspace(), Durability::Synced)
        .expect("the keyspace is free");
    let (mut shard, recovery) = Shard::open_in(store, config(&receiver))
        .await
        .expect("reopens");
    assert_eq!(recovery.checkpoint, checkpoint(1));
    assert_eq!(recovery.backlog, 1);
    shard.acknowledged().await.expect("recovered ack");
    drained(&shard).await;
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

/// Flow's V1 `trigger-params` (the snapshot `runtime__materialize__triggers__test__
/// trigger-variables.snap`, estuary/flow @ 89a775b0b8), byte for byte.
const FLOW_V1_SINGLE: &[u8] = br#"{"collection_names":["acmeCo/collection-a","acmeCo/collection-b"],"connector_image":"ghcr.io/estuary/materialize-postgres:dev","materialization_name":"acmeCo/my-materialization","flow_published_at_min":"1970-01-01T00:08:20Z","flow_published_at_max":"1970-01-01T01:06:40Z","run_id":"2024-06-15T12:30:00.000Z"}"#;

/// A DB as Flow's runtime leaves a materialization shard's: its keys at the root (names
/// and encodings from estuary/flow `crates/runtime-next/src/shard/recovery.rs` @
/// 6a95df0678), a JSON merge operator for `connector-state`, and `trigger-params`.
fn flow_db(dir: &std::path::Path, trigger_params: &[u8]) -> Arc<DB> {
    let db = host_db(dir);
    db.put(b"checkpoint", [0x0a, 0x00]).expect("writes");
    db.put(b"connector-state", br#"{"cursor":1}"#)
        .expect("writes");
    db.put(b"last-applied", [0x0a, 0x01, b'm']).expect("writes");
    db.put(b"MK-v2:binding-0", [0x01]).expect("writes");
    db.put(b"FC:journal\0key\0\0\0\0\0\0\x01", [0x08, 0x01])
        .expect("writes");
    db.put(b"AI:journal", b"intent").expect("writes");
    db.put(b"trigger-params", trigger_params).expect("writes");
    db
}

/// Every root key of `db` but ours, with its value.
fn flow_keys(db: &DB) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.iterator(rocksdb::IteratorMode::Start)
        .map(|item| {
            let (k, v) = item.expect("reads");
            (k.to_vec(), v.to_vec())
        })
        .filter(|(k, _)| !k.starts_with(b"triggers/"))
        .collect()
}

/// Issue 15, item 2: Flow's pending `trigger-params`, in either form Flow writes, fires
/// after the first Acknowledged with the variables Flow stored, and Flow's key is then
/// gone (as Flow deletes it once fired); Flow's other keys are untouched. In either
/// delivery mode.
#[tokio::test]
async fn a_flow_stores_pending_trigger_params_fire_here_and_leave_flows_key() {
    let receiver = Receiver::start().await.expect("receiver");
    let template = r#"{"m": {{json materialization_name}}, "c": {{json collection_names}}, "min": {{json flow_published_at_min}}, "max": {{json flow_published_at_max}}, "run": {{json run_id}}, "image": {{json connector_image}}}"#;
    let config = |delivery| {
        let config = serde_json::json!({"config": {
            "a": {"url": receiver.url("/a"), "payloadTemplate": template},
            "b": {"url": receiver.url("/b"), "method": "PUT", "payloadTemplate": template},
        }});
        let triggers = validate(&config.to_string(), ConfigFormat::Json).expect("valid");
        loopback_shard(materialization(1), Arc::new(triggers)).with_delivery(delivery)
    };
    // V2 with debounce: one window for b only, keyed as Flow keys it; one for a trigger
    // the config no longer has (dropped, as Flow drops it).
    let per_config = format!(
        r#"{{"PUT {}": {{"collection_names": ["acmeCo/b"], "materialization_name": "acmeCo/m", "flow_published_at_min": "2024-01-01T00:00:00+00:00", "flow_published_at_max": "2024-01-01T00:00:01.500+00:00", "run_id": "2024-01-01T00:00:00+00:00"}}, "POST https://gone.example.com": {{}}}}"#,
        receiver.url("/b")
    );
    let cases: [(&str, &[u8], DeliveryMode); 3] = [
        (
            "v1 single, decoupled",
            FLOW_V1_SINGLE,
            DeliveryMode::default(),
        ),
        ("v1 single, waiting", FLOW_V1_SINGLE, DeliveryMode::Waiting),
        (
            "v2 per config",
            per_config.as_bytes(),
            DeliveryMode::default(),
        ),
    ];
    for (case, params, delivery) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let before = receiver.requests().len();
        let db = flow_db(dir.path(), params);
        let expected_flow_keys: Vec<_> = flow_keys(&db)
            .into_iter()
            .filter(|(k, _)| k != b"trigger-params")
            .collect();
        let store = Store::in_host_db(
            db.clone(),
            Keyspace::prefixed(&b"triggers/"[..]).expect("valid"),
            Durability::Synced,
        )
        .expect("the keyspace is free");
        let (mut shard, recovery) = Shard::open_in(store, config(delivery))
            .await
            .expect("opens");
        assert_eq!(
            recovery.checkpoint,
            Default::default(),
            "{case}: ours, not Flow's"
        );
        assert!(
            receiver.requests().len() == before,
            "{case}: nothing before Acknowledged"
        );
        shard.acknowledged().await.expect("recovered ack");
        drained(&shard).await;
        shard.close().await;
        let sent: Vec<(String, String, serde_json::Value)> = receiver.requests()[before..]
            .iter()
            .map(|r| {
                (
                    r.path.clone(),
                    r.header("webhook-reason").unwrap_or_default().to_string(),
                    r.json().expect("JSON"),
                )
            })
            .collect();
        let v1 = serde_json::json!({
            "m": "acmeCo/my-materialization",
            "c": ["acmeCo/collection-a", "acmeCo/collection-b"],
            "min": "1970-01-01T00:08:20Z",
            "max": "1970-01-01T01:06:40Z",
            "run": "2024-06-15T12:30:00.000Z",
            "image": "ghcr.io/estuary/materialize-postgres:dev",
        });
        let mut paths: Vec<&str> = sent.iter().map(|(p, _, _)| p.as_str()).collect();
        paths.sort_unstable();
        if case.starts_with("v1") {
            assert_eq!(paths, ["/a", "/b"], "{case}: every trigger fires");
            assert!(
                sent.iter().all(|(_, _, body)| *body == v1),
                "{case}: {sent:?}"
            );
        } else {
            assert_eq!(paths, ["/b"], "{case}: only the trigger Flow kept it for");
            assert_eq!(sent[0].2["c"], serde_json::json!(["acmeCo/b"]));
            assert_eq!(sent[0].2["max"], "2024-01-01T00:00:01.5Z");
            assert_eq!(
                sent[0].2["run"], "2024-01-01T00:00:00+00:00",
                "as Flow wrote it"
            );
        }
        assert!(
            sent.iter()
                .all(|(_, reason, _)| reason == "recovery-refire"),
            "{case}: Flow may have sent it before it stopped: {sent:?}"
        );
        assert_eq!(
            flow_keys(&db),
            expected_flow_keys,
            "{case}: Flow's key is gone, every other key of Flow's is as it was"
        );
    }
}

/// Issue 15, item 1: the host writes the runtime's keys in its own WriteBatch with its
/// checkpoint and a merge operand, reports it, and the webhook fires after Acknowledged.
/// A batch the host never wrote fires nothing, even after a reopen; one it wrote but did
/// not report (a crash in between) fires after the reopen. In both delivery modes.
#[tokio::test]
async fn the_host_writes_the_runtimes_keys_in_its_own_batch() {
    for delivery in [DeliveryMode::default(), DeliveryMode::Waiting] {
        let dir = tempfile::tempdir().expect("tempdir");
        let receiver = Receiver::start().await.expect("receiver");
        let keyspace = || Keyspace::prefixed(&b"triggers/"[..]).expect("valid");
        let open = |db: &Arc<DB>| {
            let store = Store::in_host_db(db.clone(), keyspace(), Durability::Synced)
                .expect("the keyspace is free");
            Shard::open_in(store, config(&receiver).with_delivery(delivery))
        };
        let runs = {
            let db = host_db(dir.path());
            let (mut shard, _) = open(&db).await.expect("opens");
            shard.acknowledged().await.expect("recovered ack");
            let mut runs = Vec::new();
            for n in 1..=3_u64 {
                let prepared = shard
                    .prepare_commit(&stats_at(n, &[0]), std::time::SystemTime::now())
                    .await
                    .expect("prepares");
                assert_eq!(shard.phase(), triggers_runtime::Phase::HostWriting);
                assert!(
                    shard
                        .start_commit(checkpoint(9), &stats_at(9, &[0]))
                        .await
                        .is_err(),
                    "nothing else until the host reports"
                );
                assert!(
                    prepared
                        .ops()
                        .iter()
                        .all(|op| matches!(op, triggers_runtime::KeyOp::Put { key, .. } if key.starts_with(b"triggers/"))),
                    "{prepared:?}"
                );
                let run = prepared.variables().expect("fires").flow_run_id.clone();
                let mut batch = rocksdb::WriteBatch::default();
                batch.put(b"checkpoint", format!("host checkpoint {n}"));
                batch.merge(b"connector-state", format!("s{n}"));
                prepared.write_into(&mut batch);
                match n {
                    1 => {
                        db.write(batch).expect("the host writes");
                        shard.commit_written(prepared).expect("reported");
                        shard.acknowledged().await.expect("acknowledged");
                        drained(&shard).await;
                        runs.push(run);
                    }
                    2 => {
                        // The host's write fails before anything lands: it says so.
                        drop(batch);
                        shard.commit_not_written(prepared).expect("reported");
                        assert_eq!(shard.phase(), triggers_runtime::Phase::Idle);
                    }
                    _ => {
                        // Written, then the process dies before reporting.
                        db.write(batch).expect("the host writes");
                        drop(prepared);
                        runs.push(run);
                    }
                }
            }
            shard.close().await;
            assert_eq!(
                db.get(b"connector-state").expect("reads").as_deref(),
                Some(&b"s1,s3"[..]),
                "{delivery:?}: the host's batches landed whole, or not at all"
            );
            runs
        };
        let db = host_db(dir.path());
        let (mut shard, recovery) = open(&db).await.expect("reopens");
        assert_eq!(
            recovery.pending.as_ref().map(|v| v.flow_run_id.as_str()),
            Some(runs[1].as_str()),
            "{delivery:?}: the written, unreported commit is the one pending"
        );
        shard.acknowledged().await.expect("recovered ack");
        drained(&shard).await;
        shard.close().await;
        let sent: Vec<String> = receiver
            .requests()
            .iter()
            .map(|r| {
                r.json().expect("JSON")["run"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert_eq!(
            sent, runs,
            "{delivery:?}: 1 and 3 fire, once each; 2 never does"
        );
    }
}
