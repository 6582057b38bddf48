//! The agent lifecycle: login, heartbeat, logout, and the timer that turns silent agents
//! `stopped`, with every change fanned out to the live stream.
//!
//! Heartbeats are the hot path (every agent, every interval), so they never write to the
//! database: last-seen times are kept in memory and flushed in batches on the same timer that
//! looks for silent agents. Only a heartbeat the memory does not know (first one after a restart,
//! or from an agent marked stopped) goes to the database.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use plura_proto::{Agent, AgentStatus, Change, EventKind, LoginRequest, Summary, Timestamp};

use crate::metrics::{EventLabel, Metrics};
use crate::store::{self, Changed, LoginOutcome, Store};

/// How liveness is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessPolicy {
    /// Told to agents at login; three of them without a heartbeat make an agent `stopped`.
    pub heartbeat_interval: Duration,
    /// Agents stopped for longer than this are deleted (off when `None`).
    pub prune_stopped_after: Option<Duration>,
    /// History events older than this are deleted (kept forever when `None`).
    pub keep_events_for: Option<Duration>,
}

/// How long agents' history is kept by default: a quarter, long enough for an incident review,
/// short enough that Auto Scaling churn (several events per instance) cannot grow it forever.
pub const DEFAULT_EVENT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

impl Default for LivenessPolicy {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(10),
            prune_stopped_after: None,
            keep_events_for: Some(DEFAULT_EVENT_RETENTION),
        }
    }
}

impl LivenessPolicy {
    pub fn silence_limit(&self) -> Duration {
        self.heartbeat_interval * 3
    }

