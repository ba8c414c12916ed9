//! Embedding a shard: what a reactor does with the library, end to end, against a
//! receiver on 127.0.0.1. Run it with `cargo run -p triggers-runtime --example embed_shard`.
//!
//! It validates a trigger config, opens a shard on a fresh RocksDB store, commits three
//! transactions (each StartCommit writes the checkpoint and the webhook's variables in one
//! WriteBatch; each Acknowledged queues the webhook), waits for the backlog to drain and
//! prints what the receiver got.

use std::sync::Arc;
use std::time::Duration;
use triggers::{Clock, ConfigFormat, Materialization, NetworkPolicy};
use triggers_proto::Source;
use triggers_receiver::Receiver;
use triggers_runtime::{Shard, ShardConfig, TransactionStats};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let store_dir = tempfile::tempdir()?;
    let config_text = format!(
        "config:\n  - url: {}\n    payloadTemplate: '{{\"run\": \"{{{{flow_run_id}}}}\", \"to\": \"{{{{timestamp flow_published_at_max \"us\" \"ceil\"}}}}\"}}'\n    drain: {{mode: ordered}}\n",
        receiver.url("/hook")
    );
    let materialization = Materialization {
        name: "acmeCo/orders/warehouse".to_string(),
        connector_image: "ghcr.io/estuary/materialize-postgres:v1".to_string(),
        binding_collections: vec!["acmeCo/orders".to_string()],
    };

    // README: Using the library
    let triggers = Arc::new(triggers::validate(&config_text, ConfigFormat::Yaml)?);
    // Production defaults: synced commits, decoupled delivery, public destinations only.
    // This example's receiver is on 127.0.0.1, so it allows loopback.
    let config =
        ShardConfig::new(materialization, triggers).with_network(NetworkPolicy::ALLOW_LOOPBACK);
    let (mut shard, recovery) = Shard::open(store_dir.path(), config).await?;
    // Resume reading from recovery.checkpoint, then acknowledge the recovered commit:
    // this delivers any webhooks a crash left pending.
    let mut checkpoint = recovery.checkpoint;
    shard.acknowledged().await?;
    for offset in 1..=3_i64 {
        let mut stats = TransactionStats::default();
        // For each document of the transaction: its binding, its `_meta/uuid` clock, its size.
        stats.add_document(
            0,
            Clock::from_unix(1_750_000_000 + offset as u64, 1_234_567),
            512,
        );
        checkpoint.sources.insert(
            "acmeCo/orders/pivot=00".to_string(),
            Source {
                read_through: offset * 100,
                ..Source::default()
            },
        );
        shard
            .start_commit(checkpoint.clone(), &stats.take())
            .await?; // durable on return
        shard.acknowledged().await?; // decoupled: queues and returns; waiting: delivers first
    }
    // At the end of the input (or before a planned stop), wait for the backlog to empty:
    shard.drained().await?;
    shard.close().await; // or close_within(grace): webhooks in flight finish first
    // README: end

    let received = receiver.wait_for(3, Duration::from_secs(10)).await;
    for request in &received {
        println!(
            "{} {}",
            request.path,
            String::from_utf8_lossy(&request.body)
        );
    }
    anyhow::ensure!(received.len() == 3, "one webhook per transaction");
    Ok(())
}
