//! Every store layout migration, in one place. A store written in one layout (or by one
//! [`DeliveryMode`]) opens in the other without losing or repeating a transaction.
//!
//! There are two layouts of "committed, not yet delivered" (see [`crate::store`]):
//! waiting delivery's single `trigger-params` key (the first layout; version-1 stores did
//! not number their transactions), and decoupled delivery's per-trigger `backlog/` queues.
//!
//! 1. **Single key → backlog** ([`on_open`]): a decoupled shard opens a store whose
//!    `trigger-params` holds a pending transaction. Runs in [`crate::Shard::open`], before
//!    recovery reads the backlog. The key becomes one backlog entry per trigger (numbered
//!    first if a version-1 store left it unnumbered), in one synced WriteBatch that also
//!    deletes the key and writes the commit sequence number: a crash keeps either the old
//!    layout (the migration runs again at the next open) or the new one, never both.
//!    Moved entries have no commit time, which marks them as maybe delivered already
//!    (waiting delivery keeps no ledger), so they re-fire exactly as they are.
//! 2. **Index keys → name keys** ([`on_open`], first): a store written before triggers had
//!    names keys its backlog entries, ledger records and last send times by the trigger's
//!    index. Each index becomes the name of the trigger at that position in the config
//!    the store is opened with (what the index meant: earlier builds sent an entry to
//!    whichever trigger had its index), or the index in decimal past the config's end (an
//!    entry of a removed trigger: kept, reported, skippable; see [`crate::backlog`]). One
//!    synced WriteBatch deletes every old key and writes every new one, ledger records
//!    gaining their trigger's name; a crash keeps either layout whole, and the migration
//!    runs again at the next open if it had not landed. Crash points
//!    `migration.before_write` and `migration.after_write` surround it. Webhook ids do not
//!    change: an unnamed trigger's name is its index, whose id is the index's
//!    ([`triggers::trigger_webhook_id`]).
//! 3. **Backlog → single key** ([`Leftover`]): a waiting shard opens a store with backlog
//!    entries a decoupled run left. Nothing is rewritten: the backlog is loaded into a
//!    decoupled backlog without a limit and drained once, at the recovered Acknowledged,
//!    before waiting delivery goes on with its single key. Each entry is deleted only once
//!    delivered, as decoupled delivery does, so a crash during the drain leaves the rest
//!    to drain at the next open.

use crate::backlog::{
    Backlog, BacklogError, BacklogHandle, BacklogSetup, BacklogStatus, Recovered,
};
use crate::config::DeliveryMode;
use crate::crash::crash_point;
use crate::shard_store::ShardStore;
use crate::store::{Store, StoreError};
use crate::store_pool::StoreTaskError;
use std::sync::Arc;
use std::time::Duration;
use triggers::Triggers;
use triggers_proto::TriggerParams;
use uuid::Uuid;

/// What the commit path needs of the store's layout once [`on_open`] ran.
pub(crate) struct Layout {
    /// The last commit sequence number handed out.
    pub(crate) commit_seq: u64,
    /// Waiting delivery's pending transaction, if the store holds one and stays in the
    /// single-key layout.
    pub(crate) params: Option<TriggerParams>,
}

/// Runs at open, before recovery: migration 2 whenever the store has index keys, then
/// migration 1 for a decoupled shard with triggers. `triggers` names the config's
/// triggers in order. One job on the store lane: cancel-safe as [`ShardStore`]'s
/// methods are (each migration lands as a whole or not at all).
pub(crate) async fn on_open(
    store: &ShardStore,
    delivery: DeliveryMode,
    config: Arc<Triggers>,
) -> Result<Layout, StoreTaskError> {
    let decoupled = matches!(delivery, DeliveryMode::Decoupled { .. });
    let triggers: Vec<String> = config.iter().map(|t| t.name().to_string()).collect();
    store
        .run(move |store| {
            import_flow_params(store, &config)?;
            if let Some(migration) = store.named_keys_migration(&triggers)? {
                let (entries, records, last_sent) =
                    (migration.entries, migration.records, migration.last_sent);
                crash_point!("migration.before_write");
                store.write_migration(migration)?;
                crash_point!("migration.after_write");
                tracing::info!(
                    entries,
                    records,
                    last_sent,
                    "moved the backlog and ledger from trigger indexes to trigger names"
                );
            }
            let mut commit_seq = store.commit_seq()?;
            let mut params = store.trigger_params()?;
            if let (true, Some(legacy)) = (decoupled && !triggers.is_empty(), &mut params) {
                if legacy.last_commit_seq == 0 {
                    commit_seq += 1;
                    legacy.first_commit_seq = commit_seq;
                    legacy.last_commit_seq = commit_seq;
                }
                store.move_params_to_backlog(legacy, &triggers)?;
                tracing::info!(
                    flow_run_id = %legacy.flow_run_id,
                    "moved the single-key trigger params into the backlog"
                );
                params = None;
            }
            Ok(Layout { commit_seq, params })
        })
        .await?
        .map_err(StoreTaskError::Store)
}

