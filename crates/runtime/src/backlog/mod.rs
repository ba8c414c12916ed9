//! Decoupled delivery: each trigger's committed-but-undelivered webhooks form a persisted
//! queue (its backlog) that a worker task drains while the shard goes on committing.
//!
//! The rules that keep at-least-once intact:
//! - An entry is written by StartCommit's WriteBatch (with the checkpoint) and deleted only
//!   after its webhook is accepted (or an operator skips it). Recovery reloads every entry,
//!   and an in-memory entry is never dropped while its stored entry exists.
//! - An entry is sent only once every transaction it covers is acknowledged.
//! - A coalesced trigger merges a new transaction into its newest entry only while that
//!   entry was never sent (it is *sealed* once picked, or if the ledger has a record of it
//!   at open): the merged entry is written under the same key in the commit's WriteBatch,
//!   so a crash keeps either the old entry and the old checkpoint or both new ones. A
//!   re-fire repeats exactly the webhook (same id, same variables) a receiver may already
//!   have. At open, a coalesced trigger's never-sent entries (after its oldest) are
//!   merged into one (see [`recover`]), so its backlog holds at most two entries across
//!   restarts too.
//! - An ordered or concurrent trigger's queue holds at most `limit` entries; a commit that
//!   would exceed it waits (backpressure) until the worker makes room. A coalesced queue
//!   never waits: it holds at most its sealed head and the tail absorbing new commits.
//! - A webhook that fails for good is FAILED until an operator retries or skips it (or
//!   the shard reopens); every failure is tracked, each one on its entry. While any is
//!   FAILED the backlog is stopped: commits are refused, and workers send only what an
//!   operator retried.
//! - Every change to an entry's bookkeeping that goes with a store write is made on the
//!   store lane, in the same job as the write: a dropped future cannot split them.
//! - Entries are keyed by their trigger's name. An entry whose trigger the config no
//!   longer has (removed or renamed) is *orphaned*: kept in the store, never sent,
//!   reported in [`BacklogStatus::orphaned`] and in the ledger's list as PENDING, and
//!   skippable by an operator. It neither blocks nor counts toward the other triggers'
//!   backlog; a config that brings the name back sends it at the next open.

mod ledger;
mod offline;
mod operator;

pub use ledger::{DEFAULT_LEDGER_KEEP, DEFAULT_LEDGER_MAX_AGE, LedgerError, LedgerRetention};
pub use offline::StoppedShard;
pub use operator::{MAX_REPLAY, ReplayRange};

use crate::crash::crash_point;
use crate::shard_store::ShardStore;
use crate::store::{BacklogWrite, KeyOp, Store, StoreError, StoredEntry};
use crate::store_pool::StoreTaskError;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use ledger::Ledger;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument as _;
use triggers::{
    Delivered, Deliverer, Drain, OnFailure, SendReason, TriggerFailure, Triggers, Variables,
};
use triggers_proto::{Checkpoint, DeliveryAttempt};

/// Why decoupled delivery stopped, or why a call waiting on the backlog ended. The
/// backlog stays on disk either way: what stopped delivery fires again at the next start,
/// and after [`BacklogError::Closed`] the call can be made again on the open shard.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BacklogError {
    /// A webhook failed for good.
    #[error(transparent)]
    Webhook(#[from] BacklogFailure),
    /// The store could not record a delivery's outcome, a worker could not go on, or a
    /// StartCommit was abandoned during its store write: the shard must be reopened.
    #[error(
        "decoupled delivery stopped: {what}{}; the backlog stays persisted and fires again \
         when the shard restarts",
        .cause.as_ref().map(|cause| format!(": {cause}")).unwrap_or_default()
    )]
    Stopped {
        /// What could not go on.
        what: String,
        /// The failure behind it, when one was: a store write, store work that panicked
        /// or never ran.
        #[source]
        cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// The shard was closed (or reopened) while the call waited on its backlog; the
    /// backlog stays persisted. Call again on the open shard.
    #[error(
        "the shard was closed or reopened while this call waited on its backlog; the backlog \
         stays persisted: call again on the open shard"
    )]
    Closed,
}

impl BacklogError {
    /// Delivery stopped for `what`.
    fn stopped(what: impl Into<String>) -> Self {
        BacklogError::Stopped {
            what: what.into(),
            cause: None,
        }
    }

    /// Delivery stopped for `what`, because of `cause`.
    fn stopped_by(
        what: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        BacklogError::Stopped {
            what: what.into(),
            cause: Some(Arc::new(cause)),
        }
    }
}

/// A webhook that failed for good in decoupled delivery (the oldest one, when several
/// have): the backlog stops until an operator retries or skips every failed delivery, or
/// the shard reopens.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{failure}; transaction(s) {first_commit_seq}..={last_commit_seq} (flow_run_id {flow_run_id}) \
     not delivered; the shard stops with {depth} webhook(s) in its backlog ({failed} of them \
     failed), which stay persisted and fire again when it restarts or when an operator \
     retries (or skips) each failed one"
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
    /// Webhooks waiting in every trigger's backlog (the failed ones included).
    pub depth: usize,
    /// Deliveries FAILED now, across every trigger (this one included).
    pub failed: usize,
}

/// What one trigger's backlog is doing, for status reports and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStatus {
    /// The trigger's index (in config order).
    pub trigger: u32,
    /// The trigger's name: what its store keys, ledger records and metric labels use.
    pub name: String,
    /// How it drains (`Drain::as_str` names it as configs do).
    pub drain: Drain,
    /// Entries waiting (in flight ones included).
    pub depth: usize,
    /// Requests in flight.
    pub in_flight: usize,
    /// Webhooks delivered since the shard opened.
    pub delivered: u64,
    /// Transactions those webhooks covered.
    pub transactions_delivered: u64,
    /// Of `delivered`, those the receiver said it already had (a status of the trigger's
    /// `responses.alreadyDelivered` to a re-send).
    pub already_delivered: u64,
    /// Deliveries that failed for good and became dead letters since the shard opened
    /// (a trigger whose `onFailure` is `deadLetter`): the queue went on without them.
    pub dead_letters: u64,
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
    /// What stopped delivery, if anything: the oldest failed delivery, or why the shard
    /// must be reopened.
    pub failure: Option<String>,
    /// Entries of triggers the config no longer has, per trigger name (in name order):
    /// kept, never sent, until the trigger comes back or an operator skips them.
    pub orphaned: Vec<OrphanedQueue>,
}

