//! What every route shares: the state (the node and the API's configuration), who is calling,
//! the CCF-style error, and the extractors that let a handler state its needs in its
//! signature: [`Authorized`] for the action a route performs, [`TxIdPath`] and [`PathParam`] for
//! path segments.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use vellum_core::TxId;

use super::auth::TokenValidator;
use crate::LedgerNode;
use crate::config::{ConfigError, rule};
use crate::users::{Action, Role};

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
    /// Checks every limit against its rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        rule(
            self.page_size >= 1,
            "page-size",
            "at least 1",
            self.page_size,
        )?;
        for (setting, t) in [
            ("handshake-timeout", self.handshake_timeout),
            ("header-timeout", self.header_timeout),
            ("body-timeout", self.body_timeout),
        ] {
            rule(
                (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&t),
                setting,
                "between 1 and 3600 seconds",
                t.as_secs_f64(),
            )?;
        }
        rule(
            self.max_connections >= 1,
            "max-connections",
            "at least 1",
            self.max_connections,
        )?;
        rule(
            self.max_connections_per_address >= 1,
            "max-connections-per-address",
            "at least 1",
            self.max_connections_per_address,
        )?;
        rule(
            self.max_body >= self.max_contents,
            "max-body",
            "at least max-entry-bytes",
            self.max_body,
        )
    }

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
    /// The explorer's sign-in through an OpenID Connect provider, if offered.
    pub explorer_login: Option<super::ExplorerLogin>,
}

pub(crate) struct AppState {
    pub(crate) node: Arc<LedgerNode>,
    pub(crate) cfg: ApiConfig,
    pub(super) requests: AtomicU64,
    pub(super) host_data: String,
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
        let mut resp = (
            self.status,
            axum::Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        // For the metrics (the middleware counts refusals by code).
        resp.extensions_mut().insert(ErrorCode(self.code));
        resp
    }
}

/// The CCF error code a response carries, for the metrics.
#[derive(Debug, Clone, Copy)]
pub(super) struct ErrorCode(pub(super) &'static str);

pub(super) type ApiResult = Result<Response, ApiError>;

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
        crate::NodeError::Refused(crate::Refusal::HookFailed(m)) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", m)
        }
        crate::NodeError::Refused(r @ crate::Refusal::Sandbox(_)) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            r.to_string(),
        ),
        crate::NodeError::Refused(crate::Refusal::NoSuchFunction(id)) => ApiError::new(
            StatusCode::NOT_FOUND,
            "FunctionNotFound",
            format!("no user-defined function {id:?}"),
        ),
        crate::NodeError::Refused(r) => ApiError::bad("InvalidInput", r.to_string()),
        crate::NodeError::NotAllowed { user_id } => ApiError::new(
            StatusCode::FORBIDDEN,
            "NotAllowed",
            format!("{user_id} may not do this"),
        ),
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
        crate::NodeError::Damaged { seqno, message } => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "LedgerEntryDamaged",
            format!(
                "the transaction at seqno {seqno} cannot be read from this node's ledger \
                     files ({message}): they are damaged; read it from another node, and run \
                     `vellum audit` on this node's ledger"
            ),
        ),
        crate::NodeError::Index(e @ vellum_ledger::index::IndexError::Loading { .. }) => {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "IndexLoading",
                format!("{e}, or ask another node"),
            )
        }
        crate::NodeError::Archive { chunk, message } => {
            tracing::warn!(%chunk, %message, "a read needed a chunk the archive did not give back");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ArchiveUnavailable",
                format!(
                    "the transaction is in {chunk}, which this node keeps in its archive only, \
                     and it could not be fetched back ({message}); try again, or read it from \
                     another node"
                ),
            )
        }
        other => ApiError::internal(other),
    }
}

/// An answer made on the primary (an endpoint handler's, or a governance request's) as the
/// HTTP response: its status, headers and body, and the transaction that recorded it, if any.
pub(super) fn answer_response(
    a: crate::ops::HttpAnswer,
    txid: Option<vellum_core::TxId>,
) -> Response {
    use axum::http::{HeaderName, HeaderValue, header};
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, a.body).into_response();
    let h = resp.headers_mut();
    if let Some(ct) = a.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::CONTENT_TYPE, ct);
    }
    for (k, v) in a.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            h.insert(k, v);
        }
    }
    if let Some(txid) = txid
        && let Ok(v) = HeaderValue::from_str(&txid.to_string())
    {
        h.insert(TXID_HEADER, v);
    }
    resp
}

