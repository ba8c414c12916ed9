//! The operator's web console (`shard-sidecar --console-address`): the shards' state, the
//! ledger of deliveries, one delivery with its attempts, and the retry and skip buttons,
//! as server-rendered HTML that reads without JavaScript.
//!
//! Every page calls the sidecar's own gRPC operations in-process (the [`ShardSidecar`]
//! methods of [`Sidecar`]), so the console applies exactly the rules and errors of the
//! API; a `Status` error is shown as a page saying so.
//!
//! Who may use it: on a Unix socket (mode 0600), whoever can connect; on loopback TCP,
//! only a holder of the sidecar's bearer token, sent as `Authorization: Bearer` (curl) or
//! typed once into the login form, which sets a session cookie (a random id held in
//! memory, never the token). Every state-changing request is a POST carrying the
//! session's CSRF token and coming from the console's own origin; every reply forbids
//! framing, scripts and caching. Nothing rendered holds a secret: ledger records and
//! Status carry trigger names, never URLs, headers or signing secrets.

mod pages;

use crate::access::{BearerToken, TOKEN_ENV, constant_time_eq};
use crate::deliveries::{Filter, StateFilter};
use crate::shard_id::{MAX_SHARD_ID_BYTES, ShardId};
use crate::{BindError, Listener, Sidecar};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::Request;
use triggers_proto::DeliveryRecord;
use triggers_proto::sidecar::shard_sidecar_server::ShardSidecar;
use triggers_proto::sidecar::{
    DeliveryRef, ListDeliveriesRequest, ReplayDeliveriesRequest, SkipDeliveryRequest, StatusRequest,
};

/// Most browser sessions held at once; a login past it ends the oldest one.
pub const MAX_SESSIONS: usize = 64;
/// How long a session lasts after its login; then the login form is shown again.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Longest request target (path and query string) served; a longer one is a 400.
pub const MAX_TARGET_BYTES: usize = 2048;
/// Largest form body read (login, retry, skip); a larger one is a 400.
pub const MAX_FORM_BYTES: usize = 8192;
/// Longest skip reason, in characters (the ledger keeps as many).
pub const MAX_REASON_CHARS: usize = 1000;
/// Longest page token accepted (the ledger's are `SEQ/TRIGGER NAME`, under 100 bytes).
pub const MAX_PAGE_TOKEN_BYTES: usize = 256;
/// Deliveries per ledger page by default, and at most (`?size=`).
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// See [`DEFAULT_PAGE_SIZE`].
pub const MAX_PAGE_SIZE: u32 = 200;
/// With a filter, the most ledger records one page looks through for matches; past it,
/// the page shows what it found and links to the next records.
pub const MAX_SCANNED: usize = 5000;
/// Seconds between reloads of the read-only pages (`<meta http-equiv="refresh">`).
pub const REFRESH_SECS: u64 = 5;
/// The session cookie's name.
pub const SESSION_COOKIE: &str = "triggers_console";
/// How long connections still open after shutdown get to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the console could not listen.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Only loopback TCP or a Unix socket: the console is an operator's, not a website.
    #[error(
        "the console address {address} is neither unix:/path/to.sock nor a loopback \
         IP:PORT (127.0.0.1:PORT or [::1]:PORT)"
    )]
    NotLoopback {
        /// The address given.
        address: String,
    },
    /// TCP reaches every local process: the console there needs the sidecar's token.
    #[error(
        "the console on TCP ({address}) needs the sidecar's bearer token (--token-file FILE \
         or ${TOKEN_ENV}); a Unix socket needs none"
    )]
    TokenRequired {
        /// The address given.
        address: String,
    },
    /// Binding failed.
    #[error("cannot listen for the console")]
    Bind(#[source] BindError),
}

/// Where the console listens, and the token its users must present (if any).
pub struct ConsoleListener {
    socket: ConsoleSocket,
    token: Option<BearerToken>,
}

enum ConsoleSocket {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, PathBuf),
}

