//! What this server has heard from its agents: the last heartbeat of each agent known to be
//! running, with its key, kept in memory and written in batches.
//!
//! Heartbeats are the hot path (every agent, every interval), so they never write to the
//! database themselves: last-seen times wait here for the next flush.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use plura_proto::{Agent, Timestamp};

/// Which heard agents a flush writes (see `LivenessPolicy::due`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Every agent heard since its last write.
    AllHeard,
    /// The agents heard `heard_after` past their written time, or heard since a written time
    /// older than `written_before`.
    Aged {
        heard_after: Duration,
        written_before: Timestamp,
    },
}

impl Due {
    fn is_due(self, seen: &Seen) -> bool {
        seen.at > seen.written
            && match self {
                Self::AllHeard => true,
                Self::Aged {
                    heard_after,
                    written_before,
                } => seen.at >= seen.written.plus(heard_after) || seen.written < written_before,
            }
    }
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Timestamp,
    /// The last-seen time the database has, as far as this server knows.
    written: Timestamp,
    /// The SHA-256 of the agent's key, which its heartbeats must carry.
    key: [u8; 32],
}

/// A written time that is due at the next flush.
const NEVER_WRITTEN: Timestamp = Timestamp::from_millis(0);

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
pub struct RunningAgents {
    seen: Mutex<HashMap<i64, Seen>>,
}

impl RunningAgents {
    /// Notes a heartbeat of a running agent known here with this key.
    pub fn heartbeat(&self, id: i64, key: &[u8; 32], at: Timestamp) -> Heartbeat {
        match self.seen.lock().unwrap().get_mut(&id) {
            Some(seen) if seen.key == *key => {
                seen.at = at;
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
            written: if written { at } else { NEVER_WRITTEN },
            key,
        };
        self.seen.lock().unwrap().insert(id, seen);
    }

    /// Tracks a running agent the database knows, unless this server tracks it already (with
    /// a heartbeat perhaps not yet written, or a key from a login since).
    pub fn remember_known(&self, id: i64, key: [u8; 32], at: Timestamp) {
        let seen = Seen {
            at,
            written: at,
            key,
        };
        self.seen.lock().unwrap().entry(id).or_insert(seen);
    }

    /// How many agents are tracked.
    pub fn tracked(&self) -> usize {
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

    /// The heartbeats `due` to be written (agent, time, key), then taken as written.
    pub fn take_due(&self, due: Due) -> Vec<(i64, Timestamp, [u8; 32])> {
        let mut seen = self.seen.lock().unwrap();
        seen.iter_mut()
            .filter(|(_, s)| due.is_due(s))
            .map(|(id, s)| {
                s.written = s.at;
                (*id, s.at, s.key)
            })
            .collect()
    }

    /// A flush of `taken` failed, or changes elsewhere were missed: they are due again.
    pub fn due_again(&self, taken: impl IntoIterator<Item = i64>) {
        let mut seen = self.seen.lock().unwrap();
        for id in taken {
            if let Some(s) = seen.get_mut(&id) {
                s.written = NEVER_WRITTEN;
            }
        }
    }

    /// Every agent tracked here.
    pub fn ids(&self) -> Vec<i64> {
        self.seen.lock().unwrap().keys().copied().collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::LivenessPolicy;

    const KEY: [u8; 32] = [7; 32];
    const INTERVAL: Duration = Duration::from_secs(10);

    fn at(seconds: f64) -> Timestamp {
        Timestamp::from_millis(1_000_000 + (seconds * 1000.0) as i64)
    }

    fn alone(now: f64) -> Due {
        let policy = LivenessPolicy {
            heartbeat_interval: INTERVAL,
            ..LivenessPolicy::default()
        };
        policy.due(false, at(now))
    }

    fn due(heard: &RunningAgents, due: Due) -> Vec<(i64, Timestamp)> {
        let mut due: Vec<_> = heard
            .take_due(due)
            .into_iter()
            .map(|(id, at, _)| (id, at))
            .collect();
        due.sort();
        due
    }

    /// Heartbeats every `period` s from 0 to `until`, a flush every 2 s: which were written.
    fn written_over(period: f64, until: f64) -> Vec<Timestamp> {
        let heard = RunningAgents::default();
        heard.remember(1, KEY, at(0.0), true);
        let (mut written, mut next_beat, mut tick) = (Vec::new(), period, 0.3);
        while tick < until {
            while next_beat <= tick {
                heard.heartbeat(1, &KEY, at(next_beat));
                next_beat += period;
            }
            written.extend(due(&heard, alone(tick)).into_iter().map(|(_, at)| at));
            tick += 2.0;
        }
        written
    }

    #[test]
    fn alone_every_second_heartbeat_is_written_whatever_its_phase() {
        for period in [9.0, 10.0, 10.4, 11.0, 12.0] {
            let written = written_over(period, 600.0);
            let beats = (600.0 / period) as usize;
            assert!(
                (beats / 2 - 1..=beats / 2 + 1).contains(&written.len()),
                "{} of {beats} heartbeats written every {period} s",
                written.len()
            );
        }
    }

    #[test]
    fn alone_the_written_time_stays_within_the_silence_limit() {
        // An agent heard every 14 s, late each time: each written time is written before it is
        // 25 s old (the limit of 30 s less half an interval), as of the flush.
        let heard = RunningAgents::default();
        heard.remember(1, KEY, at(0.0), true);
        let mut written = at(0.0);
        let (mut next_beat, mut tick) = (14.0, 0.0);
        while tick < 300.0 {
            while next_beat <= tick {
                heard.heartbeat(1, &KEY, at(next_beat));
                next_beat += 14.0;
            }
            if let Some((_, at)) = due(&heard, alone(tick)).pop() {
                written = at;
            }
            let latest = at(next_beat - 14.0);
            assert!(
                written >= latest.min(at(tick - 25.0)),
                "at {tick} s: written {written:?}, heard {latest:?}"
            );
            tick += 2.0;
        }
    }

    #[test]
    fn shared_or_last_every_heartbeat_heard_is_written() {
        let heard = RunningAgents::default();
        heard.remember(1, KEY, at(0.0), true);
        heard.remember(2, KEY, at(0.0), true);
        heard.heartbeat(1, &KEY, at(0.5));
        assert_eq!(due(&heard, alone(0.6)), []);
        assert_eq!(due(&heard, Due::AllHeard), [(1, at(0.5))]);
        assert_eq!(due(&heard, Due::AllHeard), []);
    }

    #[test]
    fn unwritten_and_failed_heartbeats_are_due_at_once() {
        let heard = RunningAgents::default();
        heard.remember(1, KEY, at(0.0), false);
        heard.remember_known(2, KEY, at(0.0));
        assert_eq!(due(&heard, alone(0.0)), [(1, at(0.0))]);
        heard.due_again([1, 2]);
        assert_eq!(due(&heard, alone(0.0)), [(1, at(0.0)), (2, at(0.0))]);
        assert_eq!(
            heard.heartbeat(3, &KEY, at(1.0)),
            Heartbeat::Ask,
            "not tracked"
        );
        assert_eq!(
            heard.heartbeat(1, &[8; 32], at(1.0)),
            Heartbeat::Ask,
            "another key"
        );
    }
}
