//! The ACL data-plane routes (`acl-rest-api.md` §3, api-version 2022-05-13, with the
//! `0.1-preview` names) and the identity route. Handlers only parse, authorize and shape JSON;
//! the node does the work.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use vellum_core::TxId;
use vellum_core::status::TxStatus;

use super::context::{
    Administrator, ApiError, ApiResult, AppState, Authorized, Contributor, PathParam, Reader,
    STATE_HEADER, St, TXID_HEADER, TxIdPath, WAIT_HEADER, WAIT_HEADER_LIMIT, body_bytes, json_body,
    ok_json, read_failed, write_failed,
};
use super::query::Query;
use crate::users::Role;

/// The `/app` routes and the identity route.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/app/transactions", get(list_entries).post(post_entry))
        .route("/app/transactions/current", get(current_entry))
        .route("/app/transactions/{id}", get(get_entry))
        .route("/app/transactions/{id}/status", get(get_status))
        .route("/app/transactions/{id}/receipt", get(get_receipt))
        .route("/app/collections", get(list_collections))
        .route("/app/collections/tags", get(list_tags))
        .route("/app/subLedgerIds", get(list_collections))
        .route("/app/users", get(list_users))
        .route(
            "/app/users/{id}",
            get(get_user).patch(patch_user).delete(delete_user),
        )
        .route("/app/governance/members", get(members))
        .route("/app/governance/constitution", get(constitution))
        .route("/app/enclaveQuotes", get(enclave_quotes))
        .route("/ledgerIdentity/{id}", get(identity))
}

async fn post_entry(
    State(st): St,
    auth: Authorized<Contributor>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let q = Query::parse(raw.as_deref())?;
    let collection = q.collection(&st.cfg.limits)?;
    let tags = q.tags()?;
    q.refuse(
        "waitForCommit",
        "send the x-vellum-wait: committed header to wait for commit",
    )?;
    let body = body_bytes(body)?;
    if body.len() > st.cfg.limits.max_body {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!(
                "request body is {} bytes; the limit is {}",
                body.len(),
                st.cfg.limits.max_body
            ),
        ));
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE)
        && !ct
            .to_str()
            .is_ok_and(|c| c.trim().starts_with("application/json"))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedContentType",
            "entries must be sent as application/json",
        ));
    }
    let v = json_body(&body)?;
    let contents = match v.get("contents") {
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(ApiError::bad(
                "InvalidInput",
                "\"contents\" must be a string",
            ));
        }
        None => return Err(ApiError::bad("InvalidInput", "missing \"contents\"")),
    };
    for hooks in ["preHooks", "postHooks"] {
        if v.get(hooks).is_some() {
            return Err(ApiError::bad(
                "InvalidInput",
                format!("{hooks:?}: user-defined functions are not supported by this service yet"),
            ));
        }
    }
    if contents.len() > st.cfg.limits.max_contents {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "EntryTooLarge",
            format!(
                "entry contents are {} bytes; the limit is {}",
                contents.len(),
                st.cfg.limits.max_contents
            ),
        ));
    }
    // Checked before the primary counts a new collection: a refused request takes no slot.
    let wait = match headers.get(WAIT_HEADER).map(HeaderValue::as_bytes) {
        None => false,
        Some(v) if v.eq_ignore_ascii_case(b"committed") => true,
        Some(_) => {
            return Err(ApiError::bad(
                "InvalidHeaderValue",
                format!("{WAIT_HEADER} takes one value, \"committed\""),
            ));
        }
    };
    let txid = st
        .node
        .append_tagged(auth.caller.identity(), &collection, contents, tags)
        .await
        .map_err(write_failed)?;
    let key = if q.legacy() {
        "subLedgerId"
    } else {
        "collectionId"
    };
    let mut resp = ok_json(json!({ key: collection }));
    if let Ok(v) = HeaderValue::from_str(&txid.to_string()) {
        resp.headers_mut().insert(TXID_HEADER, v);
    }
    if wait {
        let state = match settle_for(&st, txid, WAIT_HEADER_LIMIT).await {
            TxStatus::Committed => "Committed",
            TxStatus::Pending => "Pending",
            _ => "Invalid",
        };
        resp.headers_mut()
            .insert(STATE_HEADER, HeaderValue::from_static(state));
    }
    Ok(resp)
}

/// Waits briefly for a Pending transaction, so that pollers rarely see `Loading`.
async fn settle(st: &AppState, txid: TxId) -> TxStatus {
    settle_for(st, txid, Duration::from_secs(1)).await
}

/// The client status of `txid`, after waiting up to `wait` while it is Pending.
async fn settle_for(st: &AppState, txid: TxId, wait: Duration) -> TxStatus {
    match st.node.client_status(txid) {
        TxStatus::Pending => match st.node.wait_committed(txid, wait).await {
            Ok(s @ (TxStatus::Committed | TxStatus::Invalid)) => s,
            _ => st.node.client_status(txid),
        },
        s => s,
    }
}

fn unknown_txid(txid: TxId) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "InvalidTransactionId",
        format!("transaction {txid} is not known to this ledger and will never be committed"),
    )
}

