//! What the agents' storage takes and answers: logins, keyed calls, the list and its filters; and
//! the traits of the agents and of their history.

use async_trait::async_trait;
use plura_proto::{
    Agent, AgentStatus, AuditRecord, Event, FleetPoint, LoginRequest, PatchAgent, RegisterAgent,
    Summary, Timestamp, Verdict,
};

use super::{Changed, Result};

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
    /// Whether the read model has heard of no agent with this identity: the login is written
    /// as a registration first, and looked up only if the identity turns out to be taken.
    pub unheard_of: bool,
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
    /// Only agents whose instance the cloud gave this verdict on.
    pub verdict: Option<Verdict>,
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
            verdict: None,
            source_differs: false,
            text: None,
            sort: SortColumn::Id,
            descending: false,
            limit: None,
            offset: 0,
        }
    }
}

impl ListFilter {
    /// Whether it selects fewer than every agent.
    pub fn is_conditioned(&self) -> bool {
        let every_agent = Self {
            sort: self.sort,
            descending: self.descending,
            limit: self.limit,
            offset: self.offset,
            ..Self::default()
        };
        *self != every_agent
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

    /// Marks stopped every running agent not seen since `cutoff`; the stop alerts of agents on
    /// an EC2 instance wait for the cloud's verdict until `hold_until`, when given.
    async fn stop_silent(
        &self,
        cutoff: Timestamp,
        at: Timestamp,
        hold_until: Option<Timestamp>,
    ) -> Result<Vec<Changed>>;

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
    async fn after_bulk_load(&self) -> Result<()>;

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

    /// Folds up the deltas of the agent counts that triggers accumulate on a shared database,
    /// and keeps the planner's statistics up with a fast-growing fleet: the server that sweeps
    /// asks for it now and then.
    async fn fold_counts(&self) -> Result<()>;
}

/// What a search matches of an agent, and the sort keys that never change: what the read model
/// keeps of each agent in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Searchable {
    pub id: i64,
    pub ip: String,
    pub hostname: String,
    pub group: Option<String>,
    pub os: String,
    pub version: String,
    pub machine_id: Option<String>,
    pub registered_at: Timestamp,
}

impl From<&Agent> for Searchable {
    fn from(agent: &Agent) -> Self {
        Self {
            id: agent.id,
            ip: agent.ip.clone(),
            hostname: agent.hostname.clone(),
            group: agent.group.clone(),
            os: agent.os.clone(),
            version: agent.version.clone(),
            machine_id: agent.machine_id.clone(),
            registered_at: agent.registered_at,
        }
    }
}

/// The agent list as the database answers it, and the reads the read model's index builds on.
#[async_trait]
pub trait ListStore: Send + Sync {
    /// The matching agents of one page, and how many match in all (a search by a scan, its
    /// count stopping at [`SEARCH_COUNT_LIMIT`]).
    async fn list(&self, filter: &ListFilter) -> Result<Listed>;

    /// How many agents `filter` matches, every one counted.
    async fn count(&self, filter: &ListFilter) -> Result<u64>;

    /// The page `filter` asks for, without its count.
    async fn page(&self, filter: &ListFilter) -> Result<Vec<Agent>>;

    /// Those of the agents `ids` that exist, sorted and paged as `filter` says; its conditions
    /// are not applied.
    async fn agents_among(&self, ids: &[i64], filter: &ListFilter) -> Result<Vec<Agent>>;

    /// Of `ids`, those that `filter`'s conditions match, in id order (descending when asked).
    async fn narrow(&self, ids: &[i64], filter: &ListFilter, descending: bool) -> Result<Vec<i64>>;

    /// Sends every matching agent to `sink` (the set that matched when it began, each row as it
    /// is when its chunk is read), waiting while the sink is full without holding a database
    /// connection; stops early when the receiver is gone.
    async fn list_each(
        &self,
        filter: &ListFilter,
        sink: &tokio::sync::mpsc::Sender<Result<Agent>>,
    ) -> Result<()>;

    async fn summary(&self) -> Result<Summary>;

    /// What a search matches of every agent, given to `each` in id order, read by one query on
    /// one connection (SQLite's page cache and memory map are per connection: a read of every
    /// agent spread over the pool's connections would be held in memory by each).
    async fn each_searchable(&self, each: &mut (dyn FnMut(Searchable) + Send)) -> Result<()>;

    /// What a search matches of those of the agents `ids` that exist.
    async fn searchables_among(&self, ids: &[i64]) -> Result<Vec<Searchable>>;
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
