//! Prometheus metrics of a sidecar's triggers, for the operator who must see why (and how
//! often) a webhook fails: attempts by outcome and status class, attempt latency, commits,
//! and per trigger the backlog depth and the age of its oldest pending delivery.
//!
//! Counters and the histogram are fed as attempts finish (an [`AttemptObserver`] on the
//! shards' deliverer) and count every shard of the process together; gauges are read from
//! the open shards' backlogs when scraped, a named shard's per-trigger series labelled
//! `shard` (the default shard's have no such label). [`serve`] answers `GET /metrics` in
//! the OpenMetrics text format.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use prometheus_client::encoding::{EncodeLabel as _, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::future::IntoFuture as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use triggers::{AttemptObserver, AttemptRecord};
use triggers_runtime::BacklogStatus;

/// Labels of one trigger.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabels {
    /// The trigger's name (for a list entry without one, its index: `0`, `1`, ...), so a
    /// reordered config keeps each trigger's series.
    trigger: String,
}

/// Labels of one trigger's backlog in one shard: `shard` (its id) and `trigger`, or only
/// `trigger` for the default shard, whose series are those of a sidecar of one shard.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct BacklogLabels {
    shard: String,
    trigger: String,
}

impl EncodeLabelSet for BacklogLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        if !self.shard.is_empty() {
            ("shard", self.shard.as_str()).encode(encoder.encode_label())?;
        }
        ("trigger", self.trigger.as_str()).encode(encoder.encode_label())
    }
}

/// Labels of one shard: `shard` (its id), or none for the default shard.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ShardLabels {
    shard: String,
}

impl EncodeLabelSet for ShardLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        if !self.shard.is_empty() {
            ("shard", self.shard.as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
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

/// The metrics of a sidecar's triggers, over all its shards.
pub struct Metrics {
    registry: Registry,
    attempts: Family<AttemptLabels, Counter>,
    attempt_seconds: LatencyFamily,
    commits: Counter,
    backlog_depth: Family<BacklogLabels, Gauge>,
    oldest_pending_seconds: Family<BacklogLabels, Gauge<f64, AtomicU64>>,
    backpressure_waits: Counter,
    backpressured: Gauge,
    orphaned_entries: Family<BacklogLabels, Gauge>,
    dead_letters: Family<BacklogLabels, Counter>,
    stopped: Family<ShardLabels, Gauge>,
    /// One render at a time: each clears the gauges and sets them again.
    rendering: std::sync::Mutex<()>,
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
        let backlog_depth = Family::<BacklogLabels, Gauge>::default();
        registry.register(
            "backlog_depth",
            "Deliveries waiting in each trigger's backlog, in-flight ones included",
            backlog_depth.clone(),
        );
        let oldest_pending_seconds = Family::<BacklogLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "oldest_pending_delivery_age_seconds",
            "Age of each trigger's oldest undelivered transaction, since its commit (0 if none)",
            oldest_pending_seconds.clone(),
        );
        let backpressure_waits = Counter::default();
        registry.register(
            "backpressure_waits",
            "StartCommits that waited for room in a full backlog since their shard opened, over the open shards (a reopen or a close reads as a counter reset)",
            backpressure_waits.clone(),
        );
        let backpressured = Gauge::default();
        registry.register(
            "backpressured",
            "Shards whose StartCommit waits for room in a full backlog (1 or 0 for one shard)",
            backpressured.clone(),
        );
        let orphaned_entries = Family::<BacklogLabels, Gauge>::default();
        registry.register(
            "orphaned_backlog_entries",
            "Backlog entries of triggers the config no longer has, by trigger name: kept and never sent until an operator skips them or the trigger comes back",
            orphaned_entries.clone(),
        );
        let dead_letters = Family::<BacklogLabels, Counter>::default();
        registry.register(
            "dead_letters",
            "Deliveries that failed for good and became dead letters (a trigger whose onFailure is deadLetter) since their shard opened: the backlog went on without them (a reopen or a close reads as a counter reset)",
            dead_letters.clone(),
        );
        let stopped = Family::<ShardLabels, Gauge>::default();
        registry.register(
            "backlog_stopped",
            "1 while a shard's backlog is stopped (a delivery FAILED for good waits for an operator, or the shard must be reopened), else 0",
            stopped.clone(),
        );
        Self {
            dead_letters,
            stopped,
            orphaned_entries,
            registry,
            attempts,
            attempt_seconds,
            commits,
            backlog_depth,
            oldest_pending_seconds,
            backpressure_waits,
            backpressured,
            rendering: std::sync::Mutex::new(()),
        }
    }

    /// Counts a committed transaction.
    pub fn commit(&self) {
        self.commits.inc();
    }