/// Backlog entries of a trigger the config no longer has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanedQueue {
    /// The trigger's name, as its store keys hold it.
    pub name: String,
    /// Entries kept.
    pub depth: usize,
    /// Commit sequence number of the oldest one.
    pub oldest_pending_seq: u64,
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
    first_commit_seq: u64,
    variables: Variables,
    /// Loaded at open: it may have been sent before the stop, so it fires as a
    /// `recovery-refire`.
    recovered: bool,
    /// It may have reached a receiver (picked for sending in this process, or on the
    /// ledger's record at open): never merged into, so a re-fire repeats it exactly.
    sealed: bool,
    /// Where it is on its way out.
    stage: Stage,
    /// An operator retried it: sent as `operator-replay`, even while another delivery
    /// is FAILED.
    replay: bool,
    /// When its first transaction committed.
    committed_at: SystemTime,
    /// Attempts of the delivery in flight, for the ledger's view of a RUNNING delivery.
    attempts: Arc<Mutex<Vec<DeliveryAttempt>>>,
}

/// Where a queued entry is on its way out: one of these at a time.
#[derive(Debug)]
enum Stage {
    /// Waiting to be sent, once every transaction it covers is acknowledged.
    Queued,
    /// A StartCommit is writing a merged version of it: not to be sent until that lands,
    /// or the send (and its deletion) would drop the merged transaction.
    Merging,
    /// Picked for sending: its request is in flight.
    InFlight,
    /// Failed for good, with why, until an operator retries or skips it (or the shard
    /// reopens).
    Failed(TriggerFailure),
}

impl Entry {
    fn in_flight(&self) -> bool {
        matches!(self.stage, Stage::InFlight)
    }

    fn failed(&self) -> bool {
        matches!(self.stage, Stage::Failed(_))
    }

    /// Its send did not finish (or was not recorded): it waits to be picked again.
    fn unpick(&mut self) {
        if self.in_flight() {
            self.stage = Stage::Queued;
        }
    }

    /// What the ledger records of it.
    fn delivery<'a>(&'a self, queue: &'a Queue) -> ledger::Delivery<'a> {
        ledger::Delivery {
            trigger: queue.index,
            name: &queue.name,
            first_commit_seq: self.first_commit_seq,
            variables: &self.variables,
            committed_at: self.committed_at,
        }
    }

    /// Where it is, for the ledger's view of it.
    fn live(&self) -> ledger::Live {
        match self.stage {
            Stage::Failed(_) => ledger::Live::Failed,
            Stage::InFlight => ledger::Live::Running(ledger::take_attempts(&self.attempts)),
            Stage::Queued | Stage::Merging => ledger::Live::Pending,
        }
    }

    fn new(first_commit_seq: u64, variables: Variables, committed_at: SystemTime) -> Self {
        Entry {
            first_commit_seq,
            variables,
            recovered: false,
            sealed: false,
            stage: Stage::Queued,
            replay: false,
            committed_at,
            attempts: Arc::default(),
        }
    }
}

#[derive(Default)]
struct QueueState {
    entries: VecDeque<Entry>,
    /// When the last webhook was sent, on the monotonic clock, for a coalesced trigger's
    /// minimum interval: a wall clock stepping back must not hold a trigger.
    last_sent: Option<Instant>,
    /// The same on the wall clock, persisted so the interval holds across restarts.
    last_sent_wall: Option<SystemTime>,
    delivered: u64,
    transactions_delivered: u64,
    already_delivered: u64,
    /// Deliveries that failed for good and became dead letters since the shard opened.
    dead_letters: u64,
}

impl QueueState {
    fn entry_mut(&mut self, first_commit_seq: u64) -> Option<&mut Entry> {
        self.entries
            .iter_mut()
            .find(|e| e.first_commit_seq == first_commit_seq)
    }

    fn remove(&mut self, first_commit_seq: u64) -> Option<Entry> {
        let at = self
            .entries
            .iter()
            .position(|e| e.first_commit_seq == first_commit_seq)?;
        self.entries.remove(at)
    }
}

struct Queue {
    /// Its trigger's index (in config order).
    index: u32,
    /// Its trigger's name: its entries' store keys.
    name: Arc<str>,
    drain: Drain,
    /// What a webhook that fails for good does to the queue.
    on_failure: OnFailure,
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
    /// The shard's store: backlog and ledger writes run on its thread.
    store: ShardStore,
    triggers: Arc<Triggers>,
    deliverer: Deliverer,
    limit: usize,
    queues: Vec<Queue>,
    /// Every transaction up to this commit sequence number is acknowledged.
    acked_seq: AtomicU64,
    /// Wakes a StartCommit waiting for room (or for a failure). Shared with store-thread
    /// jobs, which wake it after letting go of the backlog (see [`Shared::run_job`]).
    room: Arc<Notify>,
    backpressured: AtomicBool,
    backpressure_waits: AtomicU64,
    /// Why the shard must be reopened, if it must: a store write that failed, a worker
    /// that could not go on, an abandoned StartCommit. Cleared only by a reopen.
    fatal: Mutex<Option<BacklogError>>,
    /// Entries FAILED now, across every queue (each holds its own failure).
    failed: AtomicUsize,
    /// Set once when the shard closes: workers pick nothing new and end once their
    /// requests in flight are done, and every waiter returns [`BacklogError::Closed`].
    closing: AtomicBool,
    /// Wakes whoever waits for the backlog to drain. Shared like `room`.
    drained: Arc<Notify>,
    /// The ledger's transitions.
    ledger: Ledger,
    /// Names the shard in every delivery's span.
    shard: String,
    /// Entries of triggers the config no longer has, by (name, first commit seq): they
    /// leave only when an operator skips them.
    orphans: Mutex<Vec<StoredEntry>>,
}

