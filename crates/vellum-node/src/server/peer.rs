//! The `/node/...` routes: the node-to-node channel (Raft, forwarded requests), joining, and
//! cluster administration.
//!
//! | route | who may call |
//! |---|---|
//! | `POST /node/raft/append`, `/node/raft/vote`, `/node/forward` | nodes: exactly the client certificate the ledger records for a `Trusted` node |
//! | `GET /node/network` | anyone (the service certificate, as CCF serves it) |
//! | `GET /node/network/nodes` | anyone (CCF serves it publicly too) |
//! | `POST /node/join` | a joining node: any client certificate (its new key) and a join token |
//! | `POST /node/join-tokens`, `DELETE /node/network/nodes/{id}` | Administrators and consortium members |
//! | `GET /node/snapshot[?upto=SEQNO]`, `GET /node/snapshot/{name}` | the service's nodes (node channel) and its operators (Administrators, members): the newest (or named, or newest at or below SEQNO) committed snapshot |
//! | `GET /node/ledger/checkpoint` | the service's nodes and its operators: a checkpoint of the committed chunks as they stand (a node joining from a snapshot opens its ledger from it) |
//! | `GET /node/ledger/chunk/{name}` | the service's nodes and its operators: a committed ledger chunk this node holds on disk (a node fetches back a chunk it dropped past its retention from the archive, or else from another node) |
//! | `GET /node/health`, `GET /metrics` | anyone, as CCF's built-ins (`/node/state`, `/node/commit`, ...): the node's health and its Prometheus metrics |
//! | `POST /node/null` | anyone (a body, as everywhere, needs a credential): answers `{}` without touching the ledger (a benchmark baseline) |

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{Extensions, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use vellum_core::crypto::Certificate;
use vellum_core::tables::NodeStatus;

use super::context::{
    ApiError, ApiResult, AppState, Ctx, St, body_bytes, json_body, ok_json, path_param,
    write_failed,
};
use crate::cluster::{Forward, JoinRequest};
use crate::lock;
use crate::raft::network::{
    APPEND_PATH, CONTENT_TYPE, FORWARD_PATH, RaftAnswer, RaftRefused, VOTE_PATH,
};
use crate::users::Role;

/// The client certificate of the connection (DER), for the node channel and joining.
#[derive(Debug, Clone, Default)]
pub struct PeerCertDer(pub Option<Arc<[u8]>>);

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(APPEND_PATH, post(append))
        .route(VOTE_PATH, post(vote))
        .route(FORWARD_PATH, post(forward))
        .route("/node/network", get(network))
        .route("/node/network/nodes", get(nodes))
        .route("/node/network/nodes/{id}", delete(remove_node))
        .route("/node/join", post(join))
        .route("/node/join-tokens", post(create_token))
        .route("/node/null", post(null))
        // CCF's built-in endpoints (no credential needed, as in CCF).
        .route("/node/commit", get(commit))
        .route("/app/commit", get(commit))
        .route("/node/tx", get(tx))
        .route("/app/tx", get(tx))
        .route("/node/state", get(state))
        .route("/node/version", get(version))
        .route("/node/ready/app", get(ready_app))
        .route("/node/ready/gov", get(ready_gov))
        // Vellum's own: the node's health, and its metrics for Prometheus.
        .route("/node/health", get(health))
        .route("/node/snapshot", get(latest_snapshot))
        .route("/node/snapshot/{name}", get(named_snapshot))
        .route("/node/ledger/chunk/{name}", get(ledger_chunk))
        .route("/node/ledger/checkpoint", get(ledger_checkpoint))
        .route("/metrics", get(metrics))
}

/// `GET /node/snapshot`: the newest committed snapshot this node holds (its file name in
/// `x-vellum-snapshot`), for the service's nodes and its operators (Administrators, members);
/// with `?upto=SEQNO`, the newest taken at or below SEQNO.
async fn latest_snapshot(
    State(st): St,
    ctx: Ctx,
    ext: Extensions,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> ApiResult {
    require_node_or_operator(&st, &ctx, &ext)?;
    let query = super::query::Query::parse(q.as_deref())?;
    let upto = match query.get("upto") {
        None => u64::MAX,
        Some(v) => v.parse::<u64>().map_err(|_| {
            ApiError::bad(
                "InvalidQueryParameterValue",
                format!("upto must be a seqno, not {v:?}"),
            )
        })?,
    };
    let newest =
        crate::node::snapshots::committed(&crate::node::snapshots::dir(st.node.data_root()))
            .into_iter()
            .find(|(s, _, _)| *s <= upto);
    let Some((seqno, evidence, _)) = newest else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "SnapshotNotFound",
            if upto == u64::MAX {
                "this node holds no committed snapshot (see --snapshot-interval)".to_owned()
            } else {
                format!("this node holds no committed snapshot at or below seqno {upto}")
            },
        ));
    };
    snapshot_file(&st, seqno, evidence).await
}

