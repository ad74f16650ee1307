//! What runs around every handler: the caller is identified (client certificate or bearer
//! token), the body is admitted only after that and within the limits, the request runs in a
//! span, and every response carries the node's latest transaction id. Unknown routes and
//! methods get CCF-style errors.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::context::{
    ApiError, AppState, Caller, ErrorCode, NODE_BODY_LIMIT, PeerCertificate, St, TXID_HEADER,
};
use super::peer::{is_node_channel, require_node};
use crate::metrics::{Outcome, RequestKind};

/// Identifies the caller, runs the handler inside a request span, and stamps every response
/// with the node's latest transaction id.
pub(super) async fn context(State(st): St, req: Request, next: Next) -> Response {
    let kind = request_kind(req.method(), req.uri().path());
    let resp = identified(&st, req, next).await;
    let metrics = st.node.metrics();
    let outcome = match resp.status() {
        s if s.is_server_error() => Outcome::Failed,
        s if s.is_client_error() => Outcome::Refused,
        _ => Outcome::Ok,
    };
    metrics.request(kind, outcome);
    if matches!(outcome, Outcome::Refused)
        && let Some(code) = resp.extensions().get::<ErrorCode>()
    {
        metrics.refuse(code.0);
    }
    resp
}

/// A request's kind, for the metrics: reads and writes of the application, governance, the
/// node's own routes.
fn request_kind(method: &Method, path: &str) -> RequestKind {
    if path.starts_with("/app/") {
        if method == Method::GET || method == Method::HEAD {
            RequestKind::Read
        } else {
            RequestKind::Write
        }
    } else if path.starts_with("/gov/") {
        RequestKind::Gov
    } else if path.starts_with("/node/") || path == "/metrics" {
        RequestKind::Node
    } else {
        RequestKind::Other
    }
}

async fn identified(st: &AppState, req: Request, next: Next) -> Response {
    let id = st.requests.fetch_add(1, Ordering::Relaxed);
    let caller = match req.headers().get(header::AUTHORIZATION) {
        Some(v) => match v.to_str().ok().and_then(|s| s.strip_prefix("Bearer ")) {
            Some(token) => match st.validate_token(token.trim()) {
                Some(Ok(t)) => Caller::User(crate::ops::Caller::Token(t.oid)),
                Some(Err(e)) => Caller::Invalid(e.to_string()),
                None => Caller::Invalid("bearer tokens are not enabled on this ledger".into()),
            },
            None => Caller::Invalid("malformed Authorization header".into()),
        },
        None => match req.extensions().get::<PeerCertificate>() {
            Some(PeerCertificate(Some(fp))) => Caller::User(crate::ops::Caller::Cert(fp.clone())),
            _ => Caller::Anonymous,
        },
    };
    if !st.node.is_ready() && !req.uri().path().starts_with("/node/") {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the node is starting: it is catching up with the service",
        )
        .into_response();
    }
    // A recovered service serves its users once the members have opened it.
    if st.node.is_recovering() && req.uri().path().starts_with("/app/") {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceNotOpen",
            "the service was recovered and is not open yet: its members vote transition_service_to_open",
        )
        .into_response();
    }
    // The body, if any, is read here: after authentication, within the limits.
    let mut resp = match admit_body(st, &caller, req).await {
        Ok(mut req) => {
            req.extensions_mut().insert(caller);
            // A DEBUG span: at INFO, recording its fields cost ~2% of the node's CPU under load.
            let span = tracing::debug_span!("request", id, method = %req.method(), path = %req.uri().path());
            next.run(req).instrument(span).await
        }
        Err(refused) => refused,
    };
    if !resp.headers().contains_key(TXID_HEADER)
        && let Some(t) = st.node.last_txid()
        && let Ok(v) = HeaderValue::from_str(&t.to_string())
    {
        resp.headers_mut().insert(TXID_HEADER, v);
    }
    resp
}

