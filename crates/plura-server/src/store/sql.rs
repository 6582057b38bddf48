//! The `Store` over sqlx, for SQLite and PostgreSQL alike.
//!
//! The queries stay within the SQL both understand (`$n` parameters, `RETURNING`,
//! `ON CONFLICT`, `UPDATE … FROM (VALUES …)`, integers for times and booleans), so each is written
//! once; `backend.rs` holds the few things that differ.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool, Row, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use plura_proto::{
    Agent, AgentStatus, AuditRecord, Event, EventKind, LoginRequest, PatchAgent, RegisterAgent,
    Role, Summary, Timestamp,
};

use super::{Backend, Changed, ListFilter, LoginOutcome, Result, SortColumn, Store, StoreError};

const AGENT_COLUMNS: &str = "id, ip, hostname, status, enabled, group_name, kind, os, version, \
     machine_id, source_ip, registered_at, last_login_at, last_seen_at";

/// Rows per multi-row statement: far below both backends' limits on bound parameters.
const BATCH_ROWS: usize = 500;

pub struct SqlStore {
    backend: Backend,
    pool: AnyPool,
    /// Taken by every write on SQLite, whose single writer would otherwise make concurrent
    /// transactions wait on each other's locks; PostgreSQL needs no such turn.
    write_turn: Option<Arc<Mutex<()>>>,
}

/// A write transaction, holding the write turn (SQLite) until it ends.
struct WriteTx {
    tx: Transaction<'static, Any>,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl WriteTx {
    fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    async fn commit(self) -> Result<()> {
        Ok(self.tx.commit().await?)
    }
}

impl SqlStore {
    pub async fn open(backend: Backend) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let pool = backend.pool_options().connect(backend.url()).await?;
        for statement in backend.setup_statements() {
            sqlx::query(statement).execute(&pool).await?;
        }
        backend.migrator().run(&pool).await?;
        let write_turn = matches!(backend, Backend::Sqlite { .. }).then(Default::default);
        Ok(Self {
            backend,
            pool,
            write_turn,
        })
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Waits for this process's write turn (SQLite); no wait on PostgreSQL.
    async fn turn(&self) -> Option<OwnedMutexGuard<()>> {
        match &self.write_turn {
            Some(turn) => Some(turn.clone().lock_owned().await),
            None => None,
        }
    }

    async fn begin_write(&self) -> Result<WriteTx> {
        let turn = self.turn().await;
        let tx = self.pool.begin_with(self.backend.begin_write()).await?;
        Ok(WriteTx { tx, _turn: turn })
    }

    /// Runs a single-statement write in its turn.
    async fn write<'q>(&self, query: Query<'q, Any, AnyArguments<'q>>) -> Result<Vec<AnyRow>> {
        let _turn = self.turn().await;
        Ok(query.fetch_all(&self.pool).await?)
    }
}

fn agent_from_row(row: &AnyRow) -> Result<Agent> {
    let status: String = row.try_get("status")?;
    let time = |column: &str| -> Result<Option<Timestamp>> {
        Ok(row
            .try_get::<Option<i64>, _>(column)?
            .map(Timestamp::from_millis))
    };
    Ok(Agent {
        id: row.try_get("id")?,
        ip: row.try_get("ip")?,
        hostname: row.try_get("hostname")?,
        status: status.parse().map_err(StoreError::Corrupt)?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        group: row.try_get("group_name")?,
        kind: row.try_get("kind")?,
        os: row.try_get("os")?,
        version: row.try_get("version")?,
        machine_id: row.try_get("machine_id")?,
        source_ip: row.try_get("source_ip")?,
        registered_at: Timestamp::from_millis(row.try_get("registered_at")?),
        last_login_at: time("last_login_at")?,
        last_seen_at: time("last_seen_at")?,
    })
}

fn agents_from_rows(rows: &[AnyRow]) -> Result<Vec<Agent>> {
    rows.iter().map(agent_from_row).collect()
}

