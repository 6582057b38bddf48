//! When the database cannot serve at all, as opposed to refusing one statement: unreachable (a
//! restart, a failover, a network fault, every connection taken), read-only (a standby after a
//! failover, a file system remounted read-only) or out of space. Each is the server's fault to
//! report and to recover from by itself, never the caller's: the API answers 503 with the
//! reason and a time to try again.

use std::fmt;

use sqlx::error::DatabaseError;

use super::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    Unreachable,
    ReadOnly,
    Full,
    /// The database's file could not be read or written (SQLite).
    FileFailed,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unreachable => "the database is unreachable, or too busy to answer",
            Self::ReadOnly => {
                "the database is read-only (a standby after a failover, or a read-only file \
                 system); writes wait for a writable primary"
            }
            Self::Full => "the database's disk is full",
            Self::FileFailed => {
                "the database's file cannot be written (a read-only or failing file system)"
            }
        })
    }
}

impl StoreError {
    /// Whether the database cannot serve at all, and why.
    pub fn unavailable(&self) -> Option<Unavailable> {
        match self {
            Self::Database { source, .. } => unavailable(source),
            Self::Unavailable(why) => Some(*why),
            Self::Migrate(sqlx::migrate::MigrateError::Execute(source)) => unavailable(source),
            _ => None,
        }
    }
}

fn unavailable(e: &sqlx::Error) -> Option<Unavailable> {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => Some(Unavailable::Unreachable),
        sqlx::Error::Database(db) => of_database(db.as_ref()),
        _ => None,
    }
}

fn of_database(e: &dyn DatabaseError) -> Option<Unavailable> {
    if let Some(pg) = e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return of_sqlstate(pg.code());
    }
    if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        let code: i32 = e.code()?.parse().ok()?;
        return of_sqlite_code(code);
    }
    None
}

/// PostgreSQL's error codes (SQLSTATE) that say the database, not the statement, failed.
fn of_sqlstate(code: &str) -> Option<Unavailable> {
    match code {
        // read_only_sql_transaction: a standby, or default_transaction_read_only.
        "25006" => Some(Unavailable::ReadOnly),
        // disk_full
        "53100" => Some(Unavailable::Full),
        // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections,
        // insufficient_resources, out_of_memory
        "57P01" | "57P02" | "57P03" | "53300" | "53000" | "53200" => Some(Unavailable::Unreachable),
        // connection_exception and its subclasses
        code if code.starts_with("08") => Some(Unavailable::Unreachable),
        _ => None,
    }
}

/// SQLite's result codes (the primary code is the low byte of an extended one).
fn of_sqlite_code(code: i32) -> Option<Unavailable> {
    const SQLITE_BUSY: i32 = 5;
    const SQLITE_READONLY: i32 = 8;
    const SQLITE_IOERR: i32 = 10;
    const SQLITE_FULL: i32 = 13;
    const SQLITE_CANTOPEN: i32 = 14;
    match code & 0xff {
        SQLITE_READONLY => Some(Unavailable::ReadOnly),
        SQLITE_FULL => Some(Unavailable::Full),
        SQLITE_IOERR | SQLITE_CANTOPEN => Some(Unavailable::FileFailed),
        SQLITE_BUSY => Some(Unavailable::Unreachable),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_that_say_the_database_itself_failed() {
        assert_eq!(of_sqlstate("25006"), Some(Unavailable::ReadOnly));
        assert_eq!(of_sqlstate("53100"), Some(Unavailable::Full));
        assert_eq!(of_sqlstate("08006"), Some(Unavailable::Unreachable));
        assert_eq!(of_sqlstate("57P01"), Some(Unavailable::Unreachable));
        assert_eq!(
            of_sqlstate("23505"),
            None,
            "a unique violation is the statement's"
        );
        assert_eq!(of_sqlite_code(13), Some(Unavailable::Full));
        assert_eq!(of_sqlite_code(8 | (3 << 8)), Some(Unavailable::ReadOnly));
        assert_eq!(of_sqlite_code(10 | (4 << 8)), Some(Unavailable::FileFailed));
        assert_eq!(of_sqlite_code(19), None, "a constraint is the statement's");
        let timed_out: StoreError = sqlx::Error::PoolTimedOut.into();
        assert_eq!(timed_out.unavailable(), Some(Unavailable::Unreachable));
        assert_eq!(StoreError::Corrupt("x".into()).unavailable(), None);
    }
}
