//! What the storage tests share: a store on a new SQLite file or PostgreSQL database, a login to
//! give it, and a check of the order in which a write takes agents' rows.

use std::time::Duration;

use plura_proto::Timestamp;
use plura_testkit::{Database, Db};
use sqlx::{Connection, Executor, PgConnection};

use super::SqlStore;
use crate::store::Login;

/// A store on a new SQLite file, and the folder that holds it (the file goes with it).
pub async fn store_on_a_file() -> (tempfile::TempDir, SqlStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("plura.db").display());
    let store = crate::store::open(&url).await.unwrap();
    (dir, store)
}

/// A store on a new PostgreSQL database, and the database (to drop once the test is done).
pub async fn store_on_postgres() -> (Database, SqlStore) {
    let database = Database::fresh(Db::Postgres).await;
    let store = crate::store::open(&database.url).await.unwrap();
    (database, store)
}

/// Checks that `write`, started while another transaction holds agent `first`'s row, waits for
/// it holding no other agent's row: the other transaction then updates every other agent,
/// giving up after half a second. A write that takes rows in the order of their ids passes, with
/// `first` the lowest; one that took another row first fails. Answers what `write` answered once
/// the row is let go.
pub async fn waits_for_the_first_holding_no_other<T: Send + 'static>(
    url: &str,
    first: i64,
    write: impl Future<Output = T> + Send + 'static,
) -> T {
    let mut holder = PgConnection::connect(url).await.unwrap();
    holder.execute("BEGIN").await.unwrap();
    sqlx::query("SELECT id FROM agents WHERE id = $1 FOR UPDATE")
        .bind(first)
        .execute(&mut holder)
        .await
        .unwrap();
    let write = tokio::spawn(write);
    let waiting = "SELECT COUNT(*) FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
    while sqlx::query_scalar::<_, i64>(waiting)
        .fetch_one(&mut holder)
        .await
        .unwrap()
        == 0
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    holder
        .execute("SET LOCAL lock_timeout = '500ms'")
        .await
        .unwrap();
    let others = sqlx::query("UPDATE agents SET last_seen_at = last_seen_at WHERE id <> $1")
        .bind(first)
        .execute(&mut holder)
        .await;
    assert!(
        others.is_ok(),
        "the write held other agents while it waited: {others:?}"
    );
    holder.execute("COMMIT").await.unwrap();
    write.await.unwrap()
}

/// A login of `ip` and `hostname` now, with a key hash of its own.
pub fn login(ip: &str, hostname: &str) -> Login {
    let now = Timestamp::now();
    Login {
        request: plura_testkit::login(ip, hostname),
        source_ip: None,
        key_hash: format!("hash of {ip} {hostname}"),
        at: now,
        heard_since: now,
        unheard_of: false,
    }
}
