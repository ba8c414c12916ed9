//! The commit / acknowledge / recover state machine of one shard.

use crate::backlog::{
    Backlog, BacklogError, BacklogHandle, BacklogSetup, BacklogStatus, LedgerRetention,
};
use crate::crash::crash_point;
use crate::shard_store::ShardStore;
use crate::store::{Durability, StoreError};
use crate::store_thread::StoreTaskError;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;
use triggers::{
    AttemptObserver, Delivered, Deliverer, DeliveryError, Materialization, NetworkPolicy,
    ParamsError, RetryBackoff, SendReason, Triggers, Variables, VariablesError,
};
use triggers_proto::{BindingStats, Checkpoint};

/// What a shard needs besides its store directory.
///
/// Built with [`ShardConfig::new`] and the `with_` methods (fields may grow, so it is not
/// built from a struct literal outside this crate); its fields stay readable.
#[derive(Clone)]
#[non_exhaustive]
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
    /// Whether commits wait for webhooks or a persisted backlog decouples them.
    pub delivery: DeliveryMode,
    /// How long finished deliveries stay in the ledger (decoupled delivery).
    pub ledger: LedgerRetention,
    /// Told of every webhook attempt (metrics, say); `None` for nothing.
    pub attempt_observer: Option<Arc<dyn AttemptObserver>>,
}

impl ShardConfig {
    /// A shard of `materialization` firing `triggers`, with the production defaults:
    /// synced commits ([`Durability::Synced`]), the default [`RetryBackoff`], public
    /// destinations only ([`NetworkPolicy::PUBLIC_ONLY`]), decoupled delivery with a
    /// backlog of [`DEFAULT_BACKLOG_LIMIT`] entries per trigger, the default ledger
    /// retention, and no attempt observer.
    pub fn new(materialization: Materialization, triggers: Arc<Triggers>) -> Self {
        Self {
            materialization,
            triggers,
            durability: Durability::Synced,
            backoff: RetryBackoff::default(),
            network: NetworkPolicy::PUBLIC_ONLY,
            delivery: DeliveryMode::default(),
            ledger: LedgerRetention::default(),
            attempt_observer: None,
        }
    }

    /// The same, making StartCommit's write durable as `durability` says.
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// The same, with `backoff` between delivery attempts.
    pub fn with_backoff(mut self, backoff: RetryBackoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The same, letting webhooks reach what `network` allows.
    pub fn with_network(mut self, network: NetworkPolicy) -> Self {
        self.network = network;
        self
    }

    /// The same, delivering as `delivery` says.
    pub fn with_delivery(mut self, delivery: DeliveryMode) -> Self {
        self.delivery = delivery;
        self
    }

    /// The same, keeping finished deliveries as `ledger` says.
    pub fn with_ledger(mut self, ledger: LedgerRetention) -> Self {
        self.ledger = ledger;
        self
    }

    /// The same, telling `observer` of every webhook attempt.
    pub fn with_attempt_observer(mut self, observer: Arc<dyn AttemptObserver>) -> Self {
        self.attempt_observer = Some(observer);
        self
    }
}

/// How long a planned close lets webhook requests in flight finish by default
/// ([`Shard::close_within`]; the sidecar's `--shutdown-grace`).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Default [`DeliveryMode::Decoupled`] backlog limit, in entries per trigger.
pub const DEFAULT_BACKLOG_LIMIT: usize = 1000;

/// How webhooks relate to the transaction pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    /// Acknowledged delivers the transaction's webhooks and returns when all are
    /// accepted, so the next transaction waits on the slowest endpoint. One persisted key
    /// (`trigger-params`). The reference design.
    Waiting,
    /// Acknowledged hands the transaction's webhooks to a persisted per-trigger backlog,
    /// written in StartCommit's WriteBatch, that workers drain as each trigger's `drain`
    /// mode says; commits go on. StartCommit waits only when a backlog holds
    /// `backlog_limit` entries (backpressure). The default.
    Decoupled {
        /// Entries a trigger's backlog may hold before StartCommit waits (at least 1).
        backlog_limit: usize,
    },
}

