//! The database a test runs on: a new SQLite file, or a new database on the PostgreSQL server
//! the tests share.

use sqlx::{Connection, Executor};

use plura_server::store;

pub const DEFAULT_PG_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A database made for one test: a SQLite file in a temporary folder, or a new PostgreSQL
/// database on the server `PLURA_TEST_PG_URL` names (dropped when the test ends well).
pub struct Database {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_admin: Option<(String, String)>,
}

impl Database {
    pub async fn fresh(db: Db) -> Self {
        match db {
            Db::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary folder");
                let url = format!("sqlite://{}/plura.db", dir.path().display());
                Self {
                    url,
                    _dir: Some(dir),
                    pg_admin: None,
                }
            }
            Db::Postgres => {
                let admin = std::env::var("PLURA_TEST_PG_URL").unwrap_or(DEFAULT_PG_URL.into());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "PostgreSQL does not answer at {} ({e}); run ./scripts/test, which \
                         starts it, or set PLURA_TEST_PG_URL",
                            store::redact_url(&admin)
                        )
                    });
                let name = format!(
                    "plura_test_{}",
                    &plura_server::secret::new_token("x")[2..18]
                );
                conn.execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .expect("create the test database");
                let (base, query) = admin.split_once('?').unwrap_or((&admin, ""));
                let server = &base[..base.rfind('/').expect("a database URL has a path")];
                let url = if query.is_empty() {
                    format!("{server}/{name}")
                } else {
                    format!("{server}/{name}?{query}")
                };
                Self {
                    url,
                    _dir: None,
                    pg_admin: Some((admin, name)),
                }
            }
        }
    }

    /// The folder the database writes to: the SQLite file's, or PostgreSQL's data directory
    /// when the server runs on this machine (reached over loopback or a local socket) and says
    /// where it is. A server elsewhere has its folder on a disk this process cannot see.
    pub async fn data_directory(&self) -> Option<std::path::PathBuf> {
        if let Some(dir) = &self._dir {
            return Some(dir.path().to_path_buf());
        }
        let (admin, _) = self.pg_admin.as_ref()?;
        let mut conn = sqlx::PgConnection::connect(admin).await.ok()?;
        let (dir, here): (String, bool) = sqlx::query_as(
            "SELECT current_setting('data_directory'), \
             COALESCE(inet_server_addr() <<= '127.0.0.0/8' OR inet_server_addr() = '::1', true)",
        )
        .fetch_one(&mut conn)
        .await
        .ok()?;
        here.then(|| dir.into())
    }

    /// Drops the PostgreSQL database (a SQLite file goes with its folder).
    pub async fn drop_database(&self) {
        if let Some((admin, name)) = &self.pg_admin
            && let Ok(mut conn) = sqlx::PgConnection::connect(admin).await
        {
            let _ = conn
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await;
        }
    }
}
