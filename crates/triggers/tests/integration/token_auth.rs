//! Token authentication (`auth`) against real HTTP endpoints on 127.0.0.1: the test
//! receiver serves both the token endpoint (`/token`) and the webhook (`/hook`).

use crate::support;

use base64::Engine as _;
use std::time::Duration;
use triggers::{
    ConfigFormat, Deliverer, DeliveryError, FailureReason, NetworkPolicy, PreviewVariables,
    RetryBackoff, SendReason, TokenError, TokenErrorKind, TriggerFailure, Triggers, Variables,
    validate,
};
use triggers_receiver::{self as receiver, Receiver, Reply};

const PASSWORD: &str = "pa55-hunter2";
const CLIENT_SECRET: &str = "cl1ent-s3cret";
/// Long-lived, so only the tests about renewal see one.
const DAY: u64 = 86_400;

use support::fast_deliverer;

/// A webhook to `/hook` with `auth` and any `extra` fields.
fn triggers(receiver: &Receiver, auth: serde_json::Value, extra: serde_json::Value) -> Triggers {
    let mut entry = serde_json::json!({
        "url": receiver.url("/hook"),
        "payloadTemplate": r#"{"run": "{{flow_run_id}}"}"#,
        "auth": auth,
    });
    for (k, v) in extra.as_object().expect("object") {
        entry[k] = v.clone();
    }
    let text = serde_json::json!({ "config": [entry] }).to_string();
    validate(&text, ConfigFormat::Json).expect("valid config")
}

/// Airflow 3's kind of login endpoint, at the receiver's `/token`.
fn login(receiver: &Receiver) -> serde_json::Value {
    serde_json::json!({"type": "tokenEndpoint", "url": receiver.url("/token"),
        "username": "admin", "password": PASSWORD})
}

fn oauth(receiver: &Receiver, client_authentication: &str) -> serde_json::Value {
    serde_json::json!({"type": "oauth2ClientCredentials", "tokenUrl": receiver.url("/token"),
        "clientId": "flow:client", "clientSecret": CLIENT_SECRET, "scope": "dags:write dags:read",
        "audience": "https://airflow.example.com", "clientAuthentication": client_authentication})
}

/// What Airflow 3 answers: 201 and a JWT.
fn airflow_token(name: &str, lifetime_secs: u64) -> Reply {
    let token = receiver::jwt(
        &serde_json::json!({"sub": name, "iat": 1_700_000_000, "exp": 1_700_000_000 + lifetime_secs}),
    );
    Reply::json(201, &serde_json::json!({ "access_token": token }))
}

fn bearer_of(reply: &Reply) -> String {
    let body: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON");
    format!("Bearer {}", body["access_token"].as_str().expect("a token"))
}

fn variables(run: &str) -> Variables {
    Variables {
        flow_run_id: run.to_string(),
        ..Variables::placeholder()
    }
}

fn requests_to(receiver: &Receiver, path: &str) -> Vec<receiver::Request> {
    receiver
        .requests()
        .into_iter()
        .filter(|r| r.path == path)
        .collect()
}

fn single_failure(err: &DeliveryError) -> &TriggerFailure {
    assert_eq!(err.failures.len(), 1, "{err}");
    &err.failures[0]
}

