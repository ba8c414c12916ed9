//! W3C Trace Context (level 1): the `traceparent` header every webhook request carries,
//! so a receiver that traces (Airflow, an OpenTelemetry-instrumented service) can join
//! its trace to ours.
//!
//! One delivery run (every attempt and retry of one trigger's webhook) is one trace; each
//! attempt is a span of it, and that span's id is the `traceparent`'s parent id. The ids
//! are fields of our own `tracing` spans too (`trace_id` on `deliver`, `span_id` on
//! `attempt`), so our log and the receiver's trace join on them. We start the trace, so
//! there is no `tracestate` to send, and a config may set neither header.
//!
//! Ids are drawn from `fastrand` (as the retry jitter is): W3C asks for ids that are
//! unique and random, not secret, and `fastrand`'s thread-local generators are seeded
//! from the process's random hasher keys. Both are drawn from non-zero ranges, since an
//! all-zero id is invalid.

use reqwest::header::{HeaderName, HeaderValue, InvalidHeaderValue};

/// The W3C Trace Context header naming the trace and the sender's span.
pub const TRACEPARENT: &str = "traceparent";
/// Vendor-specific trace state; we start every trace, so we never send one.
pub const TRACESTATE: &str = "tracestate";

pub(crate) const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static(TRACEPARENT);

/// Length of a level-1 `traceparent`: `00-` + 32 + `-` + 16 + `-01`.
const TRACEPARENT_LEN: usize = 55;

/// A W3C trace id: 16 random bytes, never all zero, written as 32 lowercase hex digits.
/// One per delivery run of one trigger's webhook.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

/// A W3C span (parent) id: 8 random bytes, never all zero, written as 16 lowercase hex
/// digits. One per attempt.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId([u8; 8]);

impl TraceId {
    /// A fresh random trace id.
    pub fn random() -> Self {
        Self(fastrand::u128(1..).to_be_bytes())
    }

    /// The id's bytes, as a ledger would store them.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }
}

impl SpanId {
    /// A fresh random span id.
    pub fn random() -> Self {
        Self(fastrand::u64(1..).to_be_bytes())
    }

    /// The id's bytes, as a ledger would store them.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0
    }
}

/// Writes `bytes` as lowercase hex into `out`, which is twice as long.
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

/// Writes `bytes` as lowercase hex to a formatter, without allocating.
fn write_hex<const N: usize>(bytes: &[u8], f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    let mut buf = [0u8; N];
    hex_into(bytes, &mut buf);
    // Hex digits are ASCII.
    f.write_str(std::str::from_utf8(&buf).map_err(|_| std::fmt::Error)?)
}

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_hex::<32>(&self.0, f)
    }
}

impl std::fmt::Debug for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl std::fmt::Display for SpanId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_hex::<16>(&self.0, f)
    }
}

impl std::fmt::Debug for SpanId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// The trace context of one attempt: its delivery's trace and its own span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The delivery run's trace.
    pub trace_id: TraceId,
    /// The attempt's span: the `traceparent`'s parent id.
    pub span_id: SpanId,
}

impl TraceParent {
    /// The `traceparent` value, `00-<trace id>-<span id>-01` (version 0, sampled),
    /// formatted on the stack: the only allocation is the header value's own.
    pub(crate) fn header_value(&self) -> Result<HeaderValue, InvalidHeaderValue> {
        HeaderValue::from_bytes(&self.to_ascii())
    }

    fn to_ascii(self) -> [u8; TRACEPARENT_LEN] {
        let mut buf = *b"00-________________________________-________________-01";
        hex_into(&self.trace_id.0, &mut buf[3..35]);
        hex_into(&self.span_id.0, &mut buf[36..52]);
        buf
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.to_ascii()).map_err(|_| std::fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_formatted_as_w3c_level_1() {
        // The example of the W3C recommendation.
        let parent = TraceParent {
            trace_id: TraceId(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128.to_be_bytes()),
            span_id: SpanId(0x00f0_67aa_0ba9_02b7_u64.to_be_bytes()),
        };
        let expect = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parent.to_string(), expect);
        assert_eq!(parent.header_value().expect("ASCII"), expect);
        assert_eq!(
            parent.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parent.span_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(format!("{:?}", parent.span_id), "SpanId(00f067aa0ba902b7)");
    }

    #[test]
    fn traceparent_ids_are_random_and_never_zero() {
        let ids: std::collections::HashSet<[u8; 16]> =
            (0..1000).map(|_| TraceId::random().to_bytes()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(!ids.contains(&[0; 16]));
        assert!((0..1000).all(|_| SpanId::random().to_bytes() != [0; 8]));
    }
}
