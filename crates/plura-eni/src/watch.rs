//! `plura-eni watch`: each round asks the PLURA server which agents went silent on EC2
//! instances, asks EC2 what became of those instances, lists the live instances of the watched
//! Auto Scaling groups, and reports it all to the server. The EC2 state decides a verdict, not a
//! group's list; an instance EC2 no longer knows is gone (it forgets terminated ones within
//! about an hour). A failing AWS call makes `unknown` verdicts (asked again next round) and
//! leaves a group out of that round's report; it never stops the watch.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, Instance};
use tokio_util::sync::CancellationToken;

use plura_proto::{
    CloudReport, GroupInstance, GroupReport, MAX_INSTANCES_PER_REPORT, SilentAgent, Timestamp,
    Verdict, VerdictReport,
};

use crate::aws;
use crate::error::{AwsContext, EniError};
use crate::fleet::FleetClient;

/// Instance ids in one DescribeInstances filter (EC2 takes up to 200 values).
const IDS_PER_CALL: usize = 200;
/// Group names in one DescribeAutoScalingGroups call.
const GROUPS_PER_CALL: usize = 100;
/// The longest wait between failed rounds.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

pub struct Watch {
    fleet: FleetClient,
    groups: Vec<String>,
    /// The region of the groups, and of agents whose zone is not known.
    config: aws_config::SdkConfig,
    autoscaling: aws_sdk_autoscaling::Client,
    ec2: HashMap<String, aws_sdk_ec2::Client>,
}

/// What one round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub verdicts: HashMap<Verdict, usize>,
    pub groups: usize,
    pub instances: usize,
}

impl Watch {
    pub async fn new(fleet: FleetClient, groups: Vec<String>) -> Self {
        let config = aws::config(None).await;
        Self {
            fleet,
            groups,
            autoscaling: aws_sdk_autoscaling::Client::new(&config),
            config,
            ec2: HashMap::new(),
        }
    }

