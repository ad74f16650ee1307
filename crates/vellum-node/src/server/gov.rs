//! CCF's governance API (`/gov`, api-version `2024-07-01`, also `2023-06-01-preview`), the
//! reads: `/gov/service/constitution`, `/gov/service/info`, `/gov/service/members[/{id}]`,
//! `/gov/service/nodes[/{id}]`, `/gov/service/users[/{id}]`, `/gov/service/join-policy`,
//! `/gov/service/jwk`, `/gov/service/javascript-app`, `/gov/recovery/encrypted-shares/{id}`,
//! `/gov/members/proposals[/{id}[/actions | /ballots/{member}]]`. No credential is needed, as
//! in CCF: the tables are public. Answers and errors have CCF's shapes and codes.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use vellum_core::tables;

use super::context::{ApiError, AppState, PathParam, St, answer_response, ok_json, write_failed};
use crate::gov::proposal_json;
use crate::ops::{GovKind, GovRequest};

/// The api-versions the governance API answers, oldest first.
pub const GOV_API_VERSIONS: [&str; 2] = ["2023-06-01-preview", "2024-07-01"];

/// The routes.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/gov/service/constitution", get(constitution))
        .route("/gov/service/info", get(service_info))
        .route("/gov/service/members", get(members))
        .route("/gov/service/members/{member_id}", get(member))
        .route("/gov/service/join-policy", get(join_policy))
        .route("/gov/service/jwk", get(jwk))
        .route("/gov/service/javascript-app", get(javascript_app))
        .route(
            "/gov/recovery/encrypted-shares/{member_id}",
            get(encrypted_share),
        )
        .route("/gov/service/users", get(users))
        .route("/gov/service/users/{user_id}", get(user))
        .route("/gov/service/nodes", get(nodes))
        .route("/gov/service/nodes/{node_id}", get(node))
        .route("/gov/members/proposals", get(proposals))
        .route("/gov/members/proposals:create", post(create))
        .route(
            "/gov/members/proposals/{proposal_id}",
            get(proposal).post(withdraw),
        )
        .route("/gov/members/proposals/{proposal_id}/actions", get(actions))
        .route(
            "/gov/members/proposals/{proposal_id}/ballots/{member_id}",
            get(ballot).post(submit_ballot),
        )
        .route(
            "/gov/members/state-digests/{member_id}",
            get(state_digest).post(digest_post),
        )
}

/// The content type of a signed governance request.
const COSE: &str = "application/cose";

/// Sends a signed request to the primary and answers what it answered.
async fn signed(
    st: &AppState,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
    kind: GovKind,
) -> Result<Response, ApiError> {
    api_version(raw_query)?;
    match headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes) {
        None => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationInfo",
                "Missing content-type header",
            ));
        }
        Some(ct) if ct.eq_ignore_ascii_case(COSE.as_bytes()) => {}
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationInfo",
                format!("Content type is not set to {COSE}"),
            ));
        }
    }
    let req = GovRequest {
        kind,
        envelope: body.to_vec(),
    };
    let (a, txid) = st.node.govern(req).await.map_err(write_failed)?;
    Ok(answer_response(a, txid))
}

/// A path segment with CCF's action suffix (`ID:withdraw`): the id, if the suffix is `action`.
fn with_action<'a>(segment: &'a str, action: &str) -> Result<&'a str, ApiError> {
    match segment.rsplit_once(':') {
        Some((id, a)) if a == action => Ok(id),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("Unknown path: {segment}"),
        )),
    }
}

async fn create(
    State(st): St,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    signed(&st, q.as_deref(), &headers, body, GovKind::Propose).await
}

async fn withdraw(
    State(st): St,
    RawQuery(q): RawQuery,
    PathParam(segment): PathParam,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = hex_id(with_action(&segment, "withdraw")?, "proposal")?;
    signed(
        &st,
        q.as_deref(),
        &headers,
        body,
        GovKind::Withdraw { proposal_id: id },
    )
    .await
}

async fn submit_ballot(
    State(st): St,
    RawQuery(q): RawQuery,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Path((proposal_id, segment)) = path.map_err(|e| {
        ApiError::bad(
            "InvalidResourceName",
            format!("malformed path segment: {e}"),
        )
    })?;
    let proposal_id = hex_id(&proposal_id, "proposal")?;
    let member_id = hex_id(with_action(&segment, "submit")?, "member")?;
    signed(
        &st,
        q.as_deref(),
        &headers,
        body,
        GovKind::Ballot {
            proposal_id,
            member_id,
        },
    )
    .await
}

async fn digest_post(
    State(st): St,
    RawQuery(q): RawQuery,
    PathParam(segment): PathParam,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let kind = match segment.rsplit_once(':') {
        Some((id, "update")) => GovKind::UpdateDigest {
            member_id: hex_id(id, "member")?,
        },
        Some((id, "ack")) => GovKind::Ack {
            member_id: hex_id(id, "member")?,
        },
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                format!("Unknown path: {segment}"),
            ));
        }
    };
    signed(&st, q.as_deref(), &headers, body, kind).await
}

