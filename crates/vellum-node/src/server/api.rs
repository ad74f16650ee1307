//! The ACL data-plane routes (`acl-rest-api.md` §3, api-version 2022-05-13, with the
//! `0.1-preview` names) and the identity route. Handlers only parse, authorize and shape JSON;
//! the node does the work.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::Instrument;
use vellum_core::TxId;
use vellum_core::status::TxStatus;

use super::auth::TokenValidator;
use crate::LedgerNode;
use crate::users::Role;

/// The collection of writes that name none (ACL's default).
pub const DEFAULT_COLLECTION: &str = "subledger:0";
/// The header that carries transaction ids.
pub const TXID_HEADER: &str = "x-ms-ccf-transaction-id";

/// Request header (a Vellum extension) asking `POST /app/transactions` to answer only once the
/// write is committed, or after [`WAIT_HEADER_LIMIT`]: a durable append in one round trip
/// instead of a write and a status poll. Its only value is `committed`. Servers that do not
/// know it (ACL, CCF) ignore it, and clients that do not send it see no change.
pub const WAIT_HEADER: &str = "x-vellum-wait";

/// Response header sent with a write that carried [`WAIT_HEADER`]: the transaction's state
/// when the answer left, `Committed`, or `Pending` (the wait ran out; poll the status), or
/// `Invalid` (it was rolled back by a change of primary and will never commit).
pub const STATE_HEADER: &str = "x-vellum-transaction-state";

/// The longest a write carrying [`WAIT_HEADER`] is held before it is answered `Pending`.
pub const WAIT_HEADER_LIMIT: Duration = Duration::from_secs(10);

/// Limits on what a request may write (defaults: ACL's).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest entry contents, bytes.
    pub max_contents: usize,
    /// Longest collection id, bytes.
    pub max_collection_id: usize,
    /// Largest request body, bytes.
    pub max_body: usize,
    /// Entries per page of a range query.
    pub page_size: usize,
    /// How long a client has to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// How long a client has to send a complete request head, counted from when the node is
    /// ready for it (the connection opened, or the previous response went out): this is also
    /// how long an idle keep-alive connection stays open.
    pub header_timeout: Duration,
    /// How long a client has to send a whole request body.
    pub body_timeout: Duration,
    /// The most connections the node holds at once (more are closed at once, and logged).
    pub max_connections: usize,
    /// The most connections from one client address.
    pub max_connections_per_address: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let max_connections = super::limits::default_max_connections();
        Limits {
            max_contents: 8 * 1024,
            max_collection_id: 256,
            max_body: 64 * 1024,
            page_size: 1000,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(15),
            body_timeout: Duration::from_secs(30),
            max_connections,
            max_connections_per_address: Limits::per_address(max_connections),
        }
    }
}

impl Limits {
    /// The default cap on connections from one address for a node that holds at most `max`:
    /// a quarter of it, at least 64 (and never more than `max`).
    pub fn per_address(max: usize) -> usize {
        (max / 4).max(64).min(max)
    }
}

/// The largest body of a node-channel message (a batch of Raft entries), read only from nodes.
pub const NODE_BODY_LIMIT: usize = 64 << 20;

/// What the API serves.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The ledger id (`/ledgerIdentity/{ledgerId}`).
    pub ledger_id: String,
    /// Limits.
    pub limits: Limits,
    /// Bearer-token issuers.
    pub tokens: TokenValidator,
}

pub(crate) struct AppState {
    pub(crate) node: Arc<LedgerNode>,
    pub(crate) cfg: ApiConfig,
    requests: AtomicU64,
    host_data: String,
    /// Node certificates already found endorsed by the service key, by their DER: the node
    /// channel checks each peer's certificate once, not at every AppendEntries (an ECDSA
    /// verification each time was a twentieth of a backup's CPU).
    /// Node certificates (DER) found to be the ones recorded for their nodes, with their node
    /// ids: the node channel checks a certificate against the ledger once.
    pub(super) known_peers: std::sync::Mutex<Vec<(Arc<[u8]>, String)>>,
}

