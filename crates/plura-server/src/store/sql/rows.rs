//! Between rows and values: the agent columns and how a row becomes an `Agent`, an `Event` or an
//! `AuditRecord`, and the multi-row inserts of history.

use std::str::FromStr;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use plura_proto::{
    Agent, AgentCloud, AuditAction, AuditRecord, CloudLabels, Event, EventKind, Timestamp,
};

use crate::store::{Changed, Dialect, Result, Searchable, StoreError};

pub const AGENT_COLUMNS: &str = "id, ip, hostname, status, enabled, group_name, kind, os, \
     version, machine_id, source_ip, registered_at, last_login_at, last_seen_at, last_takeover_at, \
     instance_id, zone, instance_type, asg, cloud_verdict, cloud_verdict_at";

/// Bound parameters per multi-row statement: far below both backends' limits, and few enough
/// that a statement holds the write lock briefly.
const PARAMS_PER_STATEMENT: usize = 1000;

/// Rows per multi-row statement of `width` parameters a row.
pub const fn rows_per_statement(width: usize) -> usize {
    let rows = PARAMS_PER_STATEMENT / width;
    if rows == 0 { 1 } else { rows }
}

/// A text column holding one of our enums (status, role, event kind).
pub fn parsed<T: FromStr<Err = String>>(row: &AnyRow, column: &str) -> Result<T> {
    row.try_get::<String, _>(column)?
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

/// `1,2,3`: ids for an `IN (…)`, written into the statement as they are. They are integers
/// (the database gave them, or serde read them as such), so nothing can be injected.
pub fn id_list(ids: &[i64]) -> String {
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    ids.join(",")
}

/// A nullable text column holding one of our enums.
pub fn optional_parsed<T: FromStr<Err = String>>(row: &AnyRow, column: &str) -> Result<Option<T>> {
    row.try_get::<Option<String>, _>(column)?
        .map(|text| text.parse())
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

/// A row count, which SQL answers as a (never negative) integer.
pub fn count(row: &AnyRow, column: &str) -> Result<u64> {
    Ok(row.try_get::<i64, _>(column)?.max(0) as u64)
}

pub fn time(row: &AnyRow, column: &str) -> Result<Timestamp> {
    Ok(Timestamp::from_millis(row.try_get(column)?))
}

pub fn optional_time(row: &AnyRow, column: &str) -> Result<Option<Timestamp>> {
    Ok(row
        .try_get::<Option<i64>, _>(column)?
        .map(Timestamp::from_millis))
}

pub fn agent(row: &AnyRow) -> Result<Agent> {
    Ok(Agent {
        id: row.try_get("id")?,
        ip: row.try_get("ip")?,
        hostname: row.try_get("hostname")?,
        status: parsed(row, "status")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        group: row.try_get("group_name")?,
        kind: row.try_get("kind")?,
        os: row.try_get("os")?,
        version: row.try_get("version")?,
        machine_id: row.try_get("machine_id")?,
        source_ip: row.try_get("source_ip")?,
        registered_at: time(row, "registered_at")?,
        last_login_at: optional_time(row, "last_login_at")?,
        last_seen_at: optional_time(row, "last_seen_at")?,
        last_takeover_at: optional_time(row, "last_takeover_at")?,
        cloud: AgentCloud {
            labels: CloudLabels {
                instance_id: row.try_get("instance_id")?,
                zone: row.try_get("zone")?,
                instance_type: row.try_get("instance_type")?,
                asg: row.try_get("asg")?,
            },
            verdict: optional_parsed(row, "cloud_verdict")?,
            verdict_at: optional_time(row, "cloud_verdict_at")?,
        },
    })
}

/// The columns of [`searchable`].
pub const SEARCHABLE_COLUMNS: &str =
    "id, ip, hostname, group_name, os, version, machine_id, registered_at";

pub fn searchable(row: &AnyRow) -> Result<Searchable> {
    Ok(Searchable {
        id: row.try_get("id")?,
        ip: row.try_get("ip")?,
        hostname: row.try_get("hostname")?,
        group: row.try_get("group_name")?,
        os: row.try_get("os")?,
        version: row.try_get("version")?,
        machine_id: row.try_get("machine_id")?,
        registered_at: time(row, "registered_at")?,
    })
}

/// The `id` column of each row.
pub fn ids(rows: &[AnyRow]) -> Result<Vec<i64>> {
    Ok(rows
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<std::result::Result<_, _>>()?)
}

pub fn agents(rows: &[AnyRow]) -> Result<Vec<Agent>> {
    rows.iter().map(agent).collect()
}

pub fn event(row: &AnyRow) -> Result<Event> {
    Ok(Event {
        at: time(row, "at")?,
        event: parsed(row, "event")?,
        detail: row.try_get("detail")?,
    })
}

pub fn audit_record(row: &AnyRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        at: time(row, "at")?,
        actor: row.try_get("actor")?,
        action: parsed(row, "action")?,
        agent_id: row.try_get("agent_id")?,
        ip: row.try_get("ip")?,
        hostname: row.try_get("hostname")?,
        detail: row.try_get("detail")?,
    })
}

