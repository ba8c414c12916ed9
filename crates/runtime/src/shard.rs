//! The commit / acknowledge / recover state machine of one shard: the protocol (which
//! call may come when) and the phase; what a commit writes and how webhooks go out is
//! its delivery engine's ([`crate::engine`]), and every layout migration is
//! [`crate::migrations`]'.

use crate::backlog::{BacklogHandle, BacklogSetup, BacklogStatus, Recovered};
use crate::config::{DeliveryMode, ShardConfig};
use crate::crash::crash_point;
use crate::engine::{Acknowledge, Engine};
use crate::error::{ProtocolError, ShardError};
use crate::shard_store::ShardStore;
use crate::store::KeyOp;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use triggers::{Delivered, Deliverer, Materialization, Triggers, Variables};
use triggers_proto::{BindingStats, Checkpoint};

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

/// Where a shard is in its transaction lifecycle, for status reports. Exhaustive on
/// purpose: a host (the sidecar's wire enum, say) maps every phase, and a new one must
/// make it decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Opened; the recovered checkpoint's Acknowledged is due.
    Recovered,
    /// Between transactions.
    Idle,
    /// StartCommit's write is durable; its Acknowledged is due.
    Committed,
    /// A commit is prepared for the host's WriteBatch ([`Shard::prepare_commit`]): the
    /// host writes it, then says whether it landed.
    HostWriting,
    /// An error left the store in an unknown state, or a delivery failed for good:
    /// reopen the shard.
    Failed,
}

impl Phase {
    /// The phase's name, as status prints it: `recovered`, `idle`, `committed`,
    /// `host-writing` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Recovered => "recovered",
            Phase::Idle => "idle",
            Phase::Committed => "committed",
            Phase::HostWriting => "host-writing",
            Phase::Failed => "failed",
        }
    }
}

/// Where the shard is in its lifecycle, with what the phase alone does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Opened; the recovered checkpoint's Acknowledged is due. `pending`: trigger params
    /// were recovered.
    Recovered { pending: bool },
    /// Between transactions.
    Idle,
    /// StartCommit's write is durable; its Acknowledged is due. `params`: it wrote
    /// trigger params.
    Committed { params: bool },
    /// The commit numbered `token` is prepared for the host's WriteBatch.
    HostWriting { token: u64 },
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
    /// Writes the commit and delivers, as the delivery mode says.
    engine: Engine,
    state: State,
    /// flow_run_id of the persisted, undelivered trigger params, if any.
    pending_run_id: Option<String>,
    /// The next commit sequence number to hand out.
    next_seq: u64,
    /// Variables of the commit awaiting Acknowledged.
    committed: Option<Variables>,
    /// Start (to the millisecond) of the last transaction given a `run_id` in this
    /// process: the next one gets a later one, so receivers that dedupe on `run_id` never
    /// drop a distinct transaction that started in the same millisecond.
    last_run_at: Option<SystemTime>,
    /// Commits prepared for the host's WriteBatch so far: each [`PreparedCommit`]'s
    /// token, so only the awaited one is reported.
    host_writes: u64,
}

/// A StartCommit's writes for the host to make in its own WriteBatch (see
/// [`Shard::prepare_commit`]). Report it with [`Shard::commit_written`] or
/// [`Shard::commit_not_written`]; until then the webhooks it would merge into are not
/// sent.
pub struct PreparedCommit {
    token: u64,
    plan: crate::engine::HostPlan,
    variables: Option<Variables>,
    run_at: SystemTime,
}

impl PreparedCommit {
    /// The runtime's writes, with full keys (its keyspace's prefix included): the commit
    /// sequence number and each trigger's backlog entry, or waiting delivery's trigger
    /// variables. Empty when the transaction fires nothing.
    pub fn ops(&self) -> &[KeyOp] {
        self.plan.ops()
    }

    /// Adds [`PreparedCommit::ops`] to the host's `batch`.
    pub fn write_into(&self, batch: &mut rocksdb::WriteBatch) {
        for op in self.ops() {
            op.add_to(batch);
        }
    }

