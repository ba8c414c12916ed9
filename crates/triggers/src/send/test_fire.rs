//! Test-fire: send one webhook of one trigger now, as an operator's check that the
//! endpoint, its credentials and the network path work, and report what came back.
//!
//! Exactly one attempt (no retries, no backoff), marked `webhook-reason: test-fire`,
//! through the deliverer's own clients: the same network policy, headers, signatures and
//! timeout as a real delivery. The report says what the trigger's response policy makes
//! of the answer, as delivery would: a test webhook whose variables were given (its
//! `flow_run_id` or `webhook_id`) may repeat an earlier test, so a status of
//! `responses.alreadyDelivered` is "already delivered"; with a fresh `flow_run_id` it was
//! never sent, and that status means the receiver's idempotency key collides.

use crate::config::validate::{TriggerLabel, Triggers};
use crate::render::preview::{PreviewError, PreviewVariables};
use crate::send::deliver::{Deliverer, verdict_failure};
use crate::send::retry::{Attempt, MayHaveArrived, Verdict, verdict};
use crate::send::trace_context::{SpanId, TraceId, TraceParent};
use crate::send::webhook_headers::SendReason;
use crate::{AttemptOutcome, FailureReason};
use bytes::Bytes;
use std::time::{Duration, Instant};
use tracing::Instrument as _;

/// What one test webhook came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestFireReport {
    /// The trigger.
    pub trigger: TriggerLabel,
    /// The `webhook-id` sent.
    pub webhook_id: String,
    /// The status the endpoint answered, if it answered.
    pub status: Option<u16>,
    /// From sending the request to the answer (or the failure).
    pub latency: Duration,
    /// The start of the response body (bounded, as in delivery errors); empty without
    /// an answer.
    pub body_excerpt: String,
    /// Why there was no answer: a timeout, a refused connection, the network policy; or,
    /// with an answer, [`FailureReason::AlreadyDeliveredOnFirstSend`] (an "already
    /// delivered" status to a webhook never sent). `None` for any other answer.
    pub error: Option<FailureReason>,
    /// What delivery would make of this attempt under the trigger's response policy
    /// (delivered, already delivered, retried, or failed for good).
    pub outcome: AttemptOutcome,
}

impl TestFireReport {
    /// Whether delivery would count the answer as delivered: a 2xx status, or one of the
    /// trigger's `responses.alreadyDelivered` to a test webhook that may repeat an
    /// earlier one.
    pub fn accepted(&self) -> bool {
        match self.outcome {
            AttemptOutcome::Delivered | AttemptOutcome::AlreadyDelivered => true,
            AttemptOutcome::Retryable | AttemptOutcome::Permanent => false,
        }
    }
}

impl std::fmt::Display for TestFireReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.latency.as_millis();
        match (&self.status, &self.error) {
            (Some(status), _) if self.outcome == AttemptOutcome::AlreadyDelivered => write!(
                f,
                "{}: already delivered (HTTP {status}) in {ms} ms: the receiver has this \
                 webhook; {:?}",
                self.trigger, self.body_excerpt
            ),
            (Some(_), Some(error)) => write!(f, "{}: {error} (after {ms} ms)", self.trigger),
            (Some(status), None) => write!(
                f,
                "{}: HTTP {status} in {ms} ms: {:?}",
                self.trigger, self.body_excerpt
            ),
            (None, Some(error)) => write!(f, "{}: {error} (after {ms} ms)", self.trigger),
            (None, None) => write!(f, "{}: no answer (after {ms} ms)", self.trigger),
        }
    }
}

/// One test webhook rendered and checked, not yet sent ([`Triggers::render_test_fire`]).
///
/// Rendering is CPU work bounded by the config's render bounds; a server renders on a
/// thread of its own and sends on its async workers ([`Deliverer::send_test_fire`]).
#[derive(Debug)]
pub struct TestFirePayload {
    index: usize,
    trigger: TriggerLabel,
    webhook_id: String,
    body: String,
    /// Its variables were given, so it may repeat an earlier test webhook.
    may_repeat: bool,
}

