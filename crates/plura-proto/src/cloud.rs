//! What `plura-eni watch` and the server say to each other: the cloud's verdict on a silent
//! agent's instance, the instances of the watched Auto Scaling groups, and the coverage the
//! server answers from them.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::rules::{FieldError, field_error, validate_filter};
use crate::text_enum::text_enum;
use crate::{CloudLabels, Timestamp};

/// Verdicts in one report at most; the watch sends more in the next round.
pub const MAX_VERDICTS_PER_REPORT: usize = 10_000;
/// Instances of all the groups in one report at most.
pub const MAX_INSTANCES_PER_REPORT: usize = 20_000;
pub const MAX_GROUPS_PER_REPORT: usize = 200;

/// What EC2 says of the instance of an agent that stopped without a goodbye.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Terminated, shutting down, or no longer known to EC2: expected churn (a scale-in).
    Terminated,
    /// Stopped or stopping.
    InstanceStopped,
    /// Pending or running: the agent is silent on a live instance (killed, crashed or cut off),
    /// the signature of tampering with a host agent.
    Running,
    /// The cloud could not say; asked again next round.
    Unknown,
}

text_enum!(Verdict {
    Terminated => "terminated",
    InstanceStopped => "instance_stopped",
    Running => "running",
    Unknown => "unknown",
});

impl Verdict {
    /// The verdict of an EC2 instance state name (`None`: the instance is not known).
    pub fn of_instance_state(state: Option<&str>) -> Self {
        match state {
            None | Some("terminated" | "shutting-down") => Self::Terminated,
            Some("stopped" | "stopping") => Self::InstanceStopped,
            Some("pending" | "running") => Self::Running,
            Some(_) => Self::Unknown,
        }
    }

    /// Whether it can no longer change: a terminated instance never comes back.
    pub fn is_settled(self) -> bool {
        self == Self::Terminated
    }

    /// Why the agent stopped, for a person.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Terminated => "instance terminated",
            Self::InstanceStopped => "instance stopped",
            Self::Running => "silent on a running instance",
            Self::Unknown => "the cloud could not say",
        }
    }
}

/// Where an agent runs, as its last login said, and what the cloud said of its instance since
/// it went silent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AgentCloud {
    #[serde(flatten)]
    pub labels: CloudLabels,
    /// What `plura-eni watch` found of the instance of an agent that stopped without a
    /// goodbye; cleared by its next login, heartbeat or goodbye.
    #[serde(default)]
    pub verdict: Option<Verdict>,
    #[serde(default)]
    pub verdict_at: Option<Timestamp>,
}

/// An agent that stopped without a goodbye on an EC2 instance, whose verdict is not settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SilentAgent {
    pub agent_id: i64,
    pub instance_id: String,
    /// Its availability zone: the region to ask is read from it.
    pub zone: Option<String>,
    pub verdict: Option<Verdict>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SilentAgentList {
    /// In id order; ask again with `after` set to the last id for more.
    pub items: Vec<SilentAgent>,
}

/// One verdict of a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VerdictReport {
    pub agent_id: i64,
    /// The instance asked about: the verdict is kept only while the agent still names it.
    pub instance_id: String,
    pub verdict: Verdict,
}

/// A running (or pending) instance of a watched group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GroupInstance {
    pub instance_id: String,
    pub zone: String,
    pub launched_at: Timestamp,
}

/// A watched Auto Scaling group's live instances, as one round saw them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GroupReport {
    pub asg: String,
    pub instances: Vec<GroupInstance>,
}

/// What one round of `plura-eni watch` found. Every round reports, even with nothing in it:
/// while reports come, stop alerts of agents on EC2 wait for their verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CloudReport {
    #[serde(default)]
    pub verdicts: Vec<VerdictReport>,
    #[serde(default)]
    pub groups: Vec<GroupReport>,
}

