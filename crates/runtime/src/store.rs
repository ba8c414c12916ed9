//! The shard's RocksDB store: every byte the runtime keeps on disk.
//!
//! Two keys matter. `checkpoint` holds the consumer checkpoint of the last committed
//! transaction. `trigger-params` holds the trigger variables of a committed transaction
//! whose webhooks are not yet delivered. Both are written by one WriteBatch at
//! StartCommit, so a checkpoint is never durable without its webhooks' variables, nor
//! the variables without their checkpoint.
//!
//! Calls block on disk I/O; async callers run them on a blocking thread (see
//! [`crate::Shard`]).

use prost::Message as _;
use rocksdb::{DB, Options, WriteBatch, WriteOptions};
use std::path::{Path, PathBuf};
use triggers_proto::{Checkpoint, TriggerParams};

/// Key of the last committed checkpoint.
pub const CHECKPOINT_KEY: &[u8] = b"checkpoint";
/// Key of the pending trigger variables.
pub const TRIGGER_PARAMS_KEY: &[u8] = b"trigger-params";

/// How StartCommit makes its WriteBatch durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// The write returns only after the write-ahead log is synced to disk (fsync). A
    /// committed transaction survives power loss, so a webhook never announces data that
    /// a restart forgets. The default.
    #[default]
    Synced,
    /// The write returns once the write-ahead log is in the OS page cache. It survives
    /// the process being killed, not the machine losing power. For stores whose
    /// durability comes from elsewhere, such as a replicated recovery log.
    Unsynced,
}

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (or another handle in this one) has the store open. A shard has
    /// exactly one writer.
    #[error(
        "store {path} is already open by another process or handle; a shard's store has \
         one writer ({detail})"
    )]
    Locked {
        /// Directory of the store.
        path: PathBuf,
        /// RocksDB's own words.
        detail: String,
    },
    /// RocksDB failed.
    #[error("RocksDB {operation} failed on {path}: {detail}")]
    RocksDb {
        /// What was being done.
        operation: &'static str,
        /// Directory of the store.
        path: PathBuf,
        /// RocksDB's own words.
        detail: String,
    },
    /// A stored value does not decode.
    #[error("stored `{key}` in {path} is corrupt: {source}")]
    Corrupt {
        /// The key.
        key: &'static str,
        /// Directory of the store.
        path: PathBuf,
        /// What the decoder found.
        #[source]
        source: prost::DecodeError,
    },
}

