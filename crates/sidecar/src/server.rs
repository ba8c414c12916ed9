//! The gRPC service and its client: the lifecycle of a consumer's shards for a consumer
//! written in any language. The sidecar owns the shards' stores and their one trigger
//! config. Each per-shard call names its shard ([`crate::shard_id`]); the empty id is the
//! default shard, whose store is `--store` itself. Each shard has a slot of its own (its
//! lock, books and waiters), so one shard's delivery, reopen or close never waits on
//! another's; every shard sends with one HTTP client.
//!
//! Acknowledged starts delivery in a task that holds the shard, so the next StartCommit
//! waits for it (delivery before the next commit, as in the library), while the caller
//! may return at once and collect the outcome later with AwaitDelivery.
//!
//! Preview and TestFire use only the configured triggers and network policy: they work
//! before Open and beside a running delivery, and never take the shard.
//!
//! Only the shard's consumer may call it: [`Listener`] makes a Unix socket of mode 0600,
//! or a TCP socket on which every call must carry a [`BearerToken`]; [`connect`] sends
//! one.

use crate::access::RequireToken;
use crate::access::{BearerToken, SendToken, TOKEN_ENV};
use crate::consumer_state::ConsumerState;
use crate::metrics::Metrics;
use crate::shard_id::{SHARDS_DIR, ShardId};
use crate::unix_authority::AuthorityFix;
use crate::wire;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use triggers::{
    ConfigFormat, Deliverer, DeliveryError, PreviewError, PreviewVariables, ValidationError,
    validate,
};
use triggers_proto::DeliveryRecord;
use triggers_proto::sidecar::shard_sidecar_client::ShardSidecarClient;
use triggers_proto::sidecar::shard_sidecar_server::{ShardSidecar, ShardSidecarServer};
use triggers_proto::sidecar::{
    AcknowledgedRequest, AcknowledgedResponse, AwaitDeliveryRequest, AwaitDrainedRequest,
    AwaitDrainedResponse, BacklogQueue, CloseRequest, CloseResponse, DeliveryOutcome, DeliveryRef,
    ListDeliveriesRequest, ListDeliveriesResponse, OpenRequest, OpenResponse, OrphanedBacklog,
    PreviewRequest, PreviewResponse, ReplayDeliveriesRequest, ReplayDeliveriesResponse, ShardPhase,
    SkipDeliveryRequest, StartCommitRequest, StartCommitResponse, StateEntry, StateOp,
    StatusRequest, StatusResponse, TestFireRequest, TestFireResponse, TriggerOutcome,
    ValidateConfigRequest, ValidateConfigResponse, ValidationIssue,
};
use triggers_runtime::{
    BacklogError, BacklogHandle, DeliveryMode, Durability, Keyspace, LedgerError, ReplayRange,
    Shard, ShardConfig, ShardError, Store, StoreError,
};

/// How many finished deliveries AwaitDelivery can still be asked about.
const REMEMBERED_DELIVERIES: usize = 64;
/// Longest message of a gRPC status; longer ones are cut.
const MAX_STATUS_MESSAGE: usize = 2048;
/// Most issues a ValidateConfig reply lists (each cut to [`MAX_STATUS_MESSAGE`]); past
/// it, the last issue says how many more there are.
const MAX_VALIDATION_ISSUES: usize = 100;
/// How long a ValidateConfig, a Preview or the render of a TestFire may take (waiting for
/// a place included) before the caller gets
/// `DEADLINE_EXCEEDED`. They run off the async workers (on the blocking pool), so a slow
/// one never holds up Status or a delivery; the config bounds keep the work itself to
/// well under a second.
pub const CHECK_BUDGET: Duration = Duration::from_secs(10);
/// ValidateConfig and Preview calls that run at once; more wait (within
/// [`CHECK_BUDGET`]) for a place. A call past its budget keeps its place until its work
/// ends, so no more than this many threads ever do such work.
pub const CHECKS_AT_ONCE: usize = 2;

/// What the sidecar serves: the shards of one consumer process, each named by its Gazette
/// shard id (see [`crate::shard_id`]), all with one config.
#[non_exhaustive]
pub struct SidecarConfig {
    /// Directory of the default shard's store (the empty shard id); a named shard's is
    /// `store/shards/<its id, each '/' written as %2F>`.
    pub store: PathBuf,
    /// Every shard's config (materialization, triggers, durability, backoff, delivery
    /// mode): one config serves all the shards of the sidecar.
    pub shard: ShardConfig,
    /// How long webhook requests in flight may take to finish when the shard closes: at
    /// shutdown, and when Open reopens a live shard (so a restarted consumer never has
    /// its sidecar send a webhook again while the first request is still open). Those
    /// still running then are cut off, stay persisted and fire again at the next open.
    pub shutdown_grace: Duration,
    /// Keep nothing durable of its own: the consumer's store holds the sidecar's keys
    /// (see [`crate::consumer_state`]), each shard's in a store in memory of its own.
    /// `store` then only names the default socket.
    pub state_in_consumer: bool,
    /// Most named shards open at once ([`MAX_SHARDS`] by default); an Open of one more
    /// answers RESOURCE_EXHAUSTED.
    pub max_shards: usize,
}

impl SidecarConfig {
    /// A config for shards under `store` (the default shard's store itself), with the
    /// default shutdown grace ([`triggers_runtime::DEFAULT_SHUTDOWN_GRACE`]) and
    /// [`MAX_SHARDS`].
    pub fn new(store: impl Into<PathBuf>, shard: ShardConfig) -> Self {
        Self {
            store: store.into(),
            shard,
            shutdown_grace: triggers_runtime::DEFAULT_SHUTDOWN_GRACE,
            state_in_consumer: false,
            max_shards: MAX_SHARDS,
        }
    }
}

/// The gRPC service. Cheap to clone; clones share the shards.
#[derive(Clone)]
pub struct Sidecar {
    inner: Arc<Inner>,
}

/// Most named shards one sidecar holds open at once (the default shard aside): an Open of
/// one more answers RESOURCE_EXHAUSTED. A consumer process is assigned tens to hundreds
/// of shards; each open store has its own RocksDB and file handles.
pub const MAX_SHARDS: usize = 1024;

/// How often an Open looks its shard up again when a Close removed it while the Open
/// waited its turn, before it answers UNAVAILABLE.
const OPEN_RACES: usize = 8;

struct Inner {
    config: SidecarConfig,
    /// Every shard open here, or being opened, by id. The default shard's slot is always
    /// there (so it behaves as the sidecar of one shard always has); a named one enters
    /// at its Open and leaves at its Close or a failed Open. Never held across an await.
    slots: Mutex<HashMap<ShardId, Arc<Slot>>>,
    metrics: Arc<Metrics>,
    /// Places for ValidateConfig and Preview work (see [`CHECKS_AT_ONCE`]).
    checks: Arc<tokio::sync::Semaphore>,
}

/// One shard of the sidecar: its store, its books, what calls see of it.
struct Slot {
    id: ShardId,
    /// `None` until Open. Held for the length of a delivery.
    shard: Arc<tokio::sync::Mutex<Option<Shard>>>,
    books: Mutex<Books>,
    /// What calls that do not take the shard see of it; `None` before Open and after a
    /// close, so they answer FAILED_PRECONDITION like the rest.
    opened: Mutex<Option<Opened>>,
    /// Held for reading by calls that use the open shard's backlog outside the shard
    /// lock (AwaitDrained, the ledger calls): a backlog handle holds the store. A close
    /// ends those calls, then takes it for writing, so the old store is let go before a
    /// reopen opens it again.
    users: tokio::sync::RwLock<()>,
    /// State in the consumer: the shard's in-memory store and what the consumer holds.
    consumer_state: Arc<Mutex<Option<ConsumerState>>>,
    /// Held by Open and Close of this shard for their whole length, so two never run at
    /// once (two Opens would both open the store, or one would close what the other
    /// just opened).
    lifecycle: tokio::sync::Mutex<()>,
    /// Set, under `lifecycle`, when the slot leaves the map: an Open that waited for
    /// `lifecycle` meanwhile looks the shard up again.
    removed: AtomicBool,
}

