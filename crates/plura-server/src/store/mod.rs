//! Storage: the traits the server codes against, their one error type, and the choice of backend
//! from the database URL.
//!
//! The traits are split by what they store: agents (and their list), history (events and the
//! audit log), credentials (tokens and users), settings, and alerts (webhooks, the alerts each
//! change records, their deliveries). `Store` is all of them; the SQL
//! implementation serves both backends.
//!
//! Every method that changes an agent records the matching history event in the same
//! transaction, and answers only after the commit, so what a client is told is on disk.

mod backend;
mod sql;

use async_trait::async_trait;
use plura_proto::{
    Agent, AgentStatus, AlertKind, AuditAction, AuditRecord, Change, Delivery, Event, EventKind,
    FleetPoint, LoginRequest, PatchAgent, RegisterAgent, Role, Summary, Timestamp, TokenInfo,
    UserInfo, WebhookFormat,
};

use backend::Dialect;
pub use backend::{Backend, redact_url};
pub use sql::SqlStore;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("an agent with ip {ip} and hostname {hostname:?} is already registered")]
    AlreadyRegistered { ip: String, hostname: String },
    #[error("a user named {0:?} exists already")]
    UserExists(String),
    #[error("a token named {0:?} exists already")]
    TokenExists(String),
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
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
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
pub enum Told {
    Changes(Vec<Change>),
    /// Some changes could not be told (a lost connection, a change too large): what is cached
    /// may be stale.
    Missed,
}

/// What a login did: the agent as it now is, and whether the login created it.
#[derive(Debug, Clone)]
pub struct LoginOutcome {
    pub changed: Changed,
    pub created: bool,
    /// A takeover of an identity whose holder was still running: two hosts claim it, which is
    /// suspicious.
    pub displaced_running: bool,
    /// The agent had stopped without a goodbye: its return is news.
    pub was_lost: bool,
}

/// What became of a call an agent made with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyedCall<T> {
    Done(T),
    /// No such agent (deleted): it logs in again.
    NoAgent,
    /// Not this agent's current key.
    WrongKey,
}

impl<T> KeyedCall<T> {
    /// What was done, or the refusal, as a call answering anything.
    pub fn done<U>(self) -> std::result::Result<T, KeyedCall<U>> {
        match self {
            Self::Done(done) => Ok(done),
            Self::NoAgent => Err(KeyedCall::NoAgent),
            Self::WrongKey => Err(KeyedCall::WrongKey),
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> KeyedCall<U> {
        match self {
            Self::Done(done) => KeyedCall::Done(f(done)),
            Self::NoAgent => KeyedCall::NoAgent,
            Self::WrongKey => KeyedCall::WrongKey,
        }
    }
}

/// A login as the store records it. Owned, because it may wait for the next group commit.
#[derive(Debug, Clone)]
pub struct Login {
    pub request: LoginRequest,
    /// The address the login came from, as the server saw it.
    pub source_ip: Option<String>,
    /// The SHA-256 of the key this login issues.
    pub key_hash: String,
    pub at: Timestamp,
    /// An agent heard from since this is still running (the silence limit before `at`).
    pub heard_since: Timestamp,
}

/// An agent as `AgentStore::import` loads it.
#[derive(Debug, Clone)]
pub struct Imported {
    pub agent: Agent,
    /// The SHA-256 of its key, when it has one.
    pub key_hash: Option<String>,
}

/// A heartbeat held in memory, to be written: the agent, when, and the hash of the key it
/// carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastSeen {
    pub id: i64,
    pub at: Timestamp,
    pub key_hash: String,
}

/// A column the agent list can be sorted by, with its name in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortColumn {
    Id,
    Ip,
    Hostname,
    Status,
    Enabled,
    Group,
    Kind,
    Os,
    Version,
    RegisteredAt,
    LastLoginAt,
    LastSeenAt,
}

