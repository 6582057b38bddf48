//! An online backup of a SQLite database: a consistent copy of the file as it is at one moment,
//! taken while the server runs, with SQLite's `VACUUM INTO` on a read-only connection, so the
//! source is never migrated or changed. PostgreSQL has `pg_dump`.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::{Backend, redact_url};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "a PostgreSQL database is backed up with pg_dump, which takes a consistent snapshot of a \
         running database: pg_dump --format=custom --file=plura.dump '{0}'"
    )]
    Postgres(String),
    #[error("{0} is an in-memory database: there is nothing to back up")]
    InMemory(String),
    #[error("there is no database at {0}")]
    NoDatabase(PathBuf),
    #[error("{0} exists already; the backup goes to a new file")]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("copying {from}: {source}")]
    Copy { from: PathBuf, source: sqlx::Error },
    #[error(transparent)]
    Url(#[from] super::StoreError),
}

/// Copies the SQLite database `url` names to `to`, a new file readable by its owner only;
/// answers its size in bytes. The copy is written beside `to` and renamed when complete, so
/// `to` never holds half a backup.
pub async fn backup(url: &str, to: &Path) -> Result<u64, BackupError> {
    let backend = Backend::from_url(url)?;
    let Backend::Sqlite { .. } = backend else {
        return Err(BackupError::Postgres(redact_url(url)));
    };
    let Some(from) = backend.sqlite_file() else {
        return Err(BackupError::InMemory(url.to_string()));
    };
    if !from.is_file() {
        return Err(BackupError::NoDatabase(from));
    }
    if to.exists() {
        return Err(BackupError::Exists(to.to_path_buf()));
    }
    let partial = partial_path(to);
    let file_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::File { path, source }
    };
    // VACUUM INTO takes an empty file as it is, so the copy is its owner's alone from the start.
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .map_err(file_error(&partial))?;
    }
    let copied = copy(&from, &partial).await;
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::File::open(&partial)
        .and_then(|file| file.sync_all())
        .map_err(file_error(&partial))?;
    std::fs::rename(&partial, to).map_err(file_error(to))?;
    if let Some(dir) = to.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(file_error(dir))?;
    }
    Ok(std::fs::metadata(to).map_err(file_error(to))?.len())
}

/// `VACUUM INTO` from a read-only connection: one read transaction, so one moment's database,
/// whatever the server writes meanwhile.
async fn copy(from: &Path, into: &Path) -> Result<(), BackupError> {
    let failed = |source| BackupError::Copy {
        from: from.to_path_buf(),
        source,
    };
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", from.display()))
        .map_err(failed)?
        .read_only(true)
        .create_if_missing(false);
    let mut connection = options.connect().await.map_err(failed)?;
    sqlx::query("VACUUM INTO $1")
        .bind(into.to_string_lossy().into_owned())
        .execute(&mut connection)
        .await
        .map_err(failed)?;
    connection.close().await.map_err(failed)
}

/// Where a backup is written until it is complete.
fn partial_path(to: &Path) -> PathBuf {
    let mut name = to.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    to.with_file_name(name)
}
