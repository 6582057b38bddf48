//! Slows down password guessing: after a few failed sign-ins for one user from one address,
//! further tries are refused for a while, whatever the password.
//!
//! A try is counted when it starts, before its password is checked, so a burst of tries sent at
//! once gets no more checks than the limit: at most `MAX_FAILURES` tries are in flight or failed
//! in a window.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failed tries allowed in a window before sign-ins are refused for the rest of it.
const MAX_FAILURES: u32 = 5;
const WINDOW: Duration = Duration::from_secs(300);
/// Past this many tracked keys, expired ones are dropped (bounded memory under a spray).
const TIDY_AT: usize = 10_000;

type Key = (IpAddr, String);

#[derive(Debug, Clone, Copy)]
struct Tries {
    failed: u32,
    in_flight: u32,
    since: Instant,
}

#[derive(Default)]
pub struct SignInThrottle {
    tries: Arc<Mutex<HashMap<Key, Tries>>>,
}

/// A sign-in try under way. Tell how it ended with `failed` or `succeeded`; dropped without
/// either (the check itself failed), it counts for nothing.
pub struct Try {
    tries: Arc<Mutex<HashMap<Key, Tries>>>,
    key: Key,
    ended: bool,
}

impl SignInThrottle {
    /// Starts a try for `user` from `from`; `Err(wait)` while that pair is locked out.
    pub fn begin(&self, from: IpAddr, user: &str) -> Result<Try, Duration> {
        let mut tries = self.tries.lock().unwrap();
        if tries.len() >= TIDY_AT {
            tries.retain(|_, t| t.in_flight > 0 || t.since.elapsed() < WINDOW);
        }
        let key = (from, user.to_string());
        let entry = tries.entry(key.clone()).or_insert(Tries {
            failed: 0,
            in_flight: 0,
            since: Instant::now(),
        });
        if entry.since.elapsed() >= WINDOW {
            *entry = Tries {
                failed: 0,
                in_flight: entry.in_flight,
                since: Instant::now(),
            };
        }
        if entry.failed + entry.in_flight >= MAX_FAILURES {
            return Err(WINDOW.saturating_sub(entry.since.elapsed()));
        }
        entry.in_flight += 1;
        Ok(Try {
            tries: self.tries.clone(),
            key,
            ended: false,
        })
    }
}

impl Try {
    fn end(mut self, succeeded: bool) {
        self.ended = true;
        let mut tries = self.tries.lock().unwrap();
        if let Some(entry) = tries.get_mut(&self.key) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            if succeeded {
                entry.failed = 0;
            } else {
                entry.failed += 1;
            }
        }
    }

    pub fn failed(self) {
        self.end(false);
    }

    pub fn succeeded(self) {
        self.end(true);
    }
}

impl Drop for Try {
    fn drop(&mut self) {
        if !self.ended
            && let Some(entry) = self.tries.lock().unwrap().get_mut(&self.key)
        {
            entry.in_flight = entry.in_flight.saturating_sub(1);
        }
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
            throttle.begin(here, "kim").unwrap().failed();
        }
        let wait = throttle.begin(here, "kim").err().unwrap();
        assert!(wait > Duration::ZERO && wait <= WINDOW);
        assert!(throttle.begin(there, "kim").is_ok(), "another address");
        assert!(throttle.begin(here, "lee").is_ok(), "another user");
    }

    #[test]
    fn a_burst_gets_no_more_checks_than_the_limit() {
        let throttle = SignInThrottle::default();
        let here = "10.0.0.1".parse().unwrap();
        // All started before any ended, as when they are sent at once.
        let started: Vec<Try> = (0..40)
            .filter_map(|_| throttle.begin(here, "kim").ok())
            .collect();
        assert_eq!(started.len(), MAX_FAILURES as usize);
        started.into_iter().for_each(Try::failed);
        assert!(throttle.begin(here, "kim").is_err());
    }

    #[test]
    fn a_success_clears_the_failures_and_an_abandoned_try_counts_for_nothing() {
        let throttle = SignInThrottle::default();
        let here = "10.0.0.1".parse().unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            throttle.begin(here, "kim").unwrap().failed();
        }
        drop(throttle.begin(here, "kim").unwrap());
        throttle.begin(here, "kim").unwrap().succeeded();
        for _ in 0..MAX_FAILURES {
            throttle.begin(here, "kim").unwrap().failed();
        }
        assert!(throttle.begin(here, "kim").is_err());
    }
}