impl SortColumn {
    pub const ALL: [SortColumn; 12] = [
        Self::Id,
        Self::Ip,
        Self::Hostname,
        Self::Status,
        Self::Enabled,
        Self::Group,
        Self::Kind,
        Self::Os,
        Self::Version,
        Self::RegisteredAt,
        Self::LastLoginAt,
        Self::LastSeenAt,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::Ip => "ip",
            Self::Hostname => "hostname",
            Self::Status => "status",
            Self::Enabled => "enabled",
            Self::Group => "group",
            Self::Kind => "kind",
            Self::Os => "os",
            Self::Version => "version",
            Self::RegisteredAt => "registered_at",
            Self::LastLoginAt => "last_login_at",
            Self::LastSeenAt => "last_seen_at",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// Which agents to list, in what order, which page.
#[derive(Debug, Clone, PartialEq)]
pub struct ListFilter {
    pub status: Option<AgentStatus>,
    pub group: Option<String>,
    pub kind: Option<String>,
    pub os: Option<String>,
    pub enabled: Option<bool>,
    /// Availability zone and Auto Scaling group, as the agents' logins said.
    pub zone: Option<String>,
    pub asg: Option<String>,
    /// Only agents whose last login came from another address than the one they claim.
    pub source_differs: bool,
    /// Free text, matched case-insensitively anywhere in ip, hostname, group, OS, version or
    /// machine id.
    pub text: Option<String>,
    pub sort: SortColumn,
    pub descending: bool,
    /// `None` lists every match (CSV export).
    pub limit: Option<u32>,
    pub offset: u64,
}

impl Default for ListFilter {
    fn default() -> Self {
        Self {
            status: None,
            group: None,
            kind: None,
            os: None,
            enabled: None,
            zone: None,
            asg: None,
            source_differs: false,
            text: None,
            sort: SortColumn::Id,
            descending: false,
            limit: None,
            offset: 0,
        }
    }
}

/// A search counts its matches up to this many: past it an operator refines the search rather
/// than reads the pages, and counting every match of a common term at a million agents costs far
/// more than the page itself (the page stops once it is full).
pub const SEARCH_COUNT_LIMIT: u64 = 1_000;

/// One page of the list, and how many agents match over all pages.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// How many match, or [`SEARCH_COUNT_LIMIT`] when a search matches more (then not `exact`).
    pub total: u64,
    pub exact: bool,
    pub agents: Vec<Agent>,
}

/// The agents: their lifecycle, the operators' changes, and the list.
#[async_trait]
pub trait AgentStore: Send + Sync {
    /// Registers an unknown (ip, hostname) or brings the known one back to running, with
    /// `key_hash` as its agent key from now on (the previous key no longer matches).
    /// A login from another source address, machine id or kind than the last one is a
    /// takeover, and says whether the previous holder was still running.
    async fn login(&self, login: Login) -> Result<LoginOutcome>;

    /// Whether (ip, hostname) is registered.
    async fn is_registered(&self, ip: &str, hostname: &str) -> Result<bool>;

    /// How many agents are registered.
    async fn agent_count(&self) -> Result<u64>;

    /// The hash of the agent's current key: `None` if there is no such agent, `Some(None)` if
    /// it never logged in.
    async fn key_hash(&self, id: i64) -> Result<Option<Option<String>>>;

    /// A heartbeat the liveness cache could not answer, with the hash of the key it carried;
    /// resumes the agent (with an event) if it was not running, or answers `None` if it was.
    async fn heartbeat(
        &self,
        id: i64,
        key_hash: &str,
        at: Timestamp,
    ) -> Result<KeyedCall<Option<Changed>>>;

    /// Goodbye from the agent, with the hash of the key it carried: stopped at once.
    async fn logout(&self, id: i64, key_hash: &str, at: Timestamp) -> Result<KeyedCall<Changed>>;

    /// Agents running with a key, in id order, `limit` of them after id `after`: (id, key hash,
    /// last seen).
    async fn running_keys(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, String, Option<Timestamp>)>>;

