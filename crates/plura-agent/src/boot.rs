//! The wait before the first login, as the vendor defines it, made safe for Auto Scaling.
//!
//! `login_delay_sec` is the longest wait; with `login_hostname_check=N` the wait ends early once
//! the hostname has changed N times (the boot script set it). Beyond the seed's blind wait, the
//! agent also waits until its interface exists and has an IPv4, and never logs in before: a
//! login with the wrong address would register a duplicate agent, the very thing the fixed-IP
//! pool exists to prevent. Why it waits is logged.

use std::time::Duration;

use tokio::time::Instant;

use crate::host::Host;
use crate::identity::{self, Identity};

/// How often the host is looked at while waiting.
const POLL: Duration = Duration::from_millis(250);
/// How often a wait that has outlasted the delay is reported.
const REMIND: Duration = Duration::from_secs(30);

pub struct LoginWait<'a> {
    pub host: &'a dyn Host,
    pub interface: Option<&'a str>,
    pub delay: Duration,
    /// 0: wait the whole delay; N: stop after N hostname changes.
    pub hostname_changes: u8,
}

impl LoginWait<'_> {
    /// Waits as configured and answers the identity to log in with.
    pub async fn identity(&self) -> Identity {
        let started = Instant::now();
        let deadline = started + self.delay;
        let mut hostname = self.host.hostname().ok();
        let mut changes = 0u8;
        if !self.delay.is_zero() {
            let early = match self.hostname_changes {
                0 => String::new(),
                n => format!(", or until the hostname has changed {n} time(s)"),
            };
            tracing::info!(
                "waiting {:?} before the first login (login_delay_sec){early}",
                self.delay
            );
        }
        let mut last_reason: Option<String> = None;
        let mut next_reminder = deadline;
        loop {
            let now_hostname = self.host.hostname().ok();
            if now_hostname != hostname {
                changes = changes.saturating_add(1);
                tracing::info!(
                    "hostname changed from {:?} to {:?} ({changes} change(s))",
                    hostname.as_deref().unwrap_or("?"),
                    now_hostname.as_deref().unwrap_or("?")
                );
                hostname = now_hostname;
            }
            let delay_over = Instant::now() >= deadline;
            let hostname_settled = self.hostname_changes > 0 && changes >= self.hostname_changes;
            match identity::current(self.host, self.interface) {
                Ok(identity) => {
                    if last_reason.take().is_some() {
                        tracing::info!("identity ready: {identity}");
                    }
                    if delay_over || hostname_settled {
                        return identity;
                    }
                }
                Err(reason) => {
                    let now = Instant::now();
                    if last_reason.as_ref() != Some(&reason) {
                        tracing::info!("not logging in yet: {reason}");
                        last_reason = Some(reason);
                    } else if delay_over && now >= next_reminder {
                        tracing::warn!(
                            "still not logging in after {:?}: {reason}",
                            started.elapsed()
                        );
                        next_reminder = now + REMIND;
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::net::Ipv4Addr;

    use super::*;

    /// A host whose hostname and eth1 address change at set times, on tokio's clock (paused
    /// and auto-advanced in these tests, so hours of boot take no time).
    struct BootingHost {
        origin: Instant,
        hostnames: Vec<(Duration, &'static str)>,
        eth1_up_at: Duration,
    }

    impl BootingHost {
        fn new(hostnames: Vec<(Duration, &'static str)>, eth1_up_at: Duration) -> Self {
            Self {
                origin: Instant::now(),
                hostnames,
                eth1_up_at,
            }
        }

        fn elapsed(&self) -> Duration {
            Instant::now() - self.origin
        }
    }

    impl Host for BootingHost {
        fn hostname(&self) -> io::Result<String> {
            let elapsed = self.elapsed();
            let (_, name) = self
                .hostnames
                .iter()
                .rev()
                .find(|(at, _)| *at <= elapsed)
                .unwrap();
            Ok(name.to_string())
        }

        fn ipv4(&self, interface: &str) -> Option<Ipv4Addr> {
            (interface == "eth1" && self.elapsed() >= self.eth1_up_at)
                .then_some(Ipv4Addr::new(172, 31, 64, 4))
        }

        fn default_interface(&self) -> Option<String> {
            Some("eth0".into())
        }
    }

    /// Waits as configured; answers the identity and how long it took.
    async fn wait(host: &BootingHost, delay: u64, changes: u8) -> (Identity, Duration) {
        let identity = LoginWait {
            host,
            interface: Some("eth1"),
            delay: Duration::from_secs(delay),
            hostname_changes: changes,
        }
        .identity()
        .await;
        (identity, host.elapsed())
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn about(waited: Duration, expected: u64) -> bool {
        waited >= s(expected) && waited < s(expected) + POLL * 2
    }

    #[tokio::test(start_paused = true)]
    async fn no_delay_and_a_ready_interface_log_in_at_once() {
        let host = BootingHost::new(vec![(s(0), "waf-1")], s(0));
        let (identity, waited) = wait(&host, 0, 0).await;
        assert_eq!(identity.to_string(), "172.31.64.4 / waf-1");
        assert_eq!(waited, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn check_0_waits_the_whole_delay_even_after_the_hostname_changed() {
        let host = BootingHost::new(vec![(s(0), "ip-172-31-1-9"), (s(5), "waf-1")], s(3));
        let (identity, waited) = wait(&host, 60, 0).await;
        assert_eq!(identity.hostname, "waf-1");
        assert!(about(waited, 60), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn check_1_stops_once_the_hostname_changed() {
        let host = BootingHost::new(vec![(s(0), "ip-172-31-1-9"), (s(5), "waf-1")], s(3));
        let (identity, waited) = wait(&host, 60, 1).await;
        assert_eq!(identity.hostname, "waf-1");
        assert!(about(waited, 5), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn check_2_needs_two_changes() {
        let names = vec![
            (s(0), "localhost"),
            (s(2), "ip-172-31-1-9"),
            (s(9), "waf-1"),
        ];
        let host = BootingHost::new(names, s(1));
        let (identity, waited) = wait(&host, 60, 2).await;
        assert_eq!(identity.hostname, "waf-1");
        assert!(about(waited, 9), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_renamed_host_still_waits_for_its_interface() {
        let host = BootingHost::new(vec![(s(0), "ip-172-31-1-9"), (s(2), "waf-1")], s(20));
        let (identity, waited) = wait(&host, 60, 1).await;
        assert_eq!(identity.ip, Ipv4Addr::new(172, 31, 64, 4));
        assert!(about(waited, 20), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_delay_it_keeps_waiting_rather_than_use_a_wrong_address() {
        let host = BootingHost::new(vec![(s(0), "waf-1")], s(200));
        let (identity, waited) = wait(&host, 60, 0).await;
        assert_eq!(identity.ip, Ipv4Addr::new(172, 31, 64, 4));
        assert!(about(waited, 200), "{waited:?}");
    }
}
