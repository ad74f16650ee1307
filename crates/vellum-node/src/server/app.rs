//! The ACL data-plane routes (`acl-rest-api.md` §3, api-version 2022-05-13, with the
//! `0.1-preview` names) and the identity route. Handlers only parse, authorize and shape JSON;
//! the node does the work.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use vellum_core::TxId;
use vellum_core::status::TxStatus;

use super::access::{page, paged_json};
use super::context::{
    ApiError, ApiResult, AppState, Append, Authorized, Collections, Constitution, Enclaves,
    Members, PathParam, Read, Receipts, STATE_HEADER, St, Status, SubLedgerIds, TXID_HEADER,
    TxIdPath, WAIT_HEADER, WAIT_HEADER_LIMIT, body_bytes, json_body, ok_json, read_failed,
    write_failed,
};
use super::query::Query;
use crate::users::Action;

/// The `/app` routes and the identity route.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/app/transactions", get(list_entries).post(post_entry))
        .route("/app/transactions/current", get(current_entry))
        .route("/app/transactions/{id}", get(get_entry))
        .route("/app/transactions/{id}/status", get(get_status))
        .route("/app/transactions/{id}/receipt", get(get_receipt))
        .route("/app/receipt", get(ccf_receipt))
        .route("/app/collections", get(list_collections))
        .route("/app/collections/tags", get(list_tags))
        .route("/app/subLedgerIds", get(list_sub_ledger_ids))
        .route("/app/governance/members", get(members))
        .route("/app/governance/constitution", get(constitution))
        .route("/app/enclaveQuotes", get(enclave_quotes))
        .route("/ledgerIdentity/{id}", get(identity))
}

