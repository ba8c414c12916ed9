//! The store: StartCommit's write with and without trigger params (sync on and off),
//! against the hardware floor of appending the same bytes to a file and syncing it; and
//! recovery with 10^5 committed transactions behind it, against a plain open.

use criterion::{Criterion, criterion_group, criterion_main};
use std::io::Write as _;
use triggers_proto::Message as _;
use triggers_runtime::test_support::RawStore as _;
use triggers_runtime::{Durability, Store};

fn start_commit(c: &mut Criterion) {
    let checkpoint = benches::checkpoint(42);
    let params = benches::params();
    for (name, durability) in [
        ("start_commit_sync", Durability::Synced),
        ("start_commit_nosync", Durability::Unsynced),
    ] {
        let mut group = c.benchmark_group(name);
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), durability).expect("opens");
        group.bench_function("checkpoint_only", |b| {
            b.iter(|| store.commit_unchecked(&checkpoint, None).expect("commits"))
        });
        group.bench_function("checkpoint_and_params", |b| {
            b.iter(|| {
                store
                    .commit_unchecked(&checkpoint, Some(&params))
                    .expect("commits")
            })
        });
        if durability == Durability::Synced {
            // The floor: the same bytes appended to a plain file, then fdatasync.
            let bytes = [checkpoint.encode_to_vec(), params.encode_to_vec()].concat();
            let mut file = tempfile::tempfile_in(dir.path()).expect("file");
            group.bench_function("file_append_fdatasync", |b| {
                b.iter(|| {
                    file.write_all(&bytes).expect("appends");
                    file.sync_data().expect("syncs");
                })
            });
        }
        group.finish();
        paired(name, &store, &checkpoint, &params, durability);
    }
}

/// Criterion runs checkpoint-only first and with-params second on one store, so the
/// second inherits the first's flushes, compactions and writeback (unsynced, that cost
/// 1.1-1.45x in separate runs). Here blocks of the two alternate on the same store, and
/// the ratio of median block times is saved for the report (`<group>_paired`).
fn paired(
    group: &str,
    store: &Store,
    checkpoint: &triggers_proto::Checkpoint,
    params: &triggers_proto::TriggerParams,
    durability: Durability,
) {
    let (blocks, per_block) = match durability {
        Durability::Synced => (60, 20),
        Durability::Unsynced => (200, 500),
    };
    let paired = benches::Paired::alternate(blocks, per_block, |with_params| {
        store
            .commit_unchecked(checkpoint, with_params.then_some(params))
            .expect("commits");
    });
    println!(
        "{group}_paired ({blocks} alternating blocks of {per_block} commits): with params {:.2} us, \
         checkpoint only {:.2} us, ratio {:.3}",
        paired.ours.as_secs_f64() * 1e6,
        paired.floor.as_secs_f64() * 1e6,
        paired.ratio()
    );
    paired.save(&format!("{group}_paired"));
}

fn recovery(c: &mut Criterion) {
    const TRANSACTIONS: i64 = 100_000;
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // As a shard runs: each commit writes params, each delivery deletes them; the last
        // transaction's params are left pending, as after a crash.
        let store = Store::open(dir.path(), Durability::Unsynced).expect("opens");
        let params = benches::params();
        for offset in 0..TRANSACTIONS {
            store
                .commit_unchecked(&benches::checkpoint(offset), Some(&params))
                .expect("commits");
            if offset + 1 < TRANSACTIONS {
                store.clear_trigger_params_unchecked().expect("clears");
            }
        }
    }
    let mut group = c.benchmark_group("recovery_1e5");
    group.sample_size(20);
    group.bench_function("plain_open", |b| {
        b.iter(|| drop(Store::open(dir.path(), Durability::Synced).expect("opens")))
    });
    group.bench_function("open_and_find_pending", |b| {
        b.iter(|| {
            let store = Store::open(dir.path(), Durability::Synced).expect("opens");
            let checkpoint = store.checkpoint().expect("reads");
            let pending = store.trigger_params().expect("reads");
            assert!(pending.is_some() && !checkpoint.sources.is_empty());
        })
    });
    group.finish();

    // Paired, as StartCommit is: an open's time drifts between criterion's separate runs
    // (the ratio above read 0.84 in one full run and 1.29 in the next).
    const BLOCKS: usize = 30;
    const OPENS: u32 = 5;
    let paired = benches::Paired::alternate(BLOCKS, OPENS, |find_pending| {
        let store = Store::open(dir.path(), Durability::Synced).expect("opens");
        if find_pending {
            let checkpoint = store.checkpoint().expect("reads");
            let pending = store.trigger_params().expect("reads");
            assert!(pending.is_some() && !checkpoint.sources.is_empty());
        }
    });
    println!(
        "recovery_1e5_paired ({BLOCKS} alternating blocks of {OPENS} opens): open and find \
         pending {:.2} ms, plain open {:.2} ms, ratio {:.3}",
        paired.ours.as_secs_f64() * 1e3,
        paired.floor.as_secs_f64() * 1e3,
        paired.ratio()
    );
    paired.save("recovery_1e5_paired");
}

criterion_group!(benches, start_commit, recovery);
criterion_main!(benches);
