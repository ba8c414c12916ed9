//! The async facade over a shard's store: every RocksDB call a shard, its delivery
//! engines and its backlog make goes through here, and runs on the shard's store lane
//! ([`crate::store_pool`]: in order, on the process's shared store threads), off the
//! async executor.
//!
//! Data flows one way: [`Store`] (blocking, bytes on disk) → [`ShardStore`] (async, on
//! the store lane) → the backlog and the delivery engines → [`crate::Shard`]. A `&Store`
//! exists only on the store lane: work that must change memory and the store in one
//! step (so a dropped future cannot split them) gets it through [`ShardStore::run`].
//!
//! Cancel safety, for every method: the work is queued when the future is first polled
//! and then runs to its end on the store lane even if the future is dropped (a write is
//! never cut in half); dropping it loses only the answer.

use crate::store::{Durability, Store, StoreError};
use crate::store_pool::{StoreLane, StoreTaskError};
use std::path::PathBuf;
use std::sync::Arc;
use triggers_proto::{Checkpoint, TriggerParams};

/// A shard's open store and the lane its work runs on. Cheap to clone: clones share
/// both. The store closes when the last clone (and the last job holding it) is gone;
/// dropping the last clone off the store lanes waits for that.
#[derive(Debug, Clone)]
pub(crate) struct ShardStore {
    store: Arc<Store>,
    thread: StoreLane,
}

impl ShardStore {
    /// Starts the shard's lane and opens the store at `path` on it.
    pub(crate) async fn open(
        path: PathBuf,
        durability: Durability,
    ) -> Result<Self, StoreTaskError> {
        let thread = StoreLane::start()?;
        let store = thread
            .call(move || Store::open(&path, durability))
            .await?
            .map_err(StoreTaskError::Store)?;
        Ok(Self {
            store: Arc::new(store),
            thread,
        })
    }

    /// Starts the lane for `store`, already open (a store in a host's RocksDB).
    pub(crate) fn from_store(store: Store) -> Result<Self, StoreTaskError> {
        Ok(Self {
            store: Arc::new(store),
            thread: StoreLane::start()?,
        })
    }

    /// Runs `work` with the store on the store lane and returns its result: for work
    /// that changes memory in the same step as the store. The one place a `&Store` is
    /// handed out; `work` runs to its end even if the caller stops waiting, and a panic
    /// in it is [`StoreTaskError::Panicked`].
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<T, StoreTaskError> {
        let store = self.store.clone();
        self.thread.call(move || work(&store)).await
    }

    /// Like [`ShardStore::run`], for work whose only failure is the store's.
    async fn read_or_write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreTaskError> {
        self.run(work).await?.map_err(StoreTaskError::Store)
    }

    /// The last committed checkpoint; empty for a new store.
    pub(crate) async fn checkpoint(&self) -> Result<Checkpoint, StoreTaskError> {
        self.read_or_write(Store::checkpoint).await
    }

    /// Waiting delivery's pending trigger variables, if any.
    pub(crate) async fn trigger_params(&self) -> Result<Option<TriggerParams>, StoreTaskError> {
        self.read_or_write(Store::trigger_params).await
    }

    /// StartCommit in waiting delivery: the checkpoint and the transaction's trigger
    /// variables, if any, in one WriteBatch with the store's durability.
    pub(crate) async fn commit(
        &self,
        checkpoint: Checkpoint,
        params: Option<TriggerParams>,
    ) -> Result<(), StoreTaskError> {
        self.read_or_write(move |store| store.commit(&checkpoint, params.as_ref()))
            .await
    }

    /// Waiting delivery's StartCommit writes for the host's WriteBatch: the trigger
    /// variables and their commit sequence number, if any. Writes nothing.
    pub(crate) async fn commit_ops(
        &self,
        params: Option<TriggerParams>,
    ) -> Result<Vec<crate::store::KeyOp>, StoreTaskError> {
        self.run(move |store| {
            let seq = params
                .as_ref()
                .map(|p| p.last_commit_seq)
                .filter(|seq| *seq > 0);
            store.commit_ops(seq, &[], params.as_ref())
        })
        .await
    }

    /// Deletes waiting delivery's trigger variables once their webhooks are delivered.
    pub(crate) async fn delete_delivered_params(&self) -> Result<(), StoreTaskError> {
        self.read_or_write(Store::clear_trigger_params).await
    }

    /// When each of the triggers named `triggers` last sent a webhook (unix ms), if
    /// recorded, in their order.
    pub(crate) async fn last_sent_ms(
        &self,
        triggers: Vec<String>,
    ) -> Result<Vec<Option<u64>>, StoreTaskError> {
        self.read_or_write(move |store| {
            triggers
                .iter()
                .map(|trigger| store.last_sent_ms(trigger))
                .collect()
        })
        .await
    }

    /// Waits until every store job queued before this call has finished (and let go of
    /// whatever it held): the thread runs jobs in order. A stopped thread has nothing
    /// left to wait for.
    pub(crate) async fn settle(&self) {
        let _ = self.thread.call(|| ()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn store_facade_errors_keep_their_cause() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ShardStore::open(dir.path().to_path_buf(), Durability::Synced)
            .await
            .expect("opens");
        // A second open of the same store fails in the store, and says why.
        let err = ShardStore::open(dir.path().to_path_buf(), Durability::Synced)
            .await
            .expect_err("locked");
        let StoreTaskError::Store(cause) = &err else {
            panic!("not the store's error: {err:?}");
        };
        assert!(matches!(cause, StoreError::Locked { .. }), "{cause}");
        let source = std::error::Error::source(&err).expect("a cause");
        assert!(source.to_string().contains("one writer"), "{source}");

        first
            .commit(Checkpoint::default(), None)
            .await
            .expect("commits");
        assert_eq!(
            first.checkpoint().await.expect("reads"),
            Checkpoint::default()
        );
        first.settle().await;
    }
}