fn entry_json(e: &crate::LedgerEntry, legacy: bool) -> Value {
    let key = if legacy {
        "subLedgerId"
    } else {
        "collectionId"
    };
    json!({"contents": e.contents, key: e.collection, "transactionId": e.txid.to_string()})
}

async fn get_entry(
    State(st): St,
    _: Authorized<Reader>,
    TxIdPath(txid): TxIdPath,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = Query::parse(raw.as_deref())?;
    let collection = q.collection(&st.cfg.limits)?;
    match settle(&st, txid).await {
        TxStatus::Committed => {}
        TxStatus::Pending => return Ok(ok_json(json!({"state": "Loading"}))),
        _ => return Err(unknown_txid(txid)),
    }
    match st.node.entry(txid).map_err(read_failed)? {
        Some(e) if e.collection == collection => Ok(ok_json(
            json!({"entry": entry_json(&e, q.legacy()), "state": "Ready"}),
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "TransactionNotFound",
            format!("transaction {txid} holds no entry in collection {collection:?}"),
        )),
    }
}

async fn get_status(State(st): St, _: Authorized<Reader>, TxIdPath(txid): TxIdPath) -> ApiResult {
    // A Pending transaction usually commits within milliseconds (a backup hears of the commit
    // with the next heartbeat): wait a little, so that pollers rarely sleep a whole interval.
    let state = match settle_for(&st, txid, Duration::from_millis(300)).await {
        TxStatus::Committed => "Committed",
        TxStatus::Pending => "Pending",
        _ => return Err(unknown_txid(txid)),
    };
    Ok(ok_json(
        json!({"state": state, "transactionId": txid.to_string()}),
    ))
}

async fn get_receipt(State(st): St, _: Authorized<Reader>, TxIdPath(txid): TxIdPath) -> ApiResult {
    match settle(&st, txid).await {
        TxStatus::Committed => {}
        TxStatus::Pending => {
            return Ok(ok_json(
                json!({"receipt": null, "state": "Loading", "transactionId": ""}),
            ));
        }
        _ => return Err(unknown_txid(txid)),
    }
    let bundle = match st.node.receipt(txid) {
        Ok(b) => b,
        // Committed but its covering signature is not yet applied here: not ready.
        Err(crate::NodeError::ReceiptNotReady(_)) => {
            return Ok(ok_json(
                json!({"receipt": null, "state": "Loading", "transactionId": ""}),
            ));
        }
        Err(e) => return Err(read_failed(e)),
    };
    let receipt = serde_json::to_value(&bundle.receipt).map_err(ApiError::internal)?;
    Ok(ok_json(
        json!({"receipt": receipt, "state": "Ready", "transactionId": txid.to_string()}),
    ))
}

async fn current_entry(State(st): St, _: Authorized<Reader>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = Query::parse(raw.as_deref())?;
    let collection = q.collection(&st.cfg.limits)?;
    let Some(mut e) = st.node.latest(&collection).map_err(read_failed)? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("collection {collection:?} has no entries"),
        ));
    };
    // ACL reports the version the value was read at.
    if let Some(t) = st.node.last_txid()
        && t.seqno >= e.txid.seqno
    {
        e.txid = t;
    }
    Ok(ok_json(entry_json(&e, q.legacy())))
}

async fn list_entries(State(st): St, _: Authorized<Reader>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = Query::parse(raw.as_deref())?;
    let collection = q.collection(&st.cfg.limits)?;
    let from = q.txid("fromTransactionId")?.map_or(1, |t| t.seqno);
    let committed = st.node.committed_seqno();
    let to = q
        .txid("toTransactionId")?
        .map_or(committed, |t| t.seqno.min(committed));
    let tag = q.tag()?;
    let page = st.cfg.limits.page_size.max(1);
    let mut entries = match &tag {
        None => st.node.range(&collection, from, to, page + 1),
        Some(tag) => st.node.range_tagged(&collection, tag, from, to, page + 1),
    }
    .map_err(read_failed)?;
    let next = (entries.len() > page).then(|| entries.remove(page));
    let legacy = q.legacy();
    let mut body = json!({
        "state": "Ready",
        "entries": entries.iter().map(|e| entry_json(e, legacy)).collect::<Vec<_>>(),
    });
    if let Some(n) = next {
        let mut link = form_urlencoded::Serializer::new(String::new());
        link.append_pair("api-version", q.api_version());
        link.append_pair(
            if legacy {
                "subLedgerId"
            } else {
                "collectionId"
            },
            &collection,
        );
        link.append_pair("fromTransactionId", &n.txid.to_string());
        if let Some(t) = q.get("toTransactionId") {
            link.append_pair("toTransactionId", t);
        }
        if let Some(tag) = &tag {
            link.append_pair("tag", tag);
        }
        let key = if legacy { "@nextLink" } else { "nextLink" };
        body[key] = Value::String(format!("/app/transactions?{}", link.finish()));
    }
    Ok(ok_json(body))
}