pub(super) fn ok_json(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

impl AppState {
    /// Validates a bearer token against the issuers configured on the command line and those
    /// the members trust by proposal; `None` when there are neither (tokens are not enabled).
    pub(crate) fn validate_token(
        &self,
        token: &str,
    ) -> Option<Result<super::auth::ValidToken, super::auth::TokenError>> {
        if self.cfg.tokens.is_empty() && !self.node.with_gov(crate::gov::GovTables::has_jwt_issuers)
        {
            return None;
        }
        Some(
            self.cfg
                .tokens
                .validate_with(token, |iss| self.node.with_gov(|g| g.jwt_issuer(iss))),
        )
    }

    pub(crate) fn new(node: Arc<LedgerNode>, cfg: ApiConfig) -> AppState {
        let host_data = std::env::current_exe()
            .and_then(std::fs::read)
            .map(|b| hex::encode(Sha256::digest(&b)))
            .unwrap_or_else(|_| hex::encode([0u8; 32]));
        AppState {
            node,
            cfg,
            requests: AtomicU64::new(0),
            host_data,
            known_peers: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The caller's user id if one of its roles allows `action`: 401 without a valid
    /// credential, 403 `NotAllowed` otherwise.
    pub(super) fn require(
        &self,
        caller: &Caller,
        action: Action,
        method: &Method,
        uri: &Uri,
    ) -> Result<String, ApiError> {
        self.require_that(caller, |id| self.node.allows(id, action), method, uri)
    }

    /// The caller's user id if it holds `role` or a stronger built-in role.
    pub(super) fn require_role(
        &self,
        caller: &Caller,
        role: Role,
        method: &Method,
        uri: &Uri,
    ) -> Result<String, ApiError> {
        self.require_that(
            caller,
            |id| self.node.role_of(id).is_some_and(|r| r >= role),
            method,
            uri,
        )
    }

    fn require_that(
        &self,
        caller: &Caller,
        allowed: impl FnOnce(&str) -> bool,
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
            Caller::User(c) if allowed(c.user_id()) => Ok(c.user_id().to_owned()),
            Caller::User(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "NotAllowed",
                format!("Not allowed to call {method} {}", uri.path()),
            )),
        }
    }
}

pub(super) type St = State<Arc<AppState>>;

pub(super) fn caller(req_ext: &axum::http::Extensions) -> Caller {
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

fn parse_txid(raw: &str) -> Result<TxId, ApiError> {
    raw.parse::<TxId>().map_err(|e| {
        ApiError::bad(
            "InvalidTransactionId",
            format!("{raw:?} is not a transaction id: {e}"),
        )
    })
}

/// The action a route performs, as a type: a handler taking `Authorized<Read>` states it
/// once, in its signature.
pub(super) trait Required {
    /// The action.
    const ACTION: Action;
}

macro_rules! actions {
    ($($(#[$doc:meta])* $name:ident => $action:expr;)*) => {
        $(
            $(#[$doc])*
            pub(super) struct $name;
            impl Required for $name {
                const ACTION: Action = $action;
            }
        )*
    };
}

actions! {
    /// Read entries.
    Read => Action::READ;
    /// Append entries.
    Append => Action::APPEND;
    /// Read receipts.
    Receipts => Action::RECEIPTS;
    /// Read transaction status.
    Status => Action::STATUS;
    /// List collections and tags.
    Collections => Action::COLLECTIONS;
    /// List sub-ledger ids.
    SubLedgerIds => Action::SUB_LEDGER_IDS;
    /// Read the members.
    Members => Action::MEMBERS;
    /// Read the constitution.
    Constitution => Action::CONSTITUTION;
    /// Read attestation quotes.
    Enclaves => Action::ENCLAVES;
    /// Read a user.
    UsersRead => Action::USERS_READ;
    /// List users.
    UsersReadAll => Action::USERS_READ_ALL;
    /// Create or change a user.
    UsersWrite => Action::USERS_WRITE;
    /// Remove a user.
    UsersDelete => Action::USERS_DELETE;
    /// Read custom roles.
    RolesRead => Action::ROLES_READ;
    /// Define custom roles.
    RolesWrite => Action::ROLES_WRITE;
    /// Delete custom roles.
    RolesDelete => Action::ROLES_DELETE;
    /// Read user-defined functions.
    FunctionsRead => Action::FUNCTIONS_READ;
    /// Store user-defined functions.
    FunctionsWrite => Action::FUNCTIONS_WRITE;
    /// Delete user-defined functions.
    FunctionsDelete => Action::FUNCTIONS_DELETE;
    /// Run user-defined functions.
    FunctionsExecute => Action::FUNCTIONS_EXECUTE;
    /// Read the deployed endpoints.
    EndpointsRead => Action::ENDPOINTS_READ;
    /// Deploy endpoints and set their runtime options.
    EndpointsWrite => Action::ENDPOINTS_WRITE;
}

/// The caller, allowed `R`'s action by one of its roles: 401 without a valid credential, 403
/// otherwise.
pub(super) struct Authorized<R> {
    /// Who called.
    pub(super) caller: Caller,
    _role: PhantomData<R>,
}

impl<R: Required> FromRequestParts<Arc<AppState>> for Authorized<R> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        st: &Arc<AppState>,
    ) -> Result<Authorized<R>, ApiError> {
        let caller = caller(&parts.extensions);
        st.require(&caller, R::ACTION, &parts.method, &parts.uri)?;
        Ok(Authorized {
            caller,
            _role: PhantomData,
        })
    }
}

/// A path segment, percent-decoded; its rejection is a CCF error.
pub(super) struct PathParam(pub(super) String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<PathParam, ApiError> {
        path_param(Path::<String>::from_request_parts(parts, state).await).map(PathParam)
    }
}

/// A transaction id in the path (`.../transactions/{id}`).
pub(super) struct TxIdPath(pub(super) TxId);

impl<S: Send + Sync> FromRequestParts<S> for TxIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<TxIdPath, ApiError> {
        let PathParam(raw) = PathParam::from_request_parts(parts, state).await?;
        parse_txid(&raw).map(TxIdPath)
    }
}
