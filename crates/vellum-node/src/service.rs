//! A whole service node, started and stopped as one: a validated configuration (one place for
//! every default, typed errors, no silent clamps), the data directory (provisioned on first
//! start, or joined to a running service), the node, its HTTPS API and its token issuers.
//!
//! `vellum serve` only turns its flags and TOML file into a [`ServiceConfig`]; tests start
//! nodes through the same [`Service::start`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), vellum_node::service::ServiceError> {
//! use vellum_node::service::{Service, ServiceConfig};
//!
//! let mut cfg = ServiceConfig::new("./vellum-data");
//! cfg.listen = "127.0.0.1:0".parse().unwrap();
//! let service = Service::start(cfg).await?;
//! println!("serving at {}", service.endpoint());
//! service.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ConfigError, rule};
use crate::datadir::DataDir;
use crate::server::{ApiConfig, Issuer, Limits, Server, TokenValidator};
use crate::{LedgerNode, NodeConfig, NodeError};

/// Where a token issuer's signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKeys {
    /// A JWKS file.
    File(PathBuf),
    /// A JWKS URL, fetched at start and refreshed hourly.
    Url(String),
}

/// A trusted bearer-token issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIssuer {
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// Accepted audiences (empty: ACL's).
    pub audiences: Vec<String>,
    /// Its signing keys.
    pub keys: TokenKeys,
}

/// Joining a running service (first start only). The service is pinned by the join token
/// (which carries the digest of its certificate) or by its certificate: a service that admits
/// nodes by vote takes no token, and the node waits, asking again, until the members trust it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinConfig {
    /// A node of the service, `https://HOST:PORT`.
    pub url: String,
    /// A join token from an operator of the service (a service that admits nodes by token).
    pub token: Option<String>,
    /// The service certificate (PEM), to join without a token.
    pub service_cert_pem: Option<String>,
}

/// Everything a service node runs with. [`ServiceConfig::new`] holds every default.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The node: data directory, signatures, chunks, collections, what a new service starts
    /// with. Its `advertise` is set from [`ServiceConfig::advertise`] or the bound address.
    pub node: NodeConfig,
    /// Where the HTTPS API listens (port 0: any free port).
    pub listen: SocketAddr,
    /// The address other nodes reach this one at; default: the bound address (loopback if
    /// bound to all addresses).
    pub advertise: Option<String>,
    /// The ledger id (`/ledgerIdentity/{ledgerId}`).
    pub ledger_id: String,
    /// Request and connection limits.
    pub limits: Limits,
    /// Trusted bearer-token issuers.
    pub token_issuers: Vec<TokenIssuer>,
    /// Join a running service instead of founding one (ignored once provisioned).
    pub join: Option<JoinConfig>,
    /// Recover a lost service from its ledger directory instead of founding one (ignored
    /// once provisioned; see [`crate::disaster`]).
    pub recover: Option<PathBuf>,
    /// Copy committed chunks and snapshots to this archive (while primary; see
    /// [`crate::archive`]).
    pub archive: Option<crate::archive::ArchiveConfig>,
    /// The explorer's sign-in through an OpenID Connect provider, if offered.
    pub explorer_login: Option<crate::server::ExplorerLogin>,
}

/// The default HTTPS address.
pub const DEFAULT_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 8443);
/// The default ledger id.
pub const DEFAULT_LEDGER_ID: &str = "vellum";
/// How often keys fetched from a JWKS URL are refreshed.
const JWKS_REFRESH: Duration = Duration::from_secs(3600);

impl ServiceConfig {
    /// The defaults for a service node in `data_dir`: listens on 127.0.0.1:8443, ledger id
    /// `vellum`, a new service gets an operator and an administrator (`admin.pem`), ACL's
    /// limits, no token issuer.
    pub fn new(data_dir: impl Into<PathBuf>) -> ServiceConfig {
        let mut node = NodeConfig::new(data_dir);
        node.bootstrap.operator_and_admin = true;
        ServiceConfig {
            node,
            listen: SocketAddr::from(DEFAULT_LISTEN),
            advertise: None,
            ledger_id: DEFAULT_LEDGER_ID.into(),
            limits: Limits::default(),
            token_issuers: Vec::new(),
            join: None,
            recover: None,
            archive: None,
            explorer_login: None,
        }
    }

