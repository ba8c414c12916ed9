//! The library's values as the sidecar's wire enums (what the server sends and the
//! `triggers` tool prints) (`sidecar.proto`): one place maps
//! each, so a value the library gains and the wire lacks fails to compile here rather
//! than reaching a client as a string it does not know.

use triggers_proto::sidecar::{AttemptOutcome, DeliveryMode, DrainMode, ShardPhase};

/// How an attempt ended, for `TestFireResponse.outcome`.
pub fn attempt_outcome(outcome: triggers::AttemptOutcome) -> AttemptOutcome {
    match outcome {
        triggers::AttemptOutcome::Delivered => AttemptOutcome::Delivered,
        triggers::AttemptOutcome::AlreadyDelivered => AttemptOutcome::AlreadyDelivered,
        triggers::AttemptOutcome::Retryable => AttemptOutcome::Retryable,
        triggers::AttemptOutcome::Permanent => AttemptOutcome::Permanent,
    }
}

/// The shard's delivery mode, for `StatusResponse.delivery_mode`.
pub fn delivery_mode(mode: &triggers_runtime::DeliveryMode) -> DeliveryMode {
    match mode {
        triggers_runtime::DeliveryMode::Waiting => DeliveryMode::Waiting,
        triggers_runtime::DeliveryMode::Decoupled { .. } => DeliveryMode::Decoupled,
    }
}

/// A backlog queue's drain, for `BacklogQueue.drain`.
pub fn drain_mode(drain: &str) -> DrainMode {
    match drain {
        "ordered" => DrainMode::Ordered,
        "concurrent" => DrainMode::Concurrent,
        "coalesced" => DrainMode::Coalesced,
        _ => DrainMode::Unspecified,
    }
}

/// The open shard's phase, for `StatusResponse.phase`.
pub fn shard_phase(phase: &str) -> ShardPhase {
    match phase {
        "recovered" => ShardPhase::Recovered,
        "idle" => ShardPhase::Idle,
        "committed" => ShardPhase::Committed,
        _ => ShardPhase::Failed,
    }
}