    /// The transaction's trigger variables, when it fires triggers.
    pub fn variables(&self) -> Option<&Variables> {
        self.variables.as_ref()
    }
}

impl std::fmt::Debug for PreparedCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedCommit")
            .field("token", &self.token)
            .field("ops", &self.ops().len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("store", &self.store)
            .field("materialization", &self.materialization.name)
            .field("triggers", &self.triggers.len())
            .field("phase", &self.state)
            .finish()
    }
}

impl Shard {
    /// Opens the shard's store and recovers its last checkpoint and any trigger variables
    /// a crash left undelivered (the single pending transaction of waiting delivery, or
    /// every trigger's backlog of decoupled delivery; a store written in one layout opens
    /// in the other mode without losing or repeating a transaction).
    ///
    /// Cancel-safe: the store work runs on the shard's store lane to its end even if
    /// this future is dropped (what it writes, moving a waiting store's params into the
    /// backlog or resetting interrupted deliveries, is one step each), and dropping the
    /// future waits for that work (blocking the dropping thread meanwhile) and closes the
    /// store, so it can be opened again at once.
    ///
    /// A trigger whose `collections` filter names no collection of the materialization's
    /// bindings could never fire: the open fails first with [`ShardError::Config`],
    /// touching nothing.
    pub async fn open(
        path: impl Into<PathBuf>,
        config: ShardConfig,
    ) -> Result<(Self, Recovery), ShardError> {
        let path = path.into();
        let label = path.display().to_string();
        check_config(&config).map_err(ShardError::Config)?;
        let store = ShardStore::open(path, config.durability).await?;
        Self::recover(store, label, config).await
    }

    /// Opens the shard on `store`, a store in a RocksDB the host opened
    /// ([`crate::Store::in_host_db`], under its own keyspace), and recovers as
    /// [`Shard::open`] does. The store moves to the shard's store lane; the host keeps
    /// its own handle on the DB for its own keys. The store's durability applies, not
    /// `config.durability`.
    ///
    /// Cancel-safe as [`Shard::open`].
    pub async fn open_in(
        store: crate::Store,
        config: ShardConfig,
    ) -> Result<(Self, Recovery), ShardError> {
        let label = format!(
            "{}#{}",
            store.path().display(),
            String::from_utf8_lossy(store.keyspace().prefix()).escape_debug()
        );
        check_config(&config).map_err(ShardError::Config)?;
        let store = ShardStore::from_store(store)?;
        Self::recover(store, label, config).await
    }

