//! What `plura-eni watch` reports, kept in one transaction a round: the verdicts on silent
//! agents' instances and what they do to the agents' held stop alerts, the watched groups'
//! instances, and the alerts of instances that stay without an agent.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{AnyConnection, Row};

use plura_proto::{
    AlertKind, AlertedInstance, CloudReport, CloudReportOutcome, Coverage, GroupCoverage,
    GroupReport, SilentAgent, Timestamp, UncoveredInstance, Verdict,
};

use super::alerts::{self, NewAlert, subject_json};
use super::rows::{self, AGENT_COLUMNS, new_event, placeholders, rows_per_statement};
use super::{SqlStore, WriteTx};
use crate::store::{CloudStore, Dialect, ReportRules, Result, SettingStore};

/// The setting that holds when a watch last reported.
const REPORTED_AT: &str = "cloud_watch_reported_at";
/// A group no watch has reported for this long is forgotten.
const FORGET_GROUPS_AFTER: Duration = Duration::from_secs(24 * 3600);

#[async_trait]
impl CloudStore for SqlStore {
    async fn silent_agents(&self, after: i64, limit: u32) -> Result<Vec<SilentAgent>> {
        let rows = sqlx::query(
            "SELECT id, instance_id, zone, cloud_verdict FROM agents \
             WHERE lost = 1 AND instance_id IS NOT NULL AND id > $1 \
             AND (cloud_verdict IS NULL OR cloud_verdict <> $2) ORDER BY id LIMIT $3",
        )
        .bind(after)
        .bind(Verdict::Terminated.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SilentAgent {
                    agent_id: row.try_get("id")?,
                    instance_id: row.try_get("instance_id")?,
                    zone: row.try_get("zone")?,
                    verdict: rows::optional_parsed(row, "cloud_verdict")?,
                })
            })
            .collect()
    }

    async fn keep_cloud_report(
        &self,
        report: &CloudReport,
        rules: ReportRules,
        at: Timestamp,
    ) -> Result<CloudReportOutcome> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(REPORTED_AT)
        .bind(at.as_millis().to_string())
        .execute(tx.conn())
        .await?;
        let verdicts_kept = keep_verdicts(&mut tx, report, rules, at).await?;
        for group in &report.groups {
            keep_group(&mut tx, group, at).await?;
        }
        forget_unreported_groups(tx.conn(), at).await?;
        alert_uncovered(&mut tx, &report.groups, rules.launched_before, at).await?;
        tx.commit(&[]).await?;
        Ok(CloudReportOutcome {
            verdicts_kept,
            groups: report.groups.len() as u64,
        })
    }

    async fn coverage(&self, grace_from: Timestamp) -> Result<Coverage> {
        let rows = sqlx::query(&format!(
            "SELECT g.asg, g.reported_at, i.instance_id, i.zone, i.launched_at, \
             CAST(CASE WHEN {RUNNING_ON_IT} THEN 1 ELSE 0 END AS BIGINT) AS covered, {AGENT_ON_IT} \
             FROM cloud_groups g LEFT JOIN cloud_instances i ON i.asg = g.asg \
             ORDER BY g.asg, i.launched_at, i.instance_id"
        ))
        .fetch_all(&self.pool)
        .await?;
        let mut groups: Vec<GroupCoverage> = Vec::new();
        for row in &rows {
            let asg: String = row.try_get("asg")?;
            if groups.last().is_none_or(|g| g.asg != asg) {
                groups.push(GroupCoverage {
                    asg,
                    instances: 0,
                    covered: 0,
                    uncovered: Vec::new(),
                    reported_at: rows::time(row, "reported_at")?,
                });
            }
            let group = groups.last_mut().expect("pushed above");
            let Some(instance_id) = row.try_get::<Option<String>, _>("instance_id")? else {
                continue;
            };
            group.instances += 1;
            if row.try_get::<i64, _>("covered")? != 0 {
                group.covered += 1;
                continue;
            }
            let launched_at = rows::time(row, "launched_at")?;
            group.uncovered.push(UncoveredInstance {
                instance_id,
                zone: row.try_get("zone")?,
                launched_at,
                agent_id: row.try_get("agent_id")?,
                in_grace: launched_at >= grace_from,
            });
        }
        Ok(Coverage {
            groups,
            reported_at: self.watch_reported_at().await?,
        })
    }

    async fn watch_reported_at(&self) -> Result<Option<Timestamp>> {
        Ok(self
            .setting(REPORTED_AT)
            .await?
            .and_then(|millis| millis.parse().ok())
            .map(Timestamp::from_millis))
    }
}