/// The item of issue 13: the token is fetched on first use, reused while it lives, and
/// sent as a bearer token; three webhooks cost one token request.
#[tokio::test]
async fn token_authentication_per_trigger_fetches_on_first_use_and_reuses_the_token() {
    let receiver = Receiver::start().await.expect("receiver");
    let token = airflow_token("admin", DAY);
    receiver.script("/token", [token.clone()]);
    let triggers = triggers(&receiver, login(&receiver), serde_json::json!({}));
    let deliverer = fast_deliverer();
    assert!(
        receiver.requests().is_empty(),
        "no token before the first webhook"
    );
    for run in ["run-1", "run-2", "run-3"] {
        deliverer
            .deliver(&triggers, &variables(run))
            .await
            .expect("delivered");
    }

    let tokens = requests_to(&receiver, "/token");
    assert_eq!(tokens.len(), 1, "one token request for three webhooks");
    let login = &tokens[0];
    assert_eq!(login.method, "POST");
    assert_eq!(login.header("content-type"), Some("application/json"));
    assert_eq!(login.header("accept"), Some("application/json"));
    assert_eq!(login.header("authorization"), None);
    assert_eq!(
        login.json().expect("JSON"),
        serde_json::json!({"username": "admin", "password": PASSWORD})
    );
    let hooks = requests_to(&receiver, "/hook");
    assert_eq!(hooks.len(), 3);
    for hook in &hooks {
        assert_eq!(
            hook.header("authorization"),
            Some(bearer_of(&token).as_str())
        );
    }
    // The token request is a span of its own in the first webhook's trace.
    let trace_of = |r: &triggers_receiver::Request| {
        let value = r.header("traceparent").expect("traceparent").to_string();
        (value[3..35].to_string(), value[36..52].to_string())
    };
    let (login_trace, login_span) = trace_of(login);
    let (hook_trace, hook_span) = trace_of(&hooks[0]);
    assert_eq!(login_trace, hook_trace);
    assert_ne!(login_span, hook_span);
}

#[tokio::test]
async fn oauth_client_credentials_send_basic_authentication_by_default() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script(
        "/token",
        [Reply::json(
            200,
            &serde_json::json!({"access_token": "opaque-1", "token_type": "Bearer", "expires_in": DAY}),
        )],
    );
    let triggers = triggers(&receiver, oauth(&receiver, "basic"), serde_json::json!({}));
    fast_deliverer()
        .deliver(&triggers, &variables("run-1"))
        .await
        .expect("delivered");

    let token = &requests_to(&receiver, "/token")[0];
    assert_eq!(
        token.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(token.header("accept"), Some("application/json"));
    // RFC 6749 2.3.1: the id and secret form-encoded (`:` is %3A), then Basic.
    let expected =
        base64::engine::general_purpose::STANDARD.encode(format!("flow%3Aclient:{CLIENT_SECRET}"));
    assert_eq!(
        token.header("authorization"),
        Some(format!("Basic {expected}").as_str())
    );
    assert_eq!(
        token.form(),
        [
            ("grant_type".to_string(), "client_credentials".to_string()),
            ("scope".to_string(), "dags:write dags:read".to_string()),
            (
                "audience".to_string(),
                "https://airflow.example.com".to_string()
            ),
        ]
    );
    assert_eq!(
        requests_to(&receiver, "/hook")[0].header("authorization"),
        Some("Bearer opaque-1")
    );
}

#[tokio::test]
async fn oauth_client_credentials_can_send_the_credentials_in_the_body() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script(
        "/token",
        [Reply::json(
            200,
            &serde_json::json!({"access_token": "opaque-2", "token_type": "bearer"}),
        )],
    );
    let triggers = triggers(&receiver, oauth(&receiver, "body"), serde_json::json!({}));
    fast_deliverer()
        .deliver(&triggers, &variables("run-1"))
        .await
        .expect("delivered");

    let token = &requests_to(&receiver, "/token")[0];
    assert_eq!(token.header("authorization"), None);
    assert_eq!(
        token.form(),
        [
            ("grant_type".to_string(), "client_credentials".to_string()),
            ("scope".to_string(), "dags:write dags:read".to_string()),
            (
                "audience".to_string(),
                "https://airflow.example.com".to_string()
            ),
            ("client_id".to_string(), "flow:client".to_string()),
            ("client_secret".to_string(), CLIENT_SECRET.to_string()),
        ]
    );
    assert_eq!(
        requests_to(&receiver, "/hook")[0].header("authorization"),
        Some("Bearer opaque-2")
    );
}