    /// Rounds every `interval` until `stop`; a failed round is tried again sooner, backing off
    /// up to the interval (or five minutes).
    pub async fn run(mut self, interval: Duration, stop: CancellationToken) {
        let mut failures = 0u32;
        loop {
            let wait = match self.round().await {
                Ok(round) => {
                    failures = 0;
                    tracing::info!("{}", round.describe());
                    interval
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = backoff(failures, interval);
                    tracing::warn!("{e}; next round in {}s", wait.as_secs());
                    wait
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One round: asks, looks up, reports. Fails only when the server cannot be told.
    pub async fn round(&mut self) -> Result<Round, EniError> {
        let silent = self.fleet.silent_agents().await?;
        let verdicts = self.verdicts(&silent).await;
        let groups = self.groups().await;
        let mut round = Round {
            groups: groups.len(),
            instances: groups.iter().map(|g| g.instances.len()).sum(),
            ..Round::default()
        };
        for verdict in &verdicts {
            *round.verdicts.entry(verdict.verdict).or_default() += 1;
        }
        self.fleet.report(&CloudReport { verdicts, groups }).await?;
        Ok(round)
    }

    /// A verdict on each silent agent's instance, asked in the region of its zone.
    async fn verdicts(&mut self, silent: &[SilentAgent]) -> Vec<VerdictReport> {
        let default_region = self.config.region().map(|r| r.to_string());
        let mut by_region: HashMap<Option<String>, Vec<&SilentAgent>> = HashMap::new();
        for agent in silent {
            let region = agent
                .zone
                .as_deref()
                .and_then(region_of_zone)
                .or_else(|| default_region.clone());
            by_region.entry(region).or_default().push(agent);
        }
        let mut verdicts = Vec::with_capacity(silent.len());
        for (region, agents) in by_region {
            let ec2 = self.ec2_in(region.as_deref()).await;
            for chunk in agents.chunks(IDS_PER_CALL) {
                let ids: Vec<String> = chunk.iter().map(|a| a.instance_id.clone()).collect();
                let states = match describe(&ec2, &ids).await {
                    Ok(found) => Some(found),
                    Err(e) => {
                        tracing::warn!("{e}; {} verdicts are unknown this round", ids.len());
                        None
                    }
                };
                verdicts.extend(chunk.iter().map(|agent| {
                    let verdict = match &states {
                        Some(found) => Verdict::of_instance_state(
                            found
                                .get(&agent.instance_id)
                                .and_then(|i| i.state())
                                .and_then(|s| s.name())
                                .map(|name| name.as_str()),
                        ),
                        None => Verdict::Unknown,
                    };
                    VerdictReport {
                        agent_id: agent.agent_id,
                        instance_id: agent.instance_id.clone(),
                        verdict,
                    }
                }));
            }
        }
        verdicts
    }

    /// The live (pending or running) instances of each watched group that could be read.
    async fn groups(&mut self) -> Vec<GroupReport> {
        if self.groups.is_empty() {
            return Vec::new();
        }
        let ec2 = self.ec2_in(None).await;
        let mut reports = Vec::new();
        let mut instances = 0;
        for names in self.groups.chunks(GROUPS_PER_CALL) {
            let described = self
                .autoscaling
                .describe_auto_scaling_groups()
                .set_auto_scaling_group_names(Some(names.to_vec()))
                .into_paginator()
                .items()
                .send()
                .collect::<Result<Vec<_>, _>>()
                .await
                .doing(format!(
                    "describe the Auto Scaling groups {}",
                    names.join(", ")
                ));
            let described = match described {
                Ok(groups) => groups,
                Err(e) => {
                    tracing::warn!("{e}; their coverage is not reported this round");
                    continue;
                }
            };
            for name in names {
                let Some(group) = described
                    .iter()
                    .find(|g| g.auto_scaling_group_name() == Some(name.as_str()))
                else {
                    tracing::warn!("no Auto Scaling group is named {name:?}");
                    continue;
                };
                let ids: Vec<String> = group
                    .instances()
                    .iter()
                    .filter_map(|i| i.instance_id().map(str::to_string))
                    .collect();
                let mut live = Vec::with_capacity(ids.len());
                let mut failed = false;
                for chunk in ids.chunks(IDS_PER_CALL) {
                    match describe(&ec2, chunk).await {
                        Ok(found) => live.extend(found.values().filter_map(group_instance)),
                        Err(e) => {
                            tracing::warn!("{e}; the coverage of {name} is not reported");
                            failed = true;
                            break;
                        }
                    }
                }
                if failed {
                    continue;
                }
                if instances + live.len() > MAX_INSTANCES_PER_REPORT {
                    tracing::warn!(
                        "{name}: more than {MAX_INSTANCES_PER_REPORT} instances in all; its \
                         coverage is not reported"
                    );
                    continue;
                }
                instances += live.len();
                live.sort_by(|a: &GroupInstance, b| a.instance_id.cmp(&b.instance_id));
                reports.push(GroupReport {
                    asg: name.clone(),
                    instances: live,
                });
            }
        }
        reports
    }

    async fn ec2_in(&mut self, region: Option<&str>) -> aws_sdk_ec2::Client {
        let key = region.map(str::to_string).unwrap_or_default();
        if let Some(client) = self.ec2.get(&key) {
            return client.clone();
        }
        let client = match region {
            Some(region) => {
                let config = self
                    .config
                    .to_builder()
                    .region(aws_config::Region::new(region.to_string()))
                    .build();
                aws_sdk_ec2::Client::new(&config)
            }
            None => aws_sdk_ec2::Client::new(&self.config),
        };
        self.ec2.insert(key, client.clone());
        client
    }
}

/// How long to wait after `failures` failed rounds in a row: 10 s, doubling, up to five minutes
/// (or the interval, when it is longer).
fn backoff(failures: u32, interval: Duration) -> Duration {
    Duration::from_secs(5)
        .saturating_mul(1 << failures.min(8))
        .min(interval.max(MAX_BACKOFF))
}

impl Round {
    pub fn describe(&self) -> String {
        let mut verdicts: Vec<String> = self
            .verdicts
            .iter()
            .map(|(verdict, n)| format!("{n} {verdict}"))
            .collect();
        verdicts.sort();
        let verdicts = if verdicts.is_empty() {
            "no silent agents on EC2".to_string()
        } else {
            format!("verdicts: {}", verdicts.join(", "))
        };
        format!(
            "reported {verdicts}; {} instances in {} groups",
            self.instances, self.groups
        )
    }
}

/// The instances among `ids` that EC2 knows, by id. Filtering by `instance-id` (rather than
/// naming the ids) answers the known ones instead of failing on one that is not.
async fn describe(
    ec2: &aws_sdk_ec2::Client,
    ids: &[String],
) -> Result<HashMap<String, Instance>, EniError> {
    let reservations = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("instance-id")
                .set_values(Some(ids.to_vec()))
                .build(),
        )
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .doing(format!("describe {} instances", ids.len()))?;
    Ok(reservations
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| Some((i.instance_id()?.to_string(), i.clone())))
        .collect())
}

/// A group's instance, if it is pending or running.
fn group_instance(instance: &Instance) -> Option<GroupInstance> {
    let state = instance.state()?.name()?.as_str();
    if Verdict::of_instance_state(Some(state)) != Verdict::Running {
        return None;
    }
    Some(GroupInstance {
        instance_id: instance.instance_id()?.to_string(),
        zone: instance.placement()?.availability_zone()?.to_string(),
        launched_at: instance
            .launch_time()
            .and_then(|t| t.to_millis().ok())
            .map_or_else(Timestamp::now, Timestamp::from_millis),
    })
}

/// The region of an availability zone: `ap-northeast-2a` is in `ap-northeast-2`, a Local Zone
/// `us-west-2-lax-1a` in `us-west-2`, `us-gov-west-1a` in `us-gov-west-1`.
pub fn region_of_zone(zone: &str) -> Option<String> {
    let mut parts = Vec::new();
    for part in zone.split('-') {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() {
            parts.push(part);
            continue;
        }
        if parts.len() < 2 {
            return None;
        }
        return Some(format!("{}-{digits}", parts.join("-")));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_rounds_back_off_up_to_five_minutes() {
        let interval = Duration::from_secs(30);
        let waits: Vec<u64> = (1..=7).map(|n| backoff(n, interval).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff(1, Duration::from_secs(3600)).as_secs(), 10);
        assert_eq!(backoff(20, Duration::from_secs(3600)).as_secs(), 1280);
    }

    #[test]
    fn a_zone_names_its_region() {
        for (zone, region) in [
            ("ap-northeast-2a", Some("ap-northeast-2")),
            ("us-east-1f", Some("us-east-1")),
            ("us-west-2-lax-1a", Some("us-west-2")),
            ("us-gov-west-1a", Some("us-gov-west-1")),
            ("cn-north-1a", Some("cn-north-1")),
            ("nowhere", None),
            ("1a", None),
        ] {
            assert_eq!(region_of_zone(zone).as_deref(), region, "{zone}");
        }
    }
}