impl Default for DeliveryMode {
    fn default() -> Self {
        DeliveryMode::Decoupled {
            backlog_limit: DEFAULT_BACKLOG_LIMIT,
        }
    }
}

/// What [`Shard::open`] recovered.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovery {
    /// The last committed checkpoint (empty for a new store). Resume reading from here.
    pub checkpoint: Checkpoint,
    /// Variables of a committed transaction whose webhooks were not delivered before the
    /// last stop (the oldest, when a backlog holds several). They fire on the first
    /// [`Shard::acknowledged`].
    pub pending: Option<Variables>,
    /// Backlog entries recovered, across every trigger (decoupled delivery, or a waiting
    /// shard opening a store a decoupled one wrote).
    pub backlog: usize,
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
    /// The variables whose webhooks were sent (waiting) or queued (decoupled), if any.
    pub variables: Option<Variables>,
    /// The webhooks delivered, in config order (waiting delivery only).
    pub delivered: Vec<Delivered>,
    /// In decoupled delivery, the backlog entries waiting after this acknowledgement,
    /// across every trigger; `None` in waiting delivery.
    pub queued: Option<usize>,
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
    /// StartCommit arrived before the recovered checkpoint was acknowledged. Refused
    /// whether or not anything is pending, so a caller that skips the recovered
    /// Acknowledged learns it on its first run, not on the run after a crash (where the
    /// commit would overwrite the recovered trigger variables).
    #[error(
        "StartCommit before the recovered checkpoint was acknowledged: call Acknowledged \
         once after Open (it delivers any triggers a crash left pending)"
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
    /// Decoupled delivery stopped: a webhook failed for good (naming the trigger, its
    /// status and the backlog depth), or a delivered entry could not be deleted.
    #[error(transparent)]
    Backlog(#[from] BacklogError),
    /// Store work did not finish: it panicked, or its thread could not start or has
    /// stopped.
    #[error("store task did not complete: {0}")]
    Blocking(#[source] StoreTaskError),
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
///
/// Call [`Shard::close`] (and drop any [`BacklogHandle`]) before reopening the same store
/// in this process: dropping a shard stops its delivery workers too, but they release the
/// store a moment later, on the runtime's threads, and an immediate reopen would find it
/// locked.
pub struct Shard {
    /// The store, behind its thread.
    store: ShardStore,
    materialization: Materialization,
    triggers: Arc<Triggers>,
    deliverer: Deliverer,
    phase: Phase,
    /// flow_run_id of the persisted, undelivered trigger params, if any.
    pending_run_id: Option<String>,
    mode: DeliveryMode,
    /// Decoupled delivery's engine; in waiting delivery, only while a backlog left by a
    /// decoupled run drains at the recovered Acknowledged.
    backlog: Option<Backlog>,
    /// The next commit sequence number to hand out.
    next_seq: u64,
    /// Variables of the commit awaiting Acknowledged (decoupled delivery).
    committed: Option<Variables>,
    /// Names the shard in delivery spans: its store directory.
    label: String,
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
    /// a crash left undelivered (the single pending transaction of waiting delivery, or
    /// every trigger's backlog of decoupled delivery; a store written in one layout opens
    /// in the other mode without losing or repeating a transaction).
    ///
    /// Cancel-safe: the store work runs on the shard's store thread to its end even if
    /// this future is dropped (what it writes, moving a waiting store's params into the
    /// backlog or resetting interrupted deliveries, is one step each), and dropping the
    /// future waits for that work (blocking the dropping thread meanwhile) and closes the
    /// store, so it can be opened again at once.
    pub async fn open(
        path: impl Into<PathBuf>,
        config: ShardConfig,
    ) -> Result<(Self, Recovery), ShardError> {
        let path = path.into();
        let path_label = path.display().to_string();
        let durability = config.durability;
        let decoupled = matches!(config.delivery, DeliveryMode::Decoupled { .. });
        let triggers = u32::try_from(config.triggers.len()).unwrap_or(u32::MAX);
        let coalesced: Vec<bool> = config
            .triggers
            .iter()
            .map(|t| t.drain().coalesces())
            .collect();
        let store = ShardStore::open(path, durability).await?;
        let checkpoint = store.checkpoint().await?;
        let (commit_seq, params) = store
            .run(move |store| {
                let mut commit_seq = store.commit_seq()?;
                let mut params = store.trigger_params()?;
                if let (true, Some(legacy)) = (decoupled && triggers > 0, &mut params) {
                    // Waiting delivery's single key becomes one entry per trigger, numbered if
                    // a version-1 store did not number it.
                    if legacy.last_commit_seq == 0 {
                        commit_seq += 1;
                        legacy.first_commit_seq = commit_seq;
                        legacy.last_commit_seq = commit_seq;
                    }
                    store.move_params_to_backlog(legacy, triggers)?;
                    params = None;
                }
                Ok::<_, StoreError>((commit_seq, params))
            })
            .await?
            .map_err(ShardError::Store)?;
        // Either mode drains a backlog, so either resets what a stop interrupted.
        let backlog = crate::backlog::recover(&store, coalesced).await?;
        let last_sent = store.last_sent_ms(triggers).await?;
        let recovered = Recovered {
            checkpoint,
            commit_seq,
            params,
            backlog,
            last_sent,
        };

        let pending = recovered.params.map(Variables::from_params).transpose()?;
        let mut entries = Vec::new();
        for entry in recovered.backlog {
            if entry.trigger >= triggers {
                tracing::warn!(
                    trigger = entry.trigger,
                    first_commit_seq = entry.key_seq,
                    "backlog entry of a trigger the config no longer has; it stays in the \
                     store and is not sent"
                );
                continue;
            }
            let variables = Variables::from_params(entry.params.clone())?;
            entries.push((entry, variables));
        }
        let backlog_len = entries.len();
        let first_backlogged = entries.first().map(|(_, v)| v.clone());
        if let Some(variables) = &pending {
            tracing::info!(
                flow_run_id = %variables.flow_run_id,
                "recovered trigger params of a committed transaction; they fire on the next Acknowledged"
            );
        }
        if backlog_len > 0 {
            tracing::info!(
                entries = backlog_len,
                "recovered a webhook backlog; it drains after the next Acknowledged"
            );
        }

        let mut deliverer = Deliverer::with_policy(config.backoff, config.network)
            .map_err(ShardError::HttpClient)?;
        if let Some(observer) = &config.attempt_observer {
            deliverer = deliverer.with_observer(observer.clone());
        }
        let shard_label = path_label.clone();
        let backlog = match config.delivery {
            DeliveryMode::Decoupled { backlog_limit } => Some(backlog_limit),
            // A waiting shard drains a decoupled run's backlog once, at recovery.
            DeliveryMode::Waiting if backlog_len > 0 => Some(usize::MAX),
            DeliveryMode::Waiting => None,
        }
        .map(|limit| {
            Backlog::start(
                BacklogSetup {
                    store: store.clone(),
                    triggers: config.triggers.clone(),
                    deliverer: deliverer.clone(),
                    limit,
                    retention: config.ledger,
                    shard: shard_label.clone(),
                },
                entries,
                recovered.last_sent,
            )
        });
        let pending_now = pending.is_some() || backlog_len > 0;
        let shard = Shard {
            store,
            materialization: config.materialization,
            triggers: config.triggers,
            deliverer,
            phase: Phase::Recovered {
                pending: pending_now,
            },
            pending_run_id: pending
                .as_ref()
                .or(first_backlogged.as_ref())
                .map(|v| v.flow_run_id.clone()),
            mode: config.delivery,
            backlog,
            next_seq: recovered.commit_seq + 1,
            committed: None,
            label: shard_label,
        };
        Ok((
            shard,
            Recovery {
                checkpoint: recovered.checkpoint,
                pending: pending.or(first_backlogged),
                backlog: backlog_len,
            },
        ))
    }

    /// The delivery mode the shard runs in.
    pub fn delivery_mode(&self) -> DeliveryMode {
        self.mode
    }

    /// The backlog's state (decoupled delivery), for status reports.
    pub fn backlog_status(&self) -> Option<BacklogStatus> {
        self.backlog.as_ref().map(|b| b.handle().status())
    }

    /// A handle that reports the backlog's state without borrowing the shard, so status
    /// can be read while a StartCommit waits for room.
    pub fn backlog_handle(&self) -> Option<BacklogHandle> {
        self.backlog.as_ref().map(Backlog::handle)
    }

    /// Waits until every acknowledged webhook is delivered (decoupled delivery; returns
    /// at once otherwise), or fails with the error that stopped delivery. For a consumer
    /// at the end of its input, and for tests.
    ///
    /// Cancel-safe: it only reads; a dropped wait leaves the shard as it was.
    pub async fn drained(&self) -> Result<(), ShardError> {
        match &self.backlog {
            Some(backlog) => Ok(backlog.drained().await?),
            None => Ok(()),
        }
    }

    /// Stops delivery workers and closes the store, so it can be reopened at once.
    /// Requests in flight are cut off; they and every other undelivered webhook stay
    /// persisted and fire on the next start. [`Shard::close_within`] lets them finish.
    ///
    /// Cancel safety: as [`Shard::close_within`].
    pub async fn close(self) {
        self.close_within(Duration::ZERO).await;
    }

    /// Closes the shard as [`Shard::close`] does, but lets the webhook requests in flight
    /// finish (retries included) for up to `grace` first: no new ones start, so a planned
    /// stop does not leave them to be sent again as recovery re-fires. Every waiter on
    /// the backlog ([`BacklogHandle::drained`]) ends at once with
    /// [`crate::BacklogError::Closed`].
    ///
    /// Cancel safety: nothing is lost, but a dropped close no longer bounds the wait: the
    /// workers finish their requests in flight in the background (none new start) and
    /// only then let go of the store, so a reopen before that finds it locked.
    pub async fn close_within(mut self, grace: Duration) {
        if let Some(backlog) = self.backlog.take() {
            backlog.shutdown(grace).await;
        }
        // Store work the stopped workers had queued still holds the store. The thread
        // runs work in order, so once this runs, all of that has finished and let go.
        self.store.settle().await;
    }

    /// Whether trigger variables are persisted and await delivery.
    pub fn has_pending_triggers(&self) -> bool {
        matches!(
            self.phase,
            Phase::Recovered { pending: true } | Phase::Committed { params: true }
        ) || self.backlog.as_ref().is_some_and(|b| b.depth() > 0)
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
    ///
    /// Cancel safety: dropped while it waits for backlog room (backpressure), it leaves
    /// the shard as it was, to take the same transaction again. Dropped during its store
    /// write, the write still lands or not as a whole, but the caller cannot know which:
    /// the shard is failed ([`ProtocolError::Failed`]; its backlog, `drained` included,
    /// says it must be reopened), and a reopen recovers whatever landed.
    pub async fn start_commit(
        &mut self,
        checkpoint: Checkpoint,
        stats: &[BindingStats],
    ) -> Result<Commit, ShardError> {
        match self.phase {
            Phase::Idle => {}
            Phase::Recovered { .. } => {
                return Err(ProtocolError::CommitBeforeRecoveryAcknowledged.into());
            }
            Phase::Committed { .. } => return Err(ProtocolError::CommitBeforeAcknowledged.into()),
            Phase::Failed => return Err(ProtocolError::Failed.into()),
        }

        // A stopped backlog refuses commits until an operator retries or skips the
        // failed delivery (or the shard is reopened); the shard itself is intact.
        if let Some(failure) = self.backlog.as_ref().and_then(Backlog::failure) {
            return Err(failure.into());
        }

        let variables = if self.triggers.is_empty() {
            None
        } else {
            let run_id = uuid::Uuid::new_v4().to_string();
            Variables::from_stats(&self.materialization, stats, run_id)?
                .map(|v| v.with_commit_seq(self.next_seq))
        };

        if let (DeliveryMode::Decoupled { .. }, Some(backlog), Some(_)) =
            (&self.mode, &self.backlog, &variables)
        {
            backlog.wait_for_room().await?;
        }

        // Until the write is known to have landed (or not), the store's state is unknown.
        self.phase = Phase::Failed;
        match (&self.mode, &self.backlog) {
            (DeliveryMode::Decoupled { .. }, Some(backlog)) => {
                backlog.commit(checkpoint, variables.as_ref()).await?;
            }
            _ => {
                let params = variables.as_ref().map(Variables::to_params);
                crash_point!("start_commit.before_write");
                self.store.commit(checkpoint, params).await?;
            }
        }
        crash_point!("start_commit.after_write");
        if variables.is_some() {
            self.next_seq += 1;
        }
        self.committed.clone_from(&variables);
        self.phase = Phase::Committed {
            params: variables.is_some(),
        };
        self.pending_run_id = variables.as_ref().map(|v| v.flow_run_id.clone());
        Ok(Commit { variables })
    }

    /// Acknowledged: the last commit (or the recovered checkpoint) is durable everywhere.
    /// Waiting delivery: delivers its triggers, if any, then deletes their variables,
    /// and returns when every webhook is delivered; if one fails for good, the variables
    /// stay persisted and the shard must be reopened (the next start fires them again).
    /// Decoupled delivery: marks the transaction's backlog entries sendable and returns
    /// at once; a failure shows later and can be retried or skipped ([`BacklogHandle`]).
    ///
    /// Cancel safety: in decoupled delivery it does not wait, so there is nothing to
    /// drop. In waiting delivery a drop during delivery or the delete leaves the shard
    /// failed ([`ProtocolError::Failed`]) with its params persisted: reopen it, and they
    /// fire again.
    pub async fn acknowledged(&mut self) -> Result<Acknowledgement, ShardError> {
        self.check_acknowledge()?;
        if let Some(backlog) = &self.backlog {
            if let Some(failure) = backlog.failure() {
                return Err(failure.into());
            }
            let newest = match self.phase {
                Phase::Recovered { .. } => backlog.newest_seq(),
                _ => self.committed.as_ref().map_or(0, |v| v.last_commit_seq),
            };
            backlog.acknowledge(newest);
            if let DeliveryMode::Decoupled { .. } = self.mode {
                self.phase = Phase::Idle;
                self.pending_run_id = None;
                return Ok(Acknowledgement {
                    variables: self.committed.take(),
                    delivered: Vec::new(),
                    queued: Some(backlog.depth()),
                });
            }
            // Waiting delivery drains a backlog a decoupled run left, then goes on as usual.
            self.phase = Phase::Failed;
            backlog.drained().await?;
            if let Some(backlog) = self.backlog.take() {
                // Drained: nothing is in flight.
                backlog.shutdown(Duration::ZERO).await;
            }
            let params_pending = self.store.trigger_params().await?.is_some();
            self.phase = Phase::Recovered {
                pending: params_pending,
            };
        }
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
                queued: None,
            });
        }
        self.phase = Phase::Failed;

        // Read back what StartCommit persisted: delivery uses exactly the durable copy.
        let params = self.store.trigger_params().await?;
        let Some(params) = params else {
            // Unreachable unless the store was edited underneath us; nothing to send.
            tracing::warn!("trigger params expected but absent from the store");
            self.phase = Phase::Idle;
            self.pending_run_id = None;
            return Ok(Acknowledgement {
                variables: None,
                delivered: Vec::new(),
                queued: None,
            });
        };
        let variables = Variables::from_params(params)?;

        let delivered = self
            .deliverer
            .deliver_with_reason(&self.triggers, &variables, reason)
            .instrument(tracing::warn_span!("shard", shard = %self.label))
            .await
            .map_err(|source| ShardError::Delivery {
                flow_run_id: variables.flow_run_id.clone(),
                source,
            })?;

        crash_point!("acknowledged.before_delete");
        self.store.delete_delivered_params().await?;
        self.phase = Phase::Idle;
        self.pending_run_id = None;
        Ok(Acknowledgement {
            variables: Some(variables),
            delivered,
            queued: None,
        })
    }
}

/// What [`Shard::open`] read from the store, on its blocking thread.
struct Recovered {
    checkpoint: Checkpoint,
    commit_seq: u64,
    params: Option<triggers_proto::TriggerParams>,
    backlog: Vec<crate::store::StoredEntry>,
    last_sent: Vec<Option<u64>>,
}