/// The open shard, as seen without its lock.
#[derive(Clone)]
struct Opened {
    /// Its backlog (decoupled delivery, or a waiting shard's recovered one).
    backlog: Option<BacklogHandle>,
}

/// Bookkeeping for Status and AwaitDelivery.
#[derive(Default)]
struct Books {
    next_delivery: u64,
    deliveries: BTreeMap<u64, watch::Receiver<Option<DeliveryOutcome>>>,
    last: Option<DeliveryOutcome>,
    commits: u64,
    finished_deliveries: u64,
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Sidecar {
    /// A sidecar for every shard of its consumer; nothing is opened until an Open call.
    /// Its metrics count every attempt of every shard's webhooks, and every shard sends
    /// with one HTTP client (one connection pool), built here from the config's backoff
    /// and network policy unless `config.shard` already carries one
    /// ([`ShardConfig::with_deliverer`]).
    pub fn new(mut config: SidecarConfig) -> Self {
        let metrics = Arc::new(Metrics::new());
        config.shard.attempt_observer = Some(metrics.clone());
        if config.shard.deliverer.is_none() {
            match Deliverer::with_policy(config.shard.backoff.clone(), config.shard.network) {
                Ok(deliverer) => config.shard.deliverer = Some(deliverer),
                // Each shard then builds its own at Open, and fails there with the cause.
                Err(err) => tracing::warn!(error = %err, "cannot build the shared HTTP client"),
            }
        }
        let default = Arc::new(Slot::new(ShardId::DEFAULT));
        Self {
            inner: Arc::new(Inner {
                metrics,
                config,
                slots: Mutex::new(HashMap::from([(ShardId::DEFAULT, default)])),
                checks: Arc::new(tokio::sync::Semaphore::new(CHECKS_AT_ONCE)),
            }),
        }
    }

    /// Runs CPU-bound checking (validation, preview and test-fire rendering) on the
    /// blocking pool, within [`CHECK_BUDGET`] (waiting for a place included) and
    /// [`CHECKS_AT_ONCE`]. Cancel-safe: dropping the future
    /// leaves the work to finish on its thread (bounded by the config bounds), holding
    /// its place until then.
    async fn off_the_workers<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl FnOnce(&Inner) -> T + Send + 'static,
    ) -> Result<T, Status> {
        let over_budget = || {
            Status::deadline_exceeded(format!(
                "{what} did not finish within {CHECK_BUDGET:?}; try again when the sidecar is less busy"
            ))
        };
        // One budget for the wait for a place and the work together.
        let deadline = tokio::time::Instant::now() + CHECK_BUDGET;
        let place = tokio::time::timeout_at(deadline, self.inner.checks.clone().acquire_owned())
            .await
            .map_err(|_| over_budget())?
            // The semaphore is never closed.
            .map_err(|_| Status::internal(format!("{what}: no place to run it")))?;
        let inner = self.inner.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _place = place;
            work(&inner)
        });
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(join)) => Err(Status::internal(bounded(&format!("{what} failed: {join}")))),
            Err(_) => Err(over_budget()),
        }
    }

    /// Closes every shard (process shutdown), at once: every call waiting on one
    /// (AwaitDrained, a StartCommit waiting for backlog room) ends at once with ABORTED;
    /// webhook requests in flight and waiting deliveries get up to `grace` to finish;
    /// then the stores are closed. Requests still running after that are cut off: they
    /// stay persisted and fire on the next start.
    ///
    /// Cancel safety: dropped while it waits for a shard (a waiting delivery), that
    /// shard's backlog has already stopped picking webhooks and calls that wait on it
    /// answer ABORTED until the next Open; dropped later, see [`Shard::close_within`].
    /// Nothing persisted is lost either way.
    pub async fn close(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        let slots: Vec<Arc<Slot>> = locked(&self.inner.slots).values().cloned().collect();
        futures::future::join_all(slots.iter().map(|slot| async move {
            if slot.close_by(deadline).await.is_err() {
                tracing::warn!(
                    shard = slot.id.as_str(),
                    ?grace,
                    "a delivery is still running after the shutdown grace period; \
                     its trigger params stay persisted and fire on the next start"
                );
            }
        }))
        .await;
    }

    /// The open shard a request names, or why there is none: INVALID_ARGUMENT for an id
    /// outside the bound, FAILED_PRECONDITION for a shard not open here.
    fn slot(&self, shard: &str) -> Result<Arc<Slot>, Status> {
        let id = shard_id(shard)?;
        locked(&self.inner.slots)
            .get(&id)
            .cloned()
            .ok_or_else(|| not_open(&id))
    }

    /// The slot of `id`, made if it has none, within [`SidecarConfig::max_shards`].
    fn slot_or_new(&self, id: &ShardId) -> Result<Arc<Slot>, Status> {
        let mut slots = locked(&self.inner.slots);
        if let Some(slot) = slots.get(id) {
            return Ok(slot.clone());
        }
        // The default shard's slot is always there: the rest are named.
        let most = self.inner.config.max_shards;
        if slots.len() > most {
            return Err(Status::resource_exhausted(format!(
                "this sidecar has {most} named shards open, the most it holds \
                 (max_shards): close one first, or run another sidecar"
            )));
        }
        let slot = Arc::new(Slot::new(id.clone()));
        slots.insert(id.clone(), slot.clone());
        Ok(slot)
    }

    /// Takes `slot` out of the map (under its `lifecycle` lock); the default shard's is
    /// replaced by a fresh one, so it is always there.
    fn remove(&self, slot: &Arc<Slot>) {
        let mut slots = locked(&self.inner.slots);
        if slots.get(&slot.id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(&slot.id);
            if slot.id.is_default() {
                slots.insert(ShardId::DEFAULT, Arc::new(Slot::new(ShardId::DEFAULT)));
            }
        }
        slot.removed.store(true, Ordering::Release);
    }

    /// Open of `id`, in full, serialized with the shard's other Opens and Closes (see
    /// [`Slot::reopen`]). A named shard that is not open after it (the open failed)
    /// leaves the map.
    async fn open_one(&self, id: ShardId, state: Vec<StateEntry>) -> Result<OpenResponse, Status> {
        for _ in 0..OPEN_RACES {
            let slot = self.slot_or_new(&id)?;
            let _turn = slot.lifecycle.lock().await;
            if slot.removed.load(Ordering::Acquire) {
                // A Close took it out while this Open waited: look it up again.
                continue;
            }
            let opened = slot.reopen(&self.inner.config, state).await;
            // Not open after it: no place kept. (Held, it is open: a delivery the grace
            // could not wait out has it, and waiting here would outlast the grace.)
            let closed = slot.shard.try_lock().is_ok_and(|shard| shard.is_none());
            if opened.is_err() && !id.is_default() && closed {
                self.remove(&slot);
            }
            return opened;
        }
        Err(Status::unavailable(format!(
            "{id} was closed and opened by other calls while this Open waited; call Open again"
        )))
    }

    /// Close of `id`, in full, serialized with its Opens: whether it was open.
    async fn close_one(&self, id: ShardId) -> Result<bool, Status> {
        let Some(slot) = locked(&self.inner.slots).get(&id).cloned() else {
            return Ok(false);
        };
        let _turn = slot.lifecycle.lock().await;
        if slot.removed.load(Ordering::Acquire) {
            return Ok(false);
        }
        let grace = self.inner.config.shutdown_grace;
        let was_open = slot
            .close_by(tokio::time::Instant::now() + grace)
            .await
            .map_err(|()| {
                tracing::warn!(
                    shard = id.as_str(),
                    ?grace,
                    "Close gave up: a delivery still holds the shard after the shutdown grace"
                );
                Status::unavailable(format!(
                    "a delivery in flight still holds {id} after the shutdown grace \
                     ({grace:?}); it stays open: call Close again once it finishes \
                     (AwaitDelivery)"
                ))
            })?;
        self.remove(&slot);
        Ok(was_open)
    }

    /// The ids of the shards it holds (the default shard's, `""`, always), sorted: the
    /// console's list of shards.
    pub(crate) fn shard_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = locked(&self.inner.slots)
            .keys()
            .map(|id| id.as_str().to_string())
            .collect();
        ids.sort();
        ids
    }

    /// The sidecar's metrics in the OpenMetrics text format (what `GET /metrics` serves).
    pub fn metrics_text(&self) -> String {
        let slots: Vec<Arc<Slot>> = locked(&self.inner.slots).values().cloned().collect();
        let backlogs: Vec<(String, triggers_runtime::BacklogStatus)> = slots
            .iter()
            .filter_map(|slot| Some((slot.id.as_str().to_string(), slot.backlog_status()?)))
            .collect();
        self.inner.metrics.render_shards(&backlogs)
    }

    /// Serves `GET /metrics` on `listener` until `shutdown` resolves, then lets scrapes in
    /// flight finish (see [`crate::metrics::serve`]).
    ///
    /// Cancel-safe: dropping it stops accepting; no shard is involved.
    pub async fn serve_metrics(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let sidecar = self.clone();
        crate::metrics::serve(listener, move || sidecar.metrics_text(), shutdown).await;
    }
}

