//! The agents: login, heartbeat and logout, the liveness sweeps, the operators' changes, and the
//! list. Each change ends in `WriteTx::commit`, which records its history.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};

use plura_proto::{
    Agent, AgentStatus, AlertKind, AuditAction, EventKind, PatchAgent, RegisterAgent, Summary,
    Timestamp,
};

use super::alerts::{self, NewAlert};
use super::filter::{Selection, bind_params, ip_sort_key, order_by, selection};
use super::login::bind_cloud;
use super::rows::{self, AGENT_COLUMNS, new_event, rows_per_statement};
use super::{Backend, SqlStore};
use crate::credentials::SYSTEM;
use crate::secret::constant_time_eq;
use crate::store::{
    AgentStore, Changed, Dialect, Imported, KeyedCall, LastSeen, ListFilter, Listed, Login,
    LoginOutcome, Result, SEARCH_COUNT_LIMIT, SortColumn, StoreError,
};

/// Rows an export reads with one query.
const EXPORT_CHUNK: usize = 500;

/// From this offset on, a page is read by a deferred join.
const DEFERRED_JOIN_OFFSET: u64 = 1000;

/// The page `filter` asks for, of the agents `ids` (each an integer the database gave, so written
/// into the statement as it is).
async fn page_of(pool: &AnyPool, ids: &[i64], filter: &ListFilter) -> Result<Vec<Agent>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    let page = match filter.limit {
        Some(limit) => format!("LIMIT {limit} OFFSET {}", filter.offset),
        None => String::new(),
    };
    let sql = format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE id IN ({}) {} {page}",
        ids.join(","),
        order_by(filter.sort, filter.descending)
    );
    rows::agents(&sqlx::query(&sql).fetch_all(pool).await?)
}

/// Sets `status` (and last-seen) of one agent; `None` when there is no such agent.
async fn set_status(
    conn: &mut AnyConnection,
    id: i64,
    status: AgentStatus,
    at: Timestamp,
) -> Result<Option<Agent>> {
    let row = sqlx::query(&format!(
        "UPDATE agents SET status = $1, last_seen_at = $2, lost = 0 WHERE id = $3 \
         RETURNING {AGENT_COLUMNS}"
    ))
    .bind(status.as_str())
    .bind(at.as_millis())
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(rows::agent).transpose()
}

/// Agent `id`, if `key_hash` is the hash of its current key.
async fn keyed_agent(
    conn: &mut AnyConnection,
    id: i64,
    key_hash: &str,
) -> Result<KeyedCall<Agent>> {
    let row = sqlx::query(&format!(
        "SELECT {AGENT_COLUMNS}, key_hash FROM agents WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(match keyed(row, key_hash)?.done() {
        Ok(row) => KeyedCall::Done(rows::agent(&row)?),
        Err(refused) => refused,
    })
}

/// The row of an agent, if there is one and `key_hash` is of its current key.
fn keyed(row: Option<AnyRow>, key_hash: &str) -> Result<KeyedCall<AnyRow>> {
    let Some(row) = row else {
        return Ok(KeyedCall::NoAgent);
    };
    let stored: Option<String> = row.try_get("key_hash")?;
    if !stored.is_some_and(|stored| constant_time_eq(&stored, key_hash)) {
        return Ok(KeyedCall::WrongKey);
    }
    Ok(KeyedCall::Done(row))
}

/// Rows per statement of a bulk import: 19 parameters each, under SQLite's limit of 32,766.
const IMPORT_ROWS_PER_STATEMENT: usize = 1_000;

/// The (dimension, value) of `agent_counts` whose sum is how many agents `filter` matches: every
/// status (`None` value) for no filter, or the one counted column it filters on.
fn counted_total(filter: &ListFilter) -> Option<(&'static str, Option<String>)> {
    let ListFilter {
        status,
        group,
        kind,
        os,
        enabled,
        zone: None,
        asg: None,
        source_differs: false,
        text: None,
        ..
    } = filter
    else {
        return None;
    };
    // '' counts the agents with no group, which `group_name = ''` does not match.
    if group.as_deref() == Some("") {
        return None;
    }
    let mut counted = [
        status.map(|s| ("status", s.as_str().to_string())),
        group.clone().map(|g| ("group", g)),
        kind.clone().map(|k| ("kind", k)),
        os.clone().map(|o| ("os", o)),
        enabled.map(|e| ("enabled", if e { "1" } else { "0" }.to_string())),
    ]
    .into_iter()
    .flatten();
    match (counted.next(), counted.next()) {
        (None, _) => Some(("status", None)),
        (Some((dimension, value)), None) => Some((dimension, Some(value))),
        (Some(_), Some(_)) => None,
    }
}

