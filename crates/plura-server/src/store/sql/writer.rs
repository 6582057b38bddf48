//! Where writes go. SQLite writes one transaction at a time whoever asks, so a file's writes share
//! one connection of their own, held here rather than in a pool:
//! - they take turns in this process instead of waiting on each other's locks;
//! - its cache of pages stays valid from one write to the next, where a pooled connection finds
//!   its cache stale after another's write and begins by dropping it;
//! - one write follows another with nothing between, where a pool checks each connection given
//!   back with a round trip before anyone may take it again.
//!
//! PostgreSQL writes in parallel: its writes take connections from the pool, as reads do.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::store::{Backend, Result};

#[derive(Clone)]
pub(super) enum Writer {
    Pool(AnyPool),
    /// Connected on first use, and again after a failure left it in doubt; never after
    /// `close`.
    Own {
        backend: Backend,
        connection: Arc<Mutex<Option<AnyConnection>>>,
        closed: Arc<AtomicBool>,
    },
}

/// A connection to write on, the writer's until dropped.
pub(super) enum Writing {
    Pooled(PoolConnection<Any>),
    /// Always holds a connection.
    Own(OwnedMutexGuard<Option<AnyConnection>>),
}

/// A transaction on a writer's connection; rolled back unless committed.
pub(super) enum WriteTransaction {
    Pooled(sqlx::Transaction<'static, Any>),
    Own(OwnTransaction),
}

/// A transaction on the own connection; `None` once committed.
pub(super) struct OwnTransaction(Option<Writing>);

impl Writer {
    /// The pool's when `backend` writes in parallel, else one connection of its own.
    pub(super) fn new(backend: &Backend, pool: &AnyPool) -> Self {
        if backend.writes_alone() {
            Self::Own {
                backend: backend.clone(),
                connection: Arc::default(),
                closed: Arc::default(),
            }
        } else {
            Self::Pool(pool.clone())
        }
    }

    /// Waits for the writer's turn.
    pub(super) async fn acquire(&self) -> Result<Writing> {
        match self {
            Self::Pool(pool) => Ok(Writing::Pooled(pool.acquire().await?)),
            Self::Own {
                backend,
                connection,
                closed,
            } => {
                let mut slot = connection.clone().lock_owned().await;
                if closed.load(Ordering::SeqCst) {
                    // As the pool answers once closed: a write that comes late is refused.
                    return Err(sqlx::Error::PoolClosed.into());
                }
                if slot.is_none() {
                    *slot = Some(backend.connect().await?);
                }
                Ok(Writing::Own(slot))
            }
        }
    }

    /// Begins a transaction in the writer's turn, with the backend's statement.
    pub(super) async fn begin(&self, statement: &'static str) -> Result<WriteTransaction> {
        match self {
            Self::Pool(pool) => Ok(WriteTransaction::Pooled(pool.begin_with(statement).await?)),
            Self::Own { .. } => {
                let mut writing = self.acquire().await?;
                if let Err(e) = writing.execute(statement).await {
                    // Whatever went wrong, the next write begins on a new connection.
                    if let Writing::Own(slot) = &mut writing {
                        **slot = None;
                    }
                    return Err(e.into());
                }
                Ok(WriteTransaction::Own(OwnTransaction(Some(writing))))
            }
        }
    }

    pub(super) async fn close(&self) {
        match self {
            Self::Pool(pool) => pool.close().await,
            Self::Own {
                connection, closed, ..
            } => {
                let mut slot = connection.lock().await;
                closed.store(true, Ordering::SeqCst);
                if let Some(connection) = slot.take() {
                    let _ = connection.close().await;
                }
            }
        }
    }
}

impl Deref for Writing {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match self {
            Self::Pooled(connection) => connection,
            Self::Own(slot) => slot.as_ref().expect("the writer holds a connection"),
        }
    }
}

impl DerefMut for Writing {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            Self::Pooled(connection) => connection,
            Self::Own(slot) => slot.as_mut().expect("the writer holds a connection"),
        }
    }
}

impl WriteTransaction {
    pub(super) fn conn(&mut self) -> &mut AnyConnection {
        match self {
            Self::Pooled(tx) => tx,
            Self::Own(OwnTransaction(writing)) => writing
                .as_mut()
                .expect("an open transaction has its connection"),
        }
    }

