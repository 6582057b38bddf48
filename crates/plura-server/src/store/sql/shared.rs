//! Several servers on one PostgreSQL database. The fleet-wide sweeps run on one server at a
//! time: the one holding an advisory lock on a connection of its own, which PostgreSQL frees
//! when that server dies. Each server tells the others what it changed: a NOTIFY sent in the
//! committing transaction (so only committed changes are told), read with LISTEN on another
//! connection of its own.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::{AnyConnection, AnyPool, Connection, PgConnection};
use tokio::sync::mpsc;

use plura_proto::Change;

use super::AgentIndex;
use crate::store::{Changed, Elsewhere, Result};

const CHANNEL: &str = "plura_changes";
/// The advisory lock of the sweep lease ("plura" in ASCII).
const LEASE_KEY: i64 = 0x0070_6c75_7261;
/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7900;
/// NOTIFY payloads sent in one statement (each is a parameter; a statement takes 65,535).
const NOTICES_PER_STATEMENT: usize = 1000;
/// A payload telling that changes were made that did not fit: reload.
const TOO_LARGE: &str = "!";
/// How long a lease check may take before the lease is given up.
const LEASE_CHECK: Duration = Duration::from_secs(2);
/// Notices buffered for the fleet; more while it is busy are dropped and told as missed.
const NOTICE_BUFFER: usize = 1024;

/// The NOTIFY payloads telling `changes`: `SERVER JSON-ARRAY`, each under the size limit.
fn payloads(server: &str, changes: &[Change]) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut batch = String::new();
    for change in changes {
        let Ok(json) = serde_json::to_string(change) else {
            continue;
        };
        if server.len() + 3 + json.len() > MAX_PAYLOAD {
            payloads.push(format!("{server} {TOO_LARGE}"));
            continue;
        }
        if server.len() + 3 + batch.len() + json.len() > MAX_PAYLOAD {
            payloads.push(format!("{server} [{batch}]"));
            batch.clear();
        }
        if !batch.is_empty() {
            batch.push(',');
        }
        batch.push_str(&json);
    }
    if !batch.is_empty() {
        payloads.push(format!("{server} [{batch}]"));
    }
    payloads
}

/// What a payload tells, and which server told it.
fn read_payload(payload: &str) -> Option<(&str, Elsewhere)> {
    let (server, body) = payload.split_once(' ')?;
    let told = match serde_json::from_str::<Vec<Change>>(body) {
        Ok(changes) => Elsewhere::Changes(changes),
        Err(_) => Elsewhere::Missed,
    };
    Some((server, told))
}