    /// The metrics in the OpenMetrics text format, with gauges read from `backlog`, the
    /// default shard's (as [`Metrics::render_shards`] with that shard alone).
    pub fn render(&self, backlog: Option<&BacklogStatus>) -> String {
        let backlogs: Vec<(String, BacklogStatus)> = backlog
            .map(|b| (String::new(), b.clone()))
            .into_iter()
            .collect();
        self.render_shards(&backlogs)
    }

    /// The metrics in the OpenMetrics text format, with gauges read from the backlogs of
    /// the open shards (id, backlog; the empty id is the default shard). Per-trigger
    /// gauges are set afresh: those of a shard no longer listed (closed, moved to another
    /// process) leave, so two processes never both report one shard's backlog.
    /// `backpressured` counts the shards backpressured, `backpressure_waits` sums theirs.
    pub fn render_shards(&self, backlogs: &[(String, BacklogStatus)]) -> String {
        let _one_at_a_time = self
            .rendering
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = SystemTime::now();
        self.backlog_depth.clear();
        self.oldest_pending_seconds.clear();
        // Skipped ones leave the series rather than linger at their last count.
        self.orphaned_entries.clear();
        self.dead_letters.clear();
        self.stopped.clear();
        let (mut waits, mut backpressured) = (0u64, 0i64);
        for (shard, status) in backlogs {
            self.stopped
                .get_or_create(&ShardLabels {
                    shard: shard.clone(),
                })
                .set(i64::from(status.failure.is_some()));
            for queue in &status.queues {
                let labels = BacklogLabels {
                    shard: shard.clone(),
                    trigger: queue.name.clone(),
                };
                self.backlog_depth
                    .get_or_create(&labels)
                    .set(i64::try_from(queue.depth).unwrap_or(i64::MAX));
                let age = queue
                    .oldest_committed_at
                    .and_then(|at| now.duration_since(at).ok())
                    .map_or(0.0, |age| age.as_secs_f64());
                self.oldest_pending_seconds.get_or_create(&labels).set(age);
                // The backlog counts them; the counter shows its count.
                self.dead_letters
                    .get_or_create(&labels)
                    .inner()
                    .store(queue.dead_letters, Ordering::Relaxed);
            }
            for orphaned in &status.orphaned {
                self.orphaned_entries
                    .get_or_create(&BacklogLabels {
                        shard: shard.clone(),
                        trigger: orphaned.name.clone(),
                    })
                    .set(i64::try_from(orphaned.depth).unwrap_or(i64::MAX));
            }
            waits = waits.saturating_add(status.backpressure_waits);
            backpressured += i64::from(status.backpressured);
        }
        // The backlogs count the waits; the counter shows their count, which only grows
        // while the shards stay open.
        self.backpressure_waits
            .inner()
            .store(waits, Ordering::Relaxed);
        self.backpressured.set(backpressured);
        let mut text = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %err, "cannot encode metrics");
        }
        text
    }
}