/// The `name` and `role` columns of a row.
fn name_and_role(row: &AnyRow) -> Result<(String, Role)> {
    let role: String = row.try_get("role")?;
    Ok((
        row.try_get("name")?,
        role.parse().map_err(StoreError::Corrupt)?,
    ))
}

/// A key that sorts addresses by value: IPv4 before IPv6, each numerically.
fn ip_sort_key(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => format!("4:{:08x}", u32::from(v4)),
        Ok(IpAddr::V6(v6)) => format!("6:{:032x}", u128::from(v6)),
        Err(_) => format!("9:{ip}"),
    }
}

fn event(at: Timestamp, kind: EventKind, detail: impl Into<String>) -> Event {
    Event {
        at,
        event: kind,
        detail: detail.into(),
    }
}

async fn select_agent(conn: &mut AnyConnection, id: i64) -> Result<Option<Agent>> {
    let row = sqlx::query(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(agent_from_row).transpose()
}

/// Records the same events for many agents in a few statements.
async fn insert_events(conn: &mut AnyConnection, changes: &[Changed]) -> Result<()> {
    let rows: Vec<(i64, &Event)> = changes
        .iter()
        .flat_map(|c| c.events.iter().map(move |e| (c.agent.id, e)))
        .collect();
    for chunk in rows.chunks(BATCH_ROWS) {
        let values = placeholders(chunk.len(), 4);
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

async fn insert_audit(
    conn: &mut AnyConnection,
    actor: &str,
    action: EventKind,
    agent: &Agent,
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
    .bind(agent.id)
    .bind(agent.ip.clone())
    .bind(agent.hostname.clone())
    .bind(detail.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

/// `($1, $2), ($3, $4), …` for `rows` rows of `width` values.
fn placeholders(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A value bound to a list query's `WHERE`.
enum Param {
    Text(String),
    Int(i64),
}

/// The `WHERE` clause of a list filter, numbered from `$1`.
fn where_clause(filter: &ListFilter) -> (String, Vec<Param>) {
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    let mut push = |sql: &str, param: Param| {
        params.push(param);
        conditions.push(sql.replace("$?", &format!("${}", params.len())));
    };
    if let Some(status) = filter.status {
        push("status = $?", Param::Text(status.as_str().into()));
    }
    if let Some(group) = &filter.group {
        push("group_name = $?", Param::Text(group.clone()));
    }
    if let Some(kind) = &filter.kind {
        push("kind = $?", Param::Text(kind.clone()));
    }
    if let Some(os) = &filter.os {
        push("os = $?", Param::Text(os.clone()));
    }
    if let Some(enabled) = filter.enabled {
        push("enabled = $?", Param::Int(enabled.into()));
    }
    if let Some(text) = &filter.text {
        let escaped = text
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        // One lower-cased text per row, matched once, instead of six matches.
        let text = "LOWER(ip || ' ' || hostname || ' ' || COALESCE(group_name, '') || ' ' || os \
                    || ' ' || version || ' ' || COALESCE(machine_id, ''))";
        push(
            &format!("{text} LIKE $? ESCAPE '\\'"),
            Param::Text(format!("%{escaped}%")),
        );
    }
    if conditions.is_empty() {
        (String::new(), params)
    } else {
        (format!("WHERE {}", conditions.join(" AND ")), params)
    }
}

fn bind_params<'q>(
    mut query: Query<'q, Any, AnyArguments<'q>>,
    params: &[Param],
) -> Query<'q, Any, AnyArguments<'q>> {
    for param in params {
        query = match param {
            Param::Text(text) => query.bind(text.clone()),
            Param::Int(int) => query.bind(*int),
        };
    }
    query
}

fn order_by(column: SortColumn, descending: bool) -> String {
    let (column, nullable) = match column {
        SortColumn::Id => ("id", false),
        SortColumn::Ip => ("ip_key", false),
        SortColumn::Hostname => ("hostname", false),
        SortColumn::Status => ("status", false),
        SortColumn::Enabled => ("enabled", false),
        SortColumn::Group => ("group_name", true),
        SortColumn::Kind => ("kind", false),
        SortColumn::Os => ("os", false),
        SortColumn::Version => ("version", false),
        SortColumn::RegisteredAt => ("registered_at", false),
        SortColumn::LastLoginAt => ("last_login_at", true),
        SortColumn::LastSeenAt => ("last_seen_at", true),
    };
    let direction = if descending { "DESC" } else { "ASC" };
    // Ties break by id so pages are stable. Nulls sort first in both backends (SQLite's way;
    // PostgreSQL is told), which keeps a plain `column, id` order that an index can serve.
    let nulls = match (nullable, descending) {
        (true, false) => " NULLS FIRST",
        (true, true) => " NULLS LAST",
        (false, _) => "",
    };
    format!("ORDER BY {column} {direction}{nulls}, id {direction}")
}

#[async_trait]
impl Store for SqlStore {
    async fn login(
        &self,
        login: &LoginRequest,
        source_ip: Option<&str>,
        at: Timestamp,
    ) -> Result<LoginOutcome> {
        let mut tx = self.begin_write().await?;
        let from = source_ip.unwrap_or("an unknown address");
        // A concurrent first login of the same identity on another server can win the insert;
        // the second pass then finds its row.
        for _ in 0..3 {
            let known =
                sqlx::query("SELECT id, machine_id FROM agents WHERE ip = $1 AND hostname = $2")
                    .bind(login.ip.clone())
                    .bind(login.hostname.clone())
                    .fetch_optional(tx.conn())
                    .await?;
            let outcome = match known {
                Some(row) => {
                    let id: i64 = row.try_get("id")?;
                    let old_machine: Option<String> = row.try_get("machine_id")?;
                    let row = sqlx::query(&format!(
                        "UPDATE agents SET status = 'running', machine_id = COALESCE($1, machine_id), \
                         version = $2, os = $3, kind = $4, source_ip = $5, last_login_at = $6, \
                         last_seen_at = $6 WHERE id = $7 RETURNING {AGENT_COLUMNS}"
                    ))
                    .bind(login.machine_id.clone())
                    .bind(login.version.clone())
                    .bind(login.os.clone())
                    .bind(login.kind.clone())
                    .bind(source_ip.map(str::to_string))
                    .bind(at.as_millis())
                    .bind(id)
                    .fetch_one(tx.conn())
                    .await?;
                    let event = match (&old_machine, &login.machine_id) {
                        (Some(old), Some(new)) if old != new => event(
                            at,
                            EventKind::Takeover,
                            format!("machine id {old} -> {new}, from {from}"),
                        ),
                        _ => event(
                            at,
                            EventKind::Login,
                            format!("from {from}, version {}", login.version),
                        ),
                    };
                    Some((row, event, false))
                }
                None => sqlx::query(&format!(
                    "INSERT INTO agents (ip, ip_key, hostname, status, enabled, kind, os, version, \
                     machine_id, source_ip, registered_at, last_login_at, last_seen_at) \
                     VALUES ($1, $2, $3, 'running', 1, $4, $5, $6, $7, $8, $9, $9, $9) \
                     ON CONFLICT (ip, hostname) DO NOTHING RETURNING {AGENT_COLUMNS}"
                ))
                .bind(login.ip.clone())
                .bind(ip_sort_key(&login.ip))
                .bind(login.hostname.clone())
                .bind(login.kind.clone())
                .bind(login.os.clone())
                .bind(login.version.clone())
                .bind(login.machine_id.clone())
                .bind(source_ip.map(str::to_string))
                .bind(at.as_millis())
                .fetch_optional(tx.conn())
                .await?
                .map(|row| {
                    let detail = format!("first login from {from}, version {}", login.version);
                    (row, event(at, EventKind::Registered, detail), true)
                }),
            };
            if let Some((row, event, created)) = outcome {
                let changed = Changed {
                    agent: agent_from_row(&row)?,
                    events: vec![event],
                };
                insert_events(tx.conn(), std::slice::from_ref(&changed)).await?;
                tx.commit().await?;
                return Ok(LoginOutcome { changed, created });
            }
        }
        Err(StoreError::Corrupt(format!(
            "agent {} / {} neither found nor insertable",
            login.ip, login.hostname
        )))
    }

    async fn heartbeat(&self, id: i64, at: Timestamp) -> Result<Option<Changed>> {
        // After a restart every agent comes through here once; the ones still running need no
        // write (the liveness cache flushes their last-seen), so only a read is paid.
        let Some(agent) = self.agent(id).await? else {
            return Ok(None);
        };
        if agent.status == AgentStatus::Running {
            return Ok(Some(Changed {
                agent,
                events: vec![],
            }));
        }
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "UPDATE agents SET status = 'running', last_seen_at = $1 WHERE id = $2 \
             RETURNING {AGENT_COLUMNS}"
        ))
        .bind(at.as_millis())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let changed = Changed {
            agent: agent_from_row(&row)?,
            events: vec![event(
                at,
                EventKind::Resumed,
                format!("heartbeat after {}", agent.status),
            )],
        };
        insert_events(tx.conn(), std::slice::from_ref(&changed)).await?;
        tx.commit().await?;
        Ok(Some(changed))
    }

    async fn logout(&self, id: i64, at: Timestamp) -> Result<Option<Changed>> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "UPDATE agents SET status = 'stopped', last_seen_at = $1 WHERE id = $2 \
             RETURNING {AGENT_COLUMNS}"
        ))
        .bind(at.as_millis())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let changed = Changed {
            agent: agent_from_row(&row)?,
            events: vec![event(at, EventKind::Logout, "graceful shutdown")],
        };
        insert_events(tx.conn(), std::slice::from_ref(&changed)).await?;
        tx.commit().await?;
        Ok(Some(changed))
    }

    async fn flush_last_seen(&self, seen: &[(i64, Timestamp)]) -> Result<Vec<(i64, AgentStatus)>> {
        let mut found = Vec::with_capacity(seen.len());
        for chunk in seen.chunks(BATCH_ROWS) {
            let sql = format!(
                "UPDATE agents SET last_seen_at = v.column2 FROM (VALUES {}) AS v \
                 WHERE agents.id = v.column1 RETURNING agents.id, agents.status",
                placeholders(chunk.len(), 2)
            );
            let mut query = sqlx::query(&sql);
            for (id, at) in chunk {
                query = query.bind(*id).bind(at.as_millis());
            }
            for row in self.write(query).await? {
                let status: String = row.try_get("status")?;
                found.push((
                    row.try_get("id")?,
                    status.parse().map_err(StoreError::Corrupt)?,
                ));
            }
        }
        Ok(found)
    }

    async fn stop_silent(&self, cutoff: Timestamp, at: Timestamp) -> Result<Vec<Changed>> {
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&format!(
            "UPDATE agents SET status = 'stopped' WHERE status = 'running' \
             AND (last_seen_at IS NULL OR last_seen_at < $1) RETURNING {AGENT_COLUMNS}"
        ))
        .bind(cutoff.as_millis())
        .fetch_all(tx.conn())
        .await?;
        let changes = agents_from_rows(&rows)?
            .into_iter()
            .map(|agent| {
                let since = agent.last_seen_at.map_or("never".into(), |t| t.to_string());
                let detail = format!("no heartbeat since {since}");
                Changed {
                    agent,
                    events: vec![event(at, EventKind::Stopped, detail)],
                }
            })
            .collect::<Vec<_>>();
        insert_events(tx.conn(), &changes).await?;
        tx.commit().await?;
        Ok(changes)
    }

    async fn prune_stopped(&self, cutoff: Timestamp, at: Timestamp) -> Result<Vec<Changed>> {
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&format!(
            "DELETE FROM agents WHERE status = 'stopped' AND last_seen_at < $1 \
             RETURNING {AGENT_COLUMNS}"
        ))
        .bind(cutoff.as_millis())
        .fetch_all(tx.conn())
        .await?;
        let mut changes = Vec::with_capacity(rows.len());
        for agent in agents_from_rows(&rows)? {
            let since = agent.last_seen_at.map_or("never".into(), |t| t.to_string());
            let detail = format!("stopped since {since}");
            sqlx::query("DELETE FROM agent_events WHERE agent_id = $1")
                .bind(agent.id)
                .execute(tx.conn())
                .await?;
            insert_audit(tx.conn(), "system", EventKind::Pruned, &agent, at, &detail).await?;
            changes.push(Changed {
                agent,
                events: vec![event(at, EventKind::Pruned, detail)],
            });
        }
        tx.commit().await?;
        Ok(changes)
    }

    async fn delete_events_before(&self, cutoff: Timestamp) -> Result<u64> {
        // In slices, so a first run over years of history does not hold the writer for long.
        let mut deleted = 0;
        loop {
            let _turn = self.turn().await;
            let slice = sqlx::query(
                "DELETE FROM agent_events WHERE id IN \
                 (SELECT id FROM agent_events WHERE at < $1 LIMIT 10000)",
            )
            .bind(cutoff.as_millis())
            .execute(&self.pool)
            .await?
            .rows_affected();
            deleted += slice;
            if slice == 0 {
                return Ok(deleted);
            }
        }
    }

    async fn agent(&self, id: i64) -> Result<Option<Agent>> {
        let mut conn = self.pool.acquire().await?;
        select_agent(&mut conn, id).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<(u64, Vec<Agent>)> {
        let (where_sql, params) = where_clause(filter);
        let count_sql = format!("SELECT COUNT(*) AS n FROM agents {where_sql}");
        let total: i64 = bind_params(sqlx::query(&count_sql), &params)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        let page = match filter.limit {
            Some(limit) => format!("LIMIT {limit} OFFSET {}", filter.offset),
            None => String::new(),
        };
        let list_sql = format!(
            "SELECT {AGENT_COLUMNS} FROM agents {where_sql} {} {page}",
            order_by(filter.sort, filter.descending)
        );
        let rows = bind_params(sqlx::query(&list_sql), &params)
            .fetch_all(&self.pool)
            .await?;
        Ok((total.max(0) as u64, agents_from_rows(&rows)?))
    }

    async fn events(&self, id: i64, limit: u32) -> Result<Option<Vec<Event>>> {
        let mut conn = self.pool.acquire().await?;
        if select_agent(&mut conn, id).await?.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT at, event, detail FROM agent_events WHERE agent_id = $1 \
             ORDER BY id DESC LIMIT $2",
        )
        .bind(id)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get("event")?;
                Ok(event(
                    Timestamp::from_millis(row.try_get("at")?),
                    kind.parse().map_err(StoreError::Corrupt)?,
                    row.try_get::<String, _>("detail")?,
                ))
            })
            .collect::<Result<_>>()
            .map(Some)
    }

    async fn register(&self, agent: &RegisterAgent, actor: &str, at: Timestamp) -> Result<Changed> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO agents (ip, ip_key, hostname, status, enabled, group_name, kind, os, \
             registered_at) VALUES ($1, $2, $3, 'unknown', 1, $4, $5, $6, $7) \
             ON CONFLICT (ip, hostname) DO NOTHING RETURNING {AGENT_COLUMNS}"
        ))
        .bind(agent.ip.clone())
        .bind(ip_sort_key(&agent.ip))
        .bind(agent.hostname.clone())
        .bind(agent.group.clone())
        .bind(agent.kind.clone())
        .bind(agent.os.clone())
        .bind(at.as_millis())
        .fetch_optional(tx.conn())
        .await?;
        let Some(row) = row else {
            return Err(StoreError::AlreadyRegistered {
                ip: agent.ip.clone(),
                hostname: agent.hostname.clone(),
            });
        };
        let changed = Changed {
            agent: agent_from_row(&row)?,
            events: vec![event(at, EventKind::Registered, format!("by {actor}"))],
        };
        insert_events(tx.conn(), std::slice::from_ref(&changed)).await?;
        tx.commit().await?;
        Ok(changed)
    }

    async fn patch(
        &self,
        id: i64,
        patch: &PatchAgent,
        actor: &str,
        at: Timestamp,
    ) -> Result<Option<Changed>> {
        let mut tx = self.begin_write().await?;
        let Some(mut agent) = select_agent(tx.conn(), id).await? else {
            return Ok(None);
        };
        let mut events = Vec::new();
        if let Some(enabled) = patch.enabled.filter(|e| *e != agent.enabled) {
            let kind = if enabled {
                EventKind::Enabled
            } else {
                EventKind::Disabled
            };
            events.push(event(at, kind, format!("by {actor}")));
            agent.enabled = enabled;
        }
        if let Some(group) = patch.group.as_ref().filter(|g| **g != agent.group) {
            let name = |g: &Option<String>| g.clone().unwrap_or_else(|| "(none)".into());
            let detail = format!("{} -> {} by {actor}", name(&agent.group), name(group));
            events.push(event(at, EventKind::GroupChanged, detail));
            agent.group = group.clone();
        }
        if !events.is_empty() {
            sqlx::query("UPDATE agents SET enabled = $1, group_name = $2 WHERE id = $3")
                .bind(i64::from(agent.enabled))
                .bind(agent.group.clone())
                .bind(id)
                .execute(tx.conn())
                .await?;
        }
        let changed = Changed { agent, events };
        insert_events(tx.conn(), std::slice::from_ref(&changed)).await?;
        tx.commit().await?;
        Ok(Some(changed))
    }

    async fn delete(&self, id: i64, actor: &str, at: Timestamp) -> Result<Option<Changed>> {
        let mut tx = self.begin_write().await?;
        let Some(agent) = select_agent(tx.conn(), id).await? else {
            return Ok(None);
        };
        sqlx::query("DELETE FROM agent_events WHERE agent_id = $1")
            .bind(id)
            .execute(tx.conn())
            .await?;
        sqlx::query("DELETE FROM agents WHERE id = $1")
            .bind(id)
            .execute(tx.conn())
            .await?;
        let detail = format!("was {}", agent.status);
        insert_audit(tx.conn(), actor, EventKind::Deleted, &agent, at, &detail).await?;
        tx.commit().await?;
        Ok(Some(Changed {
            agent,
            events: vec![event(at, EventKind::Deleted, format!("by {actor}"))],
        }))
    }

    async fn summary(&self) -> Result<Summary> {
        let mut summary = Summary::default();
        let rows = sqlx::query(
            "SELECT status, enabled, COUNT(*) AS n FROM agents GROUP BY status, enabled",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let n = row.try_get::<i64, _>("n")?.max(0) as u64;
            let status: String = row.try_get("status")?;
            summary.registered += n;
            match status.parse().map_err(StoreError::Corrupt)? {
                AgentStatus::Running => summary.running += n,
                AgentStatus::Stopped => summary.stopped += n,
                AgentStatus::Unknown => summary.unknown += n,
            }
            if row.try_get::<i64, _>("enabled")? != 0 {
                summary.enabled += n;
            } else {
                summary.disabled += n;
            }
        }
        for (column, counts) in [
            ("kind", &mut summary.by_kind),
            ("os", &mut summary.by_os),
            ("group_name", &mut summary.by_group),
        ] {
            let sql = format!("SELECT {column} AS v, COUNT(*) AS n FROM agents GROUP BY {column}");
            for row in sqlx::query(&sql).fetch_all(&self.pool).await? {
                let n = row.try_get::<i64, _>("n")?.max(0) as u64;
                if let Some(value) = row.try_get::<Option<String>, _>("v")? {
                    counts.insert(value, n);
                }
            }
        }
        Ok(summary)
    }

    async fn audit(&self, limit: u32) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT at, actor, action, agent_id, ip, hostname, detail FROM audit_log \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let action: String = row.try_get("action")?;
                Ok(AuditRecord {
                    at: Timestamp::from_millis(row.try_get("at")?),
                    actor: row.try_get("actor")?,
                    action: action.parse().map_err(StoreError::Corrupt)?,
                    agent_id: row.try_get("agent_id")?,
                    ip: row.try_get("ip")?,
                    hostname: row.try_get("hostname")?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect()
    }

    async fn setting(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    async fn init_setting(&self, key: &str, value: &str) -> Result<String> {
        let query = sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key.to_string())
        .bind(value.to_string());
        self.write(query).await?;
        self.setting(key)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("setting {key} vanished")))
    }

    async fn put_setting(&self, key: &str, value: &str) -> Result<()> {
        let query = sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key.to_string())
        .bind(value.to_string());
        self.write(query).await?;
        Ok(())
    }

    async fn add_api_token(
        &self,
        name: &str,
        role: Role,
        hash: &str,
        at: Timestamp,
        expires_at: Option<Timestamp>,
    ) -> Result<()> {
        let query = sqlx::query(
            "INSERT INTO api_tokens (name, role, token_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(name.to_string())
        .bind(role.as_str())
        .bind(hash.to_string())
        .bind(at.as_millis())
        .bind(expires_at.map(Timestamp::as_millis));
        self.write(query).await?;
        Ok(())
    }

    async fn api_token(&self, hash: &str, now: Timestamp) -> Result<Option<(String, Role)>> {
        let row = sqlx::query(
            "SELECT name, role FROM api_tokens WHERE token_hash = $1 \
             AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(hash.to_string())
        .bind(now.as_millis())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(name_and_role).transpose()
    }

    async fn remove_api_token(&self, hash: &str) -> Result<bool> {
        let query = sqlx::query("DELETE FROM api_tokens WHERE token_hash = $1 RETURNING id")
            .bind(hash.to_string());
        Ok(!self.write(query).await?.is_empty())
    }

    async fn add_user(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
        at: Timestamp,
    ) -> Result<()> {
        let query = sqlx::query(
            "INSERT INTO users (name, role, password_hash, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(name.to_string())
        .bind(role.as_str())
        .bind(password_hash.to_string())
        .bind(at.as_millis());
        if self.write(query).await?.is_empty() {
            return Err(StoreError::UserExists(name.to_string()));
        }
        Ok(())
    }

    async fn user(&self, name: &str) -> Result<Option<(String, Role)>> {
        let row = sqlx::query("SELECT password_hash, role FROM users WHERE name = $1")
            .bind(name.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            let role: String = row.try_get("role")?;
            Ok((
                row.try_get("password_hash")?,
                role.parse().map_err(StoreError::Corrupt)?,
            ))
        })
        .transpose()
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_keys_sort_numerically() {
        let mut ips = ["10.0.0.10", "10.0.0.9", "::1", "9.255.255.255"];
        ips.sort_by_key(|ip| ip_sort_key(ip));
        assert_eq!(ips, ["9.255.255.255", "10.0.0.9", "10.0.0.10", "::1"]);
    }

    #[test]
    fn placeholders_number_rows_in_order() {
        assert_eq!(placeholders(2, 2), "($1, $2), ($3, $4)");
    }

    #[test]
    fn search_text_is_matched_literally() {
        let filter = ListFilter {
            status: Some(AgentStatus::Running),
            text: Some("WAF_1%".into()),
            ..ListFilter::default()
        };
        let (sql, params) = where_clause(&filter);
        assert!(
            sql.starts_with("WHERE status = $1 AND LOWER(ip || ' ' || hostname"),
            "{sql}"
        );
        assert!(sql.ends_with("LIKE $2 ESCAPE '\\'"), "{sql}");
        assert!(matches!(&params[1], Param::Text(t) if t == "%waf\\_1\\%%"));
    }
}
