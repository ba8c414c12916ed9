//! Why a shard call failed: [`ShardError`], and [`ProtocolError`] for a call the shard's
//! state does not allow. The one place the errors of the layers below (store, store
//! thread, backlog, delivery) become a shard's.

use crate::backlog::BacklogError;
use crate::store::StoreError;
use crate::store_pool::StoreTaskError;
use triggers::{DeliveryError, ParamsError, ValidationErrors, VariablesError};

/// A call that the shard's current state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Acknowledged arrived, but no StartCommit (or recovery) awaits it.
    #[error("Acknowledged without a preceding StartCommit")]
    AcknowledgedWithoutCommit,
    /// StartCommit arrived while the previous commit awaits its Acknowledged.
    #[error("StartCommit while the previous commit is not yet acknowledged")]
    CommitBeforeAcknowledged,
    /// StartCommit arrived before the recovered checkpoint was acknowledged. Refused
    /// whether or not anything is pending, so a caller that skips the recovered
    /// Acknowledged learns it on its first run, not on the run after a crash (where the
    /// commit would overwrite the recovered trigger variables).
    #[error(
        "StartCommit before the recovered checkpoint was acknowledged: call Acknowledged \
         once after Open (it delivers any triggers a crash left pending)"
    )]
    CommitBeforeRecoveryAcknowledged,
    /// A commit prepared for the host's WriteBatch awaits [`crate::Shard::commit_written`]
    /// or [`crate::Shard::commit_not_written`].
    #[error(
        "a commit prepared for the host's WriteBatch is not yet reported written or not \
         written (Shard::commit_written / commit_not_written)"
    )]
    HostWriteUnreported,
    /// A prepared commit handed back to a shard that did not prepare it, or not the
    /// last one it prepared.
    #[error("this prepared commit is not the one this shard awaits")]
    NotThisCommit,
    /// An earlier failure left the shard unusable; reopen it.
    #[error("the shard failed earlier and must be reopened")]
    Failed,
}

/// Why a shard operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The call is not allowed in the shard's current state.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transaction's stats are invalid; nothing was written.
    #[error("invalid transaction stats: {0}")]
    Stats(#[from] VariablesError),
    /// Persisted trigger variables cannot be read back.
    #[error("stored trigger params cannot be used: {0}")]
    Params(#[from] ParamsError),
    /// Webhooks failed for good. Their variables stay persisted and fire again on the
    /// next start, with the config current then.
    #[error(
        "delivering the triggers of transaction {flow_run_id} failed; its trigger params \
         stay in the store and fire again when the shard restarts: {source}"
    )]
    Delivery {
        /// The transaction.
        flow_run_id: String,
        /// Which triggers failed, and why.
        #[source]
        source: DeliveryError,
    },
    /// Decoupled delivery stopped: a webhook failed for good (naming the trigger, its
    /// status and the backlog depth), or a delivered entry could not be deleted.
    #[error(transparent)]
    Backlog(#[from] BacklogError),
    /// Store work did not finish: it panicked, or its thread could not start or has
    /// stopped.
    #[error("store task did not complete: {0}")]
    Blocking(#[source] StoreTaskError),
    /// The trigger config does not fit the materialization: a `collections` filter
    /// names a collection (or prefix) none of its bindings read, so it could never fire.
    /// Nothing was opened.
    #[error("the trigger config does not fit the materialization's bindings: {0}")]
    Config(#[source] ValidationErrors),
    /// The HTTP client could not be built (no TLS roots, say).
    #[error("cannot build the webhook HTTP client")]
    HttpClient(#[source] reqwest::Error),
}

impl From<StoreTaskError> for ShardError {
    /// The store's own failure stays [`ShardError::Store`]; work that did not complete
    /// is [`ShardError::Blocking`].
    fn from(err: StoreTaskError) -> Self {
        match err {
            StoreTaskError::Store(err) => ShardError::Store(err),
            other => ShardError::Blocking(other),
        }
    }
}