/// `expires_in: 1`: renewed once less than a fifth of it (200 ms) remains, so a webhook
/// sent a second later carries a new token. (Sleeping longer only makes it surer.)
#[tokio::test]
async fn a_short_expires_in_is_renewed_before_it_expires() {
    let receiver = Receiver::start().await.expect("receiver");
    let reply = |token: &str| {
        Reply::json(
            200,
            &serde_json::json!({"access_token": token, "expires_in": 1}),
        )
    };
    receiver.script("/token", [reply("short-1"), reply("short-2")]);
    let triggers = triggers(&receiver, oauth(&receiver, "basic"), serde_json::json!({}));
    let deliverer = fast_deliverer();
    deliverer
        .deliver(&triggers, &variables("run-1"))
        .await
        .expect("delivered");
    tokio::time::sleep(Duration::from_millis(850)).await;
    deliverer
        .deliver(&triggers, &variables("run-2"))
        .await
        .expect("delivered");

    assert_eq!(requests_to(&receiver, "/token").len(), 2);
    let hooks: Vec<Option<String>> = requests_to(&receiver, "/hook")
        .iter()
        .map(|r| r.header("authorization").map(str::to_string))
        .collect();
    assert_eq!(
        hooks,
        [
            Some("Bearer short-1".to_string()),
            Some("Bearer short-2".to_string())
        ]
    );
}

/// An Airflow-like JWT living 2 s by `exp - iat` (issued, by its claims, in 2023: the
/// lifetime, not our clock, decides) is renewed after 1.6 s.
#[tokio::test]
async fn a_jwt_is_renewed_before_its_exp_less_iat_lifetime_runs_out() {
    let receiver = Receiver::start().await.expect("receiver");
    let (first, second) = (airflow_token("first", 2), airflow_token("second", 2));
    receiver.script("/token", [first.clone(), second.clone()]);
    let triggers = triggers(&receiver, login(&receiver), serde_json::json!({}));
    let deliverer = fast_deliverer();
    deliverer
        .deliver(&triggers, &variables("run-1"))
        .await
        .expect("delivered");
    tokio::time::sleep(Duration::from_millis(1650)).await;
    deliverer
        .deliver(&triggers, &variables("run-2"))
        .await
        .expect("delivered");

    let hooks: Vec<String> = requests_to(&receiver, "/hook")
        .iter()
        .map(|r| r.header("authorization").unwrap_or_default().to_string())
        .collect();
    assert_eq!(hooks, [bearer_of(&first), bearer_of(&second)]);
}

#[tokio::test]
async fn a_401_renews_the_token_once_and_repeats_the_attempt() {
    let receiver = Receiver::start().await.expect("receiver");
    let (first, second) = (airflow_token("first", DAY), airflow_token("second", DAY));
    receiver.script("/token", [first.clone(), second.clone()]);
    receiver.script(
        "/hook",
        [Reply::status(401).with_body(r#"{"detail": "Token Expired"}"#)],
    );
    let triggers = triggers(&receiver, login(&receiver), serde_json::json!({}));
    let delivered = fast_deliverer()
        .deliver(&triggers, &variables("run-1"))
        .await
        .expect("delivered after the renewal");
    assert_eq!(delivered[0].attempts, 1, "the repeat is the same attempt");

    let hooks = requests_to(&receiver, "/hook");
    assert_eq!(hooks.len(), 2);
    assert_eq!(
        hooks[0].header("authorization"),
        Some(bearer_of(&first).as_str())
    );
    assert_eq!(
        hooks[1].header("authorization"),
        Some(bearer_of(&second).as_str())
    );
    for hook in &hooks {
        assert_eq!(hook.header("webhook-attempt"), Some("1"));
        assert_eq!(hook.header("webhook-id"), hooks[0].header("webhook-id"));
    }
    assert_eq!(requests_to(&receiver, "/token").len(), 2);
}

#[tokio::test]
async fn a_second_401_is_a_permanent_failure() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script(
        "/token",
        [airflow_token("first", DAY), airflow_token("second", DAY)],
    );
    receiver.script("/hook", [Reply::status(401), Reply::status(401)]);
    let triggers = triggers(
        &receiver,
        login(&receiver),
        serde_json::json!({"maxRetries": 5}),
    );
    let err = fast_deliverer()
        .deliver(&triggers, &variables("run-1"))
        .await
        .expect_err("401 twice");
    let failure = single_failure(&err);
    assert!(failure.permanent, "{err}");
    assert_eq!(failure.attempts, 1);
    assert!(
        matches!(failure.reason, FailureReason::Status { status: 401, .. }),
        "{err}"
    );
    assert_eq!(requests_to(&receiver, "/hook").len(), 2);
    assert_eq!(requests_to(&receiver, "/token").len(), 2);
}

#[tokio::test]
async fn a_token_endpoint_answering_500_is_retried_under_the_triggers_retries() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script(
        "/token",
        [
            Reply::status(500),
            Reply::status(503),
            airflow_token("admin", DAY),
        ],
    );
    let triggers = triggers(
        &receiver,
        login(&receiver),
        serde_json::json!({"maxRetries": 3}),
    );
    let delivered = fast_deliverer()
        .deliver(&triggers, &variables("run-1"))
        .await
        .expect("delivered once a token came");
    assert_eq!(delivered[0].attempts, 3);
    assert_eq!(requests_to(&receiver, "/token").len(), 3);
    assert_eq!(requests_to(&receiver, "/hook").len(), 1);

    // With no retry left, the last failure is the token endpoint's status.
    receiver.script("/token", [Reply::status(502)]);
    let triggers = triggers_with_fresh_cache(&receiver);
    let err = fast_deliverer()
        .deliver(&triggers, &variables("run-2"))
        .await
        .expect_err("no token");
    let failure = single_failure(&err);
    assert!(!failure.permanent);
    assert!(
        matches!(
            &failure.reason,
            FailureReason::Token(TokenError {
                kind: TokenErrorKind::Status { status: 502, .. },
                ..
            })
        ),
        "{err}"
    );
}