    /// Checks every setting against its rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.node.validate()?;
        self.limits.validate()?;
        rule(
            !self.ledger_id.is_empty(),
            "ledger-id",
            "non-empty",
            "empty",
        )?;
        rule(
            self.node.retain_transactions.is_none() || self.archive.is_some(),
            "retain-transactions",
            "an archive to keep older chunks in (--archive)",
            self.node.retain_transactions.unwrap_or_default(),
        )?;
        rule(
            self.join.is_none() || self.recover.is_none(),
            "recover",
            "not with join",
            "both",
        )?;
        if let Some(l) = &self.explorer_login {
            l.validate()?;
        }
        if let Some(j) = &self.join {
            if let Some(t) = &j.token {
                rule(!t.trim().is_empty(), "join-token", "non-empty", "empty")?;
            }
            rule(
                j.token.is_some() || j.service_cert_pem.is_some(),
                "join",
                "a join token or the service certificate to pin the service",
                "neither",
            )?;
            rule(
                j.url.starts_with("https://"),
                "join",
                "an https:// URL",
                &j.url,
            )?;
        }
        Ok(())
    }
}

/// Why a service could not start or stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The configuration breaks a rule.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The API address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A file of the data directory could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A token issuer's keys could not be loaded.
    #[error("token issuer {issuer}: {message}")]
    Tokens {
        /// The issuer.
        issuer: String,
        /// Why.
        message: String,
    },
    /// Joining the service failed (nothing was provisioned).
    #[error("joining {url}: {message}")]
    Join {
        /// The node asked.
        url: String,
        /// Why.
        message: String,
    },
    /// The API server could not be set up from the node's certificate and key.
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
    /// The archive cannot be used.
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
    /// The node.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Recovering a lost service failed.
    #[error(transparent)]
    Disaster(#[from] crate::disaster::DisasterError),
    /// Requests still held the node when it was to stop.
    #[error("requests still hold the node at shutdown")]
    Busy,
}

/// A running service node: see the module documentation.
#[derive(Debug)]
pub struct Service {
    node: Arc<LedgerNode>,
    addr: SocketAddr,
    ledger_id: String,
    data_dir: PathBuf,
    joined: Option<(String, String)>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    serving: tokio::task::JoinHandle<()>,
    /// Refreshes keys fetched from JWKS URLs.
    refresh: Option<tokio::task::JoinHandle<()>>,
    /// Takes snapshots (it holds the node: stopped before the node is).
    snapshots: Option<tokio::task::JoinHandle<()>>,
    /// Copies to the archive (it holds the node too).
    archiver: Option<tokio::task::JoinHandle<()>>,
    /// Drops archived chunks past the retention ([`crate::node::retention`]).
    retention: Option<tokio::task::JoinHandle<()>>,
    /// Indexes the transactions before the snapshot this node started from
    /// ([`crate::node::from_snapshot`]).
    backfill: Option<tokio::task::JoinHandle<()>>,
}