impl ConsoleListener {
    /// `unix:/path/to.sock` (made like the gRPC socket: mode 0600, never replacing a live
    /// one; a token, if given, is required there too) or a loopback `IP:PORT` (port 0
    /// picks a free one), which needs `token`. Anything else is
    /// [`ConsoleError::NotLoopback`]. Must be called within a tokio runtime.
    ///
    /// Cancel-safe: a dropped bind leaves nothing bound.
    pub async fn bind(address: &str, token: Option<BearerToken>) -> Result<Self, ConsoleError> {
        if let Some(path) = address.strip_prefix("unix:") {
            let listener = Listener::unix(path).map_err(ConsoleError::Bind)?;
            let (listener, path) =
                listener
                    .into_unix()
                    .ok_or_else(|| ConsoleError::NotLoopback {
                        address: address.to_string(),
                    })?;
            return Ok(Self {
                socket: ConsoleSocket::Unix(listener, path),
                token,
            });
        }
        let at: SocketAddr = match address.parse() {
            Ok(at) if SocketAddr::ip(&at).is_loopback() => at,
            _ => {
                return Err(ConsoleError::NotLoopback {
                    address: address.to_string(),
                });
            }
        };
        let Some(token) = token else {
            return Err(ConsoleError::TokenRequired {
                address: address.to_string(),
            });
        };
        let listener = tokio::net::TcpListener::bind(at).await.map_err(|source| {
            ConsoleError::Bind(BindError::Io {
                address: address.to_string(),
                source,
            })
        })?;
        Ok(Self {
            socket: ConsoleSocket::Tcp(listener),
            token: Some(token),
        })
    }

    /// The bound address: `http://IP:PORT/` or `unix:/path/to.sock`.
    pub fn address(&self) -> String {
        match &self.socket {
            ConsoleSocket::Tcp(l) => l
                .local_addr()
                .map(|a| format!("http://{a}/"))
                .unwrap_or_default(),
            ConsoleSocket::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }
}

/// Serves the console of `sidecar` on `listener` until `shutdown` resolves; then lets
/// requests in flight finish for a few seconds.
///
/// Cancel-safe: dropping it stops serving; every action it takes is one sidecar call,
/// whose own cancel safety holds (a retry or skip happens whole or not at all).
pub async fn serve(
    sidecar: Sidecar,
    listener: ConsoleListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let console = Arc::new(Console {
        sidecar,
        token: listener.token,
        sessions: Mutex::new(HashMap::new()),
    });
    let app = axum::Router::new().fallback(handle).with_state(console);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async move {
        let _ = stopped.await;
    };
    let server = match listener.socket {
        ConsoleSocket::Tcp(l) => tokio::spawn(
            axum::serve(l, app)
                .with_graceful_shutdown(stopped)
                .into_future(),
        ),
        ConsoleSocket::Unix(l, _) => tokio::spawn(
            axum::serve(l, app)
                .with_graceful_shutdown(stopped)
                .into_future(),
        ),
    };
    shutdown.await;
    let _ = stop.send(());
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => tracing::warn!(error = %err, "console server stopped"),
        Ok(Err(join)) => tracing::warn!(error = %join, "console server task failed"),
        Err(_) => tracing::warn!("console connections still open after the shutdown grace"),
    }
}

struct Console {
    sidecar: Sidecar,
    token: Option<BearerToken>,
    /// Browser sessions by id; never held across an await.
    sessions: Mutex<HashMap<String, Session>>,
}

#[derive(Clone)]
struct Session {
    id: String,
    /// The synchronizer token every POST of this session carries.
    csrf: String,
    expires: Instant,
}

/// Who a request comes from.
enum Who {
    /// `Authorization: Bearer` with the token: a script (curl), which no browser sends
    /// by itself, so it needs no CSRF token.
    Bearer,
    /// A browser session.
    Session(Session),
    /// Nobody yet: only the login page and the stylesheet are served.
    Nobody,
}

/// A request the console refuses or cannot answer, as a page.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn bad(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
        }
    }

    /// A sidecar call's error, with an HTTP status of the same meaning.
    fn from_status(status: &tonic::Status) -> Self {
        use tonic::Code;
        let http = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::FailedPrecondition | Code::Aborted | Code::AlreadyExists => StatusCode::CONFLICT,
            Code::Unavailable | Code::ResourceExhausted => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::Unauthenticated | Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::Ok
            | Code::Cancelled
            | Code::Unknown
            | Code::Unimplemented
            | Code::Internal
            | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            status: http,
            message: format!(
                "the sidecar answered {:?}: {}",
                status.code(),
                status.message()
            ),
        }
    }
}

