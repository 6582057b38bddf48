//! The agent's identity: the IPv4 of its configured interface and the hostname, as the host has
//! them right now.

use std::fmt;
use std::net::Ipv4Addr;

use crate::host::Host;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub ip: Ipv4Addr,
    pub hostname: String,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} / {}", self.ip, self.hostname)
    }
}

/// The identity the host has now, or why it has none yet (said in a log line).
pub fn current(host: &dyn Host, interface: Option<&str>) -> Result<Identity, String> {
    let interface = match interface {
        Some(name) => name.to_string(),
        None => host
            .default_interface()
            .ok_or("there is no default route yet (interface= is not set)")?,
    };
    let ip = host
        .ipv4(&interface)
        .ok_or_else(|| format!("interface {interface} is missing or has no IPv4 address yet"))?;
    let hostname = host
        .hostname()
        .map_err(|e| format!("cannot read the hostname: {e}"))?;
    Ok(Identity { ip, hostname })
}
