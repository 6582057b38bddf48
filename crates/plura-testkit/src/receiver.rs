//! A webhook receiver on loopback, as an operator's alerting endpoint: it keeps every request it
//! gets, and can be told to fail the first few.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::task::JoinHandle;

use crate::within;

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: String,
    pub answered: StatusCode,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Inbox {
    received: Mutex<Vec<Received>>,
    /// Requests still to be answered 500.
    to_fail: AtomicUsize,
}

pub struct Receiver {
    /// Where to post: `http://127.0.0.1:PORT/hook`.
    pub url: String,
    inbox: Arc<Inbox>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// A receiver that takes everything.
    pub async fn start() -> Self {
        Self::failing(0).await
    }

    /// A receiver that answers its first `failures` requests 500.
    pub async fn failing(failures: usize) -> Self {
        let inbox = Arc::new(Inbox {
            to_fail: AtomicUsize::new(failures),
            ..Inbox::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/hook", post(take))
            .with_state(inbox.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the receiver serves");
        });
        Self { url, inbox, task }
    }

    /// Every request so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.inbox.received.lock().unwrap().clone()
    }

    /// The requests answered 2xx so far.
    pub fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.answered.is_success())
            .collect()
    }

    /// Waits up to `limit` for a delivered request that `check` accepts.
    pub async fn wait_for(
        &self,
        limit: Duration,
        check: impl Fn(&Received) -> bool,
    ) -> Option<Received> {
        within(limit, || async {
            self.delivered().into_iter().find(&check)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn take(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let fail = inbox
        .to_fail
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let answered = if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    };
    inbox.received.lock().unwrap().push(Received {
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        answered,
    });
    answered
}
