//! Runs the server: the HTTP API and the liveness timer over one store, until shutdown, and then
//! stops in order: no new requests, a last flush of last-seen times, the database closed.
//!
//! Connections are bounded: at most `max_connections` at once (below the file limit, so the
//! server never runs out of descriptors for its database and its agents) and a share of them per
//! source, a request head must arrive within `header_timeout` (which also closes idle
//! connections and slowloris senders, over HTTP/1 and HTTP/2 alike), and a request must be
//! answered within `request_timeout`.

mod connections;
mod proxies;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::alerts::{Alerter, Destinations};
use crate::api::{self, AppState, Shared};
use crate::auth::Auth;
use crate::fleet::{Fleet, LivenessPolicy};
use crate::metrics::Metrics;
use crate::rate::SourceRate;
use crate::store::Store;
use crate::tls::Certified;

pub use connections::source_key;
pub use proxies::TrustedProxies;

/// What stands between the clients and the server: its own TLS, and the proxies whose word on
/// the client's address is believed.
#[derive(Default)]
pub struct Front {
    pub tls: Option<Arc<Certified>>,
    pub proxies: TrustedProxies,
    /// Trusted proxies open each connection with a PROXY protocol header (v1 or v2).
    pub proxy_protocol: bool,
}

/// Cancelled to drop the connection a request came on at once (a reader that stopped reading,
/// whose answer hyper will never poll again).
#[derive(Debug, Clone, Default)]
pub struct ConnectionAbort(pub CancellationToken);

/// The connection a request came on, beside the client it is from (`ConnectInfo`).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// Who opened the TCP connection.
    pub addr: std::net::SocketAddr,
    /// Whether that is a trusted proxy.
    pub trusted_proxy: bool,
    /// The client the PROXY protocol header stated.
    pub stated_client: Option<std::net::SocketAddr>,
}

/// Sign-ins through the identity provider each source may begin or finish per second (in bursts
/// of ten seconds' worth): a person needs two.
const SSO_TRIES_PER_SOURCE: u32 = 2;

/// Tries with a wrong enrollment token each source may make per second (in bursts of ten
/// seconds' worth): an agent with a stale token retries far less often.
const WRONG_ENROLLMENT_TOKENS_PER_SOURCE: u32 = 1;

/// Descriptors kept for the database pool, logs and the like, below the file limit.
const RESERVED_FILES: u64 = 256;

/// Connections one source may hold by default: enough for a load balancer's or a load
/// generator's keep-alive pool, far from the whole server's.
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: usize = 256;
/// Logins each source address may make per second, in bursts of ten seconds' worth.
pub const DEFAULT_LOGINS_PER_SOURCE: u32 = 10;

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
    /// Connections one source (an IPv4 address, an IPv6 /64) may hold at once; `None`: no
    /// limit beyond `max_connections`.
    pub max_connections_per_source: Option<usize>,
    /// Logins each source address may make per second, in bursts of ten seconds' worth;
    /// `None`: no limit.
    pub logins_per_source: Option<u32>,
    /// How many agents may be registered; a new identity past it is refused. `None`: no bound.
    pub max_agents: Option<u64>,
    /// Webhooks added through the API may point at loopback (a receiver on the server's host).
    pub webhooks_to_loopback: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: None,
            max_connections_per_source: Some(DEFAULT_MAX_CONNECTIONS_PER_SOURCE),
            logins_per_source: Some(DEFAULT_LOGINS_PER_SOURCE),
            max_agents: None,
            webhooks_to_loopback: false,
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

/// Serves on `listener`, behind `front`, until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    front: Front,
    store: Arc<dyn Store>,
    policy: LivenessPolicy,
    limits: Limits,
    oidc: Option<Arc<crate::oidc::RelyingParty>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let fleet = Arc::new(Fleet::new(
        store.clone(),
        metrics.clone(),
        policy,
        limits.max_agents,
    ));
    let alerter = Arc::new(Alerter::new(
        store.clone(),
        metrics.clone(),
        fleet.alerts_due(),
        Destinations {
            loopback_allowed: limits.webhooks_to_loopback,
        },
    ));
    let auth = Arc::new(Auth::new(store.clone()));
    let state = AppState::new(Shared {
        auth: auth.clone(),
        fleet: fleet.clone(),
        alerter: alerter.clone(),
        metrics: metrics.clone(),
        sign_ins: Arc::default(),
        logins: Arc::new(SourceRate::new(limits.logins_per_source)),
        wrong_enrollment_tokens: Arc::new(SourceRate::new(Some(
            WRONG_ENROLLMENT_TOKENS_PER_SOURCE,
        ))),
        oidc,
        sso_tries: Arc::new(SourceRate::new(Some(SSO_TRIES_PER_SOURCE))),
        streams: Arc::new(crate::slots::Slots::new(
            api::MAX_STREAMS,
            api::MAX_STREAMS_PER_CREDENTIAL,
        )),
        exports: Arc::new(crate::slots::Slots::new(
            api::MAX_EXPORTS,
            api::MAX_EXPORTS_PER_CREDENTIAL,
        )),
        shutdown: shutdown.clone(),
    });
    let liveness = tokio::spawn(fleet.run(shutdown.clone()));
    let alerts = tokio::spawn(alerter.clone().run(shutdown.clone()));
    let credentials_used = tokio::spawn(auth.run(shutdown.clone()));
    let max_connections = limits.max_connections.unwrap_or_else(|| {
        usize::try_from(file_limit().saturating_sub(RESERVED_FILES).max(64)).unwrap_or(usize::MAX)
    });
    tracing::info!(
        address = %listener.local_addr()?,
        heartbeat_interval = ?policy.heartbeat_interval,
        max_connections,
        tls = front.tls.is_some(),
        "plura-server listening"
    );
    // SIGHUP reads the TLS files again; without TLS it must still not end the server (its
    // default action), since the package's unit sends it on `systemctl reload`.
    let watching = match front.tls.clone() {
        Some(tls) => tokio::spawn(tls.watch(shutdown.clone())),
        None => tokio::spawn(crate::tls::ignore_hangups(shutdown.clone())),
    };
    let acceptor = connections::Acceptor {
        router: api::router(state, limits.request_timeout),
        limits,
        max_connections,
        front,
        metrics,
    };
    acceptor.run(listener, &shutdown).await;

    // Whatever ended serving, the liveness timer flushes what it holds before the store closes.
    shutdown.cancel();
    liveness.await?;
    alerts.await?;
    credentials_used.await?;
    watching.await?;
    store.close().await;
    tracing::info!("plura-server stopped");
    Ok(())
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
