//! A bound on the requests in flight to one origin, for every trigger of every shard
//! that shares a [`crate::Deliverer`].
//!
//! HTTP/1.1 carries one request per connection, so a process whose 500 shards each
//! deliver to one Airflow opened a connection per request in flight: 1,984 of them to
//! one endpoint, and as many file descriptors. The bound keeps that to
//! [`DEFAULT_MAX_IN_FLIGHT_PER_ORIGIN`] per origin (the most one trigger may ask for);
//! the other requests wait for a place within their own attempt's timeout (a request
//! still waiting when it ends is a timed-out attempt, retried as one). Origins are apart:
//! a slow one never holds up another.

use crate::MAX_MAX_IN_FLIGHT;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Requests in flight to one origin at most, by default: `maxInFlight`'s own bound.
pub const DEFAULT_MAX_IN_FLIGHT_PER_ORIGIN: usize = MAX_MAX_IN_FLIGHT as usize;
/// Largest bound [`crate::Deliverer::with_max_in_flight_per_origin`] takes.
pub const MAX_IN_FLIGHT_PER_ORIGIN: usize = 4096;
/// Origins tracked before idle ones are forgotten (a process's configs name a bounded
/// number; test fires may add more).
const TRACKED_ORIGINS: usize = 1024;

/// The places per origin, shared by every clone of a deliverer.
#[derive(Debug)]
pub(crate) struct OriginLimits {
    per_origin: usize,
    origins: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl OriginLimits {
    /// `per_origin` places for each origin, clamped to 1..=[`MAX_IN_FLIGHT_PER_ORIGIN`].
    pub(crate) fn new(per_origin: usize) -> Self {
        Self {
            per_origin: per_origin.clamp(1, MAX_IN_FLIGHT_PER_ORIGIN),
            origins: Mutex::new(HashMap::new()),
        }
    }

    /// The bound, per origin.
    pub(crate) fn per_origin(&self) -> usize {
        self.per_origin
    }

    /// A place for one request to `origin`, waiting for one if all are taken (`None`
    /// only if its semaphore were closed, which nothing does: the request then goes).
    ///
    /// Cancel-safe: dropping the wait takes no place.
    pub(crate) async fn acquire(&self, origin: &str) -> Option<OwnedSemaphorePermit> {
        let places = {
            let mut origins = self
                .origins
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if origins.len() >= TRACKED_ORIGINS && !origins.contains_key(origin) {
                // Forget the origins nobody holds or waits on.
                let full = self.per_origin;
                origins.retain(|_, places| {
                    Arc::strong_count(places) > 1 || places.available_permits() < full
                });
            }
            origins
                .entry(origin.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_origin)))
                .clone()
        };
        places.acquire_owned().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn each_origin_has_its_own_places() {
        let limits = OriginLimits::new(2);
        let a1 = limits.acquire("http://a").await;
        let _a2 = limits.acquire("http://a").await;
        // A third to `a` waits; `b` does not.
        let b = tokio::time::timeout(Duration::from_secs(5), limits.acquire("http://b")).await;
        assert!(b.is_ok(), "another origin is not held up");
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), limits.acquire("http://a")).await;
        assert!(waiting.is_err(), "a third request to a full origin waits");
        drop(a1);
        let third = tokio::time::timeout(Duration::from_secs(5), limits.acquire("http://a")).await;
        assert!(third.is_ok(), "and gets the place let go");
    }

    #[tokio::test]
    async fn idle_origins_are_forgotten_past_the_bound() {
        let limits = OriginLimits::new(1);
        let held = limits.acquire("http://held").await;
        for n in 0..TRACKED_ORIGINS + 10 {
            drop(limits.acquire(&format!("http://{n}")).await);
        }
        let tracked = limits.origins.lock().expect("lock").len();
        assert!(tracked <= TRACKED_ORIGINS, "{tracked} origins tracked");
        assert!(
            limits
                .origins
                .lock()
                .expect("lock")
                .contains_key("http://held"),
            "an origin in use is kept"
        );
        drop(held);
        assert_eq!(OriginLimits::new(0).per_origin(), 1);
        assert_eq!(
            OriginLimits::new(usize::MAX).per_origin(),
            MAX_IN_FLIGHT_PER_ORIGIN
        );
    }
}
