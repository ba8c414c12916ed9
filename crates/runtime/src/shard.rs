//! The commit / acknowledge / recover state machine of one shard.

use crate::crash::crash_point;
use crate::store::{Durability, Store, StoreError};
use std::path::PathBuf;
use std::sync::Arc;
use triggers::{
    Delivered, Deliverer, DeliveryError, Materialization, NetworkPolicy, ParamsError, RetryBackoff,
    SendReason, Triggers, Variables, VariablesError,
};
use triggers_proto::{BindingStats, Checkpoint};

/// What a shard needs besides its store directory.
#[derive(Clone)]
pub struct ShardConfig {
    /// The materialization the shard belongs to.
    pub materialization: Materialization,
    /// Its validated triggers; empty means nothing is persisted or delivered.
    pub triggers: Arc<Triggers>,
    /// How StartCommit makes its write durable.
    pub durability: Durability,
    /// Delays between delivery attempts.
    pub backoff: RetryBackoff,
    /// Which non-public destinations webhooks may reach ([`NetworkPolicy::PUBLIC_ONLY`] in
    /// production; tests and demos allow loopback).
    pub network: NetworkPolicy,
}

/// What [`Shard::open`] recovered.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovery {
    /// The last committed checkpoint (empty for a new store). Resume reading from here.
    pub checkpoint: Checkpoint,
    /// Variables of a committed transaction whose webhooks were not delivered before the
    /// last stop. They fire on the first [`Shard::acknowledged`].
    pub pending: Option<Variables>,
}

/// What [`Shard::start_commit`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    /// The transaction's trigger variables, persisted with the checkpoint; `None` when it
    /// read no documents or there are no triggers.
    pub variables: Option<Variables>,
}

/// What [`Shard::acknowledged`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Acknowledgement {
    /// The variables whose webhooks were sent, if any.
    pub variables: Option<Variables>,
    /// The webhooks delivered, in config order.
    pub delivered: Vec<Delivered>,
}

/// A call that the shard's current state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Acknowledged arrived, but no StartCommit (or recovery) awaits it.
    #[error("Acknowledged without a preceding StartCommit")]
    AcknowledgedWithoutCommit,
    /// StartCommit arrived while the previous commit awaits its Acknowledged.
    #[error("StartCommit while the previous commit is not yet acknowledged")]
    CommitBeforeAcknowledged,
    /// StartCommit arrived before the recovered checkpoint was acknowledged, which would
    /// overwrite the recovered trigger variables.
    #[error(
        "StartCommit before the recovered checkpoint was acknowledged; its pending triggers \
         must be delivered first"
    )]
    CommitBeforeRecoveryAcknowledged,
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
    /// A blocking store task did not finish (it panicked or the runtime is shutting down).
    #[error("store task did not complete: {0}")]
    Blocking(String),
    /// The HTTP client could not be built (no TLS roots, say).
    #[error("cannot build the webhook HTTP client: {0}")]
    HttpClient(String),
}

/// Where the shard is in its transaction lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Opened; the recovered checkpoint's Acknowledged is due. `pending`: trigger params
    /// were recovered.
    Recovered { pending: bool },
    /// Between transactions.
    Idle,
    /// StartCommit's write is durable; its Acknowledged is due. `params`: it wrote
    /// trigger params.
    Committed { params: bool },
    /// An error left the store in an unknown state or a delivery failed for good.
    Failed,
}

/// One shard: its store, its triggers, and where it is in the lifecycle
/// open → (StartCommit → Acknowledged → deliver → delete params)*.
pub struct Shard {
    store: Arc<Store>,
    materialization: Materialization,
    triggers: Arc<Triggers>,
    deliverer: Deliverer,
    phase: Phase,
    /// flow_run_id of the persisted, undelivered trigger params, if any.
    pending_run_id: Option<String>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("store", &self.store)
            .field("materialization", &self.materialization.name)
            .field("triggers", &self.triggers.len())
            .field("phase", &self.phase)
            .finish()
    }
}

impl Shard {
    /// Opens the shard's store and recovers its last checkpoint and any trigger variables
    /// a crash left undelivered.
    pub async fn open(
        path: impl Into<PathBuf>,
        config: ShardConfig,
    ) -> Result<(Self, Recovery), ShardError> {
        let path = path.into();
        let durability = config.durability;
        let (store, checkpoint, params) = blocking(move || {
            let store = Store::open(&path, durability)?;
            let checkpoint = store.checkpoint()?;
            let params = store.trigger_params()?;
            Ok::<_, StoreError>((store, checkpoint, params))
        })
        .await??;
        let pending = params.map(Variables::from_params).transpose()?;
        if let Some(variables) = &pending {
            tracing::info!(
                flow_run_id = %variables.flow_run_id,
                "recovered trigger params of a committed transaction; they fire on the next Acknowledged"
            );
        }
        let deliverer = Deliverer::with_policy(config.backoff, config.network)
            .map_err(|err| ShardError::HttpClient(err.to_string()))?;
        let shard = Shard {
            store: Arc::new(store),
            materialization: config.materialization,
            triggers: config.triggers,
            deliverer,
            phase: Phase::Recovered {
                pending: pending.is_some(),
            },
            pending_run_id: pending.as_ref().map(|v| v.flow_run_id.clone()),
        };
        Ok((
            shard,
            Recovery {
                checkpoint,
                pending,
            },
        ))
    }