    /// How often last-seen times are flushed and silent agents looked for: often enough that a
    /// stop shows within a fraction of the silence limit, rarely enough to batch many heartbeats.
    pub fn tick(&self) -> Duration {
        (self.heartbeat_interval / 4).clamp(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// How often the housekeeping (prune, history retention) runs: a minute, or more often when
    /// either keeps things for less; `None` when there is none to do.
    pub fn housekeeping_tick(&self) -> Option<Duration> {
        let shortest = [self.prune_stopped_after, self.keep_events_for]
            .into_iter()
            .flatten()
            .min()?;
        Some((shortest / 4).clamp(self.tick(), Duration::from_secs(60)))
    }
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Timestamp,
    /// Not yet written to the database.
    dirty: bool,
}

/// How many changes a slow live-stream reader may fall behind before it is told to resync.
const CHANGE_BACKLOG: usize = 4096;
/// How long a summary is reused when nothing changed here: every console reloads it on every
/// change, and over 100k agents it costs a few scans. Changes made through another server
/// show after this at the latest.
const SUMMARY_TTL: Duration = Duration::from_secs(2);

pub struct Registry {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    policy: LivenessPolicy,
    /// Agents known to be running, with the last heartbeat this server took from each.
    seen: Mutex<HashMap<i64, Seen>>,
    changes: broadcast::Sender<Change>,
    started: Instant,
    summary: Mutex<Option<(Instant, Summary)>>,
    /// Counts published changes, so a summary computed across one is not cached.
    generation: AtomicU64,
}

impl Registry {
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>, policy: LivenessPolicy) -> Self {
        Self {
            store,
            metrics,
            policy,
            seen: Mutex::default(),
            changes: broadcast::channel(CHANGE_BACKLOG).0,
            started: Instant::now(),
            summary: Mutex::default(),
            generation: AtomicU64::new(0),
        }
    }

    pub fn policy(&self) -> LivenessPolicy {
        self.policy
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    pub async fn login(
        &self,
        login: &LoginRequest,
        source_ip: Option<&str>,
    ) -> store::Result<LoginOutcome> {
        let now = Timestamp::now();
        let outcome = self.store.login(login, source_ip, now).await?;
        self.remember(outcome.changed.agent.id, now, false);
        self.publish(&outcome.changed);
        Ok(outcome)
    }

    /// Answers whether the agent exists (the agent logs in again when it does not).
    pub async fn heartbeat(&self, id: i64) -> store::Result<bool> {
        let now = Timestamp::now();
        self.metrics.heartbeats.inc();
        if let Some(seen) = self.seen.lock().unwrap().get_mut(&id) {
            *seen = Seen {
                at: now,
                dirty: true,
            };
            return Ok(true);
        }
        let Some(changed) = self.store.heartbeat(id, now).await? else {
            return Ok(false);
        };
        // A resume wrote last-seen already; a plain heartbeat is left to the next flush.
        self.remember(id, now, changed.events.is_empty());
        self.publish(&changed);
        Ok(true)
    }

    pub async fn logout(&self, id: i64) -> store::Result<Option<Agent>> {
        let changed = self.store.logout(id, Timestamp::now()).await?;
        Ok(changed.map(|changed| {
            self.publish(&changed);
            changed.agent
        }))
    }

    /// The console's cards, from a short cache that every change made here clears.
    pub async fn summary(&self) -> store::Result<Summary> {
        if let Some((at, summary)) = self.summary.lock().unwrap().as_ref()
            && at.elapsed() < SUMMARY_TTL
        {
            return Ok(summary.clone());
        }
        let asked = (Instant::now(), self.generation.load(Ordering::SeqCst));
        let summary = self.store.summary().await?;
        let mut cache = self.summary.lock().unwrap();
        // Not if a change was published while the query ran: it may predate the change.
        if self.generation.load(Ordering::SeqCst) == asked.1 {
            *cache = Some((asked.0, summary.clone()));
        }
        Ok(summary)
    }

    /// Tells the live stream and the metrics about a change, and forgets agents that are no
    /// longer running.
    pub fn publish(&self, changed: &Changed) {
        if !changed.events.is_empty() {
            let mut cache = self.summary.lock().unwrap();
            self.generation.fetch_add(1, Ordering::SeqCst);
            *cache = None;
        }
        if changed.agent.status != AgentStatus::Running {
            self.seen.lock().unwrap().remove(&changed.agent.id);
        }
        for event in &changed.events {
            self.metrics
                .agent_events
                .get_or_create(&EventLabel {
                    event: event.event.as_str(),
                })
                .inc();
            let gone = matches!(event.event, EventKind::Deleted | EventKind::Pruned);
            // No receiver is fine: nobody is watching the console.
            let _ = self.changes.send(Change {
                agent_id: changed.agent.id,
                at: event.at,
                event: event.event,
                detail: event.detail.clone(),
                agent: (!gone).then(|| {
                    let mut agent = changed.agent.clone();
                    self.overlay(&mut agent);
                    agent
                }),
            });
            if gone {
                self.seen.lock().unwrap().remove(&changed.agent.id);
            }
        }
    }

    /// Puts the freshest last-seen this server knows (perhaps not flushed yet) into `agent`.
    pub fn overlay(&self, agent: &mut Agent) {
        if let Some(seen) = self.seen.lock().unwrap().get(&agent.id)
            && agent.last_seen_at.is_none_or(|at| at < seen.at)
        {
            agent.last_seen_at = Some(seen.at);
        }
    }

    fn remember(&self, id: i64, at: Timestamp, dirty: bool) {
        self.seen.lock().unwrap().insert(id, Seen { at, dirty });
    }

    /// Writes the heartbeats taken since the last flush. Agents the database no longer has as
    /// running (deleted, or stopped by another server) are forgotten, so their next heartbeat
    /// goes to the database and resumes them or answers 404.
    pub async fn flush(&self) -> store::Result<()> {
        let dirty: Vec<(i64, Timestamp)> = {
            let mut seen = self.seen.lock().unwrap();
            seen.iter_mut()
                .filter(|(_, s)| s.dirty)
                .map(|(id, s)| {
                    s.dirty = false;
                    (*id, s.at)
                })
                .collect()
        };
        if dirty.is_empty() {
            return Ok(());
        }
        let found = match self.store.flush_last_seen(&dirty).await {
            Ok(found) => found,
            Err(e) => {
                let mut seen = self.seen.lock().unwrap();
                for (id, _) in &dirty {
                    if let Some(s) = seen.get_mut(id) {
                        s.dirty = true;
                    }
                }
                return Err(e);
            }
        };
        self.metrics.flushed_rows.inc_by(found.len() as u64);
        let running: HashMap<i64, AgentStatus> = found.into_iter().collect();
        let mut seen = self.seen.lock().unwrap();
        for (id, _) in &dirty {
            if running.get(id) != Some(&AgentStatus::Running) {
                seen.remove(id);
            }
        }
        self.metrics.tracked_agents.set(seen.len() as i64);
        Ok(())
    }

    /// Marks stopped the agents silent for longer than the limit. Not during the first limit
    /// after start: agents that kept running while this server was down have not had the time
    /// to send a heartbeat yet.
    pub async fn stop_silent(&self) -> store::Result<()> {
        let limit = self.policy.silence_limit();
        if self.started.elapsed() < limit {
            return Ok(());
        }
        let now = Timestamp::now();
        let stopped = self.store.stop_silent(now.minus(limit), now).await?;
        self.publish_all(&stopped, "agent stopped: no heartbeat");
        Ok(())
    }

    /// Logs and publishes what a sweep of the policy changed.
    fn publish_all(&self, changes: &[Changed], what: &str) {
        for changed in changes {
            tracing::info!(
                agent = changed.agent.id,
                ip = %changed.agent.ip,
                hostname = %changed.agent.hostname,
                "{what}"
            );
            self.publish(changed);
        }
    }

    /// Deletes long-stopped agents and old history, as the policy says.
    pub async fn housekeeping(&self) -> store::Result<()> {
        let now = Timestamp::now();
        if let Some(after) = self.policy.prune_stopped_after {
            let pruned = self.store.prune_stopped(now.minus(after), now).await?;
            self.publish_all(&pruned, "agent pruned after a long stop");
        }
        if let Some(keep) = self.policy.keep_events_for {
            let deleted = self.store.delete_events_before(now.minus(keep)).await?;
            if deleted > 0 {
                tracing::info!("deleted {deleted} history events older than {keep:?}");
            }
        }
        Ok(())
    }

    /// The liveness timer, until `shutdown`; then a last flush so no heartbeat is lost.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.policy.tick());
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let housekeeping = self.policy.housekeeping_tick();
        let mut housekeeping_tick =
            tokio::time::interval(housekeeping.unwrap_or(Duration::from_secs(60)));
        housekeeping_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    // Flush first, so an agent whose heartbeat only this server holds is not
                    // taken for silent.
                    let result = match self.flush().await {
                        Ok(()) => self.stop_silent().await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = result {
                        tracing::warn!("liveness check failed, will retry: {e}");
                    }
                }
                _ = housekeeping_tick.tick(), if housekeeping.is_some() => {
                    if let Err(e) = self.housekeeping().await {
                        tracing::warn!("housekeeping failed, will retry: {e}");
                    }
                }
            }
        }
        if let Err(e) = self.flush().await {
            tracing::error!("last flush of last-seen times failed: {e}");
        }
    }
}
