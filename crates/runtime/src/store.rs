//! The shard's RocksDB store: every byte the runtime keeps on disk.
//!
//! `checkpoint` holds the consumer checkpoint of the last committed transaction. The
//! trigger variables of committed transactions whose webhooks are not yet delivered live
//! beside it, written by the same WriteBatch at StartCommit, so a checkpoint is never
//! durable without its webhooks' variables, nor the variables without their checkpoint:
//!
//! - `trigger-params`: waiting delivery's single pending transaction (the first layout).
//! - `queue/<trigger name>/<first commit seq u64 BE>`: decoupled delivery's per-trigger
//!   queues of [`BacklogEntry`], in commit order; a coalesced trigger rewrites its newest
//!   entry in place to merge a transaction into it, and at open merges its never-sent
//!   entries (no `delivery/` record) into one.
//! - `delivery/<trigger name>/<first commit seq u64 BE>`: the delivery ledger's records
//!   ([`DeliveryRecord`]).
//! - `last-sent/<trigger name>`: when the trigger's last webhook was sent (unix ms), so a
//!   coalesced trigger's minimum interval survives restarts.
//! - `commit-seq`: the last commit sequence number given to a transaction's variables.
//!
//! Keys name a trigger by its name (`[A-Za-z0-9_.-]`, 1 to 64 bytes: never `/`), so
//! reordering, adding or removing triggers never moves an entry to another trigger.
//! Earlier builds keyed the same three by the trigger's index (`backlog/`, `ledger/`,
//! `backlog-sent/` followed by a `u32` BE): the open moves those (`crate::migrations`).
//!
//! Calls block on disk I/O; the runtime makes them on the shard's store lane, through
//! its async facade (`shard_store.rs`). Hosts get [`Store::open`] and the readers, to
//! inspect a closed shard's store; the writers are the runtime's own, as they bypass the
//! state machine (tests and benches reach them through the unstable
//! `test_support` feature).

use prost::Message as _;
use rocksdb::{
    BlockBasedOptions, Cache, DB, DBPinnableSlice, Direction, IteratorMode, Options, ReadOptions,
    WriteBatch, WriteOptions,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use triggers_proto::{
    BacklogEntry, Checkpoint, DeliveryRecord, DeliveryRecordHead, DeliveryState, TriggerParams,
};

/// The block cache every store this process opens shares: several times a store's live
/// data (a checkpoint, a backlog of at most its bound, a ledger of about a thousand
/// records) for a few busy shards, and a bound on the cache's memory however many shards
/// a process hosts (a cache per store grew with them: 4 MiB each).
const BLOCK_CACHE_BYTES: usize = 16 << 20;

/// The process's one block cache (see [`BLOCK_CACHE_BYTES`]).
fn shared_block_cache() -> &'static Cache {
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| Cache::new_lru_cache(BLOCK_CACHE_BYTES))
}

/// Memtable memory every store this process opens may hold together, before RocksDB
/// flushes the memtable of the store being written (a [`rocksdb::WriteBufferManager`]
/// they share). One shard never reaches it (its memtables are 2 of 1 MiB); hundreds do,
/// and then each flushes sooner instead of each holding its 2 MiB: 500 shards committing
/// had grown to 1.4 MiB of RSS each.
const MEMTABLES_BYTES: usize = 64 << 20;

/// The options every store this process opens starts from: the same block cache and
/// write buffer manager for all (RocksDB's background threads are its default Env's,
/// process-wide already). A template behind a lock because the manager itself may not
/// be shared across threads in Rust's types, while options holding it may be cloned.
fn shared_options() -> Options {
    static TEMPLATE: std::sync::OnceLock<std::sync::Mutex<Options>> = std::sync::OnceLock::new();
    let template = TEMPLATE.get_or_init(|| {
        let mut options = Options::default();
        options.create_if_missing(true);
        // A handful of small keys, overwritten every transaction: keep RocksDB's footprint
        // and background work small. A 1 MiB memtable (instead of 64 MiB) holds hundreds
        // of commits, flushes to a tiny table (each key once), and keeps memory flat over
        // a long run instead of growing until the first flush; arena blocks of 32 KiB
        // (instead of an eighth of it) keep what an idle store holds small.
        options.set_max_background_jobs(1);
        options.set_write_buffer_size(1 << 20);
        options.set_max_write_buffer_number(2);
        options.set_arena_block_size(32 << 10);
        // Each flush's table is compacted into level 1 at once (the live data is a few
        // small keys, so that costs little): a store keeps one table open, not up to the
        // four level-0 tables RocksDB lets pile up by default, one file descriptor each
        // (9 per store after 10^5 commits; the goal is 6).
        options.set_level_zero_file_num_compaction_trigger(1);
        options.set_write_buffer_manager(&rocksdb::WriteBufferManager::new_write_buffer_manager(
            MEMTABLES_BYTES,
            false,
        ));
        // RocksDB's default block cache is 32 MiB per DB, filled as blocks are read: RSS
        // would climb toward it over a long run, per shard. A store's live data is far
        // smaller (a checkpoint, a bounded backlog and ledger), scans skip the cache, and
        // every store of the process shares one.
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(shared_block_cache());
        options.set_block_based_table_factory(&table);
        std::sync::Mutex::new(options)
    });
    template
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// RocksDB's own log of a store: its warnings and errors, as `tracing` events naming the
/// store, instead of a `LOG` file per store (a file descriptor each, and a file that
/// grows in the shard's directory).
fn info_logger(path: &Path) -> rocksdb::InfoLogger {
    let store = path.display().to_string();
    rocksdb::InfoLogger::new_callback_logger(rocksdb::LogLevel::Warn, move |level, message| {
        let message = message.trim_end();
        match level {
            rocksdb::LogLevel::Error | rocksdb::LogLevel::Fatal => {
                tracing::error!(store, "rocksdb: {message}")
            }
            rocksdb::LogLevel::Warn => tracing::warn!(store, "rocksdb: {message}"),
            _ => tracing::debug!(store, "rocksdb: {message}"),
        }
    })
}

/// Key of the last committed checkpoint.
pub const CHECKPOINT_KEY: &[u8] = b"checkpoint";
/// Key of the pending trigger variables.
pub const TRIGGER_PARAMS_KEY: &[u8] = b"trigger-params";
/// Key of the last commit sequence number handed out.
pub const COMMIT_SEQ_KEY: &[u8] = b"commit-seq";
/// Prefix of backlog entries.
pub const BACKLOG_PREFIX: &[u8] = b"queue/";
/// Prefix of each trigger's last send time.
pub const BACKLOG_SENT_PREFIX: &[u8] = b"last-sent/";
/// Prefix of delivery ledger records.
pub const LEDGER_PREFIX: &[u8] = b"delivery/";
/// Prefix of backlog entries keyed by trigger index (stores of earlier builds).
pub const LEGACY_BACKLOG_PREFIX: &[u8] = b"backlog/";
/// Prefix of last send times keyed by trigger index (stores of earlier builds).
pub const LEGACY_BACKLOG_SENT_PREFIX: &[u8] = b"backlog-sent/";
/// Prefix of ledger records keyed by trigger index (stores of earlier builds).
pub const LEGACY_LEDGER_PREFIX: &[u8] = b"ledger/";

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
         one writer ({source})"
    )]
    Locked {
        /// Directory of the store.
        path: PathBuf,
        /// RocksDB's error: it cannot take the store's `LOCK` file.
        #[source]
        source: rocksdb::Error,
    },
    /// RocksDB failed.
    #[error("RocksDB {operation} failed on {path}: {source}")]
    RocksDb {
        /// What was being done.
        operation: &'static str,
        /// Directory of the store.
        path: PathBuf,
        /// RocksDB's error, with its [`rocksdb::ErrorKind`].
        #[source]
        source: rocksdb::Error,
    },
    /// A value under one of the runtime's keys (a backlog entry or key, a ledger record,
    /// the commit sequence) does not decode.
    #[error("stored `{key}` in {path} is corrupt: {detail}")]
    CorruptKey {
        /// The key, printably.
        key: String,
        /// Directory of the store.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// Another store of this process is open on the same host DB under this keyspace,
    /// or under one whose prefix starts this one's or is started by it (each would read
    /// the other's keys). One keyspace is one shard's.
    #[error(
        "keyspace {prefix:?} of the DB at {path} overlaps keyspace {other:?}, open in this \
         process: a keyspace is one shard's; close that shard first, or choose prefixes \
         neither of which starts the other"
    )]
    KeyspaceInUse {
        /// Directory of the host's DB.
        path: PathBuf,
        /// The keyspace asked for, printably.
        prefix: String,
        /// The one already open, printably.
        other: String,
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

impl StoreError {
    /// RocksDB's kind of error, when RocksDB failed.
    pub fn rocksdb_kind(&self) -> Option<rocksdb::ErrorKind> {
        match self {
            StoreError::Locked { source, .. } | StoreError::RocksDb { source, .. } => {
                Some(source.kind())
            }
            StoreError::CorruptKey { .. }
            | StoreError::Corrupt { .. }
            | StoreError::KeyspaceInUse { .. } => None,
        }
    }
}

/// Whether opening failed because another process or handle holds the store's `LOCK` file.
/// RocksDB has no error kind of its own for it: it is an I/O error (`IOError`) whose
/// message names the lock file ("While lock file: <dir>/LOCK: Resource temporarily
/// unavailable", or "lock hold by current process" for a second handle in this one).
fn is_lock_held(err: &rocksdb::Error) -> bool {
    let message = err.as_ref();
    err.kind() == rocksdb::ErrorKind::IOError
        && (message.contains("lock file")
            || message.contains("lock hold")
            || message.contains("/LOCK"))
}

/// A shard's store, open for reading and writing.
///
/// Hosts read it; only the runtime writes it, through the state machine. Its raw writers
/// are not public (narrow public surface):
///
/// ```compile_fail
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let store = triggers_runtime::Store::open(dir.path(), triggers_runtime::Durability::Synced)?;
/// store.clear_trigger_params()?; // private: it would bypass the state machine
/// # Ok(())
/// # }
/// ```
pub struct Store {
    db: Arc<DB>,
    keyspace: Keyspace,
    path: PathBuf,
    durability: Durability,
    /// Registered in [`open_keyspaces`] (a store in a host's DB), until dropped.
    in_host_db: bool,
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.in_host_db {
            let id = Arc::as_ptr(&self.db) as usize;
            open_keyspaces().retain(|(db, prefix)| !(*db == id && *prefix == self.keyspace.prefix));
        }
    }
}

