//! The fleet's timer: flushing heartbeats, stopping silent agents, and the housekeeping
//! (pruning long-stopped agents, deleting old history), until shutdown.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use plura_proto::Timestamp;

use super::Fleet;
use crate::read_model::Due;
use crate::secret::hex;
use crate::store::{self, Changed, Doing, LastSeen};

/// A server that wrote no mark for this long is gone: its row goes.
const FORGET_MARKS_AFTER: Duration = Duration::from_secs(24 * 3600);

impl Fleet {
    /// Writes the heartbeats that are `due`. Agents the database no longer has as running with
    /// the key they carried (deleted, stopped by another server, or logged in again through
    /// another server) are not written but forgotten, so their next heartbeat goes to the
    /// database, which resumes them, answers 404, or refuses the old key. Answers whether it
    /// wrote anything.
    async fn flush(&self, due: Due) -> store::Result<bool> {
        let mut unwritten = self.running().take_due(due);
        if unwritten.is_empty() {
            return Ok(false);
        }
        // In the table's order, so the rows are found page after page, not at random.
        unwritten.sort_unstable_by_key(|(id, _, _)| *id);
        let seen: Vec<LastSeen> = unwritten
            .iter()
            .map(|&(id, at, key)| LastSeen {
                id,
                at,
                key_hash: hex(&key),
            })
            .collect();
        let flushed = self.store.flush_last_seen(&seen).await;
        let flushed =
            flushed.doing(|| format!("writing the last-seen times of {} agents", seen.len()));
        let stale: HashSet<i64> = match flushed {
            Ok(stale) => stale.into_iter().collect(),
            Err(e) => {
                self.running()
                    .due_again(unwritten.iter().map(|(id, _, _)| *id));
                return Err(e);
            }
        };
        let written = unwritten.len() - stale.len();
        self.metrics.flushed_rows.inc_by(written as u64);
        let stale: Vec<(i64, [u8; 32])> = unwritten
            .into_iter()
            .filter(|(id, _, _)| stale.contains(id))
            .map(|(id, _, key)| (id, key))
            .collect();
        let tracked = self.running().forget_stale(&stale);
        self.metrics.tracked_agents.set(tracked as i64);
        Ok(true)
    }

    /// Marks stopped the agents silent for longer than the limit, judged only on time in which
    /// they could have been heard: after a full limit of this server reaching the database (at
    /// start, and after an outage), and, on a shared database, only up to what every live
    /// server has written of what it heard. A server whose mark is older than the limit counts
    /// as gone, so the agents of a dead server are still stopped.
    /// `tick` is when this tick's flush began: what it left unwritten was heard recently
    /// enough, as of then.
    async fn stop_silent(&self, tick: Timestamp) -> store::Result<()> {
        let limit = self.policy.silence_limit();
        let reachable_since = *self.reachable_since.lock().unwrap();
        if reachable_since.is_none_or(|since| tick.minus(limit) < since) {
            return Ok(());
        }
        let heard_through = self.heard_through(tick).await?;
        let now = Timestamp::now();
        let hold = self.verdict_hold(now).await?;
        let stopped = self
            .store
            .stop_silent(heard_through.minus(limit), now, hold)
            .await
            .doing(|| "stopping the agents silent for too long".into())?;
        self.publish_sweep(stopped, "agent stopped: no heartbeat");
        Ok(())
    }

    /// The time up to which every live server has written what it heard: `tick` alone on the
    /// database; else the oldest mark among the servers that wrote one within the silence
    /// limit.
    async fn heard_through(&self, tick: Timestamp) -> store::Result<Timestamp> {
        if !self.cluster.shared() {
            return Ok(tick);
        }
        let gone_before = tick.minus(self.policy.silence_limit());
        let marks = self
            .store
            .written_marks()
            .await
            .doing(|| "reading what each server has written".into())?;
        Ok(marks
            .into_iter()
            .map(|(_, mark)| mark)
            .filter(|&mark| mark >= gone_before)
            .fold(tick, Timestamp::min))
    }

    /// One tick: the heartbeats heard written (and, on a shared database, this server's mark
    /// of them), then, on the server that leads, the sweep.
    async fn tick(&self, now: Timestamp) -> store::Result<()> {
        // Flush first, so an agent whose heartbeat only this server holds is not taken for
        // silent.
        let wrote = self
            .flush(self.policy.due(self.cluster.shared(), now))
            .await?;
        if self.cluster.shared() {
            self.store
                .mark_written(self.store.server_id(), now)
                .await
                .doing(|| "recording what this server has written".into())?;
        } else if !wrote {
            // Nothing written: whether the database answers is still this tick's to know.
            self.store
                .ping()
                .await
                .doing(|| "checking that the database answers".into())?;
        }
        self.database_reached(now);
        if !self.leads().await {
            return Ok(());
        }
        let swept = async {
            self.stop_silent(now).await?;
            self.store.fold_counts().await?;
            self.sample().await
        }
        .await;
        // Whatever the sweep stopped, and alerts other servers recorded.
        self.alerts_due.notify_one();
        swept
    }

    /// The database served a tick.
    fn database_reached(&self, now: Timestamp) {
        let mut since = self.reachable_since.lock().unwrap();
        if since.is_none() {
            *since = Some(now);
            if self.metrics.database_up.set(1) == 0 {
                tracing::info!(
                    "the database serves again; agents are judged silent from a full silence \
                     limit on"
                );
            }
        }
    }

