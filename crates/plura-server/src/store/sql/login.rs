//! A login: the first one registers the identity; a later one brings it back to running with
//! a new key, and is a takeover when it comes from another source address, machine id or kind
//! than the one before it.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use plura_proto::{AgentStatus, EventKind, Timestamp};

use super::SqlStore;
use super::filter::ip_sort_key;
use super::rows::{self, AGENT_COLUMNS, new_event};
use crate::store::{Changed, Login, LoginOutcome, Result, StoreError};

/// How often a login looks again when a concurrent first login of the same identity (on another
/// server) took the insert it tried.
const LOGIN_ATTEMPTS: usize = 3;

pub(super) async fn login(store: &SqlStore, login: &Login<'_>) -> Result<LoginOutcome> {
    let request = login.request;
    let mut tx = store.begin_write().await?;
    for _ in 0..LOGIN_ATTEMPTS {
        let known = sqlx::query(
            "SELECT id, machine_id, source_ip, kind, status, last_seen_at FROM agents \
             WHERE ip = $1 AND hostname = $2",
        )
        .bind(request.ip.clone())
        .bind(request.hostname.clone())
        .fetch_optional(tx.conn())
        .await?;
        let outcome = match known {
            Some(row) => Some(login_known(tx.conn(), &Previous::from_row(&row)?, login).await?),
            None => login_new(tx.conn(), login).await?,
        };
        if let Some(outcome) = outcome {
            tx.commit(std::slice::from_ref(&outcome.changed)).await?;
            return Ok(outcome);
        }
    }
    Err(StoreError::Contended(format!(
        "the login of {} / {}",
        request.ip, request.hostname
    )))
}

/// The identity's holder before this login.
struct Previous {
    id: i64,
    machine_id: Option<String>,
    source_ip: Option<String>,
    kind: String,
    status: AgentStatus,
    last_seen_at: Option<Timestamp>,
}

impl Previous {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            machine_id: row.try_get("machine_id")?,
            source_ip: row.try_get("source_ip")?,
            kind: row.try_get("kind")?,
            status: rows::parsed(row, "status")?,
            last_seen_at: row
                .try_get::<Option<i64>, _>("last_seen_at")?
                .map(Timestamp::from_millis),
        })
    }

    /// What differs in `login` from the login before (empty: the same holder again). What was
    /// never known (a system registered by hand) does not count.
    fn differences(&self, login: &Login<'_>) -> Vec<String> {
        let mut changed = Vec::new();
        let mut compare = |what: &str, old: Option<&str>, new: Option<&str>| {
            if let (Some(old), Some(new)) = (old, new)
                && !old.is_empty()
                && old != new
            {
                changed.push(format!("{what} {old} -> {new}"));
            }
        };
        compare("source", self.source_ip.as_deref(), login.source_ip);
        let machine_id = login.request.machine_id.as_deref();
        compare("machine id", self.machine_id.as_deref(), machine_id);
        compare("kind", Some(&self.kind), Some(&login.request.kind));
        changed
    }

    /// Whether the holder was still running when `login` came: heard within the silence limit.
    fn running_at(&self, login: &Login<'_>) -> bool {
        self.status == AgentStatus::Running
            && self
                .last_seen_at
                .is_some_and(|seen| seen >= login.heard_since)
    }
}

/// A login of an identity already registered: back to running with the agent's new details.
async fn login_known(
    conn: &mut AnyConnection,
    previous: &Previous,
    login: &Login<'_>,
) -> Result<LoginOutcome> {
    let request = login.request;
    let differences = previous.differences(login);
    let takeover = !differences.is_empty();
    let displaced_running = takeover && previous.running_at(login);
    let row = sqlx::query(&format!(
        "UPDATE agents SET status = 'running', machine_id = COALESCE($1, machine_id), \
         version = $2, os = $3, kind = $4, source_ip = $5, last_login_at = $6, \
         last_seen_at = $6, key_hash = $8, last_takeover_at = COALESCE($9, last_takeover_at) \
         WHERE id = $7 RETURNING {AGENT_COLUMNS}"
    ))
    .bind(request.machine_id.clone())
    .bind(request.version.clone())
    .bind(request.os.clone())
    .bind(request.kind.clone())
    .bind(login.source_ip.map(str::to_string))
    .bind(login.at.as_millis())
    .bind(previous.id)
    .bind(login.key_hash.to_string())
    .bind(takeover.then(|| login.at.as_millis()))
    .fetch_one(conn)
    .await?;
    let from = login.source_ip.unwrap_or("an unknown address");
    let event = if takeover {
        let holder = match (displaced_running, previous.last_seen_at) {
            (true, Some(seen)) => format!("the previous holder was still running (heard {seen})"),
            _ => "the previous holder had stopped".to_string(),
        };
        let detail = format!("{}; {holder}", differences.join(", "));
        new_event(login.at, EventKind::Takeover, detail)
    } else {
        let detail = format!("from {from}, version {}", request.version);
        new_event(login.at, EventKind::Login, detail)
    };
    Ok(LoginOutcome {
        changed: Changed {
            agent: rows::agent(&row)?,
            events: vec![event],
        },
        created: false,
        displaced_running,
    })
}

/// The first login of an identity; `None` when a concurrent one registered it first.
async fn login_new(conn: &mut AnyConnection, login: &Login<'_>) -> Result<Option<LoginOutcome>> {
    let request = login.request;
    let row = sqlx::query(&format!(
        "INSERT INTO agents (ip, ip_key, hostname, status, enabled, kind, os, version, \
         machine_id, source_ip, registered_at, last_login_at, last_seen_at, key_hash) \
         VALUES ($1, $2, $3, 'running', 1, $4, $5, $6, $7, $8, $9, $9, $9, $10) \
         ON CONFLICT (ip, hostname) DO NOTHING RETURNING {AGENT_COLUMNS}"
    ))
    .bind(request.ip.clone())
    .bind(ip_sort_key(&request.ip))
    .bind(request.hostname.clone())
    .bind(request.kind.clone())
    .bind(request.os.clone())
    .bind(request.version.clone())
    .bind(request.machine_id.clone())
    .bind(login.source_ip.map(str::to_string))
    .bind(login.at.as_millis())
    .bind(login.key_hash.to_string())
    .fetch_optional(conn)
    .await?;
    let from = login.source_ip.unwrap_or("an unknown address");
    let detail = format!("first login from {from}, version {}", request.version);
    row.map(|row| {
        Ok(LoginOutcome {
            changed: Changed {
                agent: rows::agent(&row)?,
                events: vec![new_event(login.at, EventKind::Registered, detail)],
            },
            created: true,
            displaced_running: false,
        })
    })
    .transpose()
}