/// Tells the other servers about `changes`, once the transaction on `conn` commits.
pub(super) async fn notify(
    conn: &mut AnyConnection,
    server: &str,
    changes: &[&Changed],
) -> Result<()> {
    let told: Vec<Change> = changes.iter().flat_map(|c| c.changes()).collect();
    // Many payloads to a statement: one round trip in the writer's turn for a commit of
    // logins, however many payloads it takes.
    for chunk in payloads(server, &told).chunks(NOTICES_PER_STATEMENT) {
        let calls: Vec<String> = (2..chunk.len() + 2)
            .map(|n| format!("pg_notify($1, ${n})"))
            .collect();
        let sql = format!("SELECT {}", calls.join(", "));
        let mut query = sqlx::query(&sql).bind(CHANNEL);
        for payload in chunk {
            query = query.bind(payload.as_str());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Tells the other servers that more changed than can be told: they read again what they keep.
pub(super) async fn notify_missed(conn: &mut AnyConnection, server: &str) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(format!("{server} {TOO_LARGE}"))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Listens for the other servers' changes until the receiver is dropped. A lost connection is
/// made again, and told as `Missed`: what was said meanwhile is not heard.
///
/// `index` follows every server's changes, this one's too: PostgreSQL delivers them in the order
/// they committed, so when two servers change one agent at once, the later change is the last
/// applied here whichever server applied its own first.
pub(super) async fn listen(
    url: &str,
    me: String,
    index: &Arc<AgentIndex>,
    pool: &AnyPool,
) -> Result<mpsc::Receiver<Elsewhere>> {
    let (index, pool) = (index.clone(), pool.clone());
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    let (sender, notices) = mpsc::channel(NOTICE_BUFFER);
    tokio::spawn(async move {
        loop {
            let told = tokio::select! {
                () = sender.closed() => return,
                notice = listener.try_recv() => match notice {
                    Ok(Some(notice)) => match read_payload(notice.payload()) {
                        Some((server, told)) if server == me => {
                            if let Elsewhere::Changes(changes) = &told {
                                index.changed_elsewhere(changes);
                            }
                            continue;
                        }
                        Some((_, told)) => told,
                        None => continue,
                    },
                    // Lost; the next call connects again.
                    Ok(None) => Elsewhere::Missed,
                    Err(e) => {
                        tracing::warn!("listening for other servers' changes: {e}; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        Elsewhere::Missed
                    }
                },
            };
            match &told {
                Elsewhere::Changes(changes) => index.changed_elsewhere(changes),
                Elsewhere::Missed => drop(tokio::spawn(index.clone().reload(pool.clone()))),
            }
            if sender.try_send(told).is_err() && sender.is_closed() {
                return;
            }
        }
    });
    Ok(notices)
}

/// Count deltas kept before they are folded into one row per (dimension, value).
const DELTAS_TO_FOLD: i64 = 1000;

/// Sums the deltas of the agent counts up into one row per (dimension, value). Deltas that other
/// servers insert meanwhile are not in this statement's snapshot, so they stay, and count.
pub(super) async fn fold_counts(pool: &AnyPool) -> Result<()> {
    let deltas: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agent_counts")
        .fetch_one(pool)
        .await?;
    if deltas >= DELTAS_TO_FOLD {
        sqlx::query(
            "WITH folded AS (DELETE FROM agent_counts RETURNING dimension, value, n) \
             INSERT INTO agent_counts (dimension, value, n) \
             SELECT dimension, value, SUM(n) FROM folded GROUP BY dimension, value \
             HAVING SUM(n) <> 0",
        )
        .execute(pool)
        .await?;
        // The summary reads the whole table: the folded rows must not linger as dead ones.
        sqlx::query("VACUUM agent_counts").execute(pool).await?;
    }
    Ok(())
}

/// Fewest changed agents worth analysing for: below this a scan of every agent is cheap anyway.
const ANALYZE_AFTER_CHANGES: i64 = 1000;

/// Whether the agents changed more since their last analysis than they numbered at it
/// (`counted` is -1 before the first): the table has at least doubled.
fn outgrew_its_statistics(changed: i64, counted: i64) -> bool {
    changed >= ANALYZE_AFTER_CHANGES && changed > counted
}

/// Analyses the agents once they outgrow their statistics. A fleet registering at once doubles
/// the table again and again within autovacuum's minute, and meanwhile the planner, taking it
/// for as small as it last saw it, finds a batch's identities with a hash join over every agent
/// instead of the unique index. Each doubling costs one analysis, of a sample.
pub(super) async fn analyze_after_growth(pool: &AnyPool) -> Result<()> {
    let (changed, counted): (i64, i64) = sqlx::query_as(
        "SELECT s.n_mod_since_analyze, c.reltuples::bigint FROM pg_stat_user_tables s \
         JOIN pg_class c ON c.oid = s.relid WHERE s.relid = 'agents'::regclass",
    )
    .fetch_one(pool)
    .await?;
    if outgrew_its_statistics(changed, counted)
        && let Err(e) = sqlx::query("ANALYZE agents").execute(pool).await
    {
        // Autovacuum analyses them within a minute all the same (a role that does not own the
        // table may not).
        tracing::debug!("cannot analyse the agents: {e}");
    }
    Ok(())
}

/// The sweep lease: held while this server's lease connection holds the advisory lock.
#[derive(Default)]
pub(super) struct Lease {
    conn: tokio::sync::Mutex<Option<(PgConnection, bool)>>,
}

impl Lease {
    /// Whether this server holds the lease now, taking it if it is free. A lease connection
    /// that fails or hangs is dropped, and the lease with it.
    pub(super) async fn hold(&self, url: &str) -> Result<bool> {
        let mut slot = self.conn.lock().await;
        let checked = tokio::time::timeout(LEASE_CHECK, async {
            if slot.is_none() {
                *slot = Some((PgConnection::connect(url).await?, false));
            }
            let (conn, held) = slot.as_mut().expect("just made");
            if !*held {
                *held = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(LEASE_KEY)
                    .fetch_one(&mut *conn)
                    .await?;
            } else {
                conn.ping().await?;
            }
            Ok::<bool, sqlx::Error>(*held)
        })
        .await;
        match checked {
            Ok(Ok(held)) => Ok(held),
            Ok(Err(e)) => {
                *slot = None;
                Err(e.into())
            }
            Err(_) => {
                *slot = None;
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plura_proto::{EventKind, Timestamp};

    fn change(detail: &str) -> Change {
        Change {
            agent_id: 7,
            at: Timestamp::from_millis(1),
            event: EventKind::Stopped,
            detail: detail.into(),
            agent: None,
        }
    }

    #[test]
    fn the_agents_are_analysed_each_time_they_double() {
        assert!(outgrew_its_statistics(1000, -1), "never analysed");
        assert!(!outgrew_its_statistics(999, -1), "too few to matter");
        assert!(outgrew_its_statistics(2001, 2000));
        assert!(!outgrew_its_statistics(2000, 2000));
        assert!(!outgrew_its_statistics(50_000, 1_000_000));
    }

    #[test]
    fn payloads_stay_under_the_limit_and_read_back() {
        let changes: Vec<Change> = (0..500).map(|n| change(&format!("stop {n}"))).collect();
        let told = payloads("s1", &changes);
        assert!(told.len() > 1);
        let mut read = Vec::new();
        for payload in &told {
            assert!(payload.len() < 8000);
            match read_payload(payload) {
                Some(("s1", Elsewhere::Changes(changes))) => read.extend(changes),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(read, changes);
        let huge = payloads("s1", &[change(&"x".repeat(9000))]);
        assert!(matches!(
            read_payload(&huge[0]),
            Some(("s1", Elsewhere::Missed))
        ));
    }
}
