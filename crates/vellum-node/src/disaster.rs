//! Disaster recovery: a new service from the ledger files of one whose every node was lost
//! (`vellum serve --recover OLD_LEDGER_DIR`), CCF's way.
//!
//! 1. **Public recovery.** The old ledger's public domain is read up to its last signature
//!    ([`PublicState::read`]): the members, their recovery shares and the service's history.
//!    Nothing private can be read yet: the ledger secrets are wrapped by the shares.
//! 2. **Shares.** The node makes a new service identity and serves, on its API address, what
//!    members need: `GET /node/network` (the service is `WaitingForRecoveryShares`),
//!    `GET /gov/recovery/encrypted-shares/{memberId}`, and
//!    `POST /gov/recovery/members/{memberId}:recover`, a COSE_Sign1 of type `recovery_share`
//!    signed by an active member of the old service, holding `{"share": base64}`. A share that is
//!    not the one issued to that member (Vellum records each share's SHA-256 beside them) is
//!    refused and named at once.
//! 3. **Private recovery.** With `recovery_threshold` shares, the latest ledger secret is
//!    unwrapped and every earlier one read back from the ledger's rekey records. The old
//!    ledger is copied into the new data directory up to its last signature, and the new
//!    service writes, in a view after the old ones: the recovery transaction (the new service
//!    identity, status `Recovering`; the old nodes retired, this node trusted; the previous
//!    identities, endorsed by the new one so that receipts of their eras still verify; a Raft
//!    membership of this node alone, so that a new Raft group continues the old log); then a
//!    rekey to a fresh secret (CCF's historical record with `next_version`, recovery shares
//!    for it), status `WaitingForRecoveryShares`; then a signature.
//! 4. The node starts as usual. Its application API answers `503 ServiceNotOpen` until the
//!    members vote `transition_service_to_open`; other nodes then join it as any service.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::extract::{Path as PathParam, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::json;
use vellum_core::TxId;
use vellum_core::crypto::{Certificate, SigningKey};
use vellum_core::entry::{EntryBuilder, LedgerSecrets, SINGLETON_KEY};
use vellum_core::gov::{Envelope, MsgType};
use vellum_core::tables::{
    self, EncryptedLedgerSecretInfo, NodeInfo, NodeStatus, PreviousIdentity, RecoverySharesInfo,
    ServiceStatus,
};
use vellum_ledger::engine::{Engine, NodeKeys, PreviousService};
use zeroize::Zeroizing;

use crate::datadir::{Bootstrap, DataDir, RecoveryIdentity};
use crate::gov::GovTables;
use crate::seal::SealKey;

/// The most connections the recovery server holds at once (each is one request).
const MAX_RECOVERY_CONNECTIONS: usize = 256;

/// Why a recovery cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum DisasterError {
    /// The old ledger cannot be read.
    #[error("reading the ledger to recover {0}: {1}")]
    Read(PathBuf, String),
    /// The old ledger cannot be recovered from.
    #[error("the ledger in {0} cannot be recovered: {1}")]
    Unrecoverable(PathBuf, String),
    /// Writing the new data directory.
    #[error("writing the recovered service: {0}")]
    Write(String),
    /// The data directory.
    #[error(transparent)]
    DataDir(#[from] crate::DataDirError),
    /// Serving the members.
    #[error("serving the recovery: {0}")]
    Serve(String),
}

fn write_err(e: impl std::fmt::Display) -> DisasterError {
    DisasterError::Write(e.to_string())
}

/// What the old ledger's public domain says, up to its last signature.
#[derive(Debug, Clone)]
pub struct PublicState {
    /// The old ledger's directory.
    pub dir: PathBuf,
    /// The governance tables.
    pub gov: GovTables,
    /// The last signature transaction: everything after it is dropped.
    pub last_signature: TxId,
    /// The rekey records, `(seqno, record)`.
    pub rekeys: Vec<(u64, EncryptedLedgerSecretInfo)>,
    /// The last recovery shares.
    pub shares: RecoverySharesInfo,
    /// The digests of those shares, by member id (ledgers written since Vellum records them).
    pub digests: BTreeMap<String, String>,
    /// The identities a previous recovery replaced, by certificate fingerprint.
    pub previous: BTreeMap<String, PreviousIdentity>,
    /// The number of shares that recover the secret.
    pub threshold: usize,
    /// The old service's certificate.
    pub service_cert_pem: String,
}