impl Slot {
    fn new(id: ShardId) -> Self {
        Self {
            id,
            shard: Arc::new(tokio::sync::Mutex::new(None)),
            books: Mutex::new(Books::default()),
            opened: Mutex::new(None),
            users: tokio::sync::RwLock::new(()),
            consumer_state: Arc::new(Mutex::new(None)),
            lifecycle: tokio::sync::Mutex::new(()),
            removed: AtomicBool::new(false),
        }
    }

    /// Closes the shard by `deadline`: its waiters end, its backlog stops picking new
    /// webhooks, requests in flight get until then, and the store is let go. Whether it
    /// was open; `Err` when a delivery still held the shard at the deadline (it stays
    /// open). Cancel safety as [`Sidecar::close`].
    async fn close_by(&self, deadline: tokio::time::Instant) -> Result<bool, ()> {
        self.begin_close();
        let mut shard = tokio::time::timeout_at(deadline, self.shard.lock())
            .await
            .map_err(|_| ())?;
        let was_open = shard.is_some();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.retire(&mut shard, left).await;
        Ok(was_open)
    }

    /// Ends the open shard's waiters and stops its backlog picking new webhooks, without
    /// its lock: a StartCommit waiting for room holds that lock until room comes.
    fn begin_close(&self) {
        if let Some(backlog) = self.opened().as_ref().and_then(|o| o.backlog.as_ref()) {
            backlog.begin_close();
        }
    }

    /// Closes the shard in `slot` (held under the shard lock), giving requests in flight
    /// `grace`, and waits until no call holds its store any more.
    async fn retire(&self, slot: &mut Option<Shard>, grace: Duration) {
        let opened = self.opened().take();
        if let Some(shard) = slot.take() {
            shard.close_within(grace).await;
            tracing::info!(shard = self.id.as_str(), "shard store closed");
        }
        drop(opened);
        // Calls on the old backlog were told to stop; once they let go, so does the store.
        drop(self.users.write().await);
    }

    fn opened(&self) -> std::sync::MutexGuard<'_, Option<Opened>> {
        locked(&self.opened)
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        locked(&self.books)
    }

    fn consumer_state(&self) -> std::sync::MutexGuard<'_, Option<ConsumerState>> {
        locked(&self.consumer_state)
    }

    /// The open shard's backlog state, read in place (no handle escapes the lock).
    fn backlog_status(&self) -> Option<triggers_runtime::BacklogStatus> {
        self.opened()
            .as_ref()
            .and_then(|o| o.backlog.as_ref().map(BacklogHandle::status))
    }

    /// The open shard, for a call that uses its backlog without the shard lock: the
    /// guard keeps a close waiting until the call lets go of the store.
    async fn open_shard(&self) -> Result<(tokio::sync::RwLockReadGuard<'_, ()>, Opened), Status> {
        let user = self.users.read().await;
        let opened = self.opened().clone().ok_or_else(|| not_open(&self.id))?;
        Ok((user, opened))
    }

    /// The open shard's ledger, or why there is none.
    async fn ledger(
        &self,
        config: &SidecarConfig,
    ) -> Result<(tokio::sync::RwLockReadGuard<'_, ()>, BacklogHandle), Status> {
        if config.shard.delivery == DeliveryMode::Waiting {
            return Err(Status::failed_precondition(
                "the delivery ledger belongs to decoupled delivery; this sidecar runs waiting delivery",
            ));
        }
        let (user, opened) = self.open_shard().await?;
        let backlog = opened.backlog.ok_or_else(|| not_open(&self.id))?;
        Ok((user, backlog))
    }

    /// Open, in full: closes a previous incarnation (its waiters end, its requests in
    /// flight get the shutdown grace), then opens and recovers the store. The grace
    /// bounds the whole close: a waiting delivery holds the shard for up to its retry
    /// budget, so one still running when the grace ends is left alone (the old shard
    /// stays open) and Open answers UNAVAILABLE.
    async fn reopen(
        &self,
        config: &SidecarConfig,
        state: Vec<StateEntry>,
    ) -> Result<OpenResponse, Status> {
        let grace = config.shutdown_grace;
        let deadline = tokio::time::Instant::now() + grace;
        self.begin_close();
        let mut guard = tokio::time::timeout_at(deadline, self.shard.lock())
            .await
            .map_err(|_| {
                tracing::warn!(
                    shard = self.id.as_str(),
                    ?grace,
                    "Open gave up: a delivery still holds the shard after the shutdown grace"
                );
                Status::unavailable(format!(
                    "a delivery in flight still holds the shard after the shutdown grace \
                     ({grace:?}); the old shard stays open: call Open again once it \
                     finishes (AwaitDelivery)"
                ))
            })?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.retire(&mut guard, left).await;
        let shard_config = config.shard.clone();
        let (shard, recovery) = if config.state_in_consumer {
            // RocksDB work (in memory, but blocking), off the async workers.
            let loaded = tokio::task::spawn_blocking(move || ConsumerState::load(&state))
                .await
                .map_err(|err| Status::internal(bounded(&err.to_string())))?
                .map_err(|err| Status::invalid_argument(bounded(&err.to_string())))?;
            let store = Store::in_host_db(loaded.db(), Keyspace::root(), Durability::Unsynced)
                .map_err(|err| self.status(err.into()))?;
            *self.consumer_state() = Some(loaded);
            Shard::open_in(store, shard_config)
                .await
                .map_err(|err| self.status(err))?
        } else {
            let dir = self.id.store_dir(&config.store);
            if !self.id.is_default() {
                // RocksDB makes the store's own directory only; `shards/` first (off the
                // async workers: file system calls block).
                let shards = config.store.join(SHARDS_DIR);
                tokio::task::spawn_blocking(move || std::fs::create_dir_all(&shards))
                    .await
                    .map_err(|err| Status::internal(bounded(&err.to_string())))?
                    .map_err(|err| {
                        Status::internal(bounded(&format!(
                            "cannot make the shards' directory under {}: {err}",
                            config.store.display()
                        )))
                    })?;
            }
            Shard::open(dir, shard_config)
                .await
                .map_err(|err| self.status(err))?
        };
        *self.opened() = Some(Opened {
            backlog: shard.backlog_handle(),
        });
        *guard = Some(shard);
        tracing::info!(
            shard = self.id.as_str(),
            pending = recovery.pending.is_some(),
            "shard opened and recovered"
        );
        Ok(OpenResponse {
            checkpoint: Some(recovery.checkpoint),
            triggers_pending: recovery.pending.is_some(),
            pending_flow_run_id: recovery.pending.map(|v| v.flow_run_id).unwrap_or_default(),
        })
    }

    /// A shard error as a status ([`to_status`]), naming the shard when it is a named one.
    fn status(&self, err: ShardError) -> Status {
        let status = to_status(err);
        if self.id.is_default() {
            return status;
        }
        Status::new(
            status.code(),
            bounded(&format!("{}: {}", self.id, status.message())),
        )
    }

    /// State in the consumer: the sidecar's writes since the last ones handed out (none
    /// otherwise). A pass over the in-memory store, off the async workers.
    async fn take_state_ops(&self, config: &SidecarConfig) -> Result<Vec<StateOp>, Status> {
        if !config.state_in_consumer {
            return Ok(Vec::new());
        }
        let state = self.consumer_state.clone();
        tokio::task::spawn_blocking(move || {
            let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
            match state.as_mut() {
                Some(state) => state.take_ops().map_err(|err| err.to_string()),
                None => Ok(Vec::new()),
            }
        })
        .await
        .map_err(|err| Status::internal(bounded(&err.to_string())))?
        .map_err(|err| Status::internal(bounded(&err)))
    }
}

