//! The delivery ledger: every delivery (one backlog entry of one trigger) as a resource
//! with a lifecycle, PENDING → RUNNING → SUCCESS / FAILED / CANCELLED, and its attempts.
//!
//! A PENDING delivery is its backlog entry; a record is written under
//! `ledger/<trigger><first commit seq>` when it leaves PENDING, so the commit path writes
//! nothing more. Every transition reads the current state and writes the next one under
//! one lock: a compare-and-set, so no two workers (nor a worker and an operator) ever move
//! the same delivery at once. SUCCESS and CANCELLED delete the backlog entry in the same
//! WriteBatch. Terminal records are collected by [`LedgerRetention`].

use super::{Entry, Send, Shared};
use crate::store::StoreError;
use crate::store_thread::StoreThread;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use triggers::{AttemptObserver, AttemptOutcome, AttemptRecord, Delivered, TriggerFailure};
use triggers_proto::{DeliveryAttempt, DeliveryRecord, DeliveryState, Timestamp};

/// Default number of terminal records kept.
pub const DEFAULT_LEDGER_KEEP: usize = 1000;
/// Default age after which terminal records are collected (7 days).
pub const DEFAULT_LEDGER_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Attempts kept per record: the latest ones.
const MAX_ATTEMPTS: usize = 32;
/// A retention pass runs after this many terminal transitions.
const GC_EVERY: u64 = 32;
/// Longest list page.
const MAX_PAGE: usize = 500;
/// Longest accepted cancel reason, in characters.
const MAX_REASON_CHARS: usize = 1000;

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
        /// The trigger.
        trigger: u32,
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
        /// The trigger.
        trigger: u32,
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
    /// Store work did not finish (it panicked, or the store thread has stopped).
    #[error("ledger task did not complete: {0}")]
    Blocking(#[from] crate::store_thread::StoreTaskError),
}