/// Whether a running agent is on instance `i`.
const RUNNING_ON_IT: &str = "EXISTS (SELECT 1 FROM agents a \
     WHERE a.instance_id = i.instance_id AND a.status = 'running')";
/// The first agent known on instance `i`, whatever its status.
const AGENT_ON_IT: &str = "(SELECT MIN(a.id) FROM agents a \
     WHERE a.instance_id = i.instance_id) AS agent_id";

/// An agent a verdict is about, as it is now.
struct Reported {
    instance_id: String,
    verdict: Option<Verdict>,
}

/// Keeps the verdicts of agents still lost on the instance asked about, and decides their held
/// stop alerts; answers how many were kept.
async fn keep_verdicts(
    tx: &mut WriteTx,
    report: &CloudReport,
    rules: ReportRules,
    at: Timestamp,
) -> Result<u64> {
    let current = lost_agents(tx, report).await?;
    let kept: Vec<(i64, Verdict, Option<Verdict>)> = report
        .verdicts
        .iter()
        .filter_map(|v| {
            let now = current.get(&v.agent_id)?;
            (now.instance_id == v.instance_id).then_some((v.agent_id, v.verdict, now.verdict))
        })
        .collect();
    let changed: Vec<(i64, Verdict)> = kept
        .iter()
        .filter(|(_, verdict, before)| Some(*verdict) != *before)
        .map(|&(id, verdict, _)| (id, verdict))
        .collect();
    for chunk in changed.chunks(rows_per_statement(2)) {
        let sql = format!(
            "UPDATE agents SET cloud_verdict = v.column2, cloud_verdict_at = $1 \
             FROM (VALUES {}) AS v WHERE agents.id = v.column1 AND agents.lost = 1",
            numbered_from(2, chunk.len(), 2)
        );
        let query = chunk.iter().fold(
            sqlx::query(&sql).bind(at.as_millis()),
            |query, (id, verdict)| query.bind(*id).bind(verdict.as_str()),
        );
        query.execute(tx.conn()).await?;
    }
    let mut newly_running = Vec::new();
    for &(id, verdict) in &changed {
        let released = decide_held_alert(tx.conn(), id, verdict, rules).await?;
        if verdict == Verdict::Running && !released {
            newly_running.push(id);
        }
    }
    alert_running(tx, &newly_running, at).await?;
    Ok(kept.len() as u64)
}

