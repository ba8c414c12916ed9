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
pub fn drain_mode(drain: triggers::Drain) -> DrainMode {
    match drain {
        triggers::Drain::Ordered => DrainMode::Ordered,
        triggers::Drain::Concurrent(_) => DrainMode::Concurrent,
        triggers::Drain::Coalesced { .. } => DrainMode::Coalesced,
    }
}

/// The open shard's phase, for `StatusResponse.phase`. (The sidecar adds the phases it
/// sees from outside the shard: closed, delivering, committing, backpressured.)
pub fn shard_phase(phase: triggers_runtime::Phase) -> ShardPhase {
    match phase {
        triggers_runtime::Phase::Recovered => ShardPhase::Recovered,
        triggers_runtime::Phase::Idle => ShardPhase::Idle,
        triggers_runtime::Phase::Committed => ShardPhase::Committed,
        triggers_runtime::Phase::HostWriting => ShardPhase::Committing,
        triggers_runtime::Phase::Failed => ShardPhase::Failed,
    }
}
