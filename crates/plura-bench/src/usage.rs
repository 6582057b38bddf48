//! What a process has used, from `/proc`: CPU time and resident memory.

/// A process's CPU time and memory at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User and system CPU time since it started.
    pub cpu_s: f64,
    pub rss_mib: u64,
    /// The most resident memory it has had.
    pub peak_rss_mib: u64,
}

/// `/proc` counts CPU time in ticks of 1/100 s (USER_HZ) on every Linux.
const TICKS_PER_S: f64 = 100.0;

impl Usage {
    /// This process.
    pub fn current() -> Self {
        Self::read("self")
    }

    /// Process `pid` (zeros if it is gone).
    pub fn of(pid: u32) -> Self {
        Self::read(&pid.to_string())
    }

    fn read(pid: &str) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map_or(0, |kib| kib / 1024)
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces, so split after its ')').
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
        let ticks = |n: usize| {
            fields
                .get(n)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Self {
            // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
            cpu_s: (ticks(11) + ticks(12)) / TICKS_PER_S,
            rss_mib: kib("VmRSS:"),
            peak_rss_mib: kib("VmHWM:"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let before = Usage::current();
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_millis(200) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let after = Usage::current();
        assert!(after.rss_mib > 0 && after.peak_rss_mib >= after.rss_mib);
        assert!(after.cpu_s > before.cpu_s, "{before:?} {after:?}");
    }
}
