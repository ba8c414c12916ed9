//! Decoupled delivery: each trigger's committed-but-undelivered webhooks form a persisted
//! queue (its backlog) that a worker task drains while the shard goes on committing.
//!
//! The rules that keep at-least-once intact:
//! - An entry is written by StartCommit's WriteBatch (with the checkpoint) and deleted only
//!   after its webhook is accepted. Recovery reloads every entry.
//! - An entry is sent only once every transaction it covers is acknowledged.
//! - A coalesced trigger merges a new transaction into its newest entry only while that
//!   entry is in memory, not in flight and was made by this process: the merged entry is
//!   written under the same key in the commit's WriteBatch, so a crash keeps either the old
//!   entry and the old checkpoint or both new ones. Entries recovered after a restart are
//!   never merged into, so a re-fire repeats exactly the webhook (same id, same variables)
//!   a receiver may already have.
//! - A trigger's queue holds at most `limit` entries; a commit that would exceed it waits
//!   (backpressure) until the worker makes room.
//! - A webhook that fails for good stops every worker and fails the shard, leaving the
//!   backlog on disk to fire again at the next start.

use crate::ShardError;
mod ledger;

pub(crate) use ledger::reset_interrupted;
pub use ledger::{
    DEFAULT_LEDGER_KEEP, DEFAULT_LEDGER_MAX_AGE, LedgerError, LedgerRetention, state_name,
};

use crate::crash::crash_point;
use crate::store::{BacklogWrite, Store, StoredEntry};
use crate::store_thread::StoreThread;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::Instrument as _;
use triggers::{Delivered, Deliverer, Drain, SendReason, TriggerFailure, Triggers, Variables};
use triggers_proto::{Checkpoint, DeliveryAttempt};

/// Why decoupled delivery stopped. The backlog stays on disk and fires again at the next
/// start.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BacklogError {
    /// A webhook failed for good.
    #[error(transparent)]
    Webhook(#[from] BacklogFailure),
    /// The store could not delete a delivered entry (it would be sent again), or a worker
    /// could not go on.
    #[error(
        "decoupled delivery stopped: {0}; the backlog stays persisted and fires again when \
         the shard restarts"
    )]
    Stopped(String),
    /// The shard was closed (or reopened) while the call waited on its backlog; the
    /// backlog stays persisted. Call again on the open shard.
    #[error(
        "the shard was closed or reopened while this call waited on its backlog; the backlog \
         stays persisted: call again on the open shard"
    )]
    Closed,
}

/// A webhook that failed for good in decoupled delivery: the shard stops.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{failure}; transaction(s) {first_commit_seq}..={last_commit_seq} (flow_run_id {flow_run_id}) \
     not delivered; the shard stops with {depth} webhook(s) in its backlog, which stay \
     persisted and fire again when it restarts"
)]
pub struct BacklogFailure {
    /// Which trigger failed, its last status or error, and how many attempts it made.
    pub failure: TriggerFailure,
    /// The newest transaction the failed webhook covers.
    pub flow_run_id: String,
    /// First commit sequence number it covers.
    pub first_commit_seq: u64,
    /// Last commit sequence number it covers.
    pub last_commit_seq: u64,
    /// Webhooks waiting in every trigger's backlog when it failed (the failed one included).
    pub depth: usize,
}

/// What one trigger's backlog is doing, for status reports and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStatus {
    /// The trigger's index.
    pub trigger: usize,
    /// Its drain mode: `ordered`, `concurrent` or `coalesced`.
    pub drain: &'static str,
    /// Entries waiting (in flight ones included).
    pub depth: usize,
    /// Requests in flight.
    pub in_flight: usize,
    /// Webhooks delivered since the shard opened.
    pub delivered: u64,
    /// Transactions those webhooks covered.
    pub transactions_delivered: u64,
    /// Commit sequence number of the oldest transaction waiting, if any.
    pub oldest_pending_seq: Option<u64>,
    /// When the oldest transaction waiting committed, if any.
    pub oldest_committed_at: Option<SystemTime>,
}

