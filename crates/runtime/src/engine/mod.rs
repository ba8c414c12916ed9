//! One delivery engine per [`DeliveryMode`], behind one interface: the shard checks the
//! protocol and keeps its phase; the engine writes the commit and delivers.
//!
//! - [`waiting`]: StartCommit writes the checkpoint and the transaction's variables under
//!   one key; Acknowledged delivers them and deletes the key.
//! - [`decoupled`]: StartCommit writes each trigger's backlog entry with the checkpoint;
//!   Acknowledged lets the backlog's workers send them, and returns at once.
//!
//! The interface, in the order a transaction goes through it: [`Engine::failure`] and
//! [`Engine::wait_for_room`] before the commit (they change nothing),
//! [`Engine::start_commit`], [`Engine::acknowledged`], then [`Engine::close`]; status
//! calls ([`Engine::status`], [`Engine::handle`], [`Engine::drained`]) at any time.

mod decoupled;
mod waiting;

use crate::backlog::{
    BacklogError, BacklogHandle, BacklogSetup, BacklogStatus, Merging, Recovered,
};
use crate::config::DeliveryMode;
use crate::error::ShardError;
use crate::store::KeyOp;
use std::time::Duration;
use triggers::{Delivered, Variables};
use triggers_proto::Checkpoint;

/// What an Acknowledged acknowledges, from the shard's phase.
pub(crate) struct Acknowledge {
    /// It is the recovered checkpoint's (the first after open): what it sends may have
    /// been sent before the stop.
    pub(crate) recovered: bool,
    /// The shard's phase says trigger variables are persisted and await delivery.
    pub(crate) pending: bool,
    /// The variables of the commit it acknowledges, if it wrote any.
    pub(crate) committed: Option<Variables>,
}

/// What an engine did at Acknowledged.
pub(crate) struct Acked {
    /// The variables whose webhooks were sent (waiting) or queued (decoupled), if any.
    pub(crate) variables: Option<Variables>,
    /// The webhooks delivered, in config order (waiting delivery only).
    pub(crate) delivered: Vec<Delivered>,
    /// Backlog entries waiting now (decoupled delivery only).
    pub(crate) queued: Option<usize>,
}

impl Acked {
    /// Nothing was sent or queued.
    fn nothing() -> Self {
        Acked {
            variables: None,
            delivered: Vec::new(),
            queued: None,
        }
    }
}

/// The delivery engine of one shard.
pub(crate) enum Engine {
    /// [`DeliveryMode::Waiting`].
    Waiting(waiting::Waiting),
    /// [`DeliveryMode::Decoupled`].
    Decoupled(decoupled::Decoupled),
}

/// Calls the same method on whichever engine runs.
macro_rules! each {
    ($engine:expr, $e:ident => $call:expr) => {
        match $engine {
            Engine::Waiting($e) => $call,
            Engine::Decoupled($e) => $call,
        }
    };
}

/// A commit prepared for the host's WriteBatch: its writes, and (decoupled delivery) the
/// plan that applies them in memory once the host says they landed; dropped without
/// [`HostPlan::landed`], it applies nothing and clears the plan's marks.
pub(crate) struct HostPlan {
    pub(crate) ops: Vec<KeyOp>,
    pub(crate) merging: Option<Merging<'static>>,
}

impl HostPlan {
    /// The writes, with full keys.
    pub(crate) fn ops(&self) -> &[KeyOp] {
        &self.ops
    }

    /// The writes landed: apply them in memory.
    pub(crate) fn landed(self) {
        if let Some(merging) = self.merging {
            merging.landed();
        }
    }
}

impl Engine {
    /// Starts the engine of `mode` over what recovery found: decoupled delivery loads the
    /// backlog and starts its workers; waiting delivery keeps a backlog a decoupled run
    /// left, to drain at the first Acknowledged ([`crate::migrations::Leftover`]).
    pub(crate) fn start(mode: DeliveryMode, setup: BacklogSetup, recovered: Recovered) -> Self {
        match mode {
            DeliveryMode::Waiting => Engine::Waiting(waiting::Waiting::start(setup, recovered)),
            DeliveryMode::Decoupled { backlog_limit } => {
                Engine::Decoupled(decoupled::Decoupled::start(setup, backlog_limit, recovered))
            }
        }
    }

    /// The mode it delivers in.
    pub(crate) fn mode(&self) -> DeliveryMode {
        each!(self, e => e.mode())
    }