impl PublicState {
    /// Reads the public domain of the ledger in `dir` (every chunk, committed or not, up to
    /// the last signature).
    pub fn read(dir: &Path) -> Result<PublicState, DisasterError> {
        let read_err = |e: std::io::Error| DisasterError::Read(dir.to_path_buf(), e.to_string());
        let bad = |m: &str| DisasterError::Unrecoverable(dir.to_path_buf(), m.to_owned());
        let mut last = None;
        vellum_ledger::audit::for_each_public(dir, true, |txid, pd| {
            if tables::SIGNATURES.find(&pd.maps).is_some() {
                last = Some(txid);
            }
        })
        .map_err(read_err)?;
        let last = last.ok_or_else(|| bad("it holds no signature transaction"))?;
        let mut gov = GovTables::default();
        let mut rekeys = Vec::new();
        let mut digests = BTreeMap::new();
        let mut previous = BTreeMap::new();
        vellum_ledger::audit::for_each_public(dir, true, |txid, pd| {
            if txid.seqno > last.seqno {
                return;
            }
            for m in &pd.maps {
                gov.apply(m);
            }
            if let Some(r) = tables::HISTORICAL_LEDGER_SECRET.written(&pd.maps) {
                rekeys.push((txid.seqno, r));
            }
            if let Some(d) = tables::RECOVERY_SHARE_DIGESTS.written(&pd.maps) {
                digests = d;
            }
            if let Some(m) = tables::PREVIOUS_SERVICE_IDENTITIES.find(&pd.maps) {
                for (k, v) in &m.writes {
                    if let Ok(mut p) = tables::PREVIOUS_SERVICE_IDENTITIES.decode_value(v) {
                        // A rotation records the identity it replaced as valid "up to this
                        // transaction".
                        if p.until_seqno == 0 {
                            p.until_seqno = txid.seqno;
                        }
                        previous.insert(String::from_utf8_lossy(k).into_owned(), p);
                    }
                }
            }
        })
        .map_err(read_err)?;
        let shares = gov.recovery_shares().ok_or_else(|| {
            bad("it records no recovery shares (no recovery member ever had an encryption key)")
        })?;
        let threshold = gov
            .get(tables::SERVICE_CONFIG.name(), &SINGLETON_KEY)
            .and_then(|v| tables::SERVICE_CONFIG.decode_value(v).ok())
            .map_or(1, |c| c.recovery_threshold)
            .max(1);
        let service_cert_pem = gov
            .get(tables::SERVICE_INFO.name(), &SINGLETON_KEY)
            .and_then(|v| tables::SERVICE_INFO.decode_value(v).ok())
            .map(|i| i.cert)
            .ok_or_else(|| bad("it records no service"))?;
        Ok(PublicState {
            dir: dir.to_path_buf(),
            gov,
            last_signature: last,
            rekeys,
            shares,
            digests,
            previous,
            threshold: usize::try_from(threshold).unwrap_or(usize::MAX),
            service_cert_pem,
        })
    }

    /// The latest secret and every earlier one, from a quorum of decrypted shares.
    pub fn secrets(&self, shares: &[Zeroizing<Vec<u8>>]) -> Result<LedgerSecrets, String> {
        let latest = crate::recovery::recover(shares, &self.shares).map_err(|e| e.to_string())?;
        tables::ledger_secrets_from_chain(latest, &self.rekeys)
            .map_err(|_| "the recovered secret does not open the ledger's rekey history".into())
    }
}

/// A share refused, or the count so far.
#[derive(Debug)]
pub enum Submitted {
    /// More are needed: (submitted, threshold).
    More(usize, usize),
    /// Enough: the ledger's secrets.
    Done(LedgerSecrets),
}