fn triggers_with_fresh_cache(receiver: &Receiver) -> Triggers {
    triggers(
        receiver,
        login(receiver),
        serde_json::json!({"maxRetries": 0}),
    )
}

/// Every way a token endpoint can fail to give a token is an error naming the trigger,
/// the endpoint's origin and its status; none shows a credential, in errors or logs.
#[tokio::test]
async fn token_endpoint_failures_are_clear_errors_that_never_show_a_credential() {
    let (logs, _guard) = support::CapturedLogs::install();
    let receiver = Receiver::start().await.expect("receiver");
    let origin = format!("http://{}", receiver.addr());
    let cases = [
        (
            Reply::json(
                400,
                &serde_json::json!({"error": "invalid_client", "error_description": format!("bad secret {CLIENT_SECRET}")}),
            ),
            true,
            "answered HTTP 400 (error \"invalid_client\")",
        ),
        (
            Reply::status(401).with_body(format!("no {PASSWORD}")),
            true,
            "answered HTTP 401",
        ),
        (
            Reply::status(200).with_body(format!("<html>{PASSWORD}</html>")),
            true,
            "answered HTTP 200 with a body that is not JSON",
        ),
        (
            Reply::json(201, &serde_json::json!({"token": PASSWORD})),
            true,
            "answered HTTP 201 without a token at \"/access_token\"",
        ),
        (
            Reply::json(201, &serde_json::json!({"access_token": 839201938475_u64})),
            true,
            "answered HTTP 201 with a number at \"/access_token\", not a token string",
        ),
        (
            Reply::status(200)
                .with_body(format!("{{\"access_token\": \"{}\"}}", "x".repeat(1 << 20))),
            true,
            "answered HTTP 200 with a body of more than 65536 bytes",
        ),
        (
            Reply::status(200).after(Duration::from_secs(3)),
            false,
            "no answer within 1s",
        ),
        (Reply::hang_up(), false, "connection failed"),
        (Reply::reset(), false, "connection failed"),
    ];
    for (auth, kind) in [
        (oauth(&receiver, "basic"), "oauth"),
        (login(&receiver), "login"),
    ] {
        for (reply, permanent, expect) in &cases {
            receiver.script("/token", [reply.clone()]);
            let triggers = triggers(
                &receiver,
                auth.clone(),
                serde_json::json!({"maxRetries": 0, "timeoutSecs": 1}),
            );
            let err = fast_deliverer()
                .deliver(&triggers, &variables("run-1"))
                .await
                .expect_err("no token");
            let failure = single_failure(&err);
            let text = err.to_string();
            assert_eq!(failure.permanent, *permanent, "{kind}: {text}");
            assert!(
                matches!(failure.reason, FailureReason::Token(_)),
                "{kind}: {text}"
            );
            let prefix = format!("trigger 0 ({origin}): no token: token endpoint {origin}: ");
            assert!(
                text.contains(&format!("{prefix}{expect}")),
                "{kind}: {text}"
            );
            for secret in [PASSWORD, CLIENT_SECRET, "839201938475", "xxxxxxxx"] {
                assert!(!text.contains(secret), "{kind}: {secret} in {text}");
                assert!(!format!("{err:?}").contains(secret), "{kind}: {secret}");
            }
        }
    }
    assert!(
        requests_to(&receiver, "/hook").is_empty(),
        "no webhook without a token"
    );
    let logs = logs.text();
    assert!(logs.contains("webhook failed for good"), "{logs}");
    for secret in [PASSWORD, CLIENT_SECRET, "839201938475"] {
        assert!(!logs.contains(secret), "{secret} in the logs: {logs}");
    }
}

