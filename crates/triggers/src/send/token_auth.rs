//! Token authentication of a trigger (`auth`): a bearer token fetched from a token
//! endpoint on first use, kept in memory only, renewed before it expires and once on a
//! 401, and sent as `Authorization: Bearer <token>`.
//!
//! Two kinds of endpoint: OAuth 2.0 client credentials (RFC 6749 section 4.4, a form
//! POST answering `access_token`, `token_type` and `expires_in`), and a JSON login of the
//! kind Apache Airflow 3 has (`POST /auth/token` with `{"username", "password"}`,
//! answering the token at a JSON pointer, its lifetime from `expires_in` or the JWT's
//! `exp`). Credentials are [`Secret`]s; the token never leaves the cache but as a
//! sensitive header value, so neither logs, errors nor `Debug` show it.

mod fetch;

use crate::Secret;
use crate::config::validate::{TriggerLabel, ValidationError};
use crate::send::network_policy::Refusal;
use reqwest::header::HeaderValue;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

/// Longest string of an `auth` block (URLs, ids, secrets, scope, audience, pointer), in
/// bytes: as long as a header value may be.
pub const MAX_AUTH_FIELD_BYTES: usize = 8 * 1024;
/// Longest token accepted from a token endpoint, in bytes: it goes into a header, and
/// common servers refuse requests whose headers total more than 8 KiB.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Most bytes of a token endpoint's answer read: a larger one is an error, not memory.
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest token lifetime believed: a longer `expires_in` (or JWT lifetime) is cut to
/// this, so a token is fetched again at least once a year, and `Instant` cannot overflow.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);
/// Longest renewal margin: a token is renewed when less than
/// `min(MAX_RENEWAL_MARGIN, lifetime / 5)` of its lifetime remains.
const MAX_RENEWAL_MARGIN: Duration = Duration::from_secs(60);
/// Longest RFC 6749 `error` code (or `token_type`) an error message quotes.
const MAX_ERROR_CODE_CHARS: usize = 64;

/// The JSON pointer of a token endpoint's token, unless `tokenPointer` says otherwise.
pub const DEFAULT_TOKEN_POINTER: &str = "/access_token";

/// How a trigger gets its bearer token, as written under `auth`.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum AuthConfig {
    /// OAuth 2.0 client credentials grant (RFC 6749 section 4.4): a form-encoded POST of
    /// `grant_type=client_credentials` to `tokenUrl`, answered with `access_token`,
    /// `token_type` (`Bearer`) and `expires_in`.
    #[serde(rename_all = "camelCase")]
    Oauth2ClientCredentials {
        /// Absolute `http` or `https` URL of the token endpoint.
        #[schemars(url, length(max = MAX_AUTH_FIELD_BYTES))]
        token_url: String,
        /// The client identifier.
        #[schemars(length(min = 1, max = MAX_AUTH_FIELD_BYTES))]
        client_id: String,
        /// The client secret: a secret.
        #[schemars(length(min = 1, max = MAX_AUTH_FIELD_BYTES))]
        client_secret: Secret,
        /// Space-separated scopes to ask for (`scope`).
        #[serde(default)]
        #[schemars(length(min = 1, max = MAX_AUTH_FIELD_BYTES))]
        scope: Option<String>,
        /// The API the token is for (`audience`, as Auth0 and others ask).
        #[serde(default)]
        #[schemars(length(min = 1, max = MAX_AUTH_FIELD_BYTES))]
        audience: Option<String>,
        /// How the client authenticates (RFC 6749 section 2.3.1): HTTP Basic (the
        /// default, which every server must support) or `client_id` and
        /// `client_secret` in the form body.
        #[serde(default)]
        client_authentication: ClientAuthentication,
    },
    /// A JSON login endpoint, as Apache Airflow 3's `POST /auth/token`: a POST of
    /// `{"username": ..., "password": ...}`, answered with a JSON object holding the
    /// token at `tokenPointer`. Its lifetime is the answer's `expires_in`, else the
    /// JWT's `exp` (less `iat` when present), else unknown: kept until a 401.
    #[serde(rename_all = "camelCase")]
    TokenEndpoint {
        /// Absolute `http` or `https` URL of the endpoint.
        #[schemars(url, length(max = MAX_AUTH_FIELD_BYTES))]
        url: String,
        /// The user name.
        #[schemars(length(min = 1, max = MAX_AUTH_FIELD_BYTES))]
        username: String,
        /// The password: a secret.
        #[schemars(length(min = 1, max = MAX_AUTH_FIELD_BYTES))]
        password: Secret,
        /// JSON pointer (RFC 6901) of the token in the answer.
        #[serde(default = "default_token_pointer")]
        #[schemars(length(max = MAX_AUTH_FIELD_BYTES))]
        token_pointer: String,
    },
}

