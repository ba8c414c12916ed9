//! Delays between delivery attempts.
//!
//! The only module that touches the `backoff` crate, which is unmaintained upstream:
//! swapping it means rewriting [`Delays`] and nothing else.

use backoff::backoff::Backoff as _;
use std::time::Duration;

/// Exponential backoff with a cap and random jitter.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryBackoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Largest delay between two attempts.
    pub max: Duration,
    /// Growth factor of the delay from one retry to the next.
    pub multiplier: f64,
    /// Each delay is drawn uniformly from `delay × [1 - jitter, 1 + jitter]`, so shards
    /// retrying against one endpoint spread out instead of arriving together.
    pub jitter: f64,
}

impl Default for RetryBackoff {
    /// 500 ms, doubling, capped at 30 s, ±50 % jitter.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }
}

impl RetryBackoff {
    /// A fresh sequence of delays for one delivery.
    pub fn delays(&self) -> Delays {
        Delays(backoff::ExponentialBackoff {
            current_interval: self.initial,
            initial_interval: self.initial,
            randomization_factor: self.jitter,
            multiplier: self.multiplier,
            max_interval: self.max,
            // The attempt budget is the trigger's `maxRetries`, not elapsed time.
            max_elapsed_time: None,
            ..backoff::ExponentialBackoff::default()
        })
    }
}

/// An endless sequence of jittered, capped, growing delays.
pub struct Delays(backoff::ExponentialBackoff);

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // Without `max_elapsed_time` the backoff never gives up; fall back to the cap anyway.
        Some(self.0.next_backoff().unwrap_or(self.0.max_interval))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_under_the_jittered_cap() {
        let policy = RetryBackoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            multiplier: 2.0,
            jitter: 0.5,
        };
        let delays: Vec<Duration> = policy.delays().take(20).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(150));
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(1500)),
            "{delays:?}"
        );
        // Late delays sit near the cap, not near the start.
        assert!(delays[19] >= Duration::from_millis(500), "{delays:?}");
    }
}