/// A refusal of a submission: HTTP status, CCF error code, message.
pub type Refused = (u16, &'static str, String);

/// The shares collected so far.
pub struct Collector {
    state: PublicState,
    shares: Mutex<BTreeMap<String, Zeroizing<Vec<u8>>>>,
}

impl Collector {
    /// A collector for the ledger `state` describes.
    pub fn new(state: PublicState) -> Collector {
        Collector {
            state,
            shares: Mutex::new(BTreeMap::new()),
        }
    }

    /// Takes member `member_id`'s signed submission (`envelope`).
    pub fn submit(&self, member_id: &str, envelope: &[u8]) -> Result<Submitted, Refused> {
        let unauth = |m: String| (401, "InvalidAuthenticationInfo", m);
        let e = Envelope::parse(envelope).map_err(|e| unauth(e.to_string()))?;
        let gov = &self.state.gov;
        let cert = gov
            .get(tables::MEMBERS_CERTS.name(), e.kid.as_bytes())
            .ok_or_else(|| unauth("Signer is not a known member".into()))?;
        let cert = Certificate::from_pem(&String::from_utf8_lossy(cert))
            .map_err(|e| unauth(format!("the member's certificate: {e}")))?;
        e.verify(&cert)
            .map_err(|_| unauth("Failed to validate COSE Sign1".into()))?;
        if e.msg_type != MsgType::RecoveryShare {
            return Err(unauth(format!(
                "Found ccf.gov.msg.type '{}', expected 'recovery_share'",
                e.msg_type.as_str()
            )));
        }
        if e.kid != member_id {
            return Err(unauth(format!(
                "Signer {} may not submit member {member_id}'s share",
                e.kid
            )));
        }
        let active = gov
            .member(member_id)
            .is_some_and(|m| m["status"] == "Active");
        if !active {
            return Err(unauth(format!(
                "Signer {member_id} is not an active member"
            )));
        }
        let body: serde_json::Value = serde_json::from_slice(&e.payload)
            .map_err(|e| (400, "InvalidInput", format!("the body is not JSON: {e}")))?;
        let share = body["share"]
            .as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .map(Zeroizing::new)
            .ok_or_else(|| {
                (
                    400,
                    "InvalidInput",
                    "expected {\"share\": \"<base64>\"}".to_owned(),
                )
            })?;
        if !self.state.shares.encrypted_shares.contains_key(member_id) {
            return Err((
                403,
                "NotRecoveryMember",
                format!("Member {member_id} holds no recovery share"),
            ));
        }
        if let Some(d) = self.state.digests.get(member_id)
            && *d != crate::recovery::share_digest(&share)
        {
            return Err((
                400,
                "InvalidRecoveryShare",
                format!("The share submitted by member {member_id} is not the share issued to it"),
            ));
        }
        let mut shares = crate::lock(&self.shares);
        shares.insert(member_id.to_owned(), share);
        let n = shares.len();
        if n < self.state.threshold {
            return Ok(Submitted::More(n, self.state.threshold));
        }
        let all: Vec<_> = shares.values().cloned().collect();
        match self.state.secrets(&all) {
            Ok(s) => Ok(Submitted::Done(s)),
            Err(e) => {
                // Without digests, a wrong share shows only now: start again.
                shares.clear();
                Err((
                    400,
                    "InvalidRecoveryShare",
                    format!("{e}; submit the shares again"),
                ))
            }
        }
    }
}

/// What the recovery server shares between requests.
struct Serving {
    collector: Collector,
    service_cert_pem: String,
    done: tokio::sync::watch::Sender<Option<LedgerSecrets>>,
}

fn ccf_error(status: u16, code: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// CCF's api-version check: `None` if the query names a supported one, else the refusal.
fn bad_api_version(q: Option<&str>) -> Option<Response> {
    use crate::server::GOV_API_VERSIONS;
    let ok = q.is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes())
            .any(|(k, v)| k == "api-version" && GOV_API_VERSIONS.contains(&v.as_ref()))
    });
    (!ok).then(|| {
        ccf_error(
            400,
            "UnsupportedApiVersionValue",
            &format!(
                "The supported api-versions are: {}",
                GOV_API_VERSIONS.join(", ")
            ),
        )
    })
}

async fn network(State(s): State<Arc<Serving>>) -> Response {
    let submitted = crate::lock(&s.collector.shares).len();
    axum::Json(json!({
        "service_status": "WaitingForRecoveryShares",
        "service_certificate": s.service_cert_pem,
        "recovery_target_seqno": s.collector.state.last_signature.seqno,
        "submitted_recovery_shares": submitted,
        "recovery_threshold": s.collector.state.threshold,
    }))
    .into_response()
}

