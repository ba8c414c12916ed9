//! Many shards in one process (issue 16): N = 1, 10, 100 and 500 shards open at once,
//! [`benches::SHARD_BINDINGS`] bindings each, unsynced commits, committed in turn (one
//! StartCommit + Acknowledged per shard, round-robin), all sharing one HTTP client and
//! delivering to one receiver on 127.0.0.1.
//!
//! Three cases: no triggers; every shard in one RocksDB, a keyspace each (N = 100 and
//! 500, no triggers: what a DB per shard costs); and three ordered triggers, where an
//! iteration's time includes delivering every webhook it made (the backlogs drained at
//! the end of each sample), so every N sends the same three webhooks per commit (a
//! coalesced trigger would send fewer the faster one shard commits). Criterion's time
//! per commit at each N is for information; the goal (aggregate throughput at N = 100
//! at least 0.8x that of N = 1) is judged on paired blocks of 1 and of 100 shards in one run (see
//! `paired_blocks`), committing in turn and, for information, at once, beside their
//! floor, RocksDB alone (`paired_stores_alone`). The bench also prints what each shard
//! costs after warm-up and after the bench's commits, over the process just before its
//! shards opened (the previous case's closed): RSS, threads, file descriptors (the
//! receiver's ends of its connections not counted), and the connections to the
//! endpoint. Saved as `shards/figures.json` for the report.

use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use triggers::{Deliverer, NetworkPolicy, RetryBackoff};
use triggers_receiver::{Receiver, Reply};
use triggers_runtime::{DeliveryMode, Durability, Shard, rocksdb};

const COUNTS: [usize; 4] = [1, 10, 100, 500];
/// Commits each shard makes before its figures are taken.
const WARM_UP_COMMITS: usize = 20;

/// What the process holds, from `/proc/self`.
#[derive(Clone, Copy)]
struct Figures {
    rss_kib: u64,
    threads: u64,
    fds: u64,
    connections: u64,
}

impl Figures {
    /// Now, without the receiver's ends of the connections open to it (the client's
    /// ends are counted: they are ours).
    fn now(receiver: &Receiver) -> Self {
        let connections = receiver.open_connections() as u64;
        Self {
            rss_kib: benches::status_kib("VmRSS:"),
            threads: benches::status_kib("Threads:"),
            fds: benches::open_fds().saturating_sub(connections),
            connections,
        }
    }
}

