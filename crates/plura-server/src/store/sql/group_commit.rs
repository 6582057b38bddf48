//! Group commit of logins: a login waits in a queue; whoever finds the writer free takes every
//! login waiting and runs them in one transaction, and each is answered once that commits. A
//! fleet booting at once then pays one disk flush per batch, not per agent, with no timer: a
//! batch is whatever arrived while the previous one was being written.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::SqlStore;
use super::login::{Pending, login_together};
use crate::store::{Login, LoginOutcome, Result, StoreError};

/// The most logins one transaction takes: enough to amortise a flush many times over, few
/// enough that a batch holds the write lock for milliseconds.
const MAX_BATCH: usize = 512;

/// A login waiting for its batch, and where its answer goes.
struct Waiting {
    pending: Pending,
    answer: oneshot::Sender<Result<LoginOutcome>>,
}

impl Waiting {
    /// Answers the login with what its batch made of it (or why it made nothing).
    fn answer(mut self, written: Result<()>) {
        let outcome = written.and_then(|()| self.pending.take_outcome());
        let _ = self.answer.send(outcome);
    }
}

impl AsRef<Pending> for Waiting {
    fn as_ref(&self) -> &Pending {
        &self.pending
    }
}

impl AsMut<Pending> for Waiting {
    fn as_mut(&mut self) -> &mut Pending {
        &mut self.pending
    }
}

#[derive(Default)]
pub(super) struct LoginQueue {
    waiting: Mutex<Vec<Waiting>>,
    /// Held while a batch is written.
    writer: Arc<tokio::sync::Mutex<()>>,
}

impl LoginQueue {
    fn take_batch(&self) -> Vec<Waiting> {
        let mut waiting = self.waiting.lock().unwrap();
        // The oldest first: they have waited longest.
        let size = waiting.len().min(MAX_BATCH);
        waiting.drain(..size).collect()
    }
}

/// Queues `login` and answers once the batch it went into has committed.
pub(super) async fn login(store: &SqlStore, login: Login) -> Result<LoginOutcome> {
    let (answer, mut answered) = oneshot::channel();
    let queue = &store.logins;
    queue.waiting.lock().unwrap().push(Waiting {
        pending: Pending::new(login),
        answer,
    });
    loop {
        tokio::select! {
            biased;
            result = &mut answered => {
                return result.unwrap_or_else(|_| {
                    Err(StoreError::Contended("a login batch that ended early".into()))
                });
            }
            turn = queue.writer.clone().lock_owned() => {
                let batch = queue.take_batch();
                if batch.is_empty() {
                    // Ours was in the batch just written; its answer is waiting.
                    continue;
                }
                // Its own task: the batch carries other clients' logins and must finish even if
                // this request is dropped. It writes what waits until nothing does, so the next
                // batch begins as the last one ends, not once a waiting login has been woken to
                // take the turn.
                let store = store.clone();
                tokio::spawn(async move {
                    let mut batch = batch;
                    while !batch.is_empty() {
                        write_batch(&store, batch).await;
                        batch = store.logins.take_batch();
                    }
                    drop(turn);
                });
            }
        }
    }
}

/// Writes a batch together; if that fails, each login alone, so one bad login fails only itself.
/// Each login is answered with its own outcome, which it carries.
async fn write_batch(store: &SqlStore, mut batch: Vec<Waiting>) {
    match login_together(store, &mut batch).await {
        Ok(()) => batch.into_iter().for_each(|waiting| waiting.answer(Ok(()))),
        Err(e) if batch.len() == 1 => {
            if let Some(waiting) = batch.pop() {
                waiting.answer(Err(e));
            }
        }
        Err(e) => match e.unavailable() {
            // The database cannot serve: each alone would wait as long again, for the same
            // answer.
            Some(why) => {
                tracing::warn!("a batch of {} logins: {e}", batch.len());
                for waiting in batch {
                    waiting.answer(Err(StoreError::Unavailable(why)));
                }
            }
            None => {
                tracing::debug!("a batch of {} logins failed ({e}); each alone", batch.len());
                for mut waiting in batch {
                    let written = login_together(store, std::slice::from_mut(&mut waiting)).await;
                    waiting.answer(written);
                }
            }
        },
    }
}