/// The keyspaces of host DBs open in this process, as (the DB's address, the prefix): a
/// keyspace is one store's at a time. A registered DB cannot be freed (the store holds
/// it), so its address names it until the store is dropped.
fn open_keyspaces() -> std::sync::MutexGuard<'static, Vec<(usize, Vec<u8>)>> {
    static OPEN: std::sync::Mutex<Vec<(usize, Vec<u8>)>> = std::sync::Mutex::new(Vec::new());
    OPEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Bytes as a string for an error (a prefix is usually ASCII).
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).escape_debug().to_string()
}

/// Where in a RocksDB the runtime keeps its keys: every key it reads or writes starts
/// with the keyspace's prefix. The store the runtime opens itself uses the empty prefix
/// (the layout of every earlier build); a host that links the runtime into its own
/// RocksDB ([`Store::in_host_db`]) gives a prefix none of its own keys start with, so the
/// two never collide (Flow's runtime keeps `checkpoint`, `connector-state`,
/// `trigger-params`, ... at the root).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keyspace {
    prefix: Vec<u8>,
}

/// One write of the runtime's that a host makes in its own WriteBatch (see
/// [`crate::Shard::prepare_commit`]): keys are full (the keyspace's prefix included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOp {
    /// Set `key` to `value`.
    Put {
        /// The full key.
        key: Vec<u8>,
        /// Its new value.
        value: Vec<u8>,
    },
    /// Delete `key`.
    Delete {
        /// The full key.
        key: Vec<u8>,
    },
}

impl KeyOp {
    /// Adds this write to `batch`.
    pub fn add_to(&self, batch: &mut WriteBatch) {
        match self {
            KeyOp::Put { key, value } => batch.put(key, value),
            KeyOp::Delete { key } => batch.delete(key),
        }
    }
}

/// A key (without the keyspace's prefix) and its value, as a scan reads them.
type KeyValue = (Box<[u8]>, Box<[u8]>);

/// Longest keyspace prefix, in bytes: it is part of every key.
pub const MAX_KEYSPACE_PREFIX_BYTES: usize = 64;

/// A keyspace prefix that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyspaceError {
    /// Empty: the runtime's keys would be at the root, beside the host's.
    #[error(
        "a host's keyspace prefix must not be empty: the runtime's keys would mix with the host's"
    )]
    Empty,
    /// Longer than [`MAX_KEYSPACE_PREFIX_BYTES`].
    #[error("keyspace prefix is {0} bytes, more than the {MAX_KEYSPACE_PREFIX_BYTES} allowed")]
    TooLong(usize),
}

impl Keyspace {
    /// The root: no prefix, the layout of a store the runtime opens itself.
    pub fn root() -> Self {
        Self::default()
    }

    /// Keys under `prefix` (1 to [`MAX_KEYSPACE_PREFIX_BYTES`] bytes), such as
    /// `b"triggers/"`. Choose one no key of the host's starts with, ending in a separator
    /// (`/`) so no other key can extend it; two keyspaces of one DB must not have
    /// prefixes one of which starts the other, or each would read the other's keys.
    pub fn prefixed(prefix: impl Into<Vec<u8>>) -> Result<Self, KeyspaceError> {
        let prefix = prefix.into();
        match prefix.len() {
            0 => Err(KeyspaceError::Empty),
            n if n > MAX_KEYSPACE_PREFIX_BYTES => Err(KeyspaceError::TooLong(n)),
            _ => Ok(Self { prefix }),
        }
    }

