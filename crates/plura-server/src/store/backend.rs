//! What differs between SQLite and PostgreSQL: the URL, the schema migrations, the pool, and how
//! a write transaction begins. Everything else is shared SQL in `sql.rs`.

use std::fmt;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, Connection, Executor};

use super::StoreError;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone, PartialEq, Eq)]
pub enum Backend {
    /// An embedded database file (or `sqlite::memory:`), created on first use.
    Sqlite { url: String },
    /// A server several plura-server processes can share.
    Postgres { url: String },
}

impl Backend {
    /// `sqlite://PATH`, `sqlite::memory:`, `postgres://…` or `postgresql://…`; a bare path is
    /// taken as a SQLite file.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres { url: url.into() });
        }
        let url = if let Some(rest) = url.strip_prefix("sqlite:") {
            format!("sqlite:{rest}")
        } else if !url.contains("://") && !url.is_empty() {
            format!("sqlite://{url}")
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        // A missing file is created, as a first start must (sqlx's default is to fail).
        let url = if url.contains("mode=") || url.contains(":memory:") {
            url
        } else if url.contains('?') {
            format!("{url}&mode=rwc")
        } else {
            format!("{url}?mode=rwc")
        };
        Ok(Self::Sqlite { url })
    }

    pub fn url(&self) -> &str {
        match self {
            Self::Sqlite { url } | Self::Postgres { url } => url,
        }
    }

    /// The SQLite database file, when it is one.
    pub fn sqlite_file(&self) -> Option<std::path::PathBuf> {
        let Self::Sqlite { url } = self else {
            return None;
        };
        if url.contains(":memory:") {
            return None;
        }
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))?;
        let path = rest.split('?').next().unwrap_or(rest);
        Some(std::path::PathBuf::from(path))
    }

    /// The SQL it speaks where the two differ.
    pub(super) fn dialect(&self) -> Dialect {
        match self {
            Self::Sqlite { .. } => Dialect::Sqlite,
            Self::Postgres { .. } => Dialect::Postgres,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Sqlite { .. } => "sqlite",
            Self::Postgres { .. } => "postgres",
        }
    }

    pub(super) fn migrator(&self) -> &'static Migrator {
        match self {
            Self::Sqlite { .. } => &SQLITE_MIGRATIONS,
            Self::Postgres { .. } => &POSTGRES_MIGRATIONS,
        }
    }

    pub(super) fn pool_options(&self) -> AnyPoolOptions {
        match self {
            // Each connection to `:memory:` would be a database of its own.
            Self::Sqlite { url } if url.contains(":memory:") => AnyPoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None),
            Self::Sqlite { .. } => sqlite_file_options()
                .max_connections(8)
                .acquire_timeout(ACQUIRE_TIMEOUT),
            // A connection that died with its server (a restart, a failover) is found by the
            // check before it is handed out, and made again.
            Self::Postgres { .. } => AnyPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .test_before_acquire(true),
        }
    }

    /// Whether its writes go one at a time, on a connection of their own (a SQLite file).
    pub(super) fn writes_alone(&self) -> bool {
        matches!(self, Self::Sqlite { url } if !url.contains(":memory:"))
    }

    /// A connection of its own, set up as the pool's are.
    pub(super) async fn connect(&self) -> Result<AnyConnection, StoreError> {
        let mut connection = AnyConnection::connect(self.url()).await?;
        if matches!(self, Self::Sqlite { .. }) {
            set_up_sqlite(&mut connection).await?;
        }
        Ok(connection)
    }

    /// SQLite has one writer at a time; a transaction that reads and then writes must take the
    /// write lock up front, or two of them deadlock and one fails with "database is locked".
    pub(super) fn begin_write(&self) -> &'static str {
        match self {
            Self::Sqlite { .. } => "BEGIN IMMEDIATE",
            Self::Postgres { .. } => "BEGIN",
        }
    }

    /// Runs once per database, before the migrations.
    pub(super) fn setup_statements(&self) -> &'static [&'static str] {
        match self {
            // WAL lets the console read while agents log in; it is a property of the file.
            Self::Sqlite { url } if !url.contains(":memory:") => &["PRAGMA journal_mode = WAL"],
            _ => &[],
        }
    }
}

