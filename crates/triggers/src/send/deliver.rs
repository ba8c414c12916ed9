//! Delivery: render every trigger of a transaction and send them concurrently, each with
//! a per-attempt timeout and capped, jittered retries within a time budget, Standard
//! Webhooks headers, and only to destinations the network policy allows.

use crate::config::validate::{Trigger, TriggerLabel, Triggers};
use crate::render::template::TemplateError;
use crate::render::variables::Variables;
use crate::send::backoff_policy::{Delays, RetryBackoff};
use crate::send::network_policy::{
    GuardedResolver, MAX_REDIRECTS, NetworkPolicy, RedirectError, Refusal,
};
use crate::send::origin_limit::{DEFAULT_MAX_IN_FLIGHT_PER_ORIGIN, OriginLimits};
use crate::send::retry::{Attempt, MayHaveArrived, Verdict, retry_after, verdict};
use crate::send::signing::signature_header;
use crate::send::trace_context::{SpanId, TRACEPARENT_HEADER, TraceId, TraceParent};
use crate::send::webhook_headers::{
    RETRY_REASON, SendReason, WEBHOOK_ATTEMPT, WEBHOOK_ID, WEBHOOK_REASON, WEBHOOK_SIGNATURE,
    WEBHOOK_TIMESTAMP,
};
use crate::trigger_webhook_id;
use bytes::Bytes;
use reqwest::header::{
    AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LOCATION, RETRY_AFTER,
};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing::Instrument as _;

/// The headers every request carries, as names built at compile time.
const ID_HEADER: HeaderName = HeaderName::from_static(WEBHOOK_ID);
const TIMESTAMP_HEADER: HeaderName = HeaderName::from_static(WEBHOOK_TIMESTAMP);
const ATTEMPT_HEADER: HeaderName = HeaderName::from_static(WEBHOOK_ATTEMPT);
const REASON_HEADER: HeaderName = HeaderName::from_static(WEBHOOK_REASON);
const SIGNATURE_HEADER: HeaderName = HeaderName::from_static(WEBHOOK_SIGNATURE);

/// Longest response-body excerpt kept for an error message, in characters.
const EXCERPT_CHARS: usize = 200;
/// Most response-body bytes read per attempt: enough to reuse the connection after a
/// short answer, bounded so a hostile endpoint cannot stream forever into memory.
const BODY_READ_LIMIT: usize = 64 * 1024;

/// Sends the webhooks of committed transactions.
///
/// One `Deliverer` serves a whole shard: it owns the HTTP clients (and so their
/// connection pools), the backoff policy and the network policy.
#[derive(Debug, Clone)]
pub struct Deliverer {
    /// Follows no redirect itself: [`Deliverer::attempt`] follows 307 and 308 for a
    /// trigger that sets `followRedirects`, choosing the headers of each hop.
    client: reqwest::Client,
    backoff: RetryBackoff,
    policy: NetworkPolicy,
    observer: Option<Arc<dyn AttemptObserver>>,
    /// Requests in flight per origin, shared by every clone (every shard given one).
    origins: Arc<OriginLimits>,
}

/// Told of every finished attempt (see [`Deliverer::with_observer`]). Called on the
/// delivering task: keep it quick and non-blocking.
pub trait AttemptObserver: Send + Sync {
    /// One attempt finished.
    fn attempt_finished(&self, record: &AttemptRecord);
}

/// One finished attempt of a webhook: what a delivery ledger keeps and metrics count.
/// Never holds a secret: the error is the same text errors show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// Index of the trigger.
    pub trigger: usize,
    /// Name of the trigger: what ledgers and metrics key it by (its index moves when
    /// the config is reordered).
    pub trigger_name: String,
    /// 1-based attempt number within the delivery.
    pub number: u32,
    /// Why it was sent, as in `webhook-reason`.
    pub reason: &'static str,
    /// When it started.
    pub at: SystemTime,
    /// How long it took.
    pub latency: Duration,
    /// The HTTP status answered, if any.
    pub status: Option<u16>,
    /// What came of it.
    pub outcome: AttemptOutcome,
    /// Why it failed (bounded to an excerpt), if it did.
    pub error: Option<String>,
    /// The delivery run's W3C trace id, as sent in `traceparent`.
    pub trace_id: TraceId,
    /// The attempt's span id: the `traceparent`'s parent id.
    pub span_id: SpanId,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The endpoint accepted the webhook (2xx).
    Delivered,
    /// The endpoint answered a status of the trigger's `responses.alreadyDelivered` to a
    /// webhook that may have arrived before: it has it, so it counts as delivered.
    AlreadyDelivered,
    /// A failure worth retrying (5xx, 408, 429, timeout, connection error); the delivery
    /// may still have given up after it (retries or budget spent).
    Retryable,
    /// A failure no retry can fix (another 4xx, a refused destination, a redirect).
    Permanent,
}