/// Whether workers may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Everything acknowledged may go.
    Running,
    /// A delivery is FAILED: only what an operator retried goes.
    Failed,
    /// The shard must be reopened: nothing goes.
    Fatal,
}

/// Trigger `trigger`'s item of a per-trigger list (in config order), if it has one.
fn at_trigger<T>(items: &[T], trigger: u32) -> Option<&T> {
    usize::try_from(trigger)
        .ok()
        .and_then(|slot| items.get(slot))
}

impl Shared {
    /// Trigger `trigger`'s queue, if the config has that trigger.
    fn queue(&self, trigger: u32) -> Option<&Queue> {
        at_trigger(&self.queues, trigger)
    }

    /// The trigger whose queue `queue` is.
    fn trigger_of(&self, queue: &Queue) -> Option<&triggers::Trigger> {
        usize::try_from(queue.index)
            .ok()
            .and_then(|index| self.triggers.get(index))
    }

    /// The queue of the trigger named `name`, if the config has it.
    fn queue_named(&self, name: &str) -> Option<&Queue> {
        self.queues.iter().find(|queue| *queue.name == *name)
    }

    fn orphans(&self) -> MutexGuard<'_, Vec<StoredEntry>> {
        self.orphans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn fatal(&self) -> Option<BacklogError> {
        self.fatal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn stop(&self) -> Stop {
        if self.fatal().is_some() {
            Stop::Fatal
        } else if self.failed.load(Ordering::SeqCst) > 0 {
            Stop::Failed
        } else {
            Stop::Running
        }
    }

    /// What stops delivery: the fatal error, else the oldest FAILED delivery (by first
    /// commit sequence number, then trigger). Cheap unless something failed.
    fn failure(&self) -> Option<BacklogError> {
        if let Some(fatal) = self.fatal() {
            return Some(fatal);
        }
        if self.failed.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let (mut depth, mut failed, mut oldest) = (0, 0, None::<((u64, u32), BacklogFailure)>);
        for queue in &self.queues {
            let state = queue.lock();
            depth += state.entries.len();
            for entry in &state.entries {
                let Stage::Failed(failure) = &entry.stage else {
                    continue;
                };
                failed += 1;
                let key = (entry.first_commit_seq, queue.index);
                if oldest.as_ref().is_none_or(|(at, _)| key < *at) {
                    let failure = BacklogFailure {
                        failure: failure.clone(),
                        flow_run_id: entry.variables.flow_run_id.clone(),
                        first_commit_seq: entry.variables.first_commit_seq,
                        last_commit_seq: entry.variables.last_commit_seq,
                        depth: 0,
                        failed: 0,
                    };
                    oldest = Some((key, failure));
                }
            }
        }
        oldest.map(|(_, failure)| {
            BacklogError::Webhook(BacklogFailure {
                depth,
                failed,
                ..failure
            })
        })
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
        // A worker's `pick` reads `closing` under its queue's lock: passing through each
        // lock waits for a pick under way, and every later one sees the flag, so nothing
        // is picked once this returns.
        for queue in &self.queues {
            drop(queue.lock());
        }
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
                        name: queue.name.to_string(),
                        drain: queue.drain,
                        depth: state.entries.len(),
                        in_flight: state.entries.iter().filter(|e| e.in_flight()).count(),
                        delivered: state.delivered,
                        transactions_delivered: state.transactions_delivered,
                        already_delivered: state.already_delivered,
                        dead_letters: state.dead_letters,
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
            orphaned: orphaned_queues(&self.orphans()),
        }
    }

    /// Cancel-safe: it only watches.
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

    /// Stops delivery until the shard is reopened, and tells whoever waits.
    fn fail(&self, failure: BacklogError) {
        self.set_fatal(failure);
        self.changed();
    }

    /// Stops delivery until the shard is reopened, telling no one: for store-thread work,
    /// whose caller tells waiters once the work (and every reference it holds) is done.
    fn set_fatal(&self, failure: BacklogError) {
        tracing::error!(error = %failure, "delivery stops; the shard must be reopened");
        let mut slot = self
            .fatal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slot.get_or_insert(failure);
    }

    /// Tells a StartCommit waiting for room and whoever waits for the drain that the
    /// backlog changed (an entry left, or delivery stopped). Store-thread work does not
    /// call it: see [`Shared::run_job`].
    fn changed(&self) {
        self.room.notify_one();
        self.drained.notify_waiters();
    }

    /// One FAILED delivery fewer; the last one resumes every worker.
    fn failure_cleared(&self) {
        let left = self.failed.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        if left == 0 {
            tracing::info!("no delivery is FAILED any more; the backlog resumes");
            for queue in &self.queues {
                queue.wake.notify_one();
            }
        }
    }

    /// StartCommit's store work, on the store lane: picks each trigger's merge target
    /// or new entry, writes the batch, and puts in memory what landed, in one job.
    fn commit_now(
        self: &Arc<Self>,
        store: &Store,
        checkpoint: &Checkpoint,
        variables: Option<&Variables>,
    ) -> Result<(), StoreError> {
        let Some(variables) = variables else {
            crate::crash::shard_point("start_commit.store_write", &self.shard);
            return store.commit_backlog(checkpoint, None, &[]);
        };
        let (mut merging, batch) = self.plan(variables);
        crate::crash::shard_point("start_commit.store_write", &self.shard);
        let written = store.commit_backlog(checkpoint, Some(variables.last_commit_seq), &batch);
        merging.apply = written.is_ok();
        drop(merging);
        // No wakeup: nothing written here may be sent before its Acknowledged, which
        // wakes the worker.
        written
    }

