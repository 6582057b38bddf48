//! The server's own settings, as keys and values.

use async_trait::async_trait;
use sqlx::Row;

use super::{SqlStore, rows};
use crate::store::{Audit, Result, SettingStore, StoreError};

#[async_trait]
impl SettingStore for SqlStore {
    async fn setting(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    async fn init_setting(
        &self,
        key: &str,
        value: &str,
        audit: Option<Audit<'_>>,
    ) -> Result<String> {
        let mut tx = self.writer.begin(self.backend.begin_write()).await?;
        let set = sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key.to_string())
        .bind(value.to_string())
        .execute(tx.conn())
        .await?
        .rows_affected()
            > 0;
        if let (true, Some(audit)) = (set, audit) {
            rows::record(tx.conn(), &audit).await?;
        }
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key.to_string())
            .fetch_optional(tx.conn())
            .await?;
        tx.commit().await?;
        let row = row.ok_or_else(|| StoreError::Corrupt(format!("setting {key} vanished")))?;
        Ok(row.try_get("value")?)
    }

    async fn change_settings(
        &self,
        changes: &[(&str, Option<&str>)],
        audit: Audit<'_>,
    ) -> Result<()> {
        let mut tx = self.writer.begin(self.backend.begin_write()).await?;
        for (key, value) in changes {
            let query = match value {
                Some(value) => sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(key.to_string())
                .bind(value.to_string()),
                None => sqlx::query("DELETE FROM settings WHERE key = $1").bind(key.to_string()),
            };
            query.execute(tx.conn()).await?;
        }
        rows::record(tx.conn(), &audit).await?;
        tx.commit().await
    }
}