/// The whole backlog's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BacklogStatus {
    /// Per trigger, in config order.
    pub queues: Vec<QueueStatus>,
    /// Entries a queue may hold before StartCommit waits.
    pub limit: usize,
    /// Whether a StartCommit is waiting for room right now.
    pub backpressured: bool,
    /// How many StartCommits have had to wait for room since the shard opened.
    pub backpressure_waits: u64,
    /// The failure that stopped delivery, if any.
    pub failure: Option<String>,
}

impl BacklogStatus {
    /// Entries waiting across every trigger.
    pub fn depth(&self) -> usize {
        self.queues.iter().map(|q| q.depth).sum()
    }
}

/// One trigger's queued webhook.
struct Entry {
    /// Commit sequence number of the first transaction covered: the store key.
    key_seq: u64,
    variables: Variables,
    /// Loaded at open: possibly sent before the crash, so never merged into.
    recovered: bool,
    in_flight: bool,
    /// A StartCommit is writing a merged version of this entry: not to be sent until it
    /// lands, or the send (and its deletion) would drop the merged transaction.
    merging: bool,
    /// When its first transaction committed.
    committed_at: SystemTime,
    /// Attempts of the delivery in flight, for the ledger's view of a RUNNING delivery.
    attempts: Arc<Mutex<Vec<DeliveryAttempt>>>,
}

#[derive(Default)]
struct QueueState {
    entries: VecDeque<Entry>,
    /// When the last webhook was sent, for a coalesced trigger's minimum interval.
    last_sent: Option<SystemTime>,
    delivered: u64,
    transactions_delivered: u64,
}

struct Queue {
    index: usize,
    drain: Drain,
    state: Mutex<QueueState>,
    /// Wakes the queue's worker: an entry was added or acknowledged, or one finished.
    wake: Notify,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct Shared {
    store: Arc<Store>,
    thread: StoreThread,
    triggers: Arc<Triggers>,
    deliverer: Deliverer,
    limit: usize,
    queues: Vec<Queue>,
    /// Every transaction up to this commit sequence number is acknowledged.
    acked_seq: AtomicU64,
    /// Wakes a StartCommit waiting for room (or for a failure).
    room: Notify,
    backpressured: AtomicBool,
    backpressure_waits: AtomicU64,
    failure: Mutex<Option<BacklogError>>,
    /// Set once when the shard closes: workers pick nothing new and end once their
    /// requests in flight are done, and every waiter returns [`BacklogError::Closed`].
    closing: AtomicBool,
    /// Wakes whoever waits for the backlog to drain.
    drained: Notify,
    /// Serialises ledger transitions: each reads a delivery's state and writes the next
    /// one under it, so a transition is a compare-and-set (one process owns the store).
    ledger_lock: Mutex<()>,
    retention: LedgerRetention,
    /// Terminal transitions since the last retention pass.
    terminal_since_gc: AtomicU64,
    /// Names the shard in every delivery's span.
    shard: String,
}

impl Shared {
    fn failure(&self) -> Option<BacklogError> {
        self.failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn depth(&self) -> usize {
        self.queues.iter().map(|q| q.lock().entries.len()).sum()
    }

    fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Starts closing: no new sends, and every waiter (drained, backpressure) ends now.
    fn begin_close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.room.notify_one();
        self.drained.notify_waiters();
        for queue in &self.queues {
            queue.wake.notify_one();
        }
    }

    fn status(&self) -> BacklogStatus {
        BacklogStatus {
            queues: self
                .queues
                .iter()
                .map(|queue| {
                    let state = queue.lock();
                    QueueStatus {
                        trigger: queue.index,
                        drain: queue.drain.name(),
                        depth: state.entries.len(),
                        in_flight: state.entries.iter().filter(|e| e.in_flight).count(),
                        delivered: state.delivered,
                        transactions_delivered: state.transactions_delivered,
                        oldest_pending_seq: state
                            .entries
                            .iter()
                            .map(|e| e.variables.first_commit_seq)
                            .min(),
                        oldest_committed_at: state.entries.iter().map(|e| e.committed_at).min(),
                    }
                })
                .collect(),
            limit: self.limit,
            backpressured: self.backpressured.load(Ordering::Relaxed),
            backpressure_waits: self.backpressure_waits.load(Ordering::Relaxed),
            failure: self.failure().map(|f| f.to_string()),
        }
    }

