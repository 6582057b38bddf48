//! The agents: login, heartbeat and logout, the liveness sweeps and the operators' changes (the
//! list is in `listing.rs`). Each change ends in `WriteTx::commit`, which records its history.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use plura_proto::{
    Agent, AgentStatus, AlertKind, AuditAction, EventKind, PatchAgent, RegisterAgent, Timestamp,
};

use super::alerts::{self, NewAlert};
use super::filter::ip_sort_key;
use super::login::bind_cloud;
use super::rows::{self, AGENT_COLUMNS, new_event};
use super::{Backend, SqlStore, upkeep};
use crate::secret::constant_time_eq;
use crate::store::{
    AgentStore, Changed, Dialect, Imported, KeyedCall, LastSeen, Login, LoginOutcome, Result,
    StoreError,
};

/// Sets `status` (and last-seen) of one agent; `None` when there is no such agent.
async fn set_status(
    conn: &mut AnyConnection,
    id: i64,
    status: AgentStatus,
    at: Timestamp,
) -> Result<Option<Agent>> {
    let row = sqlx::query(&format!(
        "UPDATE agents SET status = $1, last_seen_at = $2, lost = 0, cloud_verdict = NULL, \
         cloud_verdict_at = NULL WHERE id = $3 \
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

#[async_trait]
impl AgentStore for SqlStore {
    async fn login(&self, login: Login) -> Result<LoginOutcome> {
        super::group_commit::login(self, login).await
    }

    async fn is_registered(&self, ip: &str, hostname: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 AS found FROM agents WHERE ip = $1 AND hostname = $2")
            .bind(ip.to_string())
            .bind(hostname.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn agent_count(&self) -> Result<u64> {
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
        if was_lost && alerts::drop_held(tx.conn(), &[id]).await?.is_empty() {
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
        // A goodbye after a silence: the agent was alive, and its held stop alert is no news.
        alerts::drop_held(tx.conn(), &[id]).await?;
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
        self.write_last_seen(seen).await
    }

    async fn stop_silent(
        &self,
        cutoff: Timestamp,
        at: Timestamp,
        hold_until: Option<Timestamp>,
    ) -> Result<Vec<Changed>> {
        self.stop_silent_agents(cutoff, at, hold_until).await
    }

    async fn prune_stopped(&self, cutoff: Timestamp, at: Timestamp) -> Result<Vec<Changed>> {
        self.prune_stopped_agents(cutoff, at).await
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
                query = bind_cloud(query, &agent.cloud.labels);
            }
            imported += query.execute(tx.conn()).await?.rows_affected();
        }
        tx.commit_bulk().await?;
        Ok(imported)
    }

    async fn after_bulk_load(&self) -> Result<()> {
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

    async fn fold_counts(&self) -> Result<()> {
        if self.backend.dialect() == Dialect::Postgres {
            upkeep::fold_counts(&self.pool).await?;
            upkeep::analyze_after_growth(&self.pool).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::HistoryStore;
    use crate::store::sql::testing::{login, store_on_a_file};

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
}
