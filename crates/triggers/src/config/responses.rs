//! The response policy of a trigger: which statuses mean "the receiver already has this
//! webhook", and which are retried beyond the defaults.
//!
//! At-least-once delivery re-sends a webhook whenever an attempt may have arrived without
//! its answer reaching us (a client timeout, a broken connection, a crash with the request
//! in flight). Receivers such as Airflow dedupe on a key of their own (the `dag_run_id`)
//! and answer such a re-send with a status (409 Conflict), not with our headers; without
//! this policy that answer was a permanent failure that stopped the shard.
//!
//! A listed `alreadyDelivered` status counts as delivered only when the attempt re-sends
//! a webhook that may have arrived before; on a webhook never sent before, the receiver
//! claims a duplicate of something we did not send, so its idempotency key collides with
//! another request's, and counting that as delivered would lose the webhook silently.

use crate::config::validate::{TriggerLabel, ValidationError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most statuses in each list of `responses`.
pub const MAX_RESPONSE_STATUSES: usize = 16;
/// Smallest status `responses` may list: only 4xx statuses are the receiver's own
/// decision about this request (2xx are delivered, 5xx already retried).
pub const MIN_RESPONSE_STATUS: u16 = 400;
/// Largest status `responses` may list.
pub const MAX_RESPONSE_STATUS: u16 = 499;
/// Statuses `alreadyDelivered` may not list: they mean "authenticate" (401, 407) or
/// "come back later" (408, 429), never "I have it".
pub const NOT_ALREADY_DELIVERED: [u16; 4] = [401, 407, 408, 429];
/// Statuses `retry` may not list: the receiver (or a proxy) refused the credentials, and
/// sending them again cannot help; a trigger with `auth` renews its token once on a 401,
/// and a second 401 must fail for good.
pub const NOT_RETRIED: [u16; 2] = [401, 407];
/// The default `alreadyDelivered`: Airflow's answer to a second POST of one `dag_run_id`.
pub const DEFAULT_ALREADY_DELIVERED: [u16; 1] = [409];

/// What a trigger makes of a receiver's answers, as written under `responses`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResponsesConfig {
    /// 4xx statuses that mean "the receiver already has this webhook" (Airflow answers
    /// 409 to a second POST of the same `dag_run_id`). Counted as delivered ("already
    /// delivered") when the attempt re-sends a webhook that may have arrived before (a
    /// retry after a timed-out or broken attempt, a recovery re-fire, an operator's
    /// replay); on a webhook never sent before, a permanent failure (the receiver's
    /// idempotency key collides with another request's). `[]` opts out. Not 401, 407,
    /// 408 or 429.
    #[serde(default = "default_already_delivered")]
    #[schemars(
        length(max = MAX_RESPONSE_STATUSES),
        extend("uniqueItems" = true, "items" = {
            "type": "integer",
            "format": "uint16",
            "minimum": MIN_RESPONSE_STATUS,
            "maximum": MAX_RESPONSE_STATUS,
            "not": {"enum": NOT_ALREADY_DELIVERED},
        })
    )]
    pub already_delivered: Vec<u16>,
    /// 4xx statuses retried (with backoff) besides the default 408, 429 and 5xx, e.g.
    /// 423 Locked or 425 Too Early. A status may not be in both lists. Not 401 or 407.
    #[serde(default)]
    #[schemars(
        length(max = MAX_RESPONSE_STATUSES),
        extend("uniqueItems" = true, "items" = {
            "type": "integer",
            "format": "uint16",
            "minimum": MIN_RESPONSE_STATUS,
            "maximum": MAX_RESPONSE_STATUS,
            "not": {"enum": NOT_RETRIED},
        })
    )]
    pub retry: Vec<u16>,
}

impl Default for ResponsesConfig {
    fn default() -> Self {
        Self {
            already_delivered: default_already_delivered(),
            retry: Vec::new(),
        }
    }
}

fn default_already_delivered() -> Vec<u16> {
    DEFAULT_ALREADY_DELIVERED.to_vec()
}

/// A checked [`ResponsesConfig`]: one bit per status of 400–499 for each list, so the
/// verdict of an answer costs two shifts and no allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResponsePolicy {
    already_delivered: u128,
    retry: u128,
}

impl Default for ResponsePolicy {
    /// The policy of a trigger without `responses`.
    fn default() -> Self {
        Self {
            already_delivered: bits(&DEFAULT_ALREADY_DELIVERED),
            retry: 0,
        }
    }
}

