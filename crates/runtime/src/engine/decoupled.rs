//! Decoupled delivery: StartCommit writes each trigger's backlog entry with the
//! checkpoint; Acknowledged lets the backlog's workers send them and returns at once
//! (see [`crate::backlog`]).

use super::{Acked, Acknowledge};
use crate::backlog::{
    Backlog, BacklogError, BacklogHandle, BacklogSetup, BacklogStatus, Recovered,
};
use crate::config::DeliveryMode;
use crate::error::ShardError;
use std::time::Duration;
use triggers::Variables;
use triggers_proto::Checkpoint;

pub(crate) struct Decoupled {
    backlog: Backlog,
    limit: usize,
}

impl Decoupled {
    pub(super) fn start(setup: BacklogSetup, limit: usize, recovered: Recovered) -> Self {
        Decoupled {
            backlog: Backlog::start(setup, limit, recovered),
            limit,
        }
    }

    pub(super) fn mode(&self) -> DeliveryMode {
        DeliveryMode::Decoupled {
            backlog_limit: self.limit,
        }
    }

    pub(super) fn failure(&self) -> Option<BacklogError> {
        self.backlog.failure()
    }

    /// Only a commit that adds entries waits.
    pub(super) async fn wait_for_room(
        &self,
        variables: Option<&Variables>,
    ) -> Result<(), BacklogError> {
        match variables {
            Some(variables) => self.backlog.wait_for_room(variables).await,
            None => Ok(()),
        }
    }

    pub(super) async fn start_commit(
        &mut self,
        checkpoint: Checkpoint,
        variables: Option<&Variables>,
    ) -> Result<(), ShardError> {
        Ok(self.backlog.commit(checkpoint, variables).await?)
    }

    pub(super) async fn prepare_commit(
        &mut self,
        variables: Option<&Variables>,
    ) -> Result<super::HostPlan, ShardError> {
        let Some(variables) = variables else {
            return Ok(super::HostPlan {
                ops: Vec::new(),
                merging: None,
            });
        };
        let (merging, ops) = self.backlog.prepare(variables).await?;
        Ok(super::HostPlan {
            ops,
            merging: Some(merging),
        })
    }

    /// Marks the acknowledged transactions sendable: the newest recovered entry at the
    /// recovered Acknowledged, else the commit's.
    pub(super) async fn acknowledged(&mut self, ack: Acknowledge) -> Result<Acked, ShardError> {
        let newest = if ack.recovered {
            self.backlog.newest_seq()
        } else {
            ack.committed.as_ref().map_or(0, |v| v.last_commit_seq)
        };
        self.backlog.acknowledge(newest);
        Ok(Acked {
            variables: ack.committed,
            delivered: Vec::new(),
            queued: Some(self.backlog.depth()),
        })
    }

    pub(super) async fn close(self, grace: Duration) {
        self.backlog.shutdown(grace).await;
    }

    pub(super) fn status(&self) -> Option<BacklogStatus> {
        Some(self.backlog.handle().status())
    }

    pub(super) fn handle(&self) -> Option<BacklogHandle> {
        Some(self.backlog.handle())
    }

    pub(super) fn queued(&self) -> usize {
        self.backlog.depth()
    }

    pub(super) async fn drained(&self) -> Result<(), BacklogError> {
        self.backlog.drained().await
    }
}
