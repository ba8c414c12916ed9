//! `triggers deliveries`: an operator's view of a shard's delivery ledger, and its
//! actions (retry, skip, replay), against a running sidecar (gRPC) or a stopped shard's
//! store on disk ([`triggers_runtime::StoppedShard`]), with one output for both: a table
//! for people, JSON for scripts. Nothing it prints holds a secret: ledger records hold
//! none.

use crate::Client;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use triggers_proto::sidecar::{
    DeliveryRef, ListDeliveriesRequest, ReplayDeliveriesRequest, SkipDeliveryRequest,
};
use triggers_proto::{DeliveryRecord, DeliveryState, Timestamp};
use triggers_runtime::{LedgerError, ReplayRange, StoppedShard, StoreError};

/// Most records one `list` prints (and the largest `--limit`).
pub const MAX_LIST: usize = 500;
/// Pages a filtered `list` reads at most before it stops (with a token to go on).
const MAX_PAGES_SCANNED: usize = 100;

/// Where the deliveries are.
pub enum Target {
    /// A running sidecar, and the shard of its to act on (empty: the default shard).
    Sidecar {
        /// The connected client (boxed: it is large beside a path).
        client: Box<Client>,
        /// The shard's id.
        shard: String,
    },
    /// A stopped shard's store (its directory).
    Store(PathBuf),
}

/// Why a `deliveries` command did not do what it was asked, and its exit status.
#[derive(Debug, thiserror::Error)]
pub enum DeliveriesError {
    /// The ledger refused: no such delivery, a transition its state does not allow, an
    /// invalid request (exit status 1).
    #[error("{0}")]
    Refused(String),
    /// The sidecar or the store could not be reached: a store another process holds, a
    /// sidecar not answering (exit status 3).
    #[error("{0}")]
    Unreachable(String),
}

impl DeliveriesError {
    /// The exit status: 1 refused, 3 unreachable (2 is the usage errors' own).
    pub fn exit_code(&self) -> u8 {
        match self {
            DeliveriesError::Refused(_) => 1,
            DeliveriesError::Unreachable(_) => 3,
        }
    }
}

impl From<tonic::Status> for DeliveriesError {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let message = format!("{:?}: {}", status.code(), status.message());
        match status.code() {
            Code::NotFound
            | Code::FailedPrecondition
            | Code::InvalidArgument
            | Code::OutOfRange
            | Code::AlreadyExists => DeliveriesError::Refused(message),
            _ => DeliveriesError::Unreachable(message),
        }
    }
}

impl From<LedgerError> for DeliveriesError {
    fn from(err: LedgerError) -> Self {
        match err {
            LedgerError::Store(_) | LedgerError::Blocking(_) => {
                DeliveriesError::Unreachable(err.to_string())
            }
            other => DeliveriesError::Refused(other.to_string()),
        }
    }
}

/// A `list`'s filter: by state (`dead-letter` is a FAILED dead letter) and trigger name.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only deliveries in this state.
    pub state: Option<StateFilter>,
    /// Only deliveries of the trigger with this name.
    pub trigger: Option<String>,
}

/// The states a list can be filtered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateFilter {
    /// Waiting to be sent.
    Pending,
    /// Being sent.
    Running,
    /// Delivered.
    Success,
    /// Failed for good (stopped ones and dead letters).
    Failed,
    /// Failed for good, the backlog going on without it (`onFailure: deadLetter`).
    DeadLetter,
    /// Skipped by an operator.
    Cancelled,
}

impl StateFilter {
    /// Every state a list can be filtered by, in lifecycle order.
    pub const ALL: [StateFilter; 6] = [
        StateFilter::Pending,
        StateFilter::Running,
        StateFilter::Success,
        StateFilter::Failed,
        StateFilter::DeadLetter,
        StateFilter::Cancelled,
    ];

    /// How a query string or `--state` spells it (`dead-letter`, ...).
    pub fn param(self) -> &'static str {
        match self {
            StateFilter::Pending => "pending",
            StateFilter::Running => "running",
            StateFilter::Success => "success",
            StateFilter::Failed => "failed",
            StateFilter::DeadLetter => "dead-letter",
            StateFilter::Cancelled => "cancelled",
        }
    }

    /// The state `param` spells, if it spells one.
    pub fn from_param(param: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.param() == param)
    }

    /// How tables and pages show it (`DEAD_LETTER`, ...).
    pub fn label(self) -> &'static str {
        match self {
            StateFilter::DeadLetter => "DEAD_LETTER",
            StateFilter::Pending => DeliveryState::Pending.as_str(),
            StateFilter::Running => DeliveryState::Running.as_str(),
            StateFilter::Success => DeliveryState::Success.as_str(),
            StateFilter::Failed => DeliveryState::Failed.as_str(),
            StateFilter::Cancelled => DeliveryState::Cancelled.as_str(),
        }
    }
}

