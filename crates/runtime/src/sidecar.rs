//! The shard sidecar: serves one shard's lifecycle over gRPC to a consumer written in any
//! language. It owns the shard's store and trigger config.
//!
//! Acknowledged starts delivery in a task that holds the shard, so the next StartCommit
//! waits for it (delivery before the next commit, as in the library), while the caller
//! may return at once and collect the outcome later with AwaitDelivery.
//!
//! Preview and TestFire use only the configured triggers and network policy: they work
//! before Open and beside a running delivery, and never take the shard.

use crate::metrics::Metrics;
use crate::{BacklogHandle, DeliveryMode, LedgerError, Shard, ShardConfig, ShardError, StoreError};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
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
    AwaitDrainedResponse, BacklogQueue, DeliveryOutcome, DeliveryRef, ListDeliveriesRequest,
    ListDeliveriesResponse, OpenRequest, OpenResponse, PreviewRequest, PreviewResponse,
    SkipDeliveryRequest, StartCommitRequest, StartCommitResponse, StatusRequest, StatusResponse,
    TestFireRequest, TestFireResponse, TriggerOutcome, ValidateConfigRequest,
    ValidateConfigResponse, ValidationIssue,
};

/// How many finished deliveries AwaitDelivery can still be asked about.
const REMEMBERED_DELIVERIES: usize = 64;
/// Longest message of a gRPC status; longer ones are cut.
const MAX_STATUS_MESSAGE: usize = 2048;
/// Most issues a ValidateConfig reply lists (each cut to [`MAX_STATUS_MESSAGE`]); past
/// it, the last issue says how many more there are.
const MAX_VALIDATION_ISSUES: usize = 100;
/// How long a ValidateConfig or Preview may take before the caller gets
/// `DEADLINE_EXCEEDED`. They run off the async workers (on the blocking pool), so a slow
/// one never holds up Status or a delivery; the config bounds keep the work itself to
/// well under a second.
pub const CHECK_BUDGET: Duration = Duration::from_secs(10);
/// ValidateConfig and Preview calls that run at once; more wait (within
/// [`CHECK_BUDGET`]) for a place. A call past its budget keeps its place until its work
/// ends, so no more than this many threads ever do such work.
pub const CHECKS_AT_ONCE: usize = 2;

/// What the sidecar serves: one shard's store directory and config.
pub struct SidecarConfig {
    /// Directory of the shard's store.
    pub store: PathBuf,
    /// The shard's config (materialization, triggers, durability, backoff).
    pub shard: ShardConfig,
}

/// The gRPC service. Cheap to clone; clones share the shard.
#[derive(Clone)]
pub struct Sidecar {
    inner: Arc<Inner>,
}

struct Inner {
    config: SidecarConfig,
    /// `None` until Open. Held for the length of a delivery.
    shard: Arc<tokio::sync::Mutex<Option<Shard>>>,
    books: Mutex<Books>,
    /// The open shard's backlog (decoupled delivery), readable while the shard is held.
    backlog: Mutex<Option<BacklogHandle>>,
    metrics: Arc<Metrics>,
    /// Places for ValidateConfig and Preview work (see [`CHECKS_AT_ONCE`]).
    checks: Arc<tokio::sync::Semaphore>,
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

impl Sidecar {
    /// A sidecar for one shard; nothing is opened until the Open call. Its metrics count
    /// every attempt of the shard's webhooks.
    pub fn new(mut config: SidecarConfig) -> Self {
        let metrics = Arc::new(Metrics::new());
        config.shard.attempt_observer = Some(metrics.clone());
        Self {
            inner: Arc::new(Inner {
                metrics,
                config,
                shard: Arc::new(tokio::sync::Mutex::new(None)),
                books: Mutex::new(Books::default()),
                backlog: Mutex::new(None),
                checks: Arc::new(tokio::sync::Semaphore::new(CHECKS_AT_ONCE)),
            }),
        }
    }