    /// Writes the last-seen times collected in memory, of the agents still running with the
    /// key they carried; answers the others (deleted, stopped, or given a new key meanwhile),
    /// whose times are not written.
    async fn flush_last_seen(&self, seen: &[LastSeen]) -> Result<Vec<i64>>;

    /// Marks stopped every running agent not seen since `cutoff`.
    async fn stop_silent(&self, cutoff: Timestamp, at: Timestamp) -> Result<Vec<Changed>>;

    /// Deletes agents stopped and not seen since `cutoff`, keeping a record in the audit log.
    async fn prune_stopped(&self, cutoff: Timestamp, at: Timestamp) -> Result<Vec<Changed>>;

    /// An operator registers an agent by hand (status unknown until it logs in).
    async fn register(&self, agent: &RegisterAgent, actor: &str, at: Timestamp) -> Result<Changed>;

    /// Loads agents as they are given (their ids are the database's to choose), in one
    /// transaction, with no history: a fleet carried over from another system or restored, or a
    /// benchmark's. Answers how many were new; an identity already registered is left as it is.
    async fn import(&self, agents: &[Imported]) -> Result<u64>;

    /// After a bulk load (imports in chunks): brings the planner's statistics and PostgreSQL's
    /// visibility map up to date, as autovacuum would a minute later; until then, deep pages
    /// must visit every row.
    async fn loaded(&self) -> Result<()>;

    async fn patch(
        &self,
        id: i64,
        patch: &PatchAgent,
        actor: &str,
        at: Timestamp,
    ) -> Result<Option<Changed>>;

    /// Deletes the agent (its history goes with it), keeping a record in the audit log.
    async fn delete(&self, id: i64, actor: &str, at: Timestamp) -> Result<Option<Changed>>;

    async fn agent(&self, id: i64) -> Result<Option<Agent>>;

    /// The matching agents of one page, and how many match in all.
    async fn list(&self, filter: &ListFilter) -> Result<Listed>;

    /// Sends every matching agent to `sink` (the set that matched when it began, each row as it
    /// is when its chunk is read), waiting while the sink is full without holding a database
    /// connection; stops early when the receiver is gone.
    async fn list_each(
        &self,
        filter: &ListFilter,
        sink: &tokio::sync::mpsc::Sender<Result<Agent>>,
    ) -> Result<()>;

    async fn summary(&self) -> Result<Summary>;
}

/// What happened: each agent's history, and the audit log that outlives deleted agents.
#[async_trait]
pub trait HistoryStore: Send + Sync {
    /// An agent's history, newest first; `None` if there is no such agent.
    async fn events(&self, id: i64, limit: u32) -> Result<Option<Vec<Event>>>;

    /// Deletes history events older than `cutoff`; answers how many.
    async fn delete_events_before(&self, cutoff: Timestamp) -> Result<u64>;

    /// The newest audit records first.
    async fn audit(&self, limit: u32) -> Result<Vec<AuditRecord>>;

    /// Records the fleet's counts at `at`, and forgets samples older than the chart shows.
    async fn record_sample(&self, at: Timestamp, summary: &Summary) -> Result<()>;

    /// The fleet from `from` on, one point per `step` that has samples: the most of each
    /// count within it.
    async fn fleet_history(
        &self,
        from: Timestamp,
        step: std::time::Duration,
    ) -> Result<Vec<FleetPoint>>;
}

/// Which credential a caller showed, by its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Credential {
    /// A role token (`token create`, or made by an admin through the API).
    Token(i64),
    /// A console sign-in.
    Session(i64),
}

/// Who holds a credential, as the database has them now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub credential: Credential,
    /// The token's or the signed-in user's name.
    pub name: String,
    pub role: Role,
}

/// A console user as a sign-in checks it.
#[derive(Debug, Clone)]
pub struct StoredUser {
    pub password_hash: String,
    pub role: Role,
    pub disabled: bool,
}