#[tonic::async_trait]
impl ShardSidecar for Sidecar {
    async fn open(&self, request: Request<OpenRequest>) -> Result<Response<OpenResponse>, Status> {
        let request = request.into_inner();
        let id = shard_id(&request.shard)?;
        // A task of its own: a caller that goes away (its deadline) must not cut a reopen
        // in half, between closing the old shard and opening the new one.
        let sidecar = self.clone();
        let opened = tokio::spawn(async move { sidecar.open_one(id, request.state).await })
            .await
            .map_err(|err| Status::internal(bounded(&format!("Open did not complete: {err}"))))?;
        Ok(Response::new(opened?))
    }

    async fn close(
        &self,
        request: Request<CloseRequest>,
    ) -> Result<Response<CloseResponse>, Status> {
        let id = shard_id(&request.into_inner().shard)?;
        // A task of its own, as Open: a caller that goes away must not leave the shard
        // half closed.
        let sidecar = self.clone();
        let was_open = tokio::spawn(async move { sidecar.close_one(id).await })
            .await
            .map_err(|err| Status::internal(bounded(&format!("Close did not complete: {err}"))))?;
        Ok(Response::new(CloseResponse {
            was_open: was_open?,
        }))
    }

    async fn start_commit(
        &self,
        request: Request<StartCommitRequest>,
    ) -> Result<Response<StartCommitResponse>, Status> {
        let arrived = std::time::SystemTime::now();
        let request = request.into_inner();
        let slot = self.slot(&request.shard)?;
        let config = &self.inner.config;
        let checkpoint = request
            .checkpoint
            .ok_or_else(|| Status::invalid_argument("StartCommit needs a checkpoint"))?;
        let started_at = request.started_at.and_then(started_at).unwrap_or(arrived);
        let mut guard = slot.shard.lock().await;
        let shard = guard.as_mut().ok_or_else(|| not_open(&slot.id))?;
        let (commit, state_ops) = if config.state_in_consumer {
            // The consumer's checkpoint is its own; the shard's writes go to the
            // in-memory store, and to the consumer with the sidecar's writes since.
            let prepared = shard
                .prepare_commit(&request.stats, started_at)
                .await
                .map_err(|err| slot.status(err))?;
            let db = slot
                .consumer_state()
                .as_ref()
                .map(ConsumerState::db)
                .ok_or_else(|| not_open(&slot.id))?;
            let mut batch = triggers_runtime::rocksdb::WriteBatch::default();
            prepared.write_into(&mut batch);
            if let Err(err) = db.write(batch) {
                shard
                    .commit_not_written(prepared)
                    .map_err(|err| slot.status(err.into()))?;
                return Err(Status::internal(bounded(&format!(
                    "the in-memory store failed: {err}"
                ))));
            }
            let commit = shard
                .commit_written(prepared)
                .map_err(|err| slot.status(err.into()))?;
            (commit, slot.take_state_ops(config).await?)
        } else {
            let commit = shard
                .start_commit_at(checkpoint, &request.stats, started_at)
                .await
                .map_err(|err| slot.status(err))?;
            (commit, Vec::new())
        };
        slot.books().commits += 1;
        self.inner.metrics.commit();
        Ok(Response::new(StartCommitResponse {
            triggers_persisted: commit.variables.is_some(),
            flow_run_id: commit.variables.map(|v| v.flow_run_id).unwrap_or_default(),
            state_ops,
        }))
    }

    async fn acknowledged(
        &self,
        request: Request<AcknowledgedRequest>,
    ) -> Result<Response<AcknowledgedResponse>, Status> {
        let request = request.into_inner();
        let wait = request.wait;
        let slot = self.slot(&request.shard)?;
        let mut guard = slot.shard.clone().lock_owned().await;
        guard
            .as_ref()
            .ok_or_else(|| not_open(&slot.id))?
            .check_acknowledge()
            .map_err(|err| slot.status(err.into()))?;

        let (done, outcome) = watch::channel(None);
        let delivery_id = {
            let mut books = slot.books();
            books.next_delivery += 1;
            let id = books.next_delivery;
            books.deliveries.insert(id, outcome.clone());
            while books.deliveries.len() > REMEMBERED_DELIVERIES {
                books.deliveries.pop_first();
            }
            id
        };

        let delivering = slot.clone();
        tokio::spawn(async move {
            let result = match guard.as_mut() {
                Some(shard) => shard.acknowledged().await,
                None => return,
            };
            let outcome = delivery_outcome(delivery_id, result);
            if !outcome.ok {
                tracing::error!(
                    shard = delivering.id.as_str(),
                    error = %outcome.error,
                    "delivery failed; the shard must be reopened"
                );
            }
            {
                let mut books = delivering.books();
                books.last = Some(outcome.clone());
                books.finished_deliveries += 1;
            }
            // Release the shard before announcing, so a waiter's next call can proceed.
            drop(guard);
            done.send_replace(Some(outcome));
        });

        let outcome = if wait {
            Some(await_outcome(outcome).await?)
        } else {
            None
        };
        Ok(Response::new(AcknowledgedResponse {
            delivery_id,
            outcome,
        }))
    }

