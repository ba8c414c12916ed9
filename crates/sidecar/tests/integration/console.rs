//! The operator's web console of a real `shard-sidecar` process on loopback TCP, with a
//! real receiver that fails one trigger for good: its auth, CSRF and secret rules over
//! plain HTTP, then the whole repair in headless Chromium (through chromedriver), with a
//! screenshot of each step.

use crate::support::webdriver::{Browser, Driver, Element};
use crate::support::{self, SidecarProcess, TOKEN};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use triggers_proto::DeliveryState;
use triggers_proto::sidecar::{
    AcknowledgedRequest, AwaitDrainedRequest, DeliveryRef, OpenRequest, StartCommitRequest,
    StatusRequest,
};
use triggers_receiver::{Receiver, Reply};
use triggers_runtime::test_support::fixtures::checkpoint;

/// What the config holds that no page may ever show.
const SECRETS: [&str; 6] = [
    "header-secret-value-1234",
    "broken-header-secret-3456",
    "url-password-5678",
    "query-secret-9012",
    "whsec_c2VjcmV0LXNpZ25pbmcta2V5LTQy",
    TOKEN,
];
/// The failing trigger's path and query, as the receiver sees it.
const BROKEN: &str = "/broken?key=query-secret-9012";

/// A sidecar (decoupled delivery) with its console on
/// 127.0.0.1, two triggers (`good`, and `broken`, whose receiver answers 404 once: a
/// permanent failure), the shard opened and one transaction committed, so `broken`'s
/// delivery #1 is FAILED and its backlog stopped.
struct Console {
    _sidecar: SidecarProcess,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    url: String,
    client: triggers_sidecar::Client,
    _receiver: Receiver,
    dir: tempfile::TempDir,
}

