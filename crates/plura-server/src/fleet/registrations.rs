//! The bound on registrations (`--max-agents`): a new identity is taken only while the fleet
//! holds fewer agents than the bound, counting those being registered right now, so logins in
//! flight together cannot pass it. A known identity always logs in. The first refusal after
//! the fleet reaches its bound is alerted; every refusal is counted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use plura_proto::{Agent, AgentStatus, AlertKind, Timestamp};

use crate::metrics::Metrics;
use crate::read_model::ReadModel;
use crate::store::{self, Store};

pub struct Registrations {
    max: Option<u64>,
    /// New identities admitted and not yet committed.
    in_flight: AtomicU64,
    /// Whether the refusals since the fleet last had room were alerted.
    alerted: AtomicBool,
}

/// A new identity was refused: the fleet holds `max` agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentLimit {
    pub max: u64,
}

impl std::fmt::Display for AgentLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the fleet holds the {} agents it may (--max-agents); known agents still log in, a \
             new one is taken once an agent is deleted or the limit is raised",
            self.max
        )
    }
}

/// A place taken for a new identity until its registration commits (or fails).
pub struct Reservation<'a>(Option<&'a AtomicU64>);

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(in_flight) = self.0 {
            in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Registrations {
    pub fn new(max: Option<u64>) -> Self {
        Self {
            max,
            in_flight: AtomicU64::new(0),
            alerted: AtomicBool::new(false),
        }
    }

    /// Admits (ip, hostname): a known identity, or a new one while there is room. A refusal is
    /// counted, and alerted (the identity as `claimed` tells it) if it is the first since the
    /// fleet had room.
    pub async fn admit(
        &self,
        known: &ReadModel,
        store: &dyn Store,
        metrics: &Metrics,
        (ip, hostname): (&str, &str),
        claimed: impl FnOnce() -> Agent,
    ) -> store::Result<Result<Reservation<'_>, AgentLimit>> {
        let Some(max) = self.max else {
            return Ok(Ok(Reservation(None)));
        };
        if known.is_registered(ip, hostname).await? {
            return Ok(Ok(Reservation(None)));
        }
        let ahead = self.in_flight.fetch_add(1, Ordering::SeqCst);
        let reservation = Reservation(Some(&self.in_flight));
        if known.agent_count().await? + ahead < max {
            self.alerted.store(false, Ordering::SeqCst);
            return Ok(Ok(reservation));
        }
        drop(reservation);
        let limit = AgentLimit { max };
        metrics.registrations_refused.inc();
        if !self.alerted.swap(true, Ordering::SeqCst) {
            tracing::warn!(%ip, %hostname, "new agent refused: {limit}");
            store
                .record_alert(
                    AlertKind::RegistrationRefused,
                    &claimed(),
                    &limit.to_string(),
                    Timestamp::now(),
                )
                .await?;
        }
        Ok(Err(limit))
    }
}

/// A new identity as an alert of its refusal shows it: never registered, so it has no id.
pub fn claimed((ip, hostname): (&str, &str), kind: &str, os: &str) -> Agent {
    Agent {
        id: 0,
        ip: ip.to_string(),
        hostname: hostname.to_string(),
        status: AgentStatus::Unknown,
        enabled: true,
        group: None,
        kind: kind.to_string(),
        os: os.to_string(),
        version: String::new(),
        machine_id: None,
        source_ip: None,
        registered_at: Timestamp::now(),
        last_login_at: None,
        last_seen_at: None,
        last_takeover_at: None,
        cloud: Default::default(),
    }
}
