//! One request to a token endpoint, and what its answer means.

use super::{
    ClientAuthentication, Fetched, MAX_ERROR_CODE_CHARS, MAX_TOKEN_BYTES, MAX_TOKEN_LIFETIME,
    MAX_TOKEN_RESPONSE_BYTES, TokenAuth, TokenErrorKind, TokenRequest,
};
use crate::Deliverer;
use crate::send::retry::Attempt;
use base64::Engine as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

impl TokenAuth {
    /// Asks the endpoint for a token, through the deliverer's client (so under its
    /// network policy, without redirects), by `deadline`; `timeout` is the trigger's,
    /// for errors to name.
    pub(super) async fn fetch(
        &self,
        deliverer: &Deliverer,
        deadline: Instant,
        timeout: Duration,
        trace: crate::TraceId,
    ) -> Result<Fetched, TokenErrorKind> {
        if let Err(refusal) = deliverer.policy().check_url(&self.url) {
            return Err(TokenErrorKind::Refused(refusal));
        }
        let mut headers = HeaderMap::with_capacity(4);
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        // A span of its own in the attempt's trace.
        let traceparent = crate::TraceParent {
            trace_id: trace,
            span_id: crate::SpanId::random(),
        };
        if let Ok(value) = traceparent.header_value() {
            headers.insert(crate::send::trace_context::TRACEPARENT_HEADER, value);
        }
        let body = match &self.request {
            TokenRequest::ClientCredentials {
                client_id,
                client_secret,
                scope,
                audience,
                client_authentication,
            } => {
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                );
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "client_credentials");
                if let Some(scope) = scope {
                    form.append_pair("scope", scope);
                }
                if let Some(audience) = audience {
                    form.append_pair("audience", audience);
                }
                match client_authentication {
                    ClientAuthentication::Basic => {
                        // RFC 6749 2.3.1: id and secret are form-encoded, then joined by `:`.
                        let encode = |s: &str| {
                            url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                        };
                        let pair =
                            format!("{}:{}", encode(client_id), encode(client_secret.expose()));
                        let basic = format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD.encode(pair)
                        );
                        let mut value = HeaderValue::try_from(basic)
                            .map_err(|err| TokenErrorKind::InvalidRequest(err.to_string()))?;
                        value.set_sensitive(true);
                        headers.insert(AUTHORIZATION, value);
                    }
                    ClientAuthentication::Body => {
                        form.append_pair("client_id", client_id);
                        form.append_pair("client_secret", client_secret.expose());
                    }
                }
                form.finish()
            }
            TokenRequest::Login {
                username, password, ..
            } => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                serde_json::json!({"username": username, "password": password.expose()}).to_string()
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TokenErrorKind::Timeout(timeout));
        }
        let request = deliverer
            .client()
            .post(self.url.clone())
            .headers(headers)
            .timeout(left)
            .body(body)
            .build()
            .map_err(|err| transport_error(err, timeout))?;
        let response = deliverer
            .client()
            .execute(request)
            .await
            .map_err(|err| transport_error(err, timeout))?;
        let status = response.status().as_u16();
        let body = read_bounded(response, status, timeout).await?;
        let pointer = match &self.request {
            TokenRequest::ClientCredentials { .. } => super::DEFAULT_TOKEN_POINTER,
            TokenRequest::Login { pointer, .. } => pointer.as_str(),
        };
        parse_answer(status, &body, pointer, SystemTime::now())
    }
}

/// A reqwest error as a token error, classified as a webhook attempt's would be (so a
/// network-policy refusal found by the resolver is a refusal, not a connect error).
fn transport_error(err: reqwest::Error, timeout: Duration) -> TokenErrorKind {
    match crate::send::deliver::transport_attempt(err) {
        Attempt::Timeout => TokenErrorKind::Timeout(timeout),
        Attempt::Connect(message) => TokenErrorKind::Connect(message),
        Attempt::Transport(message) => TokenErrorKind::Transport(message),
        Attempt::Refused(refusal) => TokenErrorKind::Refused(refusal),
        Attempt::Invalid(message) | Attempt::Redirect(message) => {
            TokenErrorKind::InvalidRequest(message)
        }
        // Not made from a reqwest error; listed so the match stays exhaustive.
        Attempt::Token(err) => err.kind,
        Attempt::Status { code, .. } => TokenErrorKind::Status {
            status: code,
            error: None,
        },
    }
}

/// The body, at most [`MAX_TOKEN_RESPONSE_BYTES`]: a longer one (announced or sent) is
/// an error, and reading stops there.
async fn read_bounded(
    mut response: reqwest::Response,
    status: u16,
    timeout: Duration,
) -> Result<Vec<u8>, TokenErrorKind> {
    let too_large = TokenErrorKind::BodyTooLarge {
        status,
        max: MAX_TOKEN_RESPONSE_BYTES,
    };
    if response
        .content_length()
        .is_some_and(|length| length > MAX_TOKEN_RESPONSE_BYTES as u64)
    {
        return Err(too_large);
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_TOKEN_RESPONSE_BYTES {
                    return Err(too_large);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            // A failing body of an error status is still that status.
            Err(_) if !(200..300).contains(&status) => return Ok(Vec::new()),
            Err(err) => return Err(transport_error(err, timeout)),
        }
    }
}

