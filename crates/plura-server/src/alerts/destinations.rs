//! Where webhooks added through the API may point: anywhere an operator's alerting lives
//! (private ranges included), but never at this host's own services, link-local or multicast
//! addresses, or a cloud's metadata service, whose answers hold credentials. An admin's token
//! must not become a way to reach them from the server.
//!
//! A URL's host is read as the HTTP client reads it (WHATWG URL parsing: `2130706433`,
//! `0x7f000001` and `0177.0.0.1` are all 127.0.0.1), so no spelling slips past. Names are
//! checked when the webhook is added, and again at every delivery by a resolver that hands the
//! client only addresses that pass, so a name that later resolves elsewhere (DNS rebinding) is
//! still kept out. Webhooks given on the command line are the operator's own and are not checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Names of cloud metadata services, which no webhook may name.
const METADATA_NAMES: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

/// How long a name may take to resolve when a webhook is added.
const RESOLVE_WAIT: Duration = Duration::from_secs(3);

/// The rule webhooks' destinations follow.
#[derive(Debug, Clone, Copy, Default)]
pub struct Destinations {
    /// Loopback addresses and names allowed (`--allow-loopback-webhooks`): a server and its
    /// receiver on one host, or tests.
    pub loopback_allowed: bool,
}

/// A destination no webhook may have, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// A URL's host, as the client will connect to it.
enum Host {
    /// An address that passed: the client connects to it as it is.
    Address,
    /// A name, and the port the URL says, for the resolver to check what it resolves to.
    Name(String, u16),
}

impl Destinations {
    /// Why no webhook may reach `ip`, if none may.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        match ip {
            IpAddr::V4(v4) => self.refusal_v4(v4),
            IpAddr::V6(v6) => match embedded_v4(v6) {
                Some(v4) => self.refusal_v4(v4),
                None => self.refusal_v6(v6),
            },
        }
    }

    fn refusal_v4(&self, ip: Ipv4Addr) -> Option<&'static str> {
        let a = ip.octets()[0];
        if ip.is_loopback() {
            return (!self.loopback_allowed).then_some("a loopback address");
        }
        if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
            return Some("a cloud metadata address");
        }
        if ip.is_link_local() {
            return Some("a link-local address");
        }
        if a == 0 {
            return Some("an unspecified address");
        }
        if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
            return Some("a multicast, broadcast or reserved address");
        }
        None
    }

    fn refusal_v6(&self, ip: Ipv6Addr) -> Option<&'static str> {
        let first = ip.segments()[0];
        if ip.is_loopback() {
            return (!self.loopback_allowed).then_some("a loopback address");
        }
        if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
            return Some("a cloud metadata address");
        }
        if ip.is_unspecified() {
            return Some("an unspecified address");
        }
        if first & 0xffc0 == 0xfe80 {
            return Some("a link-local address");
        }
        if ip.is_multicast() {
            return Some("a multicast address");
        }
        None
    }

    /// Why no webhook may name `name`, if none may.
    fn name_refusal(&self, name: &str) -> Option<&'static str> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if METADATA_NAMES.contains(&name.as_str()) {
            return Some("a cloud metadata service");
        }
        let loopback = name == "localhost" || name.ends_with(".localhost");
        (loopback && !self.loopback_allowed).then_some("a loopback name")
    }

    /// Checks the host of `url` as written: an address in any spelling, or a name.
    fn host(&self, url: &str) -> Result<Host, Refused> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| Refused(format!("{url:?} is not a URL: {e}")))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| Refused("a webhook URL names a host".into()))?;
        let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
        let refused = |what: &str, why: &str| {
            Refused(format!(
                "{what} is {why}: webhooks may not reach this host's own services, link-local \
                 or multicast addresses, or cloud metadata (--allow-loopback-webhooks lifts the \
                 loopback rule)"
            ))
        };
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return match self.refusal(ip) {
                Some(why) => Err(refused(&ip.to_string(), why)),
                None => Ok(Host::Address),
            };
        }
        if let Some(why) = self.name_refusal(host) {
            return Err(refused(host, why));
        }
        let port = parsed.port_or_known_default().unwrap_or(443);
        Ok(Host::Name(host.to_string(), port))
    }

    /// Checks a webhook being added: its host as written, and what a name resolves to now.
    /// A name that does not resolve yet is taken; each delivery checks it again.
    pub async fn check(&self, url: &str) -> Result<(), Refused> {
        let Host::Name(name, port) = self.host(url)? else {
            return Ok(());
        };
        let resolved =
            tokio::time::timeout(RESOLVE_WAIT, tokio::net::lookup_host((name.as_str(), port)))
                .await;
        let Ok(Ok(addresses)) = resolved else {
            return Ok(());
        };
        for address in addresses {
            if let Some(why) = self.refusal(address.ip()) {
                return Err(Refused(format!(
                    "{name} resolves to {}, {why}: webhooks may not reach this host's own \
                     services, link-local or multicast addresses, or cloud metadata",
                    address.ip()
                )));
            }
        }
        Ok(())
    }

    /// The addresses `host` resolved to that a webhook may reach; an error if none.
    fn passing(
        &self,
        host: &str,
        resolved: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, String> {
        let (kept, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
            .into_iter()
            .partition(|address| self.refusal(address.ip()).is_none());
        if kept.is_empty() {
            let why = refused
                .first()
                .and_then(|a| self.refusal(a.ip()))
                .unwrap_or("no address");
            return Err(format!("{host} resolves only to {why}"));
        }
        Ok(kept)
    }

    /// Checks a delivery's URL before it is sent: a literal address is not resolved, so the
    /// resolver cannot filter it.
    pub fn check_literal(&self, url: &str) -> Result<(), Refused> {
        self.host(url).map(|_| ())
    }
}

/// The IPv4 address an IPv6 one carries (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, or
/// NAT64 `64:ff9b::a.b.c.d`), which is where a connection to it goes.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let segments = ip.segments();
    let nat64 = segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    let compatible = segments[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified();
    (nat64 || compatible).then(|| {
        let [.., hi, lo] = segments;
        Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
    })
}

/// Resolves names for deliveries, handing the client only the addresses that pass.
struct FilteringResolver(Destinations);

impl reqwest::dns::Resolve for FilteringResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let destinations = self.0;
        Box::pin(async move {
            let host = name.as_str().to_string();
            if let Some(why) = destinations.name_refusal(&host) {
                return Err(format!("{host} is {why}").into());
            }
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let kept = destinations.passing(&host, resolved)?;
            let addresses: reqwest::dns::Addrs = Box::new(kept.into_iter());
            Ok(addresses)
        })
    }
}

