//! A stopped shard's ledger and backlog, for an operator: the deliveries of a shard no
//! process runs (an in-process consumer that fails at every start, say), listed, retried,
//! skipped or replayed on disk, with nothing sent. The next open of the shard sends what
//! these made PENDING, as `operator-replay`.
//!
//! The store's lock keeps this and a running shard apart: opening a store a process
//! holds is [`StoreError::Locked`]. Without the shard's config, triggers are named by
//! name only (a record's `trigger` position is as last written; entries without a record
//! show as PENDING at position `u32::MAX`).

use super::ReplayRange;
use super::ledger::{self, LedgerError, illegal, not_found, timestamp};
use super::operator::{cancel_reason, page, replayable, revive_on_disk};
use crate::store::{Durability, Keyspace, Store, StoreError};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;
use triggers_proto::{DeliveryRecord, DeliveryState};

/// The ledger and backlog of a shard no process runs, opened for an operator.
///
/// Every method blocks on the store (RocksDB): call it off an async executor
/// (`tokio::task::spawn_blocking`). Each action is one WriteBatch, so a crash keeps it
/// whole or not at all.
///
/// ```
/// use triggers_runtime::{StoppedShard, StoreError};
/// let dir = tempfile::tempdir()?;
/// let shard = StoppedShard::open(dir.path())?;
/// let (deliveries, next_page) = shard.deliveries(50, "")?;
/// assert!(deliveries.is_empty() && next_page.is_empty());
/// // While it is open here, no process can open the shard (and the reverse).
/// assert!(matches!(StoppedShard::open(dir.path()), Err(StoreError::Locked { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct StoppedShard {
    store: Store,
}

impl StoppedShard {
    /// Opens the store of the shard at `path` (its own RocksDB). A store another process
    /// holds (a running shard or sidecar) is [`StoreError::Locked`]: act through that
    /// process instead.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Ok(Self {
            store: Store::open(path, Durability::Synced)?,
        })
    }

    /// The shard whose keys are `keyspace` of a host's `db` (see [`Store::in_host_db`]).
    pub fn in_host_db(db: Arc<rocksdb::DB>, keyspace: Keyspace) -> Result<Self, StoreError> {
        Ok(Self {
            store: Store::in_host_db(db, keyspace, Durability::Synced)?,
        })
    }

    /// Every delivery, newest first (by first commit sequence number, then trigger name):
    /// the ledger's records, and entries without one as PENDING.
    fn all(&self) -> Result<Vec<DeliveryRecord>, LedgerError> {
        let mut records: BTreeMap<(u64, String), DeliveryRecord> = self
            .store
            .deliveries()?
            .into_iter()
            .map(|r| ((r.first_commit_seq, r.trigger_name.clone()), r))
            .collect();
        for entry in self.store.backlog()? {
            let key = (entry.first_commit_seq, entry.trigger.clone());
            if records
                .get(&key)
                .is_none_or(|r| r.state() == DeliveryState::Pending)
            {
                let view = ledger::orphan(&entry, records.get(&key));
                records.insert(key, view);
            }
        }
        Ok(records.into_values().rev().collect())
    }

    /// A page of deliveries, newest first; `page_token` is the previous page's
    /// `next_page_token` (empty for the first). Pages hold 1 to 500 (0 means 50).
    pub fn deliveries(
        &self,
        page_size: usize,
        page_token: &str,
    ) -> Result<(Vec<DeliveryRecord>, String), LedgerError> {
        page(&self.all()?, page_size, page_token)
    }

    /// One delivery of the trigger named `trigger`.
    pub fn delivery(
        &self,
        trigger: &str,
        first_commit_seq: u64,
    ) -> Result<DeliveryRecord, LedgerError> {
        self.all()?
            .into_iter()
            .find(|r| r.trigger_name == trigger && r.first_commit_seq == first_commit_seq)
            .ok_or_else(|| not_found(trigger, first_commit_seq))
    }

    /// FAILED → PENDING: a stopped delivery (its entry still in the backlog), or a dead
    /// letter (its kept entry back in the backlog). The next open sends it as
    /// `operator-replay`.
    pub fn retry(
        &self,
        trigger: &str,
        first_commit_seq: u64,
    ) -> Result<DeliveryRecord, LedgerError> {
        let current = self.delivery(trigger, first_commit_seq)?;
        if current.state() != DeliveryState::Failed {
            return Err(illegal(
                "retry",
                &current,
                "only a FAILED delivery can be retried",
            ));
        }
        if current.dead_letter {
            return Ok(revive_on_disk(&self.store, current, "retry")?.0);
        }
        let next = DeliveryRecord {
            state: DeliveryState::Pending as i32,
            updated_at: Some(timestamp(SystemTime::now())),
            replay: true,
            ..current
        };
        self.store.write_delivery(&next, false, None)?;
        Ok(next)
    }

    /// PENDING, RUNNING (interrupted) or FAILED → CANCELLED, with a reason, deleting its
    /// backlog entry in the same batch: it will never be sent.
    pub fn skip(
        &self,
        trigger: &str,
        first_commit_seq: u64,
        reason: &str,
    ) -> Result<DeliveryRecord, LedgerError> {
        let reason = cancel_reason(reason)?;
        let current = self.delivery(trigger, first_commit_seq)?;
        let hint = match current.state() {
            DeliveryState::Success => Some("it was delivered"),
            DeliveryState::Cancelled => Some("it is already finished"),
            _ => None,
        };
        if let Some(hint) = hint {
            return Err(illegal("skip", &current, hint));
        }
        let next = DeliveryRecord {
            state: DeliveryState::Cancelled as i32,
            updated_at: Some(timestamp(SystemTime::now())),
            cancel_reason: reason,
            dead_letter: false,
            replay: false,
            ..current
        };
        self.store.write_delivery(&next, true, None)?;
        Ok(next)
    }

    /// SUCCESS → PENDING for the delivered webhooks of `trigger` that `range` selects
    /// and the ledger keeps (at most [`super::MAX_REPLAY`]): each goes back in the
    /// backlog, and the next open sends them as `operator-replay`, oldest first. A
    /// trigger the shard's config no longer has keeps them as orphans (never sent).
    pub fn replay(
        &self,
        trigger: &str,
        range: ReplayRange,
    ) -> Result<Vec<DeliveryRecord>, LedgerError> {
        range.check()?;
        let backlog = self.store.backlog()?;
        let mut replayed = Vec::new();
        for record in replayable(&self.store, trigger, &range)? {
            if backlog
                .iter()
                .any(|e| e.is(trigger, record.first_commit_seq))
            {
                return Err(illegal("replay", &record, "it is in the backlog already"));
            }
            replayed.push(revive_on_disk(&self.store, record, "replay")?.0);
        }
        Ok(replayed)
    }
}
