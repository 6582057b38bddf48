//! A login: the first one registers the identity; a later one brings it back to running with
//! a new key, and is a takeover when it comes from another source address, machine id or kind
//! than the one before it.

use std::collections::{HashMap, HashSet};

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use plura_proto::{Agent, AgentCloud, AgentStatus, AlertKind, CloudLabels, EventKind, Timestamp};

use super::SqlStore;
use super::alerts::{self, NewAlert};
use super::filter::ip_sort_key;
use super::rows::{self, new_event, placeholders, rows_per_statement};
use crate::store::{Changed, Dialect, Login, LoginOutcome, Result, StoreError};

/// How often a login looks again when a concurrent first login of the same identity (on another
/// server) took the insert it tried.
const LOGIN_ATTEMPTS: usize = 3;

/// A login in a batch, and what became of it once the batch was written: the answer travels
/// with its request, never matched to it by position.
pub(super) struct Pending {
    pub(super) login: Login,
    outcome: Option<LoginOutcome>,
}

impl Pending {
    pub(super) fn new(login: Login) -> Self {
        Self {
            login,
            outcome: None,
        }
    }

    /// Its outcome, once its batch committed.
    pub(super) fn take_outcome(&mut self) -> Result<LoginOutcome> {
        self.outcome.take().ok_or_else(|| {
            StoreError::Invariant(format!(
                "the login of {} / {} got no outcome in its batch",
                self.login.request.ip, self.login.request.hostname
            ))
        })
    }
}

impl AsRef<Pending> for Pending {
    fn as_ref(&self) -> &Pending {
        self
    }
}

impl AsMut<Pending> for Pending {
    fn as_mut(&mut self) -> &mut Pending {
        self
    }
}

/// Logins in one transaction, each given its outcome only once it commits: many logins share
/// one disk flush. Each step is one statement for the whole batch (look up, update the known,
/// insert the new). Logins of the same identity go in order, a later one seeing what an
/// earlier one did.
pub(super) async fn login_together<P>(store: &SqlStore, batch: &mut [P]) -> Result<()>
where
    P: AsRef<Pending> + AsMut<Pending>,
{
    let logins: Vec<&Login> = batch.iter().map(|p| &p.as_ref().login).collect();
    let mut tx = store.begin_write().await?;
    let mut outcomes: Vec<Option<LoginOutcome>> = vec![None; logins.len()];
    let mut pending: Vec<usize> = (0..logins.len()).collect();
    let mut lost_inserts = 0;
    // The first round takes the read model's word for which identities are new, and inserts
    // them without looking them up; one registered after all (through another server, not yet
    // told) loses its insert and is looked up in the next round, as every login of a later
    // round is.
    let mut unheard_of: HashSet<usize> = pending
        .iter()
        .copied()
        .filter(|&i| logins[i].unheard_of)
        .collect();
    while !pending.is_empty() {
        let (round, later) = first_of_each_identity(&logins, pending);
        let dialect = tx.dialect();
        let lost = login_round(
            tx.conn(),
            dialect,
            &logins,
            &round,
            &unheard_of,
            &mut outcomes,
        )
        .await?;
        unheard_of.clear();
        if !lost.is_empty() {
            lost_inserts += 1;
            if lost_inserts == LOGIN_ATTEMPTS {
                let request = &logins[lost[0]].request;
                return Err(StoreError::Contended(format!(
                    "the login of {} / {}",
                    request.ip, request.hostname
                )));
            }
        }
        pending = lost.into_iter().chain(later).collect();
        pending.sort_unstable();
    }
    // Every login is done once nothing is pending; were one not, the batch fails (and its
    // logins are tried each alone) rather than commit a login nobody is told of.
    if let Some(missing) = outcomes.iter().position(Option::is_none) {
        let request = &logins[missing].request;
        return Err(StoreError::Invariant(format!(
            "the login of {} / {} got no outcome in its batch",
            request.ip, request.hostname
        )));
    }
    let done: Vec<&LoginOutcome> = outcomes.iter().flatten().collect();
    let mut alerts: Vec<NewAlert> = done.iter().copied().filter_map(login_alert).collect();
    let back: Vec<i64> = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::AgentBack)
        .map(|a| a.agent.id)
        .collect();
    if !back.is_empty() {
        let unsent = alerts::drop_held(tx.conn(), &back).await?;
        alerts.retain(|a| a.kind != AlertKind::AgentBack || !unsent.contains(&a.agent.id));
    }
    let dialect = tx.dialect();
    alerts::record(tx.conn(), dialect, &alerts).await?;
    tx.commit(done.iter().map(|o| &o.changed)).await?;
    drop(logins);
    for (pending, outcome) in batch.iter_mut().zip(outcomes) {
        pending.as_mut().outcome = outcome;
    }
    Ok(())
}