    async fn await_delivery(
        &self,
        request: Request<AwaitDeliveryRequest>,
    ) -> Result<Response<DeliveryOutcome>, Status> {
        let request = request.into_inner();
        let id = request.delivery_id;
        let slot = self.slot(&request.shard)?;
        let outcome = slot.books().deliveries.get(&id).cloned().ok_or_else(|| {
            Status::not_found(format!(
                "no delivery {id} (only the last {REMEMBERED_DELIVERIES} are kept)"
            ))
        })?;
        Ok(Response::new(await_outcome(outcome).await?))
    }
    async fn validate_config(
        &self,
        request: Request<ValidateConfigRequest>,
    ) -> Result<Response<ValidateConfigResponse>, Status> {
        let request = request.into_inner();
        let format = match request.format() {
            triggers_proto::sidecar::ConfigFormat::Json => ConfigFormat::Json,
            triggers_proto::sidecar::ConfigFormat::Yaml => ConfigFormat::Yaml,
        };
        let config = request.config;
        let reply = self
            .off_the_workers("ValidateConfig", move |_| validation_reply(&config, format))
            .await?;
        Ok(Response::new(reply))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let id = shard_id(&request.into_inner().shard)?;
        let found = locked(&self.inner.slots).get(&id).cloned();
        // A shard not open here is as the default one before its Open: closed.
        let slot = found.unwrap_or_else(|| Arc::new(Slot::new(id)));
        let (open, phase, pending_run_id) = match slot.shard.try_lock() {
            Ok(guard) => match guard.as_ref() {
                Some(shard) => (
                    true,
                    wire::shard_phase(shard.phase()),
                    shard.pending_flow_run_id().map(str::to_string),
                ),
                None => (false, ShardPhase::Closed, None),
            },
            // Held by a delivery, or a commit in progress (maybe waiting for backlog room).
            Err(_) => (true, ShardPhase::Delivering, None),
        };
        let backlog = slot.backlog_status();
        let phase = match (phase, &backlog) {
            (ShardPhase::Delivering, Some(b)) if b.backpressured => ShardPhase::Backpressured,
            (ShardPhase::Delivering, Some(_)) => ShardPhase::Committing,
            (phase, _) => phase,
        };
        let books = slot.books();
        let last = books.last.clone().unwrap_or_default();
        Ok(Response::new(StatusResponse {
            delivery_mode: wire::delivery_mode(&self.inner.config.shard.delivery).into(),
            backlog_limit: backlog.as_ref().map_or(0, |b| b.limit as u64),
            backpressured: backlog.as_ref().is_some_and(|b| b.backpressured),
            backpressure_waits: backlog.as_ref().map_or(0, |b| b.backpressure_waits),
            backlog: backlog
                .iter()
                .flat_map(|b| &b.queues)
                .map(|q| BacklogQueue {
                    trigger: q.trigger,
                    trigger_name: q.name.clone(),
                    drain: wire::drain_mode(q.drain).into(),
                    depth: q.depth as u64,
                    in_flight: q.in_flight as u64,
                    delivered: q.delivered,
                    transactions_delivered: q.transactions_delivered,
                    already_delivered: q.already_delivered,
                    oldest_pending_seq: q.oldest_pending_seq.unwrap_or(0),
                    dead_letters: q.dead_letters,
                })
                .collect(),
            orphaned: backlog
                .iter()
                .flat_map(|b| &b.orphaned)
                .map(|o| OrphanedBacklog {
                    trigger_name: o.name.clone(),
                    depth: o.depth as u64,
                    oldest_pending_seq: o.oldest_pending_seq,
                })
                .collect(),
            open,
            phase: phase.into(),
            triggers_pending: pending_run_id.is_some() || phase == ShardPhase::Delivering,
            pending_flow_run_id: pending_run_id.unwrap_or_default(),
            last_outcomes: last.triggers,
            last_error: match (&last.error, backlog.and_then(|b| b.failure)) {
                (error, None) => error.clone(),
                (_, Some(failure)) => bounded(&failure),
            },
            commits: books.commits,
            deliveries: books.finished_deliveries,
        }))
    }

    async fn list_deliveries(
        &self,
        request: Request<ListDeliveriesRequest>,
    ) -> Result<Response<ListDeliveriesResponse>, Status> {
        let request = request.into_inner();
        let slot = self.slot(&request.shard)?;
        let (_user, ledger) = slot.ledger(&self.inner.config).await?;
        let (deliveries, next_page_token) = ledger
            .deliveries(request.page_size as usize, &request.page_token)
            .await
            .map_err(ledger_status)?;
        Ok(Response::new(ListDeliveriesResponse {
            deliveries,
            next_page_token,
        }))
    }

    async fn get_delivery(
        &self,
        request: Request<DeliveryRef>,
    ) -> Result<Response<DeliveryRecord>, Status> {
        let at = request.into_inner();
        let slot = self.slot(&at.shard)?;
        let (_user, ledger) = slot.ledger(&self.inner.config).await?;
        let record = ledger
            .delivery(&trigger_name(&ledger, &at)?, at.first_commit_seq)
            .await
            .map_err(ledger_status)?;
        Ok(Response::new(record))
    }

    async fn retry_delivery(
        &self,
        request: Request<DeliveryRef>,
    ) -> Result<Response<DeliveryRecord>, Status> {
        let at = request.into_inner();
        let slot = self.slot(&at.shard)?;
        let (_user, ledger) = slot.ledger(&self.inner.config).await?;
        let record = ledger
            .retry(&trigger_name(&ledger, &at)?, at.first_commit_seq)
            .await
            .map_err(ledger_status)?;
        Ok(Response::new(record))
    }

    async fn replay_deliveries(
        &self,
        request: Request<ReplayDeliveriesRequest>,
    ) -> Result<Response<ReplayDeliveriesResponse>, Status> {
        let asked = request.into_inner();
        let range = replay_range(&asked)?;
        let slot = self.slot(&asked.shard)?;
        let (_user, ledger) = slot.ledger(&self.inner.config).await?;
        let at = DeliveryRef {
            trigger: asked.trigger,
            trigger_name: asked.trigger_name.clone(),
            ..DeliveryRef::default()
        };
        let replayed = ledger
            .replay(&trigger_name(&ledger, &at)?, range)
            .await
            .map_err(ledger_status)?;
        Ok(Response::new(ReplayDeliveriesResponse { replayed }))
    }

    async fn skip_delivery(
        &self,
        request: Request<SkipDeliveryRequest>,
    ) -> Result<Response<DeliveryRecord>, Status> {
        let request = request.into_inner();
        let at = request
            .delivery
            .ok_or_else(|| Status::invalid_argument("SkipDelivery needs a delivery"))?;
        let slot = self.slot(&at.shard)?;
        let (_user, ledger) = slot.ledger(&self.inner.config).await?;
        let record = ledger
            .skip(
                &trigger_name(&ledger, &at)?,
                at.first_commit_seq,
                &request.reason,
            )
            .await
            .map_err(ledger_status)?;
        Ok(Response::new(record))
    }

    async fn await_drained(
        &self,
        request: Request<AwaitDrainedRequest>,
    ) -> Result<Response<AwaitDrainedResponse>, Status> {
        let slot = self.slot(&request.into_inner().shard)?;
        let config = &self.inner.config;
        let (_user, opened) = slot.open_shard().await?;
        let result = match opened.backlog {
            Some(backlog) => backlog.drained().await,
            None => Ok(()),
        };
        Ok(Response::new(match result {
            Ok(()) => AwaitDrainedResponse {
                ok: true,
                error: String::new(),
                state_ops: slot.take_state_ops(config).await?,
            },
            // Not a delivery outcome: the shard it waited on is gone.
            Err(BacklogError::Closed) => return Err(slot.status(BacklogError::Closed.into())),
            Err(err @ (BacklogError::Webhook(_) | BacklogError::Stopped { .. })) => {
                AwaitDrainedResponse {
                    ok: false,
                    error: bounded(&err.to_string()),
                    state_ops: slot.take_state_ops(config).await?,
                }
            }
        }))
    }

    async fn preview(
        &self,
        request: Request<PreviewRequest>,
    ) -> Result<Response<PreviewResponse>, Status> {
        let request = request.into_inner();
        let variables = preview_variables(request.variables.as_deref())?;
        let index = trigger_index(
            &self.inner.config.shard.triggers,
            request.trigger,
            &request.trigger_name,
        )?;
        let preview = self
            .off_the_workers("Preview", move |inner| {
                inner.config.shard.triggers.preview(index, &variables)
            })
            .await?
            .map_err(preview_status)?;
        Ok(Response::new(PreviewResponse {
            origin: preview.trigger.origin,
            webhook_id: preview.webhook_id,
            payload: preview.payload,
            authorization: preview.authorization.unwrap_or_default(),
        }))
    }

