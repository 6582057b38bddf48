//! What a commit tells the other servers on the same PostgreSQL database: its changes, as NOTIFY
//! payloads sent in the committing transaction (so only committed changes are told, in the
//! order they committed), and how a payload reads back. The change feed (`cluster/feed.rs`)
//! hears them.

use sqlx::AnyConnection;

use plura_proto::Change;

use crate::store::{Changed, Elsewhere, Result};

/// The channel the notices are sent on.
pub const CHANNEL: &str = "plura_changes";
/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7900;
/// NOTIFY payloads sent in one statement (each is a parameter; a statement takes 65,535).
const NOTICES_PER_STATEMENT: usize = 1000;
/// A payload telling that changes were made that did not fit: reload.
const TOO_LARGE: &str = "!";

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
pub fn read_payload(payload: &str) -> Option<(&str, Elsewhere)> {
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