/// `GET /node/snapshot/snapshot_S_E.committed`: that committed snapshot, if this node holds it.
async fn named_snapshot(
    State(st): St,
    ctx: Ctx,
    ext: Extensions,
    Path(name): Path<String>,
) -> ApiResult {
    require_node_or_operator(&st, &ctx, &ext)?;
    // The name is rebuilt from its numbers: nothing the caller sends reaches a path.
    let (seqno, evidence) =
        vellum_core::snapshot::parse_committed_name(&name).ok_or_else(|| {
            ApiError::bad(
                "InvalidSnapshotName",
                format!(
                    "{name:?} is not a committed snapshot name (snapshot_SEQNO_EVIDENCE.committed)"
                ),
            )
        })?;
    snapshot_file(&st, seqno, evidence).await
}

async fn snapshot_file(st: &AppState, seqno: u64, evidence: u64) -> ApiResult {
    let name = vellum_core::snapshot::committed_name(seqno, evidence);
    let path = crate::node::snapshots::dir(st.node.data_root()).join(&name);
    let bytes = read_held(
        &path,
        &name,
        "SnapshotNotFound",
        " (it keeps the newest two)",
    )
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::HeaderName::from_static("x-vellum-snapshot"), name),
        ],
        bytes,
    )
        .into_response())
}

/// The bytes of a file this node holds (a snapshot, a chunk); `404 {code}` when it does not.
async fn read_held(
    path: &std::path::Path,
    name: &str,
    code: &'static str,
    why: &str,
) -> Result<Vec<u8>, ApiError> {
    match tokio::fs::read(path).await {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            code,
            format!("this node does not hold {name}{why}"),
        )),
        Err(e) => Err(ApiError::internal(format!("reading {name}: {e}"))),
    }
}

/// `GET /node/ledger/chunk/ledger_A-B.committed`: that committed chunk, if this node holds it
/// on disk. Any copy is checked by whoever takes it (its positions table against their
/// checkpoint, every entry's GCM tag), so a node serves what it has as it is.
async fn ledger_chunk(
    State(st): St,
    ctx: Ctx,
    ext: Extensions,
    Path(name): Path<String>,
) -> ApiResult {
    require_node_or_operator(&st, &ctx, &ext)?;
    // The name is rebuilt from its numbers: nothing the caller sends reaches a path.
    let name = vellum_ledger::chunk::ChunkName::parse(&name)
        .filter(|n| n.committed && n.end.is_some())
        .map(|n| n.file_name())
        .ok_or_else(|| {
            ApiError::bad(
                "InvalidChunkName",
                format!("{name:?} is not a committed chunk name (ledger_FIRST-LAST.committed)"),
            )
        })?;
    let path = st.node.ledger_dir().join(&name);
    let bytes = read_held(&path, &name, "ChunkNotFound", " on its disk").await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// `GET /node/ledger/checkpoint`: a checkpoint of the committed chunks as they stand
/// ([`vellum_ledger::checkpoint`]; its seqno in `x-vellum-checkpoint-seqno`). Its MAC is keyed
/// by the ledger secret, which only the service's nodes hold.
async fn ledger_checkpoint(State(st): St, ctx: Ctx, ext: Extensions) -> ApiResult {
    require_node_or_operator(&st, &ctx, &ext)?;
    let Some((seqno, bytes)) = st
        .node
        .checkpoint_now()
        .await
        .map_err(super::context::read_failed)?
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "CheckpointNotFound",
            "no ledger chunk is committed yet",
        ));
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::HeaderName::from_static("x-vellum-checkpoint-seqno"),
                seqno.to_string(),
            ),
        ],
        bytes,
    )
        .into_response())
}

fn require_node_or_operator(st: &AppState, ctx: &Ctx, ext: &Extensions) -> Result<(), ApiError> {
    if require_node(st, ext).is_ok() {
        return Ok(());
    }
    require_operator(st, ctx)
}

/// The node's health at a glance (`vellum node status`).
async fn health(State(st): St) -> Response {
    axum::Json(st.node.health()).into_response()
}

