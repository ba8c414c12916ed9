//! What one delivery attempt came to, whether to try again, and when the endpoint asked
//! us to.

use crate::config::responses::ResponsePolicy;
use crate::send::network_policy::Refusal;
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
    /// The endpoint answered a status of `responses.alreadyDelivered` to a webhook that
    /// may have arrived before: it has it, so it is delivered.
    AlreadyDelivered(u16),
    /// A transient failure: try again after a backoff, if retries remain.
    Retry,
    /// A permanent failure: retrying would send the same request to the same refusal.
    Fail,
    /// The endpoint answered a status of `responses.alreadyDelivered` to a webhook never
    /// sent before: its idempotency key collides with another request's. Permanent, and
    /// never counted as delivered.
    AlreadyDeliveredOnFirstSend(u16),
}

/// Whether an earlier attempt of a delivery may have reached the receiver, so that a
/// receiver's "I have this already" is believable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MayHaveArrived(pub(crate) bool);

impl MayHaveArrived {
    /// After `attempt`: a timeout or a broken connection may have delivered the request
    /// (the receiver may have acted on it and its answer been lost); a refused
    /// connection, a refusal of ours or any HTTP answer did not deliver it unseen.
    pub(crate) fn after(self, attempt: &Attempt) -> Self {
        match attempt {
            Attempt::Timeout | Attempt::Transport(_) => MayHaveArrived(true),
            // No token, no webhook sent (or only one answered 401).
            Attempt::Status { .. }
            | Attempt::Connect(_)
            | Attempt::Invalid(_)
            | Attempt::Refused(_)
            | Attempt::Redirect(_)
            | Attempt::Token(_) => self,
        }
    }
}

/// Classifies an attempt under a trigger's response policy, knowing whether an earlier
/// attempt of the same webhook may have arrived. Exhaustive by construction: a new
/// outcome or an unlisted status range does not compile rather than silently picking a
/// side.
pub(crate) fn verdict(
    attempt: &Attempt,
    policy: ResponsePolicy,
    resent: MayHaveArrived,
) -> Verdict {
    match attempt {
        Attempt::Status { code, .. } => status_verdict(*code, policy, resent),
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

fn status_verdict(code: u16, policy: ResponsePolicy, resent: MayHaveArrived) -> Verdict {
    // The policy lists only 4xx statuses (validation), none of 401, 407, 408, 429 as
    // already delivered, and no status in both lists.
    if policy.already_delivered(code) {
        return match resent {
            MayHaveArrived(true) => Verdict::AlreadyDelivered(code),
            MayHaveArrived(false) => Verdict::AlreadyDeliveredOnFirstSend(code),
        };
    }
    if policy.retries(code) {
        return Verdict::Retry;
    }
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
            for resent in [MayHaveArrived(false), MayHaveArrived(true)] {
                assert_eq!(verdict(&attempt, none(), resent), expect, "HTTP {code}");
            }
        }
    }

    /// A policy that lists nothing: the defaults alone.
    fn none() -> ResponsePolicy {
        ResponsePolicy::from_lists(&[], &[])
    }

    fn status(code: u16) -> Attempt {
        Attempt::Status {
            code,
            excerpt: String::new(),
            retry_after: None,
        }
    }

    /// Issue 13, item 1: a listed "already delivered" status is a delivery only when the
    /// webhook may have arrived before, and a failure of its own otherwise; a listed
    /// retry status is retried; everything else keeps its default.
    #[test]
    fn response_policy_table() {
        let policy = ResponsePolicy::from_lists(&[409, 410], &[423, 425]);
        let (first, resent) = (MayHaveArrived(false), MayHaveArrived(true));
        let table = [
            (409, first, Verdict::AlreadyDeliveredOnFirstSend(409)),
            (409, resent, Verdict::AlreadyDelivered(409)),
            (410, first, Verdict::AlreadyDeliveredOnFirstSend(410)),
            (410, resent, Verdict::AlreadyDelivered(410)),
            (423, first, Verdict::Retry),
            (425, resent, Verdict::Retry),
            (422, resent, Verdict::Fail),
            (424, first, Verdict::Fail),
            (401, resent, Verdict::Fail),
            (408, first, Verdict::Retry),
            (429, resent, Verdict::Retry),
            (503, resent, Verdict::Retry),
            (200, resent, Verdict::Delivered(200)),
            (302, resent, Verdict::Fail),
        ];
        for (code, arrived, expect) in table {
            assert_eq!(
                verdict(&status(code), policy, arrived),
                expect,
                "HTTP {code}, {arrived:?}"
            );
        }
        // The default policy is `alreadyDelivered: [409]`.
        assert_eq!(
            verdict(&status(409), ResponsePolicy::default(), resent),
            Verdict::AlreadyDelivered(409)
        );
        assert_eq!(
            verdict(&status(409), none(), resent),
            Verdict::Fail,
            "`alreadyDelivered: []` opts out"
        );
    }

    /// Issue 13, item 1: only an attempt whose request may have reached the receiver
    /// unanswered (a timeout, a broken connection) makes a later "already delivered"
    /// believable; the flag never clears.
    #[test]
    fn response_policy_may_have_arrived_after() {
        let refusal = Refusal {
            host: "localhost".into(),
            address: std::net::Ipv4Addr::LOCALHOST.into(),
            class: crate::send::network_policy::AddressClass::Loopback,
        };
        let table = [
            (Attempt::Timeout, true),
            (Attempt::Transport("reset".into()), true),
            (Attempt::Connect("refused".into()), false),
            (status(503), false),
            (status(409), false),
            (status(200), false),
            (Attempt::Invalid("bad".into()), false),
            (Attempt::Redirect("too many".into()), false),
            (Attempt::Refused(refusal), false),
        ];
        for (attempt, arrived) in table {
            assert_eq!(
                MayHaveArrived(false).after(&attempt),
                MayHaveArrived(arrived),
                "{attempt:?}"
            );
            assert_eq!(
                MayHaveArrived(true).after(&attempt),
                MayHaveArrived(true),
                "{attempt:?}"
            );
        }
    }

    #[test]
    fn transport_table() {
        let verdict = |attempt: &Attempt| verdict(attempt, none(), MayHaveArrived(true));
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
            class: crate::send::network_policy::AddressClass::Loopback,
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