    /// What stopped delivery, if anything: a StartCommit or Acknowledged is refused
    /// with it, the shard left as it was.
    pub(crate) fn failure(&self) -> Option<BacklogError> {
        each!(self, e => e.failure())
    }

    /// Waits until the commit of `variables` fits (backpressure). Cancel-safe: dropping
    /// it writes nothing.
    pub(crate) async fn wait_for_room(
        &self,
        variables: Option<&Variables>,
    ) -> Result<(), BacklogError> {
        each!(self, e => e.wait_for_room(variables).await)
    }

    /// StartCommit's write: the checkpoint and the transaction's variables, if any, in
    /// one WriteBatch. Not cancel-safe: dropped, the write lands or not as a whole, and
    /// the caller cannot know which.
    pub(crate) async fn start_commit(
        &mut self,
        checkpoint: Checkpoint,
        variables: Option<&Variables>,
    ) -> Result<(), ShardError> {
        each!(self, e => e.start_commit(checkpoint, variables).await)
    }

    /// StartCommit whose write the host makes: the writes of [`Engine::start_commit`]
    /// but the checkpoint (the host's), and what applies them in memory once landed.
    /// Writes nothing.
    pub(crate) async fn prepare_commit(
        &mut self,
        variables: Option<&Variables>,
    ) -> Result<HostPlan, ShardError> {
        each!(self, e => e.prepare_commit(variables).await)
    }

    /// Acknowledged: delivers (waiting) or queues (decoupled) what `ack` acknowledges.
    /// Cancel safety: decoupled delivery does not wait; waiting delivery dropped during
    /// delivery or the delete leaves the variables persisted, to fire again at reopen.
    pub(crate) async fn acknowledged(&mut self, ack: Acknowledge) -> Result<Acked, ShardError> {
        each!(self, e => e.acknowledged(ack).await)
    }

    /// Stops delivery, letting requests in flight finish for up to `grace`.
    pub(crate) async fn close(self, grace: Duration) {
        each!(self, e => e.close(grace).await)
    }

    /// The backlog's state, if one runs.
    pub(crate) fn status(&self) -> Option<BacklogStatus> {
        each!(self, e => e.status())
    }

    /// A handle on the backlog, if one runs.
    pub(crate) fn handle(&self) -> Option<BacklogHandle> {
        each!(self, e => e.handle())
    }

    /// Webhooks queued and not yet delivered, across every trigger.
    pub(crate) fn queued(&self) -> usize {
        each!(self, e => e.queued())
    }

    /// Waits until every acknowledged webhook is delivered, or delivery stopped.
    /// Cancel-safe: it only watches.
    pub(crate) async fn drained(&self) -> Result<(), BacklogError> {
        each!(self, e => e.drained().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backlog::LedgerRetention;
    use crate::shard_store::ShardStore;
    use crate::store::Durability;
    use std::sync::Arc;
    use triggers::{ConfigFormat, Deliverer, NetworkPolicy, RetryBackoff};

    #[tokio::test]
    async fn one_engine_per_delivery_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ShardStore::open(dir.path().to_path_buf(), Durability::Synced)
            .await
            .expect("opens");
        let setup = || BacklogSetup {
            store: store.clone(),
            triggers: Arc::new(
                triggers::validate("config: []", ConfigFormat::Yaml).expect("valid"),
            ),
            deliverer: Deliverer::with_policy(RetryBackoff::default(), NetworkPolicy::PUBLIC_ONLY)
                .expect("client"),
            retention: LedgerRetention::default(),
            shard: "test".to_string(),
        };
        let decoupled = DeliveryMode::Decoupled { backlog_limit: 7 };
        for mode in [DeliveryMode::Waiting, decoupled] {
            let mut engine = Engine::start(mode, setup(), Recovered::default());
            assert_eq!(engine.mode(), mode);
            // Only decoupled delivery runs a backlog (waiting has none left to drain).
            assert_eq!(engine.status().is_some(), mode == decoupled);
            assert!(engine.failure().is_none());
            engine.wait_for_room(None).await.expect("room");
            engine
                .start_commit(Checkpoint::default(), None)
                .await
                .expect("commits");
            let acked = engine
                .acknowledged(Acknowledge {
                    recovered: false,
                    pending: false,
                    committed: None,
                })
                .await
                .expect("acknowledges");
            assert!(acked.variables.is_none() && acked.delivered.is_empty());
            assert_eq!(acked.queued, (mode == decoupled).then_some(0));
            engine.drained().await.expect("drained");
            engine.close(Duration::ZERO).await;
        }
        store.settle().await;
    }
}