    async fn test_fire(
        &self,
        request: Request<TestFireRequest>,
    ) -> Result<Response<TestFireResponse>, Status> {
        let request = request.into_inner();
        let variables = preview_variables(request.variables.as_deref())?;
        let shard = &self.inner.config.shard;
        // The shards' client (without their attempt observer: a test is no delivery).
        let deliverer = match &shard.deliverer {
            Some(shared) => shared.clone(),
            None => {
                Deliverer::with_policy(shard.backoff.clone(), shard.network).map_err(|err| {
                    Status::internal(bounded(&format!("cannot build the HTTP client: {err}")))
                })?
            }
        };
        // Render off the async workers, as Preview does; send on them.
        let index = trigger_index(&shard.triggers, request.trigger, &request.trigger_name)?;
        let payload = self
            .off_the_workers("TestFire", move |inner| {
                inner
                    .config
                    .shard
                    .triggers
                    .render_test_fire(index, &variables)
            })
            .await?
            .map_err(preview_status)?;
        let report = deliverer
            .send_test_fire(&shard.triggers, payload)
            .await
            .map_err(preview_status)?;
        Ok(Response::new(TestFireResponse {
            accepted: report.accepted(),
            origin: report.trigger.origin,
            webhook_id: report.webhook_id,
            status: report.status.map_or(0, u32::from),
            latency_ms: u64::try_from(report.latency.as_millis()).unwrap_or(u64::MAX),
            body_excerpt: report.body_excerpt,
            error: report
                .error
                .map(|err| bounded(&err.to_string()))
                .unwrap_or_default(),
            outcome: wire::attempt_outcome(report.outcome).into(),
        }))
    }
}

/// Validates a config: every issue, each message and their number bounded.
fn validation_reply(config: &str, format: ConfigFormat) -> ValidateConfigResponse {
    match validate(config, format) {
        Ok(triggers) => ValidateConfigResponse {
            valid: true,
            triggers: u32::try_from(triggers.len()).unwrap_or(u32::MAX),
            errors: Vec::new(),
        },
        Err(errors) => {
            let count = errors.0.len();
            let mut issues: Vec<ValidationIssue> = errors
                .0
                .iter()
                .take(MAX_VALIDATION_ISSUES)
                .map(|err| ValidationIssue {
                    trigger_index: validation_trigger(err),
                    message: bounded(&err.to_string()),
                })
                .collect();
            if count > MAX_VALIDATION_ISSUES {
                issues.push(ValidationIssue {
                    trigger_index: -1,
                    message: format!("{} more error(s) not shown", count - MAX_VALIDATION_ISSUES),
                });
            }
            ValidateConfigResponse {
                valid: false,
                triggers: 0,
                errors: issues,
            }
        }
    }
}

/// A wire trigger index as a config index; one past any config if it does not fit.
/// The position of the trigger a request names: by `name` when given, else `trigger`
/// (an out-of-range position is the renderer's own "no such trigger" error).
fn trigger_index(triggers: &triggers::Triggers, trigger: u32, name: &str) -> Result<usize, Status> {
    if name.is_empty() {
        return Ok(usize::try_from(trigger).unwrap_or(usize::MAX));
    }
    if name.len() > triggers::MAX_TRIGGER_NAME_BYTES {
        return Err(Status::invalid_argument(
            "trigger_name is longer than a trigger name can be (64 bytes)",
        ));
    }
    triggers.position(name).ok_or_else(|| {
        let names: Vec<&str> = triggers.iter().map(|t| t.name()).collect();
        Status::not_found(bounded(&format!(
            "the config has no trigger named {name:?}; it has {names:?}"
        )))
    })
}

fn preview_variables(given: Option<&str>) -> Result<PreviewVariables, Status> {
    match given {
        None => Ok(PreviewVariables::placeholder()),
        Some(text) => PreviewVariables::from_json(text)
            .map_err(|err| Status::invalid_argument(bounded(&err.to_string()))),
    }
}

/// Preview and test-fire errors are all the caller's input: an index past the config, or
/// variables the template cannot render to JSON.
fn preview_status(err: PreviewError) -> Status {
    let message = bounded(&err.to_string());
    match err {
        PreviewError::NoSuchTrigger { .. }
        | PreviewError::Template { .. }
        | PreviewError::NotJson { .. } => Status::invalid_argument(message),
    }
}

async fn await_outcome(
    mut outcome: watch::Receiver<Option<DeliveryOutcome>>,
) -> Result<DeliveryOutcome, Status> {
    let outcome = outcome
        .wait_for(Option::is_some)
        .await
        .map_err(|_| Status::aborted("the delivery task ended without an outcome"))?;
    Ok(outcome.clone().unwrap_or_default())
}

/// A call on a shard not open here. The default shard's message is the one the sidecar
/// of one shard always gave.
fn not_open(id: &ShardId) -> Status {
    if id.is_default() {
        return Status::failed_precondition("the shard is not open: call Open first");
    }
    Status::failed_precondition(format!("{id} is not open here: call Open first"))
}

/// The shard a request names, or INVALID_ARGUMENT saying the bound of an id.
fn shard_id(shard: &str) -> Result<ShardId, Status> {
    ShardId::parse(shard).map_err(|err| Status::invalid_argument(bounded(&err.to_string())))
}

fn validation_trigger(err: &ValidationError) -> i32 {
    err.trigger_index()
        .and_then(|index| i32::try_from(index).ok())
        .unwrap_or(-1)
}

fn delivery_outcome(
    delivery_id: u64,
    result: Result<triggers_runtime::Acknowledgement, ShardError>,
) -> DeliveryOutcome {
    match result {
        Ok(ack) => DeliveryOutcome {
            delivery_id,
            flow_run_id: ack.variables.map(|v| v.flow_run_id).unwrap_or_default(),
            ok: true,
            triggers: ack.delivered.iter().map(delivered_outcome).collect(),
            error: String::new(),
            queued: ack.queued.is_some(),
            backlog_depth: ack.queued.unwrap_or(0) as u64,
        },
        Err(ShardError::Delivery {
            flow_run_id,
            source,
        }) => DeliveryOutcome {
            delivery_id,
            error: bounded(&format!(
                "delivering the triggers of transaction {flow_run_id} failed: {source}"
            )),
            flow_run_id,
            ok: false,
            triggers: failed_outcomes(&source),
            ..Default::default()
        },
        Err(err) => DeliveryOutcome {
            delivery_id,
            ok: false,
            error: bounded(&err.to_string()),
            ..Default::default()
        },
    }
}

/// The trigger a [`DeliveryRef`] names: its `trigger_name`, else the name of the trigger
/// at position `trigger` in the config.
/// The range a replay asks for: a commit range, or a commit-time range, not both.
fn replay_range(asked: &ReplayDeliveriesRequest) -> Result<ReplayRange, Status> {
    let commits = asked.first_commit_seq != 0 || asked.last_commit_seq != 0;
    let times = asked.committed_from.is_some() || asked.committed_to.is_some();
    let invalid = |why: &str| Status::invalid_argument(format!("ReplayDeliveries: {why}"));
    match (commits, times) {
        (true, true) => Err(invalid("give a commit range or a time range, not both")),
        (false, false) => Err(invalid("give a commit range or a time range")),
        (true, false) => {
            let (first, last) = (asked.first_commit_seq, asked.last_commit_seq);
            if first == 0 || last < first {
                return Err(invalid(
                    "the commit range needs first_commit_seq >= 1 and last_commit_seq >= it",
                ));
            }
            Ok(ReplayRange::Commits { first, last })
        }
        (false, true) => {
            let time = |at: Option<triggers_proto::Timestamp>| {
                at.and_then(timestamp_time).ok_or_else(|| {
                    invalid("the time range needs a valid committed_from and committed_to")
                })
            };
            let (from, to) = (time(asked.committed_from)?, time(asked.committed_to)?);
            if to < from {
                return Err(invalid("committed_to is before committed_from"));
            }
            Ok(ReplayRange::CommittedBetween { from, to })
        }
    }
}

