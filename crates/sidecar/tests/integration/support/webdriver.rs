//! A W3C WebDriver client of the few commands the console's browser test needs, over
//! reqwest: a session, navigation, elements (find, click, type, text), the page source
//! and screenshots. Written here rather than taken from crates.io: fantoccini pulls
//! `webdriver` and its Unicode segmenter, whose proc-macros change `syn`'s features for
//! every build script, so RocksDB's C++ rebuilt (~20 minutes on two cores) for ~100 lines.

use base64::Engine as _;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// The key of an element reference in WebDriver's JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long one command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A chromedriver process on a free loopback port, killed when dropped.
pub struct Driver {
    _child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Driver {
    /// Starts `chromedriver` (its log to `log`) and waits, at most 10 s, until it answers.
    pub async fn start(chromedriver: &Path, log: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = tokio::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(std::fs::File::create(log).expect("log"))
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if reqwest::get(format!("{url}/status")).await.is_ok() {
                return Self { _child: child, url };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not answer on {url} within 10 s");
    }
}

/// One browser session.
pub struct Browser {
    http: reqwest::Client,
    /// `DRIVER/session/ID`.
    session: String,
}

/// An element of the current page.
pub struct Element(String);

impl Browser {
    /// A new session of `driver` with `capabilities` (`alwaysMatch`).
    pub async fn new(driver: &Driver, capabilities: Value) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(COMMAND_TIMEOUT)
            .build()
            .map_err(|err| err.to_string())?;
        let value = call(
            &http,
            reqwest::Method::POST,
            &format!("{}/session", driver.url),
            Some(json!({"capabilities": {"alwaysMatch": capabilities}})),
        )
        .await?;
        let id = value["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no sessionId in {value}"))?;
        Ok(Self {
            http,
            session: format!("{}/session/{id}", driver.url),
        })
    }

    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        call(&self.http, method, &format!("{}{path}", self.session), body).await
    }

    /// Opens `url` (returns once it has loaded).
    pub async fn goto(&self, url: &str) -> Result<(), String> {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await
            .map(drop)
    }

    /// Reloads the page.
    pub async fn refresh(&self) -> Result<(), String> {
        self.command(reqwest::Method::POST, "/refresh", Some(json!({})))
            .await
            .map(drop)
    }

    /// The first element matching the CSS selector `css`.
    pub async fn find(&self, css: &str) -> Result<Element, String> {
        let value = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        element(&value)
    }

    /// Every element matching `css`.
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>, String> {
        let value = self
            .command(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        value
            .as_array()
            .ok_or_else(|| format!("not a list: {value}"))?
            .iter()
            .map(element)
            .collect()
    }

    /// The first element matching `css`, once there is one (within `timeout`).
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Result<Element, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.find(css).await {
                Ok(found) => return Ok(found),
                Err(err) if tokio::time::Instant::now() >= deadline => return Err(err),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Clicks `element`.
    pub async fn click(&self, element: &Element) -> Result<(), String> {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/click", element.0),
            Some(json!({})),
        )
        .await
        .map(drop)
    }

    /// Types `text` into `element`.
    pub async fn send_keys(&self, element: &Element, text: &str) -> Result<(), String> {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/value", element.0),
            Some(json!({"text": text})),
        )
        .await
        .map(drop)
    }

    /// `element`'s rendered text.
    pub async fn text(&self, element: &Element) -> Result<String, String> {
        let value = self
            .command(
                reqwest::Method::GET,
                &format!("/element/{}/text", element.0),
                None,
            )
            .await?;
        Ok(value.as_str().unwrap_or_default().to_string())
    }

    /// The page's HTML.
    pub async fn source(&self) -> Result<String, String> {
        let value = self.command(reqwest::Method::GET, "/source", None).await?;
        Ok(value.as_str().unwrap_or_default().to_string())
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Result<Vec<u8>, String> {
        let value = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await?;
        base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap_or_default())
            .map_err(|err| err.to_string())
    }

    /// Ends the session (the browser exits).
    pub async fn close(self) -> Result<(), String> {
        self.command(reqwest::Method::DELETE, "", None)
            .await
            .map(drop)
    }
}

fn element(value: &Value) -> Result<Element, String> {
    value[ELEMENT]
        .as_str()
        .map(|id| Element(id.to_string()))
        .ok_or_else(|| format!("not an element: {value}"))
}

/// One WebDriver command: its `value`, or its error as text.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let reply = request.send().await.map_err(|err| err.to_string())?;
    let status = reply.status();
    let bytes = reply.bytes().await.map_err(|err| err.to_string())?;
    let mut json: Value = serde_json::from_slice(&bytes).map_err(|err| err.to_string())?;
    let value = json["value"].take();
    if status.is_success() {
        Ok(value)
    } else {
        Err(format!(
            "{status}: {} {}",
            value["error"].as_str().unwrap_or_default(),
            value["message"].as_str().unwrap_or_default()
        ))
    }
}
