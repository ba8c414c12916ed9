//! Operator and reader access to the ledger, through a [`BacklogHandle`]: one delivery,
//! a page of them, retry, skip, a retention pass. A delivery still in the backlog is
//! shown as memory knows it (PENDING, RUNNING with its live attempts, FAILED); the
//! ledger ([`super::ledger`]) keeps the record of everything else. Deliveries are named
//! by their trigger's name; an orphaned one (its trigger is gone from the config) shows
//! as PENDING and can be skipped, not retried.

use super::ledger::{self, LedgerError, illegal, not_found, timestamp};
use super::{BacklogHandle, Entry, QueueState, Shared, Stage};
use crate::store::Store;
use std::time::SystemTime;
use triggers::Variables;
use triggers_proto::{DeliveryRecord, DeliveryState};

/// Longest list page.
const MAX_PAGE: usize = 500;
/// Most deliveries one replay may send again (the ledger's default retention).
pub const MAX_REPLAY: usize = 1000;

/// Which delivered webhooks of a trigger a replay sends again: by the commit sequence
/// numbers they cover, or by when their first transaction committed. Bounds are
/// inclusive; a delivery is selected when its whole range lies within them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayRange {
    /// Deliveries whose commits lie in `first..=last`.
    Commits {
        /// The first commit sequence number.
        first: u64,
        /// The last (at least `first`).
        last: u64,
    },
    /// Deliveries whose first transaction committed in `from..=to`.
    CommittedBetween {
        /// The earliest commit time.
        from: SystemTime,
        /// The latest (not before `from`).
        to: SystemTime,
    },
}

impl ReplayRange {
    pub(super) fn check(&self) -> Result<(), LedgerError> {
        let ordered = match self {
            ReplayRange::Commits { first, last } => first <= last,
            ReplayRange::CommittedBetween { from, to } => from <= to,
        };
        if ordered {
            Ok(())
        } else {
            Err(LedgerError::Invalid(format!(
                "replay range {self:?} ends before it starts"
            )))
        }
    }

