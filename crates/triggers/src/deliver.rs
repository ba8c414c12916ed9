//! Delivery: render every trigger of a transaction and send them concurrently, each with
//! a per-attempt timeout and capped, jittered retries.

use crate::backoff_policy::RetryBackoff;
use crate::retry::{Attempt, Verdict, verdict};
use crate::template::{TemplateError, Templates};
use crate::validate::{Trigger, TriggerLabel, Triggers};
use crate::variables::Variables;
use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use std::time::{Duration, Instant};
use tracing::Instrument as _;

/// Longest response-body excerpt kept for an error message, in characters.
const EXCERPT_CHARS: usize = 200;
/// Most response-body bytes read per attempt: enough to reuse the connection after a
/// short answer, bounded so a hostile endpoint cannot stream forever into memory.
const BODY_READ_LIMIT: usize = 64 * 1024;

/// Sends the webhooks of committed transactions.
///
/// One `Deliverer` serves a whole shard: it owns the HTTP client (and so its connection
/// pool) and the backoff policy.
#[derive(Debug, Clone)]
pub struct Deliverer {
    client: reqwest::Client,
    backoff: RetryBackoff,
}

/// A webhook the endpoint accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The trigger.
    pub trigger: TriggerLabel,
    /// The 2xx status the endpoint answered.
    pub status: u16,
    /// Attempts it took, the successful one included.
    pub attempts: u32,
    /// Time from the first attempt to the accepting answer.
    pub latency: Duration,
}

/// Why one trigger's webhook was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailureReason {
    /// Its template failed against the transaction's variables.
    #[error("payload template failed: {0}")]
    Render(#[source] TemplateError),
    /// The endpoint answered with a non-2xx status.
    #[error("endpoint answered HTTP {status}: {body:?}")]
    Status {
        /// The status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// No complete answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection could not be established.
    #[error("could not connect: {0}")]
    Connect(String),
    /// The connection broke mid-request.
    #[error("connection failed: {0}")]
    Transport(String),
    /// The request could not be built.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

/// A trigger whose webhook failed for good: permanently, or after its last retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{trigger}: {reason} (gave up after {attempts} attempt(s), {})",
    if *.permanent { "a permanent failure" } else { "retries exhausted" })]
pub struct TriggerFailure {
    /// The trigger.
    pub trigger: TriggerLabel,
    /// Attempts made.
    pub attempts: u32,
    /// Whether the failure was permanent (not retried) rather than retries running out.
    pub permanent: bool,
    /// The last attempt's failure.
    pub reason: FailureReason,
}

/// The outcome of delivering every trigger of a transaction where at least one failed.
/// The delivered ones are listed too: a re-fire sends them again (at-least-once).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DeliveryError {
    /// The triggers that failed, in config order.
    pub failures: Vec<TriggerFailure>,
    /// The triggers that were delivered, in config order.
    pub delivered: Vec<Delivered>,
}

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total = self.failures.len() + self.delivered.len();
        write!(f, "{} of {total} trigger(s) failed", self.failures.len())?;
        for failure in &self.failures {
            write!(f, "; {failure}")?;
        }
        Ok(())
    }
}

impl Deliverer {
    /// A deliverer with its own HTTP client. Redirects are not followed (see
    /// [`crate::retry`]) and proxies from the environment are ignored, so a webhook goes
    /// exactly where its config says.
    pub fn new(backoff: RetryBackoff) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("flow-triggers/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, backoff })
    }

    /// Renders and delivers every trigger for one transaction, concurrently.
    /// Returns when all are delivered or have failed for good.
    pub async fn deliver(
        &self,
        triggers: &Triggers,
        variables: &Variables,
    ) -> Result<Vec<Delivered>, DeliveryError> {
        let context = Templates::context(variables);
        let outcomes = futures::future::join_all(triggers.iter().enumerate().map(|(i, t)| {
            // At WARN, so the trigger's context stays on its retry and failure events
            // even when a shard logs only warnings.
            let span = tracing::warn_span!(
                "deliver",
                trigger = i,
                origin = %t.label.origin,
                flow_run_id = %variables.flow_run_id,
            );
            self.deliver_one(triggers, i, t, &context).instrument(span)
        }))
        .await;

        let (mut delivered, mut failures) = (Vec::new(), Vec::new());
        for outcome in outcomes {
            match outcome {
                Ok(ok) => delivered.push(ok),
                Err(failure) => failures.push(failure),
            }
        }
        if failures.is_empty() {
            Ok(delivered)
        } else {
            Err(DeliveryError {
                failures,
                delivered,
            })
        }
    }