    /// The database failed a tick: no agent is judged silent until it has served a full
    /// silence limit again.
    fn database_failed(&self, e: &store::StoreError) {
        *self.reachable_since.lock().unwrap() = None;
        self.metrics.database_failures.inc();
        if e.unavailable().is_some() {
            self.metrics.database_up.set(0);
        }
        tracing::warn!("liveness check failed, will retry: {e}");
    }

    /// Samples the fleet's counts for its chart, when one is due.
    async fn sample(&self) -> store::Result<()> {
        {
            let mut sampled = self.sampled.lock().unwrap();
            if sampled.is_some_and(|at| at.elapsed() < self.policy.sample_every) {
                return Ok(());
            }
            *sampled = Some(tokio::time::Instant::now());
        }
        let summary = self.summary().await?;
        self.store
            .record_sample(Timestamp::now(), &summary)
            .await
            .doing(|| "recording a sample of the fleet's counts".into())
    }

    /// Deletes long-stopped agents and old history, as the policy says.
    async fn housekeeping(&self) -> store::Result<()> {
        let now = Timestamp::now();
        if let Some(after) = self.policy.prune_stopped_after {
            let pruned = self
                .store
                .prune_stopped(now.minus(after), now)
                .await
                .doing(|| "pruning long-stopped agents".into())?;
            self.publish_sweep(pruned, "agent pruned after a long stop");
        }
        if self.cluster.shared() {
            self.store
                .forget_marks_before(now.minus(FORGET_MARKS_AFTER))
                .await
                .doing(|| "forgetting the marks of servers long gone".into())?;
        }
        if let Some(keep) = self.policy.keep_events_for {
            let deleted = self
                .store
                .delete_events_before(now.minus(keep))
                .await
                .doing(|| "deleting old history".into())?;
            if deleted > 0 {
                tracing::info!("deleted {deleted} history events older than {keep:?}");
            }
            let deleted = self
                .store
                .delete_alerts_before(now.minus(keep))
                .await
                .doing(|| "deleting old alerts".into())?;
            if deleted > 0 {
                tracing::info!("deleted {deleted} alerts and deliveries older than {keep:?}");
            }
        }
        Ok(())
    }

    /// Logs and publishes what a sweep changed.
    fn publish_sweep(&self, changes: Vec<Changed>, what: &str) {
        for changed in changes {
            let agent = self.publish(changed);
            tracing::info!(agent = agent.id, ip = %agent.ip, hostname = %agent.hostname, "{what}");
        }
    }

    /// Whether this server runs the fleet-wide sweeps now (see `Cluster::leads`).
    async fn leads(&self) -> bool {
        let leads = match self.cluster.leads().await {
            Ok(leads) => leads,
            Err(e) => {
                tracing::warn!("cannot tell whether this server runs the sweeps: {e}");
                false
            }
        };
        if self.metrics.sweep_leader.set(i64::from(leads)) != i64::from(leads) {
            if leads {
                tracing::info!("this server now runs the fleet-wide sweeps");
            } else {
                tracing::info!("another server runs the fleet-wide sweeps");
            }
        }
        leads
    }

    /// Hears what other servers on the same database change, until `shutdown`. The index is
    /// loaded once the changes it must follow are heard.
    async fn hear_others(self: Arc<Self>, shutdown: CancellationToken) {
        let feed = loop {
            match self.cluster.hear().await {
                Ok(feed) => break feed,
                Err(e) => {
                    tracing::warn!("cannot listen for other servers' changes, will retry: {e}");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(self.policy.tick()) => {}
                    }
                }
            }
        };
        self.read_model.load_index();
        let Some(mut feed) = feed else {
            return;
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                notice = feed.next() => self.heard(notice),
            }
        }
    }

    /// The liveness timer, until `shutdown`; then a last flush so no heartbeat is lost.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let hearing = tokio::spawn(self.clone().hear_others(shutdown.clone()));
        let learning = tokio::time::Instant::now();
        match self.read_model.learn_running().await {
            Ok(n) => {
                self.metrics
                    .tracked_agents
                    .set(self.running().tracked() as i64);
                tracing::info!("{n} running agents known in {:?}", learning.elapsed());
            }
            Err(e) => tracing::warn!("cannot learn the running agents, each will be read: {e}"),
        }
        let mut tick = tokio::time::interval(self.policy.tick());
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let housekeeping = self.policy.housekeeping_tick();
        let mut housekeeping_tick =
            tokio::time::interval(housekeeping.unwrap_or(Duration::from_secs(60)));
        housekeeping_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(e) = self.tick(Timestamp::now()).await {
                        self.database_failed(&e);
                    }
                }
                _ = housekeeping_tick.tick(), if housekeeping.is_some() => {
                    if !self.leads().await {
                        continue;
                    }
                    if let Err(e) = self.housekeeping().await {
                        self.metrics.database_failures.inc();
                        tracing::warn!("housekeeping failed, will retry: {e}");
                    }
                }
            }
        }
        if let Err(e) = self.flush(Due::AllHeard).await {
            tracing::error!("last flush of last-seen times failed: {e}");
        }
        if let Err(e) = hearing.await {
            tracing::error!("the listener for other servers' changes failed: {e}");
        }
        self.read_model.close().await;
    }
}