/// A takeover is alerted (saying whether the holder still ran); a plain login of an agent that
/// had stopped without a goodbye is its return.
fn login_alert(outcome: &LoginOutcome) -> Option<NewAlert<'_>> {
    let changed = &outcome.changed;
    let event = changed.events.first()?;
    let (kind, holder_running) = match event.event {
        EventKind::Takeover => (AlertKind::AgentTakenOver, Some(outcome.displaced_running)),
        EventKind::Login if outcome.was_lost => (AlertKind::AgentBack, None),
        _ => return None,
    };
    Some(NewAlert {
        kind,
        agent: &changed.agent,
        event,
        holder_running,
        held_until: None,
    })
}

type Identity<'a> = (&'a str, &'a str);

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds the four cloud labels, in their column order.
pub(super) fn bind_cloud<'q>(query: AnyQuery<'q>, cloud: &CloudLabels) -> AnyQuery<'q> {
    query
        .bind(cloud.instance_id.clone())
        .bind(cloud.zone.clone())
        .bind(cloud.instance_type.clone())
        .bind(cloud.asg.clone())
}

fn identity(login: &Login) -> Identity<'_> {
    (&login.request.ip, &login.request.hostname)
}

/// Splits `pending` (in order) into the first login of each identity, and the rest.
fn first_of_each_identity(logins: &[&Login], pending: Vec<usize>) -> (Vec<usize>, Vec<usize>) {
    let mut seen = HashSet::new();
    pending
        .into_iter()
        .partition(|&i| seen.insert(identity(logins[i])))
}

/// Logins of distinct identities: the known ones updated, the new ones inserted; those in
/// `unheard_of` are taken for new without a look-up. Answers the logins that lost to a
/// concurrent change (a first login inserted the identity, or a delete removed it): to be done
/// again.
async fn login_round(
    conn: &mut AnyConnection,
    dialect: Dialect,
    logins: &[&Login],
    round: &[usize],
    unheard_of: &HashSet<usize>,
    outcomes: &mut [Option<LoginOutcome>],
) -> Result<Vec<usize>> {
    let looked_up: Vec<usize> = round
        .iter()
        .copied()
        .filter(|i| !unheard_of.contains(i))
        .collect();
    let known = holders(conn, dialect, logins, &looked_up).await?;
    let inserts: Vec<usize> = round
        .iter()
        .copied()
        .filter(|i| !known.contains_key(i))
        .collect();
    let updates: Vec<(usize, &Previous)> = known.iter().map(|(&i, p)| (i, p)).collect();
    let mut lost: Vec<usize> = known.keys().copied().collect();
    for (i, outcome) in login_known(conn, dialect, logins, &updates).await? {
        outcomes[i] = Some(outcome);
    }
    // An update that found no row: deleted meanwhile (through another server); to insert again.
    lost.retain(|&i| outcomes[i].is_none());
    for (i, outcome) in login_new(conn, dialect, logins, &inserts).await? {
        match outcome {
            Some(outcome) => outcomes[i] = Some(outcome),
            None => lost.push(i),
        }
    }
    Ok(lost)
}

/// The current holders of the identities of `round`, by the index of their login.
async fn holders(
    conn: &mut AnyConnection,
    dialect: Dialect,
    logins: &[&Login],
    round: &[usize],
) -> Result<HashMap<usize, Previous>> {
    let mut known = HashMap::new();
    // On PostgreSQL other writers run beside the batch (heartbeat flushes, sweeps, other
    // servers' batches). The batch takes its agents' rows here, in the order of their ids, as
    // the sweep, the prune and the flush take theirs, so no two hold each a row the other
    // waits for (PostgreSQL would break such a circle only after a second, failing one); and
    // what it reads of them stays so until it commits. SQLite has one writer at a time.
    let lock = if dialect == Dialect::Sqlite {
        ""
    } else {
        " FOR UPDATE OF a"
    };
    for chunk in round.chunks(rows_per_statement(2)) {
        let sql = format!(
            "SELECT a.id, a.ip, a.hostname, a.machine_id, a.source_ip, a.kind, a.status, \
             a.last_seen_at, a.lost FROM agents a JOIN (VALUES {}) AS v \
             ON a.ip = v.column1 AND a.hostname = v.column2 ORDER BY a.id{lock}",
            placeholders(dialect, chunk.len(), 2)
        );
        let mut query = sqlx::query(&sql);
        let mut index: HashMap<Identity, usize> = HashMap::with_capacity(chunk.len());
        for &i in chunk {
            let request = &logins[i].request;
            query = query
                .bind(request.ip.clone())
                .bind(request.hostname.clone());
            index.insert(identity(logins[i]), i);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let ip: String = row.try_get("ip")?;
            let hostname: String = row.try_get("hostname")?;
            if let Some(&i) = index.get(&(ip.as_str(), hostname.as_str())) {
                known.insert(i, Previous::from_row(&row)?);
            }
        }
    }
    Ok(known)
}

