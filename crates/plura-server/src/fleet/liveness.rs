//! How liveness is judged: the heartbeat interval and the silence limit, which heard agents each
//! flush writes, how often the timer and the housekeeping run.

use std::time::Duration;

use plura_proto::Timestamp;

use super::cloud::CloudPolicy;
use crate::read_model::Due;

/// How liveness is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessPolicy {
    /// Elsewhere to agents at login; three of them without a heartbeat make an agent `stopped`.
    pub heartbeat_interval: Duration,
    /// Agents stopped for longer than this are deleted (off when `None`).
    pub prune_stopped_after: Option<Duration>,
    /// History events older than this are deleted (kept forever when `None`).
    pub keep_events_for: Option<Duration>,
    /// How often the fleet's counts are sampled for its chart over time.
    pub sample_every: Duration,
    /// How the cloud's verdicts and coverage are weighed.
    pub cloud: CloudPolicy,
}

/// The fleet's counts are sampled once a minute: 10,080 rows a week.
pub const DEFAULT_SAMPLE_EVERY: Duration = Duration::from_secs(60);

/// How often agents heartbeat unless told otherwise.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// How long agents' history is kept by default: a quarter, long enough for an incident review,
/// short enough that Auto Scaling churn (several events per instance) cannot grow it forever.
pub const DEFAULT_EVENT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

impl Default for LivenessPolicy {
    fn default() -> Self {
        Self {
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            prune_stopped_after: None,
            keep_events_for: Some(DEFAULT_EVENT_RETENTION),
            sample_every: DEFAULT_SAMPLE_EVERY,
            cloud: CloudPolicy::default(),
        }
    }
}

impl LivenessPolicy {
    pub fn silence_limit(&self) -> Duration {
        self.heartbeat_interval * 3
    }

    /// Which heard agents the flush of the tick at `now` writes.
    ///
    /// Alone on its database (SQLite): an agent heard one and a half intervals past the time
    /// the database has, so one heard every interval is written every second heartbeat, whatever
    /// the phase of its heartbeats against the ticks (those writes are the largest cost of a
    /// large fleet); and any agent heard since, once that time is older than the silence limit
    /// less half an interval, so the sweep that follows (its cutoff taken at the same `now`)
    /// finds every agent heard within the limit fresh. A crash loses at most that much of
    /// last-seen, and a starting server stops nobody for a silence limit.
    ///
    /// Sharing it (PostgreSQL): every agent heard since its last write. When a server dies, what
    /// it heard and had not written is lost, and another server must write its agents before the
    /// sweep finds them silent, which leaves no room for an older written time.
    pub fn due(&self, shared: bool, now: Timestamp) -> Due {
        if shared {
            Due::AllHeard
        } else {
            Due::Aged {
                heard_after: self.heartbeat_interval * 3 / 2,
                written_before: now.minus(self.silence_limit() - self.heartbeat_interval / 2),
            }
        }
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
