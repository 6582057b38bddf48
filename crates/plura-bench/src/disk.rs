//! The disk's own ceiling for durable writes: how many flushed appends (`fdatasync`, as SQLite's
//! and PostgreSQL's write-ahead logs use) it takes per second, measured in the database's folder;
//! or, for a PostgreSQL server on another host, how many one-row transactions it commits a second
//! one after another, each waiting for its flush.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::{Connection, Executor};

/// Appends 4 KiB and flushes it to disk, again and again for `time`; answers flushes per second.
pub fn fsync_rate(dir: &Path, time: Duration) -> anyhow::Result<f64> {
    let file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("a file to measure flushes in {}", dir.display()))?;
    let mut out = file.as_file();
    let block = [0x5au8; 4096];
    let started = Instant::now();
    let mut flushes = 0u64;
    while started.elapsed() < time {
        out.write_all(&block)?;
        out.sync_data()?;
        flushes += 1;
    }
    Ok(flushes as f64 / started.elapsed().as_secs_f64())
}

/// `fsync_rate` in `dir` when it can be written there, else in the temporary folder (said so).
pub fn fsync_rate_near(dir: Option<PathBuf>, time: Duration) -> anyhow::Result<f64> {
    if let Some(dir) = dir {
        match fsync_rate(&dir, time) {
            Ok(rate) => return Ok(rate),
            Err(e) => println!("  cannot measure flushes beside the database ({e:#})"),
        }
    }
    let temp = std::env::temp_dir();
    println!("  measuring flushes in {} instead", temp.display());
    fsync_rate(&temp, time)
}

/// One-row transactions committed one after another on one connection to the PostgreSQL
/// database at `url`, for `time`; answers commits per second. Each commit waits for its
/// write-ahead log to reach the server's disk, and for a round trip: what a login a transaction
/// could reach on a server whose disk is not here to measure.
pub async fn commit_rate(url: &str, time: Duration) -> anyhow::Result<f64> {
    let mut connection = sqlx::PgConnection::connect(url)
        .await
        .context("connecting to measure the database's commits")?;
    connection
        .execute("CREATE TABLE plura_bench_commits (n BIGINT NOT NULL)")
        .await?;
    let started = Instant::now();
    let mut commits = 0i64;
    while started.elapsed() < time {
        sqlx::query("INSERT INTO plura_bench_commits (n) VALUES ($1)")
            .bind(commits)
            .execute(&mut connection)
            .await?;
        commits += 1;
    }
    let rate = commits as f64 / started.elapsed().as_secs_f64();
    connection.execute("DROP TABLE plura_bench_commits").await?;
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use plura_testkit::{Database, Db};

    #[tokio::test]
    async fn a_postgresql_server_commits_one_transaction_after_another() {
        let database = Database::fresh(Db::Postgres).await;
        assert!(
            database.data_directory().await.is_some(),
            "a server on loopback has its folder here"
        );
        let rate = commit_rate(&database.url, Duration::from_millis(200))
            .await
            .unwrap();
        assert!(rate > 0.0, "{rate}");
        let mut connection = sqlx::PgConnection::connect(&database.url).await.unwrap();
        let (left,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'plura_bench_commits'",
        )
        .fetch_one(&mut connection)
        .await
        .unwrap();
        assert_eq!(left, 0, "the measuring table is dropped");
        database.drop_database().await;
    }
}