impl Filter {
    /// Whether `record` passes the filter.
    pub fn keeps(&self, record: &DeliveryRecord) -> bool {
        let state = record.state();
        let state_kept = match self.state {
            None => true,
            Some(StateFilter::Pending) => state == DeliveryState::Pending,
            Some(StateFilter::Running) => state == DeliveryState::Running,
            Some(StateFilter::Success) => state == DeliveryState::Success,
            Some(StateFilter::Failed) => state == DeliveryState::Failed,
            Some(StateFilter::DeadLetter) => state == DeliveryState::Failed && record.dead_letter,
            Some(StateFilter::Cancelled) => state == DeliveryState::Cancelled,
        };
        state_kept
            && self
                .trigger
                .as_ref()
                .is_none_or(|t| *t == record.trigger_name)
    }
}

/// One page of a list: the records kept, and the token to go on from (empty when done).
#[derive(Debug, Clone, Default)]
pub struct Listed {
    /// Newest first.
    pub deliveries: Vec<DeliveryRecord>,
    /// Pass it as `--page-token` for the next records; empty at the end (a page that
    /// ended at its limit gives one even if nothing follows).
    pub next_page_token: String,
}

/// A page of the target's deliveries, newest first, after `page_token`: at most `limit`
/// (1 to [`MAX_LIST`]) that `filter` keeps, reading the ledger's pages until it has them
/// (or 100 pages of 500, then with a token to go on).
///
/// Cancel-safe: it only reads.
pub async fn list(
    target: &mut Target,
    filter: &Filter,
    limit: usize,
    page_token: &str,
) -> Result<Listed, DeliveriesError> {
    let limit = limit.clamp(1, MAX_LIST);
    let mut token = page_token.to_string();
    let mut kept = Vec::new();
    for _ in 0..MAX_PAGES_SCANNED {
        let (page, next) = page(target, &token).await?;
        for record in page {
            if filter.keeps(&record) {
                kept.push(record);
                if kept.len() == limit {
                    // The ledger's token names the last record given: the next page
                    // starts after it (and may turn out empty).
                    let next_page_token = kept.last().map(token_after).unwrap_or_default();
                    return Ok(Listed {
                        deliveries: kept,
                        next_page_token,
                    });
                }
            }
        }
        if next.is_empty() {
            return Ok(Listed {
                deliveries: kept,
                next_page_token: String::new(),
            });
        }
        token = next;
    }
    Ok(Listed {
        deliveries: kept,
        next_page_token: token,
    })
}

/// The page token that starts after `record` (the ledger's own form).
fn token_after(record: &DeliveryRecord) -> String {
    format!("{}/{}", record.first_commit_seq, record.trigger_name)
}

async fn page(
    target: &mut Target,
    token: &str,
) -> Result<(Vec<DeliveryRecord>, String), DeliveriesError> {
    const PAGE: usize = 500;
    match target {
        Target::Sidecar { client, shard } => {
            let page = client
                .list_deliveries(ListDeliveriesRequest {
                    page_size: PAGE as u32,
                    page_token: token.to_string(),
                    shard: shard.clone(),
                })
                .await?
                .into_inner();
            Ok((page.deliveries, page.next_page_token))
        }
        Target::Store(dir) => {
            let token = token.to_string();
            offline(dir, move |shard| shard.deliveries(PAGE, &token)).await
        }
    }
}

/// One delivery. Cancel-safe: it only reads.
pub async fn show(
    target: &mut Target,
    trigger: &str,
    first_commit_seq: u64,
) -> Result<DeliveryRecord, DeliveriesError> {
    match target {
        Target::Sidecar { client, shard } => Ok(client
            .get_delivery(delivery_ref(shard, trigger, first_commit_seq))
            .await?
            .into_inner()),
        Target::Store(dir) => {
            let trigger = trigger.to_string();
            offline(dir, move |shard| shard.delivery(&trigger, first_commit_seq)).await
        }
    }
}

/// Sends a FAILED delivery (or a dead letter) again. Not cancel-safe in the sense that a
/// dropped call may still have happened: look at the delivery again.
pub async fn retry(
    target: &mut Target,
    trigger: &str,
    first_commit_seq: u64,
) -> Result<DeliveryRecord, DeliveriesError> {
    match target {
        Target::Sidecar { client, shard } => Ok(client
            .retry_delivery(delivery_ref(shard, trigger, first_commit_seq))
            .await?
            .into_inner()),
        Target::Store(dir) => {
            let trigger = trigger.to_string();
            offline(dir, move |shard| shard.retry(&trigger, first_commit_seq)).await
        }
    }
}

