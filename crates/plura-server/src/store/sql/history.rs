//! Agents' history and the audit log.

use async_trait::async_trait;

use plura_proto::{AuditRecord, Event, Timestamp};

use super::{SqlStore, rows};
use crate::store::{HistoryStore, Result};

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
}