impl AttemptOutcome {
    /// `delivered`, `already_delivered`, `retryable` or `permanent`: the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::AlreadyDelivered => "already_delivered",
            AttemptOutcome::Retryable => "retryable",
            AttemptOutcome::Permanent => "permanent",
        }
    }
}

impl std::fmt::Debug for dyn AttemptObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttemptObserver")
    }
}

/// An error text cut to [`EXCERPT_CHARS`] characters.
fn bounded_excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// How one run of a delivery starts: why its first attempt is sent, how many attempts
/// earlier runs made (its attempts are numbered after them), and whether the receiver
/// may have this webhook already.
#[derive(Debug, Clone, Copy)]
struct Run {
    reason: SendReason,
    prior_attempts: u32,
    may_have_arrived: MayHaveArrived,
}

impl Run {
    /// A run whose reason says whether the webhook may have arrived before: a re-fire or
    /// a replay repeats one that may have, and so does a run after earlier attempts.
    fn new(reason: SendReason, prior_attempts: u32) -> Self {
        let repeated = match reason {
            SendReason::RecoveryRefire | SendReason::OperatorReplay => true,
            SendReason::FirstSend | SendReason::TestFire => false,
        };
        Run {
            reason,
            prior_attempts,
            may_have_arrived: MayHaveArrived(repeated || prior_attempts > 0),
        }
    }
}

/// A webhook the endpoint accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The trigger.
    pub trigger: TriggerLabel,
    /// The status the endpoint answered: 2xx, or one of `responses.alreadyDelivered`.
    pub status: u16,
    /// Attempts it took, the successful one included.
    pub attempts: u32,
    /// Time from the first attempt to the accepting answer.
    pub latency: Duration,
    /// The endpoint said it already has this webhook (a status of the trigger's
    /// `responses.alreadyDelivered`, answered to a re-send of a webhook that may have
    /// arrived before): delivered, but by an earlier attempt, run or process.
    pub already_delivered: bool,
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
    /// The network policy refused the destination, or a redirect's.
    #[error(transparent)]
    Refused(Refusal),
    /// A 307/308 redirect could not be followed (too many hops, another scheme).
    #[error("redirect not followed: {0}")]
    Redirect(String),
    /// The trigger's bearer token could not be had from its token endpoint (`auth`);
    /// the webhook was not sent.
    #[error("no token: {0}")]
    Token(#[source] crate::TokenError),
    /// The endpoint answered a status of `responses.alreadyDelivered` to a webhook that
    /// was never sent before (no earlier attempt may have arrived): it claims to have
    /// something we did not send, so its idempotency key collides with another request's.
    /// Permanent, and not counted as delivered, so no webhook is lost silently.
    #[error(
        "endpoint answered HTTP {status} (listed in `responses.alreadyDelivered`) to a webhook \
         never sent before: the receiver claims to have it already, so its idempotency key \
         (e.g. Airflow's `dag_run_id`) collides with another request's; not counted as \
         delivered, so no webhook is lost silently: {body:?}"
    )]
    AlreadyDeliveredOnFirstSend {
        /// The status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
}

impl FailureReason {
    /// The HTTP status the endpoint answered, when the failure is an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            FailureReason::Status { status, .. }
            | FailureReason::AlreadyDeliveredOnFirstSend { status, .. } => Some(*status),
            FailureReason::Render(_)
            | FailureReason::Timeout(_)
            | FailureReason::Connect(_)
            | FailureReason::Transport(_)
            | FailureReason::InvalidRequest(_)
            | FailureReason::Refused(_)
            | FailureReason::Redirect(_)
            | FailureReason::Token(_) => None,
        }
    }
}

/// A trigger whose webhook failed for good: permanently, after its last retry, or when
/// its retry budget ran out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{trigger}: {reason} (gave up after {attempts} attempt(s), {})",
    match (*.permanent, *.budget_exhausted) {
        (true, _) => "a permanent failure",
        (false, true) => "retry time budget exhausted",
        (false, false) => "retries exhausted",
    })]
pub struct TriggerFailure {
    /// The trigger.
    pub trigger: TriggerLabel,
    /// Attempts made.
    pub attempts: u32,
    /// Whether the failure was permanent (not retried) rather than retries running out.
    pub permanent: bool,
    /// Whether retries stopped because the next one would have started past the
    /// trigger's `retryBudgetSecs` (not `maxRetries`). Never set with `permanent`.
    pub budget_exhausted: bool,
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
    /// A deliverer that reaches public destinations only ([`NetworkPolicy::default`]):
    /// what a data plane wants. Tests and demos that deliver to 127.0.0.1 say so with
    /// [`Deliverer::with_policy`] and [`NetworkPolicy::ALLOW_LOOPBACK`].
    pub fn new(backoff: RetryBackoff) -> Result<Self, reqwest::Error> {
        Self::with_policy(backoff, NetworkPolicy::default())
    }