fn since(agent: &Agent) -> String {
    agent
        .last_seen_at
        .map_or_else(|| "never".into(), |t| t.to_string())
}

/// Matches of a search checked against its other conditions at once, at first; more each time.
const FIRST_CHECK: usize = 1_024;
const LARGEST_CHECK: usize = 65_536;

impl SqlStore {
    /// The agents a search matches, found in the agent index, as many as its count and page
    /// need, in id order (descending when the page is sorted so); `None` while there is no
    /// index loaded.
    async fn indexed_matches(&self, filter: &ListFilter) -> Result<Option<Vec<i64>>> {
        let index = &self.agent_index;
        let (Some(text), Some(limit)) = (&filter.text, filter.limit) else {
            return Ok(None);
        };
        let by_id = filter.sort == SortColumn::Id;
        let counted = SEARCH_COUNT_LIMIT as usize + 1;
        let wanted = if by_id {
            counted.max((filter.offset as usize).saturating_add(limit as usize))
        } else {
            counted
        };
        let descending = by_id && filter.descending;
        let others = selection(&ListFilter {
            text: None,
            ..filter.clone()
        });
        let mut matched = Vec::new();
        let (mut cursor, mut chunk) = (None, FIRST_CHECK);
        loop {
            let asked = if others.is_conditioned() {
                chunk
            } else {
                wanted - matched.len()
            };
            // A scan of a million agents takes milliseconds: off the request threads. One that
            // fails leaves the search to the database.
            let scan = {
                let (index, text) = (index.clone(), text.clone());
                tokio::task::spawn_blocking(move || {
                    index.matching(&text, cursor, descending, asked)
                })
            };
            let Some(found) = scan.await.ok().flatten() else {
                return Ok(None);
            };
            let exhausted = found.len() < asked;
            cursor = found.last().copied().or(cursor);
            if others.is_conditioned() && !found.is_empty() {
                let ids: Vec<String> = found.iter().map(i64::to_string).collect();
                let sql = format!(
                    "SELECT id {} {}",
                    others.and(&format!("id IN ({})", ids.join(","))),
                    order_by(SortColumn::Id, descending)
                );
                let rows = bind_params(sqlx::query(&sql), &others.params)
                    .fetch_all(&self.pool)
                    .await?;
                matched.extend(rows::ids(&rows)?);
            } else {
                matched.extend(found);
            }
            if matched.len() >= wanted || exhausted {
                break;
            }
            chunk = (chunk * 4).min(LARGEST_CHECK);
        }
        matched.truncate(wanted);
        Ok(Some(matched))
    }

    /// A search reads its matches once: as many as its count and page need from the agent
    /// index, or up to the count limit from the database (a scan, while the index loads). Under
    /// the limit, the page is picked from them; over it, the count stops there, and the page is
    /// read as any other unless it is among the matches already read.
    async fn search(&self, filter: &ListFilter, selected: &Selection) -> Result<Listed> {
        let (matched, in_page_order) = match self.indexed_matches(filter).await? {
            Some(ids) => (ids, filter.sort == SortColumn::Id),
            None => {
                let capped = format!(
                    "SELECT id {} LIMIT {}",
                    selected.from_where,
                    SEARCH_COUNT_LIMIT + 1
                );
                let rows = bind_params(sqlx::query(&capped), &selected.params)
                    .fetch_all(&self.pool)
                    .await?;
                (rows::ids(&rows)?, false)
            }
        };
        if matched.len() as u64 <= SEARCH_COUNT_LIMIT {
            return Ok(Listed {
                total: matched.len() as u64,
                exact: true,
                agents: page_of(&self.pool, &matched, filter).await?,
            });
        }
        let over_the_limit = (SEARCH_COUNT_LIMIT, false);
        let (true, Some(limit)) = (in_page_order, filter.limit) else {
            return self.page(filter, selected, over_the_limit).await;
        };
        let start = (filter.offset as usize).min(matched.len());
        let end = (start + limit as usize).min(matched.len());
        let page = ListFilter {
            offset: 0,
            ..filter.clone()
        };
        Ok(Listed {
            total: SEARCH_COUNT_LIMIT,
            exact: false,
            agents: page_of(&self.pool, &matched[start..end], &page).await?,
        })
    }

