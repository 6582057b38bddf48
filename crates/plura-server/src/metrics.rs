//! The server's Prometheus metrics. Each server owns its registry (no globals), so several
//! servers can run in one test process.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use plura_proto::{Summary, Verdict};

use crate::store::CoverageCounts;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub event: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabel {
    pub verdict: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabel {
    pub asg: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: u16,
}

pub struct Metrics {
    registry: Registry,
    /// Every history event the server recorded, by kind (registered, login, stopped, …).
    pub agent_events: Family<EventLabel, Counter>,
    pub heartbeats: Counter,
    /// Logins that took over an identity whose holder was still running: two hosts claim it.
    pub takeovers_of_running: Counter,
    /// New identities registered (by a first login or by hand).
    pub registrations: Counter,
    /// New identities refused at `--max-agents`.
    pub registrations_refused: Counter,
    /// Last-seen rows written by the batched flush.
    pub flushed_rows: Counter,
    /// Agents whose last-seen is held in this server's memory.
    pub tracked_agents: Gauge,
    /// Agents in the in-memory search index (PostgreSQL); -1 while searches go to the database.
    search_index_agents: Gauge,
    pub agents: Family<StatusLabel, Gauge>,
    pub http_responses: Family<CodeLabel, Counter>,
    /// Connections closed as they came, past the connection limit.
    pub refused_connections: Counter,
    /// 1 while this server runs the fleet-wide sweeps (one server at a time on a shared
    /// database).
    pub sweep_leader: Gauge,
    /// Tries of alert deliveries: delivered, retried, failed (given up).
    pub alert_deliveries: Family<OutcomeLabel, Counter>,
    /// Database reads or writes that failed: in the liveness tick, alert deliveries, or a
    /// request (answered 500, or 503 when the database could not serve at all).
    pub database_failures: Counter,
    /// 1 while the database serves this server's reads and writes, 0 while it does not (as the
    /// liveness tick and the readiness check last found).
    pub database_up: Gauge,
    /// Agents stopped without a goodbye, by the cloud's verdict on their instance.
    agents_by_verdict: Family<VerdictLabel, Gauge>,
    /// Per watched Auto Scaling group, as its last round found them: live instances, those
    /// with a running agent, and those without one past the grace.
    group_instances: Family<GroupLabel, Gauge>,
    group_covered: Family<GroupLabel, Gauge>,
    group_uncovered: Family<GroupLabel, Gauge>,
    /// When a cloud watch last reported (Unix seconds; 0: never).
    watch_reported: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("plura");
        let agent_events = Family::<EventLabel, Counter>::default();
        registry.register(
            "agent_events",
            "History events recorded, by kind",
            agent_events.clone(),
        );
        let heartbeats = Counter::default();
        registry.register("heartbeats", "Heartbeats accepted", heartbeats.clone());
        let takeovers_of_running = Counter::default();
        registry.register(
            "takeovers_of_running_agents",
            "Logins from another source, machine or kind while the identity's holder was running",
            takeovers_of_running.clone(),
        );
        let registrations = Counter::default();
        registry.register(
            "registrations",
            "New agent identities registered, by a first login or by hand",
            registrations.clone(),
        );
        let registrations_refused = Counter::default();
        registry.register(
            "registrations_refused",
            "New agent identities refused because the fleet holds --max-agents",
            registrations_refused.clone(),
        );
        let flushed_rows = Counter::default();
        registry.register(
            "last_seen_flushed_rows",
            "Last-seen times written to the database in batches",
            flushed_rows.clone(),
        );
        let tracked_agents = Gauge::default();
        registry.register(
            "tracked_agents",
            "Agents whose liveness this server holds in memory",
            tracked_agents.clone(),
        );
        let search_index_agents = Gauge::default();
        registry.register(
            "search_index_agents",
            "Agents in the in-memory search index; -1 while searches go to the database",
            search_index_agents.clone(),
        );
        let agents = Family::<StatusLabel, Gauge>::default();
        registry.register("agents", "Registered agents by status", agents.clone());
        let http_responses = Family::<CodeLabel, Counter>::default();
        registry.register(
            "http_responses",
            "HTTP responses by status code",
            http_responses.clone(),
        );
        let refused_connections = Counter::default();
        registry.register(
            "refused_connections",
            "Connections closed as they came because the server had as many as it takes",
            refused_connections.clone(),
        );
        let sweep_leader = Gauge::default();
        registry.register(
            "sweep_leader",
            "1 while this server runs the fleet-wide sweeps (stopping silent agents, pruning)",
            sweep_leader.clone(),
        );
        let alert_deliveries = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "alert_deliveries",
            "Tries of alert deliveries to webhooks, by outcome (delivered, retried, failed)",
            alert_deliveries.clone(),
        );
        let database_failures = Counter::default();
        registry.register(
            "database_failures",
            "Database reads or writes that failed (liveness tick, alerts, requests answered 500 \
             or 503)",
            database_failures.clone(),
        );
        let database_up = Gauge::default();
        database_up.set(1);
        registry.register(
            "database_up",
            "1 while the database serves this server's reads and writes, 0 while it does not",
            database_up.clone(),
        );
        let agents_by_verdict = Family::<VerdictLabel, Gauge>::default();
        registry.register(
            "agents_by_verdict",
            "Agents stopped without a goodbye, by the cloud's verdict on their instance \
             (plura-eni watch)",
            agents_by_verdict.clone(),
        );
        let group_instances = Family::<GroupLabel, Gauge>::default();
        registry.register(
            "cloud_group_instances",
            "Live instances of each watched Auto Scaling group",
            group_instances.clone(),
        );
        let group_covered = Family::<GroupLabel, Gauge>::default();
        registry.register(
            "cloud_group_covered_instances",
            "Instances of each watched group with a running agent",
            group_covered.clone(),
        );
        let group_uncovered = Family::<GroupLabel, Gauge>::default();
        registry.register(
            "cloud_group_uncovered_instances",
            "Instances of each watched group without a running agent past the coverage grace",
            group_uncovered.clone(),
        );
        let watch_reported = Gauge::default();
        registry.register(
            "cloud_watch_last_report_timestamp_seconds",
            "When a cloud watch last reported (Unix time; 0: never)",
            watch_reported.clone(),
        );
        Self {
            registry,
            agents_by_verdict,
            group_instances,
            group_covered,
            group_uncovered,
            watch_reported,
            alert_deliveries,
            database_failures,
            database_up,
            sweep_leader,
            refused_connections,
            agent_events,
            heartbeats,
            takeovers_of_running,
            registrations,
            registrations_refused,
            flushed_rows,
            tracked_agents,
            search_index_agents,
            agents,
            http_responses,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition, with the agent counts taken from `summary` and the
    /// groups' from `coverage` (as they last were when the database cannot give them), and how
    /// many agents the search index holds (`None`: none loaded).
    pub fn render(
        &self,
        summary: Option<&Summary>,
        coverage: Option<&CoverageCounts>,
        search_index_agents: Option<usize>,
    ) -> String {
        self.search_index_agents
            .set(search_index_agents.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)));
        if let Some(summary) = summary {
            self.set_agents(summary);
        }
        if let Some(coverage) = coverage {
            self.set_coverage(coverage);
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    fn set_coverage(&self, coverage: &CoverageCounts) {
        let families = [
            &self.group_instances,
            &self.group_covered,
            &self.group_uncovered,
        ];
        // A group no longer watched goes from the exposition.
        for family in families {
            family.clear();
        }
        for group in &coverage.groups {
            for (family, n) in
                families
                    .into_iter()
                    .zip([group.instances, group.covered, group.uncovered])
            {
                family
                    .get_or_create(&GroupLabel {
                        asg: group.asg.clone(),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        self.watch_reported.set(
            coverage
                .reported_at
                .map_or(0, |at| at.as_millis().div_euclid(1000)),
        );
    }

    fn set_agents(&self, summary: &Summary) {
        for verdict in Verdict::ALL {
            let count = summary
                .by_verdict
                .get(verdict.as_str())
                .copied()
                .unwrap_or(0);
            self.agents_by_verdict
                .get_or_create(&VerdictLabel {
                    verdict: verdict.as_str(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        for (status, count) in [
            ("running", summary.running),
            ("stopped", summary.stopped),
            ("unknown", summary.unknown),
        ] {
            self.agents
                .get_or_create(&StatusLabel { status })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }
}