fn trigger_name(ledger: &BacklogHandle, at: &DeliveryRef) -> Result<String, Status> {
    if !at.trigger_name.is_empty() {
        // Names are at most 64 bytes: a longer one names nothing, and is not echoed whole.
        return match at.trigger_name.len() {
            ..=triggers::MAX_TRIGGER_NAME_BYTES => Ok(at.trigger_name.clone()),
            _ => Err(Status::invalid_argument(
                "trigger_name is longer than a trigger name can be (64 bytes)",
            )),
        };
    }
    ledger.trigger_name(at.trigger).ok_or_else(|| {
        Status::not_found(format!(
            "the config has no trigger at position {}; name a removed trigger's deliveries \
             by trigger_name",
            at.trigger
        ))
    })
}

fn delivered_outcome(d: &triggers::Delivered) -> TriggerOutcome {
    TriggerOutcome {
        trigger_name: d.trigger.name.clone(),
        index: d.trigger.index as u32,
        origin: d.trigger.origin.clone(),
        delivered: true,
        status: u32::from(d.status),
        attempts: d.attempts,
        error: String::new(),
        already_delivered: d.already_delivered,
    }
}

fn failed_outcomes(err: &DeliveryError) -> Vec<TriggerOutcome> {
    let mut outcomes: Vec<TriggerOutcome> = err
        .delivered
        .iter()
        .map(delivered_outcome)
        .chain(err.failures.iter().map(|f| TriggerOutcome {
            trigger_name: f.trigger.name.clone(),
            index: f.trigger.index as u32,
            origin: f.trigger.origin.clone(),
            delivered: false,
            status: f.reason.status().map_or(0, u32::from),
            attempts: f.attempts,
            error: bounded(&f.to_string()),
            already_delivered: false,
        }))
        .collect();
    outcomes.sort_by_key(|o| o.index);
    outcomes
}

/// The one place shard errors become gRPC statuses: codes a client can act on, messages
/// cut to a bounded length.
fn to_status(err: ShardError) -> Status {
    let message = bounded(&err.to_string());
    match err {
        // Out of order, or the shard (or its backlog) failed: reopen, retry or skip.
        ShardError::Protocol(_)
        | ShardError::Delivery { .. }
        | ShardError::Backlog(BacklogError::Webhook(_) | BacklogError::Stopped { .. }) => {
            Status::failed_precondition(message)
        }
        // The call waited on a shard that was closed or reopened meanwhile: call again.
        ShardError::Backlog(BacklogError::Closed) => Status::aborted(message),
        ShardError::Stats(_) => Status::invalid_argument(message),
        // The sidecar's own config does not fit its materialization: fix it and restart.
        ShardError::Config(_) => Status::failed_precondition(message),
        ShardError::Store(StoreError::Locked { .. } | StoreError::KeyspaceInUse { .. }) => {
            Status::unavailable(message)
        }
        ShardError::Store(StoreError::Corrupt { .. } | StoreError::CorruptKey { .. })
        | ShardError::Params(_) => Status::data_loss(message),
        ShardError::Store(StoreError::RocksDb { .. })
        | ShardError::Blocking(_)
        | ShardError::HttpClient(_) => Status::internal(message),
    }
}

/// Ledger errors as gRPC statuses: an operator's mistake is a precondition or argument
/// problem, not a server fault.
fn ledger_status(err: LedgerError) -> Status {
    let message = bounded(&err.to_string());
    match err {
        LedgerError::NotFound { .. } => Status::not_found(message),
        LedgerError::IllegalTransition { .. } => Status::failed_precondition(message),
        LedgerError::Invalid(_) => Status::invalid_argument(message),
        LedgerError::Store(StoreError::Corrupt { .. } | StoreError::CorruptKey { .. }) => {
            Status::data_loss(message)
        }
        LedgerError::Store(_) | LedgerError::Blocking(_) => Status::internal(message),
    }
}

fn bounded(message: &str) -> String {
    if message.len() <= MAX_STATUS_MESSAGE {
        return message.to_string();
    }
    let mut end = MAX_STATUS_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// A sidecar client: every call carries the bearer token it was connected with, if any.
pub type Client = ShardSidecarClient<InterceptedService<Channel, SendToken>>;

/// A client of a sidecar at `address`: `http://127.0.0.1:PORT` or `unix:/path/to.sock`.
///
/// `token` is sent with every call (a sidecar on TCP requires one; see [`Listener`]).
///
/// Cancel-safe: a dropped connect leaves nothing behind.
pub async fn connect(
    address: &str,
    token: Option<&BearerToken>,
) -> Result<Client, tonic::transport::Error> {
    let channel = match address.strip_prefix("unix:") {
        Some(path) => {
            let path = PathBuf::from(path);
            // The URI is required but unused: the connector dials the socket.
            tonic::transport::Endpoint::from_static("http://localhost")
                .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                }))
                .await?
        }
        None => {
            tonic::transport::Endpoint::from_shared(address.to_string())?
                .connect()
                .await?
        }
    };
    Ok(ShardSidecarClient::with_interceptor(
        channel,
        SendToken::new(token),
    ))
}

/// Why the sidecar could not listen.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// TCP reaches every local process: a TCP listener needs a bearer token.
    #[error(
        "listening on TCP ({address}) needs a bearer token (--token-file FILE or \
         ${TOKEN_ENV}); a Unix socket needs none"
    )]
    TokenRequired {
        /// The TCP address asked for.
        address: String,
    },
    /// The path exists and is not a socket (a stale socket is replaced).
    #[error("{path} exists and is not a socket")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A live sidecar (or another server) already listens on the socket: taking the
    /// path over would strand its callers, and two sidecars would contend for one store.
    #[error(
        "{path} is in use: another process listens on it (another shard-sidecar for this \
         store?); stop it, or listen elsewhere"
    )]
    InUse {
        /// The path.
        path: PathBuf,
    },
    /// The store path names no directory a socket could be put beside (`/`).
    #[error(
        "the store {store} has no name to put the default socket beside; pass --listen \
         unix:/path/to.sock"
    )]
    NoDefaultSocket {
        /// The store path, as given.
        store: PathBuf,
    },
    /// Binding failed.
    #[error("cannot listen on {address}")]
    Io {
        /// The address or path.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Where the sidecar listens, and the bearer token its callers must present.
///
/// The safe constructor comes first: [`Listener::unix`] makes a socket of mode 0600, which
/// only the sidecar's user (and root) may connect to. [`Listener::tcp`] requires a token,
/// since any local process can reach a TCP port.
pub struct Listener {
    socket: Socket,
    token: Option<BearerToken>,
}

enum Socket {
    Tcp(tokio::net::TcpListener),
    Unix {
        listener: tokio::net::UnixListener,
        path: PathBuf,
    },
}

/// The default socket of the sidecar for `store`: `STORE.sock` beside the store, never in
/// it, however the path is spelt (`.`, `dir/`, `dir/sub/..`: the path is made absolute
/// against the working directory and its `.` and `..` components resolved by name, not
/// through symlinks). A store with no name (`/`) has none: [`BindError::NoDefaultSocket`].
pub fn default_socket_path(store: &Path) -> Result<PathBuf, BindError> {
    use std::path::Component;
    let absolute = std::path::absolute(store).map_err(|source| BindError::Io {
        address: format!("unix:{}.sock", store.display()),
        source,
    })?;
    let mut normal = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    let Some(name) = normal.file_name() else {
        return Err(BindError::NoDefaultSocket {
            store: store.to_path_buf(),
        });
    };
    let mut socket = name.to_os_string();
    socket.push(".sock");
    Ok(normal.with_file_name(socket))
}

/// How long [`live`] waits for its probe connection.
const LIVE_PROBE: Duration = Duration::from_secs(1);

/// Whether a server may listen on the Unix socket at `path`: only a socket that refuses
/// connections (stale: its process gone) or is gone counts as not live; any other error
/// (no permission to connect, say) cannot tell, so it counts as live and the socket is
/// kept. Connecting to a listener completes at once (the kernel queues it), unless its
/// queue is full, when a blocking connect waits: the probe runs on a thread of its own
/// and counts as live after [`LIVE_PROBE`].
fn live(path: &Path) -> bool {
    let connect = |path: &Path| match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => true,
        Err(err) => !matches!(
            err.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
        ),
    };
    let (sent, answer) = std::sync::mpsc::channel();
    let probed = path.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("socket-probe".to_string())
        .spawn(move || {
            let _ = sent.send(connect(&probed));
        });
    match spawned {
        Ok(_) => answer.recv_timeout(LIVE_PROBE).unwrap_or(true),
        Err(_) => connect(path),
    }
}

