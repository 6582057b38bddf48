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

    /// Each watched group's instances and which of them have no running agent; instances
    /// launched at or after `grace_from` are in their grace.
    async fn coverage(&self, grace_from: Timestamp) -> Result<Coverage>;

    /// When a watch last reported.
    async fn watch_reported_at(&self) -> Result<Option<Timestamp>>;
}
