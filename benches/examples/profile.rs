//! A driver for counting instructions of a path and its floor, where timings are too
//! noisy to see a change of a few percent: `callgrind` counts are the same run after run.
//!
//! ```text
//! cargo build --release -p benches --example profile
//! valgrind --tool=callgrind target/release/examples/profile ours 1000
//! valgrind --tool=callgrind target/release/examples/profile ours 2000
//! ```
//!
//! The difference of two counts over the difference of `N` is the cost of one operation
//! with start-up taken out. Modes: `ours` (one webhook through `Deliverer::deliver`),
//! `bare` (a bare reqwest POST of the same body), `render` (the render alone),
//! `commit` and `commit-params` (an unsynced StartCommit write without and with params),
//! `shard-plain` and `shard-coalesced` (StartCommit + Acknowledged of an unsynced
//! decoupled shard without triggers, and with one coalesced trigger whose endpoint
//! answers after 50 ms, as in the throughput bench).

use triggers::{Deliverer, NetworkPolicy, RetryBackoff, Variables};
use triggers_receiver::Receiver;
use triggers_runtime::test_support::RawStore as _;

fn main() -> anyhow::Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "ours".into());
    let count: usize = std::env::args()
        .nth(2)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(1000);
    if let Some(with_params) = match mode.as_str() {
        "commit" => Some(false),
        "commit-params" => Some(true),
        _ => None,
    } {
        let dir = tempfile::tempdir()?;
        let store =
            triggers_runtime::Store::open(dir.path(), triggers_runtime::Durability::Unsynced)?;
        let (checkpoint, params) = (benches::checkpoint(42), benches::params());
        for _ in 0..count {
            store.commit_unchecked(&checkpoint, with_params.then_some(&params))?;
        }
        return Ok(());
    }
    if let Some(coalesced) = match mode.as_str() {
        "shard-plain" => Some(false),
        "shard-coalesced" => Some(true),
        _ => None,
    } {
        return shard(coalesced, count);
    }
    // One thread, as in the criterion bench.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let receiver = runtime.block_on(Receiver::start())?;
    receiver.forget_requests();
    let url = receiver.url("/hook");
    let triggers = benches::triggers(&url, 1);
    let variables = Variables::from_stats(
        &benches::materialization(10),
        &benches::stats(10),
        "run".into(),
    )?
    .ok_or_else(|| anyhow::anyhow!("stats have documents"))?;
    let deliverer = Deliverer::with_policy(RetryBackoff::default(), NetworkPolicy::ALLOW_LOOPBACK)?;
    let id = triggers::webhook_id(&variables.flow_run_id, 0);
    let body = triggers.render(0, &variables, &id)?;
    let bare = reqwest::Client::builder().no_proxy().build()?;
    runtime.block_on(async {
        for _ in 0..count {
            match mode.as_str() {
                "ours" => {
                    deliverer.deliver(&triggers, &variables).await?;
                }
                "bare" => {
                    let response = bare
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await?;
                    response.bytes().await?;
                }
                "render" => {
                    std::hint::black_box(triggers.render(0, &variables, &id)?);
                }
                other => anyhow::bail!(
                    "unknown mode {other:?}: ours, bare, render, commit or commit-params"
                ),
            }
        }
        Ok(())
    })
}

/// `count` transactions of a decoupled shard, unsynced (so instructions, not fsyncs, are
/// what differ), with or without one coalesced trigger.
fn shard(coalesced: bool, count: usize) -> anyhow::Result<()> {
    use triggers_receiver::Reply;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let receiver = Receiver::start().await?;
        receiver.forget_requests();
        receiver.set_default(Reply::status(200).after(std::time::Duration::from_millis(50)));
        let dir = tempfile::tempdir()?;
        let config = benches::shard_config(
            benches::drained_triggers(
                &receiver.url("/hook"),
                coalesced.then(|| serde_json::json!({"mode": "coalesced"})),
            ),
            triggers_runtime::Durability::Unsynced,
            triggers_runtime::DeliveryMode::Decoupled { backlog_limit: 50 },
        );
        let (mut shard, _) = triggers_runtime::Shard::open(dir.path(), config).await?;
        shard.acknowledged().await?;
        let stats = benches::stats(benches::SHARD_BINDINGS);
        for txn in 1..=count {
            shard
                .start_commit(benches::checkpoint(txn as i64), &stats)
                .await?;
            shard.acknowledged().await?;
        }
        shard.close().await;
        Ok(())
    })
}
