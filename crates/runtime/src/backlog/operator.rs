//! Operator and reader access to the ledger, through a [`BacklogHandle`]: one delivery,
//! a page of them, retry, skip, a retention pass. A delivery still in the backlog is
//! shown as memory knows it (PENDING, RUNNING with its live attempts, FAILED); the
//! ledger ([`super::ledger`]) keeps the record of everything else. Deliveries are named
//! by their trigger's name; an orphaned one (its trigger is gone from the config) shows
//! as PENDING and can be skipped, not retried.

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
    fn get(&self, store: &Store, trigger: &str, seq: u64) -> Result<DeliveryRecord, LedgerError> {
        let stored = store.delivery(trigger, seq)?;
        if let Some(queue) = self.queue_named(trigger) {
            let state = queue.lock();
            if let Some(entry) = state.entries.iter().find(|e| e.first_commit_seq == seq) {
                return Ok(ledger::live(
                    entry.delivery(queue),
                    entry.live(),
                    stored.as_ref(),
                ));
            }
        }
        if let Some(orphan) = self.orphans().iter().find(|e| e.is(trigger, seq)) {
            return Ok(ledger::orphan(orphan, stored.as_ref()));
        }
        stored
            .map(|record| self.placed(record))
            .ok_or_else(|| not_found(trigger, seq))
    }

    /// A stored record with `trigger` set to where its trigger is in the config now.
    fn placed(&self, mut record: DeliveryRecord) -> DeliveryRecord {
        record.trigger = self
            .queue_named(&record.trigger_name)
            .map_or(ledger::GONE_TRIGGER, |queue| queue.index);
        record
    }

    /// Every delivery, newest first (by first commit sequence number, then trigger name).
    fn list(&self, store: &Store) -> Result<Vec<DeliveryRecord>, LedgerError> {
        let mut records: std::collections::BTreeMap<(u64, String), DeliveryRecord> = store
            .deliveries()?
            .into_iter()
            .map(|r| ((r.first_commit_seq, r.trigger_name.clone()), self.placed(r)))
            .collect();
        for queue in &self.queues {
            let state = queue.lock();
            for entry in &state.entries {
                let key = (entry.first_commit_seq, queue.name.to_string());
                let view = ledger::live(entry.delivery(queue), entry.live(), records.get(&key));
                records.insert(key, view);
            }
        }
        for orphan in self.orphans().iter() {
            let key = (orphan.first_commit_seq, orphan.trigger.clone());
            let view = ledger::orphan(orphan, records.get(&key));
            records.insert(key, view);
        }
        Ok(records.into_values().rev().collect())
    }

    /// PENDING → CANCELLED for an orphaned entry, deleting it from the store.
    fn skip_orphan(
        &self,
        store: &Store,
        trigger: &str,
        seq: u64,
        reason: String,
    ) -> Result<Option<DeliveryRecord>, LedgerError> {
        let mut orphans = self.orphans();
        let Some(at) = orphans.iter().position(|e| e.is(trigger, seq)) else {
            return Ok(None);
        };
        let _cas = self.ledger.guard();
        let stored = store.delivery(trigger, seq)?;
        let next = DeliveryRecord {
            state: DeliveryState::Cancelled as i32,
            updated_at: Some(timestamp(SystemTime::now())),
            cancel_reason: reason,
            ..ledger::orphan(&orphans[at], stored.as_ref())
        };
        store.write_delivery(&next, true, None)?;
        orphans.remove(at);
        tracing::warn!(
            trigger_name = trigger,
            first_commit_seq = seq,
            reason = %next.cancel_reason,
            "operator skipped a delivery of a trigger no longer in the config; it will not be sent"
        );
        Ok(Some(next))
    }

    /// FAILED → PENDING: the delivery is sent again now (as `operator-replay`, even while
    /// another delivery is FAILED), and the backlog resumes once none is.
    fn retry(&self, store: &Store, trigger: &str, seq: u64) -> Result<DeliveryRecord, LedgerError> {
        let Some(queue) = self.queue_named(trigger) else {
            if let Some(orphan) = self.orphans().iter().find(|e| e.is(trigger, seq)) {
                let stored = store.delivery(trigger, seq)?;
                return Err(illegal(
                    "retry",
                    &ledger::orphan(orphan, stored.as_ref()),
                    "its trigger is no longer in the config: skip it, or restore the trigger \
                     (the same name) and reopen the shard to send it",
                ));
            }
            return Err(match store.delivery(trigger, seq)? {
                Some(stored) => illegal(
                    "retry",
                    &stored,
                    "only a FAILED delivery can be retried, and this one is finished",
                ),
                None => not_found(trigger, seq),
            });
        };
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
        let current = ledger::live(entry.delivery(queue), entry.live(), stored.as_ref());
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
            trigger = queue.index,
            trigger_name = trigger,
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
        trigger: &str,
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
        let Some(queue) = self.queue_named(trigger) else {
            if let Some(skipped) = self.skip_orphan(store, trigger, seq, reason)? {
                return Ok(skipped);
            }
            return Err(match store.delivery(trigger, seq)? {
                Some(stored) => illegal("skip", &stored, "it is already finished"),
                None => not_found(trigger, seq),
            });
        };
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
        let current = ledger::live(entry.delivery(queue), entry.live(), stored.as_ref());
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
        tracing::warn!(
            trigger = queue.index,
            trigger_name = trigger,
            first_commit_seq = seq,
            %reason,
            "operator skipped a delivery; it will not be sent"
        );
        if was_failed {
            self.failure_cleared();
        }
        queue.wake.notify_one();
        Ok(next)
    }
}

