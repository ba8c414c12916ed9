//! The store: StartCommit's write with and without trigger params (sync on and off),
//! against the hardware floor of appending the same bytes to a file and syncing it; and
//! recovery with 10^5 committed transactions behind it, against a plain open.

use criterion::{Criterion, criterion_group, criterion_main};
use std::io::Write as _;
use triggers_proto::Message as _;
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
            b.iter(|| store.commit(&checkpoint, None).expect("commits"))
        });
        group.bench_function("checkpoint_and_params", |b| {
            b.iter(|| store.commit(&checkpoint, Some(&params)).expect("commits"))
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
    }
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
                .commit(&benches::checkpoint(offset), Some(&params))
                .expect("commits");
            if offset + 1 < TRANSACTIONS {
                store.clear_trigger_params().expect("clears");
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
}

criterion_group!(benches, start_commit, recovery);
criterion_main!(benches);