    /// The prefix every key of this keyspace starts with.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }
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
        let mut options = shared_options();
        options.set_info_logger(info_logger(&path));
        let db = DB::open(&options, &path).map_err(|source| {
            if is_lock_held(&source) {
                StoreError::Locked {
                    path: path.clone(),
                    source,
                }
            } else {
                StoreError::RocksDb {
                    operation: "open",
                    path: path.clone(),
                    source,
                }
            }
        })?;
        Ok(Self {
            db: Arc::new(db),
            keyspace: Keyspace::root(),
            path,
            durability,
            in_host_db: false,
        })
    }

    /// The runtime's store inside a RocksDB the host opened (with its own options, Env,
    /// merge operators), under `keyspace`: the runtime reads and writes only keys that
    /// start with the keyspace's prefix. Several keyspaces of one DB are several stores
    /// (see [`Keyspace::prefixed`] for how their prefixes must differ); one keyspace is
    /// one shard's: open at most one shard on it at a time.
    ///
    /// A keyspace overlapping one already open on the same DB in this process is
    /// [`StoreError::KeyspaceInUse`]; it is free again once that store is dropped (its
    /// shard closed, its handles dropped).
    pub fn in_host_db(
        db: Arc<DB>,
        keyspace: Keyspace,
        durability: Durability,
    ) -> Result<Self, StoreError> {
        let id = Arc::as_ptr(&db) as usize;
        let mut open = open_keyspaces();
        let overlapping = open.iter().find(|(other_db, prefix)| {
            *other_db == id
                && (prefix.starts_with(&keyspace.prefix) || keyspace.prefix.starts_with(prefix))
        });
        if let Some((_, other)) = overlapping {
            return Err(StoreError::KeyspaceInUse {
                path: db.path().to_path_buf(),
                prefix: printable(&keyspace.prefix),
                other: printable(other),
            });
        }
        open.push((id, keyspace.prefix.clone()));
        Ok(Self {
            path: db.path().to_path_buf(),
            db,
            keyspace,
            durability,
            in_host_db: true,
        })
    }

    /// The keyspace this store's keys are in.
    pub fn keyspace(&self) -> &Keyspace {
        &self.keyspace
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
    ///
    /// At the root keyspace, a value that is JSON is Estuary Flow's own `trigger-params`:
    /// the store is one Flow's runtime wrote, which the runtime reads only from a keyspace
    /// of its own ([`Store::in_host_db`]); that is a typed error saying so.
    pub fn trigger_params(&self) -> Result<Option<TriggerParams>, StoreError> {
        let Some(bytes) = self
            .get_pinned(TRIGGER_PARAMS_KEY)
            .map_err(|err| self.rocksdb_error("read", err))?
        else {
            return Ok(None);
        };
        // A message of ours never starts with `{` (field 15, wire type 3: no field of it).
        if self.keyspace.prefix.is_empty() && bytes.first() == Some(&b'{') {
            return Err(self.corrupt_key(
                TRIGGER_PARAMS_KEY,
                "it holds JSON: this is a store Estuary Flow's runtime wrote, which this \
                 runtime opens only inside it, under a keyspace of its own \
                 (Store::in_host_db with Keyspace::prefixed), where Flow's pending \
                 trigger-params are read and fire",
            ));
        }
        TriggerParams::decode(bytes.as_ref())
            .map(Some)
            .map_err(|source| StoreError::Corrupt {
                key: "trigger-params",
                path: self.path.clone(),
                source,
            })
    }

    /// StartCommit's write in waiting delivery: the checkpoint and, when given, the
    /// trigger variables (and their commit sequence number, when they have one), in one
    /// atomic WriteBatch with the store's durability.
    pub(crate) fn commit(
        &self,
        checkpoint: &Checkpoint,
        params: Option<&TriggerParams>,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        self.put(&mut batch, CHECKPOINT_KEY, checkpoint.encode_to_vec());
        if let Some(params) = params {
            self.put(&mut batch, TRIGGER_PARAMS_KEY, params.encode_to_vec());
            if params.last_commit_seq > 0 {
                self.put(
                    &mut batch,
                    COMMIT_SEQ_KEY,
                    params.last_commit_seq.to_be_bytes(),
                );
            }
        }
        self.write(batch, "commit")
    }

    /// StartCommit's write in decoupled delivery: the checkpoint, the transaction's commit
    /// sequence number, and each trigger's new or merged backlog entry, in one atomic
    /// WriteBatch with the store's durability.
    pub(crate) fn commit_backlog(
        &self,
        checkpoint: &Checkpoint,
        commit_seq: Option<u64>,
        entries: &[BacklogWrite],
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        self.put(&mut batch, CHECKPOINT_KEY, checkpoint.encode_to_vec());
        if let Some(seq) = commit_seq {
            self.put(&mut batch, COMMIT_SEQ_KEY, seq.to_be_bytes());
        }
        for entry in entries {
            self.put(
                &mut batch,
                backlog_key(&entry.trigger, entry.first_commit_seq),
                encode_entry(entry),
            );
        }
        self.write(batch, "commit")
    }

    /// StartCommit's writes for a host to make in its own WriteBatch, beside its own
    /// checkpoint: the commit sequence number, and each trigger's backlog entry
    /// (decoupled delivery) or the trigger variables (waiting delivery). Writes nothing.
    pub(crate) fn commit_ops(
        &self,
        commit_seq: Option<u64>,
        entries: &[BacklogWrite],
        params: Option<&TriggerParams>,
    ) -> Vec<KeyOp> {
        let mut ops = Vec::with_capacity(entries.len() + 2);
        if let Some(seq) = commit_seq {
            ops.push(KeyOp::Put {
                key: self.key(COMMIT_SEQ_KEY),
                value: seq.to_be_bytes().to_vec(),
            });
        }
        for entry in entries {
            ops.push(KeyOp::Put {
                key: self.key(&backlog_key(&entry.trigger, entry.first_commit_seq)),
                value: encode_entry(entry),
            });
        }
        if let Some(params) = params {
            ops.push(KeyOp::Put {
                key: self.key(TRIGGER_PARAMS_KEY),
                value: params.encode_to_vec(),
            });
        }
        ops
    }

    /// The last commit sequence number handed out (0 for a new store).
    pub fn commit_seq(&self) -> Result<u64, StoreError> {
        let Some(bytes) = self
            .get_pinned(COMMIT_SEQ_KEY)
            .map_err(|err| self.rocksdb_error("read", err))?
        else {
            return Ok(0);
        };
        <[u8; 8]>::try_from(bytes.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| self.corrupt_key(COMMIT_SEQ_KEY, "not an 8-byte number"))
    }

    /// Every backlog entry, per trigger in commit order, each with whether the ledger
    /// has a record of it (one point read per entry: this runs at open).
    pub fn backlog(&self) -> Result<Vec<StoredEntry>, StoreError> {
        let mut entries = Vec::new();
        for item in self.scan(BACKLOG_PREFIX) {
            let (key, value) = item.map_err(|err| self.rocksdb_error("read", err))?;
            let Some((trigger, first_commit_seq)) = parse_named_key(BACKLOG_PREFIX, &key) else {
                return Err(self.corrupt_key(&key, "malformed backlog key"));
            };
            let trigger = trigger.to_string();
            let entry = BacklogEntry::decode(value.as_ref())
                .map_err(|err| self.corrupt_key(&key, &err.to_string()))?;
            let params = entry
                .params
                .ok_or_else(|| self.corrupt_key(&key, "entry has no params"))?;
            // Its head only: the open reads one record per entry, and a record keeps its
            // attempts and variables.
            let record: Option<DeliveryRecordHead> =
                self.ledger_read(&trigger, first_commit_seq)?;
            entries.push(StoredEntry {
                first_commit_seq,
                params,
                committed_at: entry.committed_at,
                // An entry moved from the single-key layout (no commit time) may have
                // been delivered by waiting delivery, which keeps no ledger.
                sent: entry.committed_at.is_none() || record.is_some(),
                replay: record.is_some_and(|r| r.replay && r.state() == DeliveryState::Pending),
                trigger,
            });
        }
        Ok(entries)
    }

    /// Writes a delivery's ledger record and, in the same WriteBatch, deletes its backlog
    /// entry (a delivered or cancelled webhook) and records when the trigger last sent
    /// (unix milliseconds), when asked.
    ///
    /// Not synced, like [`Store::clear_trigger_params`]: a deletion lost to a power cut
    /// re-sends the webhook, which at-least-once allows.
    pub(crate) fn write_delivery(
        &self,
        record: &DeliveryRecord,
        delete_entry: bool,
        sent_at_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let (trigger, first_commit_seq) = (&record.trigger_name, record.first_commit_seq);
        self.put(
            &mut batch,
            ledger_key(trigger, first_commit_seq),
            record.encode_to_vec(),
        );
        if delete_entry {
            self.delete(&mut batch, backlog_key(trigger, first_commit_seq));
        }
        if let Some(at) = sent_at_ms {
            self.put(&mut batch, backlog_sent_key(trigger), at.to_be_bytes());
        }
        let mut options = WriteOptions::default();
        options.set_sync(false);
        self.db
            .write_opt(batch, &options)
            .map_err(|err| self.rocksdb_error("ledger write", err))
    }

    /// Puts a finished delivery back in its trigger's backlog (a dead letter retried, a
    /// delivered one replayed): its entry under its backlog key and its record (PENDING
    /// again) in one WriteBatch, so a crash keeps both or neither. Not synced, like
    /// [`Store::write_delivery`]: lost to a power cut, the operator's action is undone
    /// and the record is as it was.
    pub(crate) fn restore_backlog_entry(
        &self,
        record: &DeliveryRecord,
        entry: &BacklogEntry,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let (trigger, first_commit_seq) = (&record.trigger_name, record.first_commit_seq);
        self.put(
            &mut batch,
            ledger_key(trigger, first_commit_seq),
            record.encode_to_vec(),
        );
        self.put(
            &mut batch,
            backlog_key(trigger, first_commit_seq),
            entry.encode_to_vec(),
        );
        let mut options = WriteOptions::default();
        options.set_sync(false);
        self.db
            .write_opt(batch, &options)
            .map_err(|err| self.rocksdb_error("backlog restore", err))
    }

    /// The ledger record of a delivery, if it has left PENDING.
    pub fn delivery(
        &self,
        trigger: &str,
        first_commit_seq: u64,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        self.ledger_read(trigger, first_commit_seq)
    }

    /// The ledger record of a delivery as `M`: the whole record, or its head.
    fn ledger_read<M: prost::Message + Default>(
        &self,
        trigger: &str,
        first_commit_seq: u64,
    ) -> Result<Option<M>, StoreError> {
        let key = ledger_key(trigger, first_commit_seq);
        let Some(bytes) = self
            .get_pinned(&key)
            .map_err(|err| self.rocksdb_error("read", err))?
        else {
            return Ok(None);
        };
        M::decode(bytes.as_ref())
            .map(Some)
            .map_err(|err| self.corrupt_key(&key, &err.to_string()))
    }

    /// Whether the ledger has a record of this delivery (it left PENDING at least once).
    pub fn has_delivery(&self, trigger: &str, first_commit_seq: u64) -> Result<bool, StoreError> {
        self.get_pinned(ledger_key(trigger, first_commit_seq))
            .map(|value| value.is_some())
            .map_err(|err| self.rocksdb_error("read", err))
    }

    /// Replaces several backlog entries of one trigger by one that covers them all, in
    /// one WriteBatch with the store's durability: `merged` is written under its key and
    /// the entries under `absorbed` are deleted. A crash keeps either the old entries or
    /// the merged one.
    pub(crate) fn merge_backlog_entries(
        &self,
        merged: &BacklogWrite,
        absorbed: &[u64],
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for first_commit_seq in absorbed {
            self.delete(&mut batch, backlog_key(&merged.trigger, *first_commit_seq));
        }
        self.put(
            &mut batch,
            backlog_key(&merged.trigger, merged.first_commit_seq),
            encode_entry(merged),
        );
        self.write(batch, "backlog merge")
    }

    /// Whether a backlog entry is stored under this key.
    pub fn has_backlog_entry(
        &self,
        trigger: &str,
        first_commit_seq: u64,
    ) -> Result<bool, StoreError> {
        self.get_pinned(backlog_key(trigger, first_commit_seq))
            .map(|value| value.is_some())
            .map_err(|err| self.rocksdb_error("read", err))
    }

    /// Every key under `prefix`, in order. A scan reads its range once (at open, and for
    /// ledger retention), so it does not fill the block cache: it would push out the
    /// blocks point lookups use and hold memory in proportion to the data.
    ///
    /// Keys come back without the keyspace's prefix, as the runtime's key functions make
    /// them.
    fn scan(&self, prefix: &[u8]) -> impl Iterator<Item = Result<KeyValue, rocksdb::Error>> + '_ {
        let prefix = self.key(prefix);
        let mut read = ReadOptions::default();
        read.fill_cache(false);
        // Every prefix ends in `/`: the first key past the range ends in `0` instead.
        if let Some((last, head)) = prefix.split_last() {
            let mut end = head.to_vec();
            end.push(last.saturating_add(1));
            read.set_iterate_upper_bound(end);
        }
        let ours = self.keyspace.prefix.len();
        self.db
            .iterator_opt(IteratorMode::From(&prefix, Direction::Forward), read)
            .map(move |item| item.map(|(key, value)| (key[ours..].into(), value)))
    }

    /// `key` in this store's keyspace.
    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.keyspace.prefix.len() + key.len());
        full.extend_from_slice(&self.keyspace.prefix);
        full.extend_from_slice(key);
        full
    }

    /// Reads `key` of this store's keyspace.
    fn get_pinned(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<DBPinnableSlice<'_>>, rocksdb::Error> {
        self.db.get_pinned(self.key(key.as_ref()))
    }

    /// Adds a write of `key` (of this store's keyspace) to `batch`.
    fn put(&self, batch: &mut WriteBatch, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        batch.put(self.key(key.as_ref()), value);
    }

    /// Adds a deletion of `key` (of this store's keyspace) to `batch`.
    fn delete(&self, batch: &mut WriteBatch, key: impl AsRef<[u8]>) {
        batch.delete(self.key(key.as_ref()));
    }

    /// Every ledger record, per trigger in commit order.
    pub fn deliveries(&self) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut records = Vec::new();
        self.for_each_delivery(|record| {
            records.push(record);
            Ok(())
        })?;
        Ok(records)
    }

    /// Calls `visit` with every ledger record, per trigger in commit order, one at a time:
    /// a pass over the ledger that keeps little of each record holds little memory.
    pub fn for_each_delivery(
        &self,
        visit: impl FnMut(DeliveryRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.for_each_ledger(visit)
    }

    /// Visits every ledger record's head (what retention reads), in key order.
    pub(crate) fn for_each_delivery_head(
        &self,
        visit: impl FnMut(DeliveryRecordHead) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.for_each_ledger(visit)
    }

    /// Visits every ledger record as `M` (the whole record, or its head), in key order.
    fn for_each_ledger<M: prost::Message + Default>(
        &self,
        mut visit: impl FnMut(M) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for item in self.scan(LEDGER_PREFIX) {
            let (key, value) = item.map_err(|err| self.rocksdb_error("read", err))?;
            if !key.starts_with(LEDGER_PREFIX) {
                break;
            }
            visit(
                M::decode(value.as_ref())
                    .map_err(|err| self.corrupt_key(&key, &err.to_string()))?,
            )?;
        }
        Ok(())
    }

    /// Deletes ledger records (retention), in one unsynced WriteBatch.
    pub(crate) fn delete_deliveries(&self, keys: &[(String, u64)]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for (trigger, first_commit_seq) in keys {
            self.delete(&mut batch, ledger_key(trigger, *first_commit_seq));
        }
        let mut options = WriteOptions::default();
        options.set_sync(false);
        self.db
            .write_opt(batch, &options)
            .map_err(|err| self.rocksdb_error("ledger delete", err))
    }

    /// When trigger `trigger`'s last webhook was sent (unix milliseconds), if recorded.
    pub fn last_sent_ms(&self, trigger: &str) -> Result<Option<u64>, StoreError> {
        let key = backlog_sent_key(trigger);
        let Some(bytes) = self
            .get_pinned(&key)
            .map_err(|err| self.rocksdb_error("read", err))?
        else {
            return Ok(None);
        };
        <[u8; 8]>::try_from(bytes.as_ref())
            .map(|b| Some(u64::from_be_bytes(b)))
            .map_err(|_| self.corrupt_key(&key, "not an 8-byte time"))
    }

    /// Moves waiting delivery's pending `trigger-params` into the backlog, one entry per
    /// trigger (by name), in one synced WriteBatch: how a store written by the single-key
    /// layout is opened for decoupled delivery without losing or repeating a transaction.
    pub(crate) fn move_params_to_backlog(
        &self,
        params: &TriggerParams,
        triggers: &[String],
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        self.delete(&mut batch, TRIGGER_PARAMS_KEY);
        self.put(
            &mut batch,
            COMMIT_SEQ_KEY,
            params.last_commit_seq.to_be_bytes(),
        );
        let entry = BacklogEntry {
            params: Some(params.clone()),
            committed_at: None,
        }
        .encode_to_vec();
        for trigger in triggers {
            self.put(
                &mut batch,
                backlog_key(trigger, params.first_commit_seq),
                &entry,
            );
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(batch, &options)
            .map_err(|err| self.rocksdb_error("migrate", err))
    }

    /// The migration of a store whose backlog, ledger and last send times are keyed by
    /// trigger index (earlier builds) to keys by name, if it has any such key: index `i`
    /// becomes `names[i]` (the trigger at that position in the config this store is
    /// opened with, which is the trigger the index meant), or `i` in decimal (the name of
    /// an unnamed trigger) past the config's end. Ledger records gain the name. Nothing
    /// is written until [`Store::write_migration`].
    ///
    /// Reads every legacy key once; a store written by this build has none, so this is
    /// three empty range scans.
    pub(crate) fn named_keys_migration(
        &self,
        names: &[String],
    ) -> Result<Option<NamedKeysMigration>, StoreError> {
        let name_of = |index: u32| -> String {
            usize::try_from(index)
                .ok()
                .and_then(|i| names.get(i))
                .cloned()
                .unwrap_or_else(|| index.to_string())
        };
        let mut migration = NamedKeysMigration {
            batch: WriteBatch::default(),
            entries: 0,
            records: 0,
            last_sent: 0,
        };
        for item in self.scan(LEGACY_BACKLOG_PREFIX) {
            let (key, value) = item.map_err(|err| self.rocksdb_error("read", err))?;
            let Some((index, seq)) = parse_index_key(LEGACY_BACKLOG_PREFIX, &key) else {
                return Err(self.corrupt_key(&key, "malformed backlog key"));
            };
            self.delete(&mut migration.batch, &key);
            self.put(
                &mut migration.batch,
                backlog_key(&name_of(index), seq),
                &value,
            );
            migration.entries += 1;
        }
        for item in self.scan(LEGACY_LEDGER_PREFIX) {
            let (key, value) = item.map_err(|err| self.rocksdb_error("read", err))?;
            let Some((index, seq)) = parse_index_key(LEGACY_LEDGER_PREFIX, &key) else {
                return Err(self.corrupt_key(&key, "malformed ledger key"));
            };
            let mut record = DeliveryRecord::decode(value.as_ref())
                .map_err(|err| self.corrupt_key(&key, &err.to_string()))?;
            record.trigger_name = name_of(index);
            self.delete(&mut migration.batch, &key);
            self.put(
                &mut migration.batch,
                ledger_key(&record.trigger_name, seq),
                record.encode_to_vec(),
            );
            migration.records += 1;
        }
        for item in self.scan(LEGACY_BACKLOG_SENT_PREFIX) {
            let (key, value) = item.map_err(|err| self.rocksdb_error("read", err))?;
            let index = key
                .strip_prefix(LEGACY_BACKLOG_SENT_PREFIX)
                .and_then(|suffix| <[u8; 4]>::try_from(suffix).ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| self.corrupt_key(&key, "malformed last-sent key"))?;
            self.delete(&mut migration.batch, &key);
            self.put(
                &mut migration.batch,
                backlog_sent_key(&name_of(index)),
                &value,
            );
            migration.last_sent += 1;
        }
        let any = migration.entries + migration.records + migration.last_sent > 0;
        Ok(any.then_some(migration))
    }

    /// Writes a migration in one synced WriteBatch: a crash keeps the old keys or the
    /// new ones, never both, and once this returns no power cut brings the old ones back.
    pub(crate) fn write_migration(&self, migration: NamedKeysMigration) -> Result<(), StoreError> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(migration.batch, &options)
            .map_err(|err| self.rocksdb_error("migrate", err))
    }

    fn write(&self, batch: WriteBatch, operation: &'static str) -> Result<(), StoreError> {
        let mut options = WriteOptions::default();
        options.set_sync(self.durability == Durability::Synced);
        self.db
            .write_opt(batch, &options)
            .map_err(|err| self.rocksdb_error(operation, err))
    }

    pub(crate) fn corrupt_key(&self, key: &[u8], detail: &str) -> StoreError {
        StoreError::CorruptKey {
            key: String::from_utf8_lossy(key).escape_debug().to_string(),
            path: self.path.clone(),
            detail: detail.to_string(),
        }
    }

    /// Deletes the trigger variables once their webhooks are delivered.
    ///
    /// Not synced: if the deletion is lost to a crash, the webhooks fire once more,
    /// which at-least-once allows; the next synced commit makes it durable anyway.
    pub(crate) fn clear_trigger_params(&self) -> Result<(), StoreError> {
        let mut options = WriteOptions::default();
        options.set_sync(false);
        self.db
            .delete_opt(self.key(TRIGGER_PARAMS_KEY), &options)
            .map_err(|err| self.rocksdb_error("delete", err))
    }

    fn get<M: prost::Message + Default>(
        &self,
        key: &'static [u8],
        name: &'static str,
    ) -> Result<Option<M>, StoreError> {
        let Some(bytes) = self
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

    fn rocksdb_error(&self, operation: &'static str, source: rocksdb::Error) -> StoreError {
        StoreError::RocksDb {
            operation,
            path: self.path.clone(),
            source,
        }
    }

    /// Rewrites this store in the layout of builds before trigger names (the inverse of
    /// [`Store::named_keys_migration`]): every backlog entry, ledger record and last send
    /// time of the trigger `names[i]` moves to index `i`'s key, records losing their name
    /// as those builds wrote them, in one synced batch. Returns how many keys moved.
    /// Tests use it to make a store as an upgrade finds it; nothing else should.
    #[cfg_attr(not(any(test, feature = "__test-support")), allow(dead_code))]
    pub(crate) fn to_index_keys(&self, names: &[&str]) -> Result<usize, StoreError> {
        let index_of = |name: &str| {
            names
                .iter()
                .position(|n| *n == name)
                .and_then(|i| u32::try_from(i).ok())
        };
        let index_key = |prefix: &[u8], index: u32, seq: Option<u64>| {
            let mut key = prefix.to_vec();
            key.extend_from_slice(&index.to_be_bytes());
            if let Some(seq) = seq {
                key.extend_from_slice(&seq.to_be_bytes());
            }
            key
        };
        let mut batch = WriteBatch::default();
        let mut moved = 0;
        for (prefix, legacy) in [
            (BACKLOG_PREFIX, LEGACY_BACKLOG_PREFIX),
            (LEDGER_PREFIX, LEGACY_LEDGER_PREFIX),
        ] {
            for item in self.scan(prefix) {
                let (key, value) = item.map_err(|err| self.rocksdb_error("read", err))?;
                let Some((name, seq)) = parse_named_key(prefix, &key) else {
                    return Err(self.corrupt_key(&key, "malformed key"));
                };
                let Some(index) = index_of(name) else {
                    continue;
                };
                let value = if prefix == LEDGER_PREFIX {
                    let mut record = DeliveryRecord::decode(value.as_ref())
                        .map_err(|err| self.corrupt_key(&key, &err.to_string()))?;
                    record.trigger_name.clear();
                    record.encode_to_vec()
                } else {
                    value.to_vec()
                };
                self.delete(&mut batch, &key);
                self.put(&mut batch, index_key(legacy, index, Some(seq)), value);
                moved += 1;
            }
        }
        for item in self.scan(BACKLOG_SENT_PREFIX) {
            let (key, value) = item.map_err(|err| self.rocksdb_error("read", err))?;
            let name = std::str::from_utf8(&key[BACKLOG_SENT_PREFIX.len()..]).unwrap_or("");
            let Some(index) = index_of(name) else {
                continue;
            };
            self.delete(&mut batch, &key);
            self.put(
                &mut batch,
                index_key(LEGACY_BACKLOG_SENT_PREFIX, index, None),
                value,
            );
            moved += 1;
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(batch, &options)
            .map_err(|err| self.rocksdb_error("write", err))?;
        Ok(moved)
    }

    /// Flow's pending trigger variables, if the host's DB holds them: its root
    /// `trigger-params` key, outside this store's keyspace (see [`crate::flow_store`]).
    /// `None` in the root keyspace, where that key is this store's own.
    pub(crate) fn flow_trigger_params(&self) -> Result<Option<Vec<u8>>, StoreError> {
        if self.keyspace.prefix.is_empty() {
            return Ok(None);
        }
        self.db
            .get(crate::flow_store::FLOW_TRIGGER_PARAMS_KEY)
            .map_err(|err| self.rocksdb_error("read", err))
    }

    /// Moves Flow's pending variables into this store, in one synced WriteBatch that
    /// deletes Flow's key: `entries` as backlog entries of the triggers they name, with no
    /// commit time (they may have been sent). Either delivery mode sends such entries
    /// after the first Acknowledged.
    pub(crate) fn import_flow_params(
        &self,
        entries: &[(String, TriggerParams)],
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete(crate::flow_store::FLOW_TRIGGER_PARAMS_KEY);
        for (trigger, params) in entries {
            let entry = BacklogEntry {
                params: Some(params.clone()),
                committed_at: None,
            };
            self.put(
                &mut batch,
                backlog_key(trigger, params.first_commit_seq),
                entry.encode_to_vec(),
            );
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(batch, &options)
            .map_err(|err| self.rocksdb_error("import", err))
    }

    /// Writes raw bytes under a key, bypassing every check. Tests use it to plant corrupt
    /// or future-version values (through `test_support` outside this crate);
    /// nothing else should.
    #[cfg_attr(not(any(test, feature = "__test-support")), allow(dead_code))]
    pub(crate) fn put_raw(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.db
            .put(self.key(key), value)
            .map_err(|err| self.rocksdb_error("write", err))
    }
}

/// The index-keyed to name-keyed migration, ready to write (see
/// [`Store::named_keys_migration`]).
pub(crate) struct NamedKeysMigration {
    batch: WriteBatch,
    /// Backlog entries it moves.
    pub(crate) entries: usize,
    /// Ledger records it moves.
    pub(crate) records: usize,
    /// Last send times it moves.
    pub(crate) last_sent: usize,
}

/// One backlog entry to write at StartCommit: a new entry, or a merged one replacing the
/// entry already stored under the same key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BacklogWrite {
    /// Name of the trigger whose queue it belongs to.
    pub(crate) trigger: std::sync::Arc<str>,
    /// Commit sequence number of the first transaction it covers: its key.
    pub(crate) first_commit_seq: u64,
    /// The variables to deliver.
    pub(crate) params: TriggerParams,
    /// When the first transaction it covers committed.
    pub(crate) committed_at: triggers_proto::Timestamp,
}

/// The bytes of `BacklogEntry { params, committed_at }` for `entry`, encoded from borrowed
/// fields: building the message would clone the params on every StartCommit.
fn encode_entry(entry: &BacklogWrite) -> Vec<u8> {
    use prost::encoding::message;
    let mut bytes = Vec::with_capacity(
        message::encoded_len(1, &entry.params) + message::encoded_len(2, &entry.committed_at),
    );
    message::encode(1, &entry.params, &mut bytes);
    message::encode(2, &entry.committed_at, &mut bytes);
    bytes
}

/// A backlog entry read back from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntry {
    /// Name of the trigger whose queue it belongs to.
    pub trigger: String,
    /// Commit sequence number of the first transaction it covers: its key.
    pub first_commit_seq: u64,
    /// The variables to deliver.
    pub params: TriggerParams,
    /// When the first transaction it covers committed (absent for entries moved from
    /// the single-key layout).
    pub committed_at: Option<triggers_proto::Timestamp>,
    /// Whether a receiver may have it, so a re-fire must repeat it exactly: the ledger
    /// has a record of it (it was picked for sending at least once), or it was moved from
    /// the single-key layout, whose waiting delivery keeps no ledger.
    pub sent: bool,
    /// An operator asked for it to be sent again (its record is PENDING with `replay`):
    /// it goes as `operator-replay`.
    pub replay: bool,
}

/// `prefix`, the trigger's name, `/`, and the sequence number (big-endian, so a
/// trigger's keys sort in commit order). A name never holds `/`, so every key of one
/// trigger shares the prefix `<prefix><name>/` and no other trigger's keys do.
fn named_key(prefix: &[u8], trigger: &str, first_commit_seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + trigger.len() + 9);
    key.extend_from_slice(prefix);
    key.extend_from_slice(trigger.as_bytes());
    key.push(b'/');
    key.extend_from_slice(&first_commit_seq.to_be_bytes());
    key
}

