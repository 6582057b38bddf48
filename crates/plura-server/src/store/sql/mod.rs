//! The storage traits over sqlx, for SQLite and PostgreSQL alike.
//!
//! The queries stay within the SQL both understand (`$n` parameters, `RETURNING`,
//! `ON CONFLICT`, `UPDATE … FROM (VALUES …)`, integers for times and booleans), so each is written
//! once; `backend.rs` holds the few things that differ. One file per thing stored; row mapping
//! is in `rows.rs`.

mod agents;
mod credentials;
mod filter;
mod history;
mod rows;
mod settings;

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{Backend, Changed, Result, Store};

pub struct SqlStore {
    backend: Backend,
    pool: AnyPool,
    /// Taken by every write on SQLite, whose single writer would otherwise make concurrent
    /// transactions wait on each other's locks; PostgreSQL needs no such turn.
    write_turn: Option<Arc<Mutex<()>>>,
}

/// A write transaction, holding the write turn (SQLite) until it ends.
struct WriteTx {
    tx: Transaction<'static, Any>,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl WriteTx {
    fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// Records the history events of `changes` and commits: the one way a change of agents
    /// ends, so none is on disk without its history.
    async fn commit(mut self, changes: &[Changed]) -> Result<()> {
        rows::insert_events(self.conn(), changes).await?;
        Ok(self.tx.commit().await?)
    }
}

impl SqlStore {
    pub async fn open(backend: Backend) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let pool = backend.pool_options().connect(backend.url()).await?;
        for statement in backend.setup_statements() {
            sqlx::query(statement).execute(&pool).await?;
        }
        backend.migrator().run(&pool).await?;
        let write_turn = matches!(backend, Backend::Sqlite { .. }).then(Default::default);
        Ok(Self {
            backend,
            pool,
            write_turn,
        })
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Waits for this process's write turn (SQLite); no wait on PostgreSQL.
    async fn turn(&self) -> Option<OwnedMutexGuard<()>> {
        match &self.write_turn {
            Some(turn) => Some(turn.clone().lock_owned().await),
            None => None,
        }
    }

    async fn begin_write(&self) -> Result<WriteTx> {
        let turn = self.turn().await;
        let tx = self.pool.begin_with(self.backend.begin_write()).await?;
        Ok(WriteTx { tx, _turn: turn })
    }

    /// Runs a single-statement write in its turn.
    async fn write<'q>(&self, query: Query<'q, Any, AnyArguments<'q>>) -> Result<Vec<AnyRow>> {
        let _turn = self.turn().await;
        Ok(query.fetch_all(&self.pool).await?)
    }

    /// Runs a single-statement write in its turn; answers how many rows it changed.
    async fn write_counted<'q>(&self, query: Query<'q, Any, AnyArguments<'q>>) -> Result<u64> {
        let _turn = self.turn().await;
        Ok(query.execute(&self.pool).await?.rows_affected())
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