impl Triggers {
    /// Renders trigger `index` for a test webhook (see [`Deliverer::test_fire`]): a fresh
    /// `flow_run_id` unless one is given, the output checked to be JSON.
    pub fn render_test_fire(
        &self,
        index: usize,
        variables: &PreviewVariables,
    ) -> Result<TestFirePayload, PreviewError> {
        let rendered = self.render_checked(
            index,
            &variables.for_test_fire(),
            crate::render::preview::Headers::Sent,
        )?;
        Ok(TestFirePayload {
            index,
            trigger: rendered.trigger,
            webhook_id: rendered.webhook_id,
            body: rendered.body,
            may_repeat: variables.may_repeat(),
        })
    }
}

impl Deliverer {
    /// Sends one test webhook of trigger `index`: one attempt, no retries, marked
    /// [`SendReason::TestFire`], rendered against `variables` (with a fresh `flow_run_id`
    /// unless one is given, so each test has its own `webhook-id`). Any answer or network
    /// failure is a report, never an error; only a trigger that does not exist or a
    /// payload that does not render is, and then nothing is sent.
    ///
    /// Cancel-safe: a dropped test-fire changes nothing (the request may have been sent).
    pub async fn test_fire(
        &self,
        triggers: &Triggers,
        index: usize,
        variables: &PreviewVariables,
    ) -> Result<TestFireReport, PreviewError> {
        let payload = triggers.render_test_fire(index, variables)?;
        self.send_test_fire(triggers, payload).await
    }

    /// Sends a payload [`Triggers::render_test_fire`] made, as [`Deliverer::test_fire`]
    /// does. `triggers` must be the config it was rendered from.
    ///
    /// Cancel-safe: a dropped send changes nothing (the request may have been sent).
    pub async fn send_test_fire(
        &self,
        triggers: &Triggers,
        payload: TestFirePayload,
    ) -> Result<TestFireReport, PreviewError> {
        let TestFirePayload {
            index,
            trigger: label,
            webhook_id,
            body,
            may_repeat,
        } = payload;
        let trigger = triggers
            .triggers
            .get(index)
            .ok_or(PreviewError::NoSuchTrigger {
                index,
                count: triggers.len(),
            })?;
        // A test webhook is a trace of its own, of one attempt.
        let trace = TraceParent {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
        };
        let span = tracing::info_span!(
            "test_fire",
            trigger = index,
            origin = %trigger.label.origin,
            webhook_id = %webhook_id,
            trace_id = %trace.trace_id,
            span_id = %trace.span_id,
        );
        let started = Instant::now();
        let attempt = self
            .attempt(
                trigger,
                &webhook_id,
                1,
                SendReason::TestFire.as_str(),
                trace,
                Bytes::from(body),
                true,
            )
            .instrument(span.clone())
            .await;
        let latency = started.elapsed();
        let verdict = verdict(&attempt, trigger.responses, MayHaveArrived(may_repeat));
        let outcome = match verdict {
            Verdict::Delivered(_) => AttemptOutcome::Delivered,
            Verdict::AlreadyDelivered(_) => AttemptOutcome::AlreadyDelivered,
            Verdict::Retry => AttemptOutcome::Retryable,
            Verdict::Fail | Verdict::AlreadyDeliveredOnFirstSend(_) => AttemptOutcome::Permanent,
        };
        let report = match attempt {
            Attempt::Status { code, excerpt, .. } => TestFireReport {
                trigger: label,
                webhook_id,
                status: Some(code),
                latency,
                error: match verdict {
                    Verdict::AlreadyDeliveredOnFirstSend(_) => Some(verdict_failure(
                        verdict,
                        Attempt::Status {
                            code,
                            excerpt: excerpt.clone(),
                            retry_after: None,
                        },
                        trigger.timeout,
                    )),
                    Verdict::Delivered(_)
                    | Verdict::AlreadyDelivered(_)
                    | Verdict::Retry
                    | Verdict::Fail => None,
                },
                body_excerpt: excerpt,
                outcome,
            },
            failed => TestFireReport {
                trigger: label,
                webhook_id,
                status: None,
                latency,
                body_excerpt: String::new(),
                error: Some(verdict_failure(verdict, failed, trigger.timeout)),
                outcome,
            },
        };
        span.in_scope(|| tracing::info!(report = %report, "test webhook sent"));
        Ok(report)
    }
}