async fn console_with_a_failed_delivery() -> Console {
    let receiver = Receiver::start().await.expect("receiver");
    // The receiver echoes the header it got: the ledger keeps the excerpt redacted.
    receiver.script(
        BROKEN,
        [Reply::status(404).with_body("no such hook (X-Key: broken-header-secret-3456)")],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let template = r#"{"run": "{{flow_run_id}}"}"#;
    let broken = format!(
        "http://hookuser:url-password-5678@{}{BROKEN}",
        receiver.addr()
    );
    let config = serde_json::json!({"config": [
        {"name": "good", "url": receiver.url("/good"), "payloadTemplate": template,
         "headers": {"X-Api-Key": "header-secret-value-1234"}},
        {"name": "broken", "url": broken, "payloadTemplate": template, "maxRetries": 0,
         "headers": {"X-Key": "broken-header-secret-3456"},
         "signingSecrets": ["whsec_c2VjcmV0LXNpZ25pbmcta2V5LTQy"]},
    ]});
    let path = dir.path().join("triggers.json");
    std::fs::write(&path, config.to_string()).expect("writes the config");
    let token_file = support::token_file(dir.path());
    let token_file = token_file.to_str().expect("utf-8");
    let sidecar = support::start_sidecar(
        dir.path(),
        &path,
        &[
            "--delivery",
            "decoupled",
            "--backlog-limit",
            "3",
            "--retry-initial-ms",
            "5",
            "--listen",
            "127.0.0.1:0",
            "--console-address",
            "127.0.0.1:0",
            "--token-file",
            token_file,
        ],
        &[],
    )
    .await;
    let url = sidecar
        .printed
        .iter()
        .find_map(|line| line.strip_prefix("console on "))
        .expect("prints the console's address")
        .trim_end_matches('/')
        .to_string();
    let mut client = triggers_sidecar::connect(&sidecar.address, Some(&support::token()))
        .await
        .expect("connects");
    client.open(OpenRequest::default()).await.expect("opens");
    client
        .acknowledged(AcknowledgedRequest::default())
        .await
        .expect("recovered ack");
    commit(&mut client, 1).await;
    let drained = client
        .await_drained(AwaitDrainedRequest::default())
        .await
        .expect("awaits")
        .into_inner();
    assert!(!drained.ok, "broken's delivery fails for good: {drained:?}");
    Console {
        _sidecar: sidecar,
        url,
        client,
        _receiver: receiver,
        dir,
    }
}

/// One transaction's stats, for the process's one binding (acmeCo/orders).
fn stats() -> Vec<triggers_proto::BindingStats> {
    crate::sidecar::stats()
        .into_iter()
        .map(|stats| triggers_proto::BindingStats {
            binding: 0,
            ..stats
        })
        .collect()
}

async fn commit(client: &mut triggers_sidecar::Client, n: i64) {
    client
        .start_commit(StartCommitRequest {
            checkpoint: Some(checkpoint(n)),
            stats: stats(),
            ..Default::default()
        })
        .await
        .expect("commits");
    client
        .acknowledged(AcknowledgedRequest::default())
        .await
        .expect("acknowledged");
}

async fn state_of(client: &mut triggers_sidecar::Client, seq: u64) -> DeliveryState {
    client
        .get_delivery(DeliveryRef {
            trigger_name: "broken".to_string(),
            first_commit_seq: seq,
            ..Default::default()
        })
        .await
        .expect("gets")
        .into_inner()
        .state()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The value of `name="NAME" value="..."` in a page.
fn hidden(page: &str, name: &str) -> String {
    let at = page
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} field in {page}"));
    let rest = &page[at + name.len() + 15..];
    rest[..rest.find('"').expect("closed")].to_string()
}

fn assert_no_secret(page: &str, what: &str) {
    for secret in SECRETS {
        assert!(!page.contains(secret), "{what} shows {secret:?}: {page}");
    }
    assert!(
        !page.contains("hookuser"),
        "{what} shows the URL's user: {page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_refuses_forged_posts_bad_input_and_strangers_and_shows_no_secret() {
    let mut console = console_with_a_failed_delivery().await;
    let url = console.url.clone();
    let http = http();
    let failed = format!("{url}/delivery?shard=&trigger=broken&seq=1");

    // No token: the login page, with 401; a wrong bearer token: 401.
    let reply = http.get(format!("{url}/")).send().await.expect("gets");
    assert_eq!(reply.status(), 401);
    let headers = reply.headers().clone();
    let page = reply.text().await.expect("body");
    assert!(page.contains(r#"action="/login""#), "{page}");
    for (name, value) in [
        (
            "content-security-policy",
            "default-src 'none'; style-src 'self'",
        ),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        let got = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(got.starts_with(value), "{name}: {got:?}");
    }
    let reply = http
        .get(&failed)
        .bearer_auth("not-the-token-0123456789")
        .send()
        .await
        .expect("gets");
    assert_eq!(reply.status(), 401);

    // The token as a bearer (curl's way) reads every page; none shows a secret.
    for page in [
        format!("{url}/"),
        format!("{url}/shard?shard="),
        format!("{url}/deliveries?shard="),
        format!("{url}/deliveries?shard=&state=failed&trigger=broken"),
        failed.clone(),
    ] {
        let reply = http
            .get(&page)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("gets");
        assert_eq!(reply.status(), 200, "{page}");
        let body = reply.text().await.expect("body");
        assert_no_secret(&body, &page);
    }
    let ledger = http
        .get(format!("{url}/deliveries?shard=&state=failed"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("gets")
        .text()
        .await
        .expect("body");
    assert!(
        ledger.contains("FAILED") && ledger.contains("broken"),
        "{ledger}"
    );
    assert!(ledger.contains(r#"class="delivery failed""#), "{ledger}");
    assert!(
        !ledger.contains(r#"class="delivery success""#),
        "filtered by state: {ledger}"
    );

    // Bad input is a 400 page, never a crash.
    let long = "x".repeat(3000);
    for bad in [
        format!("{url}/delivery?shard=&trigger=broken&seq=one"),
        format!("{url}/delivery?shard=&trigger=broken"),
        format!("{url}/delivery?shard=&trigger=&seq=1"),
        format!("{url}/delivery?shard=&trigger={}&seq=1", "t".repeat(65)),
        format!("{url}/deliveries?shard=&state=lost"),
        format!("{url}/deliveries?shard=&size=0"),
        format!("{url}/deliveries?shard=&size=201"),
        format!("{url}/deliveries?shard=&page={}", "9".repeat(300)),
        format!("{url}/deliveries?shard=&shard="),
        format!("{url}/deliveries?shard=&color=red"),
        format!("{url}/shard?shard={}", "s".repeat(256)),
        format!("{url}/shard?shard=%FF"),
        format!("{url}/?{long}"),
    ] {
        let reply = http
            .get(&bad)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("gets");
        assert_eq!(reply.status(), 400, "{}", &bad[..bad.len().min(120)]);
        let body = reply.text().await.expect("body");
        assert!(body.contains(r#"class="error""#), "an HTML page: {body}");
    }
    // A Host other than loopback's (DNS rebinding) is refused.
    let reply = http
        .get(format!("{url}/"))
        .header("host", "evil.example")
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("gets");
    assert_eq!(reply.status(), 400);

    // A browser logs in: the cookie is a session id, never the token.
    let reply = http
        .post(format!("{url}/login"))
        .header("origin", &url)
        .form(&[("token", "wrong-token-0123456789")])
        .send()
        .await
        .expect("posts");
    assert_eq!(reply.status(), 401);
    assert!(reply.headers().get("set-cookie").is_none());
    let reply = http
        .post(format!("{url}/login"))
        .header("origin", "http://evil.example")
        .form(&[("token", TOKEN)])
        .send()
        .await
        .expect("posts");
    assert_eq!(reply.status(), 403, "a login from another site");
    let reply = http
        .post(format!("{url}/login"))
        .header("origin", &url)
        .form(&[("token", TOKEN)])
        .send()
        .await
        .expect("posts");
    assert_eq!(reply.status(), 303);
    let cookie = reply
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_string();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains(TOKEN), "{cookie}");
    let session = cookie.split(';').next().expect("name=value").to_string();
    let page = http
        .get(&failed)
        .header("cookie", &session)
        .send()
        .await
        .expect("gets")
        .text()
        .await
        .expect("body");
    assert_no_secret(&page, "the delivery page");
    // The receiver's excerpt is shown, the header value it echoed redacted (escaped).
    assert!(
        page.contains("no such hook (X-Key: &lt;redacted&gt;)"),
        "{page}"
    );
    let csrf = hidden(&page, "csrf");
    assert_eq!(csrf.len(), 64);

    // Forged POSTs change nothing: no CSRF token, another session's, a foreign Origin,
    // no Origin at all, a GET that tries to act.
    let skip = |origin: Option<&str>, csrf: Option<&str>, reason: &str| {
        let mut form = vec![
            ("shard", String::new()),
            ("trigger", "broken".to_string()),
            ("seq", "1".to_string()),
            ("reason", reason.to_string()),
        ];
        if let Some(csrf) = csrf {
            form.push(("csrf", csrf.to_string()));
        }
        let mut request = http
            .post(format!("{url}/skip"))
            .header("cookie", &session)
            .form(&form);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let wrong = "0".repeat(64);
    for (what, origin, token) in [
        ("no CSRF token", Some(url.as_str()), None),
        (
            "a wrong CSRF token",
            Some(url.as_str()),
            Some(wrong.as_str()),
        ),
        (
            "a foreign Origin",
            Some("http://evil.example"),
            Some(csrf.as_str()),
        ),
        (
            "Origin null, no Sec-Fetch-Site",
            Some("null"),
            Some(csrf.as_str()),
        ),
        ("no Origin", None, Some(csrf.as_str())),
    ] {
        let reply = skip(origin, token, "forged").await.expect("posts");
        assert_eq!(reply.status(), 403, "{what}");
        assert_eq!(
            state_of(&mut console.client, 1).await,
            DeliveryState::Failed,
            "{what} changed the delivery"
        );
    }
    let reply = http
        .get(format!(
            "{url}/skip?shard=&trigger=broken&seq=1&reason=x&csrf={csrf}"
        ))
        .header("cookie", &session)
        .send()
        .await
        .expect("gets");
    assert_eq!(reply.status(), 404, "GET never acts");
    // A reason is required, and bounded.
    for reason in ["   ", &"r".repeat(1001)] {
        let reply = skip(Some(&url), Some(&csrf), reason).await.expect("posts");
        assert_eq!(reply.status(), 400);
    }
    // An illegal transition shows the sidecar's own error.
    let reply = http
        .post(format!("{url}/retry"))
        .header("cookie", &session)
        .header("origin", &url)
        .form(&[
            ("shard", ""),
            ("trigger", "good"),
            ("seq", "1"),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .expect("posts");
    assert_eq!(reply.status(), 409);
    let body = reply.text().await.expect("body");
    assert!(body.contains("FailedPrecondition"), "{body}");
    assert_eq!(
        state_of(&mut console.client, 1).await,
        DeliveryState::Failed
    );

    // The real thing: redirected back to the delivery, which is CANCELLED.
    let reply = skip(Some(&url), Some(&csrf), "hook <deleted> upstream")
        .await
        .expect("posts");
    assert_eq!(reply.status(), 303);
    let back = reply
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("location")
        .to_string();
    assert_eq!(back, "/delivery?shard=&trigger=broken&seq=1");
    assert_eq!(
        state_of(&mut console.client, 1).await,
        DeliveryState::Cancelled
    );
    let page = http
        .get(format!("{url}{back}"))
        .header("cookie", &session)
        .send()
        .await
        .expect("gets")
        .text()
        .await
        .expect("body");
    assert!(
        page.contains("hook &lt;deleted&gt; upstream"),
        "escaped: {page}"
    );

    // Logged out, the session is gone.
    let reply = http
        .post(format!("{url}/logout"))
        .header("cookie", &session)
        .header("origin", &url)
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .expect("posts");
    assert_eq!(reply.status(), 303);
    let reply = http
        .get(format!("{url}/"))
        .header("cookie", &session)
        .send()
        .await
        .expect("gets");
    assert_eq!(reply.status(), 401);
    drop(console.dir);
}

/// The deliveries a ledger page lists, as (trigger, first commit seq), and its `Older`
/// link.
fn ledger_rows(page: &str) -> (Vec<(String, u64)>, Option<String>) {
    let rows = page
        .split("<a href=\"/delivery?shard=&amp;trigger=")
        .skip(1)
        .filter_map(|row| {
            let (trigger, rest) = row.split_once("&amp;seq=")?;
            let seq = rest[..rest.find('"')?].parse().ok()?;
            Some((trigger.to_string(), seq))
        })
        .collect();
    let older = page.find("\" id=\"next\"").map(|end| {
        let start = page[..end].rfind("href=\"").expect("a link") + 6;
        page[start..end].replace("&amp;", "&")
    });
    (rows, older)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_pages_newest_first_and_filters_by_trigger() {
    let mut console = console_with_a_failed_delivery().await;
    let url = console.url.clone();
    let http = http();
    // A script skips with the bearer token (curl's way): no session, no CSRF token.
    let reply = http
        .post(format!("{url}/skip"))
        .bearer_auth(TOKEN)
        .form(&[
            ("shard", ""),
            ("trigger", "broken"),
            ("seq", "1"),
            ("reason", "test"),
        ])
        .send()
        .await
        .expect("posts");
    assert_eq!(reply.status(), 303);
    assert_eq!(
        state_of(&mut console.client, 1).await,
        DeliveryState::Cancelled
    );
    for n in 2..=8 {
        commit(&mut console.client, n).await;
    }
    let drained = console
        .client
        .await_drained(AwaitDrainedRequest::default())
        .await
        .expect("awaits")
        .into_inner();
    assert!(drained.ok, "{drained:?}");
    // Every page from the first, following `Older`, at most 20 pages.
    let walk = async |first: String| {
        let mut rows = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(at) = next.take() {
            pages += 1;
            assert!(pages <= 20, "the pages end");
            let page = http
                .get(format!("{url}{at}"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("gets")
                .text()
                .await
                .expect("body");
            let (found, older) = ledger_rows(&page);
            rows.push(found);
            next = older;
        }
        rows
    };
    // What the ledger holds, newest first, in one RPC page (a delivery may cover several
    // transactions: the trigger coalesces what waits behind a webhook in flight).
    let all: Vec<(String, u64)> = console
        .client
        .list_deliveries(triggers_proto::sidecar::ListDeliveriesRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("lists")
        .into_inner()
        .deliveries
        .into_iter()
        .map(|d| (d.trigger_name, d.first_commit_seq))
        .collect();
    assert!(all.len() >= 9, "{all:?}");
    // Full pages but the last, which together are the ledger, in its order.
    let full = |pages: &[Vec<(String, u64)>], size: usize| {
        let (last, rest) = pages.split_last().expect("a page");
        rest.iter().all(|page| page.len() == size) && last.len() <= size
    };
    // One trigger, three a page.
    let pages = walk("/deliveries?shard=&trigger=good&size=3".to_string()).await;
    let good: Vec<(String, u64)> = all.iter().filter(|(t, _)| t == "good").cloned().collect();
    assert_eq!(pages.concat(), good, "{pages:?}");
    assert!(full(&pages, 3) && pages.len() > 1, "{pages:?}");
    // Both triggers, five a page.
    let pages = walk("/deliveries?shard=&size=5".to_string()).await;
    assert_eq!(pages.concat(), all, "{pages:?}");
    assert!(full(&pages, 5) && pages.len() > 1, "{pages:?}");
    // A state and a trigger: the skipped one only.
    let pages = walk("/deliveries?shard=&state=cancelled&trigger=broken".to_string()).await;
    assert_eq!(pages.concat(), [("broken".to_string(), 1)]);
}

/// chromium and chromedriver, if both are installed.
fn chromium() -> Result<(PathBuf, PathBuf), String> {
    let find = |name: &str| {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
            .ok_or_else(|| format!("{name} is not on PATH"))
    };
    Ok((find("chromium")?, find("chromedriver")?))
}

/// Writes the browser's screen to `shots/STEP-NAME.png` and prints the path.
async fn shoot(browser: &Browser, shots: &Path, step: &mut u32, name: &str) {
    *step += 1;
    let png = browser.screenshot().await.expect("screenshot");
    let path = shots.join(format!("{step}-{name}.png"));
    std::fs::write(&path, png).expect("writes the screenshot");
    println!("screenshot: {}", path.display());
}

/// Waits (at most 30 s) for the page a click led to: the one with an element `css`.
async fn arrive(browser: &Browser, css: &str) -> Element {
    match browser.wait_for(css, Duration::from_secs(30)).await {
        Ok(found) => found,
        Err(err) => panic!(
            "no {css} on the page ({err}): {}",
            browser.source().await.unwrap_or_default()
        ),
    }
}

/// The text of the first element matching `css`.
async fn text(browser: &Browser, css: &str) -> String {
    let found = browser.find(css).await.expect(css);
    browser.text(&found).await.expect("text")
}

/// Clicks the first element matching `css`.
async fn click(browser: &Browser, css: &str) {
    let found = browser.find(css).await.expect(css);
    browser.click(&found).await.expect("clicks");
}

/// Types `keys` into the first element matching `css`.
async fn type_into(browser: &Browser, css: &str, keys: &str) {
    let found = browser.find(css).await.expect(css);
    browser.send_keys(&found, keys).await.expect("types");
}

/// Where the screenshots go: `target/console-screenshots/`.
fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(
            || PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
            Path::to_path_buf,
        )
        .join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_logs_in_skips_the_failed_delivery_and_the_shard_commits_again() {
    let (chromium, chromedriver) = match chromium() {
        Ok(found) => found,
        Err(why) => {
            assert!(
                std::env::var_os("TRIGGERS_REQUIRE_CHROMIUM").is_none(),
                "TRIGGERS_REQUIRE_CHROMIUM is set but {why}: run the tests with scripts/test"
            );
            eprintln!("chromium or chromedriver not found: skipping ({why})");
            return;
        }
    };
    let started = Instant::now();
    let mut console = console_with_a_failed_delivery().await;
    let url = console.url.clone();
    // The backlog stopped: the shard refuses to commit until the failure is dealt with.
    let refused = console
        .client
        .start_commit(StartCommitRequest {
            checkpoint: Some(checkpoint(2)),
            stats: stats(),
            ..Default::default()
        })
        .await
        .expect_err("a FAILED delivery stops the shard");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused}");

    let driver = Driver::start(&chromedriver, &console.dir.path().join("chromedriver.log")).await;
    let profile = console.dir.path().join("chromium-profile");
    let browser = Browser::new(
        &driver,
        serde_json::json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1200,850",
                         format!("--user-data-dir={}", profile.display())],
            }
        }),
    )
    .await
    .expect("chromium starts");
    let shots = screenshot_dir();
    let mut step = 0;

    // 1. Log in.
    browser.goto(&format!("{url}/")).await.expect("opens");
    type_into(&browser, "#token", TOKEN).await;
    shoot(&browser, &shots, &mut step, "login").await;
    click(&browser, "#login").await;
    arrive(&browser, "#shards").await;
    let body = browser.source().await.expect("source");
    assert!(body.contains("<h1>Shards</h1>"), "{body}");
    assert!(
        body.contains("no such hook"),
        "the shard's last error: {body}"
    );

    // 2. The shard's state: broken waits, with its error.
    browser
        .goto(&format!("{url}/shard?shard="))
        .await
        .expect("opens");
    let body = browser.source().await.expect("source");
    assert!(body.contains("HTTP 404"), "{body}");
    shoot(&browser, &shots, &mut step, "shard-stopped").await;

    // 3. The ledger, filtered to the failures; open the failed delivery.
    browser
        .goto(&format!("{url}/deliveries?shard=&state=failed"))
        .await
        .expect("opens");
    shoot(&browser, &shots, &mut step, "ledger-failed").await;
    click(&browser, "#deliveries tr.failed a").await;
    arrive(&browser, "#skip-reason").await;
    assert_eq!(text(&browser, "#state").await, "FAILED");

    // 4. Skip it, with a reason.
    type_into(&browser, "#skip-reason", "the receiver deleted this hook").await;
    shoot(&browser, &shots, &mut step, "delivery-failed").await;
    click(&browser, "#skip").await;
    // Only a skipped delivery's page has its reason.
    arrive(&browser, "#reason").await;
    assert_eq!(
        text(&browser, "#state").await,
        "CANCELLED",
        "{}",
        browser.source().await.unwrap_or_default()
    );
    shoot(&browser, &shots, &mut step, "delivery-skipped").await;

    // 5. The shard commits again, and its page (which reloads itself; read it until it
    // shows them, at most 60 s) shows the new commits and an empty backlog.
    for n in 2..=4 {
        commit(&mut console.client, n).await;
    }
    let drained = console
        .client
        .await_drained(AwaitDrainedRequest::default())
        .await
        .expect("awaits")
        .into_inner();
    assert!(drained.ok, "{drained:?}");
    let commits = console
        .client
        .status(StatusRequest::default())
        .await
        .expect("status")
        .into_inner()
        .commits;
    assert!(commits >= 4, "{commits}");
    browser
        .goto(&format!("{url}/shard?shard="))
        .await
        .expect("opens");
    let mut moved = false;
    for _ in 0..120 {
        let shown = text(&browser, "#commits").await;
        let mut idle = true;
        for depth in browser.find_all("td.depth").await.expect("depths") {
            idle &= browser.text(&depth).await.expect("text") == "0";
        }
        if shown == commits.to_string() && idle {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        browser.refresh().await.expect("reloads");
    }
    assert!(moved, "{}", browser.source().await.unwrap_or_default());
    shoot(&browser, &shots, &mut step, "shard-moving").await;
    let status = console
        .client
        .status(StatusRequest::default())
        .await
        .expect("status")
        .into_inner();
    assert!(status.backlog.iter().all(|q| q.depth == 0), "{status:?}");
    browser.close().await.expect("closes chromium");
    println!(
        "the console's browser test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_on_a_unix_socket_needs_no_token_and_other_addresses_are_refused() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use triggers_sidecar::console::{ConsoleError, ConsoleListener};
    // Loopback TCP only, and only with a token.
    for address in [
        "0.0.0.0:0",
        "192.0.2.1:80",
        "localhost:0",
        "127.0.0.1",
        "unix",
    ] {
        let refused = ConsoleListener::bind(address, Some(support::token())).await;
        assert!(
            matches!(refused, Err(ConsoleError::NotLoopback { .. })),
            "{address}"
        );
    }
    let refused = ConsoleListener::bind("127.0.0.1:0", None).await;
    assert!(matches!(refused, Err(ConsoleError::TokenRequired { .. })));
    let refused = ConsoleListener::bind("[::1]:0", None).await;
    assert!(matches!(refused, Err(ConsoleError::TokenRequired { .. })));

    // A sidecar whose console is a Unix socket of mode 0600; a browser (here, by hand)
    // gets its session at its first visit, and a CSRF token with it.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("triggers.json");
    std::fs::write(
        &config,
        r#"{"config": [{"name": "good", "url": "http://127.0.0.1:9/hook", "payloadTemplate": "{}"}]}"#,
    )
    .expect("writes the config");
    let socket = dir.path().join("console.sock");
    let console = format!("unix:{}", socket.display());
    let sidecar =
        support::start_sidecar(dir.path(), &config, &["--console-address", &console], &[]).await;
    assert_eq!(
        sidecar.printed,
        vec![format!("console on {console}")],
        "prints its address"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&socket)
            .expect("the socket")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let get = async |target: &str| {
        let mut stream = tokio::net::UnixStream::connect(&socket)
            .await
            .expect("connects");
        stream
            .write_all(
                format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .expect("writes");
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut reply))
            .await
            .expect("answers in time")
            .expect("reads");
        reply
    };
    let reply = get("/").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("set-cookie: triggers_console="), "{reply}");
    assert!(reply.contains("(default shard)"), "{reply}");
    let reply = get("/deliveries?shard=").await;
    // A waiting shard not opened has no ledger: the sidecar's own error, as a page.
    assert!(reply.starts_with("HTTP/1.1 409"), "{reply}");
    assert!(reply.contains("FailedPrecondition"), "{reply}");
    drop(sidecar);
}

/// Issue 17, item 4: the console replays a delivered webhook (a POST, as the Replay
/// button sends it; with the bearer token, which needs no CSRF token), even while
/// another trigger's failure holds the backlog, and the webhook goes again as
/// `operator-replay`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_replays_a_delivered_webhook() {
    let mut console = console_with_a_failed_delivery().await;
    let http = http();
    let page = http
        .get(format!(
            "{}/delivery?shard=&trigger=good&seq=1",
            console.url
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("gets")
        .text()
        .await
        .expect("body");
    assert!(page.contains("SUCCESS"), "{page}");
    let reply = http
        .post(format!("{}/replay", console.url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("shard=&trigger=good&seq=1")
        .send()
        .await
        .expect("posts");
    assert!(
        reply.status().is_redirection() || reply.status().is_success(),
        "{}",
        reply.status()
    );
    assert_eq!(
        state_of(&mut console.client, 1).await,
        DeliveryState::Failed,
        "broken's"
    );
    let mut reasons = Vec::new();
    for _ in 0..500 {
        reasons = console
            ._receiver
            .requests()
            .iter()
            .filter(|r| r.path == "/good")
            .map(|r| r.header("webhook-reason").unwrap_or_default().to_string())
            .collect();
        if reasons.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(reasons, ["first-send", "operator-replay"]);
    // The ledger filtered to dead letters: broken's FAILED delivery stops its backlog
    // (onFailure: stop), so it is none.
    let dead = http
        .get(format!(
            "{}/deliveries?shard=&state=dead-letter",
            console.url
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("gets")
        .text()
        .await
        .expect("body");
    assert!(dead.contains(r#"value="dead-letter" selected"#), "{dead}");
    assert!(!dead.contains(r#"class="delivery failed""#), "{dead}");
    let failed = http
        .get(format!("{}/deliveries?shard=&state=failed", console.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("gets")
        .text()
        .await
        .expect("body");
    assert!(failed.contains(r#"class="delivery failed""#), "{failed}");
}
