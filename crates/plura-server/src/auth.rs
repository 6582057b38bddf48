//! Who is calling: the agents' enrollment token, the people's role tokens and console sign-ins,
//! and the short-lived cache in front of the database that answers them.
//!
//! Credentials live in the database, not in the server's memory, so `plura-server token create`
//! or `token revoke` take effect on a running server, and several servers sharing one PostgreSQL
//! agree. The cache believes an answer for at most a second: a revoked token, or a disabled
//! user's sign-in, stops working within that on every server, whoever made the change.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use plura_proto::{Role, Session, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::credentials;
use crate::enrollment::EnrollmentCheck;
use crate::secret::{hash_token, new_token};
use crate::store::{self, Credential, Doing, Holder, SsoPerson, SsoSignIn, Store};

const BOOTSTRAPPED_KEY: &str = "bootstrapped_at";

/// How long an answer about a role token or sign-in is believed without asking the database
/// again: what bounds how long a revoked credential keeps working.
pub const CALLER_TTL: Duration = Duration::from_secs(1);
/// How often the times credentials were last used are written: in batches, not on every call.
pub const USE_WRITTEN_EVERY: Duration = Duration::from_secs(5);

/// Who is calling, as their token or sign-in says.
pub type Caller = Holder;

impl Caller {
    pub fn may(&self, needed: Role) -> bool {
        self.role >= needed
    }
}