/// Where an OAuth client puts its credentials (RFC 6749 section 2.3.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ClientAuthentication {
    /// `Authorization: Basic` of the form-encoded id and secret: the default.
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Body,
}

fn default_token_pointer() -> String {
    DEFAULT_TOKEN_POINTER.to_string()
}

impl std::fmt::Debug for AuthConfig {
    /// The kind and the endpoint's origin: never a credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, url) = match self {
            AuthConfig::Oauth2ClientCredentials { token_url, .. } => {
                ("oauth2ClientCredentials", token_url)
            }
            AuthConfig::TokenEndpoint { url, .. } => ("tokenEndpoint", url),
        };
        f.debug_struct("AuthConfig")
            .field("type", &kind)
            .field("endpoint", &crate::config::document::url_origin(url))
            .finish_non_exhaustive()
    }
}

/// What a parse error says instead of serde's for a value under `auth` of the wrong
/// type or value: serde quotes what it found, and it may be a credential.
pub const AUTH_TYPE_ERROR: &str = "invalid type or value under `auth` (the value is not shown): see the `auth` fields in the README";

/// `auth`, with serde's type errors (which quote the value) withheld.
pub(crate) fn secret_auth<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<AuthConfig>, D::Error> {
    Option::<AuthConfig>::deserialize(deserializer)
        .map_err(|err| crate::config::secret::withhold_value_as(err, AUTH_TYPE_ERROR))
}

/// Why a token could not be had from a trigger's token endpoint. Names the endpoint by
/// its origin; never holds a credential, the token, or the endpoint's body (but for the
/// RFC 6749 `error` code of a JSON error answer). The trigger is named by the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token endpoint {origin}: {kind}")]
pub struct TokenError {
    /// `scheme://host[:port]` of the token endpoint.
    pub origin: String,
    /// What went wrong.
    pub kind: TokenErrorKind,
}

/// What went wrong getting a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenErrorKind {
    /// The endpoint answered a status other than 2xx.
    #[error("answered HTTP {status}{}", error_code_suffix(.error))]
    Status {
        /// The status.
        status: u16,
        /// The RFC 6749 `error` code of a JSON error answer (e.g. `invalid_client`),
        /// when it is a short string of the characters the RFC allows.
        error: Option<String>,
    },
    /// No complete answer within the trigger's timeout.
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
    /// The network policy refused the endpoint.
    #[error(transparent)]
    Refused(Refusal),
    /// The answer's body is longer than [`MAX_TOKEN_RESPONSE_BYTES`].
    #[error("answered HTTP {status} with a body of more than {max} bytes")]
    BodyTooLarge {
        /// The status.
        status: u16,
        /// The bound.
        max: usize,
    },
    /// The answer is not a JSON document.
    #[error("answered HTTP {status} with a body that is not JSON")]
    NotJson {
        /// The status.
        status: u16,
    },
    /// Nothing at the token's JSON pointer.
    #[error("answered HTTP {status} without a token at {pointer:?}")]
    NoToken {
        /// The status.
        status: u16,
        /// Where the token was looked for.
        pointer: String,
    },
    /// The value at the token's pointer is not a non-empty string.
    #[error("answered HTTP {status} with a {found} at {pointer:?}, not a token string")]
    NotAString {
        /// The status.
        status: u16,
        /// Where the token was looked for.
        pointer: String,
        /// What was found instead: `an empty string`, `a number`, ...
        found: &'static str,
    },
    /// The token is longer than [`MAX_TOKEN_BYTES`].
    #[error("answered HTTP {status} with a token of {bytes} bytes, but at most {max} are allowed")]
    TokenTooLong {
        /// The status.
        status: u16,
        /// Its length.
        bytes: usize,
        /// The bound.
        max: usize,
    },
    /// The token has characters an HTTP header may not hold.
    #[error("answered HTTP {status} with a token that is not a valid HTTP header value")]
    InvalidToken {
        /// The status.
        status: u16,
    },
    /// The answer's `token_type` is not `Bearer`: a token of another kind cannot be
    /// sent as a bearer token.
    #[error("answered HTTP {status} with token_type {token_type:?}, not Bearer")]
    NotBearer {
        /// The status.
        status: u16,
        /// The type given (cut short, or `<not shown>` when it is not a short code).
        token_type: String,
    },
}