/// Every metric, in the Prometheus text format (OpenMetrics 1.0, which Prometheus asks for).
async fn metrics(State(st): St) -> Response {
    let node = st.node.clone();
    // Reading the ledger directory's size touches the file system: off the async threads.
    match tokio::task::spawn_blocking(move || node.metrics_text()).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// CCF's `/node/commit` and `/app/commit`: the last committed transaction id.
async fn commit(State(st): St) -> Response {
    ok_json(json!({
        "transaction_id": st.node.committed_txid().map(|t| t.to_string()),
    }))
}

/// CCF's `/node/tx` and `/app/tx`: `?transaction_id=V.S` → `{"status", "transaction_id"}`, the
/// status as this node knows it (CCF's rule).
async fn tx(State(st): St, axum::extract::RawQuery(q): axum::extract::RawQuery) -> ApiResult {
    let txid = super::query::Query::ccf_txid(q.as_deref())?;
    Ok(ok_json(json!({
        "status": st.node.status(txid),
        "transaction_id": txid.to_string(),
    })))
}

/// CCF's `/node/state`: this node's id, its state and what it has signed.
async fn state(State(st): St) -> Response {
    let last_signed = st.node.last_signed_seqno();
    ok_json(json!({
        "node_id": st.node.node_id(),
        "state": if st.node.is_ready() { "PartOfNetwork" } else { "PartOfPublicNetwork" },
        "last_signed_seqno": last_signed,
        "startup_seqno": 0,
    }))
}

/// CCF's `/node/version`: Vellum's version where CCF gives its own.
async fn version() -> Response {
    ok_json(json!({
        "ccf_version": format!("vellum-{}", env!("CARGO_PKG_VERSION")),
        "quickjs_version": "rquickjs",
        "unsafe": false,
    }))
}

fn ready(yes: bool, what: &str) -> Response {
    if yes {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("the node is not ready for {what} yet"),
        )
        .into_response()
    }
}

/// CCF's `/node/ready/app`: 204 once this node serves the application (the service open).
async fn ready_app(State(st): St) -> Response {
    let open = st.node.service_status() == Some(vellum_core::tables::ServiceStatus::Open);
    ready(st.node.is_ready() && open, "the application")
}

/// CCF's `/node/ready/gov`: 204 once this node serves governance.
async fn ready_gov(State(st): St) -> Response {
    ready(st.node.is_ready(), "governance")
}

/// Reads the body and answers `{}`: the same accept loop, TLS, HTTP and router as every other
/// route, and no ledger work (the ceiling for `vellum bench`).
async fn null(body: Result<Bytes, BytesRejection>) -> ApiResult {
    body_bytes(body)?;
    Ok(ok_json(json!({})))
}

fn peer_der(ext: &Extensions) -> Option<Arc<[u8]>> {
    ext.get::<PeerCertDer>().and_then(|p| p.0.clone())
}

/// Whether `path` is a node-channel route (Raft and forwarded requests).
pub(super) fn is_node_channel(path: &str) -> bool {
    path == APPEND_PATH || path == VOTE_PATH || path == FORWARD_PATH
}

/// How many node certificates the node channel remembers as checked.
const MAX_KNOWN_PEERS: usize = 64;

/// Admits only nodes of this service: the client certificate must be exactly the one the
/// ledger records for a node whose status is `Trusted` (a node that has just joined and not
/// yet caught up goes by the nodes it was told of when it was admitted). Being endorsed by the
/// service key is not enough: a retired node's directory holds that key.
pub(super) fn require_node(st: &AppState, ext: &Extensions) -> Result<(), ApiError> {
    let forbidden = |m: &str| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "NotAllowed",
            format!("node channel: {m}"),
        )
    };
    let der = peer_der(ext).ok_or_else(|| forbidden("no client certificate"))?;
    let known = lock(&st.known_peers)
        .iter()
        .find(|(d, _)| **d == *der)
        .map(|(_, id)| id.clone());
    let id = match known {
        Some(id) => id,
        None => {
            let cert = Certificate::from_der(&der).map_err(|e| forbidden(&e.to_string()))?;
            let id = vellum_core::crypto::node_id_of(&cert);
            if !st.node.is_node_certificate(&id, &der) {
                return Err(forbidden(&format!(
                    "the certificate is not the one this service recorded for node {id}"
                )));
            }
            let mut known = lock(&st.known_peers);
            // Bounded: a service has a handful of nodes.
            if known.len() >= MAX_KNOWN_PEERS {
                known.remove(0);
            }
            known.push((der.clone(), id.clone()));
            id
        }
    };
    if !st.node.is_trusted_node(&id, &der) {
        let status = st.node.node_status(&id).map_or("unknown", |s| s.as_str());
        return Err(forbidden(&format!(
            "node {id} is {}: not a trusted node of this service",
            status.to_lowercase()
        )));
    }
    Ok(())
}