    /// The page `filter` asks for of the agents `selected`, with their count.
    async fn page(
        &self,
        filter: &ListFilter,
        selected: &Selection,
        (total, exact): (u64, bool),
    ) -> Result<Listed> {
        let from_where = &selected.from_where;
        let order = order_by(filter.sort, filter.descending);
        let list_sql = match filter.limit {
            // Deep pages skip their offset over ids alone (an index), and read only the rows
            // they show.
            Some(limit) if filter.offset >= DEFERRED_JOIN_OFFSET => format!(
                "SELECT {AGENT_COLUMNS} FROM agents WHERE id IN (SELECT id {from_where} {order} \
                 LIMIT {limit} OFFSET {}) {}",
                filter.offset,
                order_by(filter.sort, filter.descending),
            ),
            Some(limit) => format!(
                "SELECT {AGENT_COLUMNS} {from_where} {order} LIMIT {limit} OFFSET {}",
                filter.offset
            ),
            None => format!("SELECT {AGENT_COLUMNS} {from_where} {order}"),
        };
        let listed = bind_params(sqlx::query(&list_sql), &selected.params)
            .fetch_all(&self.pool)
            .await?;
        Ok(Listed {
            total,
            exact,
            agents: rows::agents(&listed)?,
        })
    }
}

#[async_trait]
impl AgentStore for SqlStore {
    async fn login(&self, login: Login) -> Result<LoginOutcome> {
        super::group_commit::login(self, login).await
    }