fn error_code_suffix(error: &Option<String>) -> String {
    error
        .as_ref()
        .map(|code| format!(" (error {code:?})"))
        .unwrap_or_default()
}

impl TokenErrorKind {
    /// Whether a later attempt may get a token: timeouts, connection errors, 5xx, 408 and
    /// 429 pass; any other answer would come again. Exhaustive, like the webhook's own
    /// classification.
    pub fn is_retryable(&self) -> bool {
        match self {
            TokenErrorKind::Status { status, .. } => {
                matches!(status, 408 | 429 | 500..=599)
            }
            TokenErrorKind::Timeout(_)
            | TokenErrorKind::Connect(_)
            | TokenErrorKind::Transport(_) => true,
            TokenErrorKind::InvalidRequest(_)
            | TokenErrorKind::Refused(_)
            | TokenErrorKind::BodyTooLarge { .. }
            | TokenErrorKind::NotJson { .. }
            | TokenErrorKind::NoToken { .. }
            | TokenErrorKind::NotAString { .. }
            | TokenErrorKind::TokenTooLong { .. }
            | TokenErrorKind::InvalidToken { .. }
            | TokenErrorKind::NotBearer { .. } => false,
        }
    }
}

/// A trigger's checked `auth`, with its token cache: shared (in an `Arc`) by every
/// attempt of the trigger, in memory only.
pub(crate) struct TokenAuth {
    request: TokenRequest,
    /// The endpoint's URL (credentials never in it: validation refuses user info).
    url: Url,
    /// `scheme://host[:port]` of `url`: how errors and `Debug` name it.
    origin: String,
    /// The cached token. A `tokio` mutex held across the fetch, so concurrent attempts
    /// of one trigger wait for one request rather than each sending their own.
    cache: tokio::sync::Mutex<Option<CachedToken>>,
}

/// What is sent to the token endpoint.
enum TokenRequest {
    ClientCredentials {
        client_id: String,
        client_secret: Secret,
        scope: Option<String>,
        audience: Option<String>,
        client_authentication: ClientAuthentication,
    },
    Login {
        username: String,
        password: Secret,
        pointer: String,
    },
}

/// A token as fetched: the header value and its lifetime, if the answer told.
pub(super) struct Fetched {
    /// `Bearer <token>`, marked sensitive.
    header: HeaderValue,
    /// How long it is valid from its fetch; `None` when unknown.
    lifetime: Option<Duration>,
}

/// A token and when to renew it.
struct CachedToken {
    /// `Bearer <token>`, marked sensitive.
    header: HeaderValue,
    /// When it should be renewed; `None` when its lifetime is unknown (kept until a 401).
    renew_at: Option<Instant>,
    /// When it expires; `None` when unknown.
    expires_at: Option<Instant>,
}

impl std::fmt::Debug for TokenAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.request {
            TokenRequest::ClientCredentials { .. } => "oauth2ClientCredentials",
            TokenRequest::Login { .. } => "tokenEndpoint",
        };
        f.debug_struct("TokenAuth")
            .field("type", &kind)
            .field("endpoint", &self.origin)
            .finish_non_exhaustive()
    }
}

