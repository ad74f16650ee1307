//! `vellum serve`: a ledger node with the ACL-compatible HTTPS API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use vellum_node::server::Limits;
use vellum_node::service::{JoinConfig, Service, ServiceConfig, TokenIssuer, TokenKeys};

/// Options of `vellum serve` (flags override the config file, which overrides defaults).
#[derive(clap::Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeArgs {
    /// Data directory (created and provisioned on first start).
    #[arg(long, env = "VELLUM_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<SocketAddr>,
    /// A TOML file with any of these options (kebab-case keys, e.g. `ledger-id = "prod"`).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// The ledger id served at /ledgerIdentity/{id}.
    #[arg(long)]
    pub ledger_id: Option<String>,
    /// Extra DNS name for the node certificate (first start only; localhost and 127.0.0.1 are
    /// always included). Repeatable.
    #[arg(long = "dns-name", value_name = "NAME")]
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// Extra IP address for the node certificate (first start only; the listen address is
    /// included unless it is 0.0.0.0). Repeatable.
    #[arg(long = "ip", value_name = "IP")]
    #[serde(default)]
    pub ips: Vec<std::net::IpAddr>,
    /// A signature transaction after at most this many transactions.
    #[arg(long, value_name = "N")]
    pub signature_interval: Option<u64>,
    /// ...or this many milliseconds after the previous signature (fractions allowed, from 0.1).
    /// Default: 1 for a node alone, 4 with backups.
    #[arg(long, value_name = "MS")]
    pub signature_delay_ms: Option<f64>,
    /// Close a ledger chunk after the first signature past this many bytes (a new service only;
    /// joining nodes take the service's). Default 4 MiB.
    #[arg(long, value_name = "BYTES")]
    pub chunk_size: Option<u64>,
    /// Write a snapshot of the state (CCF's format, in DATA/snapshots, the newest two kept)
    /// every this many committed transactions. Default 0: none.
    #[arg(long, value_name = "N")]
    pub snapshot_interval: Option<u64>,
    /// The constitution a new service starts with (first start only): a JavaScript module
    /// exporting CCF's validate, resolve and apply (default: Vellum's, which passes a proposal
    /// on a majority of active members).
    #[arg(long, value_name = "FILE")]
    pub constitution: Option<PathBuf>,
    /// Largest entry contents in bytes (ACL: 8192).
    #[arg(long, value_name = "BYTES")]
    pub max_entry_bytes: Option<usize>,
    /// Most collections (ACL: 5000).
    #[arg(long, value_name = "N")]
    pub max_collections: Option<usize>,
    /// Longest collection id in bytes (ACL: 256).
    #[arg(long, value_name = "BYTES")]
    pub max_collection_id_bytes: Option<usize>,
    /// Entries per page of a range query (ACL: 1000).
    #[arg(long, value_name = "N")]
    pub page_size: Option<usize>,
    /// Trust bearer tokens from this OpenID issuer (its `iss`); needs --jwks-file or
    /// --jwks-url.
    #[arg(long, value_name = "ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The issuer's signing keys, from a JWKS JSON file.
    #[arg(
        long,
        value_name = "FILE",
        requires = "jwt_issuer",
        conflicts_with = "jwks_url"
    )]
    pub jwks_file: Option<PathBuf>,
    /// The issuer's signing keys, from a JWKS URL (fetched at start, refreshed hourly).
    #[arg(long, value_name = "URL", requires = "jwt_issuer")]
    pub jwks_url: Option<String>,
    /// Accepted token audience (default: ACL's, `https://confidential-ledger.azure.com`).
    /// Repeatable.
    #[arg(long = "jwt-audience", value_name = "AUD")]
    #[serde(default)]
    pub jwt_audiences: Vec<String>,
    /// Join the service that a node at this URL belongs to (first start only), e.g.
    /// `https://10.0.0.1:8443`; needs --join-token, or, on a service that admits nodes by vote,
    /// --join-service-cert (the node then waits until the members trust it).
    #[arg(long, value_name = "URL")]
    pub join: Option<String>,
    /// The service certificate (PEM file) of the service to join without a token: it pins the
    /// service as a token would.
    #[arg(long, value_name = "FILE", requires = "join")]
    pub join_service_cert: Option<PathBuf>,
    /// Keep the service key in a PKCS#11 token, where it signs (the service's COSE signatures,
    /// node certificates) and never leaves: a new service makes it there (a P-384 key pair by
    /// the URI's `object` label); a service made so needs the URI at every start. The PIN from
    /// the URI, else VELLUM_SERVICE_KEY_PKCS11_PIN, else a prompt. Such a service does not
    /// hand its key to joining nodes: it runs as one node.
    #[arg(long, value_name = "URI")]
    pub service_key_pkcs11: Option<String>,
    /// Disaster recovery (first start only): start a new service from the ledger directory of
    /// a service whose every node was lost. The node makes a new service identity
    /// (DATA/service_cert.pem), waits for the recovery members' shares
    /// (`POST /gov/recovery/members/{id}:recover`, `vellum gov recover-share`), restores the
    /// ledger secrets and starts; the members then vote `transition_service_to_open`.
    #[arg(long, value_name = "LEDGER_DIR", conflicts_with = "join")]
    pub recover: Option<PathBuf>,
    /// Copy committed ledger chunks and snapshots to this archive while the node is the
    /// primary: az://CONTAINER/PREFIX (Azure Blob Storage), s3://BUCKET/PREFIX (S3 and
    /// compatible stores) or file:///DIR. Credentials from the AZURE_* / AWS_* environment
    /// variables or --archive-option. See docs/operations.md, "Archive".
    #[arg(long, value_name = "URL")]
    pub archive: Option<String>,
    /// An option of the archive store, KEY=VALUE (object_store's keys: account_name,
    /// access_key, use_emulator, endpoint, allow_http, region, ...). Repeatable.
    #[arg(long = "archive-option", value_name = "KEY=VALUE")]
    #[serde(default)]
    pub archive_options: Vec<String>,
    /// Keep only the committed chunks of about the last N transactions on this node's disk
    /// (needs --archive): older chunks are dropped once the archive holds them, and fetched
    /// back (and checked) when a read needs them. Default: keep everything.
    #[arg(long, value_name = "N")]
    pub retain_transactions: Option<u64>,
    /// Offer a sign-in to the explorer (/explorer) through this OpenID Connect provider's
    /// authorization endpoint (the implicit flow: the browser comes back with an access token,
    /// which must come from a trusted --jwt-issuer). Needs --explorer-client-id.
    #[arg(long, value_name = "URL", requires = "explorer_client_id")]
    pub explorer_login_url: Option<String>,
    /// The explorer's client id at the --explorer-login-url provider.
    #[arg(long, value_name = "ID", requires = "explorer_login_url")]
    pub explorer_client_id: Option<String>,
    /// The scope the explorer asks the provider for (default: `openid` and ACL's audience,
    /// `https://confidential-ledger.azure.com/.default`).
    #[arg(long, value_name = "SCOPE")]
    pub explorer_login_scope: Option<String>,
    /// A one-time join token (`vellum node token` on the service).
    #[arg(
        long,
        env = "VELLUM_JOIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub join_token: Option<String>,
    /// The address other nodes reach this node at (default: the listen address).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Seconds a client has to complete the TLS handshake [default: 10].
    #[arg(long, value_name = "SECS")]
    pub handshake_timeout: Option<u64>,
    /// Seconds a client has to send a complete request head once the node waits for one (the
    /// connection opened, or the previous response went out); also how long an idle
    /// keep-alive connection stays open [default: 15].
    #[arg(long, value_name = "SECS")]
    pub header_timeout: Option<u64>,
    /// Seconds a client has to send a whole request body [default: 30].
    #[arg(long, value_name = "SECS")]
    pub body_timeout: Option<u64>,
    /// The most client connections at once. Default: what the file-descriptor limit allows
    /// (raised to its hard limit at start) less 128, at most 16384.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// The most connections from one client address. Default: a quarter of
    /// --max-connections, at least 64.
    #[arg(long, value_name = "N")]
    pub max_connections_per_address: Option<usize>,
    /// The key that seals the data directory's secrets (the ledger secret, the service and
    /// node keys): a file of at least 32 random bytes, kept away from the data directory. A
    /// new directory is sealed with it; a sealed one needs it at every start (`vellum seal`
    /// seals an existing one).
    #[arg(long, value_name = "FILE", conflicts_with = "seal_passphrase_file")]
    pub seal_key_file: Option<PathBuf>,
    /// As --seal-key-file, with a passphrase on this file's first line (or in
    /// VELLUM_SEAL_PASSPHRASE, or typed at a prompt when a sealed directory starts on a
    /// terminal), stretched with Argon2id.
    #[arg(long, value_name = "FILE", conflicts_with = "seal_pkcs11")]
    pub seal_passphrase_file: Option<PathBuf>,
    /// As --seal-key-file, with a key kept in a PKCS#11 token (an HSM), named by a PKCS#11 URI:
    /// `pkcs11:token=T;object=K?module-path=LIB&pin-source=file:PIN` (the PIN else from
    /// VELLUM_SEAL_PKCS11_PIN, or a prompt). The key is created in the token if it has none by
    /// that label, and never leaves it.
    #[arg(long, value_name = "URI", conflicts_with = "seal_key_file")]
    pub seal_pkcs11: Option<String>,
}