    async fn is_registered(&self, ip: &str, hostname: &str) -> Result<bool> {
        if let Some(known) = self.agent_index.registered(ip, hostname) {
            return Ok(known);
        }
        let row = sqlx::query("SELECT 1 AS found FROM agents WHERE ip = $1 AND hostname = $2")
            .bind(ip.to_string())
            .bind(hostname.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn agent_count(&self) -> Result<u64> {
        if let Some(agents) = self.agent_index.agents() {
            return Ok(agents as u64);
        }
        let row = sqlx::query("SELECT count(*) AS agents FROM agents")
            .fetch_one(&self.pool)
            .await?;
        rows::count(&row, "agents")
    }

    async fn heartbeat(
        &self,
        id: i64,
        key_hash: &str,
        at: Timestamp,
    ) -> Result<KeyedCall<Option<Changed>>> {
        // After a restart every agent comes through here once; the ones still running need no
        // write (the liveness cache flushes their last-seen), so only one narrow read is paid.
        let row = sqlx::query("SELECT status, key_hash FROM agents WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let status: AgentStatus = match keyed(row, key_hash)?.done() {
            Ok(row) => rows::parsed(&row, "status")?,
            Err(refused) => return Ok(refused),
        };
        if status == AgentStatus::Running {
            return Ok(KeyedCall::Done(None));
        }
        let mut tx = self.begin_write().await?;
        let was_lost = sqlx::query("UPDATE agents SET lost = 0 WHERE id = $1 AND lost = 1")
            .bind(id)
            .execute(tx.conn())
            .await?
            .rows_affected()
            > 0;
        let Some(resumed) = set_status(tx.conn(), id, AgentStatus::Running, at).await? else {
            return Ok(KeyedCall::NoAgent);
        };
        let detail = format!("heartbeat after {status}");
        let changed = Changed {
            agent: resumed,
            events: vec![new_event(at, EventKind::Resumed, detail)],
        };
        if was_lost {
            let back = NewAlert::of(AlertKind::AgentBack, &changed);
            let dialect = tx.dialect();
            alerts::record(tx.conn(), dialect, &[back]).await?;
        }
        tx.commit(std::slice::from_ref(&changed)).await?;
        Ok(KeyedCall::Done(Some(changed)))
    }

    async fn logout(&self, id: i64, key_hash: &str, at: Timestamp) -> Result<KeyedCall<Changed>> {
        let mut tx = self.begin_write().await?;
        if let Err(refused) = keyed_agent(tx.conn(), id, key_hash).await?.done() {
            return Ok(refused);
        }
        let Some(agent) = set_status(tx.conn(), id, AgentStatus::Stopped, at).await? else {
            return Ok(KeyedCall::NoAgent);
        };
        // The key ends with the goodbye: whoever holds it now (the agent's next start, or
        // someone who copied it) must log in again.
        sqlx::query("UPDATE agents SET key_hash = NULL WHERE id = $1")
            .bind(id)
            .execute(tx.conn())
            .await?;
        let changed = Changed {
            agent,
            events: vec![new_event(at, EventKind::Logout, "graceful shutdown")],
        };
        tx.commit(std::slice::from_ref(&changed)).await?;
        Ok(KeyedCall::Done(changed))
    }

    async fn key_hash(&self, id: i64) -> Result<Option<Option<String>>> {
        let row = sqlx::query("SELECT key_hash FROM agents WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("key_hash")).transpose()?)
    }

    async fn running_keys(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, String, Option<Timestamp>)>> {
        let rows = sqlx::query(
            "SELECT id, key_hash, last_seen_at FROM agents WHERE id > $1 \
             AND status = 'running' AND key_hash IS NOT NULL ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let seen: Option<i64> = row.try_get("last_seen_at")?;
                Ok((
                    row.try_get("id")?,
                    row.try_get("key_hash")?,
                    seen.map(Timestamp::from_millis),
                ))
            })
            .collect()
    }

    async fn flush_last_seen(&self, seen: &[LastSeen]) -> Result<Vec<i64>> {
        let mut stale = Vec::new();
        // One transaction, so a flush of many agents pays one disk flush, not one per statement.
        // Only the rows not written come back: each row returned crosses from the database's
        // thread to the server's, and nearly all are written.
        let mut tx = self.begin_write().await?;
        for chunk in seen.chunks(rows_per_statement(3)) {
            let values = rows::placeholders(tx.dialect(), chunk.len(), 3);
            let bind = |sql| {
                chunk.iter().fold(sqlx::query(sql), |query, s| {
                    query.bind(s.id).bind(s.at.as_millis()).bind(&s.key_hash)
                })
            };
            let update = format!(
                "UPDATE agents SET last_seen_at = v.column2 FROM (VALUES {values}) AS v \
                 WHERE agents.id = v.column1 AND agents.status = 'running' \
                 AND agents.key_hash = v.column3"
            );
            let written = bind(&update).execute(tx.conn()).await?.rows_affected();
            if written == chunk.len() as u64 {
                continue;
            }
            let not_written = format!(
                "SELECT v.column1 AS id FROM (VALUES {values}) AS v WHERE NOT EXISTS \
                 (SELECT 1 FROM agents WHERE agents.id = v.column1 \
                 AND agents.status = 'running' AND agents.key_hash = v.column3)"
            );
            for row in bind(&not_written).fetch_all(tx.conn()).await? {
                stale.push(row.try_get("id")?);
            }
        }
        tx.commit(&[]).await?;
        Ok(stale)
    }

    async fn stop_silent(&self, cutoff: Timestamp, at: Timestamp) -> Result<Vec<Changed>> {
        let mut tx = self.begin_write().await?;
        let stopped = sqlx::query(&stop_silent_statement(tx.dialect()))
            .bind(cutoff.as_millis())
            .fetch_all(tx.conn())
            .await?;
        let changes: Vec<Changed> = rows::agents(&stopped)?
            .into_iter()
            .map(|agent| {
                let detail = format!("no heartbeat since {}", since(&agent));
                Changed {
                    agent,
                    events: vec![new_event(at, EventKind::Stopped, detail)],
                }
            })
            .collect();
        let stops: Vec<NewAlert> = changes
            .iter()
            .map(|c| NewAlert::of(AlertKind::AgentStopped, c))
            .collect();
        let dialect = tx.dialect();
        alerts::record(tx.conn(), dialect, &stops).await?;
        tx.commit(&changes).await?;
        Ok(changes)
    }

    async fn prune_stopped(&self, cutoff: Timestamp, at: Timestamp) -> Result<Vec<Changed>> {
        let mut tx = self.begin_write().await?;
        // Their history goes with them (ON DELETE CASCADE); the audit log keeps a record.
        let (with, chosen) =
            chosen_in_id_order(tx.dialect(), "status = 'stopped' AND last_seen_at < $1");
        let pruned = sqlx::query(&format!(
            "{with}DELETE FROM agents WHERE {chosen} RETURNING {AGENT_COLUMNS}"
        ))
        .bind(cutoff.as_millis())
        .fetch_all(tx.conn())
        .await?;
        let mut changes = Vec::with_capacity(pruned.len());
        for agent in rows::agents(&pruned)? {
            let detail = format!("stopped since {}", since(&agent));
            let pruned = AuditAction::Pruned;
            rows::insert_audit(tx.conn(), SYSTEM, pruned, Some(&agent), at, &detail).await?;
            changes.push(Changed {
                agent,
                events: vec![new_event(at, EventKind::Pruned, detail)],
            });
        }
        tx.commit(&changes).await?;
        Ok(changes)
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
            agent: rows::agent(&row)?,
            events: vec![new_event(at, EventKind::Registered, format!("by {actor}"))],
        };
        let registered = AuditAction::Registered;
        rows::insert_audit(tx.conn(), actor, registered, Some(&changed.agent), at, "").await?;
        tx.commit(std::slice::from_ref(&changed)).await?;
        Ok(changed)
    }

    async fn import(&self, agents: &[Imported]) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let mut imported = 0;
        // Statements as large as the backends allow: the transaction holds the write lock
        // throughout anyway, and SQLite's search index writes itself out once per statement.
        for chunk in agents.chunks(IMPORT_ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO agents (ip, ip_key, hostname, status, enabled, group_name, kind, os, \
                 version, machine_id, source_ip, registered_at, last_login_at, last_seen_at, \
                 key_hash, instance_id, zone, instance_type, asg) VALUES {} \
                 ON CONFLICT (ip, hostname) DO NOTHING",
                rows::placeholders(tx.dialect(), chunk.len(), 19)
            );
            let mut query = sqlx::query(&sql);
            for Imported { agent, key_hash } in chunk {
                query = query
                    .bind(agent.ip.clone())
                    .bind(ip_sort_key(&agent.ip))
                    .bind(agent.hostname.clone())
                    .bind(agent.status.as_str())
                    .bind(i64::from(agent.enabled))
                    .bind(agent.group.clone())
                    .bind(agent.kind.clone())
                    .bind(agent.os.clone())
                    .bind(agent.version.clone())
                    .bind(agent.machine_id.clone())
                    .bind(agent.source_ip.clone())
                    .bind(agent.registered_at.as_millis())
                    .bind(agent.last_login_at.map(Timestamp::as_millis))
                    .bind(agent.last_seen_at.map(Timestamp::as_millis))
                    .bind(key_hash.clone());
                query = bind_cloud(query, &agent.cloud);
            }
            imported += query.execute(tx.conn()).await?.rows_affected();
        }
        tx.commit_bulk(&self.pool).await?;
        Ok(imported)
    }

    async fn loaded(&self) -> Result<()> {
        if let Backend::Postgres { .. } = self.backend {
            sqlx::query("VACUUM ANALYZE agents")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    async fn patch(
        &self,
        id: i64,
        patch: &PatchAgent,
        actor: &str,
        at: Timestamp,
    ) -> Result<Option<Changed>> {
        let mut tx = self.begin_write().await?;
        let Some(mut agent) = rows::select_agent(tx.conn(), id).await? else {
            return Ok(None);
        };
        let mut events = Vec::new();
        if let Some(enabled) = patch.enabled.filter(|e| *e != agent.enabled) {
            let kind = if enabled {
                EventKind::Enabled
            } else {
                EventKind::Disabled
            };
            events.push(new_event(at, kind, format!("by {actor}")));
            agent.enabled = enabled;
        }
        if let Some(group) = patch.group.as_ref().filter(|g| **g != agent.group) {
            let name = |g: &Option<String>| g.clone().unwrap_or_else(|| "(none)".into());
            let detail = format!("{} -> {} by {actor}", name(&agent.group), name(group));
            events.push(new_event(at, EventKind::GroupChanged, detail));
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
        for event in &events {
            let action = match event.event {
                EventKind::Enabled => AuditAction::Enabled,
                EventKind::Disabled => AuditAction::Disabled,
                _ => AuditAction::GroupChanged,
            };
            let detail = event.detail.trim_end_matches(&format!(" by {actor}"));
            let detail = if detail.starts_with("by ") {
                ""
            } else {
                detail
            };
            rows::insert_audit(tx.conn(), actor, action, Some(&agent), at, detail).await?;
        }
        let changed = Changed { agent, events };
        tx.commit(std::slice::from_ref(&changed)).await?;
        Ok(Some(changed))
    }

    async fn delete(&self, id: i64, actor: &str, at: Timestamp) -> Result<Option<Changed>> {
        let mut tx = self.begin_write().await?;
        // Its history goes with it (ON DELETE CASCADE); the audit log keeps a record.
        let row = sqlx::query(&format!(
            "DELETE FROM agents WHERE id = $1 RETURNING {AGENT_COLUMNS}"
        ))
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
        let Some(agent) = row.as_ref().map(rows::agent).transpose()? else {
            return Ok(None);
        };
        let detail = format!("was {}", agent.status);
        let deleted = AuditAction::Deleted;
        rows::insert_audit(tx.conn(), actor, deleted, Some(&agent), at, &detail).await?;
        let changed = Changed {
            agent,
            events: vec![new_event(at, EventKind::Deleted, format!("by {actor}"))],
        };
        tx.commit(std::slice::from_ref(&changed)).await?;
        Ok(Some(changed))
    }

    async fn agent(&self, id: i64) -> Result<Option<Agent>> {
        let mut conn = self.pool.acquire().await?;
        rows::select_agent(&mut conn, id).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Listed> {
        let selected = selection(filter);
        if filter.text.is_some() {
            return self.search(filter, &selected).await;
        }
        let (from_where, params) = (&selected.from_where, &selected.params);
        let total = match counted_total(filter) {
            // A count the summary's counts already hold (no filter, or one on a counted column).
            Some((dimension, value)) => {
                let row = sqlx::query(
                    "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) AS n FROM agent_counts \
                     WHERE dimension = $1 AND ($2 IS NULL OR value = $2)",
                )
                .bind(dimension)
                .bind(value)
                .fetch_one(&self.pool)
                .await?;
                rows::count(&row, "n")?
            }
            None => {
                let count_sql = format!("SELECT COUNT(*) AS n {from_where}");
                let row = bind_params(sqlx::query(&count_sql), params)
                    .fetch_one(&self.pool)
                    .await?;
                rows::count(&row, "n")?
            }
        };
        // Deep pages of every agent in an order the index keeps are found there.
        let in_memory = match filter.limit {
            Some(limit) if filter.offset >= DEFERRED_JOIN_OFFSET && !selected.is_conditioned() => {
                let offset = usize::try_from(filter.offset).unwrap_or(usize::MAX);
                let index = &self.agent_index;
                index.page(filter.sort, filter.descending, offset, limit as usize)
            }
            _ => None,
        };
        if let Some(ids) = in_memory {
            let page = ListFilter {
                offset: 0,
                ..filter.clone()
            };
            return Ok(Listed {
                total,
                exact: true,
                agents: page_of(&self.pool, &ids, &page).await?,
            });
        }
        self.page(filter, &selected, (total, true)).await
    }

    async fn list_each(
        &self,
        filter: &ListFilter,
        sink: &tokio::sync::mpsc::Sender<Result<Agent>>,
    ) -> Result<()> {
        // The matching ids in their order, in one short query; then their rows a chunk at a
        // time, each chunk its own short query: a reader that is slow (or stops) holds no
        // database connection between chunks.
        let selected = selection(filter);
        let sql = format!(
            "SELECT id {} {}",
            selected.from_where,
            order_by(filter.sort, filter.descending)
        );
        let ids: Vec<i64> = bind_params(sqlx::query(&sql), &selected.params)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<std::result::Result<_, _>>()?;
        let unpaged = ListFilter {
            limit: None,
            offset: 0,
            ..filter.clone()
        };
        for chunk in ids.chunks(EXPORT_CHUNK) {
            let mut agents = page_of(&self.pool, chunk, &unpaged).await?;
            // In the order the ids were listed: a sorted column may have changed since.
            let position: HashMap<i64, usize> =
                chunk.iter().enumerate().map(|(at, id)| (*id, at)).collect();
            agents.sort_by_key(|agent| position.get(&agent.id).copied());
            for agent in agents {
                if sink.send(Ok(agent)).await.is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    async fn summary(&self) -> Result<Summary> {
        let mut summary = Summary::default();
        let counts = sqlx::query(
            "SELECT dimension, value, CAST(SUM(n) AS BIGINT) AS n FROM agent_counts \
             GROUP BY dimension, value",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in counts {
            let n = rows::count(&row, "n")?;
            let value: String = row.try_get("value")?;
            if n == 0 {
                continue;
            }
            match row.try_get::<String, _>("dimension")?.as_str() {
                "status" => {
                    summary.registered += n;
                    match rows::parsed(&row, "value")? {
                        AgentStatus::Running => summary.running += n,
                        AgentStatus::Stopped => summary.stopped += n,
                        AgentStatus::Unknown => summary.unknown += n,
                    }
                }
                "enabled" if value == "0" => summary.disabled += n,
                "enabled" => summary.enabled += n,
                "kind" => {
                    summary.by_kind.insert(value, n);
                }
                "os" => {
                    summary.by_os.insert(value, n);
                }
                // '' stands for no group.
                "group" if !value.is_empty() => {
                    summary.by_group.insert(value, n);
                }
                _ => {}
            }
        }
        Ok(summary)
    }
}

/// The statement that stops the agents running but silent since before `$1`, and answers them.
fn stop_silent_statement(dialect: Dialect) -> String {
    let silent = if dialect == Dialect::Sqlite {
        // Each half is a range of the liveness index. With `IS NULL OR <` SQLite reads the entry
        // of every running agent instead: 38 ms at 500,000, each tick, in the writer's turn.
        "id IN (SELECT id FROM agents WHERE status = 'running' AND last_seen_at < $1 \
         UNION ALL SELECT id FROM agents WHERE status = 'running' AND last_seen_at IS NULL)"
    } else {
        "status = 'running' AND (last_seen_at IS NULL OR last_seen_at < $1)"
    };
    let (with, chosen) = chosen_in_id_order(dialect, silent);
    format!(
        "{with}UPDATE agents SET status = 'stopped', lost = 1 WHERE {chosen} \
         RETURNING {AGENT_COLUMNS}"
    )
}

/// The `WITH` and `WHERE` of a statement that changes the agents matching `condition`. On
/// PostgreSQL, where writers run side by side, they are taken first, in the order of their ids,
/// as every writer of many agents takes them, so no two hold each a row the other waits for
/// (docs/decisions.md, Storage). SQLite has one writer at a time.
fn chosen_in_id_order(dialect: Dialect, condition: &str) -> (String, String) {
    if dialect == Dialect::Sqlite {
        (String::new(), condition.to_string())
    } else {
        (
            format!(
                "WITH chosen AS MATERIALIZED \
                 (SELECT id FROM agents WHERE {condition} ORDER BY id FOR UPDATE) "
            ),
            "id IN (SELECT id FROM chosen)".to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::testing::{
        login, store_on_a_file, store_on_postgres, waits_for_the_first_holding_no_other,
    };
    use crate::store::{HistoryStore, Store};

    async fn events_of(store: &SqlStore, id: i64) -> i64 {
        sqlx::query("SELECT COUNT(*) AS n FROM agent_events WHERE agent_id = $1")
            .bind(id)
            .fetch_one(&store.pool)
            .await
            .unwrap()
            .try_get("n")
            .unwrap()
    }

    #[tokio::test]
    async fn history_goes_with_its_agent() {
        let (_dir, store) = store_on_a_file().await;
        let login = login("10.0.0.1", "waf-1");
        let (key_hash, now) = (login.key_hash.clone(), login.at);
        let id = store.login(login).await.unwrap().changed.agent.id;
        store.logout(id, &key_hash, now).await.unwrap();
        assert_eq!(events_of(&store, id).await, 2);

        store.delete(id, "test", now).await.unwrap().unwrap();
        assert_eq!(events_of(&store, id).await, 0, "deleted with the agent");
        assert_eq!(
            store.audit(10).await.unwrap().len(),
            1,
            "the audit log keeps it"
        );
    }

    /// Twenty agents with `status`, last heard long ago (the first the latest), the first's row
    /// written again after the others'; answers the first's id.
    async fn twenty_out_of_order(store: &SqlStore, status: &str) -> i64 {
        let mut first = i64::MAX;
        for n in 1..=20 {
            let login = login(&format!("10.0.0.{n}"), &format!("web-{n}"));
            first = first.min(store.login(login).await.unwrap().changed.agent.id);
        }
        sqlx::query("UPDATE agents SET status = $1, last_seen_at = 1000 - id")
            .bind(status.to_string())
            .execute(&store.pool)
            .await
            .unwrap();
        sqlx::query("UPDATE agents SET last_seen_at = 2000 WHERE id = $1")
            .bind(first)
            .execute(&store.pool)
            .await
            .unwrap();
        first
    }

    /// Whatever order their rows lie in, the sweep, the prune and the heartbeat flush take their
    /// agents in the order of their ids.
    #[tokio::test]
    async fn the_sweep_the_prune_and_the_flush_take_their_agents_in_id_order() {
        let (database, store) = store_on_postgres().await;
        let long_ago = Timestamp::from_millis(10_000);
        for writer in ["sweep", "prune", "flush"] {
            sqlx::query("DELETE FROM agents")
                .execute(&store.pool)
                .await
                .unwrap();
            let status = if writer == "prune" {
                "stopped"
            } else {
                "running"
            };
            let first = twenty_out_of_order(&store, status).await;
            // The flush writes every agent, in id order, as `Fleet::flush` lists them.
            let seen: Vec<LastSeen> = sqlx::query("SELECT id, key_hash FROM agents ORDER BY id")
                .fetch_all(&store.pool)
                .await
                .unwrap()
                .iter()
                .map(|row| LastSeen {
                    id: row.get("id"),
                    at: Timestamp::now(),
                    key_hash: row.get("key_hash"),
                })
                .collect();
            let write = {
                let store = store.clone();
                async move {
                    let now = Timestamp::now();
                    match writer {
                        "sweep" => store.stop_silent(long_ago, now).await.map(|c| c.len()),
                        "prune" => store.prune_stopped(long_ago, now).await.map(|c| c.len()),
                        _ => store
                            .flush_last_seen(&seen)
                            .await
                            .map(|stale| seen.len() - stale.len()),
                    }
                }
            };
            let written = waits_for_the_first_holding_no_other(&database.url, first, write)
                .await
                .unwrap();
            assert_eq!(written, 20, "{writer}");
        }
        store.close().await;
        database.drop_database().await;
    }

    /// On SQLite the sweep reads the liveness index from its start to the cutoff, not the entry
    /// of every running agent.
    #[tokio::test]
    async fn the_sweep_reads_only_the_silent_on_sqlite() {
        let (_dir, store) = store_on_a_file().await;
        let mut conn = store.pool.acquire().await.unwrap();
        let plan = sqlx::query(&format!(
            "EXPLAIN QUERY PLAN {}",
            stop_silent_statement(Dialect::Sqlite)
        ))
        .bind(0i64)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let steps: Vec<String> = plan.iter().map(|row| row.get("detail")).collect();
        let liveness: Vec<&String> = steps
            .iter()
            .filter(|s| s.contains("agents_liveness"))
            .collect();
        assert_eq!(liveness.len(), 2, "{steps:#?}");
        assert!(
            liveness.iter().all(|s| s.contains("last_seen_at")),
            "{steps:#?}"
        );
    }
}