impl AttemptObserver for Metrics {
    fn attempt_finished(&self, record: &AttemptRecord) {
        let trigger = record.trigger_name.clone();
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

/// How long [`serve`] lets scrapes in flight finish after `shutdown`: a scrape renders in
/// microseconds, so only a stalled client takes longer.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Answers `GET /metrics` on `listener` with `render()`'s text until `shutdown` resolves.
/// Anything else gets a 404. No authentication: bind it where only the scraper reaches.
///
/// Served by axum, which retries a failed accept after a pause (a full file table, say)
/// rather than spinning, and sheds an aborted or reset connection. At `shutdown` it
/// stops accepting, closes idle connections and lets requests in flight finish for up
/// to [`SHUTDOWN_GRACE`]; it returns then, leaving any connection still open to the
/// runtime.
///
/// Cancel-safe: dropping it stops accepting; connections already accepted are served on
/// in their own tasks.
pub async fn serve(
    listener: tokio::net::TcpListener,
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
    shutdown: impl std::future::Future<Output = ()>,
) {
    serve_with_grace(listener, render, shutdown, SHUTDOWN_GRACE).await;
}

/// [`serve`], letting scrapes in flight finish for `grace` after `shutdown`.
async fn serve_with_grace(
    listener: tokio::net::TcpListener,
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    // The route answers every method so that anything but GET gets the same 404 as an
    // unknown path (axum's `get` would answer HEAD, and other methods with a 405).
    let metrics = move |method: Method| {
        let render = render.clone();
        async move {
            if method == Method::GET {
                ([(header::CONTENT_TYPE, CONTENT_TYPE)], render()).into_response()
            } else {
                not_found().await
            }
        }
    };
    let app = Router::new()
        .route("/metrics", any(metrics))
        .fallback(not_found);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stopped.await;
    });
    let mut server = std::pin::pin!(server.into_future());
    tokio::pin!(shutdown);
    tokio::select! {
        ended = &mut server => {
            if let Err(err) = ended {
                tracing::warn!(error = %err, "metrics server stopped");
            }
            return;
        }
        () = &mut shutdown => {}
    }
    let _ = stop.send(());
    match tokio::time::timeout(grace, server).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(error = %err, "metrics server stopped"),
        Err(_) => tracing::warn!(
            grace_secs = grace.as_secs_f64(),
            "metrics connections still open after the shutdown grace; left open"
        ),
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Body::from("only GET /metrics is served\n"),
    )
        .into_response()
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
            orphaned: Vec::new(),
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

    /// Issue 17 (alerts): every metric the example alerting rules in `deploy/alerts.yml`
    /// read is one the sidecar exports, with its type's suffix (`_total` for counters),
    /// so renaming a metric breaks this test instead of silently muting an alert.
    #[test]
    fn the_example_alerts_read_metrics_the_sidecar_exports() {
        let rules = include_str!("../../../deploy/alerts.yml");
        // Families show in the text once they have a series: one attempt, one backlog.
        let metrics = Metrics::new();
        metrics.attempt_finished(&triggers::AttemptRecord {
            trigger: 0,
            trigger_name: "broken".to_string(),
            number: 1,
            reason: "first-send",
            at: std::time::SystemTime::UNIX_EPOCH,
            latency: Duration::from_millis(3),
            status: Some(404),
            outcome: triggers::AttemptOutcome::Permanent,
            error: None,
            trace_id: triggers::TraceId::random(),
            span_id: triggers::SpanId::random(),
        });
        let text = metrics.render(Some(&BacklogStatus {
            queues: vec![triggers_runtime::QueueStatus {
                trigger: 0,
                name: "broken".to_string(),
                drain: triggers::Drain::Ordered,
                depth: 1,
                in_flight: 0,
                delivered: 0,
                transactions_delivered: 0,
                already_delivered: 0,
                dead_letters: 1,
                oldest_pending_seq: Some(1),
                oldest_committed_at: Some(std::time::SystemTime::now()),
            }],
            limit: 4,
            backpressured: false,
            backpressure_waits: 0,
            failure: None,
            orphaned: Vec::new(),
        }));
        let exported: Vec<String> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .flat_map(|typed| {
                let (name, kind) = typed.split_once(' ').unwrap_or((typed, ""));
                match kind {
                    "counter" => vec![format!("{name}_total")],
                    "histogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .map(|suffix| format!("{name}{suffix}"))
                        .collect(),
                    _ => vec![name.to_string()],
                }
            })
            .collect();
        let mut read = 0;
        for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("triggers_") {
                read += 1;
                assert!(
                    exported.iter().any(|name| name == word),
                    "deploy/alerts.yml reads {word}, which the sidecar does not export: {exported:?}"
                );
            }
        }
        assert!(read >= 5, "the rules read the sidecar's metrics");
    }

    /// Issue 13 (response policy): an attempt the receiver answered "already delivered"
    /// is counted under its own outcome, with its status class, beside plain deliveries.
    /// (The backlog test that makes a real 409 re-fire checks what the observer is told.)
    #[test]
    fn an_already_delivered_attempt_is_counted_under_its_own_outcome() {
        let metrics = Metrics::new();
        let attempt = |status, outcome| triggers::AttemptRecord {
            trigger: 0,
            trigger_name: "0".to_string(),
            number: 1,
            reason: "recovery-refire",
            at: std::time::SystemTime::UNIX_EPOCH,
            latency: Duration::from_millis(3),
            status: Some(status),
            outcome,
            error: None,
            trace_id: triggers::TraceId::random(),
            span_id: triggers::SpanId::random(),
        };
        metrics.attempt_finished(&attempt(409, triggers::AttemptOutcome::AlreadyDelivered));
        metrics.attempt_finished(&attempt(200, triggers::AttemptOutcome::Delivered));
        metrics.attempt_finished(&attempt(200, triggers::AttemptOutcome::Delivered));
        let text = metrics.render(None);
        let line = |outcome: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("triggers_delivery_attempts_total")
                        && l.contains(&format!("outcome=\"{outcome}\""))
                })
                .unwrap_or_else(|| panic!("no {outcome} attempts counted: {text}"))
                .to_string()
        };
        let already = line("already_delivered");
        assert!(already.contains(r#"status_class="4xx""#), "{already}");
        assert!(already.ends_with(" 1"), "{already}");
        assert!(line("delivered").ends_with(" 2"), "{text}");
    }

    /// A server on 127.0.0.1 whose `render` blocks until released, telling when it started.
    struct Held {
        url: String,
        started: std::sync::mpsc::Receiver<()>,
        release: std::sync::mpsc::SyncSender<()>,
        stop: tokio::sync::oneshot::Sender<()>,
        serving: tokio::task::JoinHandle<()>,
    }

    async fn serve_held(grace: Duration) -> Held {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let url = format!("http://{}/metrics", listener.local_addr().expect("address"));
        let (started_tx, started) = std::sync::mpsc::sync_channel(16);
        let (release, release_rx) = std::sync::mpsc::sync_channel::<()>(16);
        let release_rx = std::sync::Arc::new(std::sync::Mutex::new(release_rx));
        let render = move || {
            let _ = started_tx.send(());
            let released = release_rx
                .lock()
                .map(|rx| rx.recv_timeout(Duration::from_secs(30)));
            assert!(matches!(released, Ok(Ok(()))), "never released");
            "a_metric 1\n".to_string()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(serve_with_grace(
            listener,
            render,
            async move {
                let _ = stopped.await;
            },
            grace,
        ));
        Held {
            url,
            started,
            release,
            stop,
            serving,
        }
    }

    /// Issue 14: at shutdown the old accept loop returned at once, and the sidecar's
    /// process exited under a scrape still being answered. A scrape in flight at shutdown
    /// now completes, and `serve` returns only after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metrics_server_lets_a_scrape_in_flight_finish_at_shutdown() {
        let mut held = serve_held(Duration::from_secs(30)).await;
        let url = held.url.clone();
        let scrape = tokio::spawn(async move {
            let response = reqwest::get(&url).await.expect("answered");
            let status = response.status();
            (status, response.text().await.expect("whole body"))
        });
        let started = held.started;
        let started = tokio::task::spawn_blocking(move || {
            started.recv_timeout(Duration::from_secs(30)).is_ok()
        })
        .await
        .expect("joins");
        assert!(started, "the scrape never reached render");

        held.stop.send(()).expect("server still running");
        // While the scrape is held, the server does not return.
        let early = tokio::time::timeout(Duration::from_millis(300), &mut held.serving).await;
        assert!(early.is_err(), "serve returned under a scrape in flight");
        held.release.send(()).expect("render waits");
        let (status, body) = tokio::time::timeout(Duration::from_secs(30), scrape)
            .await
            .expect("scrape answered in time")
            .expect("joins");
        assert_eq!(status, 200);
        assert_eq!(body, "a_metric 1\n");
        tokio::time::timeout(Duration::from_secs(30), held.serving)
            .await
            .expect("serve returns once the scrape is answered")
            .expect("joins");
    }

    /// The graceful wait is bounded: a client that never finishes its request holds
    /// shutdown for the grace only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metrics_server_shutdown_waits_for_a_stalled_client_only_for_the_grace() {
        use tokio::io::AsyncWriteExt as _;
        let held = serve_held(Duration::from_millis(200)).await;
        let address = held
            .url
            .trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .to_string();
        let mut stalled = tokio::net::TcpStream::connect(&address)
            .await
            .expect("connects");
        stalled
            .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n")
            .await
            .expect("writes half a request");
        held.stop.send(()).expect("server still running");
        tokio::time::timeout(Duration::from_secs(30), held.serving)
            .await
            .expect("serve returns after the grace")
            .expect("joins");
        drop(stalled);
    }

    /// Issue 14: clients that connect and reset (the accept error a busy host hands out
    /// most) neither stop the server nor keep it from answering the next scrape.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metrics_server_keeps_serving_after_clients_reset() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(serve(listener, || "a_metric 1\n".to_string(), async move {
            let _ = stopped.await;
        }));
        for _ in 0..20 {
            let stream = tokio::net::TcpStream::connect(address)
                .await
                .expect("connects");
            // SO_LINGER 0: closing sends a RST, not a FIN.
            stream.set_zero_linger().expect("sets linger");
            drop(stream);
        }
        let response = reqwest::get(format!("http://{address}/metrics"))
            .await
            .expect("answered after the resets");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some(CONTENT_TYPE)
        );
        assert_eq!(response.text().await.expect("body"), "a_metric 1\n");
        // The 404 for anything but GET /metrics is unchanged.
        let http = reqwest::Client::new();
        for (method, path) in [
            (reqwest::Method::GET, "/other"),
            (reqwest::Method::POST, "/metrics"),
            (reqwest::Method::HEAD, "/metrics"),
            (reqwest::Method::GET, "/metrics/"),
        ] {
            let response = http
                .request(method.clone(), format!("http://{address}{path}"))
                .send()
                .await
                .expect("answered");
            assert_eq!(response.status(), 404, "{method} {path}");
        }
        stop.send(()).expect("server still running");
        tokio::time::timeout(Duration::from_secs(30), serving)
            .await
            .expect("stops")
            .expect("joins");
    }
}