    /// A deliverer that connects only where `policy` allows: IP-literal hosts are checked
    /// before each attempt, hostnames after resolution (every address a name resolves to
    /// is checked, and refused ones are never connected to), redirect targets at every hop.
    ///
    /// Redirects are not followed unless a trigger sets `followRedirects`, and then only
    /// 307 and 308; a hop to another origin carries none of the configured headers (nor
    /// user-info credentials), only the body, its `Content-Type` and the webhook headers.
    /// Proxies from the environment are ignored and no `Referer` is sent, so a webhook
    /// goes exactly where its config says and its URL (which may hold a credential) is
    /// not repeated to a redirect target.
    pub fn with_policy(
        backoff: RetryBackoff,
        policy: NetworkPolicy,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { policy }))
            .user_agent(concat!("flow-triggers/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            backoff,
            policy,
            observer: None,
            origins: Arc::new(OriginLimits::new(DEFAULT_MAX_IN_FLIGHT_PER_ORIGIN)),
        })
    }

    /// The same, with at most `limit` requests in flight to any one origin across every
    /// clone of it (1 to [`crate::MAX_IN_FLIGHT_PER_ORIGIN`]; default
    /// [`DEFAULT_MAX_IN_FLIGHT_PER_ORIGIN`]): HTTP/1.1 takes a connection per request in
    /// flight, so this bounds the connections (and file descriptors) a process holds to
    /// one endpoint however many shards deliver to it. A request past the bound waits for
    /// a place within its attempt's timeout. Clones made before this keep the old bound.
    pub fn with_max_in_flight_per_origin(mut self, limit: usize) -> Self {
        self.origins = Arc::new(OriginLimits::new(limit));
        self
    }

    /// Requests in flight to one origin at most (see
    /// [`Deliverer::with_max_in_flight_per_origin`]).
    pub fn max_in_flight_per_origin(&self) -> usize {
        self.origins.per_origin()
    }

    /// The network policy this deliverer enforces.
    pub fn policy(&self) -> NetworkPolicy {
        self.policy
    }

    /// The HTTP client, for the token endpoints' requests (same policy, no redirects).
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Reports every finished attempt to `observer`: how a runtime keeps a delivery
    /// ledger and metrics without this crate knowing of either.
    pub fn with_observer(mut self, observer: Arc<dyn AttemptObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    fn observe(&self, extra: Option<&dyn AttemptObserver>, record: &AttemptRecord) {
        if let Some(observer) = &self.observer {
            observer.attempt_finished(record);
        }
        if let Some(observer) = extra {
            observer.attempt_finished(record);
        }
    }

    /// Renders and delivers every trigger for one transaction, concurrently, as a
    /// [`SendReason::FirstSend`]. Returns when all are delivered or have failed for good.
    /// A trigger with `collections` is sent only if it fires for one of the transaction's
    /// collections, with those alone (see [`Trigger::variables_for`]); the others are in
    /// neither list of the result.
    ///
    /// Cancel-safe: it changes no state; dropped, it abandons the requests in flight (some
    /// may have arrived), so a caller that keeps the variables sends them again later.
    pub async fn deliver(
        &self,
        triggers: &Triggers,
        variables: &Variables,
    ) -> Result<Vec<Delivered>, DeliveryError> {
        self.deliver_with_reason(triggers, variables, SendReason::FirstSend)
            .await
    }

    /// Like [`Deliverer::deliver`], telling receivers (in `webhook-reason`) why the first
    /// attempt is sent: a recovery re-fire or an operator's replay may repeat a webhook
    /// the receiver already has. Each trigger is sent what its collections filter leaves
    /// of `variables` ([`Trigger::variables_for`]), and not at all when that is nothing.
    ///
    /// Cancel-safe: it changes no state; dropped, it abandons the requests in flight (some
    /// may have arrived), so a caller that keeps the variables sends them again later.
    pub async fn deliver_with_reason(
        &self,
        triggers: &Triggers,
        variables: &Variables,
        reason: SendReason,
    ) -> Result<Vec<Delivered>, DeliveryError> {
        // A trigger whose collections filter leaves nothing of the transaction is not
        // sent; the others see only the collections they fire for.
        let sends = triggers
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((i, t, t.variables_for(variables)?)));
        let outcomes = futures::future::join_all(sends.map(|(i, t, variables)| async move {
            let id = trigger_webhook_id(&variables.flow_run_id, t.name());
            // At WARN, so the trigger's context stays on its retry and failure events
            // even when a shard logs only warnings.
            let span = tracing::warn_span!(
                "deliver",
                trigger = i,
                trigger_name = t.name(),
                origin = %t.label.origin,
                flow_run_id = %variables.flow_run_id,
                webhook_id = %id,
                %reason,
                trace_id = tracing::field::Empty,
            );
            self.deliver_one(triggers, t, &variables, id, Run::new(reason, 0), None)
                .instrument(span)
                .await
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

    /// Renders and delivers one trigger's webhook, with retries: what a decoupled
    /// runtime's per-trigger worker sends for one backlog entry. Logged in the same
    /// `deliver` span as [`Deliverer::deliver_with_reason`]. `variables` are sent as
    /// given: the caller queued them for this trigger (through
    /// [`Trigger::variables_for`], for one with `collections`).
    ///
    /// Cancel-safe: it changes no state; dropped, it abandons the requests in flight (some
    /// may have arrived), so a caller that keeps the variables sends them again later.
    pub async fn deliver_trigger(
        &self,
        triggers: &Triggers,
        index: usize,
        variables: &Variables,
        reason: SendReason,
    ) -> Option<Result<Delivered, TriggerFailure>> {
        self.deliver_trigger_inner(triggers, index, variables, Run::new(reason, 0), None)
            .await
    }

    /// Like [`Deliverer::deliver_trigger`], also telling `observer` of each attempt of
    /// this delivery (besides the deliverer's own observer): how a runtime keeps one
    /// delivery's attempts in its ledger. Attempts are numbered after `prior_attempts`,
    /// those earlier runs of the same delivery made (before an operator's retry or a
    /// restart), so `webhook-attempt` goes on counting; `maxRetries` and the retry budget
    /// hold for this run alone.
    ///
    /// `sent_before` says whether an earlier run may have sent this webhook (before a
    /// stop, a failure or a replay): then a status of the trigger's
    /// `responses.alreadyDelivered` counts as delivered from the first attempt on. The
    /// caller knows better than `reason`: a webhook recovered at a restart that was never
    /// sent is a `recovery-refire` the receiver cannot have, and passes `false`.
    ///
    /// Cancel-safe: it changes no state; dropped, it abandons the requests in flight (some
    /// may have arrived), so a caller that keeps the variables sends them again later.
    #[expect(
        clippy::too_many_arguments,
        reason = "what one run of a backlog delivery needs from the runtime, each documented above"
    )]
    pub async fn deliver_trigger_observed(
        &self,
        triggers: &Triggers,
        index: usize,
        variables: &Variables,
        reason: SendReason,
        prior_attempts: u32,
        sent_before: bool,
        observer: &dyn AttemptObserver,
    ) -> Option<Result<Delivered, TriggerFailure>> {
        let run = Run {
            reason,
            prior_attempts,
            may_have_arrived: MayHaveArrived(sent_before || prior_attempts > 0),
        };
        self.deliver_trigger_inner(triggers, index, variables, run, Some(observer))
            .await
    }

    async fn deliver_trigger_inner(
        &self,
        triggers: &Triggers,
        index: usize,
        variables: &Variables,
        run: Run,
        observer: Option<&dyn AttemptObserver>,
    ) -> Option<Result<Delivered, TriggerFailure>> {
        let reason = run.reason;
        let trigger = triggers.triggers.get(index)?;
        let id = trigger_webhook_id(&variables.flow_run_id, trigger.name());
        let span = tracing::warn_span!(
            "deliver",
            trigger = index,
            trigger_name = trigger.name(),
            origin = %trigger.label.origin,
            flow_run_id = %variables.flow_run_id,
            webhook_id = %id,
            %reason,
            trace_id = tracing::field::Empty,
        );
        Some(
            self.deliver_one(triggers, trigger, variables, id, run, observer)
                .instrument(span)
                .await,
        )
    }

    async fn deliver_one(
        &self,
        triggers: &Triggers,
        trigger: &Trigger,
        variables: &Variables,
        id: String,
        run: Run,
        observer: Option<&dyn AttemptObserver>,
    ) -> Result<Delivered, TriggerFailure> {
        let Run {
            reason,
            prior_attempts,
            mut may_have_arrived,
        } = run;
        let index = trigger.label.index;
        // One trace per run, recorded on the `deliver` span so our log joins the
        // receiver's trace; each attempt is a span of it.
        let trace_id = TraceId::random();
        tracing::Span::current().record("trace_id", tracing::field::display(trace_id));
        // The payload's `webhook_id` and the header's are one derivation.
        let body = match triggers.render(index, variables, &id) {
            Ok(body) => Bytes::from(body),
            Err(err) => {
                tracing::error!(error = %err, "payload template failed");
                return Err(TriggerFailure {
                    trigger: trigger.label.clone(),
                    attempts: 0,
                    permanent: true,
                    budget_exhausted: false,
                    reason: FailureReason::Render(err),
                });
            }
        };

        let started = Instant::now();
        let mut delays = self.backoff.delays();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let sent_as = if attempts == 1 {
                reason.as_str()
            } else {
                RETRY_REASON
            };
            // The number within the delivery, counting earlier runs' attempts.
            let number = prior_attempts.saturating_add(attempts);
            let attempt_started = (SystemTime::now(), Instant::now());
            let trace = TraceParent {
                trace_id,
                span_id: SpanId::random(),
            };
            let attempt = self
                .attempt(trigger, &id, number, sent_as, trace, body.clone(), false)
                .instrument(tracing::info_span!(
                    "attempt",
                    number,
                    reason = sent_as,
                    span_id = %trace.span_id
                ))
                .await;
            let verdict = verdict(&attempt, trigger.responses, may_have_arrived);
            may_have_arrived = may_have_arrived.after(&attempt);
            let observed = |outcome, error: Option<&FailureReason>| AttemptRecord {
                trigger: index,
                trigger_name: trigger.label.name.clone(),
                number,
                reason: sent_as,
                at: attempt_started.0,
                latency: attempt_started.1.elapsed(),
                status: match &attempt {
                    Attempt::Status { code, .. } => Some(*code),
                    _ => None,
                },
                outcome,
                error: error.map(|e| bounded_excerpt(&e.to_string())),
                trace_id,
                span_id: trace.span_id,
            };
            let wait = match verdict {
                Verdict::Delivered(code) | Verdict::AlreadyDelivered(code) => {
                    let already_delivered = matches!(verdict, Verdict::AlreadyDelivered(_));
                    let latency = started.elapsed();
                    if already_delivered {
                        self.observe(observer, &observed(AttemptOutcome::AlreadyDelivered, None));
                        tracing::info!(
                            status = code,
                            attempts,
                            ?latency,
                            "already delivered: the receiver has this webhook from an earlier send"
                        );
                    } else {
                        self.observe(observer, &observed(AttemptOutcome::Delivered, None));
                        tracing::info!(status = code, attempts, ?latency, "delivered");
                    }
                    return Ok(Delivered {
                        trigger: trigger.label.clone(),
                        status: code,
                        attempts,
                        latency,
                        already_delivered,
                    });
                }
                Verdict::Fail | Verdict::AlreadyDeliveredOnFirstSend(_) => Err(GiveUp::Permanent),
                Verdict::Retry if attempts > trigger.max_retries => Err(GiveUp::RetriesExhausted),
                Verdict::Retry => {
                    let wait = self.wait_before_retry(&mut delays, &attempt);
                    if started.elapsed() + wait >= trigger.retry_budget {
                        Err(GiveUp::BudgetExhausted)
                    } else {
                        Ok(wait)
                    }
                }
            };
            let outcome = match wait {
                Err(GiveUp::Permanent) => AttemptOutcome::Permanent,
                Ok(_) | Err(GiveUp::RetriesExhausted | GiveUp::BudgetExhausted) => {
                    AttemptOutcome::Retryable
                }
            };
            let record = observed(outcome, None);
            let failure = verdict_failure(verdict, attempt, trigger.timeout);
            self.observe(
                observer,
                &AttemptRecord {
                    error: Some(bounded_excerpt(&failure.to_string())),
                    ..record
                },
            );
            match wait {
                Err(give_up) => {
                    let (permanent, budget_exhausted) = match give_up {
                        GiveUp::Permanent => (true, false),
                        GiveUp::RetriesExhausted => (false, false),
                        GiveUp::BudgetExhausted => (false, true),
                    };
                    tracing::error!(attempts, permanent, budget_exhausted, error = %failure, "webhook failed for good");
                    return Err(TriggerFailure {
                        trigger: trigger.label.clone(),
                        attempts,
                        permanent,
                        budget_exhausted,
                        reason: failure,
                    });
                }
                Ok(delay) => {
                    tracing::warn!(attempts, error = %failure, retry_in = ?delay, "webhook attempt failed");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// The backoff's next delay, or what the endpoint asked for in `Retry-After` if that
    /// is longer; never more than the backoff's cap, so an endpoint cannot park a shard.
    fn wait_before_retry(&self, delays: &mut Delays, attempt: &Attempt) -> Duration {
        let backoff = delays.next().unwrap_or(self.backoff.max);
        let asked = match attempt {
            Attempt::Status { retry_after, .. } => *retry_after,
            Attempt::Timeout
            | Attempt::Connect(_)
            | Attempt::Transport(_)
            | Attempt::Invalid(_)
            | Attempt::Refused(_)
            | Attempt::Redirect(_)
            | Attempt::Token(_) => None,
        };
        match asked {
            Some(asked) => backoff.max(asked.min(self.backoff.max)),
            None => backoff,
        }
    }

    /// One attempt of a webhook: with the trigger's bearer token when it has `auth`
    /// (cached, or fetched within the trigger's timeout), and, if the endpoint answers
    /// 401 to it, once more with a renewed token under the same attempt number (each
    /// request with its own timeout). A second 401 is the attempt's answer. Every
    /// request of the attempt carries `trace` as its `traceparent`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn attempt(
        &self,
        trigger: &Trigger,
        id: &str,
        number: u32,
        reason: &'static str,
        trace: TraceParent,
        body: Bytes,
        keep_excerpt: bool,
    ) -> Attempt {
        let Some(auth) = &trigger.auth else {
            return self
                .send(trigger, id, number, reason, trace, body, keep_excerpt, None)
                .await;
        };
        // A webhook the policy refuses needs no token: ask for none.
        if let Err(refusal) = self.policy.check_url(&trigger.url) {
            return Attempt::Refused(refusal);
        }
        let token = match auth.header(self, trigger.timeout, trace.trace_id).await {
            Ok(token) => token,
            Err(err) => return Attempt::Token(err),
        };
        let first = self
            .send(
                trigger,
                id,
                number,
                reason,
                trace,
                body.clone(),
                keep_excerpt,
                Some(token.clone()),
            )
            .await;
        if !matches!(first, Attempt::Status { code: 401, .. }) {
            return first;
        }
        tracing::warn!(
            token_endpoint = auth.origin(),
            "webhook answered 401 to the token; renewing it and repeating the attempt"
        );
        auth.invalidate(&token).await;
        match auth.header(self, trigger.timeout, trace.trace_id).await {
            Ok(token) => {
                self.send(
                    trigger,
                    id,
                    number,
                    reason,
                    trace,
                    body,
                    keep_excerpt,
                    Some(token),
                )
                .await
            }
            Err(err) => Attempt::Token(err),
        }
    }

    /// One HTTP request of an attempt, checked against the network policy first,
    /// following 307 and 308 redirects (at most [`MAX_REDIRECTS`], each target checked)
    /// when the trigger sets `followRedirects`, all within the trigger's timeout. The
    /// response body is read in any case (so the connection is reused) but kept as an
    /// excerpt only for a failure, or always when `keep_excerpt` (a test-fire shows it to
    /// the operator). `bearer` is the `Authorization` of a trigger with `auth`: like the
    /// configured headers, it stays with the URL's origin. Every hop carries `trace` as
    /// its `traceparent`: a hop is part of the attempt.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        trigger: &Trigger,
        id: &str,
        number: u32,
        reason: &'static str,
        trace: TraceParent,
        body: Bytes,
        keep_excerpt: bool,
        bearer: Option<HeaderValue>,
    ) -> Attempt {
        if let Err(refusal) = self.policy.check_url(&trigger.url) {
            return Attempt::Refused(refusal);
        }
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut headers = match webhook_headers(trigger, id, number, reason, timestamp, &body) {
            Ok(headers) => headers,
            Err(invalid) => return invalid,
        };
        match trace.header_value() {
            Ok(value) => headers.insert(TRACEPARENT_HEADER, value),
            Err(err) => return Attempt::Invalid(format!("traceparent: {err}")),
        };
        if let Some(bearer) = bearer {
            headers.insert(AUTHORIZATION, bearer);
        }
        let deadline = tokio::time::Instant::now() + trigger.timeout;
        let mut url = trigger.url.clone();
        let mut configured = Some(&trigger.headers);
        // The Basic `Authorization` made from the URL's user info, kept within its origin.
        let mut credentials = HeaderMap::new();
        let mut hops = 0;
        loop {
            let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
            if timeout.is_zero() {
                return Attempt::Timeout;
            }
            let hop = Hop {
                configured,
                credentials: &credentials,
                webhook: &headers,
                timeout,
            };
            let request = match self.request(trigger, url.clone(), hop, &body) {
                Ok((request, used)) => {
                    credentials = used;
                    request
                }
                Err(err) => return transport_attempt(err),
            };
            // Held until the body is read: the connection is this request's till then.
            let origin = url.origin().ascii_serialization();
            let Ok(_place) = tokio::time::timeout(timeout, self.origins.acquire(&origin)).await
            else {
                return Attempt::Timeout;
            };
            let response = match self.client.execute(request).await {
                Ok(response) => response,
                Err(err) => return transport_attempt(err),
            };
            let code = response.status().as_u16();
            let target = match (trigger.follow_redirects, code) {
                (true, 307 | 308) => response
                    .headers()
                    .get(LOCATION)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|location| url.join(location).ok()),
                _ => None,
            };
            let Some(target) = target else {
                let retry_after = retry_after(
                    code,
                    response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|value| value.to_str().ok()),
                    SystemTime::now(),
                );
                let keep = keep_excerpt || !(200..300).contains(&code);
                return Attempt::Status {
                    code,
                    excerpt: read_excerpt(response, keep, trigger).await,
                    retry_after,
                };
            };
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Attempt::Redirect(RedirectError::TooMany.to_string());
            }
            if !matches!(target.scheme(), "http" | "https") {
                return Attempt::Redirect(
                    RedirectError::Scheme(target.scheme().to_string()).to_string(),
                );
            }
            if let Err(refusal) = self.policy.check_url(&target) {
                return Attempt::Refused(refusal);
            }
            read_excerpt(response, false, trigger).await;
            if target.origin() != url.origin() {
                // Another origin is another party: configured headers (API keys, tokens)
                // were meant for the first one only, and stay dropped for later hops.
                configured = None;
                credentials.clear();
                headers.remove(AUTHORIZATION);
                if let Some(content_type) = trigger.headers.get(CONTENT_TYPE) {
                    headers.insert(CONTENT_TYPE, content_type.clone());
                }
            }
            url = target;
        }
    }

    /// One hop's request, and the user-info credentials it carries. The builder moves
    /// credentials in the URL's user info into a Basic `Authorization` header (so they
    /// reach neither logs nor the connection pool's key); a hop whose URL has none keeps
    /// the previous hop's (same origin only), and a configured `Authorization` wins over
    /// both, as it always has.
    fn request(
        &self,
        trigger: &Trigger,
        url: url::Url,
        hop: Hop<'_>,
        body: &Bytes,
    ) -> Result<(reqwest::Request, HeaderMap), reqwest::Error> {
        let mut request = self.client.request(trigger.method.clone(), url).build()?;
        let used = if request.headers().is_empty() {
            hop.credentials.clone()
        } else {
            request.headers().clone()
        };
        let mut headers = hop.configured.cloned().unwrap_or_default();
        headers.reserve(used.len() + hop.webhook.len() + 1);
        for (name, value) in &used {
            if !headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
        for (name, value) in hop.webhook {
            headers.insert(name.clone(), value.clone());
        }
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        *request.headers_mut() = headers;
        *request.timeout_mut() = Some(hop.timeout);
        *request.body_mut() = Some(body.clone().into());
        Ok((request, used))
    }
}

