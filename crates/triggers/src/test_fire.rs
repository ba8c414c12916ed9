//! Test-fire: send one webhook of one trigger now, as an operator's check that the
//! endpoint, its credentials and the network path work, and report what came back.
//!
//! Exactly one attempt (no retries, no backoff), marked `webhook-reason: test-fire`,
//! through the deliverer's own clients: the same network policy, headers, signatures and
//! timeout as a real delivery.

use crate::FailureReason;
use crate::deliver::{Deliverer, failure_reason};
use crate::preview::{PreviewError, PreviewVariables};
use crate::retry::Attempt;
use crate::trace_context::{SpanId, TraceId, TraceParent};
use crate::validate::{TriggerLabel, Triggers};
use crate::webhook_headers::SendReason;
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
    /// Why there was no answer: a timeout, a refused connection, the network policy.
    /// `None` whenever the endpoint answered, whatever the status.
    pub error: Option<FailureReason>,
}

impl TestFireReport {
    /// Whether the endpoint accepted the webhook (a 2xx status), as delivery would.
    pub fn accepted(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

impl std::fmt::Display for TestFireReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.latency.as_millis();
        match (&self.status, &self.error) {
            (Some(status), _) => write!(
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
}

impl Triggers {
    /// Renders trigger `index` for a test webhook (see [`Deliverer::test_fire`]): a fresh
    /// `flow_run_id` unless one is given, the output checked to be JSON.
    pub fn render_test_fire(
        &self,
        index: usize,
        variables: &PreviewVariables,
    ) -> Result<TestFirePayload, PreviewError> {
        let rendered = self.render_checked(index, &variables.for_test_fire())?;
        Ok(TestFirePayload {
            index,
            trigger: rendered.trigger,
            webhook_id: rendered.webhook_id,
            body: rendered.body,
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
        let report = match attempt {
            Attempt::Status { code, excerpt, .. } => TestFireReport {
                trigger: label,
                webhook_id,
                status: Some(code),
                latency,
                body_excerpt: excerpt,
                error: None,
            },
            failed => TestFireReport {
                trigger: label,
                webhook_id,
                status: None,
                latency,
                body_excerpt: String::new(),
                error: Some(failure_reason(failed, trigger.timeout)),
            },
        };
        span.in_scope(|| tracing::info!(report = %report, "test webhook sent"));
        Ok(report)
    }
}
