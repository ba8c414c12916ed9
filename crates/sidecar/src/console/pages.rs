//! The console's pages, as maud templates: every value is HTML-escaped unless marked
//! otherwise, and nothing here is marked otherwise.

use super::{DEFAULT_PAGE_SIZE, MAX_REASON_CHARS, REFRESH_SECS};
use crate::deliveries::StateFilter;
use maud::{DOCTYPE, Markup, html};
use std::time::SystemTime;
use triggers_proto::sidecar::StatusResponse;
use triggers_proto::{DeliveryRecord, DeliveryState, Timestamp};

/// The one stylesheet (served at `/style.css`: the CSP allows no inline style).
pub(super) const STYLE: &str = include_str!("style.css");

/// Characters of an error shown in a table cell; the delivery's page shows more.
const CELL_EXCERPT: usize = 160;
/// Characters of an attempt's error on the delivery's page.
const ATTEMPT_EXCERPT: usize = 600;

/// `text` cut to `chars` characters, with `…` when cut.
pub(super) fn excerpt(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// A query string value, percent-encoded.
fn encoded(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The delivery page's address.
pub(super) fn delivery_href(shard: &str, trigger: &str, seq: u64) -> String {
    format!(
        "/delivery?shard={}&trigger={}&seq={seq}",
        encoded(shard),
        encoded(trigger)
    )
}

fn shard_label(shard: &str) -> &str {
    if shard.is_empty() {
        "(default shard)"
    } else {
        shard
    }
}

fn state_name(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::Pending => "PENDING",
        DeliveryState::Running => "RUNNING",
        DeliveryState::Success => "SUCCESS",
        DeliveryState::Failed => "FAILED",
        DeliveryState::Cancelled => "CANCELLED",
    }
}

fn state_param(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::Pending => "pending",
        DeliveryState::Running => "running",
        DeliveryState::Success => "success",
        DeliveryState::Failed => "failed",
        DeliveryState::Cancelled => "cancelled",
    }
}

fn time(at: Option<&Timestamp>) -> String {
    let Some(at) = at else {
        return "-".to_string();
    };
    time::OffsetDateTime::from_unix_timestamp(at.seconds)
        .ok()
        .and_then(|t| t.replace_nanosecond(0).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "-".to_string())
}

fn age(at: Option<&Timestamp>, now: SystemTime) -> String {
    let Some(at) = at.and_then(|at| u64::try_from(at.seconds).ok()) else {
        return "-".to_string();
    };
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let secs = now.saturating_sub(at);
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

fn layout(title: &str, refresh: bool, logout: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                @if refresh {
                    meta http-equiv="refresh" content=(REFRESH_SECS);
                }
                title { (title) " · triggers console" }
                link rel="stylesheet" href="/style.css";
            }
            body {
                header {
                    a href="/" { "triggers console" }
                    @if let Some(csrf) = logout {
                        form method="post" action="/logout" class="logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                    @if refresh {
                        p class="note" { "This page reloads itself every " (REFRESH_SECS) " s." }
                    }
                }
            }
        }
    }
}

/// The login form (TCP): the token, typed once.
pub(super) fn login(message: Option<&str>) -> Markup {
    layout(
        "Log in",
        false,
        None,
        html! {
            @if let Some(message) = message {
                p class="error" { (message) }
            }
            p { "This console needs the sidecar's bearer token (its --token-file or $TRIGGERS_SIDECAR_TOKEN). \
                 It is checked once; the session then lasts 12 hours." }
            form method="post" action="/login" {
                label for="token" { "Token" }
                input type="password" id="token" name="token" autocomplete="off" required;
                button type="submit" id="login" { "Log in" }
            }
        },
    )
}

/// An error page: a refused request or a sidecar call's error.
pub(super) fn refusal(
    logout: Option<&str>,
    status: axum::http::StatusCode,
    message: &str,
) -> Markup {
    layout(
        status.canonical_reason().unwrap_or("Error"),
        false,
        logout,
        html! {
            p class="error" id="error" { (message) }
            p { a href="/" { "Back to the shards" } }
        },
    )
}

