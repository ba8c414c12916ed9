//! Preview and test-fire against a real HTTP receiver on 127.0.0.1: one attempt, marked
//! `test-fire`, reported and never retried.

use crate::support;

use std::time::Duration;
use triggers::{
    AttemptOutcome, ConfigFormat, Deliverer, FailureReason, NetworkPolicy, PreviewError,
    PreviewVariables, RetryBackoff, Triggers, VariablesInputError, validate,
};
use triggers_receiver::{Receiver, Reply};

fn triggers(receiver: &Receiver, extra: serde_json::Value) -> Triggers {
    let mut entry = serde_json::json!({
        "url": receiver.url("/hook"),
        "payloadTemplate": r#"{"run": "{{flow_run_id}}", "n": {{transaction_count}}}"#,
        "headers": {"Authorization": "Bearer hunter2"},
        "maxRetries": 3,
    });
    for (k, v) in extra.as_object().expect("object") {
        entry[k] = v.clone();
    }
    let text = serde_json::json!({ "config": [entry] }).to_string();
    validate(&text, ConfigFormat::Json).expect("valid config")
}

fn loopback() -> Deliverer {
    support::loopback_deliverer(RetryBackoff::default())
}

#[tokio::test]
async fn a_200_is_reported_with_status_latency_and_body_excerpt() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script("/hook", [Reply::status(200).with_body("x".repeat(5000))]);
    let triggers = triggers(&receiver, serde_json::json!({}));
    let variables = PreviewVariables::from_json(r#"{"transaction_count": 1}"#).expect("valid");

    let report = loopback()
        .test_fire(&triggers, 0, &variables)
        .await
        .expect("sent");
    assert!(report.accepted(), "{report}");
    assert_eq!(report.status, Some(200));
    assert_eq!(report.error, None);
    assert!(report.latency > Duration::ZERO);
    // Bounded like a delivery error's excerpt: 200 characters and an ellipsis.
    assert_eq!(report.body_excerpt.chars().count(), 201, "{report}");
    assert!(report.body_excerpt.ends_with('…'));

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.header("webhook-reason"), Some("test-fire"));
    assert_eq!(request.header("webhook-attempt"), Some("1"));
    assert_eq!(
        request.header("webhook-id"),
        Some(report.webhook_id.as_str())
    );
    assert_eq!(request.header("authorization"), Some("Bearer hunter2"));
    let body = request.json().expect("JSON body");
    assert_eq!(body["n"], 1);
    // A fresh run id per test, so a receiver that dedupes does not drop the next one.
    assert_ne!(
        body["run"],
        triggers::Variables::placeholder().flow_run_id.as_str()
    );
    assert!(!report.to_string().contains("hunter2"));
}

#[tokio::test]
async fn a_500_is_reported_once_and_not_retried() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.set_default(Reply::status(500).with_body("boom"));
    let triggers = triggers(&receiver, serde_json::json!({}));

    let report = loopback()
        .test_fire(&triggers, 0, &PreviewVariables::placeholder())
        .await
        .expect("sent");
    assert!(!report.accepted());
    assert_eq!(report.status, Some(500));
    assert_eq!(report.body_excerpt, "boom");
    assert_eq!(report.error, None);
    // Give a retry (if one were scheduled) the time to arrive: none does.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn no_answer_within_the_timeout_is_reported_as_a_timeout() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.set_default(Reply::status(200).after(Duration::from_secs(5)));
    let triggers = triggers(&receiver, serde_json::json!({"timeoutSecs": 1}));

    let report = loopback()
        .test_fire(&triggers, 0, &PreviewVariables::placeholder())
        .await
        .expect("sent");
    assert_eq!(report.status, None);
    assert_eq!(
        report.error,
        Some(FailureReason::Timeout(Duration::from_secs(1)))
    );
    assert!(report.latency >= Duration::from_secs(1));
    assert!(report.latency < Duration::from_secs(5));
}

