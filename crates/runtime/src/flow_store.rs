//! Stores written by Estuary Flow's runtime: the pending trigger variables Flow keeps
//! under its own `trigger-params` key, read so they fire here.
//!
//! Flow's runtimes (V1 `crates/runtime`, V2 `crates/runtime-next`) keep a materialization
//! shard's state at the root of its RocksDB: `checkpoint` (Gazette's `consumer.Checkpoint`),
//! `connector-state` (JSON, merged by merge-patch), `last-applied`, `MK-v2:` max keys, and in
//! V2 `FH:`/`FC:` frontiers, `AI:` ack intents, `committed-close`, `hinted-close`. A runtime
//! linked into such a DB keeps to its own keyspace ([`crate::Keyspace`]), so none of those
//! collide with its keys; it reads one of Flow's: `trigger-params`, JSON, in either of the
//! forms Flow has written (estuary/flow `crates/models/src/triggers.rs`,
//! `PersistedTriggerParams`):
//!
//! - **single**: one `TriggerVariables` object, fired by every trigger (V1, and V2 before
//!   per-trigger debounce): `{"collection_names": [...], "connector_image": "...",
//!   "materialization_name": "...", "flow_published_at_min": "...",
//!   "flow_published_at_max": "...", "run_id": "..."}` (older builds: `flow_run_id`
//!   instead of `run_id`).
//! - **per config**: a map from Flow's key of a trigger, `"{METHOD} {url}"`, to its
//!   variables (V2 with debounce); `{}` means nothing is pending.
//!
//! Flow fires a pending value after the first Acknowledged and then deletes the key; a
//! map entry that no configured trigger has is dropped (Flow logs "pending trigger has no
//! matching config; dropping"). Here, at open, the value moves into this runtime's own
//! layout (one backlog entry per trigger, or waiting delivery's single key) in one synced
//! WriteBatch that also deletes Flow's key, so it fires after the first Acknowledged, as
//! a `recovery-refire` (Flow may have sent it before it stopped), and a crash keeps
//! either Flow's key or ours, never both nor neither. Its entries are numbered 0 (its
//! `first_commit_seq` and `last_commit_seq` render 0): the transaction was Flow's, and
//! this runtime's numbers start at 1, so it sorts before every one of them.
//!
//! Times: V1 wrote RFC 3339 with `Z` and trimmed fractions, or `""` when the transaction
//! had no clocks; V2 writes chrono's form (`+00:00`, 0/3/6/9 fraction digits). Both parse;
//! an empty or unparsable time becomes the Unix epoch (the variable has no other value to
//! take), and `run_id` is kept as Flow wrote it.

pub use triggers::{FlowParamsError, MAX_FLOW_TRIGGER_PARAMS_BYTES};

/// Flow's key of its pending trigger variables, at the root of the DB.
pub const FLOW_TRIGGER_PARAMS_KEY: &[u8] = b"trigger-params";