async fn list_collections(
    State(st): St,
    _: Authorized<Reader>,
    uri: axum::http::Uri,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = Query::parse(raw.as_deref())?;
    let all = st.node.collections().map_err(ApiError::internal)?;
    if q.legacy() || uri.path() == "/app/subLedgerIds" {
        return Ok(ok_json(json!({ "subLedgerIds": all })));
    }
    Ok(ok_json(json!({
        "collections": all.iter().map(|c| json!({"collectionId": c})).collect::<Vec<_>>()
    })))
}

/// `GET /app/collections/tags` (2026-07-31-preview): the distinct tags of one collection
/// (`collectionId`, the default collection if absent), sorted.
async fn list_tags(State(st): St, _: Authorized<Reader>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = Query::parse(raw.as_deref())?;
    let collection = q.collection(&st.cfg.limits)?;
    let tags = st.node.tags(&collection).map_err(read_failed)?;
    Ok(ok_json(json!({ "tags": tags })))
}

fn user_json(id: &str, role: Role) -> Value {
    json!({"assignedRole": role.to_string(), "userId": id})
}

async fn list_users(State(st): St, _: Authorized<Administrator>) -> ApiResult {
    let users: Vec<Value> = st
        .node
        .users()
        .iter()
        .map(|(id, r)| user_json(id, *r))
        .collect();
    Ok(ok_json(json!({ "ledgerUsers": users })))
}

fn unknown_user(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!("no user {id:?}"),
    )
}

async fn get_user(
    State(st): St,
    _: Authorized<Administrator>,
    PathParam(id): PathParam,
) -> ApiResult {
    let role = st.node.role_of(&id).ok_or_else(|| unknown_user(&id))?;
    Ok(ok_json(user_json(&id, role)))
}

fn valid_user_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 256 || id.chars().any(|c| c.is_control()) {
        return Err(ApiError::bad(
            "InvalidResourceName",
            format!("invalid user id {id:?}"),
        ));
    }
    Ok(())
}

async fn patch_user(
    State(st): St,
    auth: Authorized<Administrator>,
    PathParam(id): PathParam,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    valid_user_id(&id)?;
    let body = body_bytes(body)?;
    let v = json_body(&body)?;
    let role = match v.get("assignedRole") {
        Some(Value::String(r)) => r
            .parse::<Role>()
            .map_err(|e| ApiError::bad("InvalidInput", e.to_string()))?,
        Some(_) => {
            return Err(ApiError::bad(
                "InvalidInput",
                "\"assignedRole\" must be a string",
            ));
        }
        // Merge patch without a role: keep the current one.
        None => st
            .node
            .role_of(&id)
            .ok_or_else(|| ApiError::bad("InvalidInput", "missing \"assignedRole\""))?,
    };
    st.node
        .set_user_role(auth.caller.identity(), &id, role)
        .await
        .map_err(write_failed)?;
    Ok(ok_json(user_json(&id, role)))
}

async fn delete_user(
    State(st): St,
    auth: Authorized<Administrator>,
    PathParam(id): PathParam,
) -> ApiResult {
    if st.node.role_of(&id).is_none() {
        return Err(unknown_user(&id));
    }
    st.node
        .remove_user(auth.caller.identity(), &id)
        .await
        .map_err(write_failed)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn members(State(st): St, _: Authorized<Reader>) -> ApiResult {
    let g = st.node.governance().map_err(ApiError::internal)?;
    Ok(ok_json(json!({
        "members": g.members.iter().map(|(id, cert)| json!({"certificate": cert, "id": id})).collect::<Vec<_>>()
    })))
}

async fn constitution(State(st): St, _: Authorized<Reader>) -> ApiResult {
    let g = st.node.governance().map_err(ApiError::internal)?;
    Ok(ok_json(json!({
        "digest": hex::encode(Sha256::digest(g.constitution.as_bytes())),
        "script": g.constitution,
    })))
}

/// CCF's virtual attestation (there is no TEE here, and the format says so): the quote is the
/// JSON `{host_data, measurement, report_data}` with report data = SHA-256 of the node's key.
async fn enclave_quotes(State(st): St, _: Authorized<Reader>) -> ApiResult {
    let g = st.node.governance().map_err(ApiError::internal)?;
    let measurement = g.measurement;
    let mut quotes = serde_json::Map::new();
    for (id, _) in &g.nodes {
        let report = hex::decode(id).unwrap_or_default();
        let quote = json!({
            "host_data": st.host_data,
            "measurement": measurement,
            "report_data": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, report),
        });
        quotes.insert(
            id.clone(),
            json!({
                "nodeId": id,
                "mrenclave": hex::encode(measurement),
                "quoteVersion": "Insecure_Virtual",
                "raw": hex::encode(quote.to_string()),
            }),
        );
    }
    Ok(ok_json(
        json!({"currentNodeId": st.node.node_id(), "enclaveQuotes": quotes}),
    ))
}

async fn identity(State(st): St, PathParam(id): PathParam) -> ApiResult {
    if id != st.cfg.ledger_id {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "LedgerNotFound",
            format!("this service is ledger {:?}, not {id:?}", st.cfg.ledger_id),
        ));
    }
    Ok(ok_json(json!({
        "ledgerId": id,
        "ledgerTlsCertificate": st.node.service_cert_pem(),
    })))
}