/// The client certificate of the connection, as its ACL fingerprint.
#[derive(Debug, Clone, Default)]
pub struct PeerCertificate(pub Option<String>);

/// Who made a request.
#[derive(Debug, Clone)]
pub(super) enum Caller {
    Anonymous,
    Invalid(String),
    /// A valid credential: a certificate or a token (separate namespaces but for the users
    /// table, see [`crate::ops::Caller`]).
    User(crate::ops::Caller),
}

impl Caller {
    /// The identity an operation is performed for (`None` without a valid credential).
    pub(super) fn identity(&self) -> Option<&crate::ops::Caller> {
        match self {
            Caller::User(c) => Some(c),
            Caller::Anonymous | Caller::Invalid(_) => None,
        }
    }
}

/// A CCF-style error response.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(super) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(super) fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(super) fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            static FAILED: super::limits::Throttle =
                super::limits::Throttle::new(Duration::from_secs(1));
            if let Some(more) = FAILED.allow() {
                tracing::warn!(code = self.code, message = %self.message, suppressed = more, "request failed");
            }
        } else {
            tracing::debug!(status = %self.status, code = self.code, message = %self.message, "request refused");
        }
        (
            self.status,
            axum::Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

pub(super) type ApiResult = Result<Response, ApiError>;

/// Query parameters, decoded strictly (a `%` must start a valid escape; values must be UTF-8),
/// repeated names tolerated (the first wins; the JS client repeats `api-version`).
struct Query {
    params: Vec<(String, String)>,
}

fn check_escapes(raw: &str) -> Result<(), ApiError> {
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok =
                b.len() > i + 2 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(ApiError::bad(
                    "InvalidQueryParameterValue",
                    "malformed percent-encoding in the query string",
                ));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

impl Query {
    fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let raw = raw.unwrap_or("");
        check_escapes(raw)?;
        let mut params = Vec::new();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let dec = |s: &str| -> Result<String, ApiError> {
                String::from_utf8(percent_decode(s.replace('+', " ").as_bytes())).map_err(|_| {
                    ApiError::bad("InvalidQueryParameterValue", "query string is not UTF-8")
                })
            };
            params.push((dec(k)?, dec(v)?));
        }
        Ok(Query { params })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn legacy(&self) -> bool {
        self.get("api-version") == Some("0.1-preview")
    }

    fn api_version(&self) -> &str {
        self.get("api-version").unwrap_or("2022-05-13")
    }

    /// The collection named by `collectionId` (or `subLedgerId`), checked against the limits.
    fn collection(&self, limits: &Limits) -> Result<String, ApiError> {
        let c = self
            .get("collectionId")
            .or_else(|| self.get("subLedgerId"))
            .unwrap_or(DEFAULT_COLLECTION);
        if c.is_empty() {
            return Err(ApiError::bad(
                "InvalidCollectionId",
                "collection id is empty",
            ));
        }
        if c.len() > limits.max_collection_id {
            return Err(ApiError::bad(
                "InvalidCollectionId",
                format!(
                    "collection id is {} bytes; the limit is {}",
                    c.len(),
                    limits.max_collection_id
                ),
            ));
        }
        Ok(c.to_owned())
    }

    fn txid(&self, name: &str) -> Result<Option<TxId>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<TxId>().map_err(|e| {
                    ApiError::bad(
                        "InvalidQueryParameterValue",
                        format!("{name} {v:?} is not a transaction id: {e}"),
                    )
                })
            })
            .transpose()
    }
}

fn percent_decode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn parse_txid(raw: &str) -> Result<TxId, ApiError> {
    raw.parse::<TxId>().map_err(|e| {
        ApiError::bad(
            "InvalidTransactionId",
            format!("{raw:?} is not a transaction id: {e}"),
        )
    })
}

