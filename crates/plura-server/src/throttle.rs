//! Slows down password guessing, from one address and from many.
//!
//! - Per (account, address): after a few failed sign-ins, that address's further tries for that
//!   account are refused for the rest of the window, whatever the password.
//! - Per account, across addresses: past a few failures, each failure doubles the pause the
//!   account's next try from an address that has failed on it must wait (up to a cap); tries
//!   from addresses that have not failed on it draw from a small bucket of their own. So a spray
//!   from many addresses slows to a trickle, while the real person from a clean address still
//!   gets in, at worst after a short wait, and nobody is locked out for long.
//!
//! A try is counted when it starts, before its password is checked, so a burst of tries sent at
//! once gets no more checks than the limits. Addresses are counted as the per-source limits
//! count them (an IPv6 /64 as one).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::server::source_key;

/// Failed tries one address may make on one account in a window.
const MAX_FAILURES: u32 = 5;
const WINDOW: Duration = Duration::from_secs(300);
/// Failures an account takes (from all addresses) before its tries are spaced out.
const FREE_ACCOUNT_FAILURES: u32 = 10;
/// The first pause once they are, doubled by each further failure, up to the cap.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(60);
/// Tries from addresses that have not failed on the account: a burst, then one per interval.
const CLEAN_BURST: f64 = 10.0;
const CLEAN_INTERVAL: Duration = Duration::from_secs(10);
/// Past this many tracked entries, expired ones are dropped (bounded memory under a spray).
const TIDY_AT: usize = 10_000;

type Pair = (IpAddr, String);

#[derive(Debug, Clone, Copy)]
struct PairTries {
    failed: u32,
    in_flight: u32,
    since: Instant,
}

#[derive(Debug, Clone, Copy)]
struct AccountTries {
    failed: u32,
    last_failure: Instant,
    /// When a try from an address that has failed on this account may come next.
    next_try: Instant,
    /// The clean addresses' bucket: tries left, as of `refilled`.
    clean: f64,
    refilled: Instant,
}

impl AccountTries {
    fn new(now: Instant) -> Self {
        Self {
            failed: 0,
            last_failure: now,
            next_try: now,
            clean: CLEAN_BURST,
            refilled: now,
        }
    }
}

#[derive(Default)]
struct Tries {
    pairs: HashMap<Pair, PairTries>,
    accounts: HashMap<String, AccountTries>,
}

#[derive(Default)]
pub struct SignInThrottle {
    tries: Arc<Mutex<Tries>>,
}

/// A sign-in try under way. Tell how it ended with `failed` or `succeeded`; dropped without
/// either (the check itself failed), it counts for nothing.
pub struct Try {
    tries: Arc<Mutex<Tries>>,
    pair: Pair,
    ended: bool,
}

impl SignInThrottle {
    /// Starts a try for `user` from `from`; `Err(wait)` while it must wait.
    pub fn begin(&self, from: IpAddr, user: &str) -> Result<Try, Duration> {
        let now = Instant::now();
        let mut guard = self.tries.lock().unwrap();
        let tries = &mut *guard;
        if tries.pairs.len() >= TIDY_AT {
            tries
                .pairs
                .retain(|_, t| t.in_flight > 0 || t.since.elapsed() < WINDOW);
        }
        if tries.accounts.len() >= TIDY_AT {
            tries
                .accounts
                .retain(|_, a| a.last_failure.elapsed() < WINDOW || a.clean < CLEAN_BURST);
        }
        let pair = (source_key(from), user.to_string());
        let entry = tries.pairs.entry(pair.clone()).or_insert(PairTries {
            failed: 0,
            in_flight: 0,
            since: now,
        });
        if entry.since.elapsed() >= WINDOW {
            *entry = PairTries {
                failed: 0,
                in_flight: entry.in_flight,
                since: now,
            };
        }
        if entry.failed + entry.in_flight >= MAX_FAILURES {
            return Err(WINDOW.saturating_sub(entry.since.elapsed()));
        }
        let account = tries
            .accounts
            .entry(user.to_string())
            .or_insert_with(|| AccountTries::new(now));
        if account.last_failure.elapsed() >= WINDOW {
            account.failed = 0;
        }
        if entry.failed > 0 {
            if now < account.next_try {
                return Err(account.next_try - now);
            }
        } else {
            let refill =
                now.duration_since(account.refilled).as_secs_f64() / CLEAN_INTERVAL.as_secs_f64();
            account.clean = (account.clean + refill).min(CLEAN_BURST);
            account.refilled = now;
            if account.clean < 1.0 {
                return Err(CLEAN_INTERVAL.mul_f64(1.0 - account.clean));
            }
            account.clean -= 1.0;
        }
        entry.in_flight += 1;
        Ok(Try {
            tries: self.tries.clone(),
            pair,
            ended: false,
        })
    }
}

impl Try {
    fn end(mut self, succeeded: bool) {
        self.ended = true;
        let now = Instant::now();
        let mut tries = self.tries.lock().unwrap();
        if let Some(entry) = tries.pairs.get_mut(&self.pair) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            if succeeded {
                entry.failed = 0;
            } else {
                entry.failed += 1;
            }
        }
        if let Some(account) = tries.accounts.get_mut(&self.pair.1) {
            if succeeded {
                account.failed = 0;
                account.next_try = now;
            } else {
                account.failed += 1;
                account.last_failure = now;
                if let Some(over) = account.failed.checked_sub(FREE_ACCOUNT_FAILURES) {
                    let pause = FIRST_PAUSE.saturating_mul(1 << over.min(16)).min(MAX_PAUSE);
                    account.next_try = now + pause;
                }
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
            && let Some(entry) = self.tries.lock().unwrap().pairs.get_mut(&self.pair)
        {
            entry.in_flight = entry.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn five_failures_lock_out_that_user_from_that_address_only() {
        let throttle = SignInThrottle::default();
        let (here, there) = (address(1), address(2));
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
        let here = address(1);
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
        let here = address(1);
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

    #[test]
    fn a_spray_from_many_addresses_slows_down_and_a_clean_address_still_gets_in() {
        let throttle = SignInThrottle::default();
        let mut guesses = 0;
        // 50 addresses, each trying until refused.
        for n in 0..50 {
            while let Ok(attempt) = throttle.begin(address(100 + n), "boss") {
                attempt.failed();
                guesses += 1;
            }
        }
        assert!(
            guesses <= FREE_ACCOUNT_FAILURES as usize + CLEAN_BURST as usize,
            "{guesses} guesses got through at once"
        );
        // A clean address waits a moment for the bucket, not out a lockout.
        let wait = throttle.begin(address(999), "boss").err().unwrap();
        assert!(wait <= CLEAN_INTERVAL, "a pause, not a lockout: {wait:?}");
        // Another user's account is untouched.
        assert!(throttle.begin(address(100), "kim").is_ok());
    }

    #[test]
    fn ipv6_addresses_count_per_64() {
        let throttle = SignInThrottle::default();
        for n in 0..MAX_FAILURES {
            let from: IpAddr = format!("2001:db8:1:2::{n:x}").parse().unwrap();
            throttle.begin(from, "kim").unwrap().failed();
        }
        let same_64: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert!(throttle.begin(same_64, "kim").is_err());
    }
}