/// What one hop of an attempt sends besides its URL and body.
struct Hop<'a> {
    /// The trigger's headers, until a hop leaves their origin.
    configured: Option<&'a HeaderMap>,
    /// User-info credentials of an earlier hop of the same origin.
    credentials: &'a HeaderMap,
    /// The webhook headers (and, past the origin, the configured `Content-Type`).
    webhook: &'a HeaderMap,
    /// What is left of the attempt's timeout.
    timeout: Duration,
}

/// The headers this crate sets on every request of an attempt (every hop included),
/// in one map sized once (for `traceparent` too, which the attempt adds), with names
/// built at compile time.
fn webhook_headers(
    trigger: &Trigger,
    id: &str,
    number: u32,
    reason: &'static str,
    timestamp: i64,
    body: &[u8],
) -> Result<HeaderMap, Attempt> {
    let mut headers = HeaderMap::with_capacity(7);
    match HeaderValue::try_from(id) {
        Ok(id) => headers.insert(ID_HEADER, id),
        Err(err) => return Err(Attempt::Invalid(format!("webhook-id {id:?}: {err}"))),
    };
    headers.insert(TIMESTAMP_HEADER, HeaderValue::from(timestamp));
    headers.insert(ATTEMPT_HEADER, HeaderValue::from(number));
    match HeaderValue::try_from(reason) {
        Ok(value) => headers.insert(REASON_HEADER, value),
        Err(err) => {
            return Err(Attempt::Invalid(format!(
                "webhook-reason {reason:?}: {err}"
            )));
        }
    };
    if let Some(signatures) = signature_header(&trigger.signing_keys, id, timestamp, body) {
        match HeaderValue::try_from(signatures) {
            Ok(value) => headers.insert(SIGNATURE_HEADER, value),
            Err(err) => return Err(Attempt::Invalid(format!("webhook-signature: {err}"))),
        };
    }
    Ok(headers)
}

