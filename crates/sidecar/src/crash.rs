//! Crash points armed from the environment, for the crash tests: the binaries call
//! [`arm_from_env`] first. A process started with `TRIGGERS_CRASH_POINT=name` (or
//! `name@N` for the N-th time the point is reached) prints `CRASH_POINT_REACHED name` to
//! stderr when it gets there and freezes; the test, reading stderr, then kills it with
//! SIGKILL. The points are the library's (`triggers_runtime`'s crash module lists them)
//! and the reference consumer's `consumer.after_start_commit` (before Acknowledged).
//! Without the `failpoints` feature nothing is armed.

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
