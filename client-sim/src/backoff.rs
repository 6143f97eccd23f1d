//! Reconnect delays: jittered exponential backoff, reset after a healthy session. Used by
//! [`Device`](crate::Device), and by load tools that reconnect raw connections.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::config::BackoffConfig;

/// Jittered exponential backoff. The n-th delay of a failing streak is drawn uniformly from
/// `[d/2, d]` with `d = min(max, initial * 2^n)`.
#[derive(Debug)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
    rng: StdRng,
}

impl Backoff {
    /// Returns a backoff at the start of a streak; `seed` makes the jitter reproducible.
    pub fn new(config: BackoffConfig, seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self { config, attempt: 0, rng }
    }

    /// Returns the next delay of the current failing streak.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .config
            .initial
            .checked_mul(1u32.checked_shl(self.attempt).unwrap_or(u32::MAX))
            .unwrap_or(self.config.max)
            .min(self.config.max);
        self.attempt = self.attempt.saturating_add(1);
        self.jitter(ceiling / 2, ceiling)
    }

    /// Returns a short random delay for "reconnect now" closes: up to the initial delay.
    pub fn restart_delay(&mut self) -> Duration {
        self.jitter(Duration::ZERO, self.config.initial)
    }

    /// Starts a new streak (after a healthy session).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    fn jitter(&mut self, low: Duration, high: Duration) -> Duration {
        if high <= low {
            return high;
        }
        let nanos = self.rng.random_range(low.as_nanos()..=high.as_nanos());
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            healthy_after: Duration::from_secs(1),
        }
    }

    #[test]
    fn delays_grow_within_jitter_bounds_up_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(config(), Some(7));
        let ceilings = [100, 200, 400, 800, 1600, 2000, 2000];
        for ceiling in ceilings {
            let delay = backoff.next_delay();
            let ceiling = Duration::from_millis(ceiling);
            assert!(delay >= ceiling / 2 && delay <= ceiling, "{delay:?} not in [{:?}, {ceiling:?}]", ceiling / 2);
        }
        for _ in 0..100 {
            assert!(backoff.next_delay() <= Duration::from_secs(2));
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
        assert!(backoff.restart_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn equal_seeds_give_equal_delays() {
        let mut a = Backoff::new(config(), Some(42));
        let mut b = Backoff::new(config(), Some(42));
        for _ in 0..10 {
            assert_eq!(a.next_delay(), b.next_delay());
        }
    }
}