/// Every shard and its state.
pub(super) fn shards(logout: Option<&str>, shards: &[(String, StatusResponse)]) -> Markup {
    layout(
        "Shards",
        true,
        logout,
        html! {
            table id="shards" {
                thead { tr {
                    th { "Shard" } th { "Phase" } th { "Backpressured" } th { "Commits" }
                    th { "Deliveries" } th { "Waiting" } th { "Last error" } th { "Ledger" }
                } }
                tbody {
                    @for (id, status) in shards {
                        tr {
                            td { a href={ "/shard?shard=" (encoded(id)) } { (shard_label(id)) } }
                            td { (format!("{:?}", status.phase())) }
                            td { @if status.backpressured { "yes" } @else { "no" } }
                            td { (status.commits) }
                            td { (status.deliveries) }
                            td { (status.backlog.iter().map(|q| q.depth).sum::<u64>()) }
                            td class="error" { (excerpt(&status.last_error, CELL_EXCERPT)) }
                            td { a href={ "/deliveries?shard=" (encoded(id)) } { "deliveries" } }
                        }
                    }
                }
            }
        },
    )
}

/// One shard: its phase and, per trigger, its backlog and its oldest waiting delivery
/// (`oldest`, in the order of `status.backlog`).
pub(super) fn shard(
    logout: Option<&str>,
    shard: &str,
    status: &StatusResponse,
    oldest: &[Option<DeliveryRecord>],
    now: SystemTime,
) -> Markup {
    layout(
        &format!("Shard {}", shard_label(shard)),
        true,
        logout,
        html! {
            dl {
                dt { "Phase" } dd id="phase" { (format!("{:?}", status.phase())) }
                dt { "Delivery mode" } dd { (format!("{:?}", status.delivery_mode())) }
                dt { "Backpressured" } dd { @if status.backpressured { "yes" } @else { "no" } }
                dt { "Backpressure waits" } dd { (status.backpressure_waits) }
                dt { "Commits" } dd id="commits" { (status.commits) }
                dt { "Deliveries finished" } dd { (status.deliveries) }
                dt { "Backlog limit" } dd { (status.backlog_limit) }
                dt { "Last error" } dd class="error" id="last-error" { (excerpt(&status.last_error, ATTEMPT_EXCERPT)) }
            }
            h2 { "Triggers" }
            table {
                thead { tr {
                    th { "Trigger" } th { "Waiting" } th { "In flight" } th { "Delivered" }
                    th { "Oldest waiting" } th { "Its age" } th { "Last error" }
                } }
                tbody {
                    @for (queue, oldest) in status.backlog.iter().zip(oldest.iter().chain(std::iter::repeat(&None))) {
                        @let last = status.last_outcomes.iter().find(|o| o.trigger_name == queue.trigger_name);
                        @let error = oldest
                            .as_ref()
                            .map(|r| if r.error.is_empty() {
                                r.attempts.last().map(|a| a.error.as_str()).unwrap_or_default()
                            } else {
                                r.error.as_str()
                            })
                            .filter(|e| !e.is_empty())
                            .or(last.map(|o| o.error.as_str()))
                            .unwrap_or_default();
                        tr class="trigger" {
                            td { a href={ "/deliveries?shard=" (encoded(shard)) "&trigger=" (encoded(&queue.trigger_name)) } { (queue.trigger_name) } }
                            td class="depth" { (queue.depth) }
                            td { (queue.in_flight) }
                            td { (queue.delivered) }
                            td {
                                @if queue.oldest_pending_seq == 0 { "-" } @else {
                                    a href=(delivery_href(shard, &queue.trigger_name, queue.oldest_pending_seq)) {
                                        "#" (queue.oldest_pending_seq)
                                    }
                                    @if let Some(record) = oldest {
                                        " (" (state_name(record.state())) ")"
                                    }
                                }
                            }
                            td { (age(oldest.as_ref().and_then(|r| r.committed_at.as_ref()), now)) }
                            td class="error" { (excerpt(error, CELL_EXCERPT)) }
                        }
                    }
                }
            }
            @if !status.orphaned.is_empty() {
                h2 { "Triggers the config no longer has" }
                table {
                    thead { tr { th { "Trigger" } th { "Entries kept" } th { "Oldest" } } }
                    tbody { @for o in &status.orphaned {
                        tr {
                            td { (o.trigger_name) }
                            td { (o.depth) }
                            td { a href=(delivery_href(shard, &o.trigger_name, o.oldest_pending_seq)) { "#" (o.oldest_pending_seq) } }
                        }
                    } }
                }
            }
            p { a href={ "/deliveries?shard=" (encoded(shard)) } id="ledger" { "The ledger of deliveries" } }
        },
    )
}

