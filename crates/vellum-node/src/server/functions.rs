//! User-defined functions (`acl-2024-api.md` §5.1): `/app/userDefinedFunctions` (paged list),
//! `/app/userDefinedFunctions/{id}` (GET, PUT: 201 new or 200 replaced, DELETE: 204),
//! `/app/userDefinedFunctions/{id}:execute` (POST: 200 with the run's outcome, §5.2), and the
//! hooks of a write (`preHooks`/`postHooks`, §5.4). Storing and deleting are transactions;
//! code that does not compile is refused when it is stored.

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
    ApiError, ApiResult, AppState, Authorized, FunctionsDelete, FunctionsExecute, FunctionsRead,
    FunctionsWrite, PathParam, St, TXID_HEADER, body_bytes, json_body, write_failed,
};
use super::query::Query;
use crate::functions::MAX_FUNCTION_ID;
use crate::ops::{Execute, Hook, Hooks, RunResult};
use crate::scripts::MAX_HOOKS;
use vellum_js::RuntimeOptions;

/// The routes.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/app/userDefinedFunctions", get(list))
        .route(
            "/app/userDefinedFunctions/{id}",
            get(get_one).put(put).delete(delete).post(execute),
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

/// `POST .../{id}:execute`: body `{arguments?, exportedFunctionName?, runtimeOptions?}`, all
/// optional (the body too). 200 whether the function succeeded or threw: the outcome is in the
/// body; `x-ms-ccf-transaction-id` names the transaction of what it wrote, if it wrote.
async fn execute(
    State(st): St,
    auth: Authorized<FunctionsExecute>,
    PathParam(target): PathParam,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let Some(id) = target.strip_suffix(":execute") else {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("POST {target:?}: a function is run by POST .../{target}:execute"),
        ));
    };
    valid_id(id)?;
    let body = body_bytes(body)?;
    let v = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        json_body(&body)?
    };
    if !v.is_object() {
        return Err(ApiError::bad(
            "InvalidInput",
            "the body must be a JSON object",
        ));
    }
    let export = match v.get("exportedFunctionName") {
        None | Some(Value::Null) => "main".to_owned(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => {
            return Err(ApiError::bad(
                "InvalidInput",
                "\"exportedFunctionName\" must be a non-empty string",
            ));
        }
    };
    if !st.node.with_functions(|f| f.contains_key(id)) {
        return Err(unknown(id));
    }
    let run = Execute {
        function_id: id.to_owned(),
        export,
        arguments: arguments_of(v.get("arguments"))?,
        options: options_of(v.get("runtimeOptions"))?,
    };
    let done = st
        .node
        .execute(auth.caller.identity(), run)
        .await
        .map_err(write_failed)?;
    let body = match done.result {
        Some(RunResult::Succeeded(return_value)) => {
            json!({"status": "Succeeded", "result": {"returnValue": return_value}})
        }
        Some(RunResult::Failed(message)) => {
            json!({"status": "Failed", "error": {"message": message}})
        }
        Some(RunResult::Http(_)) | None => {
            return Err(ApiError::internal("the run reported no outcome"));
        }
    };
    let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
    if let Some(txid) = done.txid
        && let Ok(v) = HeaderValue::from_str(&txid.to_string())
    {
        resp.headers_mut().insert(TXID_HEADER, v);
    }
    Ok(resp)
}

/// `arguments`: an array of strings (absent or `null`: none).
fn arguments_of(v: Option<&Value>) -> Result<Vec<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                _ => Err(ApiError::bad(
                    "InvalidInput",
                    "\"arguments\" must be an array of strings",
                )),
            })
            .collect(),
        Some(_) => Err(ApiError::bad(
            "InvalidInput",
            "\"arguments\" must be an array of strings",
        )),
    }
}

/// `runtimeOptions`: ACL's `JsRuntimeOptions` (absent fields take the UDF defaults).
fn options_of(v: Option<&Value>) -> Result<RuntimeOptions, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(RuntimeOptions::default()),
        Some(v @ Value::Object(_)) => serde_json::from_value(v.clone())
            .map_err(|e| ApiError::bad("InvalidInput", format!("\"runtimeOptions\": {e}"))),
        Some(_) => Err(ApiError::bad(
            "InvalidInput",
            "\"runtimeOptions\" must be an object",
        )),
    }
}

/// The `preHooks` and `postHooks` of a write body: arrays of
/// `{"functionId", "properties"?: {"arguments"?, "exportedFunctionName"?, "runtimeOptions"?}}`
/// (an older spelling, `id`, is accepted for `functionId`).
pub(super) fn hooks_of(body: &Value) -> Result<Hooks, ApiError> {
    let list = |name: &str| -> Result<Vec<Hook>, ApiError> {
        let items = match body.get(name) {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(a)) => a,
            Some(_) => {
                return Err(ApiError::bad(
                    "InvalidInput",
                    format!("{name:?} must be an array"),
                ));
            }
        };
        items
            .iter()
            .map(|h| {
                let id = match h.get("functionId").or_else(|| h.get("id")) {
                    Some(Value::String(id)) => id.clone(),
                    _ => {
                        return Err(ApiError::bad(
                            "InvalidInput",
                            format!("each of {name:?} names its function in \"functionId\""),
                        ));
                    }
                };
                valid_id(&id)?;
                let props = h.get("properties").filter(|p| !p.is_null());
                if props.is_some_and(|p| !p.is_object()) {
                    return Err(ApiError::bad(
                        "InvalidInput",
                        "hook \"properties\" must be an object",
                    ));
                }
                let export = match props.and_then(|p| p.get("exportedFunctionName")) {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                    Some(_) => {
                        return Err(ApiError::bad(
                            "InvalidInput",
                            "\"exportedFunctionName\" must be a non-empty string",
                        ));
                    }
                };
                let options = match props.and_then(|p| p.get("runtimeOptions")) {
                    None | Some(Value::Null) => None,
                    o => Some(options_of(o)?),
                };
                Ok(Hook {
                    function_id: id,
                    export,
                    arguments: arguments_of(props.and_then(|p| p.get("arguments")))?,
                    options,
                })
            })
            .collect()
    };
    let hooks = Hooks {
        pre: list("preHooks")?,
        post: list("postHooks")?,
    };
    if hooks.len() > MAX_HOOKS {
        return Err(ApiError::bad(
            "InvalidInput",
            format!("a write may run at most {MAX_HOOKS} hooks"),
        ));
    }
    Ok(hooks)
}
