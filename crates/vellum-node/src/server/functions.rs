//! User-defined functions (`acl-2024-api.md` §5.1): `/app/userDefinedFunctions` (paged list),
//! `/app/userDefinedFunctions/{id}` (GET, PUT: 201 new or 200 replaced, DELETE: 204). Storing
//! and deleting are transactions; code that does not compile is refused when it is stored.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use super::access::{page, paged_json};
use super::context::{
    ApiError, ApiResult, AppState, Authorized, FunctionsDelete, FunctionsRead, FunctionsWrite,
    PathParam, St, TXID_HEADER, body_bytes, json_body, write_failed,
};
use super::query::Query;
use crate::functions::MAX_FUNCTION_ID;

/// The routes.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/app/userDefinedFunctions", get(list))
        .route(
            "/app/userDefinedFunctions/{id}",
            get(get_one).put(put).delete(delete),
        )
}

fn function_json(id: &str, code: &str) -> Value {
    json!({"code": code, "id": id})
}

fn unknown(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "FunctionNotFound",
        format!("no user-defined function {id:?}"),
    )
}

/// An id as a path segment may hold it: 1 to 256 bytes, no control characters, no `:` (the
/// `:execute` suffix is read from the raw path).
fn valid_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_FUNCTION_ID || id.chars().any(|c| c.is_control() || c == ':')
    {
        return Err(ApiError::bad(
            "InvalidResourceName",
            format!(
                "invalid function id {id:?}: 1 to {MAX_FUNCTION_ID} bytes, no ':' or control characters"
            ),
        ));
    }
    Ok(())
}

async fn list(State(st): St, _: Authorized<FunctionsRead>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = Query::parse(raw.as_deref())?;
    let all: Vec<(String, String)> = st
        .node
        .with_functions(|f| f.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    let (fns, next) = page(
        all,
        &q,
        "/app/userDefinedFunctions",
        st.cfg.limits.page_size,
    );
    let items = fns
        .iter()
        .map(|(id, code)| function_json(id, code))
        .collect();
    Ok(super::context::ok_json(paged_json(
        "functions",
        items,
        next,
    )))
}

async fn get_one(
    State(st): St,
    _: Authorized<FunctionsRead>,
    PathParam(id): PathParam,
) -> ApiResult {
    let code = st
        .node
        .with_functions(|f| f.get(&id).cloned())
        .ok_or_else(|| unknown(&id))?;
    Ok(super::context::ok_json(function_json(&id, &code)))
}

/// `PUT`: `{"code": "..."}` (an `id` in the body is ignored: the path names the function).
async fn put(
    State(st): St,
    auth: Authorized<FunctionsWrite>,
    PathParam(id): PathParam,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    valid_id(&id)?;
    let v = json_body(&body_bytes(body)?)?;
    let code = match v.get("code") {
        Some(Value::String(c)) => c.clone(),
        Some(_) => return Err(ApiError::bad("InvalidInput", "\"code\" must be a string")),
        None => return Err(ApiError::bad("InvalidInput", "missing \"code\"")),
    };
    let existed = st.node.with_functions(|f| f.contains_key(&id));
    let txid = st
        .node
        .put_function(auth.caller.identity(), &id, &code)
        .await
        .map_err(write_failed)?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut resp = (status, axum::Json(function_json(&id, &code))).into_response();
    if let Ok(v) = HeaderValue::from_str(&txid.to_string()) {
        resp.headers_mut().insert(TXID_HEADER, v);
    }
    Ok(resp)
}

async fn delete(
    State(st): St,
    auth: Authorized<FunctionsDelete>,
    PathParam(id): PathParam,
) -> ApiResult {
    if !st.node.with_functions(|f| f.contains_key(&id)) {
        return Err(unknown(&id));
    }
    st.node
        .delete_function(auth.caller.identity(), &id)
        .await
        .map_err(write_failed)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
