//! Runs the server: the HTTP API and the liveness timer over one store, until shutdown, and then
//! stops in order: no new requests, a last flush of last-seen times, the database closed.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::auth::Auth;
use crate::fleet::{Fleet, LivenessPolicy};
use crate::metrics::Metrics;
use crate::store::Store;

/// Serves on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn Store>,
    policy: LivenessPolicy,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let fleet = Arc::new(Fleet::new(store.clone(), metrics.clone(), policy));
    let state = AppState {
        auth: Arc::new(Auth::new(store.clone())),
        fleet: fleet.clone(),
        metrics,
        sign_ins: Arc::default(),
        shutdown: shutdown.clone(),
    };
    let liveness = tokio::spawn(fleet.run(shutdown.clone()));

    tracing::info!(
        address = %listener.local_addr()?,
        heartbeat_interval = ?policy.heartbeat_interval,
        "plura-server listening"
    );
    let app = api::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await;

    // Whatever ended serving, the liveness timer flushes what it holds before the store closes.
    shutdown.cancel();
    liveness.await?;
    store.close().await;
    tracing::info!("plura-server stopped");
    Ok(served?)
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
    tracing::info!("shutting down");
    token.cancel();
}
