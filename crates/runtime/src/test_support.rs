//! Helpers for this workspace's tests and benches. **Not a stable API**: behind the
//! `__test-support` feature, hidden from the docs, and free to change in any release.
//! A host must not enable it: these write the store's layout directly, bypassing the
//! state machine that keeps at-least-once (a checkpoint never durable without its
//! trigger variables, variables deleted only once delivered).
//!
//! The crate's own tests get it through a dev-dependency on the crate itself; `benches`
//! enables it in its manifest.

use crate::store::{Store, StoreError};
use triggers_proto::{Checkpoint, DeliveryRecord, TriggerParams};

/// The store's raw writers, for tests and benches that plant or measure one layout.
pub trait RawStore {
    /// Waiting delivery's StartCommit write, alone: the checkpoint and, when given, the
    /// trigger variables, in one WriteBatch with the store's durability.
    fn commit_unchecked(
        &self,
        checkpoint: &Checkpoint,
        params: Option<&TriggerParams>,
    ) -> Result<(), StoreError>;

    /// Deletes waiting delivery's trigger variables (unsynced).
    fn clear_trigger_params_unchecked(&self) -> Result<(), StoreError>;

    /// Writes a ledger record and, when asked, deletes its backlog entry and records the
    /// trigger's last send time, in one unsynced WriteBatch.
    fn write_delivery_unchecked(
        &self,
        record: &DeliveryRecord,
        delete_entry: bool,
        sent_at_ms: Option<u64>,
    ) -> Result<(), StoreError>;

    /// Writes raw bytes under a key, bypassing every check: corrupt or future-version
    /// values.
    fn put_raw_for_tests(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;

    /// Rewrites the store as builds before trigger names left it: the backlog, ledger and
    /// last send times of trigger `names[i]` keyed by index `i` (what an upgrade finds).
    /// Returns how many keys moved.
    fn downgrade_to_index_keys(&self, names: &[&str]) -> Result<usize, StoreError>;
}

impl RawStore for Store {
    fn commit_unchecked(
        &self,
        checkpoint: &Checkpoint,
        params: Option<&TriggerParams>,
    ) -> Result<(), StoreError> {
        self.commit(checkpoint, params)
    }

    fn clear_trigger_params_unchecked(&self) -> Result<(), StoreError> {
        self.clear_trigger_params()
    }

    fn write_delivery_unchecked(
        &self,
        record: &DeliveryRecord,
        delete_entry: bool,
        sent_at_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        self.write_delivery(record, delete_entry, sent_at_ms)
    }

    fn put_raw_for_tests(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.put_raw(key, value)
    }

    fn downgrade_to_index_keys(&self, names: &[&str]) -> Result<usize, StoreError> {
        self.to_index_keys(names)
    }
}

/// The fixtures this workspace's tests share (the runtime's and the sidecar's), so a
/// test file builds a shard from one definition instead of its own copy.
pub mod fixtures {
    use crate::ShardConfig;
    use std::sync::Arc;
    use std::time::Duration;
    use triggers::{Materialization, NetworkPolicy, RetryBackoff, Triggers};
    use triggers_proto::{BindingStats, Checkpoint, Source};

    /// The collections of the test materialization's bindings, in binding order.
    pub const COLLECTIONS: [&str; 3] = ["acmeCo/orders", "acmeCo/customers", "acmeCo/refunds"];

    /// The test materialization, `acmeCo/orders/postgres`, with its first `bindings`
    /// bindings of [`COLLECTIONS`] (at most 3).
    pub fn materialization(bindings: usize) -> Materialization {
        Materialization {
            name: "acmeCo/orders/postgres".to_string(),
            connector_image: "ghcr.io/estuary/materialize-postgres:v1".to_string(),
            binding_collections: COLLECTIONS
                .iter()
                .take(bindings)
                .map(ToString::to_string)
                .collect(),
        }
    }

    /// The stats of transaction `n`: one document of each binding in `bindings`, all
    /// published at second `1_750_000_000 + n`, so transactions are ordered in time.
    pub fn stats_at(n: u64, bindings: &[u32]) -> Vec<BindingStats> {
        let clock = triggers::Clock::from_unix(1_750_000_000 + n, 0).0;
        bindings
            .iter()
            .map(|binding| BindingStats {
                binding: *binding,
                docs: 1,
                bytes: 10,
                first_clock: clock,
                last_clock: clock,
            })
            .collect()
    }

    /// A checkpoint that read one journal through `offset`: tests tell commits apart by it.
    pub fn checkpoint(offset: i64) -> Checkpoint {
        Checkpoint {
            sources: [(
                "acmeCo/orders/pivot=00".to_string(),
                Source {
                    read_through: offset,
                    producers: vec![],
                },
            )]
            .into(),
            ack_intents: Default::default(),
        }
    }

    /// Longest a test waits for a shard's backlog to drain: a regression fails instead
    /// of hanging.
    pub const DRAIN_WITHIN: Duration = Duration::from_secs(20);

    /// Waits (at most [`DRAIN_WITHIN`]) until `shard` has delivered every acknowledged
    /// webhook; panics if it takes longer or delivery stopped, naming which.
    pub async fn drained(shard: &crate::Shard) {
        tokio::time::timeout(DRAIN_WITHIN, shard.drained())
            .await
            .expect("drains in time")
            .expect("drains");
    }

    /// Retries 5 to 20 ms apart (half jittered), so failure paths run in milliseconds.
    pub fn fast_backoff() -> RetryBackoff {
        RetryBackoff::new(Duration::from_millis(5), Duration::from_millis(20)).with_jitter(0.5)
    }

    /// A shard of `materialization` firing `triggers` at a receiver on 127.0.0.1: the
    /// production defaults but for [`fast_backoff`] and loopback allowed.
    pub fn loopback_shard(
        materialization: Materialization,
        triggers: Arc<Triggers>,
    ) -> ShardConfig {
        ShardConfig::new(materialization, triggers)
            .with_backoff(fast_backoff())
            .with_network(NetworkPolicy::ALLOW_LOOPBACK)
    }
}