fn postcard_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body_bytes(body)?;
    postcard::from_bytes(&body)
        .map_err(|e| ApiError::bad("InvalidInput", format!("node channel body: {e}")))
}

fn refused(e: impl std::fmt::Display) -> RaftRefused {
    RaftRefused(e.to_string())
}

fn postcard_ok<T: Serialize>(v: &T) -> ApiResult {
    let bytes = postcard::to_stdvec(v).map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], bytes).into_response())
}

async fn append(State(st): St, ext: Extensions, body: Result<Bytes, BytesRejection>) -> ApiResult {
    require_node(&st, &ext)?;
    let req = postcard_body(body)?;
    let r: RaftAnswer<_> = st.node.raft().append_entries(req).await.map_err(refused);
    postcard_ok(&r)
}

async fn vote(State(st): St, ext: Extensions, body: Result<Bytes, BytesRejection>) -> ApiResult {
    require_node(&st, &ext)?;
    let req = postcard_body(body)?;
    let r: RaftAnswer<_> = st.node.raft().vote(req).await.map_err(refused);
    postcard_ok(&r)
}

async fn forward(State(st): St, ext: Extensions, body: Result<Bytes, BytesRejection>) -> ApiResult {
    require_node(&st, &ext)?;
    let msg: Forward = postcard_body(body)?;
    postcard_ok(&st.node.serve_forwarded(msg).await)
}

async fn network(State(st): St) -> Response {
    ok_json(json!({
        "service_certificate": st.node.service_cert_pem(),
        "current_node_id": st.node.node_id(),
    }))
}

async fn nodes(State(st): St) -> Response {
    let nodes: Vec<_> = st
        .node
        .nodes()
        .into_iter()
        .map(|n| {
            json!({
                "node_id": n.node_id,
                "status": n.status,
                "primary": n.role == "primary",
                "role": n.role,
                "raft_id": n.raft_id.to_string(),
                "address": n.address,
            })
        })
        .collect();
    ok_json(json!({ "nodes": nodes }))
}

/// Administrators, and consortium members (by their certificate: a bearer token never acts
/// as a member).
fn require_operator(st: &AppState, ctx: &Ctx) -> Result<(), ApiError> {
    if ctx.caller.identity().is_some_and(|c| st.node.is_member(c)) {
        return Ok(());
    }
    st.require_role(&ctx.caller, Role::Administrator, &ctx.method, &ctx.uri)
        .map(|_| ())
}

async fn create_token(State(st): St, ctx: Ctx) -> ApiResult {
    require_operator(&st, &ctx)?;
    let (token, expires_at) = st
        .node
        .create_join_token(ctx.caller.identity())
        .await
        .map_err(write_failed)?;
    Ok(ok_json(json!({"token": token, "expires_at": expires_at})))
}

async fn remove_node(
    State(st): St,
    ctx: Ctx,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult {
    require_operator(&st, &ctx)?;
    let node_id = path_param(id)?;
    if !st.node.cluster().nodes.contains_key(&node_id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("no node {node_id} in this service"),
        ));
    }
    let txid = st
        .node
        .retire(ctx.caller.identity(), &node_id)
        .await
        .map_err(write_failed)?;
    Ok(ok_json(
        json!({"node_id": node_id, "status": NodeStatus::Retired, "transaction_id": txid.to_string()}),
    ))
}

async fn join(State(st): St, ext: Extensions, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let der = peer_der(&ext).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationInfo",
            "a joining node must present a certificate for its key",
        )
    })?;
    let body = body_bytes(body)?;
    let req: JoinRequest = serde_json::from_value(json_body(&body)?)
        .map_err(|e| ApiError::bad("InvalidInput", format!("join request: {e}")))?;
    let joined = st.node.admit(req, &der).await.map_err(|e| match e {
        crate::NodeError::Refused(r @ crate::Refusal::TooManyPending(_)) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyPendingNodes",
            r.to_string(),
        ),
        crate::NodeError::Refused(r) => {
            ApiError::new(StatusCode::FORBIDDEN, "NotAllowed", r.to_string())
        }
        other => write_failed(other),
    })?;
    match joined {
        crate::cluster::JoinOutcome::Admitted(j) => Ok(ok_json(
            serde_json::to_value(&j).map_err(ApiError::internal)?,
        )),
        crate::cluster::JoinOutcome::Pending(node_id) => {
            let body = crate::cluster::JoinPending {
                node_id,
                node_status: NodeStatus::Pending,
            };
            Ok((
                StatusCode::ACCEPTED,
                axum::Json(serde_json::to_value(&body).map_err(ApiError::internal)?),
            )
                .into_response())
        }
    }
}
