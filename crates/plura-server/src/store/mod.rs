//! Storage, and nothing else: the traits the server codes against, their one error type, and the
//! choice of backend from the database URL.
//!
//! The traits are split by what they store, a file each: agents, their list and their history
//! (`agents.rs`), credentials (`credentials.rs`), alerts (`alerts.rs`), what the cloud watch
//! reports (`cloud.rs`); settings and `Store`,
//! all of them, are here. The SQL implementation (`sql/`) serves both backends.
//!
//! Every change is written with its history event or audit record in the same transaction, and
//! answered only after the commit, so what a client is told is on disk. What keeps agents in
//! memory is told of each change as it commits (`Follower`).

mod agents;
mod alerts;
mod backend;
mod backup;
mod cloud;
mod credentials;
mod marks;
mod sql;
mod unavailable;

use async_trait::async_trait;
use plura_proto::{Agent, AuditAction, Change, Event, EventKind, Timestamp, WebhookFormat};

pub use agents::*;
pub use alerts::*;
use backend::Dialect;
pub use backend::{Backend, redact_url};
pub use backup::{BackupError, backup};
pub use cloud::{CloudStore, CoverageCounts, GroupCounts, ReportRules};
pub use credentials::*;
pub use marks::MarkStore;
pub use sql::notices;
pub use sql::{SqlStore, ip_sort_key};
pub use unavailable::Unavailable;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("an agent with ip {ip} and hostname {hostname:?} is already registered")]
    AlreadyRegistered { ip: String, hostname: String },
    #[error("a user named {0:?} exists already")]
    UserExists(String),
    #[error("a token named {0:?} exists already")]
    TokenExists(String),
    #[error(
        "{0:?} signs in through the identity provider: it has no password here (disable it to \
         keep it out)"
    )]
    NotLocalUser(String),
    #[error("a {format} webhook to that URL exists already")]
    WebhookExists { format: WebhookFormat },
    /// Concurrent writers (other servers on the same database) kept winning; the caller may
    /// simply try again.
    #[error("{0} lost to concurrent writers too often; try again")]
    Contended(String),
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER:PASS@HOST/DB")]
    UnsupportedUrl(String),
    #[error("the database holds a value this server does not understand: {0}")]
    Corrupt(String),
    /// Something the server holds true was not; what was under way is given up whole.
    #[error("an invariant did not hold: {0}")]
    Invariant(String),
    /// The database failed a statement; `doing` says what for, once a caller has said.
    #[error("database{}: {source}", doing_text(doing))]
    Database {
        doing: Option<String>,
        source: sqlx::Error,
    },
    /// The database could not serve: what each login of a batch that failed so is told.
    #[error("{0}")]
    Unavailable(Unavailable),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(source: sqlx::Error) -> Self {
        Self::Database {
            doing: None,
            source,
        }
    }
}

fn doing_text(doing: &Option<String>) -> String {
    doing
        .as_deref()
        .map_or_else(String::new, |doing| format!(", {doing}"))
}

/// Says what a store call was for, so its failure tells which work and which agent it cost.
pub trait Doing<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Doing<T> for Result<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| match e {
            StoreError::Database {
                doing: None,
                source,
            } => StoreError::Database {
                doing: Some(what()),
                source,
            },
            other => other,
        })
    }
}

/// An agent after a change, with the history events that change recorded.
#[derive(Debug, Clone)]
pub struct Changed {
    pub agent: Agent,
    pub events: Vec<Event>,
}

impl Changed {
    /// Whether the agent is gone (deleted or pruned).
    pub fn is_gone(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e.event, EventKind::Deleted | EventKind::Pruned))
    }

    /// The change as the live stream tells it: one per event.
    pub fn changes(&self) -> Vec<Change> {
        let agent = (!self.is_gone()).then_some(&self.agent);
        self.events
            .iter()
            .map(|event| Change {
                agent_id: self.agent.id,
                at: event.at,
                event: event.event,
                detail: event.detail.clone(),
                agent: agent.cloned(),
            })
            .collect()
    }
}

/// What the store tells of changes other servers on the same database made.
#[derive(Debug, Clone, PartialEq)]
pub enum Elsewhere {
    Changes(Vec<Change>),
    /// Some changes could not be told (a lost connection, a change too large): what is cached
    /// may be stale.
    Missed,
}

/// Who made a change, and when: what the audit log records beside it, in the same transaction.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub name: &'a str,
    pub at: Timestamp,
}

/// A change's record in the audit log, written in the change's own transaction.
#[derive(Debug, Clone)]
pub struct Audit<'a> {
    pub by: Actor<'a>,
    pub action: AuditAction,
    pub detail: String,
}

/// The server's own settings (the enrollment token, when it was first started).
#[async_trait]
pub trait SettingStore: Send + Sync {
    async fn setting(&self, key: &str) -> Result<Option<String>>;

    /// Sets `key` only if it has no value yet; answers the value it has afterwards. `audit` is
    /// recorded, in the same transaction, only when this call set it.
    async fn init_setting(
        &self,
        key: &str,
        value: &str,
        audit: Option<Audit<'_>>,
    ) -> Result<String>;

    /// Sets (`Some`) or removes (`None`) each key, and records `audit`, in one transaction.
    async fn change_settings(
        &self,
        changes: &[(&str, Option<&str>)],
        audit: Audit<'_>,
    ) -> Result<()>;
}

/// All of the storage, and the database beneath it.
#[async_trait]
pub trait Store:
    AgentStore
    + ListStore
    + HistoryStore
    + CredentialStore
    + SettingStore
    + AlertStore
    + MarkStore
    + CloudStore
{
    /// Answers when the database does.
    async fn ping(&self) -> Result<()>;

    /// Waits for open connections to finish and closes them.
    async fn close(&self);

    fn backend(&self) -> &Backend;

    /// This server among those sharing the database: the source its change notices carry.
    fn server_id(&self) -> &str;

    /// Tells `follower` of every change of agents committed here from now on, as long as it
    /// lives.
    fn follow(&self, follower: std::sync::Weak<dyn Follower>);
}

/// Whatever keeps something of the agents in memory: told of each change of agents this server
/// commits, right after its commit.
pub trait Follower: Send + Sync {
    fn committed(&self, changes: &[&Changed]);

    /// Many agents changed at once (an import), with no history to tell: what is kept of them
    /// is read again.
    fn committed_in_bulk(&self);
}

/// Opens (creating it if needed) and migrates the database the URL names.
pub async fn open(url: &str) -> Result<SqlStore> {
    SqlStore::open(Backend::from_url(url)?).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_error_says_what_it_cost_once() {
        let failed: Result<()> = Err(sqlx::Error::PoolTimedOut.into());
        let told = failed
            .doing(|| "writing the heartbeat of agent 7".into())
            .doing(|| "an outer call".into())
            .unwrap_err();
        assert_eq!(
            told.to_string(),
            "database, writing the heartbeat of agent 7: pool timed out while waiting for an \
             open connection"
        );
        let unsaid: StoreError = sqlx::Error::PoolTimedOut.into();
        assert!(unsaid.to_string().starts_with("database: "), "{unsaid}");
    }
}