impl ServeArgs {
    fn merge(mut self) -> anyhow::Result<ServeArgs> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let file: ServeArgs =
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        macro_rules! or_file {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = file.$f; } )* };
        }
        or_file!(
            data_dir,
            listen,
            ledger_id,
            signature_interval,
            signature_delay_ms,
            chunk_size,
            snapshot_interval,
            constitution,
            max_entry_bytes,
            max_collections,
            max_collection_id_bytes,
            page_size,
            jwt_issuer,
            jwks_file,
            jwks_url,
            join,
            join_token,
            join_service_cert,
            recover,
            advertise,
            max_connections,
            max_connections_per_address,
            seal_key_file,
            seal_passphrase_file,
            seal_pkcs11,
            service_key_pkcs11,
            archive,
            retain_transactions,
            explorer_login_url,
            explorer_client_id,
            explorer_login_scope,
            handshake_timeout,
            header_timeout,
            body_timeout
        );
        if self.dns_names.is_empty() {
            self.dns_names = file.dns_names;
        }
        if self.ips.is_empty() {
            self.ips = file.ips;
        }
        if self.jwt_audiences.is_empty() {
            self.jwt_audiences = file.jwt_audiences;
        }
        if self.archive_options.is_empty() {
            self.archive_options = file.archive_options;
        }
        Ok(self)
    }
}