/// How long a request waits for a database connection before it is answered 503: a database
/// that is down must cost callers seconds, not a hang.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// A pool of connections to a SQLite file. A connection to a file cannot go stale: no ping
/// before each use.
fn sqlite_file_options() -> AnyPoolOptions {
    AnyPoolOptions::new()
        .test_before_acquire(false)
        .after_connect(|connection, _| Box::pin(set_up_sqlite(connection)))
}

/// Sets up a connection to a SQLite file for a large fleet.
async fn set_up_sqlite(connection: &mut AnyConnection) -> Result<(), sqlx::Error> {
    // SQLite's default cache of pages per connection is small beside the indexes of a fleet of a
    // million agents. Grown only as used.
    connection.execute("PRAGMA cache_size = -32768").await?;
    // Reads through a map of the file share the system's page cache: a connection's first deep
    // page no longer reads its own copy of the index it skips. Counted in the server's RSS as
    // the file's pages are touched, so capped.
    connection.execute("PRAGMA mmap_size = 536870912").await?;
    // Each statement of a transaction keeps a journal to undo it alone; in a temporary file by
    // default, a write system call per page.
    connection.execute("PRAGMA temp_store = MEMORY").await?;
    // What a write frees within a page it writes anyway is zeroed: no extra I/O, and deleted
    // rows do not linger in the file. Deletes of secrets go further (`SqlStore::erase`).
    connection.execute("PRAGMA secure_delete = FAST").await?;
    Ok(())
}

/// Where the SQL of the two backends differs: told apart by type, as the store chose the backend,
/// never by a driver's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

/// Shows the URL without its password, so it can be logged.
impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), redact_url(self.url()))
    }
}

/// `postgres://user:secret@host/db` becomes `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_chooses_the_backend() {
        assert_eq!(
            Backend::from_url("sqlite://plura.db").unwrap(),
            Backend::Sqlite {
                url: "sqlite://plura.db?mode=rwc".into()
            }
        );
        assert_eq!(
            Backend::from_url("/var/lib/plura/plura.db").unwrap().url(),
            "sqlite:///var/lib/plura/plura.db?mode=rwc"
        );
        assert_eq!(
            Backend::from_url("sqlite::memory:").unwrap().url(),
            "sqlite::memory:"
        );
        assert_eq!(
            Backend::from_url("sqlite::memory:").unwrap().sqlite_file(),
            None
        );
        assert_eq!(
            Backend::from_url("sqlite:///var/lib/plura/plura.db")
                .unwrap()
                .sqlite_file(),
            Some("/var/lib/plura/plura.db".into())
        );
        assert_eq!(
            Backend::from_url("plura.db").unwrap().sqlite_file(),
            Some("plura.db".into())
        );
        assert_eq!(
            Backend::from_url("sqlite://x.db?mode=ro").unwrap().url(),
            "sqlite://x.db?mode=ro"
        );
        assert_eq!(
            Backend::from_url("postgresql://u:p@h/db").unwrap().name(),
            "postgres"
        );
        let err = Backend::from_url("mysql://root:hunter2@db/plura").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(
            err.to_string().contains("mysql://root:***@db/plura"),
            "{err}"
        );
    }

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(
            redact_url("postgres://plura:s3cr@t@db.internal:5432/fleet?sslmode=require"),
            "postgres://plura:***@db.internal:5432/fleet?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://plura@db/fleet"),
            "postgres://plura@db/fleet"
        );
        assert_eq!(redact_url("sqlite://plura.db"), "sqlite://plura.db");
        let backend = Backend::from_url("postgres://a:b@c/d").unwrap();
        assert_eq!(format!("{backend:?}"), "postgres (postgres://a:***@c/d)");
    }
}
