//! Operator and reader access to the ledger, through a [`BacklogHandle`]: one delivery,
//! a page of them, retry, skip, a retention pass. A delivery still in the backlog is
//! shown as memory knows it (PENDING, RUNNING with its live attempts, FAILED); the
//! ledger ([`super::ledger`]) keeps the record of everything else.

use super::ledger::{self, LedgerError, illegal, not_found, timestamp};
use super::{BacklogHandle, Shared, Stage};
use crate::store::Store;
use std::time::SystemTime;
use triggers_proto::{DeliveryRecord, DeliveryState};

/// Longest list page.
const MAX_PAGE: usize = 500;
/// Longest accepted cancel reason, in characters.
const MAX_REASON_CHARS: usize = 1000;

impl Shared {
    /// One delivery: the in-memory view of a pending or running one, else its record.
    fn get(&self, store: &Store, trigger: u32, seq: u64) -> Result<DeliveryRecord, LedgerError> {
        let stored = store.delivery(trigger, seq)?;
        if let Some(queue) = self.queue(trigger) {
            let state = queue.lock();
            if let Some(entry) = state.entries.iter().find(|e| e.first_commit_seq == seq) {
                return Ok(ledger::live(
                    entry.delivery(queue.index),
                    entry.live(),
                    stored.as_ref(),
                ));
            }
        }
        stored.ok_or_else(|| not_found(trigger, seq))
    }

    /// Every delivery, newest first (by first commit sequence number, then trigger).
    fn list(&self, store: &Store) -> Result<Vec<DeliveryRecord>, LedgerError> {
        let mut records: std::collections::BTreeMap<(u64, u32), DeliveryRecord> = store
            .deliveries()?
            .into_iter()
            .map(|r| ((r.first_commit_seq, r.trigger), r))
            .collect();
        for queue in &self.queues {
            let state = queue.lock();
            for entry in &state.entries {
                let key = (entry.first_commit_seq, queue.index);
                let view =
                    ledger::live(entry.delivery(queue.index), entry.live(), records.get(&key));
                records.insert(key, view);
            }
        }
        Ok(records.into_values().rev().collect())
    }

    /// FAILED → PENDING: the delivery is sent again now (as `operator-replay`, even while
    /// another delivery is FAILED), and the backlog resumes once none is.
    fn retry(&self, store: &Store, trigger: u32, seq: u64) -> Result<DeliveryRecord, LedgerError> {
        let queue = self.queue(trigger).ok_or_else(|| not_found(trigger, seq))?;
        let mut state = queue.lock();
        let _cas = self.ledger.guard();
        let stored = store.delivery(trigger, seq)?;
        let Some(entry) = state.entries.iter_mut().find(|e| e.first_commit_seq == seq) else {
            let stored = stored.ok_or_else(|| not_found(trigger, seq))?;
            return Err(illegal(
                "retry",
                &stored,
                "only a FAILED delivery can be retried, and this one is finished",
            ));
        };
        let current = ledger::live(entry.delivery(queue.index), entry.live(), stored.as_ref());
        if !entry.failed() {
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
        store.write_delivery(&next, false, None)?;
        entry.stage = Stage::Queued;
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
    fn skip(
        &self,
        store: &Store,
        trigger: u32,
        seq: u64,
        reason: &str,
    ) -> Result<DeliveryRecord, LedgerError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(LedgerError::Invalid(
                "skipping a delivery needs a reason, for the record".to_string(),
            ));
        }
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        let queue = self.queue(trigger).ok_or_else(|| not_found(trigger, seq))?;
        let mut state = queue.lock();
        let _cas = self.ledger.guard();
        let stored = store.delivery(trigger, seq)?;
        let Some(at) = state.entries.iter().position(|e| e.first_commit_seq == seq) else {
            let stored = stored.ok_or_else(|| not_found(trigger, seq))?;
            let hint = match stored.state() {
                DeliveryState::Success => "it was delivered",
                _ => "it is already finished",
            };
            return Err(illegal("skip", &stored, hint));
        };
        let entry = &state.entries[at];
        let current = ledger::live(entry.delivery(queue.index), entry.live(), stored.as_ref());
        if matches!(entry.stage, Stage::InFlight | Stage::Merging) {
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
        store.write_delivery(&next, true, None)?;
        let was_failed = state.entries.remove(at).is_some_and(|e| e.failed());
        drop(state);
        tracing::warn!(trigger, first_commit_seq = seq, %reason, "operator skipped a delivery; it will not be sent");
        if was_failed {
            self.failure_cleared();
        }
        queue.wake.notify_one();
        Ok(next)
    }
}

/// Operator and reader access to the ledger, through a [`BacklogHandle`].
///
/// Cancel safety: each call is one job on the shard's store thread, queued when the
/// future is first polled. Dropping the future after that loses only the answer: the job
/// still runs, and a transition (retry, skip) happens as a whole.
impl BacklogHandle {
    /// One delivery.
    pub async fn delivery(
        &self,
        trigger: u32,
        first_commit_seq: u64,
    ) -> Result<DeliveryRecord, LedgerError> {
        let shared = self.0.clone();
        run(&self.0, move |store| {
            shared.get(store, trigger, first_commit_seq)
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
        let all = run(&self.0, move |store| shared.list(store)).await?;
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
        run(&self.0, move |store| {
            shared.retry(store, trigger, first_commit_seq)
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
            .run_job(move |shared, store| shared.skip(store, trigger, first_commit_seq, &reason))
            .await?
    }

    /// Runs a retention pass now; returns how many records it collected.
    pub async fn collect(&self) -> Result<usize, LedgerError> {
        let shared = self.0.clone();
        run(&self.0, move |store| {
            shared.ledger.collect(store).map_err(LedgerError::from)
        })
        .await
    }
}

/// Runs ledger work on the store thread (without the wakeups of [`Shared::run_job`]:
/// nothing here frees room or drains the backlog).
async fn run<T: Send + 'static>(
    shared: &Shared,
    work: impl FnOnce(&Store) -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, LedgerError> {
    shared.store.run(work).await?
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
