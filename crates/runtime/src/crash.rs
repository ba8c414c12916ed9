//! Named crash points, for the crash-recovery tests.
//!
//! With the `failpoints` feature, `crash_point!("name")` marks a place where a test may
//! stop the process (a `fail` failpoint of that name; the sidecar crate's binaries arm
//! one from `TRIGGERS_CRASH_POINT`, print when they reach it and freeze until the test's
//! SIGKILL). Without the feature the macro compiles to nothing.
//!
//! The points: `start_commit.before_write`, `start_commit.after_write` (durable, not yet
//! replied), `consumer.after_start_commit` (before Acknowledged),
//! `acknowledged.before_delete` (waiting delivery: delivered, params not yet deleted),
//! `backlog.before_delete` (decoupled delivery: one webhook delivered, its backlog entry
//! not yet deleted), and `migration.before_write` / `migration.after_write` (at open, on
//! either side of the batch that moves an earlier build's index keys to trigger names).
//!
//! In-process tests stop one shard at a point with [`shard_point_name`]: the shard runs
//! the failpoint of that name (`fail::cfg_callback`, say, to hold it there while the test
//! drops the future waiting on it). Only that shard stops, so tests run in parallel.
//! The points, on the store lane: `start_commit.store_write` (decoupled StartCommit,
//! just before its WriteBatch), `backlog.finish` (recording a finished delivery, before
//! anything is written); on a backlog worker, an async task (a callback that blocks
//! holds a runtime thread): `backlog.pick` (before it takes its queue's lock to pick).

/// Marks a named crash point (see the module docs).
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name);
    };
}
pub(crate) use crash_point;

/// The failpoint a store lane runs at `point` for the shard whose store is `store_dir`
/// (the path as given to [`crate::Shard::open`]).
pub fn shard_point_name(point: &str, store_dir: &std::path::Path) -> String {
    format!("{point} {}", store_dir.display())
}

/// Runs the per-shard failpoint `point` of the shard labelled `shard` (its store path).
#[cfg(feature = "failpoints")]
pub(crate) fn shard_point(point: &str, shard: &str) {
    fail::eval(&format!("{point} {shard}"), |_| ());
}

/// Without the `failpoints` feature there are no per-shard points.
#[cfg(not(feature = "failpoints"))]
pub(crate) fn shard_point(_point: &str, _shard: &str) {}
