//! Fixtures shared by this crate's integration tests (each test binary includes what it
//! uses with `mod support;`).

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;
use triggers::{Deliverer, NetworkPolicy, RetryBackoff};

/// A deliverer that may reach the tests' receiver on 127.0.0.1 (the default policy
/// refuses loopback), backing off as `backoff` says.
pub fn loopback_deliverer(backoff: RetryBackoff) -> Deliverer {
    Deliverer::with_policy(backoff, NetworkPolicy::ALLOW_LOOPBACK).expect("client builds")
}

/// [`loopback_deliverer`] retrying in milliseconds, so tests do not sleep for real
/// backoff.
pub fn fast_deliverer() -> Deliverer {
    loopback_deliverer(
        RetryBackoff::new(Duration::from_millis(5), Duration::from_millis(20)).with_jitter(0.5),
    )
}

/// Log output captured from a tracing subscriber installed for the current thread.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Installs a TRACE-level subscriber writing here, for as long as the guard lives
    /// (on this thread: use a current-thread runtime, the `#[tokio::test]` default). Spans
    /// log a line when they close, so a span's fields show even without events in it.
    pub fn install() -> (Self, LogGuard) {
        let captured = Self::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_writer(move || writer.clone())
            .finish();
        let guard = LogGuard {
            _default: tracing::subscriber::set_default(subscriber),
            // With one live dispatch, a callsite first reached on another test's thread
            // caches "never" for every thread (tokio-rs/tracing#3611); a second one makes
            // tracing ask each (as in the runtime's backlog test).
            _second: tracing::Dispatch::new(tracing_subscriber::registry()),
        };
        (captured, guard)
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
    }
}

/// Keeps a [`CapturedLogs`] subscriber installed while it lives.
pub struct LogGuard {
    _default: tracing::subscriber::DefaultGuard,
    _second: tracing::Dispatch,
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