    async fn drained(&self) -> Result<(), BacklogError> {
        loop {
            let drained = self.drained.notified();
            if let Some(failure) = self.failure() {
                return Err(failure);
            }
            if self.depth() == 0 {
                return Ok(());
            }
            if self.closing() {
                return Err(BacklogError::Closed);
            }
            drained.await;
        }
    }

    fn fail(&self, failure: BacklogError) {
        tracing::error!(error = %failure, "delivery stops; the shard must be reopened");
        let mut slot = self
            .failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slot.get_or_insert(failure);
        drop(slot);
        self.room.notify_one();
        self.drained.notify_waiters();
        for queue in &self.queues {
            queue.wake.notify_one();
        }
    }
}

/// A read-only view of a backlog that outlives borrows of the shard: status reports can be
/// served while a StartCommit holds the shard waiting for room.
#[derive(Clone)]
pub struct BacklogHandle(Arc<Shared>);

impl BacklogHandle {
    /// The backlog's state now.
    pub fn status(&self) -> BacklogStatus {
        self.0.status()
    }

    /// Waits until every queue is empty (acknowledged webhooks all delivered), or fails
    /// with what stopped delivery, or with [`BacklogError::Closed`] as soon as the shard
    /// closes with webhooks still queued.
    ///
    /// Cancel-safe: it only reads. A handle keeps the shard's store open, so drop it
    /// before reopening the store.
    pub async fn drained(&self) -> Result<(), BacklogError> {
        self.0.drained().await
    }

    /// Starts closing the backlog without the shard: ends its waiters at once (a
    /// StartCommit waiting for room among them, which frees the shard for a close).
    pub(crate) fn begin_close(&self) {
        self.0.begin_close();
    }
}

impl std::fmt::Debug for BacklogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BacklogHandle")
            .field("depth", &self.0.depth())
            .finish()
    }
}

/// What a backlog is built from (besides what recovery found).
pub(crate) struct BacklogSetup {
    pub(crate) store: Arc<Store>,
    /// The shard's store thread, where backlog and ledger writes run.
    pub(crate) thread: StoreThread,
    pub(crate) triggers: Arc<Triggers>,
    pub(crate) deliverer: Deliverer,
    /// Entries a queue may hold before StartCommit waits.
    pub(crate) limit: usize,
    pub(crate) retention: LedgerRetention,
    /// Names the shard in spans.
    pub(crate) shard: String,
}

/// The decoupled delivery engine of one shard: per-trigger queues and their workers.
pub(crate) struct Backlog {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Drop for Backlog {
    fn drop(&mut self) {
        for worker in &self.workers {
            worker.abort();
        }
    }
}

impl Backlog {
    /// Loads the recovered entries and starts one worker per trigger. Nothing is sent
    /// until [`Backlog::acknowledge`] covers it.
    pub(crate) fn start(
        setup: BacklogSetup,
        recovered: Vec<(StoredEntry, Variables)>,
        last_sent_ms: Vec<Option<u64>>,
    ) -> Self {
        let BacklogSetup {
            store,
            thread,
            triggers,
            deliverer,
            limit,
            retention,
            shard,
        } = setup;
        let queues: Vec<Queue> = triggers
            .iter()
            .enumerate()
            .map(|(index, trigger)| Queue {
                index,
                drain: trigger.drain(),
                state: Mutex::new(QueueState {
                    last_sent: last_sent_ms
                        .get(index)
                        .copied()
                        .flatten()
                        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
                    ..QueueState::default()
                }),
                wake: Notify::new(),
            })
            .collect();
        for (stored, variables) in recovered {
            if let Some(queue) = queues.get(stored.trigger as usize) {
                let committed_at = stored
                    .committed_at
                    .and_then(ledger::system_time)
                    .unwrap_or_else(SystemTime::now);
                queue.lock().entries.push_back(Entry {
                    key_seq: stored.key_seq,
                    variables,
                    recovered: true,
                    in_flight: false,
                    merging: false,
                    committed_at,
                    attempts: Arc::default(),
                });
            }
        }
        let shared = Arc::new(Shared {
            store,
            thread,
            triggers,
            deliverer,
            limit: limit.max(1),
            queues,
            acked_seq: AtomicU64::new(0),
            room: Notify::new(),
            backpressured: AtomicBool::new(false),
            backpressure_waits: AtomicU64::new(0),
            failure: Mutex::new(None),
            closing: AtomicBool::new(false),
            drained: Notify::new(),
            ledger_lock: Mutex::new(()),
            retention,
            terminal_since_gc: AtomicU64::new(0),
            shard,
        });
        let workers = (0..shared.queues.len())
            .map(|index| tokio::spawn(drain_queue(shared.clone(), index)))
            .collect();
        Backlog { shared, workers }
    }