/// Why a delivery stopped retrying.
enum GiveUp {
    /// Retrying cannot help.
    Permanent,
    /// `maxRetries` retries were made.
    RetriesExhausted,
    /// The next retry would start past `retryBudgetSecs`.
    BudgetExhausted,
}

/// Header values shorter than this are not taken out of a response excerpt: they cannot
/// be told from ordinary text (`1`, `gzip`, `v2`), and no credential is that short.
pub(crate) const MIN_REDACTED_HEADER_BYTES: usize = 8;

/// The forms in which an answer may echo `trigger`'s header values (which a template may
/// also have put in the body, `{{headers.Name}}`): as sent, JSON-escaped, and with `/`
/// escaped too (as PHP's encoder writes it). Those of at least
/// [`MIN_REDACTED_HEADER_BYTES`], longest first.
fn echoed_secrets(trigger: &Trigger) -> Vec<String> {
    let mut forms: Vec<String> = Vec::new();
    for value in trigger.headers.values() {
        let raw = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if raw.len() < MIN_REDACTED_HEADER_BYTES {
            continue;
        }
        let json = serde_json::to_string(&raw).unwrap_or_default();
        let json = json
            .strip_prefix('"')
            .and_then(|j| j.strip_suffix('"'))
            .unwrap_or_default()
            .to_string();
        let slashed = json.replace('/', "\\/");
        forms.extend([raw, json, slashed]);
    }
    forms.sort_by_key(|form| std::cmp::Reverse(form.len()));
    forms.dedup();
    forms
}

