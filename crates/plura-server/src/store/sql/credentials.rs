//! Role tokens (only their hashes) and console users (only Argon2 hashes of their passwords).

use async_trait::async_trait;
use sqlx::Row;

use plura_proto::{Role, Timestamp};

use super::{SqlStore, rows};
use crate::store::{CredentialStore, Result, StoreError};

#[async_trait]
impl CredentialStore for SqlStore {
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
        self.write_counted(query).await?;
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
        row.as_ref().map(rows::name_and_role).transpose()
    }

    async fn remove_session(&self, hash: &str) -> Result<bool> {
        let query =
            sqlx::query("DELETE FROM api_tokens WHERE token_hash = $1 AND expires_at IS NOT NULL")
                .bind(hash.to_string());
        Ok(self.write_counted(query).await? > 0)
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
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name.to_string())
        .bind(role.as_str())
        .bind(password_hash.to_string())
        .bind(at.as_millis());
        if self.write_counted(query).await? == 0 {
            return Err(StoreError::UserExists(name.to_string()));
        }
        Ok(())
    }

    async fn user(&self, name: &str) -> Result<Option<(String, Role)>> {
        let row = sqlx::query("SELECT password_hash, role FROM users WHERE name = $1")
            .bind(name.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok((row.try_get("password_hash")?, rows::parsed(&row, "role")?)))
            .transpose()
    }
}