impl TokenAuth {
    /// `scheme://host[:port]` of the token endpoint.
    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }

    /// The cached `Authorization` value, or a fresh one from the endpoint when there is
    /// none or it is due for renewal (a failed renewal keeps the current token while it
    /// has not expired). Bounded by `timeout` (waiting for another attempt's fetch
    /// included). A fetch carries a `traceparent` in `trace`, the attempt's trace, so
    /// the token endpoint's log joins it too.
    ///
    /// Cancel-safe: dropped while fetching, the cache is left as it was (the next call
    /// fetches); the lock is released.
    pub(crate) async fn header(
        &self,
        deliverer: &crate::Deliverer,
        timeout: Duration,
        trace: crate::TraceId,
    ) -> Result<HeaderValue, TokenError> {
        // The hot path: an uncontended lock and a fresh token cost no timer and no
        // allocation, only the clone of a shared header value.
        if let Ok(cache) = self.cache.try_lock()
            && let Some(cached) = &*cache
            && cached.renew_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(cached.header.clone());
        }
        let deadline = Instant::now() + timeout;
        let timed_out = || self.error(TokenErrorKind::Timeout(timeout));
        let mut cache = tokio::time::timeout_at(deadline, self.cache.lock())
            .await
            .map_err(|_| timed_out())?;
        let now = Instant::now();
        if let Some(cached) = &*cache
            && cached.renew_at.is_none_or(|at| now < at)
        {
            return Ok(cached.header.clone());
        }
        let fetched =
            tokio::time::timeout_at(deadline, self.fetch(deliverer, deadline, timeout, trace))
                .await
                .map_err(|_| timed_out())
                .and_then(|fetched| fetched.map_err(|kind| self.error(kind)));
        match fetched {
            Ok(fetched) => {
                let header = fetched.header.clone();
                *cache = Some(CachedToken {
                    header: fetched.header,
                    renew_at: fetched.lifetime.map(|lifetime| now + renew_after(lifetime)),
                    expires_at: fetched.lifetime.map(|lifetime| now + lifetime),
                });
                Ok(header)
            }
            // A renewal that fails while the token still lives (within the renewal
            // margin) leaves it in use: the endpoint may be back before it expires.
            Err(err) => match cache.as_ref() {
                Some(cached) if cached.expires_at.is_some_and(|at| Instant::now() < at) => {
                    tracing::warn!(error = %err, "token renewal failed; the current token is used until it expires");
                    Ok(cached.header.clone())
                }
                _ => {
                    *cache = None;
                    Err(err)
                }
            },
        }
    }

    /// Drops the cached token if it is still `used` (a 401 answered it), so the next
    /// [`TokenAuth::header`] fetches a new one; a token another attempt renewed since is
    /// kept.
    ///
    /// Cancel-safe: it only takes the lock.
    pub(crate) async fn invalidate(&self, used: &HeaderValue) {
        let mut cache = self.cache.lock().await;
        if cache.as_ref().is_some_and(|cached| cached.header == *used) {
            *cache = None;
        }
    }

    fn error(&self, kind: TokenErrorKind) -> TokenError {
        TokenError {
            origin: self.origin.clone(),
            kind,
        }
    }
}

/// How long after its fetch a token of `lifetime` is renewed: when less than
/// `min(60 s, lifetime / 5)` remains. A 24 h token is renewed a minute early, a 2 s one
/// after 1.6 s: early enough for the request it rides on to arrive in time, late enough
/// that a short-lived token is not fetched for every webhook.
pub(crate) fn renew_after(lifetime: Duration) -> Duration {
    let lifetime = lifetime.min(MAX_TOKEN_LIFETIME);
    lifetime - MAX_RENEWAL_MARGIN.min(lifetime / 5)
}