    pub(crate) fn handle(&self) -> BacklogHandle {
        BacklogHandle(self.shared.clone())
    }

    pub(crate) fn failure(&self) -> Option<BacklogError> {
        self.shared.failure()
    }

    pub(crate) fn depth(&self) -> usize {
        self.shared.depth()
    }

    /// Commit sequence number of the newest entry loaded or queued (0 if none).
    pub(crate) fn newest_seq(&self) -> u64 {
        self.shared
            .queues
            .iter()
            .filter_map(|q| q.lock().entries.back().map(|e| e.variables.last_commit_seq))
            .max()
            .unwrap_or(0)
    }

    /// Every transaction up to `seq` is acknowledged: its webhooks may go.
    ///
    /// Only a worker with room to send is woken: on a busy shard a coalesced or ordered
    /// trigger usually has a request in flight, and waking its worker on every commit
    /// would cost a cross-thread wakeup per transaction for nothing (the worker looks
    /// again when the request finishes).
    pub(crate) fn acknowledge(&self, seq: u64) {
        self.shared.acked_seq.fetch_max(seq, Ordering::SeqCst);
        for queue in &self.shared.queues {
            let max = queue.drain.max_in_flight();
            // Stops at the `max`-th in-flight entry, which on a busy queue is at its head:
            // no walk over a long backlog on the commit path.
            let busy = queue
                .lock()
                .entries
                .iter()
                .filter(|e| e.in_flight)
                .take(max)
                .count()
                == max;
            if !busy {
                queue.wake.notify_one();
            }
        }
    }

    /// StartCommit in decoupled delivery (after [`Backlog::wait_for_room`]): writes the
    /// checkpoint, the commit sequence number and each trigger's new or merged entry in
    /// one WriteBatch.
    pub(crate) async fn commit(
        &self,
        checkpoint: Checkpoint,
        variables: Option<&Variables>,
    ) -> Result<(), ShardError> {
        let Some(variables) = variables else {
            let store = self.shared.store.clone();
            crash_point!("start_commit.before_write");
            self.shared
                .thread
                .run(move || store.commit_backlog(&checkpoint, None, &[]))
                .await??;
            return Ok(());
        };
        let now = SystemTime::now();

        // Decide each trigger's write, marking merge targets so no worker sends them
        // while the merged version is being written.
        let mut batch = Vec::with_capacity(self.shared.queues.len());
        for (trigger, queue) in self.shared.queues.iter().enumerate() {
            let mut state = queue.lock();
            let target = state
                .entries
                .back_mut()
                .filter(|tail| queue.drain.coalesces() && !tail.recovered && !tail.in_flight);
            let (key_seq, params, committed_at) = match target {
                Some(tail) => {
                    tail.merging = true;
                    let mut merged = tail.variables.clone();
                    merged.merge(variables);
                    (tail.key_seq, merged.into_params(), tail.committed_at)
                }
                None => (variables.first_commit_seq, variables.to_params(), now),
            };
            batch.push(BacklogWrite {
                trigger: trigger as u32,
                key_seq,
                params,
                committed_at: ledger::timestamp(committed_at),
            });
        }

        let store = self.shared.store.clone();
        let seq = variables.last_commit_seq;
        crash_point!("start_commit.before_write");
        let written = self
            .shared
            .thread
            .run(move || store.commit_backlog(&checkpoint, Some(seq), &batch))
            .await;

        // The write landed (or not): merge the tails in memory as they were on disk, or
        // queue the new entries.
        let landed = matches!(written, Ok(Ok(())));
        for queue in &self.shared.queues {
            let mut state = queue.lock();
            match state.entries.back_mut() {
                Some(tail) if tail.merging => {
                    tail.merging = false;
                    if landed {
                        tail.variables.merge(variables);
                    }
                }
                _ if landed => state.entries.push_back(Entry {
                    key_seq: variables.first_commit_seq,
                    variables: variables.clone(),
                    recovered: false,
                    in_flight: false,
                    merging: false,
                    committed_at: now,
                    attempts: Arc::default(),
                }),
                _ => {}
            }
            // No wakeup: nothing written here may be sent before its Acknowledged, which
            // wakes the worker.
        }
        written??;
        Ok(())
    }