/// The name of a state, as errors and logs print it.
pub fn state_name(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::Pending => "PENDING",
        DeliveryState::Running => "RUNNING",
        DeliveryState::Success => "SUCCESS",
        DeliveryState::Failed => "FAILED",
        DeliveryState::Cancelled => "CANCELLED",
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

fn record(index: usize, send: &Send, state: DeliveryState) -> DeliveryRecord {
    DeliveryRecord {
        trigger: index as u32,
        first_commit_seq: send.key_seq,
        last_commit_seq: send.variables.last_commit_seq,
        transaction_count: send.variables.transaction_count,
        flow_run_id: send.variables.flow_run_id.clone(),
        state: state as i32,
        committed_at: Some(timestamp(send.committed_at)),
        updated_at: Some(timestamp(SystemTime::now())),
        attempts: Vec::new(),
        cancel_reason: String::new(),
        error: String::new(),
        already_delivered: false,
    }
}

pub(crate) fn running(index: usize, send: &Send) -> DeliveryRecord {
    record(index, send, DeliveryState::Running)
}

/// SUCCESS, saying whether the receiver accepted the webhook now or said it already had
/// it (`responses.alreadyDelivered`).
pub(crate) fn succeeded(
    index: usize,
    send: &Send,
    attempts: Vec<DeliveryAttempt>,
    delivered: &Delivered,
) -> DeliveryRecord {
    DeliveryRecord {
        attempts,
        already_delivered: delivered.already_delivered,
        ..record(index, send, DeliveryState::Success)
    }
}

pub(crate) fn failed(
    index: usize,
    send: &Send,
    attempts: Vec<DeliveryAttempt>,
    failure: &TriggerFailure,
) -> DeliveryRecord {
    DeliveryRecord {
        attempts,
        error: failure.to_string(),
        ..record(index, send, DeliveryState::Failed)
    }
}

/// A record for an entry still in memory (PENDING, RUNNING or FAILED), with its live
/// attempts: memory knows its state first.
fn from_entry(index: usize, entry: &Entry, stored: Option<&DeliveryRecord>) -> DeliveryRecord {
    let state = if entry.failure.is_some() {
        DeliveryState::Failed
    } else if entry.in_flight {
        DeliveryState::Running
    } else {
        DeliveryState::Pending
    };
    let mut attempts = stored.map(|r| r.attempts.clone()).unwrap_or_default();
    if entry.in_flight {
        attempts.extend(take_attempts(&entry.attempts));
    }
    DeliveryRecord {
        trigger: index as u32,
        first_commit_seq: entry.key_seq,
        last_commit_seq: entry.variables.last_commit_seq,
        transaction_count: entry.variables.transaction_count,
        flow_run_id: entry.variables.flow_run_id.clone(),
        state: state as i32,
        committed_at: Some(timestamp(entry.committed_at)),
        updated_at: stored
            .and_then(|r| r.updated_at)
            .or(Some(timestamp(entry.committed_at))),
        attempts,
        cancel_reason: String::new(),
        error: stored.map(|r| r.error.clone()).unwrap_or_default(),
        // Only a SUCCESS is already delivered, and a SUCCESS has left memory.
        already_delivered: false,
    }
}

/// What [`Shared::begin`] found.
pub(crate) enum Begun {
    /// The delivery is RUNNING now; earlier runs made this many attempts.
    Running { prior_attempts: u32 },
    /// Its backlog entry is gone from the store: nothing to send.
    Gone,
    /// Its ledger record is in this state, not PENDING: nothing was written.
    NotPending(&'static str),
}

impl Shared {
    fn ledger_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.ledger_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// PENDING → RUNNING, keeping the attempts of earlier runs (before a retry or a
    /// restart) on record. Writes nothing unless the delivery is PENDING.
    pub(crate) fn begin(&self, mut next: DeliveryRecord) -> Result<Begun, StoreError> {
        let _cas = self.ledger_guard();
        let (trigger, seq) = (next.trigger, next.first_commit_seq);
        if !self.store.has_backlog_entry(trigger, seq)? {
            return Ok(Begun::Gone);
        }
        let mut prior_attempts = 0;
        if let Some(stored) = self.store.delivery(trigger, seq)? {
            if stored.state() != DeliveryState::Pending {
                return Ok(Begun::NotPending(state_name(stored.state())));
            }
            prior_attempts = stored.attempts.last().map_or(0, |a| a.number);
            next.attempts = stored.attempts;
        }
        self.store.write_delivery(&next, false, None)?;
        Ok(Begun::Running { prior_attempts })
    }

    /// RUNNING → SUCCESS, deleting the backlog entry in the same batch.
    pub(crate) fn record_success(
        &self,
        mut next: DeliveryRecord,
        sent_at_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        {
            let _cas = self.ledger_guard();
            next.attempts = self.merged_attempts(&next)?;
            self.store.write_delivery(&next, true, sent_at_ms)?;
        }
        self.after_terminal();
        Ok(())
    }

    /// RUNNING → FAILED; the backlog entry stays.
    pub(crate) fn record_failure(&self, mut next: DeliveryRecord) -> Result<(), StoreError> {
        let _cas = self.ledger_guard();
        next.attempts = self.merged_attempts(&next)?;
        self.store.write_delivery(&next, false, None)
    }

    /// The attempts already on record (earlier runs) followed by this run's.
    fn merged_attempts(&self, next: &DeliveryRecord) -> Result<Vec<DeliveryAttempt>, StoreError> {
        let mut attempts = self
            .store
            .delivery(next.trigger, next.first_commit_seq)?
            .map(|r| r.attempts)
            .unwrap_or_default();
        attempts.extend(next.attempts.iter().cloned());
        let excess = attempts.len().saturating_sub(MAX_ATTEMPTS);
        attempts.drain(..excess);
        Ok(attempts)
    }

    /// Runs a retention pass every [`GC_EVERY`] terminal transitions.
    fn after_terminal(&self) {
        if self.terminal_since_gc.fetch_add(1, Ordering::Relaxed) + 1 >= GC_EVERY {
            self.terminal_since_gc.store(0, Ordering::Relaxed);
            if let Err(err) = self.collect() {
                tracing::warn!(error = %err, "ledger retention pass failed; it runs again later");
            }
        }
    }

    /// Deletes terminal records beyond the retention's count or age.
    pub(crate) fn collect(&self) -> Result<usize, StoreError> {
        let _cas = self.ledger_guard();
        let now = SystemTime::now();
        // Only when each finished and which it is: a pass holds a few bytes per record.
        let mut terminal: Vec<(SystemTime, u32, u64)> = Vec::new();
        self.store.for_each_delivery(|record| {
            let done = match record.state() {
                DeliveryState::Success | DeliveryState::Cancelled => true,
                DeliveryState::Failed => !self
                    .store
                    .has_backlog_entry(record.trigger, record.first_commit_seq)?,
                DeliveryState::Pending | DeliveryState::Running => false,
            };
            if done {
                let updated = record
                    .updated_at
                    .and_then(system_time)
                    .unwrap_or(UNIX_EPOCH);
                terminal.push((updated, record.trigger, record.first_commit_seq));
            }
            Ok(())
        })?;
        terminal.sort_by_key(|(updated, ..)| std::cmp::Reverse(*updated));
        let doomed: Vec<(u32, u64)> = terminal
            .iter()
            .enumerate()
            .filter(|(rank, (updated, ..))| {
                *rank >= self.retention.keep
                    || now.duration_since(*updated).unwrap_or_default() > self.retention.max_age
            })
            .map(|(_, (_, trigger, seq))| (*trigger, *seq))
            .collect();
        if !doomed.is_empty() {
            self.store.delete_deliveries(&doomed)?;
        }
        Ok(doomed.len())
    }

    /// One delivery: the in-memory view of a pending or running one, else its record.
    fn get(&self, trigger: u32, seq: u64) -> Result<DeliveryRecord, LedgerError> {
        let stored = self.store.delivery(trigger, seq)?;
        if let Some(queue) = self.queues.get(trigger as usize) {
            let state = queue.lock();
            if let Some(entry) = state.entries.iter().find(|e| e.key_seq == seq) {
                return Ok(from_entry(queue.index, entry, stored.as_ref()));
            }
        }
        stored.ok_or_else(|| not_found(trigger, seq))
    }

    /// Every delivery, newest first (by first commit sequence number, then trigger).
    fn list(&self) -> Result<Vec<DeliveryRecord>, LedgerError> {
        let mut records: std::collections::BTreeMap<(u64, u32), DeliveryRecord> = self
            .store
            .deliveries()?
            .into_iter()
            .map(|r| ((r.first_commit_seq, r.trigger), r))
            .collect();
        for queue in &self.queues {
            let state = queue.lock();
            for entry in &state.entries {
                let key = (entry.key_seq, queue.index as u32);
                let view = from_entry(queue.index, entry, records.get(&key));
                records.insert(key, view);
            }
        }
        Ok(records.into_values().rev().collect())
    }

    /// FAILED → PENDING: the delivery is sent again now (as `operator-replay`, even while
    /// another delivery is FAILED), and the backlog resumes once none is.
    fn retry(&self, trigger: u32, seq: u64) -> Result<DeliveryRecord, LedgerError> {
        let queue = self
            .queues
            .get(trigger as usize)
            .ok_or_else(|| not_found(trigger, seq))?;
        let mut state = queue.lock();
        let _cas = self.ledger_guard();
        let stored = self.store.delivery(trigger, seq)?;
        let Some(entry) = state.entries.iter_mut().find(|e| e.key_seq == seq) else {
            let stored = stored.ok_or_else(|| not_found(trigger, seq))?;
            return Err(illegal(
                "retry",
                &stored,
                "only a FAILED delivery can be retried, and this one is finished",
            ));
        };
        let current = from_entry(queue.index, entry, stored.as_ref());
        if entry.failure.is_none() {
            return Err(illegal(
                "retry",
                &current,
                "only a FAILED delivery can be retried; a PENDING or RUNNING one is sent anyway",
            ));
        }
        let next = DeliveryRecord {
            state: DeliveryState::Pending as i32,
            updated_at: Some(timestamp(SystemTime::now())),
            ..current
        };
        self.store.write_delivery(&next, false, None)?;
        entry.failure = None;
        entry.replay = true;
        drop(state);
        tracing::info!(
            trigger,
            first_commit_seq = seq,
            "operator retries a failed delivery"
        );
        self.failure_cleared();
        queue.wake.notify_one();
        Ok(next)
    }

    /// PENDING or FAILED → CANCELLED, deleting the backlog entry in the same batch: an
    /// operator gives up on a webhook that can never succeed. The backlog resumes once no
    /// delivery is FAILED.
    fn skip(&self, trigger: u32, seq: u64, reason: &str) -> Result<DeliveryRecord, LedgerError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(LedgerError::Invalid(
                "skipping a delivery needs a reason, for the record".to_string(),
            ));
        }
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        let queue = self
            .queues
            .get(trigger as usize)
            .ok_or_else(|| not_found(trigger, seq))?;
        let mut state = queue.lock();
        let _cas = self.ledger_guard();
        let stored = self.store.delivery(trigger, seq)?;
        let Some(at) = state.entries.iter().position(|e| e.key_seq == seq) else {
            let stored = stored.ok_or_else(|| not_found(trigger, seq))?;
            let hint = match stored.state() {
                DeliveryState::Success => "it was delivered",
                _ => "it is already finished",
            };
            return Err(illegal("skip", &stored, hint));
        };
        let entry = &state.entries[at];
        let current = from_entry(queue.index, entry, stored.as_ref());
        if entry.in_flight || entry.merging {
            return Err(illegal(
                "skip",
                &current,
                "wait until it fails (it is being sent or written now)",
            ));
        }
        let next = DeliveryRecord {
            state: DeliveryState::Cancelled as i32,
            updated_at: Some(timestamp(SystemTime::now())),
            cancel_reason: reason.clone(),
            ..current
        };
        self.store.write_delivery(&next, true, None)?;
        let was_failed = state
            .entries
            .remove(at)
            .is_some_and(|e| e.failure.is_some());
        drop(state);
        tracing::warn!(trigger, first_commit_seq = seq, %reason, "operator skipped a delivery; it will not be sent");
        if was_failed {
            self.failure_cleared();
        }
        queue.wake.notify_one();
        Ok(next)
    }
}