/// A token named by its name or its id (names are never all digits, so the two cannot mix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRef<'a> {
    Name(&'a str),
    Id(i64),
}

impl<'a> TokenRef<'a> {
    pub fn parse(text: &'a str) -> Self {
        match text.parse() {
            Ok(id) if text.bytes().all(|b| b.is_ascii_digit()) => Self::Id(id),
            _ => Self::Name(text),
        }
    }
}

/// What an admin does to a console user. Each but `Enable` ends the user's sign-ins.
#[derive(Debug, Clone)]
pub enum UserChange {
    Disable,
    Enable,
    Delete,
    /// The new password's hash.
    SetPassword(String),
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

/// Who may call: role tokens (stored as hashes), console users (Argon2 hashes of their
/// passwords) and their sign-ins. Every change is written with its audit record, in one
/// transaction.
#[async_trait]
pub trait CredentialStore: Send + Sync {
    /// Stores a role token's hash; `expires_at` `None` never expires.
    async fn add_token(
        &self,
        name: &str,
        role: Role,
        hash: &str,
        expires_at: Option<Timestamp>,
        by: Actor<'_>,
    ) -> Result<TokenInfo>;

    /// Every role token, by name.
    async fn tokens(&self) -> Result<Vec<TokenInfo>>;

    /// Deletes a role token; answers it, or `None` if there is no such token.
    async fn revoke_token(&self, token: TokenRef<'_>, by: Actor<'_>) -> Result<Option<TokenInfo>>;

    /// Who holds the token or sign-in with this hash, unless it expired before `now` or its
    /// user is disabled.
    async fn holder(&self, hash: &str, now: Timestamp) -> Result<Option<Holder>>;

    /// Writes when credentials were last used (a batch of them, kept in memory meanwhile).
    async fn record_use(&self, used: &[(Credential, Timestamp)]) -> Result<()>;

    /// Starts a sign-in for the user `name`, unless the user is gone or disabled by now.
    async fn add_session(
        &self,
        name: &str,
        hash: &str,
        at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool>;

    /// Ends a sign-in (sign-out); answers whether there was one. Role tokens are not sign-ins
    /// and stay.
    async fn remove_session(&self, hash: &str) -> Result<bool>;

    async fn add_user(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
        by: Actor<'_>,
    ) -> Result<UserInfo>;

    /// The user with this name, as a sign-in checks it.
    async fn user(&self, name: &str) -> Result<Option<StoredUser>>;

    /// Every console user, by name.
    async fn users(&self, now: Timestamp) -> Result<Vec<UserInfo>>;

    /// Changes a user; answers it as it is after (before, when deleted), or `None` if there is
    /// no such user.
    async fn change_user(
        &self,
        name: &str,
        change: UserChange,
        by: Actor<'_>,
    ) -> Result<Option<UserInfo>>;
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

/// An alert as a change recorded it, waiting to be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub id: i64,
    pub kind: AlertKind,
    pub at: Timestamp,
    /// The agent as it was then.
    pub agent: Agent,
    pub detail: String,
    /// For a takeover: whether the previous holder was still running.
    pub holder_running: Option<bool>,
}

/// A webhook with what sending to it takes.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredWebhook {
    pub id: i64,
    pub url: String,
    pub format: WebhookFormat,
    pub secret: String,
    pub origin: String,
    pub created_at: Timestamp,
}

/// A message for one webhook, made from waiting alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub webhook_id: i64,
    pub event: AlertKind,
    pub count: u64,
    pub text: String,
    pub body: String,
}

/// A delivery due to be tried, with its webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct DueDelivery {
    pub id: i64,
    pub event: AlertKind,
    pub body: String,
    pub attempts: u32,
    pub created_at: Timestamp,
    pub url: String,
    pub secret: String,
    /// Its webhook was set on the command line: the operator's own, not checked.
    pub from_command_line: bool,
}

/// How a try of a delivery went.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered,
    /// Tried again at `next`.
    Retry {
        next: Timestamp,
        error: String,
    },
    /// Given up.
    Failed {
        error: String,
    },
}

