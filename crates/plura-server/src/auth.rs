//! Tokens: the agents' enrollment token, the people's role tokens, and the cache in front of
//! the database that answers both.
//!
//! Tokens live in the database, not in the server's memory, so `plura-server token create` and
//! `enrollment-token --rotate` take effect on a running server, and several servers sharing one
//! PostgreSQL agree. A cache answers hits; a miss (a new or rotated token) asks the database.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use plura_proto::{AuditAction, Role, Session, Timestamp};

use crate::enrollment::EnrollmentCheck;
use crate::secret::{hash_token, new_token};
use crate::store::{self, Store};

const BOOTSTRAPPED_KEY: &str = "bootstrapped_at";

/// How long a role token is believed without asking the database again, which bounds how long
/// a deleted token keeps working.
const CALLER_TTL: Duration = Duration::from_secs(60);

/// Who is calling, as their API token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    pub fn may(&self, needed: Role) -> bool {
        self.role >= needed
    }
}

pub struct Auth {
    store: Arc<dyn Store>,
    callers: RwLock<HashMap<String, (Caller, Instant)>>,
    enrollment: EnrollmentCheck,
    /// Password checks under way at once: one per core.
    password_checks: tokio::sync::Semaphore,
}

/// How long a sign-in waits for a password check to be free before it is told to come back.
const PASSWORD_CHECK_WAIT: Duration = Duration::from_secs(2);

impl Auth {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            callers: RwLock::default(),
            enrollment: EnrollmentCheck::default(),
            password_checks: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
        }
    }

    /// A turn to check a password, held until dropped; `None` when none came free in time.
    pub async fn password_check(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        tokio::time::timeout(PASSWORD_CHECK_WAIT, self.password_checks.acquire())
            .await
            .ok()?
            .ok()
    }

    /// The caller a role token belongs to, if any.
    pub async fn caller(&self, token: &str) -> store::Result<Option<Caller>> {
        let hash = hash_token(token);
        if let Some((caller, at)) = self.callers.read().unwrap().get(&hash)
            && at.elapsed() < CALLER_TTL
        {
            return Ok(Some(caller.clone()));
        }
        let caller = self
            .store
            .api_token(&hash, Timestamp::now())
            .await?
            .map(|(name, role)| Caller { name, role });
        let mut cache = self.callers.write().unwrap();
        match &caller {
            Some(caller) => cache.insert(hash, (caller.clone(), Instant::now())),
            None => cache.remove(&hash),
        };
        Ok(caller)
    }

    /// Ends a console session (sign-out) here and in the database; `false` if `token` is not
    /// a session's (an API token made by the CLI stays valid).
    pub async fn sign_out(&self, token: &str) -> store::Result<bool> {
        let hash = hash_token(token);
        let ended = self.store.remove_session(&hash).await?;
        if ended {
            self.callers.write().unwrap().remove(&hash);
        }
        Ok(ended)
    }

    /// Checks a user's password and mints a role token that expires; `None` for an unknown
    /// user or a wrong password alike (and in the same time, so neither can be told from the
    /// other).
    pub async fn sign_in(&self, name: &str, password: &str) -> anyhow::Result<Option<Session>> {
        let user = self.store.user(name).await?;
        let (hash, role) = match &user {
            Some((hash, role)) => (hash.clone(), Some(*role)),
            None => (DECOY_HASH.clone(), None),
        };
        let valid = verify_password(password.to_string(), hash).await?;
        let (Some(role), true) = (role, valid) else {
            return Ok(None);
        };
        let token = new_token("plura");
        let now = Timestamp::now();
        let expires_at =
            Timestamp::from_millis(now.as_millis() + SESSION_LIFETIME.as_millis() as i64);
        self.store
            .add_api_token(name, role, &hash_token(&token), now, Some(expires_at))
            .await?;
        Ok(Some(Session {
            token,
            name: name.to_string(),
            role,
            expires_at,
        }))
    }

    /// Whether `token` is an enrollment token agents may log in with now.
    pub async fn is_enrollment(&self, token: &str) -> store::Result<bool> {
        self.enrollment.accepts(self.store.as_ref(), token).await
    }
}

/// Who makes tokens and users: the server's own command line.
pub use crate::alerts::COMMAND_LINE;

/// Makes a role token and answers it; only its hash is stored.
pub async fn create_api_token(store: &dyn Store, role: Role, name: &str) -> store::Result<String> {
    let token = new_token("plura");
    let now = Timestamp::now();
    store
        .add_api_token(name, role, &hash_token(&token), now, None)
        .await?;
    let detail = format!("{name:?}, {role}");
    store
        .record_audit(COMMAND_LINE, AuditAction::TokenCreated, &detail, now)
        .await?;
    Ok(token)
}

/// How long a console sign-in lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Shortest password `user create` accepts.
pub const MIN_PASSWORD_LEN: usize = 12;

/// Makes a console user; answers the password (`password`, or a generated one).
pub async fn create_user(
    store: &dyn Store,
    name: &str,
    role: Role,
    password: Option<String>,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        !name.is_empty() && !name.chars().any(char::is_control),
        "a user name must be printable text"
    );
    let password = password.unwrap_or_else(|| new_token("pw")[3..27].to_string());
    anyhow::ensure!(
        password.chars().count() >= MIN_PASSWORD_LEN,
        "a password needs at least {MIN_PASSWORD_LEN} characters"
    );
    let hash = hash_password(password.clone()).await?;
    let now = Timestamp::now();
    store.add_user(name, role, &hash, now).await?;
    let detail = format!("{name:?}, {role}");
    store
        .record_audit(COMMAND_LINE, AuditAction::UserCreated, &detail, now)
        .await?;
    Ok(password)
}

/// A hash no password matches, checked for unknown users so they take as long as known ones.
static DECOY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(b"plura-decoy-salt").expect("a valid salt");
    argon2::Argon2::default()
        .hash_password(new_token("decoy").as_bytes(), &salt)
        .expect("hashing works")
        .to_string()
});

/// Argon2id, off the async threads: it is slow on purpose.
async fn hash_password(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
        let salt = SaltString::generate(&mut OsRng);
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
    })
    .await?
}

async fn verify_password(password: String, hash: String) -> anyhow::Result<bool> {
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

/// On the very first start of a database, makes the first admin token and answers it, once.
/// Servers starting together on a new PostgreSQL agree on one of them doing it.
pub async fn bootstrap(store: &dyn Store) -> store::Result<Option<String>> {
    let mine = format!("{} {}", Timestamp::now(), new_token("boot"));
    if store.init_setting(BOOTSTRAPPED_KEY, &mine).await? != mine {
        return Ok(None);
    }
    create_api_token(store, Role::Admin, "admin")
        .await
        .map(Some)
}
