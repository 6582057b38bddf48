//! What the cloud says of the fleet, as `plura-eni watch` reports it: why each silent agent on
//! EC2 went silent, and which instances of the watched Auto Scaling groups have no agent. While
//! a watch reports, the stop alert of an agent on EC2 waits for the cloud's verdict.

use std::time::Duration;

use plura_proto::{CloudReport, CloudReportOutcome, Coverage, SilentAgent, Timestamp};

use super::Fleet;
use crate::store::{self, CoverageCounts, Doing, ReportRules};

/// A watch that reported within this long counts as running: stop alerts wait for it.
pub const WATCH_FRESH_FOR: Duration = Duration::from_secs(10 * 60);
/// How long a stop alert waits for the cloud's verdict unless told otherwise.
pub const DEFAULT_VERDICT_WAIT: Duration = Duration::from_secs(2 * 60);
/// How long a new instance has to boot and log its agent in unless told otherwise.
pub const DEFAULT_COVERAGE_GRACE: Duration = Duration::from_secs(5 * 60);

/// How the cloud's word is weighed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloudPolicy {
    /// How long the stop alert of an agent on EC2 waits for its verdict while a watch runs.
    pub verdict_wait: Duration,
    /// Agents that stopped with their instances are alerted (one informational message).
    pub alert_on_scale_in: bool,
    /// Instances younger than this are not yet counted as uncovered.
    pub coverage_grace: Duration,
}

impl Default for CloudPolicy {
    fn default() -> Self {
        Self {
            verdict_wait: DEFAULT_VERDICT_WAIT,
            alert_on_scale_in: false,
            coverage_grace: DEFAULT_COVERAGE_GRACE,
        }
    }
}

impl Fleet {
    /// Agents that stopped without a goodbye on an EC2 instance and whose verdict may still
    /// change, with ids above `after`.
    pub async fn silent_agents(&self, after: i64, limit: u32) -> store::Result<Vec<SilentAgent>> {
        self.store
            .silent_agents(after, limit)
            .await
            .doing(|| "reading the silent agents on EC2".into())
    }

    /// Keeps what one round of a watch found.
    pub async fn keep_cloud_report(
        &self,
        report: &CloudReport,
    ) -> store::Result<CloudReportOutcome> {
        let now = Timestamp::now();
        let policy = self.policy.cloud;
        let rules = ReportRules {
            alert_on_scale_in: policy.alert_on_scale_in,
            launched_before: now.minus(policy.coverage_grace),
        };
        let outcome = self
            .store
            .keep_cloud_report(report, rules, now)
            .await
            .doing(|| {
                format!(
                    "keeping a cloud report of {} verdicts and {} groups",
                    report.verdicts.len(),
                    report.groups.len()
                )
            })?;
        self.read_model.forget_summary();
        Ok(outcome)
    }

    /// Each watched group's instances, and those without a running agent (at most `limit`
    /// listed per group).
    pub async fn coverage(&self, limit: usize) -> store::Result<Coverage> {
        let grace_from = Timestamp::now().minus(self.policy.cloud.coverage_grace);
        self.store
            .coverage(grace_from, limit)
            .await
            .doing(|| "reading the watched groups' coverage".into())
    }

    /// Each watched group's counts as its last round found them, for the metrics.
    pub async fn coverage_counts(&self) -> store::Result<CoverageCounts> {
        self.store
            .coverage_counts()
            .await
            .doing(|| "reading the watched groups' counts".into())
    }

    /// Until when the stop alerts of agents on EC2 stopped now wait for their verdict: `None`
    /// when no watch has reported lately, so nothing would come.
    pub(super) async fn verdict_hold(&self, now: Timestamp) -> store::Result<Option<Timestamp>> {
        let reported = self
            .store
            .watch_reported_at()
            .await
            .doing(|| "reading when a cloud watch last reported".into())?;
        Ok(reported
            .filter(|at| *at >= now.minus(WATCH_FRESH_FOR))
            .map(|_| now.plus(self.policy.cloud.verdict_wait)))
    }
}