/// Operator and reader access to the ledger, through a [`BacklogHandle`].
///
/// Cancel safety: each call is one job on the shard's store lane, queued when the
/// future is first polled. Dropping the future after that loses only the answer: the job
/// still runs, and a transition (retry, skip) happens as a whole.
impl BacklogHandle {
    /// The name of the trigger at `index` in the config, for callers that name triggers
    /// by position (the name is what identifies a delivery).
    pub fn trigger_name(&self, index: u32) -> Option<String> {
        self.0.queue(index).map(|queue| queue.name.to_string())
    }

    /// One delivery of the trigger named `trigger`.
    pub async fn delivery(
        &self,
        trigger: &str,
        first_commit_seq: u64,
    ) -> Result<DeliveryRecord, LedgerError> {
        let shared = self.0.clone();
        let trigger = trigger.to_string();
        run(&self.0, move |store| {
            shared.get(store, &trigger, first_commit_seq)
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
            Some((seq, name)) => all
                .iter()
                .position(|r| (r.first_commit_seq, r.trigger_name.as_str()) < (seq, name.as_str()))
                .unwrap_or(all.len()),
        };
        let page: Vec<DeliveryRecord> = all.iter().skip(start).take(size).cloned().collect();
        let next = match page.last() {
            Some(last) if start + page.len() < all.len() => {
                format!("{}/{}", last.first_commit_seq, last.trigger_name)
            }
            _ => String::new(),
        };
        Ok((page, next))
    }

    /// Sends a FAILED delivery again now (FAILED → PENDING), as `operator-replay`, its
    /// attempts numbered after those on record.
    pub async fn retry(
        &self,
        trigger: &str,
        first_commit_seq: u64,
    ) -> Result<DeliveryRecord, LedgerError> {
        let shared = self.0.clone();
        let trigger = trigger.to_string();
        run(&self.0, move |store| {
            shared.retry(store, &trigger, first_commit_seq)
        })
        .await
    }

    /// Cancels a PENDING or FAILED delivery, with a reason (→ CANCELLED); also an
    /// orphaned one (its trigger is gone from the config), which deletes it.
    pub async fn skip(
        &self,
        trigger: &str,
        first_commit_seq: u64,
        reason: &str,
    ) -> Result<DeliveryRecord, LedgerError> {
        let (trigger, reason) = (trigger.to_string(), reason.to_string());
        self.0
            .run_job(move |shared, store| shared.skip(store, &trigger, first_commit_seq, &reason))
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

/// Runs ledger work on the store lane (without the wakeups of [`Shared::run_job`]:
/// nothing here frees room or drains the backlog).
async fn run<T: Send + 'static>(
    shared: &Shared,
    work: impl FnOnce(&Store) -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, LedgerError> {
    shared.store.run(work).await?
}

fn parse_token(token: &str) -> Result<Option<(u64, String)>, LedgerError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid =
        || LedgerError::Invalid(format!("page token {token:?} is not one this sidecar gave"));
    let (seq, trigger) = token.split_once('/').ok_or_else(invalid)?;
    if trigger.is_empty() || trigger.len() > triggers::MAX_TRIGGER_NAME_BYTES {
        return Err(invalid());
    }
    Ok(Some((
        seq.parse().map_err(|_| invalid())?,
        trigger.to_string(),
    )))
}
