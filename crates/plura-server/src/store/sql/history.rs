//! Agents' history and the audit log.

use async_trait::async_trait;

use std::time::Duration;

use plura_proto::{AuditRecord, Event, FleetPoint, Summary, Timestamp};

use super::{SqlStore, rows};
use crate::store::{HistoryStore, Result};

/// Samples of the fleet are kept this long (the longest chart is a week).
const KEEP_SAMPLES: Duration = Duration::from_secs(30 * 24 * 3600);

/// Old history goes in slices of this many rows, so a first run over years of it does not hold
/// the writer for long.
const DELETE_SLICE: u32 = 10_000;

#[async_trait]
impl HistoryStore for SqlStore {
    async fn events(&self, id: i64, limit: u32) -> Result<Option<Vec<Event>>> {
        let mut conn = self.pool.acquire().await?;
        if rows::select_agent(&mut conn, id).await?.is_none() {
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
            .map(rows::event)
            .collect::<Result<_>>()
            .map(Some)
    }

    async fn delete_events_before(&self, cutoff: Timestamp) -> Result<u64> {
        let sql = format!(
            "DELETE FROM agent_events WHERE id IN \
             (SELECT id FROM agent_events WHERE at < $1 LIMIT {DELETE_SLICE})"
        );
        let mut deleted = 0;
        loop {
            let query = sqlx::query(&sql).bind(cutoff.as_millis());
            let slice = self.write_counted(query).await?;
            deleted += slice;
            if slice == 0 {
                return Ok(deleted);
            }
        }
    }

    async fn audit(&self, limit: u32) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT at, actor, action, agent_id, ip, hostname, detail FROM audit_log \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::audit_record).collect()
    }

    async fn record_sample(&self, at: Timestamp, summary: &Summary) -> Result<()> {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO fleet_samples (at, running, stopped, unknown) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (at) DO NOTHING",
        )
        .bind(at.as_millis())
        .bind(count(summary.running))
        .bind(count(summary.stopped))
        .bind(count(summary.unknown))
        .execute(tx.conn())
        .await?;
        sqlx::query("DELETE FROM fleet_samples WHERE at < $1")
            .bind(at.minus(KEEP_SAMPLES).as_millis())
            .execute(tx.conn())
            .await?;
        tx.commit(&[]).await
    }

    async fn fleet_history(&self, from: Timestamp, step: Duration) -> Result<Vec<FleetPoint>> {
        let step = i64::try_from(step.as_millis()).unwrap_or(i64::MAX).max(1);
        let rows = sqlx::query(
            "SELECT (at / $1) * $1 AS bucket, MAX(running) AS running, \
             MAX(stopped) AS stopped, MAX(unknown) AS unknown \
             FROM fleet_samples WHERE at >= $2 GROUP BY bucket ORDER BY bucket",
        )
        .bind(step)
        .bind(from.as_millis())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(FleetPoint {
                    at: rows::time(row, "bucket")?,
                    running: rows::count(row, "running")?,
                    stopped: rows::count(row, "stopped")?,
                    unknown: rows::count(row, "unknown")?,
                })
            })
            .collect()
    }
}