    /// Runs CPU-bound checking (validation, preview rendering) on the blocking pool,
    /// within [`CHECK_BUDGET`] and [`CHECKS_AT_ONCE`]. Cancel-safe: dropping the future
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
        let place = tokio::time::timeout(CHECK_BUDGET, self.inner.checks.clone().acquire_owned())
            .await
            .map_err(|_| over_budget())?
            .map_err(|_| Status::unavailable("the sidecar is shutting down"))?;
        let inner = self.inner.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _place = place;
            work(&inner)
        });
        match tokio::time::timeout(CHECK_BUDGET, task).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(join)) => Err(Status::internal(bounded(&format!("{what} failed: {join}")))),
            Err(_) => Err(over_budget()),
        }
    }

    /// The tonic service to add to a server.
    pub fn into_service(self) -> ShardSidecarServer<Self> {
        ShardSidecarServer::new(self)
    }

    /// Waits up to `grace` for an in-flight delivery, then closes the store. A delivery
    /// still running after that is abandoned: its params stay persisted and fire on the
    /// next start.
    pub async fn close(&self, grace: Duration) {
        match tokio::time::timeout(grace, self.inner.shard.lock()).await {
            Ok(mut shard) => {
                if let Some(shard) = shard.take() {
                    shard.close().await;
                    tracing::info!("shard store closed");
                }
            }
            Err(_) => tracing::warn!(
                ?grace,
                "a delivery is still running after the shutdown grace period; \
                 its trigger params stay persisted and fire on the next start"
            ),
        }
    }

    fn backlog(&self) -> std::sync::MutexGuard<'_, Option<BacklogHandle>> {
        self.inner
            .backlog
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The open shard's ledger, or why there is none.
    fn ledger(&self) -> Result<BacklogHandle, Status> {
        if self.inner.config.shard.delivery == DeliveryMode::Waiting {
            return Err(Status::failed_precondition(
                "the delivery ledger belongs to decoupled delivery; this sidecar runs waiting delivery",
            ));
        }
        self.backlog().clone().ok_or_else(not_open)
    }

    /// The sidecar's metrics in the OpenMetrics text format (what `GET /metrics` serves).
    pub fn metrics_text(&self) -> String {
        let backlog = self.backlog().as_ref().map(BacklogHandle::status);
        self.inner.metrics.render(backlog.as_ref())
    }

    /// Serves `GET /metrics` on `listener` until `shutdown` resolves.
    pub async fn serve_metrics(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let sidecar = self.clone();
        crate::metrics::serve(listener, move || sidecar.metrics_text(), shutdown).await;
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.inner
            .books
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[tonic::async_trait]
impl ShardSidecar for Sidecar {
    async fn open(&self, _: Request<OpenRequest>) -> Result<Response<OpenResponse>, Status> {
        let mut guard = self.inner.shard.lock().await;
        // Close a previous incarnation first: its store lock must be released to reopen.
        *self.backlog() = None;
        if let Some(previous) = guard.take() {
            previous.close().await;
        }
        let (shard, recovery) =
            Shard::open(&self.inner.config.store, self.inner.config.shard.clone())
                .await
                .map_err(to_status)?;
        *self.backlog() = shard.backlog_handle();
        *guard = Some(shard);
        tracing::info!(
            pending = recovery.pending.is_some(),
            "shard opened and recovered"
        );
        Ok(Response::new(OpenResponse {
            checkpoint: Some(recovery.checkpoint),
            triggers_pending: recovery.pending.is_some(),
            pending_flow_run_id: recovery.pending.map(|v| v.flow_run_id).unwrap_or_default(),
        }))
    }

    async fn start_commit(
        &self,
        request: Request<StartCommitRequest>,
    ) -> Result<Response<StartCommitResponse>, Status> {
        let request = request.into_inner();
        let checkpoint = request
            .checkpoint
            .ok_or_else(|| Status::invalid_argument("StartCommit needs a checkpoint"))?;
        let mut guard = self.inner.shard.lock().await;
        let shard = guard.as_mut().ok_or_else(not_open)?;
        let commit = shard
            .start_commit(checkpoint, &request.stats)
            .await
            .map_err(to_status)?;
        self.books().commits += 1;
        self.inner.metrics.commit();
        Ok(Response::new(StartCommitResponse {
            triggers_persisted: commit.variables.is_some(),
            flow_run_id: commit.variables.map(|v| v.flow_run_id).unwrap_or_default(),
        }))
    }

    async fn acknowledged(
        &self,
        request: Request<AcknowledgedRequest>,
    ) -> Result<Response<AcknowledgedResponse>, Status> {
        let wait = request.into_inner().wait;
        let mut guard = self.inner.shard.clone().lock_owned().await;
        guard
            .as_ref()
            .ok_or_else(not_open)?
            .check_acknowledge()
            .map_err(|err| to_status(err.into()))?;

        let (done, outcome) = watch::channel(None);
        let delivery_id = {
            let mut books = self.books();
            books.next_delivery += 1;
            let id = books.next_delivery;
            books.deliveries.insert(id, outcome.clone());
            while books.deliveries.len() > REMEMBERED_DELIVERIES {
                books.deliveries.pop_first();
            }
            id
        };

        let sidecar = self.clone();
        tokio::spawn(async move {
            let result = match guard.as_mut() {
                Some(shard) => shard.acknowledged().await,
                None => return,
            };
            let outcome = delivery_outcome(delivery_id, result);
            if !outcome.ok {
                tracing::error!(error = %outcome.error, "delivery failed; the shard must be reopened");
            }
            {
                let mut books = sidecar.books();
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
        let id = request.into_inner().delivery_id;
        let outcome = self.books().deliveries.get(&id).cloned().ok_or_else(|| {
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

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let (open, phase, pending_run_id) = match self.inner.shard.try_lock() {
            Ok(guard) => match guard.as_ref() {
                Some(shard) => (
                    true,
                    shard.phase_name(),
                    shard.pending_flow_run_id().map(str::to_string),
                ),
                None => (false, "closed", None),
            },
            // Held by a delivery, or a commit in progress (maybe waiting for backlog room).
            Err(_) => (true, "delivering", None),
        };
        let backlog = self.backlog().as_ref().map(BacklogHandle::status);
        let phase = match (phase, &backlog) {
            ("delivering", Some(b)) if b.backpressured => "backpressured",
            ("delivering", Some(_)) => "committing",
            (phase, _) => phase,
        };
        let books = self.books();
        let last = books.last.clone().unwrap_or_default();
        let mode = match self.inner.config.shard.delivery {
            DeliveryMode::Waiting => "waiting",
            DeliveryMode::Decoupled { .. } => "decoupled",
        };
        Ok(Response::new(StatusResponse {
            delivery_mode: mode.to_string(),
            backlog_limit: backlog.as_ref().map_or(0, |b| b.limit as u64),
            backpressured: backlog.as_ref().is_some_and(|b| b.backpressured),
            backpressure_waits: backlog.as_ref().map_or(0, |b| b.backpressure_waits),
            backlog: backlog
                .iter()
                .flat_map(|b| &b.queues)
                .map(|q| BacklogQueue {
                    trigger: q.trigger as u32,
                    drain: q.drain.to_string(),
                    depth: q.depth as u64,
                    in_flight: q.in_flight as u64,
                    delivered: q.delivered,
                    transactions_delivered: q.transactions_delivered,
                    oldest_pending_seq: q.oldest_pending_seq.unwrap_or(0),
                })
                .collect(),
            open,
            phase: phase.to_string(),
            triggers_pending: pending_run_id.is_some() || phase == "delivering",
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
        let (deliveries, next_page_token) = self
            .ledger()?
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
        let record = self
            .ledger()?
            .delivery(at.trigger, at.first_commit_seq)
            .await
            .map_err(ledger_status)?;
        Ok(Response::new(record))
    }

    async fn retry_delivery(
        &self,
        request: Request<DeliveryRef>,
    ) -> Result<Response<DeliveryRecord>, Status> {
        let at = request.into_inner();
        let record = self
            .ledger()?
            .retry(at.trigger, at.first_commit_seq)
            .await
            .map_err(ledger_status)?;
        Ok(Response::new(record))
    }

    async fn skip_delivery(
        &self,
        request: Request<SkipDeliveryRequest>,
    ) -> Result<Response<DeliveryRecord>, Status> {
        let request = request.into_inner();
        let at = request
            .delivery
            .ok_or_else(|| Status::invalid_argument("SkipDelivery needs a delivery"))?;
        let record = self
            .ledger()?
            .skip(at.trigger, at.first_commit_seq, &request.reason)
            .await
            .map_err(ledger_status)?;
        Ok(Response::new(record))
    }

    async fn await_drained(
        &self,
        _: Request<AwaitDrainedRequest>,
    ) -> Result<Response<AwaitDrainedResponse>, Status> {
        let backlog = self.backlog().clone();
        let result = match backlog {
            Some(backlog) => backlog.drained().await,
            None => Ok(()),
        };
        Ok(Response::new(match result {
            Ok(()) => AwaitDrainedResponse {
                ok: true,
                error: String::new(),
            },
            Err(err) => AwaitDrainedResponse {
                ok: false,
                error: bounded(&err.to_string()),
            },
        }))
    }

    async fn preview(
        &self,
        request: Request<PreviewRequest>,
    ) -> Result<Response<PreviewResponse>, Status> {
        let request = request.into_inner();
        let variables = preview_variables(request.variables.as_deref())?;
        let index = trigger_index(request.trigger);
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
        }))
    }

    async fn test_fire(
        &self,
        request: Request<TestFireRequest>,
    ) -> Result<Response<TestFireResponse>, Status> {
        let request = request.into_inner();
        let variables = preview_variables(request.variables.as_deref())?;
        let shard = &self.inner.config.shard;
        let deliverer =
            Deliverer::with_policy(shard.backoff.clone(), shard.network).map_err(|err| {
                Status::internal(bounded(&format!("cannot build the HTTP client: {err}")))
            })?;
        let report = deliverer
            .test_fire(&shard.triggers, trigger_index(request.trigger), &variables)
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
fn trigger_index(trigger: u32) -> usize {
    usize::try_from(trigger).unwrap_or(usize::MAX)
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

fn not_open() -> Status {
    Status::failed_precondition("the shard is not open: call Open first")
}

fn validation_trigger(err: &ValidationError) -> i32 {
    err.trigger_index()
        .and_then(|index| i32::try_from(index).ok())
        .unwrap_or(-1)
}

fn delivery_outcome(
    delivery_id: u64,
    result: Result<crate::Acknowledgement, ShardError>,
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

fn delivered_outcome(d: &triggers::Delivered) -> TriggerOutcome {
    TriggerOutcome {
        index: d.trigger.index as u32,
        origin: d.trigger.origin.clone(),
        delivered: true,
        status: u32::from(d.status),
        attempts: d.attempts,
        error: String::new(),
    }
}

fn failed_outcomes(err: &DeliveryError) -> Vec<TriggerOutcome> {
    let mut outcomes: Vec<TriggerOutcome> = err
        .delivered
        .iter()
        .map(delivered_outcome)
        .chain(err.failures.iter().map(|f| TriggerOutcome {
            index: f.trigger.index as u32,
            origin: f.trigger.origin.clone(),
            delivered: false,
            status: match &f.reason {
                triggers::FailureReason::Status { status, .. } => u32::from(*status),
                _ => 0,
            },
            attempts: f.attempts,
            error: bounded(&f.to_string()),
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
        ShardError::Protocol(_) => Status::failed_precondition(message),
        ShardError::Stats(_) => Status::invalid_argument(message),
        ShardError::Store(StoreError::Locked { .. }) => Status::unavailable(message),
        ShardError::Store(StoreError::Corrupt { .. } | StoreError::CorruptBacklog { .. })
        | ShardError::Params(_) => Status::data_loss(message),
        ShardError::Store(StoreError::RocksDb { .. })
        | ShardError::Blocking(_)
        | ShardError::HttpClient(_) => Status::internal(message),
        ShardError::Delivery { .. } | ShardError::Backlog(_) => Status::aborted(message),
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
        LedgerError::Store(StoreError::Corrupt { .. } | StoreError::CorruptBacklog { .. }) => {
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

/// A client of a sidecar at `address`: `http://127.0.0.1:PORT` or `unix:/path/to.sock`.
pub async fn connect(
    address: &str,
) -> Result<ShardSidecarClient<tonic::transport::Channel>, tonic::transport::Error> {
    let channel = match address.strip_prefix("unix:") {
        Some(path) => {
            let path = PathBuf::from(path);
            // The URI is required but unused: the connector dials the socket.
            tonic::transport::Endpoint::from_static("http://sidecar.invalid")
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
    Ok(ShardSidecarClient::new(channel))
}

/// Where the sidecar listens.
pub enum Listener {
    /// A TCP socket (127.0.0.1 for a sidecar beside its shard).
    Tcp(tokio::net::TcpListener),
    /// A Unix domain socket.
    Unix(tokio::net::UnixListener),
}

impl Listener {
    /// Binds `127.0.0.1:PORT`-style addresses, or `unix:/path/to.sock`.
    pub async fn bind(address: &str) -> std::io::Result<Self> {
        match address.strip_prefix("unix:") {
            Some(path) => {
                // A stale socket file from a killed process would make bind fail.
                if std::fs::metadata(path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    std::fs::remove_file(path)?;
                }
                Ok(Listener::Unix(tokio::net::UnixListener::bind(path)?))
            }
            None => Ok(Listener::Tcp(tokio::net::TcpListener::bind(address).await?)),
        }
    }

    /// The bound address, as a client would dial it.
    pub fn address(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| format!("http://{a}"))
                .unwrap_or_default(),
            Listener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_default(),
        }
    }
}

/// Serves `sidecar` on `listener` until `shutdown` resolves, then gives an in-flight
/// delivery up to `grace` to finish before closing the store.
pub async fn run(
    sidecar: Sidecar,
    listener: Listener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<(), tonic::transport::Error> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder().add_service(sidecar.clone().into_service());
    let signal = async move {
        let _ = stopped.await;
    };
    let serving = match listener {
        Listener::Tcp(l) => tokio::spawn(server.serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(l),
            signal,
        )),
        Listener::Unix(l) => tokio::spawn(server.serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(l),
            signal,
        )),
    };
    shutdown.await;
    tracing::info!(?grace, "shutting down");
    let _ = stop.send(());
    // In-flight calls get the grace period too; a caller waiting on a delivery is cut off.
    match tokio::time::timeout(grace, serving).await {
        Ok(Ok(result)) => result?,
        Ok(Err(join)) => tracing::error!(%join, "server task failed"),
        Err(_) => tracing::warn!("calls still in flight after the grace period"),
    }
    sidecar.close(grace).await;
    Ok(())
}
