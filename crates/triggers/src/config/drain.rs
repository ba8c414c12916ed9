//! How a trigger's backlog of committed transactions drains when the runtime delivers in
//! decoupled mode (commits never wait on webhooks; see `triggers-runtime`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Default `maxInFlight` of a concurrent trigger.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 4;
/// Largest accepted `maxInFlight`: beyond this an endpoint is being load-tested, not
/// notified.
pub const MAX_MAX_IN_FLIGHT: u32 = 64;
/// Largest accepted `minIntervalSecs` of a coalesced trigger (one day).
pub const MAX_MIN_INTERVAL_SECS: u64 = 86_400;

/// How a trigger's pending webhooks are sent, as written in its config under `drain`.
///
/// Only decoupled delivery has a backlog to drain; in waiting mode each transaction's
/// webhooks are sent before the next transaction commits, whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum DrainConfig {
    /// One request in flight, strictly in commit order: each transaction gets its own
    /// webhook, and a receiver never sees a later one before an earlier one is accepted.
    // A struct variant, so that stray fields such as `maxInFlight` are refused.
    Ordered {},
    /// Up to `maxInFlight` requests at once, one per transaction; order is not promised.
    Concurrent {
        /// Requests in flight at most.
        #[serde(rename = "maxInFlight", default = "default_max_in_flight")]
        #[schemars(range(min = 1, max = MAX_MAX_IN_FLIGHT))]
        max_in_flight: u32,
    },
    /// Transactions that commit while a request is in flight (or within `minIntervalSecs`
    /// of the last one sent) are merged into one webhook (see
    /// [`crate::Variables::merge`]). A slow endpoint then never holds up commits: it gets
    /// fewer, wider webhooks. The default.
    Coalesced {
        /// Least time between two webhooks of this trigger, in seconds; 0 sends as soon
        /// as the previous one is accepted.
        #[serde(rename = "minIntervalSecs", default)]
        #[schemars(range(max = MAX_MIN_INTERVAL_SECS))]
        min_interval_secs: u64,
    },
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig::Coalesced {
            min_interval_secs: 0,
        }
    }
}

fn default_max_in_flight() -> u32 {
    DEFAULT_MAX_IN_FLIGHT
}

/// A checked [`DrainConfig`]: what the runtime's delivery workers follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// One request at a time, in commit order.
    Ordered,
    /// Up to this many requests at once (at least 1).
    Concurrent(u32),
    /// Pending transactions merged into one webhook, sent at most once per interval.
    Coalesced {
        /// Least time between two sends.
        min_interval: Duration,
    },
}

impl Drain {
    /// Requests this trigger may have in flight at once.
    pub fn max_in_flight(self) -> usize {
        match self {
            Drain::Ordered | Drain::Coalesced { .. } => 1,
            Drain::Concurrent(n) => n as usize,
        }
    }

    /// Whether new transactions merge into a pending webhook instead of queueing.
    pub fn coalesces(self) -> bool {
        matches!(self, Drain::Coalesced { .. })
    }

    /// The name used in configs, logs and status: `ordered`, `concurrent` or `coalesced`.
    pub fn as_str(self) -> &'static str {
        match self {
            Drain::Ordered => "ordered",
            Drain::Concurrent(_) => "concurrent",
            Drain::Coalesced { .. } => "coalesced",
        }
    }
}

/// What happens to a trigger's backlog when one of its webhooks fails for good (its
/// retries spent), as written in its config under `onFailure`. Decoupled delivery only:
/// in waiting mode a failed webhook always stops the shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnFailure {
    /// The backlog stops, and with it the shard's commits, until an operator retries or
    /// skips the delivery: nothing is sent out of order or given up without a person
    /// deciding.
    #[default]
    Stop,
    /// The failed delivery stays FAILED in the ledger as a dead letter, its variables
    /// kept there for a retry or a replay, and the backlog goes on with the next ones
    /// (in order among the rest): for receivers where a late webhook is worth less than
    /// a stalled materialization.
    DeadLetter,
}
