//! Delays between delivery attempts: capped exponential backoff with full jitter.
//!
//! Full jitter (each delay drawn uniformly from `[0, min(cap, initial × multiplier^n)]`)
//! spreads shards that fail together against one endpoint across the whole window, so a
//! recovering receiver is not hit by synchronised waves. The `backoff` crate only offers
//! jitter around the delay (and is unmaintained), so this module computes delays itself;
//! it is still the only place that knows how.

use std::time::Duration;

/// Exponential backoff with a cap and random jitter.
///
/// The ceiling of retry `n` (0-based) is `min(max, initial × multiplier^n)`; the delay is
/// drawn uniformly from `[ceiling × (1 − jitter), ceiling]`. `jitter: 1.0` (the default)
/// is full jitter; `0.0` is no jitter at all.
///
/// Built with [`RetryBackoff::default`] or [`RetryBackoff::new`] and the `with_` methods
/// (fields may grow, so it is not built from a struct literal outside this crate):
///
/// ```
/// use std::time::Duration;
/// let backoff = triggers::RetryBackoff::new(Duration::from_millis(100), Duration::from_secs(5))
///     .with_multiplier(3.0)
///     .with_jitter(0.5);
/// assert_eq!(backoff.max, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryBackoff {
    /// Ceiling of the delay before the first retry.
    pub initial: Duration,
    /// Largest delay between two attempts. Also caps how long a `Retry-After` answer
    /// makes a delivery wait.
    pub max: Duration,
    /// Growth factor of the ceiling from one retry to the next (values below 1, or not
    /// finite, count as 1).
    pub multiplier: f64,
    /// Fraction of the ceiling that is randomised, clamped to `[0, 1]`: the delay is drawn
    /// uniformly from `[ceiling × (1 − jitter), ceiling]`.
    pub jitter: f64,
}

impl Default for RetryBackoff {
    /// Ceilings of 500 ms, doubling, capped at 30 s, with full jitter.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 1.0,
        }
    }
}

impl RetryBackoff {
    /// Ceilings from `initial` doubling up to `max`, with full jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            ..Self::default()
        }
    }

    /// The same, with the ceiling growing by `multiplier` per retry.
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The same, with `jitter` of each ceiling randomised (`0.0` for none).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// A fresh sequence of delays for one delivery.
    pub fn delays(&self) -> Delays {
        Delays {
            policy: self.clone(),
            ceiling: self.initial.min(self.max),
            rng: fastrand::Rng::new(),
        }
    }
}

/// An endless sequence of jittered, capped, growing delays.
#[derive(Debug)]
pub struct Delays {
    policy: RetryBackoff,
    ceiling: Duration,
    rng: fastrand::Rng,
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let ceiling = self.ceiling;
        let multiplier = if self.policy.multiplier.is_finite() && self.policy.multiplier >= 1.0 {
            self.policy.multiplier
        } else {
            1.0
        };
        // `try_from_secs_f64` refuses overflow instead of panicking; past it we are at the cap.
        self.ceiling = Duration::try_from_secs_f64(ceiling.as_secs_f64() * multiplier)
            .map_or(self.policy.max, |next| next.min(self.policy.max));

        let jitter = if self.policy.jitter.is_nan() {
            1.0
        } else {
            self.policy.jitter.clamp(0.0, 1.0)
        };
        let floor = ceiling.as_secs_f64() * (1.0 - jitter);
        let drawn = floor + self.rng.f64() * (ceiling.as_secs_f64() - floor);
        Some(Duration::try_from_secs_f64(drawn).map_or(ceiling, |d| d.min(ceiling)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryBackoff {
        RetryBackoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            multiplier: 2.0,
            jitter,
        }
    }

    #[test]
    fn without_jitter_delays_double_up_to_the_cap() {
        let delays: Vec<u128> = policy(0.0)
            .delays()
            .take(6)
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn full_jitter_draws_from_zero_to_the_ceiling() {
        let ceilings = [100, 200, 400, 800, 1000, 1000, 1000, 1000];
        let mut below_half = 0;
        for _ in 0..200 {
            for (delay, ceiling) in policy(1.0).delays().zip(ceilings) {
                assert!(
                    delay <= Duration::from_millis(ceiling),
                    "{delay:?} > {ceiling}"
                );
                if delay < Duration::from_millis(ceiling / 2) {
                    below_half += 1;
                }
            }
        }
        // Uniform on [0, ceiling]: about half of 1600 draws fall below half the ceiling.
        assert!((600..=1000).contains(&below_half), "{below_half}");
    }

    #[test]
    fn the_default_is_full_jitter() {
        assert_eq!(RetryBackoff::default().jitter, 1.0);
    }

    #[test]
    fn partial_jitter_keeps_a_floor() {
        for delay in policy(0.5).delays().skip(4).take(50) {
            assert!(
                delay >= Duration::from_millis(500) && delay <= Duration::from_millis(1000),
                "{delay:?}"
            );
        }
    }

    #[test]
    fn absurd_parameters_neither_panic_nor_exceed_the_cap() {
        for (multiplier, jitter) in [
            (f64::NAN, f64::NAN),
            (f64::INFINITY, -3.0),
            (-2.0, 7.0),
            (1e300, 0.5),
        ] {
            let backoff = RetryBackoff {
                initial: Duration::MAX,
                max: Duration::from_secs(1),
                multiplier,
                jitter,
            };
            assert!(
                backoff
                    .delays()
                    .take(100)
                    .all(|d| d <= Duration::from_secs(1))
            );
        }
    }
}