/// The identity's holder before this login.
struct Previous {
    id: i64,
    machine_id: Option<String>,
    source_ip: Option<String>,
    kind: String,
    status: AgentStatus,
    last_seen_at: Option<Timestamp>,
    /// Stopped without a goodbye.
    lost: bool,
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
            lost: row.try_get::<i64, _>("lost")? != 0,
        })
    }

    /// What differs in `login` from the login before (empty: the same holder again). What was
    /// never known (a system registered by hand) does not count.
    fn differences(&self, login: &Login) -> Vec<String> {
        let mut changed = Vec::new();
        let mut compare = |what: &str, old: Option<&str>, new: Option<&str>| {
            if let (Some(old), Some(new)) = (old, new)
                && !old.is_empty()
                && old != new
            {
                changed.push(format!("{what} {old} -> {new}"));
            }
        };
        compare(
            "source",
            self.source_ip.as_deref(),
            login.source_ip.as_deref(),
        );
        // A login that leaves out the machine id this identity has is no less another machine:
        // otherwise whoever has the enrollment token could take over a running agent unseen.
        let sent = login.request.machine_id.as_deref().unwrap_or("none");
        compare("machine id", self.machine_id.as_deref(), Some(sent));
        compare("kind", Some(&self.kind), Some(&login.request.kind));
        changed
    }

    /// Whether the holder was still running when `login` came: heard within the silence limit.
    fn running_at(&self, login: &Login) -> bool {
        self.status == AgentStatus::Running
            && self
                .last_seen_at
                .is_some_and(|seen| seen >= login.heard_since)
    }
}

/// Logins of identities already registered: back to running with the agents' new details.
async fn login_known(
    conn: &mut AnyConnection,
    dialect: Dialect,
    logins: &[&Login],
    updates: &[(usize, &Previous)],
) -> Result<Vec<(usize, LoginOutcome)>> {
    let mut outcomes = Vec::with_capacity(updates.len());
    for chunk in updates.chunks(rows_per_statement(13)) {
        let sql = format!(
            "UPDATE agents SET status = 'running', \
             machine_id = COALESCE(v.column2, agents.machine_id), version = v.column3, \
             os = v.column4, kind = v.column5, source_ip = v.column6, \
             last_login_at = v.column7, last_seen_at = v.column7, key_hash = v.column8, \
             last_takeover_at = COALESCE(v.column9, agents.last_takeover_at), lost = 0, \
             cloud_verdict = NULL, cloud_verdict_at = NULL, \
             instance_id = v.column10, zone = v.column11, instance_type = v.column12, \
             asg = v.column13 \
             FROM (VALUES {}) AS v WHERE agents.id = v.column1 \
             RETURNING id, enabled, group_name, machine_id, registered_at, last_takeover_at",
            placeholders(dialect, chunk.len(), 13),
        );
        let mut query = sqlx::query(&sql);
        let mut by_id = HashMap::new();
        for &(i, previous) in chunk {
            let login = logins[i];
            let request = &login.request;
            let differences = previous.differences(login);
            let takeover = !differences.is_empty();
            query = query
                .bind(previous.id)
                .bind(request.machine_id.clone())
                .bind(request.version.clone())
                .bind(request.os.clone())
                .bind(request.kind.clone())
                .bind(login.source_ip.clone())
                .bind(login.at.as_millis())
                .bind(login.key_hash.clone())
                .bind(takeover.then(|| login.at.as_millis()));
            query = bind_cloud(query, &request.cloud);
            by_id.insert(previous.id, (i, previous, differences));
        }
        // What the update set is what the login said; only what it kept comes back, as the
        // update found it (the look-up does not read it).
        for row in query.fetch_all(&mut *conn).await? {
            let id: i64 = row.try_get("id")?;
            let Some((i, previous, differences)) = by_id.remove(&id) else {
                continue;
            };
            let agent = Agent {
                enabled: row.try_get::<i64, _>("enabled")? != 0,
                group: row.try_get("group_name")?,
                machine_id: row.try_get("machine_id")?,
                registered_at: rows::time(&row, "registered_at")?,
                last_takeover_at: rows::optional_time(&row, "last_takeover_at")?,
                ..logged_in_agent(id, logins[i])
            };
            outcomes.push((i, known_outcome(agent, previous, differences, logins[i])));
        }
    }
    Ok(outcomes)
}

