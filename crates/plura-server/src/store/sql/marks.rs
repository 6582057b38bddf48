//! The servers' marks of what they have written, and the readiness probe's write.

use async_trait::async_trait;
use sqlx::Row;

use plura_proto::Timestamp;

use super::{SqlStore, rows};
use crate::store::{MarkStore, Result};

#[async_trait]
impl MarkStore for SqlStore {
    async fn mark_written(&self, server: &str, through: Timestamp) -> Result<()> {
        self.set_mark(server, "written_through", through).await
    }

    async fn written_marks(&self) -> Result<Vec<(String, Timestamp)>> {
        let rows = sqlx::query(
            "SELECT server_id, written_through FROM server_marks WHERE written_through > 0",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("server_id")?,
                    rows::time(row, "written_through")?,
                ))
            })
            .collect()
    }

    async fn forget_marks_before(&self, cutoff: Timestamp) -> Result<u64> {
        self.write_counted(
            sqlx::query("DELETE FROM server_marks WHERE written_through < $1 AND probed_at < $1")
                .bind(cutoff.as_millis()),
        )
        .await
    }

    async fn probe(&self, server: &str, at: Timestamp) -> Result<()> {
        self.set_mark(server, "probed_at", at).await
    }
}

impl SqlStore {
    /// Sets one of `server`'s times in its row (`column` is one of the table's, never input).
    async fn set_mark(&self, server: &str, column: &'static str, at: Timestamp) -> Result<()> {
        let sql = format!(
            "INSERT INTO server_marks (server_id, {column}) VALUES ($1, $2) \
             ON CONFLICT (server_id) DO UPDATE SET {column} = excluded.{column}"
        );
        self.write_counted(
            sqlx::query(&sql)
                .bind(server.to_string())
                .bind(at.as_millis()),
        )
        .await?;
        Ok(())
    }
}
