//! The read model: what this server keeps of the agents in memory, so the hot paths and the
//! console need not ask the database. It holds the running agents with their keys and last
//! heartbeats (`running.rs`), the index that answers searches and deep pages (`index/`), and the
//! summary's short cache (`summary.rs`).
//!
//! The index has one load path ([`ReadModel::load_index`], again on [`News::Missed`]) and the
//! whole model one way to be told of changes ([`ReadModel::follow`]): the store tells it what
//! this server commits, as it commits; the change feed tells it what every server commits, in
//! commit order.

mod index;
mod listing;
mod running;
mod summary;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use plura_proto::{AgentStatus, Change, EventKind, Summary, Timestamp};

use crate::secret::unhex_digest;
use crate::store::{self, Changed, Follower, Store};
use index::AgentIndex;
pub use running::{Due, Heartbeat, RunningAgents};
use summary::SummaryCache;

/// What the read model is told.
pub enum News<'a> {
    /// Committed by this server, just now.
    Committed(&'a [&'a Changed]),
    /// Read from the change feed: every server's changes, in the order they committed.
    Told {
        changes: &'a [Change],
        from_this_server: bool,
    },
    /// Some changes could not be told (a lost connection, a change too large, an import): what
    /// is kept may be stale, and is read again.
    Missed,
}

pub struct ReadModel {
    store: Arc<dyn Store>,
    running: RunningAgents,
    index: Arc<AgentIndex>,
    summary: SummaryCache,
    /// Loads of the index under way, ended and waited for by `close`.
    loads: TaskTracker,
    closing: CancellationToken,
}

impl ReadModel {
    /// An empty read model over `store`, told of every change `store` commits from now on.
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        let model = Arc::new(Self {
            store: store.clone(),
            running: RunningAgents::default(),
            index: Arc::default(),
            summary: SummaryCache::default(),
            loads: TaskTracker::new(),
            closing: CancellationToken::new(),
        });
        let follower: std::sync::Weak<Self> = Arc::downgrade(&model);
        store.follow(follower);
        model
    }

    /// Learns the running agents and their keys from the database, so that their first
    /// heartbeats after a start are answered from memory: otherwise each agent of a large fleet
    /// costs a read in the first interval, all at once. Heartbeats before it ends ask the
    /// database, as they would anyway. Answers how many it learnt.
    pub async fn learn_running(&self) -> store::Result<usize> {
        const PAGE: u32 = 10_000;
        let (mut after, mut remembered) = (0, 0);
        loop {
            let page = self.store.running_keys(after, PAGE).await?;
            for (id, key_hash, seen) in &page {
                // A key hash not of our making is left for the database to judge.
                if let Some(key) = unhex_digest(key_hash) {
                    let at = seen.unwrap_or_else(Timestamp::now);
                    self.running.remember_known(*id, key, at);
                    remembered += 1;
                }
            }
            match page.last() {
                Some((id, _, _)) if page.len() == PAGE as usize => after = *id,
                _ => return Ok(remembered),
            }
        }
    }

    /// Loads the index in the background, the database answering searches meanwhile. On a
    /// shared database, only once the change feed is heard: a change made between the load's
    /// read and the feed's start would be missed.
    pub fn load_index(&self) {
        let reload = self
            .index
            .clone()
            .reload(self.store.clone(), self.closing.clone());
        self.loads.spawn(reload);
    }

    /// Ends the loads under way, and waits for them.
    pub async fn close(&self) {
        self.closing.cancel();
        self.loads.close();
        self.loads.wait().await;
    }

    /// Follows a change. The index takes every one; the summary's cache goes; an agent this
    /// server tracks is forgotten when its key may have ended (a stop, logout or delete here;
    /// a login, takeover, stop, logout or delete elsewhere: its next heartbeat asks the
    /// database).
    pub fn follow(&self, news: News<'_>) {
        match news {
            News::Committed(changes) => {
                self.index.committed(changes);
                for changed in changes {
                    if changed.is_gone() || changed.agent.status != AgentStatus::Running {
                        self.running.forget(changed.agent.id);
                    }
                }
                self.summary.forget();
            }
            News::Told {
                changes,
                from_this_server,
            } => {
                self.index.told(changes);
                if from_this_server {
                    return;
                }
                for change in changes {
                    use EventKind::*;
                    if matches!(
                        change.event,
                        Login | Takeover | Stopped | Logout | Deleted | Pruned
                    ) {
                        self.running.forget(change.agent_id);
                    }
                }
                self.summary.forget();
            }
            News::Missed => {
                // Keys issued elsewhere meanwhile are caught by the next flush, which writes
                // every agent tracked here.
                self.running.due_again(self.running.ids());
                self.summary.forget();
                if self.index.followed() {
                    self.load_index();
                }
            }
        }
    }

    /// Clears the summary's cache after a change that is no agent's history (the cloud's
    /// verdicts).
    pub fn forget_summary(&self) {
        self.summary.forget();
    }

    /// The running agents this server tracks.
    pub fn running(&self) -> &RunningAgents {
        &self.running
    }

    /// Whether an agent holds the identity, as far as the index has heard; `None` while it
    /// loads. A hint, not an answer: another server's registration may not have been told yet.
    pub fn heard_of(&self, ip: &str, hostname: &str) -> Option<bool> {
        self.index.registered(ip, hostname)
    }

    /// Whether (ip, hostname) is registered.
    pub async fn is_registered(&self, ip: &str, hostname: &str) -> store::Result<bool> {
        match self.heard_of(ip, hostname) {
            Some(known) => Ok(known),
            None => self.store.is_registered(ip, hostname).await,
        }
    }

    /// How many agents are registered.
    pub async fn agent_count(&self) -> store::Result<u64> {
        match self.indexed_agents() {
            Some(agents) => Ok(agents as u64),
            None => self.store.agent_count().await,
        }
    }

    /// How many agents the index holds; `None` while searches go to the database.
    pub fn indexed_agents(&self) -> Option<usize> {
        self.index.agents()
    }

    /// The console's cards, from a short cache that every change clears.
    pub async fn summary(&self) -> store::Result<Summary> {
        self.summary.get(self.store.summary()).await
    }
}

impl Follower for ReadModel {
    fn committed(&self, changes: &[&Changed]) {
        self.follow(News::Committed(changes));
    }

    fn committed_in_bulk(&self) {
        self.follow(News::Missed);
    }
}
