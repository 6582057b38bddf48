//! The fan-out of every change: the live stream, the metrics, and the summary cache that a
//! change clears.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use plura_proto::{Change, Summary};

use crate::metrics::{EventLabel, Metrics};
use crate::store;

/// How many changes a slow live-stream reader may fall behind before it is told to resync.
const CHANGE_BACKLOG: usize = 4096;
/// How long a summary is reused when nothing changed here: every console reloads it on every
/// change, and over 100k agents it costs a few scans. Changes made through another server
/// show after this at the latest.
const SUMMARY_TTL: Duration = Duration::from_secs(2);

/// What the live stream is told.
#[derive(Debug, Clone)]
pub enum Published {
    /// Shared: every reader gets the same one.
    Change(Arc<Change>),
    /// Changes were missed: what a reader shows may be stale; reload it.
    Resync,
}

pub struct ChangeFeed {
    sender: broadcast::Sender<Published>,
    metrics: Arc<Metrics>,
    summary: Mutex<Option<(Instant, Summary)>>,
    /// Counts announced changes, so a summary computed across one is not cached.
    generation: AtomicU64,
}

impl ChangeFeed {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            sender: broadcast::channel(CHANGE_BACKLOG).0,
            metrics,
            summary: Mutex::default(),
            generation: AtomicU64::new(0),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.sender.subscribe()
    }

    /// Tells the stream and the metrics about changes made here.
    pub fn publish_local(&self, changes: Vec<Change>) {
        for change in &changes {
            self.metrics
                .agent_events
                .get_or_create(&EventLabel {
                    event: change.event.as_str(),
                })
                .inc();
        }
        self.publish(changes);
    }

    /// Tells the stream about changes (made here or by another server); what is cached goes.
    pub fn publish(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        self.forget_summary();
        for change in changes {
            // No receiver is fine: nobody is watching the console.
            let _ = self.sender.send(Published::Change(Arc::new(change)));
        }
    }

    /// Tells every reader to reload.
    pub fn resync(&self) {
        let _ = self.sender.send(Published::Resync);
    }

    /// Clears the cached summary: the fleet changed (perhaps through another server).
    pub fn forget_summary(&self) {
        let mut cache = self.summary.lock().unwrap();
        self.generation.fetch_add(1, Ordering::SeqCst);
        *cache = None;
    }

    /// The summary from a short cache that every announced change clears; `query` computes it.
    pub async fn summary(
        &self,
        query: impl Future<Output = store::Result<Summary>>,
    ) -> store::Result<Summary> {
        if let Some((at, summary)) = self.summary.lock().unwrap().as_ref()
            && at.elapsed() < SUMMARY_TTL
        {
            return Ok(summary.clone());
        }
        let asked = (Instant::now(), self.generation.load(Ordering::SeqCst));
        let summary = query.await?;
        let mut cache = self.summary.lock().unwrap();
        // Not if a change was announced while the query ran: it may predate the change.
        if self.generation.load(Ordering::SeqCst) == asked.1 {
            *cache = Some((asked.0, summary.clone()));
        }
        Ok(summary)
    }
}
