//! Named crash points, for the crash-recovery tests.
//!
//! With the `failpoints` feature, `crash_point!("name")` marks a place where a test may
//! stop the process. A process started with `TRIGGERS_CRASH_POINT=name` (or `name@N` for
//! the N-th time the point is reached) prints `CRASH_POINT_REACHED name` to stderr when it
//! gets there and freezes; the test, reading stderr, then kills it with SIGKILL. Without
//! the feature the macro compiles to nothing.
//!
//! The points: `start_commit.before_write`, `start_commit.after_write` (durable, not yet
//! replied), `consumer.after_start_commit` (before Acknowledged),
//! `acknowledged.before_delete` (waiting delivery: delivered, params not yet deleted), and
//! `backlog.before_delete` (decoupled delivery: one webhook delivered, its backlog entry
//! not yet deleted).
//!
//! In-process tests stop one shard at a point with [`shard_point_name`]: the shard runs
//! the failpoint of that name (`fail::cfg_callback`, say, to hold it there while the test
//! drops the future waiting on it). Only that shard stops, so tests run in parallel.
//! The points, on the store thread: `start_commit.store_write` (decoupled StartCommit,
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

/// The failpoint a store thread runs at `point` for the shard whose store is `store_dir`
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

/// The environment variable naming the crash point to stop at.
pub const CRASH_POINT_ENV: &str = "TRIGGERS_CRASH_POINT";
/// What a process prints to stderr when it reaches its crash point.
pub const CRASH_POINT_REACHED: &str = "CRASH_POINT_REACHED";

/// Arms the crash point named by `TRIGGERS_CRASH_POINT`, if any. Binaries call this first.
#[cfg(feature = "failpoints")]
pub fn arm_from_env() {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let Ok(spec) = std::env::var(CRASH_POINT_ENV) else {
        return;
    };
    let (name, nth) = match spec.split_once('@') {
        Some((name, nth)) => (name.to_string(), nth.parse::<usize>().unwrap_or(1)),
        None => (spec.clone(), 1),
    };
    let reached = AtomicUsize::new(0);
    let label = name.clone();
    let armed = fail::cfg_callback(name, move || {
        if reached.fetch_add(1, Ordering::SeqCst) + 1 == nth {
            let mut stderr = std::io::stderr();
            let _ = writeln!(stderr, "{CRASH_POINT_REACHED} {label}");
            let _ = stderr.flush();
            // Freeze here until the test kills the process.
            loop {
                std::thread::park();
            }
        }
    });
    if let Err(err) = armed {
        eprintln!("cannot arm crash point {spec:?}: {err}");
    }
}

/// Without the `failpoints` feature there is nothing to arm.
#[cfg(not(feature = "failpoints"))]
pub fn arm_from_env() {}
