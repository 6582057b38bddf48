//! The fleet: the domain's rules over the agents (login, heartbeat, logout, the sweeps, the
//! bound on registrations), and the one way to see and change them. It owns the store, the read
//! model kept in memory, this server's place among those sharing the database, and the fan-out
//! of changes, so every change is published (live stream, metrics) and every read shows the
//! freshest last-seen: a caller has no other way to reach the agents.

mod changes;
mod cloud;
mod liveness;
mod registrations;
mod sweeps;

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use plura_proto::{
    Agent, AgentCloud, AgentStatus, AuditRecord, Event, FleetHistory, LoginRequest, PatchAgent,
    RegisterAgent, Summary, Timestamp,
};

use crate::cluster::{Cluster, Notice};
use crate::metrics::Metrics;
use crate::read_model::{Heartbeat, News, ReadModel, RunningAgents};
use crate::secret;
use crate::store::{
    self, Changed, Doing, Elsewhere, KeyedCall, ListFilter, Listed, LoginOutcome, Store,
};
use changes::ChangeFeed;
pub use changes::Published;
pub use cloud::{CloudPolicy, DEFAULT_COVERAGE_GRACE, DEFAULT_VERDICT_WAIT};

pub use liveness::{DEFAULT_EVENT_RETENTION, DEFAULT_HEARTBEAT_INTERVAL, LivenessPolicy};
pub use registrations::AgentLimit;
use registrations::Registrations;

/// How long a readiness check's success is reused.
const READINESS_REUSED: Duration = Duration::from_secs(1);

/// Agents read ahead of a slow reader of a stream.
const STREAM_BUFFER: usize = 256;

/// How long a list export may run, and how long its reader may take nothing.
#[derive(Debug, Clone, Copy)]
pub struct StreamBounds {
    pub deadline: Duration,
    pub stall: Duration,
}

/// Returns once `sink` has stayed full (its receiver taking nothing) for `limit`.
async fn full_for<T>(sink: &mpsc::Sender<T>, limit: Duration) {
    const LOOK_EVERY: Duration = Duration::from_millis(250);
    let mut full_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        if sink.capacity() > 0 {
            full_since = None;
            continue;
        }
        let since = *full_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= limit {
            return;
        }
    }
}

pub struct Fleet {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    policy: LivenessPolicy,
    read_model: Arc<ReadModel>,
    cluster: Cluster,
    feed: ChangeFeed,
    /// Since when the database has served this server's ticks without a failure (`None` at start
    /// and while it does not): silence is judged only on time in which agents could be heard.
    reachable_since: std::sync::Mutex<Option<Timestamp>>,
    /// When the last readiness check succeeded, if the last one did.
    readiness: tokio::sync::Mutex<Option<Instant>>,
    /// Notified at every tick while this server leads: alerts may be waiting.
    alerts_due: Arc<Notify>,
    /// When this server last sampled the fleet's counts.
    sampled: std::sync::Mutex<Option<Instant>>,
    registrations: Registrations,
}

/// What a login did, for the agent's answer.
#[derive(Debug, Clone)]
pub struct Admission {
    pub agent: Agent,
    pub created: bool,
    /// The agent's new key; the previous one no longer works.
    pub key: String,
}

impl Fleet {
    /// `max_agents` bounds how many identities may be registered (`None`: no bound).
    pub fn new(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        policy: LivenessPolicy,
        max_agents: Option<u64>,
    ) -> Self {
        Self {
            registrations: Registrations::new(max_agents),
            read_model: ReadModel::new(store.clone()),
            cluster: Cluster::of(store.as_ref()),
            store,
            feed: ChangeFeed::new(metrics.clone()),
            metrics,
            policy,
            reachable_since: std::sync::Mutex::default(),
            readiness: tokio::sync::Mutex::default(),
            alerts_due: Arc::default(),
            sampled: std::sync::Mutex::default(),
        }
    }

    /// What the alerter waits on: notified at every tick while this server leads.
    pub fn alerts_due(&self) -> Arc<Notify> {
        self.alerts_due.clone()
    }

    pub fn policy(&self) -> LivenessPolicy {
        self.policy
    }