impl Service {
    /// Starts a service node: checks the configuration, binds the API address, loads the
    /// token issuers, joins the service if asked (first start), opens the node, serves the
    /// node channel at once (a node catching up receives the ledger through it) and returns
    /// once the node is ready to answer clients.
    pub async fn start(cfg: ServiceConfig) -> Result<Service, ServiceError> {
        cfg.validate()?;
        let ServiceConfig {
            mut node,
            listen,
            advertise,
            ledger_id,
            limits,
            token_issuers,
            join,
            recover,
            archive,
            explorer_login,
        } = cfg;
        // The archive's URL and options are checked before anything starts.
        let archive = archive
            .as_ref()
            .map(crate::archive::Archive::open)
            .transpose()?;
        // Listen first: the address is recorded in the cluster before the node serves.
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ServiceError::Listen {
                addr: listen,
                source,
            })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ServiceError::Listen {
                addr: listen,
                source,
            })?;
        node.advertise = match advertise {
            Some(a) => a,
            None if bound.ip().is_unspecified() => format!("127.0.0.1:{}", bound.port()),
            None => bound.to_string(),
        };
        if !listen.ip().is_unspecified() {
            node.bootstrap.ips.push(listen.ip());
        }
        let tokens = TokenValidator::new(load_issuers(&token_issuers).await?);
        let refresh = token_issuers
            .iter()
            .any(|i| matches!(i.keys, TokenKeys::Url(_)))
            .then(|| tokio::spawn(tokens.clone().refresh_periodically(JWKS_REFRESH)));
        let data_dir = node.data_dir.clone();
        let mut joined = None;
        if let Some(j) = &join {
            if DataDir::is_provisioned(&data_dir) {
                tracing::info!("the data directory already holds a node; joining is skipped");
            } else {
                joined = Some(join_service(j, &node, &data_dir).await?);
            }
        }
        if let Some(old) = &recover {
            if DataDir::is_provisioned(&data_dir) {
                tracing::info!("the data directory already holds a node; recovery is skipped");
            } else {
                crate::disaster::recover(
                    old,
                    &data_dir,
                    &node.bootstrap,
                    node.seal.as_ref(),
                    &listener,
                    &node.advertise,
                    node.chunk_size,
                )
                .await?;
            }
        }
        node.archive = archive.clone();
        let retain = node.retain_transactions;
        let node = Arc::new(LedgerNode::open(node).await?);
        let key = node.node_key_pem().to_owned();
        let server = Server::with_listener(
            listener,
            node.clone(),
            ApiConfig {
                ledger_id: ledger_id.clone(),
                limits,
                tokens,
                explorer_login,
            },
            &key,
        )?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        let service = Service {
            node,
            addr: bound,
            ledger_id,
            data_dir,
            joined,
            stop: Some(stop),
            serving,
            refresh,
            snapshots: None,
            archiver: None,
            retention: None,
            backfill: None,
        };
        if let Err(e) = service.node.ready().await {
            let _ = service.stop().await;
            return Err(e.into());
        }
        let mut service = service;
        service.snapshots = Some(tokio::spawn(service.node.clone().run_snapshots()));
        service.backfill = Some(tokio::spawn(service.node.clone().run_backfill()));
        if let Some(a) = archive {
            if let Some(n) = retain {
                service.retention = Some(tokio::spawn(
                    service.node.clone().run_retention(a.clone(), n),
                ));
            }
            service.archiver = Some(tokio::spawn(run_archiver(a, service.node.clone())));
        }
        Ok(service)
    }

    /// The node.
    pub fn node(&self) -> &Arc<LedgerNode> {
        &self.node
    }

    /// The address the API is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API's base URL (`https://127.0.0.1:PORT` when bound to all addresses).
    pub fn endpoint(&self) -> String {
        let host = if self.addr.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            self.addr.ip().to_string()
        };
        format!("https://{host}:{}", self.addr.port())
    }

    /// The ledger id.
    pub fn ledger_id(&self) -> &str {
        &self.ledger_id
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// If this start joined a service: the node id it was admitted as, and the transaction
    /// that admitted it.
    pub fn joined(&self) -> Option<(&str, &str)> {
        self.joined.as_ref().map(|(a, b)| (a.as_str(), b.as_str()))
    }

    /// Serves until `shutdown` completes, then stops gracefully.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), ServiceError> {
        shutdown.await;
        self.stop().await
    }

    /// Stops gracefully: the API stops accepting and finishes what it serves, then the node
    /// stops (see [`LedgerNode::shutdown`]).
    pub async fn stop(mut self) -> Result<(), ServiceError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(r) = self.refresh.take() {
            r.abort();
        }
        for task in [
            self.snapshots.take(),
            self.archiver.take(),
            self.retention.take(),
            self.backfill.take(),
        ]
        .into_iter()
        .flatten()
        {
            task.abort();
            let _ = task.await;
        }
        let _ = (&mut self.serving).await;
        let node = Arc::try_unwrap(self.node).map_err(|_| ServiceError::Busy)?;
        node.shutdown().await?;
        Ok(())
    }
}

async fn load_issuers(issuers: &[TokenIssuer]) -> Result<Vec<Issuer>, ServiceError> {
    let mut out = Vec::new();
    for i in issuers {
        let err = |e: crate::server::JwksError| ServiceError::Tokens {
            issuer: i.issuer.clone(),
            message: e.to_string(),
        };
        out.push(match &i.keys {
            TokenKeys::File(f) => {
                Issuer::from_jwks_file(&i.issuer, i.audiences.clone(), f).map_err(err)?
            }
            TokenKeys::Url(u) => Issuer::from_jwks_url(&i.issuer, i.audiences.clone(), u)
                .await
                .map_err(err)?,
        });
    }
    Ok(out)
}