/// Cancels a PENDING or FAILED delivery, with a reason. Like [`retry`], a dropped call
/// may still have happened.
pub async fn skip(
    target: &mut Target,
    trigger: &str,
    first_commit_seq: u64,
    reason: &str,
) -> Result<DeliveryRecord, DeliveriesError> {
    match target {
        Target::Sidecar { client, shard } => Ok(client
            .skip_delivery(SkipDeliveryRequest {
                delivery: Some(delivery_ref(shard, trigger, first_commit_seq)),
                reason: reason.to_string(),
            })
            .await?
            .into_inner()),
        Target::Store(dir) => {
            let (trigger, reason) = (trigger.to_string(), reason.to_string());
            offline(dir, move |shard| {
                shard.skip(&trigger, first_commit_seq, &reason)
            })
            .await
        }
    }
}

/// Sends delivered webhooks of `trigger` again. Like [`retry`], a dropped call may still
/// have happened.
pub async fn replay(
    target: &mut Target,
    trigger: &str,
    range: ReplayRange,
) -> Result<Vec<DeliveryRecord>, DeliveriesError> {
    match target {
        Target::Sidecar { client, shard } => {
            let mut request = ReplayDeliveriesRequest {
                shard: shard.clone(),
                trigger_name: trigger.to_string(),
                ..Default::default()
            };
            match range {
                ReplayRange::Commits { first, last } => {
                    request.first_commit_seq = first;
                    request.last_commit_seq = last;
                }
                ReplayRange::CommittedBetween { from, to } => {
                    request.committed_from = Some(timestamp(from));
                    request.committed_to = Some(timestamp(to));
                }
            }
            Ok(client
                .replay_deliveries(request)
                .await?
                .into_inner()
                .replayed)
        }
        Target::Store(dir) => {
            let trigger = trigger.to_string();
            offline(dir, move |shard| shard.replay(&trigger, range)).await
        }
    }
}

fn delivery_ref(shard: &str, trigger: &str, first_commit_seq: u64) -> DeliveryRef {
    DeliveryRef {
        trigger: 0,
        first_commit_seq,
        trigger_name: trigger.to_string(),
        shard: shard.to_string(),
    }
}

/// Runs `work` on the stopped shard at `dir`, off the async workers (RocksDB blocks).
async fn offline<T: Send + 'static>(
    dir: &std::path::Path,
    work: impl FnOnce(&StoppedShard) -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, DeliveriesError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let shard = StoppedShard::open(&dir).map_err(|err| match err {
            StoreError::Locked { .. } => DeliveriesError::Unreachable(format!(
                "{err}; a running shard or sidecar holds it: use --sidecar (or stop it first)"
            )),
            other => DeliveriesError::Unreachable(format!("{}: {other}", dir.display())),
        })?;
        work(&shard).map_err(DeliveriesError::from)
    })
    .await
    .map_err(|err| {
        DeliveriesError::Unreachable(format!("the store work did not complete: {err}"))
    })?
}

fn timestamp(at: SystemTime) -> Timestamp {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: since.subsec_nanos() as i32,
    }
}

/// A timestamp as RFC 3339 (UTC, milliseconds), empty when absent or out of range.
fn time_text(at: Option<Timestamp>) -> String {
    at.and_then(|at| {
        let seconds = u64::try_from(at.seconds).ok()?;
        let nanos = u32::try_from(at.nanos)
            .ok()
            .filter(|n| *n < 1_000_000_000)?;
        UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
    })
    .map(triggers::run_id)
    .unwrap_or_default()
}

/// A state as the table and JSON name it: the ledger's, or `DEAD_LETTER`.
fn state_text(record: &DeliveryRecord) -> &'static str {
    if record.state() == DeliveryState::Failed && record.dead_letter {
        "DEAD_LETTER"
    } else {
        record.state().as_str()
    }
}

/// A record as JSON, for scripts: every field but the kept variables (which
/// `entry_kept` says are there for a retry or replay), attempts included.
pub fn record_json(record: &DeliveryRecord) -> serde_json::Value {
    serde_json::json!({
        "trigger": record.trigger_name,
        "trigger_position": record.trigger,
        "first_commit_seq": record.first_commit_seq,
        "last_commit_seq": record.last_commit_seq,
        "transaction_count": record.transaction_count,
        "flow_run_id": record.flow_run_id,
        "state": state_text(record),
        "dead_letter": record.dead_letter,
        "replay": record.replay,
        "already_delivered": record.already_delivered,
        "committed_at": time_text(record.committed_at),
        "updated_at": time_text(record.updated_at),
        "error": record.error,
        "cancel_reason": record.cancel_reason,
        "entry_kept": record.entry.is_some(),
        "attempts": record.attempts.iter().map(|a| serde_json::json!({
            "number": a.number,
            "at": time_text(a.at),
            "status": a.status,
            "latency_ms": a.latency_micros as f64 / 1000.0,
            "reason": a.reason,
            "error": a.error,
            "already_delivered": a.already_delivered,
        })).collect::<Vec<_>>(),
    })
}

