//! Making and ending credentials, the one way the command line and the admins' API both do it:
//! role tokens (shown once, stored as hashes, with an optional lifetime) and console users
//! (Argon2 hashes of their passwords).

use std::path::Path;

use plura_proto::{
    FieldError, Role, Timestamp, TokenInfo, UserInfo, parse_lifetime, validate_credential_name,
    validate_password,
};

use crate::secret::{hash_token, new_token};
use crate::store::{Actor, CredentialStore, StoreError, TokenRef, UserChange};

/// Who makes changes from the server's own command line, in the audit log.
pub use crate::alerts::COMMAND_LINE;
/// Who makes the changes the server's own policies make, in the audit log.
pub const SYSTEM: &str = "system";

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot hash the password: {0}")]
    Hashing(String),
}

pub type Result<T, E = CredentialError> = std::result::Result<T, E>;

/// Makes a role token; answers its secret (shown once: only its hash is kept) and how it is
/// listed. `expires_in` is a lifetime such as `90d`.
pub async fn create_token(
    store: &dyn CredentialStore,
    name: &str,
    role: Role,
    expires_in: Option<&str>,
    by: Actor<'_>,
) -> Result<(String, TokenInfo)> {
    validate_credential_name(name)?;
    let expires_at = expires_in
        .map(parse_lifetime)
        .transpose()?
        .map(|lifetime| Timestamp::from_millis(by.at.as_millis() + lifetime.as_millis() as i64));
    let token = new_token("plura");
    let info = store
        .add_token(name, role, &hash_token(&token), expires_at, by)
        .await?;
    Ok((token, info))
}

/// Makes a role token that does not expire, as the command line does; answers its secret.
pub async fn create_lasting_token(
    store: &dyn CredentialStore,
    name: &str,
    role: Role,
) -> Result<String> {
    let by = Actor {
        name: COMMAND_LINE,
        at: Timestamp::now(),
    };
    Ok(create_token(store, name, role, None, by).await?.0)
}

/// Revokes a role token named by its name or id (all digits); `None` if there is none.
pub async fn revoke_token(
    store: &dyn CredentialStore,
    name_or_id: &str,
    by: Actor<'_>,
) -> Result<Option<TokenInfo>> {
    Ok(store.revoke_token(TokenRef::parse(name_or_id), by).await?)
}

/// Makes a console user; answers it, with its password when none was given (one is made).
pub async fn create_user(
    store: &dyn CredentialStore,
    name: &str,
    role: Role,
    password: Option<String>,
    by: Actor<'_>,
) -> Result<(UserInfo, Option<String>)> {
    validate_credential_name(name)?;
    let (password, made) = match password {
        Some(given) => (given, false),
        None => (new_password(), true),
    };
    validate_password(&password)?;
    let hash = hash_password(password.clone()).await?;
    let user = store.add_user(name, role, &hash, by).await?;
    Ok((user, made.then_some(password)))
}

/// A password made for a user who was given none: 24 random characters.
pub fn new_password() -> String {
    new_token("pw")[3..27].to_string()
}

/// Sets a user's password, which ends its sign-ins; `None` if there is no such user.
pub async fn set_password(
    store: &dyn CredentialStore,
    name: &str,
    password: String,
    by: Actor<'_>,
) -> Result<Option<UserInfo>> {
    validate_password(&password)?;
    let hash = hash_password(password).await?;
    Ok(store
        .change_user(name, UserChange::SetPassword(hash), by)
        .await?)
}

/// Argon2id, off the async threads: it is slow on purpose.
pub async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
        let salt = SaltString::generate(&mut OsRng);
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| CredentialError::Hashing(e.to_string()))
    })
    .await
    .map_err(|e| CredentialError::Hashing(e.to_string()))?
}

pub async fn verify_password(password: String, hash: String) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        let parsed = PasswordHash::new(&hash)
            .map_err(|e| anyhow::anyhow!("a stored password hash is unreadable: {e}"))?;
        Ok(argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await?
}

/// Writes a secret to `file`, readable by its owner only from the moment it exists: written
/// beside it first, then renamed over whatever was there.
pub fn write_secret_file(file: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let partial = file.with_file_name(format!(".{name}.{}", std::process::id()));
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)?;
    let written = out
        .write_all(contents.as_bytes())
        .and_then(|()| out.sync_all())
        .and_then(|()| std::fs::rename(&partial, file));
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_secret_file_is_its_owners_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin-token");
        std::fs::write(&file, "old").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_secret_file(&file, "plura_new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "plura_new\n");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
