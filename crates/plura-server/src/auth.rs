//! Tokens: the agents' enrollment token, the people's role tokens, and the cache in front of
//! the database that answers both.
//!
//! Tokens live in the database, not in the server's memory, so `plura-server token create` and
//! `enrollment-token --rotate` take effect on a running server, and several servers sharing one
//! PostgreSQL agree. A cache answers hits; a miss (a new or rotated token) asks the database.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use plura_proto::{Role, Timestamp};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::store::{self, Store};

const ENROLLMENT_KEY: &str = "enrollment_token";
const BOOTSTRAPPED_KEY: &str = "bootstrapped_at";

/// How long a role token is believed without asking the database again, which bounds how long
/// a deleted token keeps working.
const CALLER_TTL: Duration = Duration::from_secs(60);
/// The same for the enrollment token: how long a rotated-out token keeps working on a running
/// server. Short, since agents send it with every heartbeat and a rotation is often urgent.
const ENROLLMENT_TTL: Duration = Duration::from_secs(5);

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
    enrollment: RwLock<Option<(String, Instant)>>,
}

impl Auth {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            callers: RwLock::default(),
            enrollment: RwLock::default(),
        }
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
            .api_token(&hash)
            .await?
            .map(|(name, role)| Caller { name, role });
        let mut cache = self.callers.write().unwrap();
        match &caller {
            Some(caller) => cache.insert(hash, (caller.clone(), Instant::now())),
            None => cache.remove(&hash),
        };
        Ok(caller)
    }

    /// Whether `token` is the agents' current enrollment token.
    pub async fn is_enrollment(&self, token: &str) -> store::Result<bool> {
        if let Some((current, at)) = self.enrollment.read().unwrap().as_ref()
            && at.elapsed() < ENROLLMENT_TTL
            && constant_time_eq(current, token)
        {
            return Ok(true);
        }
        // Not cached, stale, or rotated since: the database knows.
        let current = self.store.setting(ENROLLMENT_KEY).await?;
        let valid = current
            .as_deref()
            .is_some_and(|current| constant_time_eq(current, token));
        *self.enrollment.write().unwrap() = current.map(|c| (c, Instant::now()));
        Ok(valid)
    }
}

/// A new secret: a readable prefix (so a leaked token can be recognised by scanners) and 192
/// random bits.
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}_{hex}")
}

pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Makes a role token and answers it; only its hash is stored.
pub async fn create_api_token(store: &dyn Store, role: Role, name: &str) -> store::Result<String> {
    let token = new_token("plura");
    store
        .add_api_token(name, role, &hash_token(&token), Timestamp::now())
        .await?;
    Ok(token)
}

/// The agents' enrollment token, made on first use; `rotate` replaces it (agents holding the
/// old one are refused from then on).
pub async fn enrollment_token(store: &dyn Store, rotate: bool) -> store::Result<String> {
    let fresh = new_token("plura_enroll");
    if rotate {
        store.put_setting(ENROLLMENT_KEY, &fresh).await?;
        Ok(fresh)
    } else {
        store.init_setting(ENROLLMENT_KEY, &fresh).await
    }
}

/// On the very first start of a database, makes the first admin token and answers it, once.
/// Servers starting together on a new PostgreSQL agree on one of them doing it.
pub async fn bootstrap(store: &dyn Store) -> store::Result<Option<String>> {
    let mine = format!("{} {}", Timestamp::now(), new_token("boot"));
    if store.init_setting(BOOTSTRAPPED_KEY, &mine).await? != mine {
        return Ok(None);
    }
    enrollment_token(store, false).await?;
    create_api_token(store, Role::Admin, "admin")
        .await
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_prefixed_and_hashed() {
        let a = new_token("plura");
        let b = new_token("plura");
        assert_ne!(a, b);
        assert!(a.starts_with("plura_") && a.len() == "plura_".len() + 48);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
        assert_eq!(hash_token(&a).len(), 64);
    }

    #[test]
    fn comparison_needs_every_byte() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
