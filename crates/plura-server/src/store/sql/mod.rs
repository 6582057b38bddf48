//! The storage traits over sqlx, for SQLite and PostgreSQL alike.
//!
//! The queries stay within the SQL both understand (`$n` parameters, `RETURNING`,
//! `ON CONFLICT`, `UPDATE … FROM (VALUES …)`, integers for times and booleans), so each is written
//! once; `backend.rs` holds the few things that differ. One file per thing stored; row mapping
//! is in `rows.rs`.

mod agents;
mod alerts;
mod cloud;
mod credentials;
mod filter;
mod group_commit;
mod history;
mod listing;
mod login;
mod marks;
pub mod notices;
pub use filter::ip_sort_key;
mod rows;
mod settings;
mod sweeps;
#[cfg(test)]
mod testing;
mod upkeep;
mod writer;
use writer::{WriteTransaction, Writer};

use std::sync::{Arc, RwLock, Weak};

use async_trait::async_trait;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool, Row};

use super::{Backend, Changed, Dialect, Follower, Result, Store, StoreError};

/// Cheap to clone: every part is shared.
#[derive(Clone)]
pub struct SqlStore {
    backend: Backend,
    pool: AnyPool,
    writer: Writer,
    logins: Arc<group_commit::LoginQueue>,
    /// This server among those sharing the database, in the changes it tells them.
    server_id: Arc<str>,
    followers: Followers,
}

/// Who is told of each change of agents committed here.
#[derive(Clone, Default)]
struct Followers(Arc<RwLock<Vec<Weak<dyn Follower>>>>);

impl Followers {
    fn each(&self, tell: impl Fn(&dyn Follower)) {
        for follower in self.0.read().expect("followers lock").iter() {
            if let Some(follower) = follower.upgrade() {
                tell(follower.as_ref());
            }
        }
    }

    fn add(&self, follower: Weak<dyn Follower>) {
        let mut followers = self.0.write().expect("followers lock");
        followers.retain(|f| f.strong_count() > 0);
        followers.push(follower);
    }
}

/// A write transaction, on the writer's connection until it ends.
struct WriteTx {
    tx: WriteTransaction,
    /// Who tells the other servers of its changes (PostgreSQL).
    teller: Option<Arc<str>>,
    dialect: Dialect,
    followers: Followers,
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
    /// server (and whoever follows the agents here) hears of it. A gone agent keeps no history:
    /// its change is only told.
    async fn commit<'c>(mut self, changes: impl IntoIterator<Item = &'c Changed>) -> Result<()> {
        let changes: Vec<&Changed> = changes.into_iter().collect();
        let kept: Vec<&Changed> = changes.iter().copied().filter(|c| !c.is_gone()).collect();
        let dialect = self.dialect;
        rows::insert_events(self.conn(), dialect, &kept).await?;
        if let Some(teller) = self.teller.clone() {
            notices::notify(self.conn(), &teller, &changes).await?;
        }
        self.tx.commit().await?;
        // A sweep or an alert's bookkeeping often changes no agent: nothing to follow.
        if !changes.is_empty() {
            self.followers.each(|f| f.committed(&changes));
        }
        Ok(())
    }

    /// Commits a change of many agents at once (an import), with no history: the other servers
    /// are told to read again what they keep of the agents, as this server does.
    async fn commit_bulk(mut self) -> Result<()> {
        if let Some(teller) = self.teller.clone() {
            notices::notify_missed(self.conn(), &teller).await?;
        }
        self.tx.commit().await?;
        self.followers.each(|f| f.committed_in_bulk());
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
            followers: Followers::default(),
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

    async fn begin_write(&self) -> Result<WriteTx> {
        let tx = self.writer.begin(self.backend.begin_write()).await?;
        let teller =
            matches!(self.backend, Backend::Postgres { .. }).then(|| self.server_id.clone());
        Ok(WriteTx {
            tx,
            teller,
            dialect: self.backend.dialect(),
            followers: self.followers.clone(),
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

    fn backend(&self) -> &Backend {
        &self.backend
    }

    fn server_id(&self) -> &str {
        &self.server_id
    }

    fn follow(&self, follower: Weak<dyn Follower>) {
        self.followers.add(follower);
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