    /// Recovers a shard from its opened store (see [`Shard::open`]).
    async fn recover(
        store: ShardStore,
        label: String,
        config: ShardConfig,
    ) -> Result<(Self, Recovery), ShardError> {
        let names: Vec<String> = config
            .triggers
            .iter()
            .map(|t| t.name().to_string())
            .collect();
        let coalesced: Vec<String> = config
            .triggers
            .iter()
            .filter(|t| t.drain().coalesces())
            .map(|t| t.name().to_string())
            .collect();
        let checkpoint = store.checkpoint().await?;
        let layout =
            crate::migrations::on_open(&store, config.delivery, config.triggers.clone()).await?;
        let backlog = crate::backlog::recover(&store, coalesced).await?;
        let last_sent_ms = store.last_sent_ms(names.clone()).await?;

        let pending = layout.params.map(Variables::from_params).transpose()?;
        let (mut entries, mut orphans) = (Vec::new(), Vec::new());
        for entry in backlog {
            if !names.contains(&entry.trigger) {
                tracing::warn!(
                    trigger_name = %entry.trigger,
                    first_commit_seq = entry.first_commit_seq,
                    "backlog entry of a trigger the config no longer has; it stays in the \
                     store, is not sent, and can be skipped by an operator"
                );
                orphans.push(entry);
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

        let mut deliverer = match &config.deliverer {
            // Shared with the process's other shards: one client, one connection pool.
            Some(shared) => shared.clone(),
            None => Deliverer::with_policy(config.backoff, config.network)
                .map_err(ShardError::HttpClient)?,
        };
        if let Some(observer) = &config.attempt_observer {
            deliverer = deliverer.with_observer(observer.clone());
        }
        let setup = BacklogSetup {
            store: store.clone(),
            triggers: config.triggers.clone(),
            deliverer,
            retention: config.ledger,
            shard: label,
        };
        let recovered = Recovered {
            entries,
            orphans,
            last_sent_ms,
        };
        let engine = Engine::start(config.delivery, setup, recovered);
        let shard = Shard {
            store,
            materialization: config.materialization,
            triggers: config.triggers,
            engine,
            state: State::Recovered {
                pending: pending.is_some() || backlog_len > 0,
            },
            pending_run_id: pending
                .as_ref()
                .or(first_backlogged.as_ref())
                .map(|v| v.flow_run_id.clone()),
            next_seq: layout.commit_seq + 1,
            committed: None,
            last_run_at: None,
            host_writes: 0,
        };
        Ok((
            shard,
            Recovery {
                checkpoint,
                pending: pending.or(first_backlogged),
                backlog: backlog_len,
            },
        ))
    }

    /// The delivery mode the shard runs in.
    pub fn delivery_mode(&self) -> DeliveryMode {
        self.engine.mode()
    }

    /// The backlog's state (decoupled delivery), for status reports.
    pub fn backlog_status(&self) -> Option<BacklogStatus> {
        self.engine.status()
    }

    /// A handle that reports the backlog's state without borrowing the shard, so status
    /// can be read while a StartCommit waits for room.
    pub fn backlog_handle(&self) -> Option<BacklogHandle> {
        self.engine.handle()
    }

    /// Waits until every acknowledged webhook is delivered (decoupled delivery; returns
    /// at once otherwise), or fails with the error that stopped delivery. For a consumer
    /// at the end of its input, and for tests.
    ///
    /// Cancel-safe: it only reads; a dropped wait leaves the shard as it was.
    pub async fn drained(&self) -> Result<(), ShardError> {
        Ok(self.engine.drained().await?)
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
    pub async fn close_within(self, grace: Duration) {
        let Shard { store, engine, .. } = self;
        engine.close(grace).await;
        // Store work the stopped workers had queued still holds the store. The thread
        // runs work in order, so once this returns, all of that has finished and let go.
        store.settle().await;
    }

    /// Whether trigger variables are persisted and await delivery.
    pub fn has_pending_triggers(&self) -> bool {
        self.state.pending() || self.engine.queued() > 0
    }

    /// The flow_run_id of persisted trigger params awaiting delivery, if any.
    pub fn pending_flow_run_id(&self) -> Option<&str> {
        self.pending_run_id.as_deref()
    }

    /// The lifecycle phase, for status reports.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Recovered { .. } => Phase::Recovered,
            State::Idle => Phase::Idle,
            State::Committed { .. } => Phase::Committed,
            State::HostWriting { .. } => Phase::HostWriting,
            State::Failed => Phase::Failed,
        }
    }

    /// Whether [`Shard::acknowledged`] is allowed now; lets a caller refuse a misplaced
    /// Acknowledged before starting anything.
    pub fn check_acknowledge(&self) -> Result<(), ProtocolError> {
        match self.state {
            State::Recovered { .. } | State::Committed { .. } => Ok(()),
            State::Idle => Err(ProtocolError::AcknowledgedWithoutCommit),
            State::HostWriting { .. } => Err(ProtocolError::HostWriteUnreported),
            State::Failed => Err(ProtocolError::Failed),
        }
    }

    /// StartCommit: writes the checkpoint and, if the transaction read documents and
    /// triggers are configured, its trigger variables, in one WriteBatch. Returns once
    /// the write is durable (per the configured [`crate::Durability`]).
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
        self.start_commit_at(checkpoint, stats, SystemTime::now())
            .await
    }

