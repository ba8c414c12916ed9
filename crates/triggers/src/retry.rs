//! What one delivery attempt came to, and whether to try again.

/// The outcome of one HTTP attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// The endpoint answered with this status.
    Status {
        /// HTTP status code.
        code: u16,
        /// The start of the response body, for errors.
        excerpt: String,
    },
    /// No complete answer within the trigger's timeout.
    Timeout,
    /// The connection could not be established.
    Connect(String),
    /// The connection broke mid-request (reset, closed, incomplete response).
    Transport(String),
    /// The request could not be built; trying again cannot help.
    Invalid(String),
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
        Attempt::Invalid(_) => Verdict::Fail,
    }
}

fn status_verdict(code: u16) -> Verdict {
    match code {
        200..=299 => Verdict::Delivered(code),
        // Request Timeout and Too Many Requests: the endpoint asks us to come back.
        408 | 429 => Verdict::Retry,
        500..=599 => Verdict::Retry,
        // Redirects are not followed: a 301/302 turns a POST into a GET, and a login page
        // answering 200 would mark an undelivered webhook as done.
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
    }
}