async fn post_entry(
    State(st): St,
    auth: Authorized<Append>,
    RawQuery(raw): RawQuery,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let q = Query::parse(raw.as_deref())?;
    let collection = q.collection(&st.cfg.limits)?;
    let tags = q.tags()?;
    let wait_for_commit = match q.get("waitForCommit") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(v) => {
            return Err(ApiError::bad(
                "InvalidQueryParameterValue",
                format!("waitForCommit is true or false, not {v:?}"),
            ));
        }
    };
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
    let hooks = super::functions::hooks_of(&v)?;
    if !hooks.is_empty() {
        st.require(&auth.caller, Action::FUNCTIONS_EXECUTE, &method, &uri)?;
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
        .append_hooked(auth.caller.identity(), &collection, contents, tags, hooks)
        .await
        .map_err(write_failed)?;
    let key = if q.legacy() {
        "subLedgerId"
    } else {
        "collectionId"
    };
    let mut body = json!({ key: collection });
    let mut state = None;
    if wait || wait_for_commit {
        let s = settle_for(&st, txid, WAIT_HEADER_LIMIT).await;
        if wait_for_commit && s == TxStatus::Invalid {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "TransactionRolledBack",
                format!(
                    "transaction {txid} was rolled back by a change of primary: nothing was \
                     written; send the entry again"
                ),
            ));
        }
        state = Some(s);
    }
    if wait_for_commit || q.since_2026_07_31() {
        let s = state.unwrap_or_else(|| st.node.client_status(txid));
        body["state"] = json!(if s == TxStatus::Committed {
            "Committed"
        } else {
            "Pending"
        });
        if wait_for_commit && s == TxStatus::Committed {
            // Committed here; the signature covering it may still be on its way to this node.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            loop {
                if let Some((receipt, claims)) = receipt_parts(&st, txid).await? {
                    body["receipt"] = receipt;
                    if let Some(c) = claims {
                        body["applicationClaims"] = c;
                    }
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    let mut resp = ok_json(body);
    if let Ok(v) = HeaderValue::from_str(&txid.to_string()) {
        resp.headers_mut().insert(TXID_HEADER, v);
    }
    if wait {
        let state = match state {
            Some(TxStatus::Committed) => "Committed",
            Some(TxStatus::Pending) => "Pending",
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
    _: Authorized<Read>,
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
    match st
        .node
        .fetching(|| st.node.entry(txid))
        .await
        .map_err(read_failed)?
    {
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

async fn get_status(State(st): St, _: Authorized<Status>, TxIdPath(txid): TxIdPath) -> ApiResult {
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

async fn get_receipt(
    State(st): St,
    _: Authorized<Receipts>,
    TxIdPath(txid): TxIdPath,
) -> ApiResult {
    match settle(&st, txid).await {
        TxStatus::Committed => {}
        TxStatus::Pending => {
            return Ok(ok_json(
                json!({"receipt": null, "state": "Loading", "transactionId": ""}),
            ));
        }
        _ => return Err(unknown_txid(txid)),
    }
    match receipt_parts(&st, txid).await? {
        Some((receipt, claims)) => {
            let mut body =
                json!({"receipt": receipt, "state": "Ready", "transactionId": txid.to_string()});
            if let Some(c) = claims {
                body["applicationClaims"] = c;
            }
            Ok(ok_json(body))
        }
        None => Ok(ok_json(
            json!({"receipt": null, "state": "Loading", "transactionId": ""}),
        )),
    }
}

/// The media types that ask `/app/receipt` for a COSE receipt: CCF's, and RFC 9943's.
const COSE_TYPES: [&str; 2] = ["application/cose", "application/scitt-receipt+cose"];

/// CCF's built-in `GET /app/receipt?transaction_id=V.S`: the receipt of a committed
/// transaction, as CCF's JSON (snake_case), or, when the `Accept` header asks for
/// `application/cose`, as a COSE receipt (the signature's COSE_Sign1 carrying the inclusion
/// proof; CCF's profile, verified by `ccf.receipt.verify_cose`). While the signature covering
/// it is not applied here: 202 with `Retry-After`, as CCF's historical queries answer.
async fn ccf_receipt(
    State(st): St,
    _: Authorized<Receipts>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let txid = Query::ccf_txid(raw.as_deref())?;
    let cose = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.split(';').next().unwrap_or("").trim())
        .any(|t| COSE_TYPES.iter().any(|c| t.eq_ignore_ascii_case(c)));
    let loading = || {
        (
            StatusCode::ACCEPTED,
            [(header::RETRY_AFTER, "1")],
            axum::Json(json!({"error": {"code": "TransactionPendingOrUnknown", "message": format!("transaction {txid} is not committed on this node yet: retry")}})),
        )
            .into_response()
    };
    match settle(&st, txid).await {
        TxStatus::Committed => {}
        TxStatus::Pending => return Ok(loading()),
        _ => return Err(unknown_txid(txid)),
    }
    let bundle = match st.node.fetching(|| st.node.receipt(txid)).await {
        Ok(b) => b,
        Err(crate::NodeError::ReceiptNotReady(_)) => return Ok(loading()),
        Err(e) => return Err(read_failed(e)),
    };
    if !cose {
        let v = serde_json::to_value(&bundle.receipt).map_err(ApiError::internal)?;
        return Ok(ok_json(vellum_core::receipt::ccf_keys(&v)));
    }
    let Some(bytes) = bundle.cose else {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            format!(
                "the signature covering {txid} has no COSE signature: only a JSON receipt exists"
            ),
        ));
    };
    Ok(([(header::CONTENT_TYPE, "application/cose")], bytes).into_response())
}

/// The receipt of the committed `txid` and, for an application entry with a claim, its
/// `applicationClaims` (the claim's digest is the receipt's claims digest); `None` while the
/// signature covering it is not yet applied on this node.
async fn receipt_parts(
    st: &AppState,
    txid: TxId,
) -> Result<Option<(Value, Option<Value>)>, ApiError> {
    let (bundle, claim) = match st.node.fetching(|| st.node.receipt_with_claim(txid)).await {
        Ok(b) => b,
        Err(crate::NodeError::ReceiptNotReady(_)) => return Ok(None),
        Err(e) => return Err(read_failed(e)),
    };
    let claims = match claim {
        Some(c) => Some(serde_json::to_value([c]).map_err(ApiError::internal)?),
        None => None,
    };
    let receipt = serde_json::to_value(&bundle.receipt).map_err(ApiError::internal)?;
    Ok(Some((receipt, claims)))
}

async fn current_entry(State(st): St, _: Authorized<Read>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = Query::parse(raw.as_deref())?;
    let collection = q.collection(&st.cfg.limits)?;
    let Some(mut e) = st
        .node
        .fetching(|| st.node.latest(&collection))
        .await
        .map_err(read_failed)?
    else {
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

async fn list_entries(State(st): St, _: Authorized<Read>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = Query::parse(raw.as_deref())?;
    let collection = q.collection(&st.cfg.limits)?;
    let from = q.txid("fromTransactionId")?.map_or(1, |t| t.seqno);
    let committed = st.node.committed_seqno();
    let to = q
        .txid("toTransactionId")?
        .map_or(committed, |t| t.seqno.min(committed));
    let tag = q.tag()?;
    let page = st.cfg.limits.page_size.max(1);
    let mut entries = st
        .node
        .fetching(|| match &tag {
            None => st.node.range(&collection, from, to, page + 1),
            Some(tag) => st.node.range_tagged(&collection, tag, from, to, page + 1),
        })
        .await
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
    _: Authorized<Collections>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    collections(&st, raw, "/app/collections")
}

async fn list_sub_ledger_ids(
    State(st): St,
    _: Authorized<SubLedgerIds>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    collections(&st, raw, "/app/subLedgerIds")
}

/// The collections, a page at a time (`nextLink` continues after the last one listed).
fn collections(st: &AppState, raw: Option<String>, path: &str) -> ApiResult {
    let q = Query::parse(raw.as_deref())?;
    let all = st.node.collections().map_err(ApiError::internal)?;
    let (names, next) = page(
        all.into_iter().map(|c| (c, ())),
        &q,
        path,
        st.cfg.limits.page_size,
    );
    if q.legacy() || path == "/app/subLedgerIds" {
        let ids = names.into_iter().map(|(c, ())| Value::String(c)).collect();
        let mut body = paged_json("subLedgerIds", ids, next);
        if q.legacy()
            && let Some(n) = body.as_object_mut().and_then(|o| o.remove("nextLink"))
        {
            body["@nextLink"] = n;
        }
        return Ok(ok_json(body));
    }
    let items = names
        .iter()
        .map(|(c, ())| json!({ "collectionId": c }))
        .collect();
    Ok(ok_json(paged_json("collections", items, next)))
}

/// `GET /app/collections/tags` (2026-07-31-preview): the distinct tags of one collection
/// (`collectionId`, the default collection if absent), sorted.
async fn list_tags(
    State(st): St,
    _: Authorized<Collections>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = Query::parse(raw.as_deref())?;
    let collection = q.collection(&st.cfg.limits)?;
    let tags = st.node.tags(&collection).map_err(read_failed)?;
    Ok(ok_json(json!({ "tags": tags })))
}

async fn members(State(st): St, _: Authorized<Members>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = Query::parse(raw.as_deref())?;
    let g = st.node.governance().map_err(ApiError::internal)?;
    let (members, next) = page(
        g.members,
        &q,
        "/app/governance/members",
        st.cfg.limits.page_size,
    );
    let items = members
        .iter()
        .map(|(id, cert)| json!({"certificate": cert, "id": id}))
        .collect();
    Ok(ok_json(paged_json("members", items, next)))
}

async fn constitution(State(st): St, _: Authorized<Constitution>) -> ApiResult {
    let g = st.node.governance().map_err(ApiError::internal)?;
    Ok(ok_json(json!({
        "digest": hex::encode(Sha256::digest(g.constitution.as_bytes())),
        "script": g.constitution,
    })))
}

/// CCF's virtual attestation (there is no TEE here, and the format says so): the quote is the
/// JSON `{host_data, measurement, report_data}` with report data = SHA-256 of the node's key.
async fn enclave_quotes(State(st): St, _: Authorized<Enclaves>) -> ApiResult {
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
