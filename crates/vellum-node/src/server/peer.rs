//! The `/node/...` routes: the node-to-node channel (Raft, forwarded requests), joining, and
//! cluster administration.
//!
//! | route | who may call |
//! |---|---|
//! | `POST /node/raft/append`, `/node/raft/vote`, `/node/forward` | nodes: a client certificate endorsed by the service key |
//! | `GET /node/network` | anyone (the service certificate, as CCF serves it) |
//! | `GET /node/network/nodes` | anyone (CCF serves it publicly too) |
//! | `POST /node/join` | a joining node: any client certificate (its new key) and a join token |
//! | `POST /node/join-tokens`, `DELETE /node/network/nodes/{id}` | Administrators and consortium members |
//! | `POST /node/null` | anyone: answers `{}` without touching the ledger (a benchmark baseline) |

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

use super::api::{
    ApiError, ApiResult, AppState, Caller, Ctx, St, body_bytes, json_body, ok_json, path_param,
    write_failed,
};
use crate::cluster::{Forward, JoinRequest};
use crate::lock;
use crate::raft::network::{APPEND_PATH, CONTENT_TYPE, FORWARD_PATH, VOTE_PATH};
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

/// How many endorsed node certificates the node channel remembers.
const MAX_ENDORSED_PEERS: usize = 64;

/// Whether `path` is a node-channel route (Raft and forwarded requests).
pub(super) fn is_node_channel(path: &str) -> bool {
    path == APPEND_PATH || path == VOTE_PATH || path == FORWARD_PATH
}

/// Admits only nodes: the client certificate must be endorsed by the service key.
pub(super) fn require_node(st: &AppState, ext: &Extensions) -> Result<(), ApiError> {
    let forbidden = |m: &str| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "NotAllowed",
            format!("node channel: {m}"),
        )
    };
    let der = peer_der(ext).ok_or_else(|| forbidden("no client certificate"))?;
    let cert = Certificate::from_der(&der).map_err(|e| forbidden(&e.to_string()))?;
    let known = lock(&st.endorsed_peers).iter().any(|d| **d == *der);
    if !known {
        let service = Certificate::from_pem(st.node.service_cert_pem())
            .and_then(|c| c.public_key())
            .map_err(ApiError::internal)?;
        cert.verify_issued_by(&service)
            .map_err(|_| forbidden("the certificate is not endorsed by this service"))?;
        let mut endorsed = lock(&st.endorsed_peers);
        // Bounded: a service has a handful of nodes (renewed certificates push old ones out).
        if endorsed.len() >= MAX_ENDORSED_PEERS {
            endorsed.remove(0);
        }
        endorsed.push(der);
    }
    // A removed node keeps its endorsed certificate; it may no longer take part. (A node this
    // node has not heard of yet is let in: a node that just joined knows nobody.)
    let id = vellum_core::crypto::node_id_of(&cert);
    if st.node.node_status(&id).as_deref() == Some("Retired") {
        return Err(forbidden(&format!("node {id} is retired")));
    }
    Ok(())
}

fn postcard_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body_bytes(body)?;
    postcard::from_bytes(&body)
        .map_err(|e| ApiError::bad("InvalidInput", format!("node channel body: {e}")))
}

fn postcard_ok<T: Serialize>(v: &T) -> ApiResult {
    let bytes = postcard::to_stdvec(v).map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], bytes).into_response())
}

async fn append(State(st): St, ext: Extensions, body: Result<Bytes, BytesRejection>) -> ApiResult {
    require_node(&st, &ext)?;
    let req = postcard_body(body)?;
    let r = st.node.raft().append_entries(req).await;
    postcard_ok(&r.map_err(|e| e.to_string()))
}

async fn vote(State(st): St, ext: Extensions, body: Result<Bytes, BytesRejection>) -> ApiResult {
    require_node(&st, &ext)?;
    let req = postcard_body(body)?;
    let r = st.node.raft().vote(req).await;
    postcard_ok(&r.map_err(|e| e.to_string()))
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
    if let Caller::Cert(id) = &ctx.caller {
        let member = st.node.governance().is_ok_and(|g| {
            g.members.iter().any(|(_, pem)| {
                Certificate::from_pem(pem).is_ok_and(|c| c.acl_fingerprint() == *id)
            })
        });
        if member {
            return Ok(());
        }
    }
    st.require(&ctx.caller, Role::Administrator, &ctx.method, &ctx.uri)
        .map(|_| ())
}

async fn create_token(State(st): St, ctx: Ctx) -> ApiResult {
    require_operator(&st, &ctx)?;
    let (token, expires_at) = st.node.create_join_token().await.map_err(write_failed)?;
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
    let txid = st.node.retire(&node_id).await.map_err(write_failed)?;
    Ok(ok_json(
        json!({"node_id": node_id, "status": "Retired", "transaction_id": txid.to_string()}),
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
        crate::NodeError::Refused(m) => ApiError::new(StatusCode::FORBIDDEN, "NotAllowed", m),
        other => write_failed(other),
    })?;
    Ok(ok_json(
        serde_json::to_value(&joined).map_err(ApiError::internal)?,
    ))
}
