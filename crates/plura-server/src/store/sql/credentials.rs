//! Role tokens (only their hashes), console users (only Argon2 hashes of their passwords; people
//! of the identity provider have none) and their sign-ins. Each change is one transaction with
//! its audit record.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use plura_proto::{AuditAction, Role, Timestamp, TokenInfo, UserInfo};

use super::{SqlStore, rows};
use crate::store::{
    Actor, Audit, Credential, CredentialStore, Holder, Result, SsoPerson, SsoSignIn, StoreError,
    StoredUser, TokenRef, UserChange,
};

const TOKEN_COLUMNS: &str = "id, name, role, created_at, last_used_at, expires_at";

fn token_info(row: &AnyRow) -> Result<TokenInfo> {
    Ok(TokenInfo {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: rows::parsed(row, "role")?,
        created_at: rows::time(row, "created_at")?,
        last_used_at: rows::optional_time(row, "last_used_at")?,
        expires_at: rows::optional_time(row, "expires_at")?,
    })
}

/// A user with its sign-ins that last past `$1`.
const USER_QUERY: &str = "SELECT users.name, users.role, users.created_at, users.disabled_at, \
     users.sso_issuer, max(sessions.created_at) AS last_sign_in_at, count(sessions.id) AS sessions \
     FROM users LEFT JOIN sessions \
     ON sessions.user_id = users.id AND sessions.expires_at > $1";
const USER_GROUPING: &str = "GROUP BY users.id, users.name, users.role, users.created_at, \
     users.disabled_at, users.sso_issuer";

fn user_info(row: &AnyRow) -> Result<UserInfo> {
    Ok(UserInfo {
        name: row.try_get("name")?,
        role: rows::parsed(row, "role")?,
        created_at: rows::time(row, "created_at")?,
        disabled_at: rows::optional_time(row, "disabled_at")?,
        last_sign_in_at: rows::optional_time(row, "last_sign_in_at")?,
        sessions: rows::count(row, "sessions")?,
        sso_issuer: row.try_get("sso_issuer")?,
    })
}

async fn select_user(
    conn: &mut AnyConnection,
    name: &str,
    now: Timestamp,
) -> Result<Option<UserInfo>> {
    let row = sqlx::query(&format!(
        "{USER_QUERY} WHERE users.name = $2 {USER_GROUPING}"
    ))
    .bind(now.as_millis())
    .bind(name.to_string())
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(user_info).transpose()
}

/// Ends every sign-in of the user `name`.
async fn end_sessions(conn: &mut AnyConnection, name: &str) -> Result<u64> {
    Ok(
        sqlx::query("DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE name = $1)")
            .bind(name.to_string())
            .execute(conn)
            .await?
            .rows_affected(),
    )
}

/// The user of a person of the identity provider: its id, name, and whether it is disabled.
async fn sso_user(
    conn: &mut AnyConnection,
    person: &SsoPerson,
) -> Result<Option<(i64, String, bool)>> {
    let row = sqlx::query(
        "SELECT id, name, disabled_at FROM users WHERE sso_issuer = $1 AND sso_subject = $2",
    )
    .bind(person.issuer.clone())
    .bind(person.subject.clone())
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        Ok((
            row.try_get("id")?,
            row.try_get("name")?,
            rows::optional_time(&row, "disabled_at")?.is_some(),
        ))
    })
    .transpose()
}