fn shards(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let receiver = runtime.block_on(Receiver::start()).expect("receiver");
    receiver.set_default(Reply::status(200));
    // Hundreds of thousands of webhooks: kept, they would count as the shards' memory.
    receiver.forget_requests();
    let deliverer = Deliverer::with_policy(
        RetryBackoff::new(Duration::from_millis(50), Duration::from_secs(1)),
        NetworkPolicy::ALLOW_LOOPBACK,
    )
    .expect("client");
    let stats = benches::stats(benches::SHARD_BINDINGS);
    // Every case's shard: `triggers` ordered triggers, unsynced, decoupled, one client.
    let config_with = |triggers: usize| {
        benches::shard_config(
            benches::ordered_triggers(&receiver.url("/hook"), triggers),
            Durability::Unsynced,
            DeliveryMode::Decoupled {
                backlog_limit: triggers_runtime::DEFAULT_BACKLOG_LIMIT,
            },
        )
        .with_deliverer(deliverer.clone())
    };

    let mut group = c.benchmark_group("shards");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    let mut figures = Vec::new();
    let mut lines = Vec::new();
    for (label, triggers) in [
        ("no_triggers", 0),
        ("three_triggers", 3),
        ("one_db_no_triggers", 0),
    ] {
        // The last case: every shard in one RocksDB the process opened, a keyspace each,
        // as a host may keep them: what a DB per shard costs beside it.
        let one_db = label.starts_with("one_db");
        let config = config_with(triggers);
        for n in COUNTS {
            if one_db && n < 100 {
                continue;
            }
            // `SHARDS_ONLY=no_triggers_n500` runs that case alone (to profile it): the
            // cases' set-up runs outside criterion's filter.
            if std::env::var("SHARDS_ONLY").is_ok_and(|only| only != format!("{label}_n{n}")) {
                continue;
            }
            let dir = tempfile::tempdir().expect("tempdir");
            let offset = Arc::new(AtomicI64::new(0));
            // The previous case's shards are closed: what remains of them (allocator
            // caches, connections kept alive) counts as the process's, not this case's.
            let before = Figures::now(&receiver);
            let opened = Instant::now();
            let shards = runtime.block_on(async {
                let mut shards = Vec::with_capacity(n);
                let host_db = one_db.then(|| {
                    let mut options = rocksdb::Options::default();
                    options.create_if_missing(true);
                    Arc::new(rocksdb::DB::open(&options, dir.path()).expect("host db"))
                });
                for i in 0..n {
                    let opened = match &host_db {
                        Some(db) => {
                            let keyspace = triggers_runtime::Keyspace::prefixed(format!("{i}/"))
                                .expect("keyspace");
                            let store = triggers_runtime::Store::in_host_db(
                                db.clone(),
                                keyspace,
                                Durability::Unsynced,
                            )
                            .expect("store");
                            Shard::open_in(store, config.clone()).await
                        }
                        None => Shard::open(dir.path().join(i.to_string()), config.clone()).await,
                    };
                    let (mut shard, _) = opened.expect("opens");
                    shard.acknowledged().await.expect("recovered ack");
                    shards.push(shard);
                }
                for _ in 0..WARM_UP_COMMITS {
                    commit_each(&mut shards, &offset, &stats).await;
                }
                drain(&shards).await;
                shards
            });
            let opened = opened.elapsed();
            let after = Figures::now(&receiver);
            let per_shard = |now: u64, then: u64| now.saturating_sub(then) as f64 / n as f64;
            let figure = serde_json::json!({
                "case": label,
                "shards": n,
                "rss_kib_per_shard": per_shard(after.rss_kib, before.rss_kib),
                "threads_per_shard": per_shard(after.threads, before.threads),
                "fds_per_shard": per_shard(after.fds, before.fds),
                "threads": after.threads,
                "fds": after.fds,
                "connections": after.connections,
            });
            let line = format!(
                "shards/{label}/{n}: per shard after {WARM_UP_COMMITS} commits each: {:.2} MiB RSS, \
                 {:.3} threads, {:.2} fds; process: {} threads, {} fds, {} connections to the \
                 endpoint (opened and warmed in {:.1} s)",
                per_shard(after.rss_kib, before.rss_kib) / 1024.0,
                per_shard(after.threads, before.threads),
                per_shard(after.fds, before.fds),
                after.threads,
                after.fds,
                after.connections,
                opened.as_secs_f64(),
            );
            println!("{line}");
            lines.push(line);
            figures.push(figure);

            let shards = Arc::new(Mutex::new(shards));
            let next = Arc::new(AtomicUsize::new(0));
            group.bench_function(format!("{label}_n{n}"), |b| {
                b.to_async(&runtime).iter_custom(|iters| {
                    let (shards, stats, offset, next) =
                        (shards.clone(), stats.clone(), offset.clone(), next.clone());
                    async move {
                        let mut shards = shards.lock().await;
                        let started = Instant::now();
                        for _ in 0..iters {
                            let i = next.fetch_add(1, Ordering::Relaxed) % shards.len();
                            let at = offset.fetch_add(1, Ordering::Relaxed);
                            commit(&mut shards[i], at, &stats).await;
                        }
                        drain(&shards).await;
                        started.elapsed()
                    }
                })
            });
            let ran = Figures::now(&receiver);
            let line = format!(
                "shards/{label}/{n}: per shard after the bench's {} commits: {:.2} MiB RSS, \
                 {:.2} fds; {} connections open to the endpoint",
                offset.load(Ordering::Relaxed),
                per_shard(ran.rss_kib, before.rss_kib) / 1024.0,
                per_shard(ran.fds, before.fds),
                ran.connections,
            );
            println!("{line}");
            lines.push(line);
            if let Some(figure) = figures.last_mut() {
                figure["rss_kib_per_shard_after_bench"] =
                    per_shard(ran.rss_kib, before.rss_kib).into();
                figure["commits"] = offset.load(Ordering::Relaxed).into();
            }
            let shards = Arc::try_unwrap(shards)
                .unwrap_or_else(|_| panic!("the bench let go of its shards"))
                .into_inner();
            runtime.block_on(async {
                for shard in shards {
                    shard.close().await;
                }
            });
        }
    }
    group.finish();
    // The goal's ratios, paired, and their floor (`SHARDS_ONLY=paired` runs them alone).
    if std::env::var("SHARDS_ONLY").is_ok_and(|only| only == "paired")
        || std::env::var("SHARDS_ONLY").is_err()
    {
        lines.push(paired_stores_alone());
        for triggers in [0, 3] {
            let config = config_with(triggers);
            for at_once in [false, true] {
                lines.push(runtime.block_on(paired_blocks(
                    config.clone(),
                    triggers,
                    at_once,
                    &stats,
                )));
            }
        }
    }
    for line in lines {
        println!("{line}");
    }
    let dir = benches::criterion_dir().join("shards");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(
            dir.join("figures.json"),
            serde_json::Value::from(figures).to_string(),
        );
    }
}

/// Shards in the many-shard set of the paired measure (the goal's N).
const PAIRED_SHARDS: usize = 100;