/// The `name` and `role` columns of a row.
pub fn name_and_role(row: &AnyRow) -> Result<(String, plura_proto::Role)> {
    Ok((row.try_get("name")?, parsed(row, "role")?))
}

pub async fn select_agent(conn: &mut AnyConnection, id: i64) -> Result<Option<Agent>> {
    let row = sqlx::query(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(agent).transpose()
}

/// Records the events of many changes in a few statements.
pub async fn insert_events(
    conn: &mut AnyConnection,
    dialect: Dialect,
    changes: &[&Changed],
) -> Result<()> {
    let rows: Vec<(i64, &Event)> = changes
        .iter()
        .flat_map(|c| c.events.iter().map(move |e| (c.agent.id, e)))
        .collect();
    for chunk in rows.chunks(rows_per_statement(4)) {
        let values = placeholders(dialect, chunk.len(), 4);
        let sql = format!("INSERT INTO agent_events (agent_id, at, event, detail) VALUES {values}");
        let mut query = sqlx::query(&sql);
        for (agent_id, e) in chunk {
            query = query
                .bind(*agent_id)
                .bind(e.at.as_millis())
                .bind(e.event.as_str())
                .bind(e.detail.clone());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Records who did what (to which agent, if to one) in the audit log, which outlives agents.
pub async fn insert_audit(
    conn: &mut AnyConnection,
    actor: &str,
    action: AuditAction,
    agent: Option<&Agent>,
    at: Timestamp,
    detail: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, agent_id, ip, hostname, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(at.as_millis())
    .bind(actor.to_string())
    .bind(action.as_str())
    .bind(agent.map(|a| a.id))
    .bind(agent.map(|a| a.ip.clone()))
    .bind(agent.map(|a| a.hostname.clone()))
    .bind(detail.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a change that concerns no agent (credentials, settings, webhooks) in the audit log,
/// on the change's own transaction.
pub async fn record(conn: &mut AnyConnection, audit: &crate::store::Audit<'_>) -> Result<()> {
    insert_audit(
        conn,
        audit.by.name,
        audit.action,
        None,
        audit.by.at,
        &audit.detail,
    )
    .await
}

/// `($1, $2), ($3, $4), …` for `rows` rows of `width` values; on SQLite `(?, ?), (?, ?), …`,
/// since SQLite finds each numbered parameter by walking a list of them (binding costs the square
/// of their number) and an anonymous one at once. For statements of these values alone.
pub fn placeholders(dialect: Dialect, rows: usize, width: usize) -> String {
    value_rows(rows, width, dialect == Dialect::Sqlite)
}

fn value_rows(rows: usize, width: usize, anonymous: bool) -> String {
    use std::fmt::Write;
    // Written into one string: a batch of logins builds several of these, each of hundreds of
    // values.
    let mut sql = String::with_capacity(rows * width * 6);
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 1..=width {
            if column > 1 {
                sql.push_str(", ");
            }
            if anonymous {
                sql.push('?');
            } else {
                let _ = write!(sql, "${}", row * width + column);
            }
        }
        sql.push(')');
    }
    sql
}

/// A history event.
pub fn new_event(at: Timestamp, kind: EventKind, detail: impl Into<String>) -> Event {
    Event {
        at,
        event: kind,
        detail: detail.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_rows_in_order() {
        assert_eq!(value_rows(2, 2, false), "($1, $2), ($3, $4)");
        assert_eq!(value_rows(2, 2, true), "(?, ?), (?, ?)");
        assert_eq!(value_rows(3, 1, false), "($1), ($2), ($3)");
        assert_eq!(value_rows(1, 3, false), "($1, $2, $3)");
        assert_eq!(value_rows(0, 3, false), "");
    }
}