async fn encrypted_share(
    State(s): State<Arc<Serving>>,
    RawQuery(q): RawQuery,
    PathParam(id): PathParam<String>,
) -> Response {
    if let Some(r) = bad_api_version(q.as_deref()) {
        return r;
    }
    match s.collector.state.shares.encrypted_shares.get(&id) {
        Some(share) => axum::Json(json!({"memberId": id, "encryptedShare": share})).into_response(),
        None => ccf_error(
            404,
            "ResourceNotFound",
            &format!("Recovery share not found for member {id}."),
        ),
    }
}

async fn recover_share(
    State(s): State<Arc<Serving>>,
    RawQuery(q): RawQuery,
    PathParam(action): PathParam<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = bad_api_version(q.as_deref()) {
        return r;
    }
    let Some(member) = action.strip_suffix(":recover") else {
        return ccf_error(404, "ResourceNotFound", "Unknown path");
    };
    match s.collector.submit(member, &body) {
        Err((status, code, m)) => {
            tracing::warn!(member, %m, "recovery share refused");
            ccf_error(status, code, &m)
        }
        Ok(Submitted::More(n, k)) => {
            tracing::info!(member, n, k, "recovery share accepted");
            axum::Json(
                json!({"message": format!("{n}/{k} recovery shares successfully submitted.")}),
            )
            .into_response()
        }
        Ok(Submitted::Done(secrets)) => {
            let k = s.collector.state.threshold;
            tracing::info!(
                member,
                "recovery shares complete: recovering the private ledger"
            );
            s.done.send_replace(Some(secrets));
            axum::Json(json!({"message": format!(
                "{k}/{k} recovery shares successfully submitted. End of recovery procedure initiated."
            )}))
            .into_response()
        }
    }
}

async fn not_open() -> Response {
    ccf_error(
        503,
        "ServiceNotOpen",
        "The service is being recovered: it waits for the members' recovery shares",
    )
}