/// Every reply: no framing, no script, no referrer, no cache.
fn secure(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

async fn handle(
    axum::extract::State(console): axum::extract::State<Arc<Console>>,
    request: axum::extract::Request,
) -> Response {
    let mut response = console.route(request).await;
    secure(&mut response);
    response
}

fn html(status: StatusCode, page: maud::Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page.into_string(),
    )
        .into_response()
}

/// POST/redirect/GET: a 303 to `to` (a path of the console's own).
fn see_other(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

impl Console {
    async fn route(&self, request: axum::extract::Request) -> Response {
        let (parts, body) = request.into_parts();
        let target_len = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
        if target_len > MAX_TARGET_BYTES {
            return self.refused(
                None,
                Refusal::bad(format!(
                    "the address is longer than {MAX_TARGET_BYTES} bytes"
                )),
            );
        }
        let Some(host) = loopback_host(&parts.headers) else {
            return self.refused(
                None,
                Refusal::bad(
                    "the console answers only to a loopback Host (localhost, 127.0.0.1 or [::1])",
                ),
            );
        };
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or("").to_string();
        if path == "/style.css" && parts.method == Method::GET {
            return (
                [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                pages::STYLE,
            )
                .into_response();
        }
        let who = match self.who(&parts.headers) {
            Ok(who) => who,
            Err(refusal) => return self.login_page(refusal.status, Some(&refusal.message)),
        };
        // On a socket without a token, a browser gets its session (for its CSRF token)
        // on its first visit.
        let (who, cookie) = match who {
            Who::Nobody if self.token.is_none() => {
                let session = match self.new_session() {
                    Ok(session) => session,
                    Err(refusal) => return self.refused(None, refusal),
                };
                let cookie = session_cookie(&session);
                (Who::Session(session), Some(cookie))
            }
            who => (who, None),
        };
        let mut response = match parts.method {
            Method::GET => self.get(&who, &path, &query).await,
            Method::POST => {
                let body = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
                    Ok(body) => body,
                    Err(_) => {
                        return self.refused(
                            session_of(&who),
                            Refusal::bad(format!(
                                "the form is larger than {MAX_FORM_BYTES} bytes, or was cut off"
                            )),
                        );
                    }
                };
                self.post(&who, &parts.headers, &host, &path, &body).await
            }
            _ => self.refused(
                session_of(&who),
                Refusal {
                    status: StatusCode::METHOD_NOT_ALLOWED,
                    message: "the console answers GET and POST only".to_string(),
                },
            ),
        };
        if let Some(cookie) = cookie {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        response
    }

    /// The token's holder or a live session, or nobody; `Err` for a wrong bearer token.
    fn who(&self, headers: &HeaderMap) -> Result<Who, Refusal> {
        if let (Some(token), Some(given)) = (&self.token, headers.get(header::AUTHORIZATION)) {
            return if token.accepts(given.as_bytes()) {
                Ok(Who::Bearer)
            } else {
                Err(Refusal {
                    status: StatusCode::UNAUTHORIZED,
                    message: "the bearer token is not this sidecar's".to_string(),
                })
            };
        }
        Ok(self.session(headers).map_or(Who::Nobody, Who::Session))
    }

    /// The live session the request's cookie names.
    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie_value(headers, SESSION_COOKIE)?;
        let mut sessions = locked(&self.sessions);
        let session = sessions.get(id)?.clone();
        if session.expires <= Instant::now() {
            sessions.remove(id);
            return None;
        }
        Some(session)
    }

    /// A new session, within [`MAX_SESSIONS`] (the one closest to expiring ends first).
    fn new_session(&self) -> Result<Session, Refusal> {
        let session = Session {
            id: random_hex()?,
            csrf: random_hex()?,
            expires: Instant::now() + SESSION_TTL,
        };
        let mut sessions = locked(&self.sessions);
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        while sessions.len() >= MAX_SESSIONS {
            let Some(oldest) = sessions
                .values()
                .min_by_key(|s| s.expires)
                .map(|s| s.id.clone())
            else {
                break;
            };
            sessions.remove(&oldest);
        }
        sessions.insert(session.id.clone(), session.clone());
        Ok(session)
    }

    fn login_page(&self, status: StatusCode, message: Option<&str>) -> Response {
        let mut response = html(status, pages::login(message));
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }

    fn refused(&self, session: Option<&Session>, refusal: Refusal) -> Response {
        html(
            refusal.status,
            pages::refusal(self.logout(session), refusal.status, &refusal.message),
        )
    }

    /// The CSRF token of the logout form, shown when sessions come from logins.
    fn logout<'a>(&self, session: Option<&'a Session>) -> Option<&'a str> {
        self.token.as_ref().and(session).map(|s| s.csrf.as_str())
    }

    async fn get(&self, who: &Who, path: &str, query: &str) -> Response {
        let session = session_of(who);
        if let Who::Nobody = who {
            return match path {
                "/login" => self.login_page(StatusCode::OK, None),
                _ => self.login_page(StatusCode::UNAUTHORIZED, None),
            };
        }
        let page = match path {
            "/login" => return see_other("/"),
            "/" => self.shards_page(session, query).await,
            "/shard" => self.shard_page(session, query).await,
            "/deliveries" => self.deliveries_page(session, query).await,
            "/delivery" => self.delivery_page(session, query).await,
            _ => Err(Refusal {
                status: StatusCode::NOT_FOUND,
                message: format!("the console has no page {}", pages::excerpt(path, 100)),
            }),
        };
        match page {
            Ok(page) => html(StatusCode::OK, page),
            Err(refusal) => self.refused(session, refusal),
        }
    }

    async fn post(
        &self,
        who: &Who,
        headers: &HeaderMap,
        host: &str,
        path: &str,
        body: &[u8],
    ) -> Response {
        let session = session_of(who);
        // A browser's POST must come from a page of the console's own origin.
        if !matches!(who, Who::Bearer)
            && let Err(refusal) = same_origin(headers, host)
        {
            return self.refused(session, refusal);
        }
        let form = match Params::parse(body, path) {
            Ok(form) => form,
            Err(refusal) => return self.refused(session, refusal),
        };
        if path == "/login" {
            return self.login(who, &form);
        }
        match who {
            Who::Nobody => return self.login_page(StatusCode::UNAUTHORIZED, None),
            Who::Session(session) => {
                let given = form.get("csrf").unwrap_or_default();
                if !constant_time_eq(given.as_bytes(), session.csrf.as_bytes()) {
                    return self.refused(
                        Some(session),
                        Refusal::forbidden(
                            "this form's CSRF token is missing or not this session's: \
                             reload the page and try again",
                        ),
                    );
                }
            }
            Who::Bearer => {}
        }
        let done = match path {
            "/logout" => {
                if let Some(session) = session {
                    locked(&self.sessions).remove(&session.id);
                }
                let mut response = see_other("/login");
                if let Ok(clear) = HeaderValue::from_str(&format!(
                    "{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
                )) {
                    response.headers_mut().append(header::SET_COOKIE, clear);
                }
                return response;
            }
            "/retry" => self.retry(&form).await,
            "/replay" => self.replay(&form).await,
            "/skip" => self.skip(&form).await,
            _ => Err(Refusal {
                status: StatusCode::NOT_FOUND,
                message: format!("the console has no action {}", pages::excerpt(path, 100)),
            }),
        };
        match done {
            Ok(back) => see_other(&back),
            Err(refusal) => self.refused(session, refusal),
        }
    }

    /// The login form's POST: the token, compared in constant time, opens a session.
    fn login(&self, who: &Who, form: &Params) -> Response {
        let Some(token) = &self.token else {
            return see_other("/");
        };
        if let Who::Session(_) | Who::Bearer = who {
            return see_other("/");
        }
        let given = form.get("token").unwrap_or_default();
        if !token.is(given.trim().as_bytes()) {
            return self.login_page(
                StatusCode::UNAUTHORIZED,
                Some("that is not this sidecar's token"),
            );
        }
        let session = match self.new_session() {
            Ok(session) => session,
            Err(refusal) => return self.refused(None, refusal),
        };
        let mut response = see_other("/");
        response
            .headers_mut()
            .append(header::SET_COOKIE, session_cookie(&session));
        response
    }

    async fn status(
        &self,
        shard: &str,
    ) -> Result<triggers_proto::sidecar::StatusResponse, Refusal> {
        Ok(ShardSidecar::status(
            &self.sidecar,
            Request::new(StatusRequest {
                shard: shard.to_string(),
            }),
        )
        .await
        .map_err(|status| Refusal::from_status(&status))?
        .into_inner())
    }

    async fn shards_page(
        &self,
        session: Option<&Session>,
        query: &str,
    ) -> Result<maud::Markup, Refusal> {
        Params::parse(query.as_bytes(), "/")?;
        let mut shards = Vec::new();
        for id in self.sidecar.shard_ids() {
            let status = self.status(&id).await?;
            shards.push((id, status));
        }
        Ok(pages::shards(self.logout(session), &shards))
    }

    async fn shard_page(
        &self,
        session: Option<&Session>,
        query: &str,
    ) -> Result<maud::Markup, Refusal> {
        let params = Params::parse(query.as_bytes(), "/shard")?;
        let shard = params.shard()?;
        let status = self.status(&shard).await?;
        // Per trigger, its oldest waiting delivery: its age, and why it waits.
        let mut oldest = Vec::new();
        for queue in &status.backlog {
            let record = match queue.oldest_pending_seq {
                0 => None,
                seq => ShardSidecar::get_delivery(
                    &self.sidecar,
                    Request::new(DeliveryRef {
                        trigger_name: queue.trigger_name.clone(),
                        first_commit_seq: seq,
                        shard: shard.clone(),
                        ..Default::default()
                    }),
                )
                .await
                .ok()
                .map(tonic::Response::into_inner),
            };
            oldest.push(record);
        }
        Ok(pages::shard(
            self.logout(session),
            &shard,
            &status,
            &oldest,
            std::time::SystemTime::now(),
        ))
    }

    async fn deliveries_page(
        &self,
        session: Option<&Session>,
        query: &str,
    ) -> Result<maud::Markup, Refusal> {
        let params = Params::parse(query.as_bytes(), "/deliveries")?;
        let shard = params.shard()?;
        let filter = Filter {
            state: match params.get("state").filter(|s| !s.is_empty()) {
                None => None,
                Some(state) => Some(parse_state(state)?),
            },
            trigger: match params.get("trigger").filter(|t| !t.is_empty()) {
                None => None,
                Some(trigger) => Some(trigger_param(trigger)?.to_string()),
            },
        };
        let size = match params.get("size") {
            None | Some("") => DEFAULT_PAGE_SIZE,
            Some(size) => size
                .parse::<u32>()
                .ok()
                .filter(|s| (1..=MAX_PAGE_SIZE).contains(s))
                .ok_or_else(|| {
                    Refusal::bad(format!("size must be a number from 1 to {MAX_PAGE_SIZE}"))
                })?,
        };
        let page = params.get("page").unwrap_or_default();
        if page.len() > MAX_PAGE_TOKEN_BYTES {
            return Err(Refusal::bad(format!(
                "the page token is longer than {MAX_PAGE_TOKEN_BYTES} bytes"
            )));
        }
        let (deliveries, next, scanned) = self.scan(&shard, &filter, size, page).await?;
        let triggers: Vec<String> = self
            .status(&shard)
            .await?
            .backlog
            .into_iter()
            .map(|q| q.trigger_name)
            .collect();
        Ok(pages::deliveries(
            self.logout(session),
            &pages::Ledger {
                shard: &shard,
                triggers: &triggers,
                state: filter.state,
                trigger: filter.trigger.as_deref(),
                size,
                page,
                deliveries: &deliveries,
                next: &next,
                scanned,
            },
        ))
    }

    /// One page of the ledger from `page` on, newest first, of at most `size` records
    /// that pass `filter`, looking through at most [`MAX_SCANNED`] records: the matches,
    /// the next page's token (empty at the end) and how many records were looked at.
    /// Each call asks for no more records than the page still lacks, so no match is
    /// ever skipped between pages.
    async fn scan(
        &self,
        shard: &str,
        filter: &Filter,
        size: u32,
        page: &str,
    ) -> Result<(Vec<DeliveryRecord>, String, usize), Refusal> {
        let mut found = Vec::new();
        let mut token = page.to_string();
        let mut scanned = 0;
        loop {
            let wanted = size as usize - found.len();
            let reply = ShardSidecar::list_deliveries(
                &self.sidecar,
                Request::new(ListDeliveriesRequest {
                    page_size: wanted as u32,
                    page_token: token.clone(),
                    shard: shard.to_string(),
                }),
            )
            .await
            .map_err(|status| Refusal::from_status(&status))?
            .into_inner();
            scanned += reply.deliveries.len();
            found.extend(reply.deliveries.into_iter().filter(|r| filter.keeps(r)));
            token = reply.next_page_token;
            if token.is_empty() || found.len() >= size as usize || scanned >= MAX_SCANNED {
                return Ok((found, token, scanned));
            }
        }
    }

    async fn delivery_page(
        &self,
        session: Option<&Session>,
        query: &str,
    ) -> Result<maud::Markup, Refusal> {
        let params = Params::parse(query.as_bytes(), "/delivery")?;
        let at = params.delivery()?;
        let record = ShardSidecar::get_delivery(&self.sidecar, Request::new(at.clone()))
            .await
            .map_err(|status| Refusal::from_status(&status))?
            .into_inner();
        let csrf = session.map(|s| s.csrf.as_str());
        Ok(pages::delivery(
            self.logout(session),
            csrf,
            &at.shard,
            &record,
        ))
    }

    /// RetryDelivery; the delivery's page to go back to.
    async fn retry(&self, form: &Params) -> Result<String, Refusal> {
        let at = form.delivery()?;
        ShardSidecar::retry_delivery(&self.sidecar, Request::new(at.clone()))
            .await
            .map_err(|status| Refusal::from_status(&status))?;
        Ok(pages::delivery_href(
            &at.shard,
            &at.trigger_name,
            at.first_commit_seq,
        ))
    }

    /// ReplayDeliveries of this one delivered webhook; the delivery's page to go back to.
    async fn replay(&self, form: &Params) -> Result<String, Refusal> {
        let at = form.delivery()?;
        ShardSidecar::replay_deliveries(
            &self.sidecar,
            Request::new(ReplayDeliveriesRequest {
                shard: at.shard.clone(),
                trigger_name: at.trigger_name.clone(),
                first_commit_seq: at.first_commit_seq,
                last_commit_seq: at.first_commit_seq,
                ..Default::default()
            }),
        )
        .await
        .map_err(|status| Refusal::from_status(&status))?;
        Ok(pages::delivery_href(
            &at.shard,
            &at.trigger_name,
            at.first_commit_seq,
        ))
    }

    /// SkipDelivery with the form's reason (required, at most [`MAX_REASON_CHARS`]).
    async fn skip(&self, form: &Params) -> Result<String, Refusal> {
        let at = form.delivery()?;
        let reason = form.get("reason").unwrap_or_default().trim();
        if reason.is_empty() {
            return Err(Refusal::bad(
                "skipping a delivery needs a reason, for the record",
            ));
        }
        if reason.chars().count() > MAX_REASON_CHARS {
            return Err(Refusal::bad(format!(
                "the reason is longer than {MAX_REASON_CHARS} characters"
            )));
        }
        ShardSidecar::skip_delivery(
            &self.sidecar,
            Request::new(SkipDeliveryRequest {
                delivery: Some(at.clone()),
                reason: reason.to_string(),
            }),
        )
        .await
        .map_err(|status| Refusal::from_status(&status))?;
        Ok(pages::delivery_href(
            &at.shard,
            &at.trigger_name,
            at.first_commit_seq,
        ))
    }
}

