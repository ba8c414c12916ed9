//! Delivery against a real HTTP receiver on 127.0.0.1.

use crate::support;

use std::time::Duration;
use triggers::{
    ConfigFormat, DeliveryError, FailureReason, SendReason, Triggers, Variables, validate,
};
use triggers_receiver::{Receiver, Reply};

use support::fast_deliverer;

fn triggers(receiver: &Receiver, entries: &[(&str, &str)]) -> Triggers {
    let config: Vec<serde_json::Value> = entries
        .iter()
        .map(|(path, extra)| {
            let mut entry: serde_json::Value = serde_json::from_str(&format!(
                r#"{{"url": "{}", "payloadTemplate": "{{\"name\": {{{{json materialization_name}}}}, \"run\": \"{{{{flow_run_id}}}}\", \"collections\": {{{{json collection_names}}}}}}"}}"#,
                receiver.url(path)
            ))
            .expect("fixture is JSON");
            let extra: serde_json::Value = serde_json::from_str(extra).expect("extra is JSON");
            for (k, v) in extra.as_object().expect("extra is an object") {
                entry[k] = v.clone();
            }
            entry
        })
        .collect();
    let text = serde_json::json!({ "config": config }).to_string();
    validate(&text, ConfigFormat::Json).expect("valid config")
}

fn variables() -> Variables {
    Variables {
        flow_run_id: "run-1".to_string(),
        ..Variables::placeholder()
    }
}

fn single_failure(err: &DeliveryError) -> &triggers::TriggerFailure {
    assert_eq!(err.failures.len(), 1, "{err}");
    &err.failures[0]
}

