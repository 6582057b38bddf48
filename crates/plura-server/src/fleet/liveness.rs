//! How liveness is judged (the policy), and what this server has heard from its agents: the
//! last heartbeat of each agent known to be running, kept in memory and written in batches.
//!
//! Heartbeats are the hot path (every agent, every interval), so they never write to the
//! database themselves: last-seen times wait here for the next flush.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use plura_proto::{Agent, Timestamp};

/// How liveness is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessPolicy {
    /// Told to agents at login; three of them without a heartbeat make an agent `stopped`.
    pub heartbeat_interval: Duration,
    /// Agents stopped for longer than this are deleted (off when `None`).
    pub prune_stopped_after: Option<Duration>,
    /// History events older than this are deleted (kept forever when `None`).
    pub keep_events_for: Option<Duration>,
    /// How often the fleet's counts are sampled for its chart over time.
    pub sample_every: Duration,
}

/// The fleet's counts are sampled once a minute: 10,080 rows a week.
pub const DEFAULT_SAMPLE_EVERY: Duration = Duration::from_secs(60);

/// How long agents' history is kept by default: a quarter, long enough for an incident review,
/// short enough that Auto Scaling churn (several events per instance) cannot grow it forever.
pub const DEFAULT_EVENT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

impl Default for LivenessPolicy {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(10),
            prune_stopped_after: None,
            keep_events_for: Some(DEFAULT_EVENT_RETENTION),
            sample_every: DEFAULT_SAMPLE_EVERY,
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
    /// The SHA-256 of the agent's key, which its heartbeats must carry.
    key: [u8; 32],
}

/// What the memory says of a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// A running agent with this key: noted, to be written with the next flush.
    Noted,
    /// Not known here, or with another key (perhaps issued by another server since): the
    /// database decides.
    Ask,
}

/// Agents known to be running, with their key and the last heartbeat this server took from each.
#[derive(Default)]
pub struct Heard {
    seen: Mutex<HashMap<i64, Seen>>,
}

impl Heard {
    /// Notes a heartbeat of a running agent known here with this key.
    pub fn heartbeat(&self, id: i64, key: &[u8; 32], at: Timestamp) -> Heartbeat {
        match self.seen.lock().unwrap().get_mut(&id) {
            Some(seen) if seen.key == *key => {
                seen.at = at;
                seen.dirty = true;
                Heartbeat::Noted
            }
            _ => Heartbeat::Ask,
        }
    }

    /// Starts tracking a running agent and its key; `written` when the database has `at`
    /// already.
    pub fn remember(&self, id: i64, key: [u8; 32], at: Timestamp, written: bool) {
        let seen = Seen {
            at,
            dirty: !written,
            key,
        };
        self.seen.lock().unwrap().insert(id, seen);
    }

    /// Tracks a running agent the database knows, unless this server tracks it already (with
    /// a heartbeat perhaps not yet written, or a key from a login since).
    pub fn remember_known(&self, id: i64, key: [u8; 32], at: Timestamp) {
        let seen = Seen {
            at,
            dirty: false,
            key,
        };
        self.seen.lock().unwrap().entry(id).or_insert(seen);
    }

    /// How many agents are tracked.
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn forget(&self, id: i64) {
        self.seen.lock().unwrap().remove(&id);
    }

    /// Puts the freshest last-seen this server knows (perhaps not flushed yet) into `agent`.
    pub fn overlay(&self, agent: &mut Agent) {
        if let Some(seen) = self.seen.lock().unwrap().get(&agent.id)
            && agent.last_seen_at.is_none_or(|at| at < seen.at)
        {
            agent.last_seen_at = Some(seen.at);
        }
    }

    /// The heartbeats not yet written (agent, time, key), now marked written.
    pub fn take_unwritten(&self) -> Vec<(i64, Timestamp, [u8; 32])> {
        let mut seen = self.seen.lock().unwrap();
        seen.iter_mut()
            .filter(|(_, s)| s.dirty)
            .map(|(id, s)| {
                s.dirty = false;
                (*id, s.at, s.key)
            })
            .collect()
    }

    /// A flush of `taken` failed: they are to be written next time.
    pub fn unwritten_again(&self, taken: &[(i64, Timestamp, [u8; 32])]) {
        let mut seen = self.seen.lock().unwrap();
        for (id, _, _) in taken {
            if let Some(s) = seen.get_mut(id) {
                s.dirty = true;
            }
        }
    }

    /// Forgets the agents of `stale` that still have the key given with them (a login through
    /// this server may have brought a new one meanwhile); answers how many are tracked.
    pub fn forget_stale(&self, stale: &[(i64, [u8; 32])]) -> usize {
        let mut seen = self.seen.lock().unwrap();
        for (id, key) in stale {
            if seen.get(id).is_some_and(|s| s.key == *key) {
                seen.remove(id);
            }
        }
        seen.len()
    }
}