/// Distinguishes the staging directories of binds made at once in one process.
static STAGING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Listener {
    /// A Unix socket at `path`, of mode 0600 from before it accepts any connection: it is
    /// bound in a fresh directory of mode 0700 beside `path`, restricted, then renamed
    /// into place (replacing a stale socket a killed sidecar left). A socket something
    /// still listens on is never replaced: [`BindError::InUse`]. Must be called within
    /// a tokio runtime.
    pub fn unix(path: impl AsRef<Path>) -> Result<Self, BindError> {
        use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _};
        let path = path.as_ref().to_path_buf();
        let io = |source| BindError::Io {
            address: format!("unix:{}", path.display()),
            source,
        };
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if !meta.file_type().is_socket() {
                return Err(BindError::NotASocket { path });
            }
            if live(&path) {
                return Err(BindError::InUse { path });
            }
        }
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let staging = parent.join(format!(
            ".sidecar-{}-{}",
            std::process::id(),
            STAGING.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(io)?;
        let staged = staging.join("s");
        let bound = tokio::net::UnixListener::bind(&staged).and_then(|listener| {
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
            // Checked again just before the rename, to narrow the window in which a
            // sidecar started at the same moment could still be replaced.
            if live(&path) {
                return Ok(None);
            }
            std::fs::rename(&staged, &path)?;
            Ok(Some(listener))
        });
        let _ = std::fs::remove_file(&staged);
        let _ = std::fs::remove_dir(&staging);
        match bound.map_err(io)? {
            Some(listener) => Ok(Self {
                socket: Socket::Unix { listener, path },
                token: None,
            }),
            None => Err(BindError::InUse { path }),
        }
    }

    /// A TCP socket at `address` (HOST:PORT; use 127.0.0.1, port 0 picks a free one) on
    /// which every call must carry `token`.
    ///
    /// Cancel-safe: a dropped bind leaves nothing bound.
    pub async fn tcp(address: &str, token: BearerToken) -> Result<Self, BindError> {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| BindError::Io {
                address: address.to_string(),
                source,
            })?;
        Ok(Self {
            socket: Socket::Tcp(listener),
            token: Some(token),
        })
    }

    /// `unix:/path/to.sock` ([`Listener::unix`]; a token, if given, is required there
    /// too) or `HOST:PORT` ([`Listener::tcp`]; without a token,
    /// [`BindError::TokenRequired`]).
    ///
    /// Cancel-safe: a dropped bind leaves nothing bound.
    pub async fn bind(address: &str, token: Option<BearerToken>) -> Result<Self, BindError> {
        match (address.strip_prefix("unix:"), token) {
            (Some(path), token) => Ok(Self {
                token,
                ..Self::unix(path)?
            }),
            (None, Some(token)) => Self::tcp(address, token).await,
            (None, None) => Err(BindError::TokenRequired {
                address: address.to_string(),
            }),
        }
    }

    /// The Unix socket's listener and path, for another server (the console) bound the
    /// same way; `None` for TCP.
    pub(crate) fn into_unix(self) -> Option<(tokio::net::UnixListener, PathBuf)> {
        match self.socket {
            Socket::Unix { listener, path } => Some((listener, path)),
            Socket::Tcp(_) => None,
        }
    }

    /// Requires `token` on every call (also on a Unix socket).
    pub fn with_token(mut self, token: BearerToken) -> Self {
        self.token = Some(token);
        self
    }

    /// Whether callers must present a bearer token.
    pub fn requires_token(&self) -> bool {
        self.token.is_some()
    }

    /// The bound address, as a client would dial it.
    pub fn address(&self) -> String {
        match &self.socket {
            Socket::Tcp(l) => l
                .local_addr()
                .map(|a| format!("http://{a}"))
                .unwrap_or_default(),
            Socket::Unix { path, .. } => format!("unix:{}", path.display()),
        }
    }
}

/// Serves `sidecar` on `listener` until `shutdown` resolves; then stops accepting calls,
/// gives webhook requests in flight and a waiting delivery the config's
/// [`SidecarConfig::shutdown_grace`] to finish, and closes the store. Calls without the
/// listener's bearer token (if it has one) fail with UNAUTHENTICATED.
///
/// Cancel safety: dropped, the server task goes on serving and the shard stays open;
/// resolve `shutdown` instead.
pub async fn run(
    sidecar: Sidecar,
    listener: Listener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let grace = sidecar.inner.config.shutdown_grace;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service =
        ShardSidecarServer::with_interceptor(sidecar.clone(), RequireToken(listener.token.clone()));
    let server = tonic::transport::Server::builder().add_service(service);
    let signal = async move {
        let _ = stopped.await;
    };
    let serving = match listener.socket {
        Socket::Tcp(l) => tokio::spawn(server.serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(l),
            signal,
        )),
        Socket::Unix { listener: l, .. } => tokio::spawn(server.serve_with_incoming_shutdown(
            tokio_stream::StreamExt::map(
                tokio_stream::wrappers::UnixListenerStream::new(l),
                |stream| stream.map(AuthorityFix::new),
            ),
            signal,
        )),
    };
    shutdown.await;
    tracing::info!(?grace, "shutting down");
    let deadline = tokio::time::Instant::now() + grace;
    let _ = stop.send(());
    // The shard first: closing it ends the calls that wait on it (AwaitDrained, a
    // StartCommit waiting for room) and lets webhooks in flight finish within the grace.
    // The calls still in flight then share what is left of it.
    sidecar.close(grace).await;
    match tokio::time::timeout_at(deadline, serving).await {
        Ok(Ok(result)) => result?,
        Ok(Err(join)) => tracing::error!(%join, "server task failed"),
        Err(_) => tracing::warn!("calls still in flight after the grace period"),
    }
    Ok(())
}

/// A client's transaction start, if it is a time from 1970 to 9999 (what `run_id` can
/// name); anything else is ignored for the time StartCommit arrived.
fn started_at(at: triggers_proto::Timestamp) -> Option<std::time::SystemTime> {
    timestamp_time(at)
}

/// A timestamp as a time, if it is one from the epoch to the year 10000.
fn timestamp_time(at: triggers_proto::Timestamp) -> Option<std::time::SystemTime> {
    const YEAR_10000: u64 = 253_402_300_800;
    let seconds = u64::try_from(at.seconds).ok().filter(|s| *s < YEAR_10000)?;
    let nanos = u32::try_from(at.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::new(seconds, nanos))
}