/// Checks a trigger's `auth` (and that nothing else in the trigger sets `Authorization`),
/// pushing every problem; the compiled form when all is well.
pub(crate) fn check(
    label: &TriggerLabel,
    raw: &crate::TriggerConfig,
    errors: &mut Vec<ValidationError>,
) -> Option<TokenAuth> {
    let auth = raw.auth.as_ref()?;
    let before = errors.len();
    let invalid = |field: &'static str, reason: String| ValidationError::InvalidAuth {
        trigger: label.clone(),
        field,
        reason,
    };
    if raw
        .headers
        .keys()
        .any(|name| name.eq_ignore_ascii_case("authorization"))
    {
        errors.push(invalid(
            "headers",
            "sets `Authorization`, which `auth` sets itself: remove one of them".to_string(),
        ));
    }
    if Url::parse(&raw.url).is_ok_and(|url| !url.username().is_empty() || url.password().is_some())
    {
        errors.push(invalid(
            "url",
            "has user info, which would be sent as Basic credentials in place of `auth`'s token: remove one of them"
                .to_string(),
        ));
    }

    let mut text = |field: &'static str, value: &str, may_be_empty: bool| {
        if value.len() > MAX_AUTH_FIELD_BYTES {
            errors.push(invalid(
                field,
                format!(
                    "is {} bytes, but at most {MAX_AUTH_FIELD_BYTES} are allowed",
                    value.len()
                ),
            ));
        } else if value.is_empty() && !may_be_empty {
            errors.push(invalid(field, "is empty".to_string()));
        }
    };
    let (url_field, raw_url, request) = match auth {
        AuthConfig::Oauth2ClientCredentials {
            token_url,
            client_id,
            client_secret,
            scope,
            audience,
            client_authentication,
        } => {
            text("auth.tokenUrl", token_url, false);
            text("auth.clientId", client_id, false);
            text("auth.clientSecret", client_secret.expose(), false);
            if let Some(scope) = scope {
                text("auth.scope", scope, false);
            }
            if let Some(audience) = audience {
                text("auth.audience", audience, false);
            }
            (
                "auth.tokenUrl",
                token_url,
                TokenRequest::ClientCredentials {
                    client_id: client_id.clone(),
                    client_secret: client_secret.clone(),
                    scope: scope.clone(),
                    audience: audience.clone(),
                    client_authentication: *client_authentication,
                },
            )
        }
        AuthConfig::TokenEndpoint {
            url,
            username,
            password,
            token_pointer,
        } => {
            text("auth.url", url, false);
            text("auth.username", username, false);
            text("auth.password", password.expose(), false);
            text("auth.tokenPointer", token_pointer, true);
            if token_pointer.len() <= MAX_AUTH_FIELD_BYTES
                && let Err(reason) = check_pointer(token_pointer)
            {
                errors.push(invalid("auth.tokenPointer", reason.to_string()));
            }
            (
                "auth.url",
                url,
                TokenRequest::Login {
                    username: username.clone(),
                    password: password.clone(),
                    pointer: token_pointer.clone(),
                },
            )
        }
    };
    let url = if raw_url.len() > MAX_AUTH_FIELD_BYTES {
        None
    } else {
        match Url::parse(raw_url) {
            Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                errors.push(invalid(
                    url_field,
                    format!("scheme must be http or https, not {:?}", url.scheme()),
                ));
                None
            }
            Ok(url) if !url.has_host() => {
                errors.push(invalid(url_field, "it has no host".to_string()));
                None
            }
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                errors.push(invalid(
                    url_field,
                    "has user info: give credentials in their own fields".to_string(),
                ));
                None
            }
            Ok(url) => Some(url),
            Err(err) => {
                errors.push(invalid(url_field, format!("not an absolute URL ({err})")));
                None
            }
        }
    };
    let url = url?;
    (errors.len() == before).then(|| TokenAuth {
        request,
        origin: url.origin().ascii_serialization(),
        url,
        cache: tokio::sync::Mutex::new(None),
    })
}