    /// Decides each trigger's write of a commit: a merge into its tail, or a new entry,
    /// or nothing when its collections filter leaves nothing of `variables`. Marks the
    /// merge targets so no worker sends them until the write is known; the returned
    /// guard clears the marks (and, told the write landed, applies it) when dropped,
    /// even if the caller panics.
    fn plan<'v>(self: &Arc<Self>, variables: &'v Variables) -> (Merging<'v>, Vec<BacklogWrite>) {
        let now = SystemTime::now();
        // What each trigger sees of the transaction: its collections filter may leave
        // nothing, and then the transaction is not its to send (nor to merge). Borrowed
        // when there is no filter: a commit copies the variables only for new entries.
        let seen: Vec<Option<Cow<'v, Variables>>> = self
            .queues
            .iter()
            .map(|queue| self.trigger_of(queue)?.variables_for(variables))
            .collect();
        let mut batch = Vec::with_capacity(self.queues.len());
        for (queue, variables) in self.queues.iter().zip(&seen) {
            let Some(variables) = variables.as_deref() else {
                continue;
            };
            let mut state = queue.lock();
            let target = state
                .entries
                .back_mut()
                .filter(|tail| queue.drain.coalesces() && !tail.sealed);
            let (first_commit_seq, params, committed_at) = match target {
                Some(tail) => {
                    tail.stage = Stage::Merging;
                    let mut merged = tail.variables.clone();
                    merged.merge(variables);
                    (
                        tail.first_commit_seq,
                        merged.into_params(),
                        tail.committed_at,
                    )
                }
                None => (variables.first_commit_seq, variables.to_params(), now),
            };
            batch.push(BacklogWrite {
                trigger: queue.name.clone(),
                first_commit_seq,
                params,
                committed_at: ledger::timestamp(committed_at),
            });
        }
        let merging = Merging {
            shared: self.clone(),
            seen,
            now,
            apply: false,
        };
        (merging, batch)
    }
}

/// Ends a commit's merges (see [`Shared::plan`]): when the write landed (`apply`), merges
/// the tails in memory as they are on disk and queues the new entries, committed `now`;
/// in any case clears the merge marks. `seen[i]` is what queue `i`'s trigger sees of the
/// transaction (`None`: its filter leaves nothing, so it got no write).
pub(crate) struct Merging<'v> {
    shared: Arc<Shared>,
    seen: Vec<Option<Cow<'v, Variables>>>,
    now: SystemTime,
    apply: bool,
}

impl Merging<'_> {
    /// The write landed: apply it in memory (as the drop does).
    pub(crate) fn landed(mut self) {
        self.apply = true;
    }

    /// The plan, holding its own copy of what it applies, so it outlives the variables
    /// it was made from (a commit the host writes).
    pub(crate) fn into_owned(mut self) -> Merging<'static> {
        Merging {
            shared: self.shared.clone(),
            seen: std::mem::take(&mut self.seen)
                .into_iter()
                .map(|seen| seen.map(|v| Cow::Owned(v.into_owned())))
                .collect(),
            now: self.now,
            // This one applies nothing: its marks now belong to the owned plan.
            apply: false,
        }
    }
}

impl Drop for Merging<'_> {
    fn drop(&mut self) {
        let seen = std::mem::take(&mut self.seen);
        for (queue, seen) in self.shared.queues.iter().zip(seen) {
            let Some(variables) = seen else {
                continue;
            };
            let mut state = queue.lock();
            match state.entries.back_mut() {
                Some(tail) if matches!(tail.stage, Stage::Merging) => {
                    tail.stage = Stage::Queued;
                    if self.apply {
                        tail.variables.merge(&variables);
                    }
                }
                _ if self.apply => state.entries.push_back(Entry::new(
                    variables.first_commit_seq,
                    variables.into_owned(),
                    self.now,
                )),
                _ => {}
            }
        }
    }
}

/// Fails the backlog if a StartCommit is dropped while its store work is queued or
/// running: that work still lands (or not) as a whole, but nobody learns which, so the
/// shard must be reopened, and whoever waits for the backlog hears so at once.
struct CommitInFlight<'a> {
    shared: &'a Shared,
    done: bool,
}

impl Drop for CommitInFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.shared.fail(BacklogError::stopped(
                "a StartCommit was cancelled (its caller stopped waiting) during its store \
                 write, which lands or not as a whole; the shard must be reopened",
            ));
        }
    }
}

/// Counts a StartCommit as waiting for room while it does; dropping it (the caller gave
/// up) clears the flag.
struct WaitingForRoom<'a> {
    shared: &'a Shared,
    waiting: bool,
}