/// Records as a table, one line each: trigger, first..last commit, state, attempts,
/// last update, and the error or cancel reason (cut to a line).
pub fn table(records: &[DeliveryRecord]) -> String {
    let rows: Vec<[String; 6]> = records
        .iter()
        .map(|r| {
            let note = if r.cancel_reason.is_empty() {
                &r.error
            } else {
                &r.cancel_reason
            };
            [
                r.trigger_name.clone(),
                if r.first_commit_seq == r.last_commit_seq {
                    r.first_commit_seq.to_string()
                } else {
                    format!("{}..{}", r.first_commit_seq, r.last_commit_seq)
                },
                state_text(r).to_string(),
                r.attempts.last().map_or(0, |a| a.number).to_string(),
                time_text(r.updated_at),
                one_line(note, 80),
            ]
        })
        .collect();
    let header = [
        "TRIGGER",
        "COMMITS",
        "STATE",
        "ATTEMPTS",
        "UPDATED",
        "ERROR / REASON",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    out
}

/// One delivery in full, for `show`: the record's fields, then its attempts.
pub fn detail(record: &DeliveryRecord) -> String {
    let mut out = format!(
        "trigger {} (position {}), commits {}..={} ({} transaction(s)), flow_run_id {}\n\
         state {}{}, committed {}, updated {}\n",
        record.trigger_name,
        record.trigger,
        record.first_commit_seq,
        record.last_commit_seq,
        record.transaction_count,
        record.flow_run_id,
        state_text(record),
        if record.replay {
            " (to be sent as operator-replay)"
        } else {
            ""
        },
        time_text(record.committed_at),
        time_text(record.updated_at),
    );
    if !record.error.is_empty() {
        out.push_str(&format!("error: {}\n", record.error));
    }
    if !record.cancel_reason.is_empty() {
        out.push_str(&format!("cancelled: {}\n", record.cancel_reason));
    }
    out.push_str(&format!(
        "{} attempt(s) on record:\n",
        record.attempts.len()
    ));
    for a in &record.attempts {
        out.push_str(&format!(
            "  #{} {} {} {:.1} ms {}{}\n",
            a.number,
            time_text(a.at),
            if a.status == 0 {
                "-".to_string()
            } else {
                a.status.to_string()
            },
            a.latency_micros as f64 / 1000.0,
            a.reason,
            if a.error.is_empty() {
                String::new()
            } else {
                format!(": {}", one_line(&a.error, 200))
            },
        ));
    }
    out
}

/// `text` on one line, at most `max` characters (an ellipsis when cut).
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        flat
    } else {
        let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, trigger: &str, state: DeliveryState, dead: bool) -> DeliveryRecord {
        DeliveryRecord {
            first_commit_seq: seq,
            last_commit_seq: seq,
            trigger_name: trigger.to_string(),
            state: state as i32,
            dead_letter: dead,
            error: "endpoint answered HTTP 422\nwith a body".to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn filters_by_state_and_trigger_and_dead_letters_apart() {
        let failed = record(1, "a", DeliveryState::Failed, false);
        let dead = record(2, "a", DeliveryState::Failed, true);
        let done = record(3, "b", DeliveryState::Success, false);
        let by = |state, trigger: Option<&str>| Filter {
            state,
            trigger: trigger.map(str::to_string),
        };
        let dead_letters = by(Some(StateFilter::DeadLetter), None);
        assert!(!dead_letters.keeps(&failed) && dead_letters.keeps(&dead));
        let all_failed = by(Some(StateFilter::Failed), None);
        assert!(all_failed.keeps(&failed) && all_failed.keeps(&dead) && !all_failed.keeps(&done));
        assert!(by(None, Some("b")).keeps(&done) && !by(None, Some("b")).keeps(&failed));
    }

    #[test]
    fn a_table_has_a_line_per_record_and_errors_on_one_line() {
        let text = table(&[
            record(2, "slack", DeliveryState::Failed, true),
            record(1, "airflow", DeliveryState::Success, false),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("TRIGGER"), "{text}");
        assert!(lines[1].contains("DEAD_LETTER") && lines[1].contains("HTTP 422 with a body"));
        assert_eq!(
            state_text(&record(1, "a", DeliveryState::Failed, false)),
            "FAILED"
        );
        let json = record_json(&record(2, "slack", DeliveryState::Failed, true));
        assert_eq!(json["state"], "DEAD_LETTER");
        assert_eq!(json["first_commit_seq"], 2);
    }
}
