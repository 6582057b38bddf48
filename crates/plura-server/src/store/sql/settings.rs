//! The server's own settings, as keys and values.

use async_trait::async_trait;
use sqlx::Row;

use super::SqlStore;
use crate::store::{Result, SettingStore, StoreError};

#[async_trait]
impl SettingStore for SqlStore {
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
        self.write_counted(query).await?;
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
        self.write_counted(query).await?;
        Ok(())
    }

    async fn delete_setting(&self, key: &str) -> Result<()> {
        let query = sqlx::query("DELETE FROM settings WHERE key = $1").bind(key.to_string());
        self.write_counted(query).await?;
        Ok(())
    }
}