impl Drop for WaitingForRoom<'_> {
    fn drop(&mut self) {
        if self.waiting {
            self.shared.backpressured.store(false, Ordering::Relaxed);
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
    /// Cancel-safe: it only watches; dropping it changes nothing. A handle keeps the
    /// shard's store open, so drop it before reopening the store.
    pub async fn drained(&self) -> Result<(), BacklogError> {
        self.0.drained().await
    }

    /// Starts closing the backlog without the shard: ends its waiters at once (a
    /// StartCommit waiting for room among them, which frees the shard for a close). A
    /// host that shares the shard between tasks (the sidecar) calls it first, then
    /// [`crate::Shard::close`]; the entries stay persisted.
    pub fn begin_close(&self) {
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
    /// The shard's store, where backlog and ledger writes run.
    pub(crate) store: ShardStore,
    pub(crate) triggers: Arc<Triggers>,
    pub(crate) deliverer: Deliverer,
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
    /// Loads the recovered entries (from [`recover`]) and starts one worker per trigger.
    /// Nothing is sent until [`Backlog::acknowledge`] covers it. A queue holds up to
    /// `limit` entries before StartCommit waits.
    pub(crate) fn start(setup: BacklogSetup, limit: usize, recovered: Recovered) -> Self {
        let Recovered {
            entries: recovered,
            orphans,
            last_sent_ms,
        } = recovered;
        let BacklogSetup {
            store,
            triggers,
            deliverer,
            retention,
            shard,
        } = setup;
        let (now, wall_now) = (Instant::now(), SystemTime::now());
        // The config holds at most `triggers::MAX_TRIGGERS`, so every index fits a u32.
        let queues: Vec<Queue> = (0..)
            .zip(triggers.iter())
            .map(|(index, trigger)| {
                let last_sent_wall = at_trigger(&last_sent_ms, index)
                    .copied()
                    .flatten()
                    .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
                Queue {
                    index,
                    name: trigger.name().into(),
                    drain: trigger.drain(),
                    on_failure: trigger.on_failure(),
                    state: Mutex::new(QueueState {
                        last_sent: last_sent_wall.map(|at| since_on_monotonic(at, now, wall_now)),
                        last_sent_wall,
                        ..QueueState::default()
                    }),
                    wake: Notify::new(),
                }
            })
            .collect();
        for (stored, variables) in recovered {
            if let Some(queue) = queues.iter().find(|q| *q.name == *stored.trigger) {
                let committed_at = stored
                    .committed_at
                    .and_then(ledger::system_time)
                    .unwrap_or_else(SystemTime::now);
                queue.lock().entries.push_back(Entry {
                    recovered: true,
                    sealed: stored.sent,
                    replay: stored.replay,
                    ..Entry::new(stored.first_commit_seq, variables, committed_at)
                });
            }
        }
        let shared = Arc::new(Shared {
            store,
            triggers,
            deliverer,
            limit: limit.max(1),
            queues,
            acked_seq: AtomicU64::new(0),
            room: Arc::default(),
            backpressured: AtomicBool::new(false),
            backpressure_waits: AtomicU64::new(0),
            fatal: Mutex::new(None),
            failed: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            drained: Arc::default(),
            ledger: Ledger::new(retention),
            shard,
            orphans: Mutex::new(orphans),
        });
        let workers = shared
            .queues
            .iter()
            .map(|queue| tokio::spawn(drain_queue(shared.clone(), queue.index)))
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
                .filter(|e| e.in_flight())
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
    ///
    /// Not cancel-safe, by necessity, but never wedging: the store work, and the memory
    /// bookkeeping that goes with it, run as one job on the store lane, which finishes
    /// even if this future is dropped; dropping it there stops the backlog with an error
    /// saying the shard must be reopened (the caller cannot know whether it landed).
    pub(crate) async fn commit(
        &self,
        checkpoint: Checkpoint,
        variables: Option<&Variables>,
    ) -> Result<(), StoreTaskError> {
        let shared = self.shared.clone();
        let variables = variables.cloned();
        let mut in_flight = CommitInFlight {
            shared: &self.shared,
            done: false,
        };
        let written = self
            .shared
            .store
            .run(move |store| shared.commit_now(store, &checkpoint, variables.as_ref()))
            .await;
        in_flight.done = true;
        written?.map_err(StoreTaskError::Store)
    }

    /// StartCommit whose write a host makes (after [`Backlog::wait_for_room`]): plans
    /// each trigger's new or merged entry, marking merge targets, and returns the writes
    /// with the plan. Writes nothing. Drop the plan with [`Merging::landed`] once the
    /// host's batch is written, or as it is if it was not; until then the merge targets
    /// are not sent.
    ///
    /// Cancel-safe: one job on the store lane; dropped, the plan it made is dropped
    /// with it (marks cleared, nothing applied).
    pub(crate) async fn prepare(
        &self,
        variables: &Variables,
    ) -> Result<(Merging<'static>, Vec<KeyOp>), StoreTaskError> {
        let shared = self.shared.clone();
        let variables = variables.clone();
        self.shared
            .store
            .run(move |store| {
                let (merging, batch) = shared.plan(&variables);
                let ops = store.commit_ops(Some(variables.last_commit_seq), &batch, None);
                (merging.into_owned(), ops)
            })
            .await
    }

    /// Waits until no ordered or concurrent queue is at its limit, logging and counting
    /// the wait. A coalesced queue never waits: it holds at most the entry being sent (or
    /// failed) and the one absorbing new commits.
    ///
    /// Only the queues the commit writes to count: a trigger whose collections filter
    /// leaves nothing of `variables` gets no entry, so its full queue holds nothing back.
    ///
    /// Cancel-safe: dropping it writes nothing and clears the backpressure flag.
    pub(crate) async fn wait_for_room(&self, variables: &Variables) -> Result<(), BacklogError> {
        let shared = &self.shared;
        let writes_to = |queue: &Queue| {
            shared.trigger_of(queue).is_some_and(|trigger| {
                variables
                    .collection_names
                    .iter()
                    .any(|name| trigger.fires_for(name))
            })
        };
        let full = || {
            shared
                .queues
                .iter()
                .filter(|queue| !queue.drain.coalesces() && writes_to(queue))
                .find_map(|queue| {
                    let depth = queue.lock().entries.len();
                    (depth >= shared.limit).then_some((queue, depth))
                })
        };
        let mut wait = WaitingForRoom {
            shared,
            waiting: false,
        };
        loop {
            let room = shared.room.notified();
            if let Some(failure) = shared
                .failure()
                .or_else(|| shared.closing().then_some(BacklogError::Closed))
            {
                return Err(failure);
            }
            let Some((queue, depth)) = full() else {
                if wait.waiting {
                    tracing::info!("backlog has room again; StartCommit proceeds");
                }
                return Ok(());
            };
            if !wait.waiting {
                wait.waiting = true;
                shared.backpressured.store(true, Ordering::Relaxed);
                shared.backpressure_waits.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    trigger = queue.index,
                    trigger_name = &*queue.name,
                    depth,
                    limit = shared.limit,
                    total_depth = shared.depth(),
                    "backpressure: trigger's backlog is full; StartCommit waits for its webhooks"
                );
            }
            room.await;
        }
    }

    /// Waits until every queue is empty, or delivery stopped. Cancel-safe.
    pub(crate) async fn drained(&self) -> Result<(), BacklogError> {
        self.shared.drained().await
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

/// What recovery found for a backlog to start from.
#[derive(Default)]
pub(crate) struct Recovered {
    /// Entries of the config's triggers (from [`recover`]), decoded, per trigger in
    /// commit order.
    pub(crate) entries: Vec<(StoredEntry, Variables)>,
    /// Entries of triggers the config no longer has, by (name, first commit seq).
    pub(crate) orphans: Vec<StoredEntry>,
    /// When each trigger last sent (unix ms), in config order.
    pub(crate) last_sent_ms: Vec<Option<u64>>,
}

/// Sums orphaned entries (sorted by name, then commit) per trigger name.
fn orphaned_queues(orphans: &[StoredEntry]) -> Vec<OrphanedQueue> {
    let mut queues: Vec<OrphanedQueue> = Vec::new();
    for entry in orphans {
        match queues.last_mut() {
            Some(queue) if queue.name == entry.trigger => {
                queue.depth += 1;
                queue.oldest_pending_seq = queue.oldest_pending_seq.min(entry.first_commit_seq);
            }
            _ => queues.push(OrphanedQueue {
                name: entry.trigger.clone(),
                depth: 1,
                oldest_pending_seq: entry.first_commit_seq,
            }),
        }
    }
    queues
}

/// Where on the monotonic clock a past wall-clock time `at` falls, given that `now` and
/// `wall_now` are the same instant. A time in the future (a clock that was ahead, or has
/// since stepped back) counts as now, so it holds a trigger for at most one interval.
fn since_on_monotonic(at: SystemTime, now: Instant, wall_now: SystemTime) -> Instant {
    let ago = wall_now.duration_since(at).unwrap_or_default();
    now.checked_sub(ago).unwrap_or(now)
}

/// Reads the backlog at open, first merging each coalesced trigger's never-sent entries
/// into one, in one WriteBatch per trigger, so its backlog holds at most two entries
/// across restarts (the oldest, maybe sent, and one absorbing commits) instead of gaining
/// one each time. `coalesced` names the triggers that coalesce. Runs on the store
/// thread.
///
/// Never-sent means: not the trigger's oldest entry, and no ledger record. A strict-order
/// queue sends an entry only once every older one is gone, so only the oldest can have
/// been sent without its record having become durable (the record is written unsynced
/// before the first request; a later synced commit makes it durable, a power cut before
/// that loses it). The oldest entry therefore counts as sent, and so does any entry the
/// ledger knows (sent while the trigger drained concurrently): those are kept exactly as
/// they are, so a re-fire repeats what a receiver may have.
///
/// First moves deliveries a stop interrupted back to PENDING (either mode drains a
/// backlog, so either resets them). One job on the store lane: cancel-safe as
/// [`ShardStore`]'s methods are.
pub(crate) async fn recover(
    store: &ShardStore,
    coalesced: Vec<String>,
) -> Result<Vec<StoredEntry>, StoreTaskError> {
    store
        .run(move |store| {
            let reset = ledger::reset_interrupted(store)?;
            if reset > 0 {
                tracing::info!(
                    reset,
                    "deliveries interrupted by the last stop are pending again"
                );
            }
            recover_now(store, &coalesced)
        })
        .await?
        .map_err(StoreTaskError::Store)
}

fn recover_now(store: &Store, coalesced: &[String]) -> Result<Vec<StoredEntry>, StoreError> {
    let entries = store.backlog()?;
    let mut recovered = Vec::with_capacity(entries.len());
    let mut entries = entries.into_iter().peekable();
    while let Some(mut oldest) = entries.next() {
        oldest.sent = true;
        // One trigger's entries, in commit order.
        let trigger = oldest.trigger.clone();
        let mut queue = vec![oldest];
        while let Some(next) = entries.next_if(|e| e.trigger == trigger) {
            queue.push(next);
        }
        let unsent = queue.iter().rev().take_while(|e| !e.sent).count();
        if coalesced.contains(&trigger) && unsent >= 2 {
            let keep = queue.len() - unsent;
            let merged = merge_unsent(store, &queue[keep..])?;
            queue.truncate(keep);
            queue.extend(merged);
        }
        recovered.extend(queue);
    }
    Ok(recovered)
}

/// Merges never-sent entries of one trigger, oldest first, into one under the oldest's
/// key. Entries whose params do not decode are left alone (the open fails on them).
fn merge_unsent(store: &Store, unsent: &[StoredEntry]) -> Result<Vec<StoredEntry>, StoreError> {
    let decoded: Result<Vec<Variables>, _> = unsent
        .iter()
        .map(|e| Variables::from_params(e.params.clone()))
        .collect();
    let (Ok(decoded), Some(oldest)) = (decoded, unsent.first()) else {
        return Ok(unsent.to_vec());
    };
    let mut variables = decoded.into_iter();
    let Some(mut merged) = variables.next() else {
        return Ok(unsent.to_vec());
    };
    for newer in variables {
        merged.merge(&newer);
    }
    let write = BacklogWrite {
        trigger: oldest.trigger.as_str().into(),
        first_commit_seq: oldest.first_commit_seq,
        params: merged.into_params(),
        committed_at: oldest.committed_at.unwrap_or_default(),
    };
    let absorbed: Vec<u64> = unsent.iter().skip(1).map(|e| e.first_commit_seq).collect();
    store.merge_backlog_entries(&write, &absorbed)?;
    tracing::info!(
        trigger_name = %oldest.trigger,
        entries = unsent.len(),
        first_commit_seq = oldest.first_commit_seq,
        "merged a coalesced trigger's never-sent backlog entries into one"
    );
    Ok(vec![StoredEntry {
        params: write.params,
        committed_at: oldest.committed_at,
        ..oldest.clone()
    }])
}

/// One entry picked for sending.
struct Picked {
    first_commit_seq: u64,
    variables: Variables,
    reason: SendReason,
    committed_at: SystemTime,
    /// Shared with the entry, so the ledger shows a RUNNING delivery's attempts.
    attempts: Arc<Mutex<Vec<DeliveryAttempt>>>,
    /// The entry was sealed before this send (picked before, or on record at open): it
    /// may have reached the receiver, so "already delivered" answers count. A recovered
    /// entry that was never sent is not, whatever its `recovery-refire` reason says.
    sent_before: bool,
}

impl Picked {
    /// What the ledger records of it.
    fn delivery<'a>(&'a self, queue: &'a Queue) -> ledger::Delivery<'a> {
        ledger::Delivery {
            trigger: queue.index,
            name: &queue.name,
            first_commit_seq: self.first_commit_seq,
            variables: &self.variables,
            committed_at: self.committed_at,
        }
    }
}

/// What came of a picked entry.
enum Sent {
    /// Delivered, or failed for good.
    Done(Result<Delivered, TriggerFailure>),
    /// Not sent: its stored entry is gone.
    Gone,
    /// Could not be sent or recorded.
    Stopped(BacklogError),
}

/// Why delivery stops when a delivery cannot be marked RUNNING.
const MARK_RUNNING: &str = "marking a delivery RUNNING in the ledger failed";

/// The worker of queue `index`: picks sendable entries as its drain mode allows, sends
/// them, and records each outcome in the ledger (deleting delivered ones from the
/// backlog). While a delivery is FAILED it sends only what an operator retried.
async fn drain_queue(shared: Arc<Shared>, index: u32) {
    let Some(queue) = shared.queue(index) else {
        return;
    };
    let mut in_flight = FuturesUnordered::new();
    loop {
        let closing = shared.closing();
        if closing && in_flight.is_empty() {
            return;
        }
        let (picked, wait_until) = if closing {
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
                trigger_name = &*queue.name,
                first_commit_seq = send.first_commit_seq,
                last_commit_seq = send.variables.last_commit_seq,
            );
            in_flight.push(
                async move {
                    let sent = send_one(&shared, queue, &send).await;
                    (send, sent)
                }
                .instrument(span),
            );
        }
        let pause = async {
            match wait_until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some((send, sent)) = in_flight.next() => finish(&shared, index, send, sent).await,
            () = queue.wake.notified() => {}
            () = pause => {}
        }
    }
}

/// Moves the delivery to RUNNING (compare-and-set: only from PENDING) and sends it,
/// numbering its attempts after those on record and collecting them for the ledger.
async fn send_one(shared: &Arc<Shared>, queue: &Queue, send: &Picked) -> Sent {
    let index = queue.index;
    let begun = {
        let shared = shared.clone();
        let record = ledger::running(send.delivery(queue));
        let store = shared.store.clone();
        store
            .run(move |store| shared.ledger.begin(store, record))
            .await
    };
    let prior_attempts = match begun {
        Ok(Ok(ledger::Begun::Running { prior_attempts })) => prior_attempts,
        Ok(Ok(ledger::Begun::Gone)) => return Sent::Gone,
        Ok(Ok(ledger::Begun::NotPending(state))) => {
            return Sent::Stopped(BacklogError::stopped(format!(
                "delivery of trigger {index} starting at commit {} is {state} in the ledger \
                 but PENDING in memory",
                send.first_commit_seq
            )));
        }
        Ok(Err(err)) => return Sent::Stopped(BacklogError::stopped_by(MARK_RUNNING, err)),
        Err(err) => return Sent::Stopped(BacklogError::stopped_by(MARK_RUNNING, err)),
    };
    let collector = ledger::Collector(send.attempts.clone());
    // The triggers crate indexes its config by usize.
    let Ok(slot) = usize::try_from(index) else {
        return Sent::Stopped(BacklogError::stopped(format!(
            "trigger {index} is not in the config"
        )));
    };
    match shared
        .deliverer
        .deliver_trigger_observed(
            &shared.triggers,
            slot,
            &send.variables,
            send.reason,
            prior_attempts,
            send.sent_before,
            &collector,
        )
        .await
    {
        Some(outcome) => Sent::Done(outcome),
        // The trigger index comes from the config the queues were built from.
        None => Sent::Stopped(BacklogError::stopped(format!(
            "trigger {index} is not in the config"
        ))),
    }
}

/// Marks and returns the entries the worker may send now, and when to look again if a
/// coalesced trigger's minimum interval holds the next one back.
fn pick(shared: &Shared, queue: &Queue, in_flight: usize) -> (Vec<Picked>, Option<Instant>) {
    crate::crash::shard_point("backlog.pick", &shared.shard);
    let replays_only = match shared.stop() {
        Stop::Running => false,
        Stop::Failed => true,
        Stop::Fatal => return (Vec::new(), None),
    };
    let acked = shared.acked_seq.load(Ordering::SeqCst);
    let room = queue.drain.max_in_flight().saturating_sub(in_flight);
    let mut state = queue.lock();
    // Read under the lock, as `begin_close` passes through it: the worker's own check
    // before it came here may be stale already.
    if room == 0 || shared.closing() {
        return (Vec::new(), None);
    }
    if let Drain::Coalesced { min_interval } = queue.drain
        && !min_interval.is_zero()
        && let Some(next) = state.last_sent.map(|at| at + min_interval)
        && next > Instant::now()
    {
        return (Vec::new(), Some(next));
    }
    let strict_order = !matches!(queue.drain, Drain::Concurrent(_));
    let mut picked = Vec::new();
    for entry in state.entries.iter_mut() {
        if picked.len() == room {
            break;
        }
        let sendable = matches!(entry.stage, Stage::Queued)
            && (entry.replay || !replays_only)
            && entry.variables.last_commit_seq <= acked;
        if sendable {
            let sent_before = entry.sealed;
            entry.stage = Stage::InFlight;
            entry.sealed = true;
            entry.attempts = Arc::default();
            picked.push(Picked {
                first_commit_seq: entry.first_commit_seq,
                variables: entry.variables.clone(),
                committed_at: entry.committed_at,
                attempts: entry.attempts.clone(),
                sent_before,
                reason: if entry.replay {
                    SendReason::OperatorReplay
                } else if entry.recovered {
                    SendReason::RecoveryRefire
                } else {
                    SendReason::FirstSend
                },
            });
        }
        // Ordered and coalesced send only the oldest entry, one at a time.
        if strict_order {
            break;
        }
    }
    if !picked.is_empty() {
        state.last_sent = Some(Instant::now());
        state.last_sent_wall = Some(SystemTime::now());
    }
    (picked, None)
}

/// Records a finished send, on the store lane in one job with its memory bookkeeping
/// (so neither a dropped worker nor an operator in between sees half of it).
async fn finish(shared: &Arc<Shared>, index: u32, send: Picked, sent: Sent) {
    let first_commit_seq = send.first_commit_seq;
    let job = move |shared: &Shared, store: &Store| shared.finish_now(store, index, send, sent);
    if let Err(err) = shared.run_job(job).await {
        if let Some(queue) = shared.queue(index)
            && let Some(entry) = queue.lock().entry_mut(first_commit_seq)
        {
            entry.unpick();
        }
        // The job panicked or never ran, so it woke nobody: tell the waiters here. The
        // worker holds the backlog while it wakes them, but it is a task on the runtime,
        // not the store lane (see `run_job`), so it ends before `main` does.
        shared.fail(BacklogError::stopped_by(
            "recording a finished delivery failed",
            err,
        ));
    }
}

/// Wakes whoever waits for room or for the drain when dropped: after a store-lane job,
/// whether its work returned or panicked.
struct WakeWaiters {
    room: Arc<Notify>,
    drained: Arc<Notify>,
}

impl Drop for WakeWaiters {
    fn drop(&mut self) {
        self.room.notify_one();
        self.drained.notify_waiters();
    }
}

impl Shared {
    /// Runs `work` on the store lane, then wakes whoever waits for room or for the
    /// drain, once the job has let go of the backlog, even if `work` panics. Runs to its
    /// end even if the caller stops waiting, wakeups included. A job that never runs (the
    /// store lane stopped) wakes nobody: the caller's error arm does.
    ///
    /// The order matters: a waiter that wakes may let the process end (a consumer at the
    /// end of its input); were the job still holding the last reference to the backlog,
    /// the store would close on the store lane after `main`, racing RocksDB's static
    /// destructors (`pthread lock: Invalid argument`, an abort).
    async fn run_job<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Shared, &Store) -> T + Send + 'static,
    ) -> Result<T, StoreTaskError> {
        let shared = self.clone();
        let (room, drained) = (self.room.clone(), self.drained.clone());
        self.store
            .run(move |store| {
                // Locals drop in reverse order, unwinding included: the backlog first,
                // then the wakeups. Made here, so a job dropped unrun wakes nobody.
                let _wake = WakeWaiters { room, drained };
                let shared = shared;
                let done = work(&shared, store);
                drop(shared);
                done
            })
            .await
    }

    /// A delivered entry becomes SUCCESS and leaves the backlog (with the trigger's last
    /// send time) in one batch; a failure becomes FAILED and is kept on its entry.
    fn finish_now(&self, store: &Store, index: u32, send: Picked, sent: Sent) {
        crate::crash::shard_point("backlog.finish", &self.shard);
        let Some(queue) = self.queue(index) else {
            return;
        };
        match sent {
            Sent::Done(Ok(delivered)) => self.delivered(store, queue, send, &delivered),
            Sent::Done(Err(failure)) => self.failed_for_good(store, queue, send, failure),
            Sent::Gone => {
                queue.lock().remove(send.first_commit_seq);
            }
            Sent::Stopped(stopped) => {
                if let Some(entry) = queue.lock().entry_mut(send.first_commit_seq) {
                    entry.unpick();
                }
                self.set_fatal(stopped);
            }
        }
    }

    fn delivered(&self, store: &Store, queue: &Queue, send: Picked, delivered: &Delivered) {
        crash_point!("backlog.before_delete");
        let attempts = ledger::take_attempts(&send.attempts);
        let sent_at_ms = match queue.drain {
            Drain::Coalesced { min_interval } if !min_interval.is_zero() => queue
                .lock()
                .last_sent_wall
                .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            _ => None,
        };
        let record = ledger::succeeded(send.delivery(queue), attempts, delivered);
        if let Err(err) = self.ledger.record_success(store, record, sent_at_ms) {
            if let Some(entry) = queue.lock().entry_mut(send.first_commit_seq) {
                entry.unpick();
            }
            self.set_fatal(BacklogError::stopped_by(
                "recording a delivered webhook (and deleting its backlog entry) failed",
                err,
            ));
            return;
        }
        let mut state = queue.lock();
        state.remove(send.first_commit_seq);
        state.delivered += 1;
        state.transactions_delivered += send.variables.transaction_count;
        state.already_delivered += u64::from(delivered.already_delivered);
    }

    fn failed_for_good(&self, store: &Store, queue: &Queue, send: Picked, failure: TriggerFailure) {
        if queue.on_failure == OnFailure::DeadLetter {
            return self.dead_lettered(store, queue, send, failure);
        }
        let attempts = ledger::take_attempts(&send.attempts);
        let record = ledger::failed(send.delivery(queue), attempts, &failure);
        let recorded = self.ledger.record_failure(store, record);
        tracing::error!(
            error = %failure,
            first_commit_seq = send.first_commit_seq,
            last_commit_seq = send.variables.last_commit_seq,
            "a webhook failed for good; the backlog stops until an operator retries or \
             skips it, or the shard reopens"
        );
        if let Some(entry) = queue.lock().entry_mut(send.first_commit_seq) {
            entry.replay = false;
            let was_failed = entry.failed();
            entry.stage = Stage::Failed(failure);
            if !was_failed {
                self.failed.fetch_add(1, Ordering::SeqCst);
            }
        }
        if let Err(err) = recorded {
            // The entry stays in the backlog and re-fires at the next open.
            self.set_fatal(BacklogError::stopped_by(
                "recording a failed delivery in the ledger failed",
                err,
            ));
        }
    }

    /// A dead letter: FAILED in the ledger, its record keeping what it sends, and its
    /// backlog entry deleted in the same batch; the queue goes on with the next entry.
    fn dead_lettered(&self, store: &Store, queue: &Queue, send: Picked, failure: TriggerFailure) {
        crash_point!("backlog.before_dead_letter");
        let attempts = ledger::take_attempts(&send.attempts);
        let record = ledger::dead_lettered(send.delivery(queue), attempts, &failure);
        if let Err(err) = self.ledger.record_dead_letter(store, record) {
            if let Some(entry) = queue.lock().entry_mut(send.first_commit_seq) {
                entry.unpick();
            }
            self.set_fatal(BacklogError::stopped_by(
                "recording a dead letter (and deleting its backlog entry) failed",
                err,
            ));
            return;
        }
        crash_point!("backlog.after_dead_letter");
        tracing::error!(
            error = %failure,
            first_commit_seq = send.first_commit_seq,
            last_commit_seq = send.variables.last_commit_seq,
            "a webhook failed for good and is a dead letter (onFailure: deadLetter); the \
             backlog goes on without it, and an operator may retry it while the ledger keeps it"
        );
        let mut state = queue.lock();
        state.remove(send.first_commit_seq);
        state.dead_letters += 1;
    }
}
