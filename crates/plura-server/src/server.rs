//! Runs the server: the HTTP API and the liveness timer over one store, until shutdown, and then
//! stops in order: no new requests, a last flush of last-seen times, the database closed.
//!
//! Connections are bounded: at most `max_connections` at once (below the file limit, so the
//! server never runs out of descriptors for its database and its agents), a request head must
//! arrive within `header_timeout` (which also closes idle keep-alive connections and slowloris
//! senders), and a request must be answered within `request_timeout`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::alerts::Alerter;
use crate::api::{self, AppState, Shared};
use crate::auth::Auth;
use crate::fleet::{Fleet, LivenessPolicy};
use crate::metrics::Metrics;
use crate::rate::SourceRate;
use crate::store::Store;

/// Descriptors kept for the database pool, logs and the like, below the file limit.
const RESERVED_FILES: u64 = 256;

/// What bounds every connection and request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request head must arrive within this; an idle keep-alive connection closes after it.
    pub header_timeout: Duration,
    /// A request must be answered (its body read, its handler done) within this.
    pub request_timeout: Duration,
    /// Connections served at once; more are closed as they come. `None`: the file limit less
    /// what the server needs besides.
    pub max_connections: Option<usize>,
    /// Logins each source address may make per second, in bursts of ten seconds' worth;
    /// `None`: no limit.
    pub logins_per_source: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: None,
            logins_per_source: Some(10),
        }
    }
}

/// Raises the soft limit on open files to the hard one (what a server should be allowed);
/// answers the limit in force.
pub fn raise_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!("cannot read the open-file limit: {e}");
            1024
        }
    }
}

fn file_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}

/// Serves on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn Store>,
    policy: LivenessPolicy,
    limits: Limits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let fleet = Arc::new(Fleet::new(store.clone(), metrics.clone(), policy));
    let alerter = Arc::new(Alerter::new(
        store.clone(),
        metrics.clone(),
        fleet.alerts_due(),
    ));
    let state = AppState::new(Shared {
        auth: Arc::new(Auth::new(store.clone())),
        fleet: fleet.clone(),
        alerter: alerter.clone(),
        metrics: metrics.clone(),
        sign_ins: Arc::default(),
        logins: Arc::new(SourceRate::new(limits.logins_per_source)),
        shutdown: shutdown.clone(),
    });
    let liveness = tokio::spawn(fleet.run(shutdown.clone()));
    let alerts = tokio::spawn(alerter.clone().run(shutdown.clone()));
    let max_connections = limits.max_connections.unwrap_or_else(|| {
        usize::try_from(file_limit().saturating_sub(RESERVED_FILES).max(64)).unwrap_or(usize::MAX)
    });
    tracing::info!(
        address = %listener.local_addr()?,
        heartbeat_interval = ?policy.heartbeat_interval,
        max_connections,
        "plura-server listening"
    );
    let router = api::router(state, limits.request_timeout);
    accept(
        listener,
        router,
        limits,
        max_connections,
        metrics,
        &shutdown,
    )
    .await;

    // Whatever ended serving, the liveness timer flushes what it holds before the store closes.
    shutdown.cancel();
    liveness.await?;
    alerts.await?;
    store.close().await;
    tracing::info!("plura-server stopped");
    Ok(())
}

/// Takes connections until `shutdown`, then lets those open finish their requests.
async fn accept(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    max_connections: usize,
    metrics: Arc<Metrics>,
    shutdown: &CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, most likely: wait for some to close.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.refused_connections.inc();
            drop(stream);
            continue;
        };
        let service = router
            .clone()
            .map_request(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            // A connection that sends nothing is closed after the header timeout: hyper's own
            // timer starts only with the first byte.
            let mut first = [0u8; 1];
            let spoke = tokio::time::timeout(header_timeout, stream.peek(&mut first)).await;
            if matches!(spoke, Ok(Ok(n)) if n > 0) {
                let connection = builder.serve_connection_with_upgrades(
                    TokioIo::new(stream),
                    TowerToHyperService::new(service),
                );
                // A client that hangs up or times out ends its connection; nothing to report.
                let _ = watcher.watch(connection.into_owned()).await;
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Cancels `token` on Ctrl-C or SIGTERM.
pub async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        () = terminate => {}
    }
    token.cancel();
    tracing::info!("shutting down");
}
