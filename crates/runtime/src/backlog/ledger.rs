//! The delivery ledger: every delivery (one backlog entry of one trigger) as a resource
//! with a lifecycle, PENDING → RUNNING → SUCCESS / FAILED / CANCELLED, and its attempts.
//!
//! A PENDING delivery is its backlog entry; a record is written under
//! `delivery/<trigger name>/<first commit seq>` when it leaves PENDING, so the commit path writes
//! nothing more. Every transition reads the current state and writes the next one under
//! one lock: a compare-and-set, so no two workers (nor a worker and an operator) ever move
//! the same delivery at once. SUCCESS and CANCELLED delete the backlog entry in the same
//! WriteBatch. Terminal records are collected by [`LedgerRetention`].

use crate::store::{Store, StoreError, StoredEntry};
use crate::store_pool::StoreTaskError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use triggers::{
    AttemptObserver, AttemptOutcome, AttemptRecord, Delivered, TriggerFailure, Variables,
};
use triggers_proto::{BacklogEntry, DeliveryAttempt, DeliveryRecord, DeliveryState, Timestamp};

/// Default number of terminal records kept.
pub const DEFAULT_LEDGER_KEEP: usize = 1000;
/// Default age after which terminal records are collected (7 days).
pub const DEFAULT_LEDGER_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Attempts kept per record: the latest ones.
const MAX_ATTEMPTS: usize = 32;
/// A retention pass runs after this many terminal transitions at least (an eighth of
/// the records kept, if more: a pass reads every record, so a bigger ledger is passed
/// over less often, and holds at most that many past its bound).
const GC_EVERY: u64 = 32;

/// How long terminal ledger records (SUCCESS, CANCELLED, and FAILED ones whose backlog
/// entry is gone) are kept: at most `keep` of them, none older than `max_age`. Records of
/// deliveries still in the backlog are never collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LedgerRetention {
    /// Most terminal records kept (newest first).
    pub keep: usize,
    /// Terminal records last updated longer ago than this are collected.
    pub max_age: Duration,
}

impl LedgerRetention {
    /// At most `keep` terminal records, none older than `max_age`.
    pub fn new(keep: usize, max_age: Duration) -> Self {
        Self { keep, max_age }
    }
}

impl Default for LedgerRetention {
    fn default() -> Self {
        Self {
            keep: DEFAULT_LEDGER_KEEP,
            max_age: DEFAULT_LEDGER_MAX_AGE,
        }
    }
}

/// An operator action or ledger read that cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// No delivery has this trigger and first commit sequence number (or it was
    /// collected by retention).
    #[error("no delivery of trigger {trigger} starting at commit {first_commit_seq}")]
    NotFound {
        /// The trigger's name.
        trigger: String,
        /// The first commit sequence number asked for.
        first_commit_seq: u64,
    },
    /// The delivery's state does not allow the action.
    #[error(
        "cannot {action} delivery of trigger {trigger} starting at commit {first_commit_seq}: \
         it is {state}; {hint}"
    )]
    IllegalTransition {
        /// What was asked: `retry` or `skip`.
        action: &'static str,
        /// The trigger's name.
        trigger: String,
        /// Its first commit sequence number.
        first_commit_seq: u64,
        /// Its state now.
        state: &'static str,
        /// What is allowed instead.
        hint: &'static str,
    },
    /// The request itself is invalid (an empty reason, a bad page token).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Store work did not finish (it panicked, or the store lane has stopped).
    #[error("ledger task did not complete: {0}")]
    Blocking(#[source] StoreTaskError),
}

impl From<StoreTaskError> for LedgerError {
    /// The store's own failure stays [`LedgerError::Store`].
    fn from(err: StoreTaskError) -> Self {
        match err {
            StoreTaskError::Store(err) => LedgerError::Store(err),
            other => LedgerError::Blocking(other),
        }
    }
}

pub(crate) fn timestamp(at: SystemTime) -> Timestamp {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: since.subsec_nanos() as i32,
    }
}