/// Makes the user of a person of the identity provider, named as they prefer unless another
/// has that name (then with a few characters of their identity's hash added); answers whether
/// this call made it (another server signing them in at once may have).
async fn add_sso_user(conn: &mut AnyConnection, person: &SsoPerson, at: Timestamp) -> Result<bool> {
    let taken = sqlx::query("SELECT 1 AS taken FROM users WHERE name = $1")
        .bind(person.name.clone())
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    let name = if taken {
        let identity = crate::secret::hash_token(&format!("{}\n{}", person.issuer, person.subject));
        format!("{}~{}", person.name, &identity[..8])
    } else {
        person.name.clone()
    };
    let added = sqlx::query(
        "INSERT INTO users (name, role, password_hash, created_at, sso_issuer, sso_subject) \
         VALUES ($1, $2, '', $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(name)
    .bind(person.role.as_str())
    .bind(at.as_millis())
    .bind(person.issuer.clone())
    .bind(person.subject.clone())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(added > 0)
}

#[async_trait]
impl CredentialStore for SqlStore {
    async fn add_token(
        &self,
        name: &str,
        role: Role,
        hash: &str,
        expires_at: Option<Timestamp>,
        by: Actor<'_>,
    ) -> Result<TokenInfo> {
        let mut tx = self.writer.begin(self.backend.begin_write()).await?;
        let row = sqlx::query(&format!(
            "INSERT INTO api_tokens (name, role, token_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(name.to_string())
        .bind(role.as_str())
        .bind(hash.to_string())
        .bind(by.at.as_millis())
        .bind(expires_at.map(Timestamp::as_millis))
        .fetch_optional(tx.conn())
        .await?;
        let Some(row) = row else {
            return Err(StoreError::TokenExists(name.to_string()));
        };
        let token = token_info(&row)?;
        let detail = match expires_at {
            Some(at) => format!("{name:?}, {role}, expires {at}"),
            None => format!("{name:?}, {role}"),
        };
        let audit = Audit {
            by,
            action: AuditAction::TokenCreated,
            detail,
        };
        rows::record(tx.conn(), &audit).await?;
        tx.commit().await?;
        Ok(token)
    }

    async fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_info).collect()
    }

    async fn revoke_token(&self, token: TokenRef<'_>, by: Actor<'_>) -> Result<Option<TokenInfo>> {
        let mut tx = self.writer.begin(self.backend.begin_write()).await?;
        let by_name = format!("DELETE FROM api_tokens WHERE name = $1 RETURNING {TOKEN_COLUMNS}");
        let by_id = format!("DELETE FROM api_tokens WHERE id = $1 RETURNING {TOKEN_COLUMNS}");
        let query = match token {
            TokenRef::Name(name) => sqlx::query(&by_name).bind(name.to_string()),
            TokenRef::Id(id) => sqlx::query(&by_id).bind(id),
        };
        let Some(row) = query.fetch_optional(tx.conn()).await? else {
            return Ok(None);
        };
        let revoked = token_info(&row)?;
        let detail = format!("{:?}, {}", revoked.name, revoked.role);
        let audit = Audit {
            by,
            action: AuditAction::TokenRevoked,
            detail,
        };
        rows::record(tx.conn(), &audit).await?;
        tx.commit().await?;
        Ok(Some(revoked))
    }

    async fn holder(&self, hash: &str, now: Timestamp) -> Result<Option<Holder>> {
        let row = sqlx::query(
            "SELECT 'token' AS kind, id, name, role, expires_at FROM api_tokens \
             WHERE token_hash = $1 AND (expires_at IS NULL OR expires_at > $2) \
             UNION ALL \
             SELECT 'session' AS kind, sessions.id, users.name, users.role, sessions.expires_at \
             FROM sessions JOIN users ON users.id = sessions.user_id \
             WHERE sessions.token_hash = $3 AND sessions.expires_at > $4 \
             AND users.disabled_at IS NULL",
        )
        .bind(hash.to_string())
        .bind(now.as_millis())
        .bind(hash.to_string())
        .bind(now.as_millis())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let id = row.try_get("id")?;
        let credential = match row.try_get::<String, _>("kind")?.as_str() {
            "token" => Credential::Token(id),
            _ => Credential::Session(id),
        };
        let (name, role) = rows::name_and_role(&row)?;
        Ok(Some(Holder {
            credential,
            name,
            role,
            expires_at: rows::optional_time(&row, "expires_at")?,
        }))
    }

    async fn record_use(&self, used: &[(Credential, Timestamp)]) -> Result<()> {
        let mut tx = self.writer.begin(self.backend.begin_write()).await?;
        for (credential, at) in used {
            let (table, id) = match credential {
                Credential::Token(id) => ("api_tokens", id),
                Credential::Session(id) => ("sessions", id),
            };
            sqlx::query(&format!(
                "UPDATE {table} SET last_used_at = $1 WHERE id = $2 \
                 AND (last_used_at IS NULL OR last_used_at < $3)"
            ))
            .bind(at.as_millis())
            .bind(*id)
            .bind(at.as_millis())
            .execute(tx.conn())
            .await?;
        }
        tx.commit().await
    }

    async fn add_session(
        &self,
        name: &str,
        hash: &str,
        at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool> {
        let query = sqlx::query(
            "INSERT INTO sessions (user_id, token_hash, created_at, expires_at) \
             SELECT id, $1, $2, $3 FROM users WHERE name = $4 AND disabled_at IS NULL",
        )
        .bind(hash.to_string())
        .bind(at.as_millis())
        .bind(expires_at.as_millis())
        .bind(name.to_string());
        Ok(self.write_counted(query).await? > 0)
    }

    async fn remove_session(&self, hash: &str) -> Result<bool> {
        let query =
            sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(hash.to_string());
        Ok(self.write_counted(query).await? > 0)
    }

    async fn add_user(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
        by: Actor<'_>,
    ) -> Result<UserInfo> {
        let mut tx = self.writer.begin(self.backend.begin_write()).await?;
        let added = sqlx::query(
            "INSERT INTO users (name, role, password_hash, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name.to_string())
        .bind(role.as_str())
        .bind(password_hash.to_string())
        .bind(by.at.as_millis())
        .execute(tx.conn())
        .await?
        .rows_affected();
        if added == 0 {
            return Err(StoreError::UserExists(name.to_string()));
        }
        let detail = format!("{name:?}, {role}");
        let audit = Audit {
            by,
            action: AuditAction::UserCreated,
            detail,
        };
        rows::record(tx.conn(), &audit).await?;
        let user = select_user(tx.conn(), name, by.at).await?;
        tx.commit().await?;
        user.ok_or_else(|| {
            StoreError::Corrupt(format!("the user {name:?} vanished as it was made"))
        })
    }

    async fn sso_sign_in(
        &self,
        person: &SsoPerson,
        hash: &str,
        at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<SsoSignIn> {
        let mut tx = self.writer.begin(self.backend.begin_write()).await?;
        let mut made = false;
        let (id, name, disabled) = match sso_user(tx.conn(), person).await? {
            Some(user) => user,
            None => {
                made = add_sso_user(tx.conn(), person, at).await?;
                sso_user(tx.conn(), person).await?.ok_or_else(|| {
                    StoreError::Contended(format!("making the user of {:?}", person.name))
                })?
            }
        };
        let by = Actor { name: &name, at };
        if disabled {
            let audit = Audit {
                by,
                action: AuditAction::SsoRefused,
                detail: format!("{name:?}: disabled by an admin"),
            };
            rows::record(tx.conn(), &audit).await?;
            tx.commit().await?;
            return Ok(SsoSignIn::Disabled { name });
        }
        sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
            .bind(person.role.as_str())
            .bind(id)
            .execute(tx.conn())
            .await?;
        sqlx::query(
            "INSERT INTO sessions (user_id, token_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(hash.to_string())
        .bind(at.as_millis())
        .bind(expires_at.as_millis())
        .execute(tx.conn())
        .await?;
        let audit = Audit {
            by,
            action: AuditAction::SsoSignedIn,
            detail: format!(
                "{name:?}, {} ({}); {} {}{}",
                person.role,
                person.because,
                person.issuer,
                person.subject,
                if made { "; user made" } else { "" }
            ),
        };
        rows::record(tx.conn(), &audit).await?;
        tx.commit().await?;
        Ok(SsoSignIn::Started { name, made })
    }

    async fn record_audit(&self, audit: Audit<'_>) -> Result<()> {
        let mut tx = self.writer.begin(self.backend.begin_write()).await?;
        rows::record(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn user(&self, name: &str) -> Result<Option<StoredUser>> {
        let row = sqlx::query(
            "SELECT password_hash, role, disabled_at FROM users \
             WHERE name = $1 AND sso_subject IS NULL",
        )
        .bind(name.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(StoredUser {
                password_hash: row.try_get("password_hash")?,
                role: rows::parsed(&row, "role")?,
                disabled: rows::optional_time(&row, "disabled_at")?.is_some(),
            })
        })
        .transpose()
    }

    async fn users(&self, now: Timestamp) -> Result<Vec<UserInfo>> {
        let rows = sqlx::query(&format!("{USER_QUERY} {USER_GROUPING} ORDER BY users.name"))
            .bind(now.as_millis())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user_info).collect()
    }

    async fn change_user(
        &self,
        name: &str,
        change: UserChange,
        by: Actor<'_>,
    ) -> Result<Option<UserInfo>> {
        let mut tx = self.writer.begin(self.backend.begin_write()).await?;
        let Some(before) = select_user(tx.conn(), name, by.at).await? else {
            return Ok(None);
        };
        if matches!(change, UserChange::SetPassword(_)) && before.sso_issuer.is_some() {
            return Err(StoreError::NotLocalUser(name.to_string()));
        }
        // Sign-ins end first: a deleted user's are found by its name.
        let ended = match change {
            UserChange::Enable => 0,
            _ => end_sessions(tx.conn(), name).await?,
        };
        let name_text = name.to_string();
        let (query, action) = match change {
            UserChange::Disable => (
                sqlx::query(
                    "UPDATE users SET disabled_at = $1 WHERE name = $2 AND disabled_at IS NULL",
                )
                .bind(by.at.as_millis())
                .bind(name_text),
                AuditAction::UserDisabled,
            ),
            UserChange::Enable => (
                sqlx::query("UPDATE users SET disabled_at = NULL WHERE name = $1").bind(name_text),
                AuditAction::UserEnabled,
            ),
            UserChange::Delete => (
                sqlx::query("DELETE FROM users WHERE name = $1").bind(name_text),
                AuditAction::UserDeleted,
            ),
            UserChange::SetPassword(hash) => (
                sqlx::query("UPDATE users SET password_hash = $1 WHERE name = $2")
                    .bind(hash)
                    .bind(name_text),
                AuditAction::PasswordChanged,
            ),
        };
        query.execute(tx.conn()).await?;
        let detail = match ended {
            0 => format!("{name:?}, {}", before.role),
            n => format!("{name:?}, {}; {n} sign-in(s) ended", before.role),
        };
        let audit = Audit { by, action, detail };
        rows::record(tx.conn(), &audit).await?;
        let after = select_user(tx.conn(), name, by.at).await?;
        tx.commit().await?;
        Ok(Some(after.unwrap_or(before)))
    }
}