    /// Whether trigger variables are persisted and await delivery.
    pub fn has_pending_triggers(&self) -> bool {
        matches!(
            self.phase,
            Phase::Recovered { pending: true } | Phase::Committed { params: true }
        )
    }

    /// The flow_run_id of persisted trigger params awaiting delivery, if any.
    pub fn pending_flow_run_id(&self) -> Option<&str> {
        self.pending_run_id.as_deref()
    }

    /// The lifecycle phase, for status reports: `recovered`, `idle`, `committed` or `failed`.
    pub fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::Recovered { .. } => "recovered",
            Phase::Idle => "idle",
            Phase::Committed { .. } => "committed",
            Phase::Failed => "failed",
        }
    }

    /// Whether [`Shard::acknowledged`] is allowed now; lets a caller refuse a misplaced
    /// Acknowledged before starting anything.
    pub fn check_acknowledge(&self) -> Result<(), ProtocolError> {
        match self.phase {
            Phase::Recovered { .. } | Phase::Committed { .. } => Ok(()),
            Phase::Idle => Err(ProtocolError::AcknowledgedWithoutCommit),
            Phase::Failed => Err(ProtocolError::Failed),
        }
    }

    /// StartCommit: writes the checkpoint and, if the transaction read documents and
    /// triggers are configured, its trigger variables, in one WriteBatch. Returns once
    /// the write is durable (per the configured [`Durability`]).
    pub async fn start_commit(
        &mut self,
        checkpoint: Checkpoint,
        stats: &[BindingStats],
    ) -> Result<Commit, ShardError> {
        match self.phase {
            Phase::Idle | Phase::Recovered { pending: false } => {}
            Phase::Recovered { pending: true } => {
                return Err(ProtocolError::CommitBeforeRecoveryAcknowledged.into());
            }
            Phase::Committed { .. } => return Err(ProtocolError::CommitBeforeAcknowledged.into()),
            Phase::Failed => return Err(ProtocolError::Failed.into()),
        }

        let variables = if self.triggers.is_empty() {
            None
        } else {
            let run_id = uuid::Uuid::new_v4().to_string();
            Variables::from_stats(&self.materialization, stats, run_id)?
        };
        let params = variables.as_ref().map(Variables::to_params);

        let store = self.store.clone();
        // Until the write is known to have landed (or not), the store's state is unknown.
        self.phase = Phase::Failed;
        crash_point!("start_commit.before_write");
        blocking(move || store.commit(&checkpoint, params.as_ref())).await??;
        crash_point!("start_commit.after_write");
        self.phase = Phase::Committed {
            params: variables.is_some(),
        };
        self.pending_run_id = variables.as_ref().map(|v| v.flow_run_id.clone());
        Ok(Commit { variables })
    }

    /// Acknowledged: the last commit (or the recovered checkpoint) is durable everywhere.
    /// Delivers its triggers, if any, then deletes their variables. Returns when every
    /// webhook is delivered; if one fails for good, the variables stay persisted and the
    /// shard must be reopened (the next start fires them again).
    pub async fn acknowledged(&mut self) -> Result<Acknowledgement, ShardError> {
        self.check_acknowledge()?;
        let pending = self.has_pending_triggers();
        // Recovered params may have been delivered before the crash: say so to receivers.
        let reason = if matches!(self.phase, Phase::Recovered { .. }) {
            SendReason::RecoveryRefire
        } else {
            SendReason::FirstSend
        };
        if !pending {
            self.phase = Phase::Idle;
            self.pending_run_id = None;
            return Ok(Acknowledgement {
                variables: None,
                delivered: Vec::new(),
            });
        }
        self.phase = Phase::Failed;

        // Read back what StartCommit persisted: delivery uses exactly the durable copy.
        let store = self.store.clone();
        let params = blocking(move || store.trigger_params()).await??;
        let Some(params) = params else {
            // Unreachable unless the store was edited underneath us; nothing to send.
            tracing::warn!("trigger params expected but absent from the store");
            self.phase = Phase::Idle;
            self.pending_run_id = None;
            return Ok(Acknowledgement {
                variables: None,
                delivered: Vec::new(),
            });
        };
        let variables = Variables::from_params(params)?;

        let delivered = self
            .deliverer
            .deliver_with_reason(&self.triggers, &variables, reason)
            .await
            .map_err(|source| ShardError::Delivery {
                flow_run_id: variables.flow_run_id.clone(),
                source,
            })?;

        crash_point!("acknowledged.before_delete");
        let store = self.store.clone();
        blocking(move || store.clear_trigger_params()).await??;
        self.phase = Phase::Idle;
        self.pending_run_id = None;
        Ok(Acknowledgement {
            variables: Some(variables),
            delivered,
        })
    }
}

/// Runs blocking store work off the async executor.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ShardError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| ShardError::Blocking(err.to_string()))
}
