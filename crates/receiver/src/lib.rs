//! A webhook receiver on 127.0.0.1 for tests, the demo and the benches: it records every
//! request and answers from a per-path script (default `200 OK`). Its key types are
//! [`Receiver`], [`Reply`] and [`Request`].
//!
//! It must not depend on `triggers` (whose tests use it): it sees raw HTTP only, and a
//! test checks signatures with `triggers::verify_signature` itself.
//!
//! Deliberately small and raw (HTTP/1.1 over a plain `TcpListener`, heads parsed with
//! `httparse`) so a script can also misbehave on purpose: answer late, or hang up
//! without answering. It stops when dropped: the accept loop and every connection task
//! are aborted.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head accepted, in bytes.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted, in bytes.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers in arrival order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The status of the answer, once it was written in full; `None` while pending, or
    /// if the receiver hung up or the client went away first.
    pub answered: Option<u16>,
}

impl Request {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
    }

    /// The body parsed as an `application/x-www-form-urlencoded` form, in order.
    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }
}

/// An unsigned JWT (`alg: none`) carrying `claims`, for a scripted token endpoint's
/// answer: the deliverer reads `exp` and `iat` from it, unverified, as it would from a
/// signed one.
pub fn jwt(claims: &serde_json::Value) -> String {
    use base64::Engine as _;
    let encode = |value: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
    };
    format!(
        "{}.{}.",
        encode(&serde_json::json!({"alg": "none", "typ": "JWT"})),
        encode(claims)
    )
}

/// How the receiver answers one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Status code of the answer.
    pub status: u16,
    /// Body of the answer.
    pub body: String,
    /// Wait this long before answering (a slow or hanging endpoint).
    pub delay: Duration,
    /// Close the connection instead of answering (a crashed endpoint).
    pub hang_up: bool,
    /// Reset the connection (TCP RST) instead of answering.
    pub reset: bool,
    /// Extra response headers, e.g. `Retry-After`.
    pub headers: Vec<(String, String)>,
    /// Send the body one byte at a time with this pause between bytes (a slow endpoint
    /// that answers its status promptly but drags out the body).
    pub body_byte_delay: Duration,
}

impl Reply {
    /// Answers `status` at once, with a short body naming it.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            body: format!("status {status}"),
            delay: Duration::ZERO,
            hang_up: false,
            reset: false,
            headers: Vec::new(),
            body_byte_delay: Duration::ZERO,
        }
    }

    /// Answers `status` with `body` as `application/json`: a token endpoint's answer.
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Self::status(status)
            .with_body(body.to_string())
            .with_header("content-type", "application/json")
    }

    /// Resets the connection (TCP RST) without answering.
    pub fn reset() -> Self {
        Self {
            reset: true,
            ..Self::status(0)
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sends the body one byte per `delay`.
    pub fn slow_body(mut self, delay: Duration) -> Self {
        self.body_byte_delay = delay;
        self
    }

    /// Closes the connection without answering.
    pub fn hang_up() -> Self {
        Self {
            hang_up: true,
            ..Self::status(0)
        }
    }

    /// Sets the answer's body.
    pub fn with_body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    /// Waits `delay` before answering.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct Shared {
    /// Whether requests are kept; off for long runs whose memory is being measured.
    forget: std::sync::atomic::AtomicBool,
    requests: Mutex<Vec<Request>>,
    scripts: Mutex<HashMap<String, VecDeque<Reply>>>,
    default_reply: Mutex<Option<Reply>>,
    arrived: tokio::sync::Notify,
    /// TCP connections accepted.
    connections: std::sync::atomic::AtomicUsize,
    /// TCP connections accepted and not yet closed.
    open: std::sync::atomic::AtomicUsize,
}

/// A running receiver. Dropping it stops it.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver on an ephemeral port of 127.0.0.1.
    ///
    /// Cancel-safe: a dropped start leaves nothing listening.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Self { addr, shared, task })
    }

    /// How many TCP connections it has accepted: how many a client's connection pool
    /// opened to it.
    pub fn connections(&self) -> usize {
        self.shared
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many of those are still open (each holds a file descriptor here, beside the
    /// client's).
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Queues answers for requests to `path` (path and query); once they are used up,
    /// the default answer applies.
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.shared.scripts)
            .entry(path.to_string())
            .or_default()
            .extend(replies);
    }

    /// Sets the answer for requests no script covers (initially `200 OK`).
    pub fn set_default(&self, reply: Reply) {
        *lock(&self.shared.default_reply) = Some(reply);
    }

    /// Stops keeping requests (they are still answered), so a long run's memory stays flat.
    pub fn forget_requests(&self) {
        self.shared
            .forget
            .store(true, std::sync::atomic::Ordering::Relaxed);
        lock(&self.shared.requests).clear();
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared.requests).clone()
    }

    /// Waits until at least `count` requests have arrived, or `timeout` passes; returns
    /// what has arrived either way.
    ///
    /// Cancel-safe: it only reads.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Request> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.arrived.notified();
            let requests = self.requests();
            if requests.len() >= count {
                return requests;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.requests();
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking test thread must not hide every later request from the others.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Owned here, so aborting this task drops the set and aborts every connection.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    shared
                        .connections
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    shared.open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    stream.set_nodelay(true).ok();
                    let shared = shared.clone();
                    connections.spawn(async move {
                        serve(stream, shared.clone()).await;
                        shared.open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    });
                }
                Err(err) => tracing::warn!(%err, "receiver accept failed"),
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