/// Migration 0 (in a host's DB only): Flow's pending `trigger-params` become backlog
/// entries of the triggers it fires, numbered 0 (before any transaction of this
/// runtime's, whose numbers start at 1), in one synced batch
/// that deletes Flow's key (see [`crate::flow_store`]). Between crash points
/// `flow_import.before_write` and `flow_import.after_write`.
fn import_flow_params(store: &Store, config: &Triggers) -> Result<(), StoreError> {
    let Some(bytes) = store.flow_trigger_params()? else {
        return Ok(());
    };
    let pending =
        triggers::flow_pending_per_trigger(&bytes, config, &mut || Uuid::new_v4().to_string())
            .map_err(|err| {
                store.corrupt_key(crate::flow_store::FLOW_TRIGGER_PARAMS_KEY, &err.to_string())
            })?;
    // Numbered 0: a transaction Flow committed has no commit sequence number of this
    // runtime's (ours start at 1), and sorts before every one that has.
    let entries: Vec<(String, TriggerParams)> = config
        .iter()
        .zip(pending)
        .filter_map(|(trigger, variables)| {
            let variables = variables?.with_commit_seq(0);
            Some((trigger.name().to_string(), variables.into_params()))
        })
        .collect();
    crash_point!("flow_import.before_write");
    store.import_flow_params(&entries)?;
    crash_point!("flow_import.after_write");
    tracing::info!(
        triggers = entries.len(),
        "moved the trigger variables Flow's runtime left pending into the backlog; they fire \
         after the first Acknowledged"
    );
    Ok(())
}

/// Migration 2: the backlog a decoupled run left to a waiting shard, drained once at the
/// recovered Acknowledged.
pub(crate) struct Leftover(Backlog);

impl Leftover {
    /// Loads `entries` (recovered, decoded) into a backlog without a limit, if there are
    /// any. Nothing is sent before [`Leftover::drain`].
    ///
    /// Entries of triggers the config no longer has stay in the store, unsent: waiting
    /// delivery logs them at open; decoupled delivery reports and skips them.
    pub(crate) fn start(setup: BacklogSetup, recovered: Recovered) -> Option<Self> {
        if recovered.entries.is_empty() {
            return None;
        }
        let recovered = Recovered {
            orphans: Vec::new(),
            ..recovered
        };
        Some(Leftover(Backlog::start(setup, usize::MAX, recovered)))
    }

    /// Why its delivery stopped, if it did.
    pub(crate) fn failure(&self) -> Option<BacklogError> {
        self.0.failure()
    }

    /// Entries left.
    pub(crate) fn depth(&self) -> usize {
        self.0.depth()
    }

    /// Its state, for status reports while it drains.
    pub(crate) fn status(&self) -> BacklogStatus {
        self.0.handle().status()
    }

    /// A handle on it, for status reports.
    pub(crate) fn handle(&self) -> BacklogHandle {
        self.0.handle()
    }

    /// Waits until it is drained, or its delivery stopped. Cancel-safe: it only watches.
    pub(crate) async fn drained(&self) -> Result<(), BacklogError> {
        self.0.drained().await
    }

    /// Sends it all (every entry is acknowledged: it was recovered) and waits until it is
    /// drained or its delivery stopped. Cancel-safe: a dropped wait leaves it draining.
    pub(crate) async fn drain(&self) -> Result<(), BacklogError> {
        self.0.acknowledge(self.0.newest_seq());
        self.0.drained().await
    }

    /// Stops its workers (once drained, nothing is in flight).
    pub(crate) async fn close(self, grace: Duration) {
        self.0.shutdown(grace).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Durability;
    use triggers_proto::Checkpoint;

    async fn store_with_single_key(dir: &std::path::Path, params: &TriggerParams) -> ShardStore {
        let store = ShardStore::open(dir.to_path_buf(), Durability::Synced)
            .await
            .expect("opens");
        store
            .commit(Checkpoint::default(), Some(params.clone()))
            .await
            .expect("commits");
        store
    }

    #[tokio::test]
    async fn layout_migrations_live_in_one_module() {
        // A version-1 store: its single key has no commit sequence number.
        let legacy = TriggerParams {
            version: 1,
            flow_run_id: "legacy".into(),
            ..Default::default()
        };

        // Waiting delivery keeps the single-key layout.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_with_single_key(dir.path(), &legacy).await;
        let names = || {
            let config = r#"{"config": [
                {"url": "https://a.example.com", "payloadTemplate": "{}"},
                {"url": "https://b.example.com", "payloadTemplate": "{}"}
            ]}"#;
            Arc::new(triggers::validate(config, triggers::ConfigFormat::Json).expect("valid"))
        };
        let layout = on_open(&store, DeliveryMode::Waiting, names())
            .await
            .expect("runs");
        assert_eq!(layout.params.as_ref(), Some(&legacy));
        assert_eq!(layout.commit_seq, 0);

        // Decoupled delivery moves it into every trigger's queue, numbered, once.
        let decoupled = DeliveryMode::default();
        let layout = on_open(&store, decoupled, names()).await.expect("migrates");
        assert_eq!(layout.params, None);
        assert_eq!(layout.commit_seq, 1);
        let entries = store
            .run(|store| store.backlog())
            .await
            .expect("runs")
            .expect("reads");
        let keys: Vec<(&str, u64, u64)> = entries
            .iter()
            .map(|e| {
                (
                    e.trigger.as_str(),
                    e.first_commit_seq,
                    e.params.last_commit_seq,
                )
            })
            .collect();
        assert_eq!(keys, [("0", 1, 1), ("1", 1, 1)]);
        assert!(
            entries.iter().all(|e| e.sent),
            "moved entries may have been sent"
        );
        assert_eq!(store.trigger_params().await.expect("reads"), None);
        let again = on_open(&store, decoupled, names())
            .await
            .expect("runs again");
        assert_eq!((again.commit_seq, again.params), (1, None));
    }
}