/// What a ledger page shows.
pub(super) struct Ledger<'a> {
    pub shard: &'a str,
    /// The configured triggers' names, for the filter.
    pub triggers: &'a [String],
    pub state: Option<StateFilter>,
    pub trigger: Option<&'a str>,
    pub size: u32,
    pub page: &'a str,
    pub deliveries: &'a [DeliveryRecord],
    pub next: &'a str,
    pub scanned: usize,
}

impl Ledger<'_> {
    fn href(&self, page: &str) -> String {
        let mut href = format!("/deliveries?shard={}", encoded(self.shard));
        if let Some(state) = self.state {
            href.push_str(&format!("&state={}", state.param()));
        }
        if let Some(trigger) = self.trigger {
            href.push_str(&format!("&trigger={}", encoded(trigger)));
        }
        if self.size != DEFAULT_PAGE_SIZE {
            href.push_str(&format!("&size={}", self.size));
        }
        if !page.is_empty() {
            href.push_str(&format!("&page={}", encoded(page)));
        }
        href
    }
}

/// A page of a shard's ledger, newest first, with its filter.
pub(super) fn deliveries(logout: Option<&str>, ledger: &Ledger<'_>) -> Markup {
    let shard = ledger.shard;
    layout(
        &format!("Deliveries of {}", shard_label(shard)),
        true,
        logout,
        html! {
            form method="get" action="/deliveries" class="filter" {
                input type="hidden" name="shard" value=(shard);
                label for="state" { "State" }
                select name="state" id="state" {
                    option value="" { "any" }
                    @for state in StateFilter::ALL {
                        option value=(state.param()) selected[ledger.state == Some(state)] { (state.label()) }
                    }
                }
                label for="trigger" { "Trigger" }
                select name="trigger" id="trigger" {
                    option value="" { "any" }
                    @for name in ledger.triggers {
                        option value=(name) selected[ledger.trigger == Some(name.as_str())] { (name) }
                    }
                }
                button type="submit" { "Filter" }
            }
            table id="deliveries" {
                thead { tr {
                    th { "Trigger" } th { "Commits" } th { "State" } th { "Transactions" }
                    th { "Committed" } th { "Updated" } th { "Attempts" } th { "Error or reason" }
                } }
                tbody {
                    @for record in ledger.deliveries {
                        @let state = record.state();
                        tr class={ "delivery " (state_param(state)) } {
                            td { (record.trigger_name) }
                            td {
                                a href=(delivery_href(shard, &record.trigger_name, record.first_commit_seq)) {
                                    "#" (record.first_commit_seq)
                                    @if record.last_commit_seq > record.first_commit_seq { "–" (record.last_commit_seq) }
                                }
                            }
                            td class="state" { (state_name(state)) @if record.dead_letter { " (dead letter)" } }
                            td { (record.transaction_count) }
                            td { (time(record.committed_at.as_ref())) }
                            td { (time(record.updated_at.as_ref())) }
                            td { (record.attempts.len()) }
                            td class="error" {
                                (excerpt(if record.cancel_reason.is_empty() { &record.error } else { &record.cancel_reason }, CELL_EXCERPT))
                            }
                        }
                    }
                }
            }
            @if ledger.deliveries.is_empty() {
                p { "No delivery here." }
            }
            p class="note" {
                @if ledger.state.is_some() || ledger.trigger.is_some() {
                    (ledger.scanned) " records looked through. "
                }
                @if !ledger.page.is_empty() { a href=(ledger.href("")) { "Newest" } " " }
                @if !ledger.next.is_empty() { a href=(ledger.href(ledger.next)) id="next" { "Older" } }
            }
        },
    )
}

