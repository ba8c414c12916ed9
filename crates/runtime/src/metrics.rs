//! Prometheus metrics of a shard's triggers, for the operator who must see why (and how
//! often) a webhook fails: attempts by outcome and status class, attempt latency, commits,
//! and per trigger the backlog depth and the age of its oldest pending delivery.
//!
//! Counters and the histogram are fed as attempts finish (an [`AttemptObserver`] on the
//! shard's deliverer); gauges are read from the backlog when scraped. [`serve`] answers
//! `GET /metrics` in the OpenMetrics text format.

use crate::BacklogStatus;
use bytes::Bytes;
use http_body_util::Full;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;
use triggers::{AttemptObserver, AttemptRecord};

/// Labels of one trigger.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabels {
    trigger: String,
}

/// Labels of an attempt's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    trigger: String,
    /// `delivered`, `already_delivered` (the receiver said it has the webhook: a status
    /// of `responses.alreadyDelivered` to a re-send), `retryable` or `permanent`.
    outcome: String,
    /// `2xx` .. `5xx`, or `none` when no status was answered.
    status_class: String,
}

type LatencyFamily = Family<TriggerLabels, Histogram, fn() -> Histogram>;

/// Attempt latencies from 5 ms to about 80 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// The metrics of one shard's triggers.
pub struct Metrics {
    registry: Registry,
    attempts: Family<AttemptLabels, Counter>,
    attempt_seconds: LatencyFamily,
    commits: Counter,
    backlog_depth: Family<TriggerLabels, Gauge>,
    oldest_pending_seconds: Family<TriggerLabels, Gauge<f64, AtomicU64>>,
    backpressure_waits: Counter,
    backpressured: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, registered under the `triggers_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("triggers");
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "delivery_attempts",
            "Webhook attempts, by trigger, outcome (delivered, already_delivered, retryable, permanent) and HTTP status class",
            attempts.clone(),
        );
        let attempt_seconds: LatencyFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "delivery_attempt_duration_seconds",
            "Time from sending a webhook attempt to its answer (or failure), by trigger",
            attempt_seconds.clone(),
        );
        let commits = Counter::default();
        registry.register(
            "commits",
            "Transactions committed (StartCommit) since the sidecar started",
            commits.clone(),
        );
        let backlog_depth = Family::<TriggerLabels, Gauge>::default();
        registry.register(
            "backlog_depth",
            "Deliveries waiting in each trigger's backlog, in-flight ones included",
            backlog_depth.clone(),
        );
        let oldest_pending_seconds = Family::<TriggerLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "oldest_pending_delivery_age_seconds",
            "Age of each trigger's oldest undelivered transaction, since its commit (0 if none)",
            oldest_pending_seconds.clone(),
        );
        let backpressure_waits = Counter::default();
        registry.register(
            "backpressure_waits",
            "StartCommits that waited for room in a full backlog since the shard opened (a reopen starts again from 0: a counter reset)",
            backpressure_waits.clone(),
        );
        let backpressured = Gauge::default();
        registry.register(
            "backpressured",
            "1 while a StartCommit waits for room in a full backlog",
            backpressured.clone(),
        );
        Self {
            registry,
            attempts,
            attempt_seconds,
            commits,
            backlog_depth,
            oldest_pending_seconds,
            backpressure_waits,
            backpressured,
        }
    }

    /// Counts a committed transaction.
    pub fn commit(&self) {
        self.commits.inc();
    }

    /// The metrics in the OpenMetrics text format, with gauges read from `backlog`.
    pub fn render(&self, backlog: Option<&BacklogStatus>) -> String {
        if let Some(status) = backlog {
            let now = SystemTime::now();
            for queue in &status.queues {
                let labels = TriggerLabels {
                    trigger: queue.trigger.to_string(),
                };
                self.backlog_depth
                    .get_or_create(&labels)
                    .set(i64::try_from(queue.depth).unwrap_or(i64::MAX));
                let age = queue
                    .oldest_committed_at
                    .and_then(|at| now.duration_since(at).ok())
                    .map_or(0.0, |age| age.as_secs_f64());
                self.oldest_pending_seconds.get_or_create(&labels).set(age);
            }
            // The backlog counts the waits; the counter shows its count, which only grows
            // while the shard is open (a reopen reads as a counter reset).
            self.backpressure_waits
                .inner()
                .store(status.backpressure_waits, Ordering::Relaxed);
            self.backpressured.set(i64::from(status.backpressured));
        }
        let mut text = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %err, "cannot encode metrics");
        }
        text
    }
}

impl AttemptObserver for Metrics {
    fn attempt_finished(&self, record: &AttemptRecord) {
        let trigger = record.trigger.to_string();
        let status_class = match record.status {
            Some(status) => format!("{}xx", status / 100),
            None => "none".to_string(),
        };
        self.attempts
            .get_or_create(&AttemptLabels {
                trigger: trigger.clone(),
                outcome: record.outcome.as_str().to_string(),
                status_class,
            })
            .inc();
        self.attempt_seconds
            .get_or_create(&TriggerLabels { trigger })
            .observe(record.latency.as_secs_f64());
    }
}

/// Answers `GET /metrics` on `listener` with `render()`'s text until `shutdown` resolves.
/// Anything else gets a 404.
///
/// Cancel-safe: dropping it stops accepting; connections already accepted are served on
/// in their own tasks.
pub async fn serve(
    listener: tokio::net::TcpListener,
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "metrics listener cannot accept");
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let render = render.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                let render = render.clone();
                async move {
                    if request.method() == hyper::Method::GET && request.uri().path() == "/metrics"
                    {
                        hyper::Response::builder()
                            .header(
                                "content-type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .body(Full::new(Bytes::from(render())))
                    } else {
                        hyper::Response::builder()
                            .status(404)
                            .body(Full::new(Bytes::from_static(
                                b"only GET /metrics is served\n",
                            )))
                    }
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(error = %err, "metrics connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14: `backpressure_waits` only grows (until the shard is reopened), so it is a
    /// Counter: typed `counter` and named with `_total`, which `rate()` and `increase()`
    /// expect; a Gauge would read as a level.
    #[test]
    fn backpressure_waits_is_a_counter() {
        let metrics = Metrics::new();
        let status = BacklogStatus {
            queues: Vec::new(),
            limit: 4,
            backpressured: true,
            backpressure_waits: 3,
            failure: None,
        };
        let text = metrics.render(Some(&status));
        assert!(
            text.contains("# TYPE triggers_backpressure_waits counter\n"),
            "{text}"
        );
        assert!(
            text.contains("\ntriggers_backpressure_waits_total 3\n"),
            "{text}"
        );
        assert!(text.contains("\ntriggers_backpressured 1\n"), "{text}");
        // A later scrape reads the backlog's count again, not a sum of scrapes.
        let text = metrics.render(Some(&BacklogStatus {
            backpressure_waits: 5,
            ..status
        }));
        assert!(
            text.contains("\ntriggers_backpressure_waits_total 5\n"),
            "{text}"
        );
    }
}
