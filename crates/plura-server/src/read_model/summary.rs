//! The console's cards, from a short cache that every change clears: every console reloads
//! them on every change, and over a large fleet each costs a few scans.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use plura_proto::Summary;

use crate::store;

/// How long a summary is reused when nothing changed here. Changes made through another server
/// show after this at the latest.
const SUMMARY_TTL: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct SummaryCache {
    cached: Mutex<Option<(Instant, Summary)>>,
    /// Counts changes, so a summary computed across one is not cached.
    generation: AtomicU64,
}

impl SummaryCache {
    /// Clears the cached summary: the fleet changed.
    pub fn forget(&self) {
        let mut cached = self.cached.lock().unwrap();
        self.generation.fetch_add(1, Ordering::SeqCst);
        *cached = None;
    }

    /// The cached summary, or the one `query` computes.
    pub async fn get(
        &self,
        query: impl Future<Output = store::Result<Summary>>,
    ) -> store::Result<Summary> {
        if let Some((at, summary)) = self.cached.lock().unwrap().as_ref()
            && at.elapsed() < SUMMARY_TTL
        {
            return Ok(summary.clone());
        }
        let asked = (Instant::now(), self.generation.load(Ordering::SeqCst));
        let summary = query.await?;
        let mut cached = self.cached.lock().unwrap();
        // Not if the fleet changed while the query ran: it may predate the change.
        if self.generation.load(Ordering::SeqCst) == asked.1 {
            *cached = Some((asked.0, summary.clone()));
        }
        Ok(summary)
    }
}