/// Serves requests on one keep-alive connection until the peer closes it or a reply
/// hangs up.
async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buf = Vec::with_capacity(4096);
    while let Some(request) = read_request(&mut stream, &mut buf).await {
        let reply = {
            let mut scripts = lock(&shared.scripts);
            scripts
                .get_mut(&request.path)
                .and_then(VecDeque::pop_front)
                .or_else(|| lock(&shared.default_reply).clone())
                .unwrap_or_else(|| Reply::status(200).with_body("ok"))
        };
        let index = if shared.forget.load(std::sync::atomic::Ordering::Relaxed) {
            None
        } else {
            let mut requests = lock(&shared.requests);
            requests.push(request);
            Some(requests.len() - 1)
        };
        shared.arrived.notify_waiters();

        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        if reply.reset {
            // SO_LINGER 0: closing sends RST instead of FIN.
            let _ = stream.set_zero_linger();
            return;
        }
        if reply.hang_up {
            return;
        }
        // Head and body in one write: two small writes would meet the client's delayed
        // ACK and add ~40 ms to every answer.
        let extra: String = reply
            .headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let content_type = if reply
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            ""
        } else {
            "content-type: text/plain\r\n"
        };
        let head = format!(
            "HTTP/1.1 {} {}\r\n{content_type}content-length: {}\r\n{extra}\r\n",
            reply.status,
            reason(reply.status),
            reply.body.len(),
        );
        let written = if reply.body_byte_delay.is_zero() {
            stream
                .write_all(format!("{head}{}", reply.body).as_bytes())
                .await
        } else {
            write_slowly(
                &mut stream,
                head.as_bytes(),
                reply.body.as_bytes(),
                reply.body_byte_delay,
            )
            .await
        };
        if written.is_err() || stream.flush().await.is_err() {
            return;
        }
        let mut requests = lock(&shared.requests);
        if let Some(request) = index.and_then(|i| requests.get_mut(i)) {
            request.answered = Some(reply.status);
        }
    }
}

async fn write_slowly(
    stream: &mut TcpStream,
    head: &[u8],
    body: &[u8],
    delay: Duration,
) -> std::io::Result<()> {
    stream.write_all(head).await?;
    for byte in body {
        stream.flush().await?;
        tokio::time::sleep(delay).await;
        stream.write_all(std::slice::from_ref(byte)).await?;
    }
    Ok(())
}

/// Reads one request; `None` when the connection ends or sends something unreadable.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or(0);
                if length > MAX_BODY {
                    return None;
                }
                let method = parsed.method.unwrap_or_default().to_string();
                let path = parsed.path.unwrap_or_default().to_string();
                while buf.len() < head_len + length {
                    if read_more(stream, buf).await == 0 {
                        return None;
                    }
                }
                let body = buf[head_len..head_len + length].to_vec();
                buf.drain(..head_len + length);
                return Some(Request {
                    method,
                    path,
                    headers,
                    body,
                    answered: None,
                });
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {
                if read_more(stream, buf).await == 0 {
                    return None;
                }
            }
            Ok(httparse::Status::Partial) | Err(_) => return None,
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            n
        }
        Err(_) => 0,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    /// The `[section]` each line of a manifest is in, with the line.
    fn sections(manifest: &str) -> Vec<(&str, &str)> {
        let mut section = "";
        let mut lines = Vec::new();
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
            } else if !line.is_empty() && !line.starts_with('#') {
                lines.push((section, line));
            }
        }
        lines
    }

    fn manifest(crate_dir: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(crate_dir);
        std::fs::read_to_string(path.join("Cargo.toml")).expect("the manifest reads")
    }

    /// Issue 14: the test receiver was a feature of `triggers` that the runtime library
    /// enabled in its normal dependencies. Now `triggers` has no such feature and takes the
    /// receiver for its tests only.
    #[test]
    fn the_receiver_is_its_own_crate_and_only_a_dev_dependency_of_triggers() {
        let triggers = manifest("../triggers");
        for (section, line) in sections(&triggers) {
            assert!(
                !line.starts_with("receiver") && !line.contains("httparse"),
                "{section} {line}"
            );
            if line.starts_with("triggers-receiver") {
                assert_eq!(section, "[dev-dependencies]", "{line}");
            }
        }
        assert!(
            !manifest("../runtime").contains("\"receiver\""),
            "the runtime enables no receiver feature"
        );
        assert!(
            !sections(&manifest("."))
                .iter()
                .any(|(_, line)| line.starts_with("triggers")),
            "the receiver depends on no trigger crate, so `triggers` can use it without a cycle"
        );
    }
}