/// The goal's ratio measured in one run: blocks of commits on 1 shard and on
/// [`PAIRED_SHARDS`] shards (all open at once in this process) alternate, and the
/// medians of their time per commit are compared. Criterion measures each N separately,
/// and on this shared machine one shard's own time per commit drifted by up to 1.6x
/// between such runs, more than the gap being measured. With triggers each block ends
/// with every webhook it made delivered.
///
/// The many shards commit in turn (the goal's measure: one commit at a time, as the
/// issue's probe did), or, `at_once`, all together, each its own transactions in order,
/// as a host's shards run: a block is then an equal share of commits for each. Saved as
/// `shards_n100[_triggers][_at_once]_paired`.
async fn paired_blocks(
    config: triggers_runtime::ShardConfig,
    triggers: usize,
    at_once: bool,
    stats: &[triggers_proto::BindingStats],
) -> String {
    let (blocks, per_block) = if triggers == 0 { (40, 300) } else { (30, 100) };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sets: [Vec<Shard>; 2] = [Vec::new(), Vec::new()];
    for (set, n) in sets.iter_mut().zip([1, PAIRED_SHARDS]) {
        for i in 0..n {
            let (mut shard, _) = Shard::open(dir.path().join(format!("{n}-{i}")), config.clone())
                .await
                .expect("opens");
            shard.acknowledged().await.expect("recovered ack");
            set.push(shard);
        }
    }
    let offset = AtomicI64::new(0);
    for set in &mut sets {
        for _ in 0..WARM_UP_COMMITS {
            commit_each(set, &offset, stats).await;
        }
        drain(set).await;
    }
    let (mut many, mut one) = (Vec::new(), Vec::new());
    let mut next = 0usize;
    for block in 0..blocks {
        for is_many in [block % 2 == 0, block % 2 == 1] {
            let set = &mut sets[usize::from(is_many)];
            let started = Instant::now();
            if at_once && is_many {
                let each = per_block as usize / set.len();
                futures::future::join_all(set.iter_mut().map(|shard| async {
                    for _ in 0..each {
                        commit(shard, offset.fetch_add(1, Ordering::Relaxed), stats).await;
                    }
                }))
                .await;
            } else {
                for _ in 0..per_block {
                    let i = next % set.len();
                    next += 1;
                    commit(&mut set[i], offset.fetch_add(1, Ordering::Relaxed), stats).await;
                }
            }
            drain(set).await;
            let per_commit = started.elapsed() / per_block;
            if is_many {
                many.push(per_commit);
            } else {
                one.push(per_commit);
            }
        }
    }
    for set in sets {
        for shard in set {
            shard.close().await;
        }
    }
    let paired = benches::Paired::from_blocks(many, one);
    let group = format!(
        "shards_n100{}{}_paired",
        if triggers == 0 { "" } else { "_triggers" },
        if at_once { "_at_once" } else { "" }
    );
    paired.save(&group);
    format!(
        "{group} ({blocks} alternating blocks of {per_block} commits, {triggers} triggers, \
         the many {}): {PAIRED_SHARDS} shards {:.2} us a commit, 1 shard {:.2} us, ratio {:.3}",
        if at_once { "at once" } else { "in turn" },
        paired.ours.as_secs_f64() * 1e6,
        paired.floor.as_secs_f64() * 1e6,
        paired.ratio()
    )
}

/// The floor under [`paired_in_turn`]: the same StartCommit write (the checkpoint, one
/// WriteBatch, unsynced) on 1 store and on [`PAIRED_SHARDS`] stores in turn, called
/// straight from this thread (no runtime, no store pool): what RocksDB itself costs
/// more when each write goes to another DB, its caches cold. Saved as
/// `shards_n100_stores_alone_paired`.
fn paired_stores_alone() -> String {
    use triggers_runtime::test_support::RawStore as _;
    let (blocks, per_block) = (40, 300);
    let dir = tempfile::tempdir().expect("tempdir");
    let sets: [Vec<triggers_runtime::Store>; 2] = [1, PAIRED_SHARDS].map(|n| {
        (0..n)
            .map(|i| {
                triggers_runtime::Store::open(
                    dir.path().join(format!("{n}-{i}")),
                    Durability::Unsynced,
                )
                .expect("opens")
            })
            .collect()
    });
    let mut at = 0i64;
    let paired = benches::Paired::alternate(blocks, per_block, |many| {
        let set = &sets[usize::from(many)];
        set[at as usize % set.len()]
            .commit_unchecked(&benches::checkpoint(at), None)
            .expect("commits");
        at += 1;
    });
    let group = "shards_n100_stores_alone_paired";
    paired.save(group);
    format!(
        "{group} ({blocks} alternating blocks of {per_block} writes in turn, on this thread): \
         {PAIRED_SHARDS} stores {:.2} us a write, 1 store {:.2} us, ratio {:.3}",
        paired.ours.as_secs_f64() * 1e6,
        paired.floor.as_secs_f64() * 1e6,
        paired.ratio()
    )
}

async fn commit(shard: &mut Shard, at: i64, stats: &[triggers_proto::BindingStats]) {
    shard
        .start_commit(benches::checkpoint(at), stats)
        .await
        .expect("commits");
    shard.acknowledged().await.expect("acknowledged");
}

async fn commit_each(
    shards: &mut [Shard],
    offset: &AtomicI64,
    stats: &[triggers_proto::BindingStats],
) {
    for shard in shards {
        commit(shard, offset.fetch_add(1, Ordering::Relaxed), stats).await;
    }
}

async fn drain(shards: &[Shard]) {
    for shard in shards {
        shard.drained().await.expect("drained");
    }
}

criterion_group!(benches, shards);
criterion_main!(benches);
