//! Turning timings into the figures a benchmark prints.

use std::fmt::Write;
use std::time::Duration;

/// Latencies of one kind of request, and how long they took together.
pub struct Timings {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Timings {
    pub fn new(mut latencies: Vec<Duration>, elapsed: Duration) -> Self {
        latencies.sort_unstable();
        Self { latencies, elapsed }
    }

    pub fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// The latency below which `q` (0..=1) of the requests fall.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[index]
    }

    /// `name_per_s=… name_p50_ms=… name_p99_ms=…`
    pub fn figures(&self, name: &str) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut out = String::new();
        let _ = write!(
            out,
            "{name}={} {name}_per_s={:.0} {name}_p50_ms={:.2} {name}_p99_ms={:.2}",
            self.latencies.len(),
            self.per_second(),
            ms(self.quantile(0.5)),
            ms(self.quantile(0.99)),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_rate() {
        let latencies = (1..=100).map(Duration::from_millis).collect();
        let t = Timings::new(latencies, Duration::from_secs(2));
        assert_eq!(t.quantile(0.5), Duration::from_millis(51));
        assert_eq!(t.quantile(0.99), Duration::from_millis(99));
        assert_eq!(t.per_second(), 50.0);
        assert!(
            t.figures("x")
                .starts_with("x=100 x_per_s=50 x_p50_ms=51.00")
        );
    }
}