/// Reads (a bounded part of) the response body and, if `keep`, returns its start, with
/// every echo of the trigger's header values replaced by `<redacted>` (see
/// [`echoed_secrets`]; the start is read far enough past the excerpt that a value it
/// begins is whole when it is replaced). A body that fails mid-read does not change the
/// outcome: the status is what the endpoint decided.
async fn read_excerpt(mut response: reqwest::Response, keep: bool, trigger: &Trigger) -> String {
    let secrets = if keep {
        echoed_secrets(trigger)
    } else {
        Vec::new()
    };
    let longest = secrets.first().map_or(0, String::len);
    let mut head = Vec::new();
    let mut read = 0;
    while read < BODY_READ_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) if !keep => read += chunk.len(),
            Ok(Some(chunk)) => {
                read += chunk.len();
                let room = (EXCERPT_CHARS * 4 + longest).saturating_sub(head.len());
                head.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    if !keep {
        return String::new();
    }
    let mut text = String::from_utf8_lossy(&head).into_owned();
    for secret in &secrets {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), crate::REDACTED_HEADER_VALUE);
        }
    }
    let mut excerpt: String = text.chars().take(EXCERPT_CHARS).collect();
    if text.chars().count() > EXCERPT_CHARS || read > head.len() {
        excerpt.push('…');
    }
    excerpt
}

