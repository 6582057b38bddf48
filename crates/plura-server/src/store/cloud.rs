//! What `plura-eni watch` reports, kept: verdicts on silent agents' instances, the live
//! instances of the watched Auto Scaling groups, and the coverage they make.

use async_trait::async_trait;
use plura_proto::{CloudReport, CloudReportOutcome, Coverage, SilentAgent, Timestamp};

use super::Result;

/// How a report's alerts are decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportRules {
    /// The held stop alert of an agent whose instance is gone becomes an informational
    /// `agent_instance_gone` instead of being dropped.
    pub alert_on_scale_in: bool,
    /// Instances launched before this and still without a running agent are alerted.
    pub launched_before: Timestamp,
}

/// A watched group's figures, as its last round found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCounts {
    pub asg: String,
    pub instances: u64,
    pub covered: u64,
    /// Without a running agent past the grace.
    pub uncovered: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoverageCounts {
    pub groups: Vec<GroupCounts>,
    pub reported_at: Option<Timestamp>,
}

#[async_trait]
pub trait CloudStore: Send + Sync {
    /// Agents stopped without a goodbye on an EC2 instance whose verdict is not settled, with
    /// ids above `after`, in id order.
    async fn silent_agents(&self, after: i64, limit: u32) -> Result<Vec<SilentAgent>>;

    /// Keeps a round's report in one transaction: its time, each verdict of an agent still
    /// lost on the instance asked about (releasing or dropping its held stop alert, or alerting
    /// a newly running verdict), each group's instances (replacing what the group had), and an
    /// `instances_without_agent` alert for each instance newly uncovered past the grace.
    async fn keep_cloud_report(
        &self,
        report: &CloudReport,
        rules: ReportRules,
        at: Timestamp,
    ) -> Result<CloudReportOutcome>;

    /// Each watched group's instances and which of them have no running agent (at most
    /// `limit` listed per group, oldest first); instances launched at or after `grace_from` are
    /// in their grace.
    async fn coverage(&self, grace_from: Timestamp, limit: usize) -> Result<Coverage>;

    /// Each watched group's counts as its last round found them (uncovered: past the grace
    /// then), with its time; and when a watch last reported.
    async fn coverage_counts(&self) -> Result<CoverageCounts>;

    /// When a watch last reported.
    async fn watch_reported_at(&self) -> Result<Option<Timestamp>>;
}
