//! User-defined endpoints (`acl-2024-api.md` §6): deploying a bundle
//! (`PUT/GET /app/userDefinedEndpoints`), its modules (`GET .../modules?module_name=`), the
//! runtime options (`GET/PATCH .../runtimeOptions`), and serving the deployed endpoints under
//! `/app/` behind the built-in routes (a bundle cannot shadow them: they match first).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::context::{
    ApiError, ApiResult, AppState, Authorized, EndpointsRead, EndpointsWrite, St, TXID_HEADER,
    answer_response, body_bytes, caller, json_body, ok_json, write_failed,
};
use super::peer::PeerCertDer;
use super::query::Query;
use crate::endpoints::{Endpoint, MAX_BUNDLE_BYTES, Policy, empty_bundle};
use crate::ops::{EndpointCall, RunResult};

/// The admin routes.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/app/userDefinedEndpoints", get(get_bundle).put(put_bundle))
        .route("/app/userDefinedEndpoints/modules", get(get_module))
        .route(
            "/app/userDefinedEndpoints/runtimeOptions",
            get(get_options).patch(patch_options),
        )
        // DOC-UDE's spelling.
        .route(
            "/app/userDefinedEndpoints/runTimeOptions",
            get(get_options).patch(patch_options),
        )
}

async fn get_bundle(State(st): St, _: Authorized<EndpointsRead>) -> ApiResult {
    Ok(ok_json(
        st.node.app().bundle.clone().unwrap_or_else(empty_bundle),
    ))
}

/// `PUT`: the whole app, replacing the one before; 201 with no body.
async fn put_bundle(
    State(st): St,
    auth: Authorized<EndpointsWrite>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body_bytes(body)?;
    if body.len() > MAX_BUNDLE_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!("a bundle is at most {MAX_BUNDLE_BYTES} bytes"),
        ));
    }
    let v = json_body(&body)?;
    // Checked here too, so that a bad bundle is a 400 before anything is forwarded.
    crate::endpoints::parse_bundle(&v)
        .map_err(|e| ApiError::bad("InvalidInput", format!("the bundle: {e}")))?;
    let txid = st
        .node
        .deploy_bundle(auth.caller.identity(), v.to_string())
        .await
        .map_err(write_failed)?;
    let mut resp = StatusCode::CREATED.into_response();
    if let Ok(v) = HeaderValue::from_str(&txid.to_string()) {
        resp.headers_mut().insert(TXID_HEADER, v);
    }
    Ok(resp)
}

async fn get_module(
    State(st): St,
    _: Authorized<EndpointsRead>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = Query::parse(raw.as_deref())?;
    let Some(name) = q.get("module_name") else {
        return Err(ApiError::bad(
            "InvalidQueryParameterValue",
            "module_name is required",
        ));
    };
    let app = st.node.app();
    let key = name.trim_start_matches('/');
    match app.modules.get(key) {
        Some(code) => Ok(ok_json(json!({"name": name, "module": code}))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ModuleNotFound",
            format!("no module {name:?} in the deployed bundle"),
        )),
    }
}

async fn get_options(State(st): St, _: Authorized<EndpointsRead>) -> ApiResult {
    Ok(ok_json(json!(st.node.app().options)))
}

/// `PATCH`: merges the fields given into the options; answers the whole of them.
async fn patch_options(
    State(st): St,
    auth: Authorized<EndpointsWrite>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let v = json_body(&body_bytes(body)?)?;
    let Value::Object(patch) = v else {
        return Err(ApiError::bad(
            "InvalidInput",
            "runtime options are a JSON object",
        ));
    };
    let mut merged = json!(st.node.app().options);
    for (k, v) in patch {
        if merged.get(&k).is_none() {
            return Err(ApiError::bad(
                "InvalidInput",
                format!("unknown runtime option {k:?}"),
            ));
        }
        merged[k] = v;
    }
    let options: vellum_js::RuntimeOptions = serde_json::from_value(merged)
        .map_err(|e| ApiError::bad("InvalidInput", format!("runtime options: {e}")))?;
    st.node
        .set_runtime_options(auth.caller.identity(), options)
        .await
        .map_err(write_failed)?;
    Ok(ok_json(json!(options)))
}