/// The trigger name and sequence number of a [`named_key`], read from its end (the
/// sequence number's bytes may hold anything, `/` included).
fn parse_named_key<'k>(prefix: &[u8], key: &'k [u8]) -> Option<(&'k str, u64)> {
    let suffix = key.strip_prefix(prefix)?;
    let (head, seq) = suffix.split_at_checked(suffix.len().checked_sub(8)?)?;
    let name = head.strip_suffix(b"/")?;
    let name = std::str::from_utf8(name).ok()?;
    let valid = !name.is_empty() && !name.contains('/');
    Some((name, u64::from_be_bytes(seq.try_into().ok()?))).filter(|_| valid)
}

/// The trigger index and sequence number of a key of earlier builds.
fn parse_index_key(prefix: &[u8], key: &[u8]) -> Option<(u32, u64)> {
    let suffix = key.strip_prefix(prefix)?;
    let (index, seq) = suffix.split_at_checked(4)?;
    Some((
        u32::from_be_bytes(index.try_into().ok()?),
        u64::from_be_bytes(seq.try_into().ok()?),
    ))
}

impl StoredEntry {
    /// Whether this is the entry of trigger `trigger` starting at `first_commit_seq`.
    pub(crate) fn is(&self, trigger: &str, first_commit_seq: u64) -> bool {
        self.first_commit_seq == first_commit_seq && self.trigger == trigger
    }
}