    /// Every change from now on, as it is published.
    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.feed.subscribe()
    }

    /// Registers an unknown (ip, hostname) or brings the known one back to running.
    pub async fn login(
        &self,
        login: &LoginRequest,
        source_ip: Option<&str>,
    ) -> store::Result<Result<Admission, AgentLimit>> {
        let identity = (login.ip.as_str(), login.hostname.as_str());
        let claimed = || Agent {
            version: login.version.clone(),
            machine_id: login.machine_id.clone(),
            source_ip: source_ip.map(str::to_string),
            cloud: AgentCloud {
                labels: login.cloud.clone(),
                ..AgentCloud::default()
            },
            ..registrations::claimed(identity, &login.kind, &login.os)
        };
        self.within_bound(identity, claimed, self.log_in(login, source_ip))
            .await
    }

    /// Runs `register` (of `identity`) if the identity is known or the fleet has room for it.
    async fn within_bound<T>(
        &self,
        identity: (&str, &str),
        claimed: impl FnOnce() -> Agent,
        register: impl Future<Output = store::Result<T>>,
    ) -> store::Result<Result<T, AgentLimit>> {
        let admitted = self
            .registrations
            .admit(
                &self.read_model,
                self.store.as_ref(),
                &self.metrics,
                identity,
                claimed,
            )
            .await?;
        match admitted {
            // Held until the registration is written.
            Ok(_reserved) => register.await.map(Ok),
            Err(limit) => Ok(Err(limit)),
        }
    }

    async fn log_in(
        &self,
        login: &LoginRequest,
        source_ip: Option<&str>,
    ) -> store::Result<Admission> {
        let now = Timestamp::now();
        let key = secret::new_agent_key();
        let digest = secret::digest(&key);
        let written = store::Login {
            request: login.clone(),
            source_ip: source_ip.map(str::to_string),
            key_hash: secret::hex(&digest),
            at: now,
            heard_since: now.minus(self.policy.silence_limit()),
            unheard_of: self.read_model.heard_of(&login.ip, &login.hostname) == Some(false),
        };
        let LoginOutcome {
            changed,
            created,
            displaced_running,
            ..
        } = self
            .store
            .login(written)
            .await
            .doing(|| format!("writing the login of {} / {}", login.ip, login.hostname))?;
        if displaced_running {
            self.metrics.takeovers_of_running.inc();
            let agent = &changed.agent;
            tracing::warn!(
                agent = agent.id,
                ip = %agent.ip,
                hostname = %agent.hostname,
                "identity taken over while its holder was still running"
            );
        }
        if created {
            self.metrics.registrations.inc();
        }
        self.running().remember(changed.agent.id, digest, now, true);
        Ok(Admission {
            agent: self.publish(changed),
            created,
            key,
        })
    }

    /// A heartbeat with the agent's key.
    pub async fn heartbeat(&self, id: i64, key: &str) -> store::Result<KeyedCall<()>> {
        let now = Timestamp::now();
        let digest = secret::digest(key);
        if self.running().heartbeat(id, &digest, now) == Heartbeat::Noted {
            self.metrics.heartbeats.inc();
            return Ok(KeyedCall::Done(()));
        }
        let call = self
            .store
            .heartbeat(id, &secret::hex(&digest), now)
            .await
            .doing(|| format!("checking the heartbeat of agent {id}"))?;
        Ok(call.map(|resumed| {
            self.metrics.heartbeats.inc();
            // A resume wrote last-seen already; a plain heartbeat is left to the next flush.
            self.running().remember(id, digest, now, resumed.is_some());
            if let Some(resumed) = resumed {
                self.publish(resumed);
            }
        }))
    }

    /// Goodbye from the agent, with its key: stopped at once.
    pub async fn logout(&self, id: i64, key: &str) -> store::Result<KeyedCall<Agent>> {
        let key_hash = secret::hash_token(key);
        let call = self
            .store
            .logout(id, &key_hash, Timestamp::now())
            .await
            .doing(|| format!("writing the logout of agent {id}"))?;
        Ok(call.map(|changed| self.publish(changed)))
    }

    /// An operator registers a system by hand; it is `unknown` until its agent logs in.
    pub async fn register(
        &self,
        agent: &RegisterAgent,
        actor: &str,
    ) -> store::Result<Result<Agent, AgentLimit>> {
        let identity = (agent.ip.as_str(), agent.hostname.as_str());
        let claimed = || Agent {
            group: agent.group.clone(),
            ..registrations::claimed(identity, &agent.kind, &agent.os)
        };
        let register = async {
            let changed = self
                .store
                .register(agent, actor, Timestamp::now())
                .await
                .doing(|| format!("registering {} / {}", agent.ip, agent.hostname))?;
            self.metrics.registrations.inc();
            Ok(self.publish(changed))
        };
        self.within_bound(identity, claimed, register).await
    }

    /// ON/OFF and group, by an operator.
    pub async fn patch(
        &self,
        id: i64,
        patch: &PatchAgent,
        actor: &str,
    ) -> store::Result<Option<Agent>> {
        let changed = self
            .store
            .patch(id, patch, actor, Timestamp::now())
            .await
            .doing(|| format!("changing agent {id} for {actor}"))?;
        Ok(changed.map(|changed| self.publish(changed)))
    }

    /// Deletes an agent and its history; the audit log keeps a record.
    pub async fn delete(&self, id: i64, actor: &str) -> store::Result<Option<Agent>> {
        let changed = self
            .store
            .delete(id, actor, Timestamp::now())
            .await
            .doing(|| format!("deleting agent {id} for {actor}"))?;
        Ok(changed.map(|changed| self.publish(changed)))
    }

    pub async fn agent(&self, id: i64) -> store::Result<Option<Agent>> {
        let mut agent = self
            .store
            .agent(id)
            .await
            .doing(|| format!("reading agent {id}"))?;
        if let Some(agent) = &mut agent {
            self.running().overlay(agent);
        }
        Ok(agent)
    }

    /// One page of the list (every match when the filter has no limit), and how many match.
    pub async fn list(&self, filter: &ListFilter) -> store::Result<Listed> {
        let mut listed = self
            .read_model
            .list(filter)
            .await
            .doing(|| "reading a page of the agent list".into())?;
        listed
            .agents
            .iter_mut()
            .for_each(|a| self.running().overlay(a));
        Ok(listed)
    }

    /// Every agent `filter` matches, read while the receiver takes them, for at most
    /// `bounds.deadline`. A receiver that takes nothing for `bounds.stall` (a client that
    /// stopped reading) ends the reading and cancels `stalled`, so whoever serves the reader can
    /// drop it: the reading holds no database connection while it waits, but a reader should not
    /// hold a place for ever either.
    pub fn stream(
        self: &Arc<Self>,
        filter: ListFilter,
        bounds: StreamBounds,
        stalled: CancellationToken,
    ) -> impl Stream<Item = store::Result<Agent>> + Send + 'static {
        let (sink, agents) = mpsc::channel(STREAM_BUFFER);
        let fleet = self.clone();
        tokio::spawn(async move {
            let listed =
                tokio::time::timeout(bounds.deadline, fleet.store.list_each(&filter, &sink));
            tokio::select! {
                listed = listed => match listed {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        let _ = sink.send(Err(e)).await;
                    }
                    Err(_) => tracing::warn!(
                        "a list export took longer than {:?}; cut off",
                        bounds.deadline
                    ),
                },
                () = full_for(&sink, bounds.stall) => {
                    tracing::warn!(
                        "a list export's reader took nothing for {:?}; dropped",
                        bounds.stall
                    );
                    stalled.cancel();
                }
            }
        });
        let fleet = self.clone();
        ReceiverStream::new(agents).map(move |agent| {
            agent.map(|mut agent| {
                fleet.running().overlay(&mut agent);
                agent
            })
        })
    }

    /// An agent's history, newest first; `None` if there is no such agent.
    pub async fn events(&self, id: i64, limit: u32) -> store::Result<Option<Vec<Event>>> {
        self.store
            .events(id, limit)
            .await
            .doing(|| format!("reading the history of agent {id}"))
    }

    /// Deletes and prunes, newest first.
    pub async fn audit(&self, limit: u32) -> store::Result<Vec<AuditRecord>> {
        self.store
            .audit(limit)
            .await
            .doing(|| "reading the audit log".into())
    }

    /// How many agents the in-memory search index holds, once one is loaded.
    pub fn search_index_agents(&self) -> Option<usize> {
        self.read_model.indexed_agents()
    }

    /// The console's cards, from a short cache that every change clears.
    pub async fn summary(&self) -> store::Result<Summary> {
        self.read_model
            .summary()
            .await
            .doing(|| "counting the fleet for its summary".into())
    }

    fn running(&self) -> &RunningAgents {
        self.read_model.running()
    }

    /// The fleet over the last `span`, one point per `step`.
    pub async fn history(&self, span: Duration, step: Duration) -> store::Result<FleetHistory> {
        let to = Timestamp::now();
        let from = to.minus(span);
        Ok(FleetHistory {
            from,
            to,
            step_s: step.as_secs(),
            points: self
                .store
                .fleet_history(from, step)
                .await
                .doing(|| "reading the fleet's history".into())?,
        })
    }

    /// Whether the database takes this server's writes now: `Err` says why not. Each check is a
    /// write, and `/readyz` is open to anyone: one check runs at a time, and a success is
    /// reused for a second (a failure is checked again, to see the database back at once).
    pub async fn check_database(&self) -> Result<(), String> {
        let mut succeeded = self.readiness.lock().await;
        if succeeded.is_some_and(|at| at.elapsed() < READINESS_REUSED) {
            return Ok(());
        }
        let probed = self
            .store
            .probe(self.store.server_id(), Timestamp::now())
            .await;
        *succeeded = probed.is_ok().then(Instant::now);
        probed.map_err(|e| match e.unavailable() {
            Some(why) => why.to_string(),
            None => e.to_string(),
        })
    }

    /// Tells the stream and the metrics about a change (the read model followed it as it
    /// committed); answers the agent as it now is.
    fn publish(&self, mut changed: Changed) -> Agent {
        if !changed.is_gone() && changed.agent.status == AgentStatus::Running {
            self.running().overlay(&mut changed.agent);
        }
        self.feed.publish_local(changed.changes());
        changed.agent
    }

    /// A notice from the change feed: followed by the read model, and told to this server's
    /// stream when another server made the change (this server's own were told as they
    /// committed).
    pub(super) fn heard(&self, notice: Notice) {
        let from_this_server = notice.from_this_server;
        match notice.told {
            Elsewhere::Changes(changes) => {
                self.read_model.follow(News::Told {
                    changes: &changes,
                    from_this_server,
                });
                if !from_this_server {
                    self.feed.publish(changes);
                }
            }
            Elsewhere::Missed => {
                tracing::warn!("some changes made through other servers were missed; reloading");
                self.read_model.follow(News::Missed);
                self.feed.resync();
            }
        }
    }
}