/// Every request no built-in route took: a deployed endpoint's, or 404 (405 if the path is an
/// endpoint's but not the method).
pub(super) async fn dispatch(State(st): St, req: Request) -> Response {
    match serve(&st, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn serve(st: &Arc<AppState>, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("no such resource: {path}"),
        )
    };
    let Some(rest) = path.strip_prefix("/app/") else {
        return Err(not_found());
    };
    let app = st.node.app();
    let (endpoint, params) = match app.route(parts.method.as_str(), &format!("/{rest}")) {
        None => return Err(not_found()),
        Some(Err(())) => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "UnsupportedHttpVerb",
                format!("{} is not supported on {path}", parts.method),
            ));
        }
        Some(Ok(found)) => found,
    };
    let who = caller(&parts.extensions);
    let caller_object = authenticate(st, endpoint, &parts.headers, &parts.extensions)?;
    let body = axum::body::to_bytes(body, st.cfg.limits.max_body)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLarge",
                "the request body is too large",
            )
        })?;
    let mut headers = Map::new();
    for (k, v) in &parts.headers {
        if let Ok(v) = v.to_str() {
            headers.insert(k.as_str().to_owned(), json!(v));
        }
    }
    let query = parts.uri.query().unwrap_or_default();
    let meta = json!({
        "headers": headers,
        "params": params,
        "url": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or(&path),
        "path": path,
        "route": endpoint.template,
        "query": query,
        "method": parts.method.as_str(),
        "hostname": parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default(),
        "caller": caller_object,
    });
    let call = EndpointCall {
        method: parts.method.as_str().to_owned(),
        path: format!("/{rest}"),
        meta: meta.to_string(),
        body: body.to_vec(),
    };
    let readonly = endpoint.mode == crate::endpoints::Mode::ReadOnly;
    let done = st
        .node
        .serve_endpoint(who.identity(), call, readonly)
        .await
        .map_err(write_failed)?;
    let Some(RunResult::Http(a)) = done.result else {
        return Err(ApiError::internal("the endpoint gave no answer"));
    };
    Ok(answer_response(a, done.txid))
}

/// The caller object of the first of the endpoint's policies the request passes (CCF's
/// shapes); 401 if it passes none.
fn authenticate(
    st: &Arc<AppState>,
    endpoint: &Endpoint,
    headers: &HeaderMap,
    ext: &axum::http::Extensions,
) -> Result<Value, ApiError> {
    if endpoint.policies.is_empty() {
        return Ok(json!({"policy": "no_auth"}));
    }
    let cert = ext.get::<PeerCertDer>().and_then(|p| p.0.clone());
    for p in &endpoint.policies {
        if let Some(v) = passes(st, p, headers, cert.as_deref()) {
            return Ok(v);
        }
    }
    let names: Vec<&str> = endpoint.policies.iter().map(Policy::name).collect();
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationInfo",
        format!("this endpoint accepts callers by {}", names.join(", ")),
    ))
}

fn cert_pem(der: &[u8]) -> String {
    vellum_core::crypto::der_to_pem("CERTIFICATE", der)
}

fn passes(
    st: &Arc<AppState>,
    p: &Policy,
    headers: &HeaderMap,
    cert: Option<&[u8]>,
) -> Option<Value> {
    let cert_caller = |policy: &str| {
        let der = cert?;
        Some(json!({
            "policy": policy,
            "id": hex::encode(Sha256::digest(der)),
            "data": {},
            "cert": cert_pem(der),
        }))
    };
    match p {
        Policy::NoAuth => Some(json!({"policy": "no_auth"})),
        Policy::AnyCert => cert.map(|der| json!({"policy": "any_cert", "cert": cert_pem(der)})),
        // By the certificate itself, whatever else the request carries.
        Policy::UserCert => {
            let fp = vellum_core::crypto::acl_fingerprint(cert?);
            let member = st.node.is_member(&crate::ops::Caller::Cert(fp.clone()));
            (member || st.node.with_access(|a| a.users.contains_key(&fp)))
                .then(|| cert_caller("user_cert"))
                .flatten()
        }
        Policy::MemberCert => {
            let fp = vellum_core::crypto::acl_fingerprint(cert?);
            st.node
                .is_member(&crate::ops::Caller::Cert(fp))
                .then(|| cert_caller("member_cert"))
                .flatten()
        }
        Policy::Jwt => {
            let token = headers
                .get(header::AUTHORIZATION)?
                .to_str()
                .ok()?
                .strip_prefix("Bearer ")?;
            let t = st.validate_token(token.trim())?.ok()?;
            Some(json!({"policy": "jwt", "jwt": {
                "keyIssuer": t.issuer,
                "header": t.header,
                "payload": t.payload,
            }}))
        }
        Policy::AllOf(all) => {
            let mut v = json!({"policy": all.iter().map(Policy::name).collect::<Vec<_>>()});
            for q in all {
                let sub = passes(st, q, headers, cert)?;
                v[q.name()] = sub;
            }
            Some(v)
        }
    }
}
