//! The writes of liveness over many agents at once: the flush of last-seen times, the sweep that
//! stops the silent, and the prune of the long stopped. Each takes its agents' rows in the order
//! of their ids, as every writer of many agents does, so none waits on another in a circle.

use sqlx::Row;

use plura_proto::{Agent, AlertKind, AuditAction, EventKind, Timestamp};

use super::SqlStore;
use super::alerts::{self, NewAlert};
use super::rows::{self, AGENT_COLUMNS, new_event, rows_per_statement};
use crate::credentials::SYSTEM;
use crate::store::{Changed, Dialect, LastSeen, Result};

impl SqlStore {
    /// Writes the last-seen times held in memory; answers the agents not written (no longer
    /// running with that key).
    pub(super) async fn write_last_seen(&self, seen: &[LastSeen]) -> Result<Vec<i64>> {
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

    /// Stops the agents running but silent since before `cutoff`, each with its alert; the
    /// alerts of agents on an EC2 instance are held until `hold_until`, when given.
    pub(super) async fn stop_silent_agents(
        &self,
        cutoff: Timestamp,
        at: Timestamp,
        hold_until: Option<Timestamp>,
    ) -> Result<Vec<Changed>> {
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
            .map(|c| NewAlert {
                held_until: hold_until.filter(|_| c.agent.cloud.labels.instance_id.is_some()),
                ..NewAlert::of(AlertKind::AgentStopped, c)
            })
            .collect();
        let dialect = tx.dialect();
        alerts::record(tx.conn(), dialect, &stops).await?;
        tx.commit(&changes).await?;
        Ok(changes)
    }

    /// Deletes the agents stopped and not seen since `cutoff`, each with its audit record.
    pub(super) async fn prune_stopped_agents(
        &self,
        cutoff: Timestamp,
        at: Timestamp,
    ) -> Result<Vec<Changed>> {
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
}

fn since(agent: &Agent) -> String {
    agent
        .last_seen_at
        .map_or_else(|| "never".into(), |t| t.to_string())
}

/// The statement that stops the agents running but silent since before `$1`, and answers them.
fn stop_silent_statement(dialect: Dialect) -> String {
    let silent = if dialect == Dialect::Sqlite {
        // Each half is a range of the liveness index. With `IS NULL OR <` SQLite reads the entry
        // of every running agent instead, each tick, in the writer's turn.
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
    use crate::store::{AgentStore, Store};

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
                        "sweep" => store
                            .stop_silent(long_ago, now, None)
                            .await
                            .map(|c| c.len()),
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