    async fn deliver_one(
        &self,
        triggers: &Triggers,
        index: usize,
        trigger: &Trigger,
        context: &serde_json::Value,
    ) -> Result<Delivered, TriggerFailure> {
        let body = match triggers.render(index, context) {
            Ok(body) => Bytes::from(body),
            Err(err) => {
                tracing::error!(error = %err, "payload template failed");
                return Err(TriggerFailure {
                    trigger: trigger.label.clone(),
                    attempts: 0,
                    permanent: true,
                    reason: FailureReason::Render(err),
                });
            }
        };

        let started = Instant::now();
        let mut delays = self.backoff.delays();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let attempt = self.attempt(trigger, body.clone()).await;
            let verdict = verdict(&attempt);
            let give_up = match verdict {
                Verdict::Delivered(code) => {
                    tracing::info!(status = code, attempts, latency = ?started.elapsed(), "delivered");
                    return Ok(Delivered {
                        trigger: trigger.label.clone(),
                        status: code,
                        attempts,
                        latency: started.elapsed(),
                    });
                }
                Verdict::Fail => Some(true),
                Verdict::Retry if attempts > trigger.max_retries => Some(false),
                Verdict::Retry => None,
            };
            let reason = failure_reason(attempt, trigger.timeout);
            match give_up {
                Some(permanent) => {
                    tracing::error!(attempts, permanent, error = %reason, "webhook failed for good");
                    return Err(TriggerFailure {
                        trigger: trigger.label.clone(),
                        attempts,
                        permanent,
                        reason,
                    });
                }
                None => {
                    let delay = delays.next().unwrap_or(self.backoff.max);
                    tracing::warn!(attempts, error = %reason, retry_in = ?delay, "webhook attempt failed");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn attempt(&self, trigger: &Trigger, body: Bytes) -> Attempt {
        let mut request = self
            .client
            .request(trigger.method.clone(), trigger.url.clone())
            .headers(trigger.headers.clone())
            .timeout(trigger.timeout);
        if !trigger.headers.contains_key(CONTENT_TYPE) {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        match request.body(body).send().await {
            Ok(response) => {
                let code = response.status().as_u16();
                Attempt::Status {
                    code,
                    excerpt: read_excerpt(response).await,
                }
            }
            Err(err) => transport_attempt(err),
        }
    }
}

/// Reads (a bounded part of) the response body and keeps its start. A body that fails
/// mid-read does not change the outcome: the status is what the endpoint decided.
async fn read_excerpt(mut response: reqwest::Response) -> String {
    let mut head = Vec::new();
    let mut read = 0;
    while read < BODY_READ_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                read += chunk.len();
                let room = (EXCERPT_CHARS * 4).saturating_sub(head.len());
                head.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut excerpt: String = text.chars().take(EXCERPT_CHARS).collect();
    if text.chars().count() > EXCERPT_CHARS || read > head.len() {
        excerpt.push('…');
    }
    excerpt
}

fn transport_attempt(err: reqwest::Error) -> Attempt {
    // `without_url`: the URL may carry credentials (user info, a token in the query).
    let kind_timeout = err.is_timeout();
    let kind_connect = err.is_connect();
    let kind_builder = err.is_builder();
    let message = error_chain(&err.without_url());
    if kind_timeout {
        Attempt::Timeout
    } else if kind_connect {
        Attempt::Connect(message)
    } else if kind_builder {
        Attempt::Invalid(message)
    } else {
        Attempt::Transport(message)
    }
}

/// "outer: cause: root cause", so "error sending request" says why.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn failure_reason(attempt: Attempt, timeout: Duration) -> FailureReason {
    match attempt {
        Attempt::Status { code, excerpt } => FailureReason::Status {
            status: code,
            body: excerpt,
        },
        Attempt::Timeout => FailureReason::Timeout(timeout),
        Attempt::Connect(message) => FailureReason::Connect(message),
        Attempt::Transport(message) => FailureReason::Transport(message),
        Attempt::Invalid(message) => FailureReason::InvalidRequest(message),
    }
}
