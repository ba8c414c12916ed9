//! What a shard is opened with: [`ShardConfig`] and its [`DeliveryMode`].

use crate::backlog::LedgerRetention;
use crate::store::Durability;
use std::sync::Arc;
use std::time::Duration;
use triggers::{
    AttemptObserver, Deliverer, Materialization, NetworkPolicy, RetryBackoff, Triggers,
};

/// What a shard needs besides its store directory.
///
/// Built with [`ShardConfig::new`] and the `with_` methods (fields may grow, so it is not
/// built from a struct literal outside this crate); its fields stay readable.
#[derive(Clone)]
#[non_exhaustive]
pub struct ShardConfig {
    /// The materialization the shard belongs to.
    pub materialization: Materialization,
    /// Its validated triggers; empty means nothing is persisted or delivered.
    pub triggers: Arc<Triggers>,
    /// How StartCommit makes its write durable.
    pub durability: Durability,
    /// Delays between delivery attempts.
    pub backoff: RetryBackoff,
    /// Which non-public destinations webhooks may reach ([`NetworkPolicy::PUBLIC_ONLY`] in
    /// production; tests and demos allow loopback).
    pub network: NetworkPolicy,
    /// Whether commits wait for webhooks or a persisted backlog decouples them.
    pub delivery: DeliveryMode,
    /// How long finished deliveries stay in the ledger (decoupled delivery).
    pub ledger: LedgerRetention,
    /// Told of every webhook attempt (metrics, say); `None` for nothing.
    pub attempt_observer: Option<Arc<dyn AttemptObserver>>,
    /// The HTTP client to send with, shared with the other shards of the process (one
    /// connection pool, not one per shard); its backoff and network policy apply, not
    /// `backoff` and `network`. `None`: the shard builds its own from those.
    pub deliverer: Option<Deliverer>,
}

impl ShardConfig {
    /// A shard of `materialization` firing `triggers`, with the production defaults:
    /// synced commits ([`Durability::Synced`]), the default [`RetryBackoff`], public
    /// destinations only ([`NetworkPolicy::PUBLIC_ONLY`]), decoupled delivery with a
    /// backlog of [`DEFAULT_BACKLOG_LIMIT`] entries per trigger, the default ledger
    /// retention, and no attempt observer.
    pub fn new(materialization: Materialization, triggers: Arc<Triggers>) -> Self {
        Self {
            materialization,
            triggers,
            durability: Durability::Synced,
            backoff: RetryBackoff::default(),
            network: NetworkPolicy::PUBLIC_ONLY,
            delivery: DeliveryMode::default(),
            ledger: LedgerRetention::default(),
            attempt_observer: None,
            deliverer: None,
        }
    }

    /// The same, making StartCommit's write durable as `durability` says.
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// The same, with `backoff` between delivery attempts.
    pub fn with_backoff(mut self, backoff: RetryBackoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The same, letting webhooks reach what `network` allows.
    pub fn with_network(mut self, network: NetworkPolicy) -> Self {
        self.network = network;
        self
    }

    /// The same, delivering as `delivery` says.
    pub fn with_delivery(mut self, delivery: DeliveryMode) -> Self {
        self.delivery = delivery;
        self
    }

    /// The same, keeping finished deliveries as `ledger` says.
    pub fn with_ledger(mut self, ledger: LedgerRetention) -> Self {
        self.ledger = ledger;
        self
    }

    /// The same, telling `observer` of every webhook attempt.
    pub fn with_attempt_observer(mut self, observer: Arc<dyn AttemptObserver>) -> Self {
        self.attempt_observer = Some(observer);
        self
    }

    /// The same, sending with `deliverer`: build one ([`Deliverer::with_policy`]) and
    /// give it to every shard of the process, so they share one HTTP client and its
    /// connection pool (a pool per shard is a connection per shard to one endpoint). Its
    /// backoff and network policy replace [`ShardConfig::backoff`] and
    /// [`ShardConfig::network`].
    pub fn with_deliverer(mut self, deliverer: Deliverer) -> Self {
        self.deliverer = Some(deliverer);
        self
    }
}

/// How long a planned close lets webhook requests in flight finish by default
/// ([`crate::Shard::close_within`]; the sidecar's `--shutdown-grace`).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Default [`DeliveryMode::Decoupled`] backlog limit, in entries per trigger.
pub const DEFAULT_BACKLOG_LIMIT: usize = 1000;

/// How webhooks relate to the transaction pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    /// Acknowledged delivers the transaction's webhooks and returns when all are
    /// accepted, so the next transaction waits on the slowest endpoint. One persisted key
    /// (`trigger-params`). The reference design.
    Waiting,
    /// Acknowledged hands the transaction's webhooks to a persisted per-trigger backlog,
    /// written in StartCommit's WriteBatch, that workers drain as each trigger's `drain`
    /// mode says; commits go on. StartCommit waits only when a backlog holds
    /// `backlog_limit` entries (backpressure). The default.
    Decoupled {
        /// Entries a trigger's backlog may hold before StartCommit waits (at least 1).
        backlog_limit: usize,
    },
}

impl DeliveryMode {
    /// The mode's name, as flags and status print it: `waiting` or `decoupled`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMode::Waiting => "waiting",
            DeliveryMode::Decoupled { .. } => "decoupled",
        }
    }
}

impl Default for DeliveryMode {
    fn default() -> Self {
        DeliveryMode::Decoupled {
            backlog_limit: DEFAULT_BACKLOG_LIMIT,
        }
    }
}