/// Runs the node until SIGINT or SIGTERM.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let args = args.merge()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(args))
}

/// The service configuration the flags and the TOML file describe (defaults:
/// [`ServiceConfig::new`]; rules: [`ServiceConfig::validate`]).
fn service_config(args: &ServeArgs) -> anyhow::Result<ServiceConfig> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("./vellum-data"));
    let mut cfg = ServiceConfig::new(&data_dir);
    cfg.node.seal = crate::seal::seal_key(
        args.seal_key_file.as_deref(),
        args.seal_passphrase_file.as_deref(),
        args.seal_pkcs11.as_deref(),
        &data_dir,
    )?;
    if let Some(uri) = &args.service_key_pkcs11 {
        cfg.node.service_key_token = Some(crate::seal::pkcs11_uri(
            uri,
            "VELLUM_SERVICE_KEY_PKCS11_PIN",
        )?);
    }
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(id) = &args.ledger_id {
        cfg.ledger_id = id.clone();
    }
    cfg.advertise = args.advertise.clone();
    let node = &mut cfg.node;
    if let Some(n) = args.signature_interval {
        node.signature_interval = n;
    }
    if let Some(v) = args.max_collections {
        node.max_collections = v;
    }
    if let Some(n) = args.chunk_size {
        node.chunk_size = n;
    }
    if let Some(n) = args.snapshot_interval {
        node.snapshot_interval = n;
    }
    node.retain_transactions = args.retain_transactions;
    if let Some(ms) = args.signature_delay_ms {
        let delay = Duration::try_from_secs_f64(ms / 1000.0)
            .ok()
            .context("--signature-delay-ms must be between 0.1 and 60000")?;
        node.signature_delay = Some(delay);
    }
    if let Some(path) = &args.constitution {
        let code = std::fs::read_to_string(path)
            .with_context(|| format!("reading the constitution {}", path.display()))?;
        vellum_node::gov::check_constitution(&code)
            .map_err(|e| anyhow::anyhow!("the constitution {}: {e}", path.display()))?;
        node.bootstrap.constitution = code;
    }
    node.bootstrap.dns_names = args.dns_names.clone();
    node.bootstrap.ips = args.ips.clone();
    let limits = &mut cfg.limits;
    if let Some(v) = args.max_entry_bytes {
        limits.max_contents = v;
        limits.max_body = limits.max_body.max(v * 6 + 1024);
    }
    if let Some(v) = args.max_collection_id_bytes {
        limits.max_collection_id = v;
    }
    if let Some(v) = args.page_size {
        limits.page_size = v;
    }
    for (secs, limit) in [
        (args.handshake_timeout, &mut limits.handshake_timeout),
        (args.header_timeout, &mut limits.header_timeout),
        (args.body_timeout, &mut limits.body_timeout),
    ] {
        if let Some(secs) = secs {
            *limit = Duration::from_secs(secs);
        }
    }
    if let Some(v) = args.max_connections {
        limits.max_connections = v;
        limits.max_connections_per_address = Limits::per_address(v);
    }
    if let Some(v) = args.max_connections_per_address {
        limits.max_connections_per_address = v;
    }
    if let Some(iss) = &args.jwt_issuer {
        let keys = match (&args.jwks_file, &args.jwks_url) {
            (Some(f), _) => TokenKeys::File(f.clone()),
            (None, Some(u)) => TokenKeys::Url(u.clone()),
            (None, None) => anyhow::bail!("--jwt-issuer needs --jwks-file or --jwks-url"),
        };
        cfg.token_issuers.push(TokenIssuer {
            issuer: iss.clone(),
            audiences: args.jwt_audiences.clone(),
            keys,
        });
    }
    if let Some(url) = &args.join {
        let service_cert_pem = match &args.join_service_cert {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("reading the service certificate {}", p.display()))?,
            ),
            None => None,
        };
        if args.join_token.is_none() && service_cert_pem.is_none() {
            anyhow::bail!(
                "--join needs --join-token (or VELLUM_JOIN_TOKEN), or --join-service-cert on a \
                 service that admits nodes by vote"
            );
        }
        cfg.join = Some(JoinConfig {
            url: url.clone(),
            token: args.join_token.clone(),
            service_cert_pem,
        });
    }
    if let Some(old) = &args.recover {
        if !old.is_dir() {
            anyhow::bail!("--recover {}: not a directory", old.display());
        }
        cfg.recover = Some(old.clone());
    }
    if let Some(url) = &args.archive {
        cfg.archive = Some(vellum_node::archive::ArchiveConfig::new(
            url.clone(),
            &args.archive_options,
        )?);
    } else if !args.archive_options.is_empty() {
        anyhow::bail!("--archive-option needs --archive");
    }
    match (&args.explorer_login_url, &args.explorer_client_id) {
        (Some(url), Some(id)) => {
            cfg.explorer_login = Some(vellum_node::server::ExplorerLogin {
                authorize_url: url.clone(),
                client_id: id.clone(),
                scope: args
                    .explorer_login_scope
                    .clone()
                    .unwrap_or_else(|| vellum_node::server::DEFAULT_LOGIN_SCOPE.to_owned()),
            });
        }
        (None, None) if args.explorer_login_scope.is_none() => {}
        _ => anyhow::bail!(
            "--explorer-login-url and --explorer-client-id go together (and --explorer-login-scope needs them)"
        ),
    }
    cfg.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(cfg)
}