impl ResponsePolicy {
    /// A policy of these lists, which must hold only statuses of 400–499 (tests build
    /// policies without a config).
    #[cfg(test)]
    pub(crate) fn from_lists(already_delivered: &[u16], retry: &[u16]) -> Self {
        Self {
            already_delivered: bits(already_delivered),
            retry: bits(retry),
        }
    }

    /// Whether `status` means "the receiver already has this webhook".
    pub(crate) fn already_delivered(self, status: u16) -> bool {
        has(self.already_delivered, status)
    }

    /// Whether `status` is retried besides the defaults.
    pub(crate) fn retries(self, status: u16) -> bool {
        has(self.retry, status)
    }
}

impl std::fmt::Debug for ResponsePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |set: u128| -> Vec<u16> {
            (MIN_RESPONSE_STATUS..=MAX_RESPONSE_STATUS)
                .filter(|s| has(set, *s))
                .collect()
        };
        f.debug_struct("ResponsePolicy")
            .field("already_delivered", &list(self.already_delivered))
            .field("retry", &list(self.retry))
            .finish()
    }
}

fn has(set: u128, status: u16) -> bool {
    let offset = status.wrapping_sub(MIN_RESPONSE_STATUS);
    offset <= MAX_RESPONSE_STATUS - MIN_RESPONSE_STATUS && set & (1 << offset) != 0
}

/// The set of statuses, which must all be within 400–499.
fn bits(statuses: &[u16]) -> u128 {
    statuses
        .iter()
        .fold(0, |set, s| set | 1 << (s - MIN_RESPONSE_STATUS))
}

/// Checks `responses` against its bounds, pushing one error per problem.
pub(crate) fn check_responses(
    label: &TriggerLabel,
    raw: &ResponsesConfig,
    errors: &mut Vec<ValidationError>,
) -> ResponsePolicy {
    let already_delivered = check_list(
        label,
        "alreadyDelivered",
        &raw.already_delivered,
        (
            &NOT_ALREADY_DELIVERED,
            "401 and 407 ask for credentials and 408 and 429 to come back later; \
             none of them means the receiver has the webhook",
        ),
        0,
        errors,
    );
    let retry = check_list(
        label,
        "retry",
        &raw.retry,
        (
            &NOT_RETRIED,
            "401 and 407 refuse the credentials, and sending them again cannot help \
             (a trigger with `auth` renews its token once on a 401)",
        ),
        already_delivered,
        errors,
    );
    ResponsePolicy {
        already_delivered,
        retry,
    }
}

/// One list's set; past [`MAX_RESPONSE_STATUSES`] entries, none is checked.
fn check_list(
    label: &TriggerLabel,
    list: &'static str,
    statuses: &[u16],
    (forbidden, forbidden_reason): (&[u16], &'static str),
    other: u128,
    errors: &mut Vec<ValidationError>,
) -> u128 {
    if statuses.len() > MAX_RESPONSE_STATUSES {
        errors.push(ValidationError::TooManyStatuses {
            trigger: label.clone(),
            field: list,
            count: statuses.len(),
            max: MAX_RESPONSE_STATUSES,
        });
        return 0;
    }
    let mut set = 0;
    for (position, &status) in statuses.iter().enumerate() {
        let problem = if !(MIN_RESPONSE_STATUS..=MAX_RESPONSE_STATUS).contains(&status) {
            Some("only 4xx statuses (400-499) can be listed")
        } else if forbidden.contains(&status) {
            Some(forbidden_reason)
        } else if has(set, status) {
            Some("listed twice")
        } else if has(other, status) {
            Some("also in `responses.alreadyDelivered`; a status has one meaning")
        } else {
            None
        };
        match problem {
            Some(reason) => errors.push(ValidationError::InvalidStatus {
                trigger: label.clone(),
                field: list,
                position,
                status,
                reason,
            }),
            None => set |= 1 << (status - MIN_RESPONSE_STATUS),
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_holds_exactly_the_listed_statuses() {
        let policy = ResponsePolicy {
            already_delivered: bits(&[400, 409, 499]),
            retry: bits(&[425]),
        };
        for status in [0, 200, 399, 408, 410, 500, 599, 64_000, u16::MAX] {
            assert!(!policy.already_delivered(status), "{status}");
            assert!(!policy.retries(status), "{status}");
        }
        for status in [400, 409, 499] {
            assert!(policy.already_delivered(status), "{status}");
        }
        assert!(policy.retries(425));
        assert_eq!(
            format!("{policy:?}"),
            "ResponsePolicy { already_delivered: [400, 409, 499], retry: [425] }"
        );
        assert!(ResponsePolicy::default().already_delivered(409));
        assert_eq!(ResponsePolicy::default().retry, 0);
    }
}
