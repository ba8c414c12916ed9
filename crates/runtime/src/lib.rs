//! The trigger runtime of one shard, the library a reactor links: its RocksDB store and
//! its commit / acknowledge / recover state machine. (The gRPC sidecar that serves it to
//! consumers in other languages, the `triggers` tool, the reference consumer and the demo
//! are the `triggers-sidecar` crate; this one builds without any of their dependencies.)
//!
//! A consumer opens a [`Shard`] over its store directory, resumes from the returned
//! checkpoint, and for each transaction calls [`Shard::start_commit`] (checkpoint and
//! trigger variables in one durable WriteBatch) and then [`Shard::acknowledged`] (render,
//! deliver, delete). A crash anywhere between the two re-fires the webhooks on the next
//! start; a transaction whose StartCommit never completed never fires.
//!
//! ```
//! use std::sync::Arc;
//! use triggers::{Clock, ConfigFormat, Materialization};
//! use triggers_runtime::{Shard, ShardConfig, TransactionStats};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store_dir = tempfile::tempdir()?;
//! let triggers = Arc::new(triggers::validate("config: []", ConfigFormat::Yaml)?);
//! let materialization = Materialization {
//!     name: "acmeCo/orders/warehouse".to_string(),
//!     connector_image: "ghcr.io/estuary/materialize-postgres:v1".to_string(),
//!     binding_collections: vec!["acmeCo/orders".to_string()],
//! };
//! let (mut shard, recovery) =
//!     Shard::open(store_dir.path(), ShardConfig::new(materialization, triggers)).await?;
//! shard.acknowledged().await?; // delivers what a crash left pending
//! let mut stats = TransactionStats::default();
//! stats.add_document(0, Clock::from_unix(1_750_000_000, 0), 512);
//! shard.start_commit(recovery.checkpoint, &stats.take()).await?;
//! shard.acknowledged().await?;
//! shard.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! `examples/embed_shard.rs` does the same with a trigger and a receiver on 127.0.0.1.
//!
//! This crate owns every byte on disk ([`store`]); trigger logic lives in `triggers`.
//!
//! Where the design lives, in the order data flows (each module uses only those above it):
//!
//! - `stats.rs`: a transaction's per-binding stats ([`TransactionStats`]), from which
//!   `triggers` computes the trigger variables.
//! - [`store`]: the RocksDB layout, the WriteBatches (blocking calls).
//! - `store_pool.rs`, `shard_store.rs`: the process's store threads with a lane per
//!   shard ([`store_threads`]), and the async facade every store call goes through
//!   ([`StoreTaskError`]).
//! - `backlog/`: decoupled delivery's persisted per-trigger queues and their workers
//!   (deliver, then delete); `ledger.rs` the delivery records, `operator.rs` retry/skip.
//! - `migrations.rs`: every store layout migration (single key ↔ backlog).
//! - `engine/`: one delivery engine per [`DeliveryMode`]: `waiting.rs` (StartCommit writes
//!   one key; Acknowledged delivers, then deletes it) and `decoupled.rs` (StartCommit
//!   writes backlog entries; Acknowledged hands them to the backlog).
//! - `config.rs`, `error.rs`, `shard.rs`: [`ShardConfig`], [`ShardError`], and [`Shard`],
//!   the protocol and phase (open → StartCommit → Acknowledged)* over its engine.

mod backlog;
mod config;
pub mod crash;
mod engine;
mod error;
pub mod flow_store;
mod migrations;
mod shard;
mod shard_store;
mod stats;
pub mod store;
mod store_pool;
#[cfg(any(test, feature = "__test-support"))]
#[doc(hidden)]
pub mod test_support;

/// The RocksDB crate this runtime links: a host that opens its own DB for
/// [`Store::in_host_db`] uses it, so both name the same `DB` type.
pub use rocksdb;

pub use backlog::{
    BacklogError, BacklogFailure, BacklogHandle, BacklogStatus, DEFAULT_LEDGER_KEEP,
    DEFAULT_LEDGER_MAX_AGE, LedgerError, LedgerRetention, MAX_REPLAY, OrphanedQueue, QueueStatus,
    ReplayRange, StoppedShard,
};
pub use config::{DEFAULT_BACKLOG_LIMIT, DEFAULT_SHUTDOWN_GRACE, DeliveryMode, ShardConfig};
pub use error::{ProtocolError, ShardError};
pub use flow_store::{FLOW_TRIGGER_PARAMS_KEY, FlowParamsError, MAX_FLOW_TRIGGER_PARAMS_BYTES};
pub use shard::{Acknowledgement, Commit, Phase, PreparedCommit, Recovery, Shard};
pub use stats::TransactionStats;
pub use store::{
    Durability, KeyOp, Keyspace, KeyspaceError, MAX_KEYSPACE_PREFIX_BYTES, Store, StoreError,
};
pub use store_pool::{DEFAULT_STORE_THREADS, MAX_STORE_THREADS, StoreTaskError, store_threads};
