//! Reconnect delays: exponential backoff with jitter, so that many clients cut off by the same
//! server restart do not all come back in the same instant.

use std::time::Duration;

use rand::{Rng, RngExt as _};

/// How reconnect attempts are spaced.
///
/// Attempt `n` (counting from 0 after a connection is lost) waits
/// `min(max, initial · 2ⁿ)`, scaled by a random factor in `[1 − jitter, 1 + jitter]` and capped
/// at `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// Delay before the first attempt (default 1 s).
    pub initial: Duration,
    /// Longest delay (default 60 s).
    pub max: Duration,
    /// Relative jitter, between 0 and 1 (default 0.25, i.e. ±25 %).
    pub jitter: f64,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            jitter: 0.25,
        }
    }
}

impl ReconnectPolicy {
    /// A policy with the given bounds and jitter (clamped to `0..=1`).
    pub fn new(initial: Duration, max: Duration, jitter: f64) -> Self {
        Self {
            initial,
            max: max.max(initial),
            jitter: if jitter.is_finite() {
                jitter.clamp(0.0, 1.0)
            } else {
                0.0
            },
        }
    }

    /// The delay before attempt `attempt` (0-based), drawing the jitter from `rng`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        let base = self.initial.saturating_mul(factor).min(self.max);
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let scale = if jitter > 0.0 {
            rng.random_range(1.0 - jitter..=1.0 + jitter)
        } else {
            1.0
        };
        base.mul_f64(scale).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let policy = ReconnectPolicy::new(Duration::from_secs(1), Duration::from_secs(60), 0.0);
        let mut rng = StdRng::seed_from_u64(1);
        let delays: Vec<u64> = (0..10)
            .map(|n| policy.delay(n, &mut rng).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        assert_eq!(policy.delay(u32::MAX, &mut rng), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_in_bounds_and_varies() {
        let policy = ReconnectPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let d = policy.delay(2, &mut rng);
            assert!(
                d >= Duration::from_secs(3) && d <= Duration::from_secs(5),
                "{d:?}"
            );
            seen.insert(d.as_millis());
            let capped = policy.delay(20, &mut rng);
            assert!(capped >= Duration::from_secs(45) && capped <= Duration::from_secs(60));
        }
        assert!(seen.len() > 100, "jitter should spread the delays");
    }

    #[test]
    fn odd_parameters_are_clamped() {
        let policy = ReconnectPolicy::new(Duration::from_secs(5), Duration::from_secs(1), 7.0);
        assert_eq!(policy.max, Duration::from_secs(5));
        assert_eq!(policy.jitter, 1.0);
        assert_eq!(
            ReconnectPolicy::new(Duration::ZERO, Duration::ZERO, f64::NAN).jitter,
            0.0
        );
    }
}
