//! The fan-out of every change: the live stream and the metrics.

use std::sync::Arc;

use tokio::sync::broadcast;

use plura_proto::Change;

use crate::metrics::{EventLabel, Metrics};

/// How many changes a slow live-stream reader may fall behind before it is told to resync.
const CHANGE_BACKLOG: usize = 4096;

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
}

impl ChangeFeed {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            sender: broadcast::channel(CHANGE_BACKLOG).0,
            metrics,
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

    /// Tells the stream about changes (made here or by another server).
    pub fn publish(&self, changes: Vec<Change>) {
        for change in changes {
            // No receiver is fine: nobody is watching the console.
            let _ = self.sender.send(Published::Change(Arc::new(change)));
        }
    }

    /// Tells every reader to reload.
    pub fn resync(&self) {
        let _ = self.sender.send(Published::Resync);
    }
}