    /// StartCommit of a transaction that started at `started_at`: as
    /// [`Shard::start_commit`] (which passes the time of the call), and the transaction's
    /// `run_id` (Flow's variable) is `started_at`, to the millisecond. A caller passes when
    /// it read the transaction's first document (Flow takes its first Load request). A
    /// start not after the previous transaction's (the same millisecond, or a clock that
    /// stepped back) is moved to one millisecond after it, so every transaction of the
    /// shard in this process has its own `run_id`.
    ///
    /// Cancel safety: as [`Shard::start_commit`].
    pub async fn start_commit_at(
        &mut self,
        checkpoint: Checkpoint,
        stats: &[BindingStats],
        started_at: SystemTime,
    ) -> Result<Commit, ShardError> {
        let (variables, run_at) = self.begin_commit(stats, started_at)?;
        self.engine.wait_for_room(variables.as_ref()).await?;

        // Until the write is known to have landed (or not), the store's state is unknown.
        self.state = State::Failed;
        crash_point!("start_commit.before_write");
        self.engine
            .start_commit(checkpoint, variables.as_ref())
            .await?;
        crash_point!("start_commit.after_write");
        Ok(self.end_commit(variables, run_at))
    }

    /// StartCommit whose write the host makes, in its own WriteBatch with its own keys
    /// (its checkpoint, its connector state): for a shard in the host's RocksDB
    /// ([`Shard::open_in`]). Returns the runtime's writes ([`PreparedCommit::write_into`]);
    /// the host adds them to its batch, writes it, and reports the outcome with
    /// [`Shard::commit_written`] (then Acknowledged as usual) or
    /// [`Shard::commit_not_written`]. The runtime writes nothing of its own, not even a
    /// checkpoint: the host's is the one. `started_at` is as in [`Shard::start_commit_at`].
    ///
    /// Until the host reports, the shard refuses every other call
    /// ([`ProtocolError::HostWriteUnreported`]); dropping the [`PreparedCommit`]
    /// unreported leaves it so (the write may or may not have landed): reopen the shard,
    /// which recovers whatever landed.
    ///
    /// Cancel safety: as [`Shard::start_commit`] before the write (dropped while it waits
    /// for backlog room, the shard is as it was); dropped while it prepares, the shard is
    /// failed and must be reopened (nothing was written).
    pub async fn prepare_commit(
        &mut self,
        stats: &[BindingStats],
        started_at: SystemTime,
    ) -> Result<PreparedCommit, ShardError> {
        let (variables, run_at) = self.begin_commit(stats, started_at)?;
        self.engine.wait_for_room(variables.as_ref()).await?;
        self.state = State::Failed;
        let plan = self.engine.prepare_commit(variables.as_ref()).await?;
        self.host_writes += 1;
        self.state = State::HostWriting {
            token: self.host_writes,
        };
        Ok(PreparedCommit {
            token: self.host_writes,
            plan,
            variables,
            run_at,
        })
    }

    /// The host wrote the batch holding `prepared`'s writes: the commit is durable (as
    /// the host's write is). Acknowledged is next, as after [`Shard::start_commit`].
    pub fn commit_written(&mut self, prepared: PreparedCommit) -> Result<Commit, ProtocolError> {
        self.check_prepared(&prepared)?;
        let PreparedCommit {
            plan,
            variables,
            run_at,
            ..
        } = prepared;
        plan.landed();
        Ok(self.end_commit(variables, run_at))
    }

    /// The host's batch holding `prepared`'s writes was not written (its write failed
    /// before anything landed): the shard is as before [`Shard::prepare_commit`], to take
    /// the transaction again. If the host cannot know whether it landed, it must not call
    /// this: it drops `prepared` and reopens the shard instead.
    pub fn commit_not_written(&mut self, prepared: PreparedCommit) -> Result<(), ProtocolError> {
        self.check_prepared(&prepared)?;
        drop(prepared);
        self.state = State::Idle;
        Ok(())
    }

