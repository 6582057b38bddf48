//! What `plura-eni watch` reports, kept in one transaction a round: the verdicts on silent
//! agents' instances and what they do to the agents' held stop alerts, the watched groups'
//! instances, and the alerts of instances that stay without an agent.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{AnyConnection, Row};

use plura_proto::{
    AlertKind, AlertedInstance, CloudReport, CloudReportOutcome, Coverage, GroupCoverage,
    GroupInstance, GroupReport, SilentAgent, Timestamp, UncoveredInstance, Verdict,
};

use super::alerts::{self, NewAlert, subject_json};
use super::rows::{self, AGENT_COLUMNS, new_event, placeholders, rows_per_statement};
use super::{SqlStore, WriteTx};
use crate::store::{
    CloudStore, CoverageCounts, Dialect, GroupCounts, ReportRules, Result, SettingStore,
};

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
        judge_coverage(&mut tx, &report.groups, rules.launched_before, at).await?;
        tx.commit(&[]).await?;
        Ok(CloudReportOutcome {
            verdicts_kept,
            groups: report.groups.len() as u64,
        })
    }

    async fn coverage(&self, grace_from: Timestamp, limit: usize) -> Result<Coverage> {
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
                    uncovered_more: 0,
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
            if group.uncovered.len() >= limit {
                group.uncovered_more += 1;
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

    async fn coverage_counts(&self) -> Result<CoverageCounts> {
        let rows =
            sqlx::query("SELECT asg, instances, covered, uncovered FROM cloud_groups ORDER BY asg")
                .fetch_all(&self.pool)
                .await?;
        let groups = rows
            .iter()
            .map(|row| {
                Ok(GroupCounts {
                    asg: row.try_get("asg")?,
                    instances: rows::count(row, "instances")?,
                    covered: rows::count(row, "covered")?,
                    uncovered: rows::count(row, "uncovered")?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(CoverageCounts {
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
    for verdict in Verdict::ALL.iter().copied() {
        let agents: Vec<i64> = changed
            .iter()
            .filter(|(_, v)| *v == verdict)
            .map(|(id, _)| *id)
            .collect();
        for chunk in agents.chunks(rows_per_statement(1)) {
            let released: HashSet<i64> = decide_held_alerts(tx.conn(), chunk, verdict, rules)
                .await?
                .into_iter()
                .collect();
            if verdict == Verdict::Running {
                newly_running.extend(chunk.iter().filter(|id| !released.contains(id)));
            }
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

/// What a new verdict does to the held stop alerts of `agents`: `running` sends them at once as
/// `agent_silent_on_running_instance`; a gone instance drops them, or sends them as the
/// informational `agent_instance_gone` with `--alert-on-scale-in`; `unknown` leaves them to
/// wait. Answers the agents whose held alert was sent on.
async fn decide_held_alerts(
    conn: &mut AnyConnection,
    agents: &[i64],
    verdict: Verdict,
    rules: ReportRules,
) -> Result<Vec<i64>> {
    let change = match verdict {
        Verdict::Running => Some(AlertKind::AgentSilentOnRunningInstance),
        Verdict::Terminated | Verdict::InstanceStopped if rules.alert_on_scale_in => {
            Some(AlertKind::AgentInstanceGone)
        }
        Verdict::Terminated | Verdict::InstanceStopped => None,
        Verdict::Unknown => return Ok(Vec::new()),
    };
    let held = format!(
        "agent_id IN ({}) AND dispatched = 0 AND held_until IS NOT NULL",
        rows::id_list(agents)
    );
    match change {
        Some(kind) => {
            let sql = format!(
                "UPDATE alerts SET kind = $1, held_until = NULL, detail = $2 || detail \
                 WHERE {held} RETURNING agent_id"
            );
            let rows = sqlx::query(&sql)
                .bind(kind.as_str())
                .bind(format!("{}; ", verdict.reason()))
                .fetch_all(conn)
                .await?;
            rows.iter()
                .map(|row| Ok(row.try_get("agent_id")?))
                .collect()
        }
        None => {
            let sql = format!("UPDATE alerts SET dispatched = 1, held_until = NULL WHERE {held}");
            sqlx::query(&sql).execute(conn).await?;
            Ok(Vec::new())
        }
    }
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
    let digest = digest_of(group);
    let before: Option<Option<String>> =
        sqlx::query_scalar("SELECT digest FROM cloud_groups WHERE asg = $1")
            .bind(group.asg.clone())
            .fetch_optional(tx.conn())
            .await?;
    sqlx::query(
        "INSERT INTO cloud_groups (asg, reported_at, digest) VALUES ($1, $2, $3) \
         ON CONFLICT (asg) DO UPDATE SET reported_at = excluded.reported_at, \
         digest = excluded.digest",
    )
    .bind(group.asg.clone())
    .bind(at.as_millis())
    .bind(digest.clone())
    .execute(tx.conn())
    .await?;
    if before.flatten().as_deref() == Some(digest.as_str()) {
        return Ok(());
    }
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

/// What identifies a group's reported instances, whatever order they came in.
fn digest_of(group: &GroupReport) -> String {
    use sha2::{Digest, Sha256};
    let mut instances: Vec<&GroupInstance> = group.instances.iter().collect();
    instances.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    let mut hasher = Sha256::new();
    for i in instances {
        hasher.update(i.instance_id.as_bytes());
        hasher.update([0]);
        hasher.update(i.zone.as_bytes());
        hasher.update([0]);
        hasher.update(i.launched_at.as_millis().to_le_bytes());
    }
    format!("{:x}", hasher.finalize())
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

/// An instance of a reported group whose alert this round changes.
struct Seen {
    asg: String,
    instance: UncoveredInstance,
    /// Its alert was recorded; it is covered now.
    covered_again: bool,
}

/// Alerts each instance of the reported groups launched before `launched_before` with no
/// running agent (once; again only after it was covered in between), and writes each group's
/// counts. Only the instances whose alert changes cross from the database; the counts are
/// summed there.
async fn judge_coverage(
    tx: &mut WriteTx,
    groups: &[GroupReport],
    launched_before: Timestamp,
    at: Timestamp,
) -> Result<()> {
    if groups.is_empty() {
        return Ok(());
    }
    let names = numbered_list(1, groups.len());
    let before = groups.len() + 1;
    let bind = |sql| {
        groups
            .iter()
            .fold(sqlx::query(sql), |query, g| query.bind(g.asg.clone()))
            .bind(launched_before.as_millis())
    };
    let changing = format!(
        "SELECT i.asg, i.instance_id, i.zone, i.launched_at, i.alerted, {AGENT_ON_IT} \
         FROM cloud_instances i WHERE i.asg IN ({names}) \
         AND ((i.alerted = 1 AND {RUNNING_ON_IT}) \
           OR (i.alerted = 0 AND i.launched_at < ${before} AND NOT {RUNNING_ON_IT})) \
         ORDER BY i.asg, i.instance_id"
    );
    let mut seen = Vec::new();
    for row in bind(&changing).fetch_all(tx.conn()).await? {
        seen.push(Seen {
            asg: row.try_get("asg")?,
            instance: UncoveredInstance {
                instance_id: row.try_get("instance_id")?,
                zone: row.try_get("zone")?,
                launched_at: rows::time(&row, "launched_at")?,
                agent_id: row.try_get("agent_id")?,
                in_grace: false,
            },
            covered_again: row.try_get::<i64, _>("alerted")? != 0,
        });
    }
    let (covered_again, newly_uncovered): (Vec<&Seen>, Vec<&Seen>) =
        seen.iter().partition(|i| i.covered_again);
    set_alerted(tx, &covered_again, false).await?;
    alert_instances(tx, &newly_uncovered, at).await?;
    set_alerted(tx, &newly_uncovered, true).await?;
    let counts = format!(
        "SELECT asg, COUNT(*) AS instances, CAST(SUM(covered) AS BIGINT) AS covered, \
         CAST(SUM(CASE WHEN covered = 0 AND launched_at < ${before} THEN 1 ELSE 0 END) \
         AS BIGINT) AS uncovered \
         FROM (SELECT i.asg, i.launched_at, \
               CAST(CASE WHEN {RUNNING_ON_IT} THEN 1 ELSE 0 END AS BIGINT) AS covered \
               FROM cloud_instances i WHERE i.asg IN ({names})) AS x GROUP BY asg"
    );
    let mut counted: HashMap<String, [i64; 3]> = HashMap::new();
    for row in bind(&counts).fetch_all(tx.conn()).await? {
        counted.insert(
            row.try_get("asg")?,
            [
                rows::count(&row, "instances")? as i64,
                rows::count(&row, "covered")? as i64,
                rows::count(&row, "uncovered")? as i64,
            ],
        );
    }
    for group in groups {
        let [instances, covered, uncovered] = counted.get(&group.asg).copied().unwrap_or_default();
        sqlx::query(
            "UPDATE cloud_groups SET instances = $2, covered = $3, uncovered = $4 WHERE asg = $1",
        )
        .bind(group.asg.clone())
        .bind(instances)
        .bind(covered)
        .bind(uncovered)
        .execute(tx.conn())
        .await?;
    }
    Ok(())
}

/// Records an `instances_without_agent` alert for each of `instances`.
async fn alert_instances(tx: &mut WriteTx, instances: &[&Seen], at: Timestamp) -> Result<()> {
    let dialect = tx.dialect();
    for chunk in instances.chunks(rows_per_statement(4)) {
        let sql = format!(
            "INSERT INTO alerts (at, kind, agent, detail) VALUES {}",
            placeholders(dialect, chunk.len(), 4)
        );
        let mut query = sqlx::query(&sql);
        for seen in chunk {
            let instance = &seen.instance;
            let detail = match instance.agent_id {
                Some(id) => format!(
                    "launched at {}; its agent (id {id}) is not running",
                    instance.launched_at
                ),
                None => format!(
                    "launched at {}; no agent has logged in from it",
                    instance.launched_at
                ),
            };
            let subject = AlertedInstance {
                at,
                asg: seen.asg.clone(),
                instance: instance.clone(),
            };
            query = query
                .bind(at.as_millis())
                .bind(AlertKind::InstancesWithoutAgent.as_str())
                .bind(subject_json(&subject)?)
                .bind(detail);
        }
        query.execute(tx.conn()).await?;
    }
    Ok(())
}

/// Marks `instances` alerted, or not.
async fn set_alerted(tx: &mut WriteTx, instances: &[&Seen], alerted: bool) -> Result<()> {
    let dialect = tx.dialect();
    for chunk in instances.chunks(rows_per_statement(2)) {
        let sql = format!(
            "UPDATE cloud_instances SET alerted = {} FROM (VALUES {}) AS v \
             WHERE cloud_instances.asg = v.column1 AND cloud_instances.instance_id = v.column2",
            i64::from(alerted),
            placeholders(dialect, chunk.len(), 2)
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
