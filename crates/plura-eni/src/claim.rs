//! The claim at boot: take one available interface of the pool in this instance's zone and
//! attach it as eth1, safely when many instances boot at once.
//!
//! The seed's script took the first available interface and gave up if the attach failed, so
//! two instances booting together picked the same one and the loser kept a fresh address. Here
//! each instance tries the candidates in an order spread by its instance id (so a burst does not
//! all start on the same one), takes the next when EC2 says another instance won
//! (`InvalidNetworkInterface.InUse`), waits while interfaces of terminating instances are still
//! being released, and fails loudly, with a distinct exit code, when the pool is really empty.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{InstanceStateName, NetworkInterfaceStatus};
use tokio::time::Instant;

use crate::aws::Me;
use crate::error::{AwsContext, EniError};
use crate::pool::{self, Member};

const DEVICE_INDEX: i32 = 1;
const IN_USE: &str = "InvalidNetworkInterface.InUse";

#[derive(Debug, Clone)]
pub struct ClaimPolicy {
    /// How long to wait for interfaces still held by terminating instances, or for the
    /// winners of lost races to settle, before calling the pool empty.
    pub patience: Duration,
    pub first_retry: Duration,
    pub max_retry: Duration,
}

impl Default for ClaimPolicy {
    fn default() -> Self {
        Self {
            patience: Duration::from_secs(180),
            first_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(10),
        }
    }
}

/// What a claim got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub member: Member,
    /// False when this instance already held it (a reboot, or a second run).
    pub attached_now: bool,
}

pub async fn claim(
    ec2: &Client,
    pool: &str,
    me: &Me,
    policy: &ClaimPolicy,
) -> Result<Claimed, EniError> {
    if let Some(member) = pool::held_by(ec2, pool, &me.instance_id).await? {
        tracing::info!(
            "{} already holds {} ({})",
            me.instance_id,
            member.eni,
            member.ip
        );
        return Ok(Claimed {
            member,
            attached_now: false,
        });
    }
    let deadline = Instant::now() + policy.patience;
    let mut retry = policy.first_retry;
    loop {
        let members = pool::members(ec2, pool, Some(&me.zone)).await?;
        let candidates = spread(
            members
                .iter()
                .filter(|m| m.is_available() && m.hostname.is_some())
                .cloned()
                .collect(),
            &me.instance_id,
        );
        let mut lost_races = 0;
        for candidate in candidates {
            match attach(ec2, &candidate, &me.instance_id).await? {
                true => {
                    tracing::info!(
                        "attached {} ({}, {}) as device {DEVICE_INDEX}",
                        candidate.eni,
                        candidate.ip,
                        candidate.hostname.as_deref().unwrap_or("?")
                    );
                    let member = Member {
                        status: NetworkInterfaceStatus::InUse,
                        instance: Some(me.instance_id.clone()),
                        ..candidate
                    };
                    return Ok(Claimed {
                        member,
                        attached_now: true,
                    });
                }
                false => {
                    lost_races += 1;
                    tracing::info!(
                        "{} was taken by another instance; trying the next",
                        candidate.eni
                    );
                }
            }
        }
        let releasing = releasing(ec2, &members).await?;
        let in_use = members.iter().filter(|m| !m.is_available()).count();
        if (releasing > 0 || lost_races > 0) && Instant::now() + retry < deadline {
            tracing::info!(
                "no interface free in {} yet ({releasing} held by terminating instances, \
                 {lost_races} lost to others); retrying in {retry:?}",
                me.zone
            );
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(policy.max_retry);
            continue;
        }
        return Err(EniError::EmptyPool {
            pool: pool.to_string(),
            zone: me.zone.clone(),
            in_use,
            total: members.len(),
            hint: if members.is_empty() {
                " (provision it with plura-eni provision)"
            } else {
                " (raise the pool size or lower the group's maximum)"
            },
        });
    }
}

/// Attaches `member` to `instance`; `false` when another instance got it first.
async fn attach(ec2: &Client, member: &Member, instance: &str) -> Result<bool, EniError> {
    let result = ec2
        .attach_network_interface()
        .network_interface_id(&member.eni)
        .instance_id(instance)
        .device_index(DEVICE_INDEX)
        .send()
        .await
        .doing(format!("attach {} to {instance}", member.eni));
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.aws_code() == Some(IN_USE) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The candidates in an order that starts at a place given by the instance id: instances
/// booting together start on different interfaces instead of all racing for the first.
fn spread(mut candidates: Vec<Member>, instance_id: &str) -> Vec<Member> {
    if candidates.is_empty() {
        return candidates;
    }
    let mut hasher = DefaultHasher::new();
    instance_id.hash(&mut hasher);
    let start = (hasher.finish() % candidates.len() as u64) as usize;
    candidates.rotate_left(start);
    candidates
}

/// How many in-use members belong to instances that are shutting down or gone: EC2 releases
/// those interfaces shortly.
async fn releasing(ec2: &Client, members: &[Member]) -> Result<usize, EniError> {
    let holders: Vec<String> = members
        .iter()
        .filter(|m| !m.is_available())
        .filter_map(|m| m.instance.clone())
        .collect();
    if holders.is_empty() {
        return Ok(0);
    }
    let described = ec2
        .describe_instances()
        .set_instance_ids(Some(holders))
        .send()
        .await
        .doing("describe the holders' instances")?;
    Ok(described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| {
            matches!(
                i.state().and_then(|s| s.name()),
                Some(InstanceStateName::ShuttingDown | InstanceStateName::Terminated)
            )
        })
        .count())
}

/// Detaches the pool interface this instance holds, for a clean scale-in.
pub async fn release(ec2: &Client, pool: &str, me: &Me) -> Result<Option<Member>, EniError> {
    let Some(member) = pool::held_by(ec2, pool, &me.instance_id).await? else {
        return Ok(None);
    };
    let attachment = member
        .attachment
        .clone()
        .ok_or_else(|| EniError::Unexpected(format!("{} shows no attachment id", member.eni)))?;
    ec2.detach_network_interface()
        .attachment_id(attachment)
        .send()
        .await
        .doing("detach the pool interface")?;
    Ok(Some(member))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(eni: &str) -> Member {
        Member {
            eni: eni.into(),
            zone: "ap-northeast-2a".into(),
            subnet: "subnet-a".into(),
            ip: "172.31.64.4".into(),
            pool: Some("waf".into()),
            hostname: Some("waf-1".into()),
            status: NetworkInterfaceStatus::Available,
            instance: None,
            attachment: None,
            mac: None,
        }
    }

    #[test]
    fn spread_keeps_every_candidate_and_differs_by_instance() {
        let candidates: Vec<Member> = (0..32).map(|n| member(&format!("eni-{n:02}"))).collect();
        let firsts: std::collections::BTreeSet<String> = (0..32)
            .map(|n| {
                spread(candidates.clone(), &format!("i-{n:017x}"))[0]
                    .eni
                    .clone()
            })
            .collect();
        assert!(
            firsts.len() > 10,
            "32 instances start on {} interfaces",
            firsts.len()
        );
        let mut all = spread(candidates.clone(), "i-0");
        all.sort_by(|a, b| a.eni.cmp(&b.eni));
        assert_eq!(all, candidates);
        assert_eq!(
            spread(candidates.clone(), "i-7"),
            spread(candidates, "i-7"),
            "the same instance always tries in the same order"
        );
    }
}
