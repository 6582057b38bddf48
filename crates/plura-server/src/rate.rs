//! How often each source address may do something (log in): a token bucket per address, so one
//! host cannot flood the registry while the others go on unhindered.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Past this many tracked addresses, the full buckets are dropped (bounded memory under a spray
/// of addresses).
const TIDY_AT: usize = 10_000;
/// A bucket holds this many seconds' worth of tries.
const BURST_SECONDS: u32 = 10;

pub struct SourceRate {
    /// Tries per second; `None`: unlimited.
    per_second: Option<u32>,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl SourceRate {
    pub fn new(per_second: Option<u32>) -> Self {
        Self {
            per_second: per_second.filter(|n| *n > 0),
            buckets: Mutex::default(),
        }
    }

    /// Takes one try for `source` (an IPv6 address counts for its /64); `Err(wait)` when it
    /// has none left.
    pub fn take(&self, source: IpAddr) -> Result<(), Duration> {
        let source = crate::server::source_key(source);
        let Some(rate) = self.per_second.map(f64::from) else {
            return Ok(());
        };
        let capacity = rate * f64::from(BURST_SECONDS);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap();
        if buckets.len() >= TIDY_AT {
            buckets
                .retain(|_, (tokens, at)| *tokens + at.elapsed().as_secs_f64() * rate < capacity);
        }
        let (tokens, at) = buckets.entry(source).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_for_each_source_alone() {
        let rate = SourceRate::new(Some(2));
        let (here, there) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..20 {
            rate.take(here).unwrap();
        }
        let wait = rate.take(here).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(rate.take(there).is_ok(), "another source is not held back");
        assert!(SourceRate::new(None).take(here).is_ok());
    }
}