/// What a token endpoint's answer means: a `Bearer` header value and the token's
/// lifetime (`None`: unknown), or why there is none. `now` is the wall clock, used only
/// for a JWT with `exp` but no `iat`.
pub(super) fn parse_answer(
    status: u16,
    body: &[u8],
    pointer: &str,
    now: SystemTime,
) -> Result<Fetched, TokenErrorKind> {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if !(200..300).contains(&status) {
        // RFC 6749 5.2: `error` is ASCII without `"` and `\`; anything else is not shown.
        let error = json
            .as_ref()
            .and_then(|json| json.get("error"))
            .and_then(serde_json::Value::as_str)
            .filter(|code| is_short_code(code))
            .map(str::to_string);
        return Err(TokenErrorKind::Status { status, error });
    }
    let json = json.ok_or(TokenErrorKind::NotJson { status })?;
    let token = match json.pointer(pointer) {
        None | Some(serde_json::Value::Null) => {
            return Err(TokenErrorKind::NoToken {
                status,
                pointer: pointer.to_string(),
            });
        }
        Some(serde_json::Value::String(token)) if !token.is_empty() => token,
        Some(other) => {
            return Err(TokenErrorKind::NotAString {
                status,
                pointer: pointer.to_string(),
                found: json_kind(other),
            });
        }
    };
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenErrorKind::TokenTooLong {
            status,
            bytes: token.len(),
            max: MAX_TOKEN_BYTES,
        });
    }
    if let Some(token_type) = json.get("token_type").and_then(serde_json::Value::as_str)
        && !token_type.eq_ignore_ascii_case("bearer")
    {
        return Err(TokenErrorKind::NotBearer {
            status,
            token_type: if is_short_code(token_type) {
                token_type.to_string()
            } else {
                "<not shown>".to_string()
            },
        });
    }
    let mut header = HeaderValue::try_from(format!("Bearer {token}"))
        .map_err(|_| TokenErrorKind::InvalidToken { status })?;
    header.set_sensitive(true);
    let lifetime = expires_in(json.get("expires_in")).or_else(|| jwt_lifetime(token, now));
    Ok(Fetched {
        header,
        lifetime: lifetime.map(|lifetime| lifetime.min(MAX_TOKEN_LIFETIME)),
    })
}

/// An RFC 6749 `error` code (or `token_type`) short and plain enough to quote.
fn is_short_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= MAX_ERROR_CODE_CHARS
        && code
            .bytes()
            .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5b | 0x5d..=0x7e))
}

