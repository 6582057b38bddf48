//! The storage traits over sqlx, for SQLite and PostgreSQL alike.
//!
//! The queries stay within the SQL both understand (`$n` parameters, `RETURNING`,
//! `ON CONFLICT`, `UPDATE … FROM (VALUES …)`, integers for times and booleans), so each is written
//! once; `backend.rs` holds the few things that differ. One file per thing stored; row mapping
//! is in `rows.rs`.

mod agent_index;
mod agents;
mod alerts;
mod credentials;
mod filter;
mod group_commit;
mod history;
mod listing;
mod login;
mod ordered;
mod rows;
mod settings;
mod shared;
mod sweeps;
#[cfg(test)]
mod testing;
mod writer;
use agent_index::AgentIndex;
use writer::{WriteTransaction, Writer};

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool, Row};

use super::{Backend, Changed, Dialect, Elsewhere, Result, Store, StoreError};

/// Cheap to clone: every part is shared.
#[derive(Clone)]
pub struct SqlStore {
    backend: Backend,
    pool: AnyPool,
    writer: Writer,
    logins: Arc<group_commit::LoginQueue>,
    /// This server among those sharing the database, in the changes it tells them.
    server_id: Arc<str>,
    lease: Arc<shared::Lease>,
    /// The agents in memory for searches and deep pages, loaded once the server listens for
    /// changes.
    agent_index: Arc<AgentIndex>,
}

/// A write transaction, on the writer's connection until it ends.
struct WriteTx {
    tx: WriteTransaction,
    /// Who tells the other servers of its changes (PostgreSQL).
    teller: Option<Arc<str>>,
    dialect: Dialect,
    agent_index: Arc<AgentIndex>,
}

impl WriteTx {
    fn conn(&mut self) -> &mut AnyConnection {
        self.tx.conn()
    }

    fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Records the history events of `changes`, tells the other servers of them, and commits:
    /// the one way a change of agents ends, so none is on disk without its history, and every
    /// server (and the agent index) hears of it. A gone agent keeps no history: its change is
    /// only told.
    async fn commit<'c>(mut self, changes: impl IntoIterator<Item = &'c Changed>) -> Result<()> {
        let changes: Vec<&Changed> = changes.into_iter().collect();
        let kept: Vec<&Changed> = changes.iter().copied().filter(|c| !c.is_gone()).collect();
        let dialect = self.dialect;
        rows::insert_events(self.conn(), dialect, &kept).await?;
        if let Some(teller) = self.teller.clone() {
            shared::notify(self.conn(), &teller, &changes).await?;
        }
        self.tx.commit().await?;
        self.agent_index.committed(&changes);
        Ok(())
    }

    /// Commits a change of many agents at once (an import), with no history: the other servers
    /// are told to read again what they keep of the agents, as this server does.
    async fn commit_bulk(mut self, pool: &AnyPool) -> Result<()> {
        if let Some(teller) = self.teller.clone() {
            shared::notify_missed(self.conn(), &teller).await?;
        }
        self.tx.commit().await?;
        if self.agent_index.followed() {
            tokio::spawn(self.agent_index.reload(pool.clone()));
        }
        Ok(())
    }
}

impl SqlStore {
    pub async fn open(backend: Backend) -> Result<Self> {
        if let Some(file) = backend.sqlite_file() {
            owner_only(&file)?;
        }
        sqlx::any::install_default_drivers();
        let pool = backend.pool_options().connect(backend.url()).await?;
        for statement in backend.setup_statements() {
            sqlx::query(statement).execute(&pool).await?;
        }
        backend.migrator().run(&pool).await?;
        let writer = Writer::new(&backend, &pool);
        Ok(Self {
            backend,
            pool,
            writer,
            logins: Arc::default(),
            server_id: format!("{:016x}", rand::random::<u64>()).into(),
            lease: Arc::default(),
            agent_index: Arc::default(),
        })
    }

