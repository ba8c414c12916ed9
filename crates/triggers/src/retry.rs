//! What one delivery attempt came to, whether to try again, and when the endpoint asked
//! us to.

use crate::network_policy::Refusal;
use std::time::{Duration, SystemTime};

/// The outcome of one HTTP attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// The endpoint answered with this status.
    Status {
        /// HTTP status code.
        code: u16,
        /// The start of the response body, for errors.
        excerpt: String,
        /// How long the endpoint asked us to wait (`Retry-After` on a 429 or 503).
        retry_after: Option<Duration>,
    },
    /// No complete answer within the trigger's timeout.
    Timeout,
    /// The connection could not be established.
    Connect(String),
    /// The connection broke mid-request (reset, closed, incomplete response).
    Transport(String),
    /// The request could not be built; trying again cannot help.
    Invalid(String),
    /// The network policy refused the destination (or a redirect's).
    Refused(Refusal),
    /// A redirect could not be followed (too many hops, another scheme).
    Redirect(String),
    /// The trigger's token could not be had; the webhook was not sent.
    Token(crate::TokenError),
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The endpoint accepted the webhook with this status.
    Delivered(u16),
    /// A transient failure: try again after a backoff, if retries remain.
    Retry,
    /// A permanent failure: retrying would send the same request to the same refusal.
    Fail,
}

/// Classifies an attempt. Exhaustive by construction: a new outcome or an unlisted status
/// range does not compile rather than silently picking a side.
pub(crate) fn verdict(attempt: &Attempt) -> Verdict {
    match attempt {
        Attempt::Status { code, .. } => status_verdict(*code),
        Attempt::Timeout | Attempt::Connect(_) | Attempt::Transport(_) => Verdict::Retry,
        Attempt::Invalid(_) | Attempt::Refused(_) | Attempt::Redirect(_) => Verdict::Fail,
        Attempt::Token(err) if err.kind.is_retryable() => Verdict::Retry,
        Attempt::Token(_) => Verdict::Fail,
    }
}

/// The wait a `Retry-After` header asks for, in delay-seconds or as an HTTP-date (a date
/// in the past asks for no wait). Only 429 and 503 carry a meaningful one; anything that
/// does not parse is ignored, and the backoff applies.
pub(crate) fn retry_after(status: u16, value: Option<&str>, now: SystemTime) -> Option<Duration> {
    if !matches!(status, 429 | 503) {
        return None;
    }
    let value = value?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn status_verdict(code: u16) -> Verdict {
    match code {
        200..=299 => Verdict::Delivered(code),
        // Request Timeout and Too Many Requests: the endpoint asks us to come back.
        408 | 429 => Verdict::Retry,
        500..=599 => Verdict::Retry,
        // A redirect reaching here was not followed: a 301/302/303 turns a POST into a
        // GET and a login page answering 200 would mark an undelivered webhook as done,
        // so only 307/308 are ever followed, and only with `followRedirects`.
        0..=199 | 300..=399 => Verdict::Fail,
        400..=407 | 409..=428 | 430..=499 => Verdict::Fail,
        600..=u16::MAX => Verdict::Fail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        let table = [
            (200, Verdict::Delivered(200)),
            (201, Verdict::Delivered(201)),
            (204, Verdict::Delivered(204)),
            (299, Verdict::Delivered(299)),
            (100, Verdict::Fail),
            (301, Verdict::Fail),
            (302, Verdict::Fail),
            (307, Verdict::Fail),
            (400, Verdict::Fail),
            (401, Verdict::Fail),
            (403, Verdict::Fail),
            (404, Verdict::Fail),
            (407, Verdict::Fail),
            (408, Verdict::Retry),
            (409, Verdict::Fail),
            (422, Verdict::Fail),
            (428, Verdict::Fail),
            (429, Verdict::Retry),
            (430, Verdict::Fail),
            (499, Verdict::Fail),
            (500, Verdict::Retry),
            (502, Verdict::Retry),
            (503, Verdict::Retry),
            (504, Verdict::Retry),
            (599, Verdict::Retry),
            (600, Verdict::Fail),
        ];
        for (code, expect) in table {
            let attempt = Attempt::Status {
                code,
                excerpt: String::new(),
                retry_after: None,
            };
            assert_eq!(verdict(&attempt), expect, "HTTP {code}");
        }
    }

    #[test]
    fn transport_table() {
        assert_eq!(verdict(&Attempt::Timeout), Verdict::Retry);
        assert_eq!(verdict(&Attempt::Connect("refused".into())), Verdict::Retry);
        assert_eq!(verdict(&Attempt::Transport("reset".into())), Verdict::Retry);
        assert_eq!(verdict(&Attempt::Invalid("bad".into())), Verdict::Fail);
        assert_eq!(
            verdict(&Attempt::Redirect("too many".into())),
            Verdict::Fail
        );
        let refusal = Refusal {
            host: "localhost".into(),
            address: std::net::Ipv4Addr::LOCALHOST.into(),
            class: crate::network_policy::AddressClass::Loopback,
        };
        assert_eq!(verdict(&Attempt::Refused(refusal)), Verdict::Fail);
    }

    #[test]
    fn retry_after_table() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").expect("a date");
        let secs = |s| Some(Duration::from_secs(s));
        let table = [
            (429, Some("1"), secs(1)),
            (503, Some(" 120 "), secs(120)),
            (429, Some("Sun, 06 Nov 1994 08:49:40 GMT"), secs(3)),
            // RFC 850 and asctime forms are HTTP-dates too.
            (503, Some("Sunday, 06-Nov-94 08:50:37 GMT"), secs(60)),
            (503, Some("Sun Nov  6 08:49:38 1994"), secs(1)),
            (429, Some("Sun, 06 Nov 1994 08:00:00 GMT"), secs(0)),
            (429, Some("-5"), None),
            (429, Some("1.5"), None),
            (429, Some("soon"), None),
            (429, Some(""), None),
            (429, None, None),
            (500, Some("1"), None),
            (408, Some("1"), None),
        ];
        for (status, value, expect) in table {
            assert_eq!(
                retry_after(status, value, now),
                expect,
                "{status} {value:?}"
            );
        }
    }
}