fn session_of(who: &Who) -> Option<&Session> {
    match who {
        Who::Session(session) => Some(session),
        Who::Bearer | Who::Nobody => None,
    }
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// 32 random bytes from the OS, in hex: a session id or a CSRF token.
fn random_hex() -> Result<String, Refusal> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|err| Refusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: format!("the system's random number generator failed ({err}): no session"),
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn session_cookie(session: &Session) -> HeaderValue {
    let cookie = format!(
        "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        session.id,
        SESSION_TTL.as_secs()
    );
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The request's `Host`, if it names a loopback host (`localhost`, `127.x.y.z`, `[::1]`,
/// with or without a port): a page of another name reached through DNS rebinding is
/// refused.
fn loopback_host(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map(|(name, _)| name)?,
        None => host.split(':').next()?,
    };
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback.then(|| host.to_string())
}

/// Whether a browser's POST comes from the console's own pages: its `Origin` is
/// `http://HOST`; or, as Chromium sends `Origin: null` under `Referrer-Policy:
/// no-referrer`, `Sec-Fetch-Site: same-origin` (a header no page can set); or, from an
/// older browser without either, a `Referer` of the console's own.
fn same_origin(headers: &HeaderMap, host: &str) -> Result<(), Refusal> {
    let own = format!("http://{host}");
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let origin = header("origin");
    let fetch_site = header("sec-fetch-site");
    let referer = header("referer");
    let ok = match (origin, fetch_site) {
        (Some(origin), _) if origin == own => true,
        (Some("null") | None, Some(site)) => site == "same-origin",
        (None, None) => referer.is_some_and(|r| r == own || r.starts_with(&format!("{own}/"))),
        (Some(_), _) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Refusal::forbidden(
            "this form was not sent from the console's own pages (its Origin is another \
             site's): nothing was done",
        ))
    }
}

