//! Creating the pool: N fixed-IP interfaces per subnet (one subnet per zone), each tagged with
//! the pool and the hostname its holder takes. Idempotent: it only tops up what is missing, and
//! adopts hand-made interfaces that carry the pool's description (the seed's `plura-waf`).

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{ResourceType, TagSpecification};
use serde::Serialize;

use crate::error::{AwsContext, EniError};
use crate::pool::{self, HOSTNAME_TAG, HostnameTemplate, Member, POOL_TAG};

#[derive(Debug, Clone)]
pub struct Plan {
    pub pool: String,
    pub subnets: Vec<String>,
    /// Interfaces per subnet.
    pub size: u32,
    /// Numbered from the first number no member has yet.
    pub hostnames: HostnameTemplate,
    pub description: String,
    pub security_groups: Vec<String>,
}

/// What `provision` did with an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Already a member.
    Kept,
    /// A hand-made interface with the pool's description, tagged into the pool.
    Adopted,
    Created,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kept => "kept",
            Self::Adopted => "adopted",
            Self::Created => "created",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Provisioned {
    pub action: Action,
    #[serde(flatten)]
    pub member: Member,
}

pub async fn provision(ec2: &Client, plan: &Plan) -> Result<Vec<Provisioned>, EniError> {
    let zones = subnet_zones(ec2, &plan.subnets).await?;
    let existing = pool::members(ec2, &plan.pool, None).await?;
    let mut hostnames: BTreeSet<String> =
        existing.iter().filter_map(|m| m.hostname.clone()).collect();
    let mut report: Vec<Provisioned> = existing
        .iter()
        .filter(|m| plan.subnets.contains(&m.subnet))
        .map(|m| Provisioned {
            action: Action::Kept,
            member: m.clone(),
        })
        .collect();

    for member in adoptable(ec2, plan).await? {
        let hostname = plan.hostnames.next_free(&mut hostnames);
        ec2.create_tags()
            .resources(&member.eni)
            .tags(pool::tag(POOL_TAG, &plan.pool))
            .tags(pool::tag(HOSTNAME_TAG, &hostname))
            .tags(pool::tag("Name", &hostname))
            .send()
            .await
            .doing("tag an adopted interface")?;
        tracing::info!("adopted {} ({}) as {hostname}", member.eni, member.ip);
        report.push(Provisioned {
            action: Action::Adopted,
            member: Member {
                hostname: Some(hostname),
                ..member
            },
        });
    }

    let mut missing: BTreeMap<&str, u32> = plan
        .subnets
        .iter()
        .map(|s| {
            let have = report.iter().filter(|p| &p.member.subnet == s).count() as u32;
            (s.as_str(), plan.size.saturating_sub(have))
        })
        .collect();
    // Round-robin over the subnets, so consecutive hostnames alternate zones as in the seed
    // (waf-1 in a, waf-2 in c, waf-3 in a, …).
    while missing.values().any(|n| *n > 0) {
        for subnet in &plan.subnets {
            let Some(left) = missing.get_mut(subnet.as_str()).filter(|n| **n > 0) else {
                continue;
            };
            *left -= 1;
            let hostname = plan.hostnames.next_free(&mut hostnames);
            let member = create(ec2, plan, subnet, &hostname).await?;
            tracing::info!(
                "created {} {} {hostname} in {}",
                member.eni,
                member.ip,
                zones[subnet]
            );
            report.push(Provisioned {
                action: Action::Created,
                member,
            });
        }
    }
    report.sort_by(|a, b| a.member.hostname.cmp(&b.member.hostname));
    Ok(report)
}

async fn subnet_zones(
    ec2: &Client,
    subnets: &[String],
) -> Result<BTreeMap<String, String>, EniError> {
    let described = ec2
        .describe_subnets()
        .set_subnet_ids(Some(subnets.to_vec()))
        .send()
        .await
        .doing("describe subnets")?;
    let zones: BTreeMap<String, String> = described
        .subnets()
        .iter()
        .filter_map(|s| {
            Some((
                s.subnet_id()?.to_string(),
                s.availability_zone()?.to_string(),
            ))
        })
        .collect();
    if let Some(missing) = subnets.iter().find(|s| !zones.contains_key(*s)) {
        return Err(EniError::Unexpected(format!("no subnet {missing}")));
    }
    Ok(zones)
}

/// Interfaces in the pool's subnets with its description and no pool tag yet.
async fn adoptable(ec2: &Client, plan: &Plan) -> Result<Vec<Member>, EniError> {
    let mut found = Vec::new();
    for subnet in &plan.subnets {
        let filters = vec![
            pool::filter("description", &plan.description),
            pool::filter("subnet-id", subnet),
        ];
        let untagged = pool::list(ec2, filters).await?.into_iter();
        found.extend(untagged.filter(|m| m.pool.is_none()));
    }
    Ok(found)
}

async fn create(
    ec2: &Client,
    plan: &Plan,
    subnet: &str,
    hostname: &str,
) -> Result<Member, EniError> {
    let tags = TagSpecification::builder()
        .resource_type(ResourceType::NetworkInterface)
        .tags(pool::tag(POOL_TAG, &plan.pool))
        .tags(pool::tag(HOSTNAME_TAG, hostname))
        .tags(pool::tag("Name", hostname))
        .build();
    let created = ec2
        .create_network_interface()
        .subnet_id(subnet)
        .description(&plan.description)
        .set_groups((!plan.security_groups.is_empty()).then(|| plan.security_groups.clone()))
        .tag_specifications(tags)
        .send()
        .await
        .doing("create a network interface")?;
    let id = created
        .network_interface()
        .and_then(|n| n.network_interface_id())
        .ok_or_else(|| EniError::Unexpected("created an interface without an id".into()))?;
    pool::list(ec2, vec![pool::filter("network-interface-id", id)])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| EniError::Unexpected(format!("{id} vanished after it was created")))
}