/// A token (or an Authorization header) never appears in logs either, on success, on a
/// 401 renewal, and on failure.
#[tokio::test]
async fn tokens_never_appear_in_logs() {
    let (logs, _guard) = support::CapturedLogs::install();
    let receiver = Receiver::start().await.expect("receiver");
    let (first, second) = (airflow_token("first", DAY), airflow_token("second", DAY));
    receiver.script("/token", [first.clone(), second.clone()]);
    receiver.script(
        "/hook",
        [Reply::status(401), Reply::status(500), Reply::status(403)],
    );
    let triggers = triggers(
        &receiver,
        login(&receiver),
        serde_json::json!({"maxRetries": 2}),
    );
    let err = fast_deliverer()
        .deliver(&triggers, &variables("run-1"))
        .await
        .expect_err("403 in the end");
    let logs = logs.text();
    assert!(
        logs.contains("renewing it and repeating the attempt"),
        "{logs}"
    );
    for text in [
        logs,
        err.to_string(),
        format!("{err:?}"),
        format!("{triggers:?}"),
    ] {
        for secret in [bearer_of(&first), bearer_of(&second), PASSWORD.to_string()] {
            let token = secret.trim_start_matches("Bearer ");
            assert!(!text.contains(token), "token in {text}");
        }
    }
}

/// Concurrent attempts of one trigger wait for one token request.
#[tokio::test]
async fn concurrent_attempts_share_one_token_request() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script(
        "/token",
        [airflow_token("admin", DAY).after(Duration::from_millis(200))],
    );
    let triggers = triggers(&receiver, login(&receiver), serde_json::json!({}));
    let deliverer = fast_deliverer();
    let runs: Vec<Variables> = (0..4).map(|i| variables(&format!("run-{i}"))).collect();
    let outcomes = futures::future::join_all(
        runs.iter()
            .map(|v| deliverer.deliver_trigger(&triggers, 0, v, SendReason::FirstSend)),
    )
    .await;
    assert!(
        outcomes.iter().all(|o| matches!(o, Some(Ok(_)))),
        "{outcomes:?}"
    );
    assert_eq!(requests_to(&receiver, "/token").len(), 1);
    assert_eq!(requests_to(&receiver, "/hook").len(), 4);
}