fn backlog_key(trigger: &str, first_commit_seq: u64) -> Vec<u8> {
    named_key(BACKLOG_PREFIX, trigger, first_commit_seq)
}

fn ledger_key(trigger: &str, first_commit_seq: u64) -> Vec<u8> {
    named_key(LEDGER_PREFIX, trigger, first_commit_seq)
}

fn backlog_sent_key(trigger: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(BACKLOG_SENT_PREFIX.len() + trigger.len());
    key.extend_from_slice(BACKLOG_SENT_PREFIX);
    key.extend_from_slice(trigger.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::fixtures::checkpoint;

    #[test]
    fn backlog_entries_encode_as_the_message_does() {
        let write = BacklogWrite {
            trigger: "3".into(),
            first_commit_seq: 7,
            params: triggers::Variables::placeholder().to_params(),
            committed_at: triggers_proto::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            },
        };
        let message = BacklogEntry {
            params: Some(write.params.clone()),
            committed_at: Some(write.committed_at),
        };
        assert_eq!(encode_entry(&write), message.encode_to_vec());
    }

    /// Issue 15: inside a host's RocksDB, every key the runtime writes starts with its
    /// keyspace's prefix, the host's keys stay as they are, and two keyspaces of one DB are
    /// two stores.
    #[test]
    fn a_store_in_a_host_db_keeps_to_its_keyspace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = Options::default();
        options.create_if_missing(true);
        let db = Arc::new(DB::open(&options, dir.path()).expect("host opens"));
        // The host's own keys, as Flow's runtime names them.
        db.put(b"checkpoint", b"host checkpoint").expect("writes");
        db.put(b"trigger-params", b"{\"host\": true}")
            .expect("writes");
        let keyspace = |prefix: &str| Keyspace::prefixed(prefix.as_bytes()).expect("valid");
        let ours = Store::in_host_db(db.clone(), keyspace("triggers/"), Durability::Synced)
            .expect("the keyspace is free");
        let other = Store::in_host_db(db.clone(), keyspace("other/"), Durability::Synced)
            .expect("the keyspace is free");
        let write = BacklogWrite {
            trigger: "onCommit".into(),
            first_commit_seq: 1,
            params: triggers::Variables::placeholder().to_params(),
            committed_at: triggers_proto::Timestamp::default(),
        };
        ours.commit_backlog(&checkpoint(7), Some(1), &[write])
            .expect("commits");
        assert_eq!(ours.checkpoint().expect("reads"), checkpoint(7));
        assert_eq!(ours.commit_seq().expect("reads"), 1);
        assert_eq!(ours.backlog().expect("reads").len(), 1);
        assert_eq!(other.backlog().expect("reads").len(), 0);
        assert_eq!(other.checkpoint().expect("reads"), Checkpoint::default());
        assert_eq!(
            db.get(b"checkpoint").expect("reads").as_deref(),
            Some(&b"host checkpoint"[..])
        );
        let keys: Vec<Vec<u8>> = db
            .iterator(IteratorMode::Start)
            .map(|item| item.expect("reads").0.to_vec())
            .filter(|key| !key.starts_with(b"checkpoint") && !key.starts_with(b"trigger-params"))
            .collect();
        assert!(!keys.is_empty());
        assert!(
            keys.iter().all(|key| key.starts_with(b"triggers/")),
            "{:?}",
            keys.iter()
                .map(|k| String::from_utf8_lossy(k))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            Keyspace::prefixed(Vec::new()).expect_err("empty"),
            KeyspaceError::Empty
        );
        assert!(matches!(
            Keyspace::prefixed(vec![b'x'; 65]),
            Err(KeyspaceError::TooLong(65))
        ));
    }

    /// Issue 15: Flow's JSON `trigger-params` at the root of a store opened as the
    /// runtime's own is a typed error that says what the store is and how to open it.
    #[test]
    fn a_flow_store_opened_as_our_own_says_how_to_open_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Durability::Synced).expect("opens");
        store
            .put_raw(TRIGGER_PARAMS_KEY, br#"{"run_id":"r1"}"#)
            .expect("writes");
        let err = store.trigger_params().expect_err("not ours");
        assert!(
            matches!(err, StoreError::CorruptKey { .. })
                && err.to_string().contains("Estuary Flow")
                && err.to_string().contains("Store::in_host_db"),
            "{err}"
        );
    }

    /// Issue 16: the stores of one process share one block cache, so its memory is
    /// bounded however many shards the process hosts.
    #[test]
    fn every_store_of_the_process_shares_one_block_cache() {
        let dirs = [
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        ];
        let stores: Vec<Store> = dirs
            .iter()
            .map(|dir| Store::open(dir.path(), Durability::Unsynced).expect("opens"))
            .collect();
        let cache = shared_block_cache();
        let mut usage = Vec::new();
        for (n, store) in stores.iter().enumerate() {
            store
                .commit(&checkpoint(n as i64 + 1), None)
                .expect("commits");
            store.db.flush().expect("flushes");
            // A point read of the flushed table loads its blocks into the block cache.
            store.checkpoint().expect("reads");
            usage.push(cache.get_usage());
        }
        assert!(
            usage[0] > 0,
            "the first store's blocks are in the shared cache"
        );
        assert!(
            usage[1] > usage[0],
            "and the second's join them there: {usage:?}"
        );
    }

    /// Issue 16: a store writes RocksDB's log to `tracing`, not to a `LOG` file of its
    /// own (a file descriptor per shard, and a file growing in its directory).
    #[test]
    fn a_store_keeps_no_log_file_of_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Durability::Unsynced).expect("opens");
        store.commit(&checkpoint(1), None).expect("commits");
        store.db.flush().expect("flushes");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("lists")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert!(
            names.iter().any(|name| name.starts_with("MANIFEST")),
            "{names:?}"
        );
        assert!(
            !names.iter().any(|name| name.starts_with("LOG")),
            "no info log file: {names:?}"
        );
    }

    /// Issue 16: at most 6 file descriptors a store, however long it runs: each flush's
    /// table is compacted at once, so level 0 does not pile up (by default it kept up to
    /// four tables open, 9 descriptors in all).
    #[test]
    fn a_long_running_store_keeps_six_files_open_at_most() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Durability::Unsynced).expect("opens");
        let open_in_store = || {
            std::fs::read_dir("/proc/self/fd")
                .expect("lists fds")
                .flatten()
                .filter(|fd| {
                    std::fs::read_link(fd.path()).is_ok_and(|target| target.starts_with(dir.path()))
                })
                .count()
        };
        // Seven flushes: by default three level-0 tables and one level-1 would be left.
        for offset in 0..7 {
            store.commit(&checkpoint(offset), None).expect("commits");
            store.db.flush().expect("flushes");
        }
        let mut open = open_in_store();
        for _ in 0..500 {
            if open <= 6 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            open = open_in_store();
        }
        assert!(open <= 6, "{open} files of the store open");
    }

    /// Issue 16: a keyspace is one shard's: a second store on it, or on a prefix that
    /// starts it or that it starts, is a clear error until the first is dropped; keyspaces
    /// that do not overlap, or another DB's, open side by side.
    #[test]
    fn an_overlapping_keyspace_of_one_db_is_refused_until_it_is_free() {
        let open_db = |dir: &tempfile::TempDir| {
            let mut options = Options::default();
            options.create_if_missing(true);
            Arc::new(DB::open(&options, dir.path()).expect("host opens"))
        };
        let (one, two) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let (db, other_db) = (open_db(&one), open_db(&two));
        let keyspace = |prefix: &str| Keyspace::prefixed(prefix.as_bytes()).expect("valid");
        let store = |db: &Arc<DB>, prefix: &str| {
            Store::in_host_db(db.clone(), keyspace(prefix), Durability::Synced)
        };
        let first = store(&db, "shards/a/").expect("free");
        for overlapping in ["shards/a/", "shards/", "shards/a/b/"] {
            let err = store(&db, overlapping).expect_err("overlaps");
            assert!(
                matches!(err, StoreError::KeyspaceInUse { .. })
                    && err.to_string().contains("shards/a/"),
                "{overlapping}: {err}"
            );
        }
        let beside = store(&db, "shards/b/").expect("does not overlap");
        let elsewhere = store(&other_db, "shards/a/").expect("another DB");
        drop(first);
        let again = store(&db, "shards/a/").expect("free once the first is dropped");
        drop((beside, elsewhere, again));
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
    fn backlog_entries_commit_with_the_checkpoint_merge_in_place_and_finish() {
        let dir = tempfile::tempdir().expect("tempdir");
        let params = |run: &str, first: u64, last: u64| TriggerParams {
            version: 2,
            flow_run_id: run.into(),
            first_commit_seq: first,
            last_commit_seq: last,
            transaction_count: last - first + 1,
            ..Default::default()
        };
        let write = |trigger: &str, first_commit_seq, params| BacklogWrite {
            trigger: trigger.into(),
            first_commit_seq,
            params,
            committed_at: triggers_proto::Timestamp::default(),
        };
        {
            let store = Store::open(dir.path(), Durability::Synced).expect("opens");
            store
                .commit_backlog(
                    &checkpoint(1),
                    Some(1),
                    &[
                        write("first", 1, params("a", 1, 1)),
                        write("second", 1, params("a", 1, 1)),
                    ],
                )
                .expect("commits");
            // Trigger 1 coalesces: its entry 1 now covers 1..=2. Trigger 0 queues.
            store
                .commit_backlog(
                    &checkpoint(2),
                    Some(2),
                    &[
                        write("first", 2, params("b", 2, 2)),
                        write("second", 1, params("b", 1, 2)),
                    ],
                )
                .expect("commits");
            let delivered = DeliveryRecord {
                trigger_name: "first".into(),
                first_commit_seq: 1,
                last_commit_seq: 1,
                state: triggers_proto::DeliveryState::Success as i32,
                ..Default::default()
            };
            store
                .write_delivery(&delivered, true, Some(1234))
                .expect("finishes");
        }
        let store = Store::open(dir.path(), Durability::Synced).expect("reopens");
        assert_eq!(store.checkpoint().expect("reads"), checkpoint(2));
        assert_eq!(store.commit_seq().expect("reads"), 2);
        assert_eq!(store.last_sent_ms("first").expect("reads"), Some(1234));
        assert_eq!(store.last_sent_ms("second").expect("reads"), None);
        let entries: Vec<(String, u64, String, u64)> = store
            .backlog()
            .expect("reads")
            .into_iter()
            .map(|e| {
                (
                    e.trigger,
                    e.first_commit_seq,
                    e.params.flow_run_id,
                    e.params.last_commit_seq,
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("first".to_string(), 2, "b".to_string(), 2),
                ("second".to_string(), 1, "b".to_string(), 2)
            ]
        );
        let ledger = store.deliveries().expect("reads");
        assert_eq!(ledger.len(), 1);
        assert_eq!(
            store.delivery("first", 1).expect("reads"),
            Some(ledger[0].clone())
        );
        assert!(!store.has_backlog_entry("first", 1).expect("reads"));
        assert!(store.has_backlog_entry("first", 2).expect("reads"));
        store
            .delete_deliveries(&[("first".to_string(), 1)])
            .expect("deletes");
        assert!(store.deliveries().expect("reads").is_empty());
    }

    #[test]
    fn single_key_params_move_to_every_triggers_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Durability::Synced).expect("opens");
        let params = TriggerParams {
            version: 1,
            flow_run_id: "legacy".into(),
            first_commit_seq: 5,
            last_commit_seq: 5,
            ..Default::default()
        };
        store
            .commit(&checkpoint(3), Some(&params))
            .expect("commits");
        let names = ["0".to_string(), "1".to_string()];
        store
            .move_params_to_backlog(&params, &names)
            .expect("moves");
        assert_eq!(store.trigger_params().expect("reads"), None);
        let queues: Vec<(String, u64)> = store
            .backlog()
            .expect("reads")
            .into_iter()
            .map(|e| (e.trigger, e.first_commit_seq))
            .collect();
        assert_eq!(queues, [("0".to_string(), 5), ("1".to_string(), 5)]);
        assert_eq!(store.commit_seq().expect("reads"), 5);
    }

    #[test]
    fn corrupt_backlog_bytes_are_a_typed_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Durability::Synced).expect("opens");
        store.put_raw(COMMIT_SEQ_KEY, b"xyz").expect("writes");
        assert!(matches!(
            store.commit_seq(),
            Err(StoreError::CorruptKey { .. })
        ));
        store.put_raw(b"queue/\x00", b"").expect("writes");
        assert!(matches!(
            store.backlog(),
            Err(StoreError::CorruptKey { .. })
        ));
    }

    #[test]
    fn named_keys_parse_back_whatever_bytes_the_sequence_number_holds() {
        for (name, seq) in [("a", 0), ("onCommit", u64::MAX), ("x.y-z_0", 0x2f2f_2f2f)] {
            let key = backlog_key(name, seq);
            assert_eq!(parse_named_key(BACKLOG_PREFIX, &key), Some((name, seq)));
        }
        // A name is never empty and never holds `/`; a key of another layout is not one.
        for key in [
            &b"queue//\0\0\0\0\0\0\0\x01"[..],
            b"queue/a/b/\0\0\0\0\0\0\0\x01",
            b"queue/a\0\0\0\0\0\0\0\x01",
            b"queue/a/\x01",
        ] {
            assert_eq!(parse_named_key(BACKLOG_PREFIX, key), None, "{key:?}");
        }
        // One trigger's keys are one contiguous range, in commit order, even beside a
        // name that extends it.
        let mut keys = [
            backlog_key("a", 2),
            backlog_key("a.b", 1),
            backlog_key("a", 1),
            backlog_key("a-", 3),
        ];
        keys.sort();
        let names: Vec<_> = keys
            .iter()
            .map(|k| parse_named_key(BACKLOG_PREFIX, k).expect("parses"))
            .collect();
        assert_eq!(names, [("a-", 3), ("a.b", 1), ("a", 1), ("a", 2)]);
    }

    /// Issue 18: a store written with index keys (byte for byte as earlier builds wrote
    /// them) moves to name keys by the config's positions, in one batch, and only once.
    #[test]
    fn index_keys_migrate_to_names_by_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Durability::Synced).expect("opens");
        let entry = |run: &str| {
            BacklogEntry {
                params: Some(TriggerParams {
                    version: 2,
                    flow_run_id: run.into(),
                    first_commit_seq: 7,
                    last_commit_seq: 7,
                    ..Default::default()
                }),
                committed_at: Some(triggers_proto::Timestamp::default()),
            }
            .encode_to_vec()
        };
        let record = DeliveryRecord {
            trigger: 1,
            first_commit_seq: 7,
            state: triggers_proto::DeliveryState::Failed as i32,
            error: "503".into(),
            ..Default::default()
        };
        // Trigger 0's and 1's entries of commit 7; trigger 5 is past the config's end.
        store
            .put_raw(b"backlog/\0\0\0\0\0\0\0\0\0\0\0\x07", &entry("r0"))
            .expect("writes");
        store
            .put_raw(b"backlog/\0\0\0\x01\0\0\0\0\0\0\0\x07", &entry("r1"))
            .expect("writes");
        store
            .put_raw(b"backlog/\0\0\0\x05\0\0\0\0\0\0\0\x07", &entry("r5"))
            .expect("writes");
        store
            .put_raw(
                b"ledger/\0\0\0\x01\0\0\0\0\0\0\0\x07",
                &record.encode_to_vec(),
            )
            .expect("writes");
        store
            .put_raw(b"backlog-sent/\0\0\0\x01", &99u64.to_be_bytes())
            .expect("writes");

        let names = ["onCommit".to_string(), "slack".to_string()];
        let migration = store
            .named_keys_migration(&names)
            .expect("reads")
            .expect("has work");
        assert_eq!(
            (migration.entries, migration.records, migration.last_sent),
            (3, 1, 1)
        );
        store.write_migration(migration).expect("writes");

        let entries: Vec<(String, u64, String)> = store
            .backlog()
            .expect("reads")
            .into_iter()
            .map(|e| (e.trigger, e.first_commit_seq, e.params.flow_run_id))
            .collect();
        assert_eq!(
            entries,
            [
                ("5".to_string(), 7, "r5".to_string()),
                ("onCommit".to_string(), 7, "r0".to_string()),
                ("slack".to_string(), 7, "r1".to_string()),
            ]
        );
        let moved = store.delivery("slack", 7).expect("reads").expect("moved");
        assert_eq!(
            moved,
            DeliveryRecord {
                trigger_name: "slack".into(),
                ..record
            }
        );
        assert_eq!(store.last_sent_ms("slack").expect("reads"), Some(99));
        // Nothing of the old layout is left, so the next open has nothing to do.
        for prefix in [
            LEGACY_BACKLOG_PREFIX,
            LEGACY_LEDGER_PREFIX,
            LEGACY_BACKLOG_SENT_PREFIX,
        ] {
            assert_eq!(store.scan(prefix).count(), 0);
        }
        assert!(store.named_keys_migration(&names).expect("reads").is_none());
    }

    /// The same in a host's keyspace: the migration reads and writes only its keys.
    #[test]
    fn index_keys_migrate_inside_a_keyspace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = Options::default();
        options.create_if_missing(true);
        let db = Arc::new(DB::open(&options, dir.path()).expect("host opens"));
        db.put(b"checkpoint", b"host").expect("writes");
        let store = Store::in_host_db(
            db.clone(),
            Keyspace::prefixed(&b"triggers/"[..]).expect("valid"),
            Durability::Synced,
        )
        .expect("the keyspace is free");
        let write = |trigger: &str, seq| BacklogWrite {
            trigger: trigger.into(),
            first_commit_seq: seq,
            params: TriggerParams {
                version: 2,
                first_commit_seq: seq,
                last_commit_seq: seq,
                ..Default::default()
            },
            committed_at: triggers_proto::Timestamp::default(),
        };
        store
            .commit_backlog(
                &checkpoint(1),
                Some(2),
                &[write("0", 1), write("0", 2), write("1", 2)],
            )
            .expect("commits");
        assert_eq!(store.to_index_keys(&["0", "1"]).expect("downgrades"), 3);
        assert!(store.backlog().expect("reads").is_empty(), "all moved");
        let names = ["0".to_string(), "1".to_string()];
        let migration = store
            .named_keys_migration(&names)
            .expect("reads")
            .expect("has work");
        store.write_migration(migration).expect("writes");
        let keys: Vec<(String, u64)> = store
            .backlog()
            .expect("reads")
            .into_iter()
            .map(|e| (e.trigger, e.first_commit_seq))
            .collect();
        assert_eq!(keys, [("0".into(), 1), ("0".into(), 2), ("1".into(), 2)]);
        assert_eq!(
            db.get(b"checkpoint").expect("reads").as_deref(),
            Some(&b"host"[..])
        );
    }

    #[test]
    fn a_malformed_index_key_is_a_typed_error_and_nothing_moves() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Durability::Synced).expect("opens");
        store.put_raw(b"backlog/\0\x01", b"").expect("writes");
        let err = store
            .named_keys_migration(&[])
            .err()
            .expect("malformed key");
        assert!(matches!(err, StoreError::CorruptKey { .. }), "{err}");
    }

    #[test]
    fn a_second_handle_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = Store::open(dir.path(), Durability::Synced).expect("opens");
        let err = Store::open(dir.path(), Durability::Synced).expect_err("locked");
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("one writer"), "{err}");
        // RocksDB's error is kept as the cause, with its kind.
        assert_eq!(err.rocksdb_kind(), Some(rocksdb::ErrorKind::IOError));
        let cause = std::error::Error::source(&err).expect("a cause");
        assert!(cause.to_string().contains("LOCK"), "{cause}");
    }

    #[test]
    fn an_open_that_fails_for_another_reason_is_not_locked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"not a directory").expect("writes");
        let err = Store::open(&file, Durability::Synced).expect_err("not a store");
        assert!(
            matches!(
                err,
                StoreError::RocksDb {
                    operation: "open",
                    ..
                }
            ),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some(), "{err}");
    }

    #[test]
    fn corrupt_bytes_are_a_typed_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Durability::Synced).expect("opens");
        store
            .put_raw(TRIGGER_PARAMS_KEY, &[0xff, 0xff, 0xff])
            .expect("writes");
        store
            .put_raw(CHECKPOINT_KEY, &[0x0a, 0x05, 0x01])
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