/// One delivery, its attempts and what an operator may do with it (`csrf`: the
/// session's token, for the forms; none for a bearer caller, who POSTs by hand).
pub(super) fn delivery(
    logout: Option<&str>,
    csrf: Option<&str>,
    shard: &str,
    record: &DeliveryRecord,
) -> Markup {
    let state = record.state();
    let retryable = state == DeliveryState::Failed;
    let skippable = matches!(state, DeliveryState::Failed | DeliveryState::Pending);
    // A delivered webhook whose record keeps what it sent (this build's records do).
    let replayable = state == DeliveryState::Success && record.entry.is_some();
    let seq = record.first_commit_seq.to_string();
    let fields = |csrf: &str| {
        html! {
            input type="hidden" name="shard" value=(shard);
            input type="hidden" name="trigger" value=(record.trigger_name);
            input type="hidden" name="seq" value=(seq);
            input type="hidden" name="csrf" value=(csrf);
        }
    };
    layout(
        &format!(
            "Delivery {} #{}",
            record.trigger_name, record.first_commit_seq
        ),
        // A page with a form to fill does not reload under the operator's typing.
        !(skippable && csrf.is_some()),
        logout,
        html! {
            dl {
                dt { "Shard" } dd { a href={ "/shard?shard=" (encoded(shard)) } { (shard_label(shard)) } }
                dt { "Trigger" } dd { (record.trigger_name) }
                dt { "State" } dd id="state" {
                    (state_name(state))
                    @if record.dead_letter { " (dead letter: its trigger's backlog went on without it)" }
                }
                dt { "Commits" } dd { (record.first_commit_seq) "–" (record.last_commit_seq) " (" (record.transaction_count) " transactions)" }
                dt { "Newest transaction" } dd { (record.flow_run_id) }
                dt { "Committed" } dd { (time(record.committed_at.as_ref())) }
                dt { "Updated" } dd { (time(record.updated_at.as_ref())) }
                @if !record.error.is_empty() {
                    dt { "Error" } dd class="error" { (excerpt(&record.error, ATTEMPT_EXCERPT)) }
                }
                @if !record.cancel_reason.is_empty() {
                    dt { "Skipped because" } dd id="reason" { (record.cancel_reason) }
                }
                @if record.already_delivered {
                    dt { "Already delivered" } dd { "the receiver said it had it" }
                }
            }
            h2 { "Attempts" }
            table id="attempts" {
                thead { tr {
                    th { "#" } th { "At" } th { "Status" } th { "Latency" } th { "Reason" } th { "Error" }
                } }
                tbody {
                    @for attempt in &record.attempts {
                        tr {
                            td { (attempt.number) }
                            td { (time(attempt.at.as_ref())) }
                            td { @if attempt.status == 0 { "none" } @else { (attempt.status) } @if attempt.already_delivered { " (already delivered)" } }
                            td { (format!("{:.1} ms", attempt.latency_micros as f64 / 1000.0)) }
                            td { (attempt.reason) }
                            td class="error" { (excerpt(&attempt.error, ATTEMPT_EXCERPT)) }
                        }
                    }
                }
            }
            @if record.attempts.is_empty() { p { "No attempt yet." } }
            @if let Some(csrf) = csrf {
                @if retryable {
                    h2 { "Retry" }
                    form method="post" action="/retry" {
                        (fields(csrf))
                        p { "Send it again now (as operator-replay). The backlog waits behind it until it is delivered or skipped." }
                        button type="submit" id="retry" { "Retry" }
                    }
                }
                @if replayable {
                    h2 { "Replay" }
                    form method="post" action="/replay" {
                        (fields(csrf))
                        p { "Send this delivered webhook again (as operator-replay, with its webhook-id): a receiver that dedupes on the id alone ignores it." }
                        button type="submit" id="replay" { "Replay" }
                    }
                }
                @if skippable {
                    h2 { "Skip" }
                    form method="post" action="/skip" {
                        (fields(csrf))
                        p { "Give up on this webhook: it is never sent, and the backlog goes on." }
                        label for="skip-reason" { "Reason (required, for the record)" }
                        textarea id="skip-reason" name="reason" required maxlength=(MAX_REASON_CHARS) rows="3" {}
                        button type="submit" id="skip" { "Skip" }
                    }
                }
            }
            p { a href={ "/deliveries?shard=" (encoded(shard)) } { "Back to the ledger" } }
        },
    )
}