/// Joins the service at `j.url` and provisions `data_dir` with what it hands over; returns
/// the node id and the admitting transaction.
async fn join_service(
    j: &JoinConfig,
    node: &NodeConfig,
    data_dir: &Path,
) -> Result<(String, String), ServiceError> {
    let err = |message: String| ServiceError::Join {
        url: j.url.clone(),
        message,
    };
    let (cert_pem, key_pem) = DataDir::joining_identity(data_dir, node.seal.as_ref())
        .map_err(|e| err(format!("the node key: {e}")))?;
    let mut ips = node.bootstrap.ips.clone();
    if let Ok(a) = node.advertise.parse::<SocketAddr>() {
        ips.push(a.ip());
    }
    let mut request = crate::cluster::JoinRequest {
        token: j.token.clone().unwrap_or_default(),
        address: node.advertise.clone(),
        dns_names: node.bootstrap.dns_names.clone(),
        ips,
        csr: None,
    };
    let (dns, ips) = crate::cluster::joining_names(&request).map_err(|e| err(e.to_string()))?;
    let dns: Vec<&str> = dns.iter().map(String::as_str).collect();
    request.csr = Some(
        vellum_ledger::identity::node_csr(&key_pem, "Vellum Node", &dns, &ips)
            .map_err(|e| err(format!("the certificate signing request: {e}")))?,
    );
    let identity = format!("{cert_pem}{key_pem}");
    let joined =
        crate::cluster::request_join(&j.url, &request, &identity, j.service_cert_pem.as_deref())
            .await
            .map_err(|e| err(e.to_string()))?;
    DataDir::provision_joined(data_dir, &joined, &key_pem, node.seal.as_ref())
        .map_err(|e| err(format!("provisioning {}: {e}", data_dir.display())))?;
    start_from_snapshot(j, &joined, &key_pem, data_dir).await;
    Ok((joined.node_id.to_string(), joined.admitted_at.to_string()))
}

/// Fetches what a node just admitted needs to start from the service's snapshot
/// ([`crate::node::from_snapshot`]); without one, or if that fails, the node receives the
/// whole ledger through Raft as before.
async fn start_from_snapshot(
    j: &JoinConfig,
    joined: &crate::cluster::JoinResponse,
    key_pem: &str,
    data_dir: &Path,
) {
    let started = std::time::Instant::now();
    let secrets = match vellum_core::entry::LedgerSecrets::from_text(&joined.ledger_secrets) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "the ledger secrets received do not parse; receiving the whole ledger through Raft");
            return;
        }
    };
    let identity = format!("{}{key_pem}", joined.node_cert_pem);
    let fetched = crate::node::from_snapshot::fetch_start(
        &j.url,
        &identity,
        &joined.service_cert_pem,
        data_dir,
        &secrets,
    )
    .await;
    match fetched {
        Ok(Some(f)) => tracing::info!(
            snapshot = f.snapshot,
            checkpoint = f.checkpoint,
            chunks = f.chunks,
            bytes = f.bytes,
            ms = started.elapsed().as_millis() as u64,
            "starting from the service's snapshot"
        ),
        Ok(None) => tracing::info!(
            "the service has no snapshot to start from; this node receives the whole ledger through Raft"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not start from the service's snapshot; receiving the whole ledger through Raft");
            // Nothing half-fetched may stay: the ledger starts empty.
            for dir in [
                data_dir.join(crate::node::from_snapshot::FETCHING),
                crate::node::snapshots::dir(data_dir),
            ] {
                let _ = std::fs::remove_dir_all(dir);
            }
            let _ = std::fs::remove_file(data_dir.join(crate::node::from_snapshot::MARKER));
        }
    }
}

/// How often the primary looks for committed files to archive.
const ARCHIVE_EVERY: Duration = Duration::from_secs(1);

/// Copies committed chunks and snapshots to the archive while this node is the primary.
async fn run_archiver(archive: crate::archive::Archive, node: Arc<LedgerNode>) {
    static FAILED: crate::server::limits::Throttle =
        crate::server::limits::Throttle::new(Duration::from_secs(60));
    let mut archiver = crate::archive::Archiver::new(archive);
    node.set_archive_progress(archiver.progress.clone());
    let (ledger, snapshots) = (
        node.ledger_dir(),
        crate::node::snapshots::dir(node.data_root()),
    );
    loop {
        if node.is_primary() {
            let started = std::time::Instant::now();
            match archiver.copy_new(&ledger, &snapshots).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    files = n,
                    ms = started.elapsed().as_millis(),
                    through = archiver
                        .progress
                        .through
                        .load(std::sync::atomic::Ordering::Relaxed),
                    "archived"
                ),
                Err(e) => {
                    if let Some(more) = FAILED.allow() {
                        tracing::warn!(error = %e, suppressed = more, "archiving failed; retrying");
                    }
                }
            }
        }
        tokio::time::sleep(ARCHIVE_EVERY).await;
    }
}