/// `builder` made to connect only where `destinations` allow, whatever a name resolves to.
pub fn filtering(
    builder: reqwest::ClientBuilder,
    destinations: Destinations,
) -> reqwest::ClientBuilder {
    builder.dns_resolver(Arc::new(FilteringResolver(destinations)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: Destinations = Destinations {
        loopback_allowed: false,
    };

    #[test]
    fn every_spelling_of_a_forbidden_address_is_refused() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://127.1/hook",
            "http://2130706433/hook",
            "http://0x7f000001/hook",
            "http://0177.0.0.1/hook",
            "http://[::1]/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://[::ffff:7f00:1]/hook",
            "http://[64:ff9b::7f00:1]/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:169.254.169.254]/",
            "http://[fd00:ec2::254]/",
            "http://100.100.100.200/",
            "http://169.254.10.1/",
            "http://[fe80::1]/",
            "http://0.0.0.0/",
            "http://[::]/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.google.internal./",
            "http://localhost:9/",
            "http://api.localhost/",
        ] {
            assert!(STRICT.check_literal(url).is_err(), "{url} passed");
        }
    }

    #[test]
    fn private_ranges_and_names_pass() {
        for url in [
            "https://hooks.slack.com/services/T/B/x",
            "http://10.1.2.3:9000/alerts",
            "http://192.168.1.5/",
            "http://172.16.0.1/",
            "http://[fd12:3456::1]/",
            "https://alerts.internal.example/",
        ] {
            assert_eq!(STRICT.check_literal(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn loopback_may_be_allowed_but_metadata_never() {
        let lenient = Destinations {
            loopback_allowed: true,
        };
        assert_eq!(lenient.check_literal("http://127.0.0.1:9/hook"), Ok(()));
        assert_eq!(lenient.check_literal("http://localhost:9/hook"), Ok(()));
        assert!(lenient.check_literal("http://169.254.169.254/").is_err());
        assert!(
            lenient
                .check_literal("http://metadata.google.internal/")
                .is_err()
        );
    }

    #[test]
    fn a_name_that_resolves_to_a_forbidden_address_is_kept_from_it() {
        let at = |ip: &str| SocketAddr::new(ip.parse().unwrap(), 0);
        let error = STRICT
            .passing("rebound.example", [at("127.0.0.1"), at("::1")])
            .unwrap_err();
        assert_eq!(error, "rebound.example resolves only to a loopback address");
        let kept = STRICT
            .passing("split.example", [at("169.254.169.254"), at("10.0.0.7")])
            .unwrap();
        assert_eq!(kept, [at("10.0.0.7")]);
    }

    #[tokio::test]
    async fn names_are_resolved_when_added() {
        let error = STRICT.check("http://localhost:9/hook").await.unwrap_err();
        assert!(error.0.contains("loopback"), "{error}");
        let message = STRICT.check("http://2130706433/").await.unwrap_err().0;
        assert!(
            message.starts_with("127.0.0.1 is a loopback address"),
            "{message}"
        );
    }
}