async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Every connection takes a file descriptor: use all the system lets this process have
    // (the default connection cap is taken from the result).
    vellum_node::server::limits::raise_fd_limit();
    let cfg = service_config(&args)?;
    let data_dir = cfg.node.data_dir.clone();
    // Registered before the start, so that a signal during it is not lost.
    let shutdown = shutdown_signal()?;
    // A node that joins by vote may wait long for the members: a signal ends the wait (nothing
    // is provisioned until it is admitted; the next start asks again as the same node). Any
    // other start runs to its end, and the signal is then served as a shutdown.
    let joining = cfg.join.is_some() || cfg.recover.is_some();
    let mut shutdown = Box::pin(shutdown);
    let start = Service::start(cfg);
    let started = if joining {
        tokio::select! {
            s = start => s,
            () = &mut shutdown => anyhow::bail!("stopped while joining or recovering the service"),
        }
    } else {
        start.await
    };
    let service = started
        .map_err(anyhow::Error::new)
        .with_context(|| format!("starting the node in {}", data_dir.display()))?;
    if let (Some((node_id, admitted_at)), Some(url)) = (service.joined(), &args.join) {
        outln!("joined the service at {url} as node {node_id} (admitted at {admitted_at})");
    }
    outln!(
        "Vellum ledger {:?} serving at {}",
        service.ledger_id(),
        service.endpoint()
    );
    outln!(
        "  service certificate (trust anchor): {}",
        data_dir.join("service_cert.pem").display()
    );
    let admin = data_dir.join("admin.pem");
    if admin.exists() {
        outln!("  administrator credential:           {}", admin.display());
    }
    outln!(
        "  data directory:                     {}",
        data_dir.display()
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    service
        .run_until(shutdown)
        .await
        .context("shutting the node down")?;
    outln!("stopped; the ledger is sealed");
    Ok(())
}

/// Registers SIGINT and SIGTERM handlers now (so a signal that arrives before the server runs
/// is not lost to the default action) and returns a future that completes on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutdown requested");
    })
}