    pub(super) fn selects(&self, record: &DeliveryRecord) -> bool {
        match *self {
            ReplayRange::Commits { first, last } => {
                record.first_commit_seq >= first && record.last_commit_seq <= last
            }
            ReplayRange::CommittedBetween { from, to } => record
                .committed_at
                .and_then(ledger::system_time)
                .is_some_and(|at| at >= from && at <= to),
        }
    }
}
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
            if stored.dead_letter && stored.state() == DeliveryState::Failed {
                let next = self.revive(store, &mut state, stored, "retry")?;
                drop(state);
                tracing::info!(
                    trigger = queue.index,
                    trigger_name = trigger,
                    first_commit_seq = seq,
                    "operator retries a dead letter; it goes back in the backlog"
                );
                queue.wake.notify_one();
                return Ok(next);
            }
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
            replay: true,
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

    /// A finished delivery (a dead letter, or a SUCCESS) back in `queue` as PENDING, to
    /// be sent now as `operator-replay`: its stored entry under its key again and its
    /// record PENDING, in one batch, and the entry in memory at its place in commit order
    /// (sealed: a coalesced trigger never merges into what a receiver may have). Called
    /// with the queue (its `state`) and the ledger locked.
    fn revive(
        &self,
        store: &Store,
        state: &mut QueueState,
        stored: DeliveryRecord,
        action: &'static str,
    ) -> Result<DeliveryRecord, LedgerError> {
        let seq = stored.first_commit_seq;
        if state.entries.iter().any(|e| e.first_commit_seq == seq) {
            return Err(illegal(action, &stored, "it is in the backlog already"));
        }
        let (next, variables, committed_at) = revive_on_disk(store, self.placed(stored), action)?;
        let at = state
            .entries
            .iter()
            .position(|e| e.first_commit_seq > seq)
            .unwrap_or(state.entries.len());
        state.entries.insert(
            at,
            Entry {
                sealed: true,
                replay: true,
                ..Entry::new(seq, variables, committed_at)
            },
        );
        Ok(next)
    }

    /// SUCCESS → PENDING for each delivered webhook of `trigger` that `range` selects
    /// and the ledger keeps (with what it sent): each goes back in the backlog, to be sent
    /// again as `operator-replay`, oldest first. At most [`MAX_REPLAY`] at once.
    fn replay(
        &self,
        store: &Store,
        trigger: &str,
        range: &ReplayRange,
    ) -> Result<Vec<DeliveryRecord>, LedgerError> {
        let Some(queue) = self.queue_named(trigger) else {
            return Err(LedgerError::Invalid(format!(
                "trigger {trigger} is not in the config: only a trigger the shard runs can \
                 replay"
            )));
        };
        let mut state = queue.lock();
        let _cas = self.ledger.guard();
        let chosen = replayable(store, trigger, range)?;
        let mut replayed = Vec::with_capacity(chosen.len());
        for record in chosen {
            replayed.push(self.revive(store, &mut state, record, "replay")?);
        }
        drop(state);
        tracing::warn!(
            trigger = queue.index,
            trigger_name = trigger,
            replayed = replayed.len(),
            ?range,
            "operator replays delivered webhooks"
        );
        queue.wake.notify_one();
        Ok(replayed)
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
        let reason = cancel_reason(reason)?;
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
            if stored.dead_letter && stored.state() == DeliveryState::Failed {
                // A dead letter has no backlog entry: it only leaves the dead letters.
                let next = DeliveryRecord {
                    state: DeliveryState::Cancelled as i32,
                    updated_at: Some(timestamp(SystemTime::now())),
                    cancel_reason: reason.clone(),
                    dead_letter: false,
                    ..self.placed(stored)
                };
                store.write_delivery(&next, false, None)?;
                tracing::warn!(
                    trigger = queue.index,
                    trigger_name = trigger,
                    first_commit_seq = seq,
                    %reason,
                    "operator skipped a dead letter; it will not be sent"
                );
                return Ok(next);
            }
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
        parse_token(page_token)?;
        let shared = self.0.clone();
        let all = run(&self.0, move |store| shared.list(store)).await?;
        page(&all, page_size, page_token)
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

    /// Sends delivered webhooks of the trigger named `trigger` again, as
    /// `operator-replay` (each keeps its `webhook-id`: a receiver that dedupes on it
    /// ignores the replay unless it honours the reason): those `range` selects among the
    /// SUCCESS records retention keeps, at most [`MAX_REPLAY`] at once. Returns their
    /// records, PENDING again; they are sent oldest first, before newer webhooks of an
    /// ordered trigger.
    pub async fn replay(
        &self,
        trigger: &str,
        range: ReplayRange,
    ) -> Result<Vec<DeliveryRecord>, LedgerError> {
        range.check()?;
        let shared = self.0.clone();
        let trigger = trigger.to_string();
        run(&self.0, move |store| shared.replay(store, &trigger, &range)).await
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

/// Puts the finished delivery `stored` (a dead letter, or a SUCCESS) back in its
/// trigger's backlog on disk: its kept entry under its key again and its record PENDING
/// (`replay`: sent as `operator-replay`), in one batch. Returns the new record and what
/// it sends. Refused when its record keeps nothing to send, or what it keeps does not
/// decode (nothing is written then).
pub(super) fn revive_on_disk(
    store: &Store,
    stored: DeliveryRecord,
    action: &'static str,
) -> Result<(DeliveryRecord, Variables, SystemTime), LedgerError> {
    let seq = stored.first_commit_seq;
    let Some(kept) = stored.entry.clone() else {
        return Err(illegal(
            action,
            &stored,
            "its record (written by an earlier build) keeps nothing to send",
        ));
    };
    let params = kept.params.clone().unwrap_or_default();
    let variables = Variables::from_params(params).map_err(|err| {
        LedgerError::Invalid(format!(
            "the record of trigger {} starting at commit {seq} keeps variables that do not \
             decode: {err}",
            stored.trigger_name
        ))
    })?;
    let committed_at = kept
        .committed_at
        .and_then(ledger::system_time)
        .unwrap_or_else(SystemTime::now);
    let next = DeliveryRecord {
        state: DeliveryState::Pending as i32,
        updated_at: Some(timestamp(SystemTime::now())),
        dead_letter: false,
        error: String::new(),
        replay: true,
        ..stored
    };
    store.restore_backlog_entry(&next, &kept)?;
    Ok((next, variables, committed_at))
}

/// The SUCCESS records of `trigger` that `range` selects and that keep what they sent,
/// oldest first; more than [`MAX_REPLAY`] is refused.
pub(super) fn replayable(
    store: &Store,
    trigger: &str,
    range: &ReplayRange,
) -> Result<Vec<DeliveryRecord>, LedgerError> {
    let mut chosen: Vec<DeliveryRecord> = store
        .deliveries()?
        .into_iter()
        .filter(|r| {
            r.trigger_name == trigger
                && r.state() == DeliveryState::Success
                && r.entry.is_some()
                && range.selects(r)
        })
        .collect();
    chosen.sort_by_key(|r| r.first_commit_seq);
    if chosen.len() > MAX_REPLAY {
        return Err(LedgerError::Invalid(format!(
            "the range selects {} delivered webhooks of trigger {trigger}, more than the \
             {MAX_REPLAY} one replay may send: narrow it",
            chosen.len()
        )));
    }
    Ok(chosen)
}

/// A skip's reason, trimmed and bounded; an empty one is refused.
pub(super) fn cancel_reason(reason: &str) -> Result<String, LedgerError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(LedgerError::Invalid(
            "skipping a delivery needs a reason, for the record".to_string(),
        ));
    }
    Ok(reason.chars().take(MAX_REASON_CHARS).collect())
}

/// One page of `all` (newest first) after `page_token`, and the next page's token.
pub(super) fn page(
    all: &[DeliveryRecord],
    page_size: usize,
    page_token: &str,
) -> Result<(Vec<DeliveryRecord>, String), LedgerError> {
    let size = match page_size {
        0 => 50,
        n => n.min(MAX_PAGE),
    };
    let after = parse_token(page_token)?;
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