    /// Agents whose hostname is not in its normal form (lower case, no trailing dot): rows the
    /// migration to that form left as they were because another row of the same address has
    /// that form. At most `limit`, by id.
    pub async fn hostnames_not_in_normal_form(
        &self,
        limit: u32,
    ) -> Result<Vec<(i64, String, String)>> {
        let rows = sqlx::query(
            "SELECT id, ip, hostname FROM agents \
             WHERE hostname <> lower(rtrim(hostname, '.')) ORDER BY id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("id")?,
                    row.try_get("ip")?,
                    row.try_get("hostname")?,
                ))
            })
            .collect()
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    async fn begin_write(&self) -> Result<WriteTx> {
        let tx = self.writer.begin(self.backend.begin_write()).await?;
        let teller =
            matches!(self.backend, Backend::Postgres { .. }).then(|| self.server_id.clone());
        Ok(WriteTx {
            tx,
            teller,
            dialect: self.backend.dialect(),
            agent_index: self.agent_index.clone(),
        })
    }

    /// Runs `delete` of secrets in `tx` so they leave no trace in the file; answers how many
    /// rows went. On SQLite, secure delete is fully on for it: the pages it frees are zeroed
    /// too. After the commit, `checkpoint_erased` empties the write-ahead log, which still holds
    /// the pages as they were. PostgreSQL keeps dead rows until VACUUM reuses their space (see
    /// the docs).
    async fn erase<'q>(
        &self,
        tx: &mut WriteTransaction,
        delete: Query<'q, Any, AnyArguments<'q>>,
    ) -> Result<u64> {
        use sqlx::Executor;
        let sqlite = matches!(self.backend, Backend::Sqlite { .. });
        if sqlite {
            tx.conn().execute("PRAGMA secure_delete = ON").await?;
        }
        let deleted = delete.execute(tx.conn()).await?.rows_affected();
        if sqlite {
            tx.conn().execute("PRAGMA secure_delete = FAST").await?;
        }
        Ok(deleted)
    }

    /// After a commit that erased secrets (SQLite): a checkpoint that empties the write-ahead log.
    async fn checkpoint_erased(&self) -> Result<()> {
        if !matches!(self.backend, Backend::Sqlite { .. }) {
            return Ok(());
        }
        let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut *self.writer.acquire().await?)
            .await?;
        if row.try_get::<i64, _>(0)? != 0 {
            tracing::warn!(
                "a checkpoint after erasing a secret was held up by readers; the write-ahead log \
                 keeps the old pages until the next checkpoint"
            );
        }
        Ok(())
    }

    /// Runs a single-statement write; answers how many rows it changed.
    async fn write_counted<'q>(&self, query: Query<'q, Any, AnyArguments<'q>>) -> Result<u64> {
        Ok(query
            .execute(&mut *self.writer.acquire().await?)
            .await?
            .rows_affected())
    }
}

/// Creates the database file readable by its owner only (it holds password and key hashes), or
/// takes away what others could read of an existing one. SQLite gives its journal files the
/// same mode.
fn owner_only(file: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |e: std::io::Error| {
        StoreError::from(sqlx::Error::Io(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", file.display()),
        )))
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)
        .map_err(io)?;
    let mode = std::fs::metadata(file).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode & 0o700))
            .map_err(io)?;
        tracing::warn!(
            "{} was readable by others; now by its owner only",
            file.display()
        );
    }
    Ok(())
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    fn shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres { .. })
    }

    fn search_index_agents(&self) -> Option<usize> {
        self.agent_index.agents()
    }

    async fn lead(&self) -> Result<bool> {
        match &self.backend {
            Backend::Sqlite { .. } => Ok(true),
            Backend::Postgres { url } => self.lease.hold(url).await,
        }
    }

    async fn maintain(&self) -> Result<()> {
        if let Backend::Postgres { .. } = self.backend {
            shared::fold_counts(&self.pool).await?;
            shared::analyze_after_growth(&self.pool).await?;
        }
        Ok(())
    }

    async fn listen(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Elsewhere>>> {
        let notices = match &self.backend {
            // Alone on its database: there is no one else to hear.
            Backend::Sqlite { .. } => None,
            Backend::Postgres { url } => Some(
                shared::listen(
                    url,
                    self.server_id.to_string(),
                    &self.agent_index,
                    &self.pool,
                )
                .await?,
            ),
        };
        // Loaded once the notices it must follow are heard.
        tokio::spawn(self.agent_index.clone().reload(self.pool.clone()));
        Ok(notices)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn the_database_file_is_its_owners_only() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new.db");
        crate::store::open(&format!("sqlite://{}", new.display()))
            .await
            .unwrap();
        assert_eq!(mode(&new), 0o600);

        let old = dir.path().join("old.db");
        std::fs::write(&old, b"").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        crate::store::open(&format!("sqlite://{}", old.display()))
            .await
            .unwrap();
        assert_eq!(mode(&old), 0o600);
    }
}