    /// Waits until no queue is at its limit, logging and counting the wait. A coalesced
    /// queue never grows past its in-flight entry plus the one absorbing new commits, so
    /// only ordered and concurrent triggers (or a long recovered backlog) make it wait.
    pub(crate) async fn wait_for_room(&self) -> Result<(), ShardError> {
        let shared = &self.shared;
        let full = || {
            shared.queues.iter().find_map(|queue| {
                let state = queue.lock();
                let grows = !(queue.drain.coalesces()
                    && state
                        .entries
                        .back()
                        .is_some_and(|tail| !tail.recovered && !tail.in_flight));
                (grows && state.entries.len() >= shared.limit)
                    .then_some((queue.index, state.entries.len()))
            })
        };
        let mut waited = false;
        loop {
            if let Some(failure) = shared
                .failure()
                .or_else(|| shared.closing().then_some(BacklogError::Closed))
            {
                shared.backpressured.store(false, Ordering::Relaxed);
                return Err(ShardError::Backlog(failure));
            }
            let room = shared.room.notified();
            let Some((trigger, depth)) = full() else {
                if waited {
                    shared.backpressured.store(false, Ordering::Relaxed);
                    tracing::info!("backlog has room again; StartCommit proceeds");
                }
                return Ok(());
            };
            if !waited {
                waited = true;
                shared.backpressured.store(true, Ordering::Relaxed);
                shared.backpressure_waits.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    trigger,
                    depth,
                    limit = shared.limit,
                    total_depth = shared.depth(),
                    "backpressure: trigger's backlog is full; StartCommit waits for its webhooks"
                );
            }
            room.await;
        }
    }

    /// Waits until every queue is empty, or delivery failed.
    pub(crate) async fn drained(&self) -> Result<(), ShardError> {
        Ok(self.shared.drained().await?)
    }

    /// Stops the workers and waits for them to go, so the store can be reopened at once.
    /// They pick nothing new and get up to `grace` to finish the requests they have in
    /// flight (and record them); then the rest are cut off, and stay persisted to fire
    /// again at the next start. Every waiter on the backlog ends at once.
    pub(crate) async fn shutdown(mut self, grace: Duration) {
        self.shared.begin_close();
        let workers = std::mem::take(&mut self.workers);
        let aborts: Vec<_> = workers.iter().map(JoinHandle::abort_handle).collect();
        let mut all = futures::future::join_all(workers);
        if tokio::time::timeout(grace, &mut all).await.is_err() {
            let in_flight: usize = self
                .shared
                .status()
                .queues
                .iter()
                .map(|q| q.in_flight)
                .sum();
            if in_flight > 0 {
                tracing::warn!(
                    ?grace,
                    in_flight,
                    "webhooks still in flight after the grace period are cut off; they \
                     stay persisted and fire again at the next start"
                );
            }
            for abort in &aborts {
                abort.abort();
            }
            all.await;
        }
    }
}

