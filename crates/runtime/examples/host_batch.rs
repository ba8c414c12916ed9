//! A host that already has its shard's RocksDB (its own options, a merge operator, its
//! own checkpoint and connector state) links the runtime into it: the runtime keeps to a
//! keyspace of its own, and at each StartCommit the host writes the runtime's keys in
//! the same WriteBatch as its own. Run it with
//! `cargo run -p triggers-runtime --example host_batch`.

use rocksdb::{DB, MergeOperands, Options, WriteBatch};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use triggers::{Clock, ConfigFormat, Materialization, NetworkPolicy};
use triggers_receiver::Receiver;
use triggers_runtime::{Durability, Keyspace, Shard, ShardConfig, Store, TransactionStats};

/// The host's merge operator for its connector state: appends each patch (a stand-in
/// for Flow's JSON merge-patch).
fn append(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let mut state = existing.map(<[u8]>::to_vec).unwrap_or_default();
    for operand in operands {
        state.extend_from_slice(operand);
    }
    Some(state)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let dir = tempfile::tempdir()?;
    let config_text = format!(
        "config:\n  onCommit:\n    url: {}\n    payloadTemplate: '{{\"run\": \"{{{{run_id}}}}\", \"collections\": {{{{json collection_names}}}}}}'\n    drain: {{mode: ordered}}\n",
        receiver.url("/hook")
    );
    let materialization = Materialization {
        name: "acmeCo/orders/warehouse".to_string(),
        connector_image: "ghcr.io/estuary/materialize-postgres:v1".to_string(),
        binding_collections: vec!["acmeCo/orders".to_string()],
    };

    // README: A host's own RocksDB
    // The host opens its DB as it always does.
    let mut options = Options::default();
    options.create_if_missing(true);
    options.set_merge_operator_associative("connector-state", append);
    let db = Arc::new(DB::open(&options, dir.path())?);

    // The runtime's keys all start with `triggers/`; the host's keys never do.
    let store = Store::in_host_db(
        db.clone(),
        Keyspace::prefixed(&b"triggers/"[..])?,
        Durability::Synced,
    )?;
    let triggers = Arc::new(triggers::validate(&config_text, ConfigFormat::Yaml)?);
    let config =
        ShardConfig::new(materialization, triggers).with_network(NetworkPolicy::ALLOW_LOOPBACK);
    let (mut shard, _recovery) = Shard::open_in(store, config).await?;
    shard.acknowledged().await?; // delivers what a crash left pending
    for offset in 1..=3_u64 {
        let mut stats = TransactionStats::default();
        stats.add_document(0, Clock::from_unix(1_750_000_000 + offset, 0), 512);
        // StartCommit: the runtime's writes, into the host's own batch.
        let prepared = shard
            .prepare_commit(&stats.take(), SystemTime::now())
            .await?;
        let mut batch = WriteBatch::default();
        batch.put(b"checkpoint", format!("read through {offset}"));
        batch.merge(b"connector-state", format!("+{offset}"));
        prepared.write_into(&mut batch);
        match db.write(batch) {
            Ok(()) => {
                shard.commit_written(prepared)?;
            }
            // Nothing landed: the transaction can be committed again.
            Err(err) => {
                shard.commit_not_written(prepared)?;
                return Err(err.into());
            }
        }
        shard.acknowledged().await?; // the webhook goes once Acknowledged
    }
    shard.drained().await?;
    shard.close().await;
    // README: end

    let received = receiver.wait_for(3, Duration::from_secs(10)).await;
    for request in &received {
        println!(
            "{} {}",
            request.path,
            String::from_utf8_lossy(&request.body)
        );
    }
    let state = db.get(b"connector-state")?.unwrap_or_default();
    println!("host connector-state: {}", String::from_utf8_lossy(&state));
    anyhow::ensure!(received.len() == 3, "one webhook per transaction");
    anyhow::ensure!(
        state == b"+1+2+3",
        "the host's merges landed with each commit"
    );
    Ok(())
}