/// The request body, or the extractor's refusal as a CCF error.
pub(super) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        ApiError::new(
            e.status(),
            "InvalidInput",
            format!("request body: {}", e.body_text()),
        )
    })
}

pub(super) fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad("InvalidInput", format!("request body is not JSON: {e}")))
}

/// A write the node refused: 503 when nothing was written (no primary, node stopped), so
/// clients may retry; anything else is internal.
pub(super) fn write_failed(e: crate::NodeError) -> ApiError {
    match e {
        crate::NodeError::NotPrimary(_) | crate::NodeError::Stopped(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("nothing was written: {e}"),
        ),
        crate::NodeError::Forward(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("{e}; the write may or may not have been recorded"),
        ),
        crate::NodeError::Refused(m) => ApiError::bad("InvalidInput", m),
        crate::NodeError::NotAllowed(m) => ApiError::new(StatusCode::FORBIDDEN, "NotAllowed", m),
        e @ crate::NodeError::TooManyCollections(_) => {
            ApiError::bad("TooManyCollections", e.to_string())
        }
        other => ApiError::internal(other),
    }
}

/// A read the node could not serve. Damaged ledger files get their own code: the entry is
/// refused, never served, and the message says what to do; anything else is internal.
pub(super) fn read_failed(e: crate::NodeError) -> ApiError {
    match e {
        crate::NodeError::Engine(vellum_ledger::engine::EngineError::Entry { seqno, message }) => {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "LedgerEntryDamaged",
                format!(
                    "the transaction at seqno {seqno} cannot be read from this node's ledger \
                     files ({message}): they are damaged; read it from another node, and run \
                     `vellum audit` on this node's ledger"
                ),
            )
        }
        other => ApiError::internal(other),
    }
}

pub(super) fn ok_json(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

impl AppState {
    pub(crate) fn new(node: Arc<LedgerNode>, cfg: ApiConfig) -> Result<AppState, String> {
        let host_data = std::env::current_exe()
            .and_then(std::fs::read)
            .map(|b| hex::encode(Sha256::digest(&b)))
            .unwrap_or_else(|_| hex::encode([0u8; 32]));
        Ok(AppState {
            node,
            cfg,
            requests: AtomicU64::new(0),
            host_data,
            known_peers: std::sync::Mutex::new(Vec::new()),
        })
    }

    pub(super) fn require(
        &self,
        caller: &Caller,
        need: Role,
        method: &Method,
        uri: &Uri,
    ) -> Result<String, ApiError> {
        match caller {
            Caller::Anonymous => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationInfo",
                "no client certificate or bearer token was presented",
            )),
            Caller::Invalid(why) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationInfo",
                why.clone(),
            )),
            Caller::User(c) => match self.node.role_of(c.user_id()) {
                Some(r) if r >= need => Ok(c.user_id().to_owned()),
                _ => Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "NotAllowed",
                    format!("Not allowed to call {method} {}", uri.path()),
                )),
            },
        }
    }
}

pub(super) type St = State<Arc<AppState>>;