/// `expires_in` in seconds: a non-negative number, or a string of one (some servers
/// quote it). Anything else is no lifetime.
fn expires_in(value: Option<&serde_json::Value>) -> Option<Duration> {
    let seconds = match value? {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    seconds_to_duration(seconds)
}

fn seconds_to_duration(seconds: f64) -> Option<Duration> {
    if seconds.is_nan() {
        return None;
    }
    // Negative: already expired, so renewed at once; huge: the cap applies.
    Some(Duration::from_secs_f64(
        seconds.clamp(0.0, MAX_TOKEN_LIFETIME.as_secs_f64()),
    ))
}

/// The lifetime a JWT's claims give, unverified (we are its bearer, not its audience):
/// `exp - iat` when both are there (immune to clock skew between us and the issuer),
/// else `exp - now`. `None` when the token is not a JWT or has no numeric `exp`.
fn jwt_lifetime(token: &str, now: SystemTime) -> Option<Duration> {
    let mut parts = token.split('.');
    let (_header, claims, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&claims).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    let start = match claims.get("iat").and_then(serde_json::Value::as_f64) {
        Some(iat) => iat,
        None => now
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_secs_f64(),
    };
    seconds_to_duration(exp - start)
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "empty string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        triggers_receiver::jwt(&claims)
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn lifetime(body: serde_json::Value, pointer: &str) -> Option<Duration> {
        parse_answer(200, body.to_string().as_bytes(), pointer, at(1_000))
            .expect("a token")
            .lifetime
    }

    #[test]
    fn lifetimes_come_from_expires_in_then_the_jwts_exp() {
        let secs = Duration::from_secs;
        let tok = "/access_token";
        assert_eq!(
            lifetime(
                serde_json::json!({"access_token": "t", "expires_in": 3600}),
                tok
            ),
            Some(secs(3600))
        );
        assert_eq!(
            lifetime(
                serde_json::json!({"access_token": "t", "expires_in": "60"}),
                tok
            ),
            Some(secs(60))
        );
        assert_eq!(
            lifetime(
                serde_json::json!({"access_token": "t", "expires_in": -5}),
                tok
            ),
            Some(Duration::ZERO)
        );
        assert_eq!(
            lifetime(
                serde_json::json!({"access_token": "t", "expires_in": 1e300}),
                tok
            ),
            Some(MAX_TOKEN_LIFETIME)
        );
        assert_eq!(
            lifetime(serde_json::json!({"access_token": "t"}), tok),
            None
        );
        // exp - iat, whatever our clock says (here 1000 s past the epoch).
        let token = jwt(serde_json::json!({"sub": "admin", "iat": 5_000, "exp": 5_002}));
        assert_eq!(
            lifetime(serde_json::json!({"access_token": token}), tok),
            Some(secs(2))
        );
        // expires_in wins over the JWT.
        assert_eq!(
            lifetime(
                serde_json::json!({"access_token": token, "expires_in": 7}),
                tok
            ),
            Some(secs(7))
        );
        // No iat: exp - now.
        let token = jwt(serde_json::json!({"exp": 1_030}));
        assert_eq!(
            lifetime(serde_json::json!({"data": {"jwt": token}}), "/data/jwt"),
            Some(secs(30))
        );
        let token = jwt(serde_json::json!({"exp": 10}));
        assert_eq!(
            lifetime(serde_json::json!({"access_token": token}), tok),
            Some(Duration::ZERO)
        );
        for opaque in ["a.b.c", "not-a-jwt", "x.eyJleHAiOiJzb29uIn0.y", "a.b.c.d"] {
            assert_eq!(
                lifetime(serde_json::json!({"access_token": opaque}), tok),
                None,
                "{opaque}"
            );
        }
    }

    #[test]
    fn answers_without_a_usable_token_are_typed_errors_that_quote_no_value() {
        let parse =
            |status, body: &str| parse_answer(status, body.as_bytes(), "/access_token", at(0));
        let table = [
            (
                400,
                r#"{"error": "invalid_client", "error_description": "secret hunter2 is wrong"}"#,
                TokenErrorKind::Status {
                    status: 400,
                    error: Some("invalid_client".into()),
                },
            ),
            (
                401,
                r#"{"error": "has \"quotes\" hunter2"}"#,
                TokenErrorKind::Status {
                    status: 401,
                    error: None,
                },
            ),
            (
                503,
                "<html>hunter2</html>",
                TokenErrorKind::Status {
                    status: 503,
                    error: None,
                },
            ),
            (
                200,
                "<html>hunter2</html>",
                TokenErrorKind::NotJson { status: 200 },
            ),
            (
                201,
                r#"{"token": "hunter2"}"#,
                TokenErrorKind::NoToken {
                    status: 201,
                    pointer: "/access_token".into(),
                },
            ),
            (
                200,
                r#"{"access_token": 839201938475}"#,
                TokenErrorKind::NotAString {
                    status: 200,
                    pointer: "/access_token".into(),
                    found: "number",
                },
            ),
            (
                200,
                r#"{"access_token": ""}"#,
                TokenErrorKind::NotAString {
                    status: 200,
                    pointer: "/access_token".into(),
                    found: "empty string",
                },
            ),
            (
                200,
                r#"{"access_token": "hunter2", "token_type": "mac"}"#,
                TokenErrorKind::NotBearer {
                    status: 200,
                    token_type: "mac".into(),
                },
            ),
            (
                200,
                r#"{"access_token": "line\nbreak"}"#,
                TokenErrorKind::InvalidToken { status: 200 },
            ),
        ];
        for (status, body, expect) in table {
            let err = match parse(status, body) {
                Err(err) => err,
                Ok(_) => panic!("{body}: a token"),
            };
            assert_eq!(err, expect, "{body}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert!(!err.to_string().contains("839201938475"), "{err}");
        }
        let long = serde_json::json!({"access_token": "t".repeat(MAX_TOKEN_BYTES + 1)}).to_string();
        assert_eq!(
            parse(200, &long).err(),
            Some(TokenErrorKind::TokenTooLong {
                status: 200,
                bytes: MAX_TOKEN_BYTES + 1,
                max: MAX_TOKEN_BYTES
            })
        );
        let ok = parse(200, r#"{"access_token": "t0k", "token_type": "bearer"}"#).expect("a token");
        assert_eq!(ok.header, "Bearer t0k");
        assert!(ok.header.is_sensitive());
        assert!(!format!("{:?}", ok.header).contains("t0k"));
    }

    #[test]
    fn retryable_token_errors_are_those_a_later_attempt_can_fix() {
        let status = |status| TokenErrorKind::Status {
            status,
            error: None,
        };
        for retryable in [
            status(500),
            status(503),
            status(408),
            status(429),
            TokenErrorKind::Timeout(Duration::from_secs(1)),
            TokenErrorKind::Connect("refused".into()),
            TokenErrorKind::Transport("reset".into()),
        ] {
            assert!(retryable.is_retryable(), "{retryable}");
        }
        for permanent in [
            status(400),
            status(401),
            status(403),
            status(302),
            TokenErrorKind::NotJson { status: 200 },
            TokenErrorKind::BodyTooLarge {
                status: 200,
                max: 1,
            },
        ] {
            assert!(!permanent.is_retryable(), "{permanent}");
        }
    }
}