/// An RFC 6901 JSON pointer: empty (the whole document), or `/`-separated tokens whose
/// `~` is always `~0` or `~1`.
fn check_pointer(pointer: &str) -> Result<(), &'static str> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err("is not a JSON pointer: it must be empty or start with `/`");
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err("is not a JSON pointer: `~` must be followed by `0` or `1`");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConfigFormat, ValidationErrors, validate};

    #[test]
    fn renewal_margin_is_a_fifth_of_the_lifetime_up_to_a_minute() {
        let secs = Duration::from_secs;
        let table = [
            (Duration::ZERO, Duration::ZERO),
            (secs(2), Duration::from_millis(1600)),
            (secs(10), secs(8)),
            (secs(300), secs(240)),
            (secs(301), secs(241)),
            (secs(3600), secs(3540)),
            (secs(86_400), secs(86_340)),
            (Duration::MAX, MAX_TOKEN_LIFETIME - secs(60)),
        ];
        for (lifetime, renew) in table {
            assert_eq!(renew_after(lifetime), renew, "{lifetime:?}");
        }
    }

    /// A token endpoint the loopback policy refuses (a private IP literal): every fetch
    /// fails at once, without I/O, so time can be paused.
    fn refused_endpoint() -> (TokenAuth, crate::Deliverer) {
        let text = config(
            serde_json::json!({"type": "tokenEndpoint", "url": "http://10.0.0.1/auth/token",
                "username": "u", "password": "p"}),
            serde_json::json!({}),
        );
        let parsed = crate::TriggersConfig::parse(&text, ConfigFormat::Json).expect("parses");
        let label = TriggerLabel {
            index: 0,
            name: "0".into(),
            origin: "https://hooks.example.com".into(),
        };
        let auth = check(&label, &parsed.config[0], &mut Vec::new()).expect("valid");
        let deliverer = crate::Deliverer::new(crate::RetryBackoff::default()).expect("client");
        (auth, deliverer)
    }

    fn cached(header: &'static str, lifetime: Option<Duration>) -> Option<CachedToken> {
        let now = Instant::now();
        Some(CachedToken {
            header: HeaderValue::from_static(header),
            renew_at: lifetime.map(|lifetime| now + renew_after(lifetime)),
            expires_at: lifetime.map(|lifetime| now + lifetime),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_cached_token_is_used_until_renewal_and_a_failed_renewal_keeps_it_until_expiry() {
        let (auth, deliverer) = refused_endpoint();
        let timeout = Duration::from_secs(5);
        *auth.cache.lock().await = cached("Bearer one", Some(Duration::from_secs(10)));
        assert_eq!(
            auth.header(&deliverer, timeout, crate::TraceId::random())
                .await
                .expect("cached"),
            "Bearer one"
        );
        // Past the renewal point (8 s): the renewal fails, the token still lives.
        tokio::time::advance(Duration::from_millis(8_500)).await;
        assert_eq!(
            auth.header(&deliverer, timeout, crate::TraceId::random())
                .await
                .expect("kept"),
            "Bearer one"
        );
        // Past its expiry: the failure is the answer, and the token is dropped.
        tokio::time::advance(Duration::from_secs(2)).await;
        let err = auth
            .header(&deliverer, timeout, crate::TraceId::random())
            .await
            .expect_err("expired");
        assert!(matches!(err.kind, TokenErrorKind::Refused(_)), "{err}");
        assert_eq!(err.origin, "http://10.0.0.1");
        assert!(auth.cache.lock().await.is_none());

        // A token of unknown lifetime lives until a 401 invalidates it.
        *auth.cache.lock().await = cached("Bearer two", None);
        tokio::time::advance(Duration::from_secs(400 * 24 * 3600)).await;
        assert_eq!(
            auth.header(&deliverer, timeout, crate::TraceId::random())
                .await
                .expect("cached"),
            "Bearer two"
        );
        auth.invalidate(&HeaderValue::from_static("Bearer other"))
            .await;
        assert!(auth.cache.lock().await.is_some(), "another token: kept");
        auth.invalidate(&HeaderValue::from_static("Bearer two"))
            .await;
        assert!(auth.cache.lock().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_another_attempts_fetch_is_bounded_by_the_timeout() {
        let (auth, deliverer) = refused_endpoint();
        let held = auth.cache.lock().await;
        let err = auth
            .header(&deliverer, Duration::from_secs(3), crate::TraceId::random())
            .await
            .expect_err("the lock is held");
        assert_eq!(err.kind, TokenErrorKind::Timeout(Duration::from_secs(3)));
        drop(held);
    }

    fn config(auth: serde_json::Value, extra: serde_json::Value) -> String {
        let mut entry = serde_json::json!({
            "url": "https://hooks.example.com/x", "payloadTemplate": "{}", "auth": auth,
        });
        for (k, v) in extra.as_object().expect("object") {
            entry[k] = v.clone();
        }
        serde_json::json!({ "config": [entry] }).to_string()
    }

    fn errors_of(text: &str) -> Vec<String> {
        match validate(text, ConfigFormat::Json) {
            Ok(_) => Vec::new(),
            Err(ValidationErrors(errors)) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn both_kinds_parse_with_their_defaults_and_debug_shows_no_credential() {
        let text = config(
            serde_json::json!({"type": "oauth2ClientCredentials", "tokenUrl": "https://login.example.com/oauth/token?k=q1",
                "clientId": "id-7", "clientSecret": "s3cr3t-client"}),
            serde_json::json!({}),
        );
        let parsed = crate::TriggersConfig::parse(&text, ConfigFormat::Json).expect("parses");
        let Some(AuthConfig::Oauth2ClientCredentials {
            client_authentication,
            scope,
            ..
        }) = &parsed.config[0].auth
        else {
            panic!("oauth2: {parsed:?}");
        };
        assert_eq!(*client_authentication, ClientAuthentication::Basic);
        assert_eq!(scope, &None);
        let triggers = validate(&text, ConfigFormat::Json).expect("valid");
        for debug in [format!("{parsed:?}"), format!("{triggers:?}")] {
            assert!(debug.contains("https://login.example.com"), "{debug}");
            for secret in ["s3cr3t-client", "q1"] {
                assert!(!debug.contains(secret), "{secret}: {debug}");
            }
        }

        let text = config(
            serde_json::json!({"type": "tokenEndpoint", "url": "http://airflow.example.com:8080/auth/token",
                "username": "admin", "password": "pa55word"}),
            serde_json::json!({}),
        );
        let parsed = crate::TriggersConfig::parse(&text, ConfigFormat::Json).expect("parses");
        let Some(AuthConfig::TokenEndpoint { token_pointer, .. }) = &parsed.config[0].auth else {
            panic!("token endpoint: {parsed:?}");
        };
        assert_eq!(token_pointer, DEFAULT_TOKEN_POINTER);
        let debug = format!("{:?}", validate(&text, ConfigFormat::Json).expect("valid"));
        assert!(
            debug.contains("http://airflow.example.com:8080") && !debug.contains("pa55word"),
            "{debug}"
        );
    }

    #[test]
    fn unknown_fields_kinds_and_mistyped_secrets_are_refused_without_echoing_them() {
        for (auth, expect) in [
            (
                serde_json::json!({"type": "tokenEndpoint", "url": "https://a.example.com", "username": "u", "password": "p", "scopes": "x"}),
                "unknown field `scopes`",
            ),
            (
                serde_json::json!({"type": "apiKey", "url": "https://a.example.com"}),
                "unknown variant `apiKey`",
            ),
            (
                serde_json::json!({"url": "https://a.example.com", "username": "u", "password": "p"}),
                "missing field `type`",
            ),
            (
                serde_json::json!({"type": "tokenEndpoint", "url": "https://a.example.com", "username": "u", "password": 839201938475_u64}),
                AUTH_TYPE_ERROR,
            ),
            (
                serde_json::json!({"type": "oauth2ClientCredentials", "tokenUrl": "https://a.example.com", "clientId": "u", "clientSecret": ["839201938475"]}),
                AUTH_TYPE_ERROR,
            ),
            (serde_json::json!("839201938475"), AUTH_TYPE_ERROR),
            (
                serde_json::json!({"type": "oauth2ClientCredentials", "tokenUrl": "https://a.example.com", "clientId": "u", "clientSecret": "839201938475", "clientAuthentication": "header"}),
                "unknown variant `header`",
            ),
        ] {
            let errors = errors_of(&config(auth.clone(), serde_json::json!({})));
            let text = errors.join("\n");
            assert!(text.contains(expect), "{auth}: {text}");
            assert!(!text.contains("839201938475"), "{auth}: {text}");
        }
        let yaml = "config:\n  - url: https://x.example.com\n    payloadTemplate: '{}'\n    auth:\n      type: tokenEndpoint\n      url: https://a.example.com\n      username: u\n      password: [839201938475]\n";
        let err = validate(yaml, ConfigFormat::Yaml)
            .expect_err("wrong type")
            .to_string();
        assert!(!err.contains("839201938475"), "{err}");
    }

    #[test]
    fn token_authentication_per_trigger_is_checked_at_validation() {
        let long = "x".repeat(MAX_AUTH_FIELD_BYTES + 1);
        let at_bound = "x".repeat(MAX_AUTH_FIELD_BYTES);
        let oauth = |fields: serde_json::Value| {
            let mut auth = serde_json::json!({"type": "oauth2ClientCredentials",
                "tokenUrl": "https://login.example.com/token", "clientId": "id", "clientSecret": "hunter2"});
            for (k, v) in fields.as_object().expect("object") {
                auth[k] = v.clone();
            }
            auth
        };
        let login = |fields: serde_json::Value| {
            let mut auth = serde_json::json!({"type": "tokenEndpoint",
                "url": "https://airflow.example.com/auth/token", "username": "admin", "password": "hunter2"});
            for (k, v) in fields.as_object().expect("object") {
                auth[k] = v.clone();
            }
            auth
        };
        let none = serde_json::json!({});
        let origin = "trigger 0 (https://hooks.example.com)";
        let table = [
            (
                oauth(serde_json::json!({"tokenUrl": "ftp://login.example.com"})),
                none.clone(),
                vec![format!(
                    "{origin}: `auth.tokenUrl` is invalid: scheme must be http or https, not \"ftp\""
                )],
            ),
            (
                oauth(serde_json::json!({"tokenUrl": "/token"})),
                none.clone(),
                vec![format!(
                    "{origin}: `auth.tokenUrl` is invalid: not an absolute URL (relative URL without a base)"
                )],
            ),
            (
                oauth(serde_json::json!({"tokenUrl": "https://id:hunter2@login.example.com/"})),
                none.clone(),
                vec![format!(
                    "{origin}: `auth.tokenUrl` is invalid: has user info: give credentials in their own fields"
                )],
            ),
            (
                oauth(
                    serde_json::json!({"clientId": "", "clientSecret": long, "scope": "", "audience": long}),
                ),
                none.clone(),
                vec![
                    format!("{origin}: `auth.clientId` is invalid: is empty"),
                    format!(
                        "{origin}: `auth.clientSecret` is invalid: is 8193 bytes, but at most 8192 are allowed"
                    ),
                    format!("{origin}: `auth.scope` is invalid: is empty"),
                    format!(
                        "{origin}: `auth.audience` is invalid: is 8193 bytes, but at most 8192 are allowed"
                    ),
                ],
            ),
            (
                oauth(serde_json::json!({"tokenUrl": format!("https://login.example.com/{long}")})),
                none.clone(),
                vec![format!(
                    "{origin}: `auth.tokenUrl` is invalid: is 8219 bytes, but at most 8192 are allowed"
                )],
            ),
            (
                login(
                    serde_json::json!({"username": long, "password": "", "tokenPointer": "token"}),
                ),
                none.clone(),
                vec![
                    format!(
                        "{origin}: `auth.username` is invalid: is 8193 bytes, but at most 8192 are allowed"
                    ),
                    format!("{origin}: `auth.password` is invalid: is empty"),
                    format!(
                        "{origin}: `auth.tokenPointer` is invalid: is not a JSON pointer: it must be empty or start with `/`"
                    ),
                ],
            ),
            (
                login(serde_json::json!({"tokenPointer": "/a~2b", "url": "airflow"})),
                none.clone(),
                vec![
                    format!(
                        "{origin}: `auth.tokenPointer` is invalid: is not a JSON pointer: `~` must be followed by `0` or `1`"
                    ),
                    format!(
                        "{origin}: `auth.url` is invalid: not an absolute URL (relative URL without a base)"
                    ),
                ],
            ),
            (
                login(serde_json::json!({})),
                serde_json::json!({"headers": {"authorization": "Bearer hunter2"}}),
                vec![format!(
                    "{origin}: `headers` is invalid: sets `Authorization`, which `auth` sets itself: remove one of them"
                )],
            ),
            (
                login(serde_json::json!({})),
                serde_json::json!({"url": "https://ops:hunter2@hooks.example.com/x"}),
                vec![format!(
                    "{origin}: `url` is invalid: has user info, which would be sent as Basic credentials in place of `auth`'s token: remove one of them"
                )],
            ),
            // At the bounds, and the optional fields given.
            (
                oauth(
                    serde_json::json!({"clientId": at_bound, "clientSecret": at_bound, "scope": "read write",
                    "audience": "https://api.example.com", "clientAuthentication": "body"}),
                ),
                serde_json::json!({"headers": {"X-Other": "v"}}),
                vec![],
            ),
            (
                login(
                    serde_json::json!({"username": at_bound, "password": at_bound, "tokenPointer": "/data/tok~1en"}),
                ),
                none.clone(),
                vec![],
            ),
            (
                login(serde_json::json!({"tokenPointer": ""})),
                none.clone(),
                vec![],
            ),
        ];
        for (auth, extra, expect) in table {
            let errors = errors_of(&config(auth.clone(), extra));
            let shown: String = auth.to_string().chars().take(200).collect();
            assert_eq!(errors, expect, "{shown}");
            assert!(!errors.join("\n").contains("hunter2"));
        }
    }
}
