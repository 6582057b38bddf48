//! What the agent learns about its host: the hostname, the IPv4 of an interface, the interface of
//! the default route, the OS, and the machine's unique id. All read from the kernel or its
//! files, never by parsing another program's output.

use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

use plura_proto::CloudLabels;

/// The facts the login wait and the identity checks depend on; a trait so that tests can
/// script a host whose hostname and addresses change during boot.
pub trait Host: Send + Sync {
    fn hostname(&self) -> io::Result<String>;
    /// The first IPv4 address of `interface`, if it exists and has one.
    fn ipv4(&self, interface: &str) -> Option<Ipv4Addr>;
    /// The interface the default IPv4 route goes through.
    fn default_interface(&self) -> Option<String>;
}

/// The real host, read through the kernel.
pub struct SystemHost;

impl Host for SystemHost {
    fn hostname(&self) -> io::Result<String> {
        let name = nix::unistd::gethostname().map_err(io::Error::from)?;
        name.into_string()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "hostname is not UTF-8"))
    }

    fn ipv4(&self, interface: &str) -> Option<Ipv4Addr> {
        nix::ifaddrs::getifaddrs()
            .ok()?
            .filter(|a| a.interface_name == interface)
            .find_map(|a| a.address?.as_sockaddr_in().map(|sin| sin.ip()))
    }

    fn default_interface(&self) -> Option<String> {
        let table = std::fs::read_to_string("/proc/net/route").ok()?;
        default_route_interface(&table)
    }
}

/// The interface of the default route in the kernel's `/proc/net/route` table: the row whose
/// destination and mask are 0, with the lowest metric.
fn default_route_interface(table: &str) -> Option<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (iface, destination, metric, mask) = (
                fields.first()?,
                fields.get(1)?,
                fields.get(6)?,
                fields.get(7)?,
            );
            let is_default = *destination == "00000000" && *mask == "00000000";
            is_default.then(|| (metric.parse::<u32>().unwrap_or(u32::MAX), iface.to_string()))
        })
        .min()
        .map(|(_, iface)| iface)
}

/// `PRETTY_NAME` of `/etc/os-release`, e.g. "Ubuntu 24.04.1 LTS".
pub fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| pretty_name(&text))
        .unwrap_or_else(|| std::env::consts::OS.to_string())
}

fn pretty_name(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|line| {
        let value = line.strip_prefix("PRETTY_NAME=")?;
        Some(value.trim().trim_matches('"').to_string())
    })
}

/// How long the agent gives the instance metadata service: on a host outside EC2 nothing
/// answers, and the login should not wait long for that.
const IMDS_TIMEOUT: Duration = Duration::from_secs(1);

/// Where this host runs, from the instance metadata service (IMDSv2): instance id, zone, type
/// and Auto Scaling group (the tag `aws:autoscaling:groupName`, there only when the instance's
/// metadata tags are on). Empty off EC2. The endpoint follows the AWS SDKs' settings
/// (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, `AWS_EC2_METADATA_DISABLED`).
pub async fn cloud_labels() -> CloudLabels {
    let disabled =
        std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    if disabled {
        return CloudLabels::default();
    }
    let endpoint = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .unwrap_or_else(|_| "http://169.254.169.254".into());
    match ec2_metadata(endpoint.trim_end_matches('/')).await {
        Ok(labels) => labels,
        Err(e) => {
            tracing::debug!("no instance metadata ({e}): not on EC2");
            CloudLabels::default()
        }
    }
}

/// The instance's unique id: the EC2 instance id when there is one, else `/etc/machine-id`.
pub fn machine_id(cloud: &CloudLabels) -> Option<String> {
    if let Some(id) = &cloud.instance_id {
        return Some(id.clone());
    }
    let id = std::fs::read_to_string("/etc/machine-id").ok()?;
    Some(id.trim().to_string()).filter(|id| !id.is_empty())
}

async fn ec2_metadata(endpoint: &str) -> reqwest::Result<CloudLabels> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(IMDS_TIMEOUT)
        .build()?;
    let token = http
        .put(format!("{endpoint}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    // An item the instance does not have (a tag, with metadata tags off) is a 404: `None`.
    let item = |path: &'static str| {
        let request = http
            .get(format!("{endpoint}/latest/meta-data/{path}"))
            .header("X-aws-ec2-metadata-token", &token);
        async move {
            let response = request.send().await?;
            if response.status() == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let text = response.error_for_status()?.text().await?;
            Ok::<_, reqwest::Error>(Some(text.trim().to_string()).filter(|t| !t.is_empty()))
        }
    };
    Ok(CloudLabels {
        instance_id: item("instance-id").await?,
        zone: item("placement/availability-zone").await?,
        instance_type: item("instance-type").await?,
        asg: item("tags/instance/aws:autoscaling:groupName").await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_route_with_the_lowest_metric_wins() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth1\t00000000\t0140A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0\n\
                     eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                     eth0\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(default_route_interface(table).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface("Iface\tDestination\n"), None);
    }

    #[test]
    fn os_release_pretty_name() {
        let text = "NAME=\"Ubuntu\"\nPRETTY_NAME=\"Ubuntu 24.04.1 LTS\"\nID=ubuntu\n";
        assert_eq!(pretty_name(text).as_deref(), Some("Ubuntu 24.04.1 LTS"));
        assert_eq!(pretty_name("ID=x\n"), None);
    }

    #[test]
    fn loopback_has_its_address() {
        assert_eq!(SystemHost.ipv4("lo"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(SystemHost.ipv4("no-such-if0"), None);
        assert!(!SystemHost.hostname().unwrap().is_empty());
    }
}
