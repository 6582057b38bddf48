//! Coordination among the servers sharing one database: which of them runs the fleet-wide
//! sweeps (the lease) and what the others change (the change feed). Alone on an embedded
//! database, a server leads and has no one to hear.

mod feed;
mod lease;

use crate::store::{Backend, Result, Store};
pub use feed::{Feed, Notice};
use lease::Lease;

pub struct Cluster {
    shared: Option<Shared>,
}

/// A database other servers may share.
struct Shared {
    url: String,
    me: String,
    lease: Lease,
}

impl Cluster {
    /// The servers on the database `store` writes to, this one as `store` names it.
    pub fn of(store: &dyn Store) -> Self {
        let shared = match store.backend() {
            Backend::Sqlite { .. } => None,
            Backend::Postgres { url } => Some(Shared {
                url: url.clone(),
                me: store.server_id().to_string(),
                lease: Lease::default(),
            }),
        };
        Self { shared }
    }

    /// Whether other servers may share the database, each hearing agents the others do not.
    pub fn shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Whether this server runs the fleet-wide sweeps now, taking the lease if it is free:
    /// always when alone; when shared, one server at a time, and another takes over soon after
    /// that one dies.
    pub async fn leads(&self) -> Result<bool> {
        match &self.shared {
            None => Ok(true),
            Some(shared) => shared.lease.hold(&shared.url).await,
        }
    }

    /// The change feed of every server on the database; `None` when no other can share it.
    pub async fn hear(&self) -> Result<Option<Feed>> {
        match &self.shared {
            None => Ok(None),
            Some(shared) => Feed::connect(&shared.url, shared.me.clone())
                .await
                .map(Some),
        }
    }
}
