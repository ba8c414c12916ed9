//! Stage 3, send: every trigger's webhook over HTTP, with its headers, signature and
//! token, retried by policy, to addresses the network policy allows.

/// Backoff between attempts: capped exponential with full jitter.
pub(crate) mod backoff_policy;
/// Concurrent delivery of a transaction's triggers; the attempt loop.
pub(crate) mod deliver;
/// The SSRF guard: address classes, the filtering resolver, redirect limits.
pub(crate) mod network_policy;
/// A bound on the requests in flight to one origin, per process.
pub(crate) mod origin_limit;
/// Retry classification of one attempt, and `Retry-After`.
pub(crate) mod retry;
/// Standard Webhooks signatures (`webhook-signature`).
pub(crate) mod signing;
/// One marked test webhook of one trigger, and its report.
pub(crate) mod test_fire;
/// Bearer tokens from a token endpoint (`auth`): config, checks, cache and renewal.
pub(crate) mod token_auth;
/// W3C Trace Context: the `traceparent` of every request.
pub(crate) mod trace_context;
/// The headers every request carries, and why it was sent.
pub(crate) mod webhook_headers;
/// The stable `webhook-id` a receiver dedupes on.
pub(crate) mod webhook_id;
