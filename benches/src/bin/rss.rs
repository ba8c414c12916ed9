//! Memory over a long run: resident set size after 10^3 and after 10^5 transactions of a
//! shard (StartCommit, Acknowledged, a webhook delivered to a receiver on 127.0.0.1). A
//! leak or an unbounded cache shows as growth; the goal is within 5 %.
//!
//! `rss [TRANSACTIONS] [decoupled|waiting] [LEDGER_KEEP]`: 10^5, decoupled (the default
//! delivery) and the ledger's default retention unless given.

use benches::status_kib;
use std::time::Instant;
use triggers_receiver::Receiver;
use triggers_runtime::{Durability, Shard};

fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// RSS split into anonymous memory (heap, stacks: what a leak grows) and file-backed
/// pages (mostly the binary's code, faulted in as new paths first run).
fn split() -> String {
    format!(
        "anon {} KiB, file {} KiB, {} threads",
        status_kib("RssAnon:"),
        status_kib("RssFile:"),
        status_kib("Threads:")
    )
}

fn main() -> anyhow::Result<()> {
    // The runtime the shard binaries use (capped, long-lived blocking threads).
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let total: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let delivery = match std::env::args().nth(2).as_deref() {
        None | Some("decoupled") => triggers_runtime::DeliveryMode::default(),
        Some("waiting") => triggers_runtime::DeliveryMode::Waiting,
        Some(other) => anyhow::bail!("unknown delivery {other:?}: decoupled or waiting"),
    };
    // Decoupled delivery's ledger keeps this many finished deliveries (default 1000): it
    // fills after the first mark, so a smaller one shows how much of the growth it is.
    let ledger = match std::env::args().nth(3) {
        None => triggers_runtime::LedgerRetention::default(),
        Some(keep) => triggers_runtime::LedgerRetention::new(
            keep.parse()?,
            triggers_runtime::LedgerRetention::default().max_age,
        ),
    };
    let receiver = Receiver::start().await?;
    receiver.forget_requests();
    let dir = tempfile::tempdir()?;
    let config = benches::shard_config(
        benches::triggers(&receiver.url("/hook"), 1),
        // Memory, not disk, is measured here: skip the fsync per transaction.
        Durability::Unsynced,
        delivery,
    )
    .with_ledger(ledger);
    let (mut shard, _) = Shard::open(dir.path(), config).await?;
    shard.acknowledged().await?;
    let stats = benches::stats(benches::SHARD_BINDINGS);
    let started = Instant::now();
    let mut early = 0;
    for txn in 1..=total {
        shard
            .start_commit(benches::checkpoint(txn as i64), &stats)
            .await?;
        shard.acknowledged().await?;
        if txn == 1_000 {
            early = rss_kib();
            println!("rss after {txn:>7} transactions: {early} KiB ({})", split());
        } else if txn % 10_000 == 0 && txn < total {
            // The curve between the two marks: growth that flattens is warm-up, growth
            // that keeps going is a leak.
            println!(
                "rss after {txn:>7} transactions: {} KiB ({})",
                rss_kib(),
                split()
            );
        }
    }
    let late = rss_kib();
    let ratio = late as f64 / early.max(1) as f64;
    println!(
        "rss after {total:>7} transactions: {late} KiB ({})",
        split()
    );
    println!(
        "{} {ratio:.3}x  goal <= 1.05  rss after {total} vs after 1000 transactions ({:.0} transactions/s)",
        if ratio <= 1.05 { "ok  " } else { "MISS" },
        total as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}