/// One entry picked for sending.
struct Send {
    key_seq: u64,
    variables: Variables,
    reason: SendReason,
    committed_at: SystemTime,
    /// Shared with the entry, so the ledger shows a RUNNING delivery's attempts.
    attempts: Arc<Mutex<Vec<DeliveryAttempt>>>,
}

/// What came of a picked entry.
enum Sent {
    /// Delivered, or failed for good.
    Done(Result<Delivered, TriggerFailure>),
    /// Not sent: it was no longer PENDING (an operator cancelled it first).
    NotPending,
    /// Could not be sent or recorded.
    Stopped(String),
}

/// The worker of queue `index`: picks sendable entries as its drain mode allows, sends
/// them, records each in the ledger (deleting delivered ones from the backlog), and stops
/// picking at the first failure, until an operator retries or skips the failed delivery.
async fn drain_queue(shared: Arc<Shared>, index: usize) {
    let queue = &shared.queues[index];
    let mut in_flight = FuturesUnordered::new();
    loop {
        let closing = shared.closing();
        if closing && in_flight.is_empty() {
            return;
        }
        let (picked, wait_until) = if closing || shared.failure().is_some() {
            (Vec::new(), None)
        } else {
            pick(&shared, queue, in_flight.len())
        };
        for send in picked {
            let shared = shared.clone();
            let span = tracing::warn_span!(
                "backlog",
                shard = %shared.shard,
                trigger = index,
                first_commit_seq = send.key_seq,
                last_commit_seq = send.variables.last_commit_seq,
            );
            in_flight.push(
                async move {
                    let sent = send_one(&shared, index, &send).await;
                    (send, sent)
                }
                .instrument(span),
            );
        }
        let pause = async {
            match wait_until {
                Some(at) => {
                    let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                    tokio::time::sleep(wait).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some((send, sent)) = in_flight.next() => finish(&shared, queue, send, sent).await,
            () = queue.wake.notified() => {}
            () = pause => {}
        }
    }
}

/// Moves the delivery to RUNNING (compare-and-set: only from PENDING) and sends it,
/// collecting its attempts for the ledger.
async fn send_one(shared: &Arc<Shared>, index: usize, send: &Send) -> Sent {
    let begun = {
        let shared = shared.clone();
        let record = ledger::running(index, send);
        let thread = shared.thread.clone();
        thread.run(move || shared.begin(record)).await
    };
    match begun {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return Sent::NotPending,
        Ok(Err(err)) => return Sent::Stopped(err.to_string()),
        Err(err) => return Sent::Stopped(err.to_string()),
    }
    let collector = ledger::Collector(send.attempts.clone());
    match shared
        .deliverer
        .deliver_trigger_observed(
            &shared.triggers,
            index,
            &send.variables,
            send.reason,
            &collector,
        )
        .await
    {
        Some(outcome) => Sent::Done(outcome),
        // The trigger index comes from the config the queues were built from.
        None => Sent::Stopped(format!("trigger {index} is not in the config")),
    }
}

/// Marks and returns the entries the worker may send now, and when to look again if a
/// coalesced trigger's minimum interval holds the next one back.
fn pick(shared: &Shared, queue: &Queue, in_flight: usize) -> (Vec<Send>, Option<SystemTime>) {
    let acked = shared.acked_seq.load(Ordering::SeqCst);
    let room = queue.drain.max_in_flight().saturating_sub(in_flight);
    let mut state = queue.lock();
    if room == 0 {
        return (Vec::new(), None);
    }
    if let Drain::Coalesced { min_interval } = queue.drain
        && let Some(next) = state.last_sent.map(|at| at + min_interval)
        && next > SystemTime::now()
    {
        return (Vec::new(), Some(next));
    }
    let strict_order = !matches!(queue.drain, Drain::Concurrent(_));
    let mut picked = Vec::new();
    for entry in state.entries.iter_mut() {
        if picked.len() == room {
            break;
        }
        let sendable =
            !entry.in_flight && !entry.merging && entry.variables.last_commit_seq <= acked;
        if sendable {
            entry.in_flight = true;
            entry.attempts = Arc::default();
            picked.push(Send {
                key_seq: entry.key_seq,
                variables: entry.variables.clone(),
                committed_at: entry.committed_at,
                attempts: entry.attempts.clone(),
                reason: if entry.recovered {
                    SendReason::RecoveryRefire
                } else {
                    SendReason::FirstSend
                },
            });
        } else if strict_order {
            // Ordered and coalesced send only the oldest entry, one at a time.
            break;
        }
        if strict_order {
            break;
        }
    }
    if !picked.is_empty() {
        state.last_sent = Some(SystemTime::now());
    }
    (picked, None)
}

/// Records a finished send in the ledger: a delivered entry becomes SUCCESS and leaves
/// the backlog (with the trigger's last send time) in one batch; a failure becomes FAILED
/// and stops the backlog.
async fn finish(shared: &Arc<Shared>, queue: &Queue, send: Send, sent: Sent) {
    let failure = match sent {
        Sent::Done(Ok(_)) => None,
        Sent::Done(Err(failure)) => Some(failure),
        Sent::NotPending => {
            let mut state = queue.lock();
            if let Some(at) = state.entries.iter().position(|e| e.key_seq == send.key_seq) {
                state.entries.remove(at);
            }
            let empty = state.entries.is_empty();
            drop(state);
            shared.room.notify_one();
            if empty {
                shared.drained.notify_waiters();
            }
            return;
        }
        Sent::Stopped(detail) => {
            queue.lock().entries.iter_mut().for_each(|e| {
                if e.key_seq == send.key_seq {
                    e.in_flight = false;
                }
            });
            shared.fail(BacklogError::Stopped(detail));
            return;
        }
    };
    let attempts = ledger::take_attempts(&send.attempts);
    if let Some(failure) = failure {
        let record = ledger::failed(queue.index, &send, attempts, &failure);
        let recorded = {
            let shared = shared.clone();
            let thread = shared.thread.clone();
            thread.run(move || shared.record_failure(record)).await
        };
        let recorded = match recorded {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(err) => Err(err.to_string()),
        };
        if let Err(err) = recorded {
            // The shard stops anyway; the entry stays in the backlog and re-fires.
            tracing::error!(error = %err, "cannot record a failed delivery in the ledger");
        }
        queue.lock().entries.iter_mut().for_each(|e| {
            if e.key_seq == send.key_seq {
                e.in_flight = false;
            }
        });
        shared.fail(BacklogError::Webhook(BacklogFailure {
            failure,
            flow_run_id: send.variables.flow_run_id.clone(),
            first_commit_seq: send.variables.first_commit_seq,
            last_commit_seq: send.variables.last_commit_seq,
            depth: shared.depth(),
        }));
        return;
    }

    crash_point!("backlog.before_delete");
    let sent_at_ms = match queue.drain {
        Drain::Coalesced { min_interval } if !min_interval.is_zero() => queue
            .lock()
            .last_sent
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        _ => None,
    };
    let record = ledger::succeeded(queue.index, &send, attempts);
    let recorded = {
        let shared = shared.clone();
        let thread = shared.thread.clone();
        thread
            .run(move || shared.record_success(record, sent_at_ms))
            .await
    };
    let recorded = match recorded {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(err) => Err(err.to_string()),
    };
    if let Err(err) = recorded {
        shared.fail(BacklogError::Stopped(format!(
            "recording a delivered webhook (and deleting its backlog entry) failed: {err}"
        )));
        return;
    }

    let mut state = queue.lock();
    if let Some(at) = state.entries.iter().position(|e| e.key_seq == send.key_seq) {
        state.entries.remove(at);
    }
    state.delivered += 1;
    state.transactions_delivered += send.variables.transaction_count;
    let empty = state.entries.is_empty();
    drop(state);
    shared.room.notify_one();
    if empty {
        shared.drained.notify_waiters();
    }
}