/// The token endpoint is under the deliverer's network policy, as a webhook is: an IP
/// literal it refuses, and a name resolving only to refused addresses.
#[tokio::test]
async fn the_network_policy_refuses_a_token_url_it_would_refuse_for_a_webhook() {
    let receiver = Receiver::start().await.expect("receiver");
    let port = receiver.addr().port();
    let cases = [
        (
            NetworkPolicy::ALLOW_LOOPBACK,
            "http://169.254.169.254/latest/token".to_string(),
            "link-local",
        ),
        (
            NetworkPolicy::ALLOW_LOOPBACK,
            "http://10.0.0.1/token".to_string(),
            "private",
        ),
        (
            NetworkPolicy::PUBLIC_ONLY,
            format!("http://localhost:{port}/token"),
            "loopback",
        ),
    ];
    for (policy, url, class) in cases {
        let auth = serde_json::json!({"type": "tokenEndpoint", "url": url,
            "username": "admin", "password": PASSWORD});
        // A hostname, so the webhook's own check (IP literals) passes and the token's
        // is the one that refuses.
        let hook = format!("http://localhost:{port}/hook");
        let triggers = triggers(
            &receiver,
            auth,
            serde_json::json!({"maxRetries": 3, "url": hook}),
        );
        let deliverer = Deliverer::with_policy(RetryBackoff::default(), policy).expect("client");
        let err = deliverer
            .deliver(&triggers, &variables("run-1"))
            .await
            .expect_err("refused");
        let failure = single_failure(&err);
        assert!(failure.permanent, "{err}");
        let FailureReason::Token(TokenError {
            kind: TokenErrorKind::Refused(refusal),
            ..
        }) = &failure.reason
        else {
            panic!("{url}: {err}");
        };
        assert_eq!(refusal.class.to_string(), class, "{url}");
    }
    assert!(receiver.requests().is_empty(), "nothing was sent");

    // A webhook the policy refuses asks for no token.
    let config = serde_json::json!({"config": [{"url": "http://10.0.0.1/hook", "payloadTemplate": "{}",
        "auth": login(&receiver)}]});
    let triggers = validate(&config.to_string(), ConfigFormat::Json).expect("valid");
    let err = fast_deliverer()
        .deliver(&triggers, &variables("run-1"))
        .await
        .expect_err("refused");
    assert!(
        matches!(single_failure(&err).reason, FailureReason::Refused(_)),
        "{err}"
    );
    assert!(receiver.requests().is_empty(), "no token was asked for");
}

/// A 307 to another origin carries no token, as it carries no configured header.
#[tokio::test]
async fn a_redirect_to_another_origin_does_not_carry_the_token() {
    let receiver = Receiver::start().await.expect("receiver");
    receiver.script("/token", [airflow_token("admin", DAY)]);
    let elsewhere = format!("http://localhost:{}/elsewhere", receiver.addr().port());
    receiver.script(
        "/hook",
        [Reply::status(307).with_header("location", &elsewhere)],
    );
    let triggers = triggers(
        &receiver,
        login(&receiver),
        serde_json::json!({"followRedirects": true}),
    );
    fast_deliverer()
        .deliver(&triggers, &variables("run-1"))
        .await
        .expect("delivered");
    assert!(
        requests_to(&receiver, "/hook")[0]
            .header("authorization")
            .is_some()
    );
    let moved = &requests_to(&receiver, "/elsewhere")[0];
    assert_eq!(moved.header("authorization"), None);
}

#[tokio::test]
async fn test_fire_uses_the_token_and_reports_a_token_failure() {
    let receiver = Receiver::start().await.expect("receiver");
    let token = airflow_token("admin", DAY);
    receiver.script("/token", [token.clone()]);
    let triggers = triggers(&receiver, login(&receiver), serde_json::json!({}));
    let deliverer = fast_deliverer();
    let report = deliverer
        .test_fire(&triggers, 0, &PreviewVariables::placeholder())
        .await
        .expect("sent");
    assert!(report.accepted(), "{report}");
    let hook = &requests_to(&receiver, "/hook")[0];
    assert_eq!(hook.header("webhook-reason"), Some("test-fire"));
    assert_eq!(
        hook.header("authorization"),
        Some(bearer_of(&token).as_str())
    );

    receiver.script(
        "/token",
        [Reply::json(
            400,
            &serde_json::json!({"error": "invalid_grant"}),
        )],
    );
    let refused = triggers_with_fresh_cache(&receiver);
    let report = deliverer
        .test_fire(&refused, 0, &PreviewVariables::placeholder())
        .await
        .expect("a report");
    assert_eq!(report.status, None);
    assert!(
        matches!(report.error, Some(FailureReason::Token(_))),
        "{report}"
    );
    let text = report.to_string();
    assert!(
        text.contains("HTTP 400 (error \"invalid_grant\")"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
    assert_eq!(requests_to(&receiver, "/hook").len(), 1);
}