impl CloudReport {
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.verdicts.len() > MAX_VERDICTS_PER_REPORT {
            return Err(field_error(
                "verdicts",
                format!("at most {MAX_VERDICTS_PER_REPORT} in one report"),
            ));
        }
        if self.groups.len() > MAX_GROUPS_PER_REPORT {
            return Err(field_error(
                "groups",
                format!("at most {MAX_GROUPS_PER_REPORT} in one report"),
            ));
        }
        let instances: usize = self.groups.iter().map(|g| g.instances.len()).sum();
        if instances > MAX_INSTANCES_PER_REPORT {
            return Err(field_error(
                "groups",
                format!("at most {MAX_INSTANCES_PER_REPORT} instances in one report"),
            ));
        }
        for verdict in &self.verdicts {
            validate_filter("verdicts.instance_id", &verdict.instance_id)?;
        }
        let mut names: Vec<&str> = Vec::with_capacity(self.groups.len());
        for group in &self.groups {
            validate_filter("groups.asg", &group.asg)?;
            if names.contains(&group.asg.as_str()) {
                return Err(field_error(
                    "groups.asg",
                    format!("{:?} is reported twice", group.asg),
                ));
            }
            names.push(&group.asg);
            for instance in &group.instances {
                validate_filter("groups.instances.instance_id", &instance.instance_id)?;
                validate_filter("groups.instances.zone", &instance.zone)?;
            }
        }
        Ok(())
    }
}

/// What the server did with a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CloudReportOutcome {
    /// Verdicts kept; the others were of agents that came back, said goodbye or moved on
    /// since they were asked about.
    pub verdicts_kept: u64,
    pub groups: u64,
}

/// An instance of a watched group with no running agent on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UncoveredInstance {
    pub instance_id: String,
    pub zone: String,
    pub launched_at: Timestamp,
    /// The agent known for this instance, stopped or silent, if there is one.
    #[serde(default)]
    pub agent_id: Option<i64>,
    /// Younger than the grace a new instance has to boot and log in: not alerted yet.
    pub in_grace: bool,
}

/// A watched group's coverage: how many of its live instances have a running agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct GroupCoverage {
    pub asg: String,
    pub instances: u64,
    pub covered: u64,
    /// The instances without a running agent, oldest first, up to the asked limit.
    pub uncovered: Vec<UncoveredInstance>,
    /// Uncovered instances past the limit, not listed.
    #[serde(default)]
    pub uncovered_more: u64,
    /// When a watch last reported the group.
    pub reported_at: Timestamp,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Coverage {
    pub groups: Vec<GroupCoverage>,
    /// When a watch last reported at all; none: no watch runs.
    pub reported_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_state_decides_the_verdict() {
        for (state, verdict) in [
            (None, Verdict::Terminated),
            (Some("terminated"), Verdict::Terminated),
            (Some("shutting-down"), Verdict::Terminated),
            (Some("stopped"), Verdict::InstanceStopped),
            (Some("stopping"), Verdict::InstanceStopped),
            (Some("pending"), Verdict::Running),
            (Some("running"), Verdict::Running),
            (Some("rebooting?"), Verdict::Unknown),
        ] {
            assert_eq!(Verdict::of_instance_state(state), verdict, "{state:?}");
        }
    }

    #[test]
    fn the_agent_json_keeps_the_labels_beside_the_verdict() {
        let cloud = AgentCloud {
            labels: CloudLabels {
                instance_id: Some("i-1".into()),
                ..CloudLabels::default()
            },
            verdict: Some(Verdict::Running),
            verdict_at: None,
        };
        let json = serde_json::to_value(&cloud).unwrap();
        assert_eq!(json["instance_id"], "i-1");
        assert_eq!(json["verdict"], "running");
        assert_eq!(serde_json::from_value::<AgentCloud>(json).unwrap(), cloud);
    }

    #[test]
    fn a_report_is_bounded_and_names_each_group_once() {
        let group = |asg: &str| GroupReport {
            asg: asg.into(),
            instances: vec![],
        };
        let twice = CloudReport {
            verdicts: vec![],
            groups: vec![group("web"), group("web")],
        };
        assert!(twice.validate().unwrap_err().problem.contains("twice"));
        let many = CloudReport {
            verdicts: vec![
                VerdictReport {
                    agent_id: 1,
                    instance_id: "i-1".into(),
                    verdict: Verdict::Running,
                };
                MAX_VERDICTS_PER_REPORT + 1
            ],
            groups: vec![],
        };
        assert_eq!(many.validate().unwrap_err().field, "verdicts");
        assert!(CloudReport::default().validate().is_ok());
    }
}
