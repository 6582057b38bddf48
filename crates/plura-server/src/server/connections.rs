//! Taking connections and serving each one, bounded: a slot among all connections and among
//! those of its source, a first byte and a TLS handshake within the header timeout, and closed
//! once it has had no request open for the header timeout, whatever its protocol.
//!
//! hyper closes idle HTTP/1 keep-alive connections by its header-read timer, but has no such
//! bound for HTTP/2: a client that sends the preface and then nothing would hold its slot for
//! ever. So every connection counts its open requests (a request stays open until its answer's
//! body is sent or dropped) and is shut down gracefully after that long at zero.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::proxies::read_proxy_header;
use super::{ConnectionAbort, Front, Limits, Peer};
use crate::metrics::Metrics;

/// Streams one HTTP/2 connection may have open at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 128;
/// Largest request head accepted over HTTP/2 (HTTP/1's is hyper's read buffer).
const MAX_HEADER_LIST: u32 = 64 * 1024;
/// How long a connection asked to close (idle, or the server stopping) may take to do so once
/// it has no request open: a peer that never acknowledges HTTP/2's GOAWAY is cut after it.
const CLOSING_GRACE: Duration = Duration::from_secs(1);

/// What each accepted connection is served with.
pub struct Acceptor {
    pub router: axum::Router,
    pub limits: Limits,
    pub max_connections: usize,
    pub front: Front,
    pub metrics: Arc<Metrics>,
}

impl Acceptor {
    /// Takes connections until `shutdown`, then lets those open finish their requests.
    pub async fn run(self, listener: TcpListener, shutdown: &CancellationToken) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(this.max_connections));
        let sources = Arc::new(Sources::new(this.limits.max_connections_per_source));
        let tasks = TaskTracker::new();
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
            // A source's share is taken as the connection comes, before it has to say anything,
            // so silent connections from one host cannot hold every slot either. A trusted
            // proxy's own connections carry many clients and are not held to one share; the
            // clients it states in the PROXY protocol are, once their header is read.
            let from_proxy = this.front.proxies.trusts(peer.ip());
            let source_slot = if from_proxy {
                None
            } else {
                match sources.admit(peer.ip()) {
                    Some(slot) => Some(slot),
                    None => {
                        this.metrics.refused_connections.inc();
                        continue;
                    }
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                this.metrics.refused_connections.inc();
                continue;
            };
            let (this, sources, shutdown) = (this.clone(), sources.clone(), shutdown.clone());
            tasks.spawn(async move {
                this.serve(stream, peer, from_proxy, &sources, &shutdown)
                    .await;
                drop((slot, source_slot));
            });
        }
        drop(listener);
        tasks.close();
        tasks.wait().await;
    }

    async fn serve(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        from_proxy: bool,
        sources: &Arc<Sources>,
        shutdown: &CancellationToken,
    ) {
        let header_timeout = self.limits.header_timeout;
        // A connection that sends nothing is closed after the header timeout: hyper's own timer
        // starts only with the first byte.
        let mut first = [0u8; 1];
        let spoke = tokio::time::timeout(header_timeout, stream.peek(&mut first)).await;
        if !matches!(spoke, Ok(Ok(n)) if n > 0) {
            return;
        }
        let stated = if from_proxy && self.front.proxy_protocol {
            match tokio::time::timeout(header_timeout, read_proxy_header(&mut stream)).await {
                Ok(Ok(stated)) => stated,
                Ok(Err(e)) => return tracing::warn!(%peer, "{e}"),
                Err(_) => return tracing::debug!(%peer, "no PROXY protocol header in time"),
            }
        } else {
            None
        };
        let _stated_slot = match stated.map(|client| sources.admit(client.ip())) {
            Some(None) => {
                self.metrics.refused_connections.inc();
                return;
            }
            Some(Some(slot)) => Some(slot),
            None => None,
        };
        let peer = Peer {
            addr: peer,
            trusted_proxy: from_proxy,
            stated_client: stated,
        };
        match &self.front.tls {
            None => self.serve_http(stream, peer, shutdown).await,
            Some(tls) => {
                let handshake = tokio::time::timeout(header_timeout, tls.acceptor().accept(stream));
                match handshake.await {
                    Ok(Ok(stream)) => self.serve_http(stream, peer, shutdown).await,
                    Ok(Err(e)) => tracing::debug!(peer = %peer.addr, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(peer = %peer.addr, "TLS handshake timed out"),
                }
            }
        }
    }

    async fn serve_http<I>(&self, io: I, peer: Peer, shutdown: &CancellationToken)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let open = Arc::new(OpenRequests::default());
        let abort = ConnectionAbort::default();
        let aborted = abort.0.clone();
        let router = self.router.clone();
        let counted = open.clone();
        let proxies = self.front.proxies.clone();
        let service = tower::service_fn(move |mut request: hyper::Request<Incoming>| {
            // Everything per address (rates, throttles, the source shown, the audit, the logs)
            // reads the client from ConnectInfo.
            let client = peer.stated_client.unwrap_or_else(|| {
                let ip = proxies.client(peer.addr.ip(), request.headers());
                SocketAddr::new(ip, peer.addr.port())
            });
            request.extensions_mut().insert(ConnectInfo(client));
            request.extensions_mut().insert(peer);
            request.extensions_mut().insert(abort.clone());
            let guard = counted.begin();
            let answer = router.clone().oneshot(request.map(Body::new));
            async move {
                let response = answer.await?;
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| Body::new(Counted { body, _open: guard })),
                )
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .max_header_list_size(MAX_HEADER_LIST);
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
        let mut connection = std::pin::pin!(connection);
        let mut closing = false;
        loop {
            tokio::select! {
                // A client that hangs up or times out ends its connection; nothing to report.
                _ = connection.as_mut() => return,
                () = aborted.cancelled() => return,
                () = shutdown.cancelled(), if !closing => {}
                () = open.idle_for(self.limits.header_timeout), if !closing => {}
                () = open.idle_for(CLOSING_GRACE), if closing => return,
            }
            connection.as_mut().graceful_shutdown();
            closing = true;
        }
    }
}

