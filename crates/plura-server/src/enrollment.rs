//! The agents' enrollment token: stored only as a hash, shown once when it is made or rotated,
//! and after a rotation the previous one still accepted for a grace period, so agents can be
//! moved to the new one without an outage.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use plura_proto::{AuditAction, Timestamp};

use crate::credentials::{COMMAND_LINE, SYSTEM};
use crate::secret::{constant_time_eq, hash_token, new_token};
use crate::store::{self, Actor, Audit, Store};

/// The current token's SHA-256 (hex).
const CURRENT: &str = "enrollment_token_sha256";
/// The previous token's SHA-256 and until when it is accepted: `<hash> <unix millis>`.
const PREVIOUS: &str = "enrollment_token_previous";
/// Where versions before hashing kept the token itself; moved to `CURRENT` when read.
const LEGACY_CLEAR: &str = "enrollment_token";

/// How long the accepted hashes are believed without asking the database again, which bounds
/// how long a rotated-out token (past its grace) keeps working on a running server.
const CACHE_TTL: Duration = Duration::from_secs(5);

/// What `enrollment-token` found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issued {
    /// Made now: shown this once.
    Created(String),
    /// There is one already; it cannot be shown again.
    Exists,
}

/// The hashes accepted now.
#[derive(Debug, Clone, Default)]
struct Accepted {
    current: Option<String>,
    previous: Option<(String, Timestamp)>,
}

impl Accepted {
    async fn read(store: &dyn Store) -> store::Result<Self> {
        let mut current = store.setting(CURRENT).await?;
        if current.is_none()
            && let Some(clear) = store.setting(LEGACY_CLEAR).await?
        {
            let hash = hash_token(&clear);
            let audit = Audit {
                by: Actor {
                    name: SYSTEM,
                    at: Timestamp::now(),
                },
                action: AuditAction::EnrollmentTokenRotated,
                detail: "kept; now stored as a hash only".into(),
            };
            let changes = [(CURRENT, Some(hash.as_str())), (LEGACY_CLEAR, None)];
            store.change_settings(&changes, audit).await?;
            tracing::info!("the enrollment token is now stored as a hash only");
            current = Some(hash);
        }
        let previous = store.setting(PREVIOUS).await?.and_then(|value| {
            let (hash, until) = value.split_once(' ')?;
            Some((
                hash.to_string(),
                Timestamp::from_millis(until.parse().ok()?),
            ))
        });
        Ok(Self { current, previous })
    }

    fn accepts(&self, hash: &str, now: Timestamp) -> bool {
        let current = self
            .current
            .as_deref()
            .is_some_and(|c| constant_time_eq(c, hash));
        let previous = self
            .previous
            .as_ref()
            .is_some_and(|(p, until)| now < *until && constant_time_eq(p, hash));
        current || previous
    }
}

/// Answers whether a token is an accepted enrollment token, from a short cache; a token the
/// cache does not accept is checked against the database, so a new token works at once.
#[derive(Default)]
pub struct EnrollmentCheck {
    cached: RwLock<Option<(Accepted, Instant)>>,
}

impl EnrollmentCheck {
    pub async fn accepts(&self, store: &dyn Store, token: &str) -> store::Result<bool> {
        let hash = hash_token(token);
        let now = Timestamp::now();
        if let Some((accepted, at)) = self.cached.read().unwrap().as_ref()
            && at.elapsed() < CACHE_TTL
            && accepted.accepts(&hash, now)
        {
            return Ok(true);
        }
        let accepted = Accepted::read(store).await?;
        let valid = accepted.accepts(&hash, now);
        *self.cached.write().unwrap() = Some((accepted, Instant::now()));
        Ok(valid)
    }
}

fn new_enrollment_token() -> String {
    new_token("plura_enroll")
}

