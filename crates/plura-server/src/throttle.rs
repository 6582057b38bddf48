//! Slows down password guessing: after a few failed sign-ins for one user from one address,
//! further tries are refused for a while, whatever the password.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed tries allowed in a window before sign-ins are refused for the rest of it.
const MAX_FAILURES: u32 = 5;
const WINDOW: Duration = Duration::from_secs(300);
/// Past this many tracked keys, expired ones are dropped (bounded memory under a spray).
const TIDY_AT: usize = 10_000;

#[derive(Default)]
pub struct SignInThrottle {
    failures: Mutex<HashMap<(IpAddr, String), (u32, Instant)>>,
}

impl SignInThrottle {
    /// `Err(wait)` while this address is locked out for this user.
    pub fn check(&self, from: IpAddr, user: &str) -> Result<(), Duration> {
        let failures = self.failures.lock().unwrap();
        match failures.get(&(from, user.to_string())) {
            Some((count, since)) if *count >= MAX_FAILURES && since.elapsed() < WINDOW => {
                Err(WINDOW - since.elapsed())
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, from: IpAddr, user: &str) {
        let mut failures = self.failures.lock().unwrap();
        if failures.len() >= TIDY_AT {
            failures.retain(|_, (_, since)| since.elapsed() < WINDOW);
        }
        let entry = failures
            .entry((from, user.to_string()))
            .or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    pub fn succeeded(&self, from: IpAddr, user: &str) {
        self.failures
            .lock()
            .unwrap()
            .remove(&(from, user.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_lock_out_that_user_from_that_address_only() {
        let throttle = SignInThrottle::default();
        let (here, there) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..MAX_FAILURES {
            assert!(throttle.check(here, "kim").is_ok());
            throttle.failed(here, "kim");
        }
        let wait = throttle.check(here, "kim").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= WINDOW);
        assert!(throttle.check(there, "kim").is_ok(), "another address");
        assert!(throttle.check(here, "lee").is_ok(), "another user");
        throttle.succeeded(here, "kim");
        assert!(throttle.check(here, "kim").is_ok());
    }
}