fn not_found(trigger: u32, first_commit_seq: u64) -> LedgerError {
    LedgerError::NotFound {
        trigger,
        first_commit_seq,
    }
}

fn illegal(action: &'static str, record: &DeliveryRecord, hint: &'static str) -> LedgerError {
    LedgerError::IllegalTransition {
        action,
        trigger: record.trigger,
        first_commit_seq: record.first_commit_seq,
        state: state_name(record.state()),
        hint,
    }
}

/// Moves deliveries a crash or a failure interrupted (RUNNING or FAILED with their entry
/// still in the backlog) back to PENDING at open: they are sent again, their attempts
/// kept.
pub(crate) fn reset_interrupted(store: &crate::Store) -> Result<usize, StoreError> {
    let mut reset = 0;
    for record in store.deliveries()? {
        let interrupted = matches!(
            record.state(),
            DeliveryState::Running | DeliveryState::Failed
        ) && store.has_backlog_entry(record.trigger, record.first_commit_seq)?;
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

/// Operator and reader access to the ledger, through a [`super::BacklogHandle`].
///
/// Cancel safety: each call is one job on the shard's store thread, queued when the
/// future is first polled. Dropping the future after that loses only the answer: the job
/// still runs, and a transition (retry, skip) happens as a whole.
impl super::BacklogHandle {
    /// One delivery.
    pub async fn delivery(
        &self,
        trigger: u32,
        first_commit_seq: u64,
    ) -> Result<DeliveryRecord, LedgerError> {
        let shared = self.0.clone();
        run(&self.0.thread, move || {
            shared.get(trigger, first_commit_seq)
        })
        .await
    }

    /// A page of deliveries, newest first; `page_token` is the previous page's
    /// `next_page_token` (empty for the first). Returns the page and the next token
    /// (empty on the last page).
    pub async fn deliveries(
        &self,
        page_size: usize,
        page_token: &str,
    ) -> Result<(Vec<DeliveryRecord>, String), LedgerError> {
        let size = match page_size {
            0 => 50,
            n => n.min(MAX_PAGE),
        };
        let after = parse_token(page_token)?;
        let shared = self.0.clone();
        let all = run(&self.0.thread, move || shared.list()).await?;
        let start = match after {
            None => 0,
            Some(key) => all
                .iter()
                .position(|r| (r.first_commit_seq, r.trigger) < key)
                .unwrap_or(all.len()),
        };
        let page: Vec<DeliveryRecord> = all.iter().skip(start).take(size).cloned().collect();
        let next = match page.last() {
            Some(last) if start + page.len() < all.len() => {
                format!("{}/{}", last.first_commit_seq, last.trigger)
            }
            _ => String::new(),
        };
        Ok((page, next))
    }

    /// Sends a FAILED delivery again now (FAILED → PENDING), as `operator-replay`, its
    /// attempts numbered after those on record.
    pub async fn retry(
        &self,
        trigger: u32,
        first_commit_seq: u64,
    ) -> Result<DeliveryRecord, LedgerError> {
        let shared = self.0.clone();
        run(&self.0.thread, move || {
            shared.retry(trigger, first_commit_seq)
        })
        .await
    }

    /// Cancels a PENDING or FAILED delivery, with a reason (→ CANCELLED).
    pub async fn skip(
        &self,
        trigger: u32,
        first_commit_seq: u64,
        reason: &str,
    ) -> Result<DeliveryRecord, LedgerError> {
        let reason = reason.to_string();
        self.0
            .run_job(move |shared| shared.skip(trigger, first_commit_seq, &reason))
            .await
            .map_err(LedgerError::Blocking)?
    }

    /// Runs a retention pass now; returns how many records it collected.
    pub async fn collect(&self) -> Result<usize, LedgerError> {
        let shared = self.0.clone();
        run(&self.0.thread, move || {
            shared.collect().map_err(LedgerError::from)
        })
        .await
    }
}

async fn run<T: std::marker::Send + 'static>(
    thread: &StoreThread,
    work: impl FnOnce() -> Result<T, LedgerError> + std::marker::Send + 'static,
) -> Result<T, LedgerError> {
    thread.run(work).await.map_err(LedgerError::Blocking)?
}

fn parse_token(token: &str) -> Result<Option<(u64, u32)>, LedgerError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid =
        || LedgerError::Invalid(format!("page token {token:?} is not one this sidecar gave"));
    let (seq, trigger) = token.split_once('/').ok_or_else(invalid)?;
    Ok(Some((
        seq.parse().map_err(|_| invalid())?,
        trigger.parse().map_err(|_| invalid())?,
    )))
}
