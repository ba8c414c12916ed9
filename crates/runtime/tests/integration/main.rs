//! The runtime's integration tests, one binary (each test binary links RocksDB, and
//! linking is most of a rebuild): the shard state machine in waiting delivery
//! (`shard.rs`) and decoupled delivery with its backlog and ledger (`backlog.rs`), on a
//! real RocksDB in a temp dir and a real receiver on 127.0.0.1. Their shared fixtures are
//! `triggers_runtime::test_support::fixtures` (the sidecar's tests use them too).
//!
//! Run one group with a filter: `cargo test -p triggers-runtime --test integration backlog::`.

mod backlog;
mod collections;
mod dead_letters;
mod host_db;
mod names;
mod run_id;
mod shard;
mod shared_http;