/// A shard's store, open for reading and writing.
pub struct Store {
    db: DB,
    path: PathBuf,
    durability: Durability,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("durability", &self.durability)
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in directory `path`.
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut options = Options::default();
        options.create_if_missing(true);
        // A handful of small keys, overwritten every transaction: keep RocksDB's footprint
        // and background work small. A 1 MiB memtable (instead of 64 MiB) holds hundreds of
        // commits, flushes to a tiny table (each key once), and keeps memory flat over a
        // long run instead of growing until the first flush.
        options.set_max_background_jobs(1);
        options.set_keep_log_file_num(2);
        options.set_write_buffer_size(1 << 20);
        options.set_max_write_buffer_number(2);
        let db = DB::open(&options, &path).map_err(|err| {
            let detail = err.into_string();
            // RocksDB reports its LOCK file held by another process or handle.
            if detail.contains("LOCK") {
                StoreError::Locked {
                    path: path.clone(),
                    detail,
                }
            } else {
                StoreError::RocksDb {
                    operation: "open",
                    path: path.clone(),
                    detail,
                }
            }
        })?;
        Ok(Self {
            db,
            path,
            durability,
        })
    }

    /// Directory of the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last committed checkpoint; empty for a new store.
    pub fn checkpoint(&self) -> Result<Checkpoint, StoreError> {
        Ok(self.get(CHECKPOINT_KEY, "checkpoint")?.unwrap_or_default())
    }

    /// The pending trigger variables, if a committed transaction's webhooks are not yet
    /// delivered.
    pub fn trigger_params(&self) -> Result<Option<TriggerParams>, StoreError> {
        self.get(TRIGGER_PARAMS_KEY, "trigger-params")
    }

    /// StartCommit's write: the checkpoint and, when given, the trigger variables, in one
    /// atomic WriteBatch with the store's durability. Nothing else is written.
    pub fn commit(
        &self,
        checkpoint: &Checkpoint,
        params: Option<&TriggerParams>,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put(CHECKPOINT_KEY, checkpoint.encode_to_vec());
        if let Some(params) = params {
            batch.put(TRIGGER_PARAMS_KEY, params.encode_to_vec());
        }
        let mut options = WriteOptions::default();
        options.set_sync(self.durability == Durability::Synced);
        self.db
            .write_opt(batch, &options)
            .map_err(|err| self.rocksdb_error("commit", err))
    }

    /// Deletes the trigger variables once their webhooks are delivered.
    ///
    /// Not synced: if the deletion is lost to a crash, the webhooks fire once more,
    /// which at-least-once allows; the next synced commit makes it durable anyway.
    pub fn clear_trigger_params(&self) -> Result<(), StoreError> {
        let mut options = WriteOptions::default();
        options.set_sync(false);
        self.db
            .delete_opt(TRIGGER_PARAMS_KEY, &options)
            .map_err(|err| self.rocksdb_error("delete", err))
    }

    fn get<M: prost::Message + Default>(
        &self,
        key: &'static [u8],
        name: &'static str,
    ) -> Result<Option<M>, StoreError> {
        let Some(bytes) = self
            .db
            .get_pinned(key)
            .map_err(|err| self.rocksdb_error("read", err))?
        else {
            return Ok(None);
        };
        M::decode(bytes.as_ref())
            .map(Some)
            .map_err(|source| StoreError::Corrupt {
                key: name,
                path: self.path.clone(),
                source,
            })
    }

    fn rocksdb_error(&self, operation: &'static str, err: rocksdb::Error) -> StoreError {
        StoreError::RocksDb {
            operation,
            path: self.path.clone(),
            detail: err.into_string(),
        }
    }

    /// Writes raw bytes under a key, bypassing every check. Tests use it to plant corrupt
    /// or future-version values; nothing else should.
    #[doc(hidden)]
    pub fn put_raw_for_tests(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.db
            .put(key, value)
            .map_err(|err| self.rocksdb_error("write", err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use triggers_proto::Source;

    fn checkpoint(offset: i64) -> Checkpoint {
        Checkpoint {
            sources: [(
                "acmeCo/orders/pivot=00".to_string(),
                Source {
                    read_through: offset,
                    producers: vec![],
                },
            )]
            .into(),
            ack_intents: Default::default(),
        }
    }

    #[test]
    fn a_new_store_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Durability::Synced).expect("opens");
        assert_eq!(store.checkpoint().expect("reads"), Checkpoint::default());
        assert_eq!(store.trigger_params().expect("reads"), None);
    }

    #[test]
    fn commit_writes_checkpoint_and_params_together_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let params = TriggerParams {
            version: 1,
            flow_run_id: "run".into(),
            ..Default::default()
        };
        {
            let store = Store::open(dir.path(), Durability::Unsynced).expect("opens");
            store
                .commit(&checkpoint(10), Some(&params))
                .expect("commits");
        }
        let store = Store::open(dir.path(), Durability::Synced).expect("reopens");
        assert_eq!(store.checkpoint().expect("reads"), checkpoint(10));
        assert_eq!(store.trigger_params().expect("reads"), Some(params));

        store.clear_trigger_params().expect("clears");
        store.commit(&checkpoint(20), None).expect("commits");
        assert_eq!(store.trigger_params().expect("reads"), None);
        assert_eq!(store.checkpoint().expect("reads"), checkpoint(20));
    }

    #[test]
    fn a_second_handle_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = Store::open(dir.path(), Durability::Synced).expect("opens");
        let err = Store::open(dir.path(), Durability::Synced).expect_err("locked");
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("one writer"), "{err}");
    }

    #[test]
    fn corrupt_bytes_are_a_typed_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Durability::Synced).expect("opens");
        store
            .put_raw_for_tests(TRIGGER_PARAMS_KEY, &[0xff, 0xff, 0xff])
            .expect("writes");
        store
            .put_raw_for_tests(CHECKPOINT_KEY, &[0x0a, 0x05, 0x01])
            .expect("writes");
        assert!(matches!(
            store.trigger_params(),
            Err(StoreError::Corrupt {
                key: "trigger-params",
                ..
            })
        ));
        assert!(matches!(
            store.checkpoint(),
            Err(StoreError::Corrupt {
                key: "checkpoint",
                ..
            })
        ));
    }
}