/// Identifies the caller, runs the handler inside a request span, and stamps every response
/// with the node's latest transaction id.
async fn context(State(st): St, req: Request, next: Next) -> Response {
    let id = st.requests.fetch_add(1, Ordering::Relaxed);
    let caller = match req.headers().get(header::AUTHORIZATION) {
        Some(v) => match v.to_str().ok().and_then(|s| s.strip_prefix("Bearer ")) {
            Some(token) if !st.cfg.tokens.is_empty() => {
                match st.cfg.tokens.validate(token.trim()) {
                    Ok(oid) => Caller::User(crate::ops::Caller::Token(oid)),
                    Err(e) => Caller::Invalid(e),
                }
            }
            Some(_) => Caller::Invalid("bearer tokens are not enabled on this ledger".into()),
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
    // The body, if any, is read here: after authentication, within the limits.
    let mut resp = match admit_body(&st, &caller, req).await {
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
        other => {
            let why = match other {
                Caller::Invalid(why) => why.clone(),
                _ => "a request with a body needs a client certificate or a bearer token".into(),
            };
            let e = ApiError::new(StatusCode::UNAUTHORIZED, "InvalidAuthenticationInfo", why);
            return Err(refuse(e, body, ANONYMOUS_DISCARD).await);
        }
    }
    let limit = if super::peer::is_node_channel(parts.uri.path()) {
        if let Err(e) = super::peer::require_node(st, &parts.extensions) {
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

/// The API router.
pub(crate) fn router(st: Arc<AppState>) -> Router {
    Router::new()
        .route("/app/transactions", get(list_entries).post(post_entry))
        .route("/app/transactions/current", get(current_entry))
        .route("/app/transactions/{id}", get(get_entry))
        .route("/app/transactions/{id}/status", get(get_status))
        .route("/app/transactions/{id}/receipt", get(get_receipt))
        .route("/app/collections", get(list_collections))
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
        .merge(super::peer::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are read (and limited) by `admit_body` in `context`, after authentication.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(st.clone(), context))
        .with_state(st)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!("no such resource: {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "UnsupportedHttpVerb",
        format!("{method} is not supported on {}", uri.path()),
    )
}

fn caller(req_ext: &axum::http::Extensions) -> Caller {
    req_ext
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Anonymous)
}

/// Path segment, percent-decoded by axum; its rejection becomes a CCF error.
pub(super) fn path_param(
    p: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<String, ApiError> {
    p.map(|Path(s)| s).map_err(|e| {
        ApiError::bad(
            "InvalidResourceName",
            format!("malformed path segment: {e}"),
        )
    })
}

pub(super) struct Ctx {
    pub(super) caller: Caller,
    pub(super) method: Method,
    pub(super) uri: Uri,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Ctx, ApiError> {
        Ok(Ctx {
            caller: caller(&parts.extensions),
            method: parts.method.clone(),
            uri: parts.uri.clone(),
        })
    }
}

async fn post_entry(
    State(st): St,
    ctx: Ctx,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    st.require(&ctx.caller, Role::Contributor, &ctx.method, &ctx.uri)?;
    let q = Query::parse(raw.as_deref())?;
    let collection = q.collection(&st.cfg.limits)?;
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
        .append_as(ctx.caller.identity(), &collection, contents)
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
    ctx: Ctx,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    st.require(&ctx.caller, Role::Reader, &ctx.method, &ctx.uri)?;
    let txid = parse_txid(&path_param(id)?)?;
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

async fn get_status(
    State(st): St,
    ctx: Ctx,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult {
    st.require(&ctx.caller, Role::Reader, &ctx.method, &ctx.uri)?;
    let txid = parse_txid(&path_param(id)?)?;
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
    ctx: Ctx,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult {
    st.require(&ctx.caller, Role::Reader, &ctx.method, &ctx.uri)?;
    let txid = parse_txid(&path_param(id)?)?;
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
        Err(crate::NodeError::Engine(vellum_ledger::engine::EngineError::NotCovered(_))) => {
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

async fn current_entry(State(st): St, ctx: Ctx, RawQuery(raw): RawQuery) -> ApiResult {
    st.require(&ctx.caller, Role::Reader, &ctx.method, &ctx.uri)?;
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

async fn list_entries(State(st): St, ctx: Ctx, RawQuery(raw): RawQuery) -> ApiResult {
    st.require(&ctx.caller, Role::Reader, &ctx.method, &ctx.uri)?;
    let q = Query::parse(raw.as_deref())?;
    let collection = q.collection(&st.cfg.limits)?;
    let from = q.txid("fromTransactionId")?.map_or(1, |t| t.seqno);
    let committed = st.node.committed_seqno();
    let to = q
        .txid("toTransactionId")?
        .map_or(committed, |t| t.seqno.min(committed));
    let page = st.cfg.limits.page_size.max(1);
    let mut entries = st
        .node
        .range(&collection, from, to, page + 1)
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
        let key = if legacy { "@nextLink" } else { "nextLink" };
        body[key] = Value::String(format!("/app/transactions?{}", link.finish()));
    }
    Ok(ok_json(body))
}

async fn list_collections(State(st): St, ctx: Ctx, RawQuery(raw): RawQuery) -> ApiResult {
    st.require(&ctx.caller, Role::Reader, &ctx.method, &ctx.uri)?;
    let q = Query::parse(raw.as_deref())?;
    let all = st.node.collections().map_err(ApiError::internal)?;
    if q.legacy() || ctx.uri.path() == "/app/subLedgerIds" {
        return Ok(ok_json(json!({ "subLedgerIds": all })));
    }
    Ok(ok_json(json!({
        "collections": all.iter().map(|c| json!({"collectionId": c})).collect::<Vec<_>>()
    })))
}

fn user_json(id: &str, role: Role) -> Value {
    json!({"assignedRole": role.to_string(), "userId": id})
}

async fn list_users(State(st): St, ctx: Ctx) -> ApiResult {
    st.require(&ctx.caller, Role::Administrator, &ctx.method, &ctx.uri)?;
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
    ctx: Ctx,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult {
    st.require(&ctx.caller, Role::Administrator, &ctx.method, &ctx.uri)?;
    let id = path_param(id)?;
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
    ctx: Ctx,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    st.require(&ctx.caller, Role::Administrator, &ctx.method, &ctx.uri)?;
    let id = path_param(id)?;
    valid_user_id(&id)?;
    let body = body_bytes(body)?;
    let v = json_body(&body)?;
    let role = match v.get("assignedRole") {
        Some(Value::String(r)) => r
            .parse::<Role>()
            .map_err(|e| ApiError::bad("InvalidInput", e))?,
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
        .set_user_role(ctx.caller.identity(), &id, role)
        .await
        .map_err(write_failed)?;
    Ok(ok_json(user_json(&id, role)))
}

async fn delete_user(
    State(st): St,
    ctx: Ctx,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult {
    st.require(&ctx.caller, Role::Administrator, &ctx.method, &ctx.uri)?;
    let id = path_param(id)?;
    if st.node.role_of(&id).is_none() {
        return Err(unknown_user(&id));
    }
    st.node
        .remove_user(ctx.caller.identity(), &id)
        .await
        .map_err(write_failed)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn members(State(st): St, ctx: Ctx) -> ApiResult {
    st.require(&ctx.caller, Role::Reader, &ctx.method, &ctx.uri)?;
    let g = st.node.governance().map_err(ApiError::internal)?;
    Ok(ok_json(json!({
        "members": g.members.iter().map(|(id, cert)| json!({"certificate": cert, "id": id})).collect::<Vec<_>>()
    })))
}

async fn constitution(State(st): St, ctx: Ctx) -> ApiResult {
    st.require(&ctx.caller, Role::Reader, &ctx.method, &ctx.uri)?;
    let g = st.node.governance().map_err(ApiError::internal)?;
    Ok(ok_json(json!({
        "digest": hex::encode(Sha256::digest(g.constitution.as_bytes())),
        "script": g.constitution,
    })))
}

/// CCF's virtual attestation (there is no TEE here, and the format says so): the quote is the
/// JSON `{host_data, measurement, report_data}` with report data = SHA-256 of the node's key.
async fn enclave_quotes(State(st): St, ctx: Ctx) -> ApiResult {
    st.require(&ctx.caller, Role::Reader, &ctx.method, &ctx.uri)?;
    let g = st.node.governance().map_err(ApiError::internal)?;
    let measurement = vellum_ledger::genesis::VIRTUAL_MEASUREMENT;
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

async fn identity(
    State(st): St,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult {
    let id = path_param(id)?;
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