/// How many requests of one connection are open; watched by the connection's idle timer.
struct OpenRequests(watch::Sender<usize>);

impl Default for OpenRequests {
    fn default() -> Self {
        Self(watch::channel(0).0)
    }
}

impl OpenRequests {
    fn begin(self: &Arc<Self>) -> OpenRequest {
        self.0.send_modify(|n| *n += 1);
        OpenRequest(self.clone())
    }

    /// Returns once no request has been open for `quiet`.
    async fn idle_for(&self, quiet: Duration) {
        let mut open = self.0.subscribe();
        loop {
            // The sender lives in `self`, so neither wait can fail.
            let _ = open.wait_for(|n| *n == 0).await;
            tokio::select! {
                () = tokio::time::sleep(quiet) => return,
                _ = open.changed() => {}
            }
        }
    }
}

struct OpenRequest(Arc<OpenRequests>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.0.send_modify(|n| *n -= 1);
    }
}

/// An answer's body, which keeps its request counted as open until it is sent or dropped.
struct Counted {
    body: Body,
    _open: OpenRequest,
}

impl hyper::body::Body for Counted {
    type Data = <Body as hyper::body::Body>::Data;
    type Error = <Body as hyper::body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Connections open per source: an IPv4 address, or an IPv6 /64 (what one host or one customer
/// is usually given).
struct Sources {
    per_source: Option<usize>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl Sources {
    fn new(per_source: Option<usize>) -> Self {
        Self {
            per_source,
            open: Mutex::default(),
        }
    }

    /// A slot for one more connection from `source`, or `None` when it has all it may.
    fn admit(self: &Arc<Self>, source: IpAddr) -> Option<SourceSlot> {
        let Some(limit) = self.per_source else {
            return Some(SourceSlot(None));
        };
        let key = source_key(source);
        let mut open = self.open.lock().unwrap();
        let count = open.entry(key).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(SourceSlot(Some((self.clone(), key))))
    }
}

struct SourceSlot(Option<(Arc<Sources>, IpAddr)>);

impl Drop for SourceSlot {
    fn drop(&mut self) {
        if let Some((sources, key)) = self.0.take() {
            let mut open = sources.open.lock().unwrap();
            if let Some(count) = open.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&key);
                }
            }
        }
    }
}

/// The unit a per-source limit counts: the IPv4 address (an IPv4-mapped IPv6 one too), or the
/// IPv6 /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_sources_are_counted_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(other));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_source_gets_its_share_and_gives_it_back() {
        let sources = Arc::new(Sources::new(Some(2)));
        let (here, there) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = sources.admit(here).unwrap();
        let _second = sources.admit(here).unwrap();
        assert!(sources.admit(here).is_none(), "a third from one source");
        assert!(
            sources.admit(there).is_some(),
            "another source is not held back"
        );
        drop(first);
        assert!(
            sources.admit(here).is_some(),
            "a closed connection frees its slot"
        );
    }
}
