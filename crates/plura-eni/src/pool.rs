//! The pool: fixed-IP interfaces tagged `plura:pool=<name>`, each carrying the hostname its
//! holder takes in `plura:hostname`. Nothing is edited by hand; EC2 is the only record.

use std::collections::BTreeSet;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{Filter, NetworkInterface, NetworkInterfaceStatus, Tag};
use serde::{Serialize, Serializer};

use crate::error::{AwsContext, EniError};

pub const POOL_TAG: &str = "plura:pool";
pub const HOSTNAME_TAG: &str = "plura:hostname";

/// One interface of the pool, as EC2 shows it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub eni: String,
    pub zone: String,
    pub subnet: String,
    pub ip: String,
    #[serde(skip)]
    pub pool: Option<String>,
    pub hostname: Option<String>,
    #[serde(serialize_with = "status_text")]
    pub status: NetworkInterfaceStatus,
    pub instance: Option<String>,
    #[serde(skip)]
    pub attachment: Option<String>,
    #[serde(skip)]
    pub mac: Option<String>,
}

impl Member {
    pub fn is_available(&self) -> bool {
        self.status == NetworkInterfaceStatus::Available
    }

    fn from_sdk(eni: &NetworkInterface) -> Option<Self> {
        let tag = |key: &str| {
            eni.tag_set()
                .iter()
                .find(|t| t.key() == Some(key))
                .and_then(|t| t.value())
                .map(str::to_string)
        };
        Some(Self {
            eni: eni.network_interface_id()?.to_string(),
            zone: eni.availability_zone().unwrap_or_default().to_string(),
            subnet: eni.subnet_id().unwrap_or_default().to_string(),
            ip: eni.private_ip_address().unwrap_or_default().to_string(),
            pool: tag(POOL_TAG),
            hostname: tag(HOSTNAME_TAG),
            status: eni
                .status()
                .cloned()
                .unwrap_or_else(|| NetworkInterfaceStatus::from("unknown")),
            instance: eni
                .attachment()
                .and_then(|a| a.instance_id())
                .map(str::to_string),
            attachment: eni
                .attachment()
                .and_then(|a| a.attachment_id())
                .map(str::to_string),
            mac: eni.mac_address().map(str::to_string),
        })
    }
}

/// `available`, `in-use`, `attaching`, …, as EC2 writes it.
fn status_text<S: Serializer>(status: &NetworkInterfaceStatus, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(status.as_str())
}

/// The hostnames of a pool's interfaces: a template in which `{n}` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostnameTemplate(String);

impl HostnameTemplate {
    pub fn new(template: String) -> Result<Self, EniError> {
        if template.contains("{n}") {
            Ok(Self(template))
        } else {
            Err(EniError::Invalid(format!(
                "--hostname-template {template:?} must contain {{n}}"
            )))
        }
    }

    /// The hostname numbered `n`.
    pub fn nth(&self, n: u32) -> String {
        self.0.replace("{n}", &n.to_string())
    }

    /// The hostname of the first number not in `taken`, which it is added to.
    pub fn next_free(&self, taken: &mut BTreeSet<String>) -> String {
        (1u32..)
            .map(|n| self.nth(n))
            .find(|name| taken.insert(name.clone()))
            .expect("some number is free")
    }
}

pub fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

pub fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

/// Interfaces matching all `filters`, sorted by id so every reader sees one order.
pub async fn list(ec2: &Client, filters: Vec<Filter>) -> Result<Vec<Member>, EniError> {
    let mut members = Vec::new();
    let mut pages = ec2
        .describe_network_interfaces()
        .set_filters(Some(filters))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.doing("describe network interfaces")?;
        members.extend(
            page.network_interfaces()
                .iter()
                .filter_map(Member::from_sdk),
        );
    }
    members.sort_by(|a, b| a.eni.cmp(&b.eni));
    Ok(members)
}

/// The pool's members, all zones or one.
pub async fn members(
    ec2: &Client,
    pool: &str,
    zone: Option<&str>,
) -> Result<Vec<Member>, EniError> {
    let mut filters = vec![filter(&format!("tag:{POOL_TAG}"), pool)];
    if let Some(zone) = zone {
        filters.push(filter("availability-zone", zone));
    }
    list(ec2, filters).await
}

/// The pool member attached to `instance`, if any.
pub async fn held_by(ec2: &Client, pool: &str, instance: &str) -> Result<Option<Member>, EniError> {
    let filters = vec![
        filter(&format!("tag:{POOL_TAG}"), pool),
        filter("attachment.instance-id", instance),
    ];
    Ok(list(ec2, filters).await?.into_iter().next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_fill_the_first_free_numbers() {
        let template = HostnameTemplate::new("waf-{n}".into()).unwrap();
        let mut taken: BTreeSet<String> = ["waf-1", "waf-3"].map(String::from).into();
        assert_eq!(template.next_free(&mut taken), "waf-2");
        assert_eq!(template.next_free(&mut taken), "waf-4");
        let other = HostnameTemplate::new("web{n}.dmz".into()).unwrap();
        assert_eq!(other.next_free(&mut taken), "web1.dmz");
        assert!(HostnameTemplate::new("waf".into()).is_err());
    }
}
