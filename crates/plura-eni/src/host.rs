//! After the attach: wait until the interface is up on this host with the pool's address, then
//! take the interface's hostname, now and across reboots.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::EniError;

const POLL: Duration = Duration::from_millis(500);

/// Waits until the interface with `mac` carries `ip`; answers its name (e.g. `eth1`).
pub async fn wait_for_interface(
    eni: &str,
    mac: &str,
    ip: Ipv4Addr,
    within: Duration,
) -> Result<String, EniError> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(name) = interface_with_mac(Path::new("/sys/class/net"), mac)
            && has_ipv4(&name, ip)
        {
            return Ok(name);
        }
        if Instant::now() >= deadline {
            return Err(EniError::InterfaceNotUp {
                eni: eni.into(),
                mac: mac.into(),
                ip: ip.to_string(),
                waited: within,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The interface whose `address` file under `sys_class_net` holds `mac`.
fn interface_with_mac(sys_class_net: &Path, mac: &str) -> Option<String> {
    std::fs::read_dir(sys_class_net)
        .ok()?
        .flatten()
        .find_map(|entry| {
            let address = std::fs::read_to_string(entry.path().join("address")).ok()?;
            address
                .trim()
                .eq_ignore_ascii_case(mac)
                .then(|| entry.file_name().to_string_lossy().into_owned())
        })
}

fn has_ipv4(interface: &str, ip: Ipv4Addr) -> bool {
    nix::ifaddrs::getifaddrs().is_ok_and(|mut addrs| {
        addrs.any(|a| {
            a.interface_name == interface
                && a.address
                    .and_then(|s| s.as_sockaddr_in().map(|sin| sin.ip()))
                    == Some(ip)
        })
    })
}

/// Sets the hostname now and writes it to `<root>/etc/hostname` for the next boot.
pub fn take_hostname(root: &Path, hostname: &str) -> Result<(), EniError> {
    persist_hostname(root, hostname)?;
    nix::unistd::sethostname(hostname).map_err(|source| EniError::Host {
        what: format!("cannot set the hostname to {hostname}"),
        source: source.into(),
    })
}

fn persist_hostname(root: &Path, hostname: &str) -> Result<(), EniError> {
    let path = root.join("etc/hostname");
    let partial = root.join("etc/.hostname.plura-eni");
    std::fs::write(&partial, format!("{hostname}\n"))
        .and_then(|()| std::fs::rename(&partial, &path))
        .map_err(|source| EniError::Host {
            what: format!("cannot write {}", path.display()),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_interface_by_mac_case_insensitively() {
        let sys = tempfile::tempdir().unwrap();
        for (name, mac) in [("eth0", "02:aa:bb:cc:dd:01"), ("eth1", "02:aa:bb:cc:dd:02")] {
            std::fs::create_dir(sys.path().join(name)).unwrap();
            std::fs::write(sys.path().join(name).join("address"), format!("{mac}\n")).unwrap();
        }
        assert_eq!(
            interface_with_mac(sys.path(), "02:AA:BB:CC:DD:02").as_deref(),
            Some("eth1")
        );
        assert_eq!(interface_with_mac(sys.path(), "02:aa:bb:cc:dd:03"), None);
    }

    #[test]
    fn the_hostname_is_persisted_whole() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/hostname"), "ip-172-31-1-9\n").unwrap();
        persist_hostname(root.path(), "waf-1").unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path().join("etc/hostname")).unwrap(),
            "waf-1\n"
        );
    }

    #[test]
    fn loopback_carries_its_address() {
        assert!(has_ipv4("lo", Ipv4Addr::LOCALHOST));
        assert!(!has_ipv4("lo", Ipv4Addr::new(10, 9, 9, 9)));
    }
}
