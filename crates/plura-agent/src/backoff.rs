//! Capped exponential backoff with jitter, so that a fleet of agents whose server went away
//! does not come back at it all in the same second.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            failures: 0,
        }
    }

    /// The wait after one more failure: `base * 2^failures`, capped, then a random point in
    /// its upper half.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow(self.failures))
            .min(self.cap);
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_doubling_up_to_the_cap_with_jitter_and_resets() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let ceilings = [1, 2, 4, 8, 16, 30, 30, 30];
        for ceiling in ceilings {
            let delay = backoff.next_delay();
            let ceiling = Duration::from_secs(ceiling);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} for {ceiling:?}"
            );
        }
        for _ in 0..100 {
            backoff.next_delay();
        }
        assert!(
            backoff.next_delay() <= Duration::from_secs(30),
            "no overflow"
        );
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_secs(1));
    }
}