pub struct Auth {
    store: Arc<dyn Store>,
    callers: RwLock<HashMap<String, (Caller, Instant)>>,
    /// Credentials used since the last write of their last-used times.
    used: Mutex<HashMap<Credential, Timestamp>>,
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
            used: Mutex::default(),
            enrollment: EnrollmentCheck::default(),
            password_checks: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
        }
    }

    /// The database the credentials are in.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// A turn to check a password, held until dropped; `None` when none came free in time.
    pub async fn password_check(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        tokio::time::timeout(PASSWORD_CHECK_WAIT, self.password_checks.acquire())
            .await
            .ok()?
            .ok()
    }

    /// Who a role token or sign-in token belongs to, if anyone.
    pub async fn caller(&self, token: &str) -> store::Result<Option<Caller>> {
        let hash = hash_token(token);
        let cached = self
            .callers
            .read()
            .unwrap()
            .get(&hash)
            .filter(|(_, at)| at.elapsed() < CALLER_TTL)
            .map(|(caller, _)| caller.clone());
        let caller = match cached {
            Some(caller) => Some(caller),
            None => {
                let caller = self
                    .store
                    .holder(&hash, Timestamp::now())
                    .await
                    .doing(|| "looking up a caller's credential".into())?;
                let mut cache = self.callers.write().unwrap();
                match &caller {
                    Some(caller) => cache.insert(hash, (caller.clone(), Instant::now())),
                    None => cache.remove(&hash),
                };
                caller
            }
        };
        if let Some(caller) = &caller {
            self.used
                .lock()
                .unwrap()
                .insert(caller.credential, Timestamp::now());
        }
        Ok(caller)
    }

    /// Forgets every cached answer: after a change made here, the next call asks the database.
    pub fn forget_callers(&self) {
        self.callers.write().unwrap().clear();
    }

    /// Writes the last-used times gathered since the last write, and forgets cached answers too
    /// old to be believed.
    pub async fn write_use(&self) -> store::Result<()> {
        self.callers
            .write()
            .unwrap()
            .retain(|_, (_, at)| at.elapsed() < CALLER_TTL);
        let used: Vec<_> = self.used.lock().unwrap().drain().collect();
        if used.is_empty() {
            return Ok(());
        }
        self.store
            .record_use(&used)
            .await
            .doing(|| format!("recording when {} credentials were last used", used.len()))
    }

    /// Writes last-used times every few seconds until `shutdown`, and once more then.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(USE_WRITTEN_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ending = tokio::select! {
                _ = every.tick() => false,
                () = shutdown.cancelled() => true,
            };
            if let Err(e) = self.write_use().await {
                tracing::warn!("cannot record when credentials were last used: {e}");
            }
            if ending {
                return;
            }
        }
    }

    /// Ends a console sign-in here and in the database; `false` if `token` is not a sign-in's
    /// (a role token stays valid).
    pub async fn sign_out(&self, token: &str) -> store::Result<bool> {
        let hash = hash_token(token);
        let ended = self
            .store
            .remove_session(&hash)
            .await
            .doing(|| "ending a sign-in".into())?;
        if ended {
            self.callers.write().unwrap().remove(&hash);
        }
        Ok(ended)
    }

    /// Checks a user's password and starts a sign-in that expires; `None` for an unknown or
    /// disabled user and a wrong password alike (and in the same time, so none can be told from
    /// the others).
    pub async fn sign_in(&self, name: &str, password: &str) -> anyhow::Result<Option<Session>> {
        let user = self
            .store
            .user(name)
            .await
            .doing(|| format!("reading user {name:?} to sign in"))?
            .filter(|user| !user.disabled);
        let (hash, role) = match &user {
            Some(user) => (user.password_hash.clone(), Some(user.role)),
            None => (DECOY_HASH.clone(), None),
        };
        let valid = credentials::verify_password(password.to_string(), hash).await?;
        let (Some(role), true) = (role, valid) else {
            return Ok(None);
        };
        let (token, now, expires_at) = new_session();
        // A user disabled since its password was checked gets no sign-in.
        if !self
            .store
            .add_session(name, &hash_token(&token), now, expires_at)
            .await
            .doing(|| format!("starting a sign-in of {name:?}"))?
        {
            return Ok(None);
        }
        Ok(Some(Session {
            token,
            name: name.to_string(),
            role,
            expires_at,
            end_session_url: None,
        }))
    }

    /// Starts a sign-in for a person the identity provider vouched for, making their user the
    /// first time; `Err` with their user's name when an admin disabled that user.
    pub async fn sso_sign_in(&self, person: &SsoPerson) -> store::Result<Result<Session, String>> {
        let (token, now, expires_at) = new_session();
        let signed_in = self
            .store
            .sso_sign_in(person, &hash_token(&token), now, expires_at)
            .await
            .doing(|| format!("signing in {:?} through the identity provider", person.name))?;
        Ok(match signed_in {
            SsoSignIn::Started { name, .. } => Ok(Session {
                token,
                name,
                role: person.role,
                expires_at,
                end_session_url: None,
            }),
            SsoSignIn::Disabled { name } => Err(name),
        })
    }

    /// Whether `token` is an enrollment token agents may log in with now.
    pub async fn is_enrollment(&self, token: &str) -> store::Result<bool> {
        self.enrollment.accepts(self.store.as_ref(), token).await
    }
}

/// How long a console sign-in lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// A new sign-in's token, when it starts (now) and when it ends.
fn new_session() -> (String, Timestamp, Timestamp) {
    let now = Timestamp::now();
    let expires_at = Timestamp::from_millis(now.as_millis() + SESSION_LIFETIME.as_millis() as i64);
    (new_token("plura"), now, expires_at)
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

/// The file the first admin token is written to, in the server's state directory.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// On the very first start of a database, makes the first admin token and writes it to an
/// owner-only file in `state_dir`; answers the file, once. Servers starting together on a new
/// PostgreSQL agree on one of them doing it.
pub async fn bootstrap(store: &dyn Store, state_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let mine = format!("{} {}", Timestamp::now(), new_token("boot"));
    if store.init_setting(BOOTSTRAPPED_KEY, &mine, None).await? != mine {
        return Ok(None);
    }
    let token = credentials::create_lasting_token(store, "admin", Role::Admin).await?;
    let file = state_dir.join(ADMIN_TOKEN_FILE);
    credentials::write_secret_file(&file, &format!("{token}\n")).map_err(|e| {
        anyhow::anyhow!(
            "cannot write the first admin token to {}: {e}; make another with 'plura-server \
             token create --role admin --name NAME'",
            file.display()
        )
    })?;
    Ok(Some(file))
}