    /// Whether `prepared` is the commit this shard awaits the host's report of.
    fn check_prepared(&self, prepared: &PreparedCommit) -> Result<(), ProtocolError> {
        match self.state {
            State::HostWriting { token } if token == prepared.token => Ok(()),
            _ => Err(ProtocolError::NotThisCommit),
        }
    }

    /// The checks of a StartCommit, and the transaction's variables (numbered, with
    /// their `run_id`) and the start it was given.
    // The public calls it serves return a `ShardError` too; boxing it here alone would
    // only move the allocation.
    #[allow(clippy::result_large_err)]
    fn begin_commit(
        &self,
        stats: &[BindingStats],
        started_at: SystemTime,
    ) -> Result<(Option<Variables>, SystemTime), ShardError> {
        match self.state {
            State::Idle => {}
            State::Recovered { .. } => {
                return Err(ProtocolError::CommitBeforeRecoveryAcknowledged.into());
            }
            State::Committed { .. } => return Err(ProtocolError::CommitBeforeAcknowledged.into()),
            State::HostWriting { .. } => return Err(ProtocolError::HostWriteUnreported.into()),
            State::Failed => return Err(ProtocolError::Failed.into()),
        }

        // A stopped backlog refuses commits until an operator retries or skips the
        // failed delivery (or the shard is reopened); the shard itself is intact.
        if let Some(failure) = self.engine.failure() {
            return Err(failure.into());
        }

        let run_at = run_start(started_at, self.last_run_at);
        let variables = if self.triggers.is_empty() {
            None
        } else {
            let flow_run_id = uuid::Uuid::new_v4().to_string();
            Variables::from_stats(&self.materialization, stats, flow_run_id)?.map(|v| {
                v.with_commit_seq(self.next_seq)
                    .with_run_id(triggers::run_id(run_at))
            })
        };
        Ok((variables, run_at))
    }

    /// A commit landed: its Acknowledged is due.
    fn end_commit(&mut self, variables: Option<Variables>, run_at: SystemTime) -> Commit {
        if variables.is_some() {
            self.next_seq += 1;
            self.last_run_at = Some(run_at);
        }
        self.committed.clone_from(&variables);
        self.state = State::Committed {
            params: variables.is_some(),
        };
        self.pending_run_id = variables.as_ref().map(|v| v.flow_run_id.clone());
        Commit { variables }
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
        if let Some(failure) = self.engine.failure() {
            return Err(failure.into());
        }
        let ack = Acknowledge {
            recovered: matches!(self.state, State::Recovered { .. }),
            pending: self.state.pending(),
            committed: self.committed.take(),
        };
        // Until delivery is done, the shard must be reopened if it stops halfway.
        self.state = State::Failed;
        let acked = self.engine.acknowledged(ack).await?;
        self.state = State::Idle;
        self.pending_run_id = None;
        Ok(Acknowledgement {
            variables: acked.variables,
            delivered: acked.delivered,
            queued: acked.queued,
        })
    }
}

/// The checks of a config against its materialization, before any store is touched.
fn check_config(config: &ShardConfig) -> Result<(), triggers::ValidationErrors> {
    triggers::validate_collections(
        &config.triggers,
        &config.materialization.binding_collections,
    )
}

/// The start a transaction's `run_id` names: `started_at` to the millisecond, or one
/// millisecond after the previous transaction's when it is not later.
fn run_start(started_at: SystemTime, last: Option<SystemTime>) -> SystemTime {
    let at = started_at
        .duration_since(UNIX_EPOCH)
        .map(|since| {
            UNIX_EPOCH + Duration::from_millis(u64::try_from(since.as_millis()).unwrap_or(0))
        })
        .unwrap_or(UNIX_EPOCH);
    match last {
        Some(last) if at <= last => last.checked_add(Duration::from_millis(1)).unwrap_or(last),
        _ => at,
    }
}

impl State {
    /// Whether the state says trigger variables are persisted and await delivery.
    fn pending(self) -> bool {
        matches!(
            self,
            State::Recovered { pending: true } | State::Committed { params: true }
        )
    }
}