/// The agents of the report's verdicts that are still lost, locked on PostgreSQL (in id order,
/// as every writer of many agents takes them) until the report is kept.
async fn lost_agents(tx: &mut WriteTx, report: &CloudReport) -> Result<HashMap<i64, Reported>> {
    let mut ids: Vec<i64> = report.verdicts.iter().map(|v| v.agent_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let lock = if tx.dialect() == Dialect::Postgres {
        " FOR UPDATE"
    } else {
        ""
    };
    let mut current = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(rows_per_statement(1)) {
        let sql = format!(
            "SELECT id, instance_id, cloud_verdict FROM agents \
             WHERE lost = 1 AND id IN ({}) ORDER BY id{lock}",
            rows::id_list(chunk)
        );
        for row in sqlx::query(&sql).fetch_all(tx.conn()).await? {
            let Some(instance_id) = row.try_get::<Option<String>, _>("instance_id")? else {
                continue;
            };
            current.insert(
                row.try_get("id")?,
                Reported {
                    instance_id,
                    verdict: rows::optional_parsed(&row, "cloud_verdict")?,
                },
            );
        }
    }
    Ok(current)
}

/// What a new verdict does to the agent's stop alert while it is held: `running` sends it at
/// once as `agent_silent_on_running_instance`; a gone instance drops it, or sends it as the
/// informational `agent_instance_gone` with `--alert-on-scale-in`; `unknown` leaves it to
/// wait. Answers whether a held alert was sent on.
async fn decide_held_alert(
    conn: &mut AnyConnection,
    agent: i64,
    verdict: Verdict,
    rules: ReportRules,
) -> Result<bool> {
    let change = match verdict {
        Verdict::Running => Some(AlertKind::AgentSilentOnRunningInstance),
        Verdict::Terminated | Verdict::InstanceStopped if rules.alert_on_scale_in => {
            Some(AlertKind::AgentInstanceGone)
        }
        Verdict::Terminated | Verdict::InstanceStopped => None,
        Verdict::Unknown => return Ok(false),
    };
    let held = "agent_id = $1 AND dispatched = 0 AND held_until IS NOT NULL";
    let sent_on = match change {
        Some(kind) => {
            let sql = format!(
                "UPDATE alerts SET kind = $2, held_until = NULL, detail = $3 || detail \
                 WHERE {held}"
            );
            sqlx::query(&sql)
                .bind(agent)
                .bind(kind.as_str())
                .bind(format!("{}; ", verdict.reason()))
                .execute(conn)
                .await?
                .rows_affected()
                > 0
        }
        None => {
            let sql = format!("UPDATE alerts SET dispatched = 1, held_until = NULL WHERE {held}");
            sqlx::query(&sql).bind(agent).execute(conn).await?;
            false
        }
    };
    Ok(sent_on)
}

/// Alerts the agents found silent on a running instance whose stop alert was not held (it went
/// out before the watch answered, or no watch ran when they stopped).
async fn alert_running(tx: &mut WriteTx, ids: &[i64], at: Timestamp) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE id IN ({})",
        rows::id_list(ids)
    );
    let agents = rows::agents(&sqlx::query(&sql).fetch_all(tx.conn()).await?)?;
    let events: Vec<_> = agents
        .iter()
        .map(|agent| {
            let since = agent
                .last_seen_at
                .map_or_else(|| "never".into(), |t| t.to_string());
            new_event(
                at,
                plura_proto::EventKind::Stopped,
                format!("{}; no heartbeat since {since}", Verdict::Running.reason()),
            )
        })
        .collect();
    let alerts: Vec<NewAlert> = agents
        .iter()
        .zip(&events)
        .map(|(agent, event)| NewAlert {
            kind: AlertKind::AgentSilentOnRunningInstance,
            agent,
            event,
            holder_running: None,
            held_until: None,
        })
        .collect();
    let dialect = tx.dialect();
    alerts::record(tx.conn(), dialect, &alerts).await
}

/// Makes the group's instances the reported ones, keeping whether each was alerted.
async fn keep_group(tx: &mut WriteTx, group: &GroupReport, at: Timestamp) -> Result<()> {
    sqlx::query(
        "INSERT INTO cloud_groups (asg, reported_at) VALUES ($1, $2) \
         ON CONFLICT (asg) DO UPDATE SET reported_at = excluded.reported_at",
    )
    .bind(group.asg.clone())
    .bind(at.as_millis())
    .execute(tx.conn())
    .await?;
    let known: HashSet<String> =
        sqlx::query_scalar::<_, String>("SELECT instance_id FROM cloud_instances WHERE asg = $1")
            .bind(group.asg.clone())
            .fetch_all(tx.conn())
            .await?
            .into_iter()
            .collect();
    let reported: HashSet<&str> = group
        .instances
        .iter()
        .map(|i| i.instance_id.as_str())
        .collect();
    let gone: Vec<&String> = known
        .iter()
        .filter(|id| !reported.contains(id.as_str()))
        .collect();
    for chunk in gone.chunks(rows_per_statement(1)) {
        let sql = format!(
            "DELETE FROM cloud_instances WHERE asg = $1 AND instance_id IN ({})",
            numbered_list(2, chunk.len())
        );
        let query = chunk
            .iter()
            .fold(sqlx::query(&sql).bind(group.asg.clone()), |query, id| {
                query.bind((*id).clone())
            });
        query.execute(tx.conn()).await?;
    }
    let new: Vec<_> = group
        .instances
        .iter()
        .filter(|i| !known.contains(&i.instance_id))
        .collect();
    let dialect = tx.dialect();
    for chunk in new.chunks(rows_per_statement(4)) {
        let sql = format!(
            "INSERT INTO cloud_instances (asg, instance_id, zone, launched_at) VALUES {} \
             ON CONFLICT (asg, instance_id) DO NOTHING",
            placeholders(dialect, chunk.len(), 4)
        );
        let query = chunk.iter().fold(sqlx::query(&sql), |query, i| {
            query
                .bind(group.asg.clone())
                .bind(i.instance_id.clone())
                .bind(i.zone.clone())
                .bind(i.launched_at.as_millis())
        });
        query.execute(tx.conn()).await?;
    }
    Ok(())
}

