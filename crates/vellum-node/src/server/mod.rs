//! The HTTPS API: a tokio-rustls accept loop in front of an axum router.
//!
//! The loop (rather than `axum::serve`) exists to read each connection's client certificate
//! and hand its ACL fingerprint to the router as a request extension; axum's own server has no
//! access to TLS state. HTTP/1.1 only, which every ACL client speaks.

mod access;
mod app;
pub mod auth;
mod context;
mod endpoints;
mod explorer;
pub use explorer::{DEFAULT_LOGIN_SCOPE, ExplorerLogin};
mod functions;
mod gov;
pub mod limits;
mod middleware;
mod parse_errors;
pub mod peer;
mod query;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use vellum_core::crypto::acl_fingerprint;

pub use auth::{Issuer, JwksError, TokenError, TokenValidator};
pub use context::{
    ApiConfig, DEFAULT_COLLECTION, Limits, NODE_BODY_LIMIT, PeerCertificate, STATE_HEADER,
    TXID_HEADER, WAIT_HEADER, WAIT_HEADER_LIMIT,
};
pub(crate) use gov::GOV_API_VERSIONS;

use crate::LedgerNode;
use limits::{Connections, Full, Throttle};

/// Warnings of the accept loop, one of each kind a second at most.
static ACCEPT_FAILED: Throttle = Throttle::new(Duration::from_secs(1));
static NODE_FULL: Throttle = Throttle::new(Duration::from_secs(1));
static ADDRESS_FULL: Throttle = Throttle::new(Duration::from_secs(1));

/// Why the API server could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The address could not be bound.
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    /// The node's TLS identity cannot be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// A bound, not yet running, API server.
pub struct Server {
    listener: TcpListener,
    tls: TlsAcceptor,
    router: axum::Router,
    limits: Limits,
    node: Arc<LedgerNode>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.listener.local_addr().ok())
            .finish()
    }
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) for `node`, presenting its certificate and the
    /// service certificate (as its service identity has them now) with `node_key_pem`.
    pub async fn bind(
        node: Arc<LedgerNode>,
        cfg: ApiConfig,
        addr: SocketAddr,
        node_key_pem: &str,
    ) -> Result<Server, ServerError> {
        let listener = TcpListener::bind(addr).await?;
        Server::with_listener(listener, node, cfg, node_key_pem)
    }

    /// Serves on a listener bound earlier (a node that joins a cluster must know its address
    /// before it starts).
    pub fn with_listener(
        listener: TcpListener,
        node: Arc<LedgerNode>,
        cfg: ApiConfig,
        node_key_pem: &str,
    ) -> Result<Server, ServerError> {
        let tls = TlsAcceptor::from(tls::server_config_live(
            node.identity().clone(),
            node_key_pem,
        )?);
        let limits = cfg.limits.clone();
        let state = Arc::new(context::AppState::new(node.clone(), cfg));
        Ok(Server {
            listener,
            tls,
            router: router(state),
            limits,
            node,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting and lets in-flight requests
    /// finish (up to 30 seconds).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let graceful = GracefulShutdown::new();
        let limits = self.limits;
        let connections =
            Connections::new(limits.max_connections, limits.max_connections_per_address);
        let node_addresses = limits::NodeAddresses::default();
        let metrics = self.node.metrics();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors, most likely: back off, never crash.
                            if let Some(more) = ACCEPT_FAILED.allow() {
                                tracing::warn!(error = %e, suppressed = more, "accept failed");
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let node = node_addresses.contains(peer.ip(), &self.node);
                    let slot = match connections.admit(peer.ip(), node) {
                        Ok(slot) => slot,
                        Err(full) => {
                            metrics.refuse(match full {
                                Full::All(_) => "ConnectionLimit",
                                Full::Address(_) => "AddressConnectionLimit",
                            });
                            match full {
                                Full::All(n) => if let Some(more) = NODE_FULL.allow() {
                                    tracing::warn!(%peer, limit = n, suppressed = more, "connection limit reached: closing new connections");
                                },
                                Full::Address(n) => if let Some(more) = ADDRESS_FULL.allow() {
                                    tracing::warn!(%peer, limit = n, suppressed = more, "connection limit of one address reached: closing its new connections");
                                },
                            }
                            drop(tcp);
                            continue;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    let tls = self.tls.clone();
                    let router = self.router.clone();
                    let watcher = graceful.watcher();
                    let (handshake_timeout, header_timeout) =
                        (limits.handshake_timeout, limits.header_timeout);
                    let open = OpenConnection::new(metrics);
                    tokio::spawn(async move {
                        let _slot = (slot, open);
                        let stream = match tokio::time::timeout(handshake_timeout, tls.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                        let der = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| Arc::<[u8]>::from(c.as_ref()));
                        let peer_cert = PeerCertificate(der.as_deref().map(acl_fingerprint));
                        let peer_der = peer::PeerCertDer(der);
                        let svc = tower::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                            req.extensions_mut().insert(peer_cert.clone());
                            req.extensions_mut().insert(peer_der.clone());
                            router.clone().oneshot(req.map(axum::body::Body::new))
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .keep_alive(true)
                            .timer(hyper_util::rt::TokioTimer::new())
                            .header_read_timeout(header_timeout)
                            .serve_connection(
                                TokioIo::new(parse_errors::JsonErrors::new(stream)),
                                TowerToHyperService::new(svc),
                            );
                        if let Err(e) = watcher.watch(conn).await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                () = &mut shutdown => break,
            }
        }
        drop(self.listener);
        tracing::info!("stopped accepting connections; finishing in-flight requests");
        if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not finish within 30 s");
        }
    }
}

/// An open connection, counted in the node's metrics while it lives.
struct OpenConnection(prometheus_client::metrics::gauge::Gauge);

impl OpenConnection {
    fn new(metrics: &crate::metrics::NodeMetrics) -> OpenConnection {
        metrics.connections.inc();
        OpenConnection(metrics.connections.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The whole API: the `/app` routes, the `/node` routes, CCF-style answers for unknown routes
/// and methods, and the middleware that identifies the caller and admits the body.
fn router(st: Arc<context::AppState>) -> axum::Router {
    app::routes()
        .merge(access::routes())
        .merge(functions::routes())
        .merge(gov::routes())
        .merge(endpoints::routes())
        .merge(peer::routes())
        .merge(explorer::routes())
        .fallback(endpoints::dispatch)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        // Bodies are read (and limited) by the middleware, after authentication.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            st.clone(),
            middleware::context,
        ))
        .with_state(st)
}
