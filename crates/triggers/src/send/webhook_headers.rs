//! The headers every webhook request carries, and why a request is sent.
//!
//! `webhook-id`, `webhook-timestamp` and `webhook-signature` are the Standard Webhooks
//! headers, so receivers can dedupe and verify with an off-the-shelf library.
//! `webhook-attempt` and `webhook-reason` are ours: they tell a receiver (and whoever
//! reads its logs) whether a request is a retry or a re-fire, which plain dedupe cannot.

/// Stable id of the webhook (see [`crate::webhook_id`]): the same on every attempt and
/// every re-fire of one trigger of one transaction.
pub const WEBHOOK_ID: &str = "webhook-id";
/// Unix seconds when the attempt was sent; signed, so a receiver can refuse old replays.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// `v1,<base64>` signatures, space-separated, one per signing secret; absent without one.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
/// 1-based number of the attempt within this delivery.
pub const WEBHOOK_ATTEMPT: &str = "webhook-attempt";
/// Why the request is sent: a [`SendReason`] for the first attempt, `retry` after it.
pub const WEBHOOK_REASON: &str = "webhook-reason";

/// Every header the deliverer sets itself (and `tracestate`, which belongs to the trace
/// the deliverer starts); a config may not set them.
pub(crate) const DELIVERER_HEADERS: [&str; 7] = [
    WEBHOOK_ID,
    WEBHOOK_TIMESTAMP,
    WEBHOOK_SIGNATURE,
    WEBHOOK_ATTEMPT,
    WEBHOOK_REASON,
    crate::send::trace_context::TRACEPARENT,
    crate::send::trace_context::TRACESTATE,
];

/// Why a delivery's first attempt is made. Retries within the delivery are sent as
/// `retry`; the caller knows the rest, so it says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SendReason {
    /// The transaction was just acknowledged: the normal case.
    #[default]
    FirstSend,
    /// A restart found the transaction's webhooks still pending (the process stopped
    /// during or before their delivery), so they may have been received already.
    RecoveryRefire,
    /// An operator asked for the webhooks to be sent again.
    OperatorReplay,
    /// An operator sent one test webhook ([`crate::Deliverer::test_fire`]) with
    /// placeholder or given variables: it announces no real transaction, so a receiver
    /// should answer it but act on nothing.
    TestFire,
}

impl SendReason {
    /// The `webhook-reason` value of this reason.
    pub fn as_str(self) -> &'static str {
        match self {
            SendReason::FirstSend => "first-send",
            SendReason::RecoveryRefire => "recovery-refire",
            SendReason::OperatorReplay => "operator-replay",
            SendReason::TestFire => "test-fire",
        }
    }
}

/// The `webhook-reason` value of a retry within a delivery.
pub(crate) const RETRY_REASON: &str = "retry";

impl std::fmt::Display for SendReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