#[tokio::test]
async fn two_triggers_are_delivered_with_their_payloads_and_headers() {
    let receiver = Receiver::start().await.expect("receiver");
    let triggers = triggers(
        &receiver,
        &[
            ("/a", r#"{"headers": {"Authorization": "Bearer hunter2"}}"#),
            (
                "/b",
                r#"{"method": "PUT", "headers": {"Content-Type": "application/vnd.api+json"}}"#,
            ),
        ],
    );
    let delivered = fast_deliverer()
        .deliver(&triggers, &variables())
        .await
        .expect("delivered");
    assert_eq!(delivered.len(), 2);
    assert!(delivered.iter().all(|d| d.status == 200 && d.attempts == 1));

    let mut requests = receiver.requests();
    requests.sort_by(|a, b| a.path.cmp(&b.path));
    let (a, b) = (&requests[0], &requests[1]);
    assert_eq!((a.method.as_str(), a.path.as_str()), ("POST", "/a"));
    assert_eq!(a.header("authorization"), Some("Bearer hunter2"));
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(
        a.json().expect("JSON body"),
        serde_json::json!({
            "name": "acmeCo/example/materialize-placeholder",
            "run": "run-1",
            "collections": ["acmeCo/example/collection-a", "acmeCo/example/collection-b"],
        })
    );
    assert_eq!((b.method.as_str(), b.path.as_str()), ("PUT", "/b"));
    assert_eq!(b.header("content-type"), Some("application/vnd.api+json"));
}

#[tokio::test]
async fn a_failing_receiver_is_retried_until_it_succeeds() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script(
        "/flaky",
        [
            Reply::status(503),
            Reply::status(429),
            Reply::hang_up(),
            Reply::status(408),
            Reply::status(500),
        ],
    );
    let triggers = triggers(&receiver, &[("/flaky", r#"{"maxRetries": 5}"#)]);
    let delivered = fast_deliverer()
        .deliver(&triggers, &variables())
        .await
        .expect("delivered in the end");
    assert_eq!(delivered[0].attempts, 6);
    assert_eq!(receiver.requests().len(), 6);
}

#[tokio::test]
async fn resets_slow_bodies_and_retry_after_are_retried() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script(
        "/faulty",
        [
            Reply::reset(),
            Reply::status(429).with_header("Retry-After", "1"),
            // The status arrives at once, the body drags on past the 1 s timeout: the
            // status decides (503: retry; 200: delivered), the body read is cut short.
            Reply::status(503)
                .with_body("x".repeat(30))
                .slow_body(Duration::from_secs(1)),
            Reply::status(200)
                .with_body("y".repeat(30))
                .slow_body(Duration::from_secs(1)),
        ],
    );
    let triggers = triggers(
        &receiver,
        &[("/faulty", r#"{"timeoutSecs": 1, "maxRetries": 4}"#)],
    );
    let started = std::time::Instant::now();
    let delivered = fast_deliverer()
        .deliver(&triggers, &variables())
        .await
        .expect("the fourth attempt succeeds");
    assert_eq!(delivered[0].attempts, 4);
    assert!(
        // About 2 s when cut at the 1 s timeouts; uncut, the two slow bodies take 60 s.
        // The bound is far from both, so a loaded machine does not fail it.
        started.elapsed() < Duration::from_secs(20),
        "slow bodies are cut at the timeout: {:?}",
        started.elapsed()
    );
    let requests = receiver.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[0].answered, None, "reset, not answered");
    assert_eq!(requests[1].answered, Some(429));
}

#[tokio::test]
async fn retries_are_bounded_by_max_retries() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.set_default(Reply::status(502).with_body("upstream down"));
    let triggers = triggers(&receiver, &[("/down", r#"{"maxRetries": 2}"#)]);
    let err = fast_deliverer()
        .deliver(&triggers, &variables())
        .await
        .expect_err("never succeeds");
    let failure = single_failure(&err);
    assert_eq!(failure.attempts, 3);
    assert!(!failure.permanent);
    assert_eq!(
        failure.reason,
        FailureReason::Status {
            status: 502,
            body: "upstream down".to_string()
        }
    );
    assert_eq!(receiver.requests().len(), 3);
}

#[tokio::test]
async fn a_permanent_4xx_fails_at_once_naming_trigger_status_and_body() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.set_default(Reply::status(401).with_body(format!("invalid token{}", "!".repeat(500))));
    let triggers = triggers(
        &receiver,
        &[
            ("/ok", "{}"),
            (
                "/auth",
                r#"{"headers": {"X-Api-Key": "hunter2"}, "maxRetries": 5}"#,
            ),
        ],
    );
    receiver.script("/ok", [Reply::status(204)]);
    let err = fast_deliverer()
        .deliver(&triggers, &variables())
        .await
        .expect_err("401 is permanent");
    let failure = single_failure(&err);
    assert_eq!(failure.attempts, 1);
    assert!(failure.permanent);
    assert_eq!(failure.trigger.index, 1);
    assert_eq!(err.delivered.len(), 1);

    let text = err.to_string();
    assert!(text.contains("trigger 1 (http://127.0.0.1:"), "{text}");
    assert!(text.contains("HTTP 401"), "{text}");
    assert!(text.contains("invalid token"), "{text}");
    assert!(text.len() < 600, "the body excerpt is bounded: {text}");
    assert!(!text.contains("hunter2") && !format!("{err:?}").contains("hunter2"));
    // 401 once on /auth, 204 once on /ok.
    assert_eq!(receiver.requests().len(), 2);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.set_default(Reply::status(302));
    let triggers = triggers(&receiver, &[("/moved", "{}")]);
    let err = fast_deliverer()
        .deliver(&triggers, &variables())
        .await
        .expect_err("a redirect is not a delivery");
    assert!(single_failure(&err).permanent);
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn an_attempt_past_its_timeout_is_abandoned_and_retried() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script(
        "/slow",
        [
            Reply::status(200).after(Duration::from_secs(3)),
            Reply::status(200),
        ],
    );
    let triggers = triggers(
        &receiver,
        &[("/slow", r#"{"timeoutSecs": 1, "maxRetries": 1}"#)],
    );
    let delivered = fast_deliverer()
        .deliver(&triggers, &variables())
        .await
        .expect("second attempt answers");
    // Uncut, the first attempt would have delivered (its 200 comes after 3 s), so a
    // second attempt is the proof that the timeout cut it: no wall-clock bound needed.
    assert_eq!(delivered[0].attempts, 2);
    assert_eq!(receiver.requests().len(), 2);
}

#[tokio::test]
async fn a_timeout_with_no_retries_left_is_reported_as_a_timeout() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.set_default(Reply::status(200).after(Duration::from_secs(3)));
    let triggers = triggers(
        &receiver,
        &[("/slow", r#"{"timeoutSecs": 1, "maxRetries": 0}"#)],
    );
    let err = fast_deliverer()
        .deliver(&triggers, &variables())
        .await
        .expect_err("times out");
    let failure = single_failure(&err);
    assert_eq!(
        failure.reason,
        FailureReason::Timeout(Duration::from_secs(1))
    );
    assert!(!failure.permanent);
}

#[tokio::test]
async fn a_closed_port_is_a_retried_connection_error() {
    // Bind and drop a listener: nothing listens on that port any more.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let config = format!(
        r#"{{"config": [{{"url": "http://user:hunter2@127.0.0.1:{port}/x?token=hunter2", "payloadTemplate": "{{}}", "maxRetries": 2}}]}}"#
    );
    let triggers = validate(&config, ConfigFormat::Json).expect("valid");
    let err = fast_deliverer()
        .deliver(&triggers, &variables())
        .await
        .expect_err("nothing listens");
    let failure = single_failure(&err);
    assert_eq!(failure.attempts, 3);
    assert!(matches!(failure.reason, FailureReason::Connect(_)), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn log_lines_name_the_trigger_and_never_a_credential() {
    let (captured, _guard) = support::CapturedLogs::install();

    let receiver = Receiver::start().await.expect("receiver");
    receiver.script("/p?key=hunter2", [Reply::status(500), Reply::status(403)]);
    let config = format!(
        r#"{{"config": [{{"url": "{}?key=hunter2", "headers": {{"Authorization": "Bearer hunter2"}}, "payloadTemplate": "{{}}"}}]}}"#,
        receiver
            .url("/p")
            .replace("127.0.0.1", "user:hunter2@127.0.0.1")
    );
    let triggers = validate(&config, ConfigFormat::Json).expect("valid");
    let _ = fast_deliverer().deliver(&triggers, &variables()).await;

    let logs = captured.text();
    assert!(logs.contains("webhook attempt failed"), "{logs}");
    assert!(logs.contains("webhook failed for good"), "{logs}");
    assert!(logs.contains("trigger=0"), "{logs}");
    assert!(!logs.contains("hunter2"), "{logs}");
}

#[tokio::test]
async fn user_info_in_the_url_is_sent_as_basic_auth_unless_the_config_sets_authorization() {
    let receiver = Receiver::start().await.expect("receiver");
    let with_user = |path: &str| {
        receiver
            .url(path)
            .replace("127.0.0.1", "ops:s%20cret@127.0.0.1")
    };
    let config = serde_json::json!({"config": [
        {"url": with_user("/basic"), "payloadTemplate": "{}"},
        {"url": with_user("/own"), "payloadTemplate": "{}",
         "headers": {"Authorization": "Bearer mine"}},
    ]});
    let triggers = validate(&config.to_string(), ConfigFormat::Json).expect("valid");
    fast_deliverer()
        .deliver(&triggers, &variables())
        .await
        .expect("delivered");

    let mut requests = receiver.requests();
    requests.sort_by(|a, b| a.path.cmp(&b.path));
    // "ops:s cret", percent-decoded, in base64.
    assert_eq!(requests[0].path, "/basic");
    assert_eq!(
        requests[0].header("authorization"),
        Some("Basic b3BzOnMgY3JldA==")
    );
    assert_eq!(requests[1].path, "/own");
    assert_eq!(requests[1].header("authorization"), Some("Bearer mine"));
    assert!(
        requests
            .iter()
            .all(|r| r.header("webhook-id").is_some() && r.header("webhook-reason").is_some())
    );
}

/// Issue 13, item 3: the log of a delivery carries the trace id the receiver saw in
/// `traceparent` (a field of the `deliver` span), and each attempt's span id (a field of
/// its `attempt` span), so a receiver's trace and our log join.
#[tokio::test]
async fn traceparent_ids_seen_by_the_receiver_are_in_the_delivery_log() {
    let (captured, _guard) = support::CapturedLogs::install();

    let receiver = Receiver::start().await.expect("receiver");
    receiver.script("/traced", [Reply::status(503), Reply::status(200)]);
    let triggers = triggers(&receiver, &[("/traced", "{}")]);
    fast_deliverer()
        .deliver(&triggers, &variables())
        .await
        .expect("delivered on the retry");

    let logs = captured.text();
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        let traceparent = request.header("traceparent").expect("traceparent");
        let fields: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(fields.len(), 4, "{traceparent}");
        let (trace, span) = (fields[1], fields[2]);
        let failed = logs
            .lines()
            .find(|l| l.contains("webhook attempt failed"))
            .unwrap_or_else(|| panic!("no failed attempt logged: {logs}"));
        assert!(failed.contains(&format!("trace_id={trace}")), "{logs}");
        assert!(
            logs.lines()
                .any(|l| l.contains("attempt{") && l.contains(&format!("span_id={span}"))),
            "span {span} not logged: {logs}"
        );
    }
}

/// Issue 13, item 4: a receiver that keeps microseconds (Airflow) gets the publish times
/// at its precision, the inclusive upper bound rounded up so no document is left out.
#[tokio::test]
async fn timestamp_helper_renders_publish_times_at_the_receivers_precision() {
    let receiver = Receiver::start().await.expect("receiver");
    let template = r#"{"conf": {"from": "{{timestamp flow_published_at_min "us"}}", "to": "{{timestamp flow_published_at_max "us" "ceil"}}", "to_ms": {{json (timestamp flow_published_at_max "ms" "ceil")}}, "exact": "{{flow_published_at_max}}"}}"#;
    let config = serde_json::json!({"config": [
        {"url": receiver.url("/dags/x/dagRuns"), "payloadTemplate": template},
    ]});
    let triggers = validate(&config.to_string(), ConfigFormat::Json).expect("valid");
    let variables = Variables {
        flow_published_at_min: time::macros::datetime!(2024-12-31 23:00:00.1234567 UTC),
        flow_published_at_max: time::macros::datetime!(2024-12-31 23:59:59.9999999 UTC),
        ..variables()
    };
    fast_deliverer()
        .deliver(&triggers, &variables)
        .await
        .expect("delivered");
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].json().expect("JSON body"),
        serde_json::json!({"conf": {
            "from": "2024-12-31T23:00:00.123456Z",
            "to": "2025-01-01T00:00:00.000000Z",
            "to_ms": "2025-01-01T00:00:00.000Z",
            "exact": "2024-12-31T23:59:59.9999999Z",
        }})
    );
}

/// Issue 13, item 1 (response policy per trigger): with `timeoutSecs: 1` and a slow
/// receiver, the first attempt times out client-side although the receiver has the
/// webhook (Airflow created the run); the retry is answered 409 ("DAGRun ... already
/// exists"). The request may have arrived before, so the 409 is a delivery.
#[tokio::test]
async fn response_policy_a_retry_after_a_timeout_answered_409_is_already_delivered() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script(
        "/dags/d/dagRuns",
        [
            // Held past the 1 s timeout: the client gives up, the receiver has it.
            Reply::status(200).after(Duration::from_secs(60)),
            Reply::status(409).with_body("DAGRun with dag_run_id: 'flow-run-1' already exists"),
        ],
    );
    let triggers = triggers(
        &receiver,
        &[("/dags/d/dagRuns", r#"{"timeoutSecs": 1, "maxRetries": 1}"#)],
    );
    let delivered = fast_deliverer()
        .deliver(&triggers, &variables())
        .await
        .expect("the 409 after a timeout counts as delivered");
    assert_eq!(delivered[0].attempts, 2);
    assert_eq!(delivered[0].status, 409);
    assert!(delivered[0].already_delivered);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].header("webhook-reason"), Some("retry"));
}

/// Issue 13, item 1: a 409 to a webhook that was never sent before (first attempt, and
/// no earlier attempt could have arrived) means the receiver's idempotency key collides
/// with another request's: a permanent failure that says so, never a silent delivery.
/// An HTTP answer does not make a later 409 a duplicate either: the receiver said what
/// it did with the request.
#[tokio::test]
async fn response_policy_a_first_send_answered_409_fails_for_good_as_a_collision() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script("/first", [Reply::status(409).with_body("already exists")]);
    receiver.script(
        "/answered",
        [
            Reply::status(503),
            Reply::status(409).with_body("already exists"),
        ],
    );
    let triggers = triggers(
        &receiver,
        &[
            ("/first", r#"{"maxRetries": 3}"#),
            ("/answered", r#"{"maxRetries": 3}"#),
        ],
    );
    let err = fast_deliverer()
        .deliver(&triggers, &variables())
        .await
        .expect_err("a 409 to a first send is not a delivery");
    assert_eq!(err.failures.len(), 2, "{err}");
    assert!(err.delivered.is_empty());
    for (failure, attempts) in err.failures.iter().zip([1, 2]) {
        assert!(failure.permanent, "{failure}");
        assert_eq!(failure.attempts, attempts, "{failure}");
        assert_eq!(
            failure.reason,
            FailureReason::AlreadyDeliveredOnFirstSend {
                status: 409,
                body: "already exists".to_string()
            }
        );
        assert_eq!(failure.reason.status(), Some(409));
        let text = failure.to_string();
        assert!(text.contains("never sent before"), "{text}");
        assert!(text.contains("idempotency key"), "{text}");
        assert!(text.contains("not counted as delivered"), "{text}");
    }
    assert_eq!(receiver.requests().len(), 3);
}

/// Issue 13, item 1: a recovery re-fire (the process stopped while the request was in
/// flight) answered 409 is delivered, so the shard goes on; `alreadyDelivered: []` opts
/// out (the 409 is then an ordinary permanent failure).
#[tokio::test]
async fn response_policy_a_recovery_refire_answered_409_is_already_delivered() {
    let (captured, _guard) = support::CapturedLogs::install();
    let receiver = Receiver::start().await.expect("receiver");
    receiver.set_default(Reply::status(409).with_body("already exists"));
    let triggers = triggers(
        &receiver,
        &[
            ("/default", "{}"),
            ("/opted-out", r#"{"responses": {"alreadyDelivered": []}}"#),
        ],
    );
    let err = fast_deliverer()
        .deliver_with_reason(&triggers, &variables(), SendReason::RecoveryRefire)
        .await
        .expect_err("the opted-out trigger fails");
    assert_eq!(err.delivered.len(), 1, "{err}");
    let delivered = &err.delivered[0];
    assert_eq!(delivered.trigger.index, 0);
    assert_eq!((delivered.status, delivered.attempts), (409, 1));
    assert!(delivered.already_delivered);
    let failure = single_failure(&err);
    assert_eq!(failure.trigger.index, 1);
    assert!(failure.permanent);
    assert!(
        matches!(failure.reason, FailureReason::Status { status: 409, .. }),
        "{failure}"
    );
    // The log says "already delivered", with the status, not "delivered".
    let logs = captured.text();
    let line = logs
        .lines()
        .find(|l| l.contains("already delivered"))
        .unwrap_or_else(|| panic!("no \"already delivered\" line: {logs}"));
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains("status=409"), "{line}");
    assert!(
        !logs.lines().any(|l| l.contains(": delivered")),
        "logged as a plain delivery: {logs}"
    );
}

/// Issue 13, item 1: statuses listed in `responses.retry` are retried like a 503.
#[tokio::test]
async fn response_policy_retry_statuses_are_retried() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script(
        "/early",
        [Reply::status(425), Reply::status(423), Reply::status(200)],
    );
    let triggers = triggers(
        &receiver,
        &[("/early", r#"{"responses": {"retry": [425, 423]}}"#)],
    );
    let delivered = fast_deliverer()
        .deliver(&triggers, &variables())
        .await
        .expect("425 and 423 are retried");
    assert_eq!((delivered[0].status, delivered[0].attempts), (200, 3));
    assert!(!delivered[0].already_delivered);
}

/// Issue 18, item 5: delivering a transaction sends each trigger only if it fires for
/// one of the transaction's collections, with `collection_names` kept to those; a
/// trigger without `collections` gets them all.
#[tokio::test]
async fn each_trigger_is_delivered_only_for_its_collections() {
    let receiver = Receiver::start().await.expect("receiver");
    let triggers = triggers(
        &receiver,
        &[
            ("/b", r#"{"collections": ["acmeCo/example/collection-b"]}"#),
            ("/orders", r#"{"collections": ["acmeCo/orders/"]}"#),
            ("/all", "{}"),
            ("/example", r#"{"collections": ["acmeCo/example/"]}"#),
        ],
    );
    let delivered = fast_deliverer()
        .deliver(&triggers, &variables())
        .await
        .expect("delivered");
    let mut sent: Vec<usize> = delivered.iter().map(|d| d.trigger.index).collect();
    sent.sort_unstable();
    assert_eq!(
        sent,
        [0, 2, 3],
        "trigger 1 fires for no collection of the transaction"
    );
    let mut requests = receiver.requests();
    requests.sort_by(|a, b| a.path.cmp(&b.path));
    let collections: Vec<(String, serde_json::Value)> = requests
        .iter()
        .map(|r| {
            (
                r.path.clone(),
                r.json().expect("JSON")["collections"].clone(),
            )
        })
        .collect();
    let both = serde_json::json!(["acmeCo/example/collection-a", "acmeCo/example/collection-b"]);
    assert_eq!(
        collections,
        [
            ("/all".to_string(), both.clone()),
            (
                "/b".to_string(),
                serde_json::json!(["acmeCo/example/collection-b"])
            ),
            ("/example".to_string(), both),
        ]
    );
}

/// Issue 18, item 3b: a receiver that echoes the request in its error answer (a
/// validation error quoting the payload, with the header value `{{headers.X-Api-Key}}`
/// put there, or the header itself) does not put the value in our error or log: the
/// excerpt shows `<redacted>` in its place, raw or JSON-escaped.
#[tokio::test]
async fn a_receiver_echoing_a_header_value_does_not_put_it_in_errors_or_logs() {
    let secret = r#"sk-echo"d\secret/77"#;
    let escaped = serde_json::to_string(secret).expect("JSON");
    let escaped = &escaped[1..escaped.len() - 1];
    let slashed = escaped.replace('/', "\\/");
    let receiver = Receiver::start().await.expect("receiver");
    receiver.set_default(Reply::status(400).with_body(format!(
        r#"{{"detail": "invalid conf {{\"apiKey\": \"{escaped}\"}}", "header": "{secret}", "php": "{slashed}"}}"#
    )));
    let config = serde_json::json!({"config": [{
        "url": receiver.url("/hook"),
        "headers": {"X-Api-Key": secret},
        "payloadTemplate": "{\"apiKey\": {{json headers.X-Api-Key}}}",
    }]});
    let triggers = validate(&config.to_string(), ConfigFormat::Json).expect("valid");
    let (captured, _guard) = support::CapturedLogs::install();
    let err = fast_deliverer()
        .deliver(&triggers, &variables())
        .await
        .expect_err("400");
    let requests = receiver.requests();
    assert_eq!(requests[0].json().expect("JSON")["apiKey"], secret);
    let failure = single_failure(&err);
    let FailureReason::Status { status: 400, body } = &failure.reason else {
        panic!("{failure}");
    };
    assert_eq!(body.matches("<redacted>").count(), 3, "{body}");
    let logs = captured.text();
    for (what, text) in [
        ("error", err.to_string()),
        ("debug", format!("{err:?}")),
        ("logs", logs),
    ] {
        for form in [secret, escaped, slashed.as_str(), "sk-echo"] {
            assert!(!text.contains(form), "{what} shows {form}: {text}");
        }
    }
}