#[tokio::test]
async fn the_network_policy_refuses_before_anything_is_sent() {
    let receiver = Receiver::start().await.expect("receiver");
    let triggers = triggers(&receiver, serde_json::json!({}));
    let public_only = Deliverer::with_policy(RetryBackoff::default(), NetworkPolicy::PUBLIC_ONLY)
        .expect("client builds");

    let report = public_only
        .test_fire(&triggers, 0, &PreviewVariables::placeholder())
        .await
        .expect("reported");
    assert_eq!(report.status, None);
    assert!(
        matches!(report.error, Some(FailureReason::Refused(_))),
        "{report}"
    );
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn a_refused_connection_is_reported() {
    // A port that was just free: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        listener.local_addr().expect("addr").port()
    };
    let config = serde_json::json!({"config": [{
        "url": format!("http://127.0.0.1:{port}/hook"), "payloadTemplate": "{}",
    }]});
    let triggers = validate(&config.to_string(), ConfigFormat::Json).expect("valid");
    let report = loopback()
        .test_fire(&triggers, 0, &PreviewVariables::placeholder())
        .await
        .expect("reported");
    assert_eq!(report.status, None);
    assert!(
        matches!(report.error, Some(FailureReason::Connect(_))),
        "{report}"
    );
}

#[tokio::test]
async fn bad_input_sends_nothing() {
    let receiver = Receiver::start().await.expect("receiver");
    let triggers = triggers(&receiver, serde_json::json!({}));

    let err = PreviewVariables::from_json(r#"{"flow_runid": "x"}"#).expect_err("unknown");
    assert_eq!(
        err,
        VariablesInputError::UnknownVariable {
            name: "flow_runid".into()
        }
    );
    assert!(err.to_string().contains("flow_run_id"), "{err}");

    let err = loopback()
        .test_fire(&triggers, 1, &PreviewVariables::placeholder())
        .await
        .expect_err("no trigger 1");
    assert_eq!(err, PreviewError::NoSuchTrigger { index: 1, count: 1 });
    assert!(receiver.requests().is_empty());
}

/// Issue 13, item 3: a test webhook carries a `traceparent` too, a new trace each time.
#[tokio::test]
async fn traceparent_is_sent_by_test_fire_a_new_trace_each_time() {
    let receiver = Receiver::start().await.expect("receiver");
    let triggers = triggers(&receiver, serde_json::json!({}));
    for _ in 0..2 {
        loopback()
            .test_fire(&triggers, 0, &PreviewVariables::placeholder())
            .await
            .expect("sent");
    }
    let traces: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| {
            let value = r.header("traceparent").expect("traceparent");
            assert_eq!(value.len(), 55, "{value}");
            assert!(
                value.starts_with("00-") && value.ends_with("-01"),
                "{value}"
            );
            value[3..35].to_string()
        })
        .collect();
    assert_eq!(traces.len(), 2);
    assert_ne!(traces[0], traces[1]);
}

/// Issue 13, item 1: a test-fire reports what the response policy makes of the answer.
/// Repeating a test-fire with the same given `flow_run_id` gets Airflow's 409: the
/// receiver has it, which is "already delivered", not a failure. With a fresh
/// `flow_run_id` (none given) the webhook was never sent, so a 409 means the receiver's
/// idempotency key does not follow the transaction: the report says so.
#[tokio::test]
async fn response_policy_a_repeated_test_fire_answered_409_is_already_delivered() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script(
        "/hook",
        [
            Reply::status(200),
            Reply::status(409).with_body("already exists"),
            Reply::status(409).with_body("already exists"),
        ],
    );
    let triggers = triggers(&receiver, serde_json::json!({}));
    let given = PreviewVariables::from_json(r#"{"flow_run_id": "run-7"}"#).expect("valid");
    let deliverer = loopback();

    let first = deliverer
        .test_fire(&triggers, 0, &given)
        .await
        .expect("sent");
    assert!(first.accepted(), "{first}");
    assert_eq!(first.outcome, AttemptOutcome::Delivered);

    let repeated = deliverer
        .test_fire(&triggers, 0, &given)
        .await
        .expect("sent");
    assert!(repeated.accepted(), "{repeated}");
    assert_eq!(repeated.status, Some(409));
    assert_eq!(repeated.outcome, AttemptOutcome::AlreadyDelivered);
    assert_eq!(repeated.error, None);
    assert!(
        repeated
            .to_string()
            .contains("already delivered (HTTP 409)"),
        "{repeated}"
    );

    let fresh = deliverer
        .test_fire(&triggers, 0, &PreviewVariables::placeholder())
        .await
        .expect("sent");
    assert!(!fresh.accepted(), "{fresh}");
    assert_eq!(fresh.outcome, AttemptOutcome::Permanent);
    assert!(
        matches!(
            fresh.error,
            Some(FailureReason::AlreadyDeliveredOnFirstSend { status: 409, .. })
        ),
        "{fresh}"
    );
    assert!(fresh.to_string().contains("never sent before"), "{fresh}");
}
