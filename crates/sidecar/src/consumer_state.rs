//! A sidecar whose durable state lives in its consumer's store (`--state-in-consumer`).
//!
//! A Gazette consumer replicates its own store through its recovery log, so a shard's
//! state survives the loss of its host and moves with the shard; a sidecar's own disk
//! does not. In this mode the sidecar keeps nothing durable of its own:
//!
//! - **Open** carries the consumer's recovered values of the sidecar's keys
//!   (`OpenRequest.state`). The sidecar loads them into a RocksDB held in memory (a
//!   fresh one at every Open) and opens the shard there, recovering from them.
//! - **StartCommit** answers with the writes (`StartCommitResponse.state_ops`) the
//!   consumer makes **in the same transaction as its checkpoint**, before Acknowledged:
//!   this commit's (its trigger variables), and every write of the sidecar's own since
//!   the last ones it handed out (deliveries recorded in the ledger, delivered entries
//!   deleted, layout migrations at Open).
//! - **AwaitDrained** hands out the writes since then too, so the end of the input
//!   leaves nothing pending in the consumer's store.
//!
//! The writes are found by comparing the in-memory store with what the consumer was last
//! told it holds: a pass over the sidecar's keys, which the backlog limit and the ledger's
//! retention bound (about a thousand records by default), on each StartCommit. A crash of
//! either process loses nothing: the consumer's store holds every committed transaction's
//! variables (written with its checkpoint), and a write of the sidecar's not yet handed
//! out (a delivery recorded, say) is one the next Open redoes, which at-least-once allows.

use std::collections::BTreeMap;
use std::sync::Arc;
use triggers_proto::sidecar::{StateEntry, StateOp};
use triggers_runtime::rocksdb::{self, DB, Env, IteratorMode, Options, WriteBatch};

/// Most entries an Open may carry (the state of a backlog of 100 000 entries and a ledger
/// of 100 000 records, and then some): a larger one is refused rather than loaded.
pub const MAX_STATE_ENTRIES: usize = 250_000;

/// The in-memory store of a sidecar whose state is its consumer's, and what the consumer
/// was last told it holds.
pub(crate) struct ConsumerState {
    db: Arc<DB>,
    /// What the consumer holds of the sidecar's keys, as of the last writes handed out.
    exported: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Keeps the in-memory Env alive as long as the state (the DB holds it too).
    _env: Env,
}

/// Why the consumer's state cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerStateError {
    /// More entries than [`MAX_STATE_ENTRIES`].
    #[error("Open carries {0} state entries, more than the {MAX_STATE_ENTRIES} allowed")]
    TooMany(usize),
    /// An entry has an empty key.
    #[error("Open carries a state entry with an empty key")]
    EmptyKey,
    /// RocksDB failed (the in-memory store).
    #[error("the in-memory store failed: {0}")]
    RocksDb(#[from] rocksdb::Error),
}

impl ConsumerState {
    /// A fresh in-memory store holding `entries`, the consumer's recovered state.
    pub(crate) fn load(entries: &[StateEntry]) -> Result<Self, ConsumerStateError> {
        if entries.len() > MAX_STATE_ENTRIES {
            return Err(ConsumerStateError::TooMany(entries.len()));
        }
        let env = Env::mem_env()?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_env(&env);
        let db = DB::open(&options, "/consumer-state")?;
        let mut batch = WriteBatch::default();
        let mut exported = BTreeMap::new();
        for entry in entries {
            if entry.key.is_empty() {
                return Err(ConsumerStateError::EmptyKey);
            }
            batch.put(&entry.key, &entry.value);
            exported.insert(entry.key.clone(), entry.value.clone());
        }
        db.write(batch)?;
        Ok(Self {
            db: Arc::new(db),
            exported,
            _env: env,
        })
    }

    /// The in-memory store, for the shard.
    pub(crate) fn db(&self) -> Arc<DB> {
        self.db.clone()
    }

    /// The writes that bring the consumer's copy to what the store holds now, in key
    /// order; from now on the consumer is taken to hold it.
    pub(crate) fn take_ops(&mut self) -> Result<Vec<StateOp>, ConsumerStateError> {
        let mut now = BTreeMap::new();
        for item in self.db.iterator(IteratorMode::Start) {
            let (key, value) = item?;
            now.insert(key.to_vec(), value.to_vec());
        }
        let mut ops = Vec::new();
        for (key, value) in &now {
            if self.exported.get(key) != Some(value) {
                ops.push(StateOp {
                    key: key.clone(),
                    value: value.clone(),
                    delete: false,
                });
            }
        }
        for key in self.exported.keys() {
            if !now.contains_key(key) {
                ops.push(StateOp {
                    key: key.clone(),
                    value: Vec::new(),
                    delete: true,
                });
            }
        }
        ops.sort_by(|a, b| a.key.cmp(&b.key));
        self.exported = now;
        Ok(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_bring_the_consumers_copy_to_the_store() {
        let entry = |k: &str, v: &str| StateEntry {
            key: k.into(),
            value: v.into(),
        };
        let mut state = ConsumerState::load(&[entry("a", "1"), entry("b", "2")]).expect("loads");
        assert!(
            state.take_ops().expect("diffs").is_empty(),
            "loaded as held"
        );
        let db = state.db();
        db.put(b"b", b"3").expect("writes");
        db.put(b"c", b"4").expect("writes");
        db.delete(b"a").expect("writes");
        let ops: Vec<(String, String, bool)> = state
            .take_ops()
            .expect("diffs")
            .into_iter()
            .map(|op| {
                (
                    String::from_utf8(op.key).expect("utf8"),
                    String::from_utf8(op.value).expect("utf8"),
                    op.delete,
                )
            })
            .collect();
        assert_eq!(
            ops,
            [
                ("a".into(), String::new(), true),
                ("b".into(), "3".into(), false),
                ("c".into(), "4".into(), false)
            ]
        );
        assert!(state.take_ops().expect("diffs").is_empty());
        assert!(matches!(
            ConsumerState::load(&[entry("", "x")]),
            Err(ConsumerStateError::EmptyKey)
        ));
    }
}