/// What a login of a registered identity did, and the event that records it.
fn known_outcome(
    agent: Agent,
    previous: &Previous,
    differences: Vec<String>,
    login: &Login,
) -> LoginOutcome {
    let takeover = !differences.is_empty();
    let displaced_running = takeover && previous.running_at(login);
    let from = login.source_ip.as_deref().unwrap_or("an unknown address");
    let event = if takeover {
        let holder = match (displaced_running, previous.last_seen_at) {
            (true, Some(seen)) => format!("the previous holder was still running (heard {seen})"),
            _ => "the previous holder had stopped".to_string(),
        };
        let detail = format!("{}; {holder}", differences.join(", "));
        new_event(login.at, EventKind::Takeover, detail)
    } else {
        let detail = format!("from {from}, version {}", login.request.version);
        new_event(login.at, EventKind::Login, detail)
    };
    LoginOutcome {
        changed: Changed {
            agent,
            events: vec![event],
        },
        created: false,
        displaced_running,
        was_lost: previous.lost,
    }
}

/// Agent `id` as `login` left it: running, with the details it gave, at its time; and as a
/// first login registers it (enabled, in no group, never taken over).
fn logged_in_agent(id: i64, login: &Login) -> Agent {
    let request = &login.request;
    Agent {
        id,
        ip: request.ip.clone(),
        hostname: request.hostname.clone(),
        status: AgentStatus::Running,
        enabled: true,
        group: None,
        kind: request.kind.clone(),
        os: request.os.clone(),
        version: request.version.clone(),
        machine_id: request.machine_id.clone(),
        source_ip: login.source_ip.clone(),
        registered_at: login.at,
        last_login_at: Some(login.at),
        last_seen_at: Some(login.at),
        last_takeover_at: None,
        cloud: AgentCloud {
            labels: request.cloud.clone(),
            ..AgentCloud::default()
        },
    }
}

/// First logins of identities; an outcome is `None` when a concurrent login (another server's)
/// registered the identity first.
async fn login_new(
    conn: &mut AnyConnection,
    dialect: Dialect,
    logins: &[&Login],
    inserts: &[usize],
) -> Result<Vec<(usize, Option<LoginOutcome>)>> {
    let mut outcomes = Vec::with_capacity(inserts.len());
    for chunk in inserts.chunks(rows_per_statement(14)) {
        let sql = format!(
            "INSERT INTO agents (ip, ip_key, hostname, status, enabled, kind, os, version, \
             machine_id, source_ip, registered_at, last_login_at, last_seen_at, key_hash, \
             instance_id, zone, instance_type, asg) \
             SELECT v.column1, v.column2, v.column3, 'running', 1, v.column4, v.column5, \
             v.column6, v.column7, v.column8, v.column9, v.column9, v.column9, v.column10, \
             v.column11, v.column12, v.column13, v.column14 \
             FROM (VALUES {}) AS v WHERE true \
             ON CONFLICT (ip, hostname) DO NOTHING RETURNING id, ip, hostname",
            placeholders(dialect, chunk.len(), 14)
        );
        let mut query = sqlx::query(&sql);
        for &i in chunk {
            let login = logins[i];
            let request = &login.request;
            query = query
                .bind(request.ip.clone())
                .bind(ip_sort_key(&request.ip))
                .bind(request.hostname.clone())
                .bind(request.kind.clone())
                .bind(request.os.clone())
                .bind(request.version.clone())
                .bind(request.machine_id.clone())
                .bind(login.source_ip.clone())
                .bind(login.at.as_millis())
                .bind(login.key_hash.clone());
            query = bind_cloud(query, &request.cloud);
        }
        // Only the ids come back: the rest of a new agent is what its login said, and the
        // copies of every column were a sixth of SQLite's work per registration.
        let mut created: HashMap<(String, String), i64> = HashMap::new();
        for row in query.fetch_all(&mut *conn).await? {
            created.insert(
                (row.try_get("ip")?, row.try_get("hostname")?),
                row.try_get("id")?,
            );
        }
        for &i in chunk {
            let login = logins[i];
            let (ip, hostname) = identity(login);
            let outcome = created
                .remove(&(ip.to_string(), hostname.to_string()))
                .map(|id| {
                    let agent = logged_in_agent(id, login);
                    let from = login.source_ip.as_deref().unwrap_or("an unknown address");
                    let detail =
                        format!("first login from {from}, version {}", login.request.version);
                    LoginOutcome {
                        changed: Changed {
                            agent,
                            events: vec![new_event(login.at, EventKind::Registered, detail)],
                        },
                        created: true,
                        displaced_running: false,
                        was_lost: false,
                    }
                });
            outcomes.push((i, outcome));
        }
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests;