/// Makes the enrollment token if there is none and answers it, this once.
pub async fn issue(store: &dyn Store) -> store::Result<Issued> {
    if Accepted::read(store).await?.current.is_some() {
        return Ok(Issued::Exists);
    }
    let token = new_enrollment_token();
    let hash = hash_token(&token);
    let audit = Audit {
        by: Actor {
            name: COMMAND_LINE,
            at: Timestamp::now(),
        },
        action: AuditAction::EnrollmentTokenRotated,
        detail: "made".into(),
    };
    // Two issuing at once: the one whose hash is stored made it.
    if store.init_setting(CURRENT, &hash, Some(audit)).await? == hash {
        Ok(Issued::Created(token))
    } else {
        Ok(Issued::Exists)
    }
}

/// Replaces the enrollment token; the one it replaces keeps working for `grace` (none when
/// zero). Answers the new token and until when the old one works.
pub async fn rotate(
    store: &dyn Store,
    grace: Duration,
) -> store::Result<(String, Option<Timestamp>)> {
    let token = new_enrollment_token();
    let now = Timestamp::now();
    let until = (!grace.is_zero())
        .then(|| Timestamp::from_millis(now.as_millis() + grace.as_millis() as i64));
    let old = Accepted::read(store).await?.current;
    let previous = match (old, until) {
        (Some(old), Some(until)) => Some(format!("{old} {}", until.as_millis())),
        _ => None,
    };
    let current = hash_token(&token);
    let detail = match until {
        Some(until) => format!("replaced; the old one works until {until}"),
        None => "replaced; the old one no longer works".into(),
    };
    let audit = Audit {
        by: Actor {
            name: COMMAND_LINE,
            at: now,
        },
        action: AuditAction::EnrollmentTokenRotated,
        detail,
    };
    let changes = [
        (PREVIOUS, previous.as_deref()),
        (CURRENT, Some(current.as_str())),
    ];
    store.change_settings(&changes, audit).await?;
    Ok((token, until))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SettingStore;

    #[tokio::test]
    async fn only_a_hash_is_kept_and_a_rotation_has_a_grace() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/enroll.db", dir.path().display());
        let store = crate::store::open(&url).await.unwrap();
        let Issued::Created(first) = issue(&store).await.unwrap() else {
            panic!("a new database has no token");
        };
        assert_eq!(issue(&store).await.unwrap(), Issued::Exists);
        assert_eq!(
            store.setting(CURRENT).await.unwrap(),
            Some(hash_token(&first))
        );
        let check = EnrollmentCheck::default();
        assert!(check.accepts(&store, &first).await.unwrap());

        let (second, until) = rotate(&store, Duration::from_secs(60)).await.unwrap();
        assert!(until.unwrap() > Timestamp::now());
        assert!(check.accepts(&store, &second).await.unwrap());
        assert!(
            check.accepts(&store, &first).await.unwrap(),
            "within its grace"
        );
        let (third, until) = rotate(&store, Duration::ZERO).await.unwrap();
        assert_eq!(until, None);
        let fresh = EnrollmentCheck::default();
        assert!(fresh.accepts(&store, &third).await.unwrap());
        assert!(!fresh.accepts(&store, &second).await.unwrap(), "no grace");
        assert!(!fresh.accepts(&store, &first).await.unwrap());
    }

    #[tokio::test]
    async fn a_token_kept_in_clear_by_an_older_version_is_hashed_on_first_read() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/legacy.db", dir.path().display());
        let store = crate::store::open(&url).await.unwrap();
        store
            .init_setting(LEGACY_CLEAR, "plura_enroll_old", None)
            .await
            .unwrap();
        let check = EnrollmentCheck::default();
        assert!(check.accepts(&store, "plura_enroll_old").await.unwrap());
        assert_eq!(store.setting(LEGACY_CLEAR).await.unwrap(), None);
        let stored = store.setting(CURRENT).await.unwrap();
        assert_eq!(stored, Some(hash_token("plura_enroll_old")));
    }
}