/// Reads a request's body, if it has one, before any handler sees it, and only for callers
/// that may send one: a caller without a credential (or with an invalid token) may send no
/// body at all, the node channel's large bodies are read only from nodes, and any other body
/// must arrive whole, within the body limit, before the body timeout. Nothing is buffered
/// before the caller is known, and the limit is enforced while reading. A refused body that is
/// small enough is read and thrown away, so that an honest client that is still sending sees
/// the answer rather than a reset connection; a larger one is refused unread, and the
/// connection closed.
async fn admit_body(st: &AppState, caller: &Caller, req: Request) -> Result<Request, Response> {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let has_body =
        announced.is_some_and(|n| n > 0) || req.headers().contains_key(header::TRANSFER_ENCODING);
    if !has_body {
        return Ok(req);
    }
    let limits = &st.cfg.limits;
    let refuse = |e: ApiError, body: axum::body::Body, discard: u64| async move {
        let drained = announced.is_some_and(|n| n <= discard)
            && discard_body(body, discard, limits.body_timeout).await;
        let mut r = e.into_response();
        if !drained {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    };
    let (parts, body) = req.into_parts();
    match caller {
        Caller::User(_) => {}
        // A governance request carries its own credential, a member's signature over the body
        // (checked by the primary): its body is read whoever sends it, within the limit.
        _ if is_signed_gov(&parts) => {}
        other => {
            let why = match other {
                Caller::Invalid(why) => why.clone(),
                _ => "a request with a body needs a client certificate or a bearer token".into(),
            };
            let e = ApiError::new(StatusCode::UNAUTHORIZED, "InvalidAuthenticationInfo", why);
            return Err(refuse(e, body, ANONYMOUS_DISCARD).await);
        }
    }
    let limit = if is_node_channel(parts.uri.path()) {
        if let Err(e) = require_node(st, &parts.extensions) {
            return Err(refuse(e, body, 0).await);
        }
        NODE_BODY_LIMIT
    } else {
        limits.max_body
    };
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!("the request body is larger than {limit} bytes"),
        )
    };
    let discard = (limit as u64).max(AUTHENTICATED_DISCARD);
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(refuse(too_large(), body, discard).await);
    }
    // A small body usually came with the head: read it without arming the body timer.
    let read = axum::body::to_bytes(body, limit);
    tokio::pin!(read);
    let read = match futures_util::poll!(&mut read) {
        std::task::Poll::Ready(r) => Ok(r),
        std::task::Poll::Pending => tokio::time::timeout(limits.body_timeout, read).await,
    };
    let bytes = match read {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let length_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            let e = if length_limit {
                too_large()
            } else {
                ApiError::bad("InvalidInput", format!("reading the request body: {e}"))
            };
            return Err(refuse(e, axum::body::Body::empty(), 0).await);
        }
        Err(_) => {
            let e = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeout",
                format!(
                    "the request body did not arrive within {} s",
                    limits.body_timeout.as_secs()
                ),
            );
            return Err(refuse(e, axum::body::Body::empty(), 0).await);
        }
    };
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

/// Whether a request is a signed governance request (`/gov/`, `application/cose`).
fn is_signed_gov(parts: &axum::http::request::Parts) -> bool {
    parts.uri.path().starts_with("/gov/")
        && parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"application/cose"))
}

/// The most of a refused body read (and thrown away) from a caller without a credential.
const ANONYMOUS_DISCARD: u64 = 64 * 1024;
/// ...and from a user, whose body was too large.
const AUTHENTICATED_DISCARD: u64 = 1 << 20;

/// Reads `body` to its end without keeping it, if it ends within `most` bytes and `timeout`.
async fn discard_body(body: axum::body::Body, most: u64, timeout: Duration) -> bool {
    use http_body_util::BodyExt;
    let mut body = body;
    let read = async {
        let mut seen = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Some(d) = frame.data_ref() {
                seen += d.len() as u64;
                if seen > most {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(timeout, read).await.unwrap_or(false)
}

pub(super) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "UnsupportedHttpVerb",
        format!("{method} is not supported on {}", uri.path()),
    )
}