/// Serves the members on `listener` (TLS with the new identity) until a quorum of shares
/// recovers the ledger's secrets.
async fn collect_shares(
    listener: &tokio::net::TcpListener,
    id: &RecoveryIdentity,
    state: PublicState,
) -> Result<LedgerSecrets, DisasterError> {
    use hyper_util::rt::TokioIo;
    let tls = tokio_rustls::TlsAcceptor::from(
        crate::server::tls::server_config(
            &format!("{}{}", id.node_cert_pem, id.service_cert_pem),
            &id.node_key_pem,
        )
        .map_err(|e| DisasterError::Serve(e.to_string()))?,
    );
    let (done, mut finished) = tokio::sync::watch::channel(None);
    let serving = Arc::new(Serving {
        collector: Collector::new(state),
        service_cert_pem: id.service_cert_pem.clone(),
        done,
    });
    let app = axum::Router::new()
        .route("/node/network", get(network))
        .route(
            "/gov/recovery/encrypted-shares/{member_id}",
            get(encrypted_share),
        )
        .route("/gov/recovery/members/{action}", post(recover_share))
        .fallback(not_open)
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(serving);
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        "waiting for the members' recovery shares"
    );
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_RECOVERY_CONNECTIONS));
    loop {
        tokio::select! {
            changed = finished.changed() => {
                if changed.is_err() {
                    return Err(DisasterError::Serve("the recovery server stopped".into()));
                }
                if let Some(secrets) = finished.borrow_and_update().clone() {
                    return Ok(secrets);
                }
            }
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                // Anyone may connect while the service waits: a flood of connections is shed
                // rather than allowed to take every file descriptor.
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    drop(tcp);
                    continue;
                };
                let (tls, app) = (tls.clone(), app.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let Ok(Ok(stream)) = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        tls.accept(tcp),
                    )
                    .await
                    else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    // One request per connection: a client's pooled connection must not
                    // outlive this server and reach it instead of the node that follows.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

/// Recovers the service whose ledger is in `old_ledger` into the data directory `root`,
/// serving the members on `listener` until they have submitted enough shares (see the module
/// documentation). `advertise` is this node's address for the other nodes.
pub async fn recover(
    old_ledger: &Path,
    root: &Path,
    bootstrap: &Bootstrap,
    seal: Option<&SealKey>,
    listener: &tokio::net::TcpListener,
    advertise: &str,
    chunk_size: u64,
) -> Result<(), DisasterError> {
    let state = PublicState::read(old_ledger)?;
    tracing::info!(
        ledger = %old_ledger.display(),
        last_signature = %state.last_signature,
        recovery_members = state.shares.encrypted_shares.len(),
        threshold = state.threshold,
        "read the public ledger"
    );
    let (id, sealer) = DataDir::recovery_identity(root, bootstrap, seal)?;
    let secrets = collect_shares(listener, &id, state.clone()).await?;
    let state2 = state.clone();
    let root2 = root.to_path_buf();
    let advertise = advertise.to_owned();
    tokio::task::spawn_blocking(move || {
        write_recovered(
            &state2,
            &root2,
            &id,
            secrets,
            sealer.as_deref(),
            &advertise,
            chunk_size,
        )
    })
    .await
    .map_err(|e| DisasterError::Write(e.to_string()))?
}

/// The previous identities the new service endorses: those a past recovery recorded, and the
/// old service's own, up to the last seqno it signed.
fn previous_services(
    state: &PublicState,
    id: &RecoveryIdentity,
) -> Result<Vec<PreviousService>, DisasterError> {
    let mut all: Vec<PreviousIdentity> = state.previous.values().cloned().collect();
    all.push(PreviousIdentity {
        cert: state.service_cert_pem.clone(),
        until_seqno: state.last_signature.seqno,
    });
    all.sort_by_key(|p| p.until_seqno);
    let now = SystemTime::now();
    all.into_iter()
        .map(|p| {
            let endorsement = vellum_ledger::identity::endorse_previous_identity(
                &id.service_cert_pem,
                &id.service_key_pem,
                &p.cert,
                now,
            )
            .map_err(write_err)?;
            Ok(PreviousService {
                cert_pem: p.cert,
                until_seqno: p.until_seqno,
                endorsement_pem: endorsement,
            })
        })
        .collect()
}

/// Copies the old ledger, writes the recovery transactions and completes the data directory.
fn write_recovered(
    state: &PublicState,
    root: &Path,
    id: &RecoveryIdentity,
    secrets: LedgerSecrets,
    sealer: Option<&crate::seal::Sealer>,
    advertise: &str,
    chunk_size: u64,
) -> Result<(), DisasterError> {
    use crate::raft::types::{Membership, Node, Vote, membership_write_set};
    let ledger = root.join("ledger");
    if ledger.exists() {
        // A recovery interrupted before its end: start the copy again.
        std::fs::remove_dir_all(&ledger).map_err(write_err)?;
    }
    vellum_ledger::files::create_private_dir(&ledger).map_err(write_err)?;
    // The copies are made durable before anything says the directory is provisioned.
    for (_, path) in vellum_ledger::chunk::list_chunks(&state.dir, false).map_err(write_err)? {
        if let Some(name) = path.file_name() {
            let to = ledger.join(name);
            std::fs::copy(&path, &to).map_err(write_err)?;
            std::fs::File::open(&to)
                .and_then(|f| f.sync_all())
                .map_err(write_err)?;
        }
    }
    vellum_ledger::files::sync_dir(&ledger).map_err(write_err)?;
    let previous = previous_services(state, id)?;
    let keys = NodeKeys {
        node_key: SigningKey::from_pkcs8_pem(&id.node_key_pem).map_err(write_err)?,
        node_cert_pem: id.node_cert_pem.clone(),
        service_key: Some(SigningKey::from_pkcs8_pem(&id.service_key_pem).map_err(write_err)?),
        service_cert_pem: id.service_cert_pem.clone(),
        secrets: secrets.clone(),
        cose_issuer: "vellum.local".into(),
        cose_subject: "ledger.signature".into(),
        previous_services: previous.clone(),
        service_signer: None,
    };
    let (mut engine, _) = Engine::open_dir(&ledger, chunk_size, keys).map_err(write_err)?;
    let last = state.last_signature;
    if engine.last_seqno() < last.seqno {
        return Err(DisasterError::Unrecoverable(
            state.dir.clone(),
            format!(
                "its entries up to the last signature ({last}) do not open with the recovered secrets"
            ),
        ));
    }
    engine.truncate(last.seqno).map_err(write_err)?;
    let view = last.view + 1;
    let txid = |seqno| TxId::new(view, seqno);

    // The recovery transaction.
    let mut ws = EntryBuilder::default().map(vellum_ledger::genesis::service_info(
        &id.service_cert_pem,
        ServiceStatus::Recovering,
    ));
    let old_nodes: Vec<(String, NodeInfo)> = state
        .gov
        .rows(tables::NODES_INFO.name())
        .filter_map(|(k, v)| {
            let info = tables::NODES_INFO.decode_value(v).ok()?;
            (info.status != NodeStatus::Retired)
                .then(|| (String::from_utf8_lossy(k).into_owned(), info))
        })
        .map(|(k, mut info)| {
            info.status = NodeStatus::Retired;
            (k, info)
        })
        .collect();
    let mut me = NodeInfo::cluster(NodeStatus::Trusted, id.raft_id, advertise);
    me.ledger_secret_seqno = Some(last.seqno + 3);
    let mut nodes: Vec<(&str, &NodeInfo)> =
        old_nodes.iter().map(|(k, i)| (k.as_str(), i)).collect();
    nodes.push((id.node_id.as_str(), &me));
    ws = ws
        .map(tables::NODES_INFO.writes(nodes))
        .map(tables::NODES_ENDORSED_CERTIFICATES.write(&id.node_id, &id.node_cert_pem));
    let identities: Vec<(String, PreviousIdentity)> = previous
        .iter()
        .filter_map(|p| {
            let c = Certificate::from_pem(&p.cert_pem).ok()?;
            Some((
                vellum_core::hash::Hash::digest(c.spki_der()).to_hex(),
                PreviousIdentity {
                    cert: p.cert_pem.clone(),
                    until_seqno: p.until_seqno,
                },
            ))
        })
        .collect();
    ws = ws.map(
        tables::PREVIOUS_SERVICE_IDENTITIES.writes(identities.iter().map(|(k, v)| (k.as_str(), v))),
    );
    let membership = Membership::new(
        vec![std::collections::BTreeSet::from([id.raft_id])],
        BTreeMap::from([(id.raft_id, Node::new(advertise.to_owned()))]),
    )
    .map_err(write_err)?;
    let ws = membership_write_set(Some(&ws), &membership);
    engine
        .append(txid(last.seqno + 1), &ws)
        .map_err(write_err)?;

    // A fresh ledger secret from here on (CCF's recovery rekey), with shares for it.
    let fresh = crate::rekey::fresh_secret();
    let history = crate::rekey::history_record(&secrets, &fresh, Some(last.seqno + 3));
    let members =
        crate::recovery::recovery_members(state.gov.rows(tables::MEMBERS_INFO.name()), |id| {
            state
                .gov
                .get(tables::MEMBERS_ENCRYPTION_PUBLIC_KEYS.name(), id)
                .map(<[u8]>::to_vec)
        });
    let (shares, digests) =
        crate::recovery::issue(&fresh, &members, state.threshold).map_err(write_err)?;
    let ws = EntryBuilder::default()
        .map(vellum_ledger::genesis::service_info(
            &id.service_cert_pem,
            ServiceStatus::WaitingForRecoveryShares,
        ))
        .map(tables::HISTORICAL_LEDGER_SECRET.write(&(), &history))
        .map(tables::RECOVERY_SHARES.write(&(), &shares))
        .map(tables::RECOVERY_SHARE_DIGESTS.write(&(), &digests));
    engine
        .append(txid(last.seqno + 2), &ws)
        .map_err(write_err)?;
    let mut all = secrets;
    all.push(last.seqno + 3, fresh).map_err(write_err)?;
    // The secrets are durable before anything is sealed under the new one.
    DataDir::finish_secrets(root, &all, sealer)?;
    engine.replace_secrets(all.clone()).map_err(write_err)?;
    let iat = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    engine
        .append_signature(txid(last.seqno + 3), iat)
        .map_err(write_err)?;
    engine.sync().map_err(write_err)?;
    drop(engine);

    // Raft: a new group of this node alone, in the view after the old ones.
    let vote = Vote::new(view - 1, id.raft_id);
    let vote_path = root.join("raft").join("vote.json");
    vellum_ledger::files::write_durably(&vote_path, &serde_json::to_vec(&vote).map_err(write_err)?)
        .map_err(write_err)?;
    DataDir::finish_recovered(root, id, &all, &previous, sealer)?;
    tracing::info!(
        recovered_to = %last,
        view,
        "recovered the service: the members vote transition_service_to_open to open it"
    );
    Ok(())
}