/// A ledger page's `state`, as `triggers deliveries --state` spells it.
fn parse_state(state: &str) -> Result<StateFilter, Refusal> {
    StateFilter::from_param(state).ok_or_else(|| {
        let names: Vec<&str> = StateFilter::ALL.iter().map(|s| s.param()).collect();
        Refusal::bad(format!("state must be one of {}", names.join(", ")))
    })
}

fn trigger_param(trigger: &str) -> Result<&str, Refusal> {
    if trigger.is_empty() || trigger.len() > triggers::MAX_TRIGGER_NAME_BYTES {
        return Err(Refusal::bad(format!(
            "trigger must name a trigger (1 to {} bytes)",
            triggers::MAX_TRIGGER_NAME_BYTES
        )));
    }
    Ok(trigger)
}

/// A query string's or a form's fields: each page's own set, each once, each bounded.
struct Params(HashMap<String, String>);

impl Params {
    /// The fields of `text` (`application/x-www-form-urlencoded`) for the page or action
    /// `path`; an unknown or repeated field is a 400.
    fn parse(text: &[u8], path: &str) -> Result<Self, Refusal> {
        let allowed: &[&str] = match path {
            "/shard" => &["shard"],
            "/deliveries" => &["shard", "state", "trigger", "page", "size"],
            "/delivery" => &["shard", "trigger", "seq"],
            "/retry" | "/replay" => &["shard", "trigger", "seq", "csrf"],
            "/skip" => &["shard", "trigger", "seq", "csrf", "reason"],
            "/login" => &["token"],
            "/logout" => &["csrf"],
            _ => &[],
        };
        let mut fields = HashMap::new();
        for (key, value) in form_urlencoded::parse(text) {
            if !allowed.contains(&key.as_ref()) {
                return Err(Refusal::bad(format!(
                    "unknown field {:?} (this page takes: {})",
                    pages::excerpt(&key, 40),
                    allowed.join(", ")
                )));
            }
            if fields.insert(key.to_string(), value.into_owned()).is_some() {
                return Err(Refusal::bad(format!("the field {key} is given twice")));
            }
        }
        Ok(Self(fields))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// `shard`: a shard id (empty or absent for the default shard).
    fn shard(&self) -> Result<String, Refusal> {
        let shard = self.get("shard").unwrap_or_default();
        ShardId::parse(shard).map_err(|err| {
            Refusal::bad(format!(
                "shard is not a shard id (at most {MAX_SHARD_ID_BYTES} bytes): {err}"
            ))
        })?;
        Ok(shard.to_string())
    }

    /// `shard`, `trigger` and `seq`: one delivery.
    fn delivery(&self) -> Result<DeliveryRef, Refusal> {
        let shard = self.shard()?;
        let trigger = trigger_param(self.get("trigger").unwrap_or_default())?;
        let seq = self
            .get("seq")
            .and_then(|seq| seq.parse::<u64>().ok())
            .ok_or_else(|| Refusal::bad("seq must be a commit sequence number"))?;
        Ok(DeliveryRef {
            trigger_name: trigger.to_string(),
            first_commit_seq: seq,
            shard,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_or_missing_origin_is_refused() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (k, v) in pairs {
                map.insert(*k, HeaderValue::from_static(v));
            }
            map
        };
        let host = "127.0.0.1:8080";
        assert!(same_origin(&headers(&[("origin", "http://127.0.0.1:8080")]), host).is_ok());
        assert!(same_origin(&headers(&[("origin", "http://evil.example")]), host).is_err());
        assert!(
            same_origin(
                &headers(&[
                    ("origin", "http://evil.example"),
                    ("sec-fetch-site", "same-origin")
                ]),
                host
            )
            .is_err()
        );
        assert!(
            same_origin(
                &headers(&[("origin", "null"), ("sec-fetch-site", "same-origin")]),
                host
            )
            .is_ok()
        );
        assert!(
            same_origin(
                &headers(&[("origin", "null"), ("sec-fetch-site", "cross-site")]),
                host
            )
            .is_err()
        );
        assert!(same_origin(&headers(&[("origin", "null")]), host).is_err());
        assert!(same_origin(&headers(&[]), host).is_err());
        assert!(
            same_origin(
                &headers(&[("referer", "http://127.0.0.1:8080/delivery?x")]),
                host
            )
            .is_ok()
        );
        assert!(same_origin(&headers(&[("referer", "http://127.0.0.1:80800/")]), host).is_err());
    }

    fn console() -> Console {
        let triggers =
            triggers::validate("config: []", triggers::ConfigFormat::Yaml).expect("valid");
        let materialization = triggers::Materialization {
            name: "acmeCo/orders/warehouse".to_string(),
            connector_image: "ghcr.io/estuary/materialize-postgres:v1".to_string(),
            binding_collections: vec!["acmeCo/orders".to_string()],
        };
        let config = crate::SidecarConfig::new(
            "/nonexistent/store",
            triggers_runtime::ShardConfig::new(materialization, Arc::new(triggers)),
        );
        Console {
            sidecar: Sidecar::new(config),
            token: None,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn with_cookie(id: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let cookie = format!("other=1; {SESSION_COOKIE}={id}");
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&cookie).expect("ascii"),
        );
        headers
    }

    #[test]
    fn sessions_are_bounded_and_expire() {
        let console = console();
        let first = console.new_session().expect("a session");
        assert_eq!(first.id.len(), 64);
        assert_ne!(first.id, first.csrf);
        assert!(console.session(&with_cookie(&first.id)).is_some());
        assert!(console.session(&with_cookie(&"0".repeat(64))).is_none());
        let mut last = first.clone();
        for _ in 0..MAX_SESSIONS + 5 {
            last = console.new_session().expect("a session");
        }
        assert_eq!(locked(&console.sessions).len(), MAX_SESSIONS);
        // The oldest ended first.
        assert!(console.session(&with_cookie(&first.id)).is_none());
        assert!(console.session(&with_cookie(&last.id)).is_some());
        // An expired one is gone at its next use.
        if let Some(session) = locked(&console.sessions).get_mut(&last.id) {
            session.expires = Instant::now();
        }
        assert!(console.session(&with_cookie(&last.id)).is_none());
        assert_eq!(locked(&console.sessions).len(), MAX_SESSIONS - 1);
    }

    #[test]
    fn only_loopback_hosts_are_answered() {
        let host = |value: &'static str| {
            let mut map = HeaderMap::new();
            map.insert(header::HOST, HeaderValue::from_static(value));
            loopback_host(&map)
        };
        assert!(host("127.0.0.1:9").is_some());
        assert!(host("localhost:9").is_some());
        assert!(host("[::1]:9").is_some());
        assert!(host("evil.example:9").is_none());
        assert!(host("127.0.0.1.evil.example").is_none());
        assert!(loopback_host(&HeaderMap::new()).is_none());
    }
}