async fn state_digest(
    State(st): St,
    RawQuery(q): RawQuery,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    api_version(q.as_deref())?;
    let id = hex_id(&id, "member")?;
    let ack = st
        .node
        .with_gov(|g| {
            g.get(tables::MEMBERS_ACKS.name(), id.as_bytes())
                .and_then(|v| tables::MEMBERS_ACKS.decode_value(v).ok())
        })
        .ok_or_else(|| {
            not_found(
                "ResourceNotFound",
                format!("No ACK record exists for member {id}."),
            )
        })?;
    Ok(ok_json(
        json!({"memberId": id, "stateDigest": ack.state_digest}),
    ))
}

/// CCF's check of the `api-version` query parameter, required on every governance request.
fn api_version(raw: Option<&str>) -> Result<(), ApiError> {
    let supported = format!(
        "The supported api-versions are: {}",
        GOV_API_VERSIONS.join(", ")
    );
    let given = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "api-version")
        .map(|(_, v)| v.into_owned());
    match given {
        None => Err(ApiError::bad(
            "MissingApiVersionParameter",
            format!(
                "The api-version query parameter (?api-version=) is required for all requests. \
                 {supported}"
            ),
        )),
        Some(v) if GOV_API_VERSIONS.contains(&v.as_str()) => Ok(()),
        Some(v) => Err(ApiError::bad(
            "UnsupportedApiVersionValue",
            format!("Unsupported api-version '{v}'. {supported}"),
        )),
    }
}

/// An entity id as CCF takes it in a path: 64 hex characters.
fn hex_id(s: &str, what: &str) -> Result<String, ApiError> {
    if s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit()) {
        Ok(s.to_owned())
    } else {
        Err(ApiError::bad(
            "InvalidResourceName",
            format!("'{s}' is not a valid hex-encoded {what} ID"),
        ))
    }
}

fn not_found(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, code, message)
}

