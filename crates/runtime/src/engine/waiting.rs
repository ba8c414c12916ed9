//! Waiting delivery, the reference design: StartCommit writes the checkpoint and the
//! transaction's variables under one key (`trigger-params`); Acknowledged reads them
//! back, delivers every trigger's webhook, and deletes the key once all are accepted.

use super::{Acked, Acknowledge};
use crate::backlog::{BacklogError, BacklogHandle, BacklogSetup, BacklogStatus, Recovered};
use crate::config::DeliveryMode;
use crate::crash::crash_point;
use crate::error::ShardError;
use crate::migrations::Leftover;
use crate::shard_store::ShardStore;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;
use triggers::{Deliverer, SendReason, Triggers, Variables};
use triggers_proto::Checkpoint;

pub(crate) struct Waiting {
    store: ShardStore,
    triggers: Arc<Triggers>,
    deliverer: Deliverer,
    /// Names the shard in delivery spans.
    label: String,
    /// A backlog a decoupled run left, until the first Acknowledged drains it.
    leftover: Option<Leftover>,
}

impl Waiting {
    pub(super) fn start(setup: BacklogSetup, recovered: Recovered) -> Self {
        Waiting {
            store: setup.store.clone(),
            triggers: setup.triggers.clone(),
            deliverer: setup.deliverer.clone(),
            label: setup.shard.clone(),
            leftover: Leftover::start(setup, recovered),
        }
    }

    pub(super) fn mode(&self) -> DeliveryMode {
        DeliveryMode::Waiting
    }

    pub(super) fn failure(&self) -> Option<BacklogError> {
        self.leftover.as_ref().and_then(Leftover::failure)
    }

    /// Nothing to wait for: the next commit waits on the previous one's delivery.
    pub(super) async fn wait_for_room(
        &self,
        _variables: Option<&Variables>,
    ) -> Result<(), BacklogError> {
        Ok(())
    }

    pub(super) async fn start_commit(
        &mut self,
        checkpoint: Checkpoint,
        variables: Option<&Variables>,
    ) -> Result<(), ShardError> {
        let params = variables.map(Variables::to_params);
        Ok(self.store.commit(checkpoint, params).await?)
    }

    /// The single key's writes, for the host's WriteBatch.
    pub(super) async fn prepare_commit(
        &mut self,
        variables: Option<&Variables>,
    ) -> Result<super::HostPlan, ShardError> {
        let params = variables.map(Variables::to_params);
        let ops = self.store.commit_ops(params).await?;
        Ok(super::HostPlan { ops, merging: None })
    }

    /// Delivers the persisted variables, if any, then deletes them. At the recovered
    /// Acknowledged, a backlog a decoupled run left drains first.
    pub(super) async fn acknowledged(&mut self, ack: Acknowledge) -> Result<Acked, ShardError> {
        let mut pending = ack.pending;
        if let Some(leftover) = &self.leftover {
            leftover.drain().await?;
            if let Some(leftover) = self.leftover.take() {
                // Drained: nothing is in flight.
                leftover.close(Duration::ZERO).await;
            }
            pending = self.store.trigger_params().await?.is_some();
        }
        if !pending {
            return Ok(Acked::nothing());
        }
        // Read back what StartCommit persisted: delivery uses exactly the durable copy.
        let Some(params) = self.store.trigger_params().await? else {
            // Unreachable unless the store was edited underneath us; nothing to send.
            tracing::warn!("trigger params expected but absent from the store");
            return Ok(Acked::nothing());
        };
        let variables = Variables::from_params(params)?;
        // Recovered params may have been delivered before the crash: say so to receivers.
        let reason = if ack.recovered {
            SendReason::RecoveryRefire
        } else {
            SendReason::FirstSend
        };
        let delivered = self
            .deliverer
            .deliver_with_reason(&self.triggers, &variables, reason)
            .instrument(tracing::warn_span!("shard", shard = %self.label))
            .await
            .map_err(|source| ShardError::Delivery {
                flow_run_id: variables.flow_run_id.clone(),
                source,
            })?;

        crash_point!("acknowledged.before_delete");
        self.store.delete_delivered_params().await?;
        Ok(Acked {
            variables: Some(variables),
            delivered,
            queued: None,
        })
    }

    pub(super) async fn close(self, grace: Duration) {
        if let Some(leftover) = self.leftover {
            leftover.close(grace).await;
        }
    }

    pub(super) fn status(&self) -> Option<BacklogStatus> {
        self.leftover.as_ref().map(Leftover::status)
    }

    pub(super) fn handle(&self) -> Option<BacklogHandle> {
        self.leftover.as_ref().map(Leftover::handle)
    }

    pub(super) fn queued(&self) -> usize {
        self.leftover.as_ref().map_or(0, Leftover::depth)
    }

    pub(super) async fn drained(&self) -> Result<(), BacklogError> {
        match &self.leftover {
            Some(leftover) => leftover.drained().await,
            None => Ok(()),
        }
    }
}