    pub(super) async fn commit(self) -> Result<()> {
        match self {
            Self::Pooled(tx) => tx.commit().await?,
            Self::Own(mut own) => {
                let mut writing = own
                    .0
                    .take()
                    .expect("an open transaction has its connection");
                if let Err(e) = writing.execute("COMMIT").await {
                    // Still open (a commit can fail and leave it so): rolled back on drop.
                    own.0 = Some(writing);
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }
}

impl Drop for OwnTransaction {
    fn drop(&mut self) {
        let Some(Writing::Own(mut slot)) = self.0.take() else {
            return;
        };
        // The next write waits for the rollback, which keeps the turn. Without a runtime to
        // roll back on, the connection goes: closing it rolls back, and the next write
        // connects again.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move {
                let rolled_back = match slot.as_mut() {
                    Some(connection) => connection.execute("ROLLBACK").await.is_ok(),
                    None => true,
                };
                if !rolled_back {
                    *slot = None;
                }
            })),
            Err(_) => *slot = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;
    use crate::store::sql::testing::store_on_a_file;

    async fn settings(pool: &AnyPool) -> Vec<String> {
        sqlx::query("SELECT key FROM settings ORDER BY key")
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get("key"))
            .collect()
    }

    async fn put(tx: &mut WriteTransaction, key: &str) {
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, 'v')")
            .bind(key.to_string())
            .execute(tx.conn())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_write_not_committed_is_undone_and_the_next_one_goes_on() {
        let (_dir, store) = store_on_a_file().await;
        let writer = &store.writer;
        assert!(
            matches!(writer, Writer::Own { .. }),
            "a file has a writer of its own"
        );

        let mut abandoned = writer.begin("BEGIN IMMEDIATE").await.unwrap();
        put(&mut abandoned, "abandoned").await;
        drop(abandoned);
        let mut kept = writer.begin("BEGIN IMMEDIATE").await.unwrap();
        put(&mut kept, "kept").await;
        kept.commit().await.unwrap();
        assert_eq!(settings(&store.pool).await, ["kept"]);

        // A failed statement leaves the transaction to its owner, who drops it.
        let mut failed = writer.begin("BEGIN IMMEDIATE").await.unwrap();
        put(&mut failed, "half").await;
        let duplicate = sqlx::query("INSERT INTO settings (key, value) VALUES ('kept', 'v')")
            .execute(failed.conn())
            .await;
        assert!(duplicate.is_err());
        drop(failed);
        let mut after = writer.begin("BEGIN IMMEDIATE").await.unwrap();
        put(&mut after, "after").await;
        after.commit().await.unwrap();
        assert_eq!(settings(&store.pool).await, ["after", "kept"]);

        // Closed, it connects no more.
        writer.close().await;
        assert!(matches!(
            writer.begin("BEGIN IMMEDIATE").await,
            Err(crate::store::StoreError::Database {
                source: sqlx::Error::PoolClosed,
                ..
            })
        ));
        let Writer::Own { connection, .. } = writer else {
            unreachable!()
        };
        assert!(connection.lock().await.is_none());
    }

    #[tokio::test]
    async fn after_a_begin_that_failed_the_next_write_connects_again() {
        let (_dir, store) = store_on_a_file().await;
        let writer = &store.writer;
        let mut first = writer.begin("BEGIN IMMEDIATE").await.unwrap();
        put(&mut first, "first").await;
        first.commit().await.unwrap();

        // Another process holds the write lock past SQLite's busy timeout (5 s).
        let mut other = store.backend.connect().await.unwrap();
        other.execute("BEGIN IMMEDIATE").await.unwrap();
        let Err(locked) = writer.begin("BEGIN IMMEDIATE").await else {
            panic!("began while another held the write lock");
        };
        assert!(locked.to_string().contains("locked"), "{locked}");
        let Writer::Own { connection, .. } = writer else {
            unreachable!("a file has a writer of its own")
        };
        assert!(
            connection.lock().await.is_none(),
            "the connection in doubt is dropped"
        );

        other.execute("ROLLBACK").await.unwrap();
        let mut again = writer.begin("BEGIN IMMEDIATE").await.unwrap();
        put(&mut again, "again").await;
        again.commit().await.unwrap();
        assert_eq!(settings(&store.pool).await, ["again", "first"]);
    }
}
