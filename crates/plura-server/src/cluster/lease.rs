//! The sweep lease on a shared PostgreSQL database: the fleet-wide sweeps run on one server at a
//! time, the one holding an advisory lock on a connection of its own, which PostgreSQL frees
//! when that server dies.

use std::time::Duration;

use sqlx::{Connection, PgConnection};

use crate::store::Result;

/// The advisory lock of the sweep lease ("plura" in ASCII).
const LEASE_KEY: i64 = 0x0070_6c75_7261;
/// How long a lease check may take before the lease is given up.
const LEASE_CHECK: Duration = Duration::from_secs(2);

/// The sweep lease: held while this server's lease connection holds the advisory lock.
#[derive(Default)]
pub struct Lease {
    conn: tokio::sync::Mutex<Option<(PgConnection, bool)>>,
}

impl Lease {
    /// Whether this server holds the lease now, taking it if it is free. A lease connection
    /// that fails or hangs is dropped, and the lease with it.
    pub async fn hold(&self, url: &str) -> Result<bool> {
        let mut slot = self.conn.lock().await;
        let checked = tokio::time::timeout(LEASE_CHECK, async {
            if slot.is_none() {
                *slot = Some((PgConnection::connect(url).await?, false));
            }
            let (conn, held) = slot.as_mut().expect("just made");
            if !*held {
                *held = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(LEASE_KEY)
                    .fetch_one(&mut *conn)
                    .await?;
            } else {
                conn.ping().await?;
            }
            Ok::<bool, sqlx::Error>(*held)
        })
        .await;
        match checked {
            Ok(Ok(held)) => Ok(held),
            Ok(Err(e)) => {
                *slot = None;
                Err(e.into())
            }
            Err(_) => {
                *slot = None;
                Ok(false)
            }
        }
    }
}