pub(crate) fn transport_attempt(err: reqwest::Error) -> Attempt {
    // The policy's refusals come back wrapped (from the resolver):
    // find them, so a refusal is a typed, permanent failure rather than a retried error.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(cause) = source {
        if let Some(refusal) = cause.downcast_ref::<Refusal>() {
            return Attempt::Refused(refusal.clone());
        }
        source = cause.source();
    }
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

/// Why an attempt the verdict did not deliver failed: what [`failure_reason`] says,
/// unless the policy refused an "already delivered" answer to a first send.
pub(crate) fn verdict_failure(
    verdict: Verdict,
    attempt: Attempt,
    timeout: Duration,
) -> FailureReason {
    match (verdict, attempt) {
        (Verdict::AlreadyDeliveredOnFirstSend(_), Attempt::Status { code, excerpt, .. }) => {
            FailureReason::AlreadyDeliveredOnFirstSend {
                status: code,
                body: excerpt,
            }
        }
        (_, attempt) => failure_reason(attempt, timeout),
    }
}

pub(crate) fn failure_reason(attempt: Attempt, timeout: Duration) -> FailureReason {
    match attempt {
        Attempt::Status { code, excerpt, .. } => FailureReason::Status {
            status: code,
            body: excerpt,
        },
        Attempt::Timeout => FailureReason::Timeout(timeout),
        Attempt::Connect(message) => FailureReason::Connect(message),
        Attempt::Transport(message) => FailureReason::Transport(message),
        Attempt::Invalid(message) => FailureReason::InvalidRequest(message),
        Attempt::Refused(refusal) => FailureReason::Refused(refusal),
        Attempt::Redirect(message) => FailureReason::Redirect(message),
        Attempt::Token(err) => FailureReason::Token(err),
    }
}
