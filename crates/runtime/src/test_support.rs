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
}