/// A body with its content type.
fn typed(body: Vec<u8>, content_type: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

async fn constitution(State(st): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    api_version(q.as_deref())?;
    let c = st
        .node
        .with_gov(|g| g.constitution())
        .ok_or_else(|| not_found("ResourceNotFound", "Constitution not found".into()))?;
    Ok(typed(c.into_bytes(), "text/javascript"))
}

async fn service_info(State(st): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    api_version(q.as_deref())?;
    let info = st
        .node
        .with_gov(|g| {
            g.get(
                tables::SERVICE_INFO.name(),
                &vellum_core::entry::SINGLETON_KEY,
            )
            .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
        })
        .ok_or_else(|| not_found("ResourceNotFound", "Service info not yet available".into()))?;
    Ok(ok_json(json!({
        "status": info.get("status").cloned().unwrap_or_default(),
        "certificate": info.get("cert").cloned().unwrap_or_default(),
        "recoveryCount": info.get("recovery_count").cloned().unwrap_or(json!(0)),
        "serviceData": info.get("service_data").cloned().unwrap_or_default(),
    })))
}

async fn members(State(st): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    api_version(q.as_deref())?;
    Ok(ok_json(json!({"value": st.node.with_gov(|g| g.members())})))
}

/// CCF's join policy: Vellum's nodes run no TEE, so only the virtual measurement is allowed;
/// and Vellum's setting (`set_join_policy`): `"admission": "token"` or `"vote"`.
async fn join_policy(State(st): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    api_version(q.as_deref())?;
    let policy = st.node.with_gov(crate::gov::GovTables::join_policy);
    Ok(ok_json(json!({
        "sgx": {"measurements": []},
        "virtual": {"measurements": [tables::VIRTUAL_MEASUREMENT], "hostData": []},
        "snp": {"measurements": [], "hostData": {}, "uvmEndorsements": {}, "tcbVersions": {}},
        "admission": policy.admission,
    })))
}

/// CCF's description of the deployed app's endpoints (ACL's user-defined endpoints):
/// `{"endpoints": {PATH: {VERB: {jsModule, jsFunction, forwardingRequired,
/// redirectionStrategy, authnPolicies, mode, openApi}}}}`.
async fn javascript_app(State(st): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    api_version(q.as_deref())?;
    let app = st.node.app();
    let mut endpoints = serde_json::Map::new();
    let declared = app
        .bundle
        .as_ref()
        .and_then(|b| b["metadata"]["endpoints"].as_object().cloned())
        .unwrap_or_default();
    for (path, verbs) in declared {
        let mut ops = serde_json::Map::new();
        for (verb, p) in verbs.as_object().into_iter().flatten() {
            ops.insert(
                verb.to_ascii_uppercase(),
                json!({
                    "jsModule": p["js_module"],
                    "jsFunction": p["js_function"],
                    "forwardingRequired": p["forwarding_required"],
                    "redirectionStrategy": p.get("redirection_strategy").cloned().unwrap_or_else(|| "none".into()),
                    "authnPolicies": p["authn_policies"],
                    "mode": p["mode"],
                    "openApi": p.get("openapi").cloned().unwrap_or_else(|| json!({})),
                }),
            );
        }
        endpoints.insert(path, ops.into());
    }
    Ok(ok_json(json!({"endpoints": endpoints})))
}

/// CCF's `/gov/recovery/encrypted-shares/{memberId}`: the member's recovery share, encrypted
/// to its encryption key (`{"memberId", "encryptedShare"}`, base64).
async fn encrypted_share(
    State(st): St,
    RawQuery(q): RawQuery,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    api_version(q.as_deref())?;
    let id = hex_id(&id, "member")?;
    let share = st
        .node
        .with_gov(|g| g.recovery_shares())
        .and_then(|r| r.encrypted_shares.get(&id).cloned())
        .ok_or_else(|| {
            not_found(
                "ResourceNotFound",
                format!("Recovery share not found for member {id}."),
            )
        })?;
    Ok(ok_json(json!({"memberId": id, "encryptedShare": share})))
}

/// CCF's token issuers and their keys.
async fn jwk(State(st): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    api_version(q.as_deref())?;
    Ok(ok_json(st.node.with_gov(crate::gov::GovTables::jwk_json)))
}

async fn users(State(st): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    api_version(q.as_deref())?;
    Ok(ok_json(json!({"value": st.node.with_gov(|g| g.users())})))
}

async fn user(
    State(st): St,
    RawQuery(q): RawQuery,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    one(&st, q.as_deref(), &id, "User", |g, id| g.user(id))
}

async fn nodes(State(st): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    api_version(q.as_deref())?;
    Ok(ok_json(json!({"value": st.node.with_gov(|g| g.nodes())})))
}

/// One member or node by id, as `describe` shows it.
fn one(
    st: &AppState,
    q: Option<&str>,
    id: &str,
    kind: &str,
    describe: impl FnOnce(&crate::gov::GovTables, &str) -> Option<serde_json::Value>,
) -> Result<Response, ApiError> {
    api_version(q)?;
    let id = hex_id(id, &kind.to_ascii_lowercase())?;
    let found = st
        .node
        .with_gov(|g| describe(g, &id))
        .ok_or_else(|| not_found("ResourceNotFound", format!("{kind} {id} does not exist.")))?;
    Ok(ok_json(found))
}

async fn member(
    State(st): St,
    RawQuery(q): RawQuery,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    one(&st, q.as_deref(), &id, "Member", |g, id| g.member(id))
}

async fn node(
    State(st): St,
    RawQuery(q): RawQuery,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    one(&st, q.as_deref(), &id, "Node", |g, id| g.node(id))
}

async fn proposals(State(st): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    api_version(q.as_deref())?;
    let list: Vec<_> = st
        .node
        .with_gov(|g| g.proposals())
        .iter()
        .map(|(id, info)| proposal_json(id, info))
        .collect();
    Ok(ok_json(json!({ "value": list })))
}

async fn proposal(
    State(st): St,
    RawQuery(q): RawQuery,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    api_version(q.as_deref())?;
    let id = hex_id(&id, "proposal")?;
    let info = st
        .node
        .with_gov(|g| g.proposal_info(&id))
        .ok_or_else(|| not_found("ProposalNotFound", format!("Could not find proposal {id}.")))?;
    Ok(ok_json(proposal_json(&id, &info)))
}

async fn actions(
    State(st): St,
    RawQuery(q): RawQuery,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    api_version(q.as_deref())?;
    let id = hex_id(&id, "proposal")?;
    let body = st
        .node
        .with_gov(|g| g.proposal(&id).map(<[u8]>::to_vec))
        .ok_or_else(|| not_found("ProposalNotFound", format!("Could not find proposal {id}.")))?;
    Ok(typed(body, "application/json"))
}

async fn ballot(
    State(st): St,
    RawQuery(q): RawQuery,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    api_version(q.as_deref())?;
    let Path((proposal_id, member_id)) = path.map_err(|e| {
        ApiError::bad(
            "InvalidResourceName",
            format!("malformed path segment: {e}"),
        )
    })?;
    let proposal_id = hex_id(&proposal_id, "proposal")?;
    let member_id = hex_id(&member_id, "member")?;
    let info = st
        .node
        .with_gov(|g| g.proposal_info(&proposal_id))
        .ok_or_else(|| {
            not_found(
                "ProposalNotFound",
                format!("Proposal {proposal_id} does not exist."),
            )
        })?;
    let ballot = info.ballots.get(&member_id).ok_or_else(|| {
        not_found(
            "VoteNotFound",
            format!("Member {member_id} has not voted for proposal {proposal_id}."),
        )
    })?;
    Ok(typed(ballot.clone().into_bytes(), "text/javascript"))
}