async fn forget_unreported_groups(conn: &mut AnyConnection, at: Timestamp) -> Result<()> {
    let cutoff = at.minus(FORGET_GROUPS_AFTER).as_millis();
    sqlx::query(
        "DELETE FROM cloud_instances WHERE asg IN \
         (SELECT asg FROM cloud_groups WHERE reported_at < $1)",
    )
    .bind(cutoff)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM cloud_groups WHERE reported_at < $1")
        .bind(cutoff)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Alerts each instance of the reported groups launched before `launched_before` with no
/// running agent, once; an instance covered since may be alerted again.
async fn alert_uncovered(
    tx: &mut WriteTx,
    groups: &[GroupReport],
    launched_before: Timestamp,
    at: Timestamp,
) -> Result<()> {
    if groups.is_empty() {
        return Ok(());
    }
    let names = numbered_list(1, groups.len());
    let bind_names = |sql| {
        groups
            .iter()
            .fold(sqlx::query(sql), |query, g| query.bind(g.asg.clone()))
    };
    let covered_again = format!(
        "UPDATE cloud_instances SET alerted = 0 WHERE asg IN ({names}) AND alerted = 1 \
         AND EXISTS (SELECT 1 FROM agents a WHERE a.instance_id = cloud_instances.instance_id \
         AND a.status = 'running')"
    );
    bind_names(&covered_again).execute(tx.conn()).await?;
    let uncovered = format!(
        "SELECT i.asg, i.instance_id, i.zone, i.launched_at, {AGENT_ON_IT} \
         FROM cloud_instances i WHERE i.asg IN ({names}) AND i.alerted = 0 \
         AND i.launched_at < ${} AND NOT {RUNNING_ON_IT} ORDER BY i.asg, i.instance_id",
        groups.len() + 1
    );
    let rows = bind_names(&uncovered)
        .bind(launched_before.as_millis())
        .fetch_all(tx.conn())
        .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut alerted = Vec::with_capacity(rows.len());
    for row in &rows {
        let instance = AlertedInstance {
            at,
            asg: row.try_get("asg")?,
            instance: UncoveredInstance {
                instance_id: row.try_get("instance_id")?,
                zone: row.try_get("zone")?,
                launched_at: rows::time(row, "launched_at")?,
                agent_id: row.try_get("agent_id")?,
                in_grace: false,
            },
        };
        alerted.push(instance);
    }
    let dialect = tx.dialect();
    for chunk in alerted.chunks(rows_per_statement(4)) {
        let sql = format!(
            "INSERT INTO alerts (at, kind, agent, detail) VALUES {}",
            placeholders(dialect, chunk.len(), 4)
        );
        let mut query = sqlx::query(&sql);
        for instance in chunk {
            let detail = match instance.instance.agent_id {
                Some(id) => format!(
                    "launched at {}; its agent (id {id}) is not running",
                    instance.instance.launched_at
                ),
                None => format!(
                    "launched at {}; no agent has logged in from it",
                    instance.instance.launched_at
                ),
            };
            query = query
                .bind(at.as_millis())
                .bind(AlertKind::InstancesWithoutAgent.as_str())
                .bind(subject_json(instance)?)
                .bind(detail);
        }
        query.execute(tx.conn()).await?;
        let sql = format!(
            "UPDATE cloud_instances SET alerted = 1 WHERE {}",
            (0..chunk.len())
                .map(|n| format!("(asg = ${} AND instance_id = ${})", 2 * n + 1, 2 * n + 2))
                .collect::<Vec<_>>()
                .join(" OR ")
        );
        let query = chunk.iter().fold(sqlx::query(&sql), |query, i| {
            query
                .bind(i.asg.clone())
                .bind(i.instance.instance_id.clone())
        });
        query.execute(tx.conn()).await?;
    }
    Ok(())
}

/// `$from, $from+1, …`: `count` numbered parameters.
fn numbered_list(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `VALUES` rows of `width` parameters numbered from `$from` (SQLite's anonymous `?` cannot
/// follow a numbered one in the same statement).
fn numbered_from(from: usize, rows: usize, width: usize) -> String {
    (0..rows)
        .map(|row| {
            let columns: Vec<String> = (0..width)
                .map(|column| format!("${}", from + row * width + column))
                .collect();
            format!("({})", columns.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}