pub(crate) fn system_time(at: Timestamp) -> Option<SystemTime> {
    let seconds = u64::try_from(at.seconds).ok()?;
    let nanos = u32::try_from(at.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)?;
    UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

/// Gathers one delivery's attempts as they finish.
pub(crate) struct Collector(pub(crate) Arc<Mutex<Vec<DeliveryAttempt>>>);

impl AttemptObserver for Collector {
    fn attempt_finished(&self, record: &AttemptRecord) {
        let mut attempts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        attempts.push(DeliveryAttempt {
            number: record.number,
            at: Some(timestamp(record.at)),
            status: record.status.map_or(0, u32::from),
            latency_micros: u64::try_from(record.latency.as_micros()).unwrap_or(u64::MAX),
            error: record.error.clone().unwrap_or_default(),
            reason: record.reason.to_string(),
            already_delivered: record.outcome == AttemptOutcome::AlreadyDelivered,
            trace_id: record.trace_id.to_bytes().to_vec(),
            span_id: record.span_id.to_bytes().to_vec(),
        });
        let excess = attempts.len().saturating_sub(MAX_ATTEMPTS);
        attempts.drain(..excess);
    }
}

pub(crate) fn take_attempts(attempts: &Mutex<Vec<DeliveryAttempt>>) -> Vec<DeliveryAttempt> {
    attempts.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// What the ledger needs to know of one delivery to write its record: the backlog hands
/// this out, so the ledger never sees the backlog's own bookkeeping.
#[derive(Clone, Copy)]
pub(crate) struct Delivery<'a> {
    /// The trigger's index.
    pub(crate) trigger: u32,
    /// The trigger's name: the record's key.
    pub(crate) name: &'a str,
    /// Commit sequence number of the first transaction it covers: its key.
    pub(crate) first_commit_seq: u64,
    /// The variables it delivers.
    pub(crate) variables: &'a Variables,
    /// When its first transaction committed.
    pub(crate) committed_at: SystemTime,
}

/// Where a delivery still in memory is, as the backlog sees it.
pub(crate) enum Live {
    /// Waiting to be sent.
    Pending,
    /// Being sent, with the attempts of this run so far.
    Running(Vec<DeliveryAttempt>),
    /// Failed for good; an operator may retry or skip it.
    Failed,
}

fn record(delivery: Delivery<'_>, state: DeliveryState) -> DeliveryRecord {
    DeliveryRecord {
        trigger: delivery.trigger,
        first_commit_seq: delivery.first_commit_seq,
        last_commit_seq: delivery.variables.last_commit_seq,
        transaction_count: delivery.variables.transaction_count,
        flow_run_id: delivery.variables.flow_run_id.clone(),
        state: state as i32,
        committed_at: Some(timestamp(delivery.committed_at)),
        updated_at: Some(timestamp(SystemTime::now())),
        attempts: Vec::new(),
        cancel_reason: String::new(),
        error: String::new(),
        already_delivered: false,
        trigger_name: delivery.name.to_string(),
        dead_letter: false,
        entry: None,
        replay: false,
    }
}

/// What a delivery sends, as its record keeps it for a replay or a dead letter's retry.
fn entry_of(delivery: Delivery<'_>) -> BacklogEntry {
    BacklogEntry {
        params: Some(delivery.variables.to_params()),
        committed_at: Some(timestamp(delivery.committed_at)),
    }
}

/// Position recorded for a trigger the config no longer has.
pub(crate) const GONE_TRIGGER: u32 = u32::MAX;

/// The PENDING view of an orphaned entry (its trigger is no longer in the config), with
/// what the ledger has of it.
pub(crate) fn orphan(entry: &StoredEntry, stored: Option<&DeliveryRecord>) -> DeliveryRecord {
    let committed_at = entry.committed_at.unwrap_or_default();
    DeliveryRecord {
        trigger: GONE_TRIGGER,
        trigger_name: entry.trigger.clone(),
        first_commit_seq: entry.first_commit_seq,
        last_commit_seq: entry.params.last_commit_seq,
        transaction_count: entry.params.transaction_count,
        flow_run_id: entry.params.flow_run_id.clone(),
        state: DeliveryState::Pending as i32,
        committed_at: Some(committed_at),
        updated_at: stored.and_then(|r| r.updated_at).or(Some(committed_at)),
        attempts: stored.map(|r| r.attempts.clone()).unwrap_or_default(),
        error: stored.map(|r| r.error.clone()).unwrap_or_default(),
        cancel_reason: String::new(),
        already_delivered: false,
        dead_letter: false,
        entry: None,
        replay: false,
    }
}

pub(crate) fn running(delivery: Delivery<'_>) -> DeliveryRecord {
    record(delivery, DeliveryState::Running)
}

/// SUCCESS, saying whether the receiver accepted the webhook now or said it already had
/// it (`responses.alreadyDelivered`).
pub(crate) fn succeeded(
    delivery: Delivery<'_>,
    attempts: Vec<DeliveryAttempt>,
    delivered: &Delivered,
) -> DeliveryRecord {
    DeliveryRecord {
        attempts,
        already_delivered: delivered.already_delivered,
        entry: Some(entry_of(delivery)),
        ..record(delivery, DeliveryState::Success)
    }
}

/// FAILED as a dead letter: its trigger's backlog goes on without it, and the record
/// keeps what it sends, for a retry.
pub(crate) fn dead_lettered(
    delivery: Delivery<'_>,
    attempts: Vec<DeliveryAttempt>,
    failure: &TriggerFailure,
) -> DeliveryRecord {
    DeliveryRecord {
        dead_letter: true,
        entry: Some(entry_of(delivery)),
        ..failed(delivery, attempts, failure)
    }
}

pub(crate) fn failed(
    delivery: Delivery<'_>,
    attempts: Vec<DeliveryAttempt>,
    failure: &TriggerFailure,
) -> DeliveryRecord {
    DeliveryRecord {
        attempts,
        error: failure.to_string(),
        ..record(delivery, DeliveryState::Failed)
    }
}

/// A record for a delivery still in memory (PENDING, RUNNING or FAILED), with its live
/// attempts: memory knows its state first.
pub(crate) fn live(
    delivery: Delivery<'_>,
    live: Live,
    stored: Option<&DeliveryRecord>,
) -> DeliveryRecord {
    let mut attempts = stored.map(|r| r.attempts.clone()).unwrap_or_default();
    let state = match live {
        Live::Pending => DeliveryState::Pending,
        Live::Running(running) => {
            attempts.extend(running);
            DeliveryState::Running
        }
        Live::Failed => DeliveryState::Failed,
    };
    DeliveryRecord {
        updated_at: stored
            .and_then(|r| r.updated_at)
            .or(Some(timestamp(delivery.committed_at))),
        attempts,
        error: stored.map(|r| r.error.clone()).unwrap_or_default(),
        // Only a SUCCESS is already delivered, and a SUCCESS has left memory.
        ..record(delivery, state)
    }
}

/// What [`Ledger::begin`] found.
pub(crate) enum Begun {
    /// The delivery is RUNNING now; earlier runs made this many attempts.
    Running { prior_attempts: u32 },
    /// Its backlog entry is gone from the store: nothing to send.
    Gone,
    /// Its ledger record is in this state, not PENDING: nothing was written.
    NotPending(&'static str),
}

/// The ledger's transitions, on the store lane: each is a compare-and-set under one
/// lock (one process owns the store), and terminal ones trigger a retention pass now
/// and then.
pub(crate) struct Ledger {
    lock: Mutex<()>,
    retention: LedgerRetention,
    /// Terminal transitions since the last retention pass.
    terminal_since_gc: AtomicU64,
}

impl Ledger {
    pub(crate) fn new(retention: LedgerRetention) -> Self {
        Self {
            lock: Mutex::new(()),
            retention,
            terminal_since_gc: AtomicU64::new(0),
        }
    }

    /// Serialises transitions: hold it from reading a delivery's state to writing the
    /// next one.
    pub(crate) fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// PENDING → RUNNING, keeping the attempts of earlier runs (before a retry or a
    /// restart) on record. Writes nothing unless the delivery is PENDING.
    pub(crate) fn begin(
        &self,
        store: &Store,
        mut next: DeliveryRecord,
    ) -> Result<Begun, StoreError> {
        let _cas = self.guard();
        let (trigger, seq) = (next.trigger_name.as_str(), next.first_commit_seq);
        if !store.has_backlog_entry(trigger, seq)? {
            return Ok(Begun::Gone);
        }
        let mut prior_attempts = 0;
        if let Some(stored) = store.delivery(trigger, seq)? {
            if stored.state() != DeliveryState::Pending {
                return Ok(Begun::NotPending(stored.state().as_str()));
            }
            prior_attempts = stored.attempts.last().map_or(0, |a| a.number);
            next.attempts = stored.attempts;
        }
        store.write_delivery(&next, false, None)?;
        Ok(Begun::Running { prior_attempts })
    }

    /// RUNNING → SUCCESS, deleting the backlog entry in the same batch.
    pub(crate) fn record_success(
        &self,
        store: &Store,
        mut next: DeliveryRecord,
        sent_at_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        {
            let _cas = self.guard();
            next.attempts = merged_attempts(store, &next)?;
            store.write_delivery(&next, true, sent_at_ms)?;
        }
        self.after_terminal(store);
        Ok(())
    }

    /// RUNNING → FAILED; the backlog entry stays.
    pub(crate) fn record_failure(
        &self,
        store: &Store,
        mut next: DeliveryRecord,
    ) -> Result<(), StoreError> {
        let _cas = self.guard();
        next.attempts = merged_attempts(store, &next)?;
        store.write_delivery(&next, false, None)
    }

    /// RUNNING → FAILED as a dead letter, deleting the backlog entry in the same batch:
    /// the record keeps what it sends.
    pub(crate) fn record_dead_letter(
        &self,
        store: &Store,
        mut next: DeliveryRecord,
    ) -> Result<(), StoreError> {
        {
            let _cas = self.guard();
            next.attempts = merged_attempts(store, &next)?;
            store.write_delivery(&next, true, None)?;
        }
        self.after_terminal(store);
        Ok(())
    }

    /// Terminal transitions between retention passes.
    fn gc_every(&self) -> u64 {
        (u64::try_from(self.retention.keep).unwrap_or(u64::MAX) / 8).max(GC_EVERY)
    }

    /// Runs a retention pass every [`Ledger::gc_every`] terminal transitions.
    fn after_terminal(&self, store: &Store) {
        if self.terminal_since_gc.fetch_add(1, Ordering::Relaxed) + 1 >= self.gc_every() {
            self.terminal_since_gc.store(0, Ordering::Relaxed);
            if let Err(err) = self.collect(store) {
                tracing::warn!(error = %err, "ledger retention pass failed; it runs again later");
            }
        }
    }

    /// Deletes terminal records beyond the retention's count or age.
    pub(crate) fn collect(&self, store: &Store) -> Result<usize, StoreError> {
        let _cas = self.guard();
        let now = SystemTime::now();
        // Only when each finished and which it is: a pass holds a few bytes per record.
        let mut terminal: Vec<(SystemTime, String, u64)> = Vec::new();
        store.for_each_delivery_head(|record| {
            let done = match record.state() {
                DeliveryState::Success | DeliveryState::Cancelled => true,
                DeliveryState::Failed => {
                    !store.has_backlog_entry(&record.trigger_name, record.first_commit_seq)?
                }
                DeliveryState::Pending | DeliveryState::Running => false,
            };
            if done {
                let updated = record
                    .updated_at
                    .and_then(system_time)
                    .unwrap_or(UNIX_EPOCH);
                terminal.push((updated, record.trigger_name, record.first_commit_seq));
            }
            Ok(())
        })?;
        terminal.sort_by_key(|(updated, ..)| std::cmp::Reverse(*updated));
        let doomed: Vec<(String, u64)> = terminal
            .into_iter()
            .enumerate()
            .filter(|(rank, (updated, ..))| {
                *rank >= self.retention.keep
                    || now.duration_since(*updated).unwrap_or_default() > self.retention.max_age
            })
            .map(|(_, (_, trigger, seq))| (trigger, seq))
            .collect();
        if !doomed.is_empty() {
            store.delete_deliveries(&doomed)?;
        }
        Ok(doomed.len())
    }
}

/// The attempts already on record (earlier runs) followed by this run's.
fn merged_attempts(
    store: &Store,
    next: &DeliveryRecord,
) -> Result<Vec<DeliveryAttempt>, StoreError> {
    let mut attempts = store
        .delivery(&next.trigger_name, next.first_commit_seq)?
        .map(|r| r.attempts)
        .unwrap_or_default();
    attempts.extend(next.attempts.iter().cloned());
    let excess = attempts.len().saturating_sub(MAX_ATTEMPTS);
    attempts.drain(..excess);
    Ok(attempts)
}

pub(crate) fn not_found(trigger: &str, first_commit_seq: u64) -> LedgerError {
    LedgerError::NotFound {
        trigger: trigger.to_string(),
        first_commit_seq,
    }
}

pub(crate) fn illegal(
    action: &'static str,
    record: &DeliveryRecord,
    hint: &'static str,
) -> LedgerError {
    LedgerError::IllegalTransition {
        action,
        trigger: record.trigger_name.clone(),
        first_commit_seq: record.first_commit_seq,
        state: record.state().as_str(),
        hint,
    }
}

/// Moves deliveries a crash or a failure interrupted (RUNNING or FAILED with their entry
/// still in the backlog) back to PENDING at open: they are sent again, their attempts
/// kept.
pub(crate) fn reset_interrupted(store: &Store) -> Result<usize, StoreError> {
    let mut reset = 0;
    for record in store.deliveries()? {
        let interrupted = matches!(
            record.state(),
            DeliveryState::Running | DeliveryState::Failed
        ) && store
            .has_backlog_entry(&record.trigger_name, record.first_commit_seq)?;
        if interrupted {
            let next = DeliveryRecord {
                state: DeliveryState::Pending as i32,
                updated_at: Some(timestamp(SystemTime::now())),
                ..record
            };
            store.write_delivery(&next, false, None)?;
            reset += 1;
        }
    }
    Ok(reset)
}