/// Webhooks, and the alerts and deliveries on their way to them.
#[async_trait]
pub trait AlertStore: Send + Sync {
    /// Records an alert no change of an agent carries (a refused registration): `agent` is
    /// the identity it concerns.
    async fn record_alert(
        &self,
        kind: AlertKind,
        agent: &Agent,
        detail: &str,
        at: Timestamp,
    ) -> Result<()>;

    async fn webhooks(&self) -> Result<Vec<StoredWebhook>>;

    /// Adds a webhook an admin (`by`) set; `audit_detail` is what the audit log says of it.
    async fn add_webhook(
        &self,
        url: &str,
        format: WebhookFormat,
        secret: &str,
        by: Actor<'_>,
        audit_detail: &str,
    ) -> Result<StoredWebhook>;

    /// Deletes a webhook for good (its URL and secret erased), with its audit record; answers
    /// whether there was one.
    async fn delete_webhook(&self, id: i64, by: Actor<'_>) -> Result<bool>;

    /// Makes the webhooks of `origin` exactly `hooks` (url, format), each signed with `secret`:
    /// the command line's, set again at every start.
    async fn set_webhooks_of(
        &self,
        origin: &str,
        hooks: &[(String, WebhookFormat)],
        secret: &str,
        at: Timestamp,
    ) -> Result<()>;

    /// Alerts not yet made into deliveries, oldest first.
    async fn waiting_alerts(&self, limit: u32) -> Result<Vec<Alert>>;

    /// Queues `deliveries` and marks the alerts they were made from (up to `last_alert`) done,
    /// in one transaction.
    async fn queue_deliveries(
        &self,
        last_alert: i64,
        deliveries: &[NewDelivery],
        at: Timestamp,
    ) -> Result<()>;

    /// Pending deliveries whose time has come, oldest first.
    async fn due_deliveries(&self, now: Timestamp, limit: u32) -> Result<Vec<DueDelivery>>;

    async fn attempted(&self, id: i64, at: Timestamp, attempt: &Attempt) -> Result<()>;

    /// The newest deliveries first, their webhook URLs whole (the caller hides them).
    async fn deliveries(&self, limit: u32) -> Result<Vec<Delivery>>;

    /// Deletes alerts made into deliveries, and deliveries done with, older than `cutoff`.
    async fn delete_alerts_before(&self, cutoff: Timestamp) -> Result<u64>;
}

/// All of the storage, and the database beneath it.
#[async_trait]
pub trait Store: AgentStore + HistoryStore + CredentialStore + SettingStore + AlertStore {
    /// Answers when the database does.
    async fn ping(&self) -> Result<()>;

    /// Waits for open connections to finish and closes them.
    async fn close(&self);

    /// Whether other servers may share this database, each hearing agents the others do not.
    fn shared(&self) -> bool;

    /// How many agents the in-memory search index holds; `None` while searches go to the
    /// database (no index, or one being loaded).
    fn search_index_agents(&self) -> Option<usize> {
        None
    }

    /// Whether this server runs the fleet-wide sweeps now, taking the lease if it is free:
    /// always with an embedded database; on a shared one, one server at a time, and another
    /// takes over soon after that one dies.
    async fn lead(&self) -> Result<bool>;

    /// Folds up what the triggers accumulate (on a shared database, the deltas of the agent
    /// counts) and keeps the planner's statistics up with a fast-growing fleet; the server that
    /// sweeps runs it now and then.
    async fn tidy(&self) -> Result<()>;

    /// The changes other servers on the same database commit, as they commit them; `None`
    /// when no other server can share it. From then on the agent index is loaded (in the
    /// background) and follows every change.
    async fn listen(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Told>>>;
}

/// Opens (creating it if needed) and migrates the database the URL names.
pub async fn open(url: &str) -> Result<SqlStore> {
    SqlStore::open(Backend::from_url(url)?).await
}
